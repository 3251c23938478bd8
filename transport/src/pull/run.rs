//! Running a plan: every layer job of an image, at most `jobs` importing at once, each
//! through its converter, with retries of transient failures. The same runner serves copies
//! and delta applications; a failure stops new work and fails the run.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use skiff_storage::layer_import::{LayerError, PendingLayer};
use skiff_storage::{FsVerityHashValue, Store};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::convert::chunked::{Imported, PartialStats, Reuse, import_partial};
use super::convert::{delta, full};
use super::delta_target::DeltaBase;
use super::events::{CopyEvent, CopySummary, LayerKind, LayerOutcome, Observer};
use super::plan::{ChunkedLayout, LayerJob, LayerPlan};
use crate::blob::BlobError;
use crate::format::media::UnsupportedMediaType;
use crate::source::Source;
use crate::source::containers_storage::layer::{CloneStats, import_layer as import_unpacked};
use crate::source::ranges::WholeBlobComing;

/// First retry waits this long; each later one twice as long as the one before, up to
/// [`RETRY_MAX_DELAY`].
const RETRY_BASE_DELAY: Duration = Duration::from_millis(500);
/// Longest wait between two tries.
const RETRY_MAX_DELAY: Duration = Duration::from_secs(30);

/// What every job of one run shares.
pub(crate) struct Runner<H: FsVerityHashValue> {
    pub(crate) source: Arc<Source>,
    pub(crate) store: Store<H>,
    pub(crate) observer: Arc<dyn Observer>,
    /// Layers imported at once (more may be waiting for the disk to name theirs: [`JobSlot`]).
    pub(crate) jobs: usize,
    /// How often a failed fetch is tried again.
    pub(crate) retry_times: u32,
    /// Keep the blobs of layers fetched whole.
    pub(crate) keep_blobs: bool,
    /// What partial pulls may reuse.
    pub(crate) reuse: Reuse<H>,
    /// The delta in use and its source image, for [`LayerPlan::Delta`] jobs.
    pub(crate) delta: Option<DeltaBase<H>>,
    /// Layers of the image, for messages.
    pub(crate) total: usize,
    /// How the contents of unpacked layers were stored.
    pub(crate) clones: Arc<CloneStats>,
}

impl<H: FsVerityHashValue> Runner<H> {
    /// Runs `jobs`, adding what each did to `summary`. Returns when every job is done, or at
    /// the first failure.
    pub(crate) async fn run(self, jobs: Vec<LayerJob>, summary: &mut CopySummary) -> Result<()> {
        let this = Arc::new(self);
        let semaphore = Arc::new(Semaphore::new(this.jobs.max(1)));
        let mut tasks = JoinSet::new();
        for job in jobs {
            if job.plan == LayerPlan::Skip {
                summary.layers_skipped += 1;
                this.observer.event(&CopyEvent::LayerSkipped {
                    digest: job.desc.digest().to_string(),
                    diff_id: job.diff_id.to_string(),
                });
                continue;
            }
            let slot = JobSlot::take(semaphore.clone()).await?;
            let this = this.clone();
            tasks.spawn(async move {
                let outcome = this.run_job(&job, &slot).await.with_context(|| {
                    format!(
                        "Layer {}/{} {} (DiffID {})",
                        job.index,
                        this.total,
                        job.desc.digest(),
                        job.diff_id
                    )
                });
                drop(slot);
                outcome
            });
            // Surface a failure before starting more work.
            while let Some(done) = tasks.try_join_next() {
                summary.add_layer(done??);
            }
        }
        while let Some(done) = tasks.join_next().await {
            summary.add_layer(done??);
        }
        summary.bytes_cloned = this.clones.cloned.load(Ordering::Relaxed);
        summary.bytes_copied = this.clones.copied.load(Ordering::Relaxed);
        Ok(())
    }

    async fn run_job(&self, job: &LayerJob, slot: &JobSlot) -> Result<LayerOutcome> {
        let diff_id = &job.diff_id;
        match &job.plan {
            LayerPlan::Skip => unreachable!("skipped layers are not run"),
            LayerPlan::Full { reason } => {
                if let Some(reason) = reason {
                    self.fallback(job, reason.clone());
                }
                self.full(job, slot).await
            }
            LayerPlan::Unpacked => {
                let source = self
                    .source
                    .unpacked()
                    .context("an unpacked layer planned for a source of blobs")?;
                self.with_retries(job, slot, 0, LayerKind::Unpacked, |_| {
                    import_unpacked(source.clone(), &self.store, diff_id, self.clones.clone())
                })
                .await
            }
            LayerPlan::Partial(layout) => match self.partial(job, slot, layout.clone()).await {
                Some(outcome) => Ok(outcome),
                None => self.full(job, slot).await,
            },
            LayerPlan::Delta {
                blob,
                tar_diff: false,
            } => {
                // A layer blob the delta carries whole.
                self.with_retries(
                    job,
                    slot,
                    blob.size(),
                    LayerKind::Full,
                    |fetched| async move {
                        let stream = self.source.open_blob(blob)?;
                        full::import_blob(&self.store, stream, blob, diff_id, fetched).await
                    },
                )
                .await
            }
            LayerPlan::Delta {
                blob,
                tar_diff: true,
            } => {
                let base = self
                    .delta
                    .as_ref()
                    .context("a tar-diff planned without a delta")?;
                self.with_retries(
                    job,
                    slot,
                    blob.size(),
                    LayerKind::Delta,
                    |fetched| async move {
                        let stream = self.source.open_blob(blob)?;
                        delta::apply_tar_diff(
                            stream,
                            &self.store,
                            blob,
                            diff_id,
                            base.tree.clone(),
                            base.stored.clone(),
                            fetched,
                        )
                        .await
                    },
                )
                .await
            }
        }
    }

    /// The layer's blob, streamed whole.
    async fn full(&self, job: &LayerJob, slot: &JobSlot) -> Result<LayerOutcome> {
        let (desc, diff_id) = (&job.desc, &job.diff_id);
        self.with_retries(
            job,
            slot,
            desc.size(),
            LayerKind::Full,
            |fetched| async move {
                let stream = self.source.open_blob(desc)?;
                if self.keep_blobs {
                    full::keep_and_import_blob(&self.store, stream, desc, diff_id, fetched).await
                } else {
                    full::import_blob(&self.store, stream, desc, diff_id, fetched).await
                }
            },
        )
        .await
    }

    /// Runs `attempt` until it succeeds, fails for good, or has been tried `retry_times`
    /// more times; then names the layer in the store, its job slot given back meanwhile.
    async fn with_retries<F, Fut>(
        &self,
        job: &LayerJob,
        slot: &JobSlot,
        size: u64,
        kind: LayerKind,
        mut attempt: F,
    ) -> Result<LayerOutcome>
    where
        F: FnMut(Arc<AtomicU64>) -> Fut,
        Fut: Future<Output = Result<PendingLayer<H>>>,
    {
        let digest = job.desc.digest().to_string();
        let mut tries = 1;
        loop {
            slot.hold().await?;
            let fetched = Arc::new(AtomicU64::new(0));
            self.observer.event(&CopyEvent::LayerStarted {
                digest: digest.clone(),
                size,
                fetched: fetched.clone(),
            });
            let result = match attempt(fetched.clone()).await {
                Ok(pending) => {
                    slot.release();
                    pending.register().await
                }
                Err(e) => Err(e),
            };
            match result {
                Ok((_, stats)) => {
                    let fetched = fetched.load(Ordering::Relaxed);
                    self.observer.event(&CopyEvent::LayerDone {
                        digest,
                        partial: false,
                        fetched,
                        written: stats.bytes_written,
                        reused: stats.bytes_reused,
                    });
                    return Ok(LayerOutcome {
                        kind,
                        fetched,
                        stats,
                        requests: tries as u64,
                    });
                }
                Err(e) if tries <= self.retry_times && !is_final(&e) => {
                    tries += 1;
                    self.observer.event(&CopyEvent::LayerRetry {
                        digest: digest.clone(),
                        attempt: tries,
                        error: format!("{e:#}"),
                    });
                    let delay = RETRY_BASE_DELAY.saturating_mul(2u32.saturating_pow(tries - 2));
                    tokio::time::sleep(delay.min(RETRY_MAX_DELAY)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn fallback(&self, job: &LayerJob, reason: String) {
        self.observer.event(&CopyEvent::LayerFallback {
            digest: job.desc.digest().to_string(),
            reason,
        });
    }

    /// Pulls a zstd:chunked layer partially when the source serves ranges; `None` (after a
    /// one-line reason) means: fetch it whole.
    async fn partial(
        &self,
        job: &LayerJob,
        slot: &JobSlot,
        layout: ChunkedLayout,
    ) -> Option<LayerOutcome> {
        let (desc, diff_id) = (&job.desc, &job.diff_id);
        let ranges = match self.source.range_reader(desc).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                self.fallback(
                    job,
                    format!("{} cannot serve byte ranges", self.source.kind()),
                );
                return None;
            }
            Err(e) => {
                self.fallback(job, format!("{e:#}"));
                return None;
            }
        };
        let stats = Arc::new(PartialStats::default());
        self.observer.event(&CopyEvent::LayerStarted {
            digest: desc.digest().to_string(),
            size: desc.size(),
            fetched: stats.fetch.fetched.clone(),
        });
        let imported = import_partial(
            &self.store,
            ranges,
            desc,
            diff_id,
            layout,
            self.reuse.clone(),
            stats.clone(),
        )
        .await;
        if imported.is_ok() {
            slot.release();
        }
        let result = match imported {
            Ok(Imported::Partial(pending)) => pending.register().await.map(|r| (r, true)),
            Ok(Imported::Whole(pending)) => {
                self.fallback(
                    job,
                    format!("{WholeBlobComing}; imported it as a full pull"),
                );
                pending.register().await.map(|r| (r, false))
            }
            Err(e) => Err(e),
        };
        let ((_, layer_stats), partial) = match result {
            Ok(done) => done,
            Err(e) => {
                self.fallback(job, format!("partial pull failed: {e:#}"));
                return None;
            }
        };
        let fetched = stats.fetch.fetched.load(Ordering::Relaxed);
        let reused = if partial {
            stats.reused.load(Ordering::Relaxed)
        } else {
            layer_stats.bytes_reused
        };
        self.observer.event(&CopyEvent::LayerDone {
            digest: desc.digest().to_string(),
            partial,
            fetched,
            written: layer_stats.bytes_written,
            reused,
        });
        Some(LayerOutcome {
            kind: if partial {
                LayerKind::Partial {
                    reused,
                    from_chunks: stats.reused_chunks.load(Ordering::Relaxed),
                }
            } else {
                LayerKind::Full
            },
            fetched,
            stats: layer_stats,
            requests: stats.fetch.requests.load(Ordering::Relaxed),
        })
    }
}

/// A layer job's turn among the `jobs` that run at once. A job gives its turn back once its
/// layer is imported, while registering the layer waits for the disk (a `syncfs` that takes
/// seconds after a large layer), so that the next layer is imported meanwhile; it takes a turn
/// again before anything else it tries (a retry, a fallback to a full pull).
struct JobSlot {
    semaphore: Arc<Semaphore>,
    permit: std::sync::Mutex<Option<OwnedSemaphorePermit>>,
}

impl JobSlot {
    /// Waits for a turn.
    async fn take(semaphore: Arc<Semaphore>) -> Result<Self> {
        let permit = semaphore.clone().acquire_owned().await?;
        Ok(Self {
            semaphore,
            permit: std::sync::Mutex::new(Some(permit)),
        })
    }

    /// Gives the turn back, if held.
    fn release(&self) {
        self.lock().take();
    }

    /// Takes a turn again, if given back.
    async fn hold(&self) -> Result<()> {
        if self.lock().is_some() {
            return Ok(());
        }
        let permit = self.semaphore.clone().acquire_owned().await?;
        *self.lock() = Some(permit);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<OwnedSemaphorePermit>> {
        self.permit.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Verification failures are final; anything else (a dropped connection, a truncated
/// transfer) may be transient.
fn is_final(error: &anyhow::Error) -> bool {
    error.chain().any(|e| {
        e.is::<UnsupportedMediaType>()
            || e.downcast_ref::<LayerError>().is_some()
            || matches!(
                e.downcast_ref::<BlobError>(),
                Some(BlobError::DigestMismatch { .. })
            )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_slot_given_back_lets_the_next_job_run_and_is_taken_again_before_a_retry() {
        let semaphore = Arc::new(Semaphore::new(1));
        let slot = JobSlot::take(semaphore.clone()).await.unwrap();
        assert_eq!(semaphore.available_permits(), 0);
        slot.hold().await.unwrap();
        assert_eq!(
            semaphore.available_permits(),
            0,
            "holding twice takes one turn"
        );

        slot.release();
        assert_eq!(semaphore.available_permits(), 1);
        let next = JobSlot::take(semaphore.clone()).await.unwrap();

        // Every turn is taken: the first job's retry waits until the next job ends.
        let retry = tokio::time::timeout(Duration::from_millis(50), slot.hold()).await;
        assert!(retry.is_err(), "a retry ran beyond the job limit");
        drop(next);
        slot.hold().await.unwrap();
        assert_eq!(semaphore.available_permits(), 0);
        drop(slot);
        assert_eq!(semaphore.available_permits(), 1);
    }
}
