//! Streaming sha256 for OCI digests (`sha256:<hex>`): blob digests and DiffIDs, of what is
//! read ([`HashingReader`]) or written ([`HashingWriter`]).

use std::pin::Pin;
use std::task::{Context, Poll};

use anyhow::{Result, anyhow};
use composefs_oci::OciDigest;
use openssl::sha::Sha256;
use tokio::io::{AsyncRead, ReadBuf};

/// Formats a raw sha256 as an OCI digest.
pub fn sha256_digest(raw: &[u8; 32]) -> OciDigest {
    format!("sha256:{}", hex::encode(raw))
        .parse()
        .expect("a sha256 hex string is a valid digest")
}

/// The OCI digest of `bytes`.
pub fn digest_of(bytes: &[u8]) -> OciDigest {
    sha256_digest(&openssl::sha::sha256(bytes))
}

/// Checks that `digest` is a sha256 digest: the only algorithm skiff verifies.
pub fn require_sha256(digest: &OciDigest) -> Result<()> {
    if digest.algorithm().as_ref() != "sha256" {
        return Err(anyhow!(
            "digest {digest}: unsupported algorithm (skiff verifies sha256 digests only)"
        ));
    }
    Ok(())
}

/// An [`AsyncRead`] that hashes everything read through it and counts the bytes.
pub struct HashingReader<R> {
    inner: R,
    hasher: Option<Sha256>,
    count: u64,
}

impl<R> std::fmt::Debug for HashingReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashingReader")
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl<R> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Some(Sha256::new()),
            count: 0,
        }
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The digest of everything read so far. Can be called once.
    pub fn finish(&mut self) -> OciDigest {
        let hasher = self
            .hasher
            .take()
            .expect("HashingReader::finish called twice");
        sha256_digest(&hasher.finish())
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for HashingReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &res {
            let new = &buf.filled()[before..];
            if let Some(h) = this.hasher.as_mut() {
                h.update(new);
            }
            this.count += new.len() as u64;
        }
        res
    }
}

/// The blocking form, for blocking consumers (a tar-diff applier reading its delta blob).
impl<R: std::io::Read> std::io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = self.hasher.as_mut() {
            h.update(&buf[..n]);
        }
        self.count += n as u64;
        Ok(n)
    }
}

/// A [`std::io::Write`] that hashes and counts everything written through it.
pub struct HashingWriter<W> {
    inner: W,
    sha: Sha256,
    count: u64,
}

impl<W> std::fmt::Debug for HashingWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashingWriter")
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl<W: std::io::Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            sha: Sha256::new(),
            count: 0,
        }
    }

    /// Bytes written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Flushes, and returns the writer, the digest and the length of what was written.
    pub fn finish(mut self) -> std::io::Result<(W, OciDigest, u64)> {
        self.inner.flush()?;
        Ok((self.inner, sha256_digest(&self.sha.finish()), self.count))
    }
}

impl<W: std::io::Write> std::io::Write for HashingWriter<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(data)?;
        self.sha.update(&data[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn hashing_reader_matches_one_shot_digest() {
        let data = vec![7u8; 100_000];
        let mut r = HashingReader::new(&data[..]);
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        assert_eq!(r.count(), 100_000);
        assert_eq!(r.finish(), digest_of(&data));
        let mut blocking = HashingReader::new(&data[..]);
        std::io::copy(&mut blocking, &mut std::io::sink()).unwrap();
        assert_eq!(
            (blocking.count(), blocking.finish()),
            (100_000, digest_of(&data))
        );
        let mut writer = HashingWriter::new(Vec::new());
        std::io::Write::write_all(&mut writer, &data).unwrap();
        let (written, digest, count) = writer.finish().unwrap();
        assert_eq!(
            (written, digest, count),
            (data.clone(), digest_of(&data), 100_000)
        );
        assert_eq!(
            digest_of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
