//! OLD, the image a delta starts from, as a composefs repository holds it: the digests the
//! delta names it by, its DiffIDs (layers NEW shares are left out), and its file tree (what the
//! delta's OPENs name, as an applier will see it).

use std::sync::Arc;

use anyhow::{Context, Result};
use fn_error_context::context;
use skiff_storage::digest::digest_of;
use skiff_storage::images::{ImageTree, StoredRef, raw_manifest_and_config};
use skiff_storage::{FsVerityHashValue, Store};

use super::generate::SourceSet;

/// OLD, loaded for making a delta.
pub(super) struct OldImage<H: FsVerityHashValue> {
    /// Digest of its manifest (the delta's `source` annotation).
    pub manifest_digest: String,
    /// Digest of its config (`source-config`).
    pub config_digest: String,
    /// Its layers' DiffIDs.
    pub diff_ids: Vec<String>,
    /// Its regular files, indexed for finding a diff source.
    pub files: Arc<SourceSet<H>>,
}

impl<H: FsVerityHashValue> OldImage<H> {
    /// Loads image `tag` of `store`; the file tree is read on a blocking thread.
    #[context("Reading the old image {tag}")]
    pub async fn load(store: &Store<H>, tag: &str) -> Result<Self> {
        let (store, tag) = (store.clone(), tag.to_owned());
        tokio::task::spawn_blocking(move || {
            let (manifest, config) = raw_manifest_and_config(&store, &StoredRef::Tag(tag.clone()))?;
            let diff_ids: Vec<String> = {
                let config: serde_json::Value = serde_json::from_slice(&config)?;
                serde_json::from_value(config["rootfs"]["diff_ids"].clone())
                    .context("its config has no DiffIDs")?
            };
            let tree = ImageTree::load(&store, &tag)?
                .with_context(|| format!("{tag} has no file tree (EROFS)"))?;
            let files = SourceSet::build(&tree, store)?;
            log::info!("{} files in the source image", files.len());
            Ok(Self {
                manifest_digest: digest_of(&manifest).to_string(),
                config_digest: digest_of(&config).to_string(),
                diff_ids,
                files: Arc::new(files),
            })
        })
        .await?
    }
}
