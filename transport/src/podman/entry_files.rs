//! The files of a layer store entry beside `diff/`: `info`, the JSON containers/storage
//! decodes into its `Layer` (the fields podman needs), and `blob`, the layer compressed, which
//! podman reads only for `podman push` and `podman save` and checks against `diff-digest`.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};
use rustix::fs::AtFlags;
use serde::{Deserialize, Serialize};
use skiff_storage::images::ImageLayer;
use skiff_storage::kept_blobs::open_kept_blob;
use skiff_storage::{FsVerityHashValue, Store};

use crate::push::compress::{DestCompression, regenerate};

/// Largest marker or `info` file read: a few paths or fields.
const MAX_SMALL_FILE: u64 = 64 * 1024;

/// containers/storage's `archive.Compression` values, as `info` carries them.
const COMPRESSION_NONE: u8 = 0;
const COMPRESSION_GZIP: u8 = 2;
const COMPRESSION_ZSTD: u8 = 4;

/// An entry's `info`: the fields of containers/storage's `Layer` podman needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct LayerInfo {
    /// The DiffID.
    pub diff_digest: String,
    /// The compressed digest the manifest names (the entry's name).
    pub compressed_diff_digest: String,
    /// The manifest's size for the blob.
    pub compressed_size: u64,
    /// The tar's length.
    pub diff_size: u64,
    /// How `blob` is compressed.
    pub compression: u8,
}

/// Where an entry's `blob` came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlobSource {
    /// A hard link to the kept original.
    Linked,
    /// A clone of the kept original.
    Cloned,
    /// A copy of the kept original.
    Copied,
    /// The layer compressed again (zstd): the store keeps no original.
    Regenerated,
}

/// Writes `tmp/blob`: the kept original (linked, else cloned, else copied), else the layer
/// compressed again. Returns where it came from, its `compression`, and the bytes written.
pub(super) fn write_blob<H: FsVerityHashValue>(
    store: &Store<H>,
    layer: &ImageLayer<H>,
    tmp: &Path,
) -> Result<(BlobSource, u8, u64)> {
    let target = tmp.join("blob");
    let kept = open_kept_blob(store, &layer.digest)?.filter(|k| k.size == layer.size);
    if let Some(kept) = kept {
        let compression = if layer.media_type.ends_with("zstd") {
            COMPRESSION_ZSTD
        } else if layer.media_type.ends_with("gzip") {
            COMPRESSION_GZIP
        } else {
            COMPRESSION_NONE
        };
        let dir = File::open(tmp)?;
        // A hard link to the object: no bytes written, and the blob outlives a gc of the image.
        if rustix::fs::linkat(&kept.file, "", &dir, "blob", AtFlags::EMPTY_PATH).is_ok() {
            return Ok((BlobSource::Linked, compression, 0));
        }
        let mut out = File::create(&target)?;
        if rustix::fs::ioctl_ficlone(&out, &kept.file).is_ok() {
            return Ok((BlobSource::Cloned, compression, 0));
        }
        let mut source = &kept.file;
        let copied = std::io::copy(&mut source, &mut out)?;
        out.sync_all()?;
        return Ok((BlobSource::Copied, compression, copied));
    }
    let made = regenerate(
        store,
        &layer.diff_id,
        &layer.stream,
        DestCompression::Zstd,
        tmp,
    )?;
    made.file
        .persist(&target)
        .map_err(|e| anyhow::Error::from(e.error))?;
    Ok((BlobSource::Regenerated, COMPRESSION_ZSTD, made.size))
}

pub(super) fn read_info(entry: &Path) -> Result<LayerInfo> {
    let path = entry.join("info");
    let bytes = read_small(&path)?.with_context(|| format!("{} is missing", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("Parsing {}", path.display()))
}

pub(super) fn read_small(path: &Path) -> Result<Option<Vec<u8>>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("Opening {}", path.display())),
    };
    let size = file.metadata()?.len();
    anyhow::ensure!(
        size <= MAX_SMALL_FILE,
        "{} is {size} bytes, more than {MAX_SMALL_FILE}",
        path.display()
    );
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut &file, &mut bytes)?;
    Ok(Some(bytes))
}
