//! End to end against a real registry (docker-registry), real skopeo and real cfsctl:
//! skiff copies `docker://` images over plain HTTP and over TLS with authentication, and fails
//! cleanly, leaving no tag, on bad credentials, an unknown CA and a missing image.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use skiff_integration::fixtures::{Compression, rich_image, write_oci_layout};
use skiff_integration::registry::Registry;
use skiff_integration::tools::{cfsctl, copy, require, run, skiff};

const USER: &str = "skiff-user";
const PASSWORD: &str = "s3cret pass:word";

/// A work directory holding the `rich` fixture as an OCI layout (tag `rich`).
struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new() -> Work {
        let dir = tempfile::Builder::new()
            .prefix("skiff-registry-test-")
            .tempdir()
            .unwrap();
        write_oci_layout(
            &dir.path().join("layout"),
            "rich",
            &rich_image(),
            Compression::Gzip,
        )
        .unwrap();
        Work { dir }
    }

    /// `oci:LAYOUT:rich`.
    fn layout_ref(&self) -> String {
        format!("oci:{}:rich", self.dir.path().join("layout").display())
    }

    /// A path for a (not yet existing) repository.
    fn repo(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// `skiff copy --insecure-policy --quiet ARGS... SOURCE composefs:REPO:rich`.
fn copy_rich(args: &[&str], source: &str, repo: &Path) -> Output {
    let args = [&["--insecure-policy", "--quiet"], args].concat();
    copy(&args, source, &format!("composefs:{}:rich", repo.display()))
}

/// Fails with the whole output unless `out` is a success.
fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Checks the exit code and that stderr contains one of `words` (case-insensitive); returns stderr.
fn assert_failure(out: &Output, code: i32, words: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit code {code}; stderr: {stderr}"
    );
    let lower = stderr.to_lowercase();
    assert!(
        words.iter().any(|w| lower.contains(w)),
        "stderr mentions none of {words:?}: {stderr}"
    );
    stderr
}

/// The composefs image id of the stored image `rich`, from cfsctl.
fn compute_id(repo: &Path) -> String {
    let id = run(cfsctl(repo).args(["oci", "compute-id", "rich"])).unwrap();
    let id = id.trim().to_owned();
    assert!(!id.is_empty(), "cfsctl oci compute-id printed nothing");
    id
}

/// Checks that `repo` holds a complete `rich` that cfsctl accepts.
fn assert_stored(repo: &Path) {
    run(cfsctl(repo).args(["oci", "fsck"])).unwrap();
    assert!(
        repo.join("streams/refs/oci/rich").exists(),
        "no tag rich in {}",
        repo.display()
    );
}

/// Checks that `repo` (if skiff created it) has no image tagged `rich`.
fn assert_no_tag(repo: &Path) {
    assert!(
        !repo.join("streams/refs/oci/rich").exists(),
        "a tag rich was left in {}",
        repo.display()
    );
    if repo.join("meta.json").exists() {
        let json = run(skiff().arg("images").arg(repo).arg("--json")).unwrap();
        let list: serde_json::Value = serde_json::from_str(&json).unwrap();
        let list = list
            .as_array()
            .expect("skiff images --json prints an array");
        assert!(
            list.iter().all(|i| i["name"] != "rich"),
            "skiff images lists rich: {json}"
        );
    }
}

#[test]
fn plain_registry_copy_matches_layout_copy_and_cfsctl_pull() {
    let work = Work::new();
    let registry = Registry::start_plain().unwrap();
    let source = registry.push(&work.layout_ref(), "rich:v1").unwrap();
    assert_eq!(source, format!("docker://{}/rich:v1", registry.host()));

    let repo = work.repo("from-registry");
    assert_success(
        &copy_rich(&["--src-tls-verify=false"], &source, &repo),
        "skiff copy from the registry",
    );
    assert_stored(&repo);
    let from_registry = compute_id(&repo);

    // The same image straight from the layout: same composefs image.
    let repo = work.repo("from-layout");
    assert_success(
        &copy_rich(&[], &work.layout_ref(), &repo),
        "skiff copy from the layout",
    );
    assert_stored(&repo);
    assert_eq!(
        compute_id(&repo),
        from_registry,
        "registry and layout copies differ"
    );

    // cfsctl's own pull of the layout: same composefs image.
    let repo = work.repo("cfsctl-pull");
    run(Command::new(require("cfsctl"))
        .args(["init", "--insecure"])
        .arg(&repo))
    .unwrap();
    run(cfsctl(&repo).args(["oci", "pull", &work.layout_ref(), "rich"])).unwrap();
    assert_eq!(
        compute_id(&repo),
        from_registry,
        "skiff and cfsctl pull differ"
    );
}

#[test]
fn tls_auth_registry_with_creds_authfile_and_no_verify() {
    let work = Work::new();
    let registry = Registry::start_tls_auth(USER, PASSWORD).unwrap();
    let source = registry.push(&work.layout_ref(), "rich:v1").unwrap();
    let cert_dir = registry.cert_dir().unwrap().to_str().unwrap().to_owned();
    let (user, password) = registry.creds().unwrap();
    let creds = format!("{user}:{password}");
    let authfile = registry.authfile().unwrap();
    let authfile = authfile.to_str().unwrap();

    let cases: [(&str, Vec<&str>); 5] = [
        (
            "creds",
            vec!["--src-creds", &creds, "--src-cert-dir", &cert_dir],
        ),
        (
            "username",
            vec![
                "--src-username",
                &user,
                "--src-password",
                &password,
                "--src-cert-dir",
                &cert_dir,
            ],
        ),
        (
            "src-authfile",
            vec![
                "--authfile",
                "/nonexistent/auth.json",
                "--src-authfile",
                authfile,
                "--src-cert-dir",
                &cert_dir,
            ],
        ),
        (
            "authfile",
            vec!["--authfile", authfile, "--src-cert-dir", &cert_dir],
        ),
        (
            "no-verify",
            vec!["--src-tls-verify=false", "--src-creds", &creds],
        ),
    ];
    let mut ids = Vec::new();
    for (name, args) in &cases {
        let repo = work.repo(name);
        assert_success(
            &copy_rich(args, &source, &repo),
            &format!("skiff copy with {name}"),
        );
        assert_stored(&repo);
        ids.push(compute_id(&repo));
    }
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "the copies differ: {ids:?}"
    );
    // Anonymous access to a registry that requires credentials is refused.
    let repo = work.repo("anonymous");
    let out = copy_rich(
        &[
            "--src-no-creds",
            "--authfile",
            authfile,
            "--src-cert-dir",
            &cert_dir,
        ],
        &source,
        &repo,
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!repo.join("streams/refs/oci/rich").exists());
}

#[test]
fn wrong_password_fails_without_tag() {
    let work = Work::new();
    let registry = Registry::start_tls_auth(USER, PASSWORD).unwrap();
    let source = registry.push(&work.layout_ref(), "rich:v1").unwrap();
    let cert_dir = registry.cert_dir().unwrap().to_str().unwrap().to_owned();
    let repo = work.repo("repo");
    let creds = format!("{USER}:not-the-password");
    let out = copy_rich(
        &["--src-creds", &creds, "--src-cert-dir", &cert_dir],
        &source,
        &repo,
    );
    assert_failure(&out, 1, &["unauthorized", "authentication required"]);
    assert_no_tag(&repo);

    // Without any credentials: refused too.
    let out = copy_rich(&["--src-cert-dir", &cert_dir], &source, &repo);
    assert_failure(&out, 1, &["unauthorized", "authentication required"]);
    assert_no_tag(&repo);
}

#[test]
fn unknown_ca_fails() {
    let work = Work::new();
    let registry = Registry::start_tls_auth(USER, PASSWORD).unwrap();
    let source = registry.push(&work.layout_ref(), "rich:v1").unwrap();
    let repo = work.repo("repo");
    let creds = format!("{USER}:{PASSWORD}");
    let stderr = assert_failure(
        &copy_rich(&["--src-creds", &creds], &source, &repo),
        1,
        &["x509", "certificate"],
    );
    assert!(
        !stderr.contains(PASSWORD),
        "stderr shows the password: {stderr}"
    );
    // --src-tls-verify=true is the default made explicit.
    let out = copy_rich(
        &["--src-creds", &creds, "--src-tls-verify=true"],
        &source,
        &repo,
    );
    assert_failure(&out, 1, &["x509", "certificate"]);
    assert_no_tag(&repo);
}

#[test]
fn missing_image_exits_2() {
    let work = Work::new();
    let registry = Registry::start_plain().unwrap();
    registry.push(&work.layout_ref(), "rich:v1").unwrap();
    let repo = work.repo("repo");
    for missing in ["nope:v1", "rich:nope"] {
        let out = copy_rich(
            &["--src-tls-verify=false"],
            &registry.docker_ref(missing),
            &repo,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{missing}: expected exit code 2; stderr: {stderr}"
        );
        assert_no_tag(&repo);
    }
}

#[test]
fn stopped_registry_fails_and_stop_is_idempotent() {
    let work = Work::new();
    let mut registry = Registry::start_plain().unwrap();
    let source = registry.push(&work.layout_ref(), "rich:v1").unwrap();
    registry.stop();
    registry.stop();
    let repo = work.repo("repo");
    let out = copy_rich(&["--src-tls-verify=false"], &source, &repo);
    assert_failure(&out, 1, &["connection refused", "connect"]);
    assert_no_tag(&repo);
}
