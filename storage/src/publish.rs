//! Publishing an image whose layers are stored: its merged tree as EROFS, its config and
//! manifest splitstreams (exact JSON bytes), then its tag, in that order.
//!
//! This is what composefs-oci's `finalize_oci_image` does, with these differences: an image
//! without `/usr` gets a fixed root directory (0755, owner 0:0, mtime 0, no xattrs) instead of
//! an error (its `/run`, if any, is emptied as usual); tar entry names are cleaned and confined
//! to the root (see [`crate::tree_path`]); and the layers are read as Go reads them, missing
//! parents and sparse files included (see [`crate::layer_tree`]). The logical files of sparse
//! files are named in the manifest splitstream (`skiff-sparse-file-N`), which keeps them from
//! garbage collection as long as the image; so are the layers' kept blobs (`skiff-blob-DIGEST`,
//! see [`crate::kept_blobs`]), whenever the store holds them. For every image that cfsctl accepts and reads as Go
//! does, the EROFS is bit-for-bit cfsctl's.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::Arc;

use anyhow::{Context, Result};
use composefs::erofs::format::FormatVersion;
use composefs::fsverity::FsVerityHashValue;
use composefs::generic_tree::is_allowed_container_xattr;
use composefs::repository::Repository;
use composefs::tree::{FileSystem, Stat};
use composefs_oci::OciDigest;
use composefs_oci::oci_image::{OciImage, manifest_identifier, tag_image};
use fn_error_context::context;

use crate::digest::digest_of;
use crate::kept_blobs::{KEPT_BLOB_REF_PREFIX, kept_blob_ref, kept_blobs};
use crate::layer_tree::{apply_layer, implicit_dir_stat};
use crate::repository::Store;

/// Splitstream content type of OCI manifests (composefs-oci's).
const MANIFEST_CONTENT_TYPE: u64 = u64::from_le_bytes(*b"ocimanif");

/// Prefix of the manifest splitstream's named references to the logical files of sparse files.
pub const SPARSE_FILE_REF_PREFIX: &str = "skiff-sparse-file-";

/// What [`publish_image`] stored.
#[derive(Debug, Clone)]
pub struct PublishedImage<H> {
    /// sha256 of the manifest bytes.
    pub manifest_digest: OciDigest,
    /// sha256 of the config bytes.
    pub config_digest: OciDigest,
    /// The EROFS image of the merged tree (the repository's default format).
    pub erofs: H,
}

/// Stores config and manifest for layers already in the store, builds the EROFS image and
/// points `tag` at the manifest. Idempotent. The tag moves last, so an image it named before
/// stays whole until the new one is complete.
#[context("Publishing image {}", digest_of(manifest_json))]
pub fn publish_image<H: FsVerityHashValue>(
    store: &Store<H>,
    manifest_json: &[u8],
    config_json: &[u8],
    layers: &[(OciDigest, H)],
    tag: Option<&str>,
) -> Result<PublishedImage<H>> {
    let repo = store.repo();
    let manifest_digest = digest_of(manifest_json);
    let config_digest = digest_of(config_json);

    let kept_blobs: Vec<(String, H)> = kept_blobs(store, &layer_digests(manifest_json))?
        .into_iter()
        .map(|(digest, verity)| (kept_blob_ref(&digest), verity))
        .collect();

    let erofs = match existing_erofs(repo, &manifest_digest)? {
        Some((erofs, manifest_refs)) => {
            // An image stored before its blobs were kept gains the references to them.
            if kept_blobs
                .iter()
                .any(|(name, _)| !manifest_refs.contains_key(name.as_str()))
            {
                let mut refs: Vec<(String, H)> = manifest_refs
                    .into_iter()
                    .map(|(name, verity)| (name.into(), verity))
                    .collect();
                refs.retain(|(name, _)| !name.starts_with(KEPT_BLOB_REF_PREFIX));
                refs.extend(kept_blobs);
                write_manifest_stream(repo, manifest_json, &manifest_digest, &refs)?;
            }
            erofs
        }
        None => {
            let (fs, sparse_files) = build_filesystem(repo, layers)?;
            let mut images = fs.commit_images(repo, None)?;
            let v1 = images.remove(&FormatVersion::V1);
            let v2 = images.remove(&FormatVersion::V2);
            let config_refs: HashMap<Box<str>, H> = layers
                .iter()
                .map(|(d, v)| (Box::from(d.as_ref()), v.clone()))
                .collect();
            let (_, config_verity) = composefs_oci::write_config_raw(
                repo,
                config_json,
                config_refs,
                v2.as_ref(),
                v1.as_ref(),
                &HashMap::new(),
            )?;
            let mut refs = vec![(format!("config:{config_digest}"), config_verity)];
            refs.extend(layers.iter().map(|(d, v)| (d.to_string(), v.clone())));
            refs.extend(
                sparse_files
                    .iter()
                    .enumerate()
                    .map(|(i, object)| (format!("{SPARSE_FILE_REF_PREFIX}{i}"), object.clone())),
            );
            refs.extend(kept_blobs);
            write_manifest_stream(repo, manifest_json, &manifest_digest, &refs)?;
            existing_erofs(repo, &manifest_digest)?
                .context(
                    "composefs-oci does not read the manifest just stored as an image (no EROFS \
                     image linked from it: is its config an OCI image config?)",
                )?
                .0
        }
    };
    if let Some(tag) = tag {
        tag_image(repo, &manifest_digest, tag)?;
    }
    Ok(PublishedImage {
        manifest_digest,
        config_digest,
        erofs,
    })
}

/// A splitstream's named references: name → verity of the stream named.
type NamedRefs<H> = HashMap<Box<str>, H>;

/// Stores the manifest splitstream: the exact JSON bytes and the named references that keep
/// what the image needs (config, layers, sparse files' objects, kept blobs) alive.
/// `write_stream` syncs the repository before the name appears.
fn write_manifest_stream<H: FsVerityHashValue>(
    repo: &Arc<Repository<H>>,
    manifest_json: &[u8],
    manifest_digest: &OciDigest,
    refs: &[(String, H)],
) -> Result<()> {
    let mut writer = repo.create_stream(MANIFEST_CONTENT_TYPE)?;
    for (name, verity) in refs {
        writer.add_named_stream_ref(name, verity);
    }
    writer.write_external(manifest_json)?;
    repo.write_stream(writer, &manifest_identifier(manifest_digest), None)?;
    Ok(())
}

/// The EROFS image of a stored manifest and the manifest splitstream's named references, if
/// both exist.
fn existing_erofs<H: FsVerityHashValue>(
    repo: &Repository<H>,
    manifest: &OciDigest,
) -> Result<Option<(H, NamedRefs<H>)>> {
    let Some(verity) = repo.has_stream(&manifest_identifier(manifest))? else {
        return Ok(None);
    };
    let image = OciImage::open(repo, manifest, Some(&verity))?;
    let Some(erofs) = image.image_ref(repo.erofs_version()).cloned() else {
        return Ok(None);
    };
    let refs = repo
        .open_stream("", Some(&verity), Some(MANIFEST_CONTENT_TYPE))?
        .into_named_refs();
    Ok(Some((erofs, refs)))
}

/// The layer digests a manifest names (none when it does not parse: composefs-oci refuses such
/// a manifest anyway).
fn layer_digests(manifest_json: &[u8]) -> Vec<OciDigest> {
    #[derive(serde::Deserialize)]
    struct Layers {
        #[serde(default)]
        layers: Vec<Layer>,
    }
    #[derive(serde::Deserialize)]
    struct Layer {
        digest: String,
    }
    serde_json::from_slice::<Layers>(manifest_json)
        .map(|m| {
            m.layers
                .iter()
                .filter_map(|l| l.digest.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Merges the layers (applying whiteouts) into the image's tree, transformed as composefs-oci
/// transforms OCI images. Also returns the objects written for sparse files, which the tree
/// references.
#[context("Building the image's file tree")]
pub fn build_filesystem<H: FsVerityHashValue>(
    repo: &Repository<H>,
    layers: &[(OciDigest, H)],
) -> Result<(FileSystem<H>, Vec<H>)> {
    let mut fs = FileSystem::new(Stat::uninitialized());
    let mut sparse_files = Vec::new();
    for (diff_id, verity) in layers {
        sparse_files.extend(apply_layer(repo, &mut fs, diff_id, verity)?);
    }
    if fs.root.get_directory(OsStr::new("usr")).is_ok() {
        fs.transform_for_oci(&Default::default())?;
    } else {
        // As transform_for_oci, with the fixed root in place of /usr's metadata: /run is
        // emptied and takes the root's mtime.
        fs.set_root_stat(implicit_dir_stat());
        if let Ok(run) = fs.root.get_directory_mut(OsStr::new("run")) {
            run.stat.st_mtim_sec = 0;
            run.stat.st_mtim_nsec = 0;
            run.clear();
        }
        fs.filter_xattrs(is_allowed_container_xattr);
        fs.compact();
    }
    Ok((fs, sparse_files))
}
