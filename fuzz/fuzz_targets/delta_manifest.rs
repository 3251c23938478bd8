//! See `skiff_transport::fuzzing::delta_manifest`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| skiff_transport::fuzzing::delta_manifest(data));
