//! How each layer of NEW goes into the delta: left out when OLD has its DiffID, else as its
//! tar-diff against OLD's files when that is smaller than the layer blob, else as the blob
//! (NEW's own, or a gzip of its tar when NEW keeps none). Layers are diffed in parallel, each
//! on a blocking thread, into a temporary file.

use std::sync::Arc;

use anyhow::{Context, Result};
use containers_image_proxy::oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest};
use skiff_storage::FsVerityHashValue;
use skiff_storage::digest::HashingWriter;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::generate::{SourceSet, write_layer_diff};
use super::new_image::NewLayers;
use super::{Blob, BlobData};
use crate::format::oci_delta::tar_diff::BinaryDiff;

/// NEW's layers, split by whether OLD has them.
#[derive(Debug, Default)]
pub(super) struct LayerSplit {
    /// Digests of the layers OLD has (by DiffID), in NEW's order.
    pub reused: Vec<String>,
    /// Their DiffIDs.
    pub reused_diff_ids: Vec<String>,
    /// The layers the delta carries, each once, with their DiffIDs.
    pub carried: Vec<(Descriptor, String)>,
}

impl LayerSplit {
    pub fn new(manifest: &ImageManifest, config: &ImageConfiguration, old: &[String]) -> Self {
        let mut split = Self::default();
        for (layer, diff_id) in manifest.layers().iter().zip(config.rootfs().diff_ids()) {
            if old.contains(diff_id) {
                split.reused.push(layer.digest().to_string());
                split.reused_diff_ids.push(diff_id.clone());
            } else if !split
                .carried
                .iter()
                .any(|(d, _)| d.digest() == layer.digest())
            {
                split.carried.push((layer.clone(), diff_id.clone()));
            }
        }
        split
    }
}

/// Chooses how each of `carried` goes into the delta, `jobs` layers at a time; in the order
/// of `carried`.
pub(super) async fn choose_all<H: FsVerityHashValue>(
    new: Arc<dyn NewLayers>,
    sources: Arc<SourceSet<H>>,
    carried: &[(Descriptor, String)],
    method: BinaryDiff,
    jobs: usize,
) -> Result<Vec<LayerChoice>> {
    let semaphore = Arc::new(Semaphore::new(jobs.max(1)));
    let mut tasks = JoinSet::new();
    for (index, (layer, diff_id)) in carried.iter().cloned().enumerate() {
        let permit = semaphore.clone().acquire_owned().await?;
        let (new, sources) = (new.clone(), sources.clone());
        tasks.spawn_blocking(move || {
            let result = diff_layer(new.as_ref(), &sources, &layer, &diff_id, method)
                .with_context(|| format!("Diffing layer {}", layer.digest()));
            drop(permit);
            result.map(|choice| (index, choice))
        });
    }
    let mut choices: Vec<Option<LayerChoice>> = (0..carried.len()).map(|_| None).collect();
    while let Some(done) = tasks.join_next().await {
        let (index, choice) = done??;
        choices[index] = Some(choice);
    }
    choices
        .into_iter()
        .map(|c| c.context("a layer was not diffed"))
        .collect()
}

/// How a layer of NEW goes into the delta.
pub(super) enum LayerChoice {
    /// As this tar-diff.
    TarDiff(Blob),
    /// As NEW's own blob.
    Original,
    /// As this gzip of its tar (NEW keeps no blob).
    Recompressed(Blob),
}

/// The tar-diff of `layer` if it is smaller than the layer blob, else the blob.
fn diff_layer<H: FsVerityHashValue>(
    new: &dyn NewLayers,
    sources: &SourceSet<H>,
    layer: &Descriptor,
    diff_id: &str,
    method: BinaryDiff,
) -> Result<LayerChoice> {
    let tar = new.tar(layer, diff_id)?;
    let out = HashingWriter::new(tempfile::NamedTempFile::new()?);
    let (out, stats) = write_layer_diff(sources, tar, out, method)?;
    anyhow::ensure!(
        stats.diff_id == diff_id,
        "the layer's tar is {} but the config says {diff_id}",
        stats.diff_id
    );
    log::info!(
        "layer {}: {} files copied, {} diffed, tar-diff of {} bytes for a blob of {}",
        layer.digest(),
        stats.copied,
        stats.diffed,
        out.count(),
        layer.size()
    );
    if out.count() < layer.size() {
        let (file, digest, size) = out.finish()?;
        return Ok(LayerChoice::TarDiff(Blob {
            digest: digest.to_string(),
            size,
            data: BlobData::File(file),
        }));
    }
    if new.blob(layer)?.is_some() {
        return Ok(LayerChoice::Original);
    }
    let out = HashingWriter::new(tempfile::NamedTempFile::new()?);
    let mut gzip = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    std::io::copy(&mut new.tar(layer, diff_id)?, &mut gzip)?;
    let (file, digest, size) = gzip.finish()?.finish()?;
    Ok(LayerChoice::Recompressed(Blob {
        digest: digest.to_string(),
        size,
        data: BlobData::File(file),
    }))
}
