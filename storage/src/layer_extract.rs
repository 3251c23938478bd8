//! A stored layer written out as a directory in overlayfs form: what containers/storage's
//! overlay driver uses as a layer's `diff/` (and so what an Additional Layer Store serves).
//!
//! The form, as containers/storage's overlay driver unpacks a layer tar:
//!
//! - a whiteout entry `D/.wh.NAME` becomes `D/NAME`, a character device 0:0 owned as the
//!   entry is; an opaque marker `D/.wh..wh..opq` becomes the xattr `trusted.overlay.opaque=y`
//!   on `D`; other `.wh..wh.` names (AUFS bookkeeping) are dropped;
//! - every other entry keeps its type, owner, mode (suid and sticky bits included), xattrs
//!   (but `security.selinux`) and mtime; hard links are hard links inside the tree, with their
//!   target's metadata (the header of the link itself is not applied, as composefs has it);
//! - a whiteout naming no file (`.wh.`, `.wh..`, `.wh...`) is refused; one below a name an
//!   earlier whiteout replaced is skipped;
//! - a parent no entry creates is made as containers/storage makes it (0755, 0:0; mtime 0, as
//!   the image tree has it, see [`crate::layer_tree::implicit_dir_stat`]);
//! - a later entry of the same name replaces an earlier one (a directory stays a directory and
//!   takes the later metadata; a directory replaced by another type goes with what it held).
//!
//! File contents are **clones** of the store's objects (`FICLONE`): on XFS and btrfs the tree
//! costs metadata only. Where the filesystem cannot clone (ext4, another filesystem than the
//! repository's) the bytes are copied and [`Extracted::copied_bytes`] says how many.
//!
//! Before anything is written, the layer's tar is regenerated from the splitstream and hashed:
//! a stored layer that no longer hashes to its DiffID (an object damaged on a repository
//! without fs-verity) is refused ([`LayerMismatch`]). Every path is resolved below the tree's
//! root without following symlinks, so no entry can write outside it.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use composefs::fsverity::FsVerityHashValue;
use composefs::tree::{LeafContent, RegularFile, Stat};
use composefs_oci::OciDigest;
use composefs_oci::tar::{TarEntry, TarItem};
use fn_error_context::context;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;

use crate::digest::HashingWriter;
use crate::layer_tree::{implicit_dir_stat, layer_entries};
use crate::repository::Store;

/// The prefix of whiteout names in layer tars.
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// The name that marks its directory opaque.
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// The xattr overlayfs reads to make a directory opaque.
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// The stored layer does not hash to the DiffID it is stored under.
#[derive(Debug, thiserror::Error)]
#[error(
    "the stored layer {diff_id} regenerates as {found} ({size} bytes): the repository holds damaged objects (skiff fsck)"
)]
pub struct LayerMismatch {
    /// The DiffID the layer is stored under.
    pub diff_id: OciDigest,
    /// What its regenerated tar hashes to.
    pub found: OciDigest,
    /// The regenerated tar's length.
    pub size: u64,
}

/// What [`extract_layer`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extracted {
    /// Length of the layer's tar (containers/storage's `diff-size`).
    pub tar_size: u64,
    /// Bytes of file content shared with the store's objects by cloning.
    pub cloned_bytes: u64,
    /// Bytes of file content written: small files stored inline, and objects the filesystem
    /// could not clone.
    pub copied_bytes: u64,
    /// Why cloning failed, when it did (the first failure; later files are copied directly).
    pub clone_failure: Option<String>,
}

/// Checks the layer whose splitstream is `verity` against `diff_id`, then writes it in
/// overlayfs form into the empty directory `dest` (blocking).
#[context("Extracting layer {diff_id} to {}", dest.display())]
pub fn extract_layer<H: FsVerityHashValue>(
    store: &Store<H>,
    diff_id: &OciDigest,
    verity: &H,
    dest: &Path,
) -> Result<Extracted> {
    let mut hasher = HashingWriter::new(std::io::sink());
    store.write_layer_tar(verity, &mut hasher)?;
    let (_, found, tar_size) = hasher.finish()?;
    if &found != diff_id {
        return Err(LayerMismatch {
            diff_id: diff_id.clone(),
            found,
            size: tar_size,
        }
        .into());
    }
    let root = rustix::fs::open(
        dest,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )
    .with_context(|| format!("Opening {}", dest.display()))?;
    let mut tree = OverlayTree {
        root,
        root_path: dest.to_owned(),
        dirs: Vec::new(),
        report: Extracted {
            tar_size,
            ..Extracted::default()
        },
        clone: true,
    };
    let mut entries = layer_entries(store.repo(), verity)?;
    while let Some((entry, _sparse_object)) = entries.next_entry()? {
        let shown = entry.path.display().to_string();
        tree.write_entry(store, entry)
            .with_context(|| format!("Writing entry {shown}"))?;
    }
    tree.finish_dirs()?;
    Ok(tree.report)
}

/// The tree being written, and the directories whose metadata is set at the end.
struct OverlayTree {
    root: OwnedFd,
    root_path: PathBuf,
    /// Directories (relative paths, in creation order) and the metadata they get once every
    /// entry is written: a child created later would change a directory's mtime.
    dirs: Vec<(PathBuf, Stat)>,
    report: Extracted,
    /// False once cloning failed: the filesystem cannot, so later files are copied directly.
    clone: bool,
}

impl OverlayTree {
    fn write_entry<H: FsVerityHashValue>(
        &mut self,
        store: &Store<H>,
        entry: TarEntry<H>,
    ) -> Result<()> {
        let rel = entry
            .path
            .strip_prefix("/")
            .unwrap_or(&entry.path)
            .to_owned();
        let Some(name) = rel.file_name().map(|n| n.as_bytes().to_vec()) else {
            // The root itself: its metadata is the tree's.
            if matches!(entry.item, TarItem::Directory) {
                self.dirs.push((PathBuf::new(), entry.stat));
            }
            return Ok(());
        };
        let parent_rel = rel.parent().unwrap_or(Path::new("")).to_owned();
        if name.starts_with(WHITEOUT_PREFIX) {
            return self.write_whiteout(&parent_rel, &name, &entry.stat);
        }
        let parent = self.make_parents(&parent_rel)?;
        let name = OsStr::from_bytes(&name);
        let existing = rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW).ok();
        let existing_dir =
            existing.is_some_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory);
        if !(existing_dir && matches!(entry.item, TarItem::Directory)) && existing.is_some() {
            remove_existing(&parent, name, &self.root_path.join(&parent_rel))?;
        }
        match entry.item {
            TarItem::Directory => {
                if !existing_dir {
                    rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o700))?;
                }
                self.dirs.push((rel, entry.stat));
                return Ok(());
            }
            TarItem::Hardlink(target) => {
                let target = Path::new(&target);
                let target = target.strip_prefix("/").unwrap_or(target);
                let target_parent = self.open_dir(target.parent().unwrap_or(Path::new("")))?;
                let target_name = target
                    .file_name()
                    .context("a hard link to the root directory")?;
                rustix::fs::linkat(&target_parent, target_name, &parent, name, AtFlags::empty())
                    .with_context(|| format!("Linking to {}", target.display()))?;
                // A hard link shares its target's inode and metadata.
                return Ok(());
            }
            TarItem::Leaf(LeafContent::Regular(content)) => {
                let file = File::from(rustix::fs::openat(
                    &parent,
                    name,
                    OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )?);
                self.write_content(store, &file, content)?;
                rustix::fs::fchown(
                    &file,
                    Some(rustix::fs::Uid::from_raw(entry.stat.st_uid)),
                    Some(rustix::fs::Gid::from_raw(entry.stat.st_gid)),
                )?;
                // After chown, which clears the suid and sgid bits.
                rustix::fs::fchmod(&file, mode_of(&entry.stat))?;
                for (key, value) in restored_xattrs(&entry.stat) {
                    rustix::fs::fsetxattr(&file, key, value, XattrFlags::empty())
                        .with_context(|| format!("Setting xattr {key:?}"))?;
                }
                rustix::fs::futimens(&file, &timestamps(&entry.stat))?;
                return Ok(());
            }
            TarItem::Leaf(LeafContent::Symlink(target)) => {
                rustix::fs::symlinkat(target.as_ref(), &parent, name)?;
            }
            TarItem::Leaf(LeafContent::CharacterDevice(dev)) => {
                rustix::fs::mknodat(&parent, name, FileType::CharacterDevice, Mode::empty(), dev)?;
            }
            TarItem::Leaf(LeafContent::BlockDevice(dev)) => {
                rustix::fs::mknodat(&parent, name, FileType::BlockDevice, Mode::empty(), dev)?;
            }
            TarItem::Leaf(LeafContent::Fifo) => {
                rustix::fs::mknodat(&parent, name, FileType::Fifo, Mode::empty(), 0)?;
            }
            TarItem::Leaf(LeafContent::Socket) => {
                rustix::fs::mknodat(&parent, name, FileType::Socket, Mode::empty(), 0)?;
            }
        }
        // Symlinks and special files: metadata by name, never following the entry.
        let is_symlink = rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink);
        chown(&parent, name, &entry.stat)?;
        if !is_symlink {
            rustix::fs::chmodat(&parent, name, mode_of(&entry.stat), AtFlags::empty())?;
        }
        let mut xattrs = restored_xattrs(&entry.stat).peekable();
        if xattrs.peek().is_some() {
            // There is no fd-relative lsetxattr: the parent was resolved without following
            // symlinks, and lsetxattr does not follow the last component.
            let path = self.root_path.join(&rel);
            for (key, value) in xattrs {
                rustix::fs::lsetxattr(&path, key, value, XattrFlags::empty())
                    .with_context(|| format!("Setting xattr {key:?}"))?;
            }
        }
        rustix::fs::utimensat(
            &parent,
            name,
            &timestamps(&entry.stat),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
        Ok(())
    }

    /// A whiteout entry `PARENT/.wh.NAME`, or the opaque marker, in overlayfs form. Under a
    /// parent that an earlier whiteout of the same layer replaced (`/.wh.foo`, then
    /// `/foo/.wh.bar`, as some tools write `rm -rf /foo`), it has nothing to hide and is
    /// skipped, as containers/storage skips it.
    fn write_whiteout(&mut self, parent_rel: &Path, name: &[u8], stat: &Stat) -> Result<()> {
        let parent = match self.open_dir_raw(parent_rel) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => self.make_parents(parent_rel)?,
            Err(Errno::NOTDIR | Errno::LOOP | Errno::XDEV) => {
                log::debug!(
                    "whiteout below {}, which is no directory: skipped",
                    parent_rel.display()
                );
                return Ok(());
            }
            Err(e) => {
                return Err(e).with_context(|| format!("Opening {}", parent_rel.display()));
            }
        };
        if name == OPAQUE_MARKER {
            rustix::fs::fsetxattr(&parent, OPAQUE_XATTR, b"y", XattrFlags::empty())
                .with_context(|| format!("Setting {OPAQUE_XATTR} on {}", parent_rel.display()))?;
            return Ok(());
        }
        if name.starts_with(b".wh..wh.") {
            // AUFS bookkeeping (.wh..wh.plnk, .wh..wh.aufs): nothing for overlayfs.
            return Ok(());
        }
        let hidden = &name[WHITEOUT_PREFIX.len()..];
        if matches!(hidden, b"" | b"." | b"..") {
            bail!(
                "the whiteout {:?} names no file (containers/storage refuses it too)",
                OsStr::from_bytes(name)
            );
        }
        let hidden = OsStr::from_bytes(hidden);
        remove_existing(&parent, hidden, &self.root_path.join(parent_rel))?;
        rustix::fs::mknodat(&parent, hidden, FileType::CharacterDevice, Mode::empty(), 0)?;
        chown(&parent, hidden, stat)?;
        Ok(())
    }

    /// Fills `file` with `content`: a clone of the object where the filesystem can, else a copy.
    fn write_content<H: FsVerityHashValue>(
        &mut self,
        store: &Store<H>,
        mut file: &File,
        content: RegularFile<H>,
    ) -> Result<()> {
        match content {
            RegularFile::Inline(bytes) => {
                file.write_all(&bytes)?;
                self.report.copied_bytes += bytes.len() as u64;
            }
            RegularFile::Sparse(size) => file.set_len(size)?,
            RegularFile::External(id, size) | RegularFile::ExternalNoVerity(id, size) => {
                let mut object = store.open_object(&id)?;
                if self.clone {
                    match rustix::fs::ioctl_ficlone(file, &object) {
                        Ok(()) => {
                            self.report.cloned_bytes += size;
                            return Ok(());
                        }
                        Err(e) => {
                            log::debug!("cloning objects failed ({e}): copying instead");
                            self.report.clone_failure = Some(e.to_string());
                            self.clone = false;
                        }
                    }
                }
                let copied = std::io::copy(&mut object, &mut file)?;
                if copied != size {
                    bail!("object {} holds {copied} bytes, not {size}", id.to_hex());
                }
                self.report.copied_bytes += copied;
            }
        }
        Ok(())
    }

    /// Opens the directory `rel` below the root, following no symlink.
    fn open_dir_raw(&self, rel: &Path) -> rustix::io::Result<OwnedFd> {
        let path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        rustix::fs::openat2(
            &self.root,
            path,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
    }

    /// [`Self::open_dir_raw`], its errors explained.
    fn open_dir(&self, rel: &Path) -> Result<OwnedFd> {
        self.open_dir_raw(rel).map_err(|e| match e {
            Errno::LOOP | Errno::XDEV => {
                anyhow::anyhow!(
                    "{} is a symlink in the layer, not a directory",
                    rel.display()
                )
            }
            e => anyhow::Error::from(e).context(format!("Opening {}", rel.display())),
        })
    }

    /// Opens the directory `rel`, creating it and its parents as [`implicit_dir_stat`] ones
    /// when no entry did.
    fn make_parents(&mut self, rel: &Path) -> Result<OwnedFd> {
        match self.open_dir_raw(rel) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) => {}
            Err(_) => return self.open_dir(rel),
        }
        let mut done = PathBuf::new();
        for component in rel.components() {
            let dir = self.open_dir(&done)?;
            let name = component.as_os_str();
            done.push(name);
            match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o700)) {
                Ok(()) => self.dirs.push((done.clone(), implicit_dir_stat())),
                Err(Errno::EXIST) => {}
                Err(e) => return Err(e).with_context(|| format!("Creating {}", done.display())),
            }
        }
        self.open_dir(rel)
    }

    /// Sets the directories' metadata, deepest first, so that no later step changes an mtime.
    fn finish_dirs(&mut self) -> Result<()> {
        // The last entry for a directory wins; set each once.
        let mut seen = std::collections::HashSet::new();
        let dirs = std::mem::take(&mut self.dirs);
        for (rel, stat) in dirs.iter().rev() {
            if !seen.insert(rel.clone()) {
                continue;
            }
            let dir = match self.open_dir_raw(rel) {
                Ok(fd) => fd,
                // A later entry replaced it (or a directory above it) with something else.
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP | Errno::XDEV) => continue,
                Err(e) => return Err(e).with_context(|| format!("Opening {}", rel.display())),
            };
            rustix::fs::fchown(
                &dir,
                Some(rustix::fs::Uid::from_raw(stat.st_uid)),
                Some(rustix::fs::Gid::from_raw(stat.st_gid)),
            )?;
            rustix::fs::fchmod(&dir, mode_of(stat))?;
            for (key, value) in restored_xattrs(stat) {
                rustix::fs::fsetxattr(&dir, key, value, XattrFlags::empty())
                    .with_context(|| format!("Setting xattr {key:?} on {}", rel.display()))?;
            }
            rustix::fs::futimens(&dir, &timestamps(stat))?;
        }
        Ok(())
    }
}

/// Removes `name` from `dir` (`dir_path`), whatever it is.
fn remove_existing(dir: &impl AsFd, name: &OsStr, dir_path: &Path) -> Result<()> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
            // remove_dir_all follows no symlink; the parent was resolved without them.
            std::fs::remove_dir_all(dir_path.join(name))
                .with_context(|| format!("Replacing directory {name:?}"))
        }
        Ok(_) => Ok(rustix::fs::unlinkat(dir, name, AtFlags::empty())?),
    }
}

fn chown(dir: &impl AsFd, name: &OsStr, stat: &Stat) -> Result<()> {
    rustix::fs::chownat(
        dir,
        name,
        Some(rustix::fs::Uid::from_raw(stat.st_uid)),
        Some(rustix::fs::Gid::from_raw(stat.st_gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .with_context(|| format!("Setting the owner of {name:?}"))
}

/// The xattrs of an entry written to the tree: all but `security.selinux`, which the host's
/// policy labels (containers/storage drops it too).
fn restored_xattrs(stat: &Stat) -> impl Iterator<Item = (&OsStr, &[u8])> {
    stat.xattrs
        .iter()
        .filter(|(key, _)| key.as_ref() != OsStr::new("security.selinux"))
        .map(|(key, value)| (key.as_ref(), value.as_ref()))
}

fn mode_of(stat: &Stat) -> Mode {
    Mode::from_raw_mode(stat.st_mode & 0o7777)
}

fn timestamps(stat: &Stat) -> Timestamps {
    let time = Timespec {
        tv_sec: stat.st_mtim_sec,
        tv_nsec: stat.st_mtim_nsec.into(),
    };
    Timestamps {
        last_access: time,
        last_modification: time,
    }
}
