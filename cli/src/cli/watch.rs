//! `skiff podman watch`: every image podman pulls, copied into the store as it is pulled.
//!
//! podman's pull events ([`pull_events::follow`]) feed a bounded queue; each pulled image is
//! read from podman's store natively (`containers-storage:@ID`, or by the name it was pulled by
//! where podman gives no ID; contents cloned where the filesystem can) and tagged with the name podman pulled it by. A failed copy is reported
//! and the watch goes on. SIGTERM or SIGINT stops it after the copy in progress.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use skiff_storage::images::StoredRef;
use skiff_storage::settings::RepoSettings;
use skiff_storage::{FsVerityHashValue, InitOptions, Store};
use skiff_transport::options::SourceOptions;
use skiff_transport::podman::pull_events::{self, PulledImage};
use skiff_transport::pull::{CopyOptions, CopySummary, NoObserver, copy_image};
use skiff_transport::reference::{ImageRef, default_repository};
use skiff_transport::source::Source;
use tokio::sync::mpsc;

use super::output::human;
use super::{GlobalOptions, StopSignals, with_repo_hash};

#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    /// The repository (default: $SKIFF_REPO, else ~/.var/lib/composefs).
    repo: Option<PathBuf>,
    /// The graph root of podman's store (default: storage.conf's graphroot, else
    /// /var/lib/containers/storage).
    #[arg(long, value_name = "DIR")]
    storage_root: Option<PathBuf>,
    /// Pulls waiting to be copied, at most; while the queue is full, podman's event log holds
    /// the rest.
    #[arg(long, value_name = "N", default_value_t = 16)]
    queue: usize,
    /// Also make each image's layers available to podman's pulls (skiff podman expose).
    #[arg(long)]
    expose: bool,
    /// The podman program whose events are followed.
    #[arg(long, value_name = "PATH", default_value = "podman")]
    podman: PathBuf,
}

pub(crate) async fn run(args: WatchArgs, global: &GlobalOptions) -> Result<()> {
    let repo = args.repo.clone().map_or_else(default_repository, Ok)?;
    let outcome = skiff_storage::repository::init(&repo, InitOptions::default())
        .with_context(|| format!("Opening {}", repo.display()))?;
    if outcome.insecure {
        eprintln!(
            "skiff: note: {} has no fs-verity: the repository runs in insecure mode",
            repo.display()
        );
    }
    if args.expose {
        super::podman::layer_store_of(&repo)?;
    }
    // Listening before anything starts: a signal during the first copy is not lost.
    let signals = StopSignals::new()?;
    with_repo_hash!(&repo, H => watch::<H>(&args, global, &repo, signals).await)
}

async fn watch<H: FsVerityHashValue>(
    args: &WatchArgs,
    global: &GlobalOptions,
    repo: &Path,
    mut signals: StopSignals,
) -> Result<()> {
    let store = Store::<H>::open_writable(repo)?;
    let keep_blobs = RepoSettings::load(repo)?.keep_blobs;
    let (tx, mut pulls) = mpsc::channel(args.queue.max(1));
    let follower = tokio::spawn(pull_events::follow(args.podman.clone(), tx));
    println!(
        "Watching podman's pulls; copying each image into {}",
        repo.display()
    );
    let (mut copied, mut failed) = (0usize, 0usize);
    let mut signalled = false;
    loop {
        let pulled = tokio::select! {
            // A stop wins over the pulls still queued.
            biased;
            _ = signals.recv() => {
                signalled = true;
                break;
            }
            pulled = pulls.recv() => match pulled {
                Some(pulled) => pulled,
                None => break,
            },
        };
        match copy_pulled::<H>(&store, repo, &pulled, args, global, keep_blobs).await {
            Ok(summary) => {
                copied += 1;
                println!(
                    "Copied {} to composefs:{}:{}: {}; {} layers read, {} stored already, \
                     cloned {}, copied {}",
                    pulled.name,
                    repo.display(),
                    pulled.name,
                    summary.manifest_digest,
                    summary.layers_unpacked,
                    summary.layers_skipped,
                    human(summary.bytes_cloned),
                    human(summary.bytes_copied)
                );
            }
            Err(e) => {
                failed += 1;
                eprintln!("skiff: error: {}: {e:#}", pulled.name);
            }
        }
    }
    // Ends `podman events` (it is killed when its task is dropped).
    drop(pulls);
    // The follower ends on its own only when it cannot go on (no podman): its error is why.
    let followed = if signalled {
        follower.abort();
        Ok(())
    } else {
        follower.await?
    };
    println!("Stopped: {copied} copied, {failed} failed");
    followed
}

/// Copies the image podman pulled into the store, tagged with the name it was pulled by.
async fn copy_pulled<H: FsVerityHashValue>(
    store: &Store<H>,
    repo: &Path,
    pulled: &PulledImage,
    args: &WatchArgs,
    global: &GlobalOptions,
    keep_blobs: bool,
) -> Result<CopySummary> {
    // By ID where podman says it; podman 4.3 says only the name it pulled.
    let source_ref = ImageRef::ContainersStorage(match &pulled.id {
        Some(id) => format!("@{id}"),
        None => pulled.name.clone(),
    });
    let options = SourceOptions {
        storage_root: args.storage_root.clone(),
        policy: global.policy.clone(),
        insecure_policy: global.insecure_policy,
        ..Default::default()
    };
    let source = Arc::new(Source::open(&source_ref, &options).await?);
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let summary = copy_image(
        source,
        store,
        &pulled.name,
        &CopyOptions {
            jobs,
            delta_jobs: jobs,
            // Podman's store has the image whole: nothing to gain from a delta.
            use_deltas: false,
            retry_times: 0,
            keep_blobs,
        },
        Arc::new(NoObserver),
    )
    .await?;
    if args.expose {
        let (path, image) = (repo.to_owned(), StoredRef::Tag(pulled.name.clone()));
        tokio::task::spawn_blocking(move || super::podman::expose::<H>(&path, &image)).await??;
    }
    Ok(summary)
}
