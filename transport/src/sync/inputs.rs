//! What to mirror, as users already write it down.
//!
//! **A list file** (`--from-file`), the format of composefs-rs's `ci/fixture-images.txt`:
//! one `SOURCE DESTINATION` pair a line, blank lines and `#` comments ignored, then optional
//! `key=value` columns for that line: `referrers=`, `cosign=`, `force=` and
//! `allow-digest-change=` (`true` or `false`), `tag-regex=RE` (for a source named without
//! tag), `platforms=OS/ARCH[/VARIANT],...`. A reference without a
//! transport is a registry reference (`docker://`).
//!
//! **skopeo sync's YAML** (`--src yaml`): per registry, `images` (repository → tags or
//! digests; an empty list means every tag), `images-by-tag-regex` (repository → regular
//! expression), `credentials` (`username`, `password`), `tls-verify` and `cert-dir`. Each
//! image goes to `DEST/REGISTRY/REPOSITORY`: scoped by its registry (its `:` written `_`, a
//! repository path holding no colon), so that `a.io/tiny` and `b.io/tiny` stay apart, which
//! skopeo sync without `--scoped` does not do. `images-by-semver` is refused by name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use fn_error_context::context;

use super::{SyncOptions, SyncPair, TagSelection};
use crate::platform::WantedPlatform;
use crate::reference::ImageRef;

/// Largest list or YAML file read: thousands of lines.
const MAX_INPUT_FILE: u64 = 4 * 1024 * 1024;

/// Settings of one pair that differ from the command line's.
#[derive(Debug, Clone, Default)]
pub struct PairSettings {
    /// `referrers=`.
    pub referrers: Option<bool>,
    /// `cosign=`.
    pub cosign: Option<bool>,
    /// `force=`.
    pub force: Option<bool>,
    /// `platforms=`.
    pub platforms: Option<Vec<WantedPlatform>>,
    /// `allow-digest-change=`.
    pub allow_digest_change: Option<bool>,
    /// YAML `tls-verify`, for the source registry.
    pub source_tls_verify: Option<bool>,
    /// YAML `cert-dir`, for the source registry.
    pub source_cert_dir: Option<PathBuf>,
    /// YAML `credentials`, for the source registry.
    pub source_creds: Option<(String, String)>,
}

impl SyncOptions {
    /// These options with `settings` applied.
    pub fn with(&self, settings: &PairSettings) -> SyncOptions {
        let mut options = self.clone();
        if let Some(v) = settings.referrers {
            options.referrers = v;
        }
        if let Some(v) = settings.cosign {
            options.cosign = v;
        }
        if let Some(v) = settings.force {
            options.force = v;
        }
        if let Some(v) = &settings.platforms {
            options.platforms = v.clone();
        }
        if let Some(v) = settings.allow_digest_change {
            options.allow_digest_change = v;
        }
        if settings.source_tls_verify.is_some() {
            options.source.tls_verify = settings.source_tls_verify;
        }
        if let Some(dir) = &settings.source_cert_dir {
            options.source.cert_dir = Some(dir.clone());
        }
        if let Some(creds) = &settings.source_creds {
            options.source.creds = Some(creds.clone());
            options.source.no_creds = false;
        }
        options
    }
}

/// A reference of a list or YAML file: a registry reference when it names no transport.
fn parse_reference(text: &str) -> Result<ImageRef> {
    let known = [
        "docker:",
        "oci:",
        "oci-archive:",
        "docker-archive:",
        "dir:",
        "containers-storage:",
        "composefs:",
    ];
    let full = if known.iter().any(|t| text.starts_with(t)) {
        text.to_owned()
    } else {
        format!("docker://{text}")
    };
    Ok(full.parse()?)
}

fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => bail!("{key}={value}: give true or false"),
    }
}

/// Reads a list file.
#[context("Reading the list {}", path.display())]
pub fn read_list(path: &Path) -> Result<Vec<(SyncPair, PairSettings)>> {
    let text = read_text(path)?;
    parse_list(&text)
}

fn read_text(path: &Path) -> Result<String> {
    let file = std::fs::File::open(path)?;
    let bytes = crate::blob::read_bounded(file, MAX_INPUT_FILE)?;
    String::from_utf8(bytes).context("not UTF-8")
}

/// Parses the lines of a list file.
pub fn parse_list(text: &str) -> Result<Vec<(SyncPair, PairSettings)>> {
    let mut pairs = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = match line.find('#') {
            // A comment starts a line or follows a blank; `#` inside a word is kept.
            Some(i) if i == 0 || line[..i].ends_with(char::is_whitespace) => &line[..i],
            _ => line,
        };
        let columns: Vec<&str> = line.split_whitespace().collect();
        if columns.is_empty() {
            continue;
        }
        let parsed = (|| -> Result<(SyncPair, PairSettings)> {
            let [source, destination, options @ ..] = columns.as_slice() else {
                bail!("a line needs a source and a destination");
            };
            let mut settings = PairSettings::default();
            let mut tags = TagSelection::All;
            for option in options {
                let (key, value) = option
                    .split_once('=')
                    .with_context(|| format!("{option:?} is not key=value"))?;
                match key {
                    "referrers" => settings.referrers = Some(parse_bool(key, value)?),
                    "cosign" => settings.cosign = Some(parse_bool(key, value)?),
                    "force" => settings.force = Some(parse_bool(key, value)?),
                    "tag-regex" => tags = TagSelection::Matching(tag_expression(value)?),
                    "allow-digest-change" => {
                        settings.allow_digest_change = Some(parse_bool(key, value)?)
                    }
                    "platforms" => {
                        settings.platforms = Some(
                            value
                                .split(',')
                                .map(WantedPlatform::parse)
                                .collect::<Result<_>>()?,
                        )
                    }
                    _ => bail!(
                        "unknown option {key:?} (known: referrers, cosign, force, tag-regex, \
                         platforms, allow-digest-change)"
                    ),
                }
            }
            Ok((
                SyncPair {
                    source: parse_reference(source)?,
                    destination: parse_reference(destination)?,
                    tags,
                },
                settings,
            ))
        })();
        pairs.push(parsed.with_context(|| format!("line {}", number + 1))?);
    }
    anyhow::ensure!(!pairs.is_empty(), "the list names no image");
    Ok(pairs)
}

/// A tag expression, matched as skopeo sync matches it: anywhere in the tag unless anchored
/// with `^` and `$` (Go's and Rust's regular expressions agree on the syntax skopeo documents).
fn tag_expression(expression: &str) -> Result<regex::Regex> {
    regex::Regex::new(expression).with_context(|| format!("bad tag expression {expression:?}"))
}

/// One registry's part of skopeo sync's YAML.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RegistrySection {
    #[serde(default)]
    images: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    images_by_tag_regex: BTreeMap<String, String>,
    #[serde(default)]
    images_by_semver: Option<serde_norway::Value>,
    #[serde(default)]
    credentials: Option<YamlCredentials>,
    #[serde(default)]
    tls_verify: Option<bool>,
    #[serde(default)]
    cert_dir: Option<PathBuf>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct YamlCredentials {
    username: String,
    password: String,
}

/// Reads skopeo sync's YAML, with every image going under `destination`: a registry
/// namespace (`HOST/PREFIX`, `docker` destinations) or a directory of layouts (`oci`).
#[context("Reading {}", path.display())]
pub fn read_yaml(
    path: &Path,
    destination: &str,
    kind: DestinationKind,
) -> Result<Vec<(SyncPair, PairSettings)>> {
    parse_yaml(&read_text(path)?, destination, kind)
}

/// How a YAML sync's destination is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestinationKind {
    /// A registry namespace: `HOST[/PATH]`.
    Docker,
    /// A directory: each repository a layout under it.
    Oci,
}

/// Parses skopeo sync's YAML.
pub fn parse_yaml(
    text: &str,
    destination: &str,
    kind: DestinationKind,
) -> Result<Vec<(SyncPair, PairSettings)>> {
    let sections: BTreeMap<String, RegistrySection> =
        serde_norway::from_str(text).context("not skopeo sync's YAML")?;
    let destination = destination
        .strip_prefix("docker://")
        .unwrap_or(destination)
        .trim_end_matches('/');
    let mut pairs = Vec::new();
    for (registry, section) in &sections {
        anyhow::ensure!(
            section.images_by_semver.is_none(),
            "{registry}: images-by-semver is not supported; list the tags or use \
             images-by-tag-regex"
        );
        let settings = PairSettings {
            source_tls_verify: section.tls_verify,
            source_cert_dir: section.cert_dir.clone(),
            source_creds: section
                .credentials
                .as_ref()
                .map(|c| (c.username.clone(), c.password.clone())),
            ..Default::default()
        };
        let scope = registry.to_ascii_lowercase().replace(':', "_");
        let target = |repository: &str, reference: Option<&str>| -> Result<ImageRef> {
            let tag = match reference {
                Some(r) if !r.contains(':') => format!(":{r}"),
                _ => String::new(),
            };
            let text = match kind {
                DestinationKind::Docker => {
                    format!("docker://{destination}/{scope}/{repository}{tag}")
                }
                DestinationKind::Oci => format!("oci:{destination}/{scope}/{repository}{tag}"),
            };
            Ok(text.parse()?)
        };
        let source = |repository: &str, reference: Option<&str>| -> Result<ImageRef> {
            let suffix = match reference {
                Some(r) if r.contains(':') => format!("@{r}"),
                Some(r) => format!(":{r}"),
                None => String::new(),
            };
            Ok(format!("docker://{registry}/{repository}{suffix}").parse()?)
        };
        for (repository, references) in &section.images {
            if references.is_empty() {
                pairs.push((
                    SyncPair {
                        source: source(repository, None)?,
                        destination: target(repository, None)?,
                        tags: TagSelection::All,
                    },
                    settings.clone(),
                ));
            }
            for reference in references {
                pairs.push((
                    SyncPair {
                        source: source(repository, Some(reference))?,
                        destination: target(repository, Some(reference))?,
                        tags: TagSelection::All,
                    },
                    settings.clone(),
                ));
            }
        }
        for (repository, expression) in &section.images_by_tag_regex {
            pairs.push((
                SyncPair {
                    source: source(repository, None)?,
                    destination: target(repository, None)?,
                    tags: TagSelection::Matching(tag_expression(expression)?),
                },
                settings.clone(),
            ));
        }
    }
    anyhow::ensure!(!pairs.is_empty(), "the YAML names no image");
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn list_lines_comments_and_options() {
        let text = format!(
            "# fixtures\n\
             \n\
             docker://quay.io/a/b:1 docker://ghcr.io/x/b:1-abc   # pinned later\n\
             quay.io/c/d@{DIGEST} docker://ghcr.io/x/d:2 referrers=false force=true\n\
             oci:/tmp/layout:v1 oci:/tmp/out tag-regex=^v\n\
             x.io/m:1 y.io/m:1 platforms=linux/amd64,linux/arm/v7 allow-digest-change=true\n"
        );
        let pairs = parse_list(&text).unwrap();
        assert_eq!(pairs.len(), 4);
        assert_eq!(
            pairs[0].0.destination.to_string(),
            "docker://ghcr.io/x/b:1-abc"
        );
        let ImageRef::Docker(source) = &pairs[1].0.source else {
            panic!("not a registry reference")
        };
        assert_eq!(source.digest(), Some(DIGEST));
        assert_eq!(pairs[1].1.referrers, Some(false));
        assert_eq!(pairs[1].1.force, Some(true));
        assert!(matches!(pairs[2].0.tags, TagSelection::Matching(_)));
        let platforms = pairs[3].1.platforms.as_ref().unwrap();
        assert_eq!(platforms[1].to_string(), "linux/arm/v7");
        assert_eq!(pairs[3].1.allow_digest_change, Some(true));
        let options = SyncOptions::default().with(&pairs[3].1);
        assert!(options.allow_digest_change && options.platforms.len() == 2);
    }

    #[test]
    fn list_errors_name_the_line() {
        for (text, wanted) in [
            (
                "docker://a.io/b:1\n",
                "line 1: a line needs a source and a destination",
            ),
            (
                "\nx.io/a:1 y.io/b:1 color=red\n",
                "line 2: unknown option \"color\"",
            ),
            ("x.io/a:1 y.io/b:1 referrers=yes\n", "give true or false"),
            (
                "x.io/a:1 y.io/b:1 platforms=linux/amd64,arm64\n",
                "platform \"arm64\": give OS/ARCH",
            ),
            ("# nothing\n", "the list names no image"),
            ("x.io/a:1 y.io/B:1\n", "line 1"),
        ] {
            let error = format!("{:#}", parse_list(text).unwrap_err());
            assert!(error.contains(wanted), "{text:?}: {error}");
        }
    }

    #[test]
    fn yaml_is_scoped_per_registry() {
        let text = format!(
            "127.0.0.1:5000:\n  tls-verify: false\n  images:\n    test/tiny: [latest, \"{DIGEST}\"]\n    \
             all/tags: []\n  images-by-tag-regex:\n    re/po: ^v1\\.\n\
             other.io:\n  credentials: {{username: u, password: p}}\n  images:\n    zstd/tiny: [latest]\n"
        );
        let pairs = parse_yaml(
            &text,
            "docker://127.0.0.1:6000/mirror",
            DestinationKind::Docker,
        )
        .unwrap();
        let lines: Vec<String> = pairs
            .iter()
            .map(|(p, _)| format!("{} {}", p.source, p.destination))
            .collect();
        assert_eq!(
            lines,
            [
                "docker://127.0.0.1:5000/all/tags docker://127.0.0.1:6000/mirror/127.0.0.1_5000/all/tags",
                "docker://127.0.0.1:5000/test/tiny:latest docker://127.0.0.1:6000/mirror/127.0.0.1_5000/test/tiny:latest",
                &format!(
                    "docker://127.0.0.1:5000/test/tiny@{DIGEST} docker://127.0.0.1:6000/mirror/127.0.0.1_5000/test/tiny"
                ),
                "docker://127.0.0.1:5000/re/po docker://127.0.0.1:6000/mirror/127.0.0.1_5000/re/po",
                "docker://other.io/zstd/tiny:latest docker://127.0.0.1:6000/mirror/other.io/zstd/tiny:latest",
            ]
        );
        assert_eq!(pairs[0].1.source_tls_verify, Some(false));
        assert_eq!(pairs[4].1.source_creds, Some(("u".into(), "p".into())));
    }

    #[test]
    fn yaml_refuses_what_it_cannot_do() {
        for (text, wanted) in [
            (
                "a.io:\n  images-by-semver:\n    x: \">= 1\"\n",
                "images-by-semver",
            ),
            ("a.io:\n  imagez: {}\n", "not skopeo sync's YAML"),
            ("a.io:\n  tls-verify: true\n", "names no image"),
            (
                "a.io:\n  images-by-tag-regex:\n    x: \"(\"\n",
                "bad tag expression",
            ),
        ] {
            let error = format!(
                "{:#}",
                parse_yaml(text, "b.io/m", DestinationKind::Docker).unwrap_err()
            );
            assert!(error.contains(wanted), "{text:?}: {error}");
        }
    }
}
