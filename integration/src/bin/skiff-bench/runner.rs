//! Running and timing the tools of a scenario: interleaved runs, GNU time's wall time and peak
//! RSS, medians; and the file-system chores every scenario shares.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use skiff_integration::tools::require;

pub(crate) struct Sample {
    pub(crate) seconds: f64,
    pub(crate) rss_kib: u64,
}

pub(crate) fn measure(cmd: &mut Command) -> Result<Sample> {
    measure_with_output(cmd).map(|(sample, _)| sample)
}

/// [`measure`], and what the command wrote to stdout.
pub(crate) fn measure_with_output(cmd: &mut Command) -> Result<(Sample, Vec<u8>)> {
    let report = tempfile::NamedTempFile::new()?;
    let mut timed = Command::new("/usr/bin/time");
    timed
        .arg("-f")
        .arg("%e %M")
        .arg("-o")
        .arg(report.path())
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    let out = timed.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = std::fs::read_to_string(report.path())?;
    let mut parts = text.split_whitespace();
    let seconds = parts.next().context("time output")?.parse()?;
    let rss_kib = parts.next().context("time output")?.parse()?;
    Ok((Sample { seconds, rss_kib }, out.stdout))
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub(crate) struct Row {
    pub(crate) scenario: &'static str,
    pub(crate) tool: &'static str,
    pub(crate) seconds: f64,
    pub(crate) rss_mib: f64,
}

/// A tool of a scenario: its name and how to make the command of run `i` (preparing any
/// fresh state first).
pub(crate) type Tool<'a> = (&'static str, Box<dyn FnMut(usize) -> Result<Command> + 'a>);

/// The skiff binary to compare against, from `SKIFF_BENCH_BASELINE` (for example a build of
/// an earlier commit): every scenario then also runs it, as `skiff-before`, with the same
/// arguments and fresh state, interleaved with the others.
pub(crate) fn baseline() -> Option<PathBuf> {
    std::env::var_os("SKIFF_BENCH_BASELINE").map(PathBuf::from)
}

/// `cmd` with its program replaced by `program` (same arguments and environment).
pub(crate) fn with_program(cmd: &Command, program: &Path) -> Command {
    let mut other = Command::new(program);
    other.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => other.env(k, v),
            None => other.env_remove(k),
        };
    }
    other
}

/// Runs every tool of a scenario `runs` times, interleaved (A B C A B C ...) so that the
/// machine's drift hits all alike, with a `sync` before each run so that one run's writeback
/// does not land in the next. With a [`baseline`], skiff's runs are each followed by one of
/// the baseline.
pub(crate) fn run_scenario(
    rows: &mut Vec<Row>,
    runs: usize,
    scenario: &'static str,
    mut tools: Vec<Tool<'_>>,
) -> Result<()> {
    let baseline = baseline();
    // (tool index, run by the baseline binary)
    let mut columns: Vec<(usize, bool)> = Vec::new();
    for (i, (name, _)) in tools.iter().enumerate() {
        columns.push((i, false));
        if *name == "skiff" && baseline.is_some() {
            columns.push((i, true));
        }
    }
    let mut samples: Vec<(Vec<f64>, Vec<f64>)> =
        columns.iter().map(|_| (Vec::new(), Vec::new())).collect();
    for i in 0..runs {
        for (&(tool, before), (secs, rss)) in columns.iter().zip(samples.iter_mut()) {
            let (name, prepare) = &mut tools[tool];
            let mut cmd = prepare(i)?;
            let name = match &baseline {
                Some(program) if before => {
                    cmd = with_program(&cmd, program);
                    "skiff-before"
                }
                _ => *name,
            };
            Command::new("sync").status()?;
            let s = measure(&mut cmd)?;
            eprintln!(
                "  {scenario:16} {name:12} run {}: {:.2}s, {} MiB",
                i + 1,
                s.seconds,
                s.rss_kib / 1024
            );
            secs.push(s.seconds);
            rss.push(s.rss_kib as f64 / 1024.0);
        }
    }
    for (&(tool, before), (secs, rss)) in columns.iter().zip(samples) {
        rows.push(Row {
            scenario,
            tool: if before {
                "skiff-before"
            } else {
                tools[tool].0
            },
            seconds: median(secs),
            rss_mib: median(rss),
        });
    }
    Ok(())
}

pub(crate) fn fresh(dir: &Path) -> Result<PathBuf> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.parent().expect("has a parent"))?;
    Ok(dir.to_owned())
}

pub(crate) fn cfsctl_repo(path: &Path) -> Result<()> {
    fresh(path)?;
    let ok = Command::new(require("cfsctl"))
        .arg("init")
        .arg("--insecure")
        .arg(path)
        .output()?
        .status
        .success();
    if !ok {
        bail!("cfsctl init {} failed", path.display());
    }
    Ok(())
}

/// A home directory whose registries.conf marks the local registry insecure (plain HTTP), for
/// tools that have no TLS flag (skopeo 1.9.3 ignores CONTAINERS_REGISTRIES_CONF, but reads
/// `$HOME/.config/containers/registries.conf` before the system's).
pub(crate) fn insecure_registry_home(root: &Path, host: &str) -> Result<PathBuf> {
    let home = root.join("home");
    let dir = home.join(".config/containers");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("registries.conf"),
        format!("[[registry]]\nlocation = \"{host}\"\ninsecure = true\n"),
    )?;
    Ok(home)
}

pub(crate) fn run_quiet(cmd: &mut Command) -> Result<()> {
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Bytes of disk a directory tree takes (`du`).
pub(crate) fn disk_usage(dir: &Path) -> Result<u64> {
    let out = Command::new("du").arg("-s").arg("-B1").arg(dir).output()?;
    anyhow::ensure!(out.status.success(), "du {} failed", dir.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .context("du output")?
        .parse()
        .context("du output")
}

/// Replaces `to` by a copy of the directory `from` (reflinks where the filesystem has them).
pub(crate) fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(to);
    run_quiet(
        Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(from)
            .arg(to),
    )
}

/// The scenarios' medians, each against skiff's in the same scenario.
pub(crate) fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| scenario | tool | median wall (s) | median peak RSS (MiB) | time vs skiff | RSS vs skiff |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    for row in rows {
        let base = rows
            .iter()
            .find(|r| r.scenario == row.scenario && r.tool == "skiff")
            .expect("skiff row");
        println!(
            "| {} | {} | {:.2} | {:.0} | {:.2}x | {:.2}x |",
            row.scenario,
            row.tool,
            row.seconds,
            row.rss_mib,
            row.seconds / base.seconds,
            row.rss_mib / base.rss_mib
        );
    }
}
