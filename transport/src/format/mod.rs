//! The formats skiff reads and writes, as pure parsers and serialisers: no I/O, no store, no
//! network. Each module's documentation states its format.

pub mod media;
pub mod oci_delta;
pub mod zstd_chunked;
