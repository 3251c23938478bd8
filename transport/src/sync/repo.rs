//! The kinds of repository a mirror reads and writes: a repository of a registry (through
//! [`Client`]) and an OCI layout directory (`oci:PATH`), behind one set of operations on exact
//! manifest bytes and verified blobs; and, as a source only, an image of composefs storage
//! whose layers' original blobs the store keeps (`composefs:PATH:NAME`), read through the
//! store's export with its digests preserved.
//!
//! A layout plays the registry's part as the image-layout spec allows: blobs in
//! `blobs/sha256/`, tags as `org.opencontainers.image.ref.name` entries of `index.json`, and
//! referrers in the referrers tag schema (an index tagged `sha256-HEX`), since a layout has no
//! referrers API.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use fn_error_context::context;
use skiff_storage::digest::HashingWriter;
use skiff_storage::images::StoredRef;
use skiff_storage::{HashAlgorithm, Sha256HashValue, Sha512HashValue, Store};

use super::tree::{Manifest, check_digest};
use crate::blob::{MAX_MANIFEST_SIZE, read_bounded};
use crate::push::export::{ExportOptions, Outgoing, prepare};
use crate::push::layout::{LayoutDir, REF_NAME};
use crate::source::registry::{Client, PushedManifest, referrers_tag};

/// A repository a mirror reads from or writes to.
#[derive(Debug, Clone)]
pub(crate) enum Repo {
    /// A repository of a registry.
    Registry(Arc<Client>),
    /// An OCI layout directory.
    Layout(Arc<Layout>),
    /// An image of composefs storage (a source only).
    Stored(Arc<Stored>),
}

/// An image of composefs storage, its blobs ready to be read: the stored manifest and config
/// and the kept layer blobs.
pub(crate) struct Stored {
    out: Outgoing,
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stored")
            .field("manifest", &self.out.manifest_digest)
            .finish_non_exhaustive()
    }
}

impl Stored {
    /// Opens `image` of the repository at `path`; fails when a layer's original blob is not
    /// kept (the image would go out under another digest).
    #[context("Opening {image} of {}", path.display())]
    pub(crate) fn open(path: &Path, image: &StoredRef) -> Result<Self> {
        let options = ExportOptions {
            compression: Default::default(),
            preserve_digests: true,
            jobs: 1,
        };
        let no_staging = || -> Result<PathBuf> {
            bail!("a layer's original blob is not kept (skiff copy --keep-blobs)")
        };
        let out = match skiff_storage::repository::repository_algorithm(path)? {
            HashAlgorithm::Sha256 => prepare(
                &Store::<Sha256HashValue>::open(path)?,
                image,
                &options,
                &no_staging,
            )?,
            HashAlgorithm::Sha512 => prepare(
                &Store::<Sha512HashValue>::open(path)?,
                image,
                &options,
                &no_staging,
            )?,
        };
        Ok(Self { out })
    }

    /// The image's manifest digest.
    pub(crate) fn digest(&self) -> String {
        self.out.manifest_digest.to_string()
    }

    fn manifest(&self, reference: &str) -> Option<Manifest> {
        (reference == self.out.manifest_digest.as_ref())
            .then(|| Manifest::new(self.out.manifest_json.clone(), &self.out.media_type))
    }

    fn blob(&self, digest: &str) -> Result<Option<Box<dyn Read + Send>>> {
        std::iter::once(&self.out.config)
            .chain(&self.out.layers)
            .find(|b| b.digest.as_ref() == digest)
            .map(|b| b.reader())
            .transpose()
    }
}

/// An OCI layout directory (which need not exist yet when it is a destination).
#[derive(Debug)]
pub(crate) struct Layout {
    path: PathBuf,
}

/// What a stored image refuses: it is read, never written or listed.
#[derive(Debug, thiserror::Error)]
#[error("composefs storage is a source of skiff sync, not a destination")]
pub(crate) struct SourceOnly;

const SOURCE_ONLY: SourceOnly = SourceOnly;

impl Repo {
    /// The layout at `path`.
    pub(crate) fn layout(path: &Path) -> Self {
        Self::Layout(Arc::new(Layout {
            path: path.to_owned(),
        }))
    }

    /// The manifest `reference` (a tag or a digest) names, exactly as stored; `None` when
    /// there is none. A digest reference is checked against the bytes.
    pub(crate) async fn manifest(&self, reference: &str) -> Result<Option<Manifest>> {
        match self {
            Self::Registry(client) => Ok(client
                .manifest(reference)
                .await?
                .map(|(bytes, media_type)| Manifest::new(bytes, &media_type))),
            Self::Layout(layout) => {
                let layout = layout.clone();
                let reference = reference.to_owned();
                tokio::task::spawn_blocking(move || layout.manifest(&reference)).await?
            }
            Self::Stored(stored) => Ok(stored.manifest(reference)),
        }
    }

    /// The digest of the manifest tagged `tag`, if any.
    pub(crate) async fn tag_digest(&self, tag: &str) -> Result<Option<String>> {
        match self {
            Self::Registry(client) => client.manifest_digest(tag).await,
            Self::Layout(layout) => Ok(layout.tagged(tag)?.map(|e| e.1)),
            Self::Stored(_) => Err(SOURCE_ONLY.into()),
        }
    }

    /// Whether the repository holds manifest `digest`.
    pub(crate) async fn has_manifest(&self, digest: &str) -> Result<bool> {
        match self {
            Self::Registry(client) => Ok(client.manifest_digest(digest).await?.is_some()),
            Self::Layout(layout) => Ok(layout.blob_path(digest)?.exists()),
            Self::Stored(_) => Err(SOURCE_ONLY.into()),
        }
    }

    /// Whether the repository holds blob `digest`.
    pub(crate) async fn has_blob(&self, digest: &str) -> Result<bool> {
        match self {
            Self::Registry(client) => client.has_blob(digest).await,
            Self::Layout(layout) => Ok(layout.blob_path(digest)?.exists()),
            Self::Stored(_) => Err(SOURCE_ONLY.into()),
        }
    }

    /// A blocking reader of blob `digest` (unchecked: the writer checks it); `None` when the
    /// repository lacks it. Read it on a blocking thread.
    pub(crate) async fn blob(&self, digest: &str) -> Result<Option<Box<dyn Read + Send>>> {
        match self {
            Self::Registry(client) => Ok(client
                .blob(digest)
                .await?
                .map(|s| Box::new(s.into_blocking()) as Box<dyn Read + Send>)),
            Self::Layout(layout) => match std::fs::File::open(layout.blob_path(digest)?) {
                Ok(file) => Ok(Some(Box::new(file))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e).with_context(|| format!("Opening blob {digest}")),
            },
            Self::Stored(stored) => stored.blob(digest),
        }
    }

    /// Stores blob `digest` of `size` bytes from `data`, checking both before it is
    /// committed.
    pub(crate) async fn put_blob(
        &self,
        digest: &str,
        size: u64,
        data: Box<dyn Read + Send>,
    ) -> Result<()> {
        match self {
            Self::Registry(client) => client.push_blob(digest, size, data).await,
            Self::Layout(layout) => {
                let (layout, digest) = (layout.clone(), digest.to_owned());
                tokio::task::spawn_blocking(move || layout.put_blob(&digest, size, data)).await?
            }
            Self::Stored(_) => Err(SOURCE_ONLY.into()),
        }
    }

    /// Stores `manifest` under `reference` (its digest, or a tag).
    pub(crate) async fn put_manifest(
        &self,
        reference: &str,
        manifest: &Manifest,
    ) -> Result<PushedManifest> {
        match self {
            Self::Registry(client) => {
                client
                    .push_manifest(reference, manifest.bytes.clone(), &manifest.media_type)
                    .await
            }
            Self::Layout(layout) => {
                let (layout, reference, manifest) =
                    (layout.clone(), reference.to_owned(), manifest.clone());
                tokio::task::spawn_blocking(move || layout.put_manifest(&reference, &manifest))
                    .await?
            }
            Self::Stored(_) => Err(SOURCE_ONLY.into()),
        }
    }

    /// The referrers of `digest` from the referrers API, `None` without one.
    pub(crate) async fn referrers_listed(
        &self,
        digest: &str,
    ) -> Result<Option<Vec<serde_json::Value>>> {
        match self {
            Self::Registry(client) => client.referrers_listed(digest).await,
            Self::Layout(_) | Self::Stored(_) => Ok(None),
        }
    }

    /// The index under the referrers tag of `digest` (`sha256-HEX`), if any.
    pub(crate) async fn referrers_tag_index(&self, digest: &str) -> Result<Option<Manifest>> {
        self.manifest(&referrers_tag(digest)).await
    }

    /// Every tag, in the repository's order.
    pub(crate) async fn tags(&self) -> Result<Vec<String>> {
        match self {
            Self::Registry(client) => client.tags().await,
            Self::Layout(layout) => layout.tags(),
            Self::Stored(_) => Err(SOURCE_ONLY.into()),
        }
    }

    /// Requests sent (registries; 0 for a layout).
    pub(crate) fn requests(&self) -> u64 {
        match self {
            Self::Registry(client) => client.requests(),
            Self::Layout(_) | Self::Stored(_) => 0,
        }
    }
}

impl Layout {
    /// Where blob `digest` is (only sha256 blobs: the layouts skiff writes and reads).
    fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        check_digest(digest)?;
        let Some(hex) = digest.strip_prefix("sha256:") else {
            bail!("{digest}: OCI layouts are read and written with sha256 digests only");
        };
        Ok(self.path.join("blobs/sha256").join(hex))
    }

    /// The entries of `index.json`; none when the layout does not exist yet.
    #[context("Reading {}/index.json", self.path.display())]
    fn entries(&self) -> Result<Vec<serde_json::Value>> {
        let file = match std::fs::File::open(self.path.join("index.json")) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let bytes = read_bounded(file, MAX_MANIFEST_SIZE)?;
        let index: serde_json::Value = serde_json::from_slice(&bytes).context("not JSON")?;
        Ok(index["manifests"].as_array().cloned().unwrap_or_default())
    }

    /// The entry tagged `tag` and its digest.
    fn tagged(&self, tag: &str) -> Result<Option<(serde_json::Value, String)>> {
        for entry in self.entries()? {
            if entry["annotations"][REF_NAME].as_str() == Some(tag) {
                let digest = entry["digest"]
                    .as_str()
                    .context("an index.json entry without a digest")?
                    .to_owned();
                return Ok(Some((entry, digest)));
            }
        }
        Ok(None)
    }

    fn tags(&self) -> Result<Vec<String>> {
        Ok(self
            .entries()?
            .iter()
            .filter_map(|e| e["annotations"][REF_NAME].as_str().map(str::to_owned))
            .collect())
    }

    #[context("Reading manifest {reference} of {}", self.path.display())]
    fn manifest(&self, reference: &str) -> Result<Option<Manifest>> {
        let (digest, media_type) = if reference.contains(':') {
            (reference.to_owned(), String::new())
        } else {
            match self.tagged(reference)? {
                Some((entry, digest)) => {
                    let media_type = entry["mediaType"].as_str().unwrap_or_default().to_owned();
                    (digest, media_type)
                }
                None => return Ok(None),
            }
        };
        let file = match std::fs::File::open(self.blob_path(&digest)?) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let manifest = Manifest::new(read_bounded(file, MAX_MANIFEST_SIZE)?, &media_type);
        anyhow::ensure!(
            manifest.digest == digest,
            "blob {digest} of the layout holds {}",
            manifest.digest
        );
        Ok(Some(manifest))
    }

    #[context("Writing blob {digest} to {}", self.path.display())]
    fn put_blob(&self, digest: &str, size: u64, data: Box<dyn Read + Send>) -> Result<()> {
        let target = self.blob_path(digest)?;
        if target.exists() {
            return Ok(());
        }
        let dir = LayoutDir::create(&self.path)?;
        let tmp = tempfile::NamedTempFile::new_in(dir.blob_dir())?;
        // One byte more than the blob is read, so that a longer source is seen.
        let mut writer = HashingWriter::new(tmp);
        std::io::copy(&mut data.take(size + 1), &mut writer)?;
        let (tmp, actual, written) = writer.finish()?;
        let actual = actual.to_string();
        anyhow::ensure!(
            written == size && actual == digest,
            "the blob read is {actual} of {written} bytes, not {digest} of {size}"
        );
        dir.put_staged(digest, tmp)
    }

    #[context("Writing manifest {reference} to {}", self.path.display())]
    fn put_manifest(&self, reference: &str, manifest: &Manifest) -> Result<PushedManifest> {
        let dir = LayoutDir::create(&self.path)?;
        dir.put_blob(&manifest.digest, &mut &manifest.bytes[..])?;
        if !reference.contains(':') {
            dir.add_manifest(serde_json::json!({
                "mediaType": manifest.media_type,
                "digest": manifest.digest,
                "size": manifest.bytes.len(),
                "annotations": { REF_NAME: reference },
            }))?;
        }
        Ok(PushedManifest {
            digest: Some(manifest.digest.clone()),
            indexes_subject: false,
        })
    }
}
