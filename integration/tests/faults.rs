//! Registry faults: a connection dropped in the middle of a blob (retried with --retry-times,
//! else a clear error and an untouched store), and a registry stopped during a copy.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use skiff_integration::crash::copy_command;
use skiff_integration::faults::FlakyForwarder;
use skiff_integration::fixtures::{self, Compression};
use skiff_integration::loop_fs::LoopFs;
use skiff_integration::registry::Registry;
use skiff_integration::tools::{cfsctl, output, run, skiff};
use skiff_integration::tree::Tree;

/// A registry holding the `rich` fixture as `rich:v1`, and the fixture's expected tree.
fn registry_with_rich(dir: &Path) -> (Registry, Tree) {
    let layers = fixtures::rich_image();
    let layout = dir.join("layout");
    fixtures::write_oci_layout(&layout, "rich", &layers, Compression::Gzip).unwrap();
    let registry = Registry::start_plain().unwrap();
    registry
        .push(&format!("oci:{}:rich", layout.display()), "rich:v1")
        .unwrap();
    (
        registry,
        Tree::from_layers(&fixtures::layer_tars(&layers).unwrap()).unwrap(),
    )
}

fn copy(host: &str, repo: &Path, extra: &[&str]) -> Output {
    let mut cmd = skiff();
    cmd.args([
        "--insecure-policy",
        "copy",
        "--progress=plain",
        "--src-tls-verify=false",
    ])
    .args(extra);
    cmd.arg(format!("docker://{host}/rich:v1"))
        .arg(format!("composefs:{}:rich", repo.display()));
    output(&mut cmd).unwrap()
}

fn upstream(registry: &Registry) -> SocketAddr {
    registry.host().parse().unwrap()
}

fn assert_untouched(repo: &Path, out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "expected a failure: {stderr}");
    assert!(
        stderr.contains("rich"),
        "the error names the image: {stderr}"
    );
    assert!(
        !repo.join("streams/refs/oci/rich").exists(),
        "no tag after a failed copy"
    );
    run(skiff().arg("fsck").arg(repo)).unwrap();
    run(cfsctl(repo).args(["oci", "fsck"])).unwrap();
}

#[test]
fn dropped_connection_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, expected) = registry_with_rich(dir.path());
    // Cut the first connection that carries more than 256 KiB: the big layer's.
    let flaky = FlakyForwarder::start(upstream(&registry), 256 * 1024, 1).unwrap();
    let repo = dir.path().join("repo");
    let out = copy(&flaky.host(), &repo, &["--retry-times", "3"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(flaky.cuts(), 1, "the fault was injected");
    Tree::from_stored_image(&repo, "rich")
        .unwrap()
        .assert_same(&expected, "after a retry");
    run(cfsctl(&repo).args(["oci", "fsck"])).unwrap();
}

#[test]
fn dropped_connection_without_retries_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, _) = registry_with_rich(dir.path());
    // Every connection that carries more than 256 KiB is cut, however often it is tried.
    let flaky = FlakyForwarder::start(upstream(&registry), 256 * 1024, usize::MAX).unwrap();
    let repo = dir.path().join("repo");
    let out = copy(&flaky.host(), &repo, &[]);
    assert!(flaky.cuts() >= 1);
    assert_untouched(&repo, &out);
    // With retries, a fault that never goes away still fails, after the retries.
    let out = copy(&flaky.host(), &repo, &["--retry-times", "2"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Retrying blob"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_untouched(&repo, &out);
}

#[test]
fn registry_stopped_during_a_copy() {
    let dir = tempfile::tempdir().unwrap();
    // 48 MiB of incompressible data: more than the sockets between registry and skiff buffer,
    // so the registry is still sending when it is stopped.
    let mut layer = fixtures::Layer::default();
    layer
        .add("usr/", fixtures::dir())
        .add("usr/big", fixtures::file(fixtures::noise(77, 48 << 20)));
    let layout = dir.path().join("layout");
    fixtures::write_oci_layout(&layout, "rich", &[layer], Compression::Gzip).unwrap();
    let mut registry = Registry::start_plain().unwrap();
    registry
        .push(&format!("oci:{}:rich", layout.display()), "rich:v1")
        .unwrap();
    // 2 ms per 16 KiB: about 6 s for the layer.
    let slow = FlakyForwarder::start_slow(upstream(&registry), Duration::from_millis(2)).unwrap();
    let repo = dir.path().join("repo");
    let mut cmd = skiff();
    cmd.args([
        "--insecure-policy",
        "copy",
        "--quiet",
        "--src-tls-verify=false",
    ]);
    cmd.arg(format!("docker://{}/rich:v1", slow.host()))
        .arg(format!("composefs:{}:rich", repo.display()));
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    registry.stop();
    let out = child.wait_with_output().unwrap();
    assert_untouched(&repo, &out);
}

#[test]
fn kill_9_mid_copy_leaves_a_consistent_store_and_a_rerun_finishes() {
    let dir = tempfile::tempdir().unwrap();
    // Several layers of real size, read slowly through the registry, so the copy is killed
    // with some layers stored and others in flight.
    let layers = fixtures::by_name("demo-v1").unwrap();
    let expected = Tree::from_layers(&fixtures::layer_tars(&layers).unwrap()).unwrap();
    let layout = dir.path().join("layout");
    fixtures::write_oci_layout(&layout, "app", &layers, Compression::Gzip).unwrap();
    let registry = Registry::start_plain().unwrap();
    registry
        .push(&format!("oci:{}:app", layout.display()), "app:v1")
        .unwrap();
    let slow = FlakyForwarder::start_slow(upstream(&registry), Duration::from_millis(1)).unwrap();
    let repo = dir.path().join("repo");
    let source = format!("docker://{}/app:v1", slow.host());
    let copy_cmd = || copy_command(&source, &repo, "app", 2);
    let mut child = copy_cmd()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !repo.join("streams/refs/oci/app").exists(),
        "killed before the end: no tag"
    );
    run(skiff().arg("fsck").arg(&repo)).unwrap();
    run(cfsctl(&repo).arg("fsck")).unwrap();
    let out = output(&mut copy_cmd()).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Tree::from_stored_image(&repo, "app")
        .unwrap()
        .assert_same(&expected, "after kill -9 and a rerun");
    run(cfsctl(&repo).args(["oci", "fsck"])).unwrap();
}

/// A filesystem that fills up in the middle of a copy: a clear error, no tag, a store that
/// checks clean, and `skiff gc` gives the space back.
#[test]
fn a_full_filesystem_fails_the_copy_and_leaves_the_store_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    // Many small files (written in batches) and some large ones (streamed), 48 MB: more than
    // the 32 MiB filesystem holds.
    let layers = fixtures::large_image(2, 600, 48_000_000, 11);
    fixtures::write_oci_layout(&layout, "big", &layers, Compression::Gzip).unwrap();
    let small = dir.path().join("small");
    fixtures::write_oci_layout(&small, "rich", &fixtures::rich_image(), Compression::Gzip).unwrap();
    let fs = LoopFs::ext4(dir.path(), 32).unwrap();
    let repo = fs.path().join("repo");
    run(skiff().arg("init").arg(&repo)).unwrap();
    run(skiff()
        .arg("copy")
        .arg(format!("oci:{}:rich", small.display()))
        .arg(format!("composefs:{}:rich", repo.display())))
    .unwrap();
    let used_before = fs.used_bytes().unwrap();

    let out = output(
        skiff()
            .arg("copy")
            .arg(format!("oci:{}:big", layout.display()))
            .arg(format!("composefs:{}:big", repo.display())),
    )
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "expected a failure: {stderr}");
    assert!(
        stderr.contains("No space left on device"),
        "the error says why: {stderr}"
    );
    assert!(!repo.join("streams/refs/oci/big").exists(), "no tag");
    assert!(
        repo.join("streams/refs/oci/rich").exists(),
        "the other image stays"
    );
    run(skiff().arg("fsck").arg(&repo)).unwrap();
    run(cfsctl(&repo).args(["oci", "fsck"])).unwrap();

    run(skiff().arg("gc").arg(&repo)).unwrap();
    let used_after = fs.used_bytes().unwrap();
    assert!(
        used_after <= used_before + 1024 * 1024,
        "gc frees what the failed copy wrote: {used_before} bytes used before, {used_after} after"
    );
    let image = run(skiff()
        .args(["inspect", "--raw"])
        .arg(format!("composefs:{}:rich", repo.display())))
    .unwrap();
    assert!(image.contains("schemaVersion"), "{image}");
}
