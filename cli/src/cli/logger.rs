//! A minimal `log` backend for the binary: messages at or above `$SKIFF_LOG` (default `warn`;
//! `--debug` lowers it to `debug`) go to stderr.

use log::{Level, LevelFilter, Log, Metadata, Record};

struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }
    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            let level = match record.level() {
                Level::Error => "error",
                Level::Warn => "warning",
                Level::Info => "info",
                Level::Debug => "debug",
                Level::Trace => "trace",
            };
            eprintln!("skiff: {level}: {}", record.args());
        }
    }
    fn flush(&self) {}
}

/// Installs the logger.
pub fn init() {
    let level = std::env::var("SKIFF_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(LevelFilter::Warn);
    if log::set_boxed_logger(Box::new(StderrLogger)).is_ok() {
        log::set_max_level(level);
    }
}
