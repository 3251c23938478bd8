//! An Additional Layer Store (ALS) filled from the store: a directory podman's overlay driver
//! looks in before it downloads a layer, and uses in place when the layer is there.
//!
//! The contract (containers/storage 1.43, podman 4.3; measured, see the README): with the
//! store listed without `:ref`, a layer of compressed digest `D` is the directory `DIR/D/`,
//! and it counts when it holds
//!
//! - `diff/`: the layer unpacked in overlayfs form (see [`skiff_storage::layer_extract`]),
//!   used directly as an overlay lower directory, never written;
//! - `info`: JSON of containers/storage's `Layer`: `diff-digest` (the DiffID, required: it
//!   becomes the layer's ID), `compressed-diff-digest`, `compressed-size`, `diff-size`,
//!   `compression` (how `blob` is compressed: 0 none, 2 gzip, 4 zstd);
//! - `blob`: the layer compressed, read only by `podman push` and `podman save`.
//!
//! Podman 5.1 and later look zstd:chunked and eStargz layers up by their TOC digest instead:
//! `DIR/<TOC digest>` is a symlink to `D`.
//!
//! Entries are written under a temporary name (`.tmp-…`, which podman never looks up) and
//! renamed into place last, so a killed writer leaves nothing podman can see; the next writer
//! removes what it left. Before an entry is written, its layer is regenerated from the store
//! and checked against the DiffID. The blob is the kept original where the store holds it
//! (linked, else cloned, else copied), else the layer compressed again with zstd.
//!
//! When podman pulls such a layer, it records the entry's path in `additionallayer` in its own
//! layer directory (`GRAPHROOT/overlay/<id>/`) and uses the entry from then on, running
//! containers included. An entry is therefore withdrawn ([`LayerStore::prune`]) only when no
//! stored image names its layer **and** no podman layer uses it.
//!
//! The files beside `diff/` are [`super::entry_files`]. The directory's own file `.skiff-layer-store.json` names the repository it serves and the
//! podman graphroots to check; a lock file serialises writers.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use composefs_oci::oci_image::{self, OciImage};
use fn_error_context::context;
use rustix::fs::{FlockOperation, Mode, OFlags};
use serde::{Deserialize, Serialize};
use skiff_storage::images::{ImageLayer, StoredRef, image_layers, open_image};
use skiff_storage::layer_extract::{Extracted, extract_layer};
use skiff_storage::{FsVerityHashValue, OciDigest, Store};

use super::entry_files::{BlobSource, LayerInfo, read_info, read_small, write_blob};
use crate::format::zstd_chunked::{
    ESTARGZ_TOC_DIGEST, LEGACY_MANIFEST_CHECKSUM, MANIFEST_CHECKSUM,
};

/// The file naming the repository the directory serves.
pub const MARKER_FILE: &str = ".skiff-layer-store.json";
/// The lock writers take.
const LOCK_FILE: &str = ".skiff-layer-store.lock";
/// Prefix of entries being written or withdrawn.
const TMP_PREFIX: &str = ".tmp-";
/// What the marker file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Marker {
    /// The repository whose layers the directory serves.
    repository: PathBuf,
    /// Podman graphroots whose layers may use the entries.
    podman_graphroots: Vec<PathBuf>,
}

/// One layer of [`LayerStore::expose`].
#[derive(Debug, Clone, Serialize)]
pub struct ExposedLayer {
    /// The compressed digest (the entry's name).
    pub digest: String,
    /// The DiffID.
    pub diff_id: String,
    /// False when the entry was there already.
    pub written: bool,
    /// Bytes of file content shared with the store by cloning.
    pub cloned_bytes: u64,
    /// Bytes of file content (and blob) written.
    pub copied_bytes: u64,
    /// Where `blob` came from, when written.
    pub blob: Option<BlobSource>,
    /// Why file contents were copied rather than cloned, when they were.
    pub clone_failure: Option<String>,
}

/// One entry of [`LayerStore::entries`].
#[derive(Debug, Clone, Serialize)]
pub struct EntryStatus {
    /// The compressed digest.
    pub digest: String,
    /// Its `info`.
    pub info: LayerInfo,
    /// Podman layer directories that use it.
    pub podman_layers: Vec<PathBuf>,
    /// Stored images (tags) that name the layer.
    pub images: Vec<String>,
    /// TOC digests that lead to it.
    pub aliases: Vec<String>,
}

/// What [`LayerStore::prune`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    /// Entries withdrawn: no stored image names them and podman does not use them.
    pub withdrawn: Vec<String>,
    /// Entries no stored image names that podman still uses, kept.
    pub kept_in_use: Vec<String>,
}

/// An Additional Layer Store directory serving one repository.
#[derive(Debug, Clone)]
pub struct LayerStore {
    dir: PathBuf,
    marker: Marker,
}

impl LayerStore {
    /// Makes `dir` the layer store of `repository` (creating it), with podman's layers under
    /// `podman_graphroots` to check before an entry is withdrawn. A directory serving another
    /// repository is refused.
    #[context("Setting up the layer store {}", dir.display())]
    pub fn create(dir: &Path, repository: &Path, podman_graphroots: Vec<PathBuf>) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        let repository = repository.canonicalize()?;
        let marker = Marker {
            repository,
            podman_graphroots,
        };
        match read_marker(&dir)? {
            Some(old) if old.repository != marker.repository => bail!(
                "{} serves the repository {} already",
                dir.display(),
                old.repository.display()
            ),
            _ => {}
        }
        // Not TMP_PREFIX: a writer's clean-up, under the lock, must not take it.
        let mut tmp = tempfile::Builder::new()
            .prefix(".skiff-marker-")
            .tempfile_in(&dir)?;
        serde_json::to_writer_pretty(&mut tmp, &marker)?;
        tmp.write_all(b"\n")?;
        tmp.as_file().sync_all()?;
        tmp.persist(dir.join(MARKER_FILE))?;
        Ok(Self { dir, marker })
    }

    /// Opens the layer store at `dir`, made by [`LayerStore::create`].
    #[context("Opening the layer store {}", dir.display())]
    pub fn open(dir: &Path) -> Result<Self> {
        let dir = dir.canonicalize()?;
        let marker = read_marker(&dir)?.with_context(|| {
            format!("no {MARKER_FILE}: not a layer store (skiff podman enable makes one)")
        })?;
        Ok(Self { dir, marker })
    }

    /// The directory podman is configured with.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes every layer of the stored image `image` available to podman (blocking).
    #[context("Exposing {image} to podman")]
    pub fn expose<H: FsVerityHashValue>(
        &self,
        store: &Store<H>,
        image: &StoredRef,
    ) -> Result<Vec<ExposedLayer>> {
        self.check_repository(store)?;
        let image = open_image(store, image)?;
        let _lock = self.lock()?;
        self.remove_leftovers()?;
        let layers = image_layers(&image)?;
        let mut out = Vec::with_capacity(layers.len());
        for layer in layers {
            out.push(self.expose_layer(store, &layer)?);
        }
        Ok(out)
    }

    #[context("Exposing layer {}", layer.digest)]
    fn expose_layer<H: FsVerityHashValue>(
        &self,
        store: &Store<H>,
        layer: &ImageLayer<H>,
    ) -> Result<ExposedLayer> {
        let name = layer.digest.to_string();
        let entry = self.dir.join(&name);
        let mut exposed = ExposedLayer {
            digest: name.clone(),
            diff_id: layer.diff_id.to_string(),
            written: false,
            cloned_bytes: 0,
            copied_bytes: 0,
            blob: None,
            clone_failure: None,
        };
        if entry.exists() {
            let info = read_info(&entry)?;
            if info.diff_digest != exposed.diff_id {
                bail!(
                    "the entry {} holds the layer {}, not {}: remove it (skiff podman prune)",
                    entry.display(),
                    info.diff_digest,
                    exposed.diff_id
                );
            }
            self.write_aliases(&name, &toc_digests(layer))?;
            return Ok(exposed);
        }
        let hex = layer.digest.to_string().replace(':', "-");
        let tmp = self
            .dir
            .join(format!("{TMP_PREFIX}{hex}-{}", std::process::id()));
        std::fs::create_dir(&tmp)?;
        let written = self.write_entry(store, layer, &tmp, &mut exposed);
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &entry)
            .with_context(|| format!("Renaming {} to {}", tmp.display(), entry.display()))?;
        self.write_aliases(&name, &toc_digests(layer))?;
        exposed.written = true;
        Ok(exposed)
    }

    /// Writes `diff/`, `blob` and `info` into `tmp`, and syncs them.
    fn write_entry<H: FsVerityHashValue>(
        &self,
        store: &Store<H>,
        layer: &ImageLayer<H>,
        tmp: &Path,
        exposed: &mut ExposedLayer,
    ) -> Result<()> {
        let diff = tmp.join("diff");
        std::fs::create_dir(&diff)?;
        rustix::fs::chmod(&diff, Mode::from_raw_mode(0o755))?;
        let Extracted {
            tar_size,
            cloned_bytes,
            copied_bytes,
            clone_failure,
            ..
        } = extract_layer(store, &layer.diff_id, &layer.stream, &diff)?;
        exposed.cloned_bytes = cloned_bytes;
        exposed.copied_bytes = copied_bytes;
        exposed.clone_failure = clone_failure;
        let (blob, compression, blob_copied) = write_blob(store, layer, tmp)?;
        exposed.copied_bytes += blob_copied;
        exposed.blob = Some(blob);
        let info = LayerInfo {
            diff_digest: layer.diff_id.to_string(),
            compressed_diff_digest: layer.digest.to_string(),
            compressed_size: layer.size,
            diff_size: tar_size,
            compression,
        };
        let mut file = File::create(tmp.join("info"))?;
        serde_json::to_writer(&mut file, &info)?;
        file.sync_all()?;
        // One sync for the whole tree before it becomes visible.
        let dir = File::open(tmp)?;
        rustix::fs::syncfs(&dir)?;
        Ok(())
    }

    /// Points the TOC digests of a layer at its entry (podman 5.1+ looks those up).
    fn write_aliases(&self, name: &str, toc_digests: &[String]) -> Result<()> {
        for toc in toc_digests {
            let alias = self.dir.join(toc);
            if std::fs::symlink_metadata(&alias).is_ok() {
                continue;
            }
            let tmp = self.dir.join(format!(
                "{TMP_PREFIX}alias-{}-{}",
                toc.replace(':', "-"),
                std::process::id()
            ));
            std::os::unix::fs::symlink(name, &tmp)?;
            std::fs::rename(&tmp, &alias)?;
        }
        Ok(())
    }

    /// The entries, with who uses each (blocking).
    #[context("Listing the layer store {}", self.dir.display())]
    pub fn entries<H: FsVerityHashValue>(&self, store: &Store<H>) -> Result<Vec<EntryStatus>> {
        self.check_repository(store)?;
        let named = stored_layers(store)?;
        let used = self.podman_uses()?;
        let (entries, aliases) = self.scan()?;
        let mut out = Vec::new();
        for name in entries {
            let path = self.dir.join(&name);
            let info = match read_info(&path) {
                Ok(info) => info,
                // Withdrawn since the scan (status takes no lock).
                Err(_) if !path.exists() => continue,
                Err(e) => return Err(e),
            };
            out.push(EntryStatus {
                info,
                podman_layers: used.get(&path).cloned().unwrap_or_default(),
                images: named.get(&name).cloned().unwrap_or_default(),
                aliases: aliases
                    .iter()
                    .filter(|(_, target)| *target == name)
                    .map(|(alias, _)| alias.clone())
                    .collect(),
                digest: name,
            });
        }
        Ok(out)
    }

    /// Withdraws the entries whose layers no stored image names, unless podman uses them
    /// (blocking).
    #[context("Pruning the layer store {}", self.dir.display())]
    pub fn prune<H: FsVerityHashValue>(&self, store: &Store<H>) -> Result<PruneReport> {
        self.check_repository(store)?;
        let _lock = self.lock()?;
        self.remove_leftovers()?;
        let named = stored_layers(store)?;
        let used = self.podman_uses()?;
        let (entries, aliases) = self.scan()?;
        let mut report = PruneReport::default();
        for name in entries {
            if named.contains_key(&name) {
                continue;
            }
            let path = self.dir.join(&name);
            if used.contains_key(&path) {
                log::info!("{name}: no stored image names it, but podman uses it: kept");
                report.kept_in_use.push(name);
                continue;
            }
            // Out of podman's sight first; then, in case a pull took it up between the check
            // and the rename, checked again and put back if so. (A pull that looked the entry
            // up but has not yet recorded it when this second check runs can still lose it:
            // podman then fails that pull, and a retry downloads the layer.)
            let gone = self.dir.join(format!(
                "{TMP_PREFIX}withdrawn-{}-{}",
                name.replace(':', "-"),
                std::process::id()
            ));
            std::fs::rename(&path, &gone)?;
            if self.podman_uses()?.contains_key(&path) {
                std::fs::rename(&gone, &path)?;
                report.kept_in_use.push(name);
                continue;
            }
            std::fs::remove_dir_all(&gone)?;
            report.withdrawn.push(name);
        }
        for (alias, target) in aliases {
            if !self.dir.join(&target).exists() {
                std::fs::remove_file(self.dir.join(alias))?;
            }
        }
        Ok(report)
    }

    /// The entry names and the aliases in the directory.
    fn scan(&self) -> Result<(BTreeSet<String>, Vec<Alias>)> {
        let mut entries = BTreeSet::new();
        let mut aliases = Vec::new();
        for item in std::fs::read_dir(&self.dir)? {
            let item = item?;
            let Some(name) = item.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if name.parse::<OciDigest>().is_err() {
                continue;
            }
            let kind = item.file_type()?;
            if kind.is_symlink() {
                let target = std::fs::read_link(item.path())?;
                aliases.push((name, target.to_string_lossy().into_owned()));
            } else if kind.is_dir() {
                entries.insert(name);
            }
        }
        Ok((entries, aliases))
    }

    /// Entry paths podman's layers use, with the podman layer directories using each: the
    /// `additionallayer` files in `GRAPHROOT/overlay/*/`.
    fn podman_uses(&self) -> Result<BTreeMap<PathBuf, Vec<PathBuf>>> {
        let mut used: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
        for root in &self.marker.podman_graphroots {
            let overlay = root.join("overlay");
            let layers = match std::fs::read_dir(&overlay) {
                Ok(l) => l,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("Reading {}", overlay.display()));
                }
            };
            for layer in layers {
                let layer = layer?;
                if !layer.file_type()?.is_dir() {
                    continue;
                }
                let layer = layer.path();
                let record = match std::fs::read_to_string(layer.join("additionallayer")) {
                    Ok(r) => r,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                };
                let recorded = Path::new(record.trim());
                let recorded = recorded
                    .canonicalize()
                    .unwrap_or_else(|_| recorded.to_owned());
                if let Ok(rest) = recorded.strip_prefix(&self.dir)
                    && let Some(first) = rest.components().next()
                {
                    let entry = self.dir.join(first.as_os_str());
                    let entry = entry.canonicalize().unwrap_or(entry);
                    used.entry(entry).or_default().push(layer);
                }
            }
        }
        Ok(used)
    }

    /// Removes what killed writers left (under the lock, so nobody is writing them).
    fn remove_leftovers(&self) -> Result<()> {
        for item in std::fs::read_dir(&self.dir)? {
            let item = item?;
            let name = item.file_name();
            if !name.to_string_lossy().starts_with(TMP_PREFIX) {
                continue;
            }
            log::info!("removing {:?}, left by an interrupted writer", name);
            if item.file_type()?.is_dir() {
                std::fs::remove_dir_all(item.path())?;
            } else {
                std::fs::remove_file(item.path())?;
            }
        }
        Ok(())
    }

    fn lock(&self) -> Result<File> {
        let file = File::from(rustix::fs::openat(
            rustix::fs::CWD,
            self.dir.join(LOCK_FILE),
            OFlags::CREATE | OFlags::RDWR | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?);
        rustix::fs::flock(&file, FlockOperation::LockExclusive)
            .context("Locking the layer store")?;
        Ok(file)
    }

    fn check_repository<H: FsVerityHashValue>(&self, store: &Store<H>) -> Result<()> {
        let path = store.path().canonicalize()?;
        if path != self.marker.repository {
            bail!(
                "{} serves the repository {}, not {}",
                self.dir.display(),
                self.marker.repository.display(),
                path.display()
            );
        }
        Ok(())
    }
}

/// A TOC digest's symlink to an entry: (alias, target).
type Alias = (String, String);

/// The TOC digests of a zstd:chunked or eStargz layer (podman 5.1+ looks layers up by them).
fn toc_digests<H>(layer: &ImageLayer<H>) -> Vec<String> {
    [
        MANIFEST_CHECKSUM,
        LEGACY_MANIFEST_CHECKSUM,
        ESTARGZ_TOC_DIGEST,
    ]
    .iter()
    .filter_map(|key| layer.annotations.get(*key))
    .filter(|value| value.parse::<OciDigest>().is_ok())
    .cloned()
    .collect::<BTreeSet<_>>()
    .into_iter()
    .collect()
}

/// The compressed layer digests the tagged images of `store` name, with the tags naming each.
fn stored_layers<H: FsVerityHashValue>(store: &Store<H>) -> Result<BTreeMap<String, Vec<String>>> {
    let mut named: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (tag, digest) in oci_image::list_refs(store.repo())? {
        let image = OciImage::open(store.repo(), &digest, None)
            .with_context(|| format!("Opening image {tag}"))?;
        for layer in image.layer_descriptors() {
            named
                .entry(layer.digest().to_string())
                .or_default()
                .push(tag.clone());
        }
    }
    Ok(named)
}

fn read_marker(dir: &Path) -> Result<Option<Marker>> {
    let path = dir.join(MARKER_FILE);
    match read_small(&path)? {
        None => Ok(None),
        Some(bytes) => Ok(Some(
            serde_json::from_slice(&bytes)
                .with_context(|| format!("Parsing {}", path.display()))?,
        )),
    }
}
