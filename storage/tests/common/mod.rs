//! Helpers shared by the storage tests.

use std::path::Path;

use composefs::fsverity::Sha256HashValue;
use skiff_storage::{HashAlgorithm, InitOptions, Store};

/// A new sha256 repository at `path`, opened for writing.
pub fn store_at(path: &Path) -> Store<Sha256HashValue> {
    skiff_storage::repository::init(
        path,
        InitOptions {
            hash: HashAlgorithm::Sha256,
            ..Default::default()
        },
    )
    .unwrap();
    Store::open_writable(path).unwrap()
}

/// A new sha256 repository `repo` under `dir`.
#[allow(dead_code)] // Not every test file uses both.
pub fn store(dir: &Path) -> Store<Sha256HashValue> {
    store_at(&dir.join("repo"))
}
