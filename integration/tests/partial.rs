//! Partial pulls of zstd:chunked layers from OCI layouts and registries: only the files the
//! store lacks are read, the stored image is exactly a full pull's, and any check that fails
//! falls back to a full pull (which must then pass its own checks). Registries that mistreat
//! range requests (ignore them, refuse several ranges, refuse all) are played by a forwarder in
//! front of a real registry.

use std::path::Path;
use std::process::Output;

use skiff_integration::faults::{RangeBehaviour, RangeFault};
use skiff_integration::fixtures::{self, Compression};
use skiff_integration::registry::Registry;
use skiff_integration::tools::{cfsctl, copy, copy_summary, output, run, skiff};
use skiff_integration::tree::Tree;

/// The JSON-free summary lines are enough: `layers    S skipped, F full, P partial, D delta`.
fn layer_counts(out: &Output) -> (usize, usize) {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("layers"))
        .unwrap_or_else(|| panic!("no summary: {text}"));
    let numbers: Vec<usize> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    (numbers[1], numbers[2])
}

/// A layout with demo v1 (gzip) and v2 (zstd:chunked).
fn pair(dir: &Path) -> (std::path::PathBuf, Tree) {
    let layout = dir.join("layout");
    fixtures::write_oci_layout(
        &layout,
        "v1",
        &fixtures::by_name("demo-v1").unwrap(),
        Compression::Gzip,
    )
    .unwrap();
    let v2 = fixtures::by_name("demo-v2").unwrap();
    fixtures::write_oci_layout(&layout, "v2", &v2, Compression::ZstdChunked).unwrap();
    (
        layout,
        Tree::from_layers(&fixtures::layer_tars(&v2).unwrap()).unwrap(),
    )
}

fn blob_sizes(layout: &Path, tag: &str) -> u64 {
    fixtures::layer_blob_bytes(layout, tag).unwrap()
}

fn manifest(layout: &Path, tag: &str) -> serde_json::Value {
    fixtures::layout_manifest(layout, tag).unwrap()
}

/// Rewrites the manifest of `tag` through `edit` and points `tag` at the result.
fn edit_manifest(layout: &Path, tag: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut m = manifest(layout, tag);
    edit(&mut m);
    let bytes = serde_json::to_vec(&m).unwrap();
    let digest = fixtures::digest(&bytes);
    std::fs::write(fixtures::blob_path(layout, &digest), &bytes).unwrap();
    fixtures::add_to_index(layout, tag, serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": bytes.len(),
    }))
    .unwrap();
}

#[test]
fn partial_pull_fetches_only_what_the_store_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, expected) = pair(dir.path());
    let repo = dir.path().join("repo");
    let dest = |t: &str| format!("composefs:{}:{t}", repo.display());
    copy_summary(&[], &format!("oci:{}:v1", layout.display()), &dest("v1"));
    let s = copy_summary(&[], &format!("oci:{}:v2", layout.display()), &dest("v2"));
    let full = blob_sizes(&layout, "v2");
    let fetched = s["bytes_fetched"].as_u64().unwrap();
    assert_eq!(s["layers_partial"], 4, "{s}");
    assert!(fetched * 4 < full, "fetched {fetched} of {full} bytes: {s}");
    assert!(s["bytes_reused"].as_u64().unwrap() > full, "{s}");
    assert!(
        s["requests"].as_u64().unwrap() >= 8,
        "TOC and tar-split of 4 layers at least: {s}"
    );
    Tree::from_stored_image(&repo, "v2")
        .unwrap()
        .assert_same(&expected, "partial v2");
    run(skiff().arg("fsck").arg(&repo)).unwrap();
    run(cfsctl(&repo).args(["oci", "fsck"])).unwrap();
    // The same image as cfsctl's own (full) pull of v2.
    let theirs = dir.path().join("theirs");
    run(cfsctl(&theirs).arg("init").arg("--insecure").arg(&theirs)).unwrap();
    run(cfsctl(&theirs).args(["oci", "pull", &format!("oci:{}:v2", layout.display()), "v2"]))
        .unwrap();
    assert_eq!(
        run(cfsctl(&repo).args(["oci", "compute-id", "v2"])).unwrap(),
        run(cfsctl(&theirs).args(["oci", "compute-id", "v2"])).unwrap()
    );
}

#[test]
fn a_toc_that_fails_its_checksum_falls_back_to_a_full_pull() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, expected) = pair(dir.path());
    edit_manifest(&layout, "v2", |m| {
        for l in m["layers"].as_array_mut().unwrap() {
            l["annotations"]["io.github.containers.zstd-chunked.manifest-checksum"] =
                format!("sha256:{}", "0".repeat(64)).into();
        }
    });
    let repo = dir.path().join("repo");
    let dest = |t: &str| format!("composefs:{}:{t}", repo.display());
    assert!(
        copy(&[], &format!("oci:{}:v1", layout.display()), &dest("v1"))
            .status
            .success()
    );
    let out = copy(&[], &format!("oci:{}:v2", layout.display()), &dest("v2"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("whole: partial pull failed") && stdout.contains("TOC checksum mismatch"),
        "{stdout}"
    );
    assert_eq!(layer_counts(&out), (4, 0));
    Tree::from_stored_image(&repo, "v2")
        .unwrap()
        .assert_same(&expected, "v2 after fallback");
}

#[test]
fn a_corrupt_file_frame_fails_both_ways_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, _) = pair(dir.path());
    // Flip a byte in the first frames of the largest layer: its files, not its metadata.
    let m = manifest(&layout, "v2");
    let big = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|l| l["size"].as_u64().unwrap())
        .unwrap();
    let path = fixtures::blob_path(&layout, big["digest"].as_str().unwrap());
    let mut blob = std::fs::read(&path).unwrap();
    for i in (2000..blob.len() / 2).step_by(50_000) {
        blob[i] ^= 0x55;
    }
    std::fs::write(&path, &blob).unwrap();
    let repo = dir.path().join("repo");
    let dest = |t: &str| format!("composefs:{}:{t}", repo.display());
    assert!(
        copy(&[], &format!("oci:{}:v1", layout.display()), &dest("v1"))
            .status
            .success()
    );
    let out = copy(&[], &format!("oci:{}:v2", layout.display()), &dest("v2"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("partial pull failed"), "{stdout}");
    assert!(
        stderr.contains(big["digest"].as_str().unwrap()),
        "the error names the layer: {stderr}"
    );
    assert!(!repo.join("streams/refs/oci/v2").exists());
    run(skiff().arg("fsck").arg(&repo)).unwrap();
}

/// A copy's JSON events, summary last.
fn events(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The object files of a repository (`objects/XX/…`).
fn object_files(repo: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for dir in std::fs::read_dir(repo.join("objects")).unwrap() {
        let dir = dir.unwrap().path();
        if dir.is_dir() {
            for f in std::fs::read_dir(&dir).unwrap() {
                files.push(f.unwrap().path());
            }
        }
    }
    files
}

/// A partial pull reuses the files of stored layers: their content index names the objects,
/// and the plan takes them without opening them. An object that is gone when the pull reads it
/// (removed by a gc that does not take skiff's lock, or by hand) costs a fetch, never a failure
/// or a wrong file. Here the objects go after the index that names them is written and before
/// the pull starts, which is what the pull meets when they vanish between its plan and its
/// read: the plan does not look at them. `skiff gc` itself waits for running copies (trials.rs).
#[test]
fn a_stored_object_that_vanished_is_fetched_instead_of_reused() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, expected) = pair(dir.path());
    let full = blob_sizes(&layout, "v2");
    let (v1, v2) = (
        format!("oci:{}:v1", layout.display()),
        format!("oci:{}:v2", layout.display()),
    );
    let dest = |repo: &Path, tag: &str| format!("composefs:{}:{tag}", repo.display());
    // v1's layers stay, untagged, with their content index: what a pull reuses before a gc.
    let stored_v1 = |name: &str| {
        let repo = dir.path().join(name);
        assert!(copy(&[], &v1, &dest(&repo, "v1")).status.success());
        run(skiff().args(["rm", &dest(&repo, "v1")])).unwrap();
        repo
    };

    // With the objects in place, reuse happens: every layer partial, a fraction fetched.
    let kept = stored_v1("kept");
    let s = copy_summary(&[], &v2, &dest(&kept, "v2"));
    assert_eq!(s["layers_partial"], 4, "{s}");
    let kept_fetched = s["bytes_fetched"].as_u64().unwrap();
    assert!(
        kept_fetched * 4 < full,
        "fetched {kept_fetched} of {full}: {s}"
    );
    assert!(s["bytes_reused"].as_u64().unwrap() > 0, "{s}");

    // With the file contents gone (not the layers' splitstreams, not their content indexes),
    // the layers that planned to reuse them are fetched.
    let vanished = stored_v1("vanished");
    let contents: Vec<_> = object_files(&vanished)
        .into_iter()
        .filter(|o| {
            let bytes = std::fs::read(o).unwrap();
            !bytes.starts_with(b"SplitStream") && !bytes.starts_with(b"SKFCIX")
        })
        .collect();
    assert!(!contents.is_empty());
    for object in &contents {
        std::fs::remove_file(object).unwrap();
    }
    let out = output(
        skiff()
            .args(["copy", "--progress=json", &v2])
            .arg(dest(&vanished, "v2")),
    )
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = events(&out);
    let s = events.last().unwrap();
    assert_eq!(s["event"], "summary", "{s}");
    let fallbacks: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "layer-fallback")
        .collect();
    assert!(!fallbacks.is_empty(), "no layer fell back: {events:?}");
    assert_eq!(
        s["layers_full"].as_u64().unwrap() + s["layers_partial"].as_u64().unwrap(),
        4,
        "{s}"
    );
    let fetched = s["bytes_fetched"].as_u64().unwrap();
    assert!(
        fetched > kept_fetched,
        "fetched {fetched}, no more than the {kept_fetched} of a pull that reused: {s}"
    );
    Tree::from_stored_image(&vanished, "v2")
        .unwrap()
        .assert_same(&expected, "v2 after its reusable objects vanished");
    run(skiff().arg("gc").arg(&vanished)).unwrap();
    run(skiff().arg("fsck").arg(&vanished)).unwrap();
    run(cfsctl(&vanished).args(["oci", "fsck"])).unwrap();

    // With every object gone, content indexes included: nothing to reuse, a warning, the
    // image all the same.
    let bare = stored_v1("bare");
    for object in object_files(&bare) {
        std::fs::remove_file(object).unwrap();
    }
    let out = copy(&[], &v2, &dest(&bare, "v2"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("content index is not used"), "{stderr}");
    Tree::from_stored_image(&bare, "v2")
        .unwrap()
        .assert_same(&expected, "v2 after every object vanished");
    run(skiff().arg("gc").arg(&bare)).unwrap();
    run(skiff().arg("fsck").arg(&bare)).unwrap();
}

#[test]
fn files_of_the_previous_image_are_found_by_path_when_it_has_no_content_index() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, expected) = pair(dir.path());
    // v1 pulled by cfsctl: its layers carry no skiff content index.
    let repo = dir.path().join("repo");
    run(cfsctl(&repo).arg("init").arg("--insecure").arg(&repo)).unwrap();
    run(cfsctl(&repo).args([
        "oci",
        "pull",
        &format!("oci:{}:v1", layout.display()),
        "app",
    ]))
    .unwrap();
    let s = copy_summary(
        &[],
        &format!("oci:{}:v2", layout.display()),
        &format!("composefs:{}:app", repo.display()),
    );
    let full = blob_sizes(&layout, "v2");
    let fetched = s["bytes_fetched"].as_u64().unwrap();
    assert_eq!(s["layers_partial"], 4, "{s}");
    assert!(fetched * 4 < full, "fetched {fetched} of {full} bytes: {s}");
    Tree::from_stored_image(&repo, "app")
        .unwrap()
        .assert_same(&expected, "v2 over cfsctl's v1");
    run(cfsctl(&repo).args(["oci", "fsck"])).unwrap();
    run(skiff().arg("fsck").arg(&repo)).unwrap();
}

/// Demo v1 (gzip) and v2 (zstd:chunked) pushed to `registry` as `demo:v1` and `demo:v2`.
fn pushed_pair(registry: &Registry, dir: &Path) -> (std::path::PathBuf, Tree) {
    let (layout, expected) = pair(dir);
    for tag in ["v1", "v2"] {
        registry
            .push(
                &format!("oci:{}:{tag}", layout.display()),
                &format!("demo:{tag}"),
            )
            .unwrap();
    }
    (layout, expected)
}

/// The layer digests of `tag` in `layout`.
fn layer_digests(layout: &Path, tag: &str) -> Vec<String> {
    manifest(layout, tag)["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect()
}

fn upstream(registry: &Registry) -> std::net::SocketAddr {
    registry.host().parse().unwrap()
}

const PLAIN: &[&str] = &["--src-tls-verify=false"];

#[test]
fn registry_partial_pull_fetches_only_what_the_store_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start_plain().unwrap();
    let (layout, expected) = pushed_pair(&registry, dir.path());
    let repo = dir.path().join("repo");
    let dest = |t: &str| format!("composefs:{}:{t}", repo.display());
    copy_summary(PLAIN, &registry.docker_ref("demo:v1"), &dest("v1"));
    let s = copy_summary(PLAIN, &registry.docker_ref("demo:v2"), &dest("v2"));
    let full = blob_sizes(&layout, "v2");
    let fetched = s["bytes_fetched"].as_u64().unwrap();
    assert_eq!(s["layers_partial"], 4, "{s}");
    assert!(fetched * 4 < full, "fetched {fetched} of {full} bytes: {s}");
    // Ranges are batched: one metadata request and a few data requests per layer, not one
    // request per file.
    let requests = s["requests"].as_u64().unwrap();
    assert!((8..=16).contains(&requests), "{requests} requests: {s}");
    Tree::from_stored_image(&repo, "v2")
        .unwrap()
        .assert_same(&expected, "partial v2 from a registry");
    run(skiff().arg("fsck").arg(&repo)).unwrap();
    let theirs = dir.path().join("theirs");
    run(cfsctl(&theirs).arg("init").arg("--insecure").arg(&theirs)).unwrap();
    run(cfsctl(&theirs).args(["oci", "pull", &format!("oci:{}:v2", layout.display()), "v2"]))
        .unwrap();
    assert_eq!(
        run(cfsctl(&repo).args(["oci", "compute-id", "v2"])).unwrap(),
        run(cfsctl(&theirs).args(["oci", "compute-id", "v2"])).unwrap()
    );
}

#[test]
fn registry_partial_pull_uses_the_same_tls_and_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start_tls_auth("ann", "s3cret").unwrap();
    let (_, expected) = pushed_pair(&registry, dir.path());
    let repo = dir.path().join("repo");
    let dest = |t: &str| format!("composefs:{}:{t}", repo.display());
    let cert_dir = registry.cert_dir().unwrap().to_str().unwrap().to_owned();
    let authfile = registry.authfile().unwrap().to_str().unwrap().to_owned();
    // --src-creds for v1; an auth file for v2, whose layers come by range requests.
    let creds = ["--src-cert-dir", &cert_dir, "--src-creds", "ann:s3cret"];
    copy_summary(&creds, &registry.docker_ref("demo:v1"), &dest("v1"));
    let from_file = ["--src-cert-dir", &cert_dir, "--authfile", &authfile];
    let s = copy_summary(&from_file, &registry.docker_ref("demo:v2"), &dest("v2"));
    assert_eq!(s["layers_partial"], 4, "{s}");
    Tree::from_stored_image(&repo, "v2")
        .unwrap()
        .assert_same(&expected, "partial v2 over TLS with credentials");
}

#[test]
fn a_registry_that_ignores_ranges_sends_each_blob_once() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start_plain().unwrap();
    let (layout, expected) = pushed_pair(&registry, dir.path());
    let fault = RangeFault::start(upstream(&registry), RangeBehaviour::Ignore).unwrap();
    let repo = dir.path().join("repo");
    let dest = |t: &str| format!("composefs:{}:{t}", repo.display());
    let source = |t: &str| format!("docker://{}/demo:{t}", fault.host());
    assert!(copy(PLAIN, &source("v1"), &dest("v1")).status.success());
    let out = copy(PLAIN, &source("v2"), &dest("v2"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("(HTTP 200); imported it as a full pull"),
        "{stdout}"
    );
    assert_eq!(layer_counts(&out), (4, 0), "{stdout}");
    // The 200 answer to the metadata request was the download: no second GET of any blob.
    let requests = fault.requests();
    for digest in layer_digests(&layout, "v2") {
        let gets = requests
            .iter()
            .filter(|r| r.starts_with("GET ") && r.contains(&digest))
            .count();
        assert_eq!(gets, 1, "{digest}: {requests:#?}");
    }
    Tree::from_stored_image(&repo, "v2")
        .unwrap()
        .assert_same(&expected, "v2 from a registry ignoring ranges");
}

#[test]
fn a_registry_that_refuses_several_ranges_is_asked_for_fewer() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start_plain().unwrap();
    let (_, expected) = pushed_pair(&registry, dir.path());
    let fault =
        RangeFault::start(upstream(&registry), RangeBehaviour::RefuseMultiple(416)).unwrap();
    let repo = dir.path().join("repo");
    let dest = |t: &str| format!("composefs:{}:{t}", repo.display());
    let source = |t: &str| format!("docker://{}/demo:{t}", fault.host());
    copy_summary(PLAIN, &source("v1"), &dest("v1"));
    let s = copy_summary(PLAIN, &source("v2"), &dest("v2"));
    assert_eq!(s["layers_partial"], 4, "{s}");
    let refused = fault
        .requests()
        .iter()
        .filter(|r| r.contains("Range: bytes=") && r.contains(','))
        .count();
    assert!(refused > 0, "no multi-range request was tried");
    Tree::from_stored_image(&repo, "v2")
        .unwrap()
        .assert_same(&expected, "v2 with single ranges");
}

#[test]
fn a_registry_that_refuses_ranges_gets_a_full_pull() {
    for status in [400, 416] {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::start_plain().unwrap();
        let (_, expected) = pushed_pair(&registry, dir.path());
        let fault =
            RangeFault::start(upstream(&registry), RangeBehaviour::RefuseAll(status)).unwrap();
        let repo = dir.path().join("repo");
        let dest = |t: &str| format!("composefs:{}:{t}", repo.display());
        let source = |t: &str| format!("docker://{}/demo:{t}", fault.host());
        assert!(copy(PLAIN, &source("v1"), &dest("v1")).status.success());
        let out = copy(PLAIN, &source("v2"), &dest("v2"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(&format!("refuses range requests (HTTP {status})")),
            "{stdout}"
        );
        assert_eq!(layer_counts(&out), (4, 0), "{stdout}");
        Tree::from_stored_image(&repo, "v2")
            .unwrap()
            .assert_same(&expected, &format!("v2 after HTTP {status}"));
    }
}

/// The object file under `repo` whose content is `content`.
fn object_holding(repo: &Path, content: &[u8]) -> std::path::PathBuf {
    object_files(repo)
        .into_iter()
        .find(|o| {
            std::fs::metadata(o).unwrap().len() == content.len() as u64
                && std::fs::read(o).unwrap() == content
        })
        .expect("the store holds the content as an object")
}

/// A changed file is rebuilt from the chunks of the stored version it shares (found by the
/// `chunkDigest`s of the TOC in the content index that the import of a gzip layer recorded),
/// and only its other chunks are fetched: within 5% of the chunk-level floor, computed from the
/// TOCs alone. A stored object that is gone or no longer holds the chunk its index names costs a
/// fetch, never a failure or a wrong file.
#[test]
fn changed_files_take_their_unchanged_chunks_from_stored_files() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    // 8 MiB in 2048 pages, 1% of them rewritten.
    let db_v1 = fixtures::page_database(11, 2048);
    let db_v2 = fixtures::rewrite_pages(&db_v1, 12, 20);
    assert_ne!(db_v1, db_v2);
    let image = |db: &[u8]| {
        let mut layer = fixtures::Layer::default();
        layer
            .add("var/", fixtures::dir())
            .add("var/lib/", fixtures::dir())
            .add("var/lib/packages.db", fixtures::file(db.to_vec()))
            .add("etc-release", fixtures::file(fixtures::text(5, 900)));
        vec![layer]
    };
    let (v1, v2) = (image(&db_v1), image(&db_v2));
    fixtures::write_oci_layout(&layout, "v1", &v1, Compression::Gzip).unwrap();
    fixtures::write_oci_layout(&layout, "v1-chunked", &v1, Compression::ZstdChunked).unwrap();
    fixtures::write_oci_layout(&layout, "v2", &v2, Compression::ZstdChunked).unwrap();
    let expected = Tree::from_layers(&fixtures::layer_tars(&v2).unwrap()).unwrap();
    let held = skiff_integration::chunked::toc_digests(&layout, "v1-chunked").unwrap();
    let cost = skiff_integration::chunked::chunk_update_cost(&layout, "v2", &held).unwrap();
    let db_compressed =
        skiff_integration::chunked::compressed_file_size(&layout, "v2", &fixtures::digest(&db_v2))
            .unwrap();
    let source = format!("oci:{}:v2", layout.display());
    let stored_v1 = |name: &str| {
        let repo = dir.path().join(name);
        let v1 = format!("oci:{}:v1", layout.display());
        assert!(
            copy(&[], &v1, &format!("composefs:{}:v1", repo.display()))
                .status
                .success()
        );
        repo
    };
    let pull = |repo: &Path| {
        let s = copy_summary(&[], &source, &format!("composefs:{}:v2", repo.display()));
        Tree::from_stored_image(repo, "v2")
            .unwrap()
            .assert_same(&expected, "v2 rebuilt from stored chunks");
        s
    };

    let repo = stored_v1("chunks");
    let s = pull(&repo);
    run(skiff().arg("fsck").arg(&repo)).unwrap();
    run(cfsctl(&repo).args(["oci", "fsck"])).unwrap();
    assert_eq!(s["layers_partial"], 1, "{s}");
    let fetched = s["bytes_fetched"].as_u64().unwrap();
    let from_chunks = s["bytes_from_stored_chunks"].as_u64().unwrap();
    assert!(
        from_chunks > db_v2.len() as u64 / 2,
        "only {from_chunks} of {} bytes from stored chunks: {s}",
        db_v2.len()
    );
    assert!(
        fetched * 100 <= cost.floor * 105,
        "fetched {fetched}, the chunk-level floor is {}: {s}",
        cost.floor
    );
    assert!(
        fetched * 4 < db_compressed,
        "fetched {fetched} for a file of {db_compressed} compressed bytes: {s}"
    );

    // The stored version of the file removed (by hand, or a gc that does not take skiff's
    // lock): fetched whole.
    let removed = stored_v1("removed");
    std::fs::remove_file(object_holding(&removed, &db_v1)).unwrap();
    let s = pull(&removed);
    assert_eq!(s["bytes_from_stored_chunks"], 0, "{s}");
    assert!(s["bytes_fetched"].as_u64().unwrap() > fetched, "{s}");

    // The stored version changed behind the store's back (insecure mode, by hand): the chunks
    // that no longer match are fetched, the others still come from it.
    let changed = stored_v1("changed");
    let object = object_holding(&changed, &db_v1);
    let mut bytes = db_v1.clone();
    for at in (0..bytes.len()).step_by(fixtures::DB_PAGE * 16) {
        bytes[at + 20] ^= 0xff;
    }
    std::fs::write(&object, &bytes).unwrap();
    let s = pull(&changed);
    let partly = s["bytes_from_stored_chunks"].as_u64().unwrap();
    assert!(partly < from_chunks, "{partly} of {from_chunks}: {s}");
    assert!(s["bytes_fetched"].as_u64().unwrap() > fetched, "{s}");
}
