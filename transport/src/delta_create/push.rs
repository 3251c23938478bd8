//! A delta pushed to a registry: its blobs (streamed, skipped where the repository has them),
//! its manifest by digest and by the reference's tag, and an entry for it in the target's
//! referrers tag (`sha256-HEX`, an image index) unless the registry indexes the `subject`
//! itself (`OCI-Subject` on the manifest PUT), so that copies of the target find it.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use fn_error_context::context;

use super::manifest::{Delta, INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE};
use super::new_image::NewLayers;
use crate::format::oci_delta::{ANNOTATION_TARGET, ARTIFACT_TYPE};
use crate::options::SourceOptions;
use crate::reference::DockerRef;
use crate::source::registry::{Client, referrers_tag};

/// Pushes `delta` to `name`.
#[context("Pushing the delta to {name}")]
pub(super) async fn push(
    name: &DockerRef,
    options: &SourceOptions,
    delta: &Delta,
    new: &Arc<dyn NewLayers>,
) -> Result<()> {
    let client = Client::new_for_push(name, options)?;
    let (_, content) = delta.blobs.split_last().context("no delta manifest")?;
    for blob in content {
        client
            .push_blob(&blob.digest, blob.size, blob.open(new.as_ref())?)
            .await?;
    }
    let indexed = client
        .push_manifest(&delta.digest, delta.manifest.clone(), MANIFEST_MEDIA_TYPE)
        .await?
        .indexes_subject;
    if let Some(tag) = name.tag() {
        client
            .push_manifest(tag, delta.manifest.clone(), MANIFEST_MEDIA_TYPE)
            .await?;
    }
    if !indexed {
        list_as_referrer(&client, delta).await?;
    }
    Ok(())
}

/// Adds `delta` to its target's referrers tag (replacing an entry of the same digest).
async fn list_as_referrer(client: &Client, delta: &Delta) -> Result<()> {
    let subject = delta
        .annotations
        .get(ANNOTATION_TARGET)
        .context("the delta names no target")?;
    let tag = referrers_tag(subject);
    let mut entries: Vec<serde_json::Value> = match client.manifest(&tag).await? {
        Some((bytes, _)) => {
            let index: serde_json::Value =
                serde_json::from_slice(&bytes).context("the referrers tag is not an index")?;
            index["manifests"].as_array().cloned().unwrap_or_default()
        }
        None => Vec::new(),
    };
    entries.retain(|e| e["digest"] != delta.digest.as_str());
    let annotations: &BTreeMap<String, String> = &delta.annotations;
    entries.push(serde_json::json!({
        "mediaType": MANIFEST_MEDIA_TYPE,
        "digest": delta.digest,
        "size": delta.manifest.len(),
        "artifactType": ARTIFACT_TYPE,
        "annotations": annotations,
    }));
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": entries,
    }))?;
    client.push_manifest(&tag, index, INDEX_MEDIA_TYPE).await?;
    Ok(())
}
