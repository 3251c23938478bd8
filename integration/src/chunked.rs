//! The least a partial pull of zstd:chunked layers can fetch: the file-level floor.
//!
//! For each layer of the new image the floor is its TOC and tar-split (which any partial pull
//! reads) plus the compressed frames of every file whose content the store does not hold
//! (chunks of zeros excepted: they are never fetched). Computed from the layer blobs themselves,
//! so it holds for layers written by skiff's writer and by containers/storage alike.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};
use skiff_transport::format::zstd_chunked::{Annotations, Toc, decompress_metadata};

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
/// `held`; every layer must be zstd:chunked.
pub fn update_cost(layout: &Path, tag: &str, held: &HashSet<[u8; 32]>) -> Result<UpdateCost> {
    let manifest = fixtures::layout_manifest(layout, tag)?;
    let mut cost = UpdateCost { full: 0, floor: 0 };
    for layer in manifest["layers"].as_array().context("layers")? {
        let size = layer["size"].as_u64().context("size")?;
        cost.full += size;
        let annotations: HashMap<String, String> =
            serde_json::from_value(layer["annotations"].clone()).context("annotations")?;
        let Annotations::Chunked { toc, tar_split, .. } = Annotations::parse(Some(&annotations))?
        else {
            bail!("layer {} of {tag} is not zstd:chunked", layer["digest"]);
        };
        let blob = std::fs::read(fixtures::blob_path(
            layout,
            layer["digest"].as_str().context("digest")?,
        ))?;
        let toc_bytes = blob
            .get(toc.offset as usize..(toc.offset + toc.length) as usize)
            .context("TOC outside the blob")?;
        let parsed = Toc::parse(&decompress_metadata(toc_bytes, toc.uncompressed)?, size)?;
        cost.floor += toc.length + tar_split.length;
        for file in parsed.files.iter().filter(|f| !held.contains(&f.sha256)) {
            cost.floor += file
                .chunks
                .iter()
                .filter(|c| !c.zeros)
                .map(|c| c.compressed.end - c.compressed.start)
                .sum::<u64>();
        }
    }
    Ok(cost)
}
