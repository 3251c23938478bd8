//! The full layer converter: a compressed blob stream in, a verified layer in the store out.
//!
//! Checks, in order: the media type is a layer type; the uncompressed tar hashes to the
//! config's DiffID (in [`skiff_storage::layer_import`]); the blob has exactly the descriptor's
//! size and digest. Only then is the layer named in the store.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use anyhow::Result;
use containers_image_proxy::oci_spec::image::Descriptor;
use fn_error_context::context;
use skiff_storage::digest::HashingReader;
use skiff_storage::kept_blobs;
use skiff_storage::layer_import::{PendingLayer, split_layer, split_new_layer};
use skiff_storage::{FsVerityHashValue, OciDigest, Store};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufReader, ReadBuf};

use crate::blob::check_read;
use crate::format::media::Compression;
use crate::io;

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
    import_blob_as(store, blob, desc, Some(diff_id), fetched).await
}

/// [`import_blob`], the DiffID checked when `expected` gives it, else computed.
async fn import_blob_as<H: FsVerityHashValue>(
    store: &Store<H>,
    blob: impl AsyncRead + Unpin + Send,
    desc: &Descriptor,
    expected: Option<&OciDigest>,
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
        match compression {
            Compression::None => {
                split(
                    store,
                    expected,
                    BufReader::with_capacity(BLOB_BUFFER, whole),
                )
                .await?
            }
            compressed => split_decompressed(store, expected, whole, compressed).await?,
        }
    };
    // Whatever follows the compressed data still counts in the blob digest.
    tokio::io::copy(&mut hashed, &mut tokio::io::sink()).await?;
    check_read(&mut hashed, desc)?;
    Ok(pending)
}

/// Splits the tar that `blob` decompresses to, the decompression on a thread of its own: the
/// blob is read (and hashed) here and sent to it, the tar it yields comes back to the split
/// here, so that one large layer keeps two cores busy (decompressing; hashing, cutting and
/// writing objects). An error of either side ends both, the first cause reported.
async fn split_decompressed<H: FsVerityHashValue>(
    store: &Store<H>,
    expected: Option<&OciDigest>,
    blob: impl AsyncRead + Unpin,
    compression: Compression,
) -> Result<PendingLayer<H>> {
    let (compressed_tx, compressed) = io::channel();
    let (tar_tx, tar) = io::channel();
    let inflater = tokio::task::spawn_blocking(move || {
        match crate::decompress::reader(compression, compressed) {
            Ok(decoder) => {
                io::pump_blocking(decoder, &tar_tx);
            }
            Err(e) => {
                let _ = tar_tx.blocking_send(Err(e));
            }
        }
    });
    let send = async move {
        // Dropped at the end, so that the decompressor sees the end of the blob.
        let tx = compressed_tx;
        io::pump(blob, &tx).await
    };
    let (_, pending) = tokio::join!(send, split(store, expected, tar));
    inflater.await?;
    pending
}

async fn split<H: FsVerityHashValue>(
    store: &Store<H>,
    expected: Option<&OciDigest>,
    tar: impl AsyncRead + Unpin,
) -> Result<PendingLayer<H>> {
    match expected {
        Some(diff_id) => split_layer(store, diff_id, tar).await,
        None => split_new_layer(store, tar).await,
    }
}

/// As [`import_blob`], keeping the blob (`--keep-blobs`): the blob is first written whole into
/// a new file of the store and checked against the descriptor; the layer is imported from that
/// file; only then is the file kept as the blob, paired with the layer (see
/// [`skiff_storage::kept_blobs`]). A layer that fails its DiffID check keeps no blob.
#[context("Keeping and importing layer {} (DiffID {diff_id})", desc.digest())]
pub async fn keep_and_import_blob<H: FsVerityHashValue>(
    store: &Store<H>,
    blob: impl AsyncRead + Unpin + Send,
    desc: &Descriptor,
    diff_id: &OciDigest,
    fetched: Arc<AtomicU64>,
) -> Result<PendingLayer<H>> {
    keep_and_import_as(store, blob, desc, Some(diff_id), fetched).await
}

/// [`keep_and_import_blob`] for a blob no config names yet (pushed to `skiff serve` before its
/// manifest): its DiffID is what its tar hashes to. Whichever config later names the blob is
/// checked against that, as the store pairs the blob with this layer.
#[context("Keeping and importing the pushed blob {}", desc.digest())]
pub async fn keep_and_import_new_blob<H: FsVerityHashValue>(
    store: &Store<H>,
    blob: impl AsyncRead + Unpin + Send,
    desc: &Descriptor,
) -> Result<PendingLayer<H>> {
    keep_and_import_as(store, blob, desc, None, Arc::new(AtomicU64::new(0))).await
}

async fn keep_and_import_as<H: FsVerityHashValue>(
    store: &Store<H>,
    blob: impl AsyncRead + Unpin + Send,
    desc: &Descriptor,
    expected: Option<&OciDigest>,
    fetched: Arc<AtomicU64>,
) -> Result<PendingLayer<H>> {
    let mut hashed = checked_blob(blob, desc, fetched)?;
    let store_for_file = store.clone();
    let file =
        tokio::task::spawn_blocking(move || kept_blobs::blob_tmpfile(&store_for_file)).await??;
    let mut writer =
        tokio::io::BufWriter::with_capacity(BLOB_BUFFER, tokio::fs::File::from_std(file));
    tokio::io::copy(&mut hashed, &mut writer).await?;
    writer.flush().await?;
    check_read(&mut hashed, desc)?;
    let mut file = writer.into_inner();
    // The layer is imported from the blob's own file, through a second handle on it that is
    // closed before the file becomes an object (fs-verity refuses files open for writing).
    let pending = {
        let mut copy = file.try_clone().await?;
        copy.seek(std::io::SeekFrom::Start(0)).await?;
        import_blob_as(store, copy, desc, expected, Arc::new(AtomicU64::new(0))).await?
    };
    file.seek(std::io::SeekFrom::Start(0)).await?;
    let file = file.into_std().await;
    // Its bytes checked against the DiffID: the blob may stand in for this layer from now on.
    let (store, digest, size, layer) = (
        store.clone(),
        desc.digest().clone(),
        desc.size(),
        pending.verity().clone(),
    );
    tokio::task::spawn_blocking(move || {
        kept_blobs::keep_blob(&store, &digest, file, size, Some(&layer))
    })
    .await??;
    Ok(pending)
}

/// Buffer between the blob and the decompressor.
const BLOB_BUFFER: usize = 128 * 1024;
