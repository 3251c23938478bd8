//! Finding a delta for an ordinary copy: `skiff copy docker://REG/app:v2 composefs:…` asks the
//! registry for the artifacts whose subject is v2's manifest (the referrers API, else the
//! referrers tag `sha256-HEX`), keeps the oci-deltas whose source image the store holds (by
//! config digest), and takes the cheapest one if it costs fewer bytes than the layers it
//! replaces. Discovery is best effort: a registry that cannot answer means a normal copy.

use std::collections::HashMap;

use anyhow::Result;
use skiff_storage::images::find_by_config;
use skiff_storage::{FsVerityHashValue, OciDigest, Store};

use crate::format::oci_delta::{ANNOTATION_SOURCE_CONFIG, ARTIFACT_TYPE, DeltaManifest};
use crate::source::Source;

/// A delta worth using.
#[derive(Debug, Clone)]
pub(crate) struct FoundDelta {
    /// Its manifest digest.
    pub digest: String,
    /// Its manifest bytes (verified against the digest).
    pub manifest_json: Vec<u8>,
    /// Bytes of its blobs the copy will fetch.
    pub size: u64,
    /// Compressed bytes of the image's layers it replaces.
    pub replaces: u64,
}

/// The cheapest usable delta of the manifest `digest`, if one beats fetching the `missing`
/// blobs (digest → compressed size) a copy without it would fetch.
pub(crate) async fn find_delta<H: FsVerityHashValue>(
    source: &Source,
    store: &Store<H>,
    digest: &OciDigest,
    missing: &HashMap<&str, u64>,
) -> Option<FoundDelta> {
    if missing.is_empty() {
        return None;
    }
    match search(source, store, digest, missing).await {
        Ok(found) => found,
        Err(e) => {
            log::warn!("looking for deltas of {digest}: {e:#}");
            None
        }
    }
}

async fn search<H: FsVerityHashValue>(
    source: &Source,
    store: &Store<H>,
    digest: &OciDigest,
    missing: &HashMap<&str, u64>,
) -> Result<Option<FoundDelta>> {
    let replaces: u64 = missing.values().sum();
    let mut best: Option<FoundDelta> = None;
    for referrer in source.referrers(digest, ARTIFACT_TYPE).await? {
        let Some(delta_digest) = referrer["digest"]
            .as_str()
            .and_then(|d| d.parse::<OciDigest>().ok())
            .filter(|d| skiff_storage::digest::require_sha256(d).is_ok())
        else {
            continue;
        };
        // The listing may say which image the delta applies to; skip the others unread.
        if let Some(config) = referrer["annotations"][ANNOTATION_SOURCE_CONFIG].as_str() {
            let Ok(config) = config.parse::<OciDigest>() else {
                continue;
            };
            if !holds_config(store, config).await? {
                continue;
            }
        }
        let Some(manifest_json) = source.manifest_by_digest(&delta_digest).await? else {
            continue;
        };
        let Ok(delta) = DeltaManifest::parse(&manifest_json) else {
            log::debug!("{delta_digest}: not a usable delta manifest");
            continue;
        };
        if !holds_config(store, delta.source_config.clone()).await? {
            continue;
        }
        // Every missing layer must come from the delta.
        let size: Option<u64> = missing
            .keys()
            .map(|layer| delta.layers_by_to.get(*layer).map(|d| d.size()))
            .sum();
        let Some(size) = size else {
            continue;
        };
        if size < replaces && best.as_ref().is_none_or(|b| size < b.size) {
            best = Some(FoundDelta {
                digest: delta_digest.to_string(),
                manifest_json,
                size,
                replaces,
            });
        }
    }
    Ok(best)
}

/// Whether the store holds an image with this config. The lookup lists every tag and opens
/// every image: on a blocking thread.
async fn holds_config<H: FsVerityHashValue>(store: &Store<H>, config: OciDigest) -> Result<bool> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || Ok(find_by_config(&store, &config)?.is_some())).await?
}
