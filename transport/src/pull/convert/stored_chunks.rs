//! The stored chunks a partial pull reads instead of fetching (see [`super::chunked`]): each
//! source object opened once and kept open until the replay has read it, each chunk checked
//! against its digest before the fetch plan is made.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;

use anyhow::Result;
use skiff_storage::stored_files::StoredFiles;
use skiff_storage::{FsVerityHashValue, Store};

use super::chunked::OBJECT_READ_CHUNK;

/// Stored objects held open at once as sources of chunks. The planner opens each object it
/// takes chunks from and keeps it open until the replay has read them, so that an object
/// removed in between (a gc by another tool) is still read; past this many, further chunks are
/// fetched (an update touches far fewer changed files than this, and the process's descriptor
/// limit is often 1024).
const MAX_CHUNK_SOURCES: usize = 256;

/// The stored chunks a partial pull reads from: each object opened once, at most
/// [`MAX_CHUNK_SOURCES`] of them.
pub(super) struct ChunkSources<'a, H: FsVerityHashValue> {
    repo: &'a Store<H>,
    open: HashMap<H, Option<usize>>,
    files: Vec<std::fs::File>,
}

impl<'a, H: FsVerityHashValue> ChunkSources<'a, H> {
    /// None open yet.
    pub(super) fn new(repo: &'a Store<H>) -> Self {
        Self {
            repo,
            open: HashMap::new(),
            files: Vec::new(),
        }
    }

    /// The objects opened, indexed as [`Self::find`] numbered them.
    pub(super) fn into_files(self) -> Vec<std::fs::File> {
        self.files
    }

    /// The chunk `digest` of `size` bytes from the store, if an object holds it: (index of
    /// the open object, offset), once the object is opened (or already open) and the bytes
    /// there hash to `digest`. Anything else (no such chunk, an
    /// object gone or changed, too many objects open) means the chunk is fetched.
    pub(super) fn find(
        &mut self,
        stored: &StoredFiles<H>,
        digest: &[u8; 32],
        size: u64,
    ) -> Option<(usize, u64)> {
        let chunk = stored.find_chunk(digest, size)?;
        let source = match self.open.get(&chunk.object) {
            Some(source) => (*source)?,
            None => {
                let opened = if self.files.len() < MAX_CHUNK_SOURCES {
                    match self.repo.open_object(&chunk.object) {
                        Ok(file) => Some(file),
                        Err(e) => {
                            log::debug!(
                                "stored object {} not opened: {e:#}",
                                chunk.object.to_hex()
                            );
                            None
                        }
                    }
                } else {
                    None
                };
                let source = opened.map(|file| {
                    self.files.push(file);
                    self.files.len() - 1
                });
                self.open.insert(chunk.object.clone(), source);
                source?
            }
        };
        match chunk_digest_at(&self.files[source], chunk.offset, size) {
            Ok(actual) if actual == *digest => Some((source, chunk.offset)),
            Ok(_) => {
                log::warn!(
                    "stored object {} does not hold the chunk its content index names; fetching it",
                    chunk.object.to_hex()
                );
                None
            }
            Err(e) => {
                log::warn!(
                    "reading a chunk of stored object {}: {e:#}; fetching it",
                    chunk.object.to_hex()
                );
                None
            }
        }
    }
}

/// sha256 of `size` bytes at `offset` of `file`.
fn chunk_digest_at(file: &std::fs::File, offset: u64, size: u64) -> Result<[u8; 32]> {
    let mut sha = openssl::sha::Sha256::new();
    let mut buf = vec![0u8; OBJECT_READ_CHUNK.min(size as usize)];
    let mut done = 0u64;
    while done < size {
        let n = buf.len().min((size - done) as usize);
        file.read_exact_at(&mut buf[..n], offset + done)?;
        sha.update(&buf[..n]);
        done += n as u64;
    }
    Ok(sha.finish())
}
