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

mod entries;

use std::sync::Arc;

use anyhow::Result;
use composefs::fsverity::FsVerityHashValue;
use composefs::repository::ObjectStoreMethod;
use composefs::splitstream::SplitStreamBuilder;
use composefs_oci::{LAYER_CONTENT_TYPE, OciDigest, layer_content_id};
use tokio::io::AsyncRead;
use tokio::sync::mpsc;

use crate::content_index::{CONTENT_INDEX_REF, ContentIndex};
use crate::digest::HashingReader;
use crate::new_object::ObjectWriter;
use crate::repository::Store;
use crate::stored_files::StoredFiles;
use crate::tree_path::PathError;

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
    /// The layer's DiffID (given and checked, or computed by [`split_new_layer`]).
    pub fn diff_id(&self) -> &OciDigest {
        &self.diff_id
    }

    /// The verity of the layer's splitstream (what [`Self::register`] will name).
    pub fn verity(&self) -> &H {
        &self.verity
    }

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

/// Splits the uncompressed layer tar `tar` into the store when no config names its DiffID yet
/// (a blob pushed before its manifest): the DiffID is the one its bytes hash to. The tar is
/// read and checked as [`split_layer`] reads it.
pub async fn split_new_layer<H: FsVerityHashValue>(
    store: &Store<H>,
    tar: impl AsyncRead + Unpin,
) -> Result<PendingLayer<H>> {
    split_layer_known(store, None, tar, None).await
}

/// What the caller knows of the next file of the tar stored as an object (files of more than
/// 64 bytes, in tar order): where its content starts in the tar stream and its size (both must
/// match the tar's own header, or the import fails), and the stored object holding exactly that
/// content, if the store has one. A hinted content's bytes still come through the stream (the
/// DiffID covers them) but are not written again.
#[derive(Debug, Clone)]
pub struct ObjectHint<H> {
    /// Offset of the file's content in the uncompressed tar.
    pub offset: u64,
    /// Its size.
    pub size: u64,
    /// The stored object with that content.
    pub object: Option<HintedObject<H>>,
}

/// A stored object that holds a file's content, named by the caller of the import.
#[derive(Debug, Clone)]
pub struct HintedObject<H> {
    /// The object.
    pub id: H,
    /// The content's sha256 when the caller knows it; else the importer hashes the bytes as they
    /// pass, for the content index.
    pub sha256: Option<[u8; 32]>,
    /// The content's data chunks, for the content index, when the caller knows them.
    pub chunks: Vec<crate::content_index::IndexedChunk>,
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
    split_layer_known(store, Some(diff_id), tar, hints.map(Known::Hints)).await
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
    split_layer_known(store, Some(diff_id), tar, Some(Known::Index(stored))).await
}

/// What the importer knows of the contents the store holds.
enum Known<H: FsVerityHashValue> {
    /// Told, file by file.
    Hints(mpsc::UnboundedReceiver<ObjectHint<H>>),
    /// Looked up by content digest.
    Index(Arc<StoredFiles<H>>),
}

/// The split behind every `split_layer*`: `expected`, when given, is the DiffID the tar must
/// hash to.
async fn split_layer_known<H: FsVerityHashValue>(
    store: &Store<H>,
    expected: Option<&OciDigest>,
    tar: impl AsyncRead + Unpin,
    known: Option<Known<H>>,
) -> Result<PendingLayer<H>> {
    if let Some(diff_id) = expected {
        crate::digest::require_sha256(diff_id)?;
    }
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
    let objects_repo = repo.clone();
    let objects =
        Arc::new(tokio::task::spawn_blocking(move || ObjectWriter::new(objects_repo)).await??);
    entries::split_entries(&objects, &mut tar, &mut split, &index_tx, known).await?;
    drop(index_tx);

    let actual = tar.finish();
    if let Some(diff_id) = expected
        && actual != *diff_id
    {
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
        diff_id: actual,
        verity,
        stats,
    })
}
