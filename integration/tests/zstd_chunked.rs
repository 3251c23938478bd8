//! skiff's zstd:chunked writer against independent implementations: current containers/storage
//! (through `skiff-peer-copy`) writes the same TOC for the same tar, every field but the
//! compressed offsets; skopeo 1.9.3 cuts the same tar at the same chunk boundaries (the rolling
//! checksum and the zero-run rule), and its (legacy) output is recognised as not usable for
//! partial pulls; the `zstd-chunked` crate reads skiff's output and rebuilds the tar from it.

use std::collections::{BTreeMap, HashMap};

use skiff_integration::fixtures::{self, Compression, Layer};
use skiff_integration::tools::{peer_copy, run, skopeo};
use skiff_integration::zstd_chunked_writer as writer;
use skiff_transport::format::zstd_chunked::{Annotations, Toc, decompress_metadata};

fn boundaries(toc: &Toc) -> BTreeMap<Vec<u8>, Vec<(u64, u64, bool)>> {
    toc.files
        .iter()
        .map(|f| {
            (
                f.name.clone(),
                f.chunks
                    .iter()
                    .map(|c| (c.offset, c.size, c.zeros))
                    .collect(),
            )
        })
        .collect()
}

/// A layer that exercises the chunking rules: a large noise file (many rolling-checksum chunks),
/// text, runs of zeros above and below the hole threshold, a small file.
fn chunking_layer() -> Layer {
    let mut l = Layer::default();
    let mut holes = fixtures::noise(3, 70_000);
    holes.extend(std::iter::repeat_n(0u8, 200_000));
    holes.extend(fixtures::noise(4, 5_000));
    holes.extend(std::iter::repeat_n(0u8, 1_000)); // below the hole threshold: data
    holes.extend(fixtures::noise(5, 3_000));
    l.add("usr/", fixtures::dir())
        .add(
            "usr/noise.bin",
            fixtures::file(fixtures::noise(1, 1_500_000)),
        )
        .add("usr/text.txt", fixtures::file(fixtures::text(2, 400_000)))
        .add("usr/holes.bin", fixtures::file(holes))
        .add("usr/small", fixtures::file("small"));
    l
}

#[test]
fn chunk_boundaries_match_skopeo() {
    let dir = tempfile::tempdir().unwrap();
    let tar = fixtures::layer_tar(&chunking_layer()).unwrap();
    let layout = dir.path().join("plain");
    fixtures::write_image_raw(
        &layout,
        "t",
        &[(
            fixtures::media_type(Compression::None).to_owned(),
            tar.clone(),
        )],
        &[fixtures::digest(&tar)],
        fixtures::native_arch(),
    )
    .unwrap();
    let chunked = dir.path().join("chunked");
    run(skopeo().args([
        "copy",
        "--dest-compress-format",
        "zstd:chunked",
        &format!("oci:{}:t", layout.display()),
        &format!("oci:{}:t", chunked.display()),
    ]))
    .unwrap();

    // skopeo's layer and its (legacy-keyed) TOC.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(chunked.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixtures::blob_path(&chunked, manifest_digest)).unwrap(),
    )
    .unwrap();
    let layer = &manifest["layers"][0];
    let annotations: HashMap<String, String> =
        serde_json::from_value(layer["annotations"].clone()).unwrap();
    assert!(
        matches!(Annotations::parse(Some(&annotations)).unwrap(), Annotations::Unusable(ref r) if r.contains("legacy")),
        "skopeo 1.9.3 writes the legacy keys: {annotations:?}"
    );
    let blob = std::fs::read(fixtures::blob_path(
        &chunked,
        layer["digest"].as_str().unwrap(),
    ))
    .unwrap();
    let position: Vec<u64> = annotations["io.containers.zstd-chunked.manifest-position"]
        .split(':')
        .map(|v| v.parse().unwrap())
        .collect();
    let toc_bytes = &blob[position[0] as usize..(position[0] + position[1]) as usize];
    let theirs = Toc::parse(
        &decompress_metadata(toc_bytes, position[2]).unwrap(),
        blob.len() as u64,
    )
    .unwrap();

    let mut ours_blob = Vec::new();
    let written =
        writer::write_zstd_chunked(&tar[..], &mut ours_blob, writer::DEFAULT_LEVEL).unwrap();
    assert_eq!(written.diff_id, fixtures::digest(&tar));
    let ours = Annotations::parse(Some(&written.annotations.into_iter().collect())).unwrap();
    let Annotations::Chunked { toc, .. } = ours else {
        panic!("ours is not chunked")
    };
    let toc_bytes = &ours_blob[toc.offset as usize..(toc.offset + toc.length) as usize];
    let ours = Toc::parse(
        &decompress_metadata(toc_bytes, toc.uncompressed).unwrap(),
        ours_blob.len() as u64,
    )
    .unwrap();

    let (ours, theirs) = (boundaries(&ours), boundaries(&theirs));
    assert!(
        ours[b"usr/noise.bin".as_slice()].len() > 5,
        "the noise file is cut into chunks: {:?}",
        ours[b"usr/noise.bin".as_slice()]
    );
    assert_eq!(ours, theirs, "chunk boundaries differ from skopeo's");
}

/// The tar as the `zstd-chunked` crate 0.2.0 rebuilds it: that reader ignores tar-split's
/// `name_raw` (names that are not UTF-8), takes such a file entry for an inline segment and
/// writes its payload (the CRC-64 of the content, 8 bytes big-endian) instead of the content.
fn as_the_crate_rebuilds(tar: &[u8]) -> Vec<u8> {
    let mut replaced = Vec::new();
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        if std::str::from_utf8(&entry.path_bytes()).is_err() && entry.size() > 0 {
            let at = entry.raw_file_position() as usize;
            replaced.push(at..at + entry.size() as usize);
        }
    }
    let mut out = Vec::with_capacity(tar.len());
    let mut pos = 0;
    for r in replaced {
        out.extend_from_slice(&tar[pos..r.start]);
        let mut crc = skiff_transport::format::zstd_chunked::Crc64Iso::default();
        crc.update(&tar[r.clone()]);
        out.extend_from_slice(&crc.finish().to_be_bytes());
        pos = r.end;
    }
    out.extend_from_slice(&tar[pos..]);
    out
}

/// An independent reader (the `zstd-chunked` crate) parses what skiff's writer makes and
/// rebuilds the tar from it: the same DiffID (for layers whose names are all UTF-8, which is
/// all that reader handles), and every referenced range decompresses to the size and digest
/// the TOC gives.
#[test]
fn the_zstd_chunked_crate_reads_what_skiff_writes() {
    let mut same_diff_id = 0;
    for name in ["rich", "big-file", "many", "demo-v1"] {
        let image = fixtures::by_name(name).unwrap();
        for tar in fixtures::layer_tars(&image).unwrap() {
            let mut blob = Vec::new();
            let written = writer::write_zstd_chunked(&tar[..], &mut blob, 3).unwrap();
            assert_eq!(written.diff_id, fixtures::digest(&tar));
            let annotations: HashMap<String, String> =
                written.annotations.clone().into_iter().collect();
            let Annotations::Chunked { toc, tar_split, .. } =
                Annotations::parse(Some(&annotations)).unwrap()
            else {
                panic!("{name}: not zstd:chunked");
            };
            let frame = |p: &skiff_transport::format::zstd_chunked::Position| {
                &blob[p.offset as usize..(p.offset + p.length) as usize]
            };
            let stream =
                zstd_chunked::Stream::new_from_frames(frame(&toc), frame(&tar_split)).unwrap();
            let mut rebuilt = Vec::new();
            stream
                .write_to(&mut rebuilt, |r| {
                    let data =
                        zstd::decode_all(&blob[r.range.start as usize..r.range.end as usize])?;
                    anyhow::ensure!(data.len() as u64 == r.size, "size of {:?}", r.range);
                    anyhow::ensure!(
                        fixtures::digest(&data) == r.digest,
                        "digest of {:?}",
                        r.range
                    );
                    Ok(data)
                })
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
            let expected = as_the_crate_rebuilds(&tar);
            assert!(rebuilt == expected, "{name}: the crate's rebuild differs");
            if expected == tar {
                assert_eq!(fixtures::digest(&rebuilt), written.diff_id);
                same_diff_id += 1;
            }
        }
    }
    assert!(
        same_diff_id >= 6,
        "only {same_diff_id} layers rebuilt whole"
    );
}

/// The TOC of a zstd:chunked blob, its entries as JSON objects without the compressed offsets
/// (compression levels and encoders differ; everything else is a function of the tar).
fn toc_entries(blob: &[u8], annotations: &BTreeMap<String, String>) -> Vec<serde_json::Value> {
    let map = annotations.clone().into_iter().collect();
    let Annotations::Chunked { toc, .. } = Annotations::parse(Some(&map)).unwrap() else {
        panic!("not zstd:chunked: {annotations:?}");
    };
    let compressed = &blob[toc.offset as usize..(toc.offset + toc.length) as usize];
    let json = decompress_metadata(compressed, toc.uncompressed).unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&json).unwrap();
    doc["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let mut e = e.clone();
            let o = e.as_object_mut().unwrap();
            o.remove("offset");
            o.remove("endOffset");
            e
        })
        .collect()
}

#[test]
fn writer_agrees_with_current_containers_storage_on_the_toc() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let mut compared = 0;
    for kind in ["rich", "big-file", "demo-v2", "chunking"] {
        let layers = match kind {
            "chunking" => vec![chunking_layer()],
            _ => fixtures::by_name(kind).unwrap(),
        };
        fixtures::write_oci_layout(&layout, kind, &layers, Compression::Gzip).unwrap();
        let theirs = format!("{kind}-cstorage");
        run(peer_copy().args([
            "--dest-compress-format",
            "zstd:chunked",
            &format!("oci:{}:{kind}", layout.display()),
            &format!("oci:{}:{theirs}", layout.display()),
        ]))
        .unwrap();
        let manifest = fixtures::layout_manifest(&layout, &theirs).unwrap();
        for (tar, layer) in fixtures::layer_tars(&layers)
            .unwrap()
            .iter()
            .zip(manifest["layers"].as_array().unwrap())
        {
            let blob = std::fs::read(fixtures::blob_path(
                &layout,
                layer["digest"].as_str().unwrap(),
            ))
            .unwrap();
            let annotations: BTreeMap<String, String> =
                serde_json::from_value(layer["annotations"].clone()).unwrap();
            let (ours, our_annotations) = fixtures::chunked(tar).unwrap();
            let ours = toc_entries(&ours, &our_annotations);
            let theirs = toc_entries(&blob, &annotations);
            assert_eq!(ours.len(), theirs.len(), "{kind}: TOC entry counts");
            for (a, b) in ours.iter().zip(&theirs) {
                assert_eq!(a, b, "{kind}: skiff's TOC entry vs containers/storage's");
                compared += 1;
            }
        }
    }
    assert!(compared > 1000, "compared {compared} entries");
}
