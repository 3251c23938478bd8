//! Signature policy (`policy.json`, containers-policy.json(5)), checked by skiff for every
//! source: skopeo 1.9.3's image proxy applies no policy of its own.
//!
//! The policy file is `--policy PATH`, else `$HOME/.config/containers/policy.json`, else
//! `/etc/containers/policy.json`; none at all is an error, as in skopeo. `--insecure-policy`
//! skips the check. The requirements that apply are those of the most specific scope of the
//! transport (for `docker:`, `host/repo:tag`, `host/repo`, its namespaces, `host`; for paths,
//! the path or one of its parents), else the transport's `""` scope, else `default`.
//! `insecureAcceptAnything` accepts, `reject` refuses, and signature requirements refuse too:
//! skiff does not verify image signatures yet, and says so rather than accept unverified.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::options::SourceOptions;
use crate::reference::ImageRef;

/// The image was refused by the signature policy.
#[derive(Debug, thiserror::Error)]
#[error("{reference} is refused by the signature policy {policy}: {reason}")]
pub struct PolicyRefused {
    /// The image.
    pub reference: String,
    /// The policy file.
    pub policy: String,
    /// Why.
    pub reason: String,
}

/// The policy file skopeo would use.
pub fn policy_path(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_owned());
    }
    if let Some(home) = std::env::var_os("HOME") {
        let user = PathBuf::from(home).join(".config/containers/policy.json");
        if user.exists() {
            return Ok(user);
        }
    }
    let system = PathBuf::from("/etc/containers/policy.json");
    if system.exists() {
        return Ok(system);
    }
    bail!(
        "no signature policy file found (looked for ~/.config/containers/policy.json and /etc/containers/policy.json); use --policy or --insecure-policy"
    )
}

/// Checks the policy for `reference`, unless `options` say `--insecure-policy`.
pub fn check_reference(reference: &ImageRef, options: &SourceOptions) -> Result<()> {
    if options.insecure_policy {
        return Ok(());
    }
    let path = policy_path(options.policy.as_deref())?;
    let (transport, scopes) = scopes_of(reference)?;
    check(&path, transport, &scopes, &reference.to_string())
}

/// The transport name and the policy scopes of a reference, most specific first.
fn scopes_of(reference: &ImageRef) -> Result<(&'static str, Vec<String>)> {
    let path_scopes = |p: &Path| -> Result<Vec<String>> {
        let abs = std::path::absolute(p)?;
        Ok(abs
            .ancestors()
            .filter_map(|a| a.to_str())
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect())
    };
    Ok(match reference {
        ImageRef::Docker(docker) => ("docker", docker.scopes()),
        ImageRef::Oci { path, .. } => ("oci", path_scopes(path)?),
        ImageRef::OciArchive { path, .. } => ("oci-archive", path_scopes(path)?),
        ImageRef::DockerArchive(spec) => {
            let file = spec.split(':').next().unwrap_or(spec);
            ("docker-archive", path_scopes(Path::new(file))?)
        }
        ImageRef::Dir(path) => ("dir", path_scopes(path)?),
        ImageRef::ContainersStorage(spec) => ("containers-storage", vec![spec.clone()]),
        ImageRef::Composefs { .. } => bail!("composefs: is not a source"),
    })
}

/// Checks that the policy at `path` accepts an image of `transport` whose scopes, most
/// specific first, are `scopes`.
pub fn check(path: &Path, transport: &str, scopes: &[String], reference: &str) -> Result<()> {
    let text = std::fs::read(path)
        .with_context(|| format!("Reading the signature policy {}", path.display()))?;
    let policy: Value = serde_json::from_slice(&text)
        .with_context(|| format!("Parsing the signature policy {}", path.display()))?;
    let requirements = requirements_for(&policy, transport, scopes).with_context(|| {
        format!(
            "The signature policy {} has no requirements for {reference}",
            path.display()
        )
    })?;
    let refuse = |reason: String| PolicyRefused {
        reference: reference.to_owned(),
        policy: path.display().to_string(),
        reason,
    };
    let list = requirements
        .as_array()
        .ok_or_else(|| refuse("its requirements are not a list".into()))?;
    if list.is_empty() {
        return Err(refuse("its requirement list is empty".into()).into());
    }
    for requirement in list {
        match requirement["type"].as_str() {
            Some("insecureAcceptAnything") => {}
            Some("reject") => return Err(refuse("the policy rejects it".into()).into()),
            Some(kind @ ("signedBy" | "sigstoreSigned")) => {
                return Err(refuse(format!(
                    "it requires {kind} signatures, which skiff does not verify for {transport}: sources"
                ))
                .into());
            }
            other => return Err(refuse(format!("unknown requirement type {other:?}")).into()),
        }
    }
    Ok(())
}

/// The requirement list that applies: most specific scope, transport default, global default.
fn requirements_for<'a>(
    policy: &'a Value,
    transport: &str,
    scopes: &[String],
) -> Option<&'a Value> {
    if let Some(table) = policy["transports"][transport].as_object() {
        let best = scopes.iter().find_map(|s| table.get(s.as_str()));
        if let Some(found) = best.or_else(|| table.get("")) {
            return Some(found);
        }
    }
    policy.get("default")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(policy: &str, location: &str) -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.json");
        std::fs::write(&path, policy).unwrap();
        let (transport, scopes) = scopes_of(&format!("oci:{location}").parse().unwrap()).unwrap();
        check(&path, transport, &scopes, "oci:/x")
    }

    #[test]
    fn scopes_and_requirements() {
        let accept = r#"{"default":[{"type":"insecureAcceptAnything"}]}"#;
        assert!(eval(accept, "/srv/layout").is_ok());
        let reject = r#"{"default":[{"type":"reject"}]}"#;
        let err = eval(reject, "/srv/layout").unwrap_err().to_string();
        assert!(err.contains("rejects"), "{err}");
        let scoped = r#"{"default":[{"type":"reject"}],
            "transports":{"oci":{"/srv":[{"type":"insecureAcceptAnything"}]}}}"#;
        assert!(eval(scoped, "/srv/layout").is_ok());
        assert!(eval(scoped, "/other/layout").is_err());
        let signed = r#"{"default":[{"type":"signedBy","keyType":"GPGKeys","keyPath":"/k"}]}"#;
        assert!(
            eval(signed, "/srv")
                .unwrap_err()
                .to_string()
                .contains("signedBy")
        );
        assert!(eval(r#"{"default":[]}"#, "/srv").is_err());
        assert!(eval("not json", "/srv").is_err());
    }
}
