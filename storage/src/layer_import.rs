//! Importing one uncompressed layer tar into the store, verified against its DiffID.
//!
//! The tar is split as composefs-oci 0.9.4's `tar::split_async` splits it (headers, padding and
//! files of at most 64 bytes inline; larger regular files as objects), so the layer splitstream
//! rebuilds the exact tar and the objects are the ones `cfsctl oci pull` stores
//! (`tests/layer_import.rs` compares the two; re-check it when the composefs pin moves). While the bytes of each file go into its
//! object, their sha256 goes into the layer's [content index](crate::content_index).
//!
//! Headers are read as Go reads them ([`crate::tar_header`]), so the tar is cut where the
//! tree builder reads it back; on tars where that differs from tar-core, cfsctl would cut them
//! elsewhere, or refuse them. A sparse file's stored regions are kept like any file's data
//! (inline up to 64 bytes, else one object); its logical content is made when the tree is
//! built.
//!
//! Import is two-phase: [`split_layer`] writes the objects and the splitstream and checks the
//! DiffID, giving a [`PendingLayer`]; the caller checks what only it can check (the compressed
//! blob's digest) and then [`PendingLayer::register`]s it. Until then nothing names the layer,
//! and a failed import leaves only unreferenced objects, which garbage collection removes.

use std::fs::File;
use std::io::Write;
use std::sync::Arc;

use anyhow::{Result, bail};
use bytes::{Bytes, BytesMut};
use composefs::INLINE_CONTENT_MAX_V0;
use composefs::fsverity::FsVerityHashValue;
use composefs::repository::{ObjectStoreMethod, Repository};
use composefs::splitstream::SplitStreamBuilder;
use composefs_oci::{LAYER_CONTENT_TYPE, OciDigest, layer_content_id};
use tar_core::HEADER_SIZE;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

use crate::content_index::{CONTENT_INDEX_REF, ContentIndex, IndexEntry, StoredFiles};
use crate::digest::HashingReader;
use crate::repository::Store;
use crate::tar_header::{EntryHeader, HeaderEvent, HeaderReader, MAX_HEADER_BYTES};
use crate::tree_path::{PathError, normalize_entry_path, shown_path};

/// Read size for the tar stream: 8 KiB reads cost too many syscalls on large files.
const IO_BUF_CAPACITY: usize = 64 * 1024;

/// Chunks of a file in flight between the tar reader and the task writing its object: enough
/// to keep the writer busy without holding more than a few hundred KiB per file.
const FILE_CHANNEL_DEPTH: usize = 4;

/// Bytes accepted after the end-of-archive blocks. They count in the DiffID, so they are kept;
/// real tars carry at most a record's padding there (GNU tar: 10 KiB by default).
const MAX_TRAILING_BYTES: u64 = 1024 * 1024;

/// Bytes kept inline in one layer's splitstream (headers, padding, files of at most 64 bytes),
/// which composefs holds in memory until the layer is complete. Real layers need about 1 KiB a
/// file; this allows a million files and stops a hostile tar from exhausting memory.
const MAX_INLINE_BYTES: u64 = 1024 * 1024 * 1024;

/// Counts for one imported layer.
#[derive(Debug, Clone, Default)]
pub struct LayerStats {
    /// Size of the uncompressed tar.
    pub tar_size: u64,
    /// Objects written new.
    pub objects_written: u64,
    /// Bytes of objects written new.
    pub bytes_written: u64,
    /// Objects that the store already held (deduplicated).
    pub objects_reused: u64,
    /// Bytes of objects that the store already held.
    pub bytes_reused: u64,
    /// Bytes kept inline in the splitstream (headers, padding, small files).
    pub bytes_inline: u64,
}

/// A layer whose objects and splitstream are written and whose DiffID is verified, not yet
/// named in the store.
#[derive(Debug)]
pub struct PendingLayer<H: FsVerityHashValue> {
    store: Store<H>,
    diff_id: OciDigest,
    verity: H,
    /// What the import wrote and reused.
    pub stats: LayerStats,
}

impl<H: FsVerityHashValue> PendingLayer<H> {
    /// Syncs the repository and names the layer `oci-layer-<diff_id>`.
    pub async fn register(self) -> Result<(H, LayerStats)> {
        self.store
            .repo()
            .register_stream(&self.verity, &layer_content_id(&self.diff_id), None)
            .await?;
        Ok((self.verity, self.stats))
    }
}

/// Why a layer's tar was refused.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The uncompressed bytes do not hash to the DiffID named by the config.
    #[error("DiffID mismatch: the config says {expected}, the layer's tar is {actual}")]
    DiffIdMismatch {
        /// From the image config.
        expected: OciDigest,
        /// Computed from the bytes.
        actual: OciDigest,
    },
    /// An entry's name leaves the image root.
    #[error("tar entry {name:?}: {reason}")]
    BadPath {
        /// The name as stored in the tar.
        name: String,
        /// What is wrong with it.
        reason: PathError,
    },
    /// The tar is malformed or exceeds a limit (not a transfer problem: trying again gives the
    /// same result).
    #[error("malformed layer tar: {0}")]
    Malformed(String),
}

fn malformed(message: impl Into<String>) -> anyhow::Error {
    LayerError::Malformed(message.into()).into()
}

/// The splitstream being built, with the inline bytes it holds counted against
/// [`MAX_INLINE_BYTES`].
struct Split<'a, H: FsVerityHashValue> {
    builder: &'a mut SplitStreamBuilder<H>,
    inline: u64,
}

impl<H: FsVerityHashValue> Split<'_, H> {
    fn inline(&mut self, data: &[u8]) -> Result<()> {
        self.inline += data.len() as u64;
        if self.inline > MAX_INLINE_BYTES {
            return Err(malformed(format!(
                "more than {MAX_INLINE_BYTES} bytes of headers and small files"
            )));
        }
        self.builder.push_inline(data);
        Ok(())
    }
}

/// Returns the layer's splitstream id when the store already holds the layer.
pub fn stored_layer<H: FsVerityHashValue>(
    store: &Store<H>,
    diff_id: &OciDigest,
) -> Result<Option<H>> {
    store.repo().has_stream(&layer_content_id(diff_id))
}

/// Splits the uncompressed layer tar `tar` into the store and checks it against `diff_id`.
///
/// Reads `tar` to its end: bytes after the end-of-archive blocks are kept, since they count in
/// the DiffID.
pub async fn split_layer<H: FsVerityHashValue>(
    store: &Store<H>,
    diff_id: &OciDigest,
    tar: impl AsyncRead + Unpin,
) -> Result<PendingLayer<H>> {
    split_layer_with_hints(store, diff_id, tar, None).await
}

/// What the caller knows of the next file of the tar stored as an object (files of more than
/// 64 bytes, in tar order): where its content starts in the tar stream and its size (both must
/// match the tar's own header, or the import fails), and the stored object holding exactly that
/// content with its sha256, if the store has one. A hinted content's bytes still come through
/// the stream (the DiffID covers them) but are not written again.
#[derive(Debug, Clone)]
pub struct ObjectHint<H> {
    /// Offset of the file's content in the uncompressed tar.
    pub offset: u64,
    /// Its size.
    pub size: u64,
    /// The stored object with that content, and the content's sha256.
    pub object: Option<(H, [u8; 32])>,
}

/// [`split_layer`], told by `hints` (one per file stored as an object, `None` for files to
/// write) which contents the store already holds. The caller vouches that a hinted object
/// holds exactly the bytes the stream carries for that file (it checks them on its side).
pub async fn split_layer_with_hints<H: FsVerityHashValue>(
    store: &Store<H>,
    diff_id: &OciDigest,
    tar: impl AsyncRead + Unpin,
    hints: Option<mpsc::UnboundedReceiver<ObjectHint<H>>>,
) -> Result<PendingLayer<H>> {
    split_layer_known(store, diff_id, tar, hints.map(Known::Hints)).await
}

/// Files up to this size are hashed in memory before they are written, so that a content the
/// store already holds is not written again (the size of most files of an image).
const PRECHECK_MAX: usize = 4 * 1024 * 1024;

/// [`split_layer`] for a tar that mostly holds files the store has (a layer rebuilt from a
/// delta): each file's content (up to 4 MiB) is looked up by sha256 and size in `stored`
/// before it is written, and not written again when found there.
pub async fn split_layer_with_index<H: FsVerityHashValue>(
    store: &Store<H>,
    diff_id: &OciDigest,
    tar: impl AsyncRead + Unpin,
    stored: Arc<StoredFiles<H>>,
) -> Result<PendingLayer<H>> {
    split_layer_known(store, diff_id, tar, Some(Known::Index(stored))).await
}

/// What the importer knows of the contents the store holds.
enum Known<H: FsVerityHashValue> {
    /// Told, file by file.
    Hints(mpsc::UnboundedReceiver<ObjectHint<H>>),
    /// Looked up by content digest.
    Index(Arc<StoredFiles<H>>),
}

async fn split_layer_known<H: FsVerityHashValue>(
    store: &Store<H>,
    diff_id: &OciDigest,
    tar: impl AsyncRead + Unpin,
    known: Option<Known<H>>,
) -> Result<PendingLayer<H>> {
    crate::digest::require_sha256(diff_id)?;
    let repo = store.repo().clone();
    let mut tar = HashingReader::new(tar);
    let mut builder = SplitStreamBuilder::new(repo.clone(), LAYER_CONTENT_TYPE)?;
    // Each object task sends its index entry and drops its sender when it ends, so the
    // channel closes once every task has finished.
    let (index_tx, mut index_rx) = mpsc::unbounded_channel();

    let mut split = Split {
        builder: &mut builder,
        inline: 0,
    };
    split_entries(&repo, &mut tar, &mut split, &index_tx, known).await?;
    drop(index_tx);

    let actual = tar.finish();
    if &actual != diff_id {
        return Err(LayerError::DiffIdMismatch {
            expected: diff_id.clone(),
            actual,
        }
        .into());
    }
    let tar_size = tar.count();

    // The layer stream names its index, so the index is written first, once every object
    // task has reported.
    let mut entries = Vec::new();
    while let Some(entry) = index_rx.recv().await {
        entries.push(entry);
    }
    let index = ContentIndex::new(entries);
    let index_repo = repo.clone();
    let index_id = tokio::task::spawn_blocking(move || index.write(&index_repo)).await??;
    builder.add_named_stream_ref(CONTENT_INDEX_REF, &index_id);
    let (verity, ss_stats) = builder.finish().await?;

    let mut stats = LayerStats {
        tar_size,
        bytes_inline: ss_stats.inline_bytes,
        ..Default::default()
    };
    for (size, method) in &ss_stats.external_objects {
        if matches!(method, ObjectStoreMethod::AlreadyPresent) {
            stats.objects_reused += 1;
            stats.bytes_reused += size;
        } else {
            stats.objects_written += 1;
            stats.bytes_written += size;
        }
    }
    Ok(PendingLayer {
        store: store.clone(),
        diff_id: diff_id.clone(),
        verity,
        stats,
    })
}

/// Parses tar entries from `tar` into `split`: headers and small contents inline, larger
/// regular files as objects (found in the store, else written), each indexed.
async fn split_entries<H: FsVerityHashValue, R: AsyncRead + Unpin>(
    repo: &Arc<Repository<H>>,
    tar: &mut HashingReader<R>,
    split: &mut Split<'_, H>,
    index: &mpsc::UnboundedSender<IndexEntry<H>>,
    known: Option<Known<H>>,
) -> Result<()> {
    let mut splitter = Splitter {
        repo,
        tar,
        split,
        index,
        known,
        buf: BytesMut::with_capacity(IO_BUF_CAPACITY),
    };
    let mut headers = HeaderReader::new();
    let mut need = HEADER_SIZE;
    loop {
        if !splitter.fill(need).await? {
            // A tar without end-of-archive blocks: accepted, as composefs-oci does.
            return Ok(());
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
            HeaderEvent::End { consumed } => return splitter.end(consumed).await,
            HeaderEvent::Entry { consumed, header } => splitter.entry(consumed, &header).await?,
        }
    }
}

/// The state of [`split_entries`]: where bytes come from and go, and the bytes read ahead.
struct Splitter<'a, 'b, H: FsVerityHashValue, R> {
    repo: &'a Arc<Repository<H>>,
    tar: &'a mut HashingReader<R>,
    split: &'a mut Split<'b, H>,
    index: &'a mpsc::UnboundedSender<IndexEntry<H>>,
    known: Option<Known<H>>,
    /// Bytes read from `tar` and not consumed yet.
    buf: BytesMut,
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
    async fn hint(&mut self, path: &[u8], size: usize) -> Result<Option<(H, [u8; 32])>> {
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
    async fn external(&mut self, size: usize, hinted: Option<(H, [u8; 32])>) -> Result<()> {
        let mut from_memory = None;
        let mut stored = None;
        if let Some(found) = hinted {
            skip_bytes(&mut self.buf, self.tar, size).await?;
            stored = Some(found);
        }
        if let Some(Known::Index(index_of_store)) = &self.known
            && size <= PRECHECK_MAX
        {
            let mut content = BytesMut::with_capacity(size);
            while content.len() < size {
                content.extend_from_slice(
                    &take_piece(&mut self.buf, self.tar, size - content.len()).await?,
                );
            }
            let sha256 = openssl::sha::sha256(&content);
            stored = index_of_store
                .find(&sha256, size as u64)
                .map(|id| (id.clone(), sha256));
            from_memory = Some(content.freeze());
        }
        if let Some((object, sha256)) = stored {
            let id = object.clone();
            let ready = tokio::spawn(async move { Ok((id, ObjectStoreMethod::AlreadyPresent)) });
            let _ = self.index.send(IndexEntry {
                sha256,
                object,
                size: size as u64,
            });
            self.split.builder.push_external(ready, size as u64);
            return Ok(());
        }
        let permit = self.repo.write_semaphore().clone().acquire_owned().await?;
        let (tx, rx) = mpsc::channel::<Bytes>(FILE_CHANNEL_DEPTH);
        let (task_repo, task_index) = (self.repo.clone(), self.index.clone());
        let handle = tokio::task::spawn_blocking(move || {
            let result = write_object(rx, size as u64, &task_repo, &task_index);
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

/// Receives one file's content, writes it to an object and records it in the content index.
fn write_object<H: FsVerityHashValue>(
    mut rx: mpsc::Receiver<Bytes>,
    size: u64,
    repo: &Repository<H>,
    index: &mpsc::UnboundedSender<IndexEntry<H>>,
) -> Result<(H, ObjectStoreMethod)> {
    let tmpfile = repo.create_object_tmpfile()?;
    let mut out = std::io::BufWriter::with_capacity(IO_BUF_CAPACITY, File::from(tmpfile));
    let mut sha = openssl::sha::Sha256::new();
    let mut received = 0u64;
    while let Some(chunk) = rx.blocking_recv() {
        sha.update(&chunk);
        received += chunk.len() as u64;
        out.write_all(&chunk)?;
    }
    if received != size {
        bail!("file content ended after {received} of {size} bytes");
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    let (id, method) = repo.finalize_object_tmpfile(file, size)?;
    // The receiver only goes away when the import has already failed.
    let _ = index.send(IndexEntry {
        sha256: sha.finish(),
        object: id.clone(),
        size,
    });
    Ok((id, method))
}
