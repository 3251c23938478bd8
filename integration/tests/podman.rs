//! Podman 4.3.1 (Debian's, rootful, private storage) pulling images whose layers skiff exposes
//! in its Additional Layer Store: nothing downloaded, the registry's digests, the files of every
//! layer, withdrawal only once podman lets go, and what a damaged store or a killed writer
//! must not leave.

use std::path::{Path, PathBuf};
use std::process::Output;

use skiff_integration::fixtures::{self, Compression, Layer, file};
use skiff_integration::loop_fs::LoopFs;
use skiff_integration::podman::Podman;
use skiff_integration::registry::Registry;
use skiff_integration::tools::{copy, expect_success, output, run, skiff};

/// Runs skiff, which must succeed; returns its stdout.
fn skiff_ok(args: &[&str]) -> String {
    run(skiff().args(args)).unwrap()
}

/// Initialises `repo` (keeping blobs when asked) and sets up its layer store `als` for `podman`.
fn enable(repo: &Path, als: &Path, podman: &Podman, keep_blobs: bool) {
    let mut args = vec!["init", "--hash", "sha256"];
    if keep_blobs {
        args.push("--keep-blobs");
    }
    let repo_arg = repo.to_str().unwrap();
    args.push(repo_arg);
    skiff_ok(&args);
    skiff_ok(&[
        "podman",
        "enable",
        "--dir",
        als.to_str().unwrap(),
        "--storage-conf",
        podman.storage_conf().to_str().unwrap(),
        repo_arg,
    ]);
}

/// `skiff copy --expose` from the registry.
fn copy_exposed(registry: &Registry, repo_tag: &str, repo: &Path, name: &str) -> Output {
    let out = copy(
        &["--src-tls-verify=false", "--expose"],
        &registry.docker_ref(repo_tag),
        &skiff_integration::tools::composefs_ref(repo, name),
    );
    expect_success(&out, "skiff copy --expose");
    out
}

/// The entries (compressed digests) of a layer store, and any other names in it.
fn als_names(als: &Path) -> (Vec<String>, Vec<String>) {
    let mut entries = Vec::new();
    let mut other = Vec::new();
    for item in std::fs::read_dir(als).unwrap() {
        let name = item.unwrap().file_name().to_string_lossy().into_owned();
        if name.starts_with("sha256:") {
            entries.push(name);
        } else {
            other.push(name);
        }
    }
    entries.sort();
    other.sort();
    (entries, other)
}

fn layer_digests(registry: &Registry, repo_tag: &str) -> Vec<String> {
    let out = skiff_integration::tools::skopeo()
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(registry.docker_ref(repo_tag))
        .output()
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect()
}

/// The runnable image plus `extra` MiB of incompressible files in a third layer, so that what
/// the layer store shares is measurable; `version` is in `/payload/version`, and file
/// `changed`, if given, differs from the other versions'.
fn image_with_payload(extra_mib: usize, seed: u64) -> Vec<Layer> {
    image_version(extra_mib, seed, &seed.to_string(), None)
}

fn image_version(extra_mib: usize, seed: u64, version: &str, changed: Option<usize>) -> Vec<Layer> {
    let mut layers = fixtures::runnable_image();
    let mut payload = Layer::default();
    payload.add("payload/", fixtures::dir());
    for i in 0..extra_mib {
        let data_seed = if changed == Some(i) {
            999
        } else {
            seed + i as u64
        };
        payload.add(
            format!("payload/blob-{i}.bin"),
            file(fixtures::noise(data_seed, 1024 * 1024)),
        );
    }
    payload.add("payload/version", file(format!("{version}\n")));
    layers.push(payload);
    layers
}

fn push(registry: &Registry, dir: &Path, layers: &[Layer], tag: &str, c: Compression) -> String {
    let layout = dir.join(format!("layout-{tag}"));
    fixtures::write_oci_layout(&layout, tag, layers, c).unwrap();
    registry
        .push(
            &format!("oci:{}:{tag}", layout.display()),
            &format!("app:{tag}"),
        )
        .unwrap();
    fixtures::layout_manifest_digest(&layout, tag).unwrap()
}

#[test]
fn podman_pulls_exposed_layers_without_downloading_them() {
    let dir = tempfile::tempdir().unwrap();
    let xfs = LoopFs::xfs(dir.path(), 1024).unwrap();
    let base = xfs.path();
    let registry = Registry::start_plain().unwrap();
    let v1 = image_with_payload(24, 100);
    let v1_digest = push(&registry, dir.path(), &v1, "v1", Compression::Gzip);
    // v2 changes the payload layer and is zstd:chunked: skiff pulls it partially.
    let v2 = image_version(24, 100, "2", Some(3));
    let v2_digest = push(&registry, dir.path(), &v2, "v2", Compression::ZstdChunked);

    let repo = base.join("repo");
    let als = base.join("als");
    let podman = Podman::new(&base.join("podman")).unwrap();
    enable(&repo, &als, &podman, true);
    let conf = std::fs::read_to_string(podman.storage_conf()).unwrap();
    assert!(
        conf.contains(&format!("additionallayerstores = [\"{}\"]", als.display())),
        "{conf}"
    );

    let image_bytes: u64 = fixtures::layer_tars(&v1)
        .unwrap()
        .iter()
        .map(|t| t.len() as u64)
        .sum();
    let stored = skiff_integration::tools::composefs_ref(&repo, "app:v1");
    expect_success(
        &copy(
            &["--src-tls-verify=false"],
            &registry.docker_ref("app:v1"),
            &stored,
        ),
        "skiff copy",
    );
    let before = xfs.used_bytes().unwrap();
    let out = output(skiff().args(["podman", "expose", &stored])).unwrap();
    expect_success(&out, "skiff podman expose");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Exposed 3 layers to podman (3 new"), "{text}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("copied, not cloned"),
        "on XFS the files are clones: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after_expose = xfs.used_bytes().unwrap();

    let image = format!("{}/app:v1", registry.host());
    let gets_before = registry.blob_gets().unwrap().len();
    podman.ok(&["pull", "--quiet", "--tls-verify=false", &image]);
    let gets: Vec<String> = registry.blob_gets().unwrap()[gets_before..].to_vec();
    let layers = layer_digests(&registry, "app:v1");
    assert!(
        gets.iter().all(|g| !layers.contains(g)),
        "podman fetched layer blobs: {gets:?}"
    );
    assert!(!gets.is_empty(), "the access log shows the config fetched");
    let after_pull = xfs.used_bytes().unwrap();
    // What the layer store and podman's pull add on top of the store: metadata, not data.
    let added = after_pull - before;
    eprintln!(
        "image {image_bytes} bytes: layer store +{} bytes, podman pull +{} bytes",
        after_expose - before,
        after_pull - after_expose
    );
    assert!(
        added * 20 < image_bytes,
        "the layer store and podman's pull added {added} bytes for an image of {image_bytes}"
    );
    assert_eq!(
        podman
            .ok(&["image", "inspect", "--format", "{{.Digest}}", &image])
            .trim(),
        v1_digest
    );
    assert_eq!(
        podman.run_script(&image, "cat /etc/skiff-test /payload/version"),
        "served from composefs storage\n100\n"
    );
    assert_eq!(
        podman
            .run_script(
                &image,
                "ls /etc/conf.d; test -e /etc/gone.conf || echo gone; sha256sum /usr/lib/data.bin"
            )
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>(),
        [
            "b.conf",
            "gone",
            fixtures::digest(&fixtures::noise(1, 200_000))
                .strip_prefix("sha256:")
                .unwrap()
        ]
    );

    // The update, taken partially by skiff, comes to podman without a layer download either.
    let out = copy_exposed(&registry, "app:v2", &repo, "app:v2");
    let text = String::from_utf8_lossy(&out.stdout);
    // v2's layers are zstd:chunked blobs: new digests, so new entries (the files are clones).
    assert!(text.contains("Exposed 3 layers to podman (3 new"), "{text}");
    let image2 = format!("{}/app:v2", registry.host());
    let gets_before = registry.blob_gets().unwrap().len();
    podman.ok(&["pull", "--quiet", "--tls-verify=false", &image2]);
    let gets: Vec<String> = registry.blob_gets().unwrap()[gets_before..].to_vec();
    let layers2 = layer_digests(&registry, "app:v2");
    assert!(
        gets.iter().all(|g| !layers2.contains(g)),
        "podman fetched layer blobs of v2: {gets:?}"
    );
    assert_eq!(
        podman
            .ok(&["image", "inspect", "--format", "{{.Digest}}", &image2])
            .trim(),
        v2_digest
    );
    assert_eq!(podman.run_script(&image2, "cat /payload/version"), "2\n");
    // podman save reads the blobs: the kept original for v1, a regenerated one for v2's
    // partially pulled layer; both must decompress to the DiffIDs podman checks.
    let archive = dir.path().join("saved.tar");
    podman.ok(&[
        "save",
        "--quiet",
        "--format",
        "oci-archive",
        "-o",
        archive.to_str().unwrap(),
        &image2,
    ]);
    let status: serde_json::Value = serde_json::from_str(&skiff_ok(&[
        "podman",
        "status",
        "--json",
        repo.to_str().unwrap(),
    ]))
    .unwrap();
    let entries = status.as_array().unwrap();
    assert_eq!(entries.len(), 6, "{status:#}");
    let used = |digest: &str| {
        entries
            .iter()
            .find(|e| e["digest"] == digest)
            .map(|e| e["podman_layers"].as_array().unwrap().len())
    };
    for digest in &layers {
        assert_eq!(used(digest), Some(1), "{digest}: {status:#}");
    }
    assert_eq!(used(&layers2[2]), Some(1), "{status:#}");
}

/// The path of one object of the repository of `size` bytes.
fn object_of_size(repo: &Path, size: u64) -> PathBuf {
    for sub in std::fs::read_dir(repo.join("objects")).unwrap() {
        let sub = sub.unwrap().path();
        if !sub.is_dir() {
            continue;
        }
        for object in std::fs::read_dir(&sub).unwrap() {
            let object = object.unwrap().path();
            if object.metadata().unwrap().len() == size {
                return object;
            }
        }
    }
    panic!("no object of {size} bytes in {}", repo.display());
}

#[test]
fn layers_leave_only_when_neither_the_store_nor_podman_needs_them() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start_plain().unwrap();
    push(
        &registry,
        dir.path(),
        &image_with_payload(2, 7),
        "v1",
        Compression::Gzip,
    );
    let repo = dir.path().join("repo");
    let als = dir.path().join("als");
    let podman = Podman::new(&dir.path().join("podman")).unwrap();
    enable(&repo, &als, &podman, false);
    let repo_arg = repo.to_str().unwrap();
    let image = format!("{}/app:v1", registry.host());

    // On ext4 the contents are copied, and skiff says so.
    let out = copy_exposed(&registry, "app:v1", &repo, "app");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("copied, not cloned"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(als_names(&als).0.len(), 3);
    podman.ok(&["pull", "--quiet", "--tls-verify=false", &image]);
    podman.ok(&[
        "run",
        "-d",
        "--name",
        "busy",
        "--network",
        "none",
        &image,
        "/bin/busybox",
        "sleep",
        "600",
    ]);

    // The store lets go first: the layers stay while podman uses them, the container runs on.
    skiff_ok(&["rm", &skiff_integration::tools::composefs_ref(&repo, "app")]);
    let gc = skiff_ok(&["gc", repo_arg]);
    assert!(gc.contains("Withdrew 0 layers"), "{gc}");
    assert!(gc.contains("kept 3 that podman still uses"), "{gc}");
    assert_eq!(als_names(&als).0.len(), 3);
    assert_eq!(
        podman.ok(&["exec", "busy", "/bin/busybox", "cat", "/payload/version"]),
        "7\n"
    );
    podman.ok(&["rm", "--force", "--time", "0", "busy"]);
    podman.ok(&["rmi", &image]);
    let gc = skiff_ok(&["gc", repo_arg]);
    assert!(gc.contains("Withdrew 3 layers"), "{gc}");
    assert_eq!(als_names(&als).0, Vec::<String>::new());

    // Podman lets go first: the store's removal then withdraws the layers at once.
    copy_exposed(&registry, "app:v1", &repo, "app");
    podman.ok(&["pull", "--quiet", "--tls-verify=false", &image]);
    podman.ok(&["rmi", &image]);
    assert_eq!(als_names(&als).0.len(), 3);
    skiff_ok(&["rm", &skiff_integration::tools::composefs_ref(&repo, "app")]);
    let gc = skiff_ok(&["gc", repo_arg]);
    assert!(gc.contains("Withdrew 3 layers"), "{gc}");
    assert_eq!(
        als_names(&als),
        (
            Vec::new(),
            vec![
                ".skiff-layer-store.json".to_owned(),
                ".skiff-layer-store.lock".to_owned()
            ]
        )
    );
    assert_eq!(podman.ok(&["images", "--quiet"]), "");
    skiff_ok(&["fsck", repo_arg]);
}

#[test]
fn a_damaged_layer_is_never_exposed_and_a_killed_writer_leaves_nothing_visible() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    fixtures::write_oci_layout(&layout, "v1", &image_with_payload(64, 3), Compression::Gzip)
        .unwrap();
    let repo = dir.path().join("repo");
    let als = dir.path().join("als");
    let podman = Podman::new(&dir.path().join("podman")).unwrap();
    enable(&repo, &als, &podman, false);
    let stored = skiff_integration::tools::composefs_ref(&repo, "app");
    expect_success(
        &copy(&[], &format!("oci:{}:v1", layout.display()), &stored),
        "skiff copy",
    );

    // Killed while writing the payload layer (64 MiB: long enough to be caught at it): nothing
    // under a name podman looks up, and the next run tidies up.
    let payload = layer_digest_of_layout(&layout, 2);
    let payload_tmp = format!(".tmp-{}-", payload.replace(':', "-"));
    let mut child = skiff()
        .args(["podman", "expose", &stored])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !als_names(&als)
        .1
        .iter()
        .any(|n| n.starts_with(&payload_tmp))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the payload entry was never started"
        );
        assert!(child.try_wait().unwrap().is_none(), "expose ended first");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (entries, other) = als_names(&als);
    assert!(
        other.iter().any(|n| n.starts_with(&payload_tmp)),
        "killed after the payload entry was renamed: {other:?}"
    );
    assert!(!entries.contains(&payload), "{entries:?}");
    let out = skiff_ok(&["podman", "expose", &stored]);
    assert!(out.contains("Exposed 3 layers"), "{out}");
    assert!(
        !als_names(&als).1.iter().any(|n| n.starts_with(".tmp-")),
        "{:?}",
        als_names(&als).1
    );

    // A damaged object (no fs-verity here to catch it): the layer is refused, nothing is left.
    let exposed = als_names(&als).0;
    std::fs::remove_dir_all(als.join(&payload)).unwrap();
    // Only the payload's files are objects of exactly 1 MiB.
    let object = object_of_size(&repo, 1024 * 1024);
    let mut bytes = std::fs::read(&object).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&object, &bytes).unwrap();
    let out = output(skiff().args(["podman", "expose", &stored])).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("damaged objects"), "{err}");
    let (entries, other) = als_names(&als);
    assert_eq!(entries.len(), exposed.len() - 1, "{entries:?}");
    assert!(!entries.contains(&payload));
    assert!(!other.iter().any(|n| n.starts_with(".tmp-")), "{other:?}");
}

fn layer_digest_of_layout(layout: &Path, index: usize) -> String {
    fixtures::layout_manifest(layout, "v1").unwrap()["layers"][index]["digest"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn enable_refuses_a_directory_serving_another_repository() {
    let dir = tempfile::tempdir().unwrap();
    let podman = Podman::new(&dir.path().join("podman")).unwrap();
    let als = dir.path().join("als");
    enable(&dir.path().join("one"), &als, &podman, false);
    skiff_ok(&["init", dir.path().join("two").to_str().unwrap()]);
    let out = output(skiff().args([
        "podman",
        "enable",
        "--print",
        "--dir",
        als.to_str().unwrap(),
        dir.path().join("two").to_str().unwrap(),
    ]))
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("serves the repository"), "{err}");
    // A repository without a layer store says how to make one.
    let out = output(skiff().args(["podman", "status", dir.path().join("two").to_str().unwrap()]))
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("skiff podman enable"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // So does a copy asked to expose into it, before it stores anything.
    let layout = dir.path().join("layout");
    fixtures::write_oci_layout(&layout, "v1", &image_with_payload(1, 5), Compression::Gzip)
        .unwrap();
    let two = dir.path().join("two");
    let out = copy(
        &["--expose"],
        &format!("oci:{}:v1", layout.display()),
        &skiff_integration::tools::composefs_ref(&two, "app"),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("skiff podman enable"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        skiff_ok(&["images", "--json", two.to_str().unwrap()]).trim(),
        "[]"
    );
}

/// Everything overlayfs and a container see of each path below `root`: type, mode, owner,
/// mtime (not for whiteouts and the root, which carry the time they were made), size and content digest,
/// link target, device, link count, xattrs.
fn tree_listing(root: &Path) -> std::collections::BTreeMap<PathBuf, String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let kind = meta.file_type();
        let mut line = format!("{:o} {}:{}", meta.mode(), meta.uid(), meta.gid());
        let whiteout = kind.is_char_device() && meta.rdev() == 0;
        // The root has no entry in these layers: its time is when it was made.
        if !whiteout && path != root {
            line += &format!(" mtime={}", meta.mtime());
        }
        if kind.is_file() {
            let data = std::fs::read(&path).unwrap();
            line += &format!(" {} nlink={}", fixtures::digest(&data), meta.nlink());
        } else if kind.is_symlink() {
            line += &format!(" -> {}", std::fs::read_link(&path).unwrap().display());
        } else if kind.is_char_device() || kind.is_block_device() {
            line += &format!(" rdev={}", meta.rdev());
        }
        let mut names = [0u8; 4096];
        let len = rustix::fs::llistxattr(&path, &mut names).unwrap();
        let mut keys: Vec<&[u8]> = names[..len]
            .split(|&b| b == 0)
            .filter(|k| !k.is_empty())
            .collect();
        keys.sort();
        for key in keys {
            let mut value = vec![0u8; 65536];
            let n = rustix::fs::lgetxattr(&path, key, &mut value).unwrap();
            line += &format!(" {}={:?}", String::from_utf8_lossy(key), &value[..n]);
        }
        if kind.is_dir() {
            for item in std::fs::read_dir(&path).unwrap() {
                stack.push(item.unwrap().path());
            }
        }
        out.insert(path.strip_prefix(root).unwrap().to_owned(), line);
    }
    out
}

/// The layer `tar` as GNU tar extracts it, turned into overlayfs form as containers/storage's
/// overlay driver does: `.wh.NAME` → a 0:0 character device, `.wh..wh..opq` → the opaque xattr.
fn overlay_form_by_gnu_tar(tar: &[u8], dest: &Path) {
    use std::os::unix::fs::MetadataExt;
    std::fs::create_dir_all(dest).unwrap();
    let archive = dest.with_extension("tar");
    std::fs::write(&archive, tar).unwrap();
    run(std::process::Command::new("tar")
        // Directory times set last, as containers/storage does (a later entry may land inside).
        .args([
            "--xattrs",
            "--xattrs-include=*",
            "--numeric-owner",
            "--delay-directory-restore",
            "-xpf",
        ])
        .arg(&archive)
        .arg("-C")
        .arg(dest))
    .unwrap();
    let mut dirs = vec![dest.to_owned()];
    while let Some(dir) = dirs.pop() {
        let times = std::fs::metadata(&dir).unwrap();
        for item in std::fs::read_dir(&dir).unwrap() {
            let item = item.unwrap();
            let name = item.file_name().into_string().unwrap_or_default();
            let path = item.path();
            if item.file_type().unwrap().is_dir() {
                dirs.push(path);
            } else if name == ".wh..wh..opq" {
                std::fs::remove_file(&path).unwrap();
                rustix::fs::lsetxattr(
                    &dir,
                    "trusted.overlay.opaque",
                    b"y",
                    rustix::fs::XattrFlags::empty(),
                )
                .unwrap();
            } else if let Some(hidden) = name.strip_prefix(".wh.") {
                let meta = std::fs::symlink_metadata(&path).unwrap();
                std::fs::remove_file(&path).unwrap();
                let node = dir.join(hidden);
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &node,
                    rustix::fs::FileType::CharacterDevice,
                    rustix::fs::Mode::empty(),
                    0,
                )
                .unwrap();
                std::os::unix::fs::lchown(&node, Some(meta.uid()), Some(meta.gid())).unwrap();
            }
        }
        // Put back the directory's time, which the changes above moved.
        let time = rustix::fs::Timespec {
            tv_sec: times.mtime(),
            tv_nsec: times.mtime_nsec() as _,
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            &dir,
            &rustix::fs::Timestamps {
                last_access: time,
                last_modification: time,
            },
            rustix::fs::AtFlags::empty(),
        )
        .unwrap();
    }
}

/// A repository in `dir` with a layer store (storage.conf left alone) holding the images `tags`
/// of `layout`, each stored under its tag; returns the repository and the layer store.
fn store_with_layer_store(dir: &Path, layout: &Path, tags: &[&str]) -> (PathBuf, PathBuf) {
    let repo = dir.join("repo");
    let als = dir.join("als");
    skiff_ok(&["init", repo.to_str().unwrap()]);
    skiff_ok(&[
        "podman",
        "enable",
        "--print",
        "--dir",
        als.to_str().unwrap(),
        repo.to_str().unwrap(),
    ]);
    for tag in tags {
        expect_success(
            &copy(
                &[],
                &format!("oci:{}:{tag}", layout.display()),
                &skiff_integration::tools::composefs_ref(&repo, tag),
            ),
            "skiff copy",
        );
    }
    (repo, als)
}

#[test]
fn each_exposed_diff_is_the_layer_as_containers_storage_unpacks_it() {
    let dir = tempfile::tempdir().unwrap();
    // The rich fixture, less its hard link into the layer below (containers/storage cannot
    // unpack such a layer on its own either).
    let mut layers = fixtures::rich_image();
    layers[1]
        .entries
        .retain(|(name, _)| name.as_slice() != b"etc/lib-link");
    let layout = dir.path().join("layout");
    fixtures::write_oci_layout(&layout, "v1", &layers, Compression::Gzip).unwrap();
    let (repo, als) = store_with_layer_store(dir.path(), &layout, &["v1"]);
    let stored = skiff_integration::tools::composefs_ref(&repo, "v1");
    skiff_ok(&["podman", "expose", &stored]);
    for (index, tar) in fixtures::layer_tars(&layers).unwrap().iter().enumerate() {
        let reference = dir.path().join(format!("gnu-{index}"));
        overlay_form_by_gnu_tar(tar, &reference);
        let diff = als
            .join(layer_digest_of_layout(&layout, index))
            .join("diff");
        assert_eq!(
            tree_listing(&diff),
            tree_listing(&reference),
            "layer {index}"
        );
    }
}

#[test]
fn layers_containers_storage_accepts_are_exposed_and_whiteouts_naming_nothing_refused() {
    use fixtures::{Node, dir};
    let dir_ = tempfile::tempdir().unwrap();
    let mut layer = Layer::default();
    layer
        // A directory, then a file of the same name: the file wins.
        .add("a/", dir())
        .add("a/inner", file("gone with its directory\n"))
        .add("a", file("a file now\n"))
        // `rm -rf /foo` as some tools write it: the whiteout below the whiteout hides nothing.
        .add(".wh.foo", Node::Whiteout)
        .add("foo/.wh.bar", Node::Whiteout)
        // Parents no entry creates.
        .add("x/y/z.txt", file("deep\n"));
    let layout = dir_.path().join("layout");
    fixtures::write_oci_layout(&layout, "v1", &[layer], Compression::Gzip).unwrap();
    let mut bad = Layer::default();
    bad.add("d/", dir()).add("d/.wh...", Node::Whiteout);
    fixtures::write_oci_layout(&layout, "bad", &[bad], Compression::Gzip).unwrap();
    let (repo, als) = store_with_layer_store(dir_.path(), &layout, &["v1", "bad"]);
    skiff_ok(&[
        "podman",
        "expose",
        &skiff_integration::tools::composefs_ref(&repo, "v1"),
    ]);
    let diff = als.join(layer_digest_of_layout(&layout, 0)).join("diff");
    let listing = tree_listing(&diff);
    let names: Vec<_> = listing.keys().map(|p| p.display().to_string()).collect();
    assert_eq!(
        names,
        ["", "a", "foo", "x", "x/y", "x/y/z.txt"],
        "{listing:#?}"
    );
    assert!(
        listing[Path::new("a")].starts_with("100644 0:0"),
        "{listing:#?}"
    );
    assert_eq!(listing[Path::new("foo")], "20000 0:0 rdev=0");
    assert!(
        listing[Path::new("x/y")].starts_with("40755 0:0 mtime=0"),
        "{listing:#?}"
    );
    assert_eq!(std::fs::read(diff.join("x/y/z.txt")).unwrap(), b"deep\n");

    let out = output(skiff().args([
        "podman",
        "expose",
        &skiff_integration::tools::composefs_ref(&repo, "bad"),
    ]))
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("names no file"), "{err}");
    let (entries, other) = als_names(&als);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(
        other,
        [".skiff-layer-store.json", ".skiff-layer-store.lock"],
        "the layer store is as it was"
    );
}
