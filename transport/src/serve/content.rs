//! What the server reads: manifests by tag or digest and blobs by digest, from the store and
//! from the uploads staged for a manifest not yet pushed.
//!
//! An image is served as [`crate::push::export`] makes it ready to leave the store: with every
//! original blob kept, the stored manifest byte for byte; otherwise a manifest naming layers
//! compressed again (gzip), made once per image and held for the server's life, so that the
//! digest a client reads stays the digest it later asks for. Artifacts are served as stored.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use skiff_storage::artifacts::{stored_config, stored_manifest};
use skiff_storage::images::{ImageNotFound, StoredRef, resolve, tags_of};
use skiff_storage::kept_blobs::open_kept_blob;
use skiff_storage::{FsVerityHashValue, OciDigest, Store};

use super::api::Reference;
use super::arrivals::Arrivals;
use super::errors::{ApiError, ApiResult, Code};
use super::ingest::untagged_ref;
use super::uploads::Uploads;
use crate::blob::{MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE};
use crate::format::media::MANIFEST_MEDIA_TYPE;
use crate::push::compress::DestCompression;
use crate::push::export::{ExportOptions, OutBlob, OutData, Outgoing, prepare};

/// A manifest to answer with.
#[derive(Debug, Clone)]
pub(crate) struct ServedManifest {
    pub(crate) bytes: Arc<Vec<u8>>,
    pub(crate) digest: OciDigest,
    pub(crate) media_type: String,
}

/// A blob to answer with.
#[derive(Debug)]
pub(crate) enum BlobData {
    /// Small blobs: configs, manifests read as blobs.
    Bytes(Vec<u8>),
    /// A file: a kept blob (checked against `verify` as a whole read streams it), a staged
    /// upload or a regenerated layer (checked when written).
    File {
        file: File,
        size: u64,
        verify: Option<OciDigest>,
    },
}

impl BlobData {
    pub(crate) fn size(&self) -> u64 {
        match self {
            Self::Bytes(b) => b.len() as u64,
            Self::File { size, .. } => *size,
        }
    }
}

/// The images made ready to serve, by stored manifest digest.
type Exports = HashMap<OciDigest, Arc<tokio::sync::OnceCell<Arc<Outgoing>>>>;

/// The server's view of the store.
#[derive(Debug)]
pub(crate) struct Content<H: FsVerityHashValue> {
    pub(crate) store: Store<H>,
    pub(crate) uploads: Arc<Uploads>,
    /// Layers being imported from blobs pushed before their manifest.
    pub(crate) arrivals: Arrivals,
    /// Where regenerated layers are written.
    stage: PathBuf,
    jobs: usize,
    exports: Mutex<Exports>,
    /// Digests of served manifests that are not stored ones: served digest → stored digest.
    served: Mutex<HashMap<OciDigest, OciDigest>>,
}

/// Whether a manifest's JSON is a container image's (its config an OCI image config), which
/// the store holds with a file tree, rather than an artifact's.
pub(crate) fn is_image_manifest(json: &serde_json::Value) -> bool {
    json["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
}

/// The media type a manifest declares.
pub(crate) fn media_type_of(json: &serde_json::Value) -> String {
    json["mediaType"]
        .as_str()
        .unwrap_or(MANIFEST_MEDIA_TYPE)
        .to_owned()
}

fn manifest_unknown(what: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        Code::ManifestUnknown,
        format!("manifest {what} is not in the store"),
    )
}

impl<H: FsVerityHashValue> Content<H> {
    pub(crate) fn new(store: Store<H>, uploads: Arc<Uploads>, stage: PathBuf, jobs: usize) -> Self {
        Self {
            store,
            uploads,
            arrivals: Arrivals::new(jobs),
            stage,
            jobs,
            exports: Mutex::new(HashMap::new()),
            served: Mutex::new(HashMap::new()),
        }
    }

    /// The manifest `reference` names in repository `name` (an image's as it is served, an
    /// artifact's as stored). A digest is found only in a repository that holds it: one of
    /// its tags, or a push to that repository by digest.
    pub(crate) async fn manifest(
        self: &Arc<Self>,
        name: &str,
        reference: &Reference,
    ) -> ApiResult<ServedManifest> {
        let this = self.clone();
        let (name, owned) = (name.to_owned(), reference.clone());
        let served_as = match reference {
            Reference::Digest(digest) => self.stored_digest_of(digest),
            Reference::Tag(_) => None,
        };
        let found = tokio::task::spawn_blocking(move || -> ApiResult<_> {
            let digest = match served_as {
                Some(stored) => stored,
                None => match resolve(&this.store, &owned.stored(&name)) {
                    Ok((digest, _)) => digest,
                    Err(e) if e.downcast_ref::<ImageNotFound>().is_some() => {
                        return Err(manifest_unknown(&owned));
                    }
                    Err(e) => return Err(e.into()),
                },
            };
            if let Reference::Digest(_) = owned
                && repository_tags(&this.store, &name, &digest)?.is_empty()
            {
                return Err(manifest_unknown(format!("{owned} in {name}")));
            }
            let bytes = stored_manifest(&this.store, &digest, MAX_MANIFEST_SIZE)?
                .ok_or_else(|| manifest_unknown(&owned))?;
            Ok((digest, bytes))
        })
        .await
        .map_err(anyhow::Error::from)??;
        let (digest, json) = found;
        if served_as_differs(reference, &digest) {
            return self.image_manifest(&digest).await;
        }
        let value: serde_json::Value = serde_json::from_slice(&json)
            .map_err(|e| anyhow::anyhow!("the stored manifest {digest} is not JSON: {e}"))?;
        // By digest, the stored bytes are what was asked for; by tag, an image as it can be
        // served (its blobs all there).
        if matches!(reference, Reference::Tag(_)) && is_image_manifest(&value) {
            return self.image_manifest(&digest).await;
        }
        Ok(ServedManifest {
            media_type: media_type_of(&value),
            bytes: Arc::new(json),
            digest,
        })
    }

    /// The stored image `stored` as served, made ready once.
    async fn image_manifest(self: &Arc<Self>, stored: &OciDigest) -> ApiResult<ServedManifest> {
        let outgoing = self.export(stored).await?;
        Ok(ServedManifest {
            bytes: Arc::new(outgoing.manifest_json.clone()),
            digest: outgoing.manifest_digest.clone(),
            media_type: outgoing.media_type.clone(),
        })
    }

    async fn export(self: &Arc<Self>, stored: &OciDigest) -> ApiResult<Arc<Outgoing>> {
        let cell = self
            .exports
            .lock()
            .expect("poisoned")
            .entry(stored.clone())
            .or_default()
            .clone();
        let outgoing = cell
            .get_or_try_init(|| async {
                let this = self.clone();
                let digest = stored.clone();
                tokio::task::spawn_blocking(move || {
                    let options = ExportOptions {
                        compression: DestCompression::Gzip,
                        preserve_digests: false,
                        jobs: this.jobs,
                    };
                    let stage = this.stage.clone();
                    prepare(&this.store, &StoredRef::Digest(digest), &options, &|| {
                        Ok(stage.clone())
                    })
                })
                .await
                .map_err(anyhow::Error::from)?
                .map(Arc::new)
            })
            .await?
            .clone();
        if outgoing.regenerated > 0 {
            log::info!(
                "serving {stored} as {} with {} layers compressed again (their original blobs are \
                 not kept)",
                outgoing.manifest_digest,
                outgoing.regenerated
            );
        }
        self.served
            .lock()
            .expect("poisoned")
            .insert(outgoing.manifest_digest.clone(), stored.clone());
        Ok(outgoing)
    }

    /// The upload of blob `digest` (`size` bytes) is staged, its digest checked: a layer's
    /// import starts now ([`Arrivals`]).
    pub(crate) fn blob_arrived(&self, digest: &OciDigest, size: u64) {
        self.arrivals
            .arrived(&self.store, digest, self.uploads.staged_path(digest), size);
    }

    /// The blob `digest`: a staged upload, a kept blob, a layer regenerated for a served
    /// manifest, a stored config, or a stored manifest read as a blob.
    pub(crate) async fn blob(self: &Arc<Self>, digest: &OciDigest) -> ApiResult<BlobData> {
        let regenerated = self.regenerated(digest)?;
        if let Some(found) = regenerated {
            return Ok(found);
        }
        let this = self.clone();
        let digest = digest.clone();
        tokio::task::spawn_blocking(move || this.stored_blob(&digest))
            .await
            .map_err(anyhow::Error::from)?
    }

    /// A blob of a served image that is not a kept one.
    fn regenerated(&self, digest: &OciDigest) -> ApiResult<Option<BlobData>> {
        let exports = self.exports.lock().expect("poisoned");
        for cell in exports.values() {
            let Some(outgoing) = cell.get() else { continue };
            let found = outgoing.layers.iter().find(|b| b.digest == *digest);
            if let Some(OutBlob {
                data: OutData::Regenerated(tmp),
                size,
                ..
            }) = found
            {
                return Ok(Some(BlobData::File {
                    file: tmp.reopen()?,
                    size: *size,
                    verify: None,
                }));
            }
        }
        Ok(None)
    }

    fn stored_blob(&self, digest: &OciDigest) -> ApiResult<BlobData> {
        let staged = self.uploads.staged_path(digest);
        if let Ok(file) = File::open(&staged) {
            let size = file.metadata()?.len();
            return Ok(BlobData::File {
                file,
                size,
                verify: None,
            });
        }
        if let Some(kept) = open_kept_blob(&self.store, digest)? {
            return Ok(BlobData::File {
                file: kept.file,
                size: kept.size,
                verify: Some(digest.clone()),
            });
        }
        if let Some(config) = stored_config(&self.store, digest, MAX_CONFIG_SIZE)? {
            return Ok(BlobData::Bytes(config));
        }
        if let Some(manifest) = stored_manifest(&self.store, digest, MAX_MANIFEST_SIZE)? {
            return Ok(BlobData::Bytes(manifest));
        }
        Err(ApiError::new(
            Code::BlobUnknown,
            format!(
                "blob {digest} is not in the store (a layer whose original blob is not kept is \
                 served compressed again, under the digest its image's manifest names when read \
                 by tag)"
            ),
        ))
    }

    /// Whether the blob `digest` can be served.
    pub(crate) async fn has_blob(self: &Arc<Self>, digest: &OciDigest) -> ApiResult<Option<u64>> {
        match self.blob(digest).await {
            Ok(data) => Ok(Some(data.size())),
            Err(e) if e.code == Code::BlobUnknown => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The stored manifest a served digest stands for, when they differ.
    pub(crate) fn stored_digest_of(&self, served: &OciDigest) -> Option<OciDigest> {
        self.served.lock().expect("poisoned").get(served).cloned()
    }

    /// Forgets what was made ready to serve the stored image `stored` (it was pushed again,
    /// and may now have all its blobs kept, so that it is served as it came).
    pub(crate) fn forget(&self, stored: &OciDigest) {
        self.exports.lock().expect("poisoned").remove(stored);
        self.served
            .lock()
            .expect("poisoned")
            .retain(|_, s| s != stored);
    }
}

/// Whether a digest asked for is a served manifest's that stands for the stored `stored`.
fn served_as_differs(reference: &Reference, stored: &OciDigest) -> bool {
    matches!(reference, Reference::Digest(asked) if asked != stored)
}

/// The refs in repository `name` that hold the stored manifest `stored`: its tags `name:TAG`
/// and the ref of a push to `name` by digest.
pub(crate) fn repository_tags<H: FsVerityHashValue>(
    store: &Store<H>,
    name: &str,
    stored: &OciDigest,
) -> anyhow::Result<Vec<String>> {
    let prefix = format!("{name}:");
    let untagged = untagged_ref(name, stored);
    Ok(tags_of(store, stored)?
        .into_iter()
        .filter(|t| t.starts_with(&prefix) || *t == untagged)
        .collect())
}

/// Reads a whole blob into memory (configs and manifests named by a pushed manifest), bounded.
pub(crate) fn read_small(data: BlobData, max: u64) -> ApiResult<Vec<u8>> {
    match data {
        BlobData::Bytes(bytes) if bytes.len() as u64 <= max => Ok(bytes),
        BlobData::File { file, size, .. } if size <= max => {
            let mut bytes = Vec::with_capacity(size as usize);
            file.take(max + 1).read_to_end(&mut bytes)?;
            Ok(bytes)
        }
        _ => Err(ApiError::new(
            Code::ManifestInvalid,
            format!("a config larger than {max} bytes"),
        )),
    }
}
