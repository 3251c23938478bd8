//! What a delta rebuilds, and from what: the target image's manifest and config read from the
//! delta's blobs (exact bytes, so the stored manifest digest is the target's), and the
//! delta's source image found in the store by its config digest.
//!
//! The delta may come from any source: an OCI layout, or a registry through skopeo's proxy.
//! Its layers are then planned ([`super::plan`]) and run as any copy's are; tar-diffs are
//! applied by [`super::convert::delta`].

use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use fn_error_context::context;
use skiff_storage::images::{ImageTree, find_by_config};
use skiff_storage::stored_files::StoredFiles;
use skiff_storage::{FsVerityHashValue, OciDigest, Store};

use super::Target;
use crate::blob::{MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE};
use crate::format::oci_delta::DeltaManifest;
use crate::source::{Source, parse_config, parse_manifest};

/// The delta applies to an image the repository does not hold.
#[derive(Debug, thiserror::Error)]
#[error(
    "the delta applies to the image whose config is {0}, which is not in the repository: \
     copy that image (the delta's source) into it first"
)]
pub struct SourceImageMissing(pub OciDigest);

/// A delta in use and the stored image it applies to.
#[derive(Debug)]
pub(crate) struct DeltaBase<H: FsVerityHashValue> {
    pub(crate) delta: DeltaManifest,
    /// The source image's file tree: what the tar-diffs' OPENs name.
    pub(crate) tree: Arc<ImageTree<H>>,
    /// Every stored file by content: rebuilt layers mostly hold the source image's files,
    /// whose contents are looked up before they are written.
    pub(crate) stored: Arc<StoredFiles<H>>,
}

/// Reads the target of the delta whose manifest is `delta_json` and finds its source image in
/// `store`. With `expected`, the target must be that manifest (a delta found for it).
#[context("Reading the delta's target and finding its source image")]
pub(crate) async fn load<H: FsVerityHashValue>(
    source: &Source,
    store: &Store<H>,
    delta_json: &[u8],
    expected: Option<&OciDigest>,
) -> Result<(Target, DeltaBase<H>)> {
    let delta = DeltaManifest::parse(delta_json)?;
    let manifest_json = source
        .read_small_blob(&delta.target_manifest, MAX_MANIFEST_SIZE)
        .await
        .context("Reading the target manifest the delta carries")?;
    let manifest_digest = skiff_storage::digest::digest_of(&manifest_json);
    for named in &delta.named_targets {
        ensure!(
            *named == manifest_digest.to_string(),
            "the delta names target {named} but carries manifest {manifest_digest}"
        );
    }
    if let Some(expected) = expected {
        ensure!(
            *expected == manifest_digest,
            "the delta rebuilds {manifest_digest}, not the image {expected} being copied"
        );
    }
    let manifest = parse_manifest(&manifest_json, "the delta's target")?;
    ensure!(
        manifest.config().digest() == delta.target_config.digest(),
        "the target manifest's config {} is not the config the delta carries ({})",
        manifest.config().digest(),
        delta.target_config.digest()
    );
    let config_json = source
        .read_small_blob(&delta.target_config, MAX_CONFIG_SIZE)
        .await
        .context("Reading the target config the delta carries")?;
    let config = parse_config(&config_json, &manifest)?;
    let target = Target::new(manifest_json, manifest, config_json, &config)?;

    let (store, source_config) = (store.clone(), delta.source_config.clone());
    let (tree, stored) = tokio::task::spawn_blocking(move || -> Result<_> {
        let tag = find_by_config(&store, &source_config)?
            .ok_or_else(|| SourceImageMissing(source_config.clone()))?;
        let tree = ImageTree::load(&store, &tag)?
            .with_context(|| format!("the source image {tag} has no file tree (EROFS)"))?;
        log::info!("applying the delta to {tag}");
        Ok((tree, StoredFiles::load(&store)?))
    })
    .await??;
    Ok((
        target,
        DeltaBase {
            delta,
            tree: Arc::new(tree),
            stored: Arc::new(stored),
        },
    ))
}
