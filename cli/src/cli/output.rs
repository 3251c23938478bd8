//! What `skiff copy` prints: bars on a terminal, plain lines otherwise, or one JSON object a
//! line; and the closing summary.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::ValueEnum;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use skiff_transport::pull::{CopyEvent, CopySummary, Observer};
use skiff_transport::push::{CopyOutOptions, CopyOutSummary};
use skiff_transport::reference::ImageRef;

/// `--progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ProgressMode {
    /// Bars on a terminal, plain lines otherwise.
    Auto,
    /// Progress bars.
    Bars,
    /// One line per event.
    Plain,
    /// One JSON object per line.
    Json,
}

/// Where the copy's output goes.
pub(crate) struct Output {
    mode: ProgressMode,
    quiet: bool,
}

/// How often bars are redrawn from the byte counters.
const BAR_TICK: Duration = Duration::from_millis(100);

impl Output {
    pub(crate) fn new(mode: ProgressMode, quiet: bool) -> Self {
        let mode = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bars,
            ProgressMode::Auto => ProgressMode::Plain,
            m => m,
        };
        Self { mode, quiet }
    }

    /// A one-line notice (stderr, also under --quiet: it concerns the repository's safety).
    pub(crate) fn notice(&self, message: &str) {
        if self.mode == ProgressMode::Json {
            println!(
                "{}",
                serde_json::json!({ "event": "notice", "message": message })
            );
        } else {
            eprintln!("skiff: note: {message}");
        }
    }

    pub(crate) fn observer(&self) -> Arc<Renderer> {
        let bars = (self.mode == ProgressMode::Bars && !self.quiet).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            Bars {
                multi,
                active: Mutex::new(Vec::new()),
            }
        });
        let renderer = Arc::new(Renderer {
            mode: self.mode,
            quiet: self.quiet,
            bars,
            stop: AtomicBool::new(false),
        });
        if renderer.bars.is_some() {
            let r = renderer.clone();
            std::thread::spawn(move || {
                while !r.stop.load(Ordering::Relaxed) {
                    r.tick();
                    std::thread::sleep(BAR_TICK);
                }
            });
        }
        renderer
    }

    pub(crate) fn summary(&self, source: &ImageRef, dest: &ImageRef, s: &CopySummary) {
        if self.quiet {
            return;
        }
        if self.mode == ProgressMode::Json {
            json_summary(
                serde_json::to_value(s).expect("summary serialises"),
                source,
                dest,
            );
            return;
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "Copied {source} to {dest}");
        let _ = writeln!(out, "  manifest  {}", s.manifest_digest);
        let _ = writeln!(
            out,
            "  fetched   {} in {} requests ; written {} ; reused {} ({} objects)",
            human(s.bytes_fetched),
            s.requests,
            human(s.bytes_written),
            human(s.bytes_reused),
            s.objects_reused
        );
        let _ = writeln!(
            out,
            "  layers    {} skipped, {} full, {} partial, {} delta",
            s.layers_skipped, s.layers_full, s.layers_partial, s.layers_delta
        );
        if s.bytes_from_stored_chunks > 0 {
            let _ = writeln!(
                out,
                "  chunks    {} of changed files taken from stored files",
                human(s.bytes_from_stored_chunks)
            );
        }
        if let Some(delta) = &s.delta {
            let _ = writeln!(out, "  delta     {delta} (saved {})", human(s.bytes_saved));
        }
        if s.layers_unpacked > 0 {
            let _ = writeln!(
                out,
                "  unpacked  {} layers from containers-storage ; cloned {} ; copied {}",
                s.layers_unpacked,
                human(s.bytes_cloned),
                human(s.bytes_copied)
            );
        }
        let _ = writeln!(out, "  time      {:.2}s", s.seconds);
    }

    /// The close of a copy out of the store: one line when the manifest digest changed and
    /// why, then the summary.
    pub(crate) fn copy_out_summary(
        &self,
        source: &ImageRef,
        dest: &ImageRef,
        s: &CopyOutSummary,
        options: &CopyOutOptions,
    ) {
        if s.regenerated > 0 {
            self.notice(&format!(
                "the manifest digest changed ({} -> {}): the store keeps no original blob for {} \
                 of the {} layers, which were compressed again ({})",
                s.stored_digest, s.manifest_digest, s.regenerated, s.layers, options.compression
            ));
        }
        if self.quiet {
            return;
        }
        if self.mode == ProgressMode::Json {
            json_summary(
                serde_json::to_value(s).expect("summary serialises"),
                source,
                dest,
            );
            return;
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "Copied {source} to {dest}");
        let _ = writeln!(out, "  manifest  {}", s.manifest_digest);
        let _ = writeln!(
            out,
            "  written   {} ; {} blobs already there",
            human(s.bytes_written),
            s.blobs_skipped
        );
        let _ = writeln!(
            out,
            "  layers    {} as kept, {} compressed again",
            s.layers - s.regenerated,
            s.regenerated
        );
        let _ = writeln!(out, "  time      {:.2}s", s.seconds);
    }
}

/// The summary as one JSON line: its fields, with `event`, `source` and `destination`.
fn json_summary(mut v: serde_json::Value, source: &ImageRef, dest: &ImageRef) {
    v["event"] = "summary".into();
    v["source"] = source.to_string().into();
    v["destination"] = dest.to_string().into();
    println!("{v}");
}

struct Bars {
    multi: MultiProgress,
    active: Mutex<Vec<(String, ProgressBar, Arc<AtomicU64>)>>,
}

/// Renders copy events.
pub(crate) struct Renderer {
    mode: ProgressMode,
    quiet: bool,
    bars: Option<Bars>,
    stop: AtomicBool,
}

impl Renderer {
    fn tick(&self) {
        if let Some(bars) = &self.bars {
            for (_, bar, counter) in bars.active.lock().expect("bars lock").iter() {
                bar.set_position(counter.load(Ordering::Relaxed));
            }
        }
    }

    /// Stops redrawing.
    pub(crate) fn finish(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(bars) = &self.bars {
            let _ = bars.multi.clear();
        }
    }
}

fn short(digest: &str) -> &str {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    &hex[..hex.len().min(12)]
}

/// Bytes in binary units.
pub(crate) fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

impl Observer for Renderer {
    fn event(&self, event: &CopyEvent) {
        if self.quiet {
            return;
        }
        match self.mode {
            ProgressMode::Json => {
                let mut v = serde_json::to_value(event).expect("event serialises");
                if let CopyEvent::LayerStarted { .. } = event {
                    v["fetched"] = 0.into();
                }
                println!("{v}");
            }
            ProgressMode::Bars => self.bar_event(event),
            _ => {
                let line = match event {
                    CopyEvent::Resolved {
                        manifest_digest,
                        layers,
                    } => {
                        format!("Resolved image {manifest_digest} ({layers} layers)")
                    }
                    CopyEvent::LayerSkipped { digest, .. } => {
                        format!("Skipping blob {} (already stored)", short(digest))
                    }
                    CopyEvent::LayerStarted { digest, size, .. } => {
                        format!("Copying blob {} ({})", short(digest), human(*size))
                    }
                    CopyEvent::LayerRetry {
                        digest,
                        attempt,
                        error,
                    } => {
                        format!(
                            "Retrying blob {} (attempt {attempt}): {error}",
                            short(digest)
                        )
                    }
                    CopyEvent::LayerFallback { digest, reason } => {
                        format!("Fetching blob {} whole: {reason}", short(digest))
                    }
                    CopyEvent::DeltaUsed {
                        digest,
                        replaces,
                        size,
                    } => format!(
                        "Using delta {digest}: {} instead of {} of layers",
                        human(*size),
                        human(*replaces)
                    ),
                    CopyEvent::LayerDone {
                        digest,
                        partial,
                        fetched,
                        written,
                        reused,
                    } => format!(
                        "Stored blob {}{}: fetched {}, written {}, reused {}",
                        short(digest),
                        if *partial { " (partial)" } else { "" },
                        human(*fetched),
                        human(*written),
                        human(*reused)
                    ),
                    CopyEvent::Published {
                        manifest_digest,
                        tag,
                    } => {
                        format!("Writing manifest {manifest_digest} and tagging {tag}")
                    }
                    _ => return,
                };
                println!("{line}");
            }
        }
    }
}

impl Renderer {
    fn bar_event(&self, event: &CopyEvent) {
        let Some(bars) = &self.bars else { return };
        match event {
            CopyEvent::LayerStarted {
                digest,
                size,
                fetched,
            } => {
                let bar = bars.multi.add(ProgressBar::new(*size));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                bar.set_prefix(format!("blob {}", short(digest)));
                bars.active
                    .lock()
                    .expect("bars lock")
                    .push((digest.clone(), bar, fetched.clone()));
            }
            CopyEvent::LayerDone { digest, .. } | CopyEvent::LayerRetry { digest, .. } => {
                let mut active = bars.active.lock().expect("bars lock");
                if let Some(i) = active.iter().position(|(d, _, _)| d == digest) {
                    let (_, bar, counter) = active.remove(i);
                    bar.set_position(counter.load(Ordering::Relaxed));
                    bar.finish();
                }
            }
            CopyEvent::LayerSkipped { digest, .. } => {
                let _ = bars
                    .multi
                    .println(format!("blob {} already stored", short(digest)));
            }
            _ => {}
        }
    }
}
