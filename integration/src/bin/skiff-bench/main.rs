//! `make bench`: skiff against its peers on the same images in the same run.
//!
//! Scenarios (each tool on a fresh repository or directory per run unless "warm"):
//! - `realistic …` (realistic.rs): cold pulls of a real Debian + Python image of about 460 MB,
//!   gzip, zstd and zstd:chunked, from the OCI layout and the registry, against cfsctl and
//!   skopeo; peak RSS from 100 MB to 2 GB; and the bytes of two updates against their
//!   file-level and chunk-level floors: the realistic v1 → v2 and an rpm-style SQLite database
//!   with 1% of its pages rewritten; and deltas of the realistic pair in each `--binary-diff`
//!   mode (size, time, memory, applied by skiff and by cfsctl). `SKIFF_BENCH_ONLY=realistic`
//!   runs only the cold pulls, the updates and the deltas (`SKIFF_BENCH_RSS=1` adds the memory
//!   table), `SKIFF_BENCH_ONLY=updates` only the updates and the deltas;
//! - `oci-layout cold`: `skiff copy oci:...` vs `cfsctl oci pull oci:...`;
//! - `registry cold`: `skiff copy docker://...` vs `cfsctl oci pull docker://...` vs
//!   `skopeo copy docker://... oci:DIR`, from a local docker-registry on 127.0.0.1;
//! - `registry warm`: the same into a store that already holds the image.
//! - `copy out`: the stored image to a new OCI layout, from a store that keeps its blobs
//!   (`skiff`, the original digest comes back) and from one that does not (`skiff regen`, the
//!   layers compressed again with gzip), vs `skopeo copy oci:... oci:...`; plus the digests
//!   and the disk cost of keeping blobs.
//!
//! - `skopeo push` / `skopeo pull`: `skopeo copy oci:… docker://…` into `skiff serve` (a fresh
//!   store each run) and back out to an OCI layout, against the same with docker-registry; plus
//!   whether the digest skopeo pulls back is the source's.
//! - `update to v2`: v1 → v2 where v2's layers are zstd:chunked, into a store holding v1:
//!   skiff pulls partially (ranges of the OCI layout's blobs), cfsctl pulls whole; plus the
//!   bytes skiff fetched against a full pull and against the floor;
//! - `registry update to v2`: the same update from the registry (skiff: HTTP range requests;
//!   cfsctl: full pull), with skiff's bytes and requests;
//! - `update to v2 (c/storage)`: the layout update with v2's zstd:chunked layers written by
//!   current containers/storage (`skiff-peer-copy`) instead of skiff's writer;
//! - `delta create` / `delta apply`: `skiff delta create` of the same pair (from the store
//!   holding v1), then the delta applied by skiff and by `cfsctl oci pull oci-archive:…`.
//! - podman: `podman pull` of v1 then v2 from the registry, alone and with skiff's layer store
//!   (`skiff podman expose` after skiff's copy), each on an XFS loop filesystem of its own: layer
//!   bytes the registry sent, disk added, wall time (once each). `SKIFF_BENCH_ONLY=podman` runs
//!   only this part.
//! - sync: the fixture set (v1, v2, a delta of v2 and v2's referrers tag) mirrored from one
//!   docker-registry to another by `skiff sync` and by a `skopeo copy --all` loop over the
//!   same tags, twice each: bytes and requests, and which digests and referrers survive.
//!   `SKIFF_BENCH_ONLY=sync` runs only this part.
//!
//! Wall time and peak RSS come from GNU time; medians of `SKIFF_BENCH_RUNS` runs (default 3).
//! `SKIFF_BENCH_BASELINE=PATH` adds a column `skiff-before`: the skiff binary at PATH (a build
//! of an earlier commit), run with the same arguments in the same run.
//! The image is the `large` fixture (340 MB uncompressed in 4 layers, 6,000 files plus one of
//! 65 MiB),
//! built once under `target/bench`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use skiff_integration::chunked;
use skiff_integration::fixtures::{self, Compression};
use skiff_integration::registry::Registry;
use skiff_integration::serve::SkiffServer;
use skiff_integration::tools::{require, skiff_bin, skopeo};

mod realistic;
mod runner;

use runner::{
    cfsctl_repo, copy_dir, disk_usage, fresh, insecure_registry_home, median, print_table,
    run_quiet, run_scenario,
};

fn main() -> Result<()> {
    let runs: usize = std::env::var("SKIFF_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    let layout = root.join("layout");
    if !layout.join("index.json").exists() {
        eprintln!(
            "building the benchmark image (once) in {}",
            layout.display()
        );
        let written = fixtures::write_oci_layout(
            &layout,
            "large",
            &fixtures::by_name("large")?,
            Compression::Gzip,
        )?;
        eprintln!(
            "  {} bytes uncompressed, manifest {}",
            written.tar_bytes, written.manifest_digest
        );
    }
    let skiff = skiff_bin();
    if std::env::var("SKIFF_BENCH_ONLY").as_deref() == Ok("podman") {
        let src = format!("oci:{}:large", layout.display());
        let (rows, imports) = podman_figures(&root, &skiff, &src, &ensure_v2(&layout)?, runs)?;
        print_podman(&rows);
        print_imports(&imports);
        return Ok(());
    }
    if std::env::var("SKIFF_BENCH_ONLY").as_deref() == Ok("updates") {
        let images = realistic::images(&root)?;
        realistic::print_updates(&realistic::updates(&root, &skiff, &images)?);
        realistic::print_deltas(&realistic::deltas(&root, &skiff, &images)?);
        return Ok(());
    }
    if std::env::var("SKIFF_BENCH_ONLY").as_deref() == Ok("realistic") {
        let images = realistic::images(&root)?;
        realistic::print_updates(&realistic::updates(&root, &skiff, &images)?);
        realistic::print_deltas(&realistic::deltas(&root, &skiff, &images)?);
        let mut rows = Vec::new();
        realistic::cold_pulls(&mut rows, &root, &skiff, &images, runs)?;
        print_table(&rows);
        realistic::describe(&images);
        if std::env::var_os("SKIFF_BENCH_RSS").is_some() {
            realistic::print_rss(&realistic::rss_by_size(&root, &skiff)?);
        }
        return Ok(());
    }
    if std::env::var("SKIFF_BENCH_ONLY").as_deref() == Ok("sync") {
        let src = format!("oci:{}:large", layout.display());
        print_sync(&sync_figures(&root, &skiff, &src, &ensure_v2(&layout)?)?);
        return Ok(());
    }
    let cfsctl = require("cfsctl");
    let work = root.join("work");
    let mut rows = Vec::new();
    let src = format!("oci:{}:large", layout.display());

    eprintln!("oci-layout cold ({runs} runs each)");
    run_scenario(
        &mut rows,
        runs,
        "oci-layout cold",
        vec![
            (
                "skiff",
                Box::new(|_| {
                    let repo = fresh(&work.join("skiff"))?;
                    let mut c = Command::new(&skiff);
                    c.args([
                        "copy",
                        "--quiet",
                        &src,
                        &format!("composefs:{}:large", repo.display()),
                    ]);
                    Ok(c)
                }),
            ),
            (
                "cfsctl",
                Box::new(|_| {
                    let repo = work.join("cfsctl");
                    cfsctl_repo(&repo)?;
                    let mut c = Command::new(&cfsctl);
                    c.arg("--repo")
                        .arg(&repo)
                        .args(["oci", "pull", &src, "large"]);
                    Ok(c)
                }),
            ),
        ],
    )?;

    let realistic_images = realistic::images(&root)?;
    realistic::cold_pulls(&mut rows, &root, &skiff, &realistic_images, runs)?;
    let rss_rows = realistic::rss_by_size(&root, &skiff)?;
    let update_rows = realistic::updates(&root, &skiff, &realistic_images)?;
    let delta_rows = realistic::deltas(&root, &skiff, &realistic_images)?;

    // Copy out: the image stored with its blobs kept (its digest comes back) and without (its
    // layers compressed again), against skopeo copying the layout itself.
    let keep_repo = work.join("out-keep");
    let plain_repo = work.join("out-plain");
    for (repo, keep) in [(&keep_repo, true), (&plain_repo, false)] {
        fresh(repo)?;
        let mut init = Command::new(&skiff);
        init.arg("init").arg(repo);
        if keep {
            init.arg("--keep-blobs");
        }
        run_quiet(&mut init)?;
        run_quiet(Command::new(&skiff).args([
            "copy",
            "--quiet",
            &src,
            &format!("composefs:{}:large", repo.display()),
        ]))?;
    }
    let copy_out = |repo: &Path| -> Result<Command> {
        let out = fresh(&work.join("out"))?;
        let mut c = Command::new(&skiff);
        c.args([
            "copy",
            "--quiet",
            &format!("composefs:{}:large", repo.display()),
            &format!("oci:{}:large", out.display()),
        ]);
        Ok(c)
    };
    eprintln!("copy out ({runs} runs each)");
    run_scenario(
        &mut rows,
        runs,
        "copy out",
        vec![
            ("skiff", Box::new(|_| copy_out(&keep_repo))),
            ("skiff regen", Box::new(|_| copy_out(&plain_repo))),
            (
                "skopeo",
                Box::new(|_| {
                    let out = fresh(&work.join("out"))?;
                    let mut c = Command::new(require("skopeo"));
                    c.args([
                        "--insecure-policy",
                        "copy",
                        "--quiet",
                        &src,
                        &format!("oci:{}:large", out.display()),
                    ]);
                    Ok(c)
                }),
            ),
        ],
    )?;
    let copy_out_digests = {
        let source = fixtures::layout_manifest_digest(&layout, "large")?;
        let mut digests = Vec::new();
        for repo in [&keep_repo, &plain_repo] {
            run_quiet(&mut copy_out(repo)?)?;
            digests.push(fixtures::layout_manifest_digest(
                &work.join("out"),
                "large",
            )?);
        }
        (source, digests)
    };
    let kept_cost = (disk_usage(&keep_repo)?, disk_usage(&plain_repo)?);

    let registry = Registry::start_plain()?;
    let remote = registry.push(&src, "bench/large:v1")?;
    // cfsctl passes no TLS option to skopeo: the registry is declared insecure for it.
    let home = insecure_registry_home(&root, &registry.host())?;
    let skiff_from_registry = |fresh_repo: bool| -> Result<Command> {
        let repo = if fresh_repo {
            fresh(&work.join("skiff"))?
        } else {
            work.join("skiff")
        };
        let mut c = Command::new(&skiff);
        c.args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            &remote,
            &format!("composefs:{}:large", repo.display()),
        ]);
        Ok(c)
    };
    let cfsctl_from_registry = |fresh_repo: bool| -> Result<Command> {
        let repo = work.join("cfsctl");
        if fresh_repo {
            cfsctl_repo(&repo)?;
        }
        let mut c = Command::new(&cfsctl);
        c.arg("--repo")
            .arg(&repo)
            .args(["oci", "pull", &remote, "large"])
            .env("HOME", &home);
        Ok(c)
    };
    eprintln!("registry cold ({runs} runs each), {remote}");
    run_scenario(
        &mut rows,
        runs,
        "registry cold",
        vec![
            ("skiff", Box::new(|_| skiff_from_registry(true))),
            ("cfsctl", Box::new(|_| cfsctl_from_registry(true))),
            (
                "skopeo",
                Box::new(|_| {
                    let dir = fresh(&work.join("skopeo"))?;
                    let mut c = Command::new(require("skopeo"));
                    c.args([
                        "--insecure-policy",
                        "copy",
                        "--quiet",
                        "--src-tls-verify=false",
                        &remote,
                        &format!("oci:{}:large", dir.display()),
                    ]);
                    Ok(c)
                }),
            ),
        ],
    )?;
    eprintln!("registry warm ({runs} runs each)");
    run_scenario(
        &mut rows,
        runs,
        "registry warm",
        vec![
            ("skiff", Box::new(|_| skiff_from_registry(false))),
            ("cfsctl", Box::new(|_| cfsctl_from_registry(false))),
        ],
    )?;

    // `skopeo copy` into and out of `skiff serve` (a fresh store each push) against the same
    // copies into and out of docker-registry (fresh storage each push). The measured program
    // is skopeo in both; the server's work (for skiff serve: verify, import, keep the blobs)
    // is in its wall time.
    let served: std::cell::RefCell<Option<SkiffServer>> = Default::default();
    let registered: std::cell::RefCell<Option<Registry>> = Default::default();
    let pushed = "bench/large:v1";
    eprintln!("skopeo push ({runs} runs each)");
    run_scenario(
        &mut rows,
        runs,
        "skopeo push",
        vec![
            (
                "skiff",
                Box::new(|_| {
                    served.replace(None);
                    let repo = fresh(&work.join("serve"))?;
                    run_quiet(Command::new(&skiff).arg("init").arg(&repo))?;
                    let server = SkiffServer::start(&repo, &[])?;
                    let mut c = skopeo();
                    c.args(["copy", "--quiet", "--dest-tls-verify=false", &src])
                        .arg(server.docker_ref(pushed));
                    served.replace(Some(server));
                    Ok(c)
                }),
            ),
            (
                "docker-registry",
                Box::new(|_| {
                    registered.replace(None);
                    let registry = Registry::start_plain()?;
                    let mut c = skopeo();
                    c.args(["copy", "--quiet", "--dest-tls-verify=false", &src])
                        .arg(registry.docker_ref(pushed));
                    registered.replace(Some(registry));
                    Ok(c)
                }),
            ),
        ],
    )?;
    let served_ref = served.borrow().as_ref().expect("served").docker_ref(pushed);
    let registered_ref = registered
        .borrow()
        .as_ref()
        .expect("registered")
        .docker_ref(pushed);
    let pulled = work.join("pulled");
    let skopeo_pull = |from: &str| -> Result<Command> {
        let dir = fresh(&pulled)?;
        let mut c = skopeo();
        c.args(["copy", "--quiet", "--src-tls-verify=false", from])
            .arg(format!("oci:{}:v1", dir.display()));
        Ok(c)
    };
    eprintln!("skopeo pull ({runs} runs each)");
    run_scenario(
        &mut rows,
        runs,
        "skopeo pull",
        vec![
            ("skiff", Box::new(|_| skopeo_pull(&served_ref))),
            (
                "docker-registry",
                Box::new(|_| skopeo_pull(&registered_ref)),
            ),
        ],
    )?;
    run_quiet(&mut skopeo_pull(&served_ref)?)?;
    let served_digest = fixtures::layout_manifest_digest(&pulled, "v1")?;
    let pushed_digest = fixtures::layout_manifest_digest(&layout, "large")?;
    drop((served.take(), registered.take()));

    // Update v1 → v2 where v2's layers are zstd:chunked: skiff pulls them partially (oci:
    // layout ranges), cfsctl pulls them whole; both into a store that holds v1.
    let src_v2 = ensure_v2(&layout)?;
    let skiff_v1 = work.join("skiff-v1");
    let cfsctl_v1 = work.join("cfsctl-v1");
    fresh(&skiff_v1)?;
    run_quiet(Command::new(&skiff).args([
        "copy",
        "--quiet",
        &src,
        &format!("composefs:{}:v1", skiff_v1.display()),
    ]))?;
    cfsctl_repo(&cfsctl_v1)?;
    run_quiet(
        Command::new(&cfsctl)
            .arg("--repo")
            .arg(&cfsctl_v1)
            .args(["oci", "pull", &src, "v1"]),
    )?;
    // An update: a fresh copy of the store holding v1, then skiff copy / cfsctl oci pull.
    let skiff_update = |args: &[&str]| -> Result<Command> {
        let repo = work.join("skiff-update");
        copy_dir(&skiff_v1, &repo)?;
        let mut c = Command::new(&skiff);
        c.args(["copy", "--quiet"])
            .args(args)
            .arg(format!("composefs:{}:v2", repo.display()));
        Ok(c)
    };
    let cfsctl_update = |source: &str| -> Result<Command> {
        let repo = work.join("cfsctl-update");
        copy_dir(&cfsctl_v1, &repo)?;
        let mut c = Command::new(&cfsctl);
        c.arg("--repo")
            .arg(&repo)
            .args(["oci", "pull", source, "v2"])
            .env("HOME", &home);
        Ok(c)
    };
    eprintln!("update v1 -> v2 ({runs} runs each)");
    run_scenario(
        &mut rows,
        runs,
        "update to v2",
        vec![
            ("skiff", Box::new(|_| skiff_update(&[&src_v2]))),
            ("cfsctl", Box::new(|_| cfsctl_update(&src_v2))),
        ],
    )?;
    let update = update_bytes(
        &skiff,
        &skiff_v1,
        &work.join("skiff-bytes"),
        &[&src_v2],
        (&layout, "large-v2"),
    )?;

    // The same update with v2 written by current containers/storage (skopeo's copy code).
    if !layout.join("v2-cstorage.done").exists() {
        eprintln!("building the v2 image (zstd:chunked by containers/storage, once)");
        fixtures::write_oci_layout(
            &layout,
            "large-v2-gzip",
            &fixtures::by_name("large-v2")?,
            Compression::Gzip,
        )?;
        run_quiet(Command::new(require("skiff-peer-copy")).args([
            "--dest-compress-format",
            "zstd:chunked",
            &format!("oci:{}:large-v2-gzip", layout.display()),
            &format!("oci:{}:large-v2-cstorage", layout.display()),
        ]))?;
        std::fs::write(layout.join("v2-cstorage.done"), b"")?;
    }
    let src_v2_cstorage = format!("oci:{}:large-v2-cstorage", layout.display());
    eprintln!("update v1 -> v2 written by containers/storage ({runs} runs each)");
    run_scenario(
        &mut rows,
        runs,
        "update to v2 (c/storage)",
        vec![
            ("skiff", Box::new(|_| skiff_update(&[&src_v2_cstorage]))),
            ("cfsctl", Box::new(|_| cfsctl_update(&src_v2_cstorage))),
        ],
    )?;
    let cstorage_update = update_bytes(
        &skiff,
        &skiff_v1,
        &work.join("skiff-bytes"),
        &[&src_v2_cstorage],
        (&layout, "large-v2-cstorage"),
    )?;

    // The same update from the registry: skiff's range requests against cfsctl's full pull.
    let remote_v2 = registry.push(&src_v2, "bench/large:v2")?;
    eprintln!("update v1 -> v2 from the registry ({runs} runs each), {remote_v2}");
    run_scenario(
        &mut rows,
        runs,
        "registry update to v2",
        vec![
            (
                "skiff",
                Box::new(|_| skiff_update(&["--src-tls-verify=false", &remote_v2])),
            ),
            ("cfsctl", Box::new(|_| cfsctl_update(&remote_v2))),
        ],
    )?;
    let registry_update = update_bytes(
        &skiff,
        &skiff_v1,
        &work.join("skiff-bytes"),
        &["--src-tls-verify=false", &remote_v2],
        (&layout, "large-v2"),
    )?;
    drop(registry);

    // Deltas of the same pair: made by skiff; applied by skiff and by cfsctl 0.9.4.
    let delta = work.join("delta.tar");
    let delta_ref = format!("oci-archive:{}", delta.display());
    let old_ref = format!("composefs:{}:v1", skiff_v1.display());
    eprintln!("delta create v1 -> v2 ({runs} runs)");
    run_scenario(
        &mut rows,
        runs,
        "delta create",
        vec![(
            "skiff",
            Box::new(|_| {
                let _ = std::fs::remove_file(&delta);
                let mut c = Command::new(&skiff);
                c.args(["delta", "create", &old_ref, &src_v2, &delta_ref]);
                Ok(c)
            }),
        )],
    )?;
    let out = Command::new(&skiff)
        .args(["delta", "create", "--json", &old_ref, &src_v2, &delta_ref])
        .output()?;
    let delta_summary: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("delta create --json")?;
    eprintln!("delta apply v1 -> v2 ({runs} runs each)");
    run_scenario(
        &mut rows,
        runs,
        "delta apply",
        vec![
            ("skiff", Box::new(|_| skiff_update(&[&delta_ref]))),
            ("cfsctl", Box::new(|_| cfsctl_update(&delta_ref))),
        ],
    )?;

    eprintln!("podman pull with and without skiff's layer store (once each)");
    let (podman, imports) = podman_figures(&root, &skiff, &src, &src_v2, runs)?;

    print_table(&rows);
    realistic::describe(&realistic_images);
    realistic::print_rss(&rss_rows);
    realistic::print_updates(&update_rows);
    realistic::print_deltas(&delta_rows);
    println!(
        "\n{runs} runs each; other scenarios' image: 340 MB uncompressed in 4 gzip layers, 6,000 files + one of 65 MiB."
    );
    println!(
        "delta v1 -> v2: {} bytes of layer blobs ({} tar-diff, {} whole, {} reused) for {} \
         bytes of compressed layers ({:.2}% of them).",
        delta_summary["delta_bytes"],
        delta_summary["layers_tar_diff"],
        delta_summary["layers_original"],
        delta_summary["layers_reused"],
        delta_summary["replaced_bytes"],
        100.0 * delta_summary["delta_bytes"].as_f64().unwrap_or(0.0)
            / delta_summary["replaced_bytes"].as_f64().unwrap_or(1.0)
    );
    let (source_digest, out_digests) = &copy_out_digests;
    println!(
        "copy out: with blobs kept the manifest digest is the source's: {} ({}); with the \
         layers compressed again (gzip) it is {}.",
        out_digests[0] == *source_digest,
        out_digests[0],
        out_digests[1]
    );
    println!(
        "kept blobs: the store takes {} bytes with them, {} without (+{:.1}%).",
        kept_cost.0,
        kept_cost.1,
        100.0 * (kept_cost.0 as f64 - kept_cost.1 as f64) / kept_cost.1 as f64
    );
    println!(
        "skopeo pull from skiff serve (after skopeo push into it): manifest digest {served_digest}, \
         the source's: {}.",
        served_digest == pushed_digest
    );
    for (what, bytes) in [
        ("update to v2 from the OCI layout", &update),
        ("update to v2 from the registry", &registry_update),
        (
            "update to v2 written by containers/storage, from the OCI layout",
            &cstorage_update,
        ),
    ] {
        println!(
            "{what} (5% of the files changed, 5 added, 10 deleted; zstd:chunked layers): skiff \
             fetched {} bytes in {} requests; a full pull fetches {} ({:.1}% of it); the floor \
             (compressed frames of the changed and added files, plus TOCs and tar-splits) is {} \
             (skiff fetched {:.2}x the floor).",
            bytes.fetched,
            bytes.requests,
            bytes.full,
            100.0 * bytes.fetched as f64 / bytes.full as f64,
            bytes.floor,
            bytes.fetched as f64 / bytes.floor as f64
        );
    }
    print_podman(&podman);
    print_imports(&imports);
    eprintln!("sync: skiff sync and a skopeo copy --all loop, twice each");
    print_sync(&sync_figures(&root, &skiff, &src, &src_v2)?);
    Ok(())
}

/// The mirror comparison: rows per tool and pass, then what each mirror kept.
struct SyncFigures {
    rows: Vec<SyncRow>,
    tags: Vec<String>,
    /// Per tool: the tags whose digest differs from upstream's, and whether skiff copy of v2
    /// into a store holding v1 found a delta in that mirror.
    kept: Vec<(String, Vec<String>, bool)>,
}

struct SyncRow {
    what: String,
    bytes_from_upstream: u64,
    blob_uploads: u64,
    requests: usize,
    seconds: f64,
}

/// Upstream (docker-registry) gets v1, v2 and a delta of v2 (with its referrers tag); each tool
/// mirrors every tag to a docker-registry of its own, twice.
fn sync_figures(root: &Path, skiff: &Path, v1: &str, v2: &str) -> Result<SyncFigures> {
    let work = fresh(&root.join("sync"))?;
    let upstream = Registry::start_plain()?;
    upstream.push(v1, "fixtures/app:v1")?;
    upstream.push(v2, "fixtures/app:v2")?;
    let app = upstream.docker_ref("fixtures/app");
    run_quiet(Command::new(skiff).args([
        "delta",
        "create",
        "--binary-diff=zstd",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("{app}:v1"),
        &format!("{app}:v2"),
        &format!("{app}:delta-v1-v2"),
    ]))?;
    let mut tags = upstream.tags("fixtures/app")?;
    tags.sort();
    let digest_of = |reference: &str| -> Result<String> {
        let raw = Command::new(require("skopeo"))
            .args(["inspect", "--raw", "--tls-verify=false", reference])
            .output()?;
        anyhow::ensure!(
            raw.status.success(),
            "skopeo inspect --raw {reference} failed"
        );
        Ok(fixtures::digest(&raw.stdout))
    };
    let mut rows = Vec::new();
    let mut kept = Vec::new();
    for tool in ["skiff sync", "skopeo copy --all loop"] {
        let mirror = Registry::start_plain()?;
        let target = mirror.docker_ref("ci/app");
        for pass in ["first", "second"] {
            let (up_before, mirror_before) =
                (upstream.access_log()?.len(), mirror.access_log()?.len());
            let started = std::time::Instant::now();
            if tool == "skiff sync" {
                run_quiet(Command::new(skiff).args([
                    "sync",
                    "--src-tls-verify=false",
                    "--dest-tls-verify=false",
                    &app,
                    &target,
                ]))?;
            } else {
                for tag in &tags {
                    run_quiet(skopeo().args([
                        "copy",
                        "--all",
                        "--quiet",
                        "--src-tls-verify=false",
                        "--dest-tls-verify=false",
                        &format!("{app}:{tag}"),
                        &format!("{target}:{tag}"),
                    ]))?;
                }
            }
            let seconds = started.elapsed().as_secs_f64();
            let up = upstream.access_log()?;
            let down = mirror.access_log()?;
            rows.push(SyncRow {
                what: format!("{tool}, {pass}"),
                bytes_from_upstream: up[up_before..].iter().map(|r| r.sent).sum(),
                blob_uploads: down[mirror_before..]
                    .iter()
                    .filter(|r| r.method == "PUT" || r.method == "PATCH")
                    .filter(|r| r.path.contains("/blobs/uploads/"))
                    .count() as u64,
                requests: up.len() - up_before + down.len() - mirror_before,
                seconds,
            });
        }
        let mut changed = Vec::new();
        for tag in &tags {
            let theirs = digest_of(&format!("{target}:{tag}")).unwrap_or_else(|_| "missing".into());
            if theirs != digest_of(&format!("{app}:{tag}"))? {
                changed.push(tag.clone());
            }
        }
        // A store holding v1 copies v2 from the mirror: does it find the delta there?
        let store = work.join(format!("store-{}", kept.len()));
        run_quiet(Command::new(skiff).args([
            "copy",
            "--src-tls-verify=false",
            &format!("{app}:v1"),
            &format!("composefs:{}:app", store.display()),
        ]))?;
        let out = Command::new(skiff)
            .args([
                "copy",
                "--progress=json",
                "--src-tls-verify=false",
                &format!("{target}:v2"),
                &format!("composefs:{}:app", store.display()),
            ])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "skiff copy from the {tool} mirror failed"
        );
        let used_delta = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|v| v["event"] == "summary" && v["layers_delta"].as_u64().unwrap_or(0) > 0);
        kept.push((tool.to_owned(), changed, used_delta));
    }
    Ok(SyncFigures { rows, tags, kept })
}

fn print_sync(figures: &SyncFigures) {
    println!(
        "\n| mirror of {} tags ({}) | bytes sent by upstream | blob upload requests to the mirror | requests (both registries) | wall (s) |",
        figures.tags.len(),
        figures.tags.join(", ")
    );
    println!("|---|---:|---:|---:|---:|");
    for row in &figures.rows {
        println!(
            "| {} | {} | {} | {} | {:.2} |",
            row.what, row.bytes_from_upstream, row.blob_uploads, row.requests, row.seconds
        );
    }
    for (tool, changed, used_delta) in &figures.kept {
        println!(
            "{tool}: tags whose digest differs from upstream's: {}; skiff copy of v2 from this \
             mirror into a store holding v1 used the mirrored delta: {used_delta}.",
            if changed.is_empty() {
                "none".to_owned()
            } else {
                changed.join(", ")
            }
        );
    }
}

/// The v2 image (zstd:chunked), built once; its reference.
fn ensure_v2(layout: &Path) -> Result<String> {
    if !layout.join("v2.done").exists() {
        eprintln!("building the v2 image (zstd:chunked, once)");
        fixtures::write_oci_layout(
            layout,
            "large-v2",
            &fixtures::by_name("large-v2")?,
            Compression::ZstdChunked,
        )?;
        std::fs::write(layout.join("v2.done"), b"")?;
    }
    Ok(format!("oci:{}:large-v2", layout.display()))
}

fn print_podman(rows: &[PodmanRow]) {
    println!(
        "\n| podman 4.3.1 pull from the registry | layer bytes downloaded | disk added (podman root + layer store) | wall (s) |"
    );
    println!("|---|---:|---:|---:|");
    for row in rows {
        println!(
            "| {} | {} | {} | {:.2} |",
            row.what, row.downloaded, row.disk, row.seconds
        );
    }
    println!(
        "(on XFS with reflinks; with the layer store, skiff copy into a --keep-blobs repository \
         took each image first and skiff podman expose made its layers available; the disk \
         column is what the layer store and podman's pull add on top of skiff's store.)"
    );
}

/// One row of the podman table.
struct PodmanRow {
    what: String,
    downloaded: u64,
    disk: i64,
    seconds: f64,
}

/// Podman's pulls of v1 and then v2 from the registry, into a podman of its own, and into one
/// whose layer store skiff filled: layer bytes the registry sent, disk added, wall time.
fn podman_figures(
    root: &Path,
    skiff: &Path,
    src: &str,
    src_v2: &str,
    runs: usize,
) -> Result<(Vec<PodmanRow>, Vec<ImportRow>)> {
    use skiff_integration::loop_fs::LoopFs;
    use skiff_integration::podman::Podman;
    let registry = Registry::start_plain()?;
    registry.push(src, "bench/app:v1")?;
    registry.push(src_v2, "bench/app:v2")?;
    let layer_bytes = |since: usize| -> Result<u64> {
        // Configs are a few KiB; every other blob of these images is a layer.
        Ok(registry.blob_gets_sized()?[since..]
            .iter()
            .map(|(_, n)| *n)
            .filter(|n| *n > 64 * 1024)
            .sum())
    };
    let pull = |podman: &Podman, tag: &str| -> Result<f64> {
        let start = std::time::Instant::now();
        podman.ok(&[
            "pull",
            "--quiet",
            "--tls-verify=false",
            &format!("{}/bench/app:{tag}", registry.host()),
        ]);
        Ok(start.elapsed().as_secs_f64())
    };
    let dir = root.join("work/podman");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("plain"))?;
    std::fs::create_dir_all(dir.join("als"))?;
    let mut rows = Vec::new();
    let imports;
    {
        let xfs = LoopFs::xfs(&dir.join("plain"), 4096)?;
        let podman = Podman::new(&xfs.path().join("podman"))?;
        for tag in ["v1", "v2"] {
            let since = registry.blob_gets()?.len();
            let used = xfs.used_bytes()?;
            let seconds = pull(&podman, tag)?;
            rows.push(PodmanRow {
                what: format!("{tag}, podman alone"),
                downloaded: layer_bytes(since)?,
                disk: xfs.used_bytes()? as i64 - used as i64,
                seconds,
            });
        }
        let name = format!("{}/bench/app:v1", registry.host());
        imports = containers_storage_figures(&xfs, &podman, &name, skiff, runs)?;
    }
    let xfs = LoopFs::xfs(&dir.join("als"), 4096)?;
    let podman = Podman::new(&xfs.path().join("podman"))?;
    let repo = xfs.path().join("repo");
    let als = xfs.path().join("als");
    run_quiet(
        Command::new(skiff)
            .arg("init")
            .arg("--keep-blobs")
            .arg(&repo),
    )?;
    run_quiet(
        Command::new(skiff)
            .args(["podman", "enable", "--dir"])
            .arg(&als)
            .arg("--storage-conf")
            .arg(podman.storage_conf())
            .arg(&repo),
    )?;
    for tag in ["v1", "v2"] {
        let stored = format!("composefs:{}:{tag}", repo.display());
        run_quiet(Command::new(skiff).args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            &format!("docker://{}/bench/app:{tag}", registry.host()),
            &stored,
        ]))?;
        let used = xfs.used_bytes()?;
        let start = std::time::Instant::now();
        run_quiet(Command::new(skiff).args(["podman", "expose", &stored]))?;
        let expose = start.elapsed().as_secs_f64();
        let since = registry.blob_gets()?.len();
        let seconds = pull(&podman, tag)?;
        rows.push(PodmanRow {
            what: format!("{tag}, with skiff's layer store (skiff podman expose: {expose:.2} s)"),
            downloaded: layer_bytes(since)?,
            disk: xfs.used_bytes()? as i64 - used as i64,
            seconds,
        });
    }
    Ok((rows, imports))
}

/// One row of the containers-storage import table.
struct ImportRow {
    what: String,
    /// Median wall time, or why the path failed.
    outcome: Result<f64, String>,
    disk: i64,
}

/// `image`, which `podman` pulled, into a new repository on the same XFS filesystem, `runs`
/// times each way: skiff's native import, cfsctl's (`--local-fetch auto`), skopeo to an OCI
/// layout then skiff from it (the path before the native one), and cfsctl through skopeo's
/// proxy (`--local-fetch disabled`, what skiff would otherwise do).
fn containers_storage_figures(
    xfs: &skiff_integration::loop_fs::LoopFs,
    podman: &skiff_integration::podman::Podman,
    image: &str,
    skiff: &Path,
    runs: usize,
) -> Result<Vec<ImportRow>> {
    let root = podman.root().to_owned();
    let run_root = root.with_file_name("run");
    let explicit = format!(
        "containers-storage:[overlay@{}+{}]{image}",
        root.display(),
        run_root.display()
    );
    let work = xfs.path().join("imports");
    let cfsctl = require("cfsctl");
    let skopeo = require("skopeo");
    type Way<'a> = (&'a str, Box<dyn Fn(&Path) -> Result<Vec<Command>> + 'a>);
    let ways: Vec<Way> = vec![
        (
            "skiff copy containers-storage: (native)",
            Box::new(|repo: &Path| {
                let mut c = Command::new(skiff);
                c.args(["copy", "--quiet", &explicit])
                    .arg(format!("composefs:{}:app", repo.display()));
                Ok(vec![c])
            }),
        ),
        (
            "cfsctl oci pull --local-fetch auto containers-storage:",
            Box::new(|repo: &Path| {
                cfsctl_repo(repo)?;
                let mut c = Command::new(&cfsctl);
                c.env("CONTAINERS_STORAGE_ROOT", &root)
                    .arg("--repo")
                    .arg(repo)
                    .args(["oci", "pull", "--local-fetch", "auto"])
                    .arg(format!("containers-storage:{image}"))
                    .arg("app");
                Ok(vec![c])
            }),
        ),
        (
            "skopeo copy containers-storage: oci:, then skiff copy oci:",
            Box::new(|repo: &Path| {
                let layout = repo.with_extension("layout");
                let _ = std::fs::remove_dir_all(&layout);
                let mut to_layout = Command::new(&skopeo);
                to_layout
                    .args(["--insecure-policy", "copy", "--quiet", &explicit])
                    .arg(format!("oci:{}:app", layout.display()));
                let mut from_layout = Command::new(skiff);
                from_layout
                    .args(["copy", "--quiet"])
                    .arg(format!("oci:{}:app", layout.display()))
                    .arg(format!("composefs:{}:app", repo.display()));
                Ok(vec![to_layout, from_layout])
            }),
        ),
        (
            "cfsctl oci pull containers-storage: (skopeo's proxy)",
            Box::new(|repo: &Path| {
                cfsctl_repo(repo)?;
                let mut c = Command::new(&cfsctl);
                c.arg("--repo")
                    .arg(repo)
                    .args(["oci", "pull"])
                    .arg(explicit.as_str())
                    .arg("app");
                Ok(vec![c])
            }),
        ),
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); ways.len()];
    let mut failures: Vec<Option<String>> = vec![None; ways.len()];
    let mut disk = vec![0i64; ways.len()];
    // Interleaved: each run goes through every way once.
    for _ in 0..runs {
        for (i, (_, commands)) in ways.iter().enumerate() {
            if failures[i].is_some() {
                continue;
            }
            let repo = fresh(&work.join(format!("way-{i}")))?;
            let _ = std::fs::remove_dir_all(repo.with_extension("layout"));
            let commands = commands(&repo)?;
            run_quiet(&mut Command::new("sync"))?;
            let used = xfs.used_bytes()?;
            let start = std::time::Instant::now();
            for mut c in commands {
                let out = c.output()?;
                if !out.status.success() {
                    let stderr = String::from_utf8_lossy(&out.stderr);
                    // The error, not a backtrace's last frame.
                    let error = stderr
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .take_while(|l| !l.starts_with("Stack backtrace"))
                        .collect::<Vec<_>>()
                        .join(" ");
                    failures[i] = Some(error);
                    break;
                }
            }
            times[i].push(start.elapsed().as_secs_f64());
            run_quiet(&mut Command::new("sync"))?;
            disk[i] = xfs.used_bytes()? as i64 - used as i64;
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(ways
        .iter()
        .enumerate()
        .map(|(i, (what, _))| ImportRow {
            what: what.to_string(),
            outcome: match &failures[i] {
                Some(why) => Err(why.clone()),
                None => Ok(median(times[i].clone())),
            },
            disk: disk[i],
        })
        .collect())
}

fn print_imports(rows: &[ImportRow]) {
    println!(
        "\n| podman's image (v1) into a composefs repository | wall (s, median) | disk added |"
    );
    println!("|---|---:|---:|");
    for row in rows {
        match &row.outcome {
            Ok(seconds) => println!("| {} | {seconds:.2} | {} |", row.what, row.disk),
            Err(why) => println!("| {} | fails: {why} | |", row.what),
        }
    }
    println!(
        "(on the XFS filesystem of podman's store, a new repository each run; disk added \
         includes what a layout in between takes.)"
    );
}

struct UpdateBytes {
    fetched: u64,
    requests: u64,
    full: u64,
    floor: u64,
}

/// Bytes of the v1 → v2 update: what skiff fetched (from its JSON summary), what a full pull
/// fetches (v2's blobs, the image `v2` = (layout, tag) holds), and the floor, computed from v2's
/// TOCs and v1's files.
fn update_bytes(
    skiff: &Path,
    v1_repo: &Path,
    scratch: &Path,
    source_args: &[&str],
    (layout, tag): (&Path, &str),
) -> Result<UpdateBytes> {
    copy_dir(v1_repo, scratch)?;
    let out = Command::new(skiff)
        .args(["copy", "--progress=json"])
        .args(source_args)
        .arg(format!("composefs:{}:v2", scratch.display()))
        .output()?;
    let summary = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "summary")
        .context("no summary")?;
    let held = chunked::file_digests(&fixtures::layer_tars(&fixtures::by_name("large")?)?)?;
    let cost = chunked::update_cost(layout, tag, &held)?;
    Ok(UpdateBytes {
        fetched: summary["bytes_fetched"].as_u64().context("bytes_fetched")?,
        requests: summary["requests"].as_u64().context("requests")?,
        full: cost.full,
        floor: cost.floor,
    })
}
