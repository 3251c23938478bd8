//! The HTTP client for one registry: TLS verification and certificate directories as
//! containers/image applies them.
//!
//! A certificate directory holds `*.crt` files (CA certificates trusted in addition to the
//! system's) and `*.cert`/`*.key` pairs with the same base name (a client certificate and its
//! key, PEM). `--src-cert-dir DIR` names the directory; without it, the first existing of
//! `/etc/containers/certs.d/HOST[:PORT]`, `/etc/docker/certs.d/HOST[:PORT]` and
//! `$HOME/.config/containers/certs.d/HOST[:PORT]` is used.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use fn_error_context::context;

use crate::options::SourceOptions;

/// How long to wait for a connection: long enough for a slow link, short enough that a
/// registry that is down is reported while the user still waits for an answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a registry may send nothing while an answer is expected: a stalled transfer is an
/// error (which a retry or a fallback can handle), not a hang.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// An HTTP client for `host` with the TLS settings of `options`.
#[context("Setting up TLS for {host}")]
pub fn http_client(options: &SourceOptions, host: &str) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("skiff/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .danger_accept_invalid_certs(options.tls_verify == Some(false));
    if let Some(dir) = cert_dir(options, host) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("Reading {}", dir.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        entries.sort();
        for path in entries {
            match path.extension().and_then(|e| e.to_str()) {
                Some("crt") => {
                    let pem = std::fs::read(&path)?;
                    let certs = reqwest::Certificate::from_pem_bundle(&pem)
                        .with_context(|| format!("{} is not a PEM certificate", path.display()))?;
                    anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", path.display());
                    for cert in certs {
                        builder = builder.add_root_certificate(cert);
                    }
                }
                Some("cert") => {
                    builder = builder.identity(client_identity(&path)?);
                }
                _ => {}
            }
        }
    }
    Ok(builder.build()?)
}

fn cert_dir(options: &SourceOptions, host: &str) -> Option<PathBuf> {
    if let Some(dir) = &options.cert_dir {
        return Some(dir.clone());
    }
    let mut candidates = vec![
        Path::new("/etc/containers/certs.d").join(host),
        Path::new("/etc/docker/certs.d").join(host),
    ];
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(
            Path::new(&home)
                .join(".config/containers/certs.d")
                .join(host),
        );
    }
    candidates.into_iter().find(|d| d.is_dir())
}

/// The client certificate `cert` with the key beside it (`NAME.key`), in any PEM key format.
#[context("Loading client certificate {}", cert.display())]
fn client_identity(cert: &Path) -> Result<reqwest::Identity> {
    let key_path = cert.with_extension("key");
    let cert_pem = std::fs::read(cert)?;
    let key_pem = std::fs::read(&key_path)
        .with_context(|| format!("{} has no key {}", cert.display(), key_path.display()))?;
    // native-tls takes PKCS#8 only; keys are often PKCS#1 or SEC1.
    let key = openssl::pkey::PKey::private_key_from_pem(&key_pem)
        .with_context(|| format!("{} is not a PEM private key", key_path.display()))?;
    let pkcs8 = key.private_key_to_pem_pkcs8()?;
    Ok(reqwest::Identity::from_pkcs8_pem(&cert_pem, &pkcs8)?)
}
