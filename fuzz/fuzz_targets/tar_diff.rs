//! See `skiff_transport::fuzzing::tar_diff`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| skiff_transport::fuzzing::tar_diff(data));
