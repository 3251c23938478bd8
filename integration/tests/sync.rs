//! `skiff sync` end to end, against Debian's docker-registry (no referrers API: the referrers
//! tag), ferro-oci-server (the referrers API), OCI layouts, and a TLS registry with
//! htpasswd authentication: every digest equal after a sync, referrers (two real oci-deltas
//! and a signature-like artifact) found where skiff's delta discovery looks, a second sync
//! that fetches no blob, and bad input refused with nothing tagged.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::json;
use skiff_integration::fixtures::{
    Compression, blob_path, digest, dir, file, rich_image, scratch_image, write_multi_arch,
    write_oci_layout,
};
use skiff_integration::registry::Registry;
use skiff_integration::tools::{composefs_ref, copy_summary, output, skiff};

/// The artifact type of the signature-like fixture artifact.
const SIGNATURE_TYPE: &str = "application/vnd.example.signature.v1+json";

struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new() -> Work {
        Work {
            dir: tempfile::Builder::new()
                .prefix("skiff-sync-test-")
                .tempdir()
                .unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// `skiff sync ARGS`, whatever its status.
fn sync(args: &[&str]) -> Output {
    output(skiff().arg("sync").args(args)).unwrap()
}

/// `skiff sync ARGS`, which must succeed; its stdout.
fn synced(args: &[&str]) -> String {
    let out = sync(args);
    assert!(
        out.status.success(),
        "skiff sync {args:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The digest of the exact manifest bytes `reference` names, read by skopeo.
fn remote_digest(reference: &str) -> String {
    let raw = std::process::Command::new(skiff_integration::tools::require("skopeo"))
        .args([
            "--insecure-policy",
            "inspect",
            "--raw",
            "--tls-verify=false",
            reference,
        ])
        .output()
        .unwrap();
    assert!(
        raw.status.success(),
        "skopeo inspect --raw {reference}: {}",
        String::from_utf8_lossy(&raw.stderr)
    );
    digest(&raw.stdout)
}

/// Whether `reference` names a manifest.
fn exists(reference: &str) -> bool {
    std::process::Command::new(skiff_integration::tools::require("skopeo"))
        .args([
            "--insecure-policy",
            "inspect",
            "--raw",
            "--tls-verify=false",
            reference,
        ])
        .output()
        .unwrap()
        .status
        .success()
}

/// Writes a blob into the layout `layout`; its descriptor's digest.
fn put_blob(layout: &Path, data: &[u8]) -> String {
    let d = digest(data);
    std::fs::write(blob_path(layout, &d), data).unwrap();
    d
}

/// Adds to `layout` a signature-like artifact whose subject is manifest `subject` (of
/// `subject_size` bytes), tagged `sig`, and lists it in the referrers tag of the subject;
/// returns its digest.
fn add_signature(layout: &Path, subject: &str, subject_size: u64) -> String {
    let empty = put_blob(layout, b"{}");
    let payload = br#"{"critical":{"identity":"fixture"}}"#;
    let payload_digest = put_blob(layout, payload);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": SIGNATURE_TYPE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2, "data": "e30="},
        "layers": [{"mediaType": "application/vnd.example.signature.payload", "digest": payload_digest, "size": payload.len()}],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": subject, "size": subject_size},
        "annotations": {"org.example.signer": "fixture"},
    }))
    .unwrap();
    let sig = put_blob(layout, &manifest);
    let entry = json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": sig, "size": manifest.len(),
        "artifactType": SIGNATURE_TYPE,
        "annotations": {"org.example.signer": "fixture"},
    });
    skiff_integration::fixtures::add_to_index(layout, "sig", entry.clone()).unwrap();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry],
    }))
    .unwrap();
    let index_digest = put_blob(layout, &index);
    skiff_integration::fixtures::add_to_index(
        layout,
        &subject.replace(':', "-"),
        json!({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": index_digest, "size": index.len()}),
    )
    .unwrap();
    sig
}

/// v2: the rich image with one more file in its last layer.
fn v2_image() -> Vec<skiff_integration::fixtures::Layer> {
    let mut layers = rich_image();
    let last = layers.last_mut().unwrap();
    last.add("etc/", dir())
        .add("etc/release", file(b"version 2\n".to_vec()));
    layers
}

/// The fixture set in a layout: v0, v1, v2 (with a signature in the referrers tag) and a
/// two-platform index `multi`; returns v2's digest.
fn upstream_layout(layout: &Path) -> String {
    write_oci_layout(layout, "v0", &scratch_image(), Compression::Gzip).unwrap();
    write_oci_layout(layout, "v1", &rich_image(), Compression::Gzip).unwrap();
    let v2 = write_oci_layout(layout, "v2", &v2_image(), Compression::Gzip).unwrap();
    write_multi_arch(
        layout,
        "multi",
        &[("amd64", scratch_image()), ("arm64", rich_image())],
    )
    .unwrap();
    let size = std::fs::metadata(blob_path(layout, &v2.manifest_digest))
        .unwrap()
        .len();
    add_signature(layout, &v2.manifest_digest, size);
    v2.manifest_digest
}

#[test]
fn a_fixture_set_mirrors_with_every_digest_and_referrer() {
    let work = Work::new();
    let layout = work.path("upstream");
    let v2 = upstream_layout(&layout);
    let registry = Registry::start_plain().unwrap();
    let upstream = registry.docker_ref("upstream/app");
    let insecure = ["--src-tls-verify=false", "--dest-tls-verify=false"];

    // Layout → registry, every tag; the signature goes into the registry's referrers tag.
    let out = synced(
        &[
            &insecure[..],
            &[&format!("oci:{}", layout.display()), &upstream],
        ]
        .concat(),
    );
    assert!(out.contains("Mirrored 7, up to date 0, failed 0"), "{out}");
    for tag in ["v0", "v1", "v2", "multi", "sig"] {
        assert_eq!(
            remote_digest(&format!("{upstream}:{tag}")),
            skiff_integration::fixtures::layout_manifest_digest(&layout, tag).unwrap(),
            "{tag}"
        );
    }
    let referrers_tag = v2.replace(':', "-");
    assert_eq!(
        remote_digest(&format!("{upstream}:{referrers_tag}")),
        skiff_integration::fixtures::layout_manifest_digest(&layout, &referrers_tag).unwrap(),
        "the referrers tag is the layout's, byte for byte"
    );

    // Two real deltas of v2, pushed by skiff delta create (which adds them to the same tag).
    for old in ["v0", "v1"] {
        let out = output(skiff().args([
            "delta",
            "create",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            &format!("{upstream}:{old}"),
            &format!("{upstream}:v2"),
            &format!("{upstream}:delta-from-{old}"),
        ]))
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let upstream_index = remote_digest(&format!("{upstream}:{referrers_tag}"));

    // Registry → another repository of the same registry (blobs mounted) and → ferro.
    let mirror = registry.docker_ref("mirror/app");
    let out = synced(&[&insecure[..], &["--verify", &upstream, &mirror]].concat());
    assert!(out.contains("failed 0"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains(" mounted") && !l.contains(" 0 mounted")),
        "no blob mounted: {out}"
    );
    assert!(
        !out.contains(&format!(":{referrers_tag} ")),
        "referrers tag copied as an image: {out}"
    );
    let mut tags = registry.tags("mirror/app").unwrap();
    tags.sort();
    let mut upstream_tags = registry.tags("upstream/app").unwrap();
    upstream_tags.sort();
    assert_eq!(tags, upstream_tags, "every tag, the referrers tag included");
    for tag in &upstream_tags {
        assert_eq!(
            remote_digest(&format!("{mirror}:{tag}")),
            remote_digest(&format!("{upstream}:{tag}")),
            "{tag}"
        );
    }
    assert_eq!(
        remote_digest(&format!("{mirror}:{referrers_tag}")),
        upstream_index
    );

    let api = Registry::start_referrers().unwrap();
    let api_app = api.docker_ref("app");
    synced(&[&insecure[..], &[&upstream, &api_app]].concat());
    for tag in [
        "v0",
        "v1",
        "v2",
        "multi",
        "sig",
        "delta-from-v0",
        "delta-from-v1",
    ] {
        assert_eq!(
            remote_digest(&format!("{api_app}:{tag}")),
            remote_digest(&format!("{upstream}:{tag}")),
            "{tag}"
        );
    }

    // The second sync: up to date, and not one blob fetched.
    let fetched = registry.blob_gets().unwrap().len();
    let out = synced(&[&insecure[..], &[&upstream, &mirror]].concat());
    assert!(out.contains("Mirrored 0, up to date 9, failed 0"), "{out}");
    assert_eq!(
        registry.blob_gets().unwrap().len(),
        fetched,
        "a blob was fetched again"
    );

    // A store holding v1 updates to v2 from the mirrors through a mirrored delta.
    for (name, source) in [("fallback", &mirror), ("api", &api_app)] {
        let repo = work.path(&format!("store-{name}"));
        copy_summary(
            &[],
            &format!("oci:{}:v1", layout.display()),
            &composefs_ref(&repo, "app"),
        );
        let summary = copy_summary(
            &["--src-tls-verify=false"],
            &format!("{source}:v2"),
            &composefs_ref(&repo, "app"),
        );
        assert!(
            summary["layers_delta"].as_u64().unwrap() >= 1,
            "{name}: {summary}"
        );
    }
}

#[test]
fn an_index_goes_whole_into_a_layout_and_a_tag_moves_only_when_forced() {
    let work = Work::new();
    let layout = work.path("upstream");
    let v2 = upstream_layout(&layout);
    let out_layout = work.path("out");
    let src = |r: &str| format!("oci:{}:{r}", layout.display());
    let dst = format!("oci:{}:fixture", out_layout.display());

    // Dry run: lists, writes nothing.
    let out = synced(&["--dry-run", &src("multi"), &dst]);
    assert!(out.contains("Would copy"), "{out}");
    assert!(out.contains("blob sha256:"), "{out}");
    assert!(
        !out_layout.exists(),
        "a dry run wrote {}",
        out_layout.display()
    );

    let multi = skiff_integration::fixtures::layout_manifest_digest(&layout, "multi").unwrap();
    let out = synced(&[
        "--verify",
        &format!("oci:{}:@{multi}", layout.display()),
        &dst,
    ]);
    assert!(out.contains("verified"), "{out}");
    assert_eq!(
        skiff_integration::fixtures::layout_manifest_digest(&out_layout, "fixture").unwrap(),
        multi
    );
    // Both platforms' images and all their blobs are there.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob_path(&out_layout, &multi)).unwrap()).unwrap();
    for child in index["manifests"].as_array().unwrap() {
        assert!(blob_path(&out_layout, child["digest"].as_str().unwrap()).exists());
    }

    // One platform makes another index: refused without leave, nothing written.
    let one_layout = work.path("arm64-only");
    let one = format!("oci:{}:fixture", one_layout.display());
    let out = sync(&["--platform", "linux/arm64", &src("multi"), &one]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--allow-digest-change"), "{stderr}");
    assert!(
        !one_layout.join("index.json").exists(),
        "a refused sync wrote a layout"
    );
    let out = synced(&[
        "--platform",
        "linux/arm64",
        "--allow-digest-change",
        &src("multi"),
        &one,
    ]);
    assert!(out.contains(&format!("some platforms of {multi}")), "{out}");
    let filtered =
        skiff_integration::fixtures::layout_manifest_digest(&one_layout, "fixture").unwrap();
    assert_ne!(filtered, multi);
    let kept: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob_path(&one_layout, &filtered)).unwrap()).unwrap();
    let kept = kept["manifests"].as_array().unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0]["platform"]["architecture"], "arm64");
    for child in index["manifests"].as_array().unwrap() {
        let digest = child["digest"].as_str().unwrap();
        assert_eq!(
            blob_path(&one_layout, digest).exists(),
            child["platform"]["architecture"] == "arm64",
            "{digest}"
        );
    }

    // Pinned to another digest: refused, the tag left alone; moved with --force.
    let pinned = format!("oci:{}:@{v2}", layout.display());
    let out = sync(&[&pinned, &dst]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to move the tag"), "{stderr}");
    assert_eq!(
        skiff_integration::fixtures::layout_manifest_digest(&out_layout, "fixture").unwrap(),
        multi
    );
    synced(&["--force", &pinned, &dst]);
    assert_eq!(
        skiff_integration::fixtures::layout_manifest_digest(&out_layout, "fixture").unwrap(),
        v2
    );
    // Named by tag, the mirror follows the source.
    let out = synced(&[&src("v1"), &dst]);
    assert!(out.contains("Mirrored 1"), "{out}");
}

#[test]
fn bad_sources_and_a_refusing_registry_leave_nothing_tagged() {
    let work = Work::new();
    let registry = Registry::start_plain().unwrap();
    let insecure = ["--dest-tls-verify=false"];

    // A layer blob whose bytes are not its digest; a truncated one.
    for (case, damage) in [
        (
            "changed",
            (|b: &mut Vec<u8>| b[10] ^= 0xff) as fn(&mut Vec<u8>),
        ),
        ("truncated", |b: &mut Vec<u8>| b.truncate(b.len() / 2)),
    ] {
        let layout = work.path(case);
        write_oci_layout(&layout, "v1", &rich_image(), Compression::Gzip).unwrap();
        let manifest = skiff_integration::fixtures::layout_manifest(&layout, "v1").unwrap();
        let layer = blob_path(&layout, manifest["layers"][0]["digest"].as_str().unwrap());
        let mut bytes = std::fs::read(&layer).unwrap();
        damage(&mut bytes);
        std::fs::write(&layer, bytes).unwrap();
        let dest = registry.docker_ref(&format!("bad/{case}:v1"));
        let out = sync(
            &[
                &insecure[..],
                &[&format!("oci:{}:v1", layout.display()), &dest],
            ]
            .concat(),
        );
        assert_eq!(out.status.code(), Some(1), "{case}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("the blob read is"), "{case}: {stderr}");
        assert!(!exists(&dest), "{case}: tagged");
    }

    // A manifest whose bytes are not the digest it is listed under.
    let layout = work.path("lying");
    let written = write_oci_layout(&layout, "v1", &rich_image(), Compression::Gzip).unwrap();
    let path = blob_path(&layout, &written.manifest_digest);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.push(b' ');
    std::fs::write(&path, bytes).unwrap();
    let dest = registry.docker_ref("bad/lying:v1");
    let out = sync(
        &[
            &insecure[..],
            &[&format!("oci:{}:v1", layout.display()), &dest],
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds sha256:"));
    assert!(!exists(&dest));

    // The deprecated OCI artifact manifest, which distribution refuses (400).
    let layout = work.path("artifact");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let blob = put_blob(&layout, b"payload");
    let artifact = serde_json::to_vec(&json!({
        "mediaType": "application/vnd.oci.artifact.manifest.v1+json",
        "artifactType": "application/vnd.example",
        "blobs": [{"mediaType": "application/octet-stream", "digest": blob, "size": 7}],
    }))
    .unwrap();
    let d = put_blob(&layout, &artifact);
    skiff_integration::fixtures::add_to_index(
        &layout,
        "v1",
        json!({"mediaType": "application/vnd.oci.artifact.manifest.v1+json", "digest": d, "size": artifact.len()}),
    )
    .unwrap();
    let dest = registry.docker_ref("bad/artifact:v1");
    let out = sync(
        &[
            &insecure[..],
            &[&format!("oci:{}:v1", layout.display()), &dest],
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("HTTP 400"), "{stderr}");
    assert!(!exists(&dest));

    // A missing source image: exit 2, as skopeo.
    let out = sync(
        &[
            &insecure[..],
            &[&format!("oci:{}:nope", layout.display()), &dest],
        ]
        .concat(),
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn lists_and_yaml_with_json_groups_and_keep_going() {
    let work = Work::new();
    let layout = work.path("upstream");
    write_oci_layout(&layout, "v1", &rich_image(), Compression::Gzip).unwrap();
    let registry = Registry::start_plain().unwrap();
    let first = registry
        .push(&format!("oci:{}:v1", layout.display()), "test/tiny:latest")
        .unwrap();
    registry
        .push(&format!("oci:{}:v1", layout.display()), "zstd/tiny:latest")
        .unwrap();
    let wanted = remote_digest(&first);

    // A list: comments, a bare source name, an option column, and one line that fails.
    let list = work.path("fixtures.txt");
    std::fs::write(
        &list,
        format!(
            "# fixture images\n\n{first} {mirror}  # the first\n{bare} {mirror2} referrers=false\n\
             oci:{missing}:v9 {mirror3}\n",
            bare = first.trim_start_matches("docker://"),
            mirror = registry.docker_ref("ci/one:1"),
            mirror2 = registry.docker_ref("ci/two:1"),
            missing = work.path("nothing").display(),
            mirror3 = registry.docker_ref("ci/three:1"),
        ),
    )
    .unwrap();
    let args = [
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--keep-going",
    ];
    let out = output(
        skiff()
            .env("GITHUB_ACTIONS", "true")
            .args(["sync", "--from-file"])
            .arg(&list)
            .args(args),
    )
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(stdout.matches("::group::").count(), 3, "{stdout}");
    assert_eq!(stdout.matches("::endgroup::").count(), 3, "{stdout}");
    assert!(
        stdout.contains("Mirrored 2, up to date 0, failed 1"),
        "{stdout}"
    );
    assert_eq!(remote_digest(&registry.docker_ref("ci/two:1")), wanted);

    // skopeo sync's YAML: two repositories both named `tiny` stay apart (scoped).
    let yaml = work.path("sync.yml");
    std::fs::write(
        &yaml,
        format!(
            "{host}:\n  tls-verify: false\n  images:\n    test/tiny: [latest]\n  \
             images-by-tag-regex:\n    zstd/tiny: ^lat\n",
            host = registry.host()
        ),
    )
    .unwrap();
    let prefix = format!("{}/synced", registry.host());
    let out = output(
        skiff()
            .args(["sync", "--json", "--dest-tls-verify=false", "--src", "yaml"])
            .arg(&yaml)
            .arg(&prefix),
    )
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        events.iter().filter(|e| e["event"] == "image").count(),
        2,
        "{stdout}"
    );
    let summary = events.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["mirrored"], 2);
    let scope = registry.host().replace(':', "_");
    for repo in ["test/tiny", "zstd/tiny"] {
        assert_eq!(
            remote_digest(&registry.docker_ref(&format!("synced/{scope}/{repo}:latest"))),
            wanted
        );
    }
}

#[test]
fn through_tls_and_basic_authentication() {
    let work = Work::new();
    let layout = work.path("upstream");
    write_oci_layout(&layout, "v1", &rich_image(), Compression::Gzip).unwrap();
    let registry = Registry::start_tls_auth("sync-user", "sync pass").unwrap();
    let cert_dir = registry.cert_dir().unwrap().display().to_string();
    let dest = registry.docker_ref("auth/app:v1");
    let source = format!("oci:{}:v1", layout.display());
    // Without credentials: refused, nothing tagged.
    let out = sync(&[
        "--dest-cert-dir",
        &cert_dir,
        "--dest-no-creds",
        &source,
        &dest,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the registry requires credentials (give --dest-creds"),
        "{stderr}"
    );
    // From the auth file, over TLS verified with the test CA.
    let authfile = registry.authfile().unwrap();
    let out = synced(&[
        "--dest-cert-dir",
        &cert_dir,
        "--dest-authfile",
        authfile.to_str().unwrap(),
        &source,
        &dest,
    ]);
    assert!(out.contains("Mirrored 1"), "{out}");
    let back = work.path("back");
    synced(&[
        "--src-cert-dir",
        &cert_dir,
        "--src-creds",
        "sync-user:sync pass",
        &dest,
        &format!("oci:{}:v1", back.display()),
    ]);
    assert_eq!(
        skiff_integration::fixtures::layout_manifest_digest(&back, "v1").unwrap(),
        skiff_integration::fixtures::layout_manifest_digest(&layout, "v1").unwrap()
    );
}

#[test]
fn through_bearer_tokens_with_a_mount_scope() {
    let work = Work::new();
    let layout = work.path("upstream");
    write_oci_layout(&layout, "v1", &rich_image(), Compression::Gzip).unwrap();
    let registry = Registry::start_token_auth("token-user", "token pass").unwrap();
    let creds = "token-user:token pass";
    let first = registry.docker_ref("fixtures/app:v1");
    let source = format!("oci:{}:v1", layout.display());
    let insecure = ["--src-tls-verify=false", "--dest-tls-verify=false"];
    // The token server refuses anonymous clients: a clear error, nothing tagged.
    let out = sync(&[&insecure[..], &["--dest-no-creds", &source, &first]].concat());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the token server answered HTTP 401"),
        "{stderr}"
    );
    let out = synced(&[&insecure[..], &["--dest-creds", creds, &source, &first]].concat());
    assert!(out.contains("Mirrored 1"), "{out}");
    assert!(
        registry
            .token_scopes()
            .contains(&"repository:fixtures/app:pull,push".to_owned()),
        "{:?}",
        registry.token_scopes()
    );
    // Registry to registry on the same host: the destination's token also asks to pull from
    // the source repository, and the blobs are mounted, not copied.
    let second = registry.docker_ref("mirror/app:v1");
    let out = synced(
        &[
            &insecure[..],
            &["--src-creds", creds, "--dest-creds", creds, &first, &second],
        ]
        .concat(),
    );
    assert!(out.contains("0 blobs (0 B) copied, 3 mounted"), "{out}");
    assert!(
        registry
            .token_scopes()
            .contains(&"repository:fixtures/app:pull".to_owned()),
        "{:?}",
        registry.token_scopes()
    );
    let back = work.path("back");
    synced(
        &[
            &insecure[..],
            &[
                "--src-creds",
                creds,
                &second,
                &format!("oci:{}:v1", back.display()),
            ],
        ]
        .concat(),
    );
    assert_eq!(
        skiff_integration::fixtures::layout_manifest_digest(&back, "v1").unwrap(),
        skiff_integration::fixtures::layout_manifest_digest(&layout, "v1").unwrap()
    );
}

#[test]
fn a_stored_image_goes_out_with_its_digest_when_its_blobs_are_kept() {
    let work = Work::new();
    let layout = work.path("upstream");
    let written = write_oci_layout(&layout, "v1", &rich_image(), Compression::Gzip).unwrap();
    let source = format!("oci:{}:v1", layout.display());
    let kept = work.path("kept");
    let plain = work.path("plain");
    copy_summary(&["--keep-blobs"], &source, &composefs_ref(&kept, "app"));
    copy_summary(&[], &source, &composefs_ref(&plain, "app"));
    let registry = Registry::start_plain().unwrap();
    let dest = registry.docker_ref("stored/app");
    let out = synced(&[
        "--dest-tls-verify=false",
        &composefs_ref(&kept, "app"),
        &dest,
    ]);
    assert!(out.contains("Mirrored 1"), "{out}");
    // The stored tag names the destination's.
    assert_eq!(
        remote_digest(&format!("{dest}:app")),
        written.manifest_digest
    );
    // Without the original blobs the digest cannot be kept: refused, nothing tagged.
    let other = registry.docker_ref("stored/other:app");
    let out = sync(&[
        "--dest-tls-verify=false",
        &composefs_ref(&plain, "app"),
        &other,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--keep-blobs") || stderr.contains("kept"),
        "{stderr}"
    );
    assert!(!exists(&other));
}
