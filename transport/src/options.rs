//! Options of a source, with skopeo's flag names and meanings.

use std::path::PathBuf;

/// How to reach and authenticate to a source, and which platform to choose.
#[derive(Debug, Clone, Default)]
pub struct SourceOptions {
    /// `--src-creds USER[:PASSWORD]` (or `--src-username`/`--src-password`).
    pub creds: Option<(String, String)>,
    /// `--src-no-creds`: access the registry anonymously.
    pub no_creds: bool,
    /// `--authfile` / `--src-authfile`; else skopeo's default lookup.
    pub authfile: Option<PathBuf>,
    /// `--src-tls-verify`: `Some(false)` allows plain HTTP and unverified TLS.
    pub tls_verify: Option<bool>,
    /// `--src-cert-dir`: CA certificates and client keys for the registry.
    pub cert_dir: Option<PathBuf>,
    /// `--override-arch`.
    pub arch: Option<String>,
    /// `--override-os`.
    pub os: Option<String>,
    /// `--override-variant`.
    pub variant: Option<String>,
    /// `--policy`: signature policy file.
    pub policy: Option<PathBuf>,
    /// `--insecure-policy`: accept any image.
    pub insecure_policy: bool,
    /// `--storage-root`: the graph root of `containers-storage:` images (else storage.conf's).
    pub storage_root: Option<PathBuf>,
    /// `--run-root`: the run root of `containers-storage:` images (else storage.conf's).
    pub run_root: Option<PathBuf>,
}

/// The image the source names does not exist (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("image {0} not found")]
pub struct SourceNotFound(pub String);
