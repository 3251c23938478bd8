//! One request answered: the route parsed ([`super::api`]), the method checked, the store read
//! ([`super::content`]) or written ([`super::uploads`], [`super::ingest`]), and the answer
//! given with the headers the spec and its clients rely on (`Docker-Content-Digest`,
//! `Location`, `Range`, `OCI-Subject`).

use std::io::{Read, Seek};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use skiff_storage::digest::HashingReader;
use skiff_storage::{FsVerityHashValue, OciDigest};

use super::api::{Reference, Route, parse_route, query_param};
use super::auth::Htpasswd;
use super::content::{BlobData, Content, ServedManifest, repository_tags};
use super::errors::{ApiError, ApiResult, Code};
use super::ingest::put_manifest;
use super::listings;
use super::uploads::ChunkRange;
use crate::blob::MAX_MANIFEST_SIZE;

/// A response body: small JSON, or a blob streamed from a file.
pub(crate) type Body = BoxBody<Bytes, std::io::Error>;

/// Bytes read from a blob file per frame sent.
const BLOB_FRAME: usize = 256 * 1024;

/// What every request sees.
#[derive(Debug)]
pub(crate) struct State<H: FsVerityHashValue> {
    pub(crate) content: Arc<Content<H>>,
    pub(crate) read_only: bool,
    pub(crate) auth: Option<Htpasswd>,
    pub(crate) jobs: usize,
}

pub(super) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

pub(super) fn response(status: StatusCode) -> hyper::http::response::Builder {
    Response::builder()
        .status(status)
        .header("Docker-Distribution-API-Version", "registry/2.0")
}

fn error_response(e: &ApiError) -> Response<Body> {
    let mut builder = response(e.status()).header(header::CONTENT_TYPE, "application/json");
    if e.code == Code::Unauthorized {
        builder = builder.header(header::WWW_AUTHENTICATE, r#"Basic realm="skiff""#);
    }
    if let Some(location) = &e.location {
        builder = builder.header(header::LOCATION, location);
    }
    builder.body(full(e.body())).expect("valid response")
}

/// Answers one request.
pub(crate) async fn handle<H: FsVerityHashValue>(
    state: Arc<State<H>>,
    request: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let answer = route(&state, request).await;
    Ok(match answer {
        Ok(r) => r,
        Err(e) => {
            // A refused image is news for whoever runs the server, as a failure of its own is.
            let refused_manifest = method == Method::PUT && path.contains("/manifests/");
            if e.code == Code::Internal || refused_manifest {
                log::warn!("{method} {path}: {e}");
            } else {
                log::debug!("{method} {path}: {e}");
            }
            error_response(&e)
        }
    })
}

async fn route<H: FsVerityHashValue>(
    state: &Arc<State<H>>,
    request: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    if let Some(auth) = &state.auth {
        auth.check(request.headers().get(header::AUTHORIZATION))?;
    }
    let route = parse_route(request.uri().path())?;
    let method = request.method().clone();
    let writes = !matches!(method, Method::GET | Method::HEAD);
    if writes && state.read_only {
        return Err(ApiError::new(
            Code::Denied,
            "the server is read-only (--read-only)",
        ));
    }
    let content = &state.content;
    let query = request.uri().query().map(str::to_owned);
    let query = query.as_deref();
    match (route, method) {
        (Route::Base, Method::GET | Method::HEAD) => Ok(response(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(full("{}"))
            .expect("valid response")),
        (Route::Catalog, Method::GET) => listings::catalog(content).await,
        (Route::Tags { name }, Method::GET) => listings::tags(content, &name, query).await,
        (Route::Manifest { name, reference }, m @ (Method::GET | Method::HEAD)) => {
            let served = content.manifest(&name, &reference).await?;
            Ok(manifest_response(&served, m == Method::HEAD))
        }
        (Route::Manifest { name, reference }, Method::PUT) => {
            let bytes = read_manifest_body(request.into_body()).await?;
            let tag = match &reference {
                Reference::Tag(t) => Some(t.as_str()),
                Reference::Digest(d) => {
                    let actual = skiff_storage::digest::digest_of(&bytes);
                    if actual != *d {
                        return Err(ApiError::new(
                            Code::DigestInvalid,
                            format!("the manifest pushed as {d} has digest {actual}"),
                        ));
                    }
                    None
                }
            };
            let stored = put_manifest(content, &name, tag, bytes, state.jobs).await?;
            // Pushed again, the image may now be served as it came.
            content.forget(&stored.digest);
            let mut builder = response(StatusCode::CREATED)
                .header(
                    header::LOCATION,
                    format!("/v2/{name}/manifests/{}", stored.digest),
                )
                .header("Docker-Content-Digest", stored.digest.to_string());
            if let Some(subject) = &stored.subject {
                builder = builder.header("OCI-Subject", subject.to_string());
            }
            Ok(builder.body(empty()).expect("valid response"))
        }
        (Route::Manifest { name, reference }, Method::DELETE) => {
            delete_manifest(content, &name, &reference).await
        }
        (Route::Blob { digest, .. }, m @ (Method::GET | Method::HEAD)) => {
            let data = content.blob(&digest).await?;
            let range = request
                .headers()
                .get(header::RANGE)
                .map(|v| v.to_str().unwrap_or_default().to_owned());
            blob_response(data, &digest, range.as_deref(), m == Method::HEAD)
        }
        (Route::Blob { .. }, Method::DELETE) => Err(ApiError::new(
            Code::Unsupported,
            "blobs live as long as the images that name them: remove the image (DELETE its \
             manifest, or skiff rm) and run skiff gc",
        )),
        (Route::Uploads { name }, Method::POST) => {
            start_upload(content, &name, query, request).await
        }
        (Route::Upload { name, id }, Method::PATCH) => {
            let range = chunk_range(&request)?;
            let offset = content
                .uploads
                .append(&name, &id, range, request.into_body())
                .await
                .map_err(|e| still_open(e, &name, &id))?;
            Ok(upload_progress(&name, &id, offset, StatusCode::ACCEPTED))
        }
        (Route::Upload { name, id }, Method::PUT) => {
            let digest = query_param(query, "digest").ok_or_else(|| {
                ApiError::new(Code::DigestInvalid, "PUT of an upload without ?digest=")
            })?;
            let digest = super::api::digest(&digest)?;
            let range = chunk_range(&request)?;
            let size = content
                .uploads
                .finish(&name, &id, range, &digest, request.into_body())
                .await
                .map_err(|e| still_open(e, &name, &id))?;
            content.blob_arrived(&digest, size);
            Ok(blob_created(&name, &digest))
        }
        (Route::Upload { name, id }, Method::GET) => {
            let offset = content.uploads.offset(&name, &id).await?;
            Ok(upload_progress(&name, &id, offset, StatusCode::NO_CONTENT))
        }
        (Route::Upload { name, id }, Method::DELETE) => {
            content.uploads.cancel(&name, &id).await?;
            Ok(response(StatusCode::NO_CONTENT)
                .body(empty())
                .expect("valid response"))
        }
        (Route::Referrers { digest, .. }, Method::GET) => {
            listings::referrers(content, &digest, query).await
        }
        (_, method) => Err(ApiError::new(
            Code::Unsupported,
            format!("{method} is not supported on this endpoint"),
        )),
    }
}

fn manifest_response(served: &ServedManifest, head: bool) -> Response<Body> {
    let builder = response(StatusCode::OK)
        .header(header::CONTENT_TYPE, served.media_type.as_str())
        .header(header::CONTENT_LENGTH, served.bytes.len())
        .header("Docker-Content-Digest", served.digest.to_string())
        .header(header::ETAG, format!("\"{}\"", served.digest));
    let body = match head {
        true => empty(),
        false => full(served.bytes.as_ref().clone()),
    };
    builder.body(body).expect("valid response")
}

/// Reads a manifest body, bounded by [`MAX_MANIFEST_SIZE`].
async fn read_manifest_body(body: Incoming) -> ApiResult<Vec<u8>> {
    match Limited::new(body, MAX_MANIFEST_SIZE as usize)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::new(
                Code::ManifestInvalid,
                format!("a manifest may not exceed {MAX_MANIFEST_SIZE} bytes"),
            )
            .with_status(StatusCode::PAYLOAD_TOO_LARGE))
        }
        Err(e) => Err(ApiError::new(
            Code::ManifestInvalid,
            format!("reading the manifest: {e}"),
        )),
    }
}

/// A byte range of `Range: bytes=START-[END]`, inclusive, within `size`.
fn parse_range(text: &str, size: u64) -> ApiResult<(u64, u64)> {
    let unsatisfiable = || {
        ApiError::new(
            Code::BlobUnknown,
            format!("range {text:?} is not within the blob's {size} bytes"),
        )
        .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
    };
    let spec = text
        .trim()
        .strip_prefix("bytes=")
        .ok_or_else(unsatisfiable)?;
    if spec.contains(',') {
        // One range per request: what clients of blobs ask for.
        return Err(unsatisfiable());
    }
    let (start, end) = spec.split_once('-').ok_or_else(unsatisfiable)?;
    let (start, end) = match (start.trim(), end.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| unsatisfiable())?;
            if n == 0 || size == 0 {
                return Err(unsatisfiable());
            }
            (size.saturating_sub(n), size - 1)
        }
        (start, "") => (
            start.parse().map_err(|_| unsatisfiable())?,
            size.saturating_sub(1),
        ),
        (start, end) => (
            start.parse().map_err(|_| unsatisfiable())?,
            end.parse::<u64>()
                .map_err(|_| unsatisfiable())?
                .min(size.saturating_sub(1)),
        ),
    };
    if start >= size || end < start {
        return Err(unsatisfiable());
    }
    Ok((start, end))
}

fn blob_response(
    data: BlobData,
    digest: &OciDigest,
    range: Option<&str>,
    head: bool,
) -> ApiResult<Response<Body>> {
    let size = data.size();
    let range = match range {
        Some(text) => match parse_range(text, size) {
            Ok(r) => Some(r),
            Err(e) => {
                let mut r = error_response(&e);
                r.headers_mut().insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes */{size}")).expect("ASCII"),
                );
                return Ok(r);
            }
        },
        None => None,
    };
    let (status, start, len) = match range {
        Some((start, end)) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        None => (StatusCode::OK, 0, size),
    };
    let mut builder = response(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, len)
        .header(header::ACCEPT_RANGES, "bytes")
        .header("Docker-Content-Digest", digest.to_string())
        .header(header::ETAG, format!("\"{digest}\""));
    if range.is_some() {
        builder = builder.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", start + len - 1),
        );
    }
    if head {
        return Ok(builder.body(empty()).expect("valid response"));
    }
    let body = match data {
        BlobData::Bytes(bytes) => full(bytes[start as usize..(start + len) as usize].to_vec()),
        BlobData::File { file, verify, .. } => {
            // A whole read of a kept blob is checked as it streams; a range cannot be.
            let verify = verify.filter(|_| range.is_none());
            stream_file(file, start, len, verify)
        }
    };
    Ok(builder.body(body).expect("valid response"))
}

/// Streams `len` bytes of `file` from `start`. With `verify`, the whole blob's digest is
/// checked at its end, and a mismatch cuts the response short instead of ending it.
fn stream_file(mut file: std::fs::File, start: u64, len: u64, verify: Option<OciDigest>) -> Body {
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(2);
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let result = (|| -> std::io::Result<()> {
            file.seek(std::io::SeekFrom::Start(start))?;
            let mut reader = HashingReader::new(file.take(len));
            let mut remaining = len;
            while remaining > 0 {
                let mut buf = vec![0u8; BLOB_FRAME.min(remaining as usize)];
                let n = reader.read(&mut buf)?;
                if n == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the blob is shorter than its size: the store is damaged (see skiff fsck)",
                    ));
                }
                remaining -= n as u64;
                if let Some(expected) = &verify
                    && remaining == 0
                    && reader.finish() != *expected
                {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "kept blob {expected} does not match its digest: the store is damaged (see skiff fsck)"
                        ),
                    ));
                }
                buf.truncate(n);
                if runtime.block_on(tx.send_data(Bytes::from(buf))).is_err() {
                    // The client went away.
                    return Ok(());
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            log::warn!("{e}");
            tx.abort(e);
        }
    });
    body.boxed()
}

fn blob_created(name: &str, digest: &OciDigest) -> Response<Body> {
    response(StatusCode::CREATED)
        .header(header::LOCATION, format!("/v2/{name}/blobs/{digest}"))
        .header("Docker-Content-Digest", digest.to_string())
        .header(header::CONTENT_LENGTH, 0)
        .body(empty())
        .expect("valid response")
}

/// The `Content-Range` of a chunk, if the client sent one.
fn chunk_range(request: &Request<Incoming>) -> ApiResult<Option<ChunkRange>> {
    request
        .headers()
        .get(header::CONTENT_RANGE)
        .map(|v| ChunkRange::parse(v.to_str().unwrap_or_default()))
        .transpose()
}

/// An upload error that leaves the session open (a chunk out of order) names the session,
/// as the spec asks, so that the client can ask where it stands and go on.
fn still_open(e: ApiError, name: &str, id: &str) -> ApiError {
    match e.status() {
        StatusCode::RANGE_NOT_SATISFIABLE => {
            e.with_location(format!("/v2/{name}/blobs/uploads/{id}"))
        }
        _ => e,
    }
}

fn upload_progress(name: &str, id: &str, offset: u64, status: StatusCode) -> Response<Body> {
    let mut builder = response(status)
        .header(header::LOCATION, format!("/v2/{name}/blobs/uploads/{id}"))
        .header("Docker-Upload-UUID", id)
        .header(header::CONTENT_LENGTH, 0);
    // `Range: 0-N` names the bytes received (none: `0-0`, as distribution answers).
    builder = builder.header(header::RANGE, format!("0-{}", offset.saturating_sub(1)));
    builder.body(empty()).expect("valid response")
}

async fn start_upload<H: FsVerityHashValue>(
    content: &Arc<Content<H>>,
    name: &str,
    query: Option<&str>,
    request: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    if let Some(mount) = query_param(query, "mount") {
        let digest = super::api::digest(&mount)?;
        // One store behind every repository: a blob held anywhere mounts.
        if content.has_blob(&digest).await?.is_some() {
            return Ok(blob_created(name, &digest));
        }
    }
    if let Some(digest) = query_param(query, "digest") {
        let digest = super::api::digest(&digest)?;
        let size = content
            .uploads
            .monolithic(name, &digest, request.into_body())
            .await?;
        content.blob_arrived(&digest, size);
        return Ok(blob_created(name, &digest));
    }
    let id = content.uploads.start(name).await?;
    Ok(upload_progress(name, &id, 0, StatusCode::ACCEPTED))
}

async fn delete_manifest<H: FsVerityHashValue>(
    content: &Arc<Content<H>>,
    name: &str,
    reference: &Reference,
) -> ApiResult<Response<Body>> {
    // What was made ready to serve the image stays: another tag may name it, and a client may
    // be reading it (nothing is removed from the store while the server runs).
    let c = content.clone();
    let (name, reference) = (name.to_owned(), reference.clone());
    tokio::task::spawn_blocking(move || -> ApiResult<()> {
        let repo = c.store.repo();
        let tags: Vec<String> = match &reference {
            Reference::Tag(tag) => {
                let tag = format!("{name}:{tag}");
                let known = composefs_oci::oci_image::list_refs(repo)?
                    .into_iter()
                    .any(|(t, _)| t == tag);
                if known { vec![tag] } else { Vec::new() }
            }
            Reference::Digest(digest) => {
                let stored = served_stored(&c, digest);
                repository_tags(&c.store, &name, &stored)?
            }
        };
        if tags.is_empty() {
            return Err(ApiError::new(
                Code::ManifestUnknown,
                format!("{reference} has no tag in {name}"),
            ));
        }
        for tag in tags {
            composefs_oci::oci_image::untag_image(repo, &tag)?;
        }
        repo.sync()?;
        Ok(())
    })
    .await
    .map_err(anyhow::Error::from)??;
    Ok(response(StatusCode::ACCEPTED)
        .body(empty())
        .expect("valid response"))
}

/// The stored digest behind a served one (itself when it is stored).
fn served_stored<H: FsVerityHashValue>(content: &Content<H>, digest: &OciDigest) -> OciDigest {
    content
        .stored_digest_of(digest)
        .unwrap_or_else(|| digest.clone())
}

/// A JSON answer, with a `Link` to the next page when given.
pub(super) fn json_response(
    value: &serde_json::Value,
    link: Option<String>,
) -> ApiResult<Response<Body>> {
    let mut builder = response(StatusCode::OK).header(header::CONTENT_TYPE, "application/json");
    if let Some(link) = link {
        builder = builder.header(header::LINK, link);
    }
    Ok(builder
        .body(full(
            serde_json::to_vec(value).map_err(anyhow::Error::from)?,
        ))
        .expect("valid response"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_rfc_9110_has_them_and_refused_past_the_end() {
        assert_eq!(parse_range("bytes=0-9", 100).unwrap(), (0, 9));
        assert_eq!(parse_range("bytes=90-", 100).unwrap(), (90, 99));
        assert_eq!(parse_range("bytes=-10", 100).unwrap(), (90, 99));
        assert_eq!(parse_range("bytes=95-200", 100).unwrap(), (95, 99));
        for bad in [
            "bytes=100-",
            "bytes=100-200",
            "bytes=5-1",
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=-0",
        ] {
            let e = parse_range(bad, 100).unwrap_err();
            assert_eq!(e.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{bad}");
        }
        assert!(parse_range("bytes=0-", 0).is_err());
    }
}
