//! Original layer blobs kept in the store (`--keep-blobs`, the "fat" store), so that an image
//! copied out again has the blobs, and so the manifest digest, it came with.
//!
//! A kept blob is stored as composefs-oci stores artifact blobs: its bytes are one object, named
//! by a splitstream `oci-blob-<digest>` (content type `oci_blob`) holding one external reference
//! to it. What keeps it alive is the manifest splitstream of each image whose manifest names it:
//! a named reference `skiff-blob-<digest>` to the blob's stream. Both skiff's and cfsctl's
//! garbage collection follow named references, so a kept blob lives exactly as long as an image
//! that names it, and an image removed takes its blobs with it. A blob written by a copy that
//! then failed has no such reference and is collected like any unfinished layer.
//!
//! A kept layer blob also says which layer it holds: it is kept only once its bytes have been
//! imported and checked against a DiffID, and its stream then carries a named reference
//! `skiff-layer` to that layer's splitstream. Only a blob paired so with the stored layer of
//! the DiffID an image's config names may stand in for that layer without being read again: a
//! manifest that pairs a kept blob with another layer's DiffID is read, and refused. The stream
//! is written once and never again: images name it by its verity, and garbage collection
//! follows such a reference into a stream only while the stream's name still points at it.

use std::fs::File;
use std::io::Write;

use anyhow::{Context, Result, ensure};
use composefs::fsverity::FsVerityHashValue;
use composefs_oci::oci_image::blob_identifier;
use composefs_oci::{BLOB_CONTENT_TYPE, OciDigest};
use fn_error_context::context;

use crate::repository::Store;

/// Prefix of the manifest splitstream's named references to the kept blobs of its layers.
pub const KEPT_BLOB_REF_PREFIX: &str = "skiff-blob-";

/// The name of the manifest's reference to the kept blob `digest`.
pub fn kept_blob_ref(digest: &OciDigest) -> String {
    format!("{KEPT_BLOB_REF_PREFIX}{digest}")
}

/// The named reference in a kept layer blob's stream to the layer splitstream its bytes
/// decompress to.
pub const KEPT_BLOB_LAYER_REF: &str = "skiff-layer";

/// A new object being written in the store's objects directory: an anonymous file until
/// [`keep_blob`] links it, gone if dropped before.
#[context("Creating a file for a kept blob")]
pub fn blob_tmpfile<H: FsVerityHashValue>(store: &Store<H>) -> Result<File> {
    Ok(File::from(store.repo().create_object_tmpfile()?))
}

/// Stores the `size` bytes written to `file` (from [`blob_tmpfile`]) as the kept blob `digest`
/// and returns the verity of its stream (blocking: it syncs the repository). The caller has
/// checked that the bytes are `size` long and hash to `digest`, and, when it gives `layer`,
/// that they decompress to the layer whose splitstream that is. Idempotent: a blob kept before
/// stays as it was kept.
#[context("Keeping blob {digest}")]
pub fn keep_blob<H: FsVerityHashValue>(
    store: &Store<H>,
    digest: &OciDigest,
    mut file: File,
    size: u64,
    layer: Option<&H>,
) -> Result<H> {
    crate::digest::require_sha256(digest)?;
    let repo = store.repo();
    let name = blob_identifier(digest);
    if let Some(verity) = repo.has_stream(&name)? {
        return Ok(verity);
    }
    file.flush()?;
    let (object, _) = repo.finalize_object_tmpfile(file, size)?;
    let mut writer = repo.create_stream(BLOB_CONTENT_TYPE)?;
    writer.add_external_size(size);
    writer.write_reference(object)?;
    if let Some(layer) = layer {
        writer.add_named_stream_ref(KEPT_BLOB_LAYER_REF, layer);
    }
    repo.write_stream(writer, &name, None)
}

/// A kept blob opened for reading.
#[derive(Debug)]
pub struct KeptBlob<H> {
    /// The verity of its `oci-blob-` stream.
    pub stream: H,
    /// Its bytes.
    pub file: File,
    /// Its length.
    pub size: u64,
}

/// Opens the kept blob `digest`, if the store holds it (blocking). The bytes are not re-hashed
/// here: readers check them against the digest as they stream them out.
#[context("Opening kept blob {digest}")]
pub fn open_kept_blob<H: FsVerityHashValue>(
    store: &Store<H>,
    digest: &OciDigest,
) -> Result<Option<KeptBlob<H>>> {
    let repo = store.repo();
    let name = blob_identifier(digest);
    let Some(stream) = repo.has_stream(&name)? else {
        return Ok(None);
    };
    let mut reader = repo.open_stream(&name, Some(&stream), Some(BLOB_CONTENT_TYPE))?;
    let mut objects = Vec::new();
    reader.get_object_refs(|id| objects.push(id.clone()))?;
    ensure!(
        objects.len() == 1,
        "the stream of kept blob {digest} names {} objects, not one",
        objects.len()
    );
    let file = store.open_object(&objects[0])?;
    let size = file
        .metadata()
        .context("Reading the kept blob's size")?
        .len();
    Ok(Some(KeptBlob { stream, file, size }))
}

/// Whether the kept blob `digest` is known to decompress to the layer whose splitstream is
/// `layer` (blocking).
pub fn kept_blob_holds<H: FsVerityHashValue>(
    store: &Store<H>,
    digest: &OciDigest,
    layer: &H,
) -> Result<bool> {
    let repo = store.repo();
    let name = blob_identifier(digest);
    let Some(stream) = repo.has_stream(&name)? else {
        return Ok(false);
    };
    let reader = repo.open_stream(&name, Some(&stream), Some(BLOB_CONTENT_TYPE))?;
    Ok(reader.lookup_named_ref(KEPT_BLOB_LAYER_REF) == Some(layer))
}

/// The blobs among `digests` that the store keeps, with the verity of each one's stream
/// (blocking).
pub fn kept_blobs<'a, H: FsVerityHashValue>(
    store: &Store<H>,
    digests: impl IntoIterator<Item = &'a OciDigest>,
) -> Result<Vec<(OciDigest, H)>> {
    let mut kept = Vec::new();
    for digest in digests {
        if let Some(verity) = store.repo().has_stream(&blob_identifier(digest))? {
            kept.push((digest.clone(), verity));
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::digest_of;
    use crate::repository::{HashAlgorithm, InitOptions, init};
    use composefs::fsverity::Sha256HashValue;
    use std::io::Read;

    fn store() -> (tempfile::TempDir, Store<Sha256HashValue>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repo");
        init(
            &path,
            InitOptions {
                hash: HashAlgorithm::Sha256,
                ..Default::default()
            },
        )
        .unwrap();
        let store = Store::open_writable(&path).unwrap();
        (dir, store)
    }

    #[test]
    fn a_kept_blob_reads_back_exactly_and_is_found_by_digest() {
        let (_dir, store) = store();
        let bytes = b"a compressed layer, as it came".repeat(1000);
        let digest = digest_of(&bytes);
        assert!(open_kept_blob(&store, &digest).unwrap().is_none());
        assert!(kept_blobs(&store, [&digest]).unwrap().is_empty());

        let mut file = blob_tmpfile(&store).unwrap();
        file.write_all(&bytes).unwrap();
        let verity = keep_blob(&store, &digest, file, bytes.len() as u64, None).unwrap();
        // Keeping it again changes nothing.
        let again = keep_blob(&store, &digest, blob_tmpfile(&store).unwrap(), 0, None).unwrap();
        assert_eq!(verity, again);

        let mut kept = open_kept_blob(&store, &digest).unwrap().unwrap();
        assert_eq!((kept.size, &kept.stream), (bytes.len() as u64, &verity));
        let mut read = Vec::new();
        kept.file.read_to_end(&mut read).unwrap();
        assert_eq!(read, bytes);
        assert_eq!(
            kept_blobs(&store, [&digest]).unwrap(),
            vec![(digest.clone(), verity)]
        );
        assert_eq!(kept_blob_ref(&digest), format!("skiff-blob-{digest}"));
    }

    #[test]
    fn a_kept_blob_holds_only_the_layer_it_was_kept_for() {
        let (_dir, store) = store();
        let layer = store
            .repo()
            .ensure_object(b"a layer splitstream, say")
            .unwrap();
        let other = store.repo().ensure_object(b"another layer").unwrap();
        let keep = |bytes: &[u8], layer: Option<&Sha256HashValue>| {
            let mut file = blob_tmpfile(&store).unwrap();
            file.write_all(bytes).unwrap();
            keep_blob(&store, &digest_of(bytes), file, bytes.len() as u64, layer).unwrap()
        };
        let paired = b"layer bytes".repeat(100);
        let verity = keep(&paired, Some(&layer));
        assert!(kept_blob_holds(&store, &digest_of(&paired), &layer).unwrap());
        assert!(!kept_blob_holds(&store, &digest_of(&paired), &other).unwrap());
        // Kept again for another layer: the stream stays as it was (images name it).
        assert_eq!(keep(&paired, Some(&other)), verity);
        assert!(!kept_blob_holds(&store, &digest_of(&paired), &other).unwrap());
        // Kept without a layer (an artifact's blob): it stands in for none.
        let unpaired = b"artifact bytes".repeat(100);
        keep(&unpaired, None);
        assert!(!kept_blob_holds(&store, &digest_of(&unpaired), &layer).unwrap());
        // A blob never kept holds nothing.
        assert!(!kept_blob_holds(&store, &digest_of(b"x"), &layer).unwrap());
    }
}
