//! Command-level behaviour that no copy test covers: `--command-timeout` and exit codes.

use std::net::TcpListener;
use std::process::Stdio;
use std::time::{Duration, Instant};

use skiff_integration::tools::skiff;

/// A TCP listener that accepts connections and never answers; its `127.0.0.1:PORT`.
fn silent_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    addr
}

/// The processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

/// Longest a command given `--command-timeout=2s` may take: the timeout plus room for a
/// loaded machine, well under skopeo's own 10 s TLS handshake timeout.
const TIMEOUT_BUDGET: Duration = Duration::from_secs(8);

#[test]
fn command_timeout_ends_a_hung_skopeo_and_kills_it() {
    let addr = silent_server();
    let dir = tempfile::tempdir().unwrap();
    let dest = format!("oci-archive:{}", dir.path().join("d.tar").display());
    let started = Instant::now();
    // NEW in a registry: skiff runs `skopeo copy`, which waits on the silent server.
    let mut child = skiff()
        .args([
            "--command-timeout=2s",
            "delta",
            "create",
            "--src-tls-verify=false",
        ])
        .arg(format!(
            "composefs:{}:old",
            dir.path().join("repo").display()
        ))
        .arg(format!("docker://{addr}/app:v1"))
        .arg(&dest)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > TIMEOUT_BUDGET * 2 {
            child.kill().unwrap();
            let _ = child.wait();
            panic!("skiff still running after {:?}", started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let elapsed = started.elapsed();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--command-timeout"), "{stderr}");
    assert!(elapsed < TIMEOUT_BUDGET, "took {elapsed:?}: {stderr}");
    // The kill is sent as skiff exits; give it a moment to land.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !processes_mentioning(&addr).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(processes_mentioning(&addr), Vec::<String>::new());
}

/// `skiff copy SOURCE` into a fresh repository under `dir`: the exit code and stderr.
fn copy_status(dir: &std::path::Path, source: &str) -> (Option<i32>, String) {
    let out = skiff_integration::tools::output(skiff().args([
        "--insecure-policy",
        "copy",
        source,
        &format!("composefs:{}:x", dir.join("repo").display()),
    ]))
    .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn exit_2_means_the_image_is_missing_not_that_some_file_is() {
    let dir = tempfile::tempdir().unwrap();
    // A gzip'd tar with no index.json: skopeo fails with "open .../index.json: no such file
    // or directory", which is a broken archive, not a missing image.
    let content = dir.path().join("content");
    std::fs::create_dir(&content).unwrap();
    std::fs::write(content.join("hello"), "hi").unwrap();
    let broken = dir.path().join("broken.tar.gz");
    skiff_integration::tools::run(
        std::process::Command::new("tar")
            .arg("-C")
            .arg(&content)
            .arg("-czf")
            .arg(&broken)
            .arg("hello"),
    )
    .unwrap();
    let (code, stderr) = copy_status(dir.path(), &format!("oci-archive:{}", broken.display()));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("index.json"), "{stderr}");
    // A directory that is not a dir: image: a broken source, exit 1.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (code, stderr) = copy_status(dir.path(), &format!("dir:{}", empty.display()));
    assert_eq!(code, Some(1), "{stderr}");
    // Sources that are not there at all: exit 2.
    for missing in [
        format!("dir:{}", dir.path().join("no-dir").display()),
        format!("docker-archive:{}", dir.path().join("no.tar").display()),
        format!("oci-archive:{}", dir.path().join("no.tar.gz").display()),
    ] {
        let (code, stderr) = copy_status(dir.path(), &missing);
        assert_eq!(code, Some(2), "{missing}: {stderr}");
        assert!(stderr.contains("not found"), "{missing}: {stderr}");
    }
}
