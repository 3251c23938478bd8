//! The image tree from layer splitstreams, read with skiff's header semantics
//! ([`crate::tar_header`]) rather than composefs-oci's `get_entry`.
//!
//! Entries become composefs-oci `TarEntry`s exactly as `get_entry` makes them, so for every tar
//! both read alike the tree (and the EROFS) is cfsctl's. Where they differ (see
//! [`crate::tar_header`]), skiff's tree is the one Go unpacks, and two more differences apply
//! while merging:
//!
//! - the parents of an entry that the layers never created are created as containers/storage
//!   creates them: mode 0755, owner 0:0 (and mtime 0, so that the tree is reproducible);
//! - a sparse file holds its logical content, holes as zeros. The layer splitstream keeps the
//!   tar's bytes; the logical file is written as a new object when the tree is built, and
//!   returned so that the caller can keep it referenced (garbage collection does not look
//!   inside EROFS images).

use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path};

use anyhow::{Context, Result, bail, ensure};
use composefs::INLINE_CONTENT_MAX_V0;
use composefs::fsverity::FsVerityHashValue;
use composefs::repository::Repository;
use composefs::splitstream::{SplitStreamData, SplitStreamReader};
use composefs::tree::{Directory, FileSystem, Inode, LeafContent, RegularFile, Stat};
use composefs_oci::OciDigest;
use composefs_oci::tar::{TarEntry, TarItem};
use fn_error_context::context;
use rustix::fs::makedev;
use tar_core::{EntryType, HEADER_SIZE};

use crate::tar_header::MAX_HEADER_BYTES;
use crate::tar_header::{EntryHeader, HeaderEvent, HeaderReader, SparseMap, expand_sparse};
use crate::tree_path::{absolute_entry_path, shown_path};

/// Read size for a sparse file's stored data.
const SPARSE_READ: usize = 64 * 1024;

/// Metadata of a directory no entry describes: containers/storage's `MkdirAll(0755)` as root,
/// with mtime 0 (containers/storage leaves the time of unpacking there).
pub fn implicit_dir_stat() -> Stat {
    Stat {
        st_mode: 0o755,
        ..Stat::uninitialized()
    }
}

/// The entries of one layer splitstream, in tar order (see [`layer_entries`]).
pub(crate) struct LayerEntries<'r, H: FsVerityHashValue> {
    repo: &'r Repository<H>,
    stream: SplitStreamReader<H>,
    headers: HeaderReader,
    buf: Vec<u8>,
}

impl<H: FsVerityHashValue> LayerEntries<'_, H> {
    /// The next entry, and the object written for it if it is a sparse file stored as one.
    pub(crate) fn next_entry(&mut self) -> Result<Option<(TarEntry<H>, Option<H>)>> {
        self.buf.clear();
        let mut block = [0u8; HEADER_SIZE];
        let (consumed, header) = loop {
            match self.headers.parse(&self.buf)? {
                HeaderEvent::NeedData(need) => {
                    ensure!(
                        need <= MAX_HEADER_BYTES,
                        "a tar entry header needs {need} bytes"
                    );
                    while self.buf.len() < need {
                        if !self.stream.read_inline_exact(&mut block)? {
                            return Ok(None);
                        }
                        self.buf.extend_from_slice(&block);
                    }
                }
                HeaderEvent::Global { consumed } => {
                    self.buf.drain(..consumed);
                }
                HeaderEvent::End { .. } => return Ok(None),
                HeaderEvent::Entry { consumed, header } => break (consumed, header),
            }
        };
        ensure!(
            consumed == self.buf.len(),
            "the splitstream does not cut the tar after the headers of {:?}",
            header.name()
        );
        let size = usize::try_from(header.data_size)?;
        let data = if size == 0 {
            SplitStreamData::Inline(Box::default())
        } else {
            self.stream
                .read_exact(size, size.next_multiple_of(HEADER_SIZE))?
        };
        let mut written = None;
        let item = match &header.sparse {
            Some(map) => {
                let (content, object) = sparse_content(self.repo, map, data)?;
                written = object;
                TarItem::Leaf(LeafContent::Regular(content))
            }
            None => tar_item(&header, data)?,
        };
        let path = absolute_entry_path(&header.path)
            .with_context(|| format!("entry {:?}", shown_path(&header.path)))?;
        let stat = Stat {
            st_uid: header.uid as u32,
            st_gid: header.gid as u32,
            st_mode: header.mode,
            st_mtim_sec: header.mtime as i64,
            st_mtim_nsec: header.mtime_nsec,
            xattrs: header
                .xattrs
                .into_iter()
                .map(|(k, v)| (Box::from(OsStr::from_bytes(&k)), Box::from(v)))
                .collect(),
        };
        Ok(Some((TarEntry { path, stat, item }, written)))
    }
}

/// What composefs-oci's `get_entry` makes of a (non-sparse) entry and its data.
fn tar_item<H: FsVerityHashValue>(
    header: &EntryHeader,
    data: SplitStreamData<H>,
) -> Result<TarItem<H>> {
    let size = header.data_size;
    let link = || header.link_target.as_deref().unwrap_or_default();
    let device = || match (header.dev_major, header.dev_minor) {
        (Some(major), Some(minor)) => Ok(makedev(major, minor)),
        _ => bail!("device entry {:?} without device numbers", header.name()),
    };
    Ok(match (header.entry_type, data) {
        (EntryType::Regular | EntryType::Continuous, SplitStreamData::External(id)) => {
            ensure!(
                size as usize > INLINE_CONTENT_MAX_V0,
                "the splitstream stores the small ({size} byte) file {:?} as an object",
                header.name()
            );
            TarItem::Leaf(LeafContent::Regular(RegularFile::External(id, size)))
        }
        (_, SplitStreamData::External(_)) => bail!(
            "the splitstream stores entry {:?} ({:?}) as an object",
            header.name(),
            header.entry_type
        ),
        (EntryType::Regular | EntryType::Continuous, SplitStreamData::Inline(content)) => {
            ensure!(
                content.len() <= INLINE_CONTENT_MAX_V0,
                "the splitstream stores the large ({size} byte) file {:?} inline",
                header.name()
            );
            TarItem::Leaf(LeafContent::Regular(RegularFile::Inline(content)))
        }
        (EntryType::Directory, _) => TarItem::Directory,
        (EntryType::Link, _) => TarItem::Hardlink(
            absolute_entry_path(link())
                .with_context(|| format!("hard link {:?}", shown_path(&header.path)))?
                .into_os_string(),
        ),
        (EntryType::Symlink, _) => {
            TarItem::Leaf(LeafContent::Symlink(OsStr::from_bytes(link()).into()))
        }
        (EntryType::Block, _) => TarItem::Leaf(LeafContent::BlockDevice(device()?)),
        (EntryType::Char, _) => TarItem::Leaf(LeafContent::CharacterDevice(device()?)),
        (EntryType::Fifo, _) => TarItem::Leaf(LeafContent::Fifo),
        (other, _) => bail!(
            "entry {:?} has the unsupported type {other:?}",
            header.name()
        ),
    })
}

/// The logical content of a sparse file whose stored regions are `data`: inline when small,
/// else a new object (returned as well).
fn sparse_content<H: FsVerityHashValue>(
    repo: &Repository<H>,
    map: &SparseMap,
    data: SplitStreamData<H>,
) -> Result<(RegularFile<H>, Option<H>)> {
    let mut stored: Box<dyn Read> = match data {
        SplitStreamData::Inline(bytes) => Box::new(std::io::Cursor::new(bytes)),
        SplitStreamData::External(id) => Box::new(File::from(repo.open_object(&id)?)),
    };
    let pieces = std::iter::from_fn(move || {
        let mut piece = vec![0u8; SPARSE_READ];
        match stored.read(&mut piece) {
            Ok(0) => None,
            Ok(n) => {
                piece.truncate(n);
                Some(Ok(piece))
            }
            Err(e) => Some(Err(anyhow::Error::from(e))),
        }
    });
    let size = map.real_size;
    if size as usize <= INLINE_CONTENT_MAX_V0 {
        let mut content = vec![0u8; size as usize];
        expand_sparse(map, pieces, |offset, bytes| {
            content[offset as usize..][..bytes.len()].copy_from_slice(bytes);
            Ok(())
        })?;
        return Ok((RegularFile::Inline(content.into()), None));
    }
    let file = File::from(repo.create_object_tmpfile()?);
    expand_sparse(map, pieces, |offset, bytes| {
        file.write_all_at(bytes, offset).map_err(Into::into)
    })?;
    file.set_len(size)?;
    let (id, _) = repo.finalize_object_tmpfile(file, size)?;
    Ok((RegularFile::External(id.clone(), size), Some(id)))
}

/// Creates the missing parents of `path` as [`implicit_dir_stat`] directories. A parent that
/// exists but is no directory is an error.
fn ensure_parents<H: FsVerityHashValue>(fs: &mut FileSystem<H>, path: &Path) -> Result<()> {
    let Some(parent) = path.parent() else {
        return Ok(());
    };
    let mut dir = &mut fs.root;
    for component in parent.components() {
        let Component::Normal(name) = component else {
            continue;
        };
        if dir.lookup(name).is_none() {
            dir.insert(
                name,
                Inode::Directory(Box::new(Directory::new(implicit_dir_stat()))),
            );
        }
        dir = match dir.get_directory_mut(name) {
            Ok(d) => d,
            Err(_) => bail!(
                "{:?} is not a directory in the layers below, so {path:?} cannot be created",
                name
            ),
        };
    }
    Ok(())
}

/// Reads the entries of the layer whose splitstream is `verity`.
pub(crate) fn layer_entries<'r, H: FsVerityHashValue>(
    repo: &'r Repository<H>,
    verity: &H,
) -> Result<LayerEntries<'r, H>> {
    let stream = repo.open_stream("", Some(verity), Some(composefs_oci::LAYER_CONTENT_TYPE))?;
    Ok(LayerEntries {
        repo,
        stream,
        headers: HeaderReader::new(),
        buf: Vec::new(),
    })
}

/// Applies one layer to `fs` (whiteouts included, as composefs-oci applies them). Returns the
/// objects written for its sparse files.
#[context("Applying layer {diff_id}")]
pub fn apply_layer<H: FsVerityHashValue>(
    repo: &Repository<H>,
    fs: &mut FileSystem<H>,
    diff_id: &OciDigest,
    verity: &H,
) -> Result<Vec<H>> {
    let mut entries = layer_entries(repo, verity)?;
    let mut written = Vec::new();
    while let Some((entry, object)) = entries.next_entry()? {
        written.extend(object);
        let name = entry.path.clone();
        ensure_parents(fs, &name)?;
        composefs_oci::image::process_entry(fs, entry).map_err(|e| {
            // process_entry's own messages print the inode in Rust debug form.
            anyhow::anyhow!("entry {name:?}: {}", e.root_cause())
        })?;
    }
    Ok(written)
}
