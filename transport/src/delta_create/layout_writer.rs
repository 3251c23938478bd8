//! A delta written as an OCI layout (see [`crate::push::layout`]): an oci-archive, or a layout
//! directory whose `index.json` entry of the same name is replaced. The index is serialised as
//! Go oci-delta serialises it.

use std::path::Path;

use anyhow::Result;

use super::Blob;
use super::manifest::{GoDescriptor, index_json};
use super::new_image::NewLayers;
use crate::push::layout::{ArchiveWriter, LayoutDir};

pub(super) use crate::push::layout::REF_NAME;

/// Writes the delta as an oci-archive (a new file, replaced atomically).
pub(super) fn write_archive(
    path: &Path,
    blobs: &[Blob],
    index_entry: GoDescriptor,
    new: &dyn NewLayers,
) -> Result<()> {
    let mut archive = ArchiveWriter::create(path)?;
    for blob in blobs {
        archive.put_blob(&blob.digest, blob.size, &mut blob.open(new)?)?;
    }
    archive.finish(&index_json(vec![index_entry])?)
}

/// Writes the delta into an OCI layout directory (created if needed; an entry of the same name
/// in its index is replaced).
pub(super) fn write_directory(
    path: &Path,
    blobs: &[Blob],
    index_entry: GoDescriptor,
    new: &dyn NewLayers,
) -> Result<()> {
    let layout = LayoutDir::create(path)?;
    for blob in blobs {
        if !layout.has_blob(&blob.digest) {
            layout.put_blob(&blob.digest, &mut blob.open(new)?)?;
        }
    }
    layout.add_manifest(serde_json::to_value(&index_entry)?)
}
