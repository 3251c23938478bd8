//! `make demo`: builds an example image pair (v2 in zstd:chunked), starts a local registry on
//! 127.0.0.1, copies v1 and then v2 into a repository under `./demo-work` (v2 partially: only
//! the files the store lacks), then makes the v1 → v2 oci-delta and applies it to a second
//! repository holding v1, and shows what each step fetched and reused.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use skiff_integration::fixtures::{self, Compression};
use skiff_integration::registry::Registry;
use skiff_integration::tools::{cfsctl, run, skiff};

fn human(bytes: u64) -> String {
    if bytes < 1024 * 1024 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    }
}

fn main() -> Result<()> {
    let work = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "demo-work".into()),
    );
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let work = work.canonicalize()?;
    let layout = work.join("layout");
    let repo = work.join("repo");

    println!(
        "==> Building the example images app:v1 and app:v2 (v2 changes 5% of the files, adds 5, deletes 10)"
    );
    for (tag, kind, compression) in [
        ("v1", "demo-v1", Compression::Gzip),
        ("v2", "demo-v2", Compression::ZstdChunked),
    ] {
        let w = fixtures::write_oci_layout(&layout, tag, &fixtures::by_name(kind)?, compression)?;
        println!(
            "    {tag}: {} uncompressed, {:?} layers, manifest {}",
            human(w.tar_bytes),
            compression,
            w.manifest_digest
        );
    }

    println!("==> Starting a local registry on 127.0.0.1 and pushing both with skopeo");
    let registry = Registry::start_plain()?;
    let mut refs = Vec::new();
    for tag in ["v1", "v2"] {
        refs.push(registry.push(
            &format!("oci:{}:{tag}", layout.display()),
            &format!("demo/app:{tag}"),
        )?);
    }

    let mut summaries = Vec::new();
    for (source, tag) in refs.iter().zip(["v1", "v2"]) {
        let dest = format!("composefs:{}:app:{tag}", repo.display());
        println!("==> skiff copy --src-tls-verify=false {source} {dest}");
        summaries.push(copy(&["--src-tls-verify=false", source], &dest)?);
    }

    let delta = work.join("app-v1-v2.delta");
    let old = format!("composefs:{}:app:v1", repo.display());
    let new = format!("oci:{}:v2", layout.display());
    let delta_ref = format!("oci-archive:{}", delta.display());
    println!("==> skiff delta create {old} {new} {delta_ref}");
    print!(
        "{}",
        run(skiff().args(["delta", "create", &old, &new, &delta_ref]))?
    );
    let other = work.join("repo-delta");
    let dest = format!("composefs:{}:app", other.display());
    println!("==> skiff copy {delta_ref} {dest}   (a repository holding v1)");
    copy(&["--src-tls-verify=false", &refs[0]], &dest)?;
    let applied = copy(&[&delta_ref], &dest)?;

    println!("==> skiff images {}", repo.display());
    print!("{}", run(skiff().arg("images").arg(&repo))?);
    println!("==> cfsctl --repo {} oci images", repo.display());
    print!("{}", run(cfsctl(&repo).args(["oci", "images"]))?);
    println!("==> skiff fsck {}", repo.display());
    print!("{}", run(skiff().arg("fsck").arg(&repo))?);

    let v2 = &summaries[1];
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(0);
    println!(
        "==> The update to v2 fetched {} in {} requests (partial pull of zstd:chunked layers, \
         whose blobs total {}) and found {} of file content already in the store; as a delta \
         it is {}.",
        human(n(v2, "bytes_fetched")),
        n(v2, "requests"),
        human(fixtures::layer_blob_bytes(&layout, "v2")?),
        human(n(v2, "bytes_reused")),
        human(n(&applied, "bytes_fetched"))
    );
    drop(registry);
    Ok(())
}

/// `skiff copy ARGS DEST`; prints one line of what it did and returns the JSON summary.
fn copy(args: &[&str], dest: &str) -> Result<serde_json::Value> {
    let out = skiff()
        .args(["copy", "--progress=json"])
        .args(args)
        .arg(dest)
        .output()
        .context("running skiff")?;
    if !out.status.success() {
        bail!(
            "skiff copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let summary = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "summary")
        .context("no summary from skiff")?;
    let n = |k: &str| summary[k].as_u64().unwrap_or(0);
    println!(
        "    fetched {} in {} requests, wrote {} new, reused {} ({} objects already stored); \
         layers: {} skipped, {} full, {} partial, {} delta; {:.2}s",
        human(n("bytes_fetched")),
        n("requests"),
        human(n("bytes_written")),
        human(n("bytes_reused")),
        n("objects_reused"),
        n("layers_skipped"),
        n("layers_full"),
        n("layers_partial"),
        n("layers_delta"),
        summary["seconds"].as_f64().unwrap_or(0.0)
    );
    Ok(summary)
}
