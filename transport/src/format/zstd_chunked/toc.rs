//! The zstd:chunked table of contents: the JSON document `{"version":1,"entries":[…],
//! "tarSplitDigest":"sha256:…"}`.
//!
//! Entry fields (all but `type` and `name` may be absent): `type` (`reg`, `hardlink`, `char`,
//! `block`, `dir`, `fifo`, `symlink`, or `chunk` for a continuation), `name` (the tar name),
//! `linkName`, `mode`, `size`, `uid`, `gid`, `modtime`, `accesstime`, `changetime`,
//! `devMajor`, `devMinor`, `xattrs` (name → base64 value), `digest` (`sha256:` of the file's
//! content), `offset` and `endOffset` (the compressed range of the file's frames),
//! `chunkSize`, `chunkOffset`, `chunkDigest`, `chunkType` (`""` or `"zeros"`).
//!
//! A file of one chunk has no `chunk*` fields. A file of n chunks has its first chunk's fields
//! on its `reg` entry, followed by n−1 `chunk` entries of the same name; chunk i's compressed
//! range runs to chunk i+1's `offset`, the last one's to the file's `endOffset`.
//!
//! [`Toc::parse`] checks: version 1; no trailing data; known types; names inside the image root
//! and not repeated; every `chunk` after its file; chunks that tile the file; every range inside
//! the blob; digests that are sha256.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use anyhow::{Context, Result, bail, ensure};
use skiff_storage::tree_path::{normalize_entry_path, shown_path};

use super::tar_split::TarSplit;

/// One entry as the TOC's JSON has it.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TocEntry {
    /// Entry type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Tar name.
    pub name: String,
    /// Link target.
    #[serde(default)]
    pub link_name: String,
    /// Permission bits.
    #[serde(default)]
    pub mode: i64,
    /// Content size (regular files).
    #[serde(default)]
    pub size: i64,
    /// Owner.
    #[serde(default)]
    pub uid: i64,
    /// Group.
    #[serde(default)]
    pub gid: i64,
    /// Modification time (RFC 3339).
    #[serde(default)]
    pub modtime: Option<String>,
    /// Device major number.
    #[serde(default)]
    pub dev_major: i64,
    /// Device minor number.
    #[serde(default)]
    pub dev_minor: i64,
    /// Extended attributes, values base64.
    #[serde(default)]
    pub xattrs: BTreeMap<String, String>,
    /// `sha256:` of the content.
    #[serde(default)]
    pub digest: Option<String>,
    /// Compressed offset of the (first chunk's) frames.
    #[serde(default)]
    pub offset: i64,
    /// Compressed end of the file's frames.
    #[serde(default)]
    pub end_offset: i64,
    /// Uncompressed size of this chunk.
    #[serde(default)]
    pub chunk_size: i64,
    /// Offset of this chunk in the file.
    #[serde(default)]
    pub chunk_offset: i64,
    /// `sha256:` of this chunk.
    #[serde(default)]
    pub chunk_digest: Option<String>,
    /// `""` or `"zeros"`.
    #[serde(default)]
    pub chunk_type: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct TocJson {
    version: i64,
    entries: Vec<TocEntry>,
    #[serde(default)]
    tar_split_digest: Option<String>,
}

/// A chunk of a regular file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Offset in the file.
    pub offset: u64,
    /// Length in the file.
    pub size: u64,
    /// Its frames in the blob.
    pub compressed: Range<u64>,
    /// A run of zero bytes: never fetched.
    pub zeros: bool,
    /// sha256 of the chunk's bytes (`chunkDigest`, or the file's digest for a file of one
    /// chunk), when the TOC gives it.
    pub sha256: Option<[u8; 32]>,
}

/// A regular file with content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TocFile {
    /// The cleaned name (components joined by `/`, no leading `/`).
    pub name: Vec<u8>,
    /// Content size.
    pub size: u64,
    /// sha256 of the content.
    pub sha256: [u8; 32],
    /// The chunks, in order, tiling `0..size`.
    pub chunks: Vec<Chunk>,
}

/// A parsed, checked TOC.
#[derive(Debug, Clone)]
pub struct Toc {
    /// The entries as written (chunk continuations included).
    pub entries: Vec<TocEntry>,
    /// Regular files with content, in TOC order.
    pub files: Vec<TocFile>,
    /// `tarSplitDigest`.
    pub tar_split_digest: Option<String>,
}

fn sha256_field(value: &str, what: &str) -> Result<[u8; 32]> {
    let hex = value
        .strip_prefix("sha256:")
        .with_context(|| format!("{what} {value:?} is not a sha256 digest"))?;
    let bytes = hex::decode(hex)
        .ok()
        .filter(|b| b.len() == 32)
        .with_context(|| format!("{what} {value:?} is not a sha256 digest"))?;
    Ok(bytes.try_into().expect("32 bytes"))
}

fn clean(name: &[u8]) -> Result<Vec<u8>> {
    let parts = normalize_entry_path(name)
        .map_err(|e| anyhow::anyhow!("TOC entry {:?}: {e}", shown_path(name)))?;
    Ok(parts.join(&b'/'))
}

impl Toc {
    /// Parses and checks decompressed TOC bytes of a blob of `blob_size` bytes.
    pub fn parse(bytes: &[u8], blob_size: u64) -> Result<Self> {
        let json: TocJson =
            serde_json::from_slice(bytes).context("Parsing the zstd:chunked TOC")?;
        ensure!(json.version == 1, "TOC version {} is not 1", json.version);
        let mut files: Vec<TocFile> = Vec::new();
        let mut seen = HashMap::new();
        // The file whose chunks follow, with its end offset.
        let mut open: Option<(usize, u64)> = None;
        for (i, e) in json.entries.iter().enumerate() {
            let name = clean(e.name.as_bytes())?;
            let at = |what: &str| {
                format!(
                    "TOC entry {i} ({:?}): {what}",
                    shown_path(e.name.as_bytes())
                )
            };
            ensure!(
                e.size >= 0
                    && e.offset >= 0
                    && e.end_offset >= 0
                    && e.chunk_size >= 0
                    && e.chunk_offset >= 0,
                at("negative number")
            );
            if e.kind == "chunk" {
                let (index, end) =
                    open.with_context(|| at("a chunk without its file before it"))?;
                let file = &mut files[index];
                ensure!(
                    file.name == name,
                    at("a chunk of another file than the one before it")
                );
                push_chunk(file, e, end, blob_size)
                    .map_err(|m| anyhow::anyhow!(at(&m.to_string())))?;
                continue;
            }
            if let Some((index, _)) = open.take() {
                finish_file(&files[index]).map_err(|m| anyhow::anyhow!(at(&m.to_string())))?;
            }
            ensure!(
                seen.insert(name.clone(), i).is_none(),
                at("the name appears twice")
            );
            match e.kind.as_str() {
                "reg" => {
                    if let Some(file) = regular_file(e, name, blob_size, &at)? {
                        let end = e.end_offset as u64;
                        files.push(file);
                        open = Some((files.len() - 1, end));
                    }
                }
                "hardlink" | "symlink" => {
                    ensure!(!e.link_name.is_empty(), at("a link without a target"))
                }
                "dir" | "char" | "block" | "fifo" => {}
                other => bail!(at(&format!("unknown type {other:?}"))),
            }
        }
        if let Some((index, _)) = open {
            finish_file(&files[index])?;
        }
        Ok(Self {
            entries: json.entries,
            files,
            tar_split_digest: json.tar_split_digest,
        })
    }

    /// The entries that are not chunk continuations: (cleaned name, type, size).
    pub fn tar_entries(&self) -> impl Iterator<Item = (&TocEntry, Result<Vec<u8>>)> {
        self.entries
            .iter()
            .filter(|e| e.kind != "chunk")
            .map(|e| (e, clean(e.name.as_bytes())))
    }
}

/// Adds the chunk that `e` describes (its `reg` entry or a `chunk` entry) to `file`.
fn push_chunk(file: &mut TocFile, e: &TocEntry, file_end: u64, blob_size: u64) -> Result<()> {
    let offset = e.chunk_offset as u64;
    let expected = file.chunks.last().map_or(0, |c| c.offset + c.size);
    ensure!(
        offset == expected,
        "chunk at file offset {offset} where {expected} was expected"
    );
    let start = e.offset as u64;
    if let Some(prev) = file.chunks.last_mut() {
        ensure!(
            start > prev.compressed.start && start <= file_end,
            "chunk frames out of order"
        );
        prev.compressed.end = start;
    }
    // A file of one chunk carries no chunk fields: the chunk is the whole file.
    let size = if e.chunk_size == 0 && e.kind == "reg" {
        file.size
    } else {
        e.chunk_size as u64
    };
    ensure!(
        size > 0 && offset + size <= file.size,
        "chunk {offset}+{size} outside the {}-byte file",
        file.size
    );
    ensure!(file_end <= blob_size, "chunk frames outside the blob");
    let sha256 = match &e.chunk_digest {
        Some(d) => Some(sha256_field(d, "chunkDigest")?),
        // The whole file: its digest is the chunk's.
        None if size == file.size => Some(file.sha256),
        None => None,
    };
    let zeros = match e.chunk_type.as_deref() {
        None | Some("") => false,
        Some("zeros") => true,
        Some(other) => bail!("unknown chunkType {other:?}"),
    };
    file.chunks.push(Chunk {
        offset,
        size,
        compressed: start..file_end,
        zeros,
        sha256,
    });
    Ok(())
}

fn finish_file(file: &TocFile) -> Result<()> {
    let covered = file.chunks.last().map_or(0, |c| c.offset + c.size);
    ensure!(
        covered == file.size,
        "chunks cover {covered} of the file's {} bytes",
        file.size
    );
    Ok(())
}

/// Checks that the TOC and the tar-split list the same entries, in the same order, with the
/// same sizes for regular files.
pub fn check_matches_tar_split(toc: &Toc, tar_split: &TarSplit) -> Result<()> {
    let mut split_files = tar_split.files();
    for (entry, name) in toc.tar_entries() {
        let name = name?;
        let (split_name, split_size) = split_files.next().with_context(|| {
            format!(
                "TOC entry {:?} is missing from the tar-split",
                shown_path(entry.name.as_bytes())
            )
        })?;
        let split_name = clean(split_name)?;
        ensure!(
            split_name == name,
            "TOC and tar-split disagree: {:?} in the TOC, {:?} in the tar-split",
            shown_path(entry.name.as_bytes()),
            shown_path(&split_name)
        );
        let toc_size = if entry.kind == "reg" {
            entry.size as u64
        } else {
            0
        };
        ensure!(
            split_size == toc_size,
            "TOC and tar-split disagree on the size of {:?}: {toc_size} and {split_size}",
            shown_path(entry.name.as_bytes())
        );
    }
    if let Some((extra, _)) = split_files.next() {
        bail!(
            "tar-split entry {:?} is missing from the TOC",
            shown_path(extra)
        );
    }
    Ok(())
}

/// A `reg` entry of the TOC: the file with its first chunk, or `None` when it is empty (it
/// has no content to fetch). `at` names the entry in messages.
fn regular_file(
    e: &TocEntry,
    name: Vec<u8>,
    blob_size: u64,
    at: &dyn Fn(&str) -> String,
) -> Result<Option<TocFile>> {
    let digest = match e.digest.as_deref() {
        Some(d) => sha256_field(d, "digest")?,
        None if e.size == 0 => openssl::sha::sha256(b""),
        None => bail!(at("a non-empty file without a digest")),
    };
    if e.size == 0 {
        return Ok(None);
    }
    let (start, end) = (e.offset as u64, e.end_offset as u64);
    ensure!(
        start < end && end <= blob_size,
        at(&format!(
            "range {start}..{end} outside the {blob_size}-byte blob"
        ))
    );
    let mut file = TocFile {
        name,
        size: e.size as u64,
        sha256: digest,
        chunks: Vec::new(),
    };
    push_chunk(&mut file, e, end, blob_size).map_err(|m| anyhow::anyhow!(at(&m.to_string())))?;
    Ok(Some(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447";

    fn toc(entries: &str) -> Result<Toc> {
        Toc::parse(
            format!(r#"{{"version":1,"entries":[{entries}],"tarSplitDigest":"{D}"}}"#).as_bytes(),
            1_000_000,
        )
    }

    #[test]
    fn files_and_chunks() {
        let t = toc(&format!(
            r#"{{"type":"dir","name":"etc/","mode":493}},
               {{"type":"reg","name":"etc/hello.txt","size":12,"digest":"{D}","offset":103,"endOffset":128}},
               {{"type":"reg","name":"./usr/big","size":300,"digest":"{D}","offset":253,"endOffset":900,"chunkSize":100,"chunkDigest":"{D}"}},
               {{"type":"chunk","name":"usr/big","chunkOffset":100,"offset":500,"chunkSize":150,"chunkType":"zeros"}},
               {{"type":"chunk","name":"usr/big","chunkOffset":250,"offset":520,"chunkSize":50}},
               {{"type":"reg","name":"empty"}},
               {{"type":"symlink","name":"l","linkName":"etc/hello.txt"}}"#
        ))
        .unwrap();
        assert_eq!(t.files.len(), 2);
        assert_eq!(
            t.files[0].chunks,
            vec![Chunk {
                offset: 0,
                size: 12,
                compressed: 103..128,
                zeros: false,
                sha256: Some(sha256_field(D, "").unwrap()),
            }]
        );
        let big = &t.files[1];
        assert_eq!(big.name, b"usr/big");
        assert_eq!(
            big.chunks,
            vec![
                Chunk {
                    offset: 0,
                    size: 100,
                    compressed: 253..500,
                    zeros: false,
                    sha256: Some(sha256_field(D, "").unwrap()),
                },
                Chunk {
                    offset: 100,
                    size: 150,
                    compressed: 500..520,
                    zeros: true,
                    sha256: None,
                },
                Chunk {
                    offset: 250,
                    size: 50,
                    compressed: 520..900,
                    zeros: false,
                    sha256: None,
                },
            ]
        );
    }

    #[test]
    fn bad_tocs_are_refused() {
        let reg = |name: &str, extra: &str| {
            format!(
                r#"{{"type":"reg","name":"{name}","size":12,"digest":"{D}","offset":10,"endOffset":20{extra}}}"#
            )
        };
        let cases = [
            (reg("a", "") + "," + &reg("./a", ""), "appears twice"),
            (reg("../x", ""), "leaves the image root"),
            (format!(r#"{{"type":"reg","name":"a","size":12,"digest":"{D}","offset":10,"endOffset":2000000}}"#), "outside"),
            (r#"{"type":"reg","name":"a","size":12,"offset":1,"endOffset":2}"#.to_owned(), "without a digest"),
            (r#"{"type":"chunk","name":"a","offset":1}"#.to_owned(), "without its file"),
            (r#"{"type":"weird","name":"a"}"#.to_owned(), "unknown type"),
            (reg("a", r#","chunkSize":5"#), "cover 5"),
            (r#"{"type":"reg","name":"a","size":12,"digest":"md5:00","offset":10,"endOffset":20}"#.to_owned(), "not a sha256"),
        ];
        for (entries, want) in cases {
            let err = format!("{:#}", toc(&entries).unwrap_err());
            assert!(err.contains(want), "{entries}: {err}");
        }
        assert!(Toc::parse(br#"{"version":2,"entries":[]}"#, 10).is_err());
        assert!(
            Toc::parse(br#"{"version":1,"entries":[]} trailing"#, 10).is_err(),
            "trailing data"
        );
    }

    #[test]
    fn toc_and_tar_split_must_agree() {
        let t = toc(&format!(r#"{{"type":"dir","name":"etc/"}},{{"type":"reg","name":"etc/a","size":12,"digest":"{D}","offset":1,"endOffset":5}}"#)).unwrap();
        let split = |lines: &str| TarSplit::parse(lines.as_bytes()).unwrap();
        let good = split(concat!(
            r#"{"type":1,"name":"etc/","position":0}"#,
            "\n",
            r#"{"type":1,"name":"./etc/a","size":12,"payload":"ROnPP1cq2aw=","position":1}"#,
            "\n"
        ));
        check_matches_tar_split(&t, &good).unwrap();
        let renamed = split(concat!(
            r#"{"type":1,"name":"etc/","position":0}"#,
            "\n",
            r#"{"type":1,"name":"etc/b","size":12,"payload":"ROnPP1cq2aw=","position":1}"#,
            "\n"
        ));
        assert!(
            check_matches_tar_split(&t, &renamed)
                .unwrap_err()
                .to_string()
                .contains("disagree")
        );
        let resized = split(concat!(
            r#"{"type":1,"name":"etc/","position":0}"#,
            "\n",
            r#"{"type":1,"name":"etc/a","size":13,"payload":"ROnPP1cq2aw=","position":1}"#,
            "\n"
        ));
        assert!(check_matches_tar_split(&t, &resized).is_err());
        let short = split(concat!(r#"{"type":1,"name":"etc/","position":0}"#, "\n"));
        assert!(check_matches_tar_split(&t, &short).is_err());
    }
}
