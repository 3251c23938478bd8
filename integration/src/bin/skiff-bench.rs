//! `make bench`: skiff against its peers on the same images in the same run.
//!
//! Scenarios (each tool on a fresh repository or directory per run unless "warm"):
//! - `oci-layout cold`: `skiff copy oci:...` vs `cfsctl oci pull oci:...`;
//! - `registry cold`: `skiff copy docker://...` vs `cfsctl oci pull docker://...` vs
//!   `skopeo copy docker://... oci:DIR`, from a local docker-registry on 127.0.0.1;
//! - `registry warm`: the same into a store that already holds the image.
//!
//! Wall time and peak RSS come from GNU time; medians of `SKIFF_BENCH_RUNS` runs (default 3).
//! The image is the `large` fixture (320 MiB uncompressed, 6,000 files plus one of 65 MiB),
//! built once under `target/bench`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use skiff_integration::fixtures::{self, Compression};
use skiff_integration::registry::Registry;
use skiff_integration::tools::{require, skiff_bin};

struct Sample {
    seconds: f64,
    rss_kib: u64,
}

fn measure(cmd: &mut Command) -> Result<Sample> {
    let report = tempfile::NamedTempFile::new()?;
    let mut timed = Command::new("/usr/bin/time");
    timed.arg("-f").arg("%e %M").arg("-o").arg(report.path()).arg(cmd.get_program()).args(cmd.get_args());
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
    Ok(Sample { seconds, rss_kib })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

struct Row {
    scenario: &'static str,
    tool: &'static str,
    seconds: f64,
    rss_mib: f64,
}

fn run_tool(
    rows: &mut Vec<Row>,
    runs: usize,
    scenario: &'static str,
    tool: &'static str,
    mut prepare: impl FnMut(usize) -> Result<Command>,
) -> Result<()> {
    let mut secs = Vec::new();
    let mut rss = Vec::new();
    for i in 0..runs {
        let mut cmd = prepare(i)?;
        let s = measure(&mut cmd)?;
        eprintln!("  {scenario:16} {tool:8} run {}: {:.2}s, {} MiB", i + 1, s.seconds, s.rss_kib / 1024);
        secs.push(s.seconds);
        rss.push(s.rss_kib as f64 / 1024.0);
    }
    rows.push(Row { scenario, tool, seconds: median(secs), rss_mib: median(rss) });
    Ok(())
}

fn fresh(dir: &Path) -> Result<PathBuf> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.parent().expect("has a parent"))?;
    Ok(dir.to_owned())
}

fn cfsctl_repo(path: &Path) -> Result<()> {
    fresh(path)?;
    let ok = Command::new(require("cfsctl")).arg("init").arg("--insecure").arg(path).output()?.status.success();
    if !ok {
        bail!("cfsctl init {} failed", path.display());
    }
    Ok(())
}

fn main() -> Result<()> {
    let runs: usize = std::env::var("SKIFF_BENCH_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    let layout = root.join("layout");
    if !layout.join("index.json").exists() {
        eprintln!("building the benchmark image (once) in {}", layout.display());
        let written = fixtures::write_oci_layout(&layout, "large", &fixtures::by_name("large")?, Compression::Gzip)?;
        eprintln!("  {} bytes uncompressed, manifest {}", written.tar_bytes, written.manifest_digest);
    }
    let skiff = skiff_bin();
    let cfsctl = require("cfsctl");
    let work = root.join("work");
    let mut rows = Vec::new();
    let src = format!("oci:{}:large", layout.display());

    eprintln!("oci-layout cold ({runs} runs each)");
    run_tool(&mut rows, runs, "oci-layout cold", "skiff", |_| {
        let repo = fresh(&work.join("skiff"))?;
        let mut c = Command::new(&skiff);
        c.args(["copy", "--quiet", &src, &format!("composefs:{}:large", repo.display())]);
        Ok(c)
    })?;
    run_tool(&mut rows, runs, "oci-layout cold", "cfsctl", |_| {
        let repo = work.join("cfsctl");
        cfsctl_repo(&repo)?;
        let mut c = Command::new(&cfsctl);
        c.arg("--repo").arg(&repo).args(["oci", "pull", &src, "large"]);
        Ok(c)
    })?;

    let registry = Registry::start_plain()?;
    let remote = registry.push(&src, "bench/large:v1")?;
    eprintln!("registry cold ({runs} runs each), {remote}");
    run_tool(&mut rows, runs, "registry cold", "skiff", |_| {
        let repo = fresh(&work.join("skiff"))?;
        let mut c = Command::new(&skiff);
        c.args(["copy", "--quiet", "--src-tls-verify=false", &remote, &format!("composefs:{}:large", repo.display())]);
        Ok(c)
    })?;
    run_tool(&mut rows, runs, "registry cold", "cfsctl", |_| {
        let repo = work.join("cfsctl");
        cfsctl_repo(&repo)?;
        // cfsctl passes no TLS option to skopeo: the registry is declared insecure for it.
        let mut c = Command::new(&cfsctl);
        c.arg("--repo").arg(&repo).args(["oci", "pull", &remote, "large"]);
        c.env("CONTAINERS_REGISTRIES_CONF", registries_conf(&root, &registry.host())?);
        Ok(c)
    })?;
    run_tool(&mut rows, runs, "registry cold", "skopeo", |_| {
        let dir = fresh(&work.join("skopeo"))?;
        let mut c = Command::new(require("skopeo"));
        c.args(["--insecure-policy", "copy", "--quiet", "--src-tls-verify=false", &remote, &format!("oci:{}:large", dir.display())]);
        Ok(c)
    })?;
    eprintln!("registry warm ({runs} runs each)");
    run_tool(&mut rows, runs, "registry warm", "skiff", |_| {
        let repo = work.join("skiff");
        let mut c = Command::new(&skiff);
        c.args(["copy", "--quiet", "--src-tls-verify=false", &remote, &format!("composefs:{}:large", repo.display())]);
        Ok(c)
    })?;
    run_tool(&mut rows, runs, "registry warm", "cfsctl", |_| {
        let repo = work.join("cfsctl");
        let mut c = Command::new(&cfsctl);
        c.arg("--repo").arg(&repo).args(["oci", "pull", &remote, "large"]);
        c.env("CONTAINERS_REGISTRIES_CONF", registries_conf(&root, &registry.host())?);
        Ok(c)
    })?;
    drop(registry);

    println!();
    println!("| scenario | tool | median wall (s) | median peak RSS (MiB) | time vs skiff | RSS vs skiff |");
    println!("|---|---|---:|---:|---:|---:|");
    for row in &rows {
        let base = rows.iter().find(|r| r.scenario == row.scenario && r.tool == "skiff").expect("skiff row");
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
    println!("\n{runs} runs each; image: 320 MiB uncompressed, 6,000 files + one 65 MiB file, gzip layers.");
    Ok(())
}

/// A registries.conf that marks the local registry insecure (plain HTTP), for tools that have
/// no TLS flag.
fn registries_conf(root: &Path, host: &str) -> Result<PathBuf> {
    let path = root.join("registries.conf");
    std::fs::write(&path, format!("[[registry]]\nlocation = \"{host}\"\ninsecure = true\n"))?;
    Ok(path)
}
