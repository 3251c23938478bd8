//! The content index of a layer: for each regular file stored as an object, the sha256 of its
//! content, the object's id, the file's size, and the sha256 of each of its content-defined
//! chunks ([`crate::content_chunks`]).
//!
//! It lets a zstd:chunked pull find what the store already holds by the digests its TOC names,
//! whole files and single chunks alike, without reading any object. It is produced while a
//! layer is imported, from the same bytes that are written into the objects (no second read),
//! whatever the layer's compression.
//!
//! # Format
//!
//! The index is one object of the repository (stored like any file's content), holding:
//!
//! ```text
//! magic      8 bytes   "SKFCIX02" ("SKFCIX01": no chunk count and no chunk records)
//! id_len     u8        length of an object id: 32 (sha256 repositories) or 64 (sha512)
//! reserved   7 bytes   zero
//! count      u64 LE    number of file records
//! chunks     u64 LE    number of chunk records
//! files      count × (sha256 [32 bytes] | object id [id_len bytes] | size u64 LE),
//!            sorted by sha256, one record per sha256 (equal content has one object)
//! chunks     chunks × (sha256 [32 bytes] | file u32 LE | offset u64 LE | size u64 LE):
//!            the data chunks of the file record numbered `file`, in order of offset, each
//!            inside the file; grouped by file, files in record order
//! ```
//!
//! A file of one chunk has no chunk records (that chunk's digest is the file's); holes (runs
//! of zeros) have none either. Files of at most 64 bytes are stored inline in the layer
//! splitstream, have no object, and are not indexed.
//!
//! Earlier versions of skiff (up to commit 1d4a6c7) wrote the same bytes inline in a composefs
//! splitstream of content type `skiffcix`, named by [`INLINE_CONTENT_INDEX_REF`]; such indexes
//! still read. The object replaced it because composefs compresses a splitstream's inline bytes
//! with zstd, whose context for the index of a large layer (a few hundred KiB) took 2 MiB of a
//! copy's memory, for digests that do not compress; and under a new name, versions that know
//! only the splitstream see no index instead of one they cannot read.
//!
//! # Lifetime
//!
//! The layer splitstream that skiff writes carries a named reference
//! [`CONTENT_INDEX_REF`] to its index. Garbage collection (skiff's or cfsctl's) keeps every
//! object a named reference names (composefs 0.9.4 walks into those that are streams and
//! keeps the others as they are), so an index lives exactly as long as its layer, whoever
//! collects. Layers imported by other tools have no index; readers treat that as "nothing
//! known".
//! An index that cannot be read (its object removed behind the store's back) is treated the
//! same way, with a warning: it costs reuse, never the copy.
//!
//! (`cfsctl oci copy` rebuilds layers chunk by chunk and so copies no index: such layers are
//! treated as having none.)

use std::io::Read;

use anyhow::{Context, Result, bail, ensure};
use composefs::fsverity::FsVerityHashValue;
use composefs::repository::Repository;
use fn_error_context::context;

/// Splitstream content type of a content index written by an earlier version
/// ([`INLINE_CONTENT_INDEX_REF`]).
pub const CONTENT_INDEX_CONTENT_TYPE: u64 = u64::from_le_bytes(*b"skiffcix");

/// Name of the named reference from a layer splitstream to its content index (an object).
pub const CONTENT_INDEX_REF: &str = "skiff-content-index-object";

/// Name of the named reference from a layer splitstream to a content index that an earlier
/// version wrote inline in a splitstream of content type [`CONTENT_INDEX_CONTENT_TYPE`].
pub const INLINE_CONTENT_INDEX_REF: &str = "skiff-content-index";

const MAGIC: &[u8; 8] = b"SKFCIX02";
/// The first format: file records only.
const MAGIC_V1: &[u8; 8] = b"SKFCIX01";
const HEADER_LEN: usize = 32;
const HEADER_LEN_V1: usize = 24;
/// Bytes of a chunk record.
const CHUNK_RECORD_LEN: usize = 32 + 4 + 8 + 8;

/// An index can never need more records than this: a layer tar needs at least 1 KiB (header
/// plus one data block) per external file, and layers are far below 2^40 bytes. Bounds the
/// allocation made from a stored count.
const MAX_RECORDS: u64 = 1 << 30;

/// A data chunk of an indexed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexedChunk {
    /// sha256 of the chunk's bytes (as in a zstd:chunked TOC's `chunkDigest`).
    pub sha256: [u8; 32],
    /// Offset in the file.
    pub offset: u64,
    /// Length.
    pub size: u64,
}

impl IndexedChunk {
    /// The data chunks worth recording for a file cut into `chunks`: none when the file is one
    /// chunk (its digest is the file's).
    pub fn of_file(chunks: &[crate::content_chunks::ContentChunk]) -> Vec<Self> {
        if chunks.len() < 2 {
            return Vec::new();
        }
        chunks
            .iter()
            .filter_map(|c| {
                c.sha256.map(|sha256| Self {
                    sha256,
                    offset: c.offset,
                    size: c.size,
                })
            })
            .collect()
    }
}

/// One indexed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry<H> {
    /// sha256 of the file's content (as in a zstd:chunked TOC's `digest`).
    pub sha256: [u8; 32],
    /// The composefs object holding the content.
    pub object: H,
    /// Size of the content in bytes.
    pub size: u64,
    /// Its data chunks, in order (empty for a file of one chunk, or when not known).
    pub chunks: Vec<IndexedChunk>,
}

/// The content index of one layer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContentIndex<H> {
    entries: Vec<IndexEntry<H>>,
}

fn id_len<H: FsVerityHashValue>() -> usize {
    H::EMPTY.to_hex().len() / 2
}

impl<H: FsVerityHashValue> ContentIndex<H> {
    /// Builds an index from entries in any order. Equal content has equal object ids, so
    /// entries are unique by sha256; repeats are dropped.
    pub fn new(mut entries: Vec<IndexEntry<H>>) -> Self {
        entries.sort_by_key(|e| e.sha256);
        entries.dedup_by(|a, b| a.sha256 == b.sha256);
        Self { entries }
    }

    /// The entries, sorted by sha256.
    pub fn entries(&self) -> &[IndexEntry<H>] {
        &self.entries
    }

    /// The entries, sorted by sha256, owned.
    pub fn into_entries(self) -> Vec<IndexEntry<H>> {
        self.entries
    }

    /// Finds a file by the sha256 of its content.
    pub fn lookup(&self, sha256: &[u8; 32]) -> Option<&IndexEntry<H>> {
        let i = self.entries.partition_point(|e| &e.sha256 < sha256);
        self.entries.get(i).filter(|e| &e.sha256 == sha256)
    }

    /// Serialises the index (see the module documentation).
    pub fn to_bytes(&self) -> Vec<u8> {
        let id_len = id_len::<H>();
        let chunk_count: usize = self.entries.iter().map(|e| e.chunks.len()).sum();
        let mut out = Vec::with_capacity(
            HEADER_LEN + self.entries.len() * (40 + id_len) + chunk_count * CHUNK_RECORD_LEN,
        );
        out.extend_from_slice(MAGIC);
        out.push(id_len as u8);
        out.extend_from_slice(&[0u8; 7]);
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        out.extend_from_slice(&(chunk_count as u64).to_le_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.sha256);
            out.extend_from_slice(&hex::decode(e.object.to_hex()).expect("to_hex gives hex"));
            out.extend_from_slice(&e.size.to_le_bytes());
        }
        for (file, e) in self.entries.iter().enumerate() {
            for c in &e.chunks {
                out.extend_from_slice(&c.sha256);
                out.extend_from_slice(&(file as u32).to_le_bytes());
                out.extend_from_slice(&c.offset.to_le_bytes());
                out.extend_from_slice(&c.size.to_le_bytes());
            }
        }
        out
    }

    /// Parses a serialised index (either format), checking every field.
    pub fn from_bytes(data: &[u8]) -> Result<Self> {
        ensure!(
            data.len() >= HEADER_LEN_V1,
            "content index truncated ({} bytes)",
            data.len()
        );
        let with_chunks = match &data[..8] {
            m if m == MAGIC => true,
            m if m == MAGIC_V1 => false,
            _ => bail!("content index has a bad magic"),
        };
        let header_len = if with_chunks {
            HEADER_LEN
        } else {
            HEADER_LEN_V1
        };
        ensure!(
            data.len() >= header_len,
            "content index truncated ({} bytes)",
            data.len()
        );
        let id_len = data[8] as usize;
        ensure!(
            id_len == self::id_len::<H>(),
            "content index object ids are {id_len} bytes, the repository's are {}",
            self::id_len::<H>()
        );
        ensure!(
            data[9..16].iter().all(|&b| b == 0),
            "content index reserved bytes are not zero"
        );
        let u64_at = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().expect("8 bytes"));
        let count = u64_at(16);
        let chunk_count = if with_chunks { u64_at(24) } else { 0 };
        ensure!(
            count <= MAX_RECORDS && chunk_count <= MAX_RECORDS,
            "content index claims {count} files and {chunk_count} chunks"
        );
        let record = 32 + id_len + 8;
        let body = &data[header_len..];
        let files_len = count * record as u64;
        ensure!(
            body.len() as u64 == files_len + chunk_count * CHUNK_RECORD_LEN as u64,
            "content index holds {} bytes for {count} files and {chunk_count} chunks",
            body.len()
        );
        let (files, chunks) = body.split_at(files_len as usize);
        let mut entries = Vec::with_capacity(count as usize);
        for chunk in files.chunks_exact(record) {
            let sha256: [u8; 32] = chunk[..32].try_into().expect("32 bytes");
            let object = H::from_hex(hex::encode(&chunk[32..32 + id_len]))
                .map_err(|_| anyhow::anyhow!("content index holds a malformed object id"))?;
            let size = u64::from_le_bytes(chunk[32 + id_len..].try_into().expect("8 bytes"));
            entries.push(IndexEntry {
                sha256,
                object,
                size,
                chunks: Vec::new(),
            });
        }
        if !entries.is_sorted_by(|a, b| a.sha256 < b.sha256) {
            bail!("content index records are not sorted by digest and unique");
        }
        let mut last_file = 0usize;
        for r in chunks.chunks_exact(CHUNK_RECORD_LEN) {
            let file = u32::from_le_bytes(r[32..36].try_into().expect("4 bytes")) as usize;
            let offset = u64::from_le_bytes(r[36..44].try_into().expect("8 bytes"));
            let size = u64::from_le_bytes(r[44..52].try_into().expect("8 bytes"));
            ensure!(
                file >= last_file && file < entries.len(),
                "content index chunk of file record {file} is out of order or out of range"
            );
            last_file = file;
            let entry = &mut entries[file];
            let from = entry.chunks.last().map_or(0, |c| c.offset + c.size);
            ensure!(
                size > 0
                    && offset >= from
                    && offset
                        .checked_add(size)
                        .is_some_and(|end| end <= entry.size),
                "content index chunk {offset}+{size} of a {}-byte file is out of order or out \
                 of range",
                entry.size
            );
            entry.chunks.push(IndexedChunk {
                sha256: r[..32].try_into().expect("32 bytes"),
                offset,
                size,
            });
        }
        Ok(Self { entries })
    }

    /// Writes the index as an object and returns its id. The object is unreferenced until a
    /// layer splitstream names it ([`CONTENT_INDEX_REF`]). The index is consumed, so that one
    /// copy of it is held while it is written.
    #[context("Writing content index")]
    pub fn write(self, repo: &Repository<H>) -> Result<H> {
        let bytes = self.to_bytes();
        drop(self);
        repo.ensure_object(&bytes)
    }

    /// Reads the index of the layer with DiffID `diff_id`; `None` when the layer is not stored
    /// or was imported without an index.
    #[context("Reading content index of layer {diff_id}")]
    pub fn read_for_layer(
        repo: &Repository<H>,
        diff_id: &composefs_oci::OciDigest,
    ) -> Result<Option<Self>> {
        let Some(layer) = repo.has_stream(&composefs_oci::layer_content_id(diff_id))? else {
            return Ok(None);
        };
        let reader = repo.open_stream("", Some(&layer), Some(composefs_oci::LAYER_CONTENT_TYPE))?;
        if let Some(object) = reader.lookup_named_ref(CONTENT_INDEX_REF) {
            let data = repo
                .read_object(object)
                .context("Reading content index object")?;
            return Self::from_bytes(&data).map(Some);
        }
        let Some(stream) = reader.lookup_named_ref(INLINE_CONTENT_INDEX_REF).cloned() else {
            return Ok(None);
        };
        let mut reader = repo
            .open_stream("", Some(&stream), Some(CONTENT_INDEX_CONTENT_TYPE))
            .context("Opening content index stream")?;
        let mut data = Vec::new();
        reader.read_to_end(&mut data)?;
        Self::from_bytes(&data).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use composefs::fsverity::{Sha256HashValue, Sha512HashValue, compute_verity};

    /// File `n`: `n` thousand bytes, in `n % 3` chunks of 100 bytes when that is 2.
    fn entry<H: FsVerityHashValue>(n: u8) -> IndexEntry<H> {
        let chunks = if n % 3 == 2 {
            vec![
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
            ]
        } else {
            Vec::new()
        };
        IndexEntry {
            sha256: [n; 32],
            object: compute_verity::<H>(&[n]),
            size: n as u64 * 1000,
            chunks,
        }
    }

    /// The first format, as an older skiff wrote it.
    fn v1_bytes<H: FsVerityHashValue>(entries: &[IndexEntry<H>]) -> Vec<u8> {
        let mut out = MAGIC_V1.to_vec();
        out.push(id_len::<H>() as u8);
        out.extend_from_slice(&[0u8; 7]);
        out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
        for e in entries {
            out.extend_from_slice(&e.sha256);
            out.extend_from_slice(&hex::decode(e.object.to_hex()).unwrap());
            out.extend_from_slice(&e.size.to_le_bytes());
        }
        out
    }

    #[test]
    fn the_first_format_still_reads() {
        let plain: Vec<_> = [1u8, 3, 4]
            .iter()
            .map(|&n| entry::<Sha256HashValue>(n))
            .collect();
        let parsed = ContentIndex::<Sha256HashValue>::from_bytes(&v1_bytes(&plain)).unwrap();
        assert_eq!(parsed, ContentIndex::new(plain));
    }

    #[test]
    fn round_trip_and_lookup() {
        let idx = ContentIndex::new(vec![
            entry::<Sha256HashValue>(3),
            entry(1),
            entry(2),
            entry(1),
        ]);
        assert_eq!(idx.entries().len(), 3);
        let parsed = ContentIndex::<Sha256HashValue>::from_bytes(&idx.to_bytes()).unwrap();
        assert_eq!(parsed, idx);
        assert_eq!(parsed.lookup(&[2; 32]).unwrap().size, 2000);
        assert!(parsed.lookup(&[4; 32]).is_none());
        let idx512 = ContentIndex::new(vec![entry::<Sha512HashValue>(9)]);
        assert_eq!(
            ContentIndex::<Sha512HashValue>::from_bytes(&idx512.to_bytes()).unwrap(),
            idx512
        );
    }

    #[test]
    fn rejects_malformed_input() {
        let good = ContentIndex::new(vec![entry::<Sha256HashValue>(1), entry(2)]).to_bytes();
        assert!(ContentIndex::<Sha256HashValue>::from_bytes(&good[..good.len() - 1]).is_err());
        assert!(
            ContentIndex::<Sha512HashValue>::from_bytes(&good).is_err(),
            "wrong id length"
        );
        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(ContentIndex::<Sha256HashValue>::from_bytes(&bad).is_err());
        let mut huge = good.clone();
        huge[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(ContentIndex::<Sha256HashValue>::from_bytes(&huge).is_err());
        let mut huge_chunks = good.clone();
        huge_chunks[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(ContentIndex::<Sha256HashValue>::from_bytes(&huge_chunks).is_err());
        // Swap the two records: unsorted.
        let rec = 32 + 32 + 8;
        let mut unsorted = good[..HEADER_LEN].to_vec();
        unsorted.extend_from_slice(&good[HEADER_LEN + rec..]);
        unsorted.extend_from_slice(&good[HEADER_LEN..HEADER_LEN + rec]);
        assert!(ContentIndex::<Sha256HashValue>::from_bytes(&unsorted).is_err());
        // Chunk records: file 1 (entry 2) has two, at the end.
        let second_chunk = good.len() - CHUNK_RECORD_LEN;
        let set = |at: usize, value: &[u8]| {
            let mut b = good.clone();
            b[at..at + value.len()].copy_from_slice(value);
            ContentIndex::<Sha256HashValue>::from_bytes(&b)
        };
        ContentIndex::<Sha256HashValue>::from_bytes(&good).unwrap();
        for (at, value, why) in [
            (32, &2u32.to_le_bytes()[..], "no file 2"),
            (32, &0u32.to_le_bytes()[..], "file order"),
            (36, &50u64.to_le_bytes()[..], "overlaps"),
            (44, &0u64.to_le_bytes()[..], "empty"),
            (44, &1701u64.to_le_bytes()[..], "past the end"),
            (44, &u64::MAX.to_le_bytes()[..], "overflow"),
        ] {
            assert!(set(second_chunk + at, value).is_err(), "{why}");
        }
    }

    use proptest::prelude::*;

    fn entries_strategy() -> impl Strategy<Value = Vec<IndexEntry<Sha512HashValue>>> {
        proptest::collection::vec(
            (any::<[u8; 32]>(), any::<u64>(), 0usize..4).prop_map(|(sha256, size, n)| {
                // n chunks tiling the first n × (size / 4) bytes.
                let step = size / 4;
                let chunks = (0..n as u64)
                    .filter(|_| step > 0)
                    .map(|i| IndexedChunk {
                        sha256: [i as u8; 32],
                        offset: i * step,
                        size: step,
                    })
                    .collect();
                IndexEntry {
                    sha256,
                    object: compute_verity::<Sha512HashValue>(&sha256),
                    size,
                    chunks,
                }
            }),
            0..50,
        )
    }

    proptest! {
        #[test]
        fn index_bytes_round_trip(entries in entries_strategy()) {
            let index = ContentIndex::new(entries.clone());
            let bytes = index.to_bytes();
            let parsed = ContentIndex::<Sha512HashValue>::from_bytes(&bytes).unwrap();
            prop_assert_eq!(&parsed, &index);
            for e in &entries {
                prop_assert_eq!(parsed.lookup(&e.sha256).map(|f| f.size), Some(e.size));
            }
            // Cut short, or of the other repository's id length: refused.
            if !bytes.is_empty() {
                prop_assert!(ContentIndex::<Sha512HashValue>::from_bytes(&bytes[..bytes.len() - 1]).is_err());
            }
            if !entries.is_empty() {
                prop_assert!(ContentIndex::<Sha256HashValue>::from_bytes(&bytes).is_err());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = ContentIndex::<Sha256HashValue>::from_bytes(&bytes);
        }
    }
}
