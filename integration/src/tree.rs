//! An image's file tree, built two independent ways for comparison:
//!
//! - [`Tree::from_layers`]: extracting the layer tars with the `tar` crate and applying OCI
//!   whiteouts, then the composefs OCI transformations (root metadata aside, `/run` emptied,
//!   xattrs other than `security.capability` dropped);
//! - [`Tree::from_stored_image`]: reading the EROFS image that the store holds for a tag, with
//!   the composefs reader, and the file contents from the repository's objects.
//!
//! Names, types, modes, owners, xattrs, link targets, device numbers, hard-link groups and file
//! contents (sha256) are compared; timestamps and the root directory are not.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use composefs::fsverity::FsVerityHashValue;
use composefs::repository::Repository;
use composefs::tree::{Directory, FileSystem, Inode, LeafContent, RegularFile};

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file: size and sha256 (hex) of its content.
    File(u64, String),
    /// A symlink and its target.
    Symlink(Vec<u8>),
    /// A character device.
    CharDev(u64),
    /// A block device.
    BlockDev(u64),
    /// A fifo.
    Fifo,
}

/// One entry's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Type and content.
    pub kind: Kind,
    /// Permission bits (`& 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Extended attributes.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// A file tree: entries by absolute path (root excluded), and hard-link groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    /// `/a/b` → entry.
    pub entries: BTreeMap<Vec<u8>, Entry>,
    /// Sets of paths that are one inode (only sets of two or more).
    pub hardlinks: BTreeSet<BTreeSet<Vec<u8>>>,
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(openssl::sha::sha256(data))
}

/// Linux's `makedev`.
pub fn makedev(major: u64, minor: u64) -> u64 {
    ((major & 0xffff_f000) << 32)
        | ((major & 0xfff) << 8)
        | ((minor & 0xffff_ff00) << 12)
        | (minor & 0xff)
}

fn clean(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in name
        .split(|&b| b == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
    {
        out.push(b'/');
        out.extend_from_slice(part);
    }
    out
}

fn is_below(path: &[u8], dir: &[u8]) -> bool {
    path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/'
}

impl Tree {
    /// Extracts `tars` (uncompressed layers, lowest first) the way a container runtime would.
    pub fn from_layers(tars: &[Vec<u8>]) -> Result<Self> {
        // path → (entry, inode number)
        let mut files: BTreeMap<Vec<u8>, (Entry, usize)> = BTreeMap::new();
        let mut next_inode = 0;
        for tar in tars {
            let mut archive = tar::Archive::new(&tar[..]);
            for item in archive.entries()? {
                let mut item = item?;
                let path = clean(&item.path_bytes());
                if path.is_empty() {
                    continue;
                }
                let (parent, base) =
                    path.split_at(path.iter().rposition(|&b| b == b'/').unwrap_or(0));
                let base = &base[1..];
                if base == b".wh..wh..opq" {
                    files.retain(|p, _| !is_below(p, parent));
                    continue;
                }
                if let Some(victim) = base.strip_prefix(b".wh.") {
                    let victim = [parent, b"/", victim].concat();
                    files.retain(|p, _| *p != victim && !is_below(p, &victim));
                    continue;
                }
                let header = item.header().clone();
                let mut xattrs = BTreeMap::new();
                if let Some(exts) = item.pax_extensions()? {
                    for ext in exts {
                        let ext = ext?;
                        if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                            xattrs.insert(name.to_vec(), ext.value_bytes().to_vec());
                        }
                    }
                }
                let kind = match header.entry_type() {
                    tar::EntryType::Directory => Kind::Dir,
                    tar::EntryType::Regular | tar::EntryType::Continuous => {
                        let mut data = Vec::new();
                        item.read_to_end(&mut data)?;
                        Kind::File(data.len() as u64, sha256_hex(&data))
                    }
                    tar::EntryType::Symlink => {
                        Kind::Symlink(item.link_name_bytes().context("symlink target")?.to_vec())
                    }
                    tar::EntryType::Char => Kind::CharDev(makedev(
                        header.device_major()?.unwrap_or(0).into(),
                        header.device_minor()?.unwrap_or(0).into(),
                    )),
                    tar::EntryType::Block => Kind::BlockDev(makedev(
                        header.device_major()?.unwrap_or(0).into(),
                        header.device_minor()?.unwrap_or(0).into(),
                    )),
                    tar::EntryType::Fifo => Kind::Fifo,
                    tar::EntryType::Link => {
                        let target = clean(&item.link_name_bytes().context("link target")?);
                        let linked = files.get(&target).cloned().with_context(|| {
                            format!(
                                "hard link {:?} to missing {:?}",
                                String::from_utf8_lossy(&path),
                                String::from_utf8_lossy(&target)
                            )
                        })?;
                        files.insert(path, linked);
                        continue;
                    }
                    other => bail!("unexpected tar entry type {other:?}"),
                };
                let entry = Entry {
                    kind,
                    mode: header.mode()? & 0o7777,
                    uid: header.uid()?,
                    gid: header.gid()?,
                    xattrs,
                };
                let replaces_dir = matches!(files.get(&path), Some((e, _)) if e.kind == Kind::Dir);
                if entry.kind != Kind::Dir && replaces_dir {
                    files.retain(|p, _| !is_below(p, &path));
                }
                next_inode += 1;
                files.insert(path, (entry, next_inode));
            }
        }
        // composefs' OCI transformations.
        files.retain(|p, _| !is_below(p, b"/run"));
        for (entry, _) in files.values_mut() {
            entry.xattrs.retain(|k, _| k == b"security.capability");
        }
        let mut groups: HashMap<usize, BTreeSet<Vec<u8>>> = HashMap::new();
        for (path, (_, inode)) in &files {
            groups.entry(*inode).or_default().insert(path.clone());
        }
        Ok(Tree {
            hardlinks: groups.into_values().filter(|g| g.len() > 1).collect(),
            entries: files.into_iter().map(|(p, (e, _))| (p, e)).collect(),
        })
    }

    /// Reads the EROFS image of the image tagged `tag` in the repository at `repo_path`.
    pub fn from_stored_image(repo_path: &Path, tag: &str) -> Result<Self> {
        let meta = std::fs::read(repo_path.join("meta.json"))?;
        if String::from_utf8_lossy(&meta).contains("sha256") {
            Self::from_stored::<composefs::fsverity::Sha256HashValue>(repo_path, tag)
        } else {
            Self::from_stored::<composefs::fsverity::Sha512HashValue>(repo_path, tag)
        }
    }

    fn from_stored<H: FsVerityHashValue>(repo_path: &Path, tag: &str) -> Result<Self> {
        let repo = Repository::<H>::open_path(rustix::fs::CWD, repo_path)?;
        let image = composefs_oci::oci_image::OciImage::open_ref(&repo, tag)?;
        let erofs = image
            .image_ref(repo.erofs_version())
            .context("the image has no EROFS")?;
        let fs: FileSystem<H> =
            composefs::erofs::reader::erofs_to_filesystem(&repo.read_object(erofs)?)?;
        let mut tree = Tree::default();
        let mut paths_of_leaf: HashMap<usize, BTreeSet<Vec<u8>>> = HashMap::new();
        walk(&repo, &fs, &fs.root, b"", &mut tree, &mut paths_of_leaf)?;
        tree.hardlinks = paths_of_leaf
            .into_values()
            .filter(|g| g.len() > 1)
            .collect();
        Ok(tree)
    }

    /// Panics with a readable list of differences when the trees differ.
    pub fn assert_same(&self, other: &Tree, what: &str) {
        let mut diffs = Vec::new();
        let keys: BTreeSet<_> = self.entries.keys().chain(other.entries.keys()).collect();
        for k in keys {
            let (a, b) = (self.entries.get(k), other.entries.get(k));
            if a != b {
                diffs.push(format!(
                    "{}:\n  expected {a:?}\n  stored   {b:?}",
                    String::from_utf8_lossy(k)
                ));
            }
        }
        if self.hardlinks != other.hardlinks {
            diffs.push(format!(
                "hard links: expected {:?}, stored {:?}",
                self.hardlinks, other.hardlinks
            ));
        }
        assert!(
            diffs.is_empty(),
            "{what}: the stored tree differs from the layers:\n{}",
            diffs.join("\n")
        );
    }
}

fn walk<H: FsVerityHashValue>(
    repo: &Repository<H>,
    fs: &FileSystem<H>,
    dir: &Directory<H>,
    prefix: &[u8],
    tree: &mut Tree,
    paths_of_leaf: &mut HashMap<usize, BTreeSet<Vec<u8>>>,
) -> Result<()> {
    for (name, inode) in dir.sorted_entries() {
        let path = [prefix, b"/", name.as_bytes()].concat();
        match inode {
            Inode::Directory(d) => {
                tree.entries.insert(path.clone(), entry(Kind::Dir, &d.stat));
                walk(repo, fs, d, &path, tree, paths_of_leaf)?;
            }
            Inode::Leaf(id, _) => {
                let leaf = &fs.leaves[id.0];
                let kind = match &leaf.content {
                    LeafContent::Regular(RegularFile::Inline(data)) => {
                        Kind::File(data.len() as u64, sha256_hex(data))
                    }
                    LeafContent::Regular(
                        RegularFile::External(obj, size) | RegularFile::ExternalNoVerity(obj, size),
                    ) => {
                        let data = repo.read_object(obj)?;
                        anyhow::ensure!(
                            data.len() as u64 == *size,
                            "object size differs from the EROFS's"
                        );
                        Kind::File(*size, sha256_hex(&data))
                    }
                    LeafContent::Regular(RegularFile::Sparse(size)) => {
                        bail!("sparse file of {size} bytes")
                    }
                    LeafContent::Symlink(t) => Kind::Symlink(t.as_bytes().to_vec()),
                    LeafContent::CharacterDevice(rdev) => Kind::CharDev(*rdev),
                    LeafContent::BlockDevice(rdev) => Kind::BlockDev(*rdev),
                    LeafContent::Fifo => Kind::Fifo,
                    LeafContent::Socket => bail!("socket"),
                };
                tree.entries.insert(path.clone(), entry(kind, &leaf.stat));
                paths_of_leaf.entry(id.0).or_default().insert(path);
            }
        }
    }
    Ok(())
}

fn entry(kind: Kind, stat: &composefs::tree::Stat) -> Entry {
    Entry {
        kind,
        mode: stat.st_mode & 0o7777,
        uid: stat.st_uid.into(),
        gid: stat.st_gid.into(),
        xattrs: stat
            .xattrs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.to_vec()))
            .collect(),
    }
}
