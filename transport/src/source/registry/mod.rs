//! A native client of the OCI distribution API, for what skopeo's image proxy cannot do: byte
//! ranges of blobs (zstd:chunked partial pulls).
//!
//! It takes the same options as the proxy ([`SourceOptions`]): credentials
//! ([`auth`]), `--src-tls-verify` and certificate directories ([`tls`]). With TLS verification
//! off, a registry that does not speak TLS is reached over plain HTTP, as containers/image does.
//! The registry is the one the reference names: mirrors and rewrites from `registries.conf`
//! are not applied.
//!
//! Endpoints used (distribution spec v1.1):
//!
//! - `GET /v2/`: the ping, which also tells how to authenticate;
//! - `GET /v2/NAME/blobs/DIGEST` with `Range:` ([`byteranges`]);
//! - `GET /v2/NAME/manifests/REF`: exact manifest bytes;
//! - `GET /v2/NAME/referrers/DIGEST`, else the referrers tag `sha256-HEX` (an image index):
//!   the artifacts (deltas) whose `subject` is an image;
//! - pushing: `HEAD /v2/NAME/blobs/DIGEST`, then an upload ([`upload`]: `POST
//!   /v2/NAME/blobs/uploads/`, `PATCH` chunks, `PUT LOCATION?digest=DIGEST`), and
//!   `PUT /v2/NAME/manifests/REF`.

pub mod auth;
pub mod byteranges;
pub mod tls;
mod upload;

use std::ops::Range;

use anyhow::{Context, Result, bail};
use bytes::{Bytes, BytesMut};
use fn_error_context::context;
use reqwest::StatusCode;
use reqwest::header::{
    AUTHORIZATION, CONTENT_RANGE, CONTENT_TYPE, HeaderMap, RANGE, WWW_AUTHENTICATE,
};
use tokio::sync::OnceCell;

use crate::options::SourceOptions;
use crate::reference::DockerRef;
use crate::source::BlobStream;
use auth::Credentials;

/// Room allowed for the headers of each part of a multipart answer (distribution 2.8 uses
/// about 150 bytes; others add a Content-Type of their own).
const MULTIPART_PART_OVERHEAD: u64 = 512;

/// Room allowed for a multipart answer's preamble and closing boundary.
const MULTIPART_FIXED_OVERHEAD: u64 = 4096;

/// Largest token answer accepted: tokens are kilobytes.
const MAX_TOKEN_ANSWER: u64 = 1024 * 1024;

/// What a registry answered to a range request.
#[derive(Debug)]
pub enum RangeAnswer {
    /// The requested ranges, in the order asked; `wire_bytes` is the body size.
    Parts {
        /// One buffer per requested range.
        parts: Vec<Bytes>,
        /// Bytes of the answer's body (parts and multipart headers).
        wire_bytes: u64,
    },
    /// `200`: the server ignored `Range` and is sending the whole blob.
    Whole(BlobStream),
    /// `400` or `416` (the status): the server refuses this set of ranges.
    Refused(u16),
}

/// A client for one repository of one registry.
pub struct Client {
    http: reqwest::Client,
    target: DockerRef,
    insecure: bool,
    credentials: Option<Credentials>,
    /// Whether tokens are asked for with push access.
    push: bool,
    /// `https://ENDPOINT`, or `http://ENDPOINT` when allowed and the registry has no TLS.
    base: OnceCell<String>,
    /// The `Authorization` value the registry accepted (or asked for).
    authorization: std::sync::Mutex<Option<String>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("target", &self.target)
            .field("insecure", &self.insecure)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for the repository of `target`; nothing is sent yet.
    pub fn new(target: &DockerRef, options: &SourceOptions) -> Result<Self> {
        let credentials = auth::credentials_for(options, target.host(), target.repository())?;
        Ok(Self {
            http: tls::http_client(options, target.host())?,
            insecure: options.tls_verify == Some(false),
            credentials,
            push: false,
            target: target.clone(),
            base: OnceCell::new(),
            authorization: std::sync::Mutex::new(None),
        })
    }

    /// A client that may also push to the repository of `target`.
    pub fn new_for_push(target: &DockerRef, options: &SourceOptions) -> Result<Self> {
        Ok(Self {
            push: true,
            ..Self::new(target, options)?
        })
    }

    /// Pings the registry once: picks the scheme and authenticates when asked to.
    async fn base(&self) -> Result<&str> {
        let base = self
            .base
            .get_or_try_init(|| async {
                let https = format!("https://{}", self.target.endpoint());
                match self.http.get(format!("{https}/v2/")).send().await {
                    Ok(_) => Ok(https),
                    Err(e) if self.insecure => {
                        let http = format!("http://{}", self.target.endpoint());
                        log::debug!("{https}: {e}; trying {http}");
                        self.http
                            .get(format!("{http}/v2/"))
                            .send()
                            .await
                            .with_context(|| format!("Reaching {}", self.target.endpoint()))?;
                        Ok(http)
                    }
                    Err(e) => Err(anyhow::Error::new(e)
                        .context(format!("Reaching {} over HTTPS", self.target.endpoint()))),
                }
            })
            .await?;
        Ok(base)
    }

    /// Sends `GET PATH` with `headers`, authenticating once when the registry asks.
    async fn get(&self, path: &str, headers: HeaderMap) -> Result<reqwest::Response> {
        let url = format!("{}{path}", self.base().await?);
        self.send(reqwest::Method::GET, &url, headers, None).await
    }

    /// Sends a request (with `body`, which must be cheap to clone), authenticating once when
    /// the registry asks.
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        headers: HeaderMap,
        body: Option<Bytes>,
    ) -> Result<reqwest::Response> {
        let mut authenticated = false;
        loop {
            let mut request = self
                .http
                .request(method.clone(), url)
                .headers(headers.clone());
            if let Some(body) = &body {
                request = request.body(body.clone());
            }
            // Credentials go to the registry only, never to another host an upload location
            // or redirect names.
            let own = self
                .base
                .get()
                .is_some_and(|b| url == b || url.starts_with(&format!("{b}/")));
            if own && let Some(value) = self.authorization.lock().unwrap().clone() {
                request = request.header(AUTHORIZATION, value);
            }
            let response = request
                .send()
                .await
                .with_context(|| format!("{method} {url}"))?;
            if response.status() != StatusCode::UNAUTHORIZED {
                return Ok(response);
            }
            if authenticated {
                bail!(
                    "{}: authentication failed (HTTP 401){}",
                    self.target.host(),
                    if self.credentials.is_some() {
                        ""
                    } else {
                        "; no credentials were found for it"
                    }
                );
            }
            self.authenticate(&response).await?;
            authenticated = true;
        }
    }

    /// Answers a `401` challenge: Basic credentials, or a Bearer token from the realm.
    #[context("Authenticating to {}", self.target.host())]
    async fn authenticate(&self, response: &reqwest::Response) -> Result<()> {
        let header = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .context("HTTP 401 without WWW-Authenticate")?
            .to_str()
            .context("WWW-Authenticate is not text")?;
        let challenge = auth::parse_challenge(header)?;
        let value = match challenge.scheme.as_str() {
            "basic" => self
                .credentials
                .as_ref()
                .context("the registry requires credentials (give --src-creds or --authfile)")?
                .basic(),
            "bearer" => {
                let realm = challenge
                    .params
                    .get("realm")
                    .context("Bearer challenge without realm")?;
                anyhow::ensure!(
                    realm.starts_with("https://") || realm.starts_with("http://"),
                    "token realm {realm:?} is not an HTTP URL"
                );
                let access = if self.push { "pull,push" } else { "pull" };
                let scope = format!("repository:{}:{access}", self.target.repository());
                let mut query = vec![("scope", scope.as_str())];
                if let Some(service) = challenge.params.get("service") {
                    query.push(("service", service));
                }
                let mut request = self.http.get(realm).query(&query);
                if let Some(creds) = &self.credentials {
                    request = request.header(AUTHORIZATION, creds.basic());
                }
                let answer = request.send().await.context("Asking for a token")?;
                let status = answer.status();
                anyhow::ensure!(
                    status.is_success(),
                    "the token server answered HTTP {status}"
                );
                #[derive(serde::Deserialize)]
                struct Token {
                    token: Option<String>,
                    access_token: Option<String>,
                }
                let body = read_limited(answer, MAX_TOKEN_ANSWER).await?;
                let token: Token = serde_json::from_slice(&body).context("Reading the token")?;
                let token = token
                    .token
                    .or(token.access_token)
                    .context("the token server sent no token")?;
                format!("Bearer {token}")
            }
            other => bail!("unsupported authentication scheme {other:?}"),
        };
        *self.authorization.lock().unwrap() = Some(value);
        Ok(())
    }

    /// Asks for `ranges` (half-open, sorted, non-overlapping) of blob `digest`.
    #[context("Fetching {} byte ranges of {digest}", ranges.len())]
    pub async fn blob_ranges(&self, digest: &str, ranges: &[Range<u64>]) -> Result<RangeAnswer> {
        let mut headers = HeaderMap::new();
        headers.insert(RANGE, byteranges::range_header(ranges).parse()?);
        let path = format!("/v2/{}/blobs/{digest}", self.target.repository());
        let response = self.get(&path, headers).await?;
        let status = response.status();
        match status {
            StatusCode::OK => return Ok(RangeAnswer::Whole(body_reader(response))),
            StatusCode::PARTIAL_CONTENT => {}
            StatusCode::BAD_REQUEST | StatusCode::RANGE_NOT_SATISFIABLE => {
                return Ok(RangeAnswer::Refused(status.as_u16()));
            }
            StatusCode::NOT_FOUND => {
                bail!("blob {digest} not found in {}", self.target.repository())
            }
            other => bail!("the registry answered HTTP {other}"),
        }
        let header = |name| {
            response
                .headers()
                .get(name)
                .map(|v: &reqwest::header::HeaderValue| v.to_str().unwrap_or_default().to_owned())
        };
        let content_type = header(CONTENT_TYPE).unwrap_or_default();
        let content_range = header(CONTENT_RANGE);
        let payload: u64 = ranges.iter().map(|r| r.end - r.start).sum();
        let limit =
            payload + MULTIPART_FIXED_OVERHEAD + MULTIPART_PART_OVERHEAD * ranges.len() as u64;
        let body = read_limited(response, limit).await?;
        let wire_bytes = body.len() as u64;
        let parts = match byteranges::multipart_boundary(&content_type)? {
            Some(boundary) => byteranges::parse_multipart(&body, &boundary)?,
            None => {
                let range = byteranges::parse_content_range(
                    &content_range.context("HTTP 206 without Content-Range")?,
                )?;
                anyhow::ensure!(
                    range.end - range.start == wire_bytes,
                    "Content-Range {range:?} but {wire_bytes} bytes of body"
                );
                vec![(range, body)]
            }
        };
        Ok(RangeAnswer::Parts {
            parts: byteranges::select(&parts, ranges)?,
            wire_bytes,
        })
    }
}

impl Client {
    /// The manifest `reference` (tag or digest) names, exactly as stored: `None` when there is
    /// none. A digest reference is checked against the bytes.
    #[context("Reading manifest {reference} of {}", self.target.repository())]
    pub async fn manifest(&self, reference: &str) -> Result<Option<(Vec<u8>, String)>> {
        let mut headers = HeaderMap::new();
        headers.insert(reqwest::header::ACCEPT, MANIFEST_ACCEPT.parse()?);
        let path = format!("/v2/{}/manifests/{reference}", self.target.repository());
        let response = self.get(&path, headers).await?;
        match response.status() {
            StatusCode::NOT_FOUND => return Ok(None),
            s if s.is_success() => {}
            other => bail!("the registry answered HTTP {other}"),
        }
        let media_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = read_limited(response, crate::blob::MAX_MANIFEST_SIZE).await?;
        if reference.starts_with("sha256:") {
            let actual = skiff_storage::digest::digest_of(&body).to_string();
            anyhow::ensure!(actual == reference, "the registry sent manifest {actual}");
        }
        Ok(Some((body.to_vec(), media_type)))
    }

    /// The descriptors of the artifacts of type `artifact_type` whose subject is `digest`: from
    /// the referrers API, else from the referrers tag (`sha256-HEX`).
    #[context("Looking for referrers of {digest}")]
    pub async fn referrers(
        &self,
        digest: &str,
        artifact_type: &str,
    ) -> Result<Vec<serde_json::Value>> {
        let path = format!(
            "/v2/{}/referrers/{digest}?artifactType={artifact_type}",
            self.target.repository()
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::ACCEPT,
            "application/vnd.oci.image.index.v1+json".parse()?,
        );
        let response = self.get(&path, headers).await?;
        let index: serde_json::Value = if response.status().is_success() {
            let body = read_limited(response, crate::blob::MAX_MANIFEST_SIZE).await?;
            serde_json::from_slice(&body).context("malformed referrers index")?
        } else {
            match self.manifest(&referrers_tag(digest)).await? {
                Some((bytes, _)) => {
                    serde_json::from_slice(&bytes).context("malformed referrers tag index")?
                }
                None => return Ok(Vec::new()),
            }
        };
        Ok(index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| {
                d["artifactType"] == artifact_type || d["artifactType"] == EMPTY_CONFIG_MEDIA_TYPE
            })
            .cloned()
            .collect())
    }

    /// Whether the repository has blob `digest`.
    pub async fn has_blob(&self, digest: &str) -> Result<bool> {
        let url = format!(
            "{}/v2/{}/blobs/{digest}",
            self.base().await?,
            self.target.repository()
        );
        let response = self
            .send(reqwest::Method::HEAD, &url, HeaderMap::new(), None)
            .await?;
        Ok(response.status().is_success())
    }

    /// Stores manifest `bytes` (of `media_type`) under `reference` (a tag or its digest).
    /// Returns whether the registry indexed its subject itself (`OCI-Subject`), so that no
    /// referrers tag is needed.
    #[context("Pushing manifest {reference}")]
    pub async fn push_manifest(
        &self,
        reference: &str,
        bytes: Vec<u8>,
        media_type: &str,
    ) -> Result<bool> {
        let url = format!(
            "{}/v2/{}/manifests/{reference}",
            self.base().await?,
            self.target.repository()
        );
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, media_type.parse()?);
        let response = self
            .send(
                reqwest::Method::PUT,
                &url,
                headers,
                Some(Bytes::from(bytes)),
            )
            .await?;
        anyhow::ensure!(
            response.status() == StatusCode::CREATED,
            "HTTP {}",
            response.status()
        );
        Ok(response.headers().contains_key("oci-subject"))
    }
}

/// The media type of the empty config (`{}`) that artifacts such as oci-deltas carry. Some
/// registries (go-containerregistry's, to v0.22 at least) list a referrer's config media type as
/// its `artifactType`, whatever the manifest says, and ignore the `artifactType` filter; their
/// entries with this type are kept, and the caller reads the manifest to know what it is.
const EMPTY_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";

/// The tag under which a registry without the referrers API lists the referrers of `digest`
/// (OCI distribution spec, "referrers tag schema").
pub fn referrers_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

/// Manifest types asked for: OCI and Docker, images and indexes.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// Reads a response body of at most `limit` bytes.
async fn read_limited(mut response: reqwest::Response, limit: u64) -> Result<Bytes> {
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.context("Reading the answer")? {
        anyhow::ensure!(
            (body.len() + chunk.len()) as u64 <= limit,
            "the answer is longer than the {limit} bytes asked for"
        );
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The body of `response` as a blob stream, read by a task of its own.
fn body_reader(mut response: reqwest::Response) -> BlobStream {
    let (tx, stream) = crate::io::channel();
    tokio::spawn(async move {
        loop {
            let item = match response.chunk().await {
                Ok(Some(chunk)) => Ok(chunk),
                Ok(None) => return,
                Err(e) => Err(std::io::Error::other(e)),
            };
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                return;
            }
        }
    });
    BlobStream::new(stream)
}
