//! The committed man pages and completions (cli/doc, installed by `make install`) are what
//! skiff-gen-docs writes from today's clap definition.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// Every file under `dir`, by path relative to it.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut found = BTreeMap::new();
    for sub in ["man", "completions"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let name = format!("{sub}/{}", path.file_name().unwrap().to_string_lossy());
            found.insert(name, std::fs::read(&path).unwrap());
        }
    }
    found
}

#[test]
fn committed_man_pages_and_completions_are_current() {
    let fresh = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_skiff-gen-docs"))
        .arg(fresh.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skiff-gen-docs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated = files(fresh.path());
    let committed = files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("doc"));
    let names = generated.keys().chain(committed.keys());
    let stale: std::collections::BTreeSet<&String> = names
        .filter(|name| generated.get(*name) != committed.get(*name))
        .collect();
    assert!(
        stale.is_empty(),
        "cli/doc is out of date with the command-line definition ({stale:?} differ): run \
         `make docs` and commit cli/doc"
    );
    for page in [
        "skiff.1",
        "skiff-copy.1",
        "skiff-delta-create.1",
        "skiff-fsck.1",
    ] {
        assert!(generated.contains_key(&format!("man/{page}")), "{page}");
    }
}
