//! Writing OCI image layouts: a layout directory (`oci:`) or an oci-archive (a tar of one).
//!
//! A layout (image-spec `image-layout.md`) is `oci-layout` (`{"imageLayoutVersion":"1.0.0"}`),
//! `blobs/sha256/HEX` for every blob and `index.json`, an image index whose entries name the
//! manifests, a tag in the annotation `org.opencontainers.image.ref.name`.
//!
//! - A directory is created if needed; each blob is written to a temporary file in
//!   `blobs/sha256/` and renamed into place once whole, so a failed copy leaves no partial
//!   blob under a digest name; `index.json` is replaced atomically, an entry of the same tag
//!   replaced (as skopeo does).
//! - An archive is written to a temporary file beside it and renamed over it at the end. Its
//!   members have no `./` prefix (Go oci-delta looks them up by exact name): `oci-layout`,
//!   `blobs/`, `blobs/sha256/`, the blobs in order, `index.json`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use fn_error_context::context;

use crate::format::media::INDEX_MEDIA_TYPE;

/// `org.opencontainers.image.ref.name`: the tag of a manifest in a layout's index.
pub(crate) const REF_NAME: &str = "org.opencontainers.image.ref.name";

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Largest `index.json` of an existing layout that is read to be updated (as the layout
/// source bounds it).
const MAX_INDEX_SIZE: u64 = crate::blob::MAX_MANIFEST_SIZE;

/// Makes a file written through a temporary file readable by all, as files written directly
/// are (temporary files are created 0600).
fn readable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// Puts the temporary file `tmp` at `target`, readable by all.
#[context("Writing {}", target.display())]
pub(crate) fn put_readable(tmp: tempfile::NamedTempFile, target: &Path) -> Result<()> {
    readable(tmp.path())?;
    tmp.persist(target)?;
    Ok(())
}

fn blob_name(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// An OCI layout directory being written.
#[derive(Debug)]
pub(crate) struct LayoutDir {
    path: PathBuf,
    blob_dir: PathBuf,
}

impl LayoutDir {
    /// Opens the layout at `path`, creating it if needed.
    #[context("Creating the OCI layout {}", path.display())]
    pub(crate) fn create(path: &Path) -> Result<Self> {
        let blob_dir = path.join("blobs/sha256");
        std::fs::create_dir_all(&blob_dir)?;
        std::fs::write(path.join("oci-layout"), OCI_LAYOUT)?;
        Ok(Self {
            path: path.to_owned(),
            blob_dir,
        })
    }

    /// Where blobs go: a temporary file made here can become a blob by a rename.
    pub(crate) fn blob_dir(&self) -> &Path {
        &self.blob_dir
    }

    /// True when the layout has the blob `digest`.
    pub(crate) fn has_blob(&self, digest: &str) -> bool {
        self.blob_dir.join(blob_name(digest)).exists()
    }

    /// Writes the blob `digest` from `data`, unless the layout has it.
    #[context("Writing blob {digest}")]
    pub(crate) fn put_blob(&self, digest: &str, data: &mut dyn Read) -> Result<()> {
        if self.has_blob(digest) {
            return Ok(());
        }
        let mut tmp = tempfile::NamedTempFile::new_in(&self.blob_dir)?;
        std::io::copy(data, &mut tmp)?;
        self.put_staged(digest, tmp)
    }

    /// Makes the temporary file `staged` (on the layout's filesystem) the blob `digest`.
    #[context("Writing blob {digest}")]
    pub(crate) fn put_staged(&self, digest: &str, staged: tempfile::NamedTempFile) -> Result<()> {
        put_readable(staged, &self.blob_dir.join(blob_name(digest)))
    }

    /// Adds `entry` (a descriptor) to `index.json`, replacing an entry of the same tag.
    #[context("Updating {}/index.json", self.path.display())]
    pub(crate) fn add_manifest(&self, entry: serde_json::Value) -> Result<()> {
        let index_path = self.path.join("index.json");
        let mut entries: Vec<serde_json::Value> = match std::fs::File::open(&index_path) {
            Ok(file) => {
                let mut bytes = Vec::new();
                file.take(MAX_INDEX_SIZE + 1).read_to_end(&mut bytes)?;
                anyhow::ensure!(
                    bytes.len() as u64 <= MAX_INDEX_SIZE,
                    "the layout's index.json is larger than {MAX_INDEX_SIZE} bytes"
                );
                let index: serde_json::Value = serde_json::from_slice(&bytes)
                    .context("the layout's index.json is not JSON")?;
                index["manifests"].as_array().cloned().unwrap_or_default()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let name = entry["annotations"][REF_NAME].as_str().map(str::to_owned);
        entries
            .retain(|e| name.is_none() || e["annotations"][REF_NAME].as_str() != name.as_deref());
        entries.push(entry);
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": INDEX_MEDIA_TYPE,
            "manifests": entries,
        }))?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.path)?;
        readable(tmp.path())?;
        tmp.write_all(&index)?;
        tmp.persist(index_path)?;
        Ok(())
    }
}

/// An oci-archive being written; nothing appears at its path before [`ArchiveWriter::finish`].
pub(crate) struct ArchiveWriter {
    path: PathBuf,
    tar: tar::Builder<std::io::BufWriter<tempfile::NamedTempFile>>,
    written: std::collections::HashSet<String>,
}

impl ArchiveWriter {
    /// Starts the archive `path` (its directory must exist).
    #[context("Creating the oci-archive {}", path.display())]
    pub(crate) fn create(path: &Path) -> Result<Self> {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        let tmp = tempfile::NamedTempFile::new_in(dir.unwrap_or(Path::new(".")))?;
        let mut this = Self {
            path: path.to_owned(),
            tar: tar::Builder::new(std::io::BufWriter::new(tmp)),
            written: Default::default(),
        };
        this.add(
            "oci-layout",
            OCI_LAYOUT.len() as u64,
            &mut &OCI_LAYOUT[..],
            false,
        )?;
        this.add("blobs/", 0, &mut std::io::empty(), true)?;
        this.add("blobs/sha256/", 0, &mut std::io::empty(), true)?;
        Ok(this)
    }

    fn add(&mut self, name: &str, size: u64, data: &mut dyn Read, dir: bool) -> Result<()> {
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
        self.tar.append(&header, data)?;
        Ok(())
    }

    /// Appends the blob `digest` of `size` bytes (once: a second one of the same digest is
    /// skipped).
    #[context("Writing blob {digest}")]
    pub(crate) fn put_blob(&mut self, digest: &str, size: u64, data: &mut dyn Read) -> Result<()> {
        if !self.written.insert(digest.to_owned()) {
            return Ok(());
        }
        let name = format!("blobs/sha256/{}", blob_name(digest));
        self.add(&name, size, data, false)
    }

    /// Appends `index.json` and puts the archive in place.
    pub(crate) fn finish(mut self, index_json: &[u8]) -> Result<()> {
        let path = self.path.clone();
        let finished = (|| -> Result<()> {
            self.add(
                "index.json",
                index_json.len() as u64,
                &mut &index_json[..],
                false,
            )?;
            let tmp = self
                .tar
                .into_inner()?
                .into_inner()
                .map_err(|e| e.into_error())?;
            readable(tmp.path())?;
            tmp.as_file().sync_all()?;
            tmp.persist(&self.path)?;
            Ok(())
        })();
        finished.with_context(|| format!("Writing the oci-archive {}", path.display()))
    }
}
