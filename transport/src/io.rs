//! Byte streams between blocking and async code: a channel of chunks with a reader at one end
//! ([`ChannelReader`], read from async or blocking code) and a producer at the other (a pump
//! from a reader, or a [`ChannelWriter`]). Layer blobs travel this way from every source
//! ([`BlobStream`]), and rebuilt layer tars from the partial and delta converters to the import.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::sync::mpsc;

/// Chunks in flight between producer and reader: enough to keep both busy.
pub(crate) const CHANNEL_DEPTH: usize = 4;

/// Bytes a pump reads, or a [`ChannelWriter`] gathers, before sending them on: large enough
/// that the channel costs nothing per byte, small enough that [`CHANNEL_DEPTH`] of them is
/// little memory. A layer of a copy has three such channels (file or connection, decompressor,
/// import) and two layers run at once: at 256 KiB their chunks were 9 of a copy's 12 MiB of
/// heap at its peak; at 64 KiB a copy takes as long.
const CHUNK: usize = 64 * 1024;

/// The sending end of a byte channel; an error sent ends the stream with that error.
pub(crate) type ChunkSender = mpsc::Sender<std::io::Result<Bytes>>;

/// A new byte channel.
pub(crate) fn channel() -> (ChunkSender, ChannelReader) {
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    (tx, ChannelReader::new(rx))
}

/// The reading end of a byte channel: [`AsyncRead`] for async consumers, [`std::io::Read`]
/// (blocking; never on an async worker) for blocking ones such as a tar-diff applier.
#[derive(Debug)]
pub(crate) struct ChannelReader {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl ChannelReader {
    /// Reads what is sent on `rx`; an error sent ends the stream with that error.
    pub(crate) fn new(rx: mpsc::Receiver<std::io::Result<Bytes>>) -> Self {
        Self {
            rx,
            current: Bytes::new(),
        }
    }

    fn take_into(&mut self, buf: &mut [u8]) -> usize {
        let n = self.current.len().min(buf.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        n
    }
}

impl AsyncRead for ChannelReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        while self.current.is_empty() {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(chunk))) => self.current = chunk,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = self.current.len().min(buf.remaining());
        buf.put_slice(&self.current.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        Ok(self.take_into(buf))
    }
}

/// A blob's bytes as a source delivers them, not verified (the converter that reads them
/// checks size and digest). A failure of the source (a dropped connection, skopeo's error)
/// arrives as a read error; the stream ends only when the source has delivered everything.
/// Dropping it stops the source.
#[derive(Debug)]
pub struct BlobStream(ChannelReader);

impl BlobStream {
    pub(crate) fn new(reader: ChannelReader) -> Self {
        Self(reader)
    }

    /// The blocking reader of the same bytes (for blocking consumers; never on an async
    /// worker).
    pub(crate) fn into_blocking(self) -> ChannelReader {
        self.0
    }
}

impl AsyncRead for BlobStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

/// Sends what `reader` yields into `tx` until its end, and returns the bytes sent; stops
/// early, without error, when the receiver goes away (returns `None` then). A read error is
/// sent on and ends the pump.
pub(crate) async fn pump(mut reader: impl AsyncRead + Unpin, tx: &ChunkSender) -> Option<u64> {
    let mut sent = 0;
    loop {
        let mut chunk = vec![0u8; CHUNK];
        match reader.read(&mut chunk).await {
            Ok(0) => return Some(sent),
            Ok(n) => {
                chunk.truncate(n);
                sent += n as u64;
                if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                    return None;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return Some(sent);
            }
        }
    }
}

/// [`pump`] for a blocking reader (a file of an OCI layout, a decompressor), on a blocking
/// thread. Each chunk is filled before it is sent: decompressors return a block (under
/// 128 KiB) a read, and a chunk zeroed whole for each of them costs more than the reading.
pub(crate) fn pump_blocking(mut reader: impl std::io::Read, tx: &ChunkSender) -> bool {
    loop {
        let mut chunk = vec![0u8; CHUNK];
        let mut filled = 0;
        let mut failed = None;
        while filled < CHUNK {
            match reader.read(&mut chunk[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if filled > 0 {
            chunk.truncate(filled);
            if tx.blocking_send(Ok(Bytes::from(chunk))).is_err() {
                return false;
            }
        }
        if let Some(e) = failed {
            let _ = tx.blocking_send(Err(e));
            return true;
        }
        if filled < CHUNK {
            return true;
        }
    }
}

/// The reading end went away: the import stopped, and its own error says why.
#[derive(Debug, thiserror::Error)]
#[error("the layer import stopped reading")]
pub(crate) struct ImportStopped;

impl ImportStopped {
    /// True when `error` is only the news that the import stopped.
    fn is_in(error: &anyhow::Error) -> bool {
        error.chain().any(|e| {
            e.is::<Self>()
                || e.downcast_ref::<std::io::Error>()
                    .and_then(|io| io.get_ref())
                    .is_some_and(|inner| inner.is::<Self>())
        })
    }
}

/// The outcome of a producer feeding an import through a channel. The producer's error says
/// why the stream broke, unless it only saw the import stop ([`ImportStopped`]): then the
/// import's error is the cause.
pub(crate) fn produced_and_imported<T>(
    produced: anyhow::Result<()>,
    imported: anyhow::Result<T>,
) -> anyhow::Result<T> {
    match (produced, imported) {
        (Err(stopped), Err(cause)) if ImportStopped::is_in(&stopped) => Err(cause),
        (Err(e), _) => Err(e),
        (Ok(()), imported) => imported,
    }
}

/// A blocking [`std::io::Write`] that sends what is written, in chunks, to a
/// [`ChannelReader`]: the bridge from a blocking producer that writes (a tar-diff applier) to
/// the async layer import.
pub(crate) struct ChannelWriter<'a> {
    tx: &'a ChunkSender,
    buf: Vec<u8>,
}

impl<'a> ChannelWriter<'a> {
    /// Writes to the reader of `tx`.
    pub(crate) fn new(tx: &'a ChunkSender) -> Self {
        Self {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.send_now(Bytes::from(chunk))
    }

    fn send_now(&self, chunk: Bytes) -> std::io::Result<()> {
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::other(ImportStopped))
    }

    /// Writes `data`, which the caller already holds as [`Bytes`]: a piece of at least
    /// [`PASS_THROUGH`] bytes goes on as it is (after what was gathered before it), a smaller
    /// one is gathered like any write, so that a stream of headers and small files costs a
    /// channel message (and a wake-up of the reader) per [`CHUNK`], not per piece.
    pub(crate) fn write_bytes(&mut self, data: Bytes) -> std::io::Result<()> {
        if data.len() < PASS_THROUGH {
            return std::io::Write::write_all(self, &data);
        }
        self.send()?;
        self.send_now(data)
    }
}

/// Pieces at least this large are sent without being copied by [`ChannelWriter::write_bytes`].
const PASS_THROUGH: usize = 64 * 1024;

impl std::io::Write for ChannelWriter<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}
