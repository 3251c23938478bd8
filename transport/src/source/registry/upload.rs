//! Blob uploads (distribution spec v1.1, "pushing blobs"), streamed from a reader in bounded
//! chunks so that a blob of any size costs [`UPLOAD_CHUNK`] bytes of memory:
//!
//! - `POST /v2/NAME/blobs/uploads/` opens a session; `202` with its `Location`;
//! - a blob of at most one chunk goes whole in `PUT LOCATION?digest=DIGEST` (monolithic);
//! - a larger one goes as `PATCH LOCATION` requests in order, each with
//!   `Content-Range: START-END` (inclusive) and answered `202` with the next `Location`, then
//!   an empty `PUT LOCATION?digest=DIGEST`; `201` ends the upload.
//!
//! A blob another repository of the same registry holds can be mounted instead: `POST
//! /v2/NAME/blobs/uploads/?mount=DIGEST&from=OTHER` answers `201` when it did, or `202` with
//! an upload session when it would not (the session is then cancelled with `DELETE`).
//!
//! The bytes are hashed as they are read and checked against the digest and size before the
//! final `PUT`, so that a source that changed under the upload is named here rather than by
//! the registry's generic digest error.

use std::io::Read;

use anyhow::{Context, Result};
use bytes::Bytes;
use fn_error_context::context;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, CONTENT_TYPE, HeaderMap, LOCATION};

use super::Client;

/// Bytes sent per `PATCH`, and the largest blob sent in one `PUT`. Each chunk is held in
/// memory (the request is resent after an authentication challenge), so this bounds what an
/// upload costs; 16 MiB keeps requests few on a fast link.
pub(crate) const UPLOAD_CHUNK: usize = 16 * 1024 * 1024;

impl Client {
    /// Uploads blob `digest` of `size` bytes read from `data`, unless the repository has it.
    /// Reads happen on a blocking thread.
    #[context("Pushing blob {digest}")]
    pub async fn push_blob(
        &self,
        digest: &str,
        size: u64,
        data: Box<dyn Read + Send>,
    ) -> Result<()> {
        if self.has_blob(digest).await? {
            return Ok(());
        }
        let base = self.base().await?.to_owned();
        let url = format!("{base}/v2/{}/blobs/uploads/", self.target.repository());
        let response = self
            .send(reqwest::Method::POST, &url, HeaderMap::new(), None)
            .await?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(refused(response, "Starting the upload".into()).await);
        }
        let mut location = upload_location(&response, &base)?;
        let mut reader = ChunkReader::new(data);
        let mut sent = 0u64;
        let last = loop {
            let chunk;
            (reader, chunk) = tokio::task::spawn_blocking(move || {
                let chunk = reader.next_chunk();
                (reader, chunk)
            })
            .await?;
            let chunk = chunk.context("Reading the blob")?;
            let whole = sent == 0 && size <= UPLOAD_CHUNK as u64;
            if whole || chunk.is_empty() {
                break chunk;
            }
            let end = sent + chunk.len() as u64;
            // A reader longer than the blob is stopped here, not streamed on.
            anyhow::ensure!(end <= size, "the blob read is longer than its {size} bytes");
            log::debug!("uploading bytes {sent}-{end} of {digest}");
            let mut headers = octet_stream()?;
            headers.insert(CONTENT_RANGE, format!("{sent}-{}", end - 1).parse()?);
            let response = self
                .send(reqwest::Method::PATCH, &location, headers, Some(chunk))
                .await?;
            if response.status() != StatusCode::ACCEPTED {
                return Err(refused(response, format!("Sending bytes {sent}-{end}")).await);
            }
            location = upload_location(&response, &base)?;
            sent = end;
        };
        let (read, read_digest) = reader.finish();
        anyhow::ensure!(
            read == size && read_digest == digest,
            "the blob read is {read_digest} of {read} bytes, not {digest} of {size}"
        );
        let separator = if location.contains('?') { '&' } else { '?' };
        let response = self
            .send(
                reqwest::Method::PUT,
                &format!("{location}{separator}digest={digest}"),
                octet_stream()?,
                Some(last),
            )
            .await?;
        if response.status() != StatusCode::CREATED {
            return Err(refused(response, "Finishing the upload".into()).await);
        }
        Ok(())
    }
}

/// The registry's answer to an upload step it refused, as an [`super::UnexpectedStatus`] (so
/// that a retry can tell a busy registry from a refusal), with the step.
async fn refused(response: reqwest::Response, step: String) -> anyhow::Error {
    anyhow::Error::new(super::UnexpectedStatus::of(response).await).context(step)
}

impl Client {
    /// Mounts blob `digest` from repository `from` of the same registry; false when the
    /// registry would not (it lacks the blob there, or mounts are not allowed).
    #[context("Mounting blob {digest} from {from}")]
    pub async fn mount_blob(&self, digest: &str, from: &str) -> Result<bool> {
        let base = self.base().await?.to_owned();
        let url = format!(
            "{base}/v2/{}/blobs/uploads/?mount={digest}&from={from}",
            self.target.repository()
        );
        let response = self
            .send(reqwest::Method::POST, &url, HeaderMap::new(), None)
            .await?;
        match response.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                // An upload session was opened instead; it is not wanted.
                if let Ok(location) = upload_location(&response, &base) {
                    let cancelled = self
                        .send(reqwest::Method::DELETE, &location, HeaderMap::new(), None)
                        .await;
                    if let Err(e) = cancelled {
                        log::debug!("cancelling the upload session {location}: {e:#}");
                    }
                }
                Ok(false)
            }
            _ => Err(super::UnexpectedStatus::of(response).await.into()),
        }
    }
}

fn octet_stream() -> Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, "application/octet-stream".parse()?);
    Ok(headers)
}

/// Where an upload goes on: the answer's `Location`, made absolute against the registry's
/// `base`. A registry reached over HTTPS may not send it to plain HTTP.
fn upload_location(response: &reqwest::Response, base: &str) -> Result<String> {
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .context("the registry gave no upload location")?;
    if location.starts_with('/') {
        return Ok(format!("{base}{location}"));
    }
    anyhow::ensure!(
        !(base.starts_with("https://") && location.starts_with("http://")),
        "the registry sends the upload to plain HTTP ({location})"
    );
    Ok(location.to_owned())
}

/// Reads a blob in chunks of [`UPLOAD_CHUNK`], counting and hashing what it has read.
struct ChunkReader {
    data: Box<dyn Read + Send>,
    sha: openssl::sha::Sha256,
    read: u64,
}

impl ChunkReader {
    fn new(data: Box<dyn Read + Send>) -> Self {
        Self {
            data,
            sha: openssl::sha::Sha256::new(),
            read: 0,
        }
    }

    /// The next chunk: [`UPLOAD_CHUNK`] bytes, fewer at the end, empty after it.
    fn next_chunk(&mut self) -> std::io::Result<Bytes> {
        let mut chunk = Vec::with_capacity(UPLOAD_CHUNK);
        (&mut self.data)
            .take(UPLOAD_CHUNK as u64)
            .read_to_end(&mut chunk)?;
        self.sha.update(&chunk);
        self.read += chunk.len() as u64;
        Ok(chunk.into())
    }

    /// Bytes read and their digest.
    fn finish(self) -> (u64, String) {
        (
            self.read,
            format!("sha256:{}", hex::encode(self.sha.finish())),
        )
    }
}
