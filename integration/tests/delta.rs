//! oci-delta: `skiff delta create` makes deltas that skiff, cfsctl 0.9.4 and the `oci-delta`
//! crate's applier all apply to the same target (every DiffID reproduced, the same composefs
//! image as a full pull); and deltas that are wrong in any way a sender can get wrong are
//! refused with a clear error and a store left as it was.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use skiff_integration::deltas::{edit_delta, replace_tar_diff, tar_diff};
use skiff_integration::fixtures::{self, Compression, Layer, Node, dir, file, noise, text};
use skiff_integration::registry::Registry;
use skiff_integration::tools::{cfsctl, copy, output, run, skiff};
use skiff_integration::tree::Tree;

/// The rich fixture, and an update of it: its base layer unchanged (reused), its top layer
/// unchanged, and a new layer that edits a binary (bsdiff/zstd), renames a library (an exact
/// copy by sha1), hard-links the edited binary, deletes a file and a directory's content, and
/// adds new files.
fn pair() -> (Vec<Layer>, Vec<Layer>) {
    let old = fixtures::rich_image();
    let mut new = old.clone();
    let mut tool = noise(1, 200_000);
    for i in (0..tool.len()).step_by(9_973) {
        tool[i] ^= 0xA5;
    }
    tool.extend_from_slice(&noise(11, 3_000));
    let mut update = Layer::default();
    update
        .add("usr/", dir())
        .add("usr/bin/", dir())
        .add(
            "usr/bin/tool",
            Node::File {
                data: tool,
                mode: 0o755,
                uid: 0,
                gid: 0,
                xattrs: Vec::new(),
            },
        )
        .add(
            "usr/bin/tool-again",
            Node::Hardlink {
                target: "usr/bin/tool".into(),
            },
        )
        .add("usr/lib/", dir())
        .add("usr/lib/.wh.libfoo.so.1", Node::Whiteout)
        .add("usr/lib/libfoo-renamed.so.1", file(noise(2, 70_000)))
        .add("var/", dir())
        .add("var/cache/", dir())
        .add("var/cache/.wh..wh..opq", Node::Opaque)
        .add("var/cache/new.bin", file(noise(12, 50_000)))
        .add("etc/", dir())
        .add("etc/os-release", file("ID=skiff-fixture\nVERSION_ID=2\n"));
    new.push(update);
    (old, new)
}

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    layout: PathBuf,
    new_layers: Vec<Layer>,
}

impl Setup {
    /// `old` and `new` in one layout (gzip layers), `old` copied into `repo`.
    fn new(old: &[Layer], new: &[Layer], compression: Compression) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let layout = root.join("layout");
        fixtures::write_oci_layout(&layout, "old", old, compression).unwrap();
        fixtures::write_oci_layout(&layout, "new", new, compression).unwrap();
        let s = Self {
            _dir: dir,
            root,
            layout,
            new_layers: new.to_vec(),
        };
        s.copied(&s.src("old"), &s.dest("repo", "old"));
        s
    }

    fn src(&self, tag: &str) -> String {
        format!("oci:{}:{tag}", self.layout.display())
    }

    fn repo(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn dest(&self, repo: &str, tag: &str) -> String {
        format!("composefs:{}:{tag}", self.repo(repo).display())
    }

    /// A copy that must succeed; its output.
    fn copied(&self, source: &str, dest: &str) -> String {
        run(skiff().args(["copy", "--progress=plain", source, dest])).unwrap()
    }

    /// `skiff delta create` from the stored old image to the layout's `new`; the JSON summary.
    fn create(&self, method: &str, dest: &str) -> serde_json::Value {
        self.create_from(&self.src("new"), method, dest)
    }

    /// `skiff delta create` from the stored old image to `new`; the JSON summary.
    fn create_from(&self, new: &str, method: &str, dest: &str) -> serde_json::Value {
        let out = run(skiff().args([
            "delta",
            "create",
            "--json",
            "--binary-diff",
            method,
            &self.dest("repo", "old"),
            new,
            dest,
        ]))
        .unwrap();
        serde_json::from_slice(out.as_bytes()).unwrap()
    }

    fn expected(&self) -> Tree {
        Tree::from_layers(&fixtures::layer_tars(&self.new_layers).unwrap()).unwrap()
    }

    /// What cfsctl computes for the target pulled whole.
    fn full_pull_id(&self) -> String {
        let theirs = self.repo("full");
        run(cfsctl(&theirs).arg("init").arg("--insecure").arg(&theirs)).unwrap();
        run(cfsctl(&theirs).args(["oci", "pull", &self.src("new"), "new"])).unwrap();
        run(cfsctl(&theirs).args(["oci", "compute-id", "new"])).unwrap()
    }
}

/// A file of an oci-archive, by member name.
fn archive_member(archive: &Path, name: &str) -> Vec<u8> {
    let mut tar = tar::Archive::new(std::fs::File::open(archive).unwrap());
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path_bytes().as_ref() == name.as_bytes() {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            return data;
        }
    }
    panic!("{name} not in {}", archive.display());
}

fn blob(archive: &Path, digest: &str) -> Vec<u8> {
    archive_member(
        archive,
        &format!("blobs/sha256/{}", digest.trim_start_matches("sha256:")),
    )
}

/// The old image's root filesystem as an extractor leaves it: path → content.
fn merged_files(layers: &[Layer]) -> HashMap<String, Vec<u8>> {
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    for tar in fixtures::layer_tars(layers).unwrap() {
        let mut archive = tar::Archive::new(&tar[..]);
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = String::from_utf8_lossy(&entry.path_bytes())
                .trim_end_matches('/')
                .to_owned();
            let (parent, base) = path.rsplit_once('/').unwrap_or(("", &path));
            if base == ".wh..wh..opq" {
                files.retain(|p, _| !p.starts_with(&format!("{parent}/")));
                continue;
            }
            if let Some(gone) = base.strip_prefix(".wh.") {
                let gone = format!("{parent}/{gone}");
                files.retain(|p, _| *p != gone && !p.starts_with(&format!("{gone}/")));
                continue;
            }
            match entry.header().entry_type() {
                tar::EntryType::Regular => {
                    let mut data = Vec::new();
                    entry.read_to_end(&mut data).unwrap();
                    files.insert(path, data);
                }
                tar::EntryType::Link => {
                    let target =
                        String::from_utf8_lossy(&entry.link_name_bytes().unwrap()).into_owned();
                    let data = files[&target].clone();
                    files.insert(path, data);
                }
                _ => {
                    files.remove(&path);
                }
            }
        }
    }
    files
}

/// The old root filesystem as the `oci-delta` crate's data source.
struct MergedRoot {
    files: HashMap<String, Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
}

impl oci_delta::DeltaDataSource for MergedRoot {
    fn set_current_file(&mut self, path: &str) -> anyhow::Result<()> {
        self.current = self
            .files
            .get(path)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no {path}"))?;
        self.pos = 0;
        Ok(())
    }
    fn read_exact_current(&mut self, buf: &mut [u8]) -> anyhow::Result<()> {
        let end = self.pos + buf.len();
        anyhow::ensure!(end <= self.current.len(), "short read");
        buf.copy_from_slice(&self.current[self.pos..end]);
        self.pos = end;
        Ok(())
    }
    fn seek_current(&mut self, offset: u64) -> anyhow::Result<u64> {
        self.pos = offset as usize;
        Ok(offset)
    }
    fn read_current_to_end(&mut self, _max: u64) -> anyhow::Result<Vec<u8>> {
        self.pos = self.current.len();
        Ok(self.current.clone())
    }
    fn copy_to(&mut self, dst: &mut dyn std::io::Write, n: u64) -> anyhow::Result<()> {
        let mut buf = vec![0u8; n as usize];
        self.read_exact_current(&mut buf)?;
        dst.write_all(&buf)?;
        Ok(())
    }
}

/// Applies every tar-diff of the delta archive with the `oci-delta` crate over `old`'s files
/// and checks each rebuilt tar against the target's DiffID; returns how many were applied.
fn apply_with_the_crate(archive: &Path, old: &[Layer]) -> usize {
    let index: serde_json::Value =
        serde_json::from_slice(&archive_member(archive, "index.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&blob(
        archive,
        index["manifests"][0]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    let content =
        |l: &serde_json::Value| l["annotations"]["io.github.containers.delta.content"].clone();
    let find = |what: &str| {
        layers.iter().find(|l| content(l) == what).unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let target: serde_json::Value =
        serde_json::from_slice(&blob(archive, &find("image-manifest"))).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&blob(archive, &find("image-config"))).unwrap();
    let mut applied = 0;
    for layer in layers
        .iter()
        .filter(|l| l["mediaType"] == "application/vnd.tar-diff")
    {
        let to = layer["annotations"]["io.github.containers.delta.to"]
            .as_str()
            .unwrap();
        let i = target["layers"]
            .as_array()
            .unwrap()
            .iter()
            .position(|l| l["digest"] == to)
            .unwrap();
        let mut source = MergedRoot {
            files: merged_files(old),
            current: Vec::new(),
            pos: 0,
        };
        let mut tar = Vec::new();
        oci_delta::tar_patch_apply(
            &blob(archive, layer["digest"].as_str().unwrap())[..],
            &mut source,
            &mut tar,
        )
        .unwrap();
        assert_eq!(
            fixtures::digest(&tar),
            config["rootfs"]["diff_ids"][i].as_str().unwrap(),
            "the crate's rebuild of layer {i}"
        );
        applied += 1;
    }
    applied
}

#[test]
fn create_then_apply_with_skiff_cfsctl_and_the_crate() {
    let (old, new) = pair();
    let s = Setup::new(&old, &new, Compression::Gzip);
    let full_id = s.full_pull_id();
    for method in ["bsdiff", "zstd", "auto"] {
        let archive = s.root.join(format!("delta-{method}.tar"));
        let summary = s.create(method, &format!("oci-archive:{}", archive.display()));
        assert_eq!(summary["layers_reused"], 2, "{summary}");
        assert_eq!(summary["layers_tar_diff"], 1, "{summary}");
        let (delta, replaced) = (
            summary["delta_bytes"].as_u64().unwrap(),
            summary["replaced_bytes"].as_u64().unwrap(),
        );
        assert!(
            delta * 3 < replaced,
            "{method}: {delta} bytes for {replaced}"
        );
        // Member names without "./", as Go oci-delta looks them up.
        let mut tar = tar::Archive::new(std::fs::File::open(&archive).unwrap());
        let names: Vec<String> = tar
            .entries()
            .unwrap()
            .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
            .collect();
        assert_eq!(names[..3], ["oci-layout", "blobs/", "blobs/sha256/"]);
        assert_eq!(names.last().unwrap(), "index.json");
        assert!(names.iter().all(|n| !n.starts_with("./")));

        // skiff, into a repository holding the old image.
        let (repo, tag) = (format!("repo-{method}"), "new");
        s.copied(&s.src("old"), &s.dest(&repo, "old"));
        let stdout = s.copied(
            &format!("oci-archive:{}", archive.display()),
            &s.dest(&repo, tag),
        );
        assert!(
            stdout.contains("2 skipped, 0 full, 0 partial, 1 delta"),
            "{stdout}"
        );
        Tree::from_stored_image(&s.repo(&repo), tag)
            .unwrap()
            .assert_same(&s.expected(), &format!("skiff applying the {method} delta"));
        assert_eq!(
            run(cfsctl(&s.repo(&repo)).args(["oci", "compute-id", tag])).unwrap(),
            full_id
        );
        run(skiff().arg("fsck").arg(s.repo(&repo))).unwrap();
        // cfsctl 0.9.4, into a repository where cfsctl pulled the old image itself.
        let theirs = s.repo(&format!("cfsctl-{method}"));
        run(cfsctl(&theirs).arg("init").arg("--insecure").arg(&theirs)).unwrap();
        run(cfsctl(&theirs).args(["oci", "pull", &s.src("old"), "old"])).unwrap();
        run(cfsctl(&theirs).args([
            "oci",
            "pull",
            &format!("oci-archive:{}", archive.display()),
            "new",
        ]))
        .unwrap();
        assert_eq!(
            run(cfsctl(&theirs).args(["oci", "compute-id", "new"])).unwrap(),
            full_id,
            "cfsctl applying the {method} delta"
        );
        // The oci-delta crate's applier, over the old image's files.
        assert_eq!(apply_with_the_crate(&archive, &old), 1);
    }
}

#[test]
fn new_from_a_composefs_repository() {
    let (old, new) = pair();
    let s = Setup::new(&old, &new, Compression::Gzip);
    // NEW as a repository holds it: no layer blobs, tars from the store.
    s.copied(&s.src("new"), &s.dest("holder", "new"));
    let archive = s.root.join("delta.tar");
    let summary = s.create_from(
        &s.dest("holder", "new"),
        "bsdiff",
        &format!("oci-archive:{}", archive.display()),
    );
    assert_eq!(summary["layers_reused"], 2, "{summary}");
    s.copied(
        &format!("oci-archive:{}", archive.display()),
        &s.dest("repo", "new"),
    );
    assert_eq!(
        run(cfsctl(&s.repo("repo")).args(["oci", "compute-id", "new"])).unwrap(),
        s.full_pull_id()
    );
    assert_eq!(apply_with_the_crate(&archive, &old), 1);
}

/// A layer no tar-diff beats, from a composefs NEW (which keeps no blob): carried as a gzip
/// of its tar, under its own digest, and applied by skiff and cfsctl.
#[test]
fn layers_carried_whole_from_a_composefs_new_are_recompressed() {
    let old = fixtures::rich_image();
    let mut new = old.clone();
    let mut fresh = Layer::default();
    fresh
        .add("opt/", dir())
        .add("opt/random.bin", file(noise(31, 2_000_000)));
    new.push(fresh);
    let s = Setup::new(&old, &new, Compression::Gzip);
    s.copied(&s.src("new"), &s.dest("holder", "new"));
    let archive = s.root.join("delta.tar");
    let summary = s.create_from(
        &s.dest("holder", "new"),
        "bsdiff",
        &format!("oci-archive:{}", archive.display()),
    );
    let stdout = s.copied(
        &format!("oci-archive:{}", archive.display()),
        &s.dest("repo", "new"),
    );
    assert_eq!(
        run(cfsctl(&s.repo("repo")).args(["oci", "compute-id", "new"])).unwrap(),
        s.full_pull_id()
    );
    let theirs = s.repo("cfsctl");
    run(cfsctl(&theirs).arg("init").arg("--insecure").arg(&theirs)).unwrap();
    run(cfsctl(&theirs).args(["oci", "pull", &s.src("old"), "old"])).unwrap();
    run(cfsctl(&theirs).args([
        "oci",
        "pull",
        &format!("oci-archive:{}", archive.display()),
        "new",
    ]))
    .unwrap();
    assert_eq!(
        run(cfsctl(&theirs).args(["oci", "compute-id", "new"])).unwrap(),
        s.full_pull_id()
    );
    assert_eq!(summary["layers_original"], 1, "{summary}");
    assert!(stdout.contains("2 skipped, 1 full"), "{stdout}");
}

#[test]
fn the_delta_manifest_is_serialised_as_go_does() {
    let (old, new) = pair();
    let s = Setup::new(&old, &new, Compression::Gzip);
    let dir = s.root.join("delta-dir");
    s.create("bsdiff", &format!("oci:{}:d", dir.display()));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    let raw = std::fs::read(fixtures::blob_path(&dir, digest)).unwrap();
    let text = String::from_utf8(raw.clone()).unwrap();
    assert!(!text.ends_with('\n') && !text.contains(": ") && !text.contains('\n'));
    let keys = [
        "\"schemaVersion\"",
        "\"artifactType\"",
        "\"config\"",
        "\"layers\"",
        "\"subject\"",
        "\"annotations\"",
    ];
    // The manifest's own annotations come last (descriptors have theirs before).
    let positions: Vec<usize> = keys.iter().map(|k| text.rfind(k).unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
    assert!(
        !text.contains(
            "\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"artifactType\""
        )
    );
    let m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let a = &m["annotations"];
    for key in [
        "source",
        "source-config",
        "target",
        "reused",
        "reused-diff-id",
    ] {
        assert!(
            a[format!("io.github.containers.delta.{key}")].is_string(),
            "{key}: {text}"
        );
    }
    let reused: Vec<String> = serde_json::from_str(
        a["io.github.containers.delta.reused-diff-id"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(reused.len(), 2);
    assert_eq!(
        m["config"]["digest"],
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    );
    assert_eq!(
        m["subject"]["digest"],
        a["io.github.containers.delta.target"]
    );
    // Descriptor keys in Go's order.
    let layer = &text[text.find("\"layers\":[{").unwrap()..];
    let order: Vec<usize> = ["\"mediaType\"", "\"digest\"", "\"size\"", "\"annotations\""]
        .iter()
        .map(|k| layer.find(k).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{layer}");
}

#[test]
fn a_tar_header_claiming_a_terabyte_is_an_error_not_an_allocation() {
    let (old, new) = pair();
    let s = Setup::new(&old, &new, Compression::Gzip);
    // One regular file claiming 1 TiB (GNU base-256 size) followed by 1 KiB: a truncated layer.
    let mut header = tar::Header::new_gnu();
    header.set_path("usr/huge").unwrap();
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(1 << 40);
    header.set_cksum();
    let mut tar = header.as_bytes().to_vec();
    tar.extend_from_slice(&noise(5, 1024));
    let blob = fixtures::compress_tar(&tar, Compression::Gzip).unwrap();
    fixtures::write_image_raw(
        &s.layout,
        "huge",
        &[(fixtures::media_type(Compression::Gzip).to_owned(), blob)],
        &[fixtures::digest(&tar)],
        fixtures::native_arch(),
    )
    .unwrap();
    let out = output(skiff().args([
        "delta",
        "create",
        &s.dest("repo", "old"),
        &s.src("huge"),
        &format!("oci-archive:{}", s.root.join("huge.tar").display()),
    ]))
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Reading the new layer: unexpected EOF"),
        "{stderr}"
    );
}

#[test]
fn files_over_192_mib_use_the_rolling_checksum() {
    let big = noise(21, 200 * 1024 * 1024);
    let mut changed = big.clone();
    for i in (0..changed.len()).step_by(16 * 1024 * 1024) {
        changed[i..i + 100].fill(7);
    }
    let mut old_layer = Layer::default();
    old_layer
        .add("usr/", dir())
        .add("usr/big.bin", file(big))
        .add("usr/note", file(text(1, 1000)));
    let mut new_layer = Layer::default();
    new_layer
        .add("usr/", dir())
        .add("usr/big.bin", file(changed))
        .add("usr/note", file(text(1, 1000)));
    let s = Setup::new(&[old_layer], &[new_layer], Compression::None);
    let archive = s.root.join("delta.tar");
    let summary = s.create("bsdiff", &format!("oci-archive:{}", archive.display()));
    assert_eq!(summary["layers_tar_diff"], 1, "{summary}");
    let delta = summary["delta_bytes"].as_u64().unwrap();
    assert!(delta < 10 * 1024 * 1024, "{delta} bytes: {summary}");
    s.copied(
        &format!("oci-archive:{}", archive.display()),
        &s.dest("repo", "new"),
    );
    Tree::from_stored_image(&s.repo("repo"), "new")
        .unwrap()
        .assert_same(&s.expected(), "rolling-checksum delta");
}

#[test]
fn a_delta_in_a_registry_applies_through_skopeo() {
    let (old, new) = pair();
    let s = Setup::new(&old, &new, Compression::Gzip);
    let archive = s.root.join("delta.tar");
    s.create("auto", &format!("oci-archive:{}", archive.display()));
    let registry = Registry::start_plain().unwrap();
    // skopeo copies the artifact as it is (manifest digest unchanged).
    let remote = registry
        .push(&format!("oci-archive:{}", archive.display()), "app:delta")
        .unwrap();
    let full_id = s.full_pull_id();
    copy_uses_the_delta(&s, &remote, "repo", "new", &full_id);
    // Pushed by skopeo to registries with the referrers API (skopeo writes no fallback tag): an
    // ordinary copy of the target, into a store holding the old image, finds it through the API.
    for (repo, referrers) in [
        ("api-ferro", Registry::start_referrers().unwrap()),
        ("api-ggcr", Registry::start_ggcr().unwrap()),
    ] {
        let new_ref = referrers.push(&s.src("new"), "app:new").unwrap();
        referrers
            .push(&format!("oci-archive:{}", archive.display()), "app:delta")
            .unwrap();
        let tags = referrers.tags("app").unwrap();
        assert!(tags.iter().all(|t| !t.starts_with("sha256-")), "{tags:?}");
        s.copied(&s.src("old"), &s.dest(repo, "app"));
        let stdout = copy_uses_the_delta(&s, &new_ref, repo, "app", &full_id);
        assert!(stdout.contains("Using delta sha256:"), "{stdout}");
    }
}

/// `skiff copy SOURCE` (plain HTTP) into `repo` as `tag` rebuilds the new image from a delta
/// (the old image's two layers skipped) and stores what a full pull stores; its output.
fn copy_uses_the_delta(s: &Setup, source: &str, repo: &str, tag: &str, full_id: &str) -> String {
    let out = output(skiff().args([
        "copy",
        "--progress=plain",
        "--src-tls-verify=false",
        source,
        &s.dest(repo, tag),
    ]))
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("2 skipped, 0 full, 0 partial, 1 delta"),
        "{stdout}"
    );
    assert_eq!(
        run(cfsctl(&s.repo(repo)).args(["oci", "compute-id", tag])).unwrap(),
        full_id
    );
    stdout.into_owned()
}

/// skiff's flags to reach `registry` as a source (`src`) or destination (`dest`).
fn registry_flags(registry: &Registry, side: &str) -> Vec<String> {
    let mut flags = Vec::new();
    match registry.cert_dir() {
        Some(dir) => flags.push(format!("--{side}-cert-dir={}", dir.display())),
        None => flags.push(format!("--{side}-tls-verify=false")),
    }
    if let Some((user, password)) = registry.creds() {
        flags.push(format!("--{side}-creds={user}:{password}"));
    }
    flags
}

/// A directory to put first on PATH whose `skopeo` records each run's arguments (one a line,
/// in `DIR/run.PID`) and the mode of every auth file it is given, then runs the real skopeo.
fn recording_skopeo(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = format!(
        r#"#!/bin/sh
log="{dir}/run.$$"
for a in "$@"; do printf '%s\n' "$a"; done > "$log"
prev=
for a in "$@"; do
    case "$prev" in --src-authfile|--authfile) stat -c 'authfile-mode %a' "$a" >> "$log";; esac
    prev=$a
done
exec {real} "$@"
"#,
        dir = dir.display(),
        real = skiff_integration::tools::require("skopeo").display()
    );
    let path = bin.join("skopeo");
    std::fs::write(&path, script).unwrap();
    let executable = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(&path, executable).unwrap();
    bin
}

/// What [`recording_skopeo`] recorded, one string per run.
fn recorded_runs(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("run."))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

#[test]
fn source_credentials_reach_skopeo_in_a_private_file_not_its_command_line() {
    let (old, new) = pair();
    let s = Setup::new(&old, &new, Compression::Gzip);
    let password = "pw-never-on-argv";
    let registry = Registry::start_tls_auth("ann", password).unwrap();
    let new_ref = registry.push(&s.src("new"), "app:new").unwrap();
    let shim = s.root.join("shim");
    let bin = recording_skopeo(&shim);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let archive = s.root.join("creds.tar");
    let out = output(
        skiff()
            .env("PATH", path)
            .args(["delta", "create"])
            .args(registry_flags(&registry, "src"))
            .args([
                &s.dest("repo", "old"),
                &new_ref,
                &format!("oci-archive:{}", archive.display()),
            ]),
    )
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs = recorded_runs(&shim);
    assert!(
        runs.iter().any(|r| r.lines().any(|l| l == "copy")),
        "skopeo copy never ran: {runs:?}"
    );
    for run in &runs {
        assert!(
            !run.contains(password),
            "a password on skopeo's argv:\n{run}"
        );
        assert!(run.contains("--src-authfile"), "no auth file given:\n{run}");
        let modes: Vec<&str> = run
            .lines()
            .filter(|l| l.starts_with("authfile-mode"))
            .collect();
        assert_eq!(modes, ["authfile-mode 600"], "{run}");
    }
}

#[test]
fn deltas_pushed_to_a_registry_are_found_by_ordinary_copies() {
    let (old, new) = pair();
    let s = Setup::new(&old, &new, Compression::Gzip);
    let full_id = s.full_pull_id();
    for registry in [
        Registry::start_plain().unwrap(),
        Registry::start_tls_auth("ann", "s3cret").unwrap(),
        // The referrers API: the delta is listed there, the copies below find it through it.
        Registry::start_referrers().unwrap(),
        Registry::start_ggcr().unwrap(),
    ] {
        let old_ref = registry.push(&s.src("old"), "app:old").unwrap();
        let new_ref = registry.push(&s.src("new"), "app:new").unwrap();
        // NEW read from the registry too (through skopeo, digests preserved).
        let push = output(
            skiff()
                .args(["delta", "create"])
                .args(registry_flags(&registry, "dest"))
                .args(registry_flags(&registry, "src"))
                .args([
                    &s.dest("repo", "old"),
                    &new_ref,
                    &registry.docker_ref("app:delta"),
                ]),
        )
        .unwrap();
        assert!(
            push.status.success(),
            "{}",
            String::from_utf8_lossy(&push.stderr)
        );
        // The fallback tag exists exactly when the registry does not say it indexes the subject.
        let fallback_tags = registry
            .tags("app")
            .unwrap()
            .into_iter()
            .filter(|t| t.starts_with("sha256-"))
            .count();
        assert_eq!(fallback_tags, usize::from(!registry.indexes_subjects()));
        let src = registry_flags(&registry, "src");
        let copy = |source: &str, dest: &str, extra: &[&str]| {
            output(
                skiff()
                    .args(["copy", "--progress=plain"])
                    .args(&src)
                    .args(extra)
                    .args([source, dest]),
            )
            .unwrap()
        };
        // A repository holding the old image: the copy of the new one uses the delta.
        let repo = format!("with-old-{}", registry.host().replace(':', "-"));
        assert!(copy(&old_ref, &s.dest(&repo, "app"), &[]).status.success());
        let out = copy(&new_ref, &s.dest(&repo, "app"), &[]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("Using delta sha256:"), "{stdout}");
        assert!(
            stdout.contains("2 skipped, 0 full, 0 partial, 1 delta"),
            "{stdout}"
        );
        assert!(stdout.contains("  delta     sha256:"), "{stdout}");
        assert_eq!(
            run(cfsctl(&s.repo(&repo)).args(["oci", "compute-id", "app"])).unwrap(),
            full_id
        );
        // --no-delta: the layers themselves.
        let repo = format!("no-delta-{}", registry.host().replace(':', "-"));
        assert!(copy(&old_ref, &s.dest(&repo, "app"), &[]).status.success());
        let out = copy(&new_ref, &s.dest(&repo, "app"), &["--no-delta"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!stdout.contains("delta sha256"), "{stdout}");
        assert!(stdout.contains("2 skipped, 1 full"), "{stdout}");
        // Without the old image the delta cannot apply: a normal copy.
        let repo = format!("fresh-{}", registry.host().replace(':', "-"));
        let out = copy(&new_ref, &s.dest(&repo, "app"), &[]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("0 skipped, 3 full"), "{stdout}");
        assert_eq!(
            run(cfsctl(&s.repo(&repo)).args(["oci", "compute-id", "app"])).unwrap(),
            full_id
        );
    }
}

/// A delta blob larger than one upload chunk (16 MiB) goes to the registry in `PATCH` chunks,
/// read from its temporary file as they are sent, and applies from there.
#[test]
fn a_delta_blob_larger_than_an_upload_chunk_is_pushed_in_chunks() {
    // A text file that diffs well (so that the delta costs less than the layer and copies use
    // it), and noise that OLD lacks (so that the tar-diff carries 36 MiB literally).
    let book = text(3, 8 * 1024 * 1024);
    let mut edited = book.clone();
    edited[4096..4200].fill(b'x');
    let mut old_layer = Layer::default();
    old_layer.add("usr/", dir()).add("usr/book.txt", file(book));
    let mut new_layer = Layer::default();
    new_layer
        .add("usr/", dir())
        .add("usr/book.txt", file(edited))
        .add("usr/noise.bin", file(noise(5, 36 * 1024 * 1024)));
    let s = Setup::new(&[old_layer], &[new_layer], Compression::Gzip);
    let full_id = s.full_pull_id();
    for registry in [
        Registry::start_plain().unwrap(),
        Registry::start_ggcr().unwrap(),
    ] {
        let new_ref = registry.push(&s.src("new"), "big:new").unwrap();
        let push = output(
            skiff()
                .env("SKIFF_LOG", "debug")
                .args(["delta", "create", "--json"])
                .args(registry_flags(&registry, "dest"))
                .args(registry_flags(&registry, "src"))
                .args([
                    &s.dest("repo", "old"),
                    &new_ref,
                    &registry.docker_ref("big:delta"),
                ]),
        )
        .unwrap();
        let stderr = String::from_utf8_lossy(&push.stderr);
        assert!(push.status.success(), "{stderr}");
        let summary: serde_json::Value = serde_json::from_slice(&push.stdout).unwrap();
        assert_eq!(summary["layers_tar_diff"], 1, "{summary}");
        assert!(
            summary["delta_bytes"].as_u64().unwrap() > 32 << 20,
            "{summary}"
        );
        let chunks = stderr.matches("uploading bytes").count();
        assert!(chunks >= 3, "{chunks} chunks: {stderr}");
        let repo = format!("big-{}", registry.host().replace(':', "-"));
        let old_ref = registry.push(&s.src("old"), "big:old").unwrap();
        let flags = registry_flags(&registry, "src");
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let copy = |source: &str| copy(&flags, source, &s.dest(&repo, "app"));
        assert!(copy(&old_ref).status.success());
        let out = copy(&new_ref);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("Using delta sha256:"), "{stdout}");
        assert_eq!(
            run(cfsctl(&s.repo(&repo)).args(["oci", "compute-id", "app"])).unwrap(),
            full_id
        );
    }
}

#[test]
fn layers_carried_whole_are_read_by_their_real_compression() {
    let (old, new) = pair();
    // zstd layers, which a delta labels gzip when it carries them whole.
    let s = Setup::new(&old, &new, Compression::Zstd);
    let dir = s.root.join("whole");
    s.create("bsdiff", &format!("oci:{}:d", dir.display()));
    let target = fixtures::layout_manifest(&s.layout, "new").unwrap();
    let last = target["layers"].as_array().unwrap().last().unwrap().clone();
    edit_delta(&dir, |dir, m| {
        let digest = last["digest"].as_str().unwrap();
        std::fs::copy(
            fixtures::blob_path(&s.layout, digest),
            fixtures::blob_path(dir, digest),
        )
        .unwrap();
        for l in m["layers"].as_array_mut().unwrap() {
            if l["mediaType"] == "application/vnd.tar-diff" {
                l["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip".into();
                l["digest"] = last["digest"].clone();
                l["size"] = last["size"].clone();
            }
        }
    });
    let stdout = s.copied(&format!("oci:{}:d", dir.display()), &s.dest("repo", "new"));
    assert!(
        stdout.contains("2 skipped, 1 full, 0 partial, 0 delta"),
        "{stdout}"
    );
    Tree::from_stored_image(&s.repo("repo"), "new")
        .unwrap()
        .assert_same(&s.expected(), "a layer carried whole");
}

// ---- Bad deltas ----------------------------------------------------------------------------

/// Applies the delta in `dir`, expecting a failure that mentions `expected`; the repository
/// keeps its old image only and passes fsck.
fn apply_fails(s: &Setup, dir: &Path, expected: &str) {
    let out = copy(
        &[],
        &format!("oci:{}:d", dir.display()),
        &s.dest("repo", "new"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(expected),
        "expected {expected:?} in: {stderr}"
    );
    assert!(!s.repo("repo").join("streams/refs/oci/new").exists());
    run(skiff().arg("fsck").arg(s.repo("repo"))).unwrap();
}

#[test]
fn bad_deltas_are_refused_and_store_nothing() {
    let (old, new) = pair();
    let s = Setup::new(&old, &new, Compression::Gzip);
    let fresh = |name: &str| {
        let dir = s.root.join(name);
        s.create("bsdiff", &format!("oci:{}:d", dir.display()));
        dir
    };

    // The source image is not in the repository.
    let dir = fresh("no-source");
    let out = copy(
        &[],
        &format!("oci:{}:d", dir.display()),
        &s.dest("empty", "new"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let old_config = {
        let m: serde_json::Value = serde_json::from_slice(
            &run(skiff().args(["inspect", "--raw", &s.dest("repo", "old")]))
                .unwrap()
                .into_bytes(),
        )
        .unwrap();
        m["config"]["digest"].as_str().unwrap().to_owned()
    };
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&old_config) && stderr.contains("copy that image"),
        "{stderr}"
    );

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "climbs",
            tar_diff(false, &[(1, 16, b"../../etc/passwd"), (2, 10, b"")]),
            "the delta opens \"../../etc/passwd\": the source image has no regular file there",
        ),
        (
            "symlink",
            tar_diff(false, &[(1, 17, b"usr/lib/libfoo.so"), (2, 10, b"")]),
            "the source image has no regular file there (symlinks are not followed)",
        ),
        (
            "past-end",
            tar_diff(
                false,
                &[
                    (1, 19, b"usr/lib/libfoo.so.1"),
                    (4, 69_990, b""),
                    (2, 100, b""),
                ],
            ),
            "reads bytes 69990..70090 of \"usr/lib/libfoo.so.1\", which has 70000 bytes",
        ),
        (
            "add-over-limit",
            tar_diff(
                false,
                &[
                    (1, 19, b"usr/lib/libfoo.so.1"),
                    (3, 100 * 1024 * 1024 + 1, b""),
                ],
            ),
            "exceeds limit",
        ),
        (
            "truncated",
            {
                let mut t = tar_diff(false, &[(0, 5000, &noise(3, 5000))]);
                t.truncate(t.len() / 2);
                t
            },
            "incomplete frame",
        ),
        (
            "wrong-diff-id",
            tar_diff(false, &[(0, 1024, &[0u8; 1024])]),
            "DiffID mismatch",
        ),
    ];
    for (name, blob, expected) in cases {
        let dir = fresh(name);
        replace_tar_diff(&dir, blob);
        apply_fails(&s, &dir, expected);
    }

    // The embedded target manifest does not match its descriptor.
    let dir = fresh("manifest");
    edit_delta(&dir, |dir, m| {
        let desc = m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["annotations"]["io.github.containers.delta.content"] == "image-manifest")
            .unwrap();
        let path = fixtures::blob_path(dir, desc["digest"].as_str().unwrap());
        let mut bytes = std::fs::read(&path).unwrap();
        // Same size as the descriptor says, different bytes.
        let last = bytes.len() - 1;
        bytes[last] = b' ';
        std::fs::write(&path, bytes).unwrap();
    });
    apply_fails(&s, &dir, "corrupt");
}
