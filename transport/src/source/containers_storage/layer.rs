//! One layer of containers-storage into the store, without a second copy of its data.
//!
//! The layer's tar is replayed from its tar-split (`overlay-layers/<id>.tar-split.gz`, parsed by
//! [`crate::format::zstd_chunked::tar_split`]): the raw header and padding segments as they are,
//! each file's content from the layer's `diff/`, opened beneath it with no symlink followed. A
//! file of more than 64 bytes (what the import stores as an object) first becomes an object by
//! `FICLONE` of c/storage's file, a copy where the filesystem cannot clone; the replay then
//! sends the object's bytes and checks them against the tar-split's CRC-64, so that the
//! import, which checks the whole tar against the DiffID, verifies exactly what the object
//! holds.
//!
//! (composefs-storage 0.9.4's own tar-split reader is not used: it looks for the CRC in a
//! `crc64` field, where tar-split writes `payload`, so it never checks one, and it does not read
//! `name_raw`, the name of a file whose name is not UTF-8.)

use std::fs::File;
use std::io::{Read, Seek};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use composefs::repository::ObjectStoreMethod;
use fn_error_context::context;
use rustix::fs::{Mode, OFlags, ResolveFlags};
use skiff_storage::layer_import::{HintedObject, ObjectHint, PendingLayer, split_layer_with_hints};
use skiff_storage::tree_path::{normalize_entry_path, shown_path};
use skiff_storage::{FsVerityHashValue, OciDigest, Store};
use tokio::sync::mpsc;

use super::ContainersStorageSource;
use crate::format::zstd_chunked::{Crc64Iso, MAX_METADATA_SIZE, TarSplit, TarSplitEntry};
use crate::io::{ImportStopped, produced_and_imported};

/// Block size when sending a file's content into the replayed tar.
const READ_CHUNK: usize = 256 * 1024;

/// How the file contents of layers read from containers-storage were stored.
#[derive(Debug, Default)]
pub(crate) struct CloneStats {
    /// Bytes of new objects stored as clones of c/storage's files (sharing their blocks).
    pub(crate) cloned: AtomicU64,
    /// Bytes of new objects copied because the filesystem cannot clone.
    pub(crate) copied: AtomicU64,
    /// The filesystem refused a clone: the rest is copied without trying.
    refused: AtomicBool,
}

/// Imports the layer `diff_id` of `source`'s image: replayed, stored, checked.
#[context("Reading layer {diff_id} from containers-storage")]
pub(crate) async fn import_layer<H: FsVerityHashValue>(
    source: Arc<ContainersStorageSource>,
    store: &Store<H>,
    diff_id: &OciDigest,
    stats: Arc<CloneStats>,
) -> Result<PendingLayer<H>> {
    let (tx, rx) = crate::io::channel();
    let (hint_tx, hint_rx) = mpsc::unbounded_channel();
    let (repo, layer_diff_id) = (store.clone(), diff_id.clone());
    let written = Arc::new(std::sync::Mutex::new(NewObjects::default()));
    let replay_written = written.clone();
    let producer = tokio::task::spawn_blocking(move || {
        let result = replay(&source, &layer_diff_id, &repo, &tx, &hint_tx, &stats)
            .map(|new| *replay_written.lock().unwrap() = new);
        drop(hint_tx);
        if let Err(e) = &result {
            // The import sees the stream end with this error.
            let _ = tx.blocking_send(Err(std::io::Error::other(format!("{e:#}"))));
        }
        result
    });
    let imported = split_layer_with_hints(store, diff_id, rx, Some(hint_rx)).await;
    let mut pending = produced_and_imported(producer.await?, imported)?;
    let new = *written.lock().unwrap();
    // The import counts every hinted object as one the store held; the replay knows which it
    // wrote.
    let stats = &mut pending.stats;
    stats.objects_reused = stats.objects_reused.saturating_sub(new.objects);
    stats.bytes_reused = stats.bytes_reused.saturating_sub(new.bytes);
    stats.objects_written += new.objects;
    stats.bytes_written += new.bytes;
    Ok(pending)
}

/// Objects a replay wrote new (not found in the store).
#[derive(Debug, Default, Clone, Copy)]
struct NewObjects {
    objects: u64,
    bytes: u64,
}

/// Sends the tar the layer's tar-split describes, hinting each object-sized file's object.
fn replay<H: FsVerityHashValue>(
    source: &ContainersStorageSource,
    diff_id: &OciDigest,
    store: &Store<H>,
    tx: &crate::io::ChunkSender,
    hints: &mpsc::UnboundedSender<ObjectHint<H>>,
    stats: &CloneStats,
) -> Result<NewObjects> {
    let mut new = NewObjects::default();
    let send = |data: Bytes| {
        tx.blocking_send(Ok(data))
            .map_err(|_| anyhow::Error::new(ImportStopped))
    };
    let (storage, layer) = source.layer(diff_id)?;
    let split_name = format!("overlay-layers/{}.tar-split.gz", layer.id());
    let compressed = storage
        .root_dir()
        .open(&split_name)
        .with_context(|| format!("Opening {split_name}"))?;
    let split =
        crate::blob::read_bounded(flate2::read::GzDecoder::new(compressed), MAX_METADATA_SIZE)
            .with_context(|| format!("Decompressing {split_name}"))?;
    let split = TarSplit::parse(&split).with_context(|| format!("Reading {split_name}"))?;
    let diff = layer.diff_dir();
    // Offset in the replayed tar.
    let mut offset = 0u64;
    for entry in split.entries {
        let (name, size, crc64) = match entry {
            TarSplitEntry::Segment(bytes) => {
                offset += bytes.len() as u64;
                send(Bytes::from(bytes))?;
                continue;
            }
            // Directories, links, devices and empty files: the header is all there is.
            TarSplitEntry::File { size: 0, .. } => continue,
            TarSplitEntry::File { name, size, crc64 } => (name, size, crc64),
        };
        let shown = shown_path(&name);
        let mut file = open_beneath(diff.as_fd(), &name)
            .with_context(|| format!("Opening {shown:?} in the diff/ of layer {}", layer.id()))?;
        let on_disk = file.metadata()?.len();
        ensure!(
            on_disk == size,
            "{shown:?} holds {on_disk} bytes in the diff/ of layer {}, its tar-split says {size}",
            layer.id()
        );
        let mut crc = Crc64Iso::default();
        if size > composefs::INLINE_CONTENT_MAX_V0 as u64 {
            let (id, method) = store_object(store, &mut file, size, stats)
                .with_context(|| format!("Storing {shown:?}"))?;
            if !matches!(method, ObjectStoreMethod::AlreadyPresent) {
                new.objects += 1;
                new.bytes += size;
            }
            let hint = ObjectHint {
                offset,
                size,
                object: Some(HintedObject {
                    id: id.clone(),
                    sha256: None,
                    chunks: Vec::new(),
                }),
            };
            hints
                .send(hint)
                .map_err(|_| anyhow::Error::new(ImportStopped))?;
            send_content(store.open_object(&id)?, size, &shown, &mut crc, &send)?;
        } else {
            send_content(file, size, &shown, &mut crc, &send)?;
        }
        if Some(crc.finish()) != crc64 {
            bail!(
                "{shown:?} in the diff/ of layer {} is not the file its tar-split recorded \
                 (CRC-64 mismatch)",
                layer.id()
            );
        }
        offset += size;
    }
    Ok(new)
}

/// Opens the regular file `name` (a tar entry name) beneath `diff`, following no symlink.
fn open_beneath(diff: impl AsFd, name: &[u8]) -> Result<File> {
    let components = normalize_entry_path(name).map_err(|e| anyhow::anyhow!("{e}"))?;
    let joined = components.join(&b'/');
    let path = std::ffi::OsStr::from_bytes(&joined);
    let fd = rustix::fs::openat2(
        diff.as_fd(),
        path,
        // NONBLOCK: a FIFO where a file should be must not hang the open.
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )?;
    let file = File::from(fd);
    ensure!(file.metadata()?.is_file(), "not a regular file");
    Ok(file)
}

/// Sends exactly `size` bytes of `content`, in blocks, adding them to `crc`.
fn send_content(
    content: File,
    size: u64,
    name: &str,
    crc: &mut Crc64Iso,
    send: &dyn Fn(Bytes) -> Result<()>,
) -> Result<()> {
    let mut reader = content.take(size);
    let mut sent = 0u64;
    while sent < size {
        let mut block = vec![0u8; READ_CHUNK.min((size - sent) as usize)];
        let n = reader.read(&mut block)?;
        if n == 0 {
            bail!("{name:?} ended after {sent} of its {size} bytes");
        }
        block.truncate(n);
        crc.update(&block);
        sent += n as u64;
        send(Bytes::from(block))?;
    }
    Ok(())
}

/// Stores the content of `file` as an object: a clone of it until the filesystem refuses one
/// (warned once), then a copy.
fn store_object<H: FsVerityHashValue>(
    store: &Store<H>,
    file: &mut File,
    size: u64,
    stats: &CloneStats,
) -> Result<(H, ObjectStoreMethod)> {
    let repo = store.repo();
    let mut object = File::from(repo.create_object_tmpfile()?);
    if !stats.refused.load(Ordering::Relaxed) {
        match rustix::fs::ioctl_ficlone(&object, &*file) {
            Ok(()) => {
                // The clone is of the file as it is now: it must still be the size checked.
                let cloned = object.metadata()?.len();
                ensure!(
                    cloned == size,
                    "the file changed size while it was read ({cloned} bytes)"
                );
                let stored = repo.finalize_object_tmpfile(object, size)?;
                if !matches!(stored.1, ObjectStoreMethod::AlreadyPresent) {
                    stats.cloned.fetch_add(size, Ordering::Relaxed);
                }
                return Ok(stored);
            }
            Err(e) => {
                if !stats.refused.swap(true, Ordering::Relaxed) {
                    log::warn!(
                        "containers-storage: the filesystem cannot clone the store's files into \
                         the repository ({e}): copying their contents"
                    );
                }
            }
        }
    }
    file.rewind()?;
    let copied = std::io::copy(&mut (&*file).take(size), &mut object)?;
    ensure!(copied == size, "copied {copied} of {size} bytes");
    let stored = repo.finalize_object_tmpfile(object, size)?;
    if !matches!(stored.1, ObjectStoreMethod::AlreadyPresent) {
        stats.copied.fetch_add(size, Ordering::Relaxed);
    }
    Ok(stored)
}
