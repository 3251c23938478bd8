//! The delta manifest (format: [`crate::format::oci_delta`]), serialised as Go oci-delta
//! serialises it, so that both tools make the same bytes and digest from the same layers:
//! compact, keys in Go's struct order (`schemaVersion`, `artifactType`, `config`, `layers`,
//! `subject`, `annotations`; in descriptors `mediaType`, `digest`, `size`, `annotations`), maps
//! sorted, `<`, `>` and `&` escaped, no trailing newline.

use std::collections::BTreeMap;

use anyhow::Result;
use containers_image_proxy::oci_spec::image::Descriptor;
use serde::Serialize;
use skiff_storage::digest::digest_of;

use super::layers::{LayerChoice, LayerSplit};
use super::{Blob, BlobData, CreateSummary};
use crate::format::oci_delta::*;
use crate::source::ResolvedImage;

/// The empty config every delta names.
const EMPTY_CONFIG: &[u8] = b"{}";
const EMPTY_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// What a layer blob carried whole is labelled, whatever its compression (as Go oci-delta does).
const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub(super) use crate::format::media::{INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE};

#[derive(Serialize)]
pub(super) struct GoDescriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Serialize)]
struct GoManifest {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "artifactType")]
    artifact_type: String,
    config: GoDescriptor,
    layers: Vec<GoDescriptor>,
    subject: GoDescriptor,
    annotations: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct GoIndex {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: String,
    manifests: Vec<GoDescriptor>,
}

/// JSON as Go's `encoding/json` writes it: compact, with `<`, `>` and `&` escaped.
fn go_json(value: &impl Serialize) -> Result<Vec<u8>> {
    let text = serde_json::to_string(value)?;
    Ok(text
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .into_bytes())
}

/// An image index of `entries`, as Go writes it (the `index.json` of a delta's layout).
pub(super) fn index_json(entries: Vec<GoDescriptor>) -> Result<Vec<u8>> {
    go_json(&GoIndex {
        schema_version: 2,
        media_type: INDEX_MEDIA_TYPE.to_owned(),
        manifests: entries,
    })
}

/// What the delta's source image is named by.
pub(super) struct SourceDigests {
    pub manifest: String,
    pub config: String,
}

/// A delta, ready to be written: its blobs in archive order (target manifest and config, the
/// layers, the empty config, the delta manifest last) and its manifest.
pub(super) struct Delta {
    pub blobs: Vec<Blob>,
    pub manifest: Vec<u8>,
    pub digest: String,
    /// The delta's annotations (what a referrers index lists for it).
    pub annotations: BTreeMap<String, String>,
}

fn bytes_blob(bytes: &[u8]) -> Blob {
    Blob {
        digest: digest_of(bytes).to_string(),
        size: bytes.len() as u64,
        data: BlobData::Bytes(bytes.to_vec()),
    }
}

fn content(what: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(ANNOTATION_CONTENT.to_owned(), what.to_owned())])
}

/// The delta that rebuilds `target` from the image `source` names: `split` says which layers
/// it leaves out, `choices` how each carried layer goes in. Counts what it holds into
/// `summary`.
pub(super) fn assemble(
    target: &ResolvedImage,
    source: SourceDigests,
    split: &LayerSplit,
    choices: Vec<LayerChoice>,
    summary: &mut CreateSummary,
) -> Result<Delta> {
    let manifest_blob = bytes_blob(&target.manifest_json);
    let config_blob = bytes_blob(&target.config_json);
    let target_media_type = target
        .manifest
        .media_type()
        .as_ref()
        .map_or(MANIFEST_MEDIA_TYPE.to_owned(), |m| m.to_string());
    let (target_digest, target_size) = (manifest_blob.digest.clone(), manifest_blob.size);
    let subject = || GoDescriptor {
        media_type: target_media_type.clone(),
        digest: target_digest.clone(),
        size: target_size,
        annotations: None,
    };
    let mut layers = vec![
        GoDescriptor {
            annotations: Some(content("image-manifest")),
            ..subject()
        },
        GoDescriptor {
            media_type: CONFIG_MEDIA_TYPE.to_owned(),
            digest: config_blob.digest.clone(),
            size: config_blob.size,
            annotations: Some(content("image-config")),
        },
    ];
    let mut blobs = vec![manifest_blob, config_blob];
    summary.layers_reused = split.reused.len();
    for ((layer, _), choice) in split.carried.iter().zip(choices) {
        let (descriptor, blob) = carried_layer(layer, choice, summary);
        summary.replaced_bytes += layer.size();
        summary.delta_bytes += blob.size;
        layers.push(descriptor);
        blobs.push(blob);
    }
    let empty = bytes_blob(EMPTY_CONFIG);
    let config = GoDescriptor {
        media_type: EMPTY_CONFIG_MEDIA_TYPE.to_owned(),
        digest: empty.digest.clone(),
        size: empty.size,
        annotations: None,
    };
    blobs.push(empty);
    let annotations = delta_annotations(source, &blobs[0].digest, split)?;
    let manifest = go_json(&GoManifest {
        schema_version: 2,
        artifact_type: ARTIFACT_TYPE.to_owned(),
        config,
        layers,
        subject: subject(),
        annotations: annotations.clone(),
    })?;
    let manifest_blob = bytes_blob(&manifest);
    let digest = manifest_blob.digest.clone();
    blobs.push(manifest_blob);
    Ok(Delta {
        blobs,
        manifest,
        digest,
        annotations,
    })
}

/// The descriptor and blob of a layer the delta carries.
fn carried_layer(
    layer: &Descriptor,
    choice: LayerChoice,
    summary: &mut CreateSummary,
) -> (GoDescriptor, Blob) {
    let mut annotations = content("image-layer");
    annotations.insert(ANNOTATION_TO.to_owned(), layer.digest().to_string());
    let (media_type, blob) = match choice {
        LayerChoice::TarDiff(blob) => {
            summary.layers_tar_diff += 1;
            (MEDIA_TYPE_TAR_DIFF, blob)
        }
        LayerChoice::Original => {
            summary.layers_original += 1;
            let blob = Blob {
                digest: layer.digest().to_string(),
                size: layer.size(),
                data: BlobData::Layout(Box::new(layer.clone())),
            };
            (LAYER_GZIP, blob)
        }
        LayerChoice::Recompressed(blob) => {
            summary.layers_original += 1;
            (LAYER_GZIP, blob)
        }
    };
    let descriptor = GoDescriptor {
        media_type: media_type.to_owned(),
        digest: blob.digest.clone(),
        size: blob.size,
        annotations: Some(annotations),
    };
    (descriptor, blob)
}

/// The delta manifest's annotations: source, source config, target, and the reused layers.
fn delta_annotations(
    source: SourceDigests,
    target: &str,
    split: &LayerSplit,
) -> Result<BTreeMap<String, String>> {
    let mut annotations = BTreeMap::from([
        (ANNOTATION_SOURCE.to_owned(), source.manifest),
        (ANNOTATION_SOURCE_CONFIG.to_owned(), source.config),
        (ANNOTATION_TARGET.to_owned(), target.to_owned()),
    ]);
    if !split.reused.is_empty() {
        annotations.insert(
            ANNOTATION_REUSED.to_owned(),
            serde_json::to_string(&split.reused)?,
        );
        annotations.insert(
            ANNOTATION_REUSED_DIFF_ID.to_owned(),
            serde_json::to_string(&split.reused_diff_ids)?,
        );
    }
    Ok(annotations)
}
