//! Manifests the store holds that are not images with a file tree: OCI artifacts (an
//! `artifactType`, or a config that is not an image config: oci-delta, signatures, SBOMs),
//! stored as composefs-oci stores them, so that `cfsctl oci` lists them and both garbage
//! collectors keep what they name:
//!
//! - each blob a kept blob (`oci-blob-<digest>`, see [`crate::kept_blobs`]);
//! - the config an `oci-config-<digest>` stream holding its exact bytes;
//! - the manifest an `oci-manifest-<digest>` stream holding its exact bytes, with named
//!   references `config:<digest>` to the config and `<digest>` to each blob's stream;
//! - a tag `streams/refs/oci/<name>`, and for a manifest with a `subject`, a referrer entry
//!   `streams/refs/oci-referrers/<subject>/<digest>` (both garbage-collection roots).
//!
//! Also here: reading back the exact bytes of stored manifests and configs by digest.

use std::io::Write;

use anyhow::{Context, Result, ensure};
use composefs::fsverity::FsVerityHashValue;
use composefs_oci::OciDigest;
use composefs_oci::oci_image::{add_referrer, manifest_identifier, tag_image};
use fn_error_context::context;

use crate::digest::digest_of;
use crate::repository::Store;

/// composefs-oci's content type of config streams.
const CONFIG_CONTENT_TYPE: u64 = u64::from_le_bytes(*b"ociconfg");
/// composefs-oci's content type of manifest streams.
const MANIFEST_CONTENT_TYPE: u64 = u64::from_le_bytes(*b"ocimanif");

fn config_identifier(digest: &OciDigest) -> String {
    format!("oci-config-{digest}")
}

/// A writer that refuses to grow past a bound.
struct Bounded {
    bytes: Vec<u8>,
    max: u64,
}

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() as u64 + buf.len() as u64 > self.max {
            return Err(std::io::Error::other(format!(
                "longer than {} bytes",
                self.max
            )));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The bytes of stream `name` of content type `content_type`, checked against `digest`, if the
/// store has it.
fn stored_bytes<H: FsVerityHashValue>(
    store: &Store<H>,
    name: &str,
    content_type: u64,
    digest: &OciDigest,
    max: u64,
) -> Result<Option<Vec<u8>>> {
    let repo = store.repo();
    let Some(verity) = repo.has_stream(name)? else {
        return Ok(None);
    };
    let mut out = Bounded {
        bytes: Vec::new(),
        max,
    };
    repo.open_stream(name, Some(&verity), Some(content_type))?
        .cat(repo, &mut out)?;
    // An insecure repository does not check objects on read: these are small, hash them.
    ensure!(
        digest_of(&out.bytes) == *digest,
        "the stored {name} reads back with another digest: the store is damaged (see skiff fsck)"
    );
    Ok(Some(out.bytes))
}

/// The exact bytes of the stored manifest `digest` (image or artifact), if held (blocking).
#[context("Reading stored manifest {digest}")]
pub fn stored_manifest<H: FsVerityHashValue>(
    store: &Store<H>,
    digest: &OciDigest,
    max: u64,
) -> Result<Option<Vec<u8>>> {
    stored_bytes(
        store,
        &manifest_identifier(digest),
        MANIFEST_CONTENT_TYPE,
        digest,
        max,
    )
}

/// The exact bytes of the stored config `digest`, if held (blocking).
#[context("Reading stored config {digest}")]
pub fn stored_config<H: FsVerityHashValue>(
    store: &Store<H>,
    digest: &OciDigest,
    max: u64,
) -> Result<Option<Vec<u8>>> {
    stored_bytes(
        store,
        &config_identifier(digest),
        CONFIG_CONTENT_TYPE,
        digest,
        max,
    )
}

/// Stores an artifact: its config bytes, the verities of its blobs' kept-blob streams (every
/// blob the manifest's `layers` name, each kept already) and its exact manifest bytes; then
/// tags it `tag` and records it as a referrer of `subject` (blocking). Idempotent.
#[context("Storing artifact {}", digest_of(manifest_json))]
pub fn publish_artifact<H: FsVerityHashValue>(
    store: &Store<H>,
    manifest_json: &[u8],
    config_json: &[u8],
    blobs: &[(OciDigest, H)],
    tag: Option<&str>,
    subject: Option<&OciDigest>,
) -> Result<OciDigest> {
    store.repo().ensure_writable()?;
    let repo = store.repo();
    let manifest_digest = digest_of(manifest_json);
    let config_digest = digest_of(config_json);
    let config_verity = match repo.has_stream(&config_identifier(&config_digest))? {
        Some(verity) => verity,
        None => {
            let mut writer = repo.create_stream(CONFIG_CONTENT_TYPE)?;
            writer.write_external(config_json)?;
            repo.write_stream(writer, &config_identifier(&config_digest), None)?
        }
    };
    let mut writer = repo.create_stream(MANIFEST_CONTENT_TYPE)?;
    writer.add_named_stream_ref(&format!("config:{config_digest}"), &config_verity);
    for (digest, verity) in blobs {
        writer.add_named_stream_ref(digest.as_ref(), verity);
    }
    writer.write_external(manifest_json)?;
    repo.write_stream(writer, &manifest_identifier(&manifest_digest), None)?;
    if let Some(tag) = tag {
        tag_image(repo, &manifest_digest, tag).with_context(|| format!("Tagging {tag}"))?;
    }
    if let Some(subject) = subject {
        add_referrer(repo, subject, &manifest_digest)?;
    }
    repo.sync()?;
    Ok(manifest_digest)
}

/// Records the stored manifest `digest` as a referrer of `subject` (blocking).
#[context("Recording {digest} as a referrer of {subject}")]
pub fn record_referrer<H: FsVerityHashValue>(
    store: &Store<H>,
    subject: &OciDigest,
    digest: &OciDigest,
) -> Result<()> {
    add_referrer(store.repo(), subject, digest)?;
    store.repo().sync()?;
    Ok(())
}

/// The stored manifests that name `subject` as theirs, with their exact bytes (blocking).
#[context("Listing the referrers of {subject}")]
pub fn referrers<H: FsVerityHashValue>(
    store: &Store<H>,
    subject: &OciDigest,
    max: u64,
) -> Result<Vec<(OciDigest, Vec<u8>)>> {
    let mut out = Vec::new();
    for (digest, _) in composefs_oci::oci_image::list_referrers(store.repo(), subject)? {
        if let Some(bytes) = stored_manifest(store, &digest, max)? {
            out.push((digest, bytes));
        }
    }
    out.sort_by_key(|a| a.0.to_string());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kept_blobs::{blob_tmpfile, keep_blob};
    use crate::repository::{HashAlgorithm, InitOptions, init};
    use composefs::fsverity::Sha256HashValue;

    #[test]
    fn an_artifact_reads_back_exactly_is_tagged_and_listed_as_a_referrer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repo");
        init(
            &path,
            InitOptions {
                hash: HashAlgorithm::Sha256,
                ..Default::default()
            },
        )
        .unwrap();
        let store: Store<Sha256HashValue> = Store::open_writable(&path).unwrap();
        let blob = b"an artifact's payload".to_vec();
        let blob_digest = digest_of(&blob);
        let mut file = blob_tmpfile(&store).unwrap();
        file.write_all(&blob).unwrap();
        let verity = keep_blob(&store, &blob_digest, file, blob.len() as u64, None).unwrap();
        let config = b"{}".to_vec();
        let subject = digest_of(b"some image manifest");
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/example",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                       "digest": digest_of(&config).to_string(), "size": 2},
            "layers": [{"mediaType": "application/octet-stream",
                        "digest": blob_digest.to_string(), "size": blob.len()}],
            "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": subject.to_string(), "size": 19},
        }))
        .unwrap();
        // Exact bytes, not re-serialised: odd spacing survives.
        let manifest = [b" ".as_slice(), &manifest].concat();
        let digest = publish_artifact(
            &store,
            &manifest,
            &config,
            &[(blob_digest.clone(), verity)],
            Some("sig:v1"),
            Some(&subject),
        )
        .unwrap();
        assert_eq!(digest, digest_of(&manifest));
        assert_eq!(
            stored_manifest(&store, &digest, 1 << 20).unwrap().unwrap(),
            manifest
        );
        assert_eq!(
            stored_config(&store, &digest_of(&config), 1 << 20)
                .unwrap()
                .unwrap(),
            config
        );
        assert!(stored_manifest(&store, &digest, 10).is_err(), "bounded");
        assert_eq!(
            referrers(&store, &subject, 1 << 20).unwrap(),
            vec![(digest.clone(), manifest.clone())]
        );
        assert_eq!(
            crate::images::resolve(&store, &crate::images::StoredRef::Tag("sig:v1".into()))
                .unwrap()
                .0,
            digest
        );
        // Garbage collection keeps what the tag and the referrer entry reach.
        crate::maintenance::gc(&store).unwrap();
        assert!(
            crate::kept_blobs::open_kept_blob(&store, &blob_digest)
                .unwrap()
                .is_some()
        );
    }
}
