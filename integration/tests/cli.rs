//! Command-level behaviour that no copy test covers: `--command-timeout`, exit codes, and what
//! `make install` puts where.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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

/// Runs `script` with `shell -c`, with HOME and the XDG directories in `home` (no user
/// configuration) and the installed skiff first on PATH; its stdout.
fn shell(shell: &str, script: &str, home: &Path, installed: &Path) -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![installed.join("usr/bin")];
    paths.extend(std::env::split_paths(&path));
    skiff_integration::tools::run(
        Command::new(skiff_integration::tools::require(shell))
            .args(["-c", script])
            .env("PATH", std::env::join_paths(paths).unwrap())
            .env("HOME", home)
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("XDG_DATA_HOME", home.join("data"))
            .env("XDG_DATA_DIRS", installed.join("usr/share")),
    )
    .unwrap()
}

/// The man pages in `dir`, by file name.
fn man_pages(dir: &Path) -> Vec<String> {
    let mut pages: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".1"))
        .collect();
    pages.sort();
    pages
}

#[test]
fn make_install_puts_skiff_its_man_pages_and_completions_where_packagers_expect() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dest = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let make = |target: &str| {
        skiff_integration::tools::run(
            Command::new(skiff_integration::tools::require("make"))
                .arg("-C")
                .arg(&root)
                .arg(target)
                .arg(format!("DESTDIR={}", dest.path().display()))
                .arg("PREFIX=/usr"),
        )
        .unwrap()
    };
    make("install");
    let usr = dest.path().join("usr");
    let version =
        skiff_integration::tools::run(Command::new(usr.join("bin/skiff")).arg("--version"))
            .unwrap();
    assert_eq!(
        version.trim(),
        format!("skiff {}", env!("CARGO_PKG_VERSION"))
    );

    // A page per command, as committed, each rendered by man without a warning.
    let man1 = usr.join("share/man/man1");
    let pages = man_pages(&man1);
    assert_eq!(pages, man_pages(&root.join("cli/doc/man")));
    for page in [
        "skiff.1",
        "skiff-copy.1",
        "skiff-delta-create.1",
        "skiff-rm.1",
    ] {
        assert!(pages.iter().any(|p| p == page), "{page} not in {pages:?}");
    }
    for page in &pages {
        let out = skiff_integration::tools::output(
            Command::new(skiff_integration::tools::require("man"))
                .args(["--warnings", "-l"])
                .arg(man1.join(page))
                .env("MANPAGER", "cat")
                .env("MANWIDTH", "80"),
        )
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && warnings.is_empty(),
            "{page}: {warnings}"
        );
        for section in ["NAME", "SYNOPSIS", "OPTIONS", "EXAMPLES"] {
            assert!(
                text.contains(&format!("\n{section}\n")),
                "{page}: no {section}:\n{text}"
            );
        }
        let name_line = text.split("\nNAME\n").nth(1).and_then(|t| t.lines().next());
        let name = format!("{} ", page.trim_end_matches(".1"));
        assert!(
            name_line.is_some_and(|l| l.trim_start().starts_with(&name)),
            "{page}:\n{text}"
        );
    }
    // man finds them by name under the installed tree.
    let found = skiff_integration::tools::run(
        Command::new("man")
            .arg("-M")
            .arg(usr.join("share/man"))
            .args(["-w", "skiff-copy"]),
    )
    .unwrap();
    assert_eq!(Path::new(found.trim()), man1.join("skiff-copy.1"));

    // Each shell completes from the installed file; the refused skopeo flags are not offered.
    let bash_file = usr.join("share/bash-completion/completions/skiff");
    let bash = shell(
        "bash",
        &format!(
            "source {}; complete -p skiff; for line in 'skiff co' 'skiff copy --src-t' \
             'skiff copy --sign-b' 'skiff copy --dest-c'; do read -ra COMP_WORDS <<<\"$line\"; \
             COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); COMPREPLY=(); \
             _skiff skiff \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"; \
             echo \"$line: ${{COMPREPLY[*]}}\"; done",
            bash_file.display()
        ),
        home.path(),
        dest.path(),
    );
    assert!(bash.contains("-F _skiff skiff\n"), "{bash}");
    assert!(bash.contains("skiff co: copy\n"), "{bash}");
    assert!(
        bash.contains("skiff copy --src-t: --src-tls-verify\n"),
        "{bash}"
    );
    assert!(bash.contains("skiff copy --sign-b: \n"), "{bash}");
    // The destination flags of a copy out of the store are offered.
    assert!(
        bash.contains("skiff copy --dest-c: --dest-creds --dest-cert-dir --dest-compress-format\n"),
        "{bash}"
    );
    // zsh's compinit binds _skiff to skiff from site-functions on fpath.
    let zsh = shell(
        "zsh",
        &format!(
            "fpath=({} $fpath); autoload -Uz compinit; compinit -u -d {}/zcompdump; \
             print -r -- ${{_comps[skiff]}}",
            usr.join("share/zsh/site-functions").display(),
            home.path().display()
        ),
        home.path(),
        dest.path(),
    );
    assert_eq!(zsh.trim(), "_skiff");
    // fish autoloads vendor_completions.d of $XDG_DATA_DIRS.
    let fish = shell(
        "fish",
        "complete -C 'skiff copy --src-t'; echo ---; complete -C 'skiff copy --sign-b'",
        home.path(),
        dest.path(),
    );
    assert!(fish.starts_with("--src-tls-verify\t"), "{fish}");
    assert!(fish.ends_with("---\n"), "{fish}");

    make("uninstall");
    let left: Vec<_> = walk(dest.path());
    assert_eq!(left, Vec::<PathBuf>::new(), "left after make uninstall");
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
