//! Fetching many byte ranges of one blob: merging them, batching them into requests, running
//! the requests in parallel and handing their bytes over in order.
//!
//! A partial pull needs the compressed frames of every file the store lacks, usually hundreds
//! of small ranges. One request per range would cost a round trip each; one request for all of
//! them would hold the whole answer in memory and trip header limits. So:
//!
//! 1. [`plan_requests`]: ranges at most [`MERGE_GAP`] apart become one span (a tar header frame
//!    between two files is ~100 bytes: runs of missing files become one span) as long as the
//!    span stays within [`MAX_REQUEST_BYTES`]; spans are grouped into requests of at most
//!    [`MAX_RANGES_PER_REQUEST`] ranges and [`MAX_REQUEST_BYTES`] (a single larger range is a
//!    request of its own).
//! 2. [`start`]: up to [`PARALLEL_REQUESTS`] requests in flight; answers are delivered in plan
//!    order, so memory stays at about `PARALLEL_REQUESTS × MAX_REQUEST_BYTES`.
//! 3. [`SpanCursor`]: the blocking consumer takes each range, in the order they were planned.
//!
//! A registry that refuses a set of ranges (`400`, `416`) is asked again with halves of it,
//! down to single ranges; one that ignores `Range` (`200`) is sending the whole blob, which the
//! caller takes over instead of downloading it again ([`Fetched::Whole`]).

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::format::zstd_chunked::MAX_METADATA_SIZE;
use crate::source::BlobStream;
use crate::source::layout::BlobRanges;
use crate::source::registry::{Client, RangeAnswer};

/// Ranges this close are fetched as one: a gap costs less than the ~150 bytes of multipart
/// headers a separate part adds (c/storage merges gaps up to 1 KiB as well).
pub const MERGE_GAP: u64 = 1024;

/// Ranges in one request: keeps the `Range` header near 5 KiB, under the 8 KiB header limit
/// of common proxies and servers.
pub const MAX_RANGES_PER_REQUEST: usize = 256;

/// Bytes asked for in one request (a single larger range is still one request): bounds the
/// memory each request in flight holds.
pub const MAX_REQUEST_BYTES: u64 = 8 * 1024 * 1024;

/// Largest single range fetched: it is held whole in memory. The largest a partial pull needs
/// is a TOC or tar-split ([`MAX_METADATA_SIZE`]); file chunks are far smaller (cut at
/// rolling-checksum boundaries, 64 KiB on average). A TOC naming a larger chunk is refused, and
/// its layer is pulled whole.
pub const MAX_RANGE_BYTES: u64 = MAX_METADATA_SIZE;

/// Requests in flight at once: enough to hide a round trip behind the transfer of others,
/// few enough to be polite to a registry.
pub const PARALLEL_REQUESTS: usize = 4;

/// What range reads cost, counted as they go (read by progress output while they run).
#[derive(Debug, Default)]
pub struct FetchStats {
    /// Bytes received (parts and multipart headers).
    pub fetched: Arc<AtomicU64>,
    /// Requests made.
    pub requests: AtomicU64,
}

/// The registry refuses range requests even for a single range.
#[derive(Debug, thiserror::Error)]
#[error("the registry refuses range requests (HTTP {0})")]
pub struct RangesRefused(pub u16);

/// The whole blob is coming instead of the ranges asked for (HTTP 200).
#[derive(Debug, thiserror::Error)]
#[error("the registry ignored the range request and is sending the whole blob (HTTP 200)")]
pub struct WholeBlobComing;

/// Where the ranges come from.
#[derive(Debug, Clone)]
pub enum RangeSource {
    /// A blob of an OCI layout, read by offset.
    Layout(Arc<Mutex<BlobRanges>>),
    /// A blob in a registry, read with HTTP range requests.
    Registry {
        /// The repository's client.
        client: Arc<Client>,
        /// The blob.
        digest: String,
    },
}

/// What a fetch brought.
#[derive(Debug)]
pub enum Fetched {
    /// One buffer per range asked for.
    Parts(Vec<Bytes>),
    /// The registry is sending the whole blob instead.
    Whole(BlobStream),
}

impl RangeSource {
    /// Fetches `ranges`, splitting the request when the registry refuses it.
    pub async fn fetch(&self, ranges: Vec<Range<u64>>, stats: &FetchStats) -> Result<Fetched> {
        let mut out = Vec::with_capacity(ranges.len());
        let mut queue = VecDeque::from([ranges]);
        while let Some(group) = queue.pop_front() {
            stats.requests.fetch_add(1, Ordering::Relaxed);
            match self.fetch_once(&group).await? {
                RangeAnswer::Parts { parts, wire_bytes } => {
                    stats.fetched.fetch_add(wire_bytes, Ordering::Relaxed);
                    out.extend(parts);
                }
                RangeAnswer::Whole(response) => return Ok(Fetched::Whole(response)),
                RangeAnswer::Refused(status) if group.len() == 1 => {
                    return Err(RangesRefused(status).into());
                }
                RangeAnswer::Refused(status) => {
                    log::debug!(
                        "HTTP {status} for {} ranges; asking for halves",
                        group.len()
                    );
                    let (first, second) = group.split_at(group.len() / 2);
                    queue.push_front(second.to_vec());
                    queue.push_front(first.to_vec());
                }
            }
        }
        Ok(Fetched::Parts(out))
    }

    async fn fetch_once(&self, ranges: &[Range<u64>]) -> Result<RangeAnswer> {
        match self {
            Self::Layout(blob) => {
                let (blob, ranges) = (blob.clone(), ranges.to_vec());
                tokio::task::spawn_blocking(move || {
                    let mut blob = blob.lock().unwrap();
                    let parts = ranges
                        .into_iter()
                        .map(|r| blob.read(r).map(Bytes::from))
                        .collect::<Result<Vec<_>>>()?;
                    let wire_bytes = parts.iter().map(|p| p.len() as u64).sum();
                    Ok(RangeAnswer::Parts { parts, wire_bytes })
                })
                .await?
            }
            Self::Registry { client, digest } => client.blob_ranges(digest, ranges).await,
        }
    }
}

/// Merges `needed` (in the order they will be consumed) into spans and groups the spans into
/// requests. Every needed range lies in the span consumed with it or in a later one. A range
/// over [`MAX_RANGE_BYTES`] is refused.
pub fn plan_requests(needed: &[Range<u64>]) -> Result<Vec<Vec<Range<u64>>>> {
    if let Some(r) = needed
        .iter()
        .find(|r| r.end.saturating_sub(r.start) > MAX_RANGE_BYTES)
    {
        bail!(
            "a range of {} bytes ({r:?}) is more than the {MAX_RANGE_BYTES} fetched at once",
            r.end - r.start
        );
    }
    let mut spans: Vec<Range<u64>> = Vec::new();
    for r in needed.iter().filter(|r| r.start < r.end) {
        match spans.last_mut() {
            Some(last)
                if r.start >= last.start
                    && r.start <= last.end + MERGE_GAP
                    && r.end.max(last.end) - last.start <= MAX_REQUEST_BYTES =>
            {
                last.end = last.end.max(r.end);
            }
            _ => spans.push(r.clone()),
        }
    }
    let mut requests: Vec<Vec<Range<u64>>> = Vec::new();
    let mut bytes = 0;
    for span in spans {
        let len = span.end - span.start;
        match requests.last_mut() {
            Some(last)
                if last.len() < MAX_RANGES_PER_REQUEST
                    && bytes + len <= MAX_REQUEST_BYTES
                    // One request's ranges must be ascending and apart.
                    && last.last().is_some_and(|l| l.end < span.start) =>
            {
                bytes += len;
                last.push(span);
            }
            _ => {
                bytes = len;
                requests.push(vec![span]);
            }
        }
    }
    Ok(requests)
}

type Batch = Result<(Vec<Range<u64>>, Fetched)>;

/// Starts fetching `requests` with at most [`PARALLEL_REQUESTS`] in flight; the answers come
/// out of the returned cursor in plan order.
pub fn start(
    source: RangeSource,
    requests: Vec<Vec<Range<u64>>>,
    stats: Arc<FetchStats>,
) -> SpanCursor {
    // Each queued receiver is a request started; the queue's bound is what limits them.
    let (tx, rx) = mpsc::channel::<oneshot::Receiver<Batch>>(PARALLEL_REQUESTS - 1);
    tokio::spawn(async move {
        for ranges in requests {
            let (done_tx, done_rx) = oneshot::channel();
            // Queued first, started then: the queue's bound is the bound on requests.
            if tx.send(done_rx).await.is_err() {
                // The consumer stopped: no more requests.
                return;
            }
            let (source, stats) = (source.clone(), stats.clone());
            tokio::spawn(async move {
                let fetched = source.fetch(ranges.clone(), &stats).await;
                let _ = done_tx.send(fetched.map(|f| (ranges, f)));
            });
        }
    });
    SpanCursor {
        rx,
        spans: VecDeque::new(),
        whole: None,
    }
}

/// Hands out the planned ranges, in order, from the answers as they arrive (blocking).
#[derive(Debug)]
pub struct SpanCursor {
    rx: mpsc::Receiver<oneshot::Receiver<Batch>>,
    spans: VecDeque<(Range<u64>, Bytes)>,
    whole: Option<BlobStream>,
}

impl SpanCursor {
    /// The bytes of `range`, which must come next in plan order.
    pub fn take(&mut self, range: Range<u64>) -> Result<Bytes> {
        loop {
            if let Some((span, bytes)) = self.spans.front() {
                if span.start <= range.start && range.end <= span.end {
                    let from = (range.start - span.start) as usize;
                    return Ok(bytes.slice(from..from + (range.end - range.start) as usize));
                }
                self.spans.pop_front();
                continue;
            }
            let next = self
                .rx
                .blocking_recv()
                .with_context(|| format!("bytes {range:?} were not planned"))?;
            let (ranges, fetched) = next
                .blocking_recv()
                .context("a range request was cancelled")??;
            match fetched {
                Fetched::Parts(parts) => self.spans.extend(ranges.into_iter().zip(parts)),
                Fetched::Whole(response) => {
                    self.whole = Some(response);
                    bail!(WholeBlobComing);
                }
            }
        }
    }

    /// The whole-blob answer that stopped the cursor, if one did.
    pub fn take_whole(&mut self) -> Option<BlobStream> {
        self.whole.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_too_large_to_hold_is_refused() {
        #[allow(clippy::single_range_in_vec_init)]
        let at_limit: [Range<u64>; 1] = [0..MAX_RANGE_BYTES];
        assert_eq!(plan_requests(&at_limit).unwrap(), vec![at_limit.to_vec()]);
        let over = vec![0..10, 100..100 + MAX_RANGE_BYTES + 1];
        let err = plan_requests(&over).unwrap_err().to_string();
        assert!(err.contains("more than the"), "{err}");
    }

    #[test]
    fn close_ranges_merge_and_requests_are_bounded() {
        let needed = vec![0..10, 10..20, 500..600, 5000..5100, 5100..5200];
        assert_eq!(
            plan_requests(&needed).unwrap(),
            vec![vec![0..600, 5000..5200]]
        );
        // Many far-apart ranges: several requests of at most MAX_RANGES_PER_REQUEST.
        let needed: Vec<_> = (0..600u64).map(|i| i * 10_000..i * 10_000 + 10).collect();
        let requests = plan_requests(&needed).unwrap();
        assert_eq!(requests.len(), 3);
        assert!(requests.iter().all(|r| r.len() <= MAX_RANGES_PER_REQUEST));
        assert_eq!(requests.iter().map(Vec::len).sum::<usize>(), 600);
        // Large ranges: bounded bytes per request, a single larger one alone.
        let big = MAX_REQUEST_BYTES;
        let needed = vec![
            0..big / 2,
            big..big + big / 2,
            2 * big..2 * big + 1,
            3 * big..5 * big,
        ];
        let requests = plan_requests(&needed).unwrap();
        assert_eq!(
            requests,
            vec![
                vec![0..big / 2, big..big + big / 2],
                vec![2 * big..2 * big + 1],
                vec![3 * big..5 * big]
            ]
        );
    }

    #[test]
    fn ranges_out_of_order_start_new_spans() {
        // A range before the current span starts a new one, so consumption order holds.
        let needed = vec![1000..1100, 0..100, 200..300];
        let requests = plan_requests(&needed).unwrap();
        let spans: Vec<_> = requests.concat();
        assert_eq!(spans, vec![1000..1100, 0..300]);
        assert!(
            requests
                .iter()
                .all(|r| r.windows(2).all(|w| w[0].end < w[1].start))
        );
    }

    use proptest::prelude::*;

    proptest! {
        /// The invariants the cursor relies on: each request's ranges ascend and are apart,
        /// requests are bounded in ranges and (but for one large range) in bytes, and each
        /// needed range lies in the span consumed with it or a later one, in order.
        #[test]
        fn planned_requests_cover_every_needed_range_in_order(
            needed in proptest::collection::vec(
                (0u64..1 << 26, 0u64..3 << 20).prop_map(|(start, len)| start..start + len),
                0..400,
            ),
            sorted in any::<bool>(),
        ) {
            let mut needed = needed;
            if sorted {
                needed.sort_by_key(|r| r.start);
            }
            let requests = plan_requests(&needed).unwrap();
            let spans: Vec<Range<u64>> = requests.iter().flatten().cloned().collect();
            for request in &requests {
                prop_assert!(!request.is_empty() && request.len() <= MAX_RANGES_PER_REQUEST);
                prop_assert!(request.windows(2).all(|w| w[0].end < w[1].start));
                let bytes: u64 = request.iter().map(|r| r.end - r.start).sum();
                prop_assert!(bytes <= MAX_REQUEST_BYTES || request.len() == 1);
            }
            let mut at = 0;
            for r in needed.iter().filter(|r| r.start < r.end) {
                while at < spans.len() && !(spans[at].start <= r.start && r.end <= spans[at].end) {
                    at += 1;
                }
                prop_assert!(at < spans.len(), "{r:?} is in no span at or after the last");
            }
        }
    }
}
