//! See `skiff_transport::fuzzing::layer_import`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| skiff_transport::fuzzing::layer_import(data));
