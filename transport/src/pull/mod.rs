//! The pull engine: an image from a [`Source`] into a [`Store`], tagged.
//!
//! ```text
//! resolve (source) → [find a delta] → plan (per layer: skip, partial, delta, full)
//!                 → run (bounded, with retries; converters verify every byte) → publish
//! ```
//!
//! - [`plan`] decides, once per image, how each layer comes in: stored (by DiffID) → skipped;
//!   zstd:chunked → rebuilt from stored files and byte ranges; from a delta → a tar-diff or
//!   the blob the delta carries; else the full stream.
//! - [`run`] runs the plan, largest layer first, at most `jobs` at once, through the
//!   [converters](convert); each layer is verified and named in the store as it completes.
//! - [`publish`] stores the image and moves the tag only when every layer is there and synced.
//!
//! A reference that names a delta artifact, or a delta found for the image in its registry
//! ([`delta_discovery`]), goes the same way: [`delta_target`] reads the image the delta
//! rebuilds, and the plan takes its missing layers from the delta.

pub(crate) mod convert;
mod delta_discovery;
mod delta_target;
mod events;
mod plan;
mod publish;
mod run;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use containers_image_proxy::oci_spec::image::{
    Descriptor, ImageConfiguration, ImageManifest, MediaType,
};
use fn_error_context::context;
use skiff_storage::images::{ImageTree, TreeTooDeep};
use skiff_storage::kept_blobs::kept_blob_holds;
use skiff_storage::layer_import::stored_layer;
use skiff_storage::stored_files::StoredFiles;
use skiff_storage::{FsVerityHashValue, OciDigest, Store};

use self::convert::chunked::Reuse;
use self::delta_target::DeltaBase;
pub use self::events::{CopyEvent, CopySummary, NoObserver, Observer};
use self::run::Runner;
use crate::source::{Resolved, ResolvedImage, Source};

/// How to copy.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Layers fetched and imported at once.
    pub jobs: usize,
    /// Layers rebuilt from a delta at once (a tar-diff is small; the reads of the source
    /// image's files are the work).
    pub delta_jobs: usize,
    /// Look for deltas of the image in its registry and use one when it is smaller.
    pub use_deltas: bool,
    /// How often a failed layer fetch is tried again.
    pub retry_times: u32,
    /// Keep the original blob of every layer fetched whole, and fetch whole the layers whose
    /// blob the store lacks (see [`skiff_storage::kept_blobs`]).
    pub keep_blobs: bool,
}

/// The image a copy stores: its exact manifest and config bytes and its DiffIDs.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    manifest_json: Vec<u8>,
    manifest: ImageManifest,
    config_json: Vec<u8>,
    diff_ids: Vec<OciDigest>,
    manifest_digest: OciDigest,
}

impl Target {
    /// Checks that the manifest is an image's and reads the config's DiffIDs.
    pub(crate) fn new(
        manifest_json: Vec<u8>,
        manifest: ImageManifest,
        config_json: Vec<u8>,
        config: &ImageConfiguration,
    ) -> Result<Self> {
        require_image_config(&manifest)?;
        let diff_ids = config
            .rootfs()
            .diff_ids()
            .iter()
            .map(|d| {
                d.parse()
                    .with_context(|| format!("the config lists a malformed DiffID {d:?}"))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            manifest_digest: skiff_storage::digest::digest_of(&manifest_json),
            manifest_json,
            manifest,
            config_json,
            diff_ids,
        })
    }
}

/// Copies the image `source` names into `store`, tagged `tag`.
#[context("Copying {} into tag {tag}", source.reference())]
pub async fn copy_image<H: FsVerityHashValue>(
    source: Arc<Source>,
    store: &Store<H>,
    tag: &str,
    options: &CopyOptions,
    observer: Arc<dyn Observer>,
) -> Result<CopySummary> {
    let started = Instant::now();
    let mut summary = match source.resolve().await? {
        Resolved::Image(image) => {
            copy_resolved(&source, store, tag, options, &observer, *image).await?
        }
        Resolved::Delta(delta_json) => {
            let (target, base) = delta_target::load(&source, store, &delta_json, None).await?;
            resolved(&observer, &target);
            pull(&source, store, tag, options, &observer, target, Some(base)).await?
        }
    };
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Copies an image whose manifest and config are read: by a delta of it, when one is found
/// and works, else layer by layer.
async fn copy_resolved<H: FsVerityHashValue>(
    source: &Arc<Source>,
    store: &Store<H>,
    tag: &str,
    options: &CopyOptions,
    observer: &Arc<dyn Observer>,
    image: ResolvedImage,
) -> Result<CopySummary> {
    let target = Target::new(
        image.manifest_json,
        image.manifest,
        image.config_json,
        &image.config,
    )?;
    resolved(observer, &target);
    if options.use_deltas {
        let stored = stored_diff_ids(store, &target.diff_ids).await?;
        let missing = plan::missing_blobs(target.manifest.layers(), &target.diff_ids, &stored);
        if let Some(found) =
            delta_discovery::find_delta(source, store, &target.manifest_digest, &missing).await
        {
            observer.event(&CopyEvent::DeltaUsed {
                digest: found.digest.clone(),
                replaces: found.replaces,
                size: found.size,
            });
            let rebuilt = async {
                let (delta_target, base) = delta_target::load(
                    source,
                    store,
                    &found.manifest_json,
                    Some(&target.manifest_digest),
                )
                .await?;
                pull(
                    source,
                    store,
                    tag,
                    options,
                    observer,
                    delta_target,
                    Some(base),
                )
                .await
            };
            match rebuilt.await {
                Ok(mut summary) => {
                    summary.bytes_saved = found.replaces.saturating_sub(summary.bytes_fetched);
                    summary.delta = Some(found.digest);
                    return Ok(summary);
                }
                // The image is still there to copy: a bad delta costs a full copy, not the
                // copy.
                Err(e) => observer.event(&CopyEvent::LayerFallback {
                    digest: found.digest.clone(),
                    reason: format!("the delta failed, copying the layers instead: {e:#}"),
                }),
            }
        }
    }
    pull(source, store, tag, options, observer, target, None).await
}

fn resolved(observer: &Arc<dyn Observer>, target: &Target) {
    observer.event(&CopyEvent::Resolved {
        manifest_digest: target.manifest_digest.to_string(),
        layers: target.manifest.layers().len(),
    });
}

/// Plans, runs and publishes `target`, taking the layers the store lacks from `delta` when
/// one is given.
async fn pull<H: FsVerityHashValue>(
    source: &Arc<Source>,
    store: &Store<H>,
    tag: &str,
    options: &CopyOptions,
    observer: &Arc<dyn Observer>,
    target: Target,
    delta: Option<DeltaBase<H>>,
) -> Result<CopySummary> {
    let stored = stored_diff_ids(store, &target.diff_ids).await?;
    let unpacked = source.unpacked().is_some();
    if unpacked && options.keep_blobs {
        log::warn!(
            "{}: containers-storage keeps no layer blobs, so none are kept: copying the image \
             out compresses its layers again, with new digests",
            source.reference()
        );
    }
    let kept_blobs = match options.keep_blobs && !unpacked {
        true => Some(held_blobs(store, target.manifest.layers(), &target.diff_ids).await?),
        false => None,
    };
    let mut jobs = plan::plan_layers(
        target.manifest.layers(),
        &target.diff_ids,
        &stored,
        kept_blobs.as_ref(),
        delta.as_ref().map(|d| &d.delta),
        unpacked,
    )?;
    let reuse = if plan::has_partial(&jobs) {
        reuse_for(store, tag).await?
    } else {
        Reuse::default()
    };
    if reuse.is_empty() {
        plan::without_partials(&mut jobs);
    }
    let mut summary = CopySummary {
        manifest_digest: target.manifest_digest.to_string(),
        ..Default::default()
    };
    let runner = Runner {
        source: source.clone(),
        store: store.clone(),
        observer: observer.clone(),
        jobs: if delta.is_some() {
            options.delta_jobs
        } else {
            options.jobs
        },
        retry_times: options.retry_times,
        keep_blobs: options.keep_blobs,
        reuse,
        delta,
        total: target.manifest.layers().len(),
        clones: Default::default(),
    };
    runner.run(jobs, &mut summary).await?;
    publish::publish(
        store,
        &target.diff_ids,
        target.manifest_json,
        target.config_json,
        tag,
        observer.as_ref(),
    )
    .await?;
    Ok(summary)
}

/// The DiffIDs among `diff_ids` that the store holds as layers.
async fn stored_diff_ids<H: FsVerityHashValue>(
    store: &Store<H>,
    diff_ids: &[OciDigest],
) -> Result<HashSet<OciDigest>> {
    let (store, diff_ids) = (store.clone(), diff_ids.to_vec());
    tokio::task::spawn_blocking(move || {
        let mut stored = HashSet::new();
        for diff_id in diff_ids {
            if stored_layer(&store, &diff_id)?.is_some() {
                stored.insert(diff_id);
            }
        }
        Ok(stored)
    })
    .await?
}

/// The blobs among `layers` that the store keeps paired with the stored layer of the DiffID
/// the config gives them ([`skiff_storage::kept_blobs`]): only those may stand in for their
/// layer unread.
async fn held_blobs<H: FsVerityHashValue>(
    store: &Store<H>,
    layers: &[Descriptor],
    diff_ids: &[OciDigest],
) -> Result<HashSet<OciDigest>> {
    let (store, pairs) = (
        store.clone(),
        layers
            .iter()
            .map(|l| l.digest().clone())
            .zip(diff_ids.iter().cloned())
            .collect::<Vec<_>>(),
    );
    tokio::task::spawn_blocking(move || {
        let mut held = HashSet::new();
        for (blob, diff_id) in pairs {
            if let Some(layer) = stored_layer(&store, &diff_id)?
                && kept_blob_holds(&store, &blob, &layer)?
            {
                held.insert(blob);
            }
        }
        Ok(held)
    })
    .await?
}

/// What partial pulls may reuse: the files the store holds, and the image `tag` now names,
/// whose files a chunked layer may find by path (when its tree can be read: a copy does not
/// need it).
async fn reuse_for<H: FsVerityHashValue>(store: &Store<H>, tag: &str) -> Result<Reuse<H>> {
    let (store, owned_tag) = (store.clone(), tag.to_owned());
    tokio::task::spawn_blocking(move || {
        let stored = StoredFiles::load(&store)?;
        let previous = match ImageTree::load(&store, &owned_tag) {
            Ok(tree) => tree.map(Arc::new),
            Err(e) if e.downcast_ref::<TreeTooDeep>().is_some() => {
                log::warn!("not reusing the files of the image tagged {owned_tag}: {e:#}");
                None
            }
            Err(e) => return Err(e),
        };
        Ok(Reuse {
            stored: Arc::new(stored),
            previous,
        })
    })
    .await?
}

/// Media type of the only config that makes a manifest an image for composefs-oci.
const IMAGE_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// The manifest's config is not an OCI image config: composefs-oci would read the stored
/// manifest as an artifact, with no file tree.
#[derive(Debug, thiserror::Error)]
#[error(
    "the manifest's config has media type {0:?}: only images whose config is \
     {IMAGE_CONFIG_MEDIA_TYPE:?} can be stored (composefs-oci reads any other as an artifact, \
     without a file tree)"
)]
pub struct NotAnImageConfig(pub String);

/// Refuses a manifest whose config is not an image config, before anything is fetched or
/// stored.
fn require_image_config(manifest: &ImageManifest) -> Result<(), NotAnImageConfig> {
    match manifest.config().media_type() {
        MediaType::ImageConfig => Ok(()),
        other => Err(NotAnImageConfig(other.to_string())),
    }
}
