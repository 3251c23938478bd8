//! `skiff delta create OLD NEW DESTINATION`: the delta that turns OLD into NEW, as an
//! oci-archive, an OCI layout or an artifact in a registry, that oci-delta, cfsctl and skiff
//! apply. In a registry, the delta is also listed under NEW's referrers tag (`sha256-HEX`,
//! an image index) unless the registry indexes the `subject` itself, so that copies of NEW
//! find it.
//!
//! OLD is read from a composefs repository (its file tree is what the delta's OPENs name, as
//! an applier will see it); NEW from an OCI layout (its layer blobs go into the delta where a
//! tar-diff would not be smaller) or a composefs repository (layer tars from the store; a layer
//! carried whole is recompressed with gzip). Layers of NEW whose DiffID OLD has are left out (listed in
//! `delta.reused`); every other layer becomes a tar-diff ([`super::generate`]) when that is
//! smaller than the layer blob, else the blob itself.
//!
//! The delta manifest is serialised as the Go tool serialises it: compact, keys in Go's struct
//! order (`schemaVersion`, `artifactType`, `config`, `layers`, `subject`, `annotations`; in
//! descriptors `mediaType`, `digest`, `size`, `annotations`), maps sorted, `<`, `>` and `&`
//! escaped, no trailing newline. An oci-archive's members have no `./` prefix (Go oci-delta
//! looks them up by exact name): `oci-layout`, `blobs/`, `blobs/sha256/`, the target manifest
//! and config, the layer blobs, the empty config, the delta manifest, `index.json`.

mod generate;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use containers_image_proxy::oci_spec::image::Descriptor;
use serde::Serialize;
use skiff_storage::images::{ImageTree, StoredRef, raw_manifest_and_config};
use skiff_storage::{FsVerityHashValue, Store};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::format::media::Compression;
use crate::format::oci_delta::tar_diff::BinaryDiff;
use crate::format::oci_delta::*;
use crate::options::SourceOptions;
use crate::reference::{DockerRef, ImageRef};
use crate::source::ResolvedImage;
use crate::source::layout::LayoutSource;
use generate::{SourceSet, write_layer_diff};
use skiff_storage::layer_import::stored_layer;

/// The empty config every delta names.
const EMPTY_CONFIG: &[u8] = b"{}";
const EMPTY_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// How to make a delta.
#[derive(Debug, Clone, Copy)]
pub struct CreateOptions {
    /// How changed files are diffed.
    pub binary_diff: BinaryDiff,
    /// Layers diffed at once.
    pub jobs: usize,
}

/// What a delta holds, for the summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CreateSummary {
    /// Digest of the delta manifest.
    pub delta_digest: String,
    /// Target layers left out (the source has them).
    pub layers_reused: usize,
    /// Target layers carried as tar-diffs.
    pub layers_tar_diff: usize,
    /// Target layers carried whole.
    pub layers_original: usize,
    /// Bytes of the layer blobs of the delta.
    pub delta_bytes: u64,
    /// Compressed bytes of the target layers the delta carries (what a pull would fetch).
    pub replaced_bytes: u64,
    /// Seconds taken.
    pub seconds: f64,
}

/// Where a blob of the delta comes from.
#[derive(Debug)]
enum BlobData {
    Bytes(Vec<u8>),
    File(tempfile::NamedTempFile),
    Layout(Box<Descriptor>),
}

#[derive(Debug)]
struct Blob {
    digest: String,
    size: u64,
    data: BlobData,
}

#[derive(Serialize)]
struct GoDescriptor {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Serialize)]
struct GoManifest {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "artifactType")]
    artifact_type: String,
    config: GoDescriptor,
    layers: Vec<GoDescriptor>,
    subject: GoDescriptor,
    annotations: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct GoIndex {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: String,
    manifests: Vec<GoDescriptor>,
}

/// JSON as Go's `encoding/json` writes it: compact, with `<`, `>` and `&` escaped.
fn go_json(value: &impl Serialize) -> Result<Vec<u8>> {
    let text = serde_json::to_string(value)?;
    Ok(text
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .into_bytes())
}

/// Where NEW's layers are read from.
pub trait NewLayers: Send + Sync {
    /// The layer's uncompressed tar (checked against its DiffID by the caller).
    fn tar(&self, layer: &Descriptor, diff_id: &str) -> Result<Box<dyn Read + Send>>;
    /// The layer blob the manifest names, if this source keeps it.
    fn blob(&self, layer: &Descriptor) -> Result<Option<Box<dyn Read + Send>>>;
}

impl NewLayers for LayoutSource {
    fn tar(&self, layer: &Descriptor, _diff_id: &str) -> Result<Box<dyn Read + Send>> {
        let mut blob = std::io::BufReader::with_capacity(128 * 1024, self.blob_reader(layer)?);
        let head = std::io::BufRead::fill_buf(&mut blob)?;
        Ok(match Compression::sniff(head) {
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(blob)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(blob)?),
            Compression::None => Box::new(blob),
        })
    }

    fn blob(&self, layer: &Descriptor) -> Result<Option<Box<dyn Read + Send>>> {
        Ok(Some(Box::new(self.blob_reader(layer)?.take(layer.size()))))
    }
}

/// NEW as a composefs repository holds it: layer tars rebuilt from their splitstreams; no
/// compressed blobs (a layer carried whole is recompressed with gzip, under a new digest, as
/// Go oci-delta does for containers-storage).
#[derive(Debug)]
pub struct StoredLayers<H: FsVerityHashValue> {
    /// The repository.
    pub store: Store<H>,
}

impl<H: FsVerityHashValue> NewLayers for StoredLayers<H> {
    fn tar(&self, _layer: &Descriptor, diff_id: &str) -> Result<Box<dyn Read + Send>> {
        let id = stored_layer(&self.store, &diff_id.parse()?)?
            .with_context(|| format!("layer {diff_id} is not in the repository"))?;
        let (reader, mut writer) = std::io::pipe()?;
        let store = self.store.clone();
        // A failure ends the tar early; the caller's DiffID check reports it.
        std::thread::spawn(move || {
            if let Err(e) = store.write_layer_tar(&id, &mut writer) {
                log::warn!("reading layer {id:?}: {e:#}");
            }
        });
        Ok(Box::new(reader))
    }

    fn blob(&self, _layer: &Descriptor) -> Result<Option<Box<dyn Read + Send>>> {
        Ok(None)
    }
}

/// The image a delta rebuilds, and where its layers are read from.
pub struct NewImage {
    /// Its manifest and config.
    pub image: ResolvedImage,
    /// Its layers.
    pub layers: Arc<dyn NewLayers>,
}

impl NewImage {
    /// NEW from an OCI layout.
    pub async fn from_layout(layout: LayoutSource) -> Result<Self> {
        match layout.resolve().await? {
            crate::source::Resolved::Image(image) => Ok(Self {
                image: *image,
                layers: Arc::new(layout),
            }),
            crate::source::Resolved::Delta(_) => bail!("NEW is a delta, not an image"),
        }
    }

    /// NEW from a composefs repository.
    pub fn from_store<H: FsVerityHashValue>(
        store: Store<H>,
        reference: &StoredRef,
    ) -> Result<Self> {
        let (manifest_json, config_json) = raw_manifest_and_config(&store, reference)?;
        let manifest = crate::source::parse_manifest(&manifest_json, "NEW")?;
        let config = crate::source::parse_config(&config_json, &manifest)?;
        Ok(Self {
            image: ResolvedImage {
                manifest_json,
                manifest,
                config_json,
                config,
            },
            layers: Arc::new(StoredLayers { store }),
        })
    }
}

impl std::fmt::Debug for NewImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewImage").finish_non_exhaustive()
    }
}

/// Creates the delta from `old_tag` in `old_store` to the image `new` names, written to
/// `dest` (`oci-archive:`, `oci:`, or `docker://`, reached with `dest_options`).
pub async fn create_delta<H: FsVerityHashValue>(
    old_store: &Store<H>,
    old_tag: &str,
    new: NewImage,
    dest: &ImageRef,
    dest_options: &SourceOptions,
    options: CreateOptions,
) -> Result<CreateSummary> {
    let started = Instant::now();
    let (old_manifest, old_config) =
        raw_manifest_and_config(old_store, &StoredRef::Tag(old_tag.to_owned()))?;
    let old_manifest_digest = skiff_storage::digest::digest_of(&old_manifest).to_string();
    let old_config_digest = skiff_storage::digest::digest_of(&old_config).to_string();
    let old_diff_ids: Vec<String> = {
        let config: serde_json::Value = serde_json::from_slice(&old_config)?;
        serde_json::from_value(config["rootfs"]["diff_ids"].clone())
            .context("the old image's config has no DiffIDs")?
    };
    let NewImage {
        image:
            ResolvedImage {
                manifest_json,
                manifest,
                config_json,
                config,
            },
        layers: new,
    } = new;
    let target_digest = skiff_storage::digest::digest_of(&manifest_json).to_string();

    let tree = {
        let (store, tag) = (old_store.clone(), old_tag.to_owned());
        tokio::task::spawn_blocking(move || ImageTree::load(&store, &tag)).await??
    }
    .with_context(|| format!("{old_tag} has no file tree (EROFS)"))?;
    let repo = old_store.clone();
    let sources =
        Arc::new(tokio::task::spawn_blocking(move || SourceSet::build(&tree, repo)).await??);
    log::info!("{} files in the source image", sources.len());

    let mut summary = CreateSummary::default();
    let (mut reused, mut reused_diff_ids) = (Vec::new(), Vec::new());
    let mut todo: Vec<(Descriptor, String)> = Vec::new();
    for (layer, diff_id) in manifest.layers().iter().zip(config.rootfs().diff_ids()) {
        if old_diff_ids.contains(diff_id) {
            reused.push(layer.digest().to_string());
            reused_diff_ids.push(diff_id.clone());
            summary.layers_reused += 1;
        } else if !todo.iter().any(|(d, _)| d.digest() == layer.digest()) {
            todo.push((layer.clone(), diff_id.clone()));
        }
    }

    let semaphore = Arc::new(Semaphore::new(options.jobs.max(1)));
    let mut tasks = JoinSet::new();
    for (index, (layer, diff_id)) in todo.iter().cloned().enumerate() {
        let permit = semaphore.clone().acquire_owned().await?;
        let (new, sources) = (new.clone(), sources.clone());
        tasks.spawn_blocking(move || {
            let result = diff_layer(
                new.as_ref(),
                &sources,
                &layer,
                &diff_id,
                options.binary_diff,
            )
            .with_context(|| format!("Diffing layer {}", layer.digest()));
            drop(permit);
            result.map(|blob| (index, blob))
        });
    }
    let mut diffs: Vec<Option<LayerChoice>> = (0..todo.len()).map(|_| None).collect();
    while let Some(done) = tasks.join_next().await {
        let (index, blob) = done??;
        diffs[index] = Some(blob);
    }

    // The blobs, in archive order: target manifest and config, layers, empty config.
    let mut blobs = vec![
        Blob {
            digest: target_digest.clone(),
            size: manifest_json.len() as u64,
            data: BlobData::Bytes(manifest_json.clone()),
        },
        Blob {
            digest: skiff_storage::digest::digest_of(&config_json).to_string(),
            size: config_json.len() as u64,
            data: BlobData::Bytes(config_json.clone()),
        },
    ];
    let target_manifest_media_type = manifest
        .media_type()
        .as_ref()
        .map_or(MANIFEST_MEDIA_TYPE.to_owned(), |m| m.to_string());
    let content = |what: &str| BTreeMap::from([(ANNOTATION_CONTENT.to_owned(), what.to_owned())]);
    let mut layers = vec![
        GoDescriptor {
            media_type: target_manifest_media_type.clone(),
            digest: target_digest.clone(),
            size: manifest_json.len() as u64,
            annotations: Some(content("image-manifest")),
        },
        GoDescriptor {
            media_type: CONFIG_MEDIA_TYPE.to_owned(),
            digest: blobs[1].digest.clone(),
            size: config_json.len() as u64,
            annotations: Some(content("image-config")),
        },
    ];
    for ((layer, _), diff) in todo.iter().zip(diffs) {
        let diff = diff.context("a layer was not diffed")?;
        let mut annotations = content("image-layer");
        annotations.insert(ANNOTATION_TO.to_owned(), layer.digest().to_string());
        summary.replaced_bytes += layer.size();
        let blob = match diff {
            LayerChoice::TarDiff(tar_diff) => {
                summary.layers_tar_diff += 1;
                layers.push(GoDescriptor {
                    media_type: MEDIA_TYPE_TAR_DIFF.to_owned(),
                    digest: tar_diff.digest.clone(),
                    size: tar_diff.size,
                    annotations: Some(annotations),
                });
                tar_diff
            }
            LayerChoice::Original => {
                summary.layers_original += 1;
                layers.push(GoDescriptor {
                    media_type: LAYER_GZIP.to_owned(),
                    digest: layer.digest().to_string(),
                    size: layer.size(),
                    annotations: Some(annotations),
                });
                Blob {
                    digest: layer.digest().to_string(),
                    size: layer.size(),
                    data: BlobData::Layout(Box::new(layer.clone())),
                }
            }
            LayerChoice::Recompressed(blob) => {
                summary.layers_original += 1;
                layers.push(GoDescriptor {
                    media_type: LAYER_GZIP.to_owned(),
                    digest: blob.digest.clone(),
                    size: blob.size,
                    annotations: Some(annotations),
                });
                blob
            }
        };
        summary.delta_bytes += blob.size;
        blobs.push(blob);
    }
    let empty_digest = skiff_storage::digest::digest_of(EMPTY_CONFIG).to_string();
    blobs.push(Blob {
        digest: empty_digest.clone(),
        size: EMPTY_CONFIG.len() as u64,
        data: BlobData::Bytes(EMPTY_CONFIG.to_vec()),
    });
    let mut annotations = BTreeMap::from([
        (ANNOTATION_SOURCE.to_owned(), old_manifest_digest),
        (ANNOTATION_SOURCE_CONFIG.to_owned(), old_config_digest),
        (ANNOTATION_TARGET.to_owned(), target_digest.clone()),
    ]);
    if !reused.is_empty() {
        annotations.insert(
            ANNOTATION_REUSED.to_owned(),
            serde_json::to_string(&reused)?,
        );
        annotations.insert(
            ANNOTATION_REUSED_DIFF_ID.to_owned(),
            serde_json::to_string(&reused_diff_ids)?,
        );
    }
    let delta_manifest = go_json(&GoManifest {
        schema_version: 2,
        artifact_type: ARTIFACT_TYPE.to_owned(),
        config: GoDescriptor {
            media_type: EMPTY_CONFIG_MEDIA_TYPE.to_owned(),
            digest: empty_digest,
            size: EMPTY_CONFIG.len() as u64,
            annotations: None,
        },
        layers,
        subject: GoDescriptor {
            media_type: target_manifest_media_type,
            digest: target_digest,
            size: manifest_json.len() as u64,
            annotations: None,
        },
        annotations,
    })?;
    let delta_digest = skiff_storage::digest::digest_of(&delta_manifest).to_string();
    blobs.push(Blob {
        digest: delta_digest.clone(),
        size: delta_manifest.len() as u64,
        data: BlobData::Bytes(delta_manifest.clone()),
    });
    if let ImageRef::Docker(name) = dest {
        push(
            name,
            dest_options,
            &blobs,
            &delta_manifest,
            new.as_ref(),
            &annotations_of(&delta_manifest)?,
        )
        .await?;
        summary.delta_digest = delta_digest;
        summary.seconds = started.elapsed().as_secs_f64();
        return Ok(summary);
    }
    let (path, name, archive) = match dest {
        ImageRef::OciArchive { path, reference } => (path, reference, true),
        ImageRef::Oci { path, reference } => (path, reference, false),
        other => bail!("delta destination {other}: use oci-archive:PATH, oci:PATH or docker://"),
    };
    let index_entry = GoDescriptor {
        media_type: MANIFEST_MEDIA_TYPE.to_owned(),
        digest: delta_digest.clone(),
        size: delta_manifest.len() as u64,
        annotations: name
            .as_ref()
            .map(|n| BTreeMap::from([(REF_NAME.to_owned(), n.clone())])),
    };
    let (path, new_layout) = (path.clone(), new.clone());
    tokio::task::spawn_blocking(move || {
        if archive {
            write_archive(&path, &blobs, index_entry, new_layout.as_ref())
        } else {
            write_directory(&path, &blobs, index_entry, new_layout.as_ref())
        }
    })
    .await??;
    summary.delta_digest = delta_digest;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

fn annotations_of(manifest: &[u8]) -> Result<serde_json::Value> {
    let value: serde_json::Value = serde_json::from_slice(manifest)?;
    Ok(value["annotations"].clone())
}

/// Pushes the delta's blobs, then its manifest (by digest, and by tag if the reference has
/// one), then lists it under the target's referrers tag unless the registry indexes subjects
/// itself.
async fn push(
    name: &DockerRef,
    options: &SourceOptions,
    blobs: &[Blob],
    manifest: &[u8],
    new: &dyn NewLayers,
    annotations: &serde_json::Value,
) -> Result<()> {
    let client = crate::source::registry::Client::new_for_push(name, options)?;
    let (manifest_blob, content) = blobs.split_last().context("no delta manifest")?;
    for blob in content {
        let mut data = Vec::with_capacity(blob.size as usize);
        open_data(blob, new)?.read_to_end(&mut data)?;
        client.push_blob(&blob.digest, data.into()).await?;
    }
    let digest = &manifest_blob.digest;
    let indexed = client
        .push_manifest(digest, manifest.to_vec(), MANIFEST_MEDIA_TYPE)
        .await?;
    if let Some(tag) = name.tag() {
        client
            .push_manifest(tag, manifest.to_vec(), MANIFEST_MEDIA_TYPE)
            .await?;
    }
    if indexed {
        return Ok(());
    }
    let subject = annotations[ANNOTATION_TARGET]
        .as_str()
        .context("the delta names no target")?;
    let tag = crate::source::registry::referrers_tag(subject);
    let mut entries: Vec<serde_json::Value> = match client.manifest(&tag).await? {
        Some((bytes, _)) => {
            let index: serde_json::Value =
                serde_json::from_slice(&bytes).context("the referrers tag is not an index")?;
            index["manifests"].as_array().cloned().unwrap_or_default()
        }
        None => Vec::new(),
    };
    entries.retain(|e| e["digest"] != digest.as_str());
    entries.push(serde_json::json!({
        "mediaType": MANIFEST_MEDIA_TYPE,
        "digest": digest,
        "size": manifest.len(),
        "artifactType": ARTIFACT_TYPE,
        "annotations": annotations,
    }));
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": entries,
    }))?;
    client.push_manifest(&tag, index, INDEX_MEDIA_TYPE).await?;
    Ok(())
}

/// How a layer of NEW goes into the delta.
enum LayerChoice {
    /// As this tar-diff.
    TarDiff(Blob),
    /// As NEW's own blob.
    Original,
    /// As this gzip of its tar (NEW keeps no blob).
    Recompressed(Blob),
}

/// The tar-diff of `layer` if it is smaller than the layer blob, else the blob.
fn diff_layer<H: FsVerityHashValue>(
    new: &dyn NewLayers,
    sources: &SourceSet<H>,
    layer: &Descriptor,
    diff_id: &str,
    method: BinaryDiff,
) -> Result<LayerChoice> {
    let tar = new.tar(layer, diff_id)?;
    let out = HashingWriter::new(tempfile::NamedTempFile::new()?);
    let (out, stats) = write_layer_diff(sources, tar, out, method)?;
    anyhow::ensure!(
        stats.diff_id == diff_id,
        "the layer's tar is {} but the config says {diff_id}",
        stats.diff_id
    );
    log::info!(
        "layer {}: {} files copied, {} diffed, tar-diff of {} bytes for a blob of {}",
        layer.digest(),
        stats.copied,
        stats.diffed,
        out.count,
        layer.size()
    );
    if out.count < layer.size() {
        let (file, digest, size) = out.finish()?;
        return Ok(LayerChoice::TarDiff(Blob {
            digest,
            size,
            data: BlobData::File(file),
        }));
    }
    if new.blob(layer)?.is_some() {
        return Ok(LayerChoice::Original);
    }
    let out = HashingWriter::new(tempfile::NamedTempFile::new()?);
    let mut gzip = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    std::io::copy(&mut new.tar(layer, diff_id)?, &mut gzip)?;
    let (file, digest, size) = gzip.finish()?.finish()?;
    Ok(LayerChoice::Recompressed(Blob {
        digest,
        size,
        data: BlobData::File(file),
    }))
}

/// Counts and hashes what is written through it.
struct HashingWriter<W> {
    inner: W,
    sha: openssl::sha::Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            sha: openssl::sha::Sha256::new(),
            count: 0,
        }
    }

    fn finish(mut self) -> Result<(W, String, u64)> {
        self.inner.flush()?;
        let digest = format!("sha256:{}", hex::encode(self.sha.finish()));
        Ok((self.inner, digest, self.count))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(data)?;
        self.sha.update(&data[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn open_data<'a>(blob: &'a Blob, new: &'a dyn NewLayers) -> Result<Box<dyn Read + 'a>> {
    Ok(match &blob.data {
        BlobData::Bytes(b) => Box::new(&b[..]),
        BlobData::File(f) => Box::new(f.reopen()?),
        BlobData::Layout(desc) => new.blob(desc)?.context("NEW has no layer blob")?,
    })
}

fn index_json(entries: Vec<GoDescriptor>) -> Result<Vec<u8>> {
    go_json(&GoIndex {
        schema_version: 2,
        media_type: INDEX_MEDIA_TYPE.to_owned(),
        manifests: entries,
    })
}

/// Makes a file written through a temporary file readable by all, as files written directly
/// are (temporary files are created 0600).
fn readable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    Ok(())
}

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Writes the delta as an oci-archive (a new file, replaced atomically).
fn write_archive(
    path: &Path,
    blobs: &[Blob],
    index_entry: GoDescriptor,
    new: &dyn NewLayers,
) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let tmp = tempfile::NamedTempFile::new_in(dir.unwrap_or(Path::new(".")))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(tmp));
    let mut add = |name: &str, size: u64, data: &mut dyn Read, dir: bool| -> Result<()> {
        let mut header = tar::Header::new_ustar();
        header.set_path(name)?;
        header.set_size(size);
        header.set_mode(if dir { 0o755 } else { 0o644 });
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_entry_type(if dir {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        header.set_cksum();
        tar.append(&header, data)?;
        Ok(())
    };
    add(
        "oci-layout",
        OCI_LAYOUT.len() as u64,
        &mut &OCI_LAYOUT[..],
        false,
    )?;
    add("blobs/", 0, &mut std::io::empty(), true)?;
    add("blobs/sha256/", 0, &mut std::io::empty(), true)?;
    for blob in blobs {
        let hex = blob.digest.trim_start_matches("sha256:");
        let mut data = open_data(blob, new)?;
        add(&format!("blobs/sha256/{hex}"), blob.size, &mut data, false)?;
    }
    let index = index_json(vec![index_entry])?;
    add("index.json", index.len() as u64, &mut &index[..], false)?;
    let tmp = tar
        .into_inner()?
        .into_inner()
        .map_err(|e| anyhow::anyhow!("writing {}: {}", path.display(), e.error()))?;
    readable(tmp.path())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("Writing {}", path.display()))?;
    Ok(())
}

/// Writes the delta into an OCI layout directory (created if needed; an entry of the same name
/// in its index is replaced).
fn write_directory(
    path: &Path,
    blobs: &[Blob],
    index_entry: GoDescriptor,
    new: &dyn NewLayers,
) -> Result<()> {
    let blob_dir: PathBuf = path.join("blobs/sha256");
    std::fs::create_dir_all(&blob_dir)
        .with_context(|| format!("Creating {}", blob_dir.display()))?;
    std::fs::write(path.join("oci-layout"), OCI_LAYOUT)?;
    for blob in blobs {
        let target = blob_dir.join(blob.digest.trim_start_matches("sha256:"));
        if target.exists() {
            continue;
        }
        let mut tmp = tempfile::NamedTempFile::new_in(&blob_dir)?;
        std::io::copy(&mut open_data(blob, new)?, &mut tmp)?;
        readable(tmp.path())?;
        tmp.persist(&target)?;
    }
    let mut entries: Vec<serde_json::Value> = match std::fs::read(path.join("index.json")) {
        Ok(bytes) => {
            let index: serde_json::Value =
                serde_json::from_slice(&bytes).context("the layout's index.json is not JSON")?;
            index["manifests"].as_array().cloned().unwrap_or_default()
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let name = index_entry
        .annotations
        .as_ref()
        .and_then(|a| a.get(REF_NAME))
        .cloned();
    entries.retain(|e| name.is_none() || e["annotations"][REF_NAME].as_str() != name.as_deref());
    entries.push(serde_json::to_value(&index_entry)?);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": entries,
    }))?;
    let mut tmp = tempfile::NamedTempFile::new_in(path)?;
    readable(tmp.path())?;
    tmp.write_all(&index)?;
    tmp.persist(path.join("index.json"))?;
    Ok(())
}
