//! Registry credentials and authentication challenges, as containers/image handles them.
//!
//! Credentials come from, in order: `--src-creds` (or `--src-username`/`--src-password`);
//! the auth file named by `--authfile`/`--src-authfile`; else the first of
//! `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
//! `$HOME/.config/containers/auth.json` and `$HOME/.docker/config.json` that holds an entry
//! for the registry. `--src-no-creds` means none at all.
//!
//! An auth file is JSON: `{"auths": {"KEY": {"auth": base64("USER:PASSWORD")}}}`, where KEY is
//! `HOST[:PORT]`, optionally followed by a repository path (the most specific match wins), or
//! a legacy URL such as `https://index.docker.io/v1/` (its host is used). Credential helpers
//! (`credHelpers`, `credsStore`) are not run.
//!
//! A registry asks for credentials with `401` and `WWW-Authenticate`:
//!
//! - `Basic realm="..."`: send `Authorization: Basic base64(USER:PASSWORD)`;
//! - `Bearer realm="URL",service="S",scope="repository:NAME:pull"`: get a token from
//!   `URL?service=S&scope=...` (with Basic credentials when there are any), answered as
//!   `{"token": "..."}` or `{"access_token": "..."}`, and send `Authorization: Bearer TOKEN`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine;
use fn_error_context::context;

use crate::options::SourceOptions;

/// A user name and password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub user: String,
    /// The password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The `Authorization: Basic` value.
    pub fn basic(&self) -> String {
        let pair = format!("{}:{}", self.user, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }
}

/// The credentials `options` give for `repository` (`HOST/PATH`) on registry `host`.
pub fn credentials_for(
    options: &SourceOptions,
    host: &str,
    repository: &str,
) -> Result<Option<Credentials>> {
    if options.no_creds {
        return Ok(None);
    }
    if let Some((user, password)) = &options.creds {
        return Ok(Some(Credentials {
            user: user.clone(),
            password: password.clone(),
        }));
    }
    if let Some(file) = &options.authfile {
        return lookup_file(file, host, repository);
    }
    for file in default_auth_files() {
        if file.exists()
            && let Some(found) = lookup_file(&file, host, repository)?
        {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// Where containers/image looks for credentials when no file is named.
fn default_auth_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE") {
        files.push(PathBuf::from(f));
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        files.push(Path::new(&dir).join("containers/auth.json"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        files.push(Path::new(&home).join(".config/containers/auth.json"));
        files.push(Path::new(&home).join(".docker/config.json"));
    }
    files
}

#[derive(serde::Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
}

#[derive(serde::Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
}

#[context("Reading credentials from {}", file.display())]
fn lookup_file(file: &Path, host: &str, repository: &str) -> Result<Option<Credentials>> {
    let bytes = std::fs::read(file)?;
    let parsed: AuthFile = serde_json::from_slice(&bytes).context("not an auth file")?;
    // The most specific key wins: HOST/NS/REPO, then HOST/NS, then HOST.
    let full = format!("{host}/{repository}");
    let mut best: Option<(usize, &AuthEntry)> = None;
    for (key, entry) in &parsed.auths {
        let key = normalize_key(key);
        let matches = full == key || full.starts_with(&format!("{key}/"));
        if matches && best.is_none_or(|(len, _)| key.len() > len) {
            best = Some((key.len(), entry));
        }
    }
    let Some((_, entry)) = best else {
        return Ok(None);
    };
    let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .context("an \"auth\" value is not base64")?;
    let decoded = String::from_utf8(decoded).context("an \"auth\" value is not UTF-8")?;
    let Some((user, password)) = decoded.split_once(':') else {
        bail!("an \"auth\" value is not USER:PASSWORD");
    };
    Ok(Some(Credentials {
        user: user.to_owned(),
        password: password.to_owned(),
    }))
}

/// An auth-file key as `HOST[/PATH]`: legacy URL keys keep only their host.
fn normalize_key(key: &str) -> String {
    let stripped = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"));
    match stripped {
        Some(rest) => {
            let host = rest.split('/').next().unwrap_or_default();
            match host {
                "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
                other => other.to_owned(),
            }
        }
        None => key.trim_end_matches('/').to_owned(),
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `basic` or `bearer` (lower case).
    pub scheme: String,
    /// Its parameters, keys in lower case.
    pub params: HashMap<String, String>,
}

/// Parses the first challenge of a `WWW-Authenticate` value.
pub fn parse_challenge(value: &str) -> Result<Challenge> {
    let value = value.trim();
    let (scheme, mut rest) = value.split_once(' ').unwrap_or((value, ""));
    let mut params = HashMap::new();
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if rest.is_empty() {
            break;
        }
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().to_ascii_lowercase();
        let (val, next) = if let Some(quoted) = after.strip_prefix('"') {
            // A quoted string; `\"` escapes a quote.
            let mut val = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, e)) = chars.next() {
                            val.push(e);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => val.push(c),
                }
            }
            let end = end.with_context(|| format!("unterminated quote in {value:?}"))?;
            (val, &quoted[end..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        params.insert(key, val);
        rest = next;
    }
    Ok(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_with_commas_in_quotes() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.example/token");
        assert_eq!(c.params["service"], "reg");
        assert_eq!(c.params["scope"], "repository:a/b:pull,push");
        let c = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.params["realm"], "Registry Realm");
        assert!(parse_challenge(r#"Bearer realm="open"#).is_err());
    }

    fn write(dir: &Path, json: &str) -> PathBuf {
        let f = dir.join("auth.json");
        std::fs::write(&f, json).unwrap();
        f
    }

    #[test]
    fn most_specific_key_wins_and_legacy_keys_match_their_host() {
        let dir = tempfile::tempdir().unwrap();
        let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let f = write(
            dir.path(),
            &serde_json::json!({"auths": {
                "reg.example:5000": {"auth": enc("host:1")},
                "reg.example:5000/team": {"auth": enc("team:2")},
                "https://index.docker.io/v1/": {"auth": enc("hub:3")},
            }})
            .to_string(),
        );
        let user = |host: &str, repo: &str| {
            lookup_file(&f, host, repo)
                .unwrap()
                .map(|c| (c.user, c.password))
        };
        assert_eq!(
            user("reg.example:5000", "team/app"),
            Some(("team".into(), "2".into()))
        );
        assert_eq!(
            user("reg.example:5000", "other/app"),
            Some(("host".into(), "1".into()))
        );
        assert_eq!(
            user("docker.io", "library/busybox"),
            Some(("hub".into(), "3".into()))
        );
        assert_eq!(user("reg.example", "team/app"), None);
        // A prefix of a path component is not a match.
        assert_eq!(
            user("reg.example:5000", "teamwork/app"),
            Some(("host".into(), "1".into()))
        );
    }

    #[test]
    fn broken_auth_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(dir.path(), "{not json");
        assert!(lookup_file(&f, "h", "r").is_err());
        let f = write(dir.path(), r#"{"auths": {"h": {"auth": "%%%"}}}"#);
        assert!(lookup_file(&f, "h", "r").is_err());
    }
}
