//! Layer blobs made again from the store, for images whose original blobs are not kept: the
//! layer's tar, rebuilt exactly from its splitstream and checked against its DiffID, compressed
//! into a temporary file.

use std::path::Path;

use anyhow::{Result, bail, ensure};
use fn_error_context::context;
use skiff_storage::digest::HashingWriter;
use skiff_storage::{FsVerityHashValue, OciDigest, Store};

/// How regenerated layers are compressed (`--dest-compress-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DestCompression {
    /// gzip at its default level, as skopeo writes layers by default.
    #[default]
    Gzip,
    /// zstd at its default level (3).
    Zstd,
}

impl std::str::FromStr for DestCompression {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "gzip" => Ok(Self::Gzip),
            "zstd" => Ok(Self::Zstd),
            "zstd:chunked" => bail!(
                "--dest-compress-format zstd:chunked is not supported when copying out of \
                 composefs storage yet (use gzip or zstd)"
            ),
            other => bail!(
                "--dest-compress-format {other:?}: unknown compression format (expected gzip or zstd)"
            ),
        }
    }
}

impl std::fmt::Display for DestCompression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
        })
    }
}

impl DestCompression {
    /// The OCI media type of a layer compressed so.
    pub(crate) fn oci_media_type(self) -> &'static str {
        match self {
            Self::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Self::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// The Docker schema 2 media type of a layer compressed so, if there is one.
    pub(crate) fn docker_media_type(self) -> Option<&'static str> {
        match self {
            Self::Gzip => Some("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Self::Zstd => None,
        }
    }
}

/// A layer blob made again.
#[derive(Debug)]
pub(crate) struct Regenerated {
    pub(crate) digest: OciDigest,
    pub(crate) size: u64,
    pub(crate) file: tempfile::NamedTempFile,
}

/// Compresses the stored layer `diff_id` (splitstream `layer`) into a temporary file in `dir`
/// (blocking). The tar is checked against `diff_id` on the way: a store that no longer gives
/// back the layer it verified is an error, not a blob.
#[context("Compressing layer {diff_id} again")]
pub(crate) fn regenerate<H: FsVerityHashValue>(
    store: &Store<H>,
    diff_id: &OciDigest,
    layer: &H,
    compression: DestCompression,
    dir: &Path,
) -> Result<Regenerated> {
    let out = HashingWriter::new(std::io::BufWriter::with_capacity(
        WRITE_BUFFER,
        tempfile::NamedTempFile::new_in(dir)?,
    ));
    let (compressed, tar_digest) = match compression {
        DestCompression::Gzip => {
            let mut tar = HashingWriter::new(flate2::write::GzEncoder::new(
                out,
                flate2::Compression::default(),
            ));
            store.write_layer_tar(layer, &mut tar)?;
            let (encoder, digest, _) = tar.finish()?;
            (encoder.finish()?, digest)
        }
        DestCompression::Zstd => {
            let mut tar = HashingWriter::new(zstd::stream::write::Encoder::new(
                out,
                zstd::DEFAULT_COMPRESSION_LEVEL,
            )?);
            store.write_layer_tar(layer, &mut tar)?;
            let (encoder, digest, _) = tar.finish()?;
            (encoder.finish()?, digest)
        }
    };
    ensure!(
        &tar_digest == diff_id,
        "the store gives back a tar of digest {tar_digest} for layer {diff_id}: it is damaged \
         (see skiff fsck)"
    );
    let (buffered, digest, size) = compressed.finish()?;
    let file = buffered.into_inner().map_err(|e| e.into_error())?;
    Ok(Regenerated { digest, size, file })
}

/// Buffer in front of the temporary file.
const WRITE_BUFFER: usize = 1024 * 1024;
