//! What a blob must be: exactly the size and sha256 digest its descriptor names. Every blob
//! skiff reads (manifests, configs, layers, delta blobs) is checked here, whichever source it
//! comes from and whichever converter reads it.

use std::io::Read;

use anyhow::Result;
use containers_image_proxy::oci_spec::image::Descriptor;
use skiff_storage::OciDigest;
use skiff_storage::digest::HashingReader;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest config accepted: real ones are kilobytes; some carry long histories.
pub(crate) const MAX_CONFIG_SIZE: u64 = 16 * 1024 * 1024;
/// Largest manifest or index accepted (the distribution spec suggests registries accept 4 MiB).
pub(crate) const MAX_MANIFEST_SIZE: u64 = 4 * 1024 * 1024;

/// A blob whose bytes are not what its descriptor says.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The bytes hash to another digest.
    #[error("blob digest mismatch: the manifest says {expected}, the blob is {actual}")]
    DigestMismatch {
        /// The descriptor's digest.
        expected: OciDigest,
        /// The digest of the bytes read.
        actual: OciDigest,
    },
    /// There are more or fewer bytes than the descriptor says.
    #[error("blob size mismatch: the manifest says {expected} bytes, the blob has {actual}")]
    SizeMismatch {
        /// The descriptor's size.
        expected: u64,
        /// Bytes read (at most one more than expected: readers stop there).
        actual: u64,
    },
}

/// Checks what `hashed` read (all of the blob, and at most one byte more) against `desc`.
pub(crate) fn check_read<R>(
    hashed: &mut HashingReader<R>,
    desc: &Descriptor,
) -> Result<(), BlobError> {
    if hashed.count() != desc.size() {
        return Err(BlobError::SizeMismatch {
            expected: desc.size(),
            actual: hashed.count(),
        });
    }
    let actual = hashed.finish();
    if &actual != desc.digest() {
        return Err(BlobError::DigestMismatch {
            expected: desc.digest().clone(),
            actual,
        });
    }
    Ok(())
}

/// Reads `reader` whole, refusing more than `max` bytes.
pub(crate) fn read_bounded(reader: impl Read, max: u64) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    reader.take(max + 1).read_to_end(&mut data)?;
    anyhow::ensure!(
        data.len() as u64 <= max,
        "more than the {max} bytes allowed "
    );
    Ok(data)
}

/// Checks whole blob bytes against their descriptor.
pub(crate) fn verify_blob(data: &[u8], desc: &Descriptor) -> Result<(), BlobError> {
    let mut hashed = HashingReader::new(data);
    std::io::copy(&mut hashed, &mut std::io::sink()).expect("reading a slice cannot fail");
    check_read(&mut hashed, desc)
}

/// Refuses a small blob (manifest, config) whose descriptor claims more than `max` bytes, or
/// an algorithm skiff cannot verify, before anything is allocated or read.
pub(crate) fn check_small(desc: &Descriptor, max: u64) -> Result<()> {
    skiff_storage::digest::require_sha256(desc.digest())?;
    anyhow::ensure!(
        desc.size() <= max,
        "blob {} claims {} bytes, more than the {max} allowed",
        desc.digest(),
        desc.size()
    );
    Ok(())
}

/// Reads a small blob whole and checks it against its descriptor; `max` bounds the
/// allocation.
pub(crate) async fn read_small_blob(
    blob: impl AsyncRead + Unpin,
    desc: &Descriptor,
    max: u64,
) -> Result<Vec<u8>> {
    check_small(desc, max)?;
    let mut hashed = HashingReader::new(blob.take(desc.size() + 1));
    let mut out = Vec::with_capacity(desc.size() as usize);
    hashed.read_to_end(&mut out).await?;
    check_read(&mut hashed, desc)?;
    Ok(out)
}
