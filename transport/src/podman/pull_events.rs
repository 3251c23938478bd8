//! Podman's image pulls as they happen: `podman events --format json --filter type=image
//! --filter event=pull`, one JSON object a line:
//!
//! ```json
//! {"Name":"registry.example/app:v1","Status":"pull","Time":"2026-12-03T15:35:34.341275612Z",
//!  "Type":"image","Attributes":null}
//! ```
//!
//! Podman 4.3 names the image only by the reference it was pulled by; later versions add its
//! `ID`.
//!
//! Podman has no daemon: `podman events` reads its event log (journald, or the file of
//! containers.conf's `events_logfile_path`). [`follow`] starts it from the second before it was
//! called, and, whenever the process ends (podman upgraded, the log rotated, killed), again
//! after a pause from the time of the last event it saw (`--since`), so that a pull in between
//! is not lost; the events it sees twice are dropped.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use crate::reference::docker::is_image_id;

/// First pause before `podman events` is started again; doubled each time it ends at once.
const RESTART_DELAY: Duration = Duration::from_millis(500);
/// Longest pause between two starts.
const RESTART_MAX_DELAY: Duration = Duration::from_secs(30);
/// A `podman events` that ran this long was healthy: the next restart pauses the least.
const HEALTHY_RUN: Duration = Duration::from_secs(10);
/// Events remembered to drop the ones a restart's `--since` replays.
const REMEMBERED: usize = 1024;
/// Longest event line read: real ones are a few hundred bytes.
const MAX_LINE: usize = 64 * 1024;

/// An image podman pulled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledImage {
    /// The image ID (its config digest's hex), where podman says it.
    pub id: Option<String>,
    /// The name it was pulled by.
    pub name: String,
    /// When, as `--since` takes it: RFC 3339 (podman 4), or Unix seconds (podman 5).
    pub time: String,
}

/// One event line. Podman 4 writes `"Time"` (RFC 3339); podman 5 `"time"` (Unix seconds) and
/// `"timeNano"`.
#[derive(Deserialize)]
struct Event {
    #[serde(rename = "Type", default)]
    kind: String,
    #[serde(rename = "Status", default)]
    status: String,
    #[serde(rename = "ID", alias = "id", default)]
    id: Option<String>,
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "Time", default)]
    time_text: Option<String>,
    #[serde(rename = "time", default)]
    time_seconds: Option<i64>,
    #[serde(rename = "timeNano", default)]
    time_nanos: Option<i64>,
}

/// The pull an event line reports; `None` for any other event or a line that is not one.
pub fn parse_event(line: &str) -> Option<PulledImage> {
    let event: Event = serde_json::from_str(line).ok()?;
    if event.kind != "image" || event.status != "pull" || event.name.is_empty() {
        return None;
    }
    if event.id.as_deref().is_some_and(|id| !is_image_id(id)) {
        return None;
    }
    let time = match (event.time_text, event.time_nanos, event.time_seconds) {
        (Some(text), _, _) => text,
        (None, Some(nanos), _) => {
            format!("{}.{:09}", nanos / 1_000_000_000, nanos % 1_000_000_000)
        }
        (None, None, Some(seconds)) => seconds.to_string(),
        (None, None, None) => return None,
    };
    Some(PulledImage {
        id: event.id,
        name: event.name,
        time,
    })
}

/// The events already passed on, to drop the ones a restart replays.
#[derive(Debug, Default)]
struct Seen {
    order: VecDeque<(String, String, String)>,
    set: HashSet<(String, String, String)>,
}

impl Seen {
    /// True the first time `event` is offered.
    fn first(&mut self, event: &PulledImage) -> bool {
        let key = (
            event.id.clone().unwrap_or_default(),
            event.name.clone(),
            event.time.clone(),
        );
        if !self.set.insert(key.clone()) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > REMEMBERED
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

/// Unix seconds now (what `--since` takes besides RFC 3339).
fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Follows podman's pulls, from now on, into `pulls` (bounded: when the consumer falls
/// behind, reading waits and podman's log holds the rest), starting `podman` again whenever it
/// ends. Returns when `pulls` is closed.
pub async fn follow(podman: PathBuf, pulls: mpsc::Sender<PulledImage>) -> Result<()> {
    let mut seen = Seen::default();
    // From the second before: a pull while `podman events` starts is not missed.
    let mut since = unix_seconds().saturating_sub(1).to_string();
    let mut delay = RESTART_DELAY;
    let mut first = true;
    loop {
        let started = tokio::time::Instant::now();

        let mut cmd = tokio::process::Command::new(&podman);
        cmd.args([
            "events",
            "--format",
            "json",
            "--filter",
            "type=image",
            "--filter",
            "event=pull",
        ]);
        // Events from here on are not lost: each run starts where the one before stopped.
        cmd.args(["--since", &since]);
        cmd.stdout(Stdio::piped())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let ended = match cmd.spawn() {
            Ok(mut child) => {
                let stdout = child.stdout.take().context("podman events' output")?;
                let mut lines = BufReader::new(stdout);
                let mut line = String::new();
                loop {
                    line.clear();
                    match lines.read_line(&mut line).await {
                        Ok(0) => break,
                        Ok(_) if line.len() > MAX_LINE => continue,
                        Ok(_) => {}
                        Err(e) => {
                            log::warn!("reading podman events: {e}");
                            break;
                        }
                    }
                    let Some(pulled) = parse_event(line.trim()) else {
                        continue;
                    };
                    since = pulled.time.clone();
                    if seen.first(&pulled) && pulls.send(pulled).await.is_err() {
                        return Ok(());
                    }
                }
                let _ = child.start_kill();
                match child.wait().await {
                    Ok(status) => format!("podman events ended ({status})"),
                    Err(e) => format!("podman events ended ({e})"),
                }
            }
            // A podman that was never there will not come: say so, rather than wait.
            Err(e) if first => {
                return Err(e).with_context(|| format!("Starting {} events", podman.display()));
            }
            Err(e) => format!("podman events cannot start ({e})"),
        };
        first = false;
        if pulls.is_closed() {
            return Ok(());
        }
        if started.elapsed() >= HEALTHY_RUN {
            delay = RESTART_DELAY;
        }
        log::warn!("{ended}; starting it again in {delay:?}");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = pulls.closed() => return Ok(()),
        }
        delay = (delay * 2).min(RESTART_MAX_DELAY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "2a0d50079eb9d4c37241b9da45c190bc0e084abf8463e7ea66133cceced7e556";

    #[test]
    fn only_image_pulls_are_events_to_follow() {
        let pull = format!(
            r#"{{"ID":"{ID}","Name":"127.0.0.1:5000/app:v1","Status":"pull","Time":"2026-12-03T15:35:34.3Z","Type":"image","Attributes":null}}"#
        );
        assert_eq!(
            parse_event(&pull),
            Some(PulledImage {
                id: Some(ID.into()),
                name: "127.0.0.1:5000/app:v1".into(),
                time: "2026-12-03T15:35:34.3Z".into(),
            })
        );
        // Podman 4.3: no ID.
        let without_id = r#"{"Name":"127.0.0.1:5000/app:v1","Status":"pull","Time":"2026-12-03T16:06:13.855409846Z","Type":"image","Attributes":null}"#;
        let pulled = parse_event(without_id).unwrap();
        assert_eq!(
            (pulled.id, pulled.name.as_str()),
            (None, "127.0.0.1:5000/app:v1")
        );
        assert_eq!(
            parse_event(&without_id.replace("127.0.0.1:5000/app:v1", "")),
            None
        );
        assert_eq!(parse_event(&pull.replace("\"pull\"", "\"tag\"")), None);
        assert_eq!(
            parse_event(&pull.replace("\"image\"", "\"container\"")),
            None
        );
        assert_eq!(parse_event(&pull.replace(ID, "../../etc")), None);
        assert_eq!(parse_event("not json"), None);
        assert_eq!(parse_event(&pull.replace(ID, &ID.to_uppercase())), None);
        // Podman 5: lower-case times, in seconds and nanoseconds.
        let v5 = format!(
            r#"{{"ID":"{ID}","Name":"quay.io/app:v1","Status":"pull","Type":"image","time":1764775000,"timeNano":1764775000123456789}}"#
        );
        let pulled = parse_event(&v5).unwrap();
        assert_eq!(pulled.time, "1764775000.123456789");
        assert_eq!(pulled.id.as_deref(), Some(ID));
    }

    #[test]
    fn a_replayed_event_is_passed_on_once() {
        let event = |t: &str| PulledImage {
            id: Some(ID.into()),
            name: "app:v1".into(),
            time: t.into(),
        };
        let mut seen = Seen::default();
        assert!(seen.first(&event("1")));
        assert!(!seen.first(&event("1")));
        // The same image pulled again later is a new pull.
        assert!(seen.first(&event("2")));
        for i in 0..REMEMBERED + 1 {
            seen.first(&event(&format!("x{i}")));
        }
        assert!(seen.set.len() <= REMEMBERED);
        assert!(
            seen.first(&event("1")),
            "forgotten after {REMEMBERED} others"
        );
    }
}
