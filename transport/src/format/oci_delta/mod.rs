//! oci-delta artifacts: an image expressed as its differences from an image the receiver holds.
//!
//! A delta is an OCI image manifest (in an OCI layout, an oci-archive or a registry) with
//! `artifactType` [`ARTIFACT_TYPE`], the empty config (`{}`), and these layers, each marked by
//! the annotation `io.github.containers.delta.content`:
//!
//! | `delta.content` | blob |
//! |---|---|
//! | `image-manifest` | the target image's manifest, byte for byte |
//! | `image-config` | the target image's config, byte for byte |
//! | `image-layer` (with `delta.to` = a target layer digest) | a tar-diff ([`MEDIA_TYPE_TAR_DIFF`], applied to the source image's files) or the target layer blob itself (labelled `tar+gzip` whatever its real compression) |
//!
//! Unknown `delta.content` values are ignored, as are `image-layer` entries without `delta.to`.
//! Target layers the delta does not carry are the source image's own: the receiver has them
//! (found by DiffID). The manifest's annotations name the source image
//! (`delta.source` = its manifest digest, `delta.source-config` = its config digest, which is
//! how the receiver finds it), the target (`delta.target`, also the `subject`), and the reused
//! layers (`delta.reused`, `delta.reused-diff-id`: JSON arrays, informational).
//!
//! A tar-diff blob is `tardf1\n\0` or `tardf2\n\0` followed by one zstd stream of operations
//! that rebuild the layer's uncompressed tar from literal data and ranges of the source image's
//! files, named by path ([`source_files`]). The rebuilt tar must hash to the target config's
//! DiffID.

pub mod tar_diff;

use std::collections::HashMap;

use anyhow::{Context, Result, bail, ensure};
use containers_image_proxy::oci_spec::image::{Descriptor, ImageManifest};
use skiff_storage::OciDigest;

/// `artifactType` of a delta manifest.
pub const ARTIFACT_TYPE: &str = "application/vnd.io.github.containers.oci-delta.v1";
/// Media type of a tar-diff layer.
pub const MEDIA_TYPE_TAR_DIFF: &str = "application/vnd.tar-diff";
/// What a delta layer holds.
pub const ANNOTATION_CONTENT: &str = "io.github.containers.delta.content";
/// The target layer digest a delta layer produces.
pub const ANNOTATION_TO: &str = "io.github.containers.delta.to";
/// Manifest digest of the source image.
pub const ANNOTATION_SOURCE: &str = "io.github.containers.delta.source";
/// Config digest of the source image: how the receiver finds it.
pub const ANNOTATION_SOURCE_CONFIG: &str = "io.github.containers.delta.source-config";
/// Manifest digest of the target image.
pub const ANNOTATION_TARGET: &str = "io.github.containers.delta.target";
/// Target layers left out because the source has them (JSON array of layer digests).
pub const ANNOTATION_REUSED: &str = "io.github.containers.delta.reused";
/// The DiffIDs of the reused layers (JSON array, parallel to [`ANNOTATION_REUSED`]).
pub const ANNOTATION_REUSED_DIFF_ID: &str = "io.github.containers.delta.reused-diff-id";

/// True when `manifest_json` is a delta manifest (by its `artifactType`).
pub fn is_delta(manifest_json: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "artifactType")]
        artifact_type: Option<String>,
    }
    serde_json::from_slice::<Probe>(manifest_json)
        .is_ok_and(|p| p.artifact_type.as_deref() == Some(ARTIFACT_TYPE))
}

/// A delta manifest, checked for what an applier relies on.
#[derive(Debug, Clone)]
pub struct DeltaManifest {
    /// Config digest of the image the delta applies to.
    pub source_config: OciDigest,
    /// The target manifest's descriptor.
    pub target_manifest: Descriptor,
    /// The target config's descriptor.
    pub target_config: Descriptor,
    /// Delta layer blobs by the target layer digest they produce.
    pub layers_by_to: HashMap<String, Descriptor>,
    /// The target manifest digest the annotations and `subject` name, if they do.
    pub named_targets: Vec<String>,
}

impl DeltaManifest {
    /// Parses and checks a delta manifest.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let manifest: ImageManifest =
            serde_json::from_slice(bytes).context("malformed delta manifest")?;
        ensure!(
            manifest
                .artifact_type()
                .as_ref()
                .map(|t| t.to_string())
                .as_deref()
                == Some(ARTIFACT_TYPE),
            "not an oci-delta manifest (artifactType is not {ARTIFACT_TYPE})"
        );
        let annotations = manifest.annotations().clone().unwrap_or_default();
        let source_config: OciDigest = annotations
            .get(ANNOTATION_SOURCE_CONFIG)
            .with_context(|| format!("the delta has no {ANNOTATION_SOURCE_CONFIG} annotation"))?
            .parse()
            .with_context(|| format!("malformed {ANNOTATION_SOURCE_CONFIG}"))?;
        let mut target_manifest = None;
        let mut target_config = None;
        let mut layers_by_to = HashMap::new();
        for layer in manifest.layers() {
            let la = layer.annotations().clone().unwrap_or_default();
            let slot = match la.get(ANNOTATION_CONTENT).map(String::as_str) {
                Some("image-manifest") => &mut target_manifest,
                Some("image-config") => &mut target_config,
                Some("image-layer") => {
                    let Some(to) = la.get(ANNOTATION_TO).filter(|t| !t.is_empty()) else {
                        continue;
                    };
                    let _: OciDigest = to
                        .parse()
                        .with_context(|| format!("malformed {ANNOTATION_TO} {to:?}"))?;
                    layers_by_to.insert(to.clone(), layer.clone());
                    continue;
                }
                _ => continue,
            };
            ensure!(
                slot.replace(layer.clone()).is_none(),
                "the delta carries two {} blobs",
                la[ANNOTATION_CONTENT]
            );
        }
        let Some(target_manifest) = target_manifest else {
            bail!("the delta carries no target manifest (image-manifest)");
        };
        let Some(target_config) = target_config else {
            bail!("the delta carries no target config (image-config)");
        };
        let mut named_targets = Vec::new();
        if let Some(t) = annotations.get(ANNOTATION_TARGET) {
            named_targets.push(t.clone());
        }
        if let Some(subject) = manifest.subject() {
            named_targets.push(subject.digest().to_string());
        }
        Ok(Self {
            source_config,
            target_manifest,
            target_config,
            layers_by_to,
            named_targets,
        })
    }
}

/// Cleans a path as tar-diff does (Go `filepath.Clean("/" + p)` without the leading `/`):
/// `.` and empty components go, `..` climbs but never above the root. The result is relative
/// and confined to the image root; empty means the root itself.
pub fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned_into_the_root() {
        assert_eq!(clean_path("./a//b/../c/"), "a/c");
        assert_eq!(clean_path("../../etc/passwd"), "etc/passwd");
        assert_eq!(clean_path("/usr/bin/sh"), "usr/bin/sh");
        assert_eq!(clean_path("a/../../.."), "");
        assert_eq!(clean_path("."), "");
    }

    fn manifest(layers: serde_json::Value, annotations: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "artifactType": ARTIFACT_TYPE,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                       "digest": format!("sha256:{}", "4".repeat(64)), "size": 2},
            "layers": layers,
            "annotations": annotations,
        }))
        .unwrap()
    }

    fn desc(content: &str, extra: serde_json::Value) -> serde_json::Value {
        let mut annotations = serde_json::json!({ ANNOTATION_CONTENT: content });
        if let serde_json::Value::Object(m) = extra {
            annotations.as_object_mut().unwrap().extend(m);
        }
        serde_json::json!({"mediaType": "application/octet-stream",
            "digest": format!("sha256:{}", "a".repeat(64)), "size": 1, "annotations": annotations})
    }

    #[test]
    fn parses_and_refuses() {
        let d = |hex: char| format!("sha256:{}", hex.to_string().repeat(64));
        let good = manifest(
            serde_json::json!([
                desc("image-manifest", serde_json::json!({})),
                desc("image-config", serde_json::json!({})),
                desc("image-layer", serde_json::json!({ ANNOTATION_TO: d('b') })),
                desc("image-layer", serde_json::json!({})),
                desc("something-new", serde_json::json!({})),
            ]),
            serde_json::json!({ ANNOTATION_SOURCE_CONFIG: d('c'), ANNOTATION_TARGET: d('e') }),
        );
        assert!(is_delta(&good));
        let parsed = DeltaManifest::parse(&good).unwrap();
        assert_eq!(parsed.source_config.to_string(), d('c'));
        assert_eq!(parsed.layers_by_to.len(), 1);
        assert_eq!(parsed.named_targets, vec![d('e')]);

        let no_source = manifest(
            serde_json::json!([
                desc("image-manifest", serde_json::json!({})),
                desc("image-config", serde_json::json!({}))
            ]),
            serde_json::json!({}),
        );
        let e = DeltaManifest::parse(&no_source).unwrap_err().to_string();
        assert!(e.contains(ANNOTATION_SOURCE_CONFIG), "{e}");
        let no_config = manifest(
            serde_json::json!([desc("image-manifest", serde_json::json!({}))]),
            serde_json::json!({ ANNOTATION_SOURCE_CONFIG: d('c') }),
        );
        assert!(DeltaManifest::parse(&no_config).is_err());
        let bad_to = manifest(
            serde_json::json!([
                desc("image-manifest", serde_json::json!({})),
                desc("image-config", serde_json::json!({})),
                desc(
                    "image-layer",
                    serde_json::json!({ ANNOTATION_TO: "sha256:zz" })
                ),
            ]),
            serde_json::json!({ ANNOTATION_SOURCE_CONFIG: d('c') }),
        );
        assert!(DeltaManifest::parse(&bad_to).is_err());
        assert!(!is_delta(b"{\"schemaVersion\":2}"));
    }
}
