//! See `skiff_transport::fuzzing::image_ref`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| skiff_transport::fuzzing::image_ref(data));
