//! Cold pulls of the realistic image ([`skiff_integration::realistic`]: Debian minbase plus a
//! Python data-science site-packages, about 460 MB in two layers), gzip, zstd and zstd:chunked
//! (the latter two written by containers/image), from the OCI layout and from a local
//! docker-registry: skiff, cfsctl 0.9.4 and skopeo on the same images, runs interleaved; and
//! the peak RSS of skiff and cfsctl from 100 MB to 2 GB images, to show it flat.

use std::path::Path;
use std::process::Command;

use anyhow::Result;
use skiff_integration::chunked;
use skiff_integration::fixtures::{self, Compression};
use skiff_integration::loop_fs::LoopFs;
use skiff_integration::realistic::{self, RealisticImages};
use skiff_integration::registry::Registry;
use skiff_integration::tools::{require, skopeo};

use crate::runner::{Row, baseline, cfsctl_repo, insecure_registry_home, measure, run_scenario};

/// The forms of v1 pulled cold (tags of the realistic layout): gzip, zstd, zstd:chunked.
const TAGS: [&str; 3] = ["v1", "v1-zstd", "v1-chunked"];

/// Scenario names, in the order of [`TAGS`].
const OCI_SCENARIOS: [&str; 3] = [
    "realistic oci: gzip",
    "realistic oci: zstd",
    "realistic oci: zstd:chunked",
];
const REGISTRY_SCENARIOS: [&str; 3] = [
    "realistic registry gzip",
    "realistic registry zstd",
    "realistic registry zstd:chunked",
];

/// The realistic images, built once under `root/realistic` (or `SKIFF_BENCH_CACHE`).
pub(crate) fn images(root: &Path) -> Result<RealisticImages> {
    let cache = std::env::var_os("SKIFF_BENCH_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("realistic"));
    realistic::ensure(&cache)
}

/// A new ext4 for each scenario, and a new directory in it for each run, nothing deleted until
/// the scenario ends: on a filesystem where thousands of files were just deleted, creating
/// files costs several times more (see [`LoopFs`]), which would measure the benchmark's own
/// clean-up rather than the tools.
struct ScenarioArea {
    fs: LoopFs,
    /// Directories handed out so far (each call of [`Self::dir`] gets a new one).
    used: std::cell::Cell<usize>,
}

impl ScenarioArea {
    fn new(root: &Path, runs: usize) -> Result<Self> {
        let dir = root.join("work-realistic");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        // Four runs a round (three tools and a baseline), under 1 GiB each (the image is about
        // 460 MB).
        let size_mib = 1024 + 4 * 1024 * runs as u64;
        Ok(Self {
            fs: LoopFs::ext4(&dir, size_mib)?,
            used: Default::default(),
        })
    }

    /// A new directory (not created) for `tool`'s run `i`: each call gets its own, since a
    /// baseline binary runs with the same arguments right after.
    fn dir(&self, tool: &str, i: usize) -> std::path::PathBuf {
        let n = self.used.get();
        self.used.set(n + 1);
        self.fs.path().join(format!("{tool}-{i}-{n}"))
    }
}

/// Cold pulls of every form of v1, from the layout and from the registry.
pub(crate) fn cold_pulls(
    rows: &mut Vec<Row>,
    root: &Path,
    skiff: &Path,
    images: &RealisticImages,
    runs: usize,
) -> Result<()> {
    let cfsctl = require("cfsctl");
    let skiff_copy = |area: &ScenarioArea, i, source: &str, extra: &[&str]| {
        let mut c = Command::new(skiff);
        c.args(["copy", "--quiet"])
            .args(extra)
            .arg(source)
            .arg(format!("composefs:{}:v1", area.dir("skiff", i).display()));
        c
    };
    let cfsctl_pull = |area: &ScenarioArea, i, source: &str, home: Option<&Path>| {
        let repo = area.dir("cfsctl", i);
        cfsctl_repo(&repo)?;
        let mut c = Command::new(&cfsctl);
        c.arg("--repo")
            .arg(&repo)
            .args(["oci", "pull", source, "v1"]);
        if let Some(home) = home {
            c.env("HOME", home);
        }
        Ok(c)
    };
    for (tag, scenario) in TAGS.into_iter().zip(OCI_SCENARIOS) {
        let source = images.oci_ref(tag);
        let area = ScenarioArea::new(root, runs)?;
        eprintln!("{scenario} ({runs} runs each)");
        run_scenario(
            rows,
            runs,
            scenario,
            vec![
                (
                    "skiff",
                    Box::new(|i| Ok(skiff_copy(&area, i, &source, &[]))),
                ),
                ("cfsctl", Box::new(|i| cfsctl_pull(&area, i, &source, None))),
            ],
        )?;
    }

    let registry = Registry::start_plain()?;
    let home = insecure_registry_home(root, &registry.host())?;
    for (tag, scenario) in TAGS.into_iter().zip(REGISTRY_SCENARIOS) {
        let remote = registry.push(&images.oci_ref(tag), &format!("bench/realistic:{tag}"))?;
        let area = ScenarioArea::new(root, runs)?;
        eprintln!("{scenario} ({runs} runs each), {remote}");
        run_scenario(
            rows,
            runs,
            scenario,
            vec![
                (
                    "skiff",
                    Box::new(|i| Ok(skiff_copy(&area, i, &remote, &["--src-tls-verify=false"]))),
                ),
                (
                    "cfsctl",
                    Box::new(|i| cfsctl_pull(&area, i, &remote, Some(&home))),
                ),
                (
                    "skopeo",
                    Box::new(|i| {
                        let mut c = skopeo();
                        c.args(["copy", "--quiet", "--src-tls-verify=false", &remote])
                            .arg(format!("oci:{}:v1", area.dir("skopeo", i).display()));
                        Ok(c)
                    }),
                ),
            ],
        )?;
    }
    Ok(())
}

/// Uncompressed sizes of the synthetic images whose peak RSS is compared.
const RSS_SIZES_MB: [u64; 3] = [100, 500, 2000];

/// One row of the memory table: an image size and each tool's peak RSS (MiB).
pub(crate) struct RssRow {
    pub(crate) mb: u64,
    pub(crate) skiff_mib: f64,
    pub(crate) cfsctl_mib: f64,
    /// Wall time of the same runs (one each: a rough figure, beside the memory).
    pub(crate) skiff_seconds: f64,
    pub(crate) cfsctl_seconds: f64,
}

/// Peak RSS of a cold pull (one run each) of synthetic gzip images of 100 MB, 500 MB and 2 GB
/// (four layers, 2,000 files plus one of 65 MiB where the size allows), built once.
pub(crate) fn rss_by_size(root: &Path, skiff: &Path) -> Result<Vec<RssRow>> {
    let cfsctl = require("cfsctl");
    let area = ScenarioArea::new(root, 3)?;
    let mut rows = Vec::new();
    for mb in RSS_SIZES_MB {
        let layout = root.join(format!("rss-{mb}"));
        if !layout.join("index.json").exists() {
            eprintln!("building the {mb} MB image (once)");
            let layers = fixtures::large_image(4, 2000, mb * 1_000_000, mb);
            fixtures::write_oci_layout(&layout, "img", &layers, Compression::Gzip)?;
        }
        let source = format!("oci:{}:img", layout.display());
        let repo = area.dir(&format!("skiff-{mb}"), 0);
        let skiff_sample = measure(
            Command::new(skiff)
                .args(["copy", "--quiet", &source])
                .arg(format!("composefs:{}:img", repo.display())),
        )?;
        let repo = area.dir(&format!("cfsctl-{mb}"), 0);
        cfsctl_repo(&repo)?;
        let cfsctl_sample = measure(
            Command::new(&cfsctl)
                .arg("--repo")
                .arg(&repo)
                .args(["oci", "pull", &source, "img"]),
        )?;
        eprintln!(
            "  rss {mb} MB: skiff {} MiB ({:.2} s), cfsctl {} MiB ({:.2} s)",
            skiff_sample.rss_kib / 1024,
            skiff_sample.seconds,
            cfsctl_sample.rss_kib / 1024,
            cfsctl_sample.seconds
        );
        rows.push(RssRow {
            mb,
            skiff_mib: skiff_sample.rss_kib as f64 / 1024.0,
            cfsctl_mib: cfsctl_sample.rss_kib as f64 / 1024.0,
            skiff_seconds: skiff_sample.seconds,
            cfsctl_seconds: cfsctl_sample.seconds,
        });
    }
    Ok(rows)
}

pub(crate) fn print_rss(rows: &[RssRow]) {
    println!(
        "\n| cold pull, synthetic gzip image | skiff peak RSS (MiB) | cfsctl peak RSS (MiB) | \
         skiff wall | cfsctl wall (ratio) |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for row in rows {
        println!(
            "| {} MB | {:.0} | {:.0} | {:.2} s | {:.2} s ({:.2}) |",
            row.mb,
            row.skiff_mib,
            row.cfsctl_mib,
            row.skiff_seconds,
            row.cfsctl_seconds,
            row.cfsctl_seconds / row.skiff_seconds
        );
    }
}

pub(crate) fn describe(images: &RealisticImages) {
    println!(
        "\nrealistic image: Debian bookworm minbase + Python data-science site-packages, \
         {} bytes uncompressed, {} regular files, 2 layers; zstd and zstd:chunked forms \
         written by containers/image (skiff-peer-copy).",
        images.v1_tar_bytes, images.v1_files
    );
}

/// Bytes of one update: v2 (zstd:chunked, written by containers/image) pulled into a store
/// holding v1 (pulled from gzip, so every chunk digest the store knows was computed by skiff's
/// import).
pub(crate) struct UpdateRow {
    what: &'static str,
    /// v2's layer blobs: what a full pull (cfsctl) fetches.
    full: u64,
    /// TOCs and tar-splits plus every file whose digest v1 lacks.
    file_floor: u64,
    /// TOCs and tar-splits plus every chunk of those files whose digest v1 lacks.
    chunk_floor: u64,
    fetched: u64,
    requests: u64,
    from_chunks: u64,
    seconds: f64,
    /// What the baseline binary fetched, when one is given.
    before: Option<u64>,
    /// For the database: its compressed size in v2, pages and pages changed.
    database: Option<(u64, usize, usize)>,
}

/// The JSON summary of `skiff copy --progress=json SOURCE DEST` run by `program`.
fn copy_summary(program: &Path, source: &str, dest: &str) -> Result<(serde_json::Value, f64)> {
    let started = std::time::Instant::now();
    let out = Command::new(program)
        .args(["copy", "--progress=json", source, dest])
        .output()?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        out.status.success(),
        "{} copy {source}: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "summary")
        .ok_or_else(|| anyhow::anyhow!("no summary from {source}"))?;
    Ok((summary, seconds))
}

/// The realistic v1 → v2 update and the database update, each pulled once into a store that
/// holds v1 (by skiff, and by the baseline binary when one is given), with both floors.
pub(crate) fn updates(
    root: &Path,
    skiff: &Path,
    images: &RealisticImages,
) -> Result<Vec<UpdateRow>> {
    let cache = images.layout.parent().expect("the layout is in the cache");
    let database = realistic::ensure_database(cache)?;
    let area = ScenarioArea::new(root, 1)?;
    let mut rows = Vec::new();
    for (what, layout) in [
        ("realistic v1 -> v2 (5 packages upgraded)", &images.layout),
        ("rpm database, 1% of pages rewritten", &database.layout),
    ] {
        let held = chunked::toc_digests(layout, "v1-chunked")?;
        let chunk_cost = chunked::chunk_update_cost(layout, "v2-chunked", &held)?;
        let file_cost = chunked::chunk_update_cost(
            layout,
            "v2-chunked",
            &(held.0.clone(), Default::default()),
        )?;
        let pull = |program: &Path, name: &str| -> Result<(serde_json::Value, f64)> {
            let repo = area.dir(name, 0);
            let dest = |tag: &str| format!("composefs:{}:{tag}", repo.display());
            copy_summary(
                program,
                &format!("oci:{}:v1", layout.display()),
                &dest("v1"),
            )?;
            copy_summary(
                program,
                &format!("oci:{}:v2-chunked", layout.display()),
                &dest("v2"),
            )
        };
        eprintln!("update: {what}");
        let (summary, seconds) = pull(skiff, "skiff-update")?;
        let before = match baseline() {
            Some(old) => Some(
                pull(&old, "before-update")?.0["bytes_fetched"]
                    .as_u64()
                    .unwrap_or(0),
            ),
            None => None,
        };
        let database = if std::ptr::eq(layout, &database.layout) {
            let compressed = chunked::compressed_file_size(
                layout,
                "v2-chunked",
                &fixtures::digest(&database.db[1]),
            )?;
            Some((compressed, database.pages.0, database.pages.1))
        } else {
            None
        };
        rows.push(UpdateRow {
            what,
            full: chunk_cost.full,
            file_floor: file_cost.floor,
            chunk_floor: chunk_cost.floor,
            fetched: summary["bytes_fetched"].as_u64().unwrap_or(0),
            requests: summary["requests"].as_u64().unwrap_or(0),
            from_chunks: summary["bytes_from_stored_chunks"].as_u64().unwrap_or(0),
            seconds,
            before,
            database,
        });
    }
    Ok(rows)
}

pub(crate) fn print_updates(rows: &[UpdateRow]) {
    println!(
        "\n| update, zstd:chunked v2 into a store holding v1 | full pull (cfsctl) | file-level floor | \
         chunk-level floor | skiff fetched | skiff / chunk floor | from stored chunks | requests | \
         skiff before |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {:.3} | {} | {} | {} |",
            r.what,
            r.full,
            r.file_floor,
            r.chunk_floor,
            r.fetched,
            r.fetched as f64 / r.chunk_floor as f64,
            r.from_chunks,
            r.requests,
            r.before.map_or("-".to_owned(), |b| b.to_string()),
        );
    }
    for r in rows {
        eprintln!("  {}: skiff's pull of v2 took {:.2} s", r.what, r.seconds);
        if let Some((compressed, pages, changed)) = r.database {
            println!(
                "rpm database: {pages} pages of 4 KiB, {changed} changed ({:.2}%); the file is \
                 {compressed} bytes compressed in v2; skiff fetched {} ({:.1}% of it; the \
                 chunk-level floor is {:.1}% of it).",
                100.0 * changed as f64 / pages as f64,
                r.fetched,
                100.0 * r.fetched as f64 / compressed as f64,
                100.0 * r.chunk_floor as f64 / compressed as f64,
            );
        }
    }
}

/// One delta of the realistic v1 → v2 pair: how it was made, its size, and applying it.
pub(crate) struct DeltaRow {
    mode: &'static str,
    bytes: u64,
    replaced: u64,
    create: crate::runner::Sample,
    apply_skiff: crate::runner::Sample,
    apply_cfsctl: crate::runner::Sample,
}

/// `skiff delta create --binary-diff MODE` of the realistic pair (from a store holding v1), for
/// each mode, and the delta applied by skiff and by cfsctl 0.9.4 into a store holding v1; once
/// each.
pub(crate) fn deltas(root: &Path, skiff: &Path, images: &RealisticImages) -> Result<Vec<DeltaRow>> {
    let cfsctl = require("cfsctl");
    let area = ScenarioArea::new(root, 2)?;
    let v1 = images.oci_ref("v1");
    let old = area.dir("delta-old", 0);
    let old_ref = format!("composefs:{}:v1", old.display());
    crate::runner::run_quiet(Command::new(skiff).args(["copy", "--quiet", &v1, &old_ref]))?;
    let mut rows = Vec::new();
    for mode in ["bsdiff", "zstd", "auto"] {
        eprintln!("delta create --binary-diff {mode}");
        let archive = area.fs.path().join(format!("realistic-{mode}.delta"));
        let delta_ref = format!("oci-archive:{}", archive.display());
        let (create, json) = crate::runner::measure_with_output(Command::new(skiff).args([
            "delta",
            "create",
            "--json",
            "--binary-diff",
            mode,
            &old_ref,
            &images.oci_ref("v2"),
            &delta_ref,
        ]))?;
        let summary: serde_json::Value = serde_json::from_slice(&json)?;
        let (bytes, replaced) = (
            summary["delta_bytes"].as_u64().unwrap_or(0),
            summary["replaced_bytes"].as_u64().unwrap_or(0),
        );
        let apply_skiff = {
            let repo = area.dir("apply-skiff", 0);
            let dest = format!("composefs:{}:v1", repo.display());
            crate::runner::run_quiet(Command::new(skiff).args(["copy", "--quiet", &v1, &dest]))?;
            measure(Command::new(skiff).args([
                "copy",
                "--quiet",
                &delta_ref,
                &format!("composefs:{}:v2", repo.display()),
            ]))?
        };
        let apply_cfsctl = {
            let repo = area.dir("apply-cfsctl", 0);
            cfsctl_repo(&repo)?;
            crate::runner::run_quiet(
                Command::new(&cfsctl)
                    .arg("--repo")
                    .arg(&repo)
                    .args(["oci", "pull", &v1, "v1"]),
            )?;
            measure(
                Command::new(&cfsctl)
                    .arg("--repo")
                    .arg(&repo)
                    .args(["oci", "pull", &delta_ref, "v2"]),
            )?
        };
        rows.push(DeltaRow {
            mode,
            bytes,
            replaced,
            create,
            apply_skiff,
            apply_cfsctl,
        });
    }
    Ok(rows)
}

pub(crate) fn print_deltas(rows: &[DeltaRow]) {
    println!(
        "\n| delta of the realistic pair | delta bytes | of the replaced layers | create (s) | \
         create peak RSS (MiB) | apply: skiff (s) | apply: cfsctl (s) | cfsctl / skiff |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| --binary-diff {} | {} | {:.3} | {:.1} | {:.0} | {:.2} | {:.2} | {:.1}x |",
            r.mode,
            r.bytes,
            r.bytes as f64 / r.replaced as f64,
            r.create.seconds,
            r.create.rss_kib as f64 / 1024.0,
            r.apply_skiff.seconds,
            r.apply_cfsctl.seconds,
            r.apply_cfsctl.seconds / r.apply_skiff.seconds,
        );
    }
}
