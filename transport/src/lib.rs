//! skiff's library: image references, sources, the pull engine with its layer converters, and
//! delta creation. The data flows one way:
//!
//! ```text
//! reference → source → pull (plan, convert, run) → skiff_storage (import, publish)
//! skiff_storage → push (export: kept or regenerated blobs) → layout, archive, dir, registry
//! registry, layout → sync (exact manifests, blobs, referrers) → registry, layout
//! HTTP clients ⇄ serve (the distribution API: reads through push's export, stores pushes
//!                through pull from a staging layout)
//! ```
//!
//! with [`format`] (zstd:chunked, oci-delta, media types) as leaves every stage reads. The
//! `skiff` binary (crate `skiff`, folder `cli/`) is a thin layer over this library. The library
//! logs (through `log`) and never prints.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

mod blob;
mod decompress;
pub mod delta_create;
pub mod format;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod io;
pub mod options;
pub mod platform;
pub mod podman;
pub(crate) mod policy;
pub mod pull;
pub mod push;
pub mod reference;
pub mod serve;
pub mod source;
pub mod sync;
