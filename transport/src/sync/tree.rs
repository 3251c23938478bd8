//! What a manifest points at, read from its exact bytes: an index (OCI image index, Docker
//! manifest list) names child manifests; an image manifest (OCI, Docker schema 2) names a
//! config and layers, blobs of any media type. Docker schema 1 is refused: its signature
//! names the repository, so it cannot be mirrored unchanged.
//!
//! The bytes are never re-serialised: a mirror pushes what it read. Only the descriptors are
//! parsed, and each digest is checked to be a well-formed `ALGORITHM:HEX` before it becomes
//! part of a request path.

use anyhow::{Context, Result, bail};

use crate::format::media::{INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE};
use crate::platform::WantedPlatform;

/// A Docker manifest list.
pub(crate) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// A Docker schema 2 manifest.
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// A manifest or index as a source holds it.
#[derive(Debug, Clone)]
pub(crate) struct Manifest {
    /// Its exact bytes.
    pub(crate) bytes: Vec<u8>,
    /// Its media type (the `Content-Type` it was served with, else its `mediaType` field).
    pub(crate) media_type: String,
    /// The sha256 digest of `bytes`.
    pub(crate) digest: String,
}

impl Manifest {
    /// `bytes` served as `content_type` (empty when unknown).
    pub(crate) fn new(bytes: Vec<u8>, content_type: &str) -> Self {
        let digest = skiff_storage::digest::digest_of(&bytes).to_string();
        let media_type = match content_type.split(';').next().map(str::trim) {
            Some(t) if !t.is_empty() && t != "application/json" && t != "text/plain" => {
                t.to_owned()
            }
            _ => serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["mediaType"].as_str().map(str::to_owned))
                .unwrap_or_default(),
        };
        Self {
            bytes,
            media_type,
            digest,
        }
    }

    /// This manifest with `desc`'s media type when it was served with none (a layout's
    /// manifest by digest whose body names no `mediaType`, as image-spec 1.0 allowed).
    pub(crate) fn typed_as(mut self, desc: &Desc) -> Self {
        if self.media_type.is_empty() {
            self.media_type = desc.media_type.clone();
        }
        self
    }

    /// Checks that these are the bytes `desc` names.
    pub(crate) fn check(&self, desc: &Desc) -> Result<()> {
        anyhow::ensure!(
            self.digest == desc.digest,
            "manifest {} was asked for, but the source sent {}",
            desc.digest,
            self.digest
        );
        anyhow::ensure!(
            self.bytes.len() as u64 == desc.size,
            "manifest {} has {} bytes, not the {} its descriptor says",
            desc.digest,
            self.bytes.len(),
            desc.size
        );
        Ok(())
    }
}

/// The parts of a descriptor a mirror needs.
#[derive(Debug, Clone)]
pub(crate) struct Desc {
    pub(crate) media_type: String,
    pub(crate) digest: String,
    pub(crate) size: u64,
    /// Foreign (non-distributable) layers name where they live; mirrors skip them, as
    /// skopeo does.
    pub(crate) has_urls: bool,
}

impl Desc {
    /// Reads the descriptor `value` (a JSON object).
    pub(crate) fn parse(value: &serde_json::Value) -> Result<Self> {
        let digest = value["digest"]
            .as_str()
            .context("a descriptor without a digest")?;
        check_digest(digest)?;
        let size = value["size"]
            .as_u64()
            .with_context(|| format!("descriptor {digest} has no size"))?;
        Ok(Self {
            media_type: value["mediaType"].as_str().unwrap_or_default().to_owned(),
            digest: digest.to_owned(),
            size,
            has_urls: value["urls"].as_array().is_some_and(|u| !u.is_empty()),
        })
    }

    /// Whether this blob is a manifest's bytes (oci-delta artifacts carry the image's manifest
    /// as a layer): a registry may hold it as a manifest only.
    pub(crate) fn is_manifest_type(&self) -> bool {
        is_manifest_type(&self.media_type)
    }
}

/// Whether `media_type` is one of the manifest or index types.
pub(crate) fn is_manifest_type(media_type: &str) -> bool {
    [
        MANIFEST_MEDIA_TYPE,
        INDEX_MEDIA_TYPE,
        DOCKER_MANIFEST,
        DOCKER_LIST,
    ]
    .contains(&media_type)
}

/// What a manifest names.
#[derive(Debug)]
pub(crate) enum Content {
    /// An index: its child manifests.
    Index(Vec<Desc>),
    /// An image manifest or artifact: its blobs, config first, each once.
    Image(Vec<Desc>),
}

/// Reads what `manifest` names.
pub(crate) fn content(manifest: &Manifest) -> Result<Content> {
    let value: serde_json::Value =
        serde_json::from_slice(&manifest.bytes).context("the manifest is not JSON")?;
    anyhow::ensure!(value.is_object(), "the manifest is not a JSON object");
    let media_type = match manifest.media_type.as_str() {
        "" => value["mediaType"].as_str().unwrap_or_default(),
        t => t,
    };
    let list = |key: &str| -> Result<Vec<Desc>> {
        value[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(Desc::parse)
            .collect()
    };
    match media_type {
        INDEX_MEDIA_TYPE | DOCKER_LIST => Ok(Content::Index(list("manifests")?)),
        t if t.starts_with("application/vnd.docker.distribution.manifest.v1") => bail!(
            "{} is a Docker schema 1 manifest ({t}): it is signed for its repository and \
             cannot be mirrored unchanged",
            manifest.digest
        ),
        _ if value.get("manifests").is_some() && value.get("layers").is_none() => {
            Ok(Content::Index(list("manifests")?))
        }
        _ => {
            let mut blobs = Vec::new();
            if !value["config"].is_null() {
                blobs.push(Desc::parse(&value["config"])?);
            }
            // `layers` of an image manifest; `blobs` of the (deprecated) OCI artifact manifest.
            for desc in list("layers")?.into_iter().chain(list("blobs")?) {
                if !blobs.iter().any(|b| b.digest == desc.digest) {
                    blobs.push(desc);
                }
            }
            Ok(Content::Image(blobs))
        }
    }
}

/// The annotation by which BuildKit ties an attestation manifest (platform `unknown/unknown`)
/// to the image it describes.
const ATTESTATION_OF: &str = "vnd.docker.reference.digest";

/// A new index with only the entries of `index` for one of `platforms` (and the attestations
/// of those images): new bytes, so a new digest, with every other field kept as it was; or
/// `index` itself when every entry is kept.
pub(crate) fn keep_platforms(index: &Manifest, platforms: &[WantedPlatform]) -> Result<Manifest> {
    let mut value: serde_json::Value =
        serde_json::from_slice(&index.bytes).context("the index is not JSON")?;
    let entries = value["manifests"]
        .as_array()
        .context("the index has no manifests")?;
    let wanted = |e: &serde_json::Value| platforms.iter().any(|p| p.matches_json(&e["platform"]));
    let kept_images: Vec<&str> = entries
        .iter()
        .filter(|e| wanted(e))
        .filter_map(|e| e["digest"].as_str())
        .collect();
    anyhow::ensure!(
        !kept_images.is_empty(),
        "index {} has no image for {}",
        index.digest,
        platforms
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let kept: Vec<serde_json::Value> = entries
        .iter()
        .filter(|e| {
            wanted(e)
                || e["annotations"][ATTESTATION_OF]
                    .as_str()
                    .is_some_and(|d| kept_images.contains(&d))
        })
        .cloned()
        .collect();
    if kept.len() == entries.len() {
        return Ok(index.clone());
    }
    value["manifests"] = kept.into();
    let bytes = serde_json::to_vec(&value)?;
    Ok(Manifest::new(bytes, &index.media_type))
}

/// The `subject` digest of a manifest, if it has one.
pub(crate) fn subject(manifest: &Manifest) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(&manifest.bytes).ok()?;
    value["subject"]["digest"].as_str().map(str::to_owned)
}

/// The descriptor a referrers listing gives `manifest` (distribution spec, "listing
/// referrers"): its media type, digest and size, its `artifactType` (else its config's media
/// type) and its annotations.
pub(crate) fn referrer_descriptor(manifest: &Manifest) -> Result<serde_json::Value> {
    let value: serde_json::Value =
        serde_json::from_slice(&manifest.bytes).context("the referrer is not JSON")?;
    let mut desc = serde_json::json!({
        "mediaType": manifest.media_type,
        "digest": manifest.digest,
        "size": manifest.bytes.len(),
    });
    let artifact_type = value["artifactType"]
        .as_str()
        .or_else(|| value["config"]["mediaType"].as_str());
    if let Some(t) = artifact_type {
        desc["artifactType"] = t.into();
    }
    if let Some(a) = value.get("annotations").filter(|a| a.is_object()) {
        desc["annotations"] = a.clone();
    }
    Ok(desc)
}

/// Checks that `digest` is `sha256:` followed by 64 lower-case hex digits, or `sha512:` and
/// 128: what the distribution spec registers, and safe in a URL path.
pub(crate) fn check_digest(digest: &str) -> Result<()> {
    let ok = match digest.split_once(':') {
        Some(("sha256", hex)) => hex.len() == 64,
        Some(("sha512", hex)) => hex.len() == 128,
        _ => false,
    } && digest.split_once(':').is_some_and(|(_, h)| {
        h.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    anyhow::ensure!(ok, "{digest:?} is not a sha256 or sha512 digest");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(json: &str, media_type: &str) -> Manifest {
        Manifest::new(json.as_bytes().to_vec(), media_type)
    }

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn image_names_config_then_layers_once() {
        let m = manifest(
            &format!(
                r#"{{"schemaVersion":2,"config":{{"mediaType":"a","digest":"{D1}","size":2}},
                "layers":[{{"mediaType":"b","digest":"{D2}","size":3}},
                          {{"mediaType":"b","digest":"{D2}","size":3}},
                          {{"mediaType":"c","digest":"{D1}","size":2,"urls":["http://x"]}}]}}"#
            ),
            MANIFEST_MEDIA_TYPE,
        );
        let Content::Image(blobs) = content(&m).unwrap() else {
            panic!("not an image")
        };
        let digests: Vec<_> = blobs.iter().map(|b| b.digest.as_str()).collect();
        assert_eq!(digests, [D1, D2]);
    }

    #[test]
    fn platforms_kept_with_their_attestations() {
        let d3 = D1.replace('1', "3");
        let att = D1.replace('1', "4");
        let index = manifest(
            &format!(
                r#"{{"schemaVersion":2,"annotations":{{"a":"b"}},"manifests":[
                {{"mediaType":"m","digest":"{D1}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}},
                {{"mediaType":"m","digest":"{D2}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
                {{"mediaType":"m","digest":"{d3}","size":1,"platform":{{"os":"linux","architecture":"s390x"}}}},
                {{"mediaType":"m","digest":"{att}","size":1,"platform":{{"os":"unknown","architecture":"unknown"}},
                  "annotations":{{"vnd.docker.reference.digest":"{D2}"}}}}]}}"#
            ),
            INDEX_MEDIA_TYPE,
        );
        let wanted = [
            WantedPlatform::parse("linux/arm64").unwrap(),
            WantedPlatform::parse("linux/s390x").unwrap(),
        ];
        let kept = keep_platforms(&index, &wanted).unwrap();
        assert_ne!(kept.digest, index.digest);
        assert_eq!(kept.media_type, INDEX_MEDIA_TYPE);
        let value: serde_json::Value = serde_json::from_slice(&kept.bytes).unwrap();
        let digests: Vec<_> = value["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["digest"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(digests, [D2.to_owned(), d3, att]);
        assert_eq!(value["annotations"]["a"], "b");
        let all = [
            WantedPlatform::parse("linux/amd64").unwrap(),
            WantedPlatform::parse("linux/arm64").unwrap(),
            WantedPlatform::parse("linux/s390x").unwrap(),
        ];
        assert_eq!(keep_platforms(&index, &all).unwrap().bytes, index.bytes);
        let none = keep_platforms(&index, &[WantedPlatform::parse("windows/amd64").unwrap()]);
        assert!(format!("{:#}", none.unwrap_err()).contains("no image for windows/amd64"));
    }

    #[test]
    fn index_by_content_type_or_field() {
        let json = format!(r#"{{"manifests":[{{"mediaType":"x","digest":"{D1}","size":9}}]}}"#);
        for t in [INDEX_MEDIA_TYPE, DOCKER_LIST, ""] {
            let Content::Index(children) = content(&manifest(&json, t)).unwrap() else {
                panic!("not an index for {t:?}")
            };
            assert_eq!(children[0].size, 9);
        }
    }

    #[test]
    fn media_type_from_field_when_served_as_json() {
        let m = manifest(
            &format!(r#"{{"mediaType":"{DOCKER_LIST}","manifests":[]}}"#),
            "application/json",
        );
        assert_eq!(m.media_type, DOCKER_LIST);
    }

    #[test]
    fn refuses_schema1_and_bad_digests() {
        let m = manifest(
            "{}",
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
        );
        assert!(format!("{:#}", content(&m).unwrap_err()).contains("schema 1"));
        for bad in [
            "sha256:../../x",
            "sha256:ABCDEF1111111111111111111111111111111111111111111111111111111111",
            "md5:11",
            "sha256:11",
        ] {
            let m = manifest(
                &format!(r#"{{"layers":[{{"digest":"{bad}","size":1}}]}}"#),
                MANIFEST_MEDIA_TYPE,
            );
            assert!(content(&m).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn referrer_descriptor_takes_artifact_type_else_config_type() {
        let with = manifest(
            r#"{"artifactType":"t/a","config":{"mediaType":"t/c"},"annotations":{"k":"v"}}"#,
            MANIFEST_MEDIA_TYPE,
        );
        let d = referrer_descriptor(&with).unwrap();
        assert_eq!(d["artifactType"], "t/a");
        assert_eq!(d["annotations"]["k"], "v");
        assert_eq!(d["size"], with.bytes.len());
        let without = manifest(r#"{"config":{"mediaType":"t/c"}}"#, MANIFEST_MEDIA_TYPE);
        assert_eq!(
            referrer_descriptor(&without).unwrap()["artifactType"],
            "t/c"
        );
    }

    #[test]
    fn check_is_digest_and_size() {
        let m = manifest("{}", MANIFEST_MEDIA_TYPE);
        let desc = |digest: &str, size| Desc {
            media_type: String::new(),
            digest: digest.to_owned(),
            size,
            has_urls: false,
        };
        assert!(m.check(&desc(&m.digest, 2)).is_ok());
        assert!(m.check(&desc(&m.digest, 3)).is_err());
        assert!(m.check(&desc(D1, 2)).is_err());
    }
}
