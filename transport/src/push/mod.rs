//! Copying out of the store: an image of composefs storage written to an OCI layout, an
//! oci-archive, skopeo's `dir:` format, a registry, or podman's store.
//!
//! ```text
//! stored image → export (kept blobs, or layers compressed again; the manifest) → destination
//! ```
//!
//! - [`export`] makes the image's blobs ready: the original blob of each layer where the store
//!   keeps it, else the stored tar (checked against its DiffID) compressed again; with every
//!   blob kept the manifest is the stored one, byte for byte.
//! - The destination takes the config, the layers and then the manifest, so that a reader of
//!   the destination never sees a manifest whose blobs are not all there:
//!   - `oci:PATH[:TAG]` and `oci-archive:PATH[:TAG]` ([`layout`]);
//!   - `dir:PATH`, skopeo's directory format: `version`, `manifest.json`, one file per blob
//!     named by its hex digest;
//!   - `docker://REF`: blobs the repository has are skipped, the others streamed in bounded
//!     chunks, the manifest pushed by digest and then by tag;
//!   - `containers-storage:REF`: through skopeo, from a temporary layout.

pub mod compress;
pub(crate) mod export;
pub(crate) mod layout;

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use fn_error_context::context;
use skiff_storage::images::StoredRef;
use skiff_storage::{FsVerityHashValue, Store};

use self::compress::DestCompression;
use self::export::{ExportOptions, OutBlob, OutData, Outgoing};
use self::layout::{ArchiveWriter, LayoutDir, REF_NAME};
use crate::options::SourceOptions;
use crate::reference::{DEFAULT_TAG, DockerRef, ImageRef};
use crate::source::registry::Client;

/// How to copy out.
#[derive(Debug, Clone, Default)]
pub struct CopyOutOptions {
    /// How layers whose original blob is not kept are compressed.
    pub compression: DestCompression,
    /// Refuse rather than write a manifest of another digest.
    pub preserve_digests: bool,
    /// Layers compressed at once.
    pub jobs: usize,
    /// Credentials and TLS settings for a registry destination.
    pub destination: SourceOptions,
}

/// What a copy out did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CopyOutSummary {
    /// The digest of the manifest written.
    pub manifest_digest: String,
    /// The digest of the stored manifest (the same unless layers were compressed again).
    pub stored_digest: String,
    /// Layers of the image.
    pub layers: usize,
    /// Layers compressed again, their original blobs not being kept.
    pub regenerated: usize,
    /// Bytes of the blobs written (config and layers), skipped ones not counted.
    pub bytes_written: u64,
    /// Blobs the destination had already.
    pub blobs_skipped: usize,
    /// Wall time.
    pub seconds: f64,
}

/// A destination skiff does not write to.
#[derive(Debug, thiserror::Error)]
#[error(
    "destination {0}: skiff copies images out of composefs storage to oci:, oci-archive:, dir:, \
     docker:// and containers-storage:"
)]
pub struct UnsupportedDestination(pub String);

/// Copies the stored image `image` to `destination`.
#[context("Copying {image} out of the store to {destination}")]
pub async fn copy_out<H: FsVerityHashValue>(
    store: &Store<H>,
    image: &StoredRef,
    destination: &ImageRef,
    options: &CopyOutOptions,
) -> Result<CopyOutSummary> {
    let started = Instant::now();
    let export = ExportOptions {
        compression: options.compression,
        preserve_digests: options.preserve_digests,
        jobs: options.jobs.max(1),
    };
    let (store, image, dest) = (store.clone(), image.clone(), destination.clone());
    let mut summary = match destination {
        ImageRef::Oci { path, reference } => {
            let (path, tag) = (path.clone(), layout_tag(reference.as_deref())?);
            tokio::task::spawn_blocking(move || {
                // Regenerated blobs are staged in the layout's blob directory (under temporary
                // names), created only once the copy is known to go ahead.
                let blob_dir = path.join("blobs/sha256");
                let stage = || -> Result<std::path::PathBuf> {
                    std::fs::create_dir_all(&blob_dir)?;
                    Ok(blob_dir.clone())
                };
                let out = export::prepare(&store, &image, &export, &stage)?;
                write_layout(&LayoutDir::create(&path)?, out, tag.as_deref())
            })
            .await??
        }
        ImageRef::OciArchive { path, reference } => {
            let (path, tag) = (path.clone(), layout_tag(reference.as_deref())?);
            tokio::task::spawn_blocking(move || {
                let stage = stage_dir_beside(&path)?;
                let out = export::prepare(&store, &image, &export, &|| Ok(stage.path().into()))?;
                write_archive(&path, out, tag.as_deref())
            })
            .await??
        }
        ImageRef::Dir(path) => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                prepare_dir(&path)?;
                let out = export::prepare(&store, &image, &export, &|| Ok(path.clone()))?;
                write_dir(&path, out)
            })
            .await??
        }
        ImageRef::Docker(name) => {
            let stage = tempfile::Builder::new().prefix("skiff-push-").tempdir()?;
            let stage_path = stage.path().to_owned();
            let out = tokio::task::spawn_blocking(move || {
                export::prepare(&store, &image, &export, &|| Ok(stage_path.clone()))
            })
            .await??;
            push(name, &options.destination, out).await?
        }
        ImageRef::ContainersStorage(target) => {
            let scratch = tempfile::Builder::new()
                .prefix("skiff-to-containers-storage-")
                .tempdir()?;
            let layout_path = scratch.path().join("layout");
            let layout_ref = layout_path.clone();
            let summary = tokio::task::spawn_blocking(move || {
                let layout = LayoutDir::create(&layout_ref)?;
                let out =
                    export::prepare(&store, &image, &export, &|| Ok(layout.blob_dir().into()))?;
                write_layout(&layout, out, Some("out"))
            })
            .await??;
            crate::source::skopeo::copy_layout_to(
                &layout_path,
                "out",
                &format!("containers-storage:{target}"),
            )
            .await?;
            summary
        }
        _ => return Err(UnsupportedDestination(dest.to_string()).into()),
    };
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// The tag of an `oci:`/`oci-archive:` destination; a digest cannot name what is written.
fn layout_tag(reference: Option<&str>) -> Result<Option<String>> {
    match reference {
        Some(r) if r.starts_with('@') || r.starts_with("sha256:") => bail!(
            "a layout destination is named by a tag, not a digest ({r}): the digest is the \
             manifest's"
        ),
        r => Ok(r.map(str::to_owned)),
    }
}

/// A directory for regenerated blobs on the filesystem of `path`, in its parent directory
/// (created if needed); removed when dropped.
#[context("Creating a staging directory beside {}", path.display())]
fn stage_dir_beside(path: &Path) -> Result<tempfile::TempDir> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    Ok(tempfile::Builder::new()
        .prefix(".skiff-stage-")
        .tempdir_in(dir)?)
}

/// The summary of `out`, before anything is written.
fn summary_of(out: &Outgoing) -> CopyOutSummary {
    CopyOutSummary {
        manifest_digest: out.manifest_digest.to_string(),
        stored_digest: out.stored_digest.to_string(),
        layers: out.layers.len(),
        regenerated: out.regenerated,
        bytes_written: 0,
        blobs_skipped: 0,
        seconds: 0.0,
    }
}

/// The config and then the layers, each once.
fn blobs(out: Outgoing) -> (Vec<OutBlob>, Vec<u8>, String) {
    let mut blobs = vec![out.config];
    for layer in out.layers {
        if !blobs.iter().any(|b| b.digest == layer.digest) {
            blobs.push(layer);
        }
    }
    (blobs, out.manifest_json, out.media_type)
}

/// The index entry of the manifest.
fn index_entry(manifest: &[u8], media_type: &str, tag: Option<&str>) -> serde_json::Value {
    let mut entry = serde_json::json!({
        "mediaType": media_type,
        "digest": skiff_storage::digest::digest_of(manifest).to_string(),
        "size": manifest.len(),
    });
    if let Some(tag) = tag {
        entry["annotations"] = serde_json::json!({ REF_NAME: tag });
    }
    entry
}

fn write_layout(layout: &LayoutDir, out: Outgoing, tag: Option<&str>) -> Result<CopyOutSummary> {
    let mut summary = summary_of(&out);
    let (blobs, manifest, media_type) = blobs(out);
    for blob in blobs {
        let digest = blob.digest.to_string();
        if layout.has_blob(&digest) {
            summary.blobs_skipped += 1;
            continue;
        }
        summary.bytes_written += blob.size;
        match blob.data {
            OutData::Regenerated(staged) => layout.put_staged(&digest, staged)?,
            _ => layout.put_blob(&digest, &mut blob.reader()?)?,
        }
    }
    let digest = skiff_storage::digest::digest_of(&manifest).to_string();
    summary.bytes_written += manifest.len() as u64;
    if !layout.has_blob(&digest) {
        layout.put_blob(&digest, &mut &manifest[..])?;
    }
    layout.add_manifest(index_entry(&manifest, &media_type, tag))?;
    Ok(summary)
}

fn write_archive(path: &Path, out: Outgoing, tag: Option<&str>) -> Result<CopyOutSummary> {
    let mut summary = summary_of(&out);
    let (blobs, manifest, media_type) = blobs(out);
    let mut archive = ArchiveWriter::create(path)?;
    for blob in &blobs {
        summary.bytes_written += blob.size;
        archive.put_blob(blob.digest.as_ref(), blob.size, &mut blob.reader()?)?;
    }
    let digest = skiff_storage::digest::digest_of(&manifest).to_string();
    archive.put_blob(&digest, manifest.len() as u64, &mut &manifest[..])?;
    summary.bytes_written += manifest.len() as u64;
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::format::media::INDEX_MEDIA_TYPE,
        "manifests": [index_entry(&manifest, &media_type, tag)],
    }))?;
    archive.finish(&index)?;
    Ok(summary)
}

/// What skopeo's `dir:` transport writes first, and looks for in a directory it may reuse.
const DIR_VERSION: &[u8] = b"Directory Transport Version: 1.1\n";

/// Creates a `dir:` destination, or checks that an existing one may be written: empty, or
/// one skopeo wrote (as skopeo checks).
#[context("Preparing the directory {}", path.display())]
fn prepare_dir(path: &Path) -> Result<()> {
    match std::fs::read_dir(path) {
        Ok(mut entries) => {
            if entries.next().is_some() && !path.join("version").exists() {
                bail!(
                    "{} is not empty and holds no image in skopeo's dir: format (no version \
                     file): refusing to write into it",
                    path.display()
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(path)?,
        Err(e) => return Err(e.into()),
    }
    std::fs::write(path.join("version"), DIR_VERSION)?;
    Ok(())
}

fn write_dir(path: &Path, out: Outgoing) -> Result<CopyOutSummary> {
    let mut summary = summary_of(&out);
    let (blobs, manifest, _) = blobs(out);
    for blob in blobs {
        let target = path.join(blob.digest.digest());
        summary.bytes_written += blob.size;
        let staged = match blob.data {
            OutData::Regenerated(staged) => staged,
            _ => {
                let mut tmp = tempfile::NamedTempFile::new_in(path)?;
                std::io::copy(&mut blob.reader()?, &mut tmp)?;
                tmp
            }
        };
        layout::put_readable(staged, &target)?;
    }
    let mut tmp = tempfile::NamedTempFile::new_in(path)?;
    std::io::Write::write_all(&mut tmp, &manifest)?;
    layout::put_readable(tmp, &path.join("manifest.json"))?;
    summary.bytes_written += manifest.len() as u64;
    Ok(summary)
}

/// Pushes `out` to the registry repository of `name`: blobs, then the manifest by digest and,
/// if `name` has one, by tag.
#[context("Pushing to {name}")]
async fn push(name: &DockerRef, options: &SourceOptions, out: Outgoing) -> Result<CopyOutSummary> {
    if let Some(pinned) = name.digest() {
        anyhow::ensure!(
            pinned == out.manifest_digest.as_ref(),
            "the destination names digest {pinned}, but the manifest written is {}",
            out.manifest_digest
        );
    }
    let client = Client::new_for_push(name, options)?;
    let mut summary = summary_of(&out);
    let (blobs, manifest, media_type) = blobs(out);
    for blob in &blobs {
        let digest = blob.digest.to_string();
        if client.has_blob(&digest).await? {
            summary.blobs_skipped += 1;
            continue;
        }
        client.push_blob(&digest, blob.size, blob.reader()?).await?;
        summary.bytes_written += blob.size;
    }
    let digest = skiff_storage::digest::digest_of(&manifest).to_string();
    client
        .push_manifest(&digest, manifest.clone(), &media_type)
        .await?;
    // As skopeo: a reference with neither tag nor digest means `latest`.
    let tag = match (name.tag(), name.digest()) {
        (Some(tag), _) => Some(tag),
        (None, None) => Some(DEFAULT_TAG),
        (None, Some(_)) => None,
    };
    if let Some(tag) = tag {
        client
            .push_manifest(tag, manifest.clone(), &media_type)
            .await
            .context("Tagging the manifest")?;
    }
    summary.bytes_written += manifest.len() as u64;
    Ok(summary)
}
