//! skiff's local store: a composefs-rs repository, written with the `composefs` and
//! `composefs-oci` crates so that `cfsctl` and bootc read it as their own.
//!
//! The layout is composefs-oci's: layers are splitstreams `oci-layer-<diff_id>`, configs and
//! manifests `oci-config-<digest>` / `oci-manifest-<digest>`, tags `streams/refs/oci/<name>`.
//! skiff adds the per-layer [content index](content_index) and, where asked, the original
//! compressed blobs ([kept blobs](kept_blobs)), under names that cannot collide with
//! composefs-oci's (prefix `skiff-`), and its [settings](settings) in `skiff.json`.
//!
//! This crate logs (through `log`) and never prints.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

pub mod artifacts;
pub mod content_chunks;
pub mod content_index;
pub mod digest;
pub mod images;
pub mod kept_blobs;
pub mod layer_extract;
pub mod layer_import;
pub mod layer_tree;
pub mod maintenance;
pub mod new_object;
pub mod publish;
pub mod repository;
pub mod settings;
pub mod stored_files;
pub mod tar_header;
pub mod tree_path;

pub use composefs::fsverity::{FsVerityHashValue, Sha256HashValue, Sha512HashValue};
pub use composefs_oci::OciDigest;
pub use repository::{HashAlgorithm, InitOptions, Store, StoreError};
