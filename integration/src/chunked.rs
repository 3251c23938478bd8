//! The least a partial pull of zstd:chunked layers can fetch: the file-level and the chunk-level
//! floors.
//!
//! For each layer of the new image the file-level floor is its TOC and tar-split (which any
//! partial pull reads) plus the compressed frames of every file whose content the store does not
//! hold (chunks of zeros excepted: they are never fetched). The chunk-level floor counts, of
//! those files, only the chunks whose digest the store does not hold either. Computed from the
//! layer blobs themselves, so it holds for layers written by skiff's writer and by
//! containers/storage alike; the TOCs' JSON is read with serde_json and zstd alone, none of
//! skiff's parsing.

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::fixtures;

/// What an update costs in bytes.
#[derive(Debug, Clone, Copy)]
pub struct UpdateCost {
    /// The new image's layer blobs, what a full pull fetches.
    pub full: u64,
    /// The file-level floor.
    pub floor: u64,
}

/// The sha256 of every regular file's content in `tars` (the files a store holding those
/// layers has).
pub fn file_digests(tars: &[Vec<u8>]) -> Result<HashSet<[u8; 32]>> {
    let mut held = HashSet::new();
    for layer in tars {
        let mut archive = tar::Archive::new(&layer[..]);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let mut data = Vec::new();
            entry.read_to_end(&mut data)?;
            held.insert(openssl::sha::sha256(&data));
        }
    }
    Ok(held)
}

/// The cost of pulling `tag` of the layout `layout` into a store that holds the contents
/// `held`; every layer must be zstd:chunked. `floor` is the file-level floor.
pub fn update_cost(layout: &Path, tag: &str, held: &HashSet<[u8; 32]>) -> Result<UpdateCost> {
    let files = held
        .iter()
        .map(|d| format!("sha256:{}", hex::encode(d)))
        .collect();
    chunk_update_cost(layout, tag, &(files, HashSet::new()))
}

/// A chunk as a TOC's JSON lists it.
struct RawChunk {
    /// `chunkDigest` (a one-chunk file's own `digest`).
    digest: String,
    /// Compressed bytes of its frames.
    compressed: u64,
    /// `chunkType` `zeros`: never fetched.
    zeros: bool,
}

/// A regular file with content, as a TOC's JSON lists it.
struct RawFile {
    digest: String,
    chunks: Vec<RawChunk>,
}

/// What one zstd:chunked layer's TOC says, read straight from its JSON.
struct RawToc {
    /// Compressed TOC plus tar-split bytes.
    metadata: u64,
    files: Vec<RawFile>,
}

/// `OFFSET:LENGTH:...` of a position annotation.
fn position(annotations: &serde_json::Value, key: &str) -> Result<(u64, u64)> {
    let value = annotations[key]
        .as_str()
        .with_context(|| format!("no {key}"))?;
    let fields: Vec<u64> = value
        .split(':')
        .map(|f| f.parse().context("position field"))
        .collect::<Result<_>>()?;
    Ok((fields[0], fields[1]))
}

/// A file being read from the TOC: its digest, its chunks' (digest, frame start, zeros), and
/// its frames' end.
type OpenFile = (String, Vec<(String, u64, bool)>, u64);

fn raw_tocs(layout: &Path, tag: &str) -> Result<Vec<RawToc>> {
    let manifest = fixtures::layout_manifest(layout, tag)?;
    let mut tocs = Vec::new();
    for layer in manifest["layers"].as_array().context("layers")? {
        let annotations = &layer["annotations"];
        let toc = position(
            annotations,
            "io.github.containers.zstd-chunked.manifest-position",
        )?;
        let split = position(
            annotations,
            "io.github.containers.zstd-chunked.tarsplit-position",
        )?;
        let blob = std::fs::read(fixtures::blob_path(
            layout,
            layer["digest"].as_str().context("digest")?,
        ))?;
        let json = zstd::decode_all(&blob[toc.0 as usize..(toc.0 + toc.1) as usize])?;
        let doc: serde_json::Value = serde_json::from_slice(&json)?;
        // Each chunk's frames run to the next chunk's `offset`, the last one's to the file's
        // `endOffset`: first collect (digest, start, zeros) and the end, then take differences.
        let mut files = Vec::new();
        let mut open: Option<OpenFile> = None;
        let mut close = |open: Option<OpenFile>| {
            let Some((digest, starts, end)) = open else {
                return;
            };
            let ends = starts.iter().skip(1).map(|c| c.1).chain([end]);
            let chunks = starts
                .iter()
                .zip(ends)
                .map(|((d, start, zeros), end)| RawChunk {
                    digest: d.clone(),
                    compressed: end - start,
                    zeros: *zeros,
                })
                .collect();
            files.push(RawFile { digest, chunks });
        };
        for e in doc["entries"].as_array().context("entries")? {
            let kind = e["type"].as_str().unwrap_or("");
            let zeros = e["chunkType"].as_str() == Some("zeros");
            let offset = e["offset"].as_u64().unwrap_or(0);
            if kind == "chunk" {
                let file = open.as_mut().context("a chunk without its file")?;
                let digest = e["chunkDigest"].as_str().unwrap_or("").to_owned();
                file.1.push((digest, offset, zeros));
                continue;
            }
            close(open.take());
            if kind == "reg" && e["size"].as_u64().unwrap_or(0) > 0 {
                let digest = e["digest"].as_str().context("digest")?.to_owned();
                let chunk_digest = e["chunkDigest"].as_str().unwrap_or(&digest).to_owned();
                let end = e["endOffset"].as_u64().context("endOffset")?;
                open = Some((digest, vec![(chunk_digest, offset, zeros)], end));
            }
        }
        close(open.take());
        tocs.push(RawToc {
            metadata: toc.1 + split.1,
            files,
        });
    }
    Ok(tocs)
}

/// Digests of the files and of the data chunks (a one-chunk file's chunk digest is its own) of
/// `tag`'s zstd:chunked layers: what a store holding that image holds.
pub fn toc_digests(layout: &Path, tag: &str) -> Result<(HashSet<String>, HashSet<String>)> {
    let (mut files, mut chunks) = (HashSet::new(), HashSet::new());
    for toc in raw_tocs(layout, tag)? {
        for file in toc.files {
            files.insert(file.digest);
            chunks.extend(
                file.chunks
                    .into_iter()
                    .filter(|c| !c.zeros)
                    .map(|c| c.digest),
            );
        }
    }
    Ok((files, chunks))
}

/// The cost of pulling `tag` of `layout` (zstd:chunked layers) into a store that holds the
/// files `held_files` and the chunks `held_chunks` (from [`toc_digests`]): `floor` is the
/// chunk-level floor; `full` the layer blobs.
pub fn chunk_update_cost(
    layout: &Path,
    tag: &str,
    (held_files, held_chunks): &(HashSet<String>, HashSet<String>),
) -> Result<UpdateCost> {
    let mut cost = UpdateCost {
        full: fixtures::layer_blob_bytes(layout, tag)?,
        floor: 0,
    };
    for toc in raw_tocs(layout, tag)? {
        cost.floor += toc.metadata;
        for file in toc.files {
            if held_files.contains(&file.digest) {
                continue;
            }
            cost.floor += file
                .chunks
                .iter()
                .filter(|c| !c.zeros && !held_chunks.contains(&c.digest))
                .map(|c| c.compressed)
                .sum::<u64>();
        }
    }
    Ok(cost)
}

/// Compressed bytes of the frames of the file with digest `digest` in `tag`'s layers.
pub fn compressed_file_size(layout: &Path, tag: &str, digest: &str) -> Result<u64> {
    for toc in raw_tocs(layout, tag)? {
        if let Some(file) = toc.files.iter().find(|f| f.digest == digest) {
            return Ok(file.chunks.iter().map(|c| c.compressed).sum());
        }
    }
    bail!("no file {digest} in {tag}")
}
