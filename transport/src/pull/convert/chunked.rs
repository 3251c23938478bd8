//! The partial layer converter: a zstd:chunked layer rebuilt from the files the store already
//! holds and the byte ranges of the files it lacks (format: [`crate::format::zstd_chunked`]).
//!
//! 1. The TOC and the tar-split are read by range and verified ([`Metadata::load`]).
//! 2. The tar is replayed from the tar-split: raw segments as they are; each file's content
//!    from a stored object found by its sha256 ([`StoredFiles`]) or at the same path in the
//!    previous image of the same name when its digest matches ([`ImageTree`]); else chunk by
//!    chunk: a chunk the store holds in any object (found by its `chunkDigest` in the content
//!    indexes, read and checked against that digest before the fetch is planned), else its
//!    frames (ranges of the blob, decompressed; `zeros` chunks are never read). Every file is
//!    checked against its TOC sha256 and its tar-split CRC-64.
//! 3. The replayed tar goes through the ordinary layer import, which checks the DiffID: the
//!    stored layer is exactly what a full pull stores.
//!
//! The ranges come from an OCI layout by offset, or from a registry by HTTP range requests
//! ([`crate::source::ranges`]); a registry that answers with the whole blob is imported from that
//! answer as a full pull.

use openssl::hash::{Hasher, MessageDigest};
use std::collections::HashMap;
use std::io::Read;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use containers_image_proxy::oci_spec::image::Descriptor;
use fn_error_context::context;
use skiff_storage::content_index::IndexedChunk;
use skiff_storage::images::ImageTree;
use skiff_storage::layer_import::{HintedObject, ObjectHint, PendingLayer, split_layer_with_hints};
use skiff_storage::stored_files::StoredFiles;
use skiff_storage::tree_path::shown_path;
use skiff_storage::{FsVerityHashValue, OciDigest, Store};
use tokio::sync::mpsc;

use crate::format::zstd_chunked::toc::{Chunk, TocFile};
use crate::format::zstd_chunked::{Crc64Iso, Metadata, TarSplitEntry};
use crate::io::{ChannelWriter, produced_and_imported};
use crate::pull::convert::full::import_blob;
use crate::pull::convert::stored_chunks::ChunkSources;
use crate::pull::plan::ChunkedLayout;
use crate::source::BlobStream;
use crate::source::ranges::FetchStats;
use crate::source::ranges::{
    self, Fetched, RangeSource, SpanCursor, WholeBlobComing, plan_requests,
};

/// Chunk size when streaming a stored object into the rebuilt tar.
pub(super) const OBJECT_READ_CHUNK: usize = 256 * 1024;

/// Counters of a partial pull.
#[derive(Debug, Default)]
pub struct PartialStats {
    /// Bytes and requests of the range reads (metadata and missing files).
    pub fetch: Arc<FetchStats>,
    /// Content bytes of files the store holds whole, taken from their objects.
    pub reused: AtomicU64,
    /// Content bytes of files the store lacks, taken chunk by chunk from stored objects.
    pub reused_chunks: AtomicU64,
}

/// What a partial pull may reuse: the files of every stored layer with a content index, and
/// the tree of the image the copy replaces.
#[derive(Debug)]
pub struct Reuse<H: FsVerityHashValue> {
    /// Files by content digest.
    pub stored: Arc<StoredFiles<H>>,
    /// The previous image of the same name, for lookups by path.
    pub previous: Option<Arc<ImageTree<H>>>,
}

impl<H: FsVerityHashValue> Clone for Reuse<H> {
    fn clone(&self) -> Self {
        Self {
            stored: self.stored.clone(),
            previous: self.previous.clone(),
        }
    }
}

impl<H: FsVerityHashValue> Default for Reuse<H> {
    fn default() -> Self {
        Self {
            stored: Arc::new(StoredFiles::default()),
            previous: None,
        }
    }
}

impl<H: FsVerityHashValue> Reuse<H> {
    /// True when there is nothing to reuse.
    pub fn is_empty(&self) -> bool {
        self.stored.is_empty() && self.previous.is_none()
    }
}

/// How a layer came in.
#[derive(Debug)]
pub enum Imported<H: FsVerityHashValue> {
    /// Rebuilt from stored files and fetched ranges.
    Partial(PendingLayer<H>),
    /// The registry answered a range request with the whole blob, which was imported as a
    /// full pull (never downloaded twice).
    Whole(PendingLayer<H>),
}

/// The TOC and tar-split bytes, fetched in one request when they are close.
async fn fetch_metadata(
    source: &RangeSource,
    toc: Range<u64>,
    tar_split: Range<u64>,
    stats: &PartialStats,
) -> Result<Result<(Bytes, Bytes), BlobStream>> {
    let mut spans = Vec::new();
    for request in plan_requests(&[toc.clone(), tar_split.clone()])? {
        match source.fetch(request.clone(), &stats.fetch).await? {
            Fetched::Parts(parts) => spans.extend(request.into_iter().zip(parts)),
            Fetched::Whole(response) => return Ok(Err(response)),
        }
    }
    let slice = |r: &Range<u64>| -> Result<Bytes> {
        let (span, bytes) = spans
            .iter()
            .find(|(s, _)| s.start <= r.start && r.end <= s.end)
            .context("metadata range not fetched")?;
        let from = (r.start - span.start) as usize;
        Ok(bytes.slice(from..from + (r.end - r.start) as usize))
    };
    Ok(Ok((slice(&toc)?, slice(&tar_split)?)))
}

/// Imports a blob that a registry sends whole, as a full pull does.
async fn import_whole<H: FsVerityHashValue>(
    store: &Store<H>,
    whole: BlobStream,
    desc: &Descriptor,
    diff_id: &OciDigest,
    stats: &PartialStats,
) -> Result<Imported<H>> {
    log::info!("{}: {WholeBlobComing}", desc.digest());
    let pending = import_blob(store, whole, desc, diff_id, stats.fetch.fetched.clone()).await?;
    Ok(Imported::Whole(pending))
}

/// Rebuilds the layer `desc` (DiffID `diff_id`) into `store` from files it may `reuse` and
/// ranges of the blob from `source`.
#[context("Pulling layer {} partially (DiffID {diff_id})", desc.digest())]
pub(crate) async fn import_partial<H: FsVerityHashValue>(
    store: &Store<H>,
    source: RangeSource,
    desc: &Descriptor,
    diff_id: &OciDigest,
    layout: ChunkedLayout,
    reuse: Reuse<H>,
    stats: Arc<PartialStats>,
) -> Result<Imported<H>> {
    let blob_size = desc.size();
    let (toc_range, split_range) = (
        layout.toc.range(blob_size)?,
        layout.tar_split.range(blob_size)?,
    );
    let (toc, split) = match fetch_metadata(&source, toc_range, split_range, &stats).await? {
        Ok(bytes) => bytes,
        Err(whole) => return import_whole(store, whole, desc, diff_id, &stats).await,
    };
    let repo = store.clone();
    let planning_reuse = reuse.clone();
    let (meta, mut plan) = tokio::task::spawn_blocking(move || -> Result<_> {
        let meta = Metadata::load(
            &layout.toc_digest,
            layout.toc,
            &toc,
            layout.tar_split,
            &split,
            blob_size,
        )?;
        let local = LocalFiles {
            stored: &planning_reuse.stored,
            previous: planning_reuse.previous.as_deref(),
            repo: &repo,
        };
        let plan = plan_replay(&meta, &local)?;
        Ok((meta, plan))
    })
    .await??;

    let mut cursor = ranges::start(source, plan_requests(&plan.needed)?, stats.fetch.clone());
    let (tx, rx) = crate::io::channel();
    // Every hint is known before the first byte: the importer never waits on the replay for
    // one, and finds the channel closed when the tar has more files than the plan.
    let (hint_tx, hint_rx) = mpsc::unbounded_channel();
    for hint in std::mem::take(&mut plan.hints) {
        let _ = hint_tx.send(hint);
    }
    drop(hint_tx);
    let repo = store.clone();
    let producer_stats = stats.clone();
    let producer = tokio::task::spawn_blocking(move || {
        let result = replay(&meta, &plan, &mut cursor, &repo, &producer_stats, &tx);
        if let Err(e) = &result {
            // The import sees the stream end with this error.
            let _ = tx.blocking_send(Err(std::io::Error::other(format!("{e:#}"))));
        }
        (result, cursor.take_whole())
    });
    let imported = split_layer_with_hints(store, diff_id, rx, Some(hint_rx)).await;
    let (replayed, whole) = producer.await?;
    if let Some(response) = whole {
        drop(imported);
        return import_whole(store, response, desc, diff_id, &stats).await;
    }
    produced_and_imported(replayed, imported).map(Imported::Partial)
}
/// Where file contents may already be: any stored layer (content indexes, files and chunks),
/// and the previous image of the same name (by path, confirmed by digest).
struct LocalFiles<'a, H: FsVerityHashValue> {
    stored: &'a StoredFiles<H>,
    previous: Option<&'a ImageTree<H>>,
    repo: &'a Store<H>,
}

impl<H: FsVerityHashValue> LocalFiles<'_, H> {
    /// A stored object holding exactly `file`'s content, with its chunks when known.
    fn find(&self, file: &TocFile) -> Result<Option<(H, Vec<IndexedChunk>)>> {
        if let Some(found) = self.stored.find_file(&file.sha256, file.size) {
            return Ok(Some((found.object.clone(), found.chunks.to_vec())));
        }
        let Some((id, size)) = self.previous.and_then(|p| p.find(&file.name)) else {
            return Ok(None);
        };
        if size != file.size {
            return Ok(None);
        }
        // Same path, same size: the same content only if the digest says so.
        let mut sha = Hasher::new(MessageDigest::sha256())?;
        std::io::copy(&mut self.repo.open_object(&id)?, &mut sha)?;
        Ok((*sha.finish()? == file.sha256).then_some((id, Vec::new())))
    }
}

/// Where one chunk of a file the store lacks comes from.
#[derive(Debug, Clone, Copy)]
enum ChunkSource {
    /// A run of zeros, made here.
    Zeros,
    /// Its frames, fetched.
    Fetched,
    /// `ReplayPlan::sources[source]` at `offset`, checked against the chunk's digest.
    Stored { source: usize, offset: u64 },
}

/// Where a file's content comes from.
#[derive(Debug)]
enum FileSource<H> {
    /// A stored object with exactly this content.
    Stored(H),
    /// Chunk by chunk, one source per TOC chunk.
    Chunks(Vec<ChunkSource>),
}

/// Where each file of the tar-split comes from, decided before any byte is fetched.
#[derive(Debug)]
struct ReplayPlan<H: FsVerityHashValue> {
    /// For each tar-split file with content, in order: its TOC entry and where its content
    /// comes from.
    files: Vec<(usize, FileSource<H>)>,
    /// The stored objects chunks are read from, open since they were checked.
    sources: Vec<std::fs::File>,
    /// The compressed ranges to fetch, in the order the replay consumes them.
    needed: Vec<Range<u64>>,
    /// For the importer, one per file it stores as an object: where the content lies in the
    /// rebuilt tar and the stored object holding it, if any.
    hints: Vec<ObjectHint<H>>,
}

fn plan_replay<H: FsVerityHashValue>(
    meta: &Metadata,
    local: &LocalFiles<'_, H>,
) -> Result<ReplayPlan<H>> {
    let by_name: HashMap<&[u8], usize> = meta
        .toc
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| (f.name.as_slice(), i))
        .collect();
    let mut plan = ReplayPlan {
        files: Vec::new(),
        sources: Vec::new(),
        needed: Vec::new(),
        hints: Vec::new(),
    };
    let mut chunk_sources = ChunkSources::new(local.repo);
    // Offset in the rebuilt tar.
    let mut offset = 0u64;
    for entry in &meta.tar_split.entries {
        let (name, size) = match entry {
            TarSplitEntry::Segment(bytes) => {
                offset += bytes.len() as u64;
                continue;
            }
            TarSplitEntry::File { size: 0, .. } => continue,
            TarSplitEntry::File { name, size, .. } => (name, size),
        };
        let content_offset = offset;
        offset += size;
        let clean = skiff_storage::tree_path::normalize_entry_path(name)
            .map_err(|e| anyhow::anyhow!("tar-split entry {:?}: {e}", shown_path(name)))?
            .join(&b'/');
        let index = *by_name.get(clean.as_slice()).with_context(|| {
            format!(
                "tar-split file {:?} has no content in the TOC",
                shown_path(name)
            )
        })?;
        let file = &meta.toc.files[index];
        ensure!(
            file.size == *size,
            "TOC and tar-split disagree on the size of {:?}",
            shown_path(name)
        );
        let found = local.find(file)?;
        // The importer stores files of more than 64 bytes as objects.
        if file.size > composefs::INLINE_CONTENT_MAX_V0 as u64 {
            plan.hints.push(ObjectHint {
                offset: content_offset,
                size: file.size,
                object: found.clone().map(|(id, chunks)| HintedObject {
                    id,
                    sha256: Some(file.sha256),
                    chunks,
                }),
            });
        }
        let source = match found {
            Some((id, _)) => FileSource::Stored(id),
            None => {
                let mut chunks = Vec::with_capacity(file.chunks.len());
                for chunk in &file.chunks {
                    let source = if chunk.zeros {
                        ChunkSource::Zeros
                    } else if let Some((source, offset)) = chunk
                        .sha256
                        .and_then(|d| chunk_sources.find(local.stored, &d, chunk.size))
                    {
                        ChunkSource::Stored { source, offset }
                    } else {
                        plan.needed.push(chunk.compressed.clone());
                        ChunkSource::Fetched
                    };
                    chunks.push(source);
                }
                FileSource::Chunks(chunks)
            }
        };
        plan.files.push((index, source));
    }
    plan.sources = chunk_sources.into_files();
    Ok(plan)
}

/// Sends the tar the tar-split describes, each file's content from the store or the blob.
fn replay<H: FsVerityHashValue>(
    meta: &Metadata,
    plan: &ReplayPlan<H>,
    cursor: &mut SpanCursor,
    repo: &Store<H>,
    stats: &PartialStats,
    tx: &mpsc::Sender<std::io::Result<Bytes>>,
) -> Result<()> {
    let mut out = ChannelWriter::new(tx);
    let mut decompressor = zstd::bulk::Decompressor::new()?;
    let mut planned = plan.files.iter();
    for entry in &meta.tar_split.entries {
        let (name, crc64) = match entry {
            TarSplitEntry::Segment(bytes) => {
                std::io::Write::write_all(&mut out, bytes)?;
                continue;
            }
            TarSplitEntry::File { size: 0, .. } => continue,
            TarSplitEntry::File { name, crc64, .. } => (name, crc64),
        };
        let (index, found) = planned.next().context("replay plan out of step")?;
        let file = &meta.toc.files[*index];
        let mut check = FileCheck::default();
        let mut emit = |data: Bytes| -> Result<()> {
            check.update(&data);
            Ok(out.write_bytes(data)?)
        };
        match found {
            FileSource::Stored(object) => {
                emit_stored(repo, object, file.size, name, &mut emit)?;
                stats.reused.fetch_add(file.size, Ordering::Relaxed);
            }
            FileSource::Chunks(sources) => {
                for (chunk, source) in file.chunks.iter().zip(sources) {
                    match *source {
                        ChunkSource::Zeros => emit_zeros(chunk.size, &mut emit)?,
                        ChunkSource::Fetched => {
                            emit_fetched(chunk, cursor, &mut decompressor, name, &mut emit)?
                        }
                        ChunkSource::Stored { source, offset } => {
                            emit_stored_range(&plan.sources[source], offset, chunk.size, &mut emit)
                                .with_context(|| {
                                    format!("Reading a stored chunk of {:?}", shown_path(name))
                                })?;
                            stats.reused_chunks.fetch_add(chunk.size, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
        check.verify(file, *crc64, name)?;
    }
    std::io::Write::flush(&mut out)?;
    Ok(())
}

/// Sends the `size` bytes of a stored object, in blocks.
fn emit_stored<H: FsVerityHashValue>(
    repo: &Store<H>,
    object: &H,
    size: u64,
    name: &[u8],
    emit: &mut dyn FnMut(Bytes) -> Result<()>,
) -> Result<()> {
    let mut f = repo.open_object(object).with_context(|| {
        format!(
            "Opening the stored object of {:?} (removed since the plan?)",
            shown_path(name)
        )
    })?;
    let mut left = size;
    while left > 0 {
        let mut buf = vec![0u8; OBJECT_READ_CHUNK.min(left as usize)];
        f.read_exact(&mut buf).context("Reading a stored object")?;
        left -= buf.len() as u64;
        emit(Bytes::from(buf))?;
    }
    Ok(())
}

/// Sends `size` bytes of zeros (a hole), in blocks.
fn emit_zeros(size: u64, emit: &mut dyn FnMut(Bytes) -> Result<()>) -> Result<()> {
    let mut left = size;
    while left > 0 {
        let n = left.min(OBJECT_READ_CHUNK as u64);
        emit(Bytes::from(vec![0u8; n as usize]))?;
        left -= n;
    }
    Ok(())
}

/// Sends `size` bytes at `offset` of an open stored object, in blocks.
fn emit_stored_range(
    file: &std::fs::File,
    offset: u64,
    size: u64,
    emit: &mut dyn FnMut(Bytes) -> Result<()>,
) -> Result<()> {
    let mut done = 0u64;
    while done < size {
        let mut buf = vec![0u8; OBJECT_READ_CHUNK.min((size - done) as usize)];
        file.read_exact_at(&mut buf, offset + done)?;
        done += buf.len() as u64;
        emit(Bytes::from(buf))?;
    }
    Ok(())
}

/// Sends a chunk's content from its fetched frames. A chunk of at most [`OBJECT_READ_CHUNK`]
/// bytes (most are: containers/storage cuts files at about 64 KiB) is decompressed whole by
/// `decompressor`, a context reused for every chunk; a larger one in blocks, since its
/// declared size is not trusted with an allocation.
fn emit_fetched(
    chunk: &Chunk,
    cursor: &mut SpanCursor,
    decompressor: &mut zstd::bulk::Decompressor<'static>,
    name: &[u8],
    emit: &mut dyn FnMut(Bytes) -> Result<()>,
) -> Result<()> {
    let frames = cursor.take(chunk.compressed.clone())?;
    if chunk.size <= OBJECT_READ_CHUNK as u64 {
        let data = decompressor
            .decompress(&frames, chunk.size as usize)
            .with_context(|| {
                format!(
                    "Decompressing {:?} (a chunk the TOC says is {} bytes)",
                    shown_path(name),
                    chunk.size
                )
            })?;
        ensure!(
            data.len() as u64 == chunk.size,
            "a chunk of {:?} decompresses to {} bytes, the TOC says {}",
            shown_path(name),
            data.len(),
            chunk.size
        );
        return emit(Bytes::from(data));
    }
    let mut decoder = zstd::stream::read::Decoder::new(&frames[..])?.take(chunk.size + 1);
    let mut total = 0u64;
    loop {
        // No more than the chunk can still hold (plus the byte that shows an overrun).
        let want = (chunk.size + 1 - total).min(OBJECT_READ_CHUNK as u64) as usize;
        let mut block = vec![0u8; want];
        let n = decoder
            .read(&mut block)
            .with_context(|| format!("Decompressing {:?}", shown_path(name)))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        ensure!(
            total <= chunk.size,
            "a chunk of {:?} decompresses to more than the {} bytes the TOC says",
            shown_path(name),
            chunk.size
        );
        block.truncate(n);
        emit(Bytes::from(block))?;
    }
    ensure!(
        total == chunk.size,
        "a chunk of {:?} decompresses to {total} bytes, the TOC says {}",
        shown_path(name),
        chunk.size
    );
    Ok(())
}

/// sha256 and CRC-64 of a file's content, as it is sent.
#[derive(Default)]
struct FileCheck {
    sha: Option<openssl::sha::Sha256>,
    crc: Crc64Iso,
}

impl FileCheck {
    fn update(&mut self, data: &[u8]) {
        self.sha
            .get_or_insert_with(openssl::sha::Sha256::new)
            .update(data);
        self.crc.update(data);
    }

    fn verify(self, file: &TocFile, crc64: Option<u64>, name: &[u8]) -> Result<()> {
        let sha = self.sha.unwrap_or_default().finish();
        if sha != file.sha256 {
            bail!(
                "file {:?}: content sha256 {} differs from the TOC's {}",
                shown_path(name),
                hex::encode(sha),
                hex::encode(file.sha256)
            );
        }
        if Some(self.crc.finish()) != crc64 {
            bail!(
                "file {:?}: content CRC-64 differs from the tar-split's",
                shown_path(name)
            );
        }
        Ok(())
    }
}
