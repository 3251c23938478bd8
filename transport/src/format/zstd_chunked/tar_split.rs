//! tar-split data: the JSON lines of `vbatts/tar-split`'s packer, which hold every byte of a
//! tar except the file contents.
//!
//! Each line is an object `{"type":T,"name":…,"name_raw":…,"size":…,"payload":…,"position":N}`:
//!
//! - type 2, a *segment*: `payload` is base64 of raw tar bytes (headers, PAX records, padding,
//!   end-of-archive blocks, trailing record padding);
//! - type 1, a *file*: one for every tar entry; `name` (or `name_raw`, base64, for names that
//!   are not UTF-8), `size` (absent when 0), and `payload` = base64 of the big-endian CRC-64/ISO
//!   of the content (`null` when the size is 0).
//!
//! `position` counts lines from 0. The tar is the concatenation, in order, of every segment
//! and every file's content.

use anyhow::{Context, Result, bail, ensure};
use base64::Engine;

/// One line of a tar-split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TarSplitEntry {
    /// Raw tar bytes.
    Segment(Vec<u8>),
    /// A tar entry whose content (`size` bytes) comes from elsewhere.
    File {
        /// The entry's name as the tar stores it.
        name: Vec<u8>,
        /// Content size.
        size: u64,
        /// CRC-64/ISO of the content; `None` for empty content.
        crc64: Option<u64>,
    },
}

/// A parsed tar-split.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TarSplit {
    /// The lines, in order.
    pub entries: Vec<TarSplitEntry>,
}

#[derive(serde::Deserialize)]
struct Line {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    name_raw: Option<String>,
    #[serde(default)]
    size: i64,
    #[serde(default)]
    payload: Option<String>,
    position: i64,
}

impl TarSplit {
    /// Parses decompressed tar-split bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut entries = Vec::new();
        for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let line: Line = serde_json::from_slice(line)
                .with_context(|| format!("tar-split line {}", index + 1))?;
            ensure!(
                line.position == entries.len() as i64,
                "tar-split line {}: position {} where {} was expected",
                index + 1,
                line.position,
                entries.len()
            );
            let payload = line
                .payload
                .as_deref()
                .map(|p| b64.decode(p))
                .transpose()
                .with_context(|| format!("tar-split line {}: payload is not base64", index + 1))?;
            entries.push(match line.kind {
                2 => TarSplitEntry::Segment(payload.unwrap_or_default()),
                1 => {
                    let name = match (line.name_raw, line.name) {
                        (Some(raw), _) => b64
                            .decode(raw)
                            .context("tar-split name_raw is not base64")?,
                        (None, Some(name)) => name.into_bytes(),
                        (None, None) => {
                            bail!("tar-split line {}: a file without a name", index + 1)
                        }
                    };
                    ensure!(
                        line.size >= 0,
                        "tar-split line {}: negative size",
                        index + 1
                    );
                    let crc64 = match payload {
                        Some(p) => Some(u64::from_be_bytes(p.try_into().map_err(|_| {
                            anyhow::anyhow!("tar-split line {}: CRC is not 8 bytes", index + 1)
                        })?)),
                        None if line.size == 0 => None,
                        None => bail!("tar-split line {}: a non-empty file without CRC", index + 1),
                    };
                    TarSplitEntry::File {
                        name,
                        size: line.size as u64,
                        crc64,
                    }
                }
                other => bail!("tar-split line {}: unknown type {other}", index + 1),
            });
        }
        Ok(Self { entries })
    }

    /// The size of the tar it describes.
    pub fn tar_size(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match e {
                TarSplitEntry::Segment(b) => b.len() as u64,
                TarSplitEntry::File { size, .. } => *size,
            })
            .sum()
    }

    /// The file lines: (name, size).
    pub fn files(&self) -> impl Iterator<Item = (&[u8], u64)> {
        self.entries.iter().filter_map(|e| match e {
            TarSplitEntry::File { name, size, .. } => Some((name.as_slice(), *size)),
            TarSplitEntry::Segment(_) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_segments_files_and_raw_names() {
        let text = concat!(
            r#"{"type":2,"payload":"ZXRjLwAA","position":0}"#,
            "\n",
            r#"{"type":1,"name":"etc/","payload":null,"position":1}"#,
            "\n",
            r#"{"type":1,"name_raw":"bGF0aW4x6Q==","size":12,"payload":"ROnPP1cq2aw=","position":2}"#,
            "\n",
        );
        let ts = TarSplit::parse(text.as_bytes()).unwrap();
        assert_eq!(ts.entries[0], TarSplitEntry::Segment(b"etc/\0\0".to_vec()));
        assert_eq!(
            ts.entries[1],
            TarSplitEntry::File {
                name: b"etc/".to_vec(),
                size: 0,
                crc64: None
            }
        );
        assert_eq!(
            ts.entries[2],
            TarSplitEntry::File {
                name: b"latin1\xe9".to_vec(),
                size: 12,
                crc64: Some(0x44E9_CF3F_572A_D9AC)
            }
        );
        assert_eq!(ts.tar_size(), 6 + 12);
    }

    #[test]
    fn refuses_malformed_lines() {
        for bad in [
            r#"{"type":2,"payload":"ZXRj","position":1}"#,
            r#"{"type":3,"position":0}"#,
            r#"{"type":1,"size":5,"payload":"ROnPP1cq2aw=","position":0}"#,
            r#"{"type":1,"name":"a","size":5,"payload":null,"position":0}"#,
            r#"{"type":1,"name":"a","size":5,"payload":"AAAA","position":0}"#,
            r#"{"type":1,"name":"a","size":-5,"position":0}"#,
            r#"{"type":2,"payload":"not base64!","position":0}"#,
            "not json",
        ] {
            assert!(TarSplit::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    use proptest::prelude::*;

    fn entry_strategy() -> impl Strategy<Value = TarSplitEntry> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..600).prop_map(TarSplitEntry::Segment),
            (
                proptest::collection::vec(any::<u8>(), 1..40),
                0u64..1 << 40,
                any::<u64>()
            )
                .prop_map(|(name, size, crc)| TarSplitEntry::File {
                    name,
                    size,
                    crc64: (size > 0).then_some(crc),
                }),
        ]
    }

    /// Lines as tar-split's packer writes them (`name` for UTF-8 names, else `name_raw`).
    fn pack(entries: &[TarSplitEntry]) -> Vec<u8> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut out = Vec::new();
        for (position, entry) in entries.iter().enumerate() {
            let line = match entry {
                TarSplitEntry::Segment(bytes) => serde_json::json!({
                    "type": 2, "payload": b64.encode(bytes), "position": position,
                }),
                TarSplitEntry::File { name, size, crc64 } => {
                    let mut line = serde_json::json!({
                        "type": 1,
                        "payload": crc64.map(|c| b64.encode(c.to_be_bytes())),
                        "position": position,
                    });
                    match std::str::from_utf8(name) {
                        Ok(text) => line["name"] = text.into(),
                        Err(_) => line["name_raw"] = b64.encode(name).into(),
                    }
                    if *size > 0 {
                        line["size"] = (*size).into();
                    }
                    line
                }
            };
            out.extend_from_slice(&serde_json::to_vec(&line).unwrap());
            out.push(b'\n');
        }
        out
    }

    proptest! {
        #[test]
        fn packed_lines_parse_back(entries in proptest::collection::vec(entry_strategy(), 0..30)) {
            let parsed = TarSplit::parse(&pack(&entries)).unwrap();
            prop_assert_eq!(&parsed.entries, &entries);
            let segments: u64 = entries.iter().map(|e| match e {
                TarSplitEntry::Segment(b) => b.len() as u64,
                TarSplitEntry::File { size, .. } => *size,
            }).sum();
            prop_assert_eq!(parsed.tar_size(), segments);
        }

        #[test]
        fn lines_out_of_order_are_refused(
            entries in proptest::collection::vec(entry_strategy(), 2..10),
            swap in any::<prop::sample::Index>(),
        ) {
            let packed = pack(&entries);
            let mut lines: Vec<&[u8]> = packed.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
            let i = swap.index(lines.len() - 1);
            lines.swap(i, i + 1);
            prop_assert!(TarSplit::parse(&lines.join(&b'\n')).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = TarSplit::parse(&bytes);
        }
    }
}
