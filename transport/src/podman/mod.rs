//! Podman and the store: the layers of stored images served to podman's pulls through
//! containers/storage's Additional Layer Store ([`layer_store`]), and the storage.conf setting
//! that makes podman look there ([`storage_conf`]).

pub mod entry_files;
pub mod layer_store;
pub mod storage_conf;
