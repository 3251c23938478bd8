//! The delta layer converter: a tar-diff applied to the files of the delta's source image
//! ([`super::source_files`]) gives the layer's tar, which is imported as any layer is.
//!
//! The applier is the `oci-delta` crate's `tar_patch_apply` (the one composefs-rs and bootc
//! use). The tar-diff blob is checked against its descriptor (size and digest) as it is read,
//! and the rebuilt tar against the target config's DiffID by the import.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use containers_image_proxy::oci_spec::image::Descriptor;
use fn_error_context::context;
use skiff_storage::digest::HashingReader;
use skiff_storage::images::ImageTree;
use skiff_storage::layer_import::{PendingLayer, split_layer_with_index};
use skiff_storage::stored_files::StoredFiles;
use skiff_storage::{FsVerityHashValue, OciDigest, Store};

use super::source_files::SourceFiles;
use crate::blob::{BlobError, check_read};
use crate::io::{ChannelReader, ChannelWriter, produced_and_imported};
use crate::source::BlobStream;

/// Applies the tar-diff `blob` (described by `desc`) to the files of `tree` and imports the
/// result as the layer `diff_id`.
#[context("Applying tar-diff {} (DiffID {diff_id})", desc.digest())]
pub(crate) async fn apply_tar_diff<H: FsVerityHashValue>(
    blob: BlobStream,
    store: &Store<H>,
    desc: &Descriptor,
    diff_id: &OciDigest,
    tree: Arc<ImageTree<H>>,
    stored: Arc<StoredFiles<H>>,
    fetched: Arc<AtomicU64>,
) -> Result<PendingLayer<H>> {
    let (tx, rx) = crate::io::channel();
    let repo = store.clone();
    let desc = desc.clone();
    let producer = tokio::task::spawn_blocking(move || {
        let result = (|| -> Result<()> {
            let mut delta = VerifiedBlob::new(blob.into_blocking(), &desc, fetched);
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
    let imported = split_layer_with_index(store, diff_id, rx, stored).await;
    produced_and_imported(producer.await?, imported)
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

/// A delta blob checked against its descriptor as the applier reads it: never more than its
/// size, and its digest once read to the end.
struct VerifiedBlob<'a> {
    inner: HashingReader<std::io::Take<ChannelReader>>,
    desc: &'a Descriptor,
    fetched: Arc<AtomicU64>,
}

impl<'a> VerifiedBlob<'a> {
    fn new(reader: ChannelReader, desc: &'a Descriptor, fetched: Arc<AtomicU64>) -> Self {
        Self {
            inner: HashingReader::new(reader.take(desc.size() + 1)),
            desc,
            fetched,
        }
    }

    /// Reads what the applier left and checks size and digest.
    fn finish(mut self) -> Result<()> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        Ok(check_read(&mut self.inner, self.desc)?)
    }
}

impl Read for VerifiedBlob<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let count = self.inner.count();
        if n == 0 && !buf.is_empty() && count < self.desc.size() {
            // Said here: the applier would only see a bare end of file.
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                BlobError::SizeMismatch {
                    expected: self.desc.size(),
                    actual: count,
                },
            ));
        }
        self.fetched.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}
