//! containers/storage's `storage.conf`, as far as skiff edits it: the Additional Layer Store
//! list `[storage.options] additionallayerstores = ["/DIR"]`, and the `graphroot` it reads to
//! find podman's layers.
//!
//! containers/storage reads one file: `$CONTAINERS_STORAGE_CONF`, else
//! `/etc/containers/storage.conf`, else the distribution's `/usr/share/containers/storage.conf`
//! (podman 4.3 has no drop-in directory). A new `/etc` file therefore starts as a copy of the
//! distribution's, so that no other setting changes. The edit is line-based and leaves every
//! other line as it was; a list skiff cannot read is refused rather than rewritten.
//!
//! The store is listed without `:ref`, so podman looks up `DIR/<compressed layer digest>/`
//! whatever name the image is pulled by.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The file containers/storage reads when `$CONTAINERS_STORAGE_CONF` is not set.
pub const SYSTEM_STORAGE_CONF: &str = "/etc/containers/storage.conf";
/// The distribution's defaults, read when there is no `/etc` file.
pub const DEFAULT_STORAGE_CONF: &str = "/usr/share/containers/storage.conf";
/// containers/storage's graphroot when the file names none (rootful).
pub const DEFAULT_GRAPHROOT: &str = "/var/lib/containers/storage";
/// containers/storage's runroot when the file names none (rootful).
pub const DEFAULT_RUNROOT: &str = "/run/containers/storage";

/// The storage.conf podman reads here.
pub fn active_storage_conf() -> PathBuf {
    std::env::var_os("CONTAINERS_STORAGE_CONF")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(SYSTEM_STORAGE_CONF))
}

/// The text the configuration at `path` starts from: the file, else the distribution's
/// defaults, else nothing.
pub fn read_or_default(path: &Path) -> Result<String> {
    for candidate in [path, Path::new(DEFAULT_STORAGE_CONF)] {
        match std::fs::read_to_string(candidate) {
            Ok(text) => return Ok(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("Reading {}", candidate.display())),
        }
    }
    Ok(String::new())
}

/// The line skiff adds (or the entry it adds to an existing list).
pub fn layer_store_line(dir: &Path) -> String {
    format!("additionallayerstores = [{}]", toml_string(dir))
}

fn toml_string(path: &Path) -> String {
    // A TOML basic string is a JSON string.
    serde_json::to_string(&path.to_string_lossy()).unwrap_or_default()
}

/// `text` with `dir` in its Additional Layer Store list, or `None` when it is listed already.
pub fn with_layer_store(text: &str, dir: &Path) -> Result<Option<String>> {
    let quoted = toml_string(dir);
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut section = String::new();
    let mut options_header = None;
    for (i, line) in lines.iter_mut().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            let header = trimmed.split('#').next().unwrap_or_default().trim();
            section = header
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_owned();
            if section == "storage.options" {
                options_header = Some(i);
            }
            continue;
        }
        let Some((key, value)) = trimmed.split_once('=') else {
            continue;
        };
        if section != "storage.options" || key.trim() != "additionallayerstores" {
            continue;
        }
        let value = value.trim();
        let literal = format!("'{}'", dir.to_string_lossy());
        if value.contains(&quoted) || value.contains(&literal) {
            return Ok(None);
        }
        let Some(open) = line.find('[') else {
            bail!("additionallayerstores in [storage.options] is not a list: {trimmed}");
        };
        // First in the list; before other entries (on this line or, for a list written over
        // several lines, the next ones) with a comma, which TOML allows to trail.
        let rest = line[open + 1..].trim_start();
        let entry = if rest.starts_with(']') {
            quoted.clone()
        } else {
            format!("{quoted}, ")
        };
        line.insert_str(open + 1, &entry);
        return Ok(Some(joined(lines)));
    }
    match options_header {
        Some(i) => lines.insert(i + 1, layer_store_line(dir)),
        None => {
            lines.push(String::new());
            lines.push("[storage.options]".to_owned());
            lines.push(layer_store_line(dir));
        }
    }
    Ok(Some(joined(lines)))
}

fn joined(lines: Vec<String>) -> String {
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// The `graphroot` of `[storage]` in `text`, if set.
pub fn graphroot(text: &str) -> Option<PathBuf> {
    storage_value(text, "graphroot").map(PathBuf::from)
}

/// The string value of `key` in the `[storage]` table of `text` (`graphroot`, `runroot`,
/// `driver`), if set and not empty.
pub fn storage_value(text: &str, key: &str) -> Option<String> {
    let mut section = "";
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            section = trimmed;
            continue;
        }
        if section != "[storage]" {
            continue;
        }
        if let Some((k, value)) = trimmed.split_once('=')
            && k.trim() == key
        {
            let value = value.split('#').next().unwrap_or_default().trim();
            let value = value.trim_matches(|c| c == '"' || c == '\'');
            if !value.is_empty() {
                return Some(value.to_owned());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: &str = "/var/lib/skiff/als";

    #[test]
    fn a_missing_list_is_added_to_the_options_section_or_after_everything() {
        let text = "[storage]\ndriver = \"overlay\"\n\n[storage.options]\nmount_program = \"\"\n";
        let out = with_layer_store(text, Path::new(DIR)).unwrap().unwrap();
        assert_eq!(
            out,
            "[storage]\ndriver = \"overlay\"\n\n[storage.options]\n\
             additionallayerstores = [\"/var/lib/skiff/als\"]\nmount_program = \"\"\n"
        );
        let out = with_layer_store("[storage]\ndriver = \"overlay\"\n", Path::new(DIR))
            .unwrap()
            .unwrap();
        assert!(
            out.ends_with(
                "\n[storage.options]\nadditionallayerstores = [\"/var/lib/skiff/als\"]\n"
            ),
            "{out}"
        );
    }

    #[test]
    fn an_existing_list_gains_the_entry_once() {
        let text = "[storage.options]\nadditionallayerstores = [\"/other:ref\"]\n";
        let out = with_layer_store(text, Path::new(DIR)).unwrap().unwrap();
        assert_eq!(
            out,
            "[storage.options]\nadditionallayerstores = [\"/var/lib/skiff/als\", \"/other:ref\"]\n"
        );
        assert_eq!(with_layer_store(&out, Path::new(DIR)).unwrap(), None);
        let empty = "[storage.options]\nadditionallayerstores=[]\n";
        assert_eq!(
            with_layer_store(empty, Path::new(DIR)).unwrap().unwrap(),
            "[storage.options]\nadditionallayerstores=[\"/var/lib/skiff/als\"]\n"
        );
        // The key in another table is not the list.
        let other = "[storage.options.overlay]\nadditionallayerstores = [\"/x\"]\n";
        let out = with_layer_store(other, Path::new(DIR)).unwrap().unwrap();
        assert!(out.contains("\n[storage.options]\nadditionallayerstores = [\"/var/lib"));
        let multi = "[storage.options]\nadditionallayerstores = [\n  \"/x\",\n]\n";
        assert_eq!(
            with_layer_store(multi, Path::new(DIR)).unwrap().unwrap(),
            "[storage.options]\nadditionallayerstores = [\"/var/lib/skiff/als\", \n  \"/x\",\n]\n"
        );
        let commented = "[storage.options] # options\nmount_program = \"\"\n";
        assert_eq!(
            with_layer_store(commented, Path::new(DIR))
                .unwrap()
                .unwrap(),
            "[storage.options] # options\nadditionallayerstores = [\"/var/lib/skiff/als\"]\n\
             mount_program = \"\"\n"
        );
        let bad = "[storage.options]\nadditionallayerstores = \"/x\"\n";
        assert!(with_layer_store(bad, Path::new(DIR)).is_err());
    }

    #[test]
    fn graphroot_is_read_from_the_storage_table_only() {
        let text = "[storage]\ndriver = \"overlay\"\ngraphroot = \"/srv/podman\" # here\n\
                    [storage.options]\ngraphroot = \"/nope\"\n";
        assert_eq!(graphroot(text), Some(PathBuf::from("/srv/podman")));
        assert_eq!(
            graphroot("[storage.options]\ngraphroot = \"/nope\"\n"),
            None
        );
        assert_eq!(storage_value(text, "driver").as_deref(), Some("overlay"));
        assert_eq!(storage_value(text, "runroot"), None);
    }
}
