//! The files a tar-diff reads: regular files of the source image, found by walking its
//! directory tree (the image's EROFS, as stored), and read by offset.
//!
//! The applier is the `oci-delta` crate's `tar_patch_apply` (the one composefs-rs and bootc
//! use), given this data source. What the crate leaves to its data source, and how it is done
//! here:
//!
//! - **Paths**: the crate passes OPEN names as they are; here they are cleaned as tar-diff
//!   cleans them ([`super::clean_path`]: `..` cannot climb above the root) and looked up in the
//!   image tree without following any symlink, so a delta can only read regular files of the
//!   source image. The crate bounds the OPEN length (4 KiB).
//! - **Reads**: by offset (`pread`) on the object file, with this source's own cursor: no file
//!   cursor is shared, and a COPY or ADD_DATA past the end of the file is an error.
//! - **The cursor after ZSTD_DICT (op 5)**: the crate reads the whole file as the dictionary
//!   through [`DeltaDataSource::read_current_to_end`] and documents the cursor as left at the
//!   end. The Go generator keeps its own idea of the cursor unchanged across op 5 and may COPY
//!   from the same file right after it without a SEEK, so here the dictionary is read by offset
//!   and the cursor stays where it was: the deltas of both generators apply.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use oci_delta::DeltaDataSource;
use skiff_storage::images::{FileContent, ImageTree};
use skiff_storage::{FsVerityHashValue, Store};

/// Bytes read at a time when copying from a source file.
const COPY_CHUNK: usize = 256 * 1024;

enum Content {
    File(std::fs::File),
    Inline(Vec<u8>),
}

struct Current {
    path: String,
    content: Content,
    size: u64,
    pos: u64,
}

impl Current {
    /// Fills `buf` from offset `at`; fails past the end of the file.
    fn read_at(&self, buf: &mut [u8], at: u64) -> Result<()> {
        let end = at.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.size) {
            bail!(
                "the delta reads bytes {at}..{} of {:?}, which has {} bytes",
                at.saturating_add(buf.len() as u64),
                self.path,
                self.size
            );
        }
        match &self.content {
            Content::File(f) => f
                .read_exact_at(buf, at)
                .with_context(|| format!("Reading {:?} of the source image", self.path)),
            Content::Inline(data) => {
                buf.copy_from_slice(&data[at as usize..at as usize + buf.len()]);
                Ok(())
            }
        }
    }
}

/// The regular files of a stored image, as a tar-diff's source.
pub struct SourceFiles<H: FsVerityHashValue> {
    tree: Arc<ImageTree<H>>,
    repo: Store<H>,
    current: Option<Current>,
}

impl<H: FsVerityHashValue> std::fmt::Debug for SourceFiles<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceFiles")
            .field("current", &self.current.as_ref().map(|c| &c.path))
            .finish_non_exhaustive()
    }
}

impl<H: FsVerityHashValue> SourceFiles<H> {
    /// Reads files of `tree`, whose objects are in `repo`.
    pub fn new(tree: Arc<ImageTree<H>>, repo: Store<H>) -> Self {
        Self {
            tree,
            repo,
            current: None,
        }
    }

    fn current(&mut self) -> Result<&mut Current> {
        self.current
            .as_mut()
            .context("the delta reads a source file before opening one")
    }
}

impl<H: FsVerityHashValue> DeltaDataSource for SourceFiles<H> {
    fn set_current_file(&mut self, path: &str) -> Result<()> {
        let clean = crate::format::oci_delta::clean_path(path);
        ensure!(
            !clean.is_empty(),
            "the delta opens {path:?}, which names no file"
        );
        let content = self.tree.regular_file(clean.as_bytes()).with_context(|| {
            format!(
                "the delta opens {path:?}: the source image has no regular file there \
                 (symlinks are not followed)"
            )
        })?;
        let (content, size) = match content {
            FileContent::Object(id, size) => (Content::File(self.repo.open_object(&id)?), size),
            FileContent::Inline(data) => {
                let size = data.len() as u64;
                (Content::Inline(data), size)
            }
        };
        self.current = Some(Current {
            path: clean,
            content,
            size,
            pos: 0,
        });
        Ok(())
    }

    fn read_exact_current(&mut self, buf: &mut [u8]) -> Result<()> {
        let current = self.current()?;
        current.read_at(buf, current.pos)?;
        current.pos += buf.len() as u64;
        Ok(())
    }

    fn seek_current(&mut self, offset: u64) -> Result<u64> {
        // Past the end is allowed; the next read fails.
        self.current()?.pos = offset;
        Ok(offset)
    }

    fn read_current_to_end(&mut self, max_size: u64) -> Result<Vec<u8>> {
        let current = self.current()?;
        ensure!(
            current.size <= max_size,
            "{:?} ({} bytes) is larger than the {max_size} bytes allowed as a zstd dictionary",
            current.path,
            current.size
        );
        let mut data = vec![0u8; current.size as usize];
        // By offset: the cursor stays where it was (see the module documentation).
        current.read_at(&mut data, 0)?;
        Ok(data)
    }

    fn copy_to(&mut self, dst: &mut dyn Write, n: u64) -> Result<()> {
        let current = self.current()?;
        let mut left = n;
        let mut buf = vec![0u8; COPY_CHUNK.min(n as usize)];
        while left > 0 {
            let len = COPY_CHUNK.min(left as usize);
            current.read_at(&mut buf[..len], current.pos)?;
            dst.write_all(&buf[..len])?;
            current.pos += len as u64;
            left -= len as u64;
        }
        Ok(())
    }
}
