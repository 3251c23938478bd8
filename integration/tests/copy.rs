//! `skiff copy` end to end from local transports, against the real skopeo and cfsctl: the
//! stored tree equals the layers' (extracted independently), cfsctl reads the image, and every
//! bad input gives a clear error and an untouched store.

use std::path::{Path, PathBuf};
use std::process::Output;

use skiff_integration::fixtures::{self, Compression, Layer, Node};
use skiff_integration::tools::{cfsctl, output, run, skiff, skopeo};
use skiff_integration::tree::Tree;

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
    /// A fixture as an OCI layout `layout` tagged `tag`.
    fn layout(
        &self,
        tag: &str,
        layers: &[Layer],
        compression: Compression,
    ) -> (PathBuf, fixtures::WrittenImage) {
        let dir = self.path("layout");
        let written = fixtures::write_oci_layout(&dir, tag, layers, compression).unwrap();
        (dir, written)
    }
}

fn copy(source: &str, dest: &str, extra: &[&str]) -> Output {
    output(
        skiff()
            .args(["copy", "--progress=json"])
            .args(extra)
            .arg(source)
            .arg(dest),
    )
    .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        stderr(out),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The closing summary of a `--progress=json` copy.
fn summary(out: &Output) -> serde_json::Value {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "summary")
        .unwrap_or_else(|| panic!("no summary in {}", String::from_utf8_lossy(&out.stdout)))
}

fn assert_failed(out: &Output, code: i32, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "expected exit {code}: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
}

fn tag_exists(repo: &Path, tag: &str) -> bool {
    repo.join("streams/refs/oci")
        .join(tag.replace('/', "%2F"))
        .symlink_metadata()
        .is_ok()
}

fn fsck_ok(repo: &Path) {
    run(skiff().arg("fsck").arg(repo)).unwrap();
    run(cfsctl(repo).args(["oci", "fsck"])).unwrap();
}

fn compute_id(repo: &Path, tag: &str) -> String {
    run(cfsctl(repo).args(["oci", "compute-id", tag]))
        .unwrap()
        .trim()
        .to_owned()
}

/// cfsctl's own pull of the same source: the reference for compute-id.
fn cfsctl_compute_id(case: &Case, source: &str) -> String {
    let theirs = case.path("cfsctl-repo");
    if !theirs.exists() {
        run(skiff_integration::tools::cfsctl(&theirs)
            .arg("init")
            .arg("--insecure")
            .arg(&theirs))
        .unwrap();
    }
    run(cfsctl(&theirs).args(["oci", "pull", source, "reference"])).unwrap();
    compute_id(&theirs, "reference")
}

#[test]
fn rich_image_from_every_local_transport() {
    let case = Case::new();
    let layers = fixtures::rich_image();
    let expected = Tree::from_layers(&fixtures::layer_tars(&layers).unwrap()).unwrap();
    let (layout, _) = case.layout("rich", &layers, Compression::Gzip);
    let layout = layout.display().to_string();
    fixtures::write_oci_layout(Path::new(&layout), "rich-zstd", &layers, Compression::Zstd)
        .unwrap();
    fixtures::write_oci_layout(
        Path::new(&layout),
        "rich-frames",
        &layers,
        Compression::ZstdFrames,
    )
    .unwrap();
    fixtures::write_oci_layout(Path::new(&layout), "rich-plain", &layers, Compression::None)
        .unwrap();
    let archive = case.path("rich.tar").display().to_string();
    let docker_archive = case.path("rich-docker.tar").display().to_string();
    let dir = case.path("rich-dir").display().to_string();
    let chunked = case.path("chunked").display().to_string();
    run(skopeo().args([
        "copy",
        &format!("oci:{layout}:rich"),
        &format!("oci-archive:{archive}:rich"),
    ]))
    .unwrap();
    run(skopeo().args([
        "copy",
        &format!("oci:{layout}:rich"),
        &format!("docker-archive:{docker_archive}:skiff/rich:latest"),
    ]))
    .unwrap();
    run(skopeo().args(["copy", &format!("oci:{layout}:rich"), &format!("dir:{dir}")])).unwrap();
    run(skopeo().args([
        "copy",
        "--dest-compress-format",
        "zstd:chunked",
        &format!("oci:{layout}:rich"),
        &format!("oci:{chunked}:rich"),
    ]))
    .unwrap();
    // A gzip-compressed oci-archive is read through skopeo's proxy rather than directly.
    let gz = case.path("rich.tar.gz").display().to_string();
    run(std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -c {archive} > {gz}")))
    .unwrap();

    let reference = cfsctl_compute_id(&case, &format!("oci:{layout}:rich"));
    let repo = case.path("repo");
    let sources = [
        format!("oci:{layout}:rich"),
        format!("oci:{layout}:rich-zstd"),
        format!("oci:{layout}:rich-frames"),
        format!("oci:{layout}:rich-plain"),
        format!("oci-archive:{archive}:rich"),
        format!("oci-archive:{gz}:rich"),
        format!("docker-archive:{docker_archive}"),
        format!("dir:{dir}"),
        format!("oci:{chunked}:rich"),
    ];
    for (i, source) in sources.iter().enumerate() {
        let tag = format!("t{i}");
        // A fresh repository per source, so that nothing is skipped.
        let repo_i = case.path(&format!("repo{i}"));
        let out = copy(
            source,
            &format!("composefs:{}:{tag}", repo_i.display()),
            &[],
        );
        assert_ok(&out, source);
        assert_eq!(summary(&out)["layers_full"], 2, "{source}");
        Tree::from_stored_image(&repo_i, &tag)
            .unwrap()
            .assert_same(&expected, source);
        fsck_ok(&repo_i);
        assert_eq!(
            compute_id(&repo_i, &tag),
            reference,
            "compute-id of {source}"
        );
        let images = run(cfsctl(&repo_i).args(["oci", "images"])).unwrap();
        assert!(images.contains(&tag), "cfsctl oci images: {images}");
        // All into one repository too: everything after the first is already stored.
        let out = copy(source, &format!("composefs:{}:{tag}", repo.display()), &[]);
        assert_ok(&out, source);
        if i > 0 {
            assert_eq!(
                summary(&out)["layers_skipped"],
                2,
                "{source} into a repository that has its layers"
            );
            assert_eq!(summary(&out)["bytes_fetched"], 0);
        }
    }
    fsck_ok(&repo);
}

#[test]
fn image_without_usr() {
    let case = Case::new();
    let mut layers = fixtures::scratch_image();
    layers[0]
        .add("run/", fixtures::dir())
        .add("run/ignored", fixtures::file("x"));
    let (layout, _) = case.layout("scratch", &layers, Compression::Gzip);
    let repo = case.path("repo");
    let out = copy(
        &format!("oci:{}:scratch", layout.display()),
        &format!("composefs:{}:scratch", repo.display()),
        &[],
    );
    assert_ok(&out, "scratch");
    let expected = Tree::from_layers(&fixtures::layer_tars(&layers).unwrap()).unwrap();
    Tree::from_stored_image(&repo, "scratch")
        .unwrap()
        .assert_same(&expected, "scratch");
    run(cfsctl(&repo).args(["oci", "fsck"])).unwrap();
    run(skiff().arg("fsck").arg(&repo)).unwrap();
    // cfsctl 0.9.4 cannot build the tree of such an image itself.
    let theirs = output(cfsctl(&repo).args(["oci", "compute-id", "scratch"])).unwrap();
    assert!(!theirs.status.success());
}

#[test]
fn dedup_digestfile_inspect_images_rm_gc() {
    let case = Case::new();
    let (layout, written) = case.layout("rich", &fixtures::rich_image(), Compression::Gzip);
    let repo = case.path("repo");
    let digestfile = case.path("digest");
    let out = copy(
        &format!("oci:{}:rich", layout.display()),
        &format!("composefs:{}:rich", repo.display()),
        &["--digestfile", digestfile.to_str().unwrap()],
    );
    assert_ok(&out, "copy");
    let s = summary(&out);
    assert_eq!(
        std::fs::read_to_string(&digestfile).unwrap(),
        written.manifest_digest
    );
    assert_eq!(s["manifest_digest"], written.manifest_digest);
    // dup-of-tool in the upper layer has the content of usr/bin/tool below.
    assert!(s["objects_reused"].as_u64().unwrap() >= 1, "{s}");

    let images: serde_json::Value =
        serde_json::from_str(&run(skiff().args(["images", "--json"]).arg(&repo)).unwrap()).unwrap();
    assert_eq!(images[0]["name"], "rich");
    assert_eq!(images[0]["digest"], written.manifest_digest);
    let inspect: serde_json::Value = serde_json::from_str(
        &run(skiff().args(["inspect", &format!("composefs:{}:rich", repo.display())])).unwrap(),
    )
    .unwrap();
    assert_eq!(inspect["Digest"], written.manifest_digest);
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 2);
    let raw = run(skiff().args([
        "inspect",
        "--raw",
        &format!("composefs:{}@{}", repo.display(), written.manifest_digest),
    ]))
    .unwrap();
    assert_eq!(
        raw.as_bytes(),
        std::fs::read(fixtures::blob_path(&layout, &written.manifest_digest)).unwrap()
    );
    let config = run(skiff().args([
        "inspect",
        "--config",
        "--raw",
        &format!("composefs:{}:rich", repo.display()),
    ]))
    .unwrap();
    assert_eq!(fixtures::digest(config.as_bytes()), written.config_digest);

    // The default repository comes from SKIFF_REPO.
    let listed = run(skiff().arg("images").env("SKIFF_REPO", &repo)).unwrap();
    assert!(listed.contains("rich"), "{listed}");

    // cfsctl's gc keeps the content indexes of tagged images...
    run(cfsctl(&repo).arg("gc")).unwrap();
    let fsck = run(skiff().arg("fsck").arg(&repo)).unwrap();
    assert!(fsck.contains("2 content indexes checked"), "{fsck}");
    // ...and removes them with their layers once the image is gone.
    let objects_before = count_objects(&repo);
    run(skiff().args(["rm", &format!("composefs:{}:rich", repo.display())])).unwrap();
    assert!(!tag_exists(&repo, "rich"));
    let gc = run(skiff().arg("gc").arg(&repo)).unwrap();
    assert!(gc.contains("Removed"), "{gc}");
    assert_eq!(
        count_objects(&repo),
        0,
        "objects left after rm and gc (had {objects_before})"
    );
    let err = output(skiff().args(["rm", &format!("composefs:{}:rich", repo.display())])).unwrap();
    assert_failed(&err, 1, &["not found"]);
}

fn count_objects(repo: &Path) -> usize {
    std::fs::read_dir(repo.join("objects"))
        .map(|d| {
            d.flatten()
                .map(|sub| {
                    std::fs::read_dir(sub.path())
                        .map(|f| f.count())
                        .unwrap_or(0)
                })
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn content_index_survives_cfsctl_gc_and_goes_with_its_layer() {
    let case = Case::new();
    let (layout, _) = case.layout("a", &fixtures::rich_image(), Compression::Gzip);
    fixtures::write_oci_layout(&layout, "b", &fixtures::scratch_image(), Compression::Gzip)
        .unwrap();
    let repo = case.path("repo");
    for tag in ["a", "b"] {
        assert_ok(
            &copy(
                &format!("oci:{}:{tag}", layout.display()),
                &format!("composefs:{}:{tag}", repo.display()),
                &[],
            ),
            tag,
        );
    }
    run(skiff().args(["rm", &format!("composefs:{}:a", repo.display())])).unwrap();
    run(cfsctl(&repo).arg("gc")).unwrap();
    let fsck = run(skiff().arg("fsck").arg(&repo)).unwrap();
    assert!(fsck.contains("1 content indexes checked"), "{fsck}");
    run(cfsctl(&repo).args(["oci", "fsck"])).unwrap();
}

#[test]
fn multi_arch_index_chooses_the_platform() {
    let case = Case::new();
    let layout = case.path("layout");
    let mut arm = Layer::default();
    arm.add("usr/", fixtures::dir())
        .add("usr/arch", fixtures::file("arm64\n"));
    let mut amd = Layer::default();
    amd.add("usr/", fixtures::dir())
        .add("usr/arch", fixtures::file("amd64\n"));
    fixtures::write_multi_arch(
        &layout,
        "multi",
        &[("amd64", vec![amd]), ("arm64", vec![arm.clone()])],
    )
    .unwrap();
    let archive = case.path("multi.tar");
    run(skopeo().args([
        "copy",
        "--all",
        &format!("oci:{}:multi", layout.display()),
        &format!("oci-archive:{}:multi", archive.display()),
    ]))
    .unwrap();
    let gz = case.path("multi.tar.gz");
    run(std::process::Command::new("sh").arg("-c").arg(format!(
        "gzip -c {} > {}",
        archive.display(),
        gz.display()
    )))
    .unwrap();
    let expected = Tree::from_layers(&fixtures::layer_tars(&[arm]).unwrap()).unwrap();
    // Directly, and through skopeo's proxy.
    for (i, source) in [
        format!("oci:{}:multi", layout.display()),
        format!("oci-archive:{}:multi", gz.display()),
    ]
    .iter()
    .enumerate()
    {
        let repo = case.path(&format!("repo{i}"));
        let out = copy(
            source,
            &format!("composefs:{}:m", repo.display()),
            &["--override-arch", "arm64"],
        );
        assert_ok(&out, source);
        Tree::from_stored_image(&repo, "m")
            .unwrap()
            .assert_same(&expected, source);
        let out = copy(
            source,
            &format!("composefs:{}:s", repo.display()),
            &["--override-arch", "s390x"],
        );
        assert!(
            !out.status.success(),
            "{source}: no s390x image, yet: {}",
            stderr(&out)
        );
    }
}

#[test]
fn bad_references_and_flags() {
    let case = Case::new();
    let repo = format!("composefs:{}:x", case.path("repo").display());
    assert_failed(
        &copy("busybox", &repo, &[]),
        1,
        &["expected TRANSPORT:DETAILS"],
    );
    assert_failed(
        &copy("ftp://example/x", &repo, &[]),
        1,
        &["unknown transport \"ftp\""],
    );
    assert_failed(&copy("docker://Bad/Name", &repo, &[]), 1, &["\"Bad\""]);
    assert_failed(
        &copy("oci:/tmp/x", "composefs:/tmp/only-a-path", &[]),
        1,
        &["composefs:PATH:NAME"],
    );
    assert_failed(&copy("oci:/tmp/x", "oci:/tmp/y", &[]), 1, &["composefs"]);
    assert_failed(
        &copy("oci:/tmp/x", &repo, &["--dest-compress-format", "zstd"]),
        1,
        &["--dest-compress-format applies when copying out of composefs storage"],
    );
    assert_failed(
        &copy("oci:/tmp/x", &repo, &["--preserve-digests"]),
        1,
        &["--preserve-digests"],
    );
    assert!(
        !case.path("repo").exists(),
        "a rejected command must not create the repository"
    );
}

#[test]
fn missing_images_exit_2() {
    let case = Case::new();
    let (layout, _) = case.layout("rich", &fixtures::rich_image(), Compression::Gzip);
    let repo = case.path("repo");
    let dest = format!("composefs:{}:x", repo.display());
    assert_failed(
        &copy(&format!("oci:{}:nope", layout.display()), &dest, &[]),
        2,
        &["not found"],
    );
    assert_failed(
        &copy(
            &format!("oci:{}:x", case.path("no-such-dir").display()),
            &dest,
            &[],
        ),
        2,
        &["not found"],
    );
    assert_failed(
        &copy(
            &format!("oci-archive:{}:x", case.path("no.tar").display()),
            &dest,
            &[],
        ),
        2,
        &["not found"],
    );
    assert_failed(
        &copy(
            &format!("dir:{}", case.path("no-such-dir").display()),
            &dest,
            &[],
        ),
        2,
        &[],
    );
}

/// A layout whose single layer is `blob` with media type `media_type`, claiming `diff_id`.
fn raw_image(case: &Case, tag: &str, media_type: &str, blob: Vec<u8>, diff_id: &str) -> String {
    let layout = case.path("layout");
    fixtures::write_image_raw(
        &layout,
        tag,
        &[(media_type.to_owned(), blob)],
        &[diff_id.to_owned()],
        fixtures::native_arch(),
    )
    .unwrap();
    format!("oci:{}:{tag}", layout.display())
}

fn small_tar() -> Vec<u8> {
    let mut l = Layer::default();
    l.add("usr/", fixtures::dir())
        .add("usr/data", fixtures::file(fixtures::noise(5, 300_000)));
    fixtures::layer_tar(&l).unwrap()
}

#[test]
fn bad_layers_fail_clearly_and_leave_the_store_as_it_was() {
    let case = Case::new();
    let repo = case.path("repo");
    // A good image under the tag every bad one will try to take.
    let (layout, _) = case.layout("good", &fixtures::rich_image(), Compression::Gzip);
    assert_ok(
        &copy(
            &format!("oci:{}:good", layout.display()),
            &format!("composefs:{}:app", repo.display()),
            &[],
        ),
        "good",
    );
    let before = Tree::from_stored_image(&repo, "app").unwrap();

    let tar = small_tar();
    let diff_id = fixtures::digest(&tar);
    let gz = fixtures::compress_tar(&tar, Compression::Gzip).unwrap();
    let zst = fixtures::compress_tar(&tar, Compression::Zstd).unwrap();
    let gzip_type = fixtures::media_type(Compression::Gzip);
    let zstd_type = fixtures::media_type(Compression::Zstd);

    // A corrupted blob: same size, one byte changed.
    let corrupt = raw_image(&case, "corrupt", gzip_type, gz.clone(), &diff_id);
    let w = fixtures::digest(&gz);
    let path = fixtures::blob_path(&layout, &w);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();

    let cases: Vec<(String, Vec<&str>)> = vec![
        (corrupt, vec!["corrupt", &w]),
        (
            raw_image(
                &case,
                "wrong-diffid",
                zstd_type,
                zst.clone(),
                &fixtures::digest(b"other"),
            ),
            vec!["DiffID mismatch", &diff_id],
        ),
        (
            raw_image(
                &case,
                "trunc-gz",
                gzip_type,
                gz[..gz.len() - 100].to_vec(),
                &diff_id,
            ),
            vec!["trunc-gz", "unexpected end of file"],
        ),
        (
            raw_image(
                &case,
                "trunc-zst",
                zstd_type,
                zst[..zst.len() - 100].to_vec(),
                &diff_id,
            ),
            vec!["trunc-zst", "the zstd stream ends inside a frame"],
        ),
        (
            raw_image(
                &case,
                "bzip",
                "application/vnd.oci.image.layer.v1.tar+bzip2",
                tar.clone(),
                &diff_id,
            ),
            vec!["unsupported layer media type", "tar+bzip2"],
        ),
        (
            raw_image(
                &case,
                "escape",
                fixtures::media_type(Compression::None),
                escaping_tar(),
                &fixtures::digest(&escaping_tar()),
            ),
            vec!["../escape", "leaves the image root"],
        ),
    ];
    for (source, needles) in cases {
        let out = copy(&source, &format!("composefs:{}:app", repo.display()), &[]);
        let mut needles = needles;
        needles.push("Copying");
        assert_failed(&out, 1, &needles);
        Tree::from_stored_image(&repo, "app")
            .unwrap()
            .assert_same(&before, &format!("after {source}"));
        fsck_ok(&repo);
    }

    // A good copy over the tag moves it.
    let v2 = raw_image(&case, "v2", gzip_type, gz, &diff_id);
    assert_ok(
        &copy(&v2, &format!("composefs:{}:app", repo.display()), &[]),
        "v2",
    );
    let expected = Tree::from_layers(&[tar]).unwrap();
    Tree::from_stored_image(&repo, "app")
        .unwrap()
        .assert_same(&expected, "v2");
    fsck_ok(&repo);
}

/// A tar with `../escape`: the tar crate refuses to write such a name, so patch it in.
fn escaping_tar() -> Vec<u8> {
    let mut l = Layer::default();
    l.add("usr/", fixtures::dir())
        .add("zz/escape", fixtures::file("x"));
    let mut tar = fixtures::layer_tar(&l).unwrap();
    patch_name(&mut tar, b"zz/escape", b"../escape");
    tar
}

/// Replaces a name in a tar header by another of the same length, fixing the checksum.
fn patch_name(tar: &mut [u8], from: &[u8], to: &[u8]) {
    let pos = tar.windows(from.len()).position(|w| w == from).unwrap();
    tar[pos..pos + to.len()].copy_from_slice(to);
    let start = pos - pos % 512;
    let mut header = tar::Header::new_old();
    header
        .as_mut_bytes()
        .copy_from_slice(&tar[start..start + 512]);
    header.set_cksum();
    tar[start..start + 512].copy_from_slice(header.as_bytes());
}

#[test]
fn absolute_names_and_outward_symlinks_stay_inside_the_root() {
    let case = Case::new();
    let mut l = Layer::default();
    l.add("usr/", fixtures::dir())
        .add("xetc/", fixtures::dir())
        .add("xetc/absolute", fixtures::file("stored below the root\n"))
        .add(
            "usr/evil",
            Node::Symlink {
                target: "../../../../etc/passwd".into(),
            },
        )
        .add(
            "usr/abs",
            Node::Symlink {
                target: "/etc/shadow".into(),
            },
        );
    // The tar crate refuses absolute names: write `xetc` and patch in `/etc`.
    let mut tar = fixtures::layer_tar(&l).unwrap();
    patch_name(&mut tar, b"xetc/\0", b"/etc/\0");
    patch_name(&mut tar, b"xetc/absolute", b"/etc/absolute");
    let source = raw_image(
        &case,
        "odd",
        fixtures::media_type(Compression::None),
        tar.clone(),
        &fixtures::digest(&tar),
    );
    let repo = case.path("repo");
    assert_ok(
        &copy(&source, &format!("composefs:{}:odd", repo.display()), &[]),
        "odd",
    );
    let stored = Tree::from_stored_image(&repo, "odd").unwrap();
    stored.assert_same(&Tree::from_layers(&[tar]).unwrap(), "odd");
    assert!(stored.entries.contains_key(b"/etc/absolute".as_slice()));
    // Link targets are data: kept verbatim, never resolved.
    assert_eq!(
        stored.entries[b"/usr/evil".as_slice()].kind,
        skiff_integration::tree::Kind::Symlink(b"../../../../etc/passwd".to_vec())
    );
}

#[test]
fn repository_that_is_a_file_or_read_only() {
    let case = Case::new();
    let (layout, _) = case.layout("rich", &fixtures::rich_image(), Compression::Gzip);
    let source = format!("oci:{}:rich", layout.display());
    let file = case.path("file");
    std::fs::write(&file, b"not a repository").unwrap();
    assert_failed(
        &copy(&source, &format!("composefs:{}:x", file.display()), &[]),
        1,
        &["is not a directory"],
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"not a repository");

    // Read-only: a read-only bind mount (root ignores permission bits).
    let repo = case.path("repo");
    run(skiff().arg("init").arg(&repo)).unwrap();
    let ro = case.path("ro");
    std::fs::create_dir(&ro).unwrap();
    run(std::process::Command::new("mount")
        .args(["--bind"])
        .arg(&repo)
        .arg(&ro))
    .unwrap();
    let remount = output(
        std::process::Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(&ro),
    );
    let out = copy(&source, &format!("composefs:{}:x", ro.display()), &[]);
    let _ = std::process::Command::new("umount").arg(&ro).status();
    assert!(remount.unwrap().status.success());
    assert_failed(&out, 1, &["read-only"]);
    assert!(!tag_exists(&repo, "x"));
}

#[test]
fn cfsctl_mounts_what_skiff_stored() {
    let case = Case::new();
    let layers = fixtures::rich_image();
    let (layout, _) = case.layout("rich", &layers, Compression::Zstd);
    fixtures::write_oci_layout(
        &layout,
        "scratch",
        &fixtures::scratch_image(),
        Compression::Gzip,
    )
    .unwrap();
    let repo = case.path("repo");
    for (tag, file, content) in [
        ("rich", "usr/bin/tool", fixtures::noise(1, 200_000)),
        ("scratch", "app", fixtures::noise(42, 300_000)),
    ] {
        assert_ok(
            &copy(
                &format!("oci:{}:{tag}", layout.display()),
                &format!("composefs:{}:{tag}", repo.display()),
                &[],
            ),
            tag,
        );
        let mnt = case.path(&format!("mnt-{tag}"));
        std::fs::create_dir(&mnt).unwrap();
        run(cfsctl(&repo).args(["oci", "mount", tag]).arg(&mnt)).unwrap();
        let read = std::fs::read(mnt.join(file));
        let _ = std::process::Command::new("umount").arg(&mnt).status();
        assert_eq!(
            read.unwrap(),
            content,
            "{tag}: {file} through the mounted EROFS"
        );
    }
}

#[test]
fn signature_policy_applies_to_every_source() {
    let case = Case::new();
    let (layout, _) = case.layout("rich", &fixtures::rich_image(), Compression::Gzip);
    let dir = case.path("dir-image");
    run(skopeo().args([
        "copy",
        &format!("oci:{}:rich", layout.display()),
        &format!("dir:{}", dir.display()),
    ]))
    .unwrap();
    let reject = case.path("reject.json");
    std::fs::write(&reject, r#"{"default":[{"type":"reject"}]}"#).unwrap();
    let layout_only = case.path("layout-only.json");
    std::fs::write(
        &layout_only,
        format!(r#"{{"default":[{{"type":"reject"}}],"transports":{{"oci":{{"{}":[{{"type":"insecureAcceptAnything"}}]}}}}}}"#, layout.display()),
    )
    .unwrap();
    let repo = case.path("repo");
    let oci = format!("oci:{}:rich", layout.display());
    let dir_ref = format!("dir:{}", dir.display());
    let dest = format!("composefs:{}:rich", repo.display());
    let with_policy = |policy: &Path, source: &str, extra: &[&str]| {
        output(
            skiff()
                .arg("--policy")
                .arg(policy)
                .args(extra)
                .args(["copy", "--quiet", source, &dest]),
        )
        .unwrap()
    };
    // Directly read (oci:) and through skopeo (dir:), the policy is skiff's to apply.
    for source in [&oci, &dir_ref] {
        assert_failed(
            &with_policy(&reject, source, &[]),
            1,
            &["refused by the signature policy", "rejects"],
        );
    }
    assert!(!tag_exists(&repo, "rich"));
    assert_failed(
        &with_policy(&layout_only, &dir_ref, &[]),
        1,
        &["refused by the signature policy"],
    );
    let out = with_policy(&layout_only, &oci, &[]);
    assert_ok(&out, "a scope that accepts the layout");
    assert!(
        out.stdout.is_empty(),
        "--quiet prints nothing: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_ok(
        &with_policy(&reject, &dir_ref, &["--insecure-policy"]),
        "--insecure-policy",
    );
}

#[test]
fn init_detects_fs_verity() {
    let case = Case::new();
    let repo = case.path("repo");
    let out = output(skiff().args(["init", "--hash", "sha256"]).arg(&repo)).unwrap();
    assert_ok(&out, "init");
    assert!(String::from_utf8_lossy(&out.stdout).contains("fs-verity sha256"));
    let insecure = stderr(&out).contains("insecure mode");
    let strict = output(
        skiff()
            .args(["init", "--require-verity"])
            .arg(case.path("strict")),
    )
    .unwrap();
    let (layout, _) = case.layout("rich", &fixtures::rich_image(), Compression::Gzip);
    let copy_strict = copy(
        &format!("oci:{}:rich", layout.display()),
        &format!("composefs:{}:rich", case.path("strict2").display()),
        &["--require-verity"],
    );
    if insecure {
        // This filesystem has no fs-verity: --require-verity refuses instead of going insecure.
        assert_failed(&strict, 1, &["does not support fs-verity"]);
        assert_failed(&copy_strict, 1, &["does not support fs-verity"]);
        assert!(!case.path("strict").join("meta.json").exists());
    } else {
        assert_ok(&strict, "init --require-verity with fs-verity");
        assert_ok(&copy_strict, "copy --require-verity with fs-verity");
    }
    // cfsctl opens the repository skiff made.
    run(cfsctl(&repo).args(["oci", "images"])).unwrap();
}

#[test]
fn usage_errors_and_directories_that_are_not_repositories() {
    let case = Case::new();
    let (layout, _) = case.layout("rich", &fixtures::rich_image(), Compression::Gzip);
    let source = format!("oci:{}:rich", layout.display());
    // Usage errors exit 1 (2 means "no such image"); help exits 0.
    assert_failed(
        &output(skiff().args(["copy", "--no-such-flag", &source, "composefs::x"])).unwrap(),
        1,
        &["--no-such-flag"],
    );
    assert_failed(&output(skiff().args(["copy", &source])).unwrap(), 1, &[]);
    assert!(output(skiff().arg("--help")).unwrap().status.success());
    // A bare --src-tls-verify means true, as in skopeo, and does not swallow the source.
    let repo = case.path("repo");
    assert_ok(
        &copy(
            &source,
            &format!("composefs:{}:rich", repo.display()),
            &[
                "--src-tls-verify",
                "--remove-signatures",
                "--multi-arch",
                "system",
            ],
        ),
        "skopeo-compatible flags",
    );
    assert_failed(
        &copy(
            &source,
            &format!("composefs:{}:rich", repo.display()),
            &["--multi-arch", "all"],
        ),
        1,
        &["--multi-arch all"],
    );
    // A directory with other files is not turned into a repository by a copy.
    let home = case.path("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::write(home.join("notes.txt"), b"mine").unwrap();
    assert_failed(
        &copy(&source, &format!("composefs:{}:rich", home.display()), &[]),
        1,
        &["not a composefs repository", "skiff init"],
    );
    assert_eq!(std::fs::read_dir(&home).unwrap().count(), 1);
    // Names that cannot be tags are refused before any work.
    assert_failed(
        &copy(&source, &format!("composefs:{}:..", repo.display()), &[]),
        1,
        &["is not a name"],
    );
    // An OCI layout path that exists but is not a directory is an error, not "no such image".
    let file = case.path("plain-file");
    std::fs::write(&file, b"x").unwrap();
    assert_failed(
        &copy(
            &format!("oci:{}:rich", file.display()),
            &format!("composefs:{}:y", repo.display()),
            &[],
        ),
        1,
        &[],
    );
}
