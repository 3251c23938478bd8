//! Where images come from: one interface, several implementations.
//!
//! - [`proxy::ProxySource`]: skopeo's image proxy, for every transport skopeo reads. Works with
//!   proxy protocol 0.2.3 (Debian bookworm's skopeo 1.9.3).
//! - [`layout::LayoutSource`]: `oci:` and uncompressed `oci-archive:` read directly, without
//!   skopeo: exact manifests and indexes, random access to blobs.
//! - For `docker://` images, the proxy reads manifests and whole blobs, and the native
//!   [registry client](crate::source::registry) byte ranges ([`Source::range_reader`]).
//! - [`containers_storage::ContainersStorageSource`]: podman's overlay store read directly; its
//!   layers come unpacked ([`Source::unpacked`]), not as blobs.
//!
//! A source only yields bytes and never sees the store: manifest and config bytes verified
//! against their digests, blob streams ([`BlobStream`]) and byte ranges that the pull's
//! converters verify as they read them, and referrers.

pub(crate) mod containers_storage;
pub mod layout;
pub(crate) mod proxy;
pub(crate) mod ranges;
pub(crate) mod registry;
pub mod skopeo;

use std::sync::Arc;

use anyhow::Result;
use containers_image_proxy::oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest};
use skiff_storage::OciDigest;

use crate::blob::check_small;
pub use crate::io::BlobStream;
use crate::options::SourceOptions;
use crate::reference::ImageRef;
use crate::source::ranges::RangeSource;

/// The manifest and config of the image to copy, verified.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The manifest bytes that will be stored (their sha256 is the stored manifest digest).
    pub manifest_json: Vec<u8>,
    /// The manifest, parsed.
    pub manifest: ImageManifest,
    /// The config bytes (their sha256 is the manifest's config digest).
    pub config_json: Vec<u8>,
    /// The config, parsed.
    pub config: ImageConfiguration,
}

/// What a reference names: an image, or an oci-delta artifact that rebuilds one.
#[derive(Debug, Clone)]
pub enum Resolved {
    /// An image.
    Image(Box<ResolvedImage>),
    /// A delta artifact: its manifest bytes, verified against their digest.
    Delta(Vec<u8>),
}

/// An open image source.
#[derive(Debug)]
pub enum Source {
    /// Through skopeo's image proxy.
    Proxy(Arc<proxy::ProxySource>),
    /// An OCI layout read directly.
    Layout(layout::LayoutSource),
    /// podman's overlay store read directly.
    ContainersStorage(Arc<containers_storage::ContainersStorageSource>),
}

impl Source {
    /// Opens `reference`: `oci:` and uncompressed `oci-archive:` directly, everything else
    /// through skopeo. Fails with [`crate::options::SourceNotFound`] when there is no such image.
    pub async fn open(reference: &ImageRef, options: &SourceOptions) -> Result<Self> {
        crate::policy::check_reference(reference, options)?;
        match reference {
            ImageRef::Oci { .. } | ImageRef::OciArchive { .. } => {
                // Opening an archive reads every tar header in it.
                let (owned, opts) = (reference.clone(), options.clone());
                let opened =
                    tokio::task::spawn_blocking(move || layout::LayoutSource::open(&owned, &opts))
                        .await??;
                if let Some(layout) = opened {
                    return Ok(Self::Layout(layout));
                }
                Ok(Self::Proxy(Arc::new(
                    proxy::ProxySource::open(reference, options).await?,
                )))
            }
            ImageRef::ContainersStorage(spec) => {
                let (owned, opts) = (spec.clone(), options.clone());
                let opened = tokio::task::spawn_blocking(move || {
                    containers_storage::ContainersStorageSource::open(&owned, &opts)
                })
                .await?;
                match opened {
                    Ok(store) => Ok(Self::ContainersStorage(Arc::new(store))),
                    Err(e) => match e.downcast_ref::<containers_storage::NativeUnavailable>() {
                        Some(why) => {
                            log::warn!("{reference}: {why}; reading it through skopeo instead");
                            let explicit = ImageRef::ContainersStorage(why.proxy_spec.clone());
                            Ok(Self::Proxy(Arc::new(
                                proxy::ProxySource::open(&explicit, options).await?,
                            )))
                        }
                        None => Err(e),
                    },
                }
            }
            ImageRef::Composefs { .. } => {
                anyhow::bail!("copying out of composefs storage ({reference}) is not supported yet")
            }
            _ => Ok(Self::Proxy(Arc::new(
                proxy::ProxySource::open(reference, options).await?,
            ))),
        }
    }

    /// The reference the source was opened by (`docker://…`, `oci:…`), for messages.
    pub fn reference(&self) -> &str {
        match self {
            Self::Proxy(p) => p.reference(),
            Self::Layout(l) => l.reference(),
            Self::ContainersStorage(c) => c.reference(),
        }
    }

    /// How the source is read, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Proxy(_) => "skopeo image proxy",
            Self::Layout(_) => "OCI layout (direct)",
            Self::ContainersStorage(_) => "containers-storage (direct)",
        }
    }

    /// Reads and verifies the manifest and config of the image, or the manifest of a delta.
    pub async fn resolve(&self) -> Result<Resolved> {
        match self {
            Self::Proxy(p) => p.resolve().await,
            Self::Layout(l) => l.resolve().await,
            Self::ContainersStorage(c) => c.resolve(),
        }
    }

    /// Reads a small blob (a manifest or config carried by a delta) whole, verified.
    pub async fn read_small_blob(&self, desc: &Descriptor, max: u64) -> Result<Vec<u8>> {
        check_small(desc, max)?;
        match self {
            Self::Layout(l) => l.read_small_blob(desc, max).await,
            Self::Proxy(p) => p.read_small_blob(desc, max).await,
            Self::ContainersStorage(c) => c.read_small_blob(desc.digest().as_ref()),
        }
    }

    /// Starts streaming the blob `desc` (not verified here: the consumer checks what it
    /// reads). The source stops when the stream is dropped.
    pub fn open_blob(&self, desc: &Descriptor) -> Result<BlobStream> {
        skiff_storage::digest::require_sha256(desc.digest())?;
        match self {
            Self::Layout(l) => l.open_blob(desc),
            Self::Proxy(p) => Ok(proxy::ProxySource::open_blob(p, desc)),
            Self::ContainersStorage(c) => anyhow::bail!(
                "{}: containers-storage holds layers unpacked, not blob {}",
                c.reference(),
                desc.digest()
            ),
        }
    }

    /// A reader of byte ranges of `desc`'s blob: `None` when this source cannot serve them.
    pub async fn range_reader(&self, desc: &Descriptor) -> Result<Option<RangeSource>> {
        match self {
            Self::Layout(l) => Ok(Some(RangeSource::Layout(Arc::new(std::sync::Mutex::new(
                l.blob_ranges(desc)?,
            ))))),
            Self::Proxy(p) => Ok(p
                .registry_client()
                .await?
                .map(|client| RangeSource::Registry {
                    client,
                    digest: desc.digest().to_string(),
                })),
            Self::ContainersStorage(_) => Ok(None),
        }
    }

    /// Whether the image comes from a registry (whose reads cost more than a local layout's).
    pub fn is_remote(&self) -> bool {
        matches!(self, Self::Proxy(p) if p.is_registry())
    }

    /// The descriptors (as JSON) of the artifacts of type `artifact_type` whose subject is
    /// the manifest `digest`: empty when the source has no referrers (not a registry).
    pub async fn referrers(
        &self,
        digest: &OciDigest,
        artifact_type: &str,
    ) -> Result<Vec<serde_json::Value>> {
        match self {
            Self::Proxy(p) => match p.registry_client().await? {
                Some(client) => client.referrers(digest.as_ref(), artifact_type).await,
                None => Ok(Vec::new()),
            },
            Self::Layout(_) | Self::ContainersStorage(_) => Ok(Vec::new()),
        }
    }

    /// The manifest `digest` of the image's repository, verified against the digest: `None`
    /// when there is none (or the source cannot look manifests up by digest).
    pub async fn manifest_by_digest(&self, digest: &OciDigest) -> Result<Option<Vec<u8>>> {
        match self {
            Self::Proxy(p) => match p.registry_client().await? {
                Some(client) => Ok(client
                    .manifest(digest.as_ref())
                    .await?
                    .map(|(bytes, _)| bytes)),
                None => Ok(None),
            },
            Self::Layout(_) | Self::ContainersStorage(_) => Ok(None),
        }
    }

    /// The store of unpacked layers the image's layers are read from instead of blobs
    /// (containers-storage), if the source is one.
    pub(crate) fn unpacked(&self) -> Option<&Arc<containers_storage::ContainersStorageSource>> {
        match self {
            Self::ContainersStorage(c) => Some(c),
            _ => None,
        }
    }
}

/// Parses manifest bytes, refusing what is not a single-image manifest.
pub(crate) fn parse_manifest(bytes: &[u8], what: &str) -> Result<ImageManifest> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| anyhow::anyhow!("{what}: manifest is not JSON: {e}"))?;
    let media_type = value
        .get("mediaType")
        .and_then(|m| m.as_str())
        .unwrap_or_default();
    if media_type.contains("manifest.list") || media_type.contains("image.index") {
        anyhow::bail!("{what}: expected an image manifest, found an index ({media_type})");
    }
    serde_json::from_value(value)
        .map_err(|e| anyhow::anyhow!("{what}: malformed image manifest: {e}"))
}

/// Parses config bytes and checks that they name one DiffID per layer.
pub(crate) fn parse_config(bytes: &[u8], manifest: &ImageManifest) -> Result<ImageConfiguration> {
    let config: ImageConfiguration = serde_json::from_slice(bytes)
        .map_err(|e| anyhow::anyhow!("malformed image config: {e}"))?;
    let diff_ids = config.rootfs().diff_ids().len();
    let layers = manifest.layers().len();
    anyhow::ensure!(
        diff_ids == layers,
        "the config lists {diff_ids} DiffIDs for the manifest's {layers} layers"
    );
    Ok(config)
}
