//! `containers-storage:` read natively: podman's overlay store, without skopeo.
//!
//! containers/storage (c/storage) keeps, under its graph root:
//!
//! ```text
//! overlay-images/images.json            every image: id (= config digest), names, digest(s),
//!                                       top layer, big-data names
//! overlay-images/<id>/manifest          the manifest as pulled (big data "manifest"); other
//! overlay-images/<id>/=<base64(key)>    big data under keys that are not plain words: the
//!                                       config ("sha256:<id>"), "manifest-<digest>"
//! overlay-layers/layers.json            every layer: id, parent, diff-digest (the DiffID)
//! overlay-layers/<id>.tar-split.gz      the layer's tar without file contents (tar-split)
//! overlay/<id>/diff/                    the layer unpacked
//! overlay-images/images.lock, overlay-layers/layers.lock   fcntl read/write locks
//! ```
//!
//! The manifest and config are c/storage's exact bytes, checked against their digests as any
//! source's are. Each layer's tar is rebuilt from its tar-split and the files of `diff/`
//! ([`layer`]) and goes through the ordinary layer import, which checks it against the DiffID;
//! file contents become objects by reflink where the filesystem allows. Reading the store
//! uses the `composefs-storage` crate (what composefs-oci's own import reads it with); skiff
//! does not call that import (`composefs_oci::cstor`), which names each layer without
//! checking its DiffID, writes no content index and tags the image itself.
//!
//! A store skiff cannot read this way (another driver, a layer without tar-split) is read
//! through skopeo instead, with the reason logged ([`NativeUnavailable`]).

pub(crate) mod layer;
mod location;

use self::location::{ImageSpec, StorageLocation, StorageRef};

use std::collections::HashMap;
use std::os::fd::OwnedFd;

use anyhow::{Context, Result, bail};
use base64::Engine;
use composefs_storage::{Image, Layer, Storage, StorageError};
use fn_error_context::context;
use serde::Deserialize;
use skiff_storage::OciDigest;
use skiff_storage::digest::digest_of;

use crate::blob::{MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE, read_bounded};
use crate::options::{SourceNotFound, SourceOptions};
use crate::source::{Resolved, ResolvedImage, parse_config, parse_manifest};

/// Largest `images.json` or `layers.json` read: a store with 100,000 images or layers stays
/// below this; a bigger file is not a store's.
const MAX_INDEX_BYTES: u64 = 256 * 1024 * 1024;

/// Why an image of containers-storage is not read natively: it is read through skopeo instead,
/// by the reference `proxy_spec` (the store named explicitly).
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub(crate) struct NativeUnavailable {
    pub(crate) reason: String,
    pub(crate) proxy_spec: String,
}

/// A reason not to read the image natively, before the reference for skopeo is known.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Unavailable(String);

/// An fcntl read lock on one of c/storage's lock files, held until dropped: c/storage's
/// writers (`podman rmi`, `podman pull`) take the write lock, so a layer cannot go away while
/// it is read. (c/storage locks with fcntl, not flock: a flock would not stop them.)
#[derive(Debug)]
struct ReadLock(#[allow(dead_code)] OwnedFd);

impl ReadLock {
    fn take(storage: &Storage, path: &str) -> Result<Self> {
        let fd = rustix::fs::openat(
            storage.root_dir(),
            path,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .with_context(|| format!("Opening {path}"))?;
        rustix::fs::fcntl_lock(&fd, rustix::fs::FlockOperation::LockShared)
            .with_context(|| format!("Taking the read lock of {path}"))?;
        Ok(Self(fd))
    }
}

/// One image of `overlay-images/images.json`.
#[derive(Debug, Deserialize)]
struct ImageRecord {
    id: String,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    digests: Vec<String>,
    #[serde(default)]
    layer: Option<String>,
}

/// One layer of `overlay-layers/layers.json`.
#[derive(Debug, Deserialize)]
struct LayerRecord {
    id: String,
    #[serde(default)]
    parent: Option<String>,
    #[serde(rename = "diff-digest", default)]
    diff_digest: Option<String>,
}

/// A layer of the image: the store that holds it and its ID there.
#[derive(Debug)]
pub(crate) struct StoredLayer {
    store: usize,
    id: String,
}

/// An image of a containers-storage store, opened for reading: its stores are read-locked
/// until it is dropped.
#[derive(Debug)]
pub struct ContainersStorageSource {
    reference: String,
    stores: Vec<Storage>,
    _locks: Vec<ReadLock>,
    manifest_json: Vec<u8>,
    config_json: Vec<u8>,
    /// The image's layers by DiffID.
    layers: HashMap<OciDigest, StoredLayer>,
}

impl ContainersStorageSource {
    /// Opens the image `spec` (the text after `containers-storage:`). Fails with
    /// [`NativeUnavailable`] when the image must be read through skopeo instead, and with
    /// [`SourceNotFound`] when the store has no such image.
    #[context("Opening containers-storage:{spec}")]
    pub(crate) fn open(spec: &str, options: &SourceOptions) -> Result<Self> {
        let reference = StorageRef::parse(spec)?;
        let location = StorageLocation::find(&reference, options)?;
        Self::open_in(spec, &reference, &location).map_err(|e| {
            match e.downcast_ref::<Unavailable>() {
                Some(Unavailable(reason)) => NativeUnavailable {
                    reason: reason.clone(),
                    proxy_spec: location.reference_for(&reference.image_text),
                }
                .into(),
                None => e,
            }
        })
    }

    fn open_in(spec: &str, reference: &StorageRef, location: &StorageLocation) -> Result<Self> {
        if location.driver != "overlay" {
            return Err(Unavailable(format!(
                "the store at {} uses the {} driver; skiff reads overlay stores natively",
                location.root.display(),
                location.driver
            ))
            .into());
        }
        let mut stores = Vec::new();
        for (i, root) in std::iter::once(&location.root)
            .chain(&location.image_stores)
            .enumerate()
        {
            match Storage::open(root) {
                Ok(s) => stores.push(s),
                Err(StorageError::RootNotFound(_)) if i == 0 => {
                    return Err(SourceNotFound(format!(
                        "containers-storage:{spec} (no store at {})",
                        root.display()
                    ))
                    .into());
                }
                Err(e) => {
                    return Err(Unavailable(format!(
                        "{} is not an overlay store skiff can read: {e}",
                        root.display()
                    ))
                    .into());
                }
            }
        }
        // In c/storage's order (layers, then images), so that a writer taking both cannot
        // deadlock with skiff. The layers stay locked for the copy, so that no layer goes away
        // while it is read: podman's writers (rmi, pull, run) wait until the copy ends.
        let mut locks = Vec::new();
        for store in &stores {
            locks.push(ReadLock::take(store, "overlay-layers/layers.lock")?);
        }
        let mut image_locks = Vec::new();
        for store in &stores {
            image_locks.push(ReadLock::take(store, "overlay-images/images.lock")?);
        }
        let (store_index, record) = find_image(&stores, &reference.image)
            .with_context(|| format!("Reading the images of {}", location.root.display()))?
            .ok_or_else(|| SourceNotFound(format!("containers-storage:{spec}")))?;
        let image = Image::open(&stores[store_index], &record.id)?;
        let manifest_json = read_manifest(&image, &record, &reference.image)?;
        // The config is stored under its digest (the image ID, unless c/image chose another
        // ID, as for layers pulled by TOC).
        let config_digest = manifest_config_digest(&manifest_json)?;
        let config_json = read_big_data(&image, &config_digest, MAX_CONFIG_SIZE)
            .context("Reading the image's config")?;
        drop(image_locks);
        let layers = image_layers(&stores, &record, &config_json)?;
        Ok(Self {
            reference: format!("containers-storage:{spec}"),
            stores,
            _locks: locks,
            manifest_json,
            config_json,
            layers,
        })
    }

    pub(crate) fn reference(&self) -> &str {
        &self.reference
    }

    /// The manifest and config, verified as any source's are.
    pub(crate) fn resolve(&self) -> Result<Resolved> {
        let what = &self.reference;
        let manifest = parse_manifest(&self.manifest_json, what)?;
        let config_digest = digest_of(&self.config_json);
        if config_digest.as_ref() != manifest.config().digest().as_ref() {
            bail!(
                "{what}: the stored config is {config_digest}, the manifest names {}",
                manifest.config().digest()
            );
        }
        let config = parse_config(&self.config_json, &manifest)?;
        Ok(Resolved::Image(Box::new(ResolvedImage {
            manifest_json: self.manifest_json.clone(),
            manifest,
            config_json: self.config_json.clone(),
            config,
        })))
    }

    /// The config, the one blob a containers-storage image keeps as it came.
    pub(crate) fn read_small_blob(&self, digest: &str) -> Result<Vec<u8>> {
        if digest_of(&self.config_json).as_ref() == digest {
            return Ok(self.config_json.clone());
        }
        bail!(
            "{}: containers-storage keeps no blob {digest}",
            self.reference
        )
    }

    /// The store and layer holding the layer `diff_id` of the image.
    fn layer(&self, diff_id: &OciDigest) -> Result<(&Storage, Layer)> {
        let stored = self
            .layers
            .get(diff_id)
            .with_context(|| format!("the image has no layer {diff_id}"))?;
        let store = &self.stores[stored.store];
        Ok((store, Layer::open(store, &stored.id)?))
    }
}

/// Reads a JSON index of the store (`images.json`, `layers.json`), bounded.
fn read_index<T: serde::de::DeserializeOwned>(storage: &Storage, path: &str) -> Result<Vec<T>> {
    let file = match storage.root_dir().open(path) {
        Ok(f) => f,
        // A store where nothing was ever stored has no index yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("Opening {path}")),
    };
    let bytes = read_bounded(file, MAX_INDEX_BYTES).with_context(|| format!("Reading {path}"))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{path} is not c/storage's JSON"))
}

/// Finds the image `spec` names in the first store that has it.
fn find_image(stores: &[Storage], spec: &ImageSpec) -> Result<Option<(usize, ImageRecord)>> {
    for (i, store) in stores.iter().enumerate() {
        let images: Vec<ImageRecord> = read_index(store, "overlay-images/images.json")?;
        if let Some(found) = pick_image(images, spec)? {
            return Ok(Some((i, found)));
        }
    }
    Ok(None)
}

/// The image of `images` that `spec` names: an exact name first, then (for a name without a
/// registry) one that ends in `/NAME`, as podman resolves short names it has stored. Two
/// such images are refused as ambiguous.
fn pick_image(images: Vec<ImageRecord>, spec: &ImageSpec) -> Result<Option<ImageRecord>> {
    let with_tag = |name: &str| -> String {
        let last = name.rsplit('/').next().unwrap_or(name);
        if last.contains(':') {
            name.to_owned()
        } else {
            format!("{name}:latest")
        }
    };
    let named = |image: &ImageRecord, name: &str| -> bool { image.names.iter().any(|n| n == name) };
    match spec {
        ImageSpec::Id(id) => Ok(images.into_iter().find(|i| &i.id == id)),
        ImageSpec::Digest(name, digest) => Ok(images.into_iter().find(|i| {
            let has_digest = i.digest.as_deref() == Some(digest.as_ref())
                || i.digests.iter().any(|d| d == digest.as_ref());
            let name_ok = name.as_ref().is_none_or(|n| {
                i.names.iter().any(|stored| {
                    let repo = repository_of(stored);
                    repo == n || repo.ends_with(&format!("/{n}"))
                })
            });
            has_digest && name_ok
        })),
        ImageSpec::Name(name) => {
            let full = with_tag(name);
            if let Some(pos) = images.iter().position(|i| named(i, &full)) {
                return Ok(images.into_iter().nth(pos));
            }
            let suffix = format!("/{full}");
            let mut matching: Vec<ImageRecord> = images
                .into_iter()
                .filter(|i| i.names.iter().any(|n| n.ends_with(&suffix)))
                .collect();
            match matching.len() {
                0 | 1 => Ok(matching.pop()),
                _ => {
                    let names: Vec<&str> = matching
                        .iter()
                        .flat_map(|i| i.names.iter().filter(|n| n.ends_with(&suffix)))
                        .map(String::as_str)
                        .collect();
                    bail!("{name} is ambiguous in the store: {}", names.join(", "))
                }
            }
        }
    }
}

/// The repository part of a stored name (`localhost/app` of `localhost/app:v1`).
fn repository_of(name: &str) -> &str {
    let name = name.split_once('@').map_or(name, |(n, _)| n);
    match name.rfind(':') {
        Some(colon) if !name[colon..].contains('/') => &name[..colon],
        _ => name,
    }
}

/// The big data item `key` of `image`: the file `key` when the key has only `[0-9a-z.]`, else
/// `=` and the key in base64 (c/storage's naming).
fn read_big_data(image: &Image, key: &str, max: u64) -> Result<Vec<u8>> {
    let plain = key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let file_name = if plain {
        key.to_owned()
    } else {
        format!(
            "={}",
            base64::engine::general_purpose::STANDARD.encode(key.as_bytes())
        )
    };
    let file = image
        .image_dir()
        .open(&file_name)
        .with_context(|| format!("Opening the image's {key:?}"))?;
    read_bounded(file, max).with_context(|| format!("Reading the image's {key:?}"))
}

/// The config digest a manifest names (read before the manifest is checked in full).
fn manifest_config_digest(manifest: &[u8]) -> Result<String> {
    #[derive(Deserialize)]
    struct Config {
        digest: String,
    }
    #[derive(Deserialize)]
    struct Manifest {
        config: Config,
    }
    let manifest: Manifest = serde_json::from_slice(manifest)
        .context("The stored manifest is not an image manifest with a config")?;
    let digest: OciDigest = manifest
        .config
        .digest
        .parse()
        .context("The manifest's config digest")?;
    Ok(digest.to_string())
}

/// The manifest the image was stored with: the one of the digest the reference pins, else
/// the image's own. Its bytes must hash to the digest c/storage recorded.
fn read_manifest(image: &Image, record: &ImageRecord, spec: &ImageSpec) -> Result<Vec<u8>> {
    let (key, expected) = match spec {
        ImageSpec::Digest(_, digest) => (format!("manifest-{digest}"), Some(digest.to_string())),
        _ => ("manifest".to_owned(), record.digest.clone()),
    };
    let bytes = match read_big_data(image, &key, MAX_MANIFEST_SIZE) {
        Ok(bytes) => bytes,
        Err(e) => {
            return Err(Unavailable(format!(
                "the image {} has no stored manifest ({e:#})",
                record.id
            ))
            .into());
        }
    };
    if let Some(expected) = expected {
        let actual = digest_of(&bytes);
        if actual.as_ref() != expected {
            bail!(
                "the stored manifest of image {} is {actual}, not the {expected} c/storage \
                 recorded",
                record.id
            );
        }
    }
    Ok(bytes)
}

/// The image's layers, base first, from its top layer down the parent links (across the
/// stores, as a read-only store may hold the lower ones), matched with the config's DiffIDs.
fn image_layers(
    stores: &[Storage],
    record: &ImageRecord,
    config_json: &[u8],
) -> Result<HashMap<OciDigest, StoredLayer>> {
    #[derive(Deserialize)]
    struct Rootfs {
        diff_ids: Vec<String>,
    }
    #[derive(Deserialize)]
    struct Config {
        rootfs: Rootfs,
    }
    let config: Config =
        serde_json::from_slice(config_json).context("The stored config has no rootfs.diff_ids")?;
    let mut records = HashMap::new();
    for (i, store) in stores.iter().enumerate().rev() {
        let layers: Vec<LayerRecord> = read_index(store, "overlay-layers/layers.json")?;
        for layer in layers {
            // The primary store wins over read-only ones (inserted last).
            records.insert(layer.id.clone(), (i, layer));
        }
    }
    let mut chain = Vec::new();
    let mut next = record.layer.clone();
    while let Some(id) = next {
        if chain.len() > config.rootfs.diff_ids.len() {
            bail!(
                "image {}: its layer chain is longer than its config's DiffIDs",
                record.id
            );
        }
        let (store, layer) = records
            .remove(&id)
            .with_context(|| format!("image {}: its layer {id} is not in the store", record.id))?;
        next = layer.parent.clone();
        chain.push((store, layer));
    }
    chain.reverse();
    if chain.len() != config.rootfs.diff_ids.len() {
        bail!(
            "image {}: the store holds {} layers, its config lists {} DiffIDs",
            record.id,
            chain.len(),
            config.rootfs.diff_ids.len()
        );
    }
    let mut layers = HashMap::new();
    for ((store, layer), diff_id) in chain.into_iter().zip(&config.rootfs.diff_ids) {
        let diff_id: OciDigest = diff_id.parse().context("A DiffID of the stored config")?;
        if layer.diff_digest.as_deref() != Some(diff_id.as_ref()) {
            return Err(Unavailable(format!(
                "layer {} records no DiffID {diff_id} (it records {:?})",
                layer.id, layer.diff_digest
            ))
            .into());
        }
        let tar_split = format!("overlay-layers/{}.tar-split.gz", layer.id);
        if !stores[store].root_dir().try_exists(&tar_split)? {
            return Err(Unavailable(format!("layer {} has no tar-split", layer.id)).into());
        }
        layers.insert(
            diff_id,
            StoredLayer {
                store,
                id: layer.id,
            },
        );
    }
    Ok(layers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, names: &[&str], digest: &str) -> ImageRecord {
        ImageRecord {
            id: id.into(),
            names: names.iter().map(|n| n.to_string()).collect(),
            digest: Some(digest.into()),
            digests: vec![digest.into()],
            layer: None,
        }
    }

    #[test]
    fn names_resolve_exactly_then_by_their_last_components() {
        let d1 = format!("sha256:{}", "1".repeat(64));
        let d2 = format!("sha256:{}", "2".repeat(64));
        let images = || {
            vec![
                record("a", &["localhost/app:v1"], &d1),
                record(
                    "b",
                    &["127.0.0.1:5000/app:latest", "127.0.0.1:5000/tools/app:v2"],
                    &d2,
                ),
            ]
        };
        let pick = |spec: ImageSpec| pick_image(images(), &spec).unwrap().map(|i| i.id);
        assert_eq!(
            pick(ImageSpec::Name("localhost/app:v1".into())),
            Some("a".into())
        );
        assert_eq!(pick(ImageSpec::Name("app:v1".into())), Some("a".into()));
        assert_eq!(
            pick(ImageSpec::Name("127.0.0.1:5000/app".into())),
            Some("b".into())
        );
        assert_eq!(pick(ImageSpec::Name("app".into())), Some("b".into()));
        assert_eq!(pick(ImageSpec::Name("pp:v1".into())), None);
        assert_eq!(
            pick(ImageSpec::Digest(None, d2.parse().unwrap())),
            Some("b".into())
        );
        assert_eq!(
            pick(ImageSpec::Digest(
                Some("localhost/app".into()),
                d2.parse().unwrap()
            )),
            None
        );
        assert_eq!(pick(ImageSpec::Id("a".into())), Some("a".into()));
        let twice = vec![
            record("a", &["localhost/app:v1"], &d1),
            record("b", &["quay.io/x/app:v1"], &d2),
        ];
        let e = pick_image(twice, &ImageSpec::Name("app:v1".into())).unwrap_err();
        assert!(e.to_string().contains("ambiguous"), "{e}");
    }
}
