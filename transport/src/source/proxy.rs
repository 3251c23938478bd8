//! Reading images through skopeo's image proxy (`skopeo experimental-image-proxy`).
//!
//! Only protocol 0.2.3 calls are used (OpenImageOptional, GetManifest, GetBlob), so Debian
//! bookworm's skopeo 1.9.3 works. The proxy checks blob digests; skiff checks them again, and
//! the DiffIDs, which the proxy does not.

use std::sync::Arc;

use anyhow::{Context, Result};
use containers_image_proxy::oci_spec::image::Descriptor;
use containers_image_proxy::{ImageProxy, ImageProxyConfig, OpenedImage};
use fn_error_context::context;

use super::BlobStream;
use super::{Resolved, ResolvedImage, parse_config, parse_manifest};
use crate::blob::{MAX_CONFIG_SIZE, check_small, read_small_blob, verify_blob};
use crate::options::{SourceNotFound, SourceOptions};
use crate::reference::{DockerRef, ImageRef};

/// An image opened through the proxy.
pub struct ProxySource {
    proxy: ImageProxy,
    image: OpenedImage,
    reference: String,
    /// For `docker://` images: the registry name and the options to reach it natively.
    registry: Option<(DockerRef, SourceOptions)>,
    /// The native client, made on first use (byte ranges).
    client: tokio::sync::OnceCell<Arc<crate::source::registry::Client>>,
}

impl std::fmt::Debug for ProxySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxySource")
            .field("reference", &self.reference)
            .finish_non_exhaustive()
    }
}

impl ProxySource {
    /// The reference the proxy opened.
    pub(crate) fn reference(&self) -> &str {
        &self.reference
    }

    /// Starts skopeo's proxy and opens `reference`.
    #[context("Opening {reference} through skopeo")]
    pub async fn open(reference: &ImageRef, options: &SourceOptions) -> Result<Self> {
        check_local_path(reference)?;
        let mut config = ImageProxyConfig::default();
        config.skopeo_cmd = Some(super::skopeo::command(options));
        // Anonymous access means no credentials from any auth file either.
        config.authfile = options.authfile.clone().filter(|_| !options.no_creds);
        config.auth_anonymous = options.no_creds;
        config.certificate_directory = options.cert_dir.clone();
        config.insecure_skip_tls_verification = options.tls_verify.map(|v| !v);
        // skiff checks the policy itself (crate::policy): the proxy of skopeo 1.9.3 does not.
        config.insecure_policy = Some(true);
        if let Some((user, password)) = &options.creds {
            config.authfile = None;
            // The proxy reads it through an inherited descriptor: the path can go now.
            let file = super::skopeo::creds_authfile(reference, user, password)?;
            config.auth_data = Some(file.into_file());
        }
        let proxy = ImageProxy::new_with_config(config)
            .await
            .context("Starting skopeo's image proxy")?;
        let name = reference.to_string();
        log::debug!("skopeo proxy protocol {}", proxy.protocol_version());
        let image = open_image(&proxy, &name).await?;
        let registry = match reference {
            ImageRef::Docker(docker) => Some((docker.clone(), options.clone())),
            _ => None,
        };
        Ok(Self {
            proxy,
            image,
            reference: name,
            registry,
            client: tokio::sync::OnceCell::new(),
        })
    }

    /// Reads a small blob whole, verified (its size already checked against the bound).
    pub(super) async fn read_small_blob(&self, desc: &Descriptor, max: u64) -> Result<Vec<u8>> {
        let (reader, driver) = self
            .proxy
            .get_blob(&self.image, desc.digest(), desc.size())
            .await?;
        let (data, driven) = tokio::join!(read_small_blob(reader, desc, max), driver);
        let data = data?;
        driven?;
        Ok(data)
    }

    /// Streams a blob through the proxy (see [`super::Source::open_blob`]), from a task of its
    /// own that holds the proxy's request open until skopeo has said whether it succeeded.
    pub(super) fn open_blob(this: &Arc<Self>, desc: &Descriptor) -> BlobStream {
        let (tx, reader) = crate::io::channel();
        let (this, desc) = (this.clone(), desc.clone());
        tokio::spawn(async move {
            if let Err(e) = this.pump_blob(&desc, &tx).await {
                let _ = tx.send(Err(std::io::Error::other(format!("{e:#}")))).await;
            }
        });
        BlobStream::new(reader)
    }

    async fn pump_blob(&self, desc: &Descriptor, tx: &crate::io::ChunkSender) -> Result<()> {
        let (reader, driver) = self
            .proxy
            .get_blob(&self.image, desc.digest(), desc.size())
            .await?;
        // The pump owns the reader: when it stops, skopeo's side of the pipe ends. The sender
        // stays open until skopeo's verdict is in, so the consumer never takes a failed
        // transfer of a blob of the right size for a complete one. A blob of the wrong size
        // just ends: the consumer's size check explains it better than skopeo's broken pipe.
        let (sent, driven) = tokio::join!(crate::io::pump(reader, tx), driver);
        // A consumer that stopped reading makes the proxy's side fail: not an error here.
        if let Err(e) = driven
            && sent == Some(desc.size())
        {
            return Err(anyhow::anyhow!("{}", clean_proxy_error(&e.to_string())));
        }
        Ok(())
    }

    /// The manifest (converted to OCI by the proxy when the source has a Docker v2s2 one) and
    /// the config.
    #[context("Reading manifest and config of {}", self.reference)]
    pub async fn resolve(&self) -> Result<Resolved> {
        let (source_digest, manifest_json) =
            self.proxy
                .fetch_manifest_raw_oci(&self.image)
                .await
                .map_err(|e| classify_open_error(&self.reference, &e))?;
        if crate::format::oci_delta::is_delta(&manifest_json) {
            anyhow::ensure!(
                skiff_storage::digest::digest_of(&manifest_json).to_string() == source_digest,
                "the delta manifest of {} does not match its digest {source_digest}",
                self.reference
            );
            return Ok(Resolved::Delta(manifest_json));
        }
        let manifest = parse_manifest(&manifest_json, &self.reference)?;
        // The proxy returns the source's manifest digest with the manifest it converted to OCI;
        // a difference means the config was converted too.
        let converted =
            skiff_storage::digest::digest_of(&manifest_json).to_string() != source_digest;
        let config_json = self
            .config(manifest.config(), converted)
            .await
            .context("Reading the config")?;
        let config = parse_config(&config_json, &manifest)?;
        Ok(Resolved::Image(Box::new(ResolvedImage {
            manifest_json,
            manifest,
            config_json,
            config,
        })))
    }

    /// The config blob, verified against the manifest. The source's own blob, unless the proxy
    /// `converted` a Docker manifest to OCI: then the config was converted with it and exists
    /// only in the proxy (GetFullConfig); its digest is checked all the same.
    async fn config(&self, desc: &Descriptor, converted: bool) -> Result<Vec<u8>> {
        check_small(desc, MAX_CONFIG_SIZE)?;
        if converted {
            let data = self.proxy.fetch_config_raw(&self.image).await?;
            verify_blob(&data, desc)?;
            return Ok(data);
        }
        let (reader, driver) = self
            .proxy
            .get_blob(&self.image, desc.digest(), desc.size())
            .await?;
        let (data, driven) = tokio::join!(read_small_blob(reader, desc, MAX_CONFIG_SIZE), driver);
        driven?;
        data
    }
}

impl ProxySource {
    /// Whether the image is in a registry.
    pub(super) fn is_registry(&self) -> bool {
        self.registry.is_some()
    }

    /// The native registry client for this image's repository: `None` when the image is not in
    /// a registry.
    pub async fn registry_client(&self) -> Result<Option<Arc<crate::source::registry::Client>>> {
        let Some((name, options)) = &self.registry else {
            return Ok(None);
        };
        let client = self
            .client
            .get_or_try_init(|| async {
                crate::source::registry::Client::new(name, options).map(Arc::new)
            })
            .await?;
        Ok(Some(client.clone()))
    }
}

/// The first proxy protocol with OpenImageOptional, which reports a missing image as such
/// (skopeo 1.9.3 speaks 0.2.3 and has only OpenImage).
const OPEN_OPTIONAL_PROTOCOL: (u64, u64, u64) = (0, 2, 4);

/// Opens an image, telling "no such image" apart from other failures: by OpenImageOptional
/// where the proxy's protocol has it, else by the reason skopeo gives.
async fn open_image(proxy: &ImageProxy, name: &str) -> Result<OpenedImage> {
    let v = proxy.protocol_version();
    if (v.major, v.minor, v.patch) >= OPEN_OPTIONAL_PROTOCOL {
        return match proxy.open_image_optional(name).await {
            Ok(Some(image)) => Ok(image),
            Ok(None) => Err(SourceNotFound(name.to_owned()).into()),
            Err(e) => Err(anyhow::anyhow!("{}", clean_proxy_error(&e.to_string()))),
        };
    }
    proxy
        .open_image(name)
        .await
        .map_err(|e| classify_open_error(name, &e))
}

/// A local source path that does not exist, as [`SourceNotFound`], checked before skopeo
/// runs (skopeo's own report is an OS error like any other).
fn check_local_path(reference: &ImageRef) -> Result<()> {
    let path = match reference {
        ImageRef::Dir(path) => path.as_path(),
        ImageRef::OciArchive { path, .. } | ImageRef::Oci { path, .. } => path.as_path(),
        ImageRef::DockerArchive(spec) => {
            std::path::Path::new(spec.split(':').next().unwrap_or(spec))
        }
        _ => return Ok(()),
    };
    match path.try_exists() {
        Ok(false) => Err(SourceNotFound(reference.to_string()).into()),
        _ => Ok(()),
    }
}

/// A [`SourceNotFound`] when the proxy's request failed because skopeo found no such image
/// (its reason names the registry's or the layout's "unknown" answer); else the message.
fn classify_open_error(name: &str, error: &containers_image_proxy::Error) -> anyhow::Error {
    let message = clean_proxy_error(&error.to_string());
    let not_found = match error {
        containers_image_proxy::Error::RequestInitiationFailure { error, .. } => {
            NOT_FOUND_REASONS.iter().any(|m| error.contains(m))
        }
        _ => false,
    };
    if not_found {
        anyhow::Error::new(SourceNotFound(name.to_owned())).context(message)
    } else {
        anyhow::anyhow!("{message}")
    }
}

/// How skopeo 1.9.3 words "the image does not exist" in a failed request: the distribution
/// error codes MANIFEST_UNKNOWN / NAME_UNKNOWN, and an OCI layout without the tag. Nothing
/// broader: an OS error (a file missing inside an archive, a missing certificate directory)
/// is not a missing image; missing source paths are checked before skopeo runs.
const NOT_FOUND_REASONS: &[&str] = &[
    "manifest unknown",
    "name unknown",
    "repository name not known",
    "no descriptor found for reference",
];

/// skopeo's errors arrive wrapped in the proxy protocol's; keep the part a user can act on.
fn clean_proxy_error(message: &str) -> String {
    message.trim().to_owned()
}
