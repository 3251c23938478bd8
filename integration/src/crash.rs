//! Crash and concurrency trials: a `skiff copy` run in the background and watched through its
//! `--progress=json` events and its repository, so that a test can kill it at a chosen point
//! rather than after a sleep; and what a copy left in the repository, read from the names
//! composefs gives layers, configs, manifests and tags.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

/// How often [`WatchedCopy::kill_when`] tests its condition: short against the few
/// milliseconds that separate the steps of a publish (each waits for a `syncfs`).
const POLL: Duration = Duration::from_micros(200);

/// `skiff copy --progress=json` of `source` (a registry read over plain HTTP, or any other
/// source) into `repo` as `tag`, fetching `jobs` layers at a time.
pub fn copy_command(source: &str, repo: &Path, tag: &str, jobs: u32) -> Command {
    let mut cmd = crate::tools::skiff();
    cmd.args([
        "--insecure-policy",
        "copy",
        "--progress=json",
        "--src-tls-verify=false",
    ])
    .arg(format!("--jobs={jobs}"))
    .arg(source)
    .arg(format!("composefs:{}:{tag}", repo.display()));
    cmd
}

/// A skiff process started with `--progress=json`, whose events are read as they come.
#[derive(Debug)]
pub struct WatchedCopy {
    child: Child,
    events: Receiver<Value>,
    stderr: std::thread::JoinHandle<String>,
    /// Every event read so far, in order.
    pub seen: Vec<Value>,
}

/// How a watched copy ended.
#[derive(Debug)]
pub struct Ended {
    /// Its exit status (a signal when killed).
    pub status: ExitStatus,
    /// True when the kill came before the process ended by itself.
    pub killed: bool,
    /// Every event it printed.
    pub events: Vec<Value>,
    /// What it wrote to stderr.
    pub stderr: String,
}

impl Ended {
    /// The `summary` event of a copy that finished.
    pub fn summary(&self) -> Option<&Value> {
        self.events.iter().find(|e| e["event"] == "summary")
    }
}

impl WatchedCopy {
    /// Starts `cmd` (a skiff command with `--progress=json`), its stdout and stderr piped.
    pub fn spawn(mut cmd: Command) -> Result<Self> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut stderr = child.stderr.take().context("no stderr")?;
        let (tx, events) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(event) = serde_json::from_str(&line)
                    && tx.send(event).is_err()
                {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Ok(Self {
            child,
            events,
            stderr,
            seen: Vec::new(),
        })
    }

    /// Reads events until one satisfies `wanted`; false when the process closed its stdout
    /// first (it ended).
    pub fn wait_for_event(&mut self, mut wanted: impl FnMut(&Value, &[Value]) -> bool) -> bool {
        while let Ok(event) = self.events.recv() {
            self.seen.push(event);
            if wanted(self.seen.last().unwrap(), &self.seen) {
                return true;
            }
        }
        false
    }

    /// Tests `condition` every [`POLL`] (taking in the events meanwhile) until it holds; false
    /// when the process ended first.
    pub fn wait_until(&mut self, mut condition: impl FnMut() -> bool) -> bool {
        loop {
            if condition() {
                return true;
            }
            match self.events.recv_timeout(POLL) {
                Ok(event) => self.seen.push(event),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    // Stdout is closed: the process is ending; a last look.
                    return condition();
                }
            }
        }
    }

    /// Kills the process with SIGKILL (if it is still running) and reaps it.
    pub fn kill(mut self) -> Result<Ended> {
        let killed = self.child.try_wait()?.is_none();
        if killed {
            self.child.kill()?;
        }
        self.finish(killed)
    }

    /// Waits for the process to end by itself.
    pub fn wait(self) -> Result<Ended> {
        self.finish(false)
    }

    fn finish(mut self, killed: bool) -> Result<Ended> {
        let status = self.child.wait()?;
        self.seen.extend(self.events.iter());
        let stderr = self.stderr.join().unwrap_or_default();
        Ok(Ended {
            status,
            killed,
            events: self.seen,
            stderr,
        })
    }
}

/// The names an image's copy leaves in a repository, as composefs-oci spells them.
#[derive(Debug, Clone)]
pub struct ImageNames {
    /// `sha256:…` of each distinct layer's uncompressed tar.
    pub diff_ids: Vec<String>,
    /// `sha256:…` of the config.
    pub config: String,
    /// `sha256:…` of the manifest.
    pub manifest: String,
}

/// What a repository holds of one image, at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Layers of the image that are named in the store (verified and synced).
    pub layers: usize,
    /// The config splitstream is named.
    pub config: bool,
    /// The manifest splitstream is named.
    pub manifest: bool,
    /// The manifest digest the tag points to, if the tag exists.
    pub tag: Option<String>,
}

impl ImageNames {
    /// The names of an image written by [`crate::fixtures::write_oci_layout`].
    pub fn of(written: &crate::fixtures::WrittenImage) -> Self {
        let mut diff_ids = written.diff_ids.clone();
        diff_ids.sort();
        diff_ids.dedup();
        Self {
            diff_ids,
            config: written.config_digest.clone(),
            manifest: written.manifest_digest.clone(),
        }
    }

    /// What `repo` holds of this image now, `tag` being the name it is copied to.
    pub fn found_in(&self, repo: &Path, tag: &str) -> Found {
        let streams = repo.join("streams");
        let named = |id: String| streams.join(id).symlink_metadata().is_ok();
        Found {
            layers: self
                .diff_ids
                .iter()
                .filter(|d| named(format!("oci-layer-{d}")))
                .count(),
            config: named(format!("oci-config-{}", self.config)),
            manifest: named(format!("oci-manifest-{}", self.manifest)),
            tag: tag_target(repo, tag),
        }
    }

    /// The path of the manifest's stream name (it appears once the manifest is synced).
    pub fn manifest_path(&self, repo: &Path) -> PathBuf {
        repo.join("streams")
            .join(format!("oci-manifest-{}", self.manifest))
    }

    /// The path of the config's stream name.
    pub fn config_path(&self, repo: &Path) -> PathBuf {
        repo.join("streams")
            .join(format!("oci-config-{}", self.config))
    }
}

/// The manifest digest `tag` points to in `repo`, if the tag exists (a tag is a symlink to
/// `../../oci-manifest-DIGEST`).
pub fn tag_target(repo: &Path, tag: &str) -> Option<String> {
    let link = std::fs::read_link(repo.join("streams/refs/oci").join(tag)).ok()?;
    let name = link.file_name()?.to_str()?;
    Some(
        name.strip_prefix("oci-manifest-")
            .unwrap_or(name)
            .to_owned(),
    )
}

/// A temporary directory for repositories that trials kill copies in: in memory (`/dev/shm`)
/// where there is one. A SIGKILL loses nothing the page cache holds, so a filesystem where
/// `syncfs` costs nothing exercises the same order of writes; on a disk every `syncfs` of a
/// copy also flushes what other processes wrote, which made the trials ten times slower on a
/// busy machine.
pub fn scratch_dir() -> Result<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    let builder = tempfile::Builder::new().prefix("skiff-trials-").clone();
    Ok(if shm.is_dir() {
        builder.tempdir_in(shm)?
    } else {
        builder.tempdir()?
    })
}

/// The `flock`s of the process `pid` in `/proc/locks`: (waiting for it, exclusive).
fn flocks(pid: u32) -> Vec<(bool, bool)> {
    let Ok(locks) = std::fs::read_to_string("/proc/locks") else {
        return Vec::new();
    };
    let pid = pid.to_string();
    locks
        .lines()
        .filter_map(|line| {
            // `1: FLOCK ADVISORY WRITE PID …`, or `1: -> FLOCK …` for a waiting request.
            let mut fields: Vec<&str> = line.split_whitespace().skip(1).collect();
            let waiting = fields.first() == Some(&"->");
            if waiting {
                fields.remove(0);
            }
            (fields.first() == Some(&"FLOCK") && fields.get(3) == Some(&pid.as_str()))
                .then(|| (waiting, fields.get(2) == Some(&"WRITE")))
        })
        .collect()
}

/// True when the process `pid` waits for a `flock`.
pub fn waits_for_flock(pid: u32) -> bool {
    flocks(pid).iter().any(|(waiting, _)| *waiting)
}

/// True when the process `pid` holds an exclusive `flock`.
pub fn holds_exclusive_flock(pid: u32) -> bool {
    flocks(pid).contains(&(false, true))
}
