//! The real programs the tests drive: skiff (built by the workspace), skopeo, cfsctl,
//! docker-registry. Under CI (`CI=true`) a missing program is a test failure, never a skip.

use std::path::PathBuf;
use std::process::{Command, Output};

use anyhow::{Context, Result, bail};

/// The skiff binary: `$SKIFF_BIN`, else the workspace's release build, else its debug build.
pub fn skiff_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SKIFF_BIN") {
        return p.into();
    }
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target");
    for profile in ["release", "debug"] {
        let p = target.join(profile).join("skiff");
        if p.exists() {
            return p;
        }
    }
    panic!(
        "the skiff binary is not built: run `cargo build --release` (make test does) or set SKIFF_BIN"
    );
}

/// Finds `program` on PATH; panics with an install hint when it is missing (tests must not
/// silently pass without the real program).
pub fn require(program: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("{program} is not installed: run contrib/install-deps.sh (make test does)")
    })
}

/// Asserts that a command run as `what` succeeded (its output in the message otherwise);
/// gives its standard error.
pub fn expect_success(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `composefs:REPO:NAME`.
pub fn composefs_ref(repo: &std::path::Path, name: &str) -> String {
    format!("composefs:{}:{name}", repo.display())
}

/// A `Command` for skiff.
pub fn skiff() -> Command {
    let mut c = Command::new(skiff_bin());
    c.env("SKIFF_LOG", "warn");
    c
}

/// Runs a command and returns its output, whatever its status.
pub fn output(cmd: &mut Command) -> Result<Output> {
    cmd.output().with_context(|| format!("running {cmd:?}"))
}

/// Runs a command and fails with its stderr unless it succeeds; returns stdout.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = output(cmd)?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `skiff copy --progress=plain ARGS... SOURCE DEST`, whatever its status: how the end-to-end
/// tests run a copy.
pub fn copy(args: &[&str], source: &str, dest: &str) -> Output {
    output(
        skiff()
            .args(["copy", "--progress=plain"])
            .args(args)
            .args([source, dest]),
    )
    .expect("skiff runs")
}

/// The JSON summary of `skiff copy --progress=json ARGS... SOURCE DEST`, which must succeed.
pub fn copy_summary(args: &[&str], source: &str, dest: &str) -> serde_json::Value {
    let out = output(
        skiff()
            .args(["copy", "--progress=json"])
            .args(args)
            .args([source, dest]),
    )
    .expect("skiff runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "summary")
        .expect("a summary line")
}

/// A `Command` for cfsctl on the repository `repo`.
pub fn cfsctl(repo: &std::path::Path) -> Command {
    let mut c = Command::new(require("cfsctl"));
    c.arg("--repo").arg(repo);
    c
}

/// A `Command` for skopeo that accepts any image (the tests' images are unsigned).
pub fn skopeo() -> Command {
    let mut c = Command::new(require("skopeo"));
    c.arg("--insecure-policy");
    c
}

/// A `Command` for `skiff-peer-copy`: containers/image's copy (the library call behind `skopeo
/// copy`) at the version contrib/go-peers pins, writing current containers/storage zstd:chunked.
pub fn peer_copy() -> Command {
    Command::new(require("skiff-peer-copy"))
}
