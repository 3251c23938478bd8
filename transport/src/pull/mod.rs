//! The copy engine: plan each layer, fetch and import in parallel, publish, tag.
//!
//! Per layer, the cheapest correct way in: already stored (by DiffID) → skip; otherwise the
//! full stream through the [layer converter](crate::pull::convert::full). Layers are fetched largest first,
//! at most `jobs` at once; each is verified and named in the store as it completes, and the
//! tag appears only when every layer of the image is there and synced.

pub mod convert;
pub mod delta_discovery;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use containers_image_proxy::oci_spec::image::{Descriptor, ImageManifest, MediaType};
use serde::Serialize;
use skiff_storage::layer_import::{LayerError, LayerStats, stored_layer};
use skiff_storage::publish::publish_image;
use skiff_storage::{FsVerityHashValue, OciDigest, Store};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::format::media::UnsupportedMediaType;
use crate::format::zstd_chunked::Annotations;
use crate::pull::convert::chunked::{ChunkedLayout, Imported, PartialStats, Reuse, import_partial};
use crate::pull::convert::full::BlobError;
use crate::source::ranges::WholeBlobComing;
use crate::source::{Resolved, Source};
use skiff_storage::content_index::StoredFiles;
use skiff_storage::images::{ImageTree, TreeTooDeep};
use skiff_storage::tree_path::on_tree_stack;

/// Something that happened during a copy, for progress output.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum CopyEvent {
    /// Manifest and config are read and verified.
    Resolved {
        /// Digest of the manifest that will be stored.
        manifest_digest: String,
        /// Number of layers.
        layers: usize,
    },
    /// The store already holds this layer.
    LayerSkipped {
        /// The layer's blob digest.
        digest: String,
        /// Its DiffID.
        diff_id: String,
    },
    /// A layer fetch begins; `fetched` counts its compressed bytes.
    LayerStarted {
        /// The layer's blob digest.
        digest: String,
        /// Its compressed size.
        size: u64,
        /// Bytes fetched so far.
        #[serde(skip)]
        fetched: Arc<AtomicU64>,
    },
    /// A layer fetch failed and will be tried again.
    LayerRetry {
        /// The layer's blob digest.
        digest: String,
        /// The attempt about to start (2 for the first retry).
        attempt: u32,
        /// Why the previous one failed.
        error: String,
    },
    /// A delta of the image was found and is used instead of its layers.
    DeltaUsed {
        /// The delta's manifest digest.
        digest: String,
        /// Compressed bytes of the layers it replaces.
        replaces: u64,
        /// Bytes of its blobs that will be fetched.
        size: u64,
    },
    /// A zstd:chunked layer cannot be pulled partially; it is fetched whole.
    LayerFallback {
        /// The layer's blob digest.
        digest: String,
        /// Why, in one line.
        reason: String,
    },
    /// A layer is verified and stored.
    LayerDone {
        /// The layer's blob digest.
        digest: String,
        /// Rebuilt from stored files and fetched ranges (zstd:chunked), not fetched whole.
        partial: bool,
        /// Compressed bytes fetched.
        fetched: u64,
        /// Object bytes written new.
        written: u64,
        /// Object bytes the store already held.
        reused: u64,
    },
    /// Config, manifest and EROFS are stored and the tag points at the image.
    Published {
        /// The stored manifest's digest.
        manifest_digest: String,
        /// The tag.
        tag: String,
    },
}

/// Receives [`CopyEvent`]s. Implemented by the binary's progress output.
pub trait Observer: Send + Sync {
    /// Called for every event, from any task.
    fn event(&self, event: &CopyEvent);
}

/// Ignores every event.
#[derive(Debug)]
pub struct NoObserver;
impl Observer for NoObserver {
    fn event(&self, _: &CopyEvent) {}
}

/// How to copy.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Layers fetched and imported at once.
    pub jobs: usize,
    /// Whether the user chose `jobs` (`--jobs`), rather than taking the default.
    pub jobs_explicit: bool,
    /// Look for deltas of the image in its registry and use one when it is smaller.
    pub use_deltas: bool,
    /// How often a failed layer fetch is tried again.
    pub retry_times: u32,
}

/// What a copy did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CopySummary {
    /// The stored manifest's digest.
    pub manifest_digest: String,
    /// Compressed bytes fetched from the source.
    pub bytes_fetched: u64,
    /// Object bytes written new to the store.
    pub bytes_written: u64,
    /// Object bytes found in the store (deduplicated).
    pub bytes_reused: u64,
    /// Objects found in the store.
    pub objects_reused: u64,
    /// Layers the store already held.
    pub layers_skipped: usize,
    /// Layers fetched whole.
    pub layers_full: usize,
    /// Layers fetched partially (zstd:chunked).
    pub layers_partial: usize,
    /// Layers rebuilt from a delta.
    pub layers_delta: usize,
    /// The delta used (its manifest digest), if one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<String>,
    /// Compressed bytes the delta saved against fetching the layers it replaced.
    pub bytes_saved: u64,
    /// Fetches made: one per layer fetched whole, one per byte range of a partial pull.
    pub requests: u64,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// First retry waits this long; each later one twice as long as the one before, up to
/// [`RETRY_MAX_DELAY`].
const RETRY_BASE_DELAY: Duration = Duration::from_millis(500);
/// Longest wait between two tries.
const RETRY_MAX_DELAY: Duration = Duration::from_secs(30);

/// Copies the image `source` names into `store`, tagged `tag`.
pub async fn copy_image<H: FsVerityHashValue>(
    source: Arc<Source>,
    store: &Store<H>,
    tag: &str,
    options: &CopyOptions,
    observer: Arc<dyn Observer>,
) -> Result<CopySummary> {
    let started = Instant::now();
    let image = match source.resolve().await? {
        Resolved::Image(image) => *image,
        Resolved::Delta(delta_json) => {
            return crate::pull::convert::delta::apply_delta(
                source,
                store,
                tag,
                &delta_json,
                options,
                observer,
                None,
            )
            .await;
        }
    };
    let manifest_digest = skiff_storage::digest::digest_of(&image.manifest_json);
    require_image_config(&image.manifest)?;
    observer.event(&CopyEvent::Resolved {
        manifest_digest: manifest_digest.to_string(),
        layers: image.manifest.layers().len(),
    });

    let diff_ids: Vec<OciDigest> = image
        .config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| {
            d.parse()
                .with_context(|| format!("the config lists a malformed DiffID {d:?}"))
        })
        .collect::<Result<_>>()?;
    if options.use_deltas
        && let Some(found) = crate::pull::delta_discovery::find_delta(
            &source,
            store,
            &image,
            &manifest_digest,
            &diff_ids,
        )
        .await
    {
        observer.event(&CopyEvent::DeltaUsed {
            digest: found.digest.clone(),
            replaces: found.replaces,
            size: found.size,
        });
        match crate::pull::convert::delta::apply_delta(
            source.clone(),
            store,
            tag,
            &found.manifest_json,
            options,
            observer.clone(),
            Some(&manifest_digest),
        )
        .await
        {
            Ok(mut summary) => {
                summary.bytes_saved = found.replaces.saturating_sub(summary.bytes_fetched);
                summary.delta = Some(found.digest);
                return Ok(summary);
            }
            // The image is still there to copy: a bad delta costs a full copy, not the copy.
            Err(e) => observer.event(&CopyEvent::LayerFallback {
                digest: found.digest.clone(),
                reason: format!("the delta failed, copying the layers instead: {e:#}"),
            }),
        }
    }
    let mut summary = CopySummary {
        manifest_digest: manifest_digest.to_string(),
        ..Default::default()
    };

    // Plan: what is stored is skipped; each remaining blob is fetched once.
    let mut wanted = Vec::new();
    for (desc, diff_id) in distinct_layers(image.manifest.layers(), &diff_ids) {
        crate::format::media::Compression::of_layer(desc.media_type())
            .with_context(|| format!("Layer {}", desc.digest()))?;
        if stored_layer(store, diff_id)?.is_some() {
            summary.layers_skipped += 1;
            observer.event(&CopyEvent::LayerSkipped {
                digest: desc.digest().to_string(),
                diff_id: diff_id.to_string(),
            });
        } else {
            wanted.push((desc, diff_id));
        }
    }
    wanted.sort_by_key(|(desc, _)| std::cmp::Reverse(desc.size()));

    // The files the store holds, for zstd:chunked layers: read once, only if one is coming.
    let chunked = wanted.iter().any(|(d, _)| {
        matches!(
            Annotations::parse(d.annotations().as_ref()),
            Ok(Annotations::Chunked { .. })
        )
    });
    let stored = if chunked {
        let store = store.clone();
        Arc::new(tokio::task::spawn_blocking(move || StoredFiles::load(&store)).await??)
    } else {
        Arc::new(StoredFiles::default())
    };
    // The image this copy replaces, whose files a chunked layer may find by path (when its
    // tree can be read: a copy does not need it).
    let previous = if chunked {
        let (store, owned_tag) = (store.clone(), tag.to_owned());
        match tokio::task::spawn_blocking(move || ImageTree::load(&store, &owned_tag)).await? {
            Ok(tree) => tree.map(Arc::new),
            Err(e) if e.downcast_ref::<TreeTooDeep>().is_some() => {
                log::warn!("not reusing the files of the image tagged {tag}: {e:#}");
                None
            }
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    let reuse = Reuse { stored, previous };
    let semaphore = Arc::new(Semaphore::new(options.jobs.max(1)));
    let mut tasks = JoinSet::new();
    let total = image.manifest.layers().len();
    for (desc, diff_id) in wanted {
        let (desc, diff_id) = (desc.clone(), diff_id.clone());
        let permit = semaphore.clone().acquire_owned().await?;
        let (source, store, observer) = (source.clone(), store.clone(), observer.clone());
        let retry_times = options.retry_times;
        let index = image
            .manifest
            .layers()
            .iter()
            .position(|l| l.digest() == desc.digest())
            .unwrap_or(0)
            + 1;
        let reuse = reuse.clone();
        tasks.spawn(async move {
            if let Some(done) =
                try_partial(&source, &store, &desc, &diff_id, &reuse, observer.as_ref()).await
            {
                drop(permit);
                return Ok(done);
            }
            let result = fetch_with_retries(
                &source,
                &store,
                &desc,
                &diff_id,
                retry_times,
                observer.as_ref(),
            )
            .await
            .with_context(|| format!("Layer {index}/{total} {} (DiffID {diff_id})", desc.digest()));
            drop(permit);
            result
        });
        // Surface a failure before starting more work.
        while let Some(done) = tasks.try_join_next() {
            add_layer(&mut summary, done??);
        }
    }
    while let Some(done) = tasks.join_next().await {
        add_layer(&mut summary, done??);
    }

    publish(
        store,
        &diff_ids,
        image.manifest_json,
        image.config_json,
        tag,
        observer.as_ref(),
    )
    .await?;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
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
pub(crate) fn require_image_config(manifest: &ImageManifest) -> Result<(), NotAnImageConfig> {
    match manifest.config().media_type() {
        MediaType::ImageConfig => Ok(()),
        other => Err(NotAnImageConfig(other.to_string())),
    }
}

/// The layers of a manifest to bring in, in order: one per distinct blob (digest and size)
/// and DiffID. A blob the manifest names twice is read once; two different blobs with one
/// DiffID are both read and checked, although the layer is stored once.
pub(crate) fn distinct_layers<'a>(
    layers: &'a [Descriptor],
    diff_ids: &'a [OciDigest],
) -> Vec<(&'a Descriptor, &'a OciDigest)> {
    let mut seen = HashSet::new();
    layers
        .iter()
        .zip(diff_ids)
        .filter(|(desc, diff_id)| seen.insert((desc.digest(), desc.size(), *diff_id)))
        .collect()
}

/// Stores the image (config, manifest, EROFS) once every layer of `diff_ids` is stored, and
/// moves `tag` to it.
pub(crate) async fn publish<H: FsVerityHashValue>(
    store: &Store<H>,
    diff_ids: &[OciDigest],
    manifest_json: Vec<u8>,
    config_json: Vec<u8>,
    tag: &str,
    observer: &dyn Observer,
) -> Result<()> {
    let layers: Vec<(OciDigest, H)> = diff_ids
        .iter()
        .map(|d| {
            stored_layer(store, d)?
                .ok_or_else(|| anyhow::anyhow!("layer {d} vanished from the store during the copy"))
                .map(|v| (d.clone(), v))
        })
        .collect::<Result<_>>()?;
    let manifest_digest = skiff_storage::digest::digest_of(&manifest_json);
    let (publish_store, tag_owned) = (store.clone(), tag.to_owned());
    // composefs recurses over the tree it builds and writes: a deep one needs a big stack.
    tokio::task::spawn_blocking(move || {
        on_tree_stack(|| {
            publish_image(
                &publish_store,
                &manifest_json,
                &config_json,
                &layers,
                Some(&tag_owned),
            )
        })
    })
    .await???;
    observer.event(&CopyEvent::Published {
        manifest_digest: manifest_digest.to_string(),
        tag: tag.to_owned(),
    });
    Ok(())
}

/// How one layer came into the store.
#[derive(Debug)]
struct LayerOutcome {
    fetched: u64,
    stats: LayerStats,
    /// Content bytes taken from stored files by a partial pull (`None`: fetched whole).
    partial_reused: Option<u64>,
    requests: u64,
}

fn add_layer(summary: &mut CopySummary, outcome: LayerOutcome) {
    match outcome.partial_reused {
        Some(reused) => {
            summary.layers_partial += 1;
            // The files taken from the store were reused even where their objects are
            // written again (never: equal content has one object); count them once.
            summary.bytes_reused += reused.max(outcome.stats.bytes_reused);
        }
        None => {
            summary.layers_full += 1;
            summary.bytes_reused += outcome.stats.bytes_reused;
        }
    }
    summary.bytes_fetched += outcome.fetched;
    summary.bytes_written += outcome.stats.bytes_written;
    summary.objects_reused += outcome.stats.objects_reused;
    summary.requests += outcome.requests;
}

/// Pulls a zstd:chunked layer partially when the source serves ranges; `None` (after a
/// one-line reason for a chunked layer) means: fetch it whole.
async fn try_partial<H: FsVerityHashValue>(
    source: &Source,
    store: &Store<H>,
    desc: &Descriptor,
    diff_id: &OciDigest,
    reuse: &Reuse<H>,
    observer: &dyn Observer,
) -> Option<LayerOutcome> {
    let fallback = |reason: String| {
        observer.event(&CopyEvent::LayerFallback {
            digest: desc.digest().to_string(),
            reason,
        });
        None
    };
    let layout = match Annotations::parse(desc.annotations().as_ref()) {
        Ok(Annotations::Chunked {
            toc_digest,
            toc,
            tar_split,
        }) => ChunkedLayout {
            toc_digest,
            toc,
            tar_split,
        },
        Ok(Annotations::None) => return None,
        Ok(Annotations::Unusable(reason)) => return fallback(reason),
        Err(e) => return fallback(format!("{e:#}")),
    };
    if reuse.is_empty() {
        // Nothing to reuse: one read of the whole blob beats reading it piecewise.
        return None;
    }
    let ranges = match source.range_source(desc).await {
        Ok(Some(r)) => r,
        Ok(None) => return fallback(format!("{} cannot serve byte ranges", source.kind())),
        Err(e) => return fallback(format!("{e:#}")),
    };
    let stats = Arc::new(PartialStats::default());
    observer.event(&CopyEvent::LayerStarted {
        digest: desc.digest().to_string(),
        size: desc.size(),
        fetched: stats.fetched.clone(),
    });
    let result = match import_partial(
        store,
        ranges,
        desc,
        diff_id,
        layout,
        reuse.clone(),
        stats.clone(),
    )
    .await
    {
        Ok(Imported::Partial(pending)) => pending.register().await.map(|r| (r, true)),
        Ok(Imported::Whole(pending)) => {
            observer.event(&CopyEvent::LayerFallback {
                digest: desc.digest().to_string(),
                reason: format!("{WholeBlobComing}; imported it as a full pull"),
            });
            pending.register().await.map(|r| (r, false))
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(((_, layer_stats), partial)) => {
            let fetched = stats.fetched.load(Ordering::Relaxed);
            let reused = if partial {
                stats.reused.load(Ordering::Relaxed)
            } else {
                layer_stats.bytes_reused
            };
            observer.event(&CopyEvent::LayerDone {
                digest: desc.digest().to_string(),
                partial,
                fetched,
                written: layer_stats.bytes_written,
                reused,
            });
            Some(LayerOutcome {
                fetched,
                stats: layer_stats,
                partial_reused: partial.then_some(reused),
                requests: stats.requests.load(Ordering::Relaxed),
            })
        }
        Err(e) => fallback(format!("partial pull failed: {e:#}")),
    }
}

/// Verification failures are final; anything else (a dropped connection, a truncated
/// transfer) may be transient.
fn is_final(error: &anyhow::Error) -> bool {
    error.chain().any(|e| {
        e.is::<UnsupportedMediaType>()
            || e.downcast_ref::<LayerError>().is_some()
            || matches!(
                e.downcast_ref::<BlobError>(),
                Some(BlobError::DigestMismatch { .. })
            )
    })
}

async fn fetch_with_retries<H: FsVerityHashValue>(
    source: &Source,
    store: &Store<H>,
    desc: &Descriptor,
    diff_id: &OciDigest,
    retry_times: u32,
    observer: &dyn Observer,
) -> Result<LayerOutcome> {
    let mut attempt = 1;
    loop {
        let fetched = Arc::new(AtomicU64::new(0));
        observer.event(&CopyEvent::LayerStarted {
            digest: desc.digest().to_string(),
            size: desc.size(),
            fetched: fetched.clone(),
        });
        let result = match source
            .fetch_layer(store, desc, diff_id, fetched.clone())
            .await
        {
            Ok(pending) => pending.register().await,
            Err(e) => Err(e),
        };
        match result {
            Ok((_, stats)) => {
                let fetched = fetched.load(Ordering::Relaxed);
                observer.event(&CopyEvent::LayerDone {
                    digest: desc.digest().to_string(),
                    partial: false,
                    fetched,
                    written: stats.bytes_written,
                    reused: stats.bytes_reused,
                });
                return Ok(LayerOutcome {
                    fetched,
                    stats,
                    partial_reused: None,
                    requests: attempt as u64,
                });
            }
            Err(e) if attempt <= retry_times && !is_final(&e) => {
                attempt += 1;
                observer.event(&CopyEvent::LayerRetry {
                    digest: desc.digest().to_string(),
                    attempt,
                    error: format!("{e:#}"),
                });
                let delay = RETRY_BASE_DELAY.saturating_mul(2u32.saturating_pow(attempt - 2));
                tokio::time::sleep(delay.min(RETRY_MAX_DELAY)).await;
            }
            Err(e) => return Err(e),
        }
    }
}
