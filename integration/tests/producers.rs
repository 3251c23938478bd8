//! Layers made by the real producers. zstd:chunked written by current containers/image and
//! containers/storage (`skiff-peer-copy`, the library call `skopeo copy --dest-compress-format
//! zstd:chunked` makes; the module proxy does not serve skopeo itself) is pulled partially after
//! its previous version, from a layout and from a registry, with every check in force and close to
//! the file-level floor. (That skiff's writer agrees with it is checked in `zstd_chunked.rs`.)

use std::path::{Path, PathBuf};

use skiff_integration::chunked::{self, UpdateCost};
use skiff_integration::fixtures::{self, Compression, Layer};
use skiff_integration::registry::Registry;
use skiff_integration::tools::{cfsctl, peer_copy, run, skiff, skopeo};
use skiff_integration::tree::Tree;
use skiff_transport::format::zstd_chunked::Annotations;

/// Bytes a partial pull may fetch above the file-level floor (multipart headers, merged gaps).
const FLOOR_SLACK: f64 = 1.1;

/// A layout holding demo v1 (gzip, skiff's writer) and v2 recompressed to zstd:chunked by
/// containers/storage.
struct Pair {
    _dir: tempfile::TempDir,
    root: PathBuf,
    layout: PathBuf,
    v1: Vec<Layer>,
    v2: Vec<Layer>,
}

impl Pair {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let layout = root.join("layout");
        let v1 = fixtures::by_name("demo-v1").unwrap();
        let v2 = fixtures::by_name("demo-v2").unwrap();
        fixtures::write_oci_layout(&layout, "v1", &v1, Compression::Gzip).unwrap();
        fixtures::write_oci_layout(&layout, "v2-gzip", &v2, Compression::Gzip).unwrap();
        run(peer_copy().args([
            "--dest-compress-format",
            "zstd:chunked",
            &format!("oci:{}:v2-gzip", layout.display()),
            &format!("oci:{}:v2", layout.display()),
        ]))
        .unwrap();
        Self {
            _dir: dir,
            root,
            layout,
            v1,
            v2,
        }
    }

    fn src(&self, tag: &str) -> String {
        format!("oci:{}:{tag}", self.layout.display())
    }

    fn dest(&self, repo: &str, tag: &str) -> String {
        format!("composefs:{}:{tag}", self.root.join(repo).display())
    }

    /// What a store holding v1 must at least fetch of `layout`'s `tag`.
    fn cost(&self, layout: &Path, tag: &str) -> UpdateCost {
        let held = chunked::file_digests(&fixtures::layer_tars(&self.v1).unwrap()).unwrap();
        chunked::update_cost(layout, tag, &held).unwrap()
    }

    fn expected(&self) -> Tree {
        Tree::from_layers(&fixtures::layer_tars(&self.v2).unwrap()).unwrap()
    }

    /// `cfsctl oci compute-id` of v2 pulled whole by cfsctl.
    fn full_pull_id(&self) -> String {
        let theirs = self.root.join("cfsctl");
        run(cfsctl(&theirs).arg("init").arg("--insecure").arg(&theirs)).unwrap();
        run(cfsctl(&theirs).args(["oci", "pull", &self.src("v2"), "v2"])).unwrap();
        run(cfsctl(&theirs).args(["oci", "compute-id", "v2"])).unwrap()
    }
}

/// `skiff copy --progress=json`; the summary event.
fn summary(args: &[&str], source: &str, dest: &str) -> serde_json::Value {
    let out = run(skiff()
        .args(["copy", "--progress=json"])
        .args(args)
        .args([source, dest]))
    .unwrap();
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "summary")
        .unwrap_or_else(|| panic!("no summary in {out}"))
}

/// Checks a partial update against the floor and a full pull.
fn assert_partial(s: &serde_json::Value, layers: usize, cost: UpdateCost) {
    assert_eq!(s["layers_partial"], layers, "{s}");
    assert_eq!(s["layers_full"], 0, "{s}");
    let fetched = s["bytes_fetched"].as_u64().unwrap();
    let ratio = fetched as f64 / cost.floor as f64;
    assert!(
        ratio <= FLOOR_SLACK,
        "fetched {fetched} bytes, {ratio:.3}x the floor of {} ({} for a full pull): {s}",
        cost.floor,
        cost.full
    );
    assert!(fetched * 4 < cost.full, "{s}");
    eprintln!(
        "fetched {fetched} bytes in {} requests; floor {}, full pull {}: {ratio:.3}x the floor",
        s["requests"], cost.floor, cost.full
    );
}

#[test]
fn containers_storage_zstd_chunked_is_written_with_the_current_keys() {
    let p = Pair::new();
    let manifest = fixtures::layout_manifest(&p.layout, "v2").unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), p.v2.len());
    for layer in layers {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
        let annotations: std::collections::HashMap<String, String> =
            serde_json::from_value(layer["annotations"].clone()).unwrap();
        assert!(
            matches!(
                Annotations::parse(Some(&annotations)).unwrap(),
                Annotations::Chunked { .. }
            ),
            "{annotations:?}"
        );
    }
}

#[test]
fn containers_storage_zstd_chunked_pulls_partially_from_a_layout() {
    let p = Pair::new();
    summary(&[], &p.src("v1"), &p.dest("repo", "app"));
    let s = summary(&[], &p.src("v2"), &p.dest("repo", "app"));
    assert_partial(&s, p.v2.len(), p.cost(&p.layout, "v2"));
    Tree::from_stored_image(&p.root.join("repo"), "app")
        .unwrap()
        .assert_same(
            &p.expected(),
            "partial pull of containers/storage zstd:chunked",
        );
    assert_eq!(
        run(cfsctl(&p.root.join("repo")).args(["oci", "compute-id", "app"])).unwrap(),
        p.full_pull_id()
    );
    run(skiff().args(["fsck", &p.root.join("repo").display().to_string()])).unwrap();
}

#[test]
fn containers_storage_zstd_chunked_pulls_partially_from_a_registry() {
    let p = Pair::new();
    let registry = Registry::start_plain().unwrap();
    let v1 = registry.push(&p.src("v1"), "app:v1").unwrap();
    // Written into the registry by containers/image itself, as `skopeo copy` would.
    let v2 = registry.docker_ref("app:v2");
    run(peer_copy().args([
        "--dest-tls-verify=false",
        "--dest-compress-format",
        "zstd:chunked",
        &p.src("v2-gzip"),
        &v2,
    ]))
    .unwrap();
    // The registry's exact blobs, for the floor.
    let mirror = p.root.join("mirror");
    run(skopeo().args([
        "copy",
        "--quiet",
        "--preserve-digests",
        "--src-tls-verify=false",
        &v2,
        &format!("oci:{}:v2", mirror.display()),
    ]))
    .unwrap();
    let tls = ["--src-tls-verify=false"];
    summary(&tls, &v1, &p.dest("repo", "app"));
    let s = summary(&tls, &v2, &p.dest("repo", "app"));
    assert_partial(&s, p.v2.len(), p.cost(&mirror, "v2"));
    Tree::from_stored_image(&p.root.join("repo"), "app")
        .unwrap()
        .assert_same(&p.expected(), "partial pull from the registry");
    run(skiff().args(["fsck", &p.root.join("repo").display().to_string()])).unwrap();
}
