//! Running skopeo: the one place that builds its command line.
//!
//! Credentials never go on that command line, where any local user can read them in
//! `/proc/PID/cmdline`: they go into an auth file only the user can read (mode 0600), as
//! containers-auth.json(5) describes it, keyed by the registry's host.

use std::io::{Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use anyhow::{Context, Result};
use base64::Engine;
use fn_error_context::context;

use super::layout::LayoutSource;
use crate::options::SourceOptions;
use crate::reference::ImageRef;

/// `skopeo` with the global `--override-arch/os/variant` flags of `options`.
pub(crate) fn command(options: &SourceOptions) -> Command {
    let mut skopeo = Command::new("skopeo");
    for (flag, value) in [
        ("--override-arch", &options.arch),
        ("--override-os", &options.os),
        ("--override-variant", &options.variant),
    ] {
        if let Some(v) = value {
            skopeo.arg(flag).arg(v);
        }
    }
    skopeo
}

/// An auth file holding `user`/`password` for the registry of `reference`, mode 0600, removed
/// when dropped.
#[context("Writing an auth file for {reference}")]
pub(crate) fn creds_authfile(
    reference: &ImageRef,
    user: &str,
    password: &str,
) -> Result<tempfile::NamedTempFile> {
    let ImageRef::Docker(docker) = reference else {
        anyhow::bail!("credentials apply to docker:// images, not {reference}");
    };
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let json = serde_json::json!({ "auths": { docker.auth_key(): { "auth": auth } } });
    let mut file = tempfile::Builder::new()
        .prefix("skiff-auth-")
        .suffix(".json")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile()?;
    file.write_all(json.to_string().as_bytes())?;
    file.flush()?;
    file.rewind()?;
    Ok(file)
}

/// Copies `image` with skopeo into a temporary OCI layout, manifest and blobs unchanged
/// (`--preserve-digests`: skopeo refuses rather than convert), after skiff's policy check.
/// The layout is removed when the returned directory is dropped. skopeo is killed when the
/// returned future is dropped (e.g. by `--command-timeout`).
#[context("Reading {image} with skopeo")]
pub async fn copy_to_layout(
    image: &ImageRef,
    options: &SourceOptions,
) -> Result<(LayoutSource, tempfile::TempDir)> {
    crate::policy::check_reference(image, options)?;
    let scratch = tempfile::Builder::new()
        .prefix("skiff-delta-new-")
        .tempdir()?;
    let dir = scratch.path().join("layout");
    let mut skopeo = command(options);
    skopeo.args(["--insecure-policy", "copy", "--quiet", "--preserve-digests"]);
    let _authfile = match &options.creds {
        Some((user, password)) => {
            let file = creds_authfile(image, user, password)?;
            skopeo.arg("--src-authfile").arg(file.path());
            Some(file)
        }
        None => {
            if let Some(path) = &options.authfile {
                skopeo.arg("--src-authfile").arg(path);
            }
            None
        }
    };
    if let Some(verify) = options.tls_verify {
        skopeo.arg(format!("--src-tls-verify={verify}"));
    }
    if let Some(path) = &options.cert_dir {
        skopeo.arg("--src-cert-dir").arg(path);
    }
    skopeo
        .arg(image.to_string())
        .arg(format!("oci:{}:new", dir.display()));
    let mut skopeo = tokio::process::Command::from(skopeo);
    skopeo.kill_on_drop(true);
    let out = skopeo.output().await.context("Running skopeo")?;
    anyhow::ensure!(
        out.status.success(),
        "skopeo copy failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let layout = LayoutSource::open(
        &ImageRef::Oci {
            path: dir,
            reference: Some("new".into()),
        },
        options,
    )?
    .context("the layout skopeo wrote cannot be read")?;
    Ok((layout, scratch))
}

/// Copies the image `tag` of the OCI layout at `layout` to `destination` (a skopeo reference
/// that needs no credentials: `containers-storage:`), manifest and blobs unchanged.
#[context("Writing {destination} with skopeo")]
pub(crate) async fn copy_layout_to(
    layout: &std::path::Path,
    tag: &str,
    destination: &str,
) -> Result<()> {
    let mut skopeo = tokio::process::Command::new("skopeo");
    skopeo
        .args(["--insecure-policy", "copy", "--quiet", "--preserve-digests"])
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(destination)
        .kill_on_drop(true);
    let out = skopeo.output().await.context("Running skopeo")?;
    anyhow::ensure!(
        out.status.success(),
        "skopeo copy failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn the_auth_file_is_private_and_keyed_by_host() {
        let reference: ImageRef = "docker://127.0.0.1:5000/app:v1".parse().unwrap();
        let mut file = creds_authfile(&reference, "ann", "s3:cret").unwrap();
        let mode = file.as_file().metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let auth = json["auths"]["127.0.0.1:5000"]["auth"].as_str().unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth)
            .unwrap();
        assert_eq!(decoded, b"ann:s3:cret");
        let hub: ImageRef = "docker://busybox".parse().unwrap();
        let mut text = String::new();
        creds_authfile(&hub, "u", "p")
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert!(text.contains("\"docker.io\""), "{text}");
        let oci: ImageRef = "oci:/x".parse().unwrap();
        assert!(creds_authfile(&oci, "u", "p").is_err());
    }
}
