//! Repository maintenance: garbage collection and consistency checks.

use anyhow::Result;
use composefs::fsverity::FsVerityHashValue;
use composefs_oci::oci_image;
use fn_error_context::context;
use serde::Serialize;

use crate::content_index::ContentIndex;
use crate::repository::Store;

/// What a garbage collection removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    /// Objects deleted.
    pub objects_removed: u64,
    /// Bytes of the deleted objects.
    pub bytes_freed: u64,
    /// Dangling stream and image names removed.
    pub names_pruned: u64,
}

/// Removes every object, stream and image that no tag reaches. Waits for running copies (they
/// hold the repository's shared lock).
#[context("Collecting garbage")]
pub fn gc<H: FsVerityHashValue>(store: &Store<H>) -> Result<GcReport> {
    let result = store.repo().gc(&[])?;
    Ok(GcReport {
        objects_removed: result.objects_removed,
        bytes_freed: result.objects_bytes,
        names_pruned: result.images_pruned + result.streams_pruned,
    })
}

/// What [`fsck`] found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FsckReport {
    /// One line per problem; empty when the repository is consistent.
    pub errors: Vec<String>,
    /// Images checked.
    pub images_checked: u64,
    /// Content indexes checked.
    pub indexes_checked: u64,
}

impl FsckReport {
    /// True when nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Checks every object, stream and image (composefs-oci's fsck), and every content index.
#[context("Checking repository")]
pub async fn fsck<H: FsVerityHashValue>(store: &Store<H>) -> Result<FsckReport> {
    let result = oci_image::oci_fsck(store.repo()).await?;
    let mut report = FsckReport {
        errors: result
            .repo_result()
            .errors()
            .iter()
            .map(|e| e.to_string())
            .collect(),
        images_checked: result.images_checked(),
        indexes_checked: 0,
    };
    report
        .errors
        .extend(result.errors().iter().map(|e| e.to_string()));
    for (_, digest) in oci_image::list_refs(store.repo())? {
        let Ok(image) = oci_image::OciImage::open(store.repo(), &digest, None) else {
            continue; // already reported by oci_fsck
        };
        for diff_id in image.layer_diff_ids() {
            let Ok(diff_id) = diff_id.parse() else {
                continue;
            };
            match check_index(store, &diff_id) {
                Ok(true) => report.indexes_checked += 1,
                Ok(false) => {}
                Err(e) => report
                    .errors
                    .push(format!("content index of layer {diff_id}: {e:#}")),
            }
        }
    }
    Ok(report)
}

/// Checks that a layer's index parses and names only objects of that layer. Returns whether
/// the layer has an index.
fn check_index<H: FsVerityHashValue>(
    store: &Store<H>,
    diff_id: &composefs_oci::OciDigest,
) -> Result<bool> {
    let Some(index) = ContentIndex::<H>::read_for_layer(store.repo(), diff_id)? else {
        return Ok(false);
    };
    let layer = crate::layer_import::stored_layer(store, diff_id)?
        .ok_or_else(|| anyhow::anyhow!("layer vanished"))?;
    let mut reader =
        store
            .repo()
            .open_stream("", Some(&layer), Some(composefs_oci::LAYER_CONTENT_TYPE))?;
    let mut objects = std::collections::HashSet::new();
    reader.get_object_refs(|id| {
        objects.insert(id.clone());
    })?;
    for entry in index.entries() {
        anyhow::ensure!(
            objects.contains(&entry.object),
            "names object {} that the layer does not hold",
            entry.object.to_hex()
        );
    }
    Ok(true)
}
