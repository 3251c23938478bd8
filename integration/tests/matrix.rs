//! Every fixture through every registry format: pushed with skopeo as OCI (as built: gzip or
//! uncompressed layers), as Docker v2s2, and as skopeo 1.9.3's zstd:chunked, then copied by
//! skiff from the registry. The stored tree must equal the layers' (extracted independently)
//! and, for images cfsctl can build, `cfsctl oci compute-id` must equal the id after cfsctl's
//! own pull of the OCI layout.

use skiff_integration::fixtures::{self, Compression};
use skiff_integration::registry::Registry;
use skiff_integration::tools::{cfsctl, output, run, skiff};
use skiff_integration::tree::Tree;

/// skopeo options of each registry format. Docker v2s2 cannot hold zstd layers, so zstd
/// fixtures are pushed in the other formats only.
const FORMATS: &[(&str, &[&str])] = &[
    ("oci", &[]),
    ("v2s2", &["--format", "v2s2"]),
    ("zstd-chunked", &["--dest-compress-format", "zstd:chunked"]),
];

fn applies(format: &str, compression: Compression) -> bool {
    !(format == "v2s2" && matches!(compression, Compression::Zstd | Compression::ZstdFrames))
}

fn check_fixture(kind: &str, compression: Compression) {
    let dir = tempfile::tempdir().unwrap();
    let layers = fixtures::by_name(kind).unwrap();
    let expected = Tree::from_layers(&fixtures::layer_tars(&layers).unwrap()).unwrap();
    let layout = dir.path().join("layout");
    fixtures::write_oci_layout(&layout, kind, &layers, compression).unwrap();
    let source = format!("oci:{}:{kind}", layout.display());

    // cfsctl's own id, where cfsctl can build the image's tree (it needs /usr).
    let reference_id = expected.entries.contains_key(b"/usr".as_slice()).then(|| {
        let theirs = dir.path().join("cfsctl-repo");
        run(cfsctl(&theirs).arg("init").arg("--insecure").arg(&theirs)).unwrap();
        run(cfsctl(&theirs).args(["oci", "pull", &source, "ref"])).unwrap();
        run(cfsctl(&theirs).args(["oci", "compute-id", "ref"])).unwrap()
    });

    let registry = Registry::start_plain().unwrap();
    for (format, skopeo_args) in FORMATS.iter().filter(|(f, _)| applies(f, compression)) {
        let repo_tag = format!("{kind}:{format}");
        let mut push = skiff_integration::tools::skopeo();
        push.args(["copy", "--quiet", "--dest-tls-verify=false"])
            .args(*skopeo_args);
        push.arg(&source).arg(registry.docker_ref(&repo_tag));
        run(&mut push).unwrap();

        let repo = dir.path().join(format!("repo-{format}"));
        let out = output(
            skiff()
                .args(["copy", "--quiet", "--src-tls-verify=false"])
                .arg(registry.docker_ref(&repo_tag))
                .arg(format!("composefs:{}:{kind}", repo.display())),
        )
        .unwrap();
        assert!(
            out.status.success(),
            "{kind} as {format}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tree::from_stored_image(&repo, kind)
            .unwrap()
            .assert_same(&expected, &format!("{kind} as {format}"));
        run(cfsctl(&repo).args(["oci", "fsck"])).unwrap();
        run(skiff().arg("fsck").arg(&repo)).unwrap();
        if let Some(id) = &reference_id {
            assert_eq!(
                &run(cfsctl(&repo).args(["oci", "compute-id", kind])).unwrap(),
                id,
                "{kind} as {format}"
            );
        }
    }
}

#[test]
fn rich_every_format() {
    check_fixture("rich", Compression::Gzip);
}

#[test]
fn rich_uncompressed_every_format() {
    check_fixture("rich", Compression::None);
}

#[test]
fn scratch_every_format() {
    check_fixture("scratch", Compression::Zstd);
}

#[test]
fn many_small_files_every_format() {
    check_fixture("many", Compression::Gzip);
}

#[test]
fn file_over_64_mib_every_format() {
    check_fixture("big-file", Compression::Gzip);
}

#[test]
fn version_pair_every_format() {
    check_fixture("demo-v1", Compression::Gzip);
    check_fixture("demo-v2", Compression::Zstd);
}
