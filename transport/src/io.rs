//! An [`AsyncRead`] over chunks that a blocking producer sends through a channel: the bridge
//! from blocking readers and writers (files of an OCI layout, a layer rebuilt from local
//! objects or by a tar-diff) to the async layer import.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

/// Chunks in flight between producer and reader: enough to keep both busy.
pub(crate) const CHANNEL_DEPTH: usize = 4;

/// An [`AsyncRead`] over chunks sent by a blocking reader.
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

/// Bytes gathered before a [`ChannelWriter`] sends them on.
const WRITE_CHUNK: usize = 256 * 1024;

/// A blocking [`std::io::Write`] that sends what is written, in chunks, to a
/// [`ChannelReader`]: the bridge from a blocking producer that writes (a tar-diff applier) to
/// the async layer import.
pub(crate) struct ChannelWriter<'a> {
    tx: &'a mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl<'a> ChannelWriter<'a> {
    /// Writes to the reader of `tx`.
    pub(crate) fn new(tx: &'a mpsc::Sender<std::io::Result<Bytes>>) -> Self {
        Self {
            tx,
            buf: Vec::with_capacity(WRITE_CHUNK),
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(WRITE_CHUNK));
        self.tx
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| std::io::Error::other(ImportStopped))
    }
}

impl std::io::Write for ChannelWriter<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= WRITE_CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// A blocking [`std::io::Read`] over chunks sent through a channel by an async producer (a
/// blob streamed from skopeo's proxy or a layout), for blocking consumers (a tar-diff applier).
pub(crate) struct BlockingChannelReader {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl BlockingChannelReader {
    /// Reads what is sent on `rx`; an error sent ends the stream with that error.
    pub(crate) fn new(rx: mpsc::Receiver<std::io::Result<Bytes>>) -> Self {
        Self {
            rx,
            current: Bytes::new(),
        }
    }
}

impl std::io::Read for BlockingChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = self.current.len().min(buf.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
