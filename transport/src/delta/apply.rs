//! Applying a delta: the target image rebuilt from the delta's blobs and the source image's
//! files, stored with its exact manifest and config bytes (the same manifest digest as a pull
//! of the target) and tagged.
//!
//! Per target layer, in the order of the target manifest (each distinct blob and DiffID once):
//!
//! - already stored (by DiffID): nothing to do; the layers a delta leaves out are the source
//!   image's, so they are;
//! - a tar-diff: applied to the source image's files ([`super::source_files`]) and imported,
//!   the blob checked against its descriptor and the tar against the DiffID;
//! - a layer blob carried whole: imported as a full pull does (compression read from the bytes:
//!   deltas label every such blob gzip), checked against its descriptor and the DiffID;
//! - anything else is an error naming the layer.
//!
//! Nothing is tagged unless every layer checks out; layers are rebuilt in parallel (`--jobs`;
//! by default one per core from a layout, two from a registry), streaming into the store: no
//! temporary files. The delta may come from any source: an OCI layout, or a registry through
//! skopeo's proxy.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use containers_image_proxy::oci_spec::image::Descriptor;
use skiff_storage::content_index::StoredFiles;
use skiff_storage::images::{ImageTree, find_by_config};
use skiff_storage::layer_import::{PendingLayer, split_layer_with_index, stored_layer};
use skiff_storage::{FsVerityHashValue, OciDigest, Store};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use super::source_files::SourceFiles;
use super::{DeltaManifest, MEDIA_TYPE_TAR_DIFF};
use crate::channel_reader::{
    BlockingChannelReader, CHANNEL_DEPTH, ChannelReader, ChannelWriter, produced_and_imported,
};
use crate::copy::{CopyEvent, CopyOptions, CopySummary, Observer};
use crate::layer::{BlobError, MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE};
use crate::source::{Source, parse_config, parse_manifest};

/// Delta layers fetched from a registry at once when `--jobs` is not given.
const REGISTRY_DELTA_JOBS: usize = 2;

/// The delta applies to an image the repository does not hold.
#[derive(Debug, thiserror::Error)]
#[error(
    "the delta applies to the image whose config is {0}, which is not in the repository: \
     copy that image (the delta's source) into it first"
)]
pub struct SourceImageMissing(pub OciDigest);

/// Rebuilds the target image of the delta whose manifest is `delta_json` into `store`, tagged
/// `tag`.
pub async fn apply_delta<H: FsVerityHashValue>(
    source: Arc<Source>,
    store: &Store<H>,
    tag: &str,
    delta_json: &[u8],
    options: &CopyOptions,
    observer: Arc<dyn Observer>,
    expected_target: Option<&OciDigest>,
) -> Result<CopySummary> {
    let started = Instant::now();
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
    if let Some(expected) = expected_target {
        ensure!(
            *expected == manifest_digest,
            "the delta rebuilds {manifest_digest}, not the image {expected} being copied"
        );
    }
    let manifest = parse_manifest(&manifest_json, "the delta's target")?;
    crate::copy::require_image_config(&manifest)?;
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
    if expected_target.is_none() {
        observer.event(&CopyEvent::Resolved {
            manifest_digest: manifest_digest.to_string(),
            layers: manifest.layers().len(),
        });
    }

    let source_tag = {
        let (store, config) = (store.clone(), delta.source_config.clone());
        tokio::task::spawn_blocking(move || find_by_config(&store, &config)).await??
    }
    .ok_or_else(|| SourceImageMissing(delta.source_config.clone()))?;
    let tree = {
        let (store, source_tag) = (store.clone(), source_tag.clone());
        tokio::task::spawn_blocking(move || ImageTree::load(&store, &source_tag)).await??
    }
    .map(Arc::new)
    .with_context(|| format!("the source image {source_tag} has no file tree (EROFS)"))?;
    log::info!("applying the delta to {source_tag}");
    // Rebuilt layers mostly hold the source image's files: look contents up before writing.
    let stored = {
        let store = store.clone();
        Arc::new(tokio::task::spawn_blocking(move || StoredFiles::load(&store)).await??)
    };

    let diff_ids: Vec<OciDigest> = config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| d.parse().with_context(|| format!("malformed DiffID {d:?}")))
        .collect::<Result<_>>()?;
    let mut summary = CopySummary {
        manifest_digest: manifest_digest.to_string(),
        ..Default::default()
    };
    // Local blobs: every core. Registries: two delta layers downloading at once, unless
    // --jobs says otherwise (a tar-diff is small; the source image's reads are the work).
    let jobs = match source.as_ref() {
        Source::Proxy(_) if !options.jobs_explicit => REGISTRY_DELTA_JOBS,
        _ => options.jobs,
    };
    let semaphore = Arc::new(Semaphore::new(jobs.max(1)));
    let mut tasks = JoinSet::new();
    for (layer, diff_id) in crate::copy::distinct_layers(manifest.layers(), &diff_ids) {
        if stored_layer(store, diff_id)?.is_some() {
            summary.layers_skipped += 1;
            observer.event(&CopyEvent::LayerSkipped {
                digest: layer.digest().to_string(),
                diff_id: diff_id.to_string(),
            });
            continue;
        }
        let Some(blob) = delta.layers_by_to.get(&layer.digest().to_string()).cloned() else {
            bail!(
                "layer {} (DiffID {diff_id}) is neither in the delta nor in the repository",
                layer.digest()
            );
        };
        let permit = semaphore.clone().acquire_owned().await?;
        let (source, store, tree, observer, stored) = (
            source.clone(),
            store.clone(),
            tree.clone(),
            observer.clone(),
            stored.clone(),
        );
        let (digest, diff_id) = (layer.digest().to_string(), diff_id.clone());
        tasks.spawn(async move {
            let fetched = Arc::new(AtomicU64::new(0));
            observer.event(&CopyEvent::LayerStarted {
                digest: digest.clone(),
                size: blob.size(),
                fetched: fetched.clone(),
            });
            let tar_diff = blob.media_type().to_string() == MEDIA_TYPE_TAR_DIFF;
            let pending = if tar_diff {
                apply_tar_diff(
                    &source,
                    &store,
                    &blob,
                    &diff_id,
                    tree,
                    stored,
                    fetched.clone(),
                )
                .await
            } else {
                source
                    .fetch_layer(&store, &blob, &diff_id, fetched.clone())
                    .await
            }
            .with_context(|| format!("Rebuilding layer {digest} (DiffID {diff_id})"))?;
            let (_, stats) = pending.register().await?;
            drop(permit);
            let fetched = fetched.load(Ordering::Relaxed);
            observer.event(&CopyEvent::LayerDone {
                digest,
                partial: false,
                fetched,
                written: stats.bytes_written,
                reused: stats.bytes_reused,
            });
            anyhow::Ok((tar_diff, fetched, stats))
        });
        while let Some(done) = tasks.try_join_next() {
            add_layer(&mut summary, done??);
        }
    }
    while let Some(done) = tasks.join_next().await {
        add_layer(&mut summary, done??);
    }

    crate::copy::publish(
        store,
        &diff_ids,
        manifest_json,
        config_json,
        tag,
        observer.as_ref(),
    )
    .await?;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

fn add_layer(
    summary: &mut CopySummary,
    (tar_diff, fetched, stats): (bool, u64, skiff_storage::layer_import::LayerStats),
) {
    if tar_diff {
        summary.layers_delta += 1;
    } else {
        summary.layers_full += 1;
    }
    summary.requests += 1;
    summary.bytes_fetched += fetched;
    summary.bytes_written += stats.bytes_written;
    summary.bytes_reused += stats.bytes_reused;
    summary.objects_reused += stats.objects_reused;
}

/// Applies the tar-diff `blob` to the files of `tree` and imports the result as the layer
/// `diff_id`.
async fn apply_tar_diff<H: FsVerityHashValue>(
    source: &Arc<Source>,
    store: &Store<H>,
    blob: &Descriptor,
    diff_id: &OciDigest,
    tree: Arc<ImageTree<H>>,
    stored: Arc<StoredFiles<H>>,
    fetched: Arc<AtomicU64>,
) -> Result<PendingLayer<H>> {
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    let (blob_tx, blob_rx) = mpsc::channel(CHANNEL_DEPTH);
    let repo = store.repo().clone();
    let desc = blob.clone();
    let producer = tokio::task::spawn_blocking(move || {
        let result = (|| -> Result<()> {
            let mut delta = VerifiedBlob::new(BlockingChannelReader::new(blob_rx), &desc, fetched);
            let mut files = SourceFiles::new(tree, repo);
            let mut out = ChannelWriter::new(&tx);
            oci_delta::tar_patch_apply(&mut delta, &mut files, &mut out).map_err(name_short_op)?;
            std::io::Write::flush(&mut out)?;
            delta.finish()
        })();
        if let Err(e) = &result {
            // The import sees the stream end with this error.
            let _ = tx.blocking_send(Err(std::io::Error::other(format!("{e:#}"))));
        }
        result
    });
    let (pumped, imported, produced) = tokio::join!(
        source.pump_blob(blob, blob_tx),
        split_layer_with_index(store, diff_id, ChannelReader::new(rx), stored),
        producer
    );
    let imported = produced_and_imported(produced?, imported)?;
    pumped?;
    Ok(imported)
}

/// oci-delta reads an op's data with `read_exact` and passes its bare error on: a tar-diff whose
/// op stream ends inside an op fails with "failed to fill whole buffer" and nothing else. Its
/// reads of the source files carry a context, and a blob ending before its descriptor's size
/// says so ([`VerifiedBlob`]), so a bare end-of-file can only be the op stream's.
pub(crate) fn name_short_op(error: anyhow::Error) -> anyhow::Error {
    let bare_eof = error.chain().count() == 1
        && error.downcast_ref::<std::io::Error>().is_some_and(|io| {
            io.kind() == std::io::ErrorKind::UnexpectedEof && io.get_ref().is_none()
        });
    if bare_eof {
        error.context(
            "the tar-diff ends inside an op: an OPEN, ADD_DATA or ZSTD_DICT claims more bytes \
             than the delta holds",
        )
    } else {
        error
    }
}

/// A blob read from an OCI layout and checked against its descriptor: never more than its
/// size, and its digest once read to the end.
struct VerifiedBlob<'a> {
    inner: std::io::Take<BlockingChannelReader>,
    desc: &'a Descriptor,
    sha: openssl::sha::Sha256,
    count: u64,
    fetched: Arc<AtomicU64>,
}

impl<'a> VerifiedBlob<'a> {
    fn new(reader: BlockingChannelReader, desc: &'a Descriptor, fetched: Arc<AtomicU64>) -> Self {
        Self {
            inner: reader.take(desc.size() + 1),
            desc,
            sha: openssl::sha::Sha256::new(),
            count: 0,
            fetched,
        }
    }

    /// Reads what the applier left and checks size and digest.
    fn finish(mut self) -> Result<()> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        if self.count != self.desc.size() {
            return Err(BlobError::SizeMismatch {
                expected: self.desc.size(),
                actual: self.count,
            }
            .into());
        }
        let actual = skiff_storage::digest::sha256_digest(&self.sha.finish());
        if &actual != self.desc.digest() {
            return Err(BlobError::DigestMismatch {
                expected: self.desc.digest().clone(),
                actual,
            }
            .into());
        }
        Ok(())
    }
}

impl Read for VerifiedBlob<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() && self.count < self.desc.size() {
            // Said here: the applier would only see a bare end of file.
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                BlobError::SizeMismatch {
                    expected: self.desc.size(),
                    actual: self.count,
                },
            ));
        }
        self.sha.update(&buf[..n]);
        self.count += n as u64;
        self.fetched.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}
