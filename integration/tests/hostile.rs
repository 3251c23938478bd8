//! Hostile inputs: each is refused with a short error that names the check that failed, and the
//! store is left as it was (no tag, `skiff fsck` and `cfsctl oci fsck` clean); or, where the
//! input is legal, it is copied as cfsctl copies it.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::json;
use skiff_integration::deltas::{replace_tar_diff, tar_diff};
use skiff_integration::fixtures::{self, Compression, Layer, Node, dir, file, noise};
use skiff_integration::registry::Registry;
use skiff_integration::tools::{cfsctl, copy, output, run, skiff};

/// Longest error message accepted: a few lines, whatever the input's names.
const MAX_MESSAGE: usize = 4096;

fn oci(layout: &Path, tag: &str) -> String {
    format!("oci:{}:{tag}", layout.display())
}

fn composefs(repo: &Path, tag: &str) -> String {
    format!("composefs:{}:{tag}", repo.display())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_copied(out: &Output) {
    assert!(out.status.success(), "{}", stderr(out));
}

/// Both fsck's pass on `repo` (when the copy created it).
fn assert_clean(repo: &Path) {
    if repo.join("meta.json").exists() {
        run(skiff().arg("fsck").arg(repo)).unwrap();
        run(cfsctl(repo).args(["oci", "fsck"])).unwrap();
    }
}

/// The copy failed with exit status 1 and a short message containing `expected`; `tag` was not
/// created and the repository is consistent. Returns the message.
fn assert_refused(out: &Output, repo: &Path, tag: &str, expected: &str) -> String {
    let message = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{message}");
    assert!(
        message.contains(expected),
        "expected {expected:?} in: {message}"
    );
    assert!(
        message.len() <= MAX_MESSAGE,
        "a {}-byte message: {}...",
        message.len(),
        &message[..message.len().min(600)]
    );
    assert!(!repo.join("streams/refs/oci").join(tag).exists(), "no tag");
    assert_clean(repo);
    message
}

/// `usr/` and `depth - 1` nested directories below it (each with its own entry), and a file at
/// the bottom: `depth` directories in all.
fn deep_layer(depth: usize) -> Layer {
    let mut layer = Layer::default();
    let mut path = String::from("usr/");
    layer.add(&path, dir());
    for _ in 1..depth {
        path.push_str("d/");
        layer.add(&path, dir());
    }
    layer.add(format!("{path}bottom"), file("the bottom\n"));
    layer
}

/// compute-id of `tag` in `repo`, by cfsctl.
fn compute_id(repo: &Path, tag: &str) -> String {
    run(cfsctl(repo).args(["oci", "compute-id", tag])).unwrap()
}

#[test]
fn deep_trees_are_copied_as_cfsctl_copies_them() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    // Past the 5,000 levels that overflowed a 2 MiB thread stack; cfsctl imports 20,000.
    fixtures::write_oci_layout(&layout, "deep", &[deep_layer(6_000)], Compression::Gzip).unwrap();
    let repo = tmp.path().join("repo");
    assert_copied(&copy(&[], &oci(&layout, "deep"), &composefs(&repo, "deep")));
    let theirs = tmp.path().join("theirs");
    run(cfsctl(&theirs).arg("init").arg("--insecure").arg(&theirs)).unwrap();
    run(cfsctl(&theirs).args(["oci", "pull", &oci(&layout, "deep"), "deep"])).unwrap();
    assert_eq!(compute_id(&repo, "deep"), compute_id(&theirs, "deep"));
    assert_clean(&repo);

    // composefs' EROFS reader stops at 2,048 levels: an update of the deep image, pulled
    // partially, goes without the old image's tree; a delta from it says why it cannot be made.
    let v2 = fixtures::by_name("demo-v2").unwrap();
    fixtures::write_oci_layout(&layout, "v2", &v2, Compression::ZstdChunked).unwrap();
    assert_copied(&copy(&[], &oci(&layout, "v2"), &composefs(&repo, "deep")));
    assert_copied(&copy(&[], &oci(&layout, "deep"), &composefs(&repo, "deep")));
    let out = output(skiff().args([
        "delta",
        "create",
        &composefs(&repo, "deep"),
        &oci(&layout, "v2"),
        &oci(&tmp.path().join("delta"), "d"),
    ]))
    .unwrap();
    let message = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{message}");
    assert!(message.contains("2048"), "{message}");
    assert!(
        message.len() <= MAX_MESSAGE,
        "a {}-byte message",
        message.len()
    );
    assert_clean(&repo);
}

#[test]
fn trees_deeper_than_the_limit_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let depth = skiff_storage::tree_path::MAX_PATH_DEPTH;
    let mut layer = Layer::default();
    layer.add(format!("usr/{}f", "d/".repeat(depth)), file("x"));
    fixtures::write_oci_layout(&layout, "deeper", &[layer], Compression::Gzip).unwrap();
    let repo = tmp.path().join("repo");
    let out = copy(&[], &oci(&layout, "deeper"), &composefs(&repo, "deeper"));
    assert_refused(
        &out,
        &repo,
        "deeper",
        &format!("more than {depth} directories deep"),
    );
}

/// A layer tar, and the layout blobs of a manifest with it twice under one DiffID: gzip, then
/// `second` (media type, bytes).
fn same_diff_id_twice(layout: &Path, second: (&str, Vec<u8>)) -> (String, String) {
    let mut layer = Layer::default();
    layer
        .add("usr/", dir())
        .add("usr/a", file(noise(5, 10_000)));
    let tar = fixtures::layer_tar(&layer).unwrap();
    let diff_id = fixtures::digest(&tar);
    let gzip = fixtures::compress_tar(&tar, Compression::Gzip).unwrap();
    let second_digest = fixtures::digest(&second.1);
    fixtures::write_image_raw(
        layout,
        "twice",
        &[
            (fixtures::media_type(Compression::Gzip).to_owned(), gzip),
            (second.0.to_owned(), second.1),
        ],
        &[diff_id.clone(), diff_id.clone()],
        fixtures::native_arch(),
    )
    .unwrap();
    (diff_id, second_digest)
}

#[test]
fn every_blob_of_a_layer_named_twice_is_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let mut layer = Layer::default();
    layer
        .add("usr/", dir())
        .add("usr/a", file(noise(5, 10_000)));
    let tar = fixtures::layer_tar(&layer).unwrap();
    let plain = fixtures::media_type(Compression::None);

    // The same tar twice, compressed two ways: both blobs are read; the copy succeeds.
    let good = tmp.path().join("good");
    same_diff_id_twice(&good, (plain, tar.clone()));
    let out = copy(&[], &oci(&good, "twice"), &composefs(&repo, "twice"));
    assert_copied(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("0 skipped, 2 full"), "{stdout}");
    assert_clean(&repo);

    // The second blob is missing (a repository without the layer: one that holds it reads
    // neither blob, as for any stored layer).
    let missing = tmp.path().join("missing");
    let (_, second) = same_diff_id_twice(&missing, (plain, tar.clone()));
    std::fs::remove_file(fixtures::blob_path(&missing, &second)).unwrap();
    let repo = tmp.path().join("repo-missing");
    let out = copy(&[], &oci(&missing, "twice"), &composefs(&repo, "twice"));
    assert_refused(&out, &repo, "twice", &second);

    // The second blob holds another tar.
    let liar = tmp.path().join("liar");
    let mut other = layer.clone();
    other.add("usr/b", file("not the same layer"));
    let other = fixtures::layer_tar(&other).unwrap();
    same_diff_id_twice(&liar, (plain, other));
    let repo = tmp.path().join("repo-liar");
    let out = copy(&[], &oci(&liar, "twice"), &composefs(&repo, "twice"));
    assert_refused(&out, &repo, "twice", "DiffID mismatch");
}

/// Peak resident memory of `cmd` in KiB, and its output (GNU time's `%M`).
fn with_peak_rss(args: &[&str]) -> (Output, u64) {
    let mut cmd = std::process::Command::new("/usr/bin/time");
    cmd.args(["-f", "peak-rss-kib=%M"])
        .arg(skiff_integration::tools::skiff_bin())
        .args(args)
        .env("SKIFF_LOG", "warn");
    let out = output(&mut cmd).unwrap();
    let text = stderr(&out);
    let rss = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("peak-rss-kib="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in {text}"));
    (out, rss)
}

/// An `index.json` of `entries` manifests, the last of them `real` (tagged `tag`).
fn huge_index(entries: usize, real: &serde_json::Value) -> Vec<u8> {
    let mut out = br#"{"schemaVersion":2,"manifests":["#.to_vec();
    for i in 0..entries - 1 {
        let digest = format!("sha256:{:064x}", i);
        out.extend_from_slice(
            json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest,
                "size": 1000,
                "annotations": { "org.opencontainers.image.ref.name": format!("filler-{i}") },
            })
            .to_string()
            .as_bytes(),
        );
        out.push(b',');
    }
    out.extend_from_slice(real.to_string().as_bytes());
    out.extend_from_slice(b"]}");
    out
}

#[test]
fn an_index_json_is_bounded_as_manifests_are() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    fixtures::write_oci_layout(
        &layout,
        "small",
        &fixtures::scratch_image(),
        Compression::Gzip,
    )
    .unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let real = index["manifests"][0].clone();
    // 500,000 entries: about 100 MB.
    std::fs::write(layout.join("index.json"), huge_index(500_000, &real)).unwrap();
    let repo = tmp.path().join("repo");
    let (out, rss) = with_peak_rss(&["copy", &oci(&layout, "small"), &composefs(&repo, "small")]);
    let message = assert_refused(&out, &repo, "small", "index.json");
    assert!(message.contains("4194304 bytes"), "{message}");
    assert!(rss < 64 * 1024, "peak RSS {rss} KiB");

    // The same in an oci-archive, just over the bound.
    let small = tmp.path().join("small");
    fixtures::write_oci_layout(
        &small,
        "small",
        &fixtures::scratch_image(),
        Compression::Gzip,
    )
    .unwrap();
    std::fs::write(small.join("index.json"), huge_index(22_000, &real)).unwrap();
    assert!(std::fs::metadata(small.join("index.json")).unwrap().len() > 4 << 20);
    let archive = tmp.path().join("small.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&archive).unwrap());
    builder.append_dir_all(".", &small).unwrap();
    builder.finish().unwrap();
    let out = copy(
        &[],
        &format!("oci-archive:{}:small", archive.display()),
        &composefs(&repo, "small"),
    );
    let message = assert_refused(&out, &repo, "small", "index.json");
    assert!(message.contains("4194304 bytes"), "{message}");
}

#[test]
fn a_config_of_another_media_type_is_refused_before_anything_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let written = fixtures::write_oci_layout(
        &layout,
        "img",
        &fixtures::scratch_image(),
        Compression::Gzip,
    )
    .unwrap();
    let path = fixtures::blob_path(&layout, &written.manifest_digest);
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    m["config"]["mediaType"] = "application/vnd.docker.container.image.v1+json".into();
    let bytes = serde_json::to_vec(&m).unwrap();
    let digest = fixtures::digest(&bytes);
    std::fs::write(fixtures::blob_path(&layout, &digest), &bytes).unwrap();
    fixtures::add_to_index(
        &layout,
        "img",
        json!({ "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": bytes.len() }),
    )
    .unwrap();
    let repo = tmp.path().join("repo");
    let out = copy(&[], &oci(&layout, "img"), &composefs(&repo, "img"));
    assert_refused(
        &out,
        &repo,
        "img",
        "config has media type \"application/vnd.docker.container.image.v1+json\"",
    );
    let streams: Vec<_> = std::fs::read_dir(repo.join("streams"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(streams.is_empty(), "named streams left behind: {streams:?}");
}

/// A layer whose first entry the importer refuses (a hard link out of the root), followed by
/// enough content that whoever feeds the import is still sending when it stops.
fn refused_then_big() -> Layer {
    let mut layer = Layer::default();
    layer
        .add("usr/", dir())
        .add(
            "usr/escape",
            Node::Hardlink {
                target: "../../etc/passwd".into(),
            },
        )
        .add("usr/big", file(noise(8, 6 << 20)));
    layer
}

#[test]
fn a_partial_pull_names_the_check_the_import_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let repo = tmp.path().join("repo");
    let v1 = fixtures::by_name("demo-v1").unwrap();
    fixtures::write_oci_layout(&layout, "v1", &v1, Compression::Gzip).unwrap();
    assert_copied(&copy(&[], &oci(&layout, "v1"), &composefs(&repo, "v1")));
    let mut bad = v1.clone();
    bad.push(refused_then_big());
    fixtures::write_oci_layout(&layout, "bad", &bad, Compression::ZstdChunked).unwrap();
    let out = copy(&[], &oci(&layout, "bad"), &composefs(&repo, "bad"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("partial pull failed") && stdout.contains("leaves the image root"),
        "{stdout}"
    );
    assert!(!stdout.contains("stopped"), "{stdout}");
    assert_refused(&out, &repo, "bad", "leaves the image root");
}

/// An old image in a repository and a delta from it to a newer one, in `tmp`.
struct DeltaSetup {
    root: PathBuf,
    layout: PathBuf,
    repo: PathBuf,
}

impl DeltaSetup {
    fn new(tmp: &Path) -> Self {
        let old = fixtures::rich_image();
        let mut new = old.clone();
        let mut update = Layer::default();
        update
            .add("usr/", dir())
            .add("usr/lib/", dir())
            .add("usr/lib/new.so", file(noise(21, 50_000)));
        new.push(update);
        let layout = tmp.join("layout");
        fixtures::write_oci_layout(&layout, "old", &old, Compression::Gzip).unwrap();
        fixtures::write_oci_layout(&layout, "new", &new, Compression::Gzip).unwrap();
        let repo = tmp.join("repo");
        assert_copied(&copy(&[], &oci(&layout, "old"), &composefs(&repo, "old")));
        Self {
            root: tmp.to_owned(),
            layout,
            repo,
        }
    }

    /// A fresh delta, its tar-diff replaced by `blob`; applying it fails with `expected`.
    fn apply_fails(&self, name: &str, blob: Vec<u8>, expected: &str) -> String {
        let delta = self.root.join(name);
        run(skiff().args([
            "delta",
            "create",
            &composefs(&self.repo, "old"),
            &oci(&self.layout, "new"),
            &oci(&delta, "d"),
        ]))
        .unwrap();
        replace_tar_diff(&delta, blob);
        let out = copy(&[], &oci(&delta, "d"), &composefs(&self.repo, "new"));
        assert_refused(&out, &self.repo, "new", expected)
    }
}

#[test]
fn a_delta_names_the_check_that_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let s = DeltaSetup::new(tmp.path());

    // The rebuilt tar's first entry is refused while the tar-diff still has megabytes to write.
    let tar = fixtures::layer_tar(&refused_then_big()).unwrap();
    let message = s.apply_fails(
        "stops",
        tar_diff(false, &[(0, tar.len() as u64, &tar)]),
        "leaves the image root",
    );
    assert!(!message.contains("stopped"), "{message}");

    // An ADD_DATA that claims more bytes than the op stream holds.
    s.apply_fails(
        "short-add",
        tar_diff(
            false,
            &[(1, 19, b"usr/lib/libfoo.so.1"), (3, 1000, &[0u8; 10])],
        ),
        "the tar-diff ends inside an op",
    );
}

/// Uploads every blob of the OCI layout `layout` and its manifest `manifest` (as `repo:tag`) to
/// `registry` as they are, with curl: no client checks descriptors against blobs on the way.
fn push_raw(registry: &Registry, layout: &Path, manifest: &[u8], repo_tag: &str) {
    let (repo, tag) = repo_tag.split_once(':').unwrap();
    let base = format!("http://{}/v2/{repo}", registry.host());
    for blob in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let path = blob.unwrap().path();
        let digest = format!("sha256:{}", path.file_name().unwrap().to_string_lossy());
        // An upload session, then its one PUT.
        let headers = run(std::process::Command::new("curl")
            .args(["-sSf", "-X", "POST", "-D", "-", "-o", "/dev/null"])
            .arg(format!("{base}/blobs/uploads/")))
        .unwrap();
        let location = headers
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("location")
                    .then(|| value.trim().to_owned())
            })
            .unwrap();
        let location = if location.starts_with("http") {
            location
        } else {
            format!("http://{}{location}", registry.host())
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        run(std::process::Command::new("curl")
            .args([
                "-sSf",
                "-X",
                "PUT",
                "-H",
                "Content-Type: application/octet-stream",
            ])
            .arg("--data-binary")
            .arg(format!("@{}", path.display()))
            .arg(format!("{location}{separator}digest={digest}")))
        .unwrap();
    }
    let file = layout.join("manifest-to-push.json");
    std::fs::write(&file, manifest).unwrap();
    run(std::process::Command::new("curl")
        .args(["-sSf", "-X", "PUT", "-H"])
        .arg("Content-Type: application/vnd.oci.image.manifest.v1+json")
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(format!("{base}/manifests/{tag}")))
    .unwrap();
}

#[test]
fn a_delta_blob_shorter_than_its_descriptor_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let s = DeltaSetup::new(tmp.path());
    let delta = s.root.join("short");
    run(skiff().args([
        "delta",
        "create",
        &composefs(&s.repo, "old"),
        &oci(&s.layout, "new"),
        &oci(&delta, "d"),
    ]))
    .unwrap();
    // The tar-diff cut in the middle of its op stream, its descriptor claiming the whole size.
    let mut manifest = fixtures::layout_manifest(&delta, "d").unwrap();
    for l in manifest["layers"].as_array_mut().unwrap() {
        if l["mediaType"] == "application/vnd.tar-diff" {
            let path = fixtures::blob_path(&delta, l["digest"].as_str().unwrap());
            let mut blob = std::fs::read(&path).unwrap();
            blob.truncate(blob.len() / 2);
            l["digest"] = fixtures::digest(&blob).into();
            std::fs::write(fixtures::blob_path(&delta, &fixtures::digest(&blob)), blob).unwrap();
        }
    }
    let registry = Registry::start_plain().unwrap();
    push_raw(
        &registry,
        &delta,
        &serde_json::to_vec(&manifest).unwrap(),
        "app:short",
    );
    let out = output(skiff().args([
        "copy",
        "--progress=plain",
        "--src-tls-verify=false",
        &registry.docker_ref("app:short"),
        &composefs(&s.repo, "new"),
    ]))
    .unwrap();
    let message = assert_refused(&out, &s.repo, "new", "blob size mismatch");
    assert!(
        !message.contains("failed to fill whole buffer"),
        "{message}"
    );
}

#[test]
fn copies_creating_one_repository_at_once_both_succeed() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    fixtures::write_oci_layout(
        &layout,
        "img",
        &fixtures::scratch_image(),
        Compression::Gzip,
    )
    .unwrap();
    for round in 0..30 {
        let repo = tmp.path().join(format!("repo-{round}"));
        let children: Vec<_> = ["a", "b"]
            .iter()
            .map(|tag| {
                skiff()
                    .args(["copy", "--progress=plain", &oci(&layout, "img")])
                    .arg(composefs(&repo, tag))
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "round {round}: {}", stderr(&out));
        }
        assert_clean(&repo);
    }
}

#[test]
fn the_readme_states_the_tar_header_limit_the_importer_applies() {
    let limit = skiff_storage::tar_header::MAX_TAR_METADATA_BYTES as usize;
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    assert!(
        readme.contains(&format!("{} MiB of PAX records", limit >> 20)),
        "the README's limits section does not state {limit} bytes"
    );
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let repo = tmp.path().join("repo");
    // One PAX record a little below the limit, and one a little above.
    for (tag, len) in [("under", limit - 4096), ("over", limit + 4096)] {
        let mut layer = Layer::default();
        layer.add("usr/", dir()).add(
            "usr/f",
            Node::File {
                data: b"x".to_vec(),
                mode: 0o644,
                uid: 0,
                gid: 0,
                xattrs: vec![("user.big".into(), vec![b'v'; len])],
            },
        );
        fixtures::write_oci_layout(&layout, tag, &[layer], Compression::Gzip).unwrap();
    }
    assert_copied(&copy(
        &[],
        &oci(&layout, "under"),
        &composefs(&repo, "under"),
    ));
    let out = copy(&[], &oci(&layout, "over"), &composefs(&repo, "over"));
    assert_refused(&out, &repo, "over", &limit.to_string());
}
