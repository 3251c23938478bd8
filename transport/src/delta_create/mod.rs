//! `skiff delta create OLD NEW DESTINATION`: the delta that turns OLD into NEW, as an
//! oci-archive, an OCI layout or an artifact in a registry, that oci-delta, cfsctl and skiff
//! apply. In a registry, the delta is also listed under NEW's referrers tag (`sha256-HEX`,
//! an image index) unless the registry indexes the `subject` itself, so that copies of NEW
//! find it.
//!
//! OLD is read from a composefs repository (its file tree is what the delta's OPENs name, as
//! an applier will see it); NEW from an OCI layout (its layer blobs go into the delta where a
//! tar-diff would not be smaller) or a composefs repository (layer tars from the store; a layer
//! carried whole is recompressed with gzip). Layers of NEW whose DiffID OLD has are left out
//! (listed in `delta.reused`); every other layer becomes a tar-diff ([`generate`]) when that
//! is smaller than the layer blob, else the blob itself.
//!
//! The stages, one file each: [`old_image`] and [`new_image`] load the pair, [`layers`] chooses
//! how each layer goes in ([`generate`] writes a tar-diff), [`manifest`] assembles the delta as
//! Go oci-delta would, and [`layout_writer`] or [`push`] writes it out.

mod generate;
mod layers;
mod layout_writer;
mod manifest;
mod new_image;
mod old_image;
mod push;

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Instant;

use anyhow::{Result, bail};
use containers_image_proxy::oci_spec::image::Descriptor;
use fn_error_context::context;
use serde::Serialize;
use skiff_storage::{FsVerityHashValue, Store};

use crate::format::oci_delta::tar_diff::BinaryDiff;
use crate::options::SourceOptions;
use crate::reference::ImageRef;
use layers::LayerSplit;
use manifest::{GoDescriptor, MANIFEST_MEDIA_TYPE, SourceDigests};
pub use new_image::NewImage;
use new_image::NewLayers;
use old_image::OldImage;

/// How to make a delta.
#[derive(Debug, Clone, Copy)]
pub struct CreateOptions {
    /// How changed files are diffed.
    pub binary_diff: BinaryDiff,
    /// Layers diffed at once.
    pub jobs: usize,
}

/// What a delta holds, for the summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CreateSummary {
    /// Digest of the delta manifest.
    pub delta_digest: String,
    /// Target layers left out (the source has them).
    pub layers_reused: usize,
    /// Target layers carried as tar-diffs.
    pub layers_tar_diff: usize,
    /// Target layers carried whole.
    pub layers_original: usize,
    /// Bytes of the layer blobs of the delta.
    pub delta_bytes: u64,
    /// Compressed bytes of the target layers the delta carries (what a pull would fetch).
    pub replaced_bytes: u64,
    /// Seconds taken.
    pub seconds: f64,
}

/// Where a blob of the delta comes from.
#[derive(Debug)]
enum BlobData {
    /// Held in memory (manifests and configs).
    Bytes(Vec<u8>),
    /// Written to a temporary file (tar-diffs, recompressed layers).
    File(tempfile::NamedTempFile),
    /// NEW's own layer blob.
    Layout(Box<Descriptor>),
}

/// A blob of the delta.
#[derive(Debug)]
struct Blob {
    digest: String,
    size: u64,
    data: BlobData,
}

impl Blob {
    /// A reader of the blob's bytes.
    fn open(&self, new: &dyn NewLayers) -> Result<Box<dyn Read + Send>> {
        Ok(match &self.data {
            BlobData::Bytes(b) => Box::new(std::io::Cursor::new(b.clone())),
            BlobData::File(f) => Box::new(f.reopen()?),
            BlobData::Layout(desc) => new
                .blob(desc)?
                .ok_or_else(|| anyhow::anyhow!("NEW has no layer blob"))?,
        })
    }
}

/// Refuses a destination a delta cannot be written to: it goes to an oci-archive, an OCI
/// layout or a registry.
pub fn check_destination(dest: &ImageRef) -> Result<()> {
    match dest {
        ImageRef::Oci { .. } | ImageRef::OciArchive { .. } | ImageRef::Docker(_) => Ok(()),
        other => bail!(
            "destination {other}: a delta is written to oci-archive:PATH, oci:PATH or docker://NAME"
        ),
    }
}

/// Creates the delta from `old_tag` in `old_store` to the image `new` names, written to
/// `dest` (`oci-archive:`, `oci:`, or `docker://`, reached with `dest_options`).
#[context("Creating the delta from {old_tag} to {dest}")]
pub async fn create_delta<H: FsVerityHashValue>(
    old_store: &Store<H>,
    old_tag: &str,
    new: NewImage,
    dest: &ImageRef,
    dest_options: &SourceOptions,
    options: CreateOptions,
) -> Result<CreateSummary> {
    let started = Instant::now();
    check_destination(dest)?;
    let old = OldImage::load(old_store, old_tag).await?;
    let NewImage { image, layers: new } = new;
    let split = LayerSplit::new(&image.manifest, &image.config, &old.diff_ids);
    let choices = layers::choose_all(
        new.clone(),
        old.files.clone(),
        &split.carried,
        options.binary_diff,
        options.jobs,
    )
    .await?;
    let mut summary = CreateSummary::default();
    let source = SourceDigests {
        manifest: old.manifest_digest,
        config: old.config_digest,
    };
    let delta = manifest::assemble(&image, source, &split, choices, &mut summary)?;
    summary.delta_digest = delta.digest.clone();
    let (path, name, archive) = match dest {
        ImageRef::Docker(name) => {
            push::push(name, dest_options, &delta, &new).await?;
            summary.seconds = started.elapsed().as_secs_f64();
            return Ok(summary);
        }
        ImageRef::OciArchive { path, reference } => (path.clone(), reference, true),
        ImageRef::Oci { path, reference } => (path.clone(), reference, false),
        _ => unreachable!("checked above"),
    };
    let index_entry = GoDescriptor {
        media_type: MANIFEST_MEDIA_TYPE.to_owned(),
        digest: delta.digest.clone(),
        size: delta.manifest.len() as u64,
        annotations: name
            .as_ref()
            .map(|n| BTreeMap::from([(layout_writer::REF_NAME.to_owned(), n.clone())])),
    };
    tokio::task::spawn_blocking(move || {
        if archive {
            layout_writer::write_archive(&path, &delta.blobs, index_entry, new.as_ref())
        } else {
            layout_writer::write_directory(&path, &delta.blobs, index_entry, new.as_ref())
        }
    })
    .await??;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}
