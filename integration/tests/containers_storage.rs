//! `containers-storage:` read natively: images podman 4.3.1 pulled come into the store from
//! podman's overlay store (tar-split plus `diff/`, contents cloned on XFS), identical to the
//! same image pulled from the registry; the store is found as c/storage finds it; what skiff
//! cannot read natively goes to skopeo with the reason said; a damaged layer is refused with
//! nothing tagged.

use std::path::Path;
use std::process::Output;

use skiff_integration::fixtures::{self, Compression, Layer, file};
use skiff_integration::loop_fs::LoopXfs;
use skiff_integration::podman::Podman;
use skiff_integration::registry::Registry;
use skiff_integration::tools::{cfsctl, composefs_ref, copy, expect_success, run, skiff};

/// The runnable image with, between its two layers, the base layer of the rich image (xattrs,
/// long names, special files) and a payload layer of incompressible files. (The rich image's
/// upper layer hard-links a file of the layer below, which podman cannot unpack.)
fn image() -> Vec<Layer> {
    let mut layers = fixtures::runnable_image();
    let top = layers.pop().unwrap();
    layers.push(fixtures::rich_image().remove(0));
    let mut payload = Layer::default();
    payload.add("payload/", fixtures::dir());
    for i in 0..8 {
        payload.add(
            format!("payload/blob-{i}.bin"),
            file(fixtures::noise(500 + i, 1024 * 1024)),
        );
    }
    payload.add("payload/small", file("tiny\n"));
    layers.push(payload);
    layers.push(top);
    layers
}

/// A registry holding `image()` as `app:v1`, and a podman (its storage under `base`) that
/// pulled it: returns them and the name podman knows the image by.
fn pulled(dir: &Path, base: &Path) -> (Registry, Podman, String) {
    let registry = Registry::start_plain().unwrap();
    let layout = dir.join("layout");
    fixtures::write_oci_layout(&layout, "v1", &image(), Compression::Gzip).unwrap();
    registry
        .push(&format!("oci:{}:v1", layout.display()), "app:v1")
        .unwrap();
    let podman = Podman::new(&base.join("podman")).unwrap();
    let name = format!("{}/app:v1", registry.host());
    podman.ok(&["pull", "--quiet", "--tls-verify=false", &name]);
    (registry, podman, name)
}

/// `[overlay@ROOT+RUNROOT]NAME`: the store named in the reference.
fn explicit(podman: &Podman, name: &str) -> String {
    format!(
        "containers-storage:[overlay@{}+{}]{name}",
        podman.root().display(),
        podman.root().with_file_name("run").display()
    )
}

fn init(repo: &Path) {
    run(skiff().args(["init", "--hash", "sha256"]).arg(repo)).unwrap();
}

fn images_json(repo: &Path) -> serde_json::Value {
    serde_json::from_str(&run(skiff().args(["images", "--json"]).arg(repo)).unwrap()).unwrap()
}

fn compute_id(repo: &Path, tag: &str) -> String {
    run(cfsctl(repo).args(["oci", "compute-id", tag])).unwrap()
}

fn summary_line<'a>(out: &'a Output, prefix: &str) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.trim_start().starts_with(prefix))
        .unwrap_or_else(|| {
            panic!(
                "no {prefix} line in {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
        .to_owned()
}

#[test]
fn podman_images_come_in_natively_as_they_would_from_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let xfs = LoopXfs::new(dir.path(), 1024).unwrap();
    let base = xfs.path();
    let (registry, podman, name) = pulled(dir.path(), base);
    let repo = base.join("repo");
    init(&repo);

    let used = || {
        // Settled: delayed allocations and preallocations released.
        std::process::Command::new("sync").status().unwrap();
        xfs.used_bytes().unwrap() as i64
    };
    let before = used();
    let out = copy(
        &[],
        &explicit(&podman, &name),
        &composefs_ref(&repo, "local"),
    );
    expect_success(&out, "skiff copy containers-storage:");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("skopeo"), "read through skopeo: {stderr}");
    let unpacked = summary_line(&out, "unpacked");
    assert!(unpacked.contains("4 layers"), "{unpacked}");
    assert!(unpacked.ends_with("copied 0 B"), "{unpacked}");
    // The payload's 8 MiB are clones: the filesystem grows by far less.
    let grown = used() - before;
    assert!(
        grown < 3 * 1024 * 1024,
        "the copy added {grown} bytes to the filesystem"
    );

    // The same image from the registry: same manifest digest, same composefs image.
    let theirs = dir.path().join("from-registry");
    init(&theirs);
    let out = copy(
        &["--src-tls-verify=false"],
        &registry.docker_ref("app:v1"),
        &composefs_ref(&theirs, "remote"),
    );
    expect_success(&out, "skiff copy docker://");
    let (ours, remote) = (images_json(&repo), images_json(&theirs));
    assert_eq!(ours[0]["digest"], remote[0]["digest"], "{ours} {remote}");
    assert_eq!(compute_id(&repo, "local"), compute_id(&theirs, "remote"));
    run(cfsctl(&repo).args(["oci", "fsck"])).unwrap();

    // podman removing its image takes nothing from the store's.
    podman.ok(&["rmi", &name]);
    run(skiff().args(["fsck"]).arg(&repo)).unwrap();
    let mounted =
        run(skiff().args(["inspect", &format!("composefs:{}:local", repo.display())])).unwrap();
    assert!(
        mounted.contains(ours[0]["digest"].as_str().unwrap()),
        "{mounted}"
    );
}

#[test]
fn the_store_is_found_by_flag_or_storage_conf_and_stored_layers_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (_registry, podman, name) = pulled(dir.path(), dir.path());
    let repo = dir.path().join("repo");
    init(&repo);
    let root = podman.root().to_str().unwrap().to_owned();
    let out = copy(
        &["--storage-root", &root],
        &format!("containers-storage:{name}"),
        &composefs_ref(&repo, "by-flag"),
    );
    expect_success(&out, "skiff copy --storage-root");
    // Not on XFS here: the contents are copied, with a warning saying why.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot clone"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // storage.conf's graphroot, and the short name podman resolves: nothing left to import.
    let out = copy_with_env(
        &[("CONTAINERS_STORAGE_CONF", podman.storage_conf())],
        "containers-storage:app:v1",
        &composefs_ref(&repo, "by-conf"),
    );
    expect_success(&out, "skiff copy with storage.conf");
    let layers = summary_line(&out, "layers");
    assert!(layers.contains("4 skipped"), "{layers}");
    let images = images_json(&repo);
    assert_eq!(images[0]["digest"], images[1]["digest"], "{images}");
}

fn copy_with_env(env: &[(&str, &Path)], source: &str, dest: &str) -> Output {
    let mut cmd = skiff();
    cmd.args(["copy", "--progress=plain", source, dest]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn what_skiff_cannot_read_natively_or_at_all_is_said_and_nothing_is_tagged() {
    let dir = tempfile::tempdir().unwrap();
    let (_registry, podman, name) = pulled(dir.path(), dir.path());
    let repo = dir.path().join("repo");
    init(&repo);
    let dest = composefs_ref(&repo, "app");

    // No such image: exit code 2, as skopeo's "not found".
    let out = copy(&[], &explicit(&podman, "localhost/nothing:here"), &dest);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{out:?}"
    );
    // No store there at all.
    let out = copy(
        &[],
        "containers-storage:[overlay@/nonexistent/store]app:v1",
        &dest,
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    // Another driver: skopeo reads it, and skiff says why.
    let vfs = explicit(&podman, &name).replace("[overlay@", "[vfs@");
    let out = copy(&[], &vfs, &dest);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("uses the vfs driver") && stderr.contains("through skopeo instead"),
        "{stderr}"
    );

    // A file of a layer's diff/ changed in place: its tar-split CRC-64 no longer matches.
    let big = find_file(podman.root(), "blob-3.bin").expect("the payload file in diff/");
    let mut bytes = std::fs::read(&big).unwrap();
    bytes[4096] ^= 0xff;
    std::fs::write(&big, &bytes).unwrap();
    let out = copy(&[], &explicit(&podman, &name), &dest);
    assert!(!out.status.success(), "a damaged layer was copied");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("CRC-64 mismatch"), "{stderr}");
    assert_eq!(images_json(&repo), serde_json::json!([]));

    // A layer without its tar-split: the reason, then skopeo's path.
    let layers = podman.root().join("overlay-layers");
    let split = std::fs::read_dir(&layers)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".tar-split.gz"))
        .unwrap();
    std::fs::remove_file(&split).unwrap();
    let out = copy(&[], &explicit(&podman, &name), &dest);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("has no tar-split") && stderr.contains("through skopeo instead"),
        "{stderr}"
    );
    if !out.status.success() {
        assert_eq!(images_json(&repo), serde_json::json!([]));
    }
}

/// The first file named `name` below `dir`.
fn find_file(dir: &Path, name: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()? {
        let entry = entry.ok()?;
        let path = entry.path();
        let kind = entry.file_type().ok()?;
        if kind.is_dir() {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        } else if kind.is_file() && entry.file_name() == name {
            return Some(path);
        }
    }
    None
}
