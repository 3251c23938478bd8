//! Every file and chunk the store holds, by content digest: the union of the
//! [content indexes](crate::content_index) of all stored layers, which a partial pull and a
//! delta's import look contents up in.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Result;
use composefs::fsverity::FsVerityHashValue;
use fn_error_context::context;

use crate::content_index::{ContentIndex, IndexedChunk};

/// A file the store holds as an object.
#[derive(Debug, Clone)]
pub struct StoredFile<H> {
    /// The object.
    pub object: H,
    /// Its size.
    pub size: u64,
    /// Its data chunks, when a content index lists them.
    pub chunks: Arc<[IndexedChunk]>,
}

/// Where the store holds a chunk: `size` bytes at `offset` of `object`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChunk<H> {
    /// The object holding the chunk.
    pub object: H,
    /// Offset of the chunk in the object.
    pub offset: u64,
    /// Length of the chunk.
    pub size: u64,
}

/// Every file the store holds as an object, by the sha256 of its content, and every chunk of
/// those files by the sha256 of the chunk: the union of the content indexes of all stored
/// layers.
#[derive(Debug)]
pub struct StoredFiles<H> {
    by_sha256: HashMap<[u8; 32], StoredFile<H>>,
    /// Chunk digest to (digest of the file holding it, offset, size).
    by_chunk: HashMap<[u8; 32], ([u8; 32], u64, u64)>,
}

impl<H> Default for StoredFiles<H> {
    fn default() -> Self {
        Self {
            by_sha256: HashMap::new(),
            by_chunk: HashMap::new(),
        }
    }
}

impl<H: FsVerityHashValue> StoredFiles<H> {
    /// Reads the index of every layer splitstream in the store. Layers without an index (imported
    /// by other tools) add nothing.
    #[context("Reading the content indexes of the store")]
    pub fn load(store: &crate::Store<H>) -> Result<Self> {
        let mut stored = Self::default();
        let streams = match std::fs::read_dir(store.path().join("streams")) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(stored),
            Err(e) => return Err(e.into()),
        };
        for entry in streams {
            let name = entry?.file_name();
            let Some(diff_id) = name.to_str().and_then(|n| n.strip_prefix("oci-layer-")) else {
                continue;
            };
            let Ok(diff_id) = diff_id.parse() else {
                continue;
            };
            // An index that cannot be read (its objects removed by hand, or by a gc that does
            // not take skiff's lock) costs reuse, not the copy.
            match ContentIndex::<H>::read_for_layer(store.repo(), &diff_id) {
                Ok(Some(index)) => stored.add(index),
                Ok(None) => {}
                Err(e) => log::warn!("layer {diff_id}: its content index is not used: {e:#}"),
            }
        }
        Ok(stored)
    }

    /// Adds the files of one layer's index. A file known with its chunks keeps them when
    /// another index lists it without.
    pub fn add(&mut self, index: ContentIndex<H>) {
        for e in index.into_entries() {
            for c in &e.chunks {
                self.by_chunk
                    .entry(c.sha256)
                    .or_insert((e.sha256, c.offset, c.size));
            }
            let known = self
                .by_sha256
                .entry(e.sha256)
                .or_insert_with(|| StoredFile {
                    object: e.object,
                    size: e.size,
                    chunks: Arc::from([]),
                });
            if known.chunks.is_empty() && !e.chunks.is_empty() {
                known.chunks = e.chunks.into();
            }
        }
    }

    /// The file holding content with this sha256 and size, if the store has one.
    pub fn find_file(&self, sha256: &[u8; 32], size: u64) -> Option<&StoredFile<H>> {
        self.by_sha256.get(sha256).filter(|f| f.size == size)
    }

    /// The object holding content with this sha256 and size, if the store has one.
    pub fn find(&self, sha256: &[u8; 32], size: u64) -> Option<&H> {
        self.find_file(sha256, size).map(|f| &f.object)
    }

    /// Where the store holds a chunk with this sha256 and size, if it does.
    pub fn find_chunk(&self, sha256: &[u8; 32], size: u64) -> Option<StoredChunk<H>> {
        let (file, offset, chunk_size) = self.by_chunk.get(sha256)?;
        if *chunk_size != size {
            return None;
        }
        let file = self.by_sha256.get(file)?;
        Some(StoredChunk {
            object: file.object.clone(),
            offset: *offset,
            size,
        })
    }

    /// Number of files known.
    pub fn len(&self) -> usize {
        self.by_sha256.len()
    }

    /// Number of chunks known.
    pub fn chunk_count(&self) -> usize {
        self.by_chunk.len()
    }

    /// True when nothing is known.
    pub fn is_empty(&self) -> bool {
        self.by_sha256.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content_index::IndexEntry;
    use composefs::fsverity::{Sha256HashValue, compute_verity};

    /// File `n`: `n` thousand bytes in two chunks of 100 bytes.
    fn entry(n: u8) -> IndexEntry<Sha256HashValue> {
        IndexEntry {
            sha256: [n; 32],
            object: compute_verity::<Sha256HashValue>(&[n]),
            size: n as u64 * 1000,
            chunks: vec![
                IndexedChunk {
                    sha256: [n + 100; 32],
                    offset: 0,
                    size: 100,
                },
                IndexedChunk {
                    sha256: [n + 150; 32],
                    offset: 300,
                    size: 100,
                },
            ],
        }
    }

    #[test]
    fn stored_files_find_chunks() {
        let mut stored = StoredFiles::default();
        let mut plain = entry(3);
        plain.chunks.clear();
        stored.add(ContentIndex::new(vec![entry(2), plain]));
        assert_eq!(stored.chunk_count(), 2);
        let found = stored.find_chunk(&[152; 32], 100).unwrap();
        assert_eq!(found.object, entry(2).object);
        assert_eq!(found.offset, 300);
        assert!(stored.find_chunk(&[152; 32], 99).is_none(), "size differs");
        assert!(
            stored.find_chunk(&[3; 32], 3000).is_none(),
            "a file is not a chunk"
        );
        // Listed again without chunks (reused whole by a later layer): the chunks stay.
        let mut bare = entry(2);
        bare.chunks.clear();
        stored.add(ContentIndex::new(vec![bare]));
        assert_eq!(stored.find_file(&[2; 32], 2000).unwrap().chunks.len(), 2);
    }
}
