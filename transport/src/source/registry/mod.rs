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
//! - `GET /v2/NAME/blobs/DIGEST`: a whole blob (mirroring);
//! - `GET /v2/NAME/manifests/REF`: exact manifest bytes; `HEAD` to learn a tag's digest;
//! - `GET /v2/NAME/tags/list`, following `Link: <...>; rel="next"` pages;
//! - `GET /v2/NAME/referrers/DIGEST`, else the referrers tag `sha256-HEX` (an image index):
//!   the artifacts (deltas) whose `subject` is an image;
//! - pushing: `HEAD /v2/NAME/blobs/DIGEST`, then an upload ([`upload`]: `POST
//!   /v2/NAME/blobs/uploads/`, `PATCH` chunks, `PUT LOCATION?digest=DIGEST`), and
//!   `PUT /v2/NAME/manifests/REF`; a cross-repository mount, `POST
//!   /v2/NAME/blobs/uploads/?mount=DIGEST&from=OTHER` (`201` when mounted).

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
    /// Other repositories of the registry whose `pull` access tokens also ask for (the
    /// sources of cross-repository mounts).
    also_pull: Vec<String>,
    /// Requests sent, authentication and retries included.
    requests: std::sync::atomic::AtomicU64,
}

/// A registry answer of a status the request does not expect.
#[derive(Debug, thiserror::Error)]
#[error("the registry answered HTTP {status}{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
pub struct UnexpectedStatus {
    /// The status.
    pub status: u16,
    /// The first error of the registry's JSON error body (`CODE: message`), if it sent one.
    pub detail: Option<String>,
}

impl UnexpectedStatus {
    /// Reads what the registry says of its failure from `response`.
    async fn of(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let detail = read_limited(response, MAX_ERROR_BODY)
            .await
            .ok()
            .and_then(|body| {
                let value: serde_json::Value = serde_json::from_slice(&body).ok()?;
                let first = &value["errors"][0];
                let code = first["code"].as_str()?;
                Some(match first["message"].as_str() {
                    Some(message) => format!("{code}: {message}"),
                    None => code.to_owned(),
                })
            });
        Self { status, detail }
    }
}

/// Largest error body read for its message.
const MAX_ERROR_BODY: u64 = 64 * 1024;

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
            also_pull: Vec::new(),
            requests: Default::default(),
        })
    }

    /// This client, whose tokens also grant `pull` on `repository` of the same registry (to
    /// mount blobs from it).
    pub fn also_pulling(mut self, repository: &str) -> Self {
        self.also_pull.push(repository.to_owned());
        self
    }

    /// The repository this client works on.
    pub fn target(&self) -> &DockerRef {
        &self.target
    }

    /// Requests sent so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
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
            self.requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
                .with_context(|| {
                    let flags = if self.push {
                        "--dest-creds or --dest-authfile"
                    } else {
                        "--src-creds or --authfile"
                    };
                    format!("the registry requires credentials (give {flags})")
                })?
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
                let others: Vec<String> = self
                    .also_pull
                    .iter()
                    .map(|r| format!("repository:{r}:pull"))
                    .collect();
                let mut query = vec![("scope", scope.as_str())];
                query.extend(others.iter().map(|s| ("scope", s.as_str())));
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
            _ => return Err(UnexpectedStatus::of(response).await.into()),
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
    #[context("Pushing manifest {reference}")]
    pub async fn push_manifest(
        &self,
        reference: &str,
        bytes: Vec<u8>,
        media_type: &str,
    ) -> Result<PushedManifest> {
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
        if response.status() != StatusCode::CREATED {
            return Err(UnexpectedStatus::of(response).await.into());
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Ok(PushedManifest {
            digest: header("docker-content-digest"),
            indexes_subject: header("oci-subject").is_some(),
        })
    }

    /// The digest of the manifest `reference` names (`HEAD`), `None` when there is none.
    #[context("Looking up manifest {reference} of {}", self.target.repository())]
    pub async fn manifest_digest(&self, reference: &str) -> Result<Option<String>> {
        let url = format!(
            "{}/v2/{}/manifests/{reference}",
            self.base().await?,
            self.target.repository()
        );
        let mut headers = HeaderMap::new();
        headers.insert(reqwest::header::ACCEPT, MANIFEST_ACCEPT.parse()?);
        let response = self
            .send(reqwest::Method::HEAD, &url, headers, None)
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => match response.headers().get("docker-content-digest") {
                Some(digest) => Ok(Some(digest.to_str()?.to_owned())),
                // A registry that does not say: the bytes tell.
                None => Ok(self
                    .manifest(reference)
                    .await?
                    .map(|(bytes, _)| skiff_storage::digest::digest_of(&bytes).to_string())),
            },
            _ => Err(UnexpectedStatus::of(response).await.into()),
        }
    }

    /// The whole blob `digest`, streamed as it arrives (unchecked: the reader checks it).
    #[context("Fetching blob {digest}")]
    pub async fn blob(&self, digest: &str) -> Result<Option<BlobStream>> {
        let path = format!("/v2/{}/blobs/{digest}", self.target.repository());
        let response = self.get(&path, HeaderMap::new()).await?;
        match response.status() {
            StatusCode::OK => Ok(Some(body_reader(response))),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(UnexpectedStatus::of(response).await.into()),
        }
    }

    /// Every tag of the repository, in the registry's order.
    #[context("Listing the tags of {}", self.target.name())]
    pub async fn tags(&self) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct TagList {
            tags: Option<Vec<String>>,
        }
        let base = self.base().await?.to_owned();
        let mut next = Some(format!("/v2/{}/tags/list", self.target.repository()));
        let mut tags = Vec::new();
        let mut pages = 0;
        while let Some(path) = next.take() {
            pages += 1;
            anyhow::ensure!(
                pages <= MAX_TAG_PAGES,
                "more than {MAX_TAG_PAGES} pages of tags"
            );
            let response = self.get(&path, HeaderMap::new()).await?;
            if !response.status().is_success() {
                return Err(UnexpectedStatus::of(response).await.into());
            }
            next = response
                .headers()
                .get(reqwest::header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(next_page)
                .map(|link| link.strip_prefix(&base).unwrap_or(&link).to_owned());
            if let Some(link) = &next {
                anyhow::ensure!(link.starts_with('/'), "a tag page on another host: {link}");
            }
            let body = read_limited(response, crate::blob::MAX_MANIFEST_SIZE).await?;
            let page: TagList = serde_json::from_slice(&body).context("malformed tag list")?;
            tags.extend(page.tags.unwrap_or_default());
        }
        Ok(tags)
    }

    /// The referrers of `digest` as the referrers API lists them (every artifact type), or
    /// `None` when the registry has no such API.
    #[context("Listing the referrers of {digest}")]
    pub async fn referrers_listed(&self, digest: &str) -> Result<Option<Vec<serde_json::Value>>> {
        let path = format!("/v2/{}/referrers/{digest}", self.target.repository());
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::ACCEPT,
            "application/vnd.oci.image.index.v1+json".parse()?,
        );
        let response = self.get(&path, headers).await?;
        let is_index = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/vnd.oci.image.index.v1+json"));
        match response.status().as_u16() {
            200 if is_index => {}
            // No referrers API: the endpoint is unknown (404; 400, 405 or 406 from some
            // registries), or answered as something other than an index.
            200 | 400 | 404 | 405 | 406 => return Ok(None),
            // Refused, rate-limited or failing: an error, never "no referrers".
            _ => return Err(UnexpectedStatus::of(response).await.into()),
        }
        let body = read_limited(response, crate::blob::MAX_MANIFEST_SIZE).await?;
        let index: serde_json::Value =
            serde_json::from_slice(&body).context("malformed referrers index")?;
        Ok(Some(
            index["manifests"].as_array().cloned().unwrap_or_default(),
        ))
    }
}

/// What the registry said of a manifest it stored.
#[derive(Debug, Clone)]
pub struct PushedManifest {
    /// `Docker-Content-Digest`, when sent.
    pub digest: Option<String>,
    /// Whether the registry indexed the manifest's `subject` itself (`OCI-Subject`), so that
    /// no referrers tag is needed.
    pub indexes_subject: bool,
}

/// Tag-list pages followed: at the registries' usual 100 to 1000 tags a page, far more tags
/// than a repository has.
const MAX_TAG_PAGES: usize = 1000;

/// The target of the `rel="next"` link of a `Link` header.
fn next_page(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then(|| {
                target
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned()
            })
    })
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

#[cfg(test)]
mod tests {
    use super::next_page;

    #[test]
    fn follows_only_the_next_link() {
        assert_eq!(
            next_page(r#"</v2/a/tags/list?n=100&last=x>; rel="next""#).as_deref(),
            Some("/v2/a/tags/list?n=100&last=x")
        );
        assert_eq!(
            next_page(r#"<http://h/prev>; rel="prev", <http://h/next>; rel=next"#).as_deref(),
            Some("http://h/next")
        );
        assert_eq!(next_page(r#"</x>; rel="prev""#), None);
        assert_eq!(next_page("garbage"), None);
    }
}
