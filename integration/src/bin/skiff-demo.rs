//! `make demo`: builds an example image pair, starts a local registry on 127.0.0.1, copies v1
//! and then v2 into a repository under `./demo-work`, and shows what each copy fetched and
//! what it reused.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use skiff_integration::fixtures::{self, Compression};
use skiff_integration::registry::Registry;
use skiff_integration::tools::{cfsctl, run, skiff};

fn human(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
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
    for (tag, kind) in [("v1", "demo-v1"), ("v2", "demo-v2")] {
        let w =
            fixtures::write_oci_layout(&layout, tag, &fixtures::by_name(kind)?, Compression::Gzip)?;
        println!(
            "    {tag}: {} uncompressed, manifest {}",
            human(w.tar_bytes),
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
        let out = skiff()
            .args([
                "copy",
                "--progress=json",
                "--src-tls-verify=false",
                source,
                &dest,
            ])
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
            "    fetched {}, wrote {} new, reused {} ({} objects already stored); layers: {} skipped, {} fetched; {:.2}s",
            human(n("bytes_fetched")),
            human(n("bytes_written")),
            human(n("bytes_reused")),
            n("objects_reused"),
            n("layers_skipped"),
            n("layers_full"),
            summary["seconds"].as_f64().unwrap_or(0.0)
        );
        summaries.push(summary);
    }

    println!("==> skiff images {}", repo.display());
    print!("{}", run(skiff().arg("images").arg(&repo))?);
    println!("==> cfsctl --repo {} oci images", repo.display());
    print!("{}", run(cfsctl(&repo).args(["oci", "images"]))?);
    println!("==> skiff fsck {}", repo.display());
    print!("{}", run(skiff().arg("fsck").arg(&repo))?);

    let v2 = &summaries[1];
    let (fetched, reused) = (
        v2["bytes_fetched"].as_u64().unwrap_or(0),
        v2["bytes_reused"].as_u64().unwrap_or(0),
    );
    println!(
        "==> The update to v2 fetched {} (whole changed layers: zstd:chunked partial pulls and deltas will cut this) and found {} of file content already in the store.",
        human(fetched),
        human(reused)
    );
    drop(registry);
    Ok(())
}
