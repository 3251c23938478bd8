//! Test and benchmark support for skiff: deterministic fixture images, the real programs
//! (skopeo, docker-registry, cfsctl, skiff), and an independent model of an image's file tree.

pub mod chunked;
pub mod crash;
pub mod deltas;
pub mod faults;
pub mod fixtures;
pub mod loop_fs;
pub mod podman;
pub mod realistic;
pub mod registry;
pub mod serve;
pub mod token_server;
pub mod tools;
pub mod tree;
pub mod zstd_chunked_writer;
