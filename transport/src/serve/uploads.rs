//! Blob upload sessions (distribution-spec "Pushing blobs"): monolithic (`POST ?digest=`, or
//! `POST` then one `PUT ?digest=`), chunked (`PATCH` with `Content-Range` in order, then
//! `PUT ?digest=`), resumable (`GET` tells the offset reached), and cancelled by `DELETE`.
//!
//! Bytes go to a file of the server's state directory and are hashed as they arrive; the final
//! `PUT` compares the hash with the digest the client names and only then moves the file to the
//! staged blobs (`blobs/<hex>`), where a manifest `PUT` finds it. Nothing reaches the store
//! before a manifest names the blob, so a client that disconnects mid-upload leaves the store
//! as it was; its session keeps the bytes received and can be resumed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use http_body_util::BodyExt;
use hyper::StatusCode;
use hyper::body::Incoming;
use openssl::sha::Sha256;
use skiff_storage::OciDigest;
use tokio::io::AsyncWriteExt;

use super::errors::{ApiError, ApiResult, Code};

/// Upload sessions open at once: each holds a file and its hasher until it ends.
pub(crate) const MAX_UPLOAD_SESSIONS: usize = 64;

/// Largest blob accepted. Layers of real images stay far below; the bound keeps one client from
/// filling the disk with a single endless upload.
pub(crate) const MAX_BLOB_SIZE: u64 = 64 << 30;

/// One upload in progress.
struct Session {
    /// The repository it was opened in (a `PATCH` for another name is refused).
    name: String,
    path: PathBuf,
    /// Bytes received so far.
    offset: u64,
    /// The hash of those bytes.
    hasher: Sha256,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("name", &self.name)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

/// The sessions, and where their bytes and the finished blobs live.
#[derive(Debug)]
pub(crate) struct Uploads {
    /// The server's state directory.
    root: PathBuf,
    /// Files of sessions in progress.
    partial: PathBuf,
    /// Finished, verified blobs, named by hex digest.
    staged: PathBuf,
    sessions: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Session>>>>,
}

/// A byte range `START-END` (inclusive) of a `PATCH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChunkRange {
    pub(crate) start: u64,
    pub(crate) end: u64,
}

impl ChunkRange {
    /// Parses `Content-Range: START-END` (also with a `bytes ` prefix and a `/TOTAL` suffix,
    /// as some clients send).
    pub(crate) fn parse(text: &str) -> ApiResult<Self> {
        let invalid = || {
            ApiError::new(
                Code::BlobUploadInvalid,
                format!("invalid Content-Range {text:?}"),
            )
            .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
        };
        let text = text.trim();
        let text = text.strip_prefix("bytes ").unwrap_or(text);
        let text = text.split('/').next().unwrap_or(text);
        let (start, end) = text.split_once('-').ok_or_else(invalid)?;
        let (start, end): (u64, u64) = (
            start.trim().parse().map_err(|_| invalid())?,
            end.trim().parse().map_err(|_| invalid())?,
        );
        // A chunk no blob could hold is refused before its length is computed.
        if end < start || end >= MAX_BLOB_SIZE {
            return Err(invalid());
        }
        Ok(Self { start, end })
    }
}

impl Uploads {
    /// Sessions under `dir` (created).
    pub(crate) fn new(dir: &Path) -> std::io::Result<Self> {
        let (partial, staged) = (dir.join("uploads"), dir.join("blobs"));
        std::fs::create_dir_all(&partial)?;
        std::fs::create_dir_all(&staged)?;
        Ok(Self {
            root: dir.to_owned(),
            partial,
            staged,
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// The server's state directory (staging layouts of pushed manifests go there too).
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Where the staged blob `digest` is (it may not exist).
    pub(crate) fn staged_path(&self, digest: &OciDigest) -> PathBuf {
        self.staged.join(digest.digest())
    }

    /// Opens a session in repository `name`; returns its id.
    pub(crate) async fn start(&self, name: &str) -> ApiResult<String> {
        let id = new_id()?;
        let path = self.partial.join(&id);
        tokio::fs::File::create(&path).await?;
        let mut sessions = self.sessions.lock().expect("poisoned");
        if sessions.len() >= MAX_UPLOAD_SESSIONS {
            drop(sessions);
            let _ = std::fs::remove_file(&path);
            return Err(ApiError::new(
                Code::TooManyRequests,
                format!("{MAX_UPLOAD_SESSIONS} uploads are in progress: finish or cancel one"),
            ));
        }
        sessions.insert(
            id.clone(),
            Arc::new(tokio::sync::Mutex::new(Session {
                name: name.to_owned(),
                path,
                offset: 0,
                hasher: Sha256::new(),
            })),
        );
        Ok(id)
    }

    fn session(&self, name: &str, id: &str) -> ApiResult<Arc<tokio::sync::Mutex<Session>>> {
        let unknown =
            || ApiError::new(Code::BlobUploadUnknown, format!("no upload {id} in {name}"));
        self.sessions
            .lock()
            .expect("poisoned")
            .get(id)
            .cloned()
            .ok_or_else(unknown)
    }

    /// The bytes received by session `id` so far.
    pub(crate) async fn offset(&self, name: &str, id: &str) -> ApiResult<u64> {
        let session = self.session(name, id)?;
        let session = session.lock().await;
        check_name(&session, name, id)?;
        Ok(session.offset)
    }

    /// Appends `body` to session `id`: at `range.start`, which must be where the session
    /// stands, and exactly `range`'s length when a range is given. A body that breaks either
    /// leaves the session as it was. Returns the new offset.
    pub(crate) async fn append(
        &self,
        name: &str,
        id: &str,
        range: Option<ChunkRange>,
        body: Incoming,
    ) -> ApiResult<u64> {
        let session = self.session(name, id)?;
        let mut session = session.lock().await;
        check_name(&session, name, id)?;
        write_chunk(&mut session, range, body).await?;
        Ok(session.offset)
    }

    /// Ends session `id`: appends `body` (as [`Self::append`] does, `range` checked the same
    /// way), checks the bytes against `digest` and stages the blob. A chunk out of order
    /// leaves the session open; on a digest mismatch the session is gone and nothing is
    /// staged.
    pub(crate) async fn finish(
        &self,
        name: &str,
        id: &str,
        range: Option<ChunkRange>,
        digest: &OciDigest,
        body: Incoming,
    ) -> ApiResult<u64> {
        let session = self.session(name, id)?;
        let mut session = session.lock().await;
        check_name(&session, name, id)?;
        write_chunk(&mut session, range, body).await?;
        // The session ends here, whatever the digest says: the client starts again.
        self.sessions.lock().expect("poisoned").remove(id);
        let actual = skiff_storage::digest::sha256_digest(&session.hasher.clone().finish());
        if actual != *digest {
            let _ = tokio::fs::remove_file(&session.path).await;
            return Err(ApiError::new(
                Code::DigestInvalid,
                format!(
                    "the {} bytes uploaded have digest {actual}, not {digest}",
                    session.offset
                ),
            ));
        }
        tokio::fs::rename(&session.path, self.staged_path(digest)).await?;
        Ok(session.offset)
    }

    /// Cancels session `id`, dropping its bytes.
    pub(crate) async fn cancel(&self, name: &str, id: &str) -> ApiResult<()> {
        let session = self.session(name, id)?;
        let session = session.lock().await;
        check_name(&session, name, id)?;
        self.sessions.lock().expect("poisoned").remove(id);
        let _ = tokio::fs::remove_file(&session.path).await;
        Ok(())
    }

    /// A whole blob in one request (`POST ?digest=`): staged once its digest checks.
    pub(crate) async fn monolithic(
        &self,
        name: &str,
        digest: &OciDigest,
        body: Incoming,
    ) -> ApiResult<u64> {
        let id = self.start(name).await?;
        match self.finish(name, &id, None, digest, body).await {
            Ok(size) => Ok(size),
            Err(e) => {
                let _ = self.cancel(name, &id).await;
                Err(e)
            }
        }
    }

    /// Drops the staged copy of `digest` (once the store holds the blob).
    pub(crate) fn unstage(&self, digest: &OciDigest) {
        let _ = std::fs::remove_file(self.staged_path(digest));
    }
}

fn check_name(session: &Session, name: &str, id: &str) -> ApiResult<()> {
    if session.name == name {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::BlobUploadUnknown,
            format!("upload {id} belongs to another repository"),
        ))
    }
}

/// Appends a chunk: at `range.start`, which must be where the upload stands (416 otherwise,
/// the session unchanged), and exactly `range`'s length when a range is given.
async fn write_chunk(
    session: &mut Session,
    range: Option<ChunkRange>,
    body: Incoming,
) -> ApiResult<()> {
    check_chunk_start(session, range)?;
    write_body(session, body, range.map(|r| r.end - r.start + 1)).await
}

fn check_chunk_start(session: &Session, range: Option<ChunkRange>) -> ApiResult<()> {
    match range {
        Some(range) if range.start != session.offset => Err(ApiError::new(
            Code::BlobUploadInvalid,
            format!(
                "the chunk starts at byte {} but the upload has {} bytes",
                range.start, session.offset
            ),
        )
        .with_status(StatusCode::RANGE_NOT_SATISFIABLE)),
        _ => Ok(()),
    }
}

/// Writes `body` at the end of the session's file, hashing it. When the body is longer than
/// `declared` or the blob would pass [`MAX_BLOB_SIZE`], or the client goes away, the file and
/// the hash are put back as they were.
async fn write_body(
    session: &mut Session,
    mut body: Incoming,
    declared: Option<u64>,
) -> ApiResult<()> {
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .open(&session.path)
        .await?;
    let mut file_end = file.metadata().await?.len();
    if file_end != session.offset {
        // A body cut short earlier left bytes past the offset.
        file.set_len(session.offset).await?;
        file_end = session.offset;
    }
    let mut hasher = session.hasher.clone();
    let mut written = 0u64;
    let result: ApiResult<()> = async {
        use tokio::io::AsyncSeekExt;
        file.seek(std::io::SeekFrom::Start(file_end)).await?;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                ApiError::new(
                    Code::BlobUploadInvalid,
                    format!("reading the request body: {e}"),
                )
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            written += data.len() as u64;
            if let Some(declared) = declared
                && written > declared
            {
                return Err(ApiError::new(
                    Code::BlobUploadInvalid,
                    format!(
                        "the chunk is longer than the {declared} bytes its Content-Range declares"
                    ),
                )
                .with_status(StatusCode::RANGE_NOT_SATISFIABLE));
            }
            if session.offset + written > MAX_BLOB_SIZE {
                return Err(ApiError::new(
                    Code::SizeInvalid,
                    format!("a blob may not exceed {MAX_BLOB_SIZE} bytes"),
                )
                .with_status(StatusCode::PAYLOAD_TOO_LARGE));
            }
            hasher.update(&data);
            file.write_all(&data).await?;
        }
        if let Some(declared) = declared
            && written != declared
        {
            return Err(ApiError::new(
                Code::BlobUploadInvalid,
                format!("the chunk has {written} bytes, its Content-Range declares {declared}"),
            )
            .with_status(StatusCode::RANGE_NOT_SATISFIABLE));
        }
        file.flush().await?;
        Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            session.offset += written;
            session.hasher = hasher;
            Ok(())
        }
        Err(e) => {
            let _ = file.set_len(session.offset).await;
            Err(e)
        }
    }
}

/// A fresh session id: 128 random bits, in hex.
fn new_id() -> ApiResult<String> {
    let mut bytes = [0u8; 16];
    openssl::rand::rand_bytes(&mut bytes)
        .map_err(|e| ApiError::from(anyhow::anyhow!("random bytes: {e}")))?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_are_read_as_clients_send_them() {
        assert_eq!(
            ChunkRange::parse("0-99").unwrap(),
            ChunkRange { start: 0, end: 99 }
        );
        assert_eq!(
            ChunkRange::parse("bytes 100-199/*").unwrap(),
            ChunkRange {
                start: 100,
                end: 199
            }
        );
        for bad in ["", "5", "9-3", "a-b", "-1-2"] {
            let e = ChunkRange::parse(bad).unwrap_err();
            assert_eq!(e.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{bad}");
        }
    }
}
