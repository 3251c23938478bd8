//! The content index of a layer: for each regular file stored as an object, the sha256 of its
//! content, the object's id and the file's size.
//!
//! It lets a zstd:chunked pull find the files the store already holds by their TOC digest
//! without reading any object. It is produced while a layer is imported, from the same bytes
//! that are written into the objects (no second read).
//!
//! # Format
//!
//! The index is a composefs splitstream of content type `skiffcix` whose payload is inline:
//!
//! ```text
//! magic      8 bytes   "SKFCIX01"
//! id_len     u8        length of an object id: 32 (sha256 repositories) or 64 (sha512)
//! reserved   7 bytes   zero
//! count      u64 LE    number of records
//! records    count × (sha256 [32 bytes] | object id [id_len bytes] | size u64 LE),
//!            sorted by sha256, one record per sha256 (equal content has one object)
//! ```
//!
//! Files of at most 64 bytes are stored inline in the layer splitstream, have no object, and are
//! not indexed.
//!
//! # Lifetime
//!
//! The layer splitstream that skiff writes carries a named reference
//! [`CONTENT_INDEX_REF`] to its index. Garbage collection (skiff's or cfsctl's) follows named
//! references, so an index lives exactly as long as its layer, whoever collects. Layers
//! imported by other tools have no index; readers treat that as "nothing known".
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

/// Splitstream content type of a content index.
pub const CONTENT_INDEX_CONTENT_TYPE: u64 = u64::from_le_bytes(*b"skiffcix");

/// Name of the named reference from a layer splitstream to its content index.
pub const CONTENT_INDEX_REF: &str = "skiff-content-index";

const MAGIC: &[u8; 8] = b"SKFCIX01";
const HEADER_LEN: usize = 24;

/// An index can never need more records than this: a layer tar needs at least 1 KiB (header
/// plus one data block) per external file, and layers are far below 2^40 bytes. Bounds the
/// allocation made from a stored count.
const MAX_RECORDS: u64 = 1 << 30;

/// One indexed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry<H> {
    /// sha256 of the file's content (as in a zstd:chunked TOC's `digest`).
    pub sha256: [u8; 32],
    /// The composefs object holding the content.
    pub object: H,
    /// Size of the content in bytes.
    pub size: u64,
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

    /// Finds a file by the sha256 of its content.
    pub fn lookup(&self, sha256: &[u8; 32]) -> Option<&IndexEntry<H>> {
        let i = self.entries.partition_point(|e| &e.sha256 < sha256);
        self.entries.get(i).filter(|e| &e.sha256 == sha256)
    }

    /// Serialises the index (see the module documentation).
    pub fn to_bytes(&self) -> Vec<u8> {
        let id_len = id_len::<H>();
        let mut out = Vec::with_capacity(HEADER_LEN + self.entries.len() * (40 + id_len));
        out.extend_from_slice(MAGIC);
        out.push(id_len as u8);
        out.extend_from_slice(&[0u8; 7]);
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.sha256);
            out.extend_from_slice(&hex::decode(e.object.to_hex()).expect("to_hex gives hex"));
            out.extend_from_slice(&e.size.to_le_bytes());
        }
        out
    }

    /// Parses a serialised index, checking every field.
    pub fn from_bytes(data: &[u8]) -> Result<Self> {
        ensure!(
            data.len() >= HEADER_LEN,
            "content index truncated ({} bytes)",
            data.len()
        );
        ensure!(&data[..8] == MAGIC, "content index has a bad magic");
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
        let count = u64::from_le_bytes(data[16..24].try_into().expect("8 bytes"));
        ensure!(count <= MAX_RECORDS, "content index claims {count} records");
        let record = 32 + id_len + 8;
        let body = &data[HEADER_LEN..];
        ensure!(
            body.len() as u64 == count * record as u64,
            "content index holds {} bytes for {count} records",
            body.len()
        );
        let mut entries = Vec::with_capacity(count as usize);
        for chunk in body.chunks_exact(record) {
            let sha256: [u8; 32] = chunk[..32].try_into().expect("32 bytes");
            let object = H::from_hex(hex::encode(&chunk[32..32 + id_len]))
                .map_err(|_| anyhow::anyhow!("content index holds a malformed object id"))?;
            let size = u64::from_le_bytes(chunk[32 + id_len..].try_into().expect("8 bytes"));
            entries.push(IndexEntry {
                sha256,
                object,
                size,
            });
        }
        if !entries.is_sorted_by(|a, b| a.sha256 < b.sha256) {
            bail!("content index records are not sorted by digest and unique");
        }
        Ok(Self { entries })
    }

    /// Writes the index as a splitstream object and returns its id. The object is unreferenced
    /// until a layer splitstream names it.
    #[context("Writing content index")]
    pub fn write(&self, repo: &std::sync::Arc<Repository<H>>) -> Result<H> {
        let mut writer = repo.create_stream(CONTENT_INDEX_CONTENT_TYPE)?;
        writer.write_inline(&self.to_bytes());
        writer.done()
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
        let Some(index_id) = reader.lookup_named_ref(CONTENT_INDEX_REF).cloned() else {
            return Ok(None);
        };
        let mut reader = repo
            .open_stream("", Some(&index_id), Some(CONTENT_INDEX_CONTENT_TYPE))
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

    fn entry<H: FsVerityHashValue>(n: u8) -> IndexEntry<H> {
        IndexEntry {
            sha256: [n; 32],
            object: compute_verity::<H>(&[n]),
            size: n as u64 * 1000,
        }
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
        // Swap the two records: unsorted.
        let rec = 32 + 32 + 8;
        let mut unsorted = good[..HEADER_LEN].to_vec();
        unsorted.extend_from_slice(&good[HEADER_LEN + rec..]);
        unsorted.extend_from_slice(&good[HEADER_LEN..HEADER_LEN + rec]);
        assert!(ContentIndex::<Sha256HashValue>::from_bytes(&unsorted).is_err());
    }

    use proptest::prelude::*;

    fn entries_strategy() -> impl Strategy<Value = Vec<IndexEntry<Sha512HashValue>>> {
        proptest::collection::vec(
            (any::<[u8; 32]>(), any::<u64>()).prop_map(|(sha256, size)| IndexEntry {
                sha256,
                object: compute_verity::<Sha512HashValue>(&sha256),
                size,
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

/// Every file the store holds as an object, by the sha256 of its content: the union of the
/// content indexes of all stored layers.
#[derive(Debug)]
pub struct StoredFiles<H> {
    by_sha256: std::collections::HashMap<[u8; 32], (H, u64)>,
}

impl<H> Default for StoredFiles<H> {
    fn default() -> Self {
        Self {
            by_sha256: std::collections::HashMap::new(),
        }
    }
}

impl<H: FsVerityHashValue> StoredFiles<H> {
    /// Reads the index of every layer splitstream in the store. Layers without an index (imported
    /// by other tools) add nothing.
    #[context("Reading the content indexes of the store")]
    pub fn load(store: &crate::Store<H>) -> Result<Self> {
        let mut by_sha256 = std::collections::HashMap::new();
        let streams = match std::fs::read_dir(store.path().join("streams")) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self { by_sha256 }),
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
                Ok(Some(index)) => {
                    for e in index.entries {
                        by_sha256.entry(e.sha256).or_insert((e.object, e.size));
                    }
                }
                Ok(None) => {}
                Err(e) => log::warn!("layer {diff_id}: its content index is not used: {e:#}"),
            }
        }
        Ok(Self { by_sha256 })
    }

    /// The object holding content with this sha256 and size, if the store has one.
    pub fn find(&self, sha256: &[u8; 32], size: u64) -> Option<&H> {
        self.by_sha256
            .get(sha256)
            .filter(|(_, s)| *s == size)
            .map(|(id, _)| id)
    }

    /// Number of files known.
    pub fn len(&self) -> usize {
        self.by_sha256.len()
    }

    /// True when nothing is known.
    pub fn is_empty(&self) -> bool {
        self.by_sha256.is_empty()
    }
}
