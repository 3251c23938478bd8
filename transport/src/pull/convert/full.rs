//! The full layer converter: a compressed blob stream in, a verified layer in the store out.
//!
//! Checks, in order: the media type is a layer type; the uncompressed tar hashes to the
//! config's DiffID (in [`skiff_storage::layer_import`]); the blob has exactly the descriptor's
//! size and digest. Only then is the layer named in the store.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use anyhow::{Context as _, Result};
use async_compression::tokio::bufread::{GzipDecoder, ZstdDecoder};
use containers_image_proxy::oci_spec::image::Descriptor;
use fn_error_context::context;
use skiff_storage::digest::HashingReader;
use skiff_storage::kept_blobs;
use skiff_storage::layer_import::{PendingLayer, split_layer};
use skiff_storage::{FsVerityHashValue, OciDigest, Store};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader, ReadBuf};

use crate::blob::check_read;
use crate::format::media::Compression;

/// Counts bytes read, for progress.
struct Counting<R> {
    inner: R,
    counter: Arc<AtomicU64>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counting<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if res.is_ready() {
            self.counter
                .fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
        }
        res
    }
}

/// The layer blob `blob` of `desc`, read to be checked: hashed, counted into `fetched`, and cut
/// one byte past the descriptor's size, to see an oversized blob. Refuses first what is not a
/// layer: the media type must name one (the bytes say how it is compressed, since some sources
/// label layers wrongly: docker-archive calls plain tars gzip, deltas call everything gzip).
fn checked_blob<R: AsyncRead + Unpin>(
    blob: R,
    desc: &Descriptor,
    fetched: Arc<AtomicU64>,
) -> Result<HashingReader<tokio::io::Take<Counting<R>>>> {
    Compression::of_layer(desc.media_type())?;
    skiff_storage::digest::require_sha256(desc.digest())?;
    Ok(HashingReader::new(
        Counting {
            inner: blob,
            counter: fetched,
        }
        .take(desc.size().saturating_add(1)),
    ))
}

/// Imports the compressed layer `blob` described by `desc`, whose DiffID is `diff_id`.
/// `fetched` counts compressed bytes as they arrive.
#[context("Importing layer {} (DiffID {diff_id})", desc.digest())]
pub async fn import_blob<H: FsVerityHashValue>(
    store: &Store<H>,
    blob: impl AsyncRead + Unpin + Send,
    desc: &Descriptor,
    diff_id: &OciDigest,
    fetched: Arc<AtomicU64>,
) -> Result<PendingLayer<H>> {
    let mut hashed = checked_blob(blob, desc, fetched)?;
    let pending = {
        let mut head = [0u8; 4];
        let mut filled = 0;
        while filled < head.len() {
            let n = hashed.read(&mut head[filled..]).await?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        let compression = Compression::sniff(&head[..filled]);
        let whole = std::io::Cursor::new(head[..filled].to_vec()).chain(&mut hashed);
        let buffered = BufReader::with_capacity(BLOB_BUFFER, whole);
        match compression {
            Compression::None => split_layer(store, diff_id, buffered).await?,
            Compression::Gzip => {
                let mut d = GzipDecoder::new(buffered);
                d.multiple_members(true);
                split_layer(store, diff_id, d).await?
            }
            Compression::Zstd => {
                let mut d = ZstdDecoder::new(buffered);
                d.multiple_members(true);
                split_layer(store, diff_id, d).await?
            }
        }
    };
    // Whatever follows the compressed data still counts in the blob digest.
    tokio::io::copy(&mut hashed, &mut tokio::io::sink()).await?;
    check_read(&mut hashed, desc)?;
    Ok(pending)
}

/// As [`import_blob`], keeping the blob (`--keep-blobs`): the blob is first written whole into
/// the store, checked against the descriptor, and kept (see [`skiff_storage::kept_blobs`]);
/// the layer is then imported from the kept copy, and the blob paired with it
/// ([`kept_blobs::pair_kept_blob`]). A layer that fails its DiffID check leaves an unreferenced,
/// unpaired blob behind, which garbage collection removes.
#[context("Keeping and importing layer {} (DiffID {diff_id})", desc.digest())]
pub async fn keep_and_import_blob<H: FsVerityHashValue>(
    store: &Store<H>,
    blob: impl AsyncRead + Unpin + Send,
    desc: &Descriptor,
    diff_id: &OciDigest,
    fetched: Arc<AtomicU64>,
) -> Result<PendingLayer<H>> {
    let mut hashed = checked_blob(blob, desc, fetched)?;
    let (store_for_file, digest) = (store.clone(), desc.digest().clone());
    let file =
        tokio::task::spawn_blocking(move || kept_blobs::blob_tmpfile(&store_for_file)).await??;
    let mut writer =
        tokio::io::BufWriter::with_capacity(BLOB_BUFFER, tokio::fs::File::from_std(file));
    tokio::io::copy(&mut hashed, &mut writer).await?;
    writer.flush().await?;
    check_read(&mut hashed, desc)?;
    let file = writer.into_inner().into_std().await;
    let (store_for_blob, size) = (store.clone(), desc.size());
    let kept = tokio::task::spawn_blocking(move || {
        kept_blobs::keep_blob(&store_for_blob, &digest, file, size)?;
        kept_blobs::open_kept_blob(&store_for_blob, &digest)?
            .context("the blob just kept is not in the store")
    })
    .await??;
    let local = tokio::fs::File::from_std(kept.file);
    let pending = import_blob(store, local, desc, diff_id, Arc::new(AtomicU64::new(0))).await?;
    // Its bytes checked against the DiffID: the blob may stand in for this layer from now on.
    let (store, digest, layer) = (
        store.clone(),
        desc.digest().clone(),
        pending.verity().clone(),
    );
    tokio::task::spawn_blocking(move || kept_blobs::pair_kept_blob(&store, &digest, &layer))
        .await??;
    Ok(pending)
}

/// Buffer between the blob and the decompressor.
const BLOB_BUFFER: usize = 128 * 1024;
