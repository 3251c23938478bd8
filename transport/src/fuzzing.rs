//! Entry points for the `cargo fuzz` targets in `fuzz/` (feature `fuzzing`; not part of the
//! library's API).
//!
//! Each function takes the fuzzer's bytes, runs one parser of hostile input as skiff runs it,
//! and panics only when an invariant fails: a parser may refuse any input, but it must never
//! panic, hang or allocate without bound, and what it accepts must be consistent. The fuzz
//! targets call nothing else, so the modules behind them can move without touching `fuzz/`.
//!
//! Functions that need a repository make it in a temporary directory: [`layer_import`] one per
//! input, [`tar_diff`] one per process (its source image, described at [`TAR_DIFF_SOURCE`]).

use std::ffi::OsString;
use std::io::Write;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use skiff_storage::images::ImageTree;
use skiff_storage::{HashAlgorithm, InitOptions, OciDigest, Sha256HashValue, Store};

use crate::format::zstd_chunked::{self, Footer, TarSplit, Toc, toc};
use crate::pull::convert::source_files::SourceFiles;
use crate::source::registry::byteranges;

/// Blob size the TOC's ranges are checked against: large enough for every range a small input
/// can name to be tested both ways.
const TOC_BLOB_SIZE: u64 = 1 << 40;

/// Uncompressed size claimed for the raw input when it is decompressed as metadata.
const CLAIMED_METADATA_SIZE: u64 = 64 * 1024;

/// zstd:chunked TOC: the input as the TOC's JSON (parse and validation, then the TOC checked
/// against a tar-split made from its own entries, which must agree), as a compressed metadata
/// payload, and its last bytes as a footer.
pub fn zstd_chunked_toc(data: &[u8]) {
    let _ = zstd_chunked::decompress_metadata(data, CLAIMED_METADATA_SIZE);
    if data.len() >= zstd_chunked::FOOTER_SIZE {
        let _ = Footer::parse(&data[data.len() - zstd_chunked::FOOTER_SIZE..]);
    }
    let Ok(parsed) = Toc::parse(data, TOC_BLOB_SIZE) else {
        return;
    };
    for file in &parsed.files {
        let mut covered = 0;
        for chunk in &file.chunks {
            assert_eq!(
                chunk.offset, covered,
                "chunks of {:?} leave a gap",
                file.name
            );
            assert!(chunk.size > 0, "an empty chunk in {:?}", file.name);
            assert!(
                chunk.compressed.start <= chunk.compressed.end
                    && chunk.compressed.end <= TOC_BLOB_SIZE,
                "chunk frames of {:?} outside the blob",
                file.name
            );
            covered += chunk.size;
        }
        assert_eq!(
            covered, file.size,
            "chunks of {:?} do not cover it",
            file.name
        );
    }
    // The tar-split a faithful writer makes for these entries.
    let mut entries = Vec::new();
    for (entry, name) in parsed.tar_entries() {
        let name = name.expect("Toc::parse accepted an entry name it cannot clean");
        let size = if entry.kind == "reg" {
            entry.size as u64
        } else {
            0
        };
        entries.push(zstd_chunked::TarSplitEntry::File {
            name,
            size,
            crc64: (size > 0).then_some(0),
        });
    }
    let split = TarSplit { entries };
    if let Err(e) = toc::check_matches_tar_split(&parsed, &split) {
        panic!("an accepted TOC disagrees with its own tar-split: {e:#}");
    }
}

/// zstd:chunked tar-split: the input as decompressed tar-split JSON lines.
pub fn tar_split(data: &[u8]) {
    let Ok(split) = TarSplit::parse(data) else {
        return;
    };
    let total = split.entries.iter().try_fold(0u64, |sum, e| match e {
        zstd_chunked::TarSplitEntry::Segment(b) => sum.checked_add(b.len() as u64),
        zstd_chunked::TarSplitEntry::File { size, .. } => sum.checked_add(*size),
    });
    assert_eq!(split.tar_size(), total.unwrap_or(u64::MAX));
}

/// Files of the source image a tar-diff is applied to in [`tar_diff`]: path, content length
/// (the content is [`source_byte`] at each offset). Also a directory `usr/share/empty`, and a
/// symlink `link` to the large file, which a delta must not be able to open.
pub const TAR_DIFF_SOURCE: &[(&str, usize)] = &[("etc/hostname", 12), ("usr/share/data.bin", 8192)];

/// Byte `i` of every file of [`TAR_DIFF_SOURCE`].
pub fn source_byte(i: usize) -> u8 {
    (i * 7 % 251) as u8
}

/// Bytes a tar-diff may produce in [`tar_diff`] before it is stopped: bounds the time of an
/// input that copies the same source bytes over and over.
const MAX_TAR_DIFF_OUTPUT: u64 = 256 * 1024 * 1024;

/// The tar-diff op reader (the applier skiff uses, with skiff's source files): the input as a
/// tar-diff blob applied to the image of [`TAR_DIFF_SOURCE`].
pub fn tar_diff(data: &[u8]) {
    let (store, tree) = tar_diff_source();
    let mut files = SourceFiles::new(tree.clone(), store.clone());
    let mut out = BoundedSink(0);
    let _ = oci_delta::tar_patch_apply(data, &mut files, &mut out)
        .map_err(crate::pull::convert::delta::name_short_op);
}

/// A writer that discards, up to [`MAX_TAR_DIFF_OUTPUT`] bytes.
struct BoundedSink(u64);

impl Write for BoundedSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        if self.0 > MAX_TAR_DIFF_OUTPUT {
            return Err(std::io::Error::other(
                "the tar-diff output limit is reached",
            ));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

type SourceImage = (Store<Sha256HashValue>, Arc<ImageTree<Sha256HashValue>>);

fn tar_diff_source() -> &'static SourceImage {
    static SOURCE: OnceLock<(tempfile::TempDir, SourceImage)> = OnceLock::new();
    &SOURCE
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let store = new_store(dir.path());
            let mut b = tar::Builder::new(Vec::new());
            for (path, len) in TAR_DIFF_SOURCE {
                let data: Vec<u8> = (0..*len).map(source_byte).collect();
                let mut h = tar::Header::new_gnu();
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, &data[..]).expect("tar");
            }
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            b.append_data(&mut h, "usr/share/empty/", std::io::empty())
                .expect("tar");
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, "link", "usr/share/data.bin")
                .expect("tar");
            let tar = b.into_inner().expect("tar");
            let tree = import_and_publish(&store, &tar)
                .expect("the source image imports")
                .expect("the source image has a tree");
            (dir, (store, Arc::new(tree)))
        })
        .1
}

/// oci-delta manifests: the input as a delta manifest's JSON.
pub fn delta_manifest(data: &[u8]) {
    let is_delta = crate::format::oci_delta::is_delta(data);
    if let Ok(delta) = crate::format::oci_delta::DeltaManifest::parse(data) {
        assert!(
            is_delta,
            "a manifest parsed as a delta is not recognised as one"
        );
        for to in delta.layers_by_to.keys() {
            assert!(
                to.parse::<OciDigest>().is_ok(),
                "layer target {to:?} is no digest"
            );
        }
    }
}

/// Multipart byte ranges: the input's first line as a `Content-Type` (and a `Content-Range`),
/// the rest as the body. Every part must hold exactly the bytes its range names, and selecting
/// the parts' own ranges must give them back.
pub fn byteranges(data: &[u8]) {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let header = String::from_utf8_lossy(&data[..split]);
    let body = Bytes::copy_from_slice(data.get(split + 1..).unwrap_or_default());
    if let Ok(range) = byteranges::parse_content_range(&header) {
        assert!(range.start < range.end, "an empty range {range:?} accepted");
        assert_eq!(
            byteranges::parse_content_range(&format!("bytes {}-{}/*", range.start, range.end - 1))
                .ok(),
            Some(range)
        );
    }
    let boundary = match byteranges::multipart_boundary(&header) {
        Ok(Some(b)) => b,
        // Let the body be tried even when the header names none.
        _ => "B".to_owned(),
    };
    let Ok(parts) = byteranges::parse_multipart(&body, &boundary) else {
        return;
    };
    for (range, bytes) in &parts {
        assert_eq!(
            bytes.len() as u64,
            range.end - range.start,
            "part {range:?}"
        );
    }
    let wanted: Vec<_> = parts.iter().map(|(r, _)| r.clone()).collect();
    let selected = byteranges::select(&parts, &wanted).expect("the parts cover their ranges");
    for (got, (range, _)) in selected.iter().zip(&parts) {
        assert_eq!(got.len() as u64, range.end - range.start);
    }
}

/// Image references: the input as `TRANSPORT:REFERENCE`; one that parses must print as a
/// reference that parses back to the same value.
pub fn image_ref(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(parsed) = text.parse::<crate::reference::ImageRef>() else {
        return;
    };
    let shown = parsed.to_string();
    match shown.parse::<crate::reference::ImageRef>() {
        Ok(again) => assert_eq!(again, parsed, "{text:?} prints as {shown:?}"),
        Err(e) => panic!("{text:?} prints as {shown:?}, which does not parse: {e}"),
    }
}

/// The layer importer and tree builder: the input as an uncompressed layer tar (its DiffID
/// computed from it), imported into a new insecure repository and published as an image whose
/// tree is read back. Any step may fail; none may panic, and nothing may appear next to the
/// repository.
pub fn layer_import(data: &[u8]) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = new_store(&dir.path().join("repo"));
    // Refusing the tar is a valid outcome; what was accepted must read back.
    let _ = import_and_publish(&store, data);
    let names: Vec<OsString> = std::fs::read_dir(dir.path())
        .expect("the temporary directory")
        .map(|e| e.expect("a directory entry").file_name())
        .collect();
    assert_eq!(names, ["repo"], "the import wrote outside the repository");
}

/// A new sha256 repository at `path` (insecure where the filesystem has no fs-verity).
fn new_store(path: &std::path::Path) -> Store<Sha256HashValue> {
    let options = InitOptions {
        hash: HashAlgorithm::Sha256,
        ..Default::default()
    };
    skiff_storage::repository::init(path, options).expect("a new repository");
    Store::open_writable(path).expect("the new repository")
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// Imports the layer `tar`, publishes a one-layer image of it tagged `fuzz`, and reads its tree
/// back.
fn import_and_publish(
    store: &Store<Sha256HashValue>,
    tar: &[u8],
) -> anyhow::Result<Option<ImageTree<Sha256HashValue>>> {
    use skiff_storage::digest::digest_of;
    let diff_id = digest_of(tar);
    let (verity, stats) = runtime().block_on(async {
        let pending = skiff_storage::layer_import::split_layer(store, &diff_id, tar).await?;
        pending.register().await
    })?;
    assert_eq!(
        stats.tar_size,
        tar.len() as u64,
        "the import did not read the whole tar"
    );
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": [diff_id.to_string()] },
    }))?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": digest_of(&config).to_string(), "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar",
                     "digest": diff_id.to_string(), "size": tar.len() }],
    }))?;
    skiff_storage::publish::publish_image(
        store,
        &manifest,
        &config,
        &[(diff_id, verity)],
        Some("fuzz"),
    )?;
    ImageTree::load(store, "fuzz")
}
