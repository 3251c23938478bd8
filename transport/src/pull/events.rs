//! What a copy reports: [`CopyEvent`]s as it goes (for progress output) and a
//! [`CopySummary`] at the end.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use serde::Serialize;
use skiff_storage::layer_import::LayerStats;

/// Something that happened during a copy, for progress output.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum CopyEvent {
    /// Manifest and config are read and verified.
    Resolved {
        /// Digest of the manifest that will be stored.
        manifest_digest: String,
        /// Number of layers.
        layers: usize,
    },
    /// The store already holds this layer.
    LayerSkipped {
        /// The layer's blob digest.
        digest: String,
        /// Its DiffID.
        diff_id: String,
    },
    /// A layer fetch begins; `fetched` counts its compressed bytes.
    LayerStarted {
        /// The layer's blob digest.
        digest: String,
        /// Its compressed size.
        size: u64,
        /// Bytes fetched so far.
        #[serde(skip)]
        fetched: Arc<AtomicU64>,
    },
    /// A layer fetch failed and will be tried again.
    LayerRetry {
        /// The layer's blob digest.
        digest: String,
        /// The attempt about to start (2 for the first retry).
        attempt: u32,
        /// Why the previous one failed.
        error: String,
    },
    /// A delta of the image was found and is used instead of its layers.
    DeltaUsed {
        /// The delta's manifest digest.
        digest: String,
        /// Compressed bytes of the layers it replaces.
        replaces: u64,
        /// Bytes of its blobs that will be fetched.
        size: u64,
    },
    /// A zstd:chunked layer cannot be pulled partially; it is fetched whole.
    LayerFallback {
        /// The layer's blob digest.
        digest: String,
        /// Why, in one line.
        reason: String,
    },
    /// A layer is verified and stored.
    LayerDone {
        /// The layer's blob digest.
        digest: String,
        /// Rebuilt from stored files and fetched ranges (zstd:chunked), not fetched whole.
        partial: bool,
        /// Compressed bytes fetched.
        fetched: u64,
        /// Object bytes written new.
        written: u64,
        /// Object bytes the store already held.
        reused: u64,
    },
    /// Config, manifest and EROFS are stored and the tag points at the image.
    Published {
        /// The stored manifest's digest.
        manifest_digest: String,
        /// The tag.
        tag: String,
    },
}

/// Receives [`CopyEvent`]s. Implemented by the binary's progress output.
pub trait Observer: Send + Sync {
    /// Called for every event, from any task.
    fn event(&self, event: &CopyEvent);
}

/// Ignores every event.
#[derive(Debug)]
pub struct NoObserver;
impl Observer for NoObserver {
    fn event(&self, _: &CopyEvent) {}
}

/// What a copy did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CopySummary {
    /// The stored manifest's digest.
    pub manifest_digest: String,
    /// Compressed bytes fetched from the source.
    pub bytes_fetched: u64,
    /// Object bytes written new to the store.
    pub bytes_written: u64,
    /// Object bytes found in the store (deduplicated).
    pub bytes_reused: u64,
    /// Objects found in the store.
    pub objects_reused: u64,
    /// Content bytes of new files taken from chunks of stored files (zstd:chunked partial
    /// pulls), not fetched.
    pub bytes_from_stored_chunks: u64,
    /// Layers the store already held.
    pub layers_skipped: usize,
    /// Layers fetched whole.
    pub layers_full: usize,
    /// Layers fetched partially (zstd:chunked).
    pub layers_partial: usize,
    /// Layers rebuilt from a delta.
    pub layers_delta: usize,
    /// Layers replayed from containers-storage, where they are unpacked.
    pub layers_unpacked: usize,
    /// Object bytes written as clones of containers-storage's files (sharing their blocks).
    pub bytes_cloned: u64,
    /// Object bytes copied from containers-storage's files (the filesystem cannot clone).
    pub bytes_copied: u64,
    /// The delta used (its manifest digest), if one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<String>,
    /// Compressed bytes the delta saved against fetching the layers it replaced.
    pub bytes_saved: u64,
    /// Fetches made: one per layer fetched whole, one per byte range of a partial pull.
    pub requests: u64,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// How one layer came into the store, for the summary.
#[derive(Debug)]
pub(crate) struct LayerOutcome {
    pub(crate) kind: LayerKind,
    /// Compressed bytes fetched.
    pub(crate) fetched: u64,
    pub(crate) stats: LayerStats,
    /// Fetches made: attempts of a whole blob, or range requests.
    pub(crate) requests: u64,
}

/// The way a layer was brought in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LayerKind {
    /// Its blob, streamed whole.
    Full,
    /// Rebuilt from stored files and fetched ranges; `reused` content bytes came from files
    /// the store holds, `from_chunks` from chunks of stored files.
    Partial { reused: u64, from_chunks: u64 },
    /// Rebuilt by a tar-diff of a delta.
    Delta,
    /// Replayed from containers-storage.
    Unpacked,
}

impl CopySummary {
    /// Counts a layer that was brought in.
    pub(crate) fn add_layer(&mut self, outcome: LayerOutcome) {
        match outcome.kind {
            LayerKind::Partial {
                reused,
                from_chunks,
            } => {
                self.layers_partial += 1;
                self.bytes_from_stored_chunks += from_chunks;
                // Content taken from the store is written as no new object: the stats count
                // it as reused already, unless the import found it otherwise. Count it once.
                self.bytes_reused += reused.max(outcome.stats.bytes_reused);
            }
            LayerKind::Full => {
                self.layers_full += 1;
                self.bytes_reused += outcome.stats.bytes_reused;
            }
            LayerKind::Delta => {
                self.layers_delta += 1;
                self.bytes_reused += outcome.stats.bytes_reused;
            }
            LayerKind::Unpacked => {
                self.layers_unpacked += 1;
                self.bytes_reused += outcome.stats.bytes_reused;
            }
        }
        self.bytes_fetched += outcome.fetched;
        self.bytes_written += outcome.stats.bytes_written;
        self.objects_reused += outcome.stats.objects_reused;
        if outcome.kind != LayerKind::Unpacked {
            self.requests += outcome.requests;
        }
    }
}
