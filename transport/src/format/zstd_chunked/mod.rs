//! The zstd:chunked layer format (containers/storage ≥ 1.54), read by [`Metadata`]; how files
//! are cut into chunks is in [`skiff_storage::content_chunks`]. (skiff writes the format only for its tests: the
//! writer lives in the integration crate.)
//!
//! A zstd:chunked blob is an ordinary `tar+zstd` layer: zstd frames that decompress to the
//! layer tar, each regular file's content in whole frames of its own, followed by three
//! skippable frames (magic `50 2A 4D 18`, LE u32 length, payload):
//!
//! ```text
//! [zstd frame]*  [skippable: zstd(TOC JSON)]  [skippable: zstd(tar-split JSON lines)]
//!                [skippable: 64-byte footer]
//! ```
//!
//! - The **TOC** ([`toc`]) lists every tar entry with its metadata, the sha256 of each regular
//!   file's content and the compressed byte range of its frames (`offset..endOffset`; files
//!   over about 64 KiB are cut into `chunk` entries, runs of zeros are `zeros` chunks).
//! - The **tar-split** ([`tar_split`]) holds the raw tar bytes around the file contents (headers,
//!   padding, end-of-archive blocks) and a CRC-64/ISO per file, so that the exact tar, and so the
//!   DiffID, can be rebuilt from the files.
//! - The **footer** (last 72 bytes): eight LE u64 — TOC offset, compressed length, uncompressed
//!   length, manifest type (1), tar-split offset, compressed length, uncompressed length — and
//!   the magic `GNUlInUx`. Readers rely on the annotations instead; it is parsed for checking.
//!
//! The layer descriptor's annotations locate and authenticate the metadata ([`Annotations`]):
//! `io.github.containers.zstd-chunked.manifest-checksum` is the sha256 of the compressed TOC
//! bytes (the root of trust), `…manifest-position` is `OFFSET:LENGTH:UNCOMPRESSED:1` and
//! `…tarsplit-position` is `OFFSET:LENGTH:UNCOMPRESSED`; offsets point at the payload of the
//! skippable frame. The TOC's `tarSplitDigest` is the sha256 of the compressed tar-split.
//! Layers without a tar-split position, or with only the legacy `io.containers.*` keys
//! (skopeo ≤ 1.10, Debian's 1.9.3 included), cannot be rebuilt verifiably and are pulled whole.
//!
//! Trust chain, checked by [`Metadata::load`]: manifest-checksum → TOC bytes; TOC
//! `tarSplitDigest` → tar-split bytes; TOC and tar-split describe the same entries; then, when
//! files are used, each file's sha256 (TOC) and CRC-64 (tar-split), and the rebuilt tar's sha256
//! against the config's DiffID. Every size read from input is bounded before allocation.
//!
//! "The same entries" means the same regular files with content, in the same order, with the
//! same sizes. The TOC's other metadata (modes, owners, times, link targets, xattrs) is not
//! compared: a partial pull takes every header from the tar-split and only file contents from
//! the TOC's ranges, so those fields never reach the store, and the DiffID check covers every
//! header byte.

pub mod tar_split;
pub mod toc;

use std::collections::HashMap;
use std::io::Read;

use anyhow::{Context, Result, bail, ensure};

pub use tar_split::{TarSplit, TarSplitEntry};
pub use toc::{Toc, TocEntry};

/// Annotation: sha256 of the compressed TOC.
pub const MANIFEST_CHECKSUM: &str = "io.github.containers.zstd-chunked.manifest-checksum";
/// Annotation: `OFFSET:LENGTH:UNCOMPRESSED:TYPE` of the TOC.
pub const MANIFEST_POSITION: &str = "io.github.containers.zstd-chunked.manifest-position";
/// Annotation: `OFFSET:LENGTH:UNCOMPRESSED` of the tar-split.
pub const TARSPLIT_POSITION: &str = "io.github.containers.zstd-chunked.tarsplit-position";
/// Legacy annotation (containers/storage ≤ 1.43): recognised only to say why it is not used.
pub const LEGACY_MANIFEST_CHECKSUM: &str = "io.containers.zstd-chunked.manifest-checksum";
/// eStargz's TOC annotation: a layer with both is refused by containers/storage, and by skiff.
pub const ESTARGZ_TOC_DIGEST: &str = "containerd.io/snapshot/stargz/toc.digest";

/// Largest TOC or tar-split accepted, compressed or not (containers/storage's `maxTocSize`).
pub const MAX_METADATA_SIZE: u64 = 150 * 1024 * 1024;

/// The skippable-frame magic used for the metadata frames (0x184D2A50, little-endian).
pub const SKIPPABLE_MAGIC: [u8; 4] = [0x50, 0x2a, 0x4d, 0x18];
/// The footer's trailing magic.
pub const FOOTER_MAGIC: &[u8; 8] = b"GNUlInUx";
/// Footer frame: 8-byte skippable header and 64-byte body.
pub const FOOTER_SIZE: usize = 72;

/// Where a metadata payload lies in the blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Offset of the payload (after the skippable frame's 8-byte header).
    pub offset: u64,
    /// Compressed length.
    pub length: u64,
    /// Uncompressed length.
    pub uncompressed: u64,
}

impl Position {
    fn parse(value: &str, with_type: bool) -> Result<Self> {
        let parts: Vec<&str> = value.split(':').collect();
        let want = if with_type { 4 } else { 3 };
        ensure!(
            parts.len() == want,
            "position {value:?}: expected {want} fields separated by ':'"
        );
        let number = |s: &str| {
            s.parse::<u64>()
                .with_context(|| format!("position {value:?}: {s:?} is not a number"))
        };
        if with_type {
            ensure!(
                parts[3] == "1",
                "position {value:?}: unknown manifest type {}",
                parts[3]
            );
        }
        let p = Position {
            offset: number(parts[0])?,
            length: number(parts[1])?,
            uncompressed: number(parts[2])?,
        };
        ensure!(
            p.length <= MAX_METADATA_SIZE && p.uncompressed <= MAX_METADATA_SIZE,
            "position {value:?}: more than {MAX_METADATA_SIZE} bytes"
        );
        Ok(p)
    }

    /// The byte range in the blob, checked to lie inside a blob of `blob_size` bytes.
    pub fn range(&self, blob_size: u64) -> Result<std::ops::Range<u64>> {
        let end = self
            .offset
            .checked_add(self.length)
            .context("position overflows")?;
        ensure!(
            end <= blob_size,
            "metadata range {}..{end} lies outside the {blob_size}-byte blob",
            self.offset
        );
        ensure!(
            self.offset >= 8,
            "metadata at offset {} leaves no room for its frame header",
            self.offset
        );
        Ok(self.offset..end)
    }
}

/// What a layer's annotations say about zstd:chunked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Annotations {
    /// A modern zstd:chunked layer.
    Chunked {
        /// `sha256:...` of the compressed TOC.
        toc_digest: String,
        /// The TOC.
        toc: Position,
        /// The tar-split.
        tar_split: Position,
    },
    /// Not usable for a partial pull; the reason, for the one-line fallback message.
    Unusable(String),
    /// Not a zstd:chunked layer at all.
    None,
}

impl Annotations {
    /// Reads a layer descriptor's annotations.
    pub fn parse(annotations: Option<&HashMap<String, String>>) -> Result<Self> {
        let Some(a) = annotations else {
            return Ok(Self::None);
        };
        let Some(toc_digest) = a.get(MANIFEST_CHECKSUM) else {
            if a.contains_key(LEGACY_MANIFEST_CHECKSUM) {
                return Ok(Self::Unusable(
                    "legacy io.containers.* zstd:chunked keys (no tar-split)".into(),
                ));
            }
            if a.contains_key(ESTARGZ_TOC_DIGEST) {
                return Ok(Self::Unusable("eStargz layers are pulled whole".into()));
            }
            return Ok(Self::None);
        };
        if a.contains_key(ESTARGZ_TOC_DIGEST) {
            bail!("the layer carries both zstd:chunked and eStargz TOC annotations");
        }
        let digest_ok = toc_digest
            .strip_prefix("sha256:")
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        ensure!(
            digest_ok,
            "{MANIFEST_CHECKSUM} {toc_digest:?} is not a sha256 digest"
        );
        let toc = Position::parse(
            a.get(MANIFEST_POSITION)
                .with_context(|| format!("{MANIFEST_POSITION} is missing"))?,
            true,
        )?;
        let Some(tar_split) = a.get(TARSPLIT_POSITION) else {
            return Ok(Self::Unusable(
                "no tar-split (zstd:chunked from containers/storage < 1.47)".into(),
            ));
        };
        Ok(Self::Chunked {
            toc_digest: toc_digest.clone(),
            toc,
            tar_split: Position::parse(tar_split, false)?,
        })
    }
}

/// The footer's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    /// The TOC.
    pub toc: Position,
    /// The tar-split.
    pub tar_split: Position,
}

impl Footer {
    /// Parses the last [`FOOTER_SIZE`] bytes of a blob.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        ensure!(
            bytes.len() == FOOTER_SIZE,
            "footer must be {FOOTER_SIZE} bytes"
        );
        ensure!(
            bytes[..4] == SKIPPABLE_MAGIC,
            "footer is not a skippable frame"
        );
        ensure!(
            bytes[4..8] == 64u32.to_le_bytes(),
            "footer frame is not 64 bytes long"
        );
        let field = |i: usize| {
            u64::from_le_bytes(bytes[8 + i * 8..16 + i * 8].try_into().expect("8 bytes"))
        };
        ensure!(
            &bytes[64..72] == FOOTER_MAGIC,
            "footer magic is not GNUlInUx"
        );
        ensure!(field(3) == 1, "footer manifest type {} is not 1", field(3));
        Ok(Footer {
            toc: Position {
                offset: field(0),
                length: field(1),
                uncompressed: field(2),
            },
            tar_split: Position {
                offset: field(4),
                length: field(5),
                uncompressed: field(6),
            },
        })
    }
}

/// Decompresses one metadata payload, refusing more than `uncompressed` bytes.
pub fn decompress_metadata(compressed: &[u8], uncompressed: u64) -> Result<Vec<u8>> {
    ensure!(
        uncompressed <= MAX_METADATA_SIZE,
        "metadata claims {uncompressed} bytes"
    );
    let mut out = Vec::with_capacity(uncompressed as usize);
    zstd::stream::read::Decoder::new(compressed)?
        .take(uncompressed + 1)
        .read_to_end(&mut out)
        .context("Decompressing zstd:chunked metadata")?;
    ensure!(
        out.len() as u64 == uncompressed,
        "metadata decompresses to {} bytes, the position says {uncompressed}",
        out.len()
    );
    Ok(out)
}

/// A layer's TOC and tar-split, verified against each other and the TOC digest.
#[derive(Debug, Clone)]
pub struct Metadata {
    /// The TOC.
    pub toc: Toc,
    /// The tar-split.
    pub tar_split: TarSplit,
}

impl Metadata {
    /// Checks and parses the compressed TOC and tar-split payloads of a blob of `blob_size`
    /// bytes whose annotations are `toc_digest`, `toc_position`, `tar_split_position`.
    pub fn load(
        toc_digest: &str,
        toc_position: Position,
        toc_bytes: &[u8],
        tar_split_position: Position,
        tar_split_bytes: &[u8],
        blob_size: u64,
    ) -> Result<Self> {
        let actual = format!("sha256:{}", hex::encode(openssl::sha::sha256(toc_bytes)));
        ensure!(
            actual == toc_digest,
            "TOC checksum mismatch: the annotation says {toc_digest}, the TOC is {actual}"
        );
        let toc = Toc::parse(
            &decompress_metadata(toc_bytes, toc_position.uncompressed)?,
            blob_size,
        )?;
        let want = toc.tar_split_digest.as_deref().context(
            "the TOC has no tarSplitDigest (zstd:chunked from containers/storage < 1.54)",
        )?;
        let actual = format!(
            "sha256:{}",
            hex::encode(openssl::sha::sha256(tar_split_bytes))
        );
        ensure!(
            actual == want,
            "tar-split digest mismatch: the TOC says {want}, the tar-split is {actual}"
        );
        let tar_split = TarSplit::parse(&decompress_metadata(
            tar_split_bytes,
            tar_split_position.uncompressed,
        )?)?;
        toc::check_matches_tar_split(&toc, &tar_split)?;
        Ok(Self { toc, tar_split })
    }
}

/// CRC-64 with the ISO polynomial (Go's `hash/crc64` ISO table), as tar-split records it;
/// incremental.
#[derive(Debug, Clone, Copy)]
pub struct Crc64Iso(u64);

impl Default for Crc64Iso {
    fn default() -> Self {
        Self(!0)
    }
}

impl Crc64Iso {
    fn table() -> &'static [u64; 256] {
        const POLY: u64 = 0xD800_0000_0000_0000; // x^64 + x^4 + x^3 + x + 1, reflected
        static TABLE: std::sync::OnceLock<[u64; 256]> = std::sync::OnceLock::new();
        TABLE.get_or_init(|| {
            let mut t = [0u64; 256];
            for (i, slot) in t.iter_mut().enumerate() {
                let mut crc = i as u64;
                for _ in 0..8 {
                    crc = if crc & 1 == 1 {
                        (crc >> 1) ^ POLY
                    } else {
                        crc >> 1
                    };
                }
                *slot = crc;
            }
            t
        })
    }

    /// Adds bytes.
    pub fn update(&mut self, data: &[u8]) {
        let table = Self::table();
        for &b in data {
            self.0 = table[((self.0 ^ b as u64) & 0xff) as usize] ^ (self.0 >> 8);
        }
    }

    /// The checksum of everything added.
    pub fn finish(self) -> u64 {
        !self.0
    }
}

/// CRC-64/ISO of `data`.
pub fn crc64_iso(data: &[u8]) -> u64 {
    let mut crc = Crc64Iso::default();
    crc.update(data);
    crc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc64_iso_known_values() {
        // Go: crc64.Checksum([]byte("123456789"), crc64.MakeTable(crc64.ISO)).
        assert_eq!(crc64_iso(b"123456789"), 0xB909_56C7_75A4_1001);
        assert_eq!(crc64_iso(b""), 0);
    }

    fn annotations(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn annotations_say_what_a_layer_is() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let chunked = annotations(&[
            (MANIFEST_CHECKSUM, &digest),
            (MANIFEST_POSITION, "600640:973:2848:1"),
            (TARSPLIT_POSITION, "601621:608:15746"),
        ]);
        assert_eq!(
            Annotations::parse(Some(&chunked)).unwrap(),
            Annotations::Chunked {
                toc_digest: digest.clone(),
                toc: Position {
                    offset: 600640,
                    length: 973,
                    uncompressed: 2848
                },
                tar_split: Position {
                    offset: 601621,
                    length: 608,
                    uncompressed: 15746
                },
            }
        );
        assert_eq!(Annotations::parse(None).unwrap(), Annotations::None);
        let legacy = annotations(&[(LEGACY_MANIFEST_CHECKSUM, &digest)]);
        assert!(
            matches!(Annotations::parse(Some(&legacy)).unwrap(), Annotations::Unusable(r) if r.contains("legacy"))
        );
        let no_split = annotations(&[(MANIFEST_CHECKSUM, &digest), (MANIFEST_POSITION, "9:1:1:1")]);
        assert!(matches!(
            Annotations::parse(Some(&no_split)).unwrap(),
            Annotations::Unusable(_)
        ));
        for bad in [
            vec![(MANIFEST_CHECKSUM, "md5:x"), (MANIFEST_POSITION, "9:1:1:1")],
            vec![
                (MANIFEST_CHECKSUM, digest.as_str()),
                (MANIFEST_POSITION, "9:1:1"),
            ],
            vec![
                (MANIFEST_CHECKSUM, digest.as_str()),
                (MANIFEST_POSITION, "9:x:1:1"),
            ],
            vec![
                (MANIFEST_CHECKSUM, digest.as_str()),
                (MANIFEST_POSITION, "9:999999999999:1:1"),
            ],
            vec![
                (MANIFEST_CHECKSUM, digest.as_str()),
                (MANIFEST_POSITION, "9:1:1:1"),
                (ESTARGZ_TOC_DIGEST, "x"),
            ],
        ] {
            assert!(
                Annotations::parse(Some(&annotations(&bad))).is_err(),
                "{bad:?}"
            );
        }
        let p = Position {
            offset: 100,
            length: 50,
            uncompressed: 1,
        };
        assert_eq!(p.range(150).unwrap(), 100..150);
        assert!(p.range(149).is_err(), "a range past the blob's end");
    }

    #[test]
    fn footer_round_trip_and_errors() {
        let mut f = Vec::new();
        f.extend_from_slice(&SKIPPABLE_MAGIC);
        f.extend_from_slice(&64u32.to_le_bytes());
        for v in [600640u64, 973, 2848, 1, 601621, 608, 15746] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f.extend_from_slice(FOOTER_MAGIC);
        let footer = Footer::parse(&f).unwrap();
        assert_eq!(
            footer.toc,
            Position {
                offset: 600640,
                length: 973,
                uncompressed: 2848
            }
        );
        assert_eq!(footer.tar_split.uncompressed, 15746);
        let mut old = f.clone();
        old[64..72].copy_from_slice(b"GnUlInUx");
        assert!(Footer::parse(&old).is_err());
        assert!(Footer::parse(&f[1..]).is_err());
    }

    #[test]
    fn metadata_decompression_is_bounded() {
        let data = vec![7u8; 10_000];
        let z = zstd::encode_all(&data[..], 3).unwrap();
        assert_eq!(decompress_metadata(&z, 10_000).unwrap(), data);
        assert!(
            decompress_metadata(&z, 9_999).is_err(),
            "more bytes than declared"
        );
        assert!(
            decompress_metadata(&z, 10_001).is_err(),
            "fewer bytes than declared"
        );
        assert!(decompress_metadata(&z, MAX_METADATA_SIZE + 1).is_err());
    }
}
