//! A pushed manifest (`PUT /v2/NAME/manifests/REF`) taken into the store:
//!
//! - an image (config `application/vnd.oci.image.config.v1+json`) goes through the pull
//!   engine from a staging OCI layout of its blobs (hard links to the staged uploads, or the
//!   store's own copies), exactly as `skiff copy oci:...` would take it: every layer imported
//!   and checked against its DiffID, the original blobs kept so the image is served back with
//!   the digest it was pushed with, and the tag moved only when all of that succeeded;
//! - an artifact (any other config: oci-delta, signatures, SBOMs) keeps its blobs and its
//!   exact manifest bytes ([`skiff_storage::artifacts`]);
//! - either, with a `subject`, is recorded as a referrer of it.
//!
//! Indexes are refused: the store holds single images.

use std::path::Path;
use std::sync::Arc;

use skiff_storage::OciDigest;
use skiff_storage::artifacts::{publish_artifact, record_referrer};
use skiff_storage::kept_blobs::{blob_tmpfile, keep_blob};
use skiff_storage::{FsVerityHashValue, digest::digest_of};

use super::content::{BlobData, Content, is_image_manifest, read_small};
use super::errors::{ApiError, ApiResult, Code};
use crate::blob::MAX_CONFIG_SIZE;
use crate::pull::{CopyOptions, NoObserver, copy_image};
use crate::reference::ImageRef;
use crate::source::Source;

/// Where a manifest goes: a tag, or (pushed by digest) a ref of its own so that garbage
/// collection keeps it until a tag names it or it is removed.
pub(crate) fn untagged_ref(name: &str, digest: &OciDigest) -> String {
    format!("skiff-serve/untagged/{name}/{}", digest.digest())
}

/// What [`put_manifest`] stored.
#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) digest: OciDigest,
    pub(crate) subject: Option<OciDigest>,
}

/// Stores the manifest `bytes` pushed to repository `name`, tagged `tag` (`None`: pushed by
/// digest).
pub(crate) async fn put_manifest<H: FsVerityHashValue>(
    content: &Arc<Content<H>>,
    name: &str,
    tag: Option<&str>,
    bytes: Vec<u8>,
    jobs: usize,
) -> ApiResult<Stored> {
    let digest = digest_of(&bytes);
    let invalid = |why: String| ApiError::new(Code::ManifestInvalid, why);
    let json: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| invalid(format!("the manifest is not JSON: {e}")))?;
    let media_type = super::content::media_type_of(&json);
    if json.get("manifests").is_some()
        || media_type.contains("index")
        || media_type.contains("list")
    {
        return Err(invalid(format!(
            "{media_type}: composefs storage holds single images, not indexes (copy one platform, \
             without --all)"
        )));
    }
    if media_type.starts_with("application/vnd.docker.") {
        return Err(invalid(format!(
            "{media_type}: composefs storage holds OCI images (push with --format oci, or \
             skopeo copy --format oci)"
        )));
    }
    if json["schemaVersion"] != 2 || !json["config"].is_object() {
        return Err(invalid(
            "not an OCI image manifest (schemaVersion 2 with a config)".into(),
        ));
    }
    let descriptor = |value: &serde_json::Value| -> ApiResult<(OciDigest, u64)> {
        let digest = value["digest"]
            .as_str()
            .ok_or_else(|| invalid("a descriptor without a digest".into()))?;
        let digest = super::api::digest(digest)?;
        let size = value["size"]
            .as_u64()
            .ok_or_else(|| invalid(format!("descriptor {digest} has no size")))?;
        Ok((digest, size))
    };
    let config = descriptor(&json["config"])?;
    let layers: Vec<(OciDigest, u64)> = json["layers"]
        .as_array()
        .map(|l| l.iter().map(descriptor).collect())
        .transpose()?
        .unwrap_or_default();
    let subject = match json.get("subject") {
        Some(s) => Some(descriptor(s)?.0),
        None => None,
    };
    // Layers pushed before this manifest may still be being imported.
    content
        .arrivals
        .settled(layers.iter().map(|(d, _)| d))
        .await;
    // Every blob named must be there, of the size named.
    let mut blobs = Vec::with_capacity(layers.len() + 1);
    for (blob, size) in std::iter::once(&config).chain(&layers) {
        let data = match content.blob(blob).await {
            Ok(data) => data,
            Err(e) if e.code == Code::BlobUnknown => {
                return Err(ApiError::new(
                    Code::ManifestBlobUnknown,
                    format!("the manifest names blob {blob}, which was not pushed"),
                ));
            }
            Err(e) => return Err(e),
        };
        if data.size() != *size {
            return Err(invalid(format!(
                "the manifest gives blob {blob} {size} bytes, the blob has {}",
                data.size()
            )));
        }
        blobs.push((blob.clone(), data));
    }
    let target = tag
        .map(|t| format!("{name}:{t}"))
        .unwrap_or_else(|| untagged_ref(name, &digest));
    if is_image_manifest(&json) {
        put_image(content, &target, &bytes, blobs, jobs).await?;
        if let Some(subject) = &subject {
            let (c, s, d) = (content.clone(), subject.clone(), digest.clone());
            tokio::task::spawn_blocking(move || record_referrer(&c.store, &s, &d))
                .await
                .map_err(anyhow::Error::from)??;
        }
    } else {
        let c = content.clone();
        let (s, t) = (subject.clone(), target.clone());
        tokio::task::spawn_blocking(move || put_artifact(&c, &bytes, blobs, &t, s.as_ref()))
            .await
            .map_err(anyhow::Error::from)??;
    }
    for (blob, _) in std::iter::once(&config).chain(&layers) {
        content.uploads.unstage(blob);
    }
    Ok(Stored { digest, subject })
}

/// An image: staged as an OCI layout and copied in by the pull engine, keeping every blob.
async fn put_image<H: FsVerityHashValue>(
    content: &Arc<Content<H>>,
    target: &str,
    manifest_json: &[u8],
    blobs: Vec<(OciDigest, BlobData)>,
    jobs: usize,
) -> ApiResult<()> {
    let layout = tempfile::Builder::new()
        .prefix("push-")
        .tempdir_in(content.uploads.root())?;
    let (path, manifest) = (layout.path().to_owned(), manifest_json.to_vec());
    let c = content.clone();
    tokio::task::spawn_blocking(move || stage_layout(&c, &path, &manifest, blobs))
        .await
        .map_err(anyhow::Error::from)??;
    let reference = ImageRef::Oci {
        path: layout.path().to_owned(),
        reference: None,
    };
    let source = Source::open(&reference, &Default::default()).await?;
    let options = CopyOptions {
        jobs,
        delta_jobs: 1,
        use_deltas: false,
        retry_times: 0,
        keep_blobs: true,
    };
    copy_image(
        Arc::new(source),
        &content.store,
        target,
        &options,
        Arc::new(NoObserver),
    )
    .await
    .map_err(|e| {
        // The client sent bytes the store cannot take as an image: its fault, said why.
        ApiError::new(
            Code::ManifestInvalid,
            format!("the image was not stored: {e:#}"),
        )
    })?;
    Ok(())
}

/// Writes the OCI layout of one manifest whose blobs are `blobs`.
fn stage_layout<H: FsVerityHashValue>(
    content: &Content<H>,
    dir: &Path,
    manifest_json: &[u8],
    blobs: Vec<(OciDigest, BlobData)>,
) -> ApiResult<()> {
    let blob_dir = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blob_dir)?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let digest = digest_of(manifest_json);
    std::fs::write(blob_dir.join(digest.digest()), manifest_json)?;
    for (blob, data) in blobs {
        let target = blob_dir.join(blob.digest());
        if target.exists() {
            continue;
        }
        let staged = content.uploads.staged_path(&blob);
        if std::fs::hard_link(&staged, &target).is_ok() {
            continue;
        }
        match data {
            BlobData::Bytes(bytes) => std::fs::write(&target, bytes)?,
            BlobData::File { mut file, .. } => {
                let mut out = std::fs::File::create(&target)?;
                std::io::copy(&mut file, &mut out)?;
            }
        }
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": crate::format::media::MANIFEST_MEDIA_TYPE,
            "digest": digest.to_string(),
            "size": manifest_json.len(),
        }],
    });
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).expect("JSON"),
    )?;
    Ok(())
}

/// An artifact: its blobs kept, its config and manifest stored as they are.
fn put_artifact<H: FsVerityHashValue>(
    content: &Content<H>,
    manifest_json: &[u8],
    mut blobs: Vec<(OciDigest, BlobData)>,
    target: &str,
    subject: Option<&OciDigest>,
) -> ApiResult<()> {
    let store = &content.store;
    let (_, config) = blobs.remove(0);
    let config = read_small(config, MAX_CONFIG_SIZE)?;
    let mut kept = Vec::with_capacity(blobs.len());
    for (digest, data) in blobs {
        let verity = match data {
            BlobData::Bytes(bytes) => {
                let mut file = blob_tmpfile(store)?;
                std::io::Write::write_all(&mut file, &bytes)?;
                keep_blob(store, &digest, file, bytes.len() as u64, None)?
            }
            BlobData::File { mut file, size, .. } => {
                // Staged uploads were hashed as they arrived; kept blobs are the store's.
                let mut object = blob_tmpfile(store)?;
                std::io::copy(&mut file, &mut object)?;
                keep_blob(store, &digest, object, size, None)?
            }
        };
        kept.push((digest, verity));
    }
    publish_artifact(store, manifest_json, &config, &kept, Some(target), subject)?;
    Ok(())
}
