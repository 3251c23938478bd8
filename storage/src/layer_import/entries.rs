//! The tar of one layer cut into a splitstream (see [`super`]): each header, its padding and
//! each file of at most 64 bytes inline, each larger regular file as an object (the store's own
//! when it already holds the content, else a new one), every object recorded for the content
//! index.
//!
//! New objects are written on blocking threads while the tar is read on: a file of more than
//! 64 KiB streams to a writer of its own as its bytes arrive; smaller files are read whole and
//! written in batches, one writer per batch.

use std::io::Write;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use bytes::{Bytes, BytesMut};
use composefs::INLINE_CONTENT_MAX_V0;
use composefs::fsverity::FsVerityHashValue;
use composefs::repository::ObjectStoreMethod;
use tar_core::HEADER_SIZE;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, oneshot};

use super::{
    FILE_CHANNEL_DEPTH, HintedObject, IO_BUF_CAPACITY, Known, LayerError, MAX_TRAILING_BYTES,
    PRECHECK_MAX, Split, malformed,
};
use crate::content_chunks::Chunker;
use crate::content_index::{IndexEntry, IndexedChunk};
use crate::digest::HashingReader;
use crate::new_object::ObjectWriter;
use crate::tar_header::{EntryHeader, HeaderEvent, HeaderReader, MAX_HEADER_BYTES};
use crate::tree_path::{normalize_entry_path, shown_path};

/// Parses tar entries from `tar` into `split`: headers and small contents inline, larger
/// regular files as objects (found in the store, else written), each indexed.
pub(super) async fn split_entries<H: FsVerityHashValue, R: AsyncRead + Unpin>(
    objects: &Arc<ObjectWriter<H>>,
    tar: &mut HashingReader<R>,
    split: &mut Split<'_, H>,
    index: &mpsc::UnboundedSender<IndexEntry<H>>,
    known: Option<Known<H>>,
) -> Result<()> {
    let mut splitter = Splitter {
        objects,
        tar,
        split,
        index,
        known,
        buf: BytesMut::with_capacity(IO_BUF_CAPACITY),
        small: SmallFiles::new(Arc::default()),
    };
    let mut headers = HeaderReader::new();
    let mut need = HEADER_SIZE;
    loop {
        if !splitter.fill(need).await? {
            // A tar without end-of-archive blocks: accepted, as composefs-oci does.
            break;
        }
        let event = headers
            .parse(&splitter.buf)
            .map_err(|e| malformed(e.to_string()))?;
        need = HEADER_SIZE;
        match event {
            HeaderEvent::NeedData(min_bytes) => need = min_bytes,
            HeaderEvent::Global { consumed } => {
                let header = splitter.buf.split_to(consumed);
                splitter.split.inline(&header)?;
            }
            HeaderEvent::End { consumed } => {
                splitter.end(consumed).await?;
                break;
            }
            HeaderEvent::Entry { consumed, header } => splitter.entry(consumed, &header).await?,
        }
    }
    splitter.write_small_files().await
}

/// Files of at most this size are written in batches by one task (see [`SmallFiles`]).
const SMALL_FILE_MAX: usize = 64 * 1024;

/// A batch of small files is written once it holds this many files...
const SMALL_BATCH_FILES: usize = 64;

/// ...or this many bytes: enough to make a hand-off to a writer thread rare (dozens of files
/// of a typical image), little enough that the batches of every writer at once hold a few MiB
/// (at 1 MiB, peak RSS of a cold copy grew by 10 MiB).
const SMALL_BATCH_BYTES: usize = 128 * 1024;

/// Small files waiting for their objects to be written. Most files of an image are small, and
/// a writer task of their own each spends more time waking threads than writing; a batch is
/// written by one blocking task, and each file's result reaches the splitstream through a
/// channel of its own. The contents are copied into one buffer, so that a batch does not keep
/// alive the read buffers they came in.
struct SmallFiles<H: FsVerityHashValue> {
    /// The files' contents, one after the other.
    data: BytesMut,
    /// Each file's size, and where its result goes.
    files: Vec<(usize, ObjectDone<H>)>,
    /// The first error of any batch writer of the layer, so that the import stops at the next
    /// small file instead of reading the rest of the layer (a full disk).
    failed: Arc<std::sync::Mutex<Option<String>>>,
}

/// Where a batch writer sends what became of one file: its object, or why there is none.
type ObjectDone<H> = oneshot::Sender<Result<(H, ObjectStoreMethod)>>;

impl<H: FsVerityHashValue> SmallFiles<H> {
    /// An empty batch, sharing the layer's record of the first failure.
    fn new(failed: Arc<std::sync::Mutex<Option<String>>>) -> Self {
        Self {
            data: BytesMut::with_capacity(SMALL_BATCH_BYTES + SMALL_FILE_MAX),
            files: Vec::with_capacity(SMALL_BATCH_FILES),
            failed,
        }
    }
}

/// The state of [`split_entries`]: where bytes come from and go, and the bytes read ahead.
struct Splitter<'a, 'b, H: FsVerityHashValue, R> {
    objects: &'a Arc<ObjectWriter<H>>,
    tar: &'a mut HashingReader<R>,
    split: &'a mut Split<'b, H>,
    index: &'a mpsc::UnboundedSender<IndexEntry<H>>,
    known: Option<Known<H>>,
    /// Bytes read from `tar` and not consumed yet.
    buf: BytesMut,
    /// Small files to write together.
    small: SmallFiles<H>,
}

impl<H: FsVerityHashValue, R: AsyncRead + Unpin> Splitter<'_, '_, H, R> {
    /// Reads until `need` bytes are buffered; false at the end of the stream with nothing
    /// buffered.
    async fn fill(&mut self, need: usize) -> Result<bool> {
        while self.buf.len() < need {
            if need > MAX_HEADER_BYTES {
                return Err(malformed(format!(
                    "a tar entry header needs {need} bytes, more than the {MAX_HEADER_BYTES} allowed"
                )));
            }
            self.buf.reserve(need - self.buf.len());
            if self.tar.read_buf(&mut self.buf).await? == 0 {
                if self.buf.is_empty() {
                    return Ok(false);
                }
                bail!("unexpected end of the layer's tar stream (truncated layer?)");
            }
        }
        Ok(true)
    }

    /// The end-of-archive blocks (`consumed` bytes), then record padding and anything else up
    /// to EOF, which are part of the DiffID.
    async fn end(&mut self, consumed: usize) -> Result<()> {
        self.split.inline(&self.buf.split_to(consumed))?;
        let mut trailing = 0u64;
        loop {
            trailing += self.buf.len() as u64;
            if trailing > MAX_TRAILING_BYTES {
                return Err(malformed(format!(
                    "more than {MAX_TRAILING_BYTES} bytes after the end-of-archive blocks"
                )));
            }
            if !self.buf.is_empty() {
                self.split.inline(&self.buf.split())?;
            }
            self.buf.reserve(IO_BUF_CAPACITY);
            if self.tar.read_buf(&mut self.buf).await? == 0 {
                return Ok(());
            }
        }
    }

    /// One entry: its header (`consumed` bytes), then its content and padding.
    async fn entry(&mut self, consumed: usize, entry: &EntryHeader) -> Result<()> {
        let link = entry
            .link_target
            .as_deref()
            .filter(|_| entry.entry_type.is_hard_link());
        check_entry_paths(&entry.path, link)?;
        let padded = usize::try_from(entry.data_size)
            .ok()
            .and_then(|s| s.checked_next_multiple_of(512).map(|p| (s, p)));
        let Some((size, padded)) = padded else {
            return Err(malformed(format!(
                "tar entry size {} is too large",
                entry.data_size
            )));
        };
        // Sparse files store their regions like any file's data.
        let external = entry.is_file() && size > INLINE_CONTENT_MAX_V0;
        self.split.inline(&self.buf.split_to(consumed))?;
        if !external {
            return copy_inline(self.split, &mut self.buf, self.tar, padded).await;
        }
        let hint = self.hint(&entry.path, size).await?;
        self.external(size, hint).await?;
        copy_inline(self.split, &mut self.buf, self.tar, padded - size).await
    }

    /// The stored object the caller names for the file of `size` bytes starting here, when it
    /// names them; its place must be where the content really is.
    async fn hint(&mut self, path: &[u8], size: usize) -> Result<Option<HintedObject<H>>> {
        let Some(Known::Hints(hints)) = &mut self.known else {
            return Ok(None);
        };
        let content_offset = self.tar.count() - self.buf.len() as u64;
        let name = shown_path(path);
        let hint = hints.recv().await.ok_or_else(|| {
            malformed(format!(
                "tar entry {name:?} at offset {content_offset} has no counterpart in the layer's \
                 metadata"
            ))
        })?;
        if (hint.offset, hint.size) != (content_offset, size as u64) {
            return Err(malformed(format!(
                "tar entry {name:?}: its content is at offset {content_offset} ({size} bytes) but \
                 the layer's metadata says {} ({} bytes)",
                hint.offset, hint.size
            )));
        }
        Ok(hint.object)
    }

    /// The content of a file stored as an object: the store's object (`hinted`, or found by
    /// digest after reading the content), else a new one written from memory or the stream.
    async fn external(&mut self, size: usize, hinted: Option<HintedObject<H>>) -> Result<()> {
        let mut from_memory = None;
        let mut stored = None;
        if let Some(found) = hinted {
            let (sha256, chunks) = match found.sha256 {
                Some(sha256) => {
                    skip_bytes(&mut self.buf, self.tar, size).await?;
                    (sha256, found.chunks)
                }
                None => {
                    let mut chunker = Chunker::new();
                    consume(&mut self.buf, self.tar, size, |piece| {
                        chunker.update(piece);
                        Ok(())
                    })
                    .await?;
                    let (sha256, chunks) = chunker.finish();
                    (sha256, IndexedChunk::of_file(&chunks))
                }
            };
            stored = Some((found.id, sha256, chunks));
        }
        if let Some(Known::Index(index_of_store)) = &self.known
            && size <= PRECHECK_MAX
        {
            let content = read_whole(&mut self.buf, self.tar, size).await?;
            let sha256 = openssl::sha::sha256(&content);
            stored = index_of_store
                .find_file(&sha256, size as u64)
                .map(|f| (f.object.clone(), sha256, f.chunks.to_vec()));
            from_memory = Some(content);
        }
        if let Some((object, sha256, chunks)) = stored {
            let id = object.clone();
            let ready = tokio::spawn(async move { Ok((id, ObjectStoreMethod::AlreadyPresent)) });
            let _ = self.index.send(IndexEntry {
                sha256,
                object,
                size: size as u64,
                chunks,
            });
            self.split.builder.push_external(ready, size as u64);
            return Ok(());
        }
        if size <= SMALL_FILE_MAX {
            match from_memory {
                Some(content) => self.small.data.extend_from_slice(&content),
                None => {
                    let data = &mut self.small.data;
                    consume(&mut self.buf, self.tar, size, |piece| {
                        data.extend_from_slice(piece);
                        Ok(())
                    })
                    .await?;
                }
            }
            return self.queue_small_file(size).await;
        }
        let permit = self.write_permit().await?;
        let (tx, rx) = mpsc::channel::<Bytes>(FILE_CHANNEL_DEPTH);
        let (objects, index) = (self.objects.clone(), self.index.clone());
        let handle = tokio::task::spawn_blocking(move || {
            let result = write_object(rx, size as u64, &objects, &index);
            drop(permit);
            result
        });
        let sent = match from_memory {
            Some(content) => tx.send(content).await.map_err(|_| SendError::WriterGone),
            None => send_file(&tx, &mut self.buf, self.tar, size).await,
        };
        drop(tx);
        match sent {
            Ok(()) => {}
            // The writer failed first: its error is the cause.
            Err(SendError::WriterGone) => {
                handle.await??;
                bail!("object writer stopped early");
            }
            Err(SendError::Read(e)) => return Err(e),
        }
        self.split.builder.push_external(handle, size as u64);
        Ok(())
    }

    /// Adds a small file, whose `size` bytes of content were just added to the batch's data, and
    /// writes the batch once it is full.
    async fn queue_small_file(&mut self, size: usize) -> Result<()> {
        if let Some(failed) = self
            .small
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            bail!("{failed}");
        }
        let (tx, rx) = oneshot::channel();
        let written = tokio::spawn(async move {
            rx.await
                .unwrap_or_else(|_| Err(anyhow!("the writer of a batch of small files stopped")))
        });
        self.split.builder.push_external(written, size as u64);
        self.small.files.push((size, tx));
        if self.small.files.len() >= SMALL_BATCH_FILES || self.small.data.len() >= SMALL_BATCH_BYTES
        {
            self.write_small_files().await?;
        }
        Ok(())
    }

    /// Hands the batch of small files to a writer task.
    async fn write_small_files(&mut self) -> Result<()> {
        if self.small.files.is_empty() {
            return Ok(());
        }
        let next = SmallFiles::new(self.small.failed.clone());
        let batch = std::mem::replace(&mut self.small, next);
        let permit = self.write_permit().await?;
        let (objects, index) = (self.objects.clone(), self.index.clone());
        tokio::task::spawn_blocking(move || {
            let mut data = &batch.data[..];
            for (size, done) in batch.files {
                let (content, rest) = data.split_at(size);
                data = rest;
                let written = write_whole(content, &objects, &index);
                if let Err(e) = &written {
                    let mut failed = batch.failed.lock().unwrap_or_else(|p| p.into_inner());
                    failed.get_or_insert_with(|| format!("{e:#}"));
                }
                // The receiver only goes away when the import has already failed.
                let _ = done.send(written);
            }
            drop(permit);
        });
        Ok(())
    }

    /// A turn to write objects: the repository bounds how many writers run at once.
    async fn write_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        let semaphore = self.objects.repo().write_semaphore().clone();
        Ok(semaphore.acquire_owned().await?)
    }
}

fn check_entry_paths(name: &[u8], link: Option<&[u8]>) -> Result<()> {
    for p in std::iter::once(name).chain(link) {
        if let Err(reason) = normalize_entry_path(p) {
            return Err(LayerError::BadPath {
                name: shown_path(p),
                reason,
            }
            .into());
        }
    }
    Ok(())
}

/// Why a file's content could not be handed to its object writer.
enum SendError {
    /// Reading the tar failed.
    Read(anyhow::Error),
    /// The writer task ended early (its own result says why).
    WriterGone,
}

/// The next piece of an entry's `remaining` bytes: from `buf` first, refilled from `tar` when
/// empty.
async fn take_piece(
    buf: &mut BytesMut,
    tar: &mut (impl AsyncRead + Unpin),
    remaining: usize,
) -> Result<BytesMut> {
    if buf.is_empty() {
        buf.reserve(remaining.min(IO_BUF_CAPACITY));
        if tar.read_buf(buf).await? == 0 {
            bail!("unexpected end of the layer's tar stream (truncated layer?)");
        }
    }
    Ok(buf.split_to(remaining.min(buf.len())))
}

/// Sends `size` bytes of file content to its object writer.
async fn send_file(
    tx: &mpsc::Sender<Bytes>,
    buf: &mut BytesMut,
    tar: &mut (impl AsyncRead + Unpin),
    size: usize,
) -> Result<(), SendError> {
    let mut remaining = size;
    while remaining > 0 {
        let piece = take_piece(buf, tar, remaining)
            .await
            .map_err(SendError::Read)?;
        remaining -= piece.len();
        tx.send(piece.freeze())
            .await
            .map_err(|_| SendError::WriterGone)?;
    }
    Ok(())
}

/// The next `size` bytes of the stream, in one buffer.
async fn read_whole(
    buf: &mut BytesMut,
    tar: &mut (impl AsyncRead + Unpin),
    size: usize,
) -> Result<Bytes> {
    if buf.len() >= size {
        return Ok(buf.split_to(size).freeze());
    }
    let mut content = BytesMut::with_capacity(size);
    while content.len() < size {
        content.extend_from_slice(&take_piece(buf, tar, size - content.len()).await?);
    }
    Ok(content.freeze())
}

/// Consumes `len` bytes of the stream, piece by piece, through `each`.
async fn consume(
    buf: &mut BytesMut,
    tar: &mut (impl AsyncRead + Unpin),
    len: usize,
    mut each: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut remaining = len;
    while remaining > 0 {
        let piece = take_piece(buf, tar, remaining).await?;
        remaining -= piece.len();
        each(&piece)?;
    }
    Ok(())
}

/// Consumes `len` bytes of the stream.
async fn skip_bytes(
    buf: &mut BytesMut,
    tar: &mut (impl AsyncRead + Unpin),
    len: usize,
) -> Result<()> {
    consume(buf, tar, len, |_| Ok(())).await
}

/// Copies `len` bytes inline.
async fn copy_inline<H: FsVerityHashValue>(
    split: &mut Split<'_, H>,
    buf: &mut BytesMut,
    tar: &mut (impl AsyncRead + Unpin),
    len: usize,
) -> Result<()> {
    consume(buf, tar, len, |piece| split.inline(piece)).await
}

/// Files of at least this size are cut into chunks and hashed on a thread of their own while
/// their object is written on the writer's: for a large file, the sha256 of the file and of its
/// chunks and the object's fs-verity digest are the costliest steps of an import, and one
/// thread doing them all made one large layer a one-core job. Smaller files are not worth a
/// thread.
const SPLIT_WRITE_MIN: u64 = 1024 * 1024;

/// Receives one file's content, writes it to an object and records it, with its chunks, in the
/// content index. A file of [`SPLIT_WRITE_MIN`] bytes or more is cut and hashed on a second
/// thread, each piece sent to both.
fn write_object<H: FsVerityHashValue>(
    rx: mpsc::Receiver<Bytes>,
    size: u64,
    objects: &ObjectWriter<H>,
    index: &mpsc::UnboundedSender<IndexEntry<H>>,
) -> Result<(H, ObjectStoreMethod)> {
    if size < SPLIT_WRITE_MIN {
        let mut chunker = Chunker::new();
        let stored = write_pieces(rx, size, objects, |piece| {
            chunker.update(&piece);
            Ok(())
        })?;
        record_object(&stored.0, size, chunker, index);
        return Ok(stored);
    }
    std::thread::scope(|scope| {
        let (pieces, to_cut) = std::sync::mpsc::sync_channel::<Bytes>(FILE_CHANNEL_DEPTH);
        let cutter = scope.spawn(move || {
            let mut chunker = Chunker::new();
            for piece in to_cut {
                chunker.update(&piece);
            }
            chunker
        });
        let stored = write_pieces(rx, size, objects, |piece| {
            pieces
                .send(piece)
                .map_err(|_| anyhow!("the thread cutting the file into chunks stopped"))
        });
        // Ends the cutter's input, also when the write failed.
        drop(pieces);
        let chunker = cutter.join().map_err(|panic| {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            anyhow!("the thread cutting the file into chunks panicked: {why}")
        });
        // A panic of the cutter is the cause of a failed send, so it is reported first.
        let chunker = chunker?;
        let stored = stored?;
        record_object(&stored.0, size, chunker, index);
        Ok(stored)
    })
}

/// Writes the pieces received from `rx` (`size` bytes in all) to a new object, passing each to
/// `each` first, and finishes the object.
fn write_pieces<H: FsVerityHashValue>(
    mut rx: mpsc::Receiver<Bytes>,
    size: u64,
    objects: &ObjectWriter<H>,
    mut each: impl FnMut(Bytes) -> Result<()>,
) -> Result<(H, ObjectStoreMethod)> {
    let mut out = std::io::BufWriter::with_capacity(IO_BUF_CAPACITY, objects.create()?);
    let mut received = 0u64;
    while let Some(piece) = rx.blocking_recv() {
        received += piece.len() as u64;
        out.write_all(&piece).context("Writing a new object")?;
        each(piece)?;
    }
    if received != size {
        bail!("file content ended after {received} of {size} bytes");
    }
    let object = out.into_inner().map_err(|e| e.into_error())?;
    objects.finish(object, size)
}

/// Writes a file held whole in memory to an object and records it like [`write_object`].
fn write_whole<H: FsVerityHashValue>(
    content: &[u8],
    objects: &ObjectWriter<H>,
    index: &mpsc::UnboundedSender<IndexEntry<H>>,
) -> Result<(H, ObjectStoreMethod)> {
    let mut object = objects.create()?;
    object.write_all(content).context("Writing a new object")?;
    let mut chunker = Chunker::new();
    chunker.update(content);
    let size = content.len() as u64;
    let stored = objects.finish(object, size)?;
    record_object(&stored.0, size, chunker, index);
    Ok(stored)
}

/// Sends the content index entry of a file written to `object`.
fn record_object<H: FsVerityHashValue>(
    object: &H,
    size: u64,
    chunker: Chunker,
    index: &mpsc::UnboundedSender<IndexEntry<H>>,
) {
    let (sha256, chunks) = chunker.finish();
    // The receiver only goes away when the import has already failed.
    let _ = index.send(IndexEntry {
        sha256,
        object: object.clone(),
        size,
        chunks: IndexedChunk::of_file(&chunks),
    });
}
