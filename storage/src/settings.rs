//! skiff's settings of a repository, in `skiff.json` at its top (composefs and cfsctl ignore
//! the file; a repository without it has the defaults):
//!
//! ```json
//! {"keep-blobs": true}
//! ```
//!
//! - `keep-blobs`: every full pull keeps the original compressed layer blobs (see
//!   [`crate::kept_blobs`]), as if each `skiff copy` were given `--keep-blobs`.
//! - `podman-layer-store`: the Additional Layer Store directory that serves the repository's
//!   layers to podman (`skiff podman enable`); `skiff gc` withdraws from it what no image names.
//!
//! Unknown keys are refused rather than ignored, so that a setting a newer skiff wrote is not
//! silently dropped by an older one.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use fn_error_context::context;
use serde::{Deserialize, Serialize};

/// The file's name, at the top of the repository.
pub const SETTINGS_FILE: &str = "skiff.json";

/// Largest settings file read: it holds a few flags.
const MAX_SETTINGS_SIZE: u64 = 64 * 1024;

/// A repository's skiff settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RepoSettings {
    /// Keep the original compressed blob of every layer pulled in full.
    #[serde(default)]
    pub keep_blobs: bool,
    /// The podman Additional Layer Store serving this repository's layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub podman_layer_store: Option<std::path::PathBuf>,
}

impl RepoSettings {
    /// Reads the settings of the repository at `repo` (the defaults when it has none).
    #[context("Reading {SETTINGS_FILE} of the repository {}", repo.display())]
    pub fn load(repo: &Path) -> Result<Self> {
        let path = repo.join(SETTINGS_FILE);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e.into()),
        };
        let size = file.metadata()?.len();
        anyhow::ensure!(
            size <= MAX_SETTINGS_SIZE,
            "{size} bytes, more than the {MAX_SETTINGS_SIZE} a settings file may have"
        );
        serde_json::from_reader(std::io::BufReader::new(file)).context("Parsing the settings")
    }

    /// Writes the settings of the repository at `repo`, replacing the file atomically.
    #[context("Writing {SETTINGS_FILE} of the repository {}", repo.display())]
    pub fn save(&self, repo: &Path) -> Result<()> {
        let mut tmp = tempfile::Builder::new()
            .prefix(".skiff-settings-")
            .tempfile_in(repo)?;
        serde_json::to_writer(&mut tmp, self)?;
        tmp.write_all(b"\n")?;
        tmp.as_file().sync_all()?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))?;
        }
        tmp.persist(repo.join(SETTINGS_FILE))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_and_default_when_absent() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            RepoSettings::load(dir.path()).unwrap(),
            RepoSettings::default()
        );
        let set = RepoSettings {
            keep_blobs: true,
            ..RepoSettings::default()
        };
        set.save(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(SETTINGS_FILE)).unwrap(),
            "{\"keep-blobs\":true}\n"
        );
        assert_eq!(RepoSettings::load(dir.path()).unwrap(), set);
    }

    #[test]
    fn an_unknown_or_malformed_setting_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SETTINGS_FILE), br#"{"keep-blob":true}"#).unwrap();
        let err = RepoSettings::load(dir.path()).unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown field `keep-blob`"),
            "{err:#}"
        );
        std::fs::write(dir.path().join(SETTINGS_FILE), b"{").unwrap();
        assert!(RepoSettings::load(dir.path()).is_err());
    }
}
