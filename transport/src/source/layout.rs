//! `oci:` and `oci-archive:` read directly with the `ocidir` crate, without skopeo.
//!
//! The image is chosen as skopeo chooses it: by the `org.opencontainers.image.ref.name`
//! annotation when a reference is given (or by `@sha256:` digest), else the only manifest of
//! the index; an index of platforms is narrowed to one by [`crate::platform`]. Every blob is
//! checked against its descriptor's size and digest (ocidir checks only the size).
//!
//! A compressed `oci-archive:` is left to skopeo ([`LayoutSource::open`] returns `None`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use containers_image_proxy::oci_spec::image::{Descriptor, ImageIndex, MediaType};
use fn_error_context::context;
use ocidir::cap_std::{ambient_authority, fs::Dir};
use ocidir::{OciArchive, OciDir, OciRead};

use super::BlobStream;
use super::{Resolved, ResolvedImage, parse_config, parse_manifest};
use crate::blob::{MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE, check_small, read_bounded, verify_blob};
use crate::options::{SourceNotFound, SourceOptions};
use crate::platform::WantedPlatform;
use crate::reference::ImageRef;

/// The tag annotation of OCI layouts.
const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

enum Layout {
    Dir(OciDir),
    /// The archive and its path (read again for `index.json`, which ocidir reads unbounded).
    Archive(OciArchive, PathBuf),
}

/// The name of a layout's index.
const INDEX_FILE: &str = "index.json";

/// An OCI layout opened for reading.
pub struct LayoutSource {
    layout: Arc<Layout>,
    reference: Option<String>,
    name: String,
    platform: WantedPlatform,
}

impl std::fmt::Debug for LayoutSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayoutSource")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A blob reader of either layout kind.
trait BlobRead: Read + std::io::Seek + Send {}
impl<T: Read + std::io::Seek + Send> BlobRead for T {}

impl Layout {
    fn read_blob(&self, desc: &Descriptor) -> Result<Box<dyn BlobRead>> {
        Ok(match self {
            Self::Dir(d) => Box::new(d.read_blob(desc)?),
            Self::Archive(a, _) => Box::new(a.read_blob(desc)?),
        })
    }

    /// Reads and parses `index.json`, bounded as manifests are ([`MAX_MANIFEST_SIZE`]).
    #[context("Reading the layout's {INDEX_FILE}")]
    fn read_index(&self) -> Result<ImageIndex> {
        let bytes = match self {
            Self::Dir(d) => {
                let file = d.dir().open(INDEX_FILE).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        anyhow::anyhow!("the layout has no {INDEX_FILE}")
                    } else {
                        e.into()
                    }
                })?;
                read_bounded(file.into_std(), MAX_MANIFEST_SIZE)?
            }
            Self::Archive(_, path) => {
                let mut archive = tar::Archive::new(std::fs::File::open(path)?);
                let mut found = None;
                for entry in archive.entries_with_seek()? {
                    let entry = entry?;
                    let name: PathBuf = entry
                        .path()?
                        .components()
                        .filter(|c| *c != std::path::Component::CurDir)
                        .collect();
                    if name == Path::new(INDEX_FILE) {
                        found = Some(read_bounded(entry, MAX_MANIFEST_SIZE)?);
                        break;
                    }
                }
                found.with_context(|| format!("the archive has no {INDEX_FILE}"))?
            }
        };
        serde_json::from_slice(&bytes).with_context(|| format!("Parsing {INDEX_FILE}"))
    }

    /// Reads a small blob whole, verified.
    fn read_verified(&self, desc: &Descriptor, max: u64) -> Result<Vec<u8>> {
        check_small(desc, max)?;
        let mut data = Vec::with_capacity(desc.size() as usize);
        self.read_blob(desc)
            .with_context(|| format!("Opening blob {}", desc.digest()))?
            .take(max + 1)
            .read_to_end(&mut data)?;
        verify_blob(&data, desc)
            .with_context(|| format!("Blob {} of the layout is corrupt", desc.digest()))?;
        Ok(data)
    }
}

fn is_compressed_file(path: &Path) -> Result<bool> {
    let mut magic = [0u8; 4];
    let mut f = std::fs::File::open(path)?;
    let n = f.read(&mut magic)?;
    Ok(n >= 2 && magic[..2] == [0x1f, 0x8b] || n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd])
}

impl LayoutSource {
    /// The reference the layout was opened by.
    pub fn reference(&self) -> &str {
        &self.name
    }

    /// Opens an `oci:` or `oci-archive:` reference; `None` for a compressed archive, which
    /// skopeo reads instead.
    #[context("Opening {reference}")]
    pub fn open(reference: &ImageRef, options: &SourceOptions) -> Result<Option<Self>> {
        let (layout, tag) = match reference {
            ImageRef::Oci { path, reference } => {
                let dir = Dir::open_ambient_dir(path, ambient_authority()).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        anyhow::Error::new(SourceNotFound(reference_string(path, reference, "oci")))
                    } else {
                        anyhow::Error::new(e).context(format!("Opening {}", path.display()))
                    }
                })?;
                (
                    Layout::Dir(
                        OciDir::open(dir)
                            .with_context(|| format!("{} is not an OCI layout", path.display()))?,
                    ),
                    reference,
                )
            }
            ImageRef::OciArchive { path, reference } => {
                if !path.exists() {
                    return Err(
                        SourceNotFound(reference_string(path, reference, "oci-archive")).into(),
                    );
                }
                if is_compressed_file(path)? {
                    return Ok(None);
                }
                (
                    Layout::Archive(
                        OciArchive::open(path)
                            .with_context(|| format!("{} is not an OCI archive", path.display()))?,
                        path.clone(),
                    ),
                    reference,
                )
            }
            other => bail!("{other} is not an OCI layout reference"),
        };
        Ok(Some(Self {
            layout: Arc::new(layout),
            reference: tag.clone(),
            name: reference.to_string(),
            platform: WantedPlatform::new(
                options.os.as_deref(),
                options.arch.as_deref(),
                options.variant.as_deref(),
            ),
        }))
    }

    /// Picks the image's manifest from the index and reads it and its config, verified.
    #[context("Reading manifest and config of {}", self.name)]
    pub async fn resolve(&self) -> Result<Resolved> {
        let layout = self.layout.clone();
        let reference = self.reference.clone();
        let name = self.name.clone();
        let platform = self.platform.clone();
        tokio::task::spawn_blocking(move || {
            let index = layout.read_index()?;
            let mut desc = pick_descriptor(&index, reference.as_deref(), &name)?;
            if is_index(desc.media_type()) {
                let nested: ImageIndex =
                    serde_json::from_slice(&layout.read_verified(&desc, MAX_MANIFEST_SIZE)?)
                        .context("Parsing the image index")?;
                desc = platform.choose(&nested).cloned().ok_or_else(|| {
                    anyhow::anyhow!("{name}: no image for platform {platform} in the index")
                })?;
            }
            let manifest_json = layout.read_verified(&desc, MAX_MANIFEST_SIZE)?;
            if crate::format::oci_delta::is_delta(&manifest_json) {
                return Ok(Resolved::Delta(manifest_json));
            }
            let manifest = parse_manifest(&manifest_json, &name)?;
            let config_json = layout
                .read_verified(manifest.config(), MAX_CONFIG_SIZE)
                .context("Reading the config")?;
            let config = parse_config(&config_json, &manifest)?;
            Ok(Resolved::Image(Box::new(ResolvedImage {
                manifest_json,
                manifest,
                config_json,
                config,
            })))
        })
        .await?
    }

    /// Reads a small blob (a manifest or config carried by a delta) whole, verified.
    pub(super) async fn read_small_blob(&self, desc: &Descriptor, max: u64) -> Result<Vec<u8>> {
        let (layout, desc) = (self.layout.clone(), desc.clone());
        tokio::task::spawn_blocking(move || layout.read_verified(&desc, max)).await?
    }

    /// Streams a blob from a blocking thread (see [`super::Source::open_blob`]).
    pub(super) fn open_blob(&self, desc: &Descriptor) -> Result<BlobStream> {
        let reader = self.blob_reader(desc)?;
        let (tx, stream) = crate::io::channel();
        tokio::task::spawn_blocking(move || crate::io::pump_blocking(reader, &tx));
        Ok(BlobStream::new(stream))
    }

    /// Opens a blob for blocking reads from its start (not verified here).
    pub fn blob_reader(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send>> {
        skiff_storage::digest::require_sha256(desc.digest())?;
        Ok(Box::new(self.layout.read_blob(desc).with_context(
            || format!("Opening blob {}", desc.digest()),
        )?))
    }
}

/// Reads byte ranges of one blob of a layout: zstd:chunked metadata and file frames.
pub struct BlobRanges {
    reader: Box<dyn BlobRead>,
    size: u64,
}

impl std::fmt::Debug for BlobRanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobRanges")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl BlobRanges {
    /// The bytes `range` of the blob (blocking).
    pub fn read(&mut self, range: std::ops::Range<u64>) -> Result<Vec<u8>> {
        use std::io::{Seek, SeekFrom};
        anyhow::ensure!(
            range.start <= range.end && range.end <= self.size,
            "range {range:?} outside the {}-byte blob",
            self.size
        );
        self.reader.seek(SeekFrom::Start(range.start))?;
        let mut out = vec![0u8; (range.end - range.start) as usize];
        self.reader.read_exact(&mut out)?;
        Ok(out)
    }
}

impl LayoutSource {
    /// Opens a blob for range reads; its size is the descriptor's (ocidir checks it).
    pub fn blob_ranges(&self, desc: &Descriptor) -> Result<BlobRanges> {
        let reader = self
            .layout
            .read_blob(desc)
            .with_context(|| format!("Opening blob {}", desc.digest()))?;
        Ok(BlobRanges {
            reader,
            size: desc.size(),
        })
    }
}

fn reference_string(path: &Path, reference: &Option<String>, transport: &str) -> String {
    ImageRef::Oci {
        path: path.to_owned(),
        reference: reference.clone(),
    }
    .to_string()
    .replacen("oci", transport, 1)
}

fn is_index(media_type: &MediaType) -> bool {
    matches!(media_type, MediaType::ImageIndex)
        || media_type.to_string() == "application/vnd.docker.distribution.manifest.list.v2+json"
}

/// The index entry `reference` names.
fn pick_descriptor(index: &ImageIndex, reference: Option<&str>, name: &str) -> Result<Descriptor> {
    let manifests = index.manifests();
    match reference {
        Some(r) if r.starts_with("@sha256:") || r.starts_with("sha256:") => {
            let digest = r.trim_start_matches('@');
            manifests
                .iter()
                .find(|d| d.digest().to_string() == digest)
                .cloned()
                .ok_or_else(|| SourceNotFound(name.to_owned()).into())
        }
        Some(tag) => manifests
            .iter()
            .find(|d| {
                d.annotations()
                    .as_ref()
                    .and_then(|a| a.get(REF_NAME_ANNOTATION))
                    .is_some_and(|t| t == tag)
            })
            .cloned()
            .ok_or_else(|| SourceNotFound(name.to_owned()).into()),
        None => match manifests.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(SourceNotFound(name.to_owned()).into()),
            _ => bail!(
                "{name}: the layout holds {} images; name one as oci:PATH:TAG",
                manifests.len()
            ),
        },
    }
}
