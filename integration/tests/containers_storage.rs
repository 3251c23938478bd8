//! `containers-storage:` read natively: images podman 4.3.1 pulled come into the store from
//! podman's overlay store (tar-split plus `diff/`, contents cloned on XFS), identical to the
//! same image pulled from the registry; the store is found as c/storage finds it; what skiff
//! cannot read natively goes to skopeo with the reason said; a damaged layer is refused with
//! nothing tagged.

use std::path::Path;
use std::process::Output;

use skiff_integration::fixtures::{self, Compression, Layer, file};
use skiff_integration::loop_fs::LoopFs;
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

fn summary_line(out: &Output, prefix: &str) -> String {
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
    let xfs = LoopFs::xfs(dir.path(), 1024).unwrap();
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
    // c/storage keeps a vfs store's images apart from the overlay ones: skopeo finds none.
    assert!(!out.status.success(), "{stderr}");
    assert_eq!(images_json(&repo), serde_json::json!([]));

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
    // skopeo's proxy serves this image's layers or not (Debian's 1.9.3 does not); either way
    // the store holds the image whole or not at all.
    let images = images_json(&repo);
    if out.status.success() {
        assert_eq!(images.as_array().unwrap().len(), 1, "{images}");
        let digest = podman.ok(&["image", "inspect", "--format", "{{.Digest}}", &name]);
        assert_eq!(images[0]["digest"], digest.trim());
    } else {
        assert_eq!(images, serde_json::json!([]));
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

/// `skiff podman watch`, killed if the test ends before it stops.
struct Watch(std::process::Child);

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines of a child's standard output, as they come.
fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line starting with `prefix`, within a minute.
fn wait_for(lines: &std::sync::mpsc::Receiver<String>, prefix: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.starts_with(prefix) => return line,
            Ok(_) => continue,
            Err(e) => panic!("no line starting with {prefix:?}: {e}"),
        }
    }
}

/// The `podman events` process `watch` runs (a child of it).
fn events_child(watch: u32) -> u32 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let children = std::fs::read_dir(format!("/proc/{watch}/task"))
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("children")).ok())
            .flat_map(|c| {
                c.split_whitespace()
                    .map(|p| p.parse::<u32>().unwrap())
                    .collect::<Vec<_>>()
            })
            .find(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.contains("events"))
            });
        if let Some(pid) = children {
            return pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no podman events under {watch}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn podman_watch_copies_every_pull_across_podman_events_restarts_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, podman, v1) = pulled(dir.path(), dir.path());
    // A second image, pulled once the watch runs.
    let layout = dir.path().join("layout-v2");
    let mut layers = image();
    layers.last_mut().unwrap().add("etc/version", file("2\n"));
    fixtures::write_oci_layout(&layout, "v2", &layers, Compression::Gzip).unwrap();
    registry
        .push(&format!("oci:{}:v2", layout.display()), "app:v2")
        .unwrap();
    let v2 = format!("{}/app:v2", registry.host());
    let repo = dir.path().join("repo");
    init(&repo);
    // The watch follows pulls from the second before it starts: the pull above is older.
    std::thread::sleep(std::time::Duration::from_secs(2));

    let mut watch = Watch(
        skiff()
            .args(["podman", "watch", "--queue", "2"])
            .arg(&repo)
            .envs(podman.env())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let lines = lines_of(&mut watch.0);
    wait_for(&lines, "Watching podman's pulls");
    // v1 again: podman has it, the pull is an event all the same.
    podman.ok(&["pull", "--quiet", "--tls-verify=false", &v1]);
    let copied = wait_for(&lines, &format!("Copied {v1} "));
    assert!(copied.contains("4 layers read"), "{copied}");

    // podman events ends (podman upgraded, the log rotated): the watch starts it again and
    // sees what was pulled meanwhile.
    let events = events_child(watch.0.id());
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(events as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    podman.ok(&["pull", "--quiet", "--tls-verify=false", &v2]);
    let copied = wait_for(&lines, &format!("Copied {v2} "));
    // Only the changed top layer is new.
    assert!(
        copied.contains("1 layers read, 3 stored already"),
        "{copied}"
    );

    rustix::process::kill_process(
        rustix::process::Pid::from_raw(watch.0.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let status = watch.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(wait_for(&lines, "Stopped"), "Stopped: 2 copied, 0 failed");

    // Without podman there is nothing to watch: said at once, not retried for ever.
    let out = skiff()
        .args(["podman", "watch", "--podman", "/nonexistent/podman"])
        .arg(&repo)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Starting /nonexistent/podman events"),
        "{out:?}"
    );

    let images = images_json(&repo);
    let names: Vec<&str> = images
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [v1.as_str(), v2.as_str()], "{images}");
    for (image, name) in images.as_array().unwrap().iter().zip([&v1, &v2]) {
        let digest = podman.ok(&["image", "inspect", "--format", "{{.Digest}}", name]);
        assert_eq!(image["digest"], digest.trim(), "{name}");
    }
}

/// The value of `key=` in a systemd unit file, with skiff's installed path, the example image
/// and the example repository replaced by the test's.
fn unit_command(unit: &str, key: &str, image: &str, repo: &Path) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../contrib/podman")
        .join(unit);
    let text = std::fs::read_to_string(&path).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{unit} has no {key}="));
    line.split_whitespace()
        .map(|word| {
            word.replace(
                "/usr/local/bin/skiff",
                skiff_integration::tools::skiff_bin().to_str().unwrap(),
            )
            .replace("quay.io/fedora/fedora:41", image)
            .replace("/var/lib/composefs", repo.to_str().unwrap())
        })
        .collect()
}

/// contrib/podman's recipes run as written: the quadlet drop-in's ExecStartPost= after
/// podman's pull stores the image, and the watch service passes systemd's checks.
#[test]
fn the_contrib_recipes_run_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let (_registry, podman, name) = pulled(dir.path(), dir.path());
    let repo = dir.path().join("repo");
    let post = unit_command("fedora.image.d/skiff.conf", "ExecStartPost", &name, &repo);
    let out = std::process::Command::new(&post[0])
        .args(&post[1..])
        .envs(podman.env())
        .output()
        .unwrap();
    expect_success(&out, "the drop-in's ExecStartPost");
    let images = images_json(&repo);
    assert_eq!(images[0]["name"], name.as_str(), "{images}");
    let digest = podman.ok(&["image", "inspect", "--format", "{{.Digest}}", &name]);
    assert_eq!(images[0]["digest"], digest.trim());

    let unit = dir.path().join("skiff-podman-watch.service");
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/podman/skiff-podman-watch.service"),
    )
    .unwrap();
    let start = unit_command("skiff-podman-watch.service", "ExecStart", &name, &repo);
    assert_eq!(start[1..3], ["podman", "watch"]);
    let text = text.replace("/usr/local/bin/skiff", start[0].as_str());
    std::fs::write(&unit, text).unwrap();
    let out = std::process::Command::new(skiff_integration::tools::require("systemd-analyze"))
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .unwrap();
    expect_success(&out, "systemd-analyze verify");
}
