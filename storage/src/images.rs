//! Queries over the images in the store: resolving names, listing, inspecting, untagging.

use anyhow::{Context, Result, bail};
use composefs::erofs::reader::ErofsReaderError;
use composefs::fsverity::FsVerityHashValue;
use composefs_oci::OciDigest;
use composefs_oci::oci_image::{self, OciImage, manifest_identifier};
use fn_error_context::context;
use serde::Serialize;

use crate::repository::Store;
use crate::tree_path::on_tree_stack;

/// How an image in the store is named: by tag, or by manifest digest (`@sha256:...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredRef {
    /// A tag (`streams/refs/oci/<name>`).
    Tag(String),
    /// A manifest digest.
    Digest(OciDigest),
}

impl std::fmt::Display for StoredRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tag(t) => write!(f, "{t}"),
            Self::Digest(d) => write!(f, "@{d}"),
        }
    }
}

/// The image a reference names does not exist in the store.
#[derive(Debug, thiserror::Error)]
#[error("image {0} not found in the repository")]
pub struct ImageNotFound(pub String);

/// One image of [`list_images`].
#[derive(Debug, Clone, Serialize)]
pub struct ImageSummary {
    /// Its tag.
    pub name: String,
    /// Its manifest digest.
    pub digest: String,
    /// Bytes of the blobs the manifest names (config and compressed layers), as registries count.
    pub size: u64,
    /// The config's `created`, if any.
    pub created: Option<String>,
    /// Layers the manifest names.
    pub layers: usize,
    /// Layers whose original blob the store keeps (see [`crate::kept_blobs`]).
    pub blobs_kept: usize,
}

/// Finds the manifest `reference` names.
#[context("Resolving {reference} in the repository")]
pub fn resolve<H: FsVerityHashValue>(
    store: &Store<H>,
    reference: &StoredRef,
) -> Result<(OciDigest, H)> {
    let repo = store.repo();
    match reference {
        StoredRef::Tag(name) => match oci_image::resolve_ref(repo, name) {
            Ok(found) => Ok(found),
            Err(e) if e.downcast_ref::<oci_image::OciRefNotFound>().is_some() => {
                Err(ImageNotFound(name.clone()).into())
            }
            Err(e) => Err(e),
        },
        StoredRef::Digest(digest) => match repo.has_stream(&manifest_identifier(digest))? {
            Some(verity) => Ok((digest.clone(), verity)),
            None => Err(ImageNotFound(format!("@{digest}")).into()),
        },
    }
}

/// Opens the image `reference` names, re-hashing its manifest and config.
#[context("Opening image {reference}")]
pub fn open_image<H: FsVerityHashValue>(
    store: &Store<H>,
    reference: &StoredRef,
) -> Result<OciImage<H>> {
    let (digest, _) = resolve(store, reference)?;
    OciImage::open(store.repo(), &digest, None)
}

/// A layer of a stored image: what the manifest's descriptor says, the config's DiffID for it,
/// and the layer's splitstream.
#[derive(Debug, Clone)]
pub struct ImageLayer<H> {
    /// The compressed digest.
    pub digest: OciDigest,
    /// The blob's size.
    pub size: u64,
    /// The descriptor's media type.
    pub media_type: String,
    /// The descriptor's annotations.
    pub annotations: std::collections::HashMap<String, String>,
    /// The DiffID the config pairs with it.
    pub diff_id: OciDigest,
    /// The verity of its `oci-layer-` splitstream.
    pub stream: H,
}

/// The layers of `image`, in manifest order, each paired with its DiffID and splitstream.
pub fn image_layers<H: FsVerityHashValue>(image: &OciImage<H>) -> Result<Vec<ImageLayer<H>>> {
    let descriptors = image.layer_descriptors();
    let diff_ids = image.layer_diff_ids();
    anyhow::ensure!(
        descriptors.len() == diff_ids.len(),
        "the manifest names {} layers and the config {} DiffIDs",
        descriptors.len(),
        diff_ids.len()
    );
    descriptors
        .iter()
        .zip(diff_ids)
        .map(|(descriptor, diff_id)| {
            let stream = image
                .layer_verity(diff_id)
                .with_context(|| format!("layer {diff_id} is not linked from the image"))?
                .clone();
            Ok(ImageLayer {
                digest: descriptor.digest().clone(),
                size: descriptor.size(),
                media_type: descriptor.media_type().to_string(),
                annotations: descriptor.annotations().clone().unwrap_or_default(),
                diff_id: diff_id.parse()?,
                stream,
            })
        })
        .collect()
}

/// Lists the tagged images, sorted by name.
#[context("Listing images")]
pub fn list_images<H: FsVerityHashValue>(store: &Store<H>) -> Result<Vec<ImageSummary>> {
    let mut out = Vec::new();
    for (name, digest) in oci_image::list_refs(store.repo())? {
        let image = OciImage::open(store.repo(), &digest, None)
            .with_context(|| format!("Opening image {name}"))?;
        let manifest = image.manifest();
        let size =
            manifest.config().size() + manifest.layers().iter().map(|l| l.size()).sum::<u64>();
        let layer_digests: Vec<OciDigest> = manifest
            .layers()
            .iter()
            .map(|l| l.digest().clone())
            .collect();
        out.push(ImageSummary {
            name,
            digest: digest.to_string(),
            size,
            created: image.created().map(str::to_owned),
            layers: layer_digests.len(),
            blobs_kept: crate::kept_blobs::kept_blobs(store, &layer_digests)?.len(),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The tags that name the image whose manifest digest is `digest`, sorted.
#[context("Listing the tags of {digest}")]
pub fn tags_of<H: FsVerityHashValue>(store: &Store<H>, digest: &OciDigest) -> Result<Vec<String>> {
    let mut tags: Vec<String> = oci_image::list_refs(store.repo())?
        .into_iter()
        .filter(|(_, d)| d == digest)
        .map(|(tag, _)| tag)
        .collect();
    tags.sort();
    Ok(tags)
}

/// The tag of a stored image whose config digest is `config`, if any (the first by name).
#[context("Looking for an image with config {config}")]
pub fn find_by_config<H: FsVerityHashValue>(
    store: &Store<H>,
    config: &OciDigest,
) -> Result<Option<String>> {
    let mut refs = oci_image::list_refs(store.repo())?;
    refs.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, digest) in refs {
        let image = OciImage::open(store.repo(), &digest, None)
            .with_context(|| format!("Opening image {name}"))?;
        if image.manifest().config().digest() == config {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

/// The raw manifest and config bytes of an image.
#[context("Reading manifest and config of {reference}")]
pub fn raw_manifest_and_config<H: FsVerityHashValue>(
    store: &Store<H>,
    reference: &StoredRef,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let image = open_image(store, reference)?;
    Ok((
        image.read_manifest_json(store.repo())?,
        image.read_config_json(store.repo())?,
    ))
}

/// Removes the tag `reference` names; for a digest, every tag that names that manifest.
/// The image's data goes at the next garbage collection. Returns the removed tags.
#[context("Removing {reference}")]
pub fn remove<H: FsVerityHashValue>(
    store: &Store<H>,
    reference: &StoredRef,
) -> Result<Vec<String>> {
    store.repo().ensure_writable()?;
    let (digest, _) = resolve(store, reference)?;
    let tags: Vec<String> = match reference {
        StoredRef::Tag(name) => vec![name.clone()],
        StoredRef::Digest(_) => oci_image::list_refs(store.repo())?
            .into_iter()
            .filter(|(_, d)| *d == digest)
            .map(|(name, _)| name)
            .collect(),
    };
    if tags.is_empty() {
        bail!("image @{digest} has no tag to remove");
    }
    for tag in &tags {
        oci_image::untag_image(store.repo(), tag)?;
    }
    Ok(tags)
}

/// Deepest tree composefs' EROFS reader reads back (its own limit, PATH_MAX / 2). Deeper images
/// are stored and mounted as any other, but their tree cannot be read for a partial pull or a
/// delta.
pub const MAX_READABLE_DEPTH: usize = 2048;

/// A stored image's tree is deeper than [`MAX_READABLE_DEPTH`].
#[derive(Debug, thiserror::Error)]
#[error(
    "its tree is more than {MAX_READABLE_DEPTH} directories deep, deeper than composefs' EROFS \
     reader reads"
)]
pub struct TreeTooDeep;

/// Links of a reader error's chain kept in a message.
const MAX_ERROR_LINKS: usize = 8;

/// composefs' EROFS reader adds a context for every directory it enters: an error deep in a
/// tree is thousands of them. A tree too deep is [`TreeTooDeep`]; any other long chain keeps
/// its cause and says how deep it was found.
fn reader_error(error: anyhow::Error) -> anyhow::Error {
    if let Some(ErofsReaderError::DepthExceeded) = error.downcast_ref::<ErofsReaderError>() {
        return TreeTooDeep.into();
    }
    let links = error.chain().count();
    if links <= MAX_ERROR_LINKS {
        return error;
    }
    anyhow::anyhow!(
        "{} (in a directory {} levels deep)",
        error.root_cause(),
        links - 1
    )
}

/// Where a regular file's content is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileContent<H: FsVerityHashValue> {
    /// In this object, of this size.
    Object(H, u64),
    /// In the image itself (small files).
    Inline(Vec<u8>),
}

/// The file tree of a stored image, for finding files by path (as an update of that image
/// would have them). Read from the image's EROFS; paths never follow symlinks and never leave
/// the root.
pub struct ImageTree<H: FsVerityHashValue> {
    fs: composefs::tree::FileSystem<H>,
}

impl<H: FsVerityHashValue> std::fmt::Debug for ImageTree<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageTree").finish_non_exhaustive()
    }
}

impl<H: FsVerityHashValue> ImageTree<H> {
    /// The tree of the image tagged `tag`, if there is one with an EROFS image.
    #[context("Reading the file tree of {tag}")]
    pub fn load(store: &Store<H>, tag: &str) -> Result<Option<Self>> {
        let repo = store.repo();
        let image = match OciImage::open_ref(repo, tag) {
            Ok(i) => i,
            Err(e) if e.downcast_ref::<oci_image::OciRefNotFound>().is_some() => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(erofs) = image.image_ref(repo.erofs_version()) else {
            return Ok(None);
        };
        let data = repo.read_object(erofs)?;
        // The reader recurses over the tree's levels.
        let fs = on_tree_stack(|| composefs::erofs::reader::erofs_to_filesystem(&data))?
            .map_err(reader_error)?;
        Ok(Some(Self { fs }))
    }

    /// The content of the regular file at `path` (components joined by `/`, no `.` or `..`):
    /// `None` when there is no such file, or when the path goes through a symlink (symlinks are
    /// never followed) or names something else than a regular file.
    pub fn regular_file(&self, path: &[u8]) -> Option<FileContent<H>> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::OsStr::from_bytes(path);
        let (dir, name) = self.fs.root.split(path).ok()?;
        match dir.get_file_opt(name, &self.fs.leaves).ok()?? {
            composefs::tree::RegularFile::External(id, size)
            | composefs::tree::RegularFile::ExternalNoVerity(id, size) => {
                Some(FileContent::Object(id.clone(), *size))
            }
            composefs::tree::RegularFile::Inline(data) => Some(FileContent::Inline(data.to_vec())),
            _ => None,
        }
    }

    /// Every regular file, in path order: `(path, mode, content, leaf)`, where `leaf` is the
    /// same number for the names of one hard-linked file.
    pub fn regular_files(&self) -> Vec<(Vec<u8>, u32, FileContent<H>, usize)> {
        use composefs::generic_tree::{Inode, LeafContent};
        use std::os::unix::ffi::OsStrExt;
        let mut out = Vec::new();
        let mut stack = vec![(Vec::new(), &self.fs.root)];
        while let Some((prefix, dir)) = stack.pop() {
            for (name, inode) in dir.sorted_entries() {
                let mut path = prefix.clone();
                if !path.is_empty() {
                    path.push(b'/');
                }
                path.extend_from_slice(name.as_bytes());
                match inode {
                    Inode::Directory(sub) => stack.push((path, sub)),
                    Inode::Leaf(id, _) => {
                        let leaf = &self.fs.leaves[id.0];
                        let content = match &leaf.content {
                            LeafContent::Regular(
                                composefs::tree::RegularFile::External(h, size)
                                | composefs::tree::RegularFile::ExternalNoVerity(h, size),
                            ) => FileContent::Object(h.clone(), *size),
                            LeafContent::Regular(composefs::tree::RegularFile::Inline(data)) => {
                                FileContent::Inline(data.to_vec())
                            }
                            _ => continue,
                        };
                        out.push((path, leaf.stat.st_mode, content, id.0));
                    }
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The object and size of the regular file at `path` (components joined by `/`), if it is
    /// stored as an object.
    pub fn find(&self, path: &[u8]) -> Option<(H, u64)> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::OsStr::from_bytes(path);
        let (dir, name) = self.fs.root.split(path).ok()?;
        match dir.get_file_opt(name, &self.fs.leaves).ok()?? {
            composefs::tree::RegularFile::External(id, size)
            | composefs::tree::RegularFile::ExternalNoVerity(id, size) => Some((id.clone(), *size)),
            _ => None,
        }
    }
}
