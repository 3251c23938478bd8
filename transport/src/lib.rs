//! skiff's transports: image references, sources, layer converters and the copy engine.
//!
//! The `skiff` binary (crate `skiff`, folder `cli/`) is a thin layer over this library. The library
//! logs (through `log`) and never prints.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

mod channel_reader;
pub mod chunked_pull;
pub mod copy;
pub mod delta;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod imageref;
pub mod layer;
pub mod media;
pub mod options;
pub mod platform;
pub mod policy;
pub mod range_fetch;
pub mod registry;
pub mod source;
pub mod zstd_chunked;
