//! Podman and the store: the layers of stored images served to podman's pulls through
//! containers/storage's Additional Layer Store ([`layer_store`]), the storage.conf setting
//! that makes podman look there ([`storage_conf`]), and podman's pulls followed as they happen
//! ([`pull_events`]), for `skiff podman watch`.

pub mod entry_files;
pub mod layer_store;
pub mod pull_events;
pub mod storage_conf;
