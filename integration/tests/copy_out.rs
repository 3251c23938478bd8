//! Copying out of composefs storage (`skiff copy composefs:... DEST`), read back by the real
//! skopeo and cfsctl: with kept blobs the manifest digest is the original's; without, the
//! layers are compressed again, the digest changes (and says so), and the image still
//! round-trips to the same composefs image. Bad requests leave the destination untouched.

use std::path::{Path, PathBuf};

use skiff_integration::fixtures::{self, Compression};
use skiff_integration::registry::Registry;
use skiff_integration::tools::{
    cfsctl, composefs_ref, copy, expect_success, output, run, skiff, skopeo,
};

struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The rich fixture as `oci:layout:v1`, compressed so; returns the reference and the
    /// manifest digest.
    fn source(&self, compression: Compression) -> (String, String) {
        let layout = self.path("layout");
        let written =
            fixtures::write_oci_layout(&layout, "v1", &fixtures::rich_image(), compression)
                .unwrap();
        (
            format!("oci:{}:v1", layout.display()),
            written.manifest_digest,
        )
    }

    /// A repository, created with `skiff init` (and `--keep-blobs` if asked).
    fn repo(&self, name: &str, keep_blobs: bool) -> PathBuf {
        let repo = self.path(name);
        let mut init = skiff();
        init.arg("init").arg(&repo);
        if keep_blobs {
            init.arg("--keep-blobs");
        }
        run(&mut init).unwrap();
        repo
    }
}

/// The manifest digest skopeo reads at `reference`.
fn skopeo_digest(reference: &str, extra: &[&str]) -> String {
    let raw = run(skopeo()
        .args(["inspect", "--raw"])
        .args(extra)
        .arg(reference))
    .unwrap();
    fixtures::digest(raw.as_bytes())
}

fn compute_id(repo: &Path, tag: &str) -> String {
    run(cfsctl(repo).args(["oci", "compute-id", tag]))
        .unwrap()
        .trim()
        .to_owned()
}

/// The `oci-blob-` streams of a repository.
fn kept_blob_streams(repo: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo.join("streams"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("oci-blob-"))
        .collect();
    names.sort();
    names
}

#[test]
fn kept_blobs_give_back_the_original_manifest_digest_to_every_destination() {
    let case = Case::new();
    let (source, digest) = case.source(Compression::Gzip);
    let repo = case.repo("repo", true);
    expect_success(&copy(&[], &source, &composefs_ref(&repo, "app")), "copy in");
    // Every layer's blob is kept and shown as such.
    let images = run(skiff().arg("images").arg(&repo)).unwrap();
    assert!(images.contains("original blobs kept"), "{images}");
    assert!(
        images
            .lines()
            .any(|l| l.starts_with("app ") && l.contains(" kept ")),
        "{images}"
    );
    let layers = fixtures::rich_image().len();
    assert_eq!(kept_blob_streams(&repo).len(), layers);

    let layout = case.path("out");
    let archive = case.path("out.tar");
    let dir = case.path("out-dir");
    for dest in [
        format!("oci:{}:v1", layout.display()),
        format!("oci-archive:{}:v1", archive.display()),
    ] {
        let notes = expect_success(
            &copy(&["--preserve-digests"], &composefs_ref(&repo, "app"), &dest),
            &dest,
        );
        assert!(!notes.contains("digest changed"), "{notes}");
        assert_eq!(skopeo_digest(&dest, &[]), digest, "{dest}");
    }
    // Byte for byte: every blob of the copy is the source layout's.
    let manifest = fixtures::layout_manifest(&layout, "v1").unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        let d = layer["digest"].as_str().unwrap();
        assert_eq!(
            std::fs::read(fixtures::blob_path(&layout, d)).unwrap(),
            std::fs::read(fixtures::blob_path(&case.path("layout"), d)).unwrap()
        );
    }
    // skopeo's dir: format, read back by skopeo and copied on with the same digest.
    expect_success(
        &copy(
            &[],
            &composefs_ref(&repo, "app"),
            &format!("dir:{}", dir.display()),
        ),
        "copy to dir:",
    );
    let again = case.path("from-dir");
    run(skopeo().args([
        "copy",
        "--preserve-digests",
        &format!("dir:{}", dir.display()),
        &format!("oci:{}:v1", again.display()),
    ]))
    .unwrap();
    assert_eq!(
        skopeo_digest(&format!("oci:{}:v1", again.display()), &[]),
        digest
    );
    run(cfsctl(&repo).args(["oci", "fsck"])).unwrap();
}

#[test]
fn kept_blobs_live_and_die_with_their_image_under_either_gc() {
    let case = Case::new();
    let (source, _) = case.source(Compression::Gzip);
    let repo = case.repo("repo", false);
    // The setting off, the flag on: blobs are kept all the same.
    expect_success(
        &copy(&["--keep-blobs"], &source, &composefs_ref(&repo, "app")),
        "copy in",
    );
    let kept = kept_blob_streams(&repo);
    assert_eq!(kept.len(), fixtures::rich_image().len());
    for gc in [
        &mut *skiff().arg("gc").arg(&repo),
        &mut *cfsctl(&repo).args(["gc"]),
    ] {
        run(gc).unwrap();
        assert_eq!(kept_blob_streams(&repo), kept, "a gc removed a kept blob");
    }
    let out = case.path("out");
    expect_success(
        &copy(
            &["--preserve-digests"],
            &composefs_ref(&repo, "app"),
            &format!("oci:{}:v1", out.display()),
        ),
        "copy out after gc",
    );
    let blob_object = kept_blob_object(&repo, &kept[0]);
    run(skiff().arg("rm").arg(composefs_ref(&repo, "app"))).unwrap();
    run(cfsctl(&repo).args(["gc"])).unwrap();
    run(cfsctl(&repo).args(["oci", "fsck"])).unwrap();
    assert!(kept_blob_streams(&repo).is_empty());
    assert!(
        !blob_object.exists(),
        "cfsctl gc left the blob of the removed image"
    );
}

#[test]
fn a_layer_stored_without_its_blob_is_fetched_again_to_keep_it() {
    let case = Case::new();
    let (source, digest) = case.source(Compression::Zstd);
    let repo = case.repo("repo", false);
    expect_success(&copy(&[], &source, &composefs_ref(&repo, "app")), "copy in");
    assert!(kept_blob_streams(&repo).is_empty());
    let summary = skiff_integration::tools::copy_summary(
        &["--keep-blobs"],
        &source,
        &composefs_ref(&repo, "app"),
    );
    assert_eq!(summary["layers_skipped"], 0, "{summary}");
    // The stored manifest gained its references to the blobs: they outlive a gc.
    run(cfsctl(&repo).args(["gc"])).unwrap();
    assert_eq!(kept_blob_streams(&repo).len(), fixtures::rich_image().len());
    let out = format!("oci:{}:v1", case.path("out").display());
    expect_success(
        &copy(&["--preserve-digests"], &composefs_ref(&repo, "app"), &out),
        "copy out",
    );
    assert_eq!(skopeo_digest(&out, &[]), digest);
}

#[test]
fn without_kept_blobs_layers_are_compressed_again_and_round_trip() {
    let case = Case::new();
    let (source, digest) = case.source(Compression::ZstdChunked);
    let repo = case.repo("repo", false);
    expect_success(&copy(&[], &source, &composefs_ref(&repo, "app")), "copy in");

    // --preserve-digests refuses, and writes nothing.
    let layout = case.path("out");
    let dest = format!("oci:{}:v1", layout.display());
    let refused = copy(&["--preserve-digests"], &composefs_ref(&repo, "app"), &dest);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("--preserve-digests"), "{message}");
    assert!(message.contains("--keep-blobs"), "{message}");
    assert!(!layout.exists(), "a refused copy created the layout");

    for (format, media_type) in [
        ("gzip", "application/vnd.oci.image.layer.v1.tar+gzip"),
        ("zstd", "application/vnd.oci.image.layer.v1.tar+zstd"),
    ] {
        let dest = format!("oci:{}:{format}", layout.display());
        let notes = expect_success(
            &copy(
                &["--dest-compress-format", format],
                &composefs_ref(&repo, "app"),
                &dest,
            ),
            format,
        );
        assert!(notes.contains("the manifest digest changed"), "{notes}");
        let new_digest = skopeo_digest(&dest, &[]);
        assert_ne!(new_digest, digest);
        let manifest = fixtures::layout_manifest(&layout, format).unwrap();
        for layer in manifest["layers"].as_array().unwrap() {
            assert_eq!(layer["mediaType"], media_type, "{manifest}");
            // The zstd:chunked annotations described the old blob.
            assert!(layer.get("annotations").is_none(), "{manifest}");
        }
        // skopeo checks every blob as it copies; the image comes back as the same composefs
        // image.
        let copied = case.path(&format!("copied-{format}"));
        run(skopeo().args(["copy", &dest, &format!("oci:{}:x", copied.display())])).unwrap();
        let back = case.repo(&format!("back-{format}"), false);
        expect_success(
            &copy(&[], &dest, &composefs_ref(&back, "app")),
            "copy back in",
        );
        assert_eq!(compute_id(&back, "app"), compute_id(&repo, "app"));
    }
}

#[test]
fn copy_out_to_a_registry_and_back() {
    let case = Case::new();
    let registry = Registry::start_plain().unwrap();
    let (source, digest) = case.source(Compression::Gzip);
    let repo = case.repo("repo", true);
    expect_success(&copy(&[], &source, &composefs_ref(&repo, "app")), "copy in");
    let dest = registry.docker_ref("mirror/app:v1");
    expect_success(
        &copy(
            &["--dest-tls-verify=false", "--preserve-digests"],
            &composefs_ref(&repo, "app"),
            &dest,
        ),
        "push",
    );
    assert_eq!(skopeo_digest(&dest, &["--tls-verify=false"]), digest);
    // Without a tag, as skopeo: `latest`.
    expect_success(
        &copy(
            &["--dest-tls-verify=false"],
            &composefs_ref(&repo, "app"),
            &registry.docker_ref("mirror/untagged"),
        ),
        "push without a tag",
    );
    assert_eq!(
        skopeo_digest(
            &registry.docker_ref("mirror/untagged:latest"),
            &["--tls-verify=false"]
        ),
        digest
    );
    // A second push finds every blob there.
    let summary = output(
        skiff()
            .args(["copy", "--progress=json", "--dest-tls-verify=false"])
            .arg(composefs_ref(&repo, "app"))
            .arg(&dest),
    )
    .unwrap();
    let summary = String::from_utf8_lossy(&summary.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "summary")
        .expect("a summary");
    assert_eq!(summary["blobs_skipped"], fixtures::rich_image().len() + 1);
    // And back into another repository, the same image.
    let back = case.repo("back", false);
    expect_success(
        &copy(
            &["--src-tls-verify=false"],
            &dest,
            &composefs_ref(&back, "app"),
        ),
        "pull",
    );
    assert_eq!(compute_id(&back, "app"), compute_id(&repo, "app"));
}

#[test]
fn copy_out_into_podman_storage() {
    let case = Case::new();
    let (source, digest) = case.source(Compression::Gzip);
    let repo = case.repo("repo", true);
    expect_success(&copy(&[], &source, &composefs_ref(&repo, "app")), "copy in");
    let storage = format!(
        "containers-storage:[vfs@{}+{}]localhost/app:v1",
        case.path("root").display(),
        case.path("runroot").display()
    );
    expect_success(
        &copy(&[], &composefs_ref(&repo, "app"), &storage),
        "copy to containers-storage",
    );
    let inspect = run(skopeo().args(["inspect"]).arg(&storage)).unwrap();
    let inspect: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(inspect["Digest"], digest, "{inspect}");
}

#[test]
fn bad_copy_out_requests_are_refused_by_name() {
    let case = Case::new();
    let (source, _) = case.source(Compression::Gzip);
    let repo = case.repo("repo", false);
    expect_success(&copy(&[], &source, &composefs_ref(&repo, "app")), "copy in");
    let from = composefs_ref(&repo, "app");
    let archive = case.path("out.docker.tar");
    for (args, dest, expected) in [
        (
            vec![],
            format!("docker-archive:{}", archive.display()),
            "skiff copies images out of composefs storage to oci:",
        ),
        (
            vec![],
            composefs_ref(&case.path("other"), "app"),
            "from one composefs repository to another",
        ),
        (
            vec!["--dest-compress-format", "lz4"],
            format!("oci:{}", case.path("a").display()),
            "--dest-compress-format \"lz4\": unknown compression format",
        ),
        (
            vec!["--src-creds", "u:p"],
            format!("oci:{}", case.path("a").display()),
            "--src-creds has no meaning when the source is composefs storage",
        ),
        (
            vec![],
            format!(
                "oci:{}:@sha256:{}",
                case.path("a").display(),
                "0".repeat(64)
            ),
            "named by a tag, not a digest",
        ),
    ] {
        let out = copy(&args, &from, &dest);
        assert!(!out.status.success(), "{dest} was accepted");
        let message = String::from_utf8_lossy(&out.stderr);
        assert!(message.contains(expected), "{dest}: {message}");
    }
    assert!(!archive.exists() && !case.path("a").exists() && !case.path("other").exists());
    // The destination flags mean nothing when copying in.
    let out = copy(
        &["--preserve-digests"],
        &source,
        &composefs_ref(&repo, "again"),
    );
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(
        message.contains("--preserve-digests applies when copying out of composefs storage"),
        "{message}"
    );
    // An image the store does not have.
    let out = copy(
        &[],
        &composefs_ref(&repo, "missing"),
        &format!("oci:{}", case.path("m").display()),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    assert!(!case.path("m").exists());
}

#[test]
fn a_damaged_kept_blob_fails_the_copy_and_writes_no_manifest() {
    let case = Case::new();
    let (source, _) = case.source(Compression::Gzip);
    let repo = case.repo("repo", true);
    expect_success(&copy(&[], &source, &composefs_ref(&repo, "app")), "copy in");
    // Damage one kept blob's object in place (an insecure repository does not notice on
    // open), keeping its size.
    let layer_object = kept_blob_object(&repo, &kept_blob_streams(&repo)[0]);
    let mut bytes = std::fs::read(&layer_object).unwrap();
    let last = bytes.len() - 1;
    bytes[last / 2] ^= 0xff;
    std::fs::write(&layer_object, &bytes).unwrap();

    for dest in [
        format!("oci:{}:v1", case.path("out").display()),
        format!("oci-archive:{}:v1", case.path("out.tar").display()),
    ] {
        let out = copy(&[], &composefs_ref(&repo, "app"), &dest);
        assert!(
            !out.status.success(),
            "{dest}: a damaged blob was copied out"
        );
        let message = String::from_utf8_lossy(&out.stderr);
        assert!(message.contains("the store is damaged"), "{message}");
    }
    assert!(!case.path("out").join("index.json").exists());
    assert!(!case.path("out.tar").exists());
}

/// The object holding the kept blob of the stream `stream` (`oci-blob-sha256:HEX`): the one
/// file in `objects/` with the bytes of the source layout's blob.
fn kept_blob_object(repo: &Path, stream: &str) -> PathBuf {
    let hex = stream.trim_start_matches("oci-blob-sha256:");
    let blob = std::fs::read(repo.parent().unwrap().join("layout/blobs/sha256").join(hex)).unwrap();
    let mut found = Vec::new();
    collect_by_size(&repo.join("objects"), blob.len() as u64, &mut found);
    found.retain(|p| std::fs::read(p).unwrap() == blob);
    assert_eq!(found.len(), 1, "objects holding blob {hex}: {found:?}");
    found.remove(0)
}

fn collect_by_size(dir: &Path, size: u64, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()) {
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            collect_by_size(&entry.path(), size, found);
        } else if meta.len() == size {
            found.push(entry.path());
        }
    }
}
