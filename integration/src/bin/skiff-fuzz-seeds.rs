//! Writes the seed corpora of the fuzz targets (`fuzz/`): `skiff-fuzz-seeds DIR` fills
//! `DIR/<target>/` with small inputs made from skiff's fixtures, so that the fuzzer starts from
//! valid input of every format. Deterministic: the same seeds on every run.

use std::path::Path;

use anyhow::{Context, Result, bail};
use skiff_integration::deltas::tar_diff;
use skiff_integration::fixtures::{self, Layer, Node, dir, file};
use skiff_transport::format::oci_delta::tar_diff::{
    OpWriter, write_bsdiff, write_zstd, zstd_patch,
};
use skiff_transport::format::oci_delta::{
    ANNOTATION_CONTENT, ANNOTATION_SOURCE_CONFIG, ANNOTATION_TO,
};
use skiff_transport::format::zstd_chunked::{MANIFEST_POSITION, TARSPLIT_POSITION};

/// The source files the `tar_diff` target applies deltas to (see
/// `skiff_transport::fuzzing::TAR_DIFF_SOURCE`, which these must match).
const HOSTNAME: (&str, usize) = ("etc/hostname", 12);
const DATA: (&str, usize) = ("usr/share/data.bin", 8192);

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out] = args.as_slice() else {
        bail!("usage: skiff-fuzz-seeds DIR");
    };
    let out = Path::new(out);
    let layers = small_layers();
    let tars = fixtures::layer_tars(&layers)?;
    for (i, tar) in tars.iter().enumerate() {
        write(out, "layer_import", &format!("layer-{i}.tar"), tar)?;
        let (blob, annotations) = fixtures::chunked(tar)?;
        let toc = metadata(&blob, &annotations[MANIFEST_POSITION])?;
        let split = metadata(&blob, &annotations[TARSPLIT_POSITION])?;
        write(out, "zstd_chunked_toc", &format!("toc-{i}.json"), &toc.1)?;
        write(out, "zstd_chunked_toc", &format!("toc-{i}.zst"), &toc.0)?;
        write(
            out,
            "zstd_chunked_toc",
            &format!("footer-{i}"),
            &blob[blob.len() - 72..],
        )?;
        write(out, "tar_split", &format!("tar-split-{i}.jsonl"), &split.1)?;
    }
    for (name, seed) in tar_diffs()? {
        write(out, "tar_diff", name, &seed)?;
    }
    for (name, seed) in delta_manifests() {
        write(out, "delta_manifest", name, &seed)?;
    }
    for (name, seed) in byteranges() {
        write(out, "byteranges", name, &seed)?;
    }
    for (i, reference) in IMAGE_REFS.iter().enumerate() {
        write(out, "image_ref", &format!("ref-{i}"), reference.as_bytes())?;
    }
    Ok(())
}

fn write(out: &Path, target: &str, name: &str, data: &[u8]) -> Result<()> {
    let dir = out.join(target);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(name), data).with_context(|| format!("Writing {target}/{name}"))
}

/// The compressed and the decompressed payload at a zstd:chunked position annotation.
fn metadata(blob: &[u8], position: &str) -> Result<(Vec<u8>, Vec<u8>)> {
    let fields: Vec<usize> = position
        .split(':')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let compressed = blob[fields[0]..fields[0] + fields[1]].to_vec();
    let plain = zstd::decode_all(&compressed[..])?;
    Ok((compressed, plain))
}

/// Layers of every kind of entry, each small enough to mutate quickly.
fn small_layers() -> Vec<Layer> {
    let mut base = Layer::default();
    base.add("usr/", dir())
        .add("usr/bin/", dir())
        .add("usr/bin/tool", file(fixtures::noise(1, 3000)))
        .add("usr/lib/tiny", file("short"))
        .add("usr/lib/zeros", file(vec![0u8; 2000]))
        .add("etc/", dir())
        .add("etc/hostname", file("fuzz-host\n"))
        .add(
            "etc/link",
            Node::Symlink {
                target: "hostname".into(),
            },
        )
        .add(
            "etc/hard",
            Node::Hardlink {
                target: "etc/hostname".into(),
            },
        )
        .add("dev/", dir())
        .add("dev/null", Node::CharDev { major: 1, minor: 3 })
        .add("run/fifo", Node::Fifo)
        .add(
            "usr/xattr",
            Node::File {
                data: b"x".to_vec(),
                mode: 0o600,
                uid: 1000,
                gid: 1000,
                xattrs: vec![("user.note".into(), b"v".to_vec())],
            },
        )
        .add(format!("usr/{}", "long".repeat(40)), file("long name"))
        .add(b"usr/latin1\xe9", file("not utf-8"));
    let mut upper = Layer::default();
    upper
        .add("etc/.wh.hostname", Node::Whiteout)
        .add("usr/lib/.wh..wh..opq", Node::Opaque)
        .add("usr/lib/new", file(fixtures::text(2, 500)));
    vec![base, upper]
}

/// Tar-diffs of every op against the `tar_diff` target's source files.
fn tar_diffs() -> Result<Vec<(&'static str, Vec<u8>)>> {
    let (host, data) = (HOSTNAME.0.as_bytes(), DATA.0.as_bytes());
    let mut out = vec![
        ("empty-v1", tar_diff(false, &[])),
        ("data", tar_diff(false, &[(0, 5, b"hello")])),
        (
            "open-copy",
            tar_diff(
                false,
                &[(1, host.len() as u64, host), (2, HOSTNAME.1 as u64, b"")],
            ),
        ),
        (
            "seek-add",
            tar_diff(
                false,
                &[
                    (1, data.len() as u64, data),
                    (4, 100, b""),
                    (3, 4, b"\x01\x02\x03\x04"),
                ],
            ),
        ),
        (
            "open-symlink",
            tar_diff(false, &[(1, 4, b"link"), (2, 1, b"")]),
        ),
        (
            "open-dir",
            tar_diff(false, &[(1, 15, b"usr/share/empty"), (2, 1, b"")]),
        ),
        (
            "climb",
            tar_diff(true, &[(1, 15, b"../etc/hostname"), (2, 3, b"")]),
        ),
    ];
    let old: Vec<u8> = (0..DATA.1).map(|i| (i * 7 % 251) as u8).collect();
    let mut new = old.clone();
    new[100..200].fill(b'z');
    new.extend_from_slice(b"appended");
    let mut w = OpWriter::new(Vec::new(), false)?;
    w.literal(b"header")?;
    write_bsdiff(&mut w, DATA.0, &old, &new)?;
    out.push(("bsdiff", w.finish()?));
    let mut w = OpWriter::new(Vec::new(), true)?;
    let frame = zstd_patch(&old, &new)?.context("a zstd patch smaller than the file")?;
    write_zstd(&mut w, DATA.0, &frame)?;
    out.push(("zstd-dict", w.finish()?));
    Ok(out)
}

fn delta_manifests() -> Vec<(&'static str, Vec<u8>)> {
    let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
    let layer = |content: &str, to: Option<String>| {
        let mut annotations = serde_json::json!({ ANNOTATION_CONTENT: content });
        if let Some(to) = to {
            annotations[ANNOTATION_TO] = to.into();
        }
        serde_json::json!({"mediaType": "application/vnd.tar-diff", "digest": d('a'),
                           "size": 10, "annotations": annotations})
    };
    let manifest = |layers: Vec<serde_json::Value>, subject: bool| {
        let mut m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": skiff_transport::format::oci_delta::ARTIFACT_TYPE,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": d('4'), "size": 2},
            "layers": layers,
            "annotations": { ANNOTATION_SOURCE_CONFIG: d('c') },
        });
        if subject {
            m["subject"] = serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                              "digest": d('e'), "size": 500});
        }
        serde_json::to_vec_pretty(&m).expect("JSON")
    };
    vec![
        (
            "full",
            manifest(
                vec![
                    layer("image-manifest", None),
                    layer("image-config", None),
                    layer("image-layer", Some(d('b'))),
                    layer("image-layer", None),
                ],
                true,
            ),
        ),
        (
            "no-config",
            manifest(vec![layer("image-manifest", None)], false),
        ),
    ]
}

fn byteranges() -> Vec<(&'static str, Vec<u8>)> {
    let part = |range: &str, data: &[u8]| {
        let mut p = format!(
            "--XyZ\r\nContent-Type: application/octet-stream\r\nContent-Range: {range}\r\n\r\n"
        )
        .into_bytes();
        p.extend_from_slice(data);
        p.extend_from_slice(b"\r\n");
        p
    };
    let mut two = b"multipart/byteranges; boundary=XyZ\n\r\n".to_vec();
    two.extend(part("bytes 0-9/100", b"--XyZ\r\n--X"));
    two.extend(part("bytes 50-52/100", b"abc"));
    two.extend_from_slice(b"--XyZ--\r\n");
    let mut quoted = b"multipart/byteranges; boundary=\"XyZ\"\n".to_vec();
    quoted.extend(part("bytes 5-5/*", b"x"));
    quoted.extend_from_slice(b"--XyZ--");
    vec![
        ("two-parts", two),
        ("quoted", quoted),
        ("content-range", b"bytes 0-99/1000\n".to_vec()),
    ]
}

const IMAGE_REFS: &[&str] = &[
    "docker://quay.io/fedora/fedora:40",
    "docker://busybox",
    "docker://localhost:5000/a/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "oci:/tmp/layout:latest",
    "oci:relative",
    "oci-archive:/tmp/a.tar:tag",
    "docker-archive:/tmp/d.tar:img:1",
    "dir:/tmp/dir",
    "containers-storage:[overlay@/var/lib]img",
    "composefs:/var/repo:fedora/40",
    "composefs::name",
    "composefs:/r@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
];
