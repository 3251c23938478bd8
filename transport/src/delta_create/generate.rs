//! Making the tar-diff of one layer: the new layer's tar, literal except the contents of the
//! regular files that are cheaper to express against a file of the source image.
//!
//! The source image is its stored file tree (the merged root filesystem an applier reads), so
//! whiteouts and overwritten files are already resolved. For each regular file of the new tar
//! (world-readable, not sparse, not empty), a source is chosen as containers/tar-diff chooses
//! it: the same sha1 and size (an exact copy); else the same path; else the same base name,
//! then the same base name up to its first dot — each only between files of similar sizes and
//! never for `.xz`/`.bz2` files, the closest size winning. The content is then written as a
//! COPY, a ZSTD_DICT or bsdiff ([`BinaryDiff`]), or for files of [`MAX_BSDIFF_SIZE`] or more
//! by matching rolling-checksum blocks; literal when nothing is smaller.
//!
//! The tar is read once, streaming: every byte the tar parser reads is recorded as literal
//! output except the contents chosen for encoding, so headers, padding and whatever follows the
//! archive come out byte for byte. Only a target file and its source are held in memory.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::rc::Rc;

use anyhow::{Context, Result};
use openssl::hash::{Hasher, MessageDigest};
use skiff_storage::images::{FileContent, ImageTree};
use skiff_storage::{FsVerityHashValue, Store};

use crate::format::oci_delta::clean_path;
use crate::format::oci_delta::tar_diff::{
    BinaryDiff, BsdiffPatch, MAX_BSDIFF_SIZE, MAX_ZSTD_DIFF_SIZE, OpWriter, write_bsdiff,
    write_copy, write_rollsum, write_zstd, zstd_patch,
};

/// Largest file diffed, in NEW and in OLD: the content of both is held in memory for the diff.
/// Larger files go into the delta as literal data, streamed, so a size read from a tar
/// header (unchecked until the layer's DiffID is) never sizes an allocation, nor does a
/// source file of similar size (up to ten times larger).
const MAX_DIFFED_FILE: u64 = 1024 * 1024 * 1024;

/// A regular file of the source image.
#[derive(Debug)]
struct SourceFile<H: FsVerityHashValue> {
    /// The name the delta opens it by (its first path).
    path: String,
    basenames: Vec<String>,
    size: u64,
    sha1: [u8; 20],
    content: FileContent<H>,
}

/// The files of the source image, indexed the ways a target file looks for its source.
pub struct SourceSet<H: FsVerityHashValue> {
    files: Vec<SourceFile<H>>,
    by_sha1: HashMap<[u8; 20], usize>,
    by_path: HashMap<String, usize>,
    by_basename: HashMap<String, Vec<usize>>,
    by_stem: HashMap<String, Vec<usize>>,
    repo: Store<H>,
}

impl<H: FsVerityHashValue> std::fmt::Debug for SourceSet<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceSet")
            .field("files", &self.files.len())
            .finish_non_exhaustive()
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The base name up to and including its first dot (`libfoo.so.1` → `libfoo.`).
fn stem(name: &str) -> &str {
    match name.find('.') {
        Some(i) => &name[..=i],
        None => name,
    }
}

/// Compressed files do not diff well (tar-diff leaves them to exact matches).
fn is_delta_candidate(basenames: &[String]) -> bool {
    !basenames
        .iter()
        .any(|b| b.ends_with(".xz") || b.ends_with(".bz2"))
}

fn size_is_similar(a: u64, b: u64) -> bool {
    (a < 65536 && b < 65536) || (a < b.saturating_mul(10) && b < a.saturating_mul(10))
}

impl<H: FsVerityHashValue> SourceSet<H> {
    /// Reads every regular file of `tree` (objects in `repo`) to index it.
    pub fn build(tree: &ImageTree<H>, repo: Store<H>) -> Result<Self> {
        // Hard links: one source file with every name, opened by its first.
        let mut by_leaf: HashMap<usize, usize> = HashMap::new();
        let mut set = Self {
            files: Vec::new(),
            by_sha1: HashMap::new(),
            by_path: HashMap::new(),
            by_basename: HashMap::new(),
            by_stem: HashMap::new(),
            repo,
        };
        for (path, mode, content, leaf) in tree.regular_files() {
            // tar-diff only uses world-readable files; names must be UTF-8 to be opened.
            let Ok(path) = String::from_utf8(path) else {
                continue;
            };
            let size = match &content {
                FileContent::Object(_, size) => *size,
                FileContent::Inline(data) => data.len() as u64,
            };
            if mode & 0o004 == 0 || size == 0 {
                continue;
            }
            let index = match by_leaf.get(&leaf) {
                Some(&i) => i,
                None => {
                    let sha1 = set.sha1(&content)?;
                    set.files.push(SourceFile {
                        path: path.clone(),
                        basenames: Vec::new(),
                        size,
                        sha1,
                        content,
                    });
                    by_leaf.insert(leaf, set.files.len() - 1);
                    set.files.len() - 1
                }
            };
            let base = basename(&path).to_owned();
            set.files[index].basenames.push(base.clone());
            set.by_path.insert(path, index);
            set.by_stem
                .entry(stem(&base).to_owned())
                .or_default()
                .push(index);
            set.by_basename.entry(base).or_default().push(index);
        }
        for (i, f) in set.files.iter().enumerate() {
            // Later files win, as in tar-diff.
            set.by_sha1.insert(f.sha1, i);
        }
        for list in set.by_basename.values_mut().chain(set.by_stem.values_mut()) {
            list.dedup();
        }
        Ok(set)
    }

    /// Number of files.
    pub(crate) fn len(&self) -> usize {
        self.files.len()
    }

    /// The sha1 of a stored file, streamed: index building holds no file whole.
    fn sha1(&self, content: &FileContent<H>) -> Result<[u8; 20]> {
        match content {
            FileContent::Inline(data) => Ok(openssl::sha::sha1(data)),
            FileContent::Object(id, size) => {
                let mut sha = Hasher::new(MessageDigest::sha1())?;
                let read = std::io::copy(&mut self.repo.open_object(id)?, &mut sha)?;
                anyhow::ensure!(read == *size, "object {id:?} has the wrong size");
                Ok((*sha.finish()?).try_into()?)
            }
        }
    }

    /// A stored file's content, to diff against; `None` for a file over [`MAX_DIFFED_FILE`],
    /// which is never held whole (the target is then written literally).
    fn read(&self, content: &FileContent<H>) -> Result<Option<Vec<u8>>> {
        match content {
            FileContent::Inline(data) => Ok(Some(data.clone())),
            FileContent::Object(_, size) if *size > MAX_DIFFED_FILE => Ok(None),
            FileContent::Object(id, size) => {
                let mut data = Vec::with_capacity(*size as usize);
                self.repo
                    .open_object(id)?
                    .take(size + 1)
                    .read_to_end(&mut data)?;
                anyhow::ensure!(
                    data.len() as u64 == *size,
                    "object {id:?} has the wrong size"
                );
                Ok(Some(data))
            }
        }
    }

    /// The source for a target file: `(index, exact)`.
    fn choose(&self, path: &str, size: u64, sha1: &[u8; 20]) -> Option<(usize, bool)> {
        if let Some(&i) = self.by_sha1.get(sha1)
            && self.files[i].size == size
        {
            return Some((i, true));
        }
        let base = basename(path).to_owned();
        let basenames = [base.clone()];
        if !is_delta_candidate(&basenames) {
            return None;
        }
        if let Some(&i) = self.by_path.get(path) {
            let s = &self.files[i];
            if is_delta_candidate(&s.basenames) && size_is_similar(size, s.size) {
                return Some((i, false));
            }
        }
        for candidates in [self.by_basename.get(&base), self.by_stem.get(stem(&base))] {
            let mut best: Option<usize> = None;
            for &i in candidates.into_iter().flatten() {
                let s = &self.files[i];
                if !is_delta_candidate(&s.basenames) || !size_is_similar(size, s.size) {
                    continue;
                }
                // Ties go to the later source.
                if let Some(b) = best
                    && self.files[b].size.abs_diff(size) < s.size.abs_diff(size)
                {
                    continue;
                }
                best = Some(i);
            }
            if let Some(b) = best {
                return Some((b, false));
            }
        }
        None
    }
}

/// What the tar reader has read since the last drain, and the running DiffID.
struct Recording {
    pending: Vec<u8>,
    skip: bool,
    diff_id: openssl::sha::Sha256,
    total: u64,
}

/// Records every byte read through it (except while `skip` is set) for the literal output.
struct Recorder<R> {
    inner: R,
    state: Rc<RefCell<Recording>>,
}

impl<R: Read> Read for Recorder<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut state = self.state.borrow_mut();
        state.diff_id.update(&buf[..n]);
        state.total += n as u64;
        if !state.skip {
            state.pending.extend_from_slice(&buf[..n]);
        }
        Ok(n)
    }
}

/// What making one layer's tar-diff found.
#[derive(Debug, Clone, Default)]
pub struct LayerDiffStats {
    /// `sha256:` of the tar read (the layer's DiffID).
    pub diff_id: String,
    /// Bytes of the tar.
    pub tar_bytes: u64,
    /// Files written as exact copies of source files.
    pub copied: usize,
    /// Files written as binary diffs (bsdiff, zstd or rolling checksum).
    pub diffed: usize,
}

/// Writes the tar-diff of the tar read from `tar` against `sources` to `out`.
pub fn write_layer_diff<H: FsVerityHashValue, W: Write>(
    sources: &SourceSet<H>,
    tar: impl Read,
    out: W,
    method: BinaryDiff,
) -> Result<(W, LayerDiffStats)> {
    let mut w = OpWriter::new(out, method.v2())?;
    let state = Rc::new(RefCell::new(Recording {
        pending: Vec::new(),
        skip: false,
        diff_id: openssl::sha::Sha256::new(),
        total: 0,
    }));
    let drain = |w: &mut OpWriter<W>| -> Result<()> {
        let pending = std::mem::take(&mut state.borrow_mut().pending);
        w.literal(&pending)
    };
    let mut stats = LayerDiffStats::default();
    let mut archive = tar::Archive::new(Recorder {
        inner: tar,
        state: state.clone(),
    });
    for entry in archive.entries().context("Reading the new layer")? {
        let mut entry = entry.context("Reading the new layer")?;
        drain(&mut w)?;
        let Some(path) = diff_candidate(&mut entry) else {
            continue;
        };
        // The content goes through the encoder, not the literal recording.
        state.borrow_mut().skip = true;
        // Grown as bytes arrive: the header's size is not trusted before they do.
        let mut content = Vec::new();
        entry.read_to_end(&mut content)?;
        state.borrow_mut().skip = false;
        let encoded = encode_file(&mut w, sources, method, &path, &content, &mut stats)?;
        if !encoded {
            w.literal(&content)?;
        }
    }
    // The end-of-archive blocks and anything after them.
    let mut recorder = archive.into_inner();
    std::io::copy(&mut recorder, &mut std::io::sink())?;
    drop(recorder);
    drain(&mut w)?;
    let out = w.finish()?;
    let state = Rc::try_unwrap(state)
        .map_err(|_| anyhow::anyhow!("recording still shared"))?
        .into_inner();
    stats.diff_id = format!("sha256:{}", hex::encode(state.diff_id.finish()));
    stats.tar_bytes = state.total;
    Ok((out, stats))
}

/// The path of an entry whose content may be written against a source file: a
/// regular, non-sparse, world-readable file of 1 to [`MAX_DIFFED_FILE`] bytes with a UTF-8 name.
fn diff_candidate<R: Read>(entry: &mut tar::Entry<'_, R>) -> Option<String> {
    let entry_type = entry.header().entry_type();
    let mode = entry.header().mode();
    let size = entry.size();
    let path_bytes = entry.path_bytes().into_owned();
    let sparse = entry_type == tar::EntryType::GNUSparse
        || entry.pax_extensions().ok().flatten().is_some_and(|mut p| {
            p.any(|e| e.is_ok_and(|e| e.key_bytes().starts_with(b"GNU.sparse.")))
        });
    let candidate = entry_type == tar::EntryType::Regular
        && !path_bytes.ends_with(b"/")
        && size > 0
        && !sparse
        && size <= MAX_DIFFED_FILE
        && mode.is_ok_and(|m| m & 0o004 != 0);
    let path = std::str::from_utf8(&path_bytes).map(clean_path).ok()?;
    (candidate && !path.is_empty()).then_some(path)
}

/// Writes `content` (of the file at `path`) as a COPY or a diff of its source, if it has one
/// and that is smaller; false when it is to be written literally.
fn encode_file<H: FsVerityHashValue, W: Write>(
    w: &mut OpWriter<W>,
    sources: &SourceSet<H>,
    method: BinaryDiff,
    path: &str,
    content: &[u8],
    stats: &mut LayerDiffStats,
) -> Result<bool> {
    let size = content.len() as u64;
    // A content no longer than its name plus an op stays literal (tar-diff's rule).
    if size <= path.len() as u64 + 4 {
        return Ok(false);
    }
    let sha1 = openssl::sha::sha1(content);
    match sources.choose(path, size, &sha1) {
        None => Ok(false),
        Some((i, true)) => {
            write_copy(w, &sources.files[i].path, size)?;
            stats.copied += 1;
            Ok(true)
        }
        Some((i, false)) => {
            let source = &sources.files[i];
            let Some(old) = sources.read(&source.content)? else {
                return Ok(false);
            };
            let encoded = encode_changed(w, method, &source.path, &old, content)?;
            stats.diffed += usize::from(encoded);
            Ok(encoded)
        }
    }
}

/// Writes a changed file against its source the way `method` and the sizes allow; false when
/// the content is better left literal.
fn encode_changed<W: Write>(
    w: &mut OpWriter<W>,
    method: BinaryDiff,
    source_path: &str,
    old: &[u8],
    new: &[u8],
) -> Result<bool> {
    let (old_size, new_size) = (old.len() as u64, new.len() as u64);
    let zstd_fits = old_size < MAX_ZSTD_DIFF_SIZE && new_size < MAX_ZSTD_DIFF_SIZE;
    let bsdiff_fits = old_size < MAX_BSDIFF_SIZE && new_size < MAX_BSDIFF_SIZE;
    let zstd = matches!(method, BinaryDiff::Zstd | BinaryDiff::Auto) && zstd_fits;
    let bsdiff = matches!(method, BinaryDiff::Bsdiff | BinaryDiff::Auto) && bsdiff_fits;
    if zstd && bsdiff {
        // Auto: both, side by side on two cores, and the smaller one goes in (a frame is stored
        // as it is, so its length is what it adds; bsdiff's ops are measured compressed as the
        // stream compresses them).
        let (patch, frame) = std::thread::scope(|scope| {
            let frame = scope.spawn(|| zstd_patch(old, new));
            let patch = BsdiffPatch::new(old, new)
                .and_then(|patch| Ok((patch.encoded_size(source_path)?, patch)));
            (
                patch,
                frame.join().expect("the zstd encoder does not panic"),
            )
        });
        let (patch_size, patch) = patch?;
        return match frame? {
            Some(frame) if (frame.len() as u64) < patch_size => {
                write_zstd(w, source_path, &frame).map(|()| true)
            }
            _ if patch_size < new_size => patch.write(w, source_path).map(|()| true),
            _ => Ok(false),
        };
    }
    if zstd {
        return match zstd_patch(old, new)? {
            Some(frame) => write_zstd(w, source_path, &frame).map(|()| true),
            None => Ok(false),
        };
    }
    if bsdiff {
        write_bsdiff(w, source_path, old, new)?;
        return Ok(true);
    }
    write_rollsum(w, source_path, old, new)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tar-diff of one changed file with `method`.
    fn diffed(method: BinaryDiff, old: &[u8], new: &[u8]) -> usize {
        let mut w = OpWriter::new(Vec::new(), method.v2()).unwrap();
        assert!(encode_changed(&mut w, method, "usr/lib/f", old, new).unwrap());
        w.finish().unwrap().len()
    }

    /// Bytes from a seed, the same on every run.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn auto_takes_the_smaller_of_bsdiff_and_zstd() {
        let old = noise(256 * 1024, 7);
        // One byte of every 16 changed (addresses shifted in code): bsdiff's differences are
        // nearly all zeros, zstd's matches break every 15 bytes.
        let shifted: Vec<u8> = old
            .iter()
            .enumerate()
            .map(|(i, b)| if i % 16 == 0 { b.wrapping_add(1) } else { *b })
            .collect();
        // Text with one digit replaced everywhere it occurs: zstd's matches restart at each
        // edit for the price of a repeat offset, bsdiff pays for a control triple per run.
        let text: Vec<u8> = (0..40_000u32)
            .flat_map(|i| format!("w{} ", (i * 7919) % 3000).into_bytes())
            .collect();
        let edited: Vec<u8> = text
            .iter()
            .map(|b| if *b == b'7' { b'8' } else { *b })
            .collect();
        let mut winners = Vec::new();
        for (old, new) in [(&old, &shifted), (&text, &edited)] {
            let bsdiff = diffed(BinaryDiff::Bsdiff, old, new);
            let zstd = diffed(BinaryDiff::Zstd, old, new);
            let auto = diffed(BinaryDiff::Auto, old, new);
            // The v2 header and the ops' own framing aside, auto is the smaller one.
            assert!(
                auto <= bsdiff.min(zstd) + 64,
                "auto {auto}, bsdiff {bsdiff}, zstd {zstd}"
            );
            winners.push(bsdiff < zstd);
        }
        assert_eq!(winners, [true, false], "each method wins one of the cases");
    }
}
