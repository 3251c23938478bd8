//! See `skiff_transport::fuzzing::zstd_chunked_toc`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| skiff_transport::fuzzing::zstd_chunked_toc(data));
