//! The copy engine: plan each layer, fetch and import in parallel, publish, tag.
//!
//! Per layer, the cheapest correct way in: already stored (by DiffID) → skip; otherwise the
//! full stream through the [layer converter](crate::layer). Layers are fetched largest first,
//! at most `jobs` at once; each is verified and named in the store as it completes, and the
//! tag appears only when every layer of the image is there and synced.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use containers_image_proxy::oci_spec::image::Descriptor;
use serde::Serialize;
use skiff_storage::layer_import::{LayerError, LayerStats, stored_layer};
use skiff_storage::publish::publish_image;
use skiff_storage::{FsVerityHashValue, OciDigest, Store};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::layer::BlobError;
use crate::media::UnsupportedMediaType;
use crate::source::Source;

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
    /// A layer is verified and stored.
    LayerDone {
        /// The layer's blob digest.
        digest: String,
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
    let image = source.resolve().await?;
    let manifest_digest = skiff_storage::digest::digest_of(&image.manifest_json);
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
    let mut summary = CopySummary {
        manifest_digest: manifest_digest.to_string(),
        ..Default::default()
    };

    // Plan: what is stored is skipped; each remaining DiffID is fetched once.
    let mut wanted = Vec::new();
    let mut seen = HashSet::new();
    for (desc, diff_id) in image.manifest.layers().iter().zip(&diff_ids) {
        crate::media::Compression::of_layer(desc.media_type())
            .with_context(|| format!("Layer {}", desc.digest()))?;
        if !seen.insert(diff_id.clone()) {
            continue;
        }
        if stored_layer(store, diff_id)?.is_some() {
            summary.layers_skipped += 1;
            observer.event(&CopyEvent::LayerSkipped {
                digest: desc.digest().to_string(),
                diff_id: diff_id.to_string(),
            });
        } else {
            wanted.push((desc.clone(), diff_id.clone()));
        }
    }
    wanted.sort_by_key(|(desc, _)| std::cmp::Reverse(desc.size()));

    let semaphore = Arc::new(Semaphore::new(options.jobs.max(1)));
    let mut tasks = JoinSet::new();
    let total = image.manifest.layers().len();
    for (desc, diff_id) in wanted {
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
        tasks.spawn(async move {
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

    let layers: Vec<(OciDigest, H)> = diff_ids
        .iter()
        .map(|d| {
            stored_layer(store, d)?
                .ok_or_else(|| anyhow::anyhow!("layer {d} vanished from the store during the copy"))
                .map(|v| (d.clone(), v))
        })
        .collect::<Result<_>>()?;
    let (publish_store, tag_owned) = (store.clone(), tag.to_owned());
    let (manifest_json, config_json) = (image.manifest_json, image.config_json);
    tokio::task::spawn_blocking(move || {
        publish_image(
            &publish_store,
            &manifest_json,
            &config_json,
            &layers,
            Some(&tag_owned),
        )
    })
    .await??;
    observer.event(&CopyEvent::Published {
        manifest_digest: manifest_digest.to_string(),
        tag: tag.to_owned(),
    });
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

fn add_layer(summary: &mut CopySummary, (fetched, stats): (u64, LayerStats)) {
    summary.layers_full += 1;
    summary.bytes_fetched += fetched;
    summary.bytes_written += stats.bytes_written;
    summary.bytes_reused += stats.bytes_reused;
    summary.objects_reused += stats.objects_reused;
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
) -> Result<(u64, LayerStats)> {
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
                    fetched,
                    written: stats.bytes_written,
                    reused: stats.bytes_reused,
                });
                return Ok((fetched, stats));
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
