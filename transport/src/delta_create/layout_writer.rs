//! A delta written as an OCI layout: an oci-archive (a new file, replaced atomically) or a
//! layout directory (created if needed, its `index.json` entry of the same name replaced).
//! An oci-archive's members have no `./` prefix (Go oci-delta looks them up by exact name):
//! `oci-layout`, `blobs/`, `blobs/sha256/`, the delta's blobs in order, `index.json`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::Blob;
use super::manifest::{GoDescriptor, INDEX_MEDIA_TYPE, index_json};
use super::new_image::NewLayers;

/// `org.opencontainers.image.ref.name`: the name of a manifest in a layout's index.
pub(super) const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Makes a file written through a temporary file readable by all, as files written directly
/// are (temporary files are created 0600).
fn readable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    Ok(())
}

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Writes the delta as an oci-archive (a new file, replaced atomically).
pub(super) fn write_archive(
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
        let mut data = blob.open(new)?;
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
pub(super) fn write_directory(
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
        std::io::copy(&mut blob.open(new)?, &mut tmp)?;
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
