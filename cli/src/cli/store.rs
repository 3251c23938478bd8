//! The store commands: init, images, inspect, rm, gc, fsck.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use skiff_storage::images::{self, StoredRef};
use skiff_storage::kept_blobs::kept_blobs;
use skiff_storage::settings::RepoSettings;
use skiff_storage::{FsVerityHashValue, HashAlgorithm, InitOptions, OciDigest, Store, maintenance};
use skiff_transport::reference::{ImageRef, default_repository};

use super::output::human;
use super::with_repo_hash;

fn repo_or_default(path: Option<PathBuf>) -> Result<PathBuf> {
    path.map_or_else(default_repository, Ok)
}

/// Splits a `composefs:` reference into repository and image.
pub(crate) fn stored_image(reference: &str) -> Result<(PathBuf, StoredRef)> {
    match reference.parse::<ImageRef>()? {
        ImageRef::Composefs { repo, image } => {
            Ok((skiff_transport::reference::repository_path(&repo)?, image))
        }
        other => bail!("{other}: expected an image of composefs storage (composefs:PATH:NAME)"),
    }
}

pub(crate) fn init(
    path: &Path,
    hash: HashAlgorithm,
    require_verity: bool,
    keep_blobs: bool,
) -> Result<()> {
    let outcome = skiff_storage::repository::init(
        path,
        InitOptions {
            hash,
            require_verity,
            allow_non_empty: true,
        },
    )?;
    let alg = match outcome.hash {
        HashAlgorithm::Sha256 => "sha256",
        HashAlgorithm::Sha512 => "sha512",
    };
    let mut settings = RepoSettings::load(path)?;
    if keep_blobs && !settings.keep_blobs {
        settings.keep_blobs = true;
        settings.save(path)?;
    }
    let what = if outcome.created {
        "Initialized"
    } else {
        "Already initialized:"
    };
    let blobs = if settings.keep_blobs {
        ", original blobs kept"
    } else {
        ""
    };
    println!(
        "{what} composefs repository {} (fs-verity {alg}{blobs})",
        path.display()
    );
    if outcome.insecure {
        eprintln!(
            "skiff: note: {} has no fs-verity: the repository runs in insecure mode",
            path.display()
        );
    }
    Ok(())
}

pub(crate) fn images(path: Option<PathBuf>, json: bool) -> Result<()> {
    let path = repo_or_default(path)?;
    let list = with_repo_hash!(&path, H => images::list_images(&Store::<H>::open(&path)?)?);
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &list)?;
        writeln!(out)?;
        return Ok(());
    }
    if RepoSettings::load(&path)?.keep_blobs {
        writeln!(out, "# {}: original blobs kept", path.display())?;
    }
    let width = list.iter().map(|i| i.name.len()).max().unwrap_or(4).max(4);
    writeln!(
        out,
        "{:width$}  {:19}  {:>10}  {:5}  CREATED",
        "NAME", "DIGEST", "SIZE", "BLOBS"
    )?;
    for i in &list {
        let digest = i
            .digest
            .split_once(':')
            .map_or(i.digest.as_str(), |(_, h)| &h[..12]);
        let blobs = match (i.blobs_kept, i.layers) {
            (0, _) => "-",
            (k, n) if k == n => "kept",
            _ => "some",
        };
        writeln!(
            out,
            "{:width$}  sha256:{:12}  {:>10}  {blobs:5}  {}",
            i.name,
            digest,
            human(i.size),
            i.created.as_deref().unwrap_or("-")
        )?;
    }
    Ok(())
}

pub(crate) fn inspect(reference: &str, raw: bool, config: bool) -> Result<()> {
    let (path, image) = stored_image(reference)?;
    let text =
        with_repo_hash!(&path, H => inspect_text::<H>(&Store::open(&path)?, &image, raw, config)?);
    let mut out = std::io::stdout().lock();
    out.write_all(&text)?;
    if !raw {
        writeln!(out)?;
    }
    Ok(())
}

/// `skopeo inspect`'s output shape for a stored image.
fn inspect_text<H: FsVerityHashValue>(
    store: &Store<H>,
    image: &StoredRef,
    raw: bool,
    config: bool,
) -> Result<Vec<u8>> {
    let (manifest_json, config_json) = images::raw_manifest_and_config(store, image)?;
    if raw {
        return Ok(if config { config_json } else { manifest_json });
    }
    let config_value: serde_json::Value = serde_json::from_slice(&config_json)?;
    if config {
        return Ok(serde_json::to_vec_pretty(&config_value)?);
    }
    let manifest: serde_json::Value = serde_json::from_slice(&manifest_json)?;
    let (digest, _) = images::resolve(store, image)?;
    let tags = images::tags_of(store, &digest)?;
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    let kept: Vec<OciDigest> = layers
        .iter()
        .filter_map(|l| l["digest"].as_str()?.parse().ok())
        .collect();
    let kept: Vec<String> = kept_blobs(store, &kept)?
        .into_iter()
        .map(|(digest, _)| digest.to_string())
        .collect();
    let value = serde_json::json!({
        "Name": match image { StoredRef::Tag(t) => t.clone(), StoredRef::Digest(_) => tags.first().cloned().unwrap_or_default() },
        "Digest": digest.to_string(),
        "RepoTags": tags,
        "Created": config_value["created"],
        "DockerVersion": config_value.get("docker_version").cloned().unwrap_or_else(|| "".into()),
        "Labels": config_value["config"]["Labels"],
        "Architecture": config_value["architecture"],
        "Os": config_value["os"],
        "Layers": layers.iter().map(|l| l["digest"].clone()).collect::<Vec<_>>(),
        "LayersData": layers.iter().map(|l| serde_json::json!({
            "MIMEType": l["mediaType"], "Digest": l["digest"], "Size": l["size"], "Annotations": l["annotations"],
        })).collect::<Vec<_>>(),
        "Env": config_value["config"]["Env"],
        // skiff's own: the layer blobs the store keeps, and whether it keeps new ones.
        "KeptBlobs": kept,
        "KeepBlobs": RepoSettings::load(store.path())?.keep_blobs,
    });
    Ok(serde_json::to_vec_pretty(&value)?)
}

pub(crate) fn rm(reference: &str) -> Result<()> {
    let (path, image) = stored_image(reference)?;
    let removed =
        with_repo_hash!(&path, H => images::remove(&Store::<H>::open_writable(&path)?, &image)?);
    for tag in removed {
        println!("Untagged {tag}");
    }
    Ok(())
}

pub(crate) fn gc(path: Option<PathBuf>) -> Result<()> {
    let path = repo_or_default(path)?;
    let report = with_repo_hash!(&path, H => maintenance::gc(&Store::<H>::open_writable(&path)?)?);
    println!(
        "Removed {} objects, freed {} ({} bytes); pruned {} dangling names",
        report.objects_removed,
        human(report.bytes_freed),
        report.bytes_freed,
        report.names_pruned
    );
    if RepoSettings::load(&path)?.podman_layer_store.is_some()
        && let Err(e) = super::podman::prune(&path)
    {
        // The collection itself succeeded.
        eprintln!("warning: {e:#}");
    }
    Ok(())
}

pub(crate) async fn fsck(path: Option<PathBuf>) -> Result<()> {
    let path = repo_or_default(path)?;
    let report = with_repo_hash!(&path, H => maintenance::fsck(&Store::<H>::open(&path)?).await?);
    for e in &report.errors {
        println!("{e}");
    }
    if !report.is_ok() {
        bail!(
            "{} problem(s) found in {}",
            report.errors.len(),
            path.display()
        );
    }
    println!(
        "{}: ok ({} images, {} content indexes checked)",
        path.display(),
        report.images_checked,
        report.indexes_checked
    );
    Ok(())
}
