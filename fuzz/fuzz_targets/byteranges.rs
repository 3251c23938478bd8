//! See `skiff_transport::fuzzing::byteranges`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| skiff_transport::fuzzing::byteranges(data));
