//! Deterministic OCI images built from a description: layers of files, directories, links,
//! whiteouts, devices, xattrs; written as an OCI layout with uncompressed, gzip or zstd
//! layers. The same description always gives the same digests.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

/// Fixed timestamp of every entry (2024-01-01T00:00:00Z): fixtures must not depend on the clock.
pub const EPOCH: u64 = 1_704_067_200;

/// One entry of a layer.
#[derive(Debug, Clone)]
pub enum Node {
    /// A directory.
    Dir {
        /// Permission bits.
        mode: u32,
    },
    /// A regular file.
    File {
        /// Content.
        data: Vec<u8>,
        /// Permission bits.
        mode: u32,
        /// Owner.
        uid: u64,
        /// Group.
        gid: u64,
        /// Extended attributes (name, value).
        xattrs: Vec<(String, Vec<u8>)>,
    },
    /// A symbolic link.
    Symlink {
        /// What it points to.
        target: String,
    },
    /// A hard link to an earlier entry of the same layer.
    Hardlink {
        /// The earlier entry's name.
        target: String,
    },
    /// A character device.
    CharDev {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A fifo.
    Fifo,
    /// `.wh.NAME`: deletes NAME of lower layers.
    Whiteout,
    /// `DIR/.wh..wh..opq`: hides the lower layers' content of DIR.
    Opaque,
}

/// A plain file, 0644, owned by root.
pub fn file(data: impl Into<Vec<u8>>) -> Node {
    Node::File {
        data: data.into(),
        mode: 0o644,
        uid: 0,
        gid: 0,
        xattrs: Vec::new(),
    }
}

/// A directory, 0755.
pub fn dir() -> Node {
    Node::Dir { mode: 0o755 }
}

/// The entries of one layer, in tar order. Names are bytes: they need not be UTF-8.
#[derive(Debug, Clone, Default)]
pub struct Layer {
    /// (name, node) in tar order.
    pub entries: Vec<(Vec<u8>, Node)>,
}

impl Layer {
    /// Appends an entry.
    pub fn add(&mut self, name: impl AsRef<[u8]>, node: Node) -> &mut Self {
        self.entries.push((name.as_ref().to_vec(), node));
        self
    }
}

/// Layer compression of a written fixture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip (one member).
    Gzip,
    /// zstd (one frame).
    Zstd,
    /// zstd in many frames of 64 KiB input each, with a skippable frame between them, as
    /// zstd:chunked layers are laid out.
    ZstdFrames,
    /// zstd:chunked as containers/storage ≥ 1.54 writes it (skiff's writer), with its
    /// annotations.
    ZstdChunked,
}

impl Compression {
    fn media_type(self) -> &'static str {
        match self {
            Self::None => "application/vnd.oci.image.layer.v1.tar",
            Self::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Self::Zstd | Self::ZstdFrames | Self::ZstdChunked => {
                "application/vnd.oci.image.layer.v1.tar+zstd"
            }
        }
    }
}

/// Builds the uncompressed tar of a layer (PAX headers for long names, xattrs).
pub fn layer_tar(layer: &Layer) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    b.mode(tar::HeaderMode::Deterministic);
    for (name, node) in &layer.entries {
        let path = std::ffi::OsStr::from_encoded_bytes_unchecked_safe(name);
        let mut h = tar::Header::new_ustar();
        h.set_mtime(EPOCH);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(0);
        let (kind, mode, data): (tar::EntryType, u32, &[u8]) = match node {
            Node::Dir { mode } => (tar::EntryType::Directory, *mode, &[]),
            Node::File {
                data,
                mode,
                uid,
                gid,
                xattrs,
            } => {
                h.set_uid(*uid);
                h.set_gid(*gid);
                if !xattrs.is_empty() {
                    let pax: Vec<(String, &[u8])> = xattrs
                        .iter()
                        .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
                        .collect();
                    b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), *v)))?;
                }
                h.set_size(data.len() as u64);
                (tar::EntryType::Regular, *mode, data)
            }
            Node::Symlink { target } => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                b.append_link(&mut h, path, target)?;
                continue;
            }
            Node::Hardlink { target } => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                b.append_link(&mut h, path, target)?;
                continue;
            }
            Node::CharDev { major, minor } => {
                h.set_device_major(*major)?;
                h.set_device_minor(*minor)?;
                (tar::EntryType::Char, 0o666, &[])
            }
            Node::Fifo => (tar::EntryType::Fifo, 0o644, &[]),
            Node::Whiteout | Node::Opaque => (tar::EntryType::Regular, 0o644, &[]),
        };
        h.set_entry_type(kind);
        h.set_mode(mode);
        b.append_data(&mut h, path, data)
            .with_context(|| format!("tar entry {:?}", String::from_utf8_lossy(name)))?;
    }
    Ok(b.into_inner()?)
}

/// Helper trait: bytes to OsStr on Unix.
trait FromBytes {
    fn from_encoded_bytes_unchecked_safe(b: &[u8]) -> &std::ffi::OsStr;
}
impl FromBytes for std::ffi::OsStr {
    fn from_encoded_bytes_unchecked_safe(b: &[u8]) -> &std::ffi::OsStr {
        std::os::unix::ffi::OsStrExt::from_bytes(b)
    }
}

fn compress(tar: &[u8], compression: Compression) -> Result<Vec<u8>> {
    Ok(match compression {
        Compression::None => tar.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::GzBuilder::new()
                .mtime(0)
                .write(Vec::new(), flate2::Compression::fast());
            e.write_all(tar)?;
            e.finish()?
        }
        Compression::Zstd => zstd::encode_all(tar, 3)?,
        Compression::ZstdChunked => chunked(tar)?.0,
        Compression::ZstdFrames => {
            let mut out = Vec::new();
            for (i, chunk) in tar.chunks(64 * 1024).enumerate() {
                out.extend_from_slice(&zstd::encode_all(chunk, 3)?);
                // Skippable frame: magic 0x184D2A5?, little-endian length, payload.
                out.extend_from_slice(&(0x184D_2A50u32 + (i as u32 % 16)).to_le_bytes());
                out.extend_from_slice(&8u32.to_le_bytes());
                out.extend_from_slice(b"skippabl");
            }
            out
        }
    })
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(openssl::sha::sha256(data))
}

/// What [`write_oci_layout`] wrote.
#[derive(Debug, Clone)]
pub struct WrittenImage {
    /// `sha256:...` of the manifest.
    pub manifest_digest: String,
    /// `sha256:...` of the config.
    pub config_digest: String,
    /// The layers' DiffIDs.
    pub diff_ids: Vec<String>,
    /// Total uncompressed bytes of the layers.
    pub tar_bytes: u64,
}

fn write_blob(dir: &Path, data: &[u8]) -> Result<String> {
    let hex = sha256_hex(data);
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    std::fs::write(blobs.join(&hex), data)?;
    Ok(format!("sha256:{hex}"))
}

/// Writes an image made of `layers` into the OCI layout `dir` (created if needed), tagged
/// `tag`. An existing layout keeps its other images.
pub fn write_oci_layout(
    dir: &Path,
    tag: &str,
    layers: &[Layer],
    compression: Compression,
) -> Result<WrittenImage> {
    let mut blobs = Vec::new();
    let mut diff_ids = Vec::new();
    let mut tar_bytes = 0;
    for layer in layers {
        let tar = layer_tar(layer)?;
        tar_bytes += tar.len() as u64;
        diff_ids.push(format!("sha256:{}", sha256_hex(&tar)));
        let (blob, annotations) = match compression {
            Compression::ZstdChunked => chunked(&tar)?,
            other => (compress(&tar, other)?, Default::default()),
        };
        blobs.push((compression.media_type().to_owned(), blob, annotations));
    }
    let mut written = write_image_annotated(dir, tag, &blobs, &diff_ids, native_arch())?;
    written.tar_bytes = tar_bytes;
    Ok(written)
}

/// Writes an image from layer blobs as given (media type, bytes) and the DiffIDs the config
/// should claim: the building block for images that are wrong on purpose.
pub fn write_image_raw(
    dir: &Path,
    tag: &str,
    blobs: &[(String, Vec<u8>)],
    diff_ids: &[String],
    arch: &str,
) -> Result<WrittenImage> {
    let blobs: Vec<_> = blobs
        .iter()
        .map(|(m, b)| (m.clone(), b.clone(), Default::default()))
        .collect();
    write_image_annotated(dir, tag, &blobs, diff_ids, arch)
}

/// [`write_image_raw`] with annotations on the layer descriptors.
pub fn write_image_annotated(
    dir: &Path,
    tag: &str,
    blobs: &[(String, Vec<u8>, std::collections::BTreeMap<String, String>)],
    diff_ids: &[String],
    arch: &str,
) -> Result<WrittenImage> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut descriptors = Vec::new();
    for (media_type, blob, annotations) in blobs {
        let digest = write_blob(dir, blob)?;
        let mut d = json!({ "mediaType": media_type, "digest": digest, "size": blob.len() });
        if !annotations.is_empty() {
            d["annotations"] = json!(annotations);
        }
        descriptors.push(d);
    }
    let config = json!({
        "created": "2024-01-01T00:00:00Z",
        "architecture": arch,
        "os": "linux",
        "config": { "Env": ["PATH=/usr/bin"], "Labels": { "skiff.fixture": tag } },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": blobs.iter().map(|_| json!({ "created": "2024-01-01T00:00:00Z", "created_by": "skiff fixture" })).collect::<Vec<_>>(),
    });
    let config_bytes = serde_json::to_vec(&config)?;
    let config_digest = write_blob(dir, &config_bytes)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_bytes.len() },
        "layers": descriptors,
    });
    let manifest_bytes = serde_json::to_vec(&manifest)?;
    let manifest_digest = write_blob(dir, &manifest_bytes)?;
    add_to_index(
        dir,
        tag,
        json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_bytes.len(),
        }),
    )?;
    Ok(WrittenImage {
        manifest_digest,
        config_digest,
        diff_ids: diff_ids.to_vec(),
        tar_bytes: 0,
    })
}

/// Adds `descriptor` to the layout's index.json under the tag `tag` (replacing that tag).
pub fn add_to_index(dir: &Path, tag: &str, mut descriptor: serde_json::Value) -> Result<()> {
    let index_path = dir.join("index.json");
    let mut index: serde_json::Value = match std::fs::read(&index_path) {
        Ok(b) => serde_json::from_slice(&b)?,
        Err(_) => json!({ "schemaVersion": 2, "manifests": [] }),
    };
    let manifests = index["manifests"]
        .as_array_mut()
        .context("index.json without manifests")?;
    manifests.retain(|m| m["annotations"]["org.opencontainers.image.ref.name"] != tag);
    descriptor["annotations"] = json!({ "org.opencontainers.image.ref.name": tag });
    manifests.push(descriptor);
    std::fs::write(&index_path, serde_json::to_vec(&index)?)?;
    Ok(())
}

/// Writes a multi-platform image: one image per (arch, layers), joined by an image index
/// tagged `tag`.
pub fn write_multi_arch(dir: &Path, tag: &str, images: &[(&str, Vec<Layer>)]) -> Result<String> {
    let mut manifests = Vec::new();
    for (arch, layers) in images {
        let mut blobs = Vec::new();
        let mut diff_ids = Vec::new();
        for layer in layers {
            let tar = layer_tar(layer)?;
            diff_ids.push(format!("sha256:{}", sha256_hex(&tar)));
            blobs.push((
                Compression::Gzip.media_type().to_owned(),
                compress(&tar, Compression::Gzip)?,
            ));
        }
        let scratch_tag = format!("{tag}-{arch}");
        let written = write_image_raw(dir, &scratch_tag, &blobs, &diff_ids, arch)?;
        let size = std::fs::metadata(blob_path(dir, &written.manifest_digest))?.len();
        manifests.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": written.manifest_digest,
            "size": size,
            "platform": { "architecture": arch, "os": "linux" },
        }));
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))?;
    let digest = write_blob(dir, &index)?;
    add_to_index(
        dir,
        tag,
        json!({ "mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest, "size": index.len() }),
    )?;
    Ok(digest)
}

/// The manifest of the image tagged `tag` in the OCI layout `dir`.
pub fn layout_manifest(dir: &Path, tag: &str) -> Result<serde_json::Value> {
    let digest = layout_manifest_digest(dir, tag)?;
    Ok(serde_json::from_slice(&std::fs::read(blob_path(
        dir, &digest,
    ))?)?)
}

/// The manifest digest of the image `tag` of the OCI layout `dir`, as its index names it.
pub fn layout_manifest_digest(dir: &Path, tag: &str) -> Result<String> {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json"))?)?;
    let desc = index["manifests"]
        .as_array()
        .and_then(|m| {
            m.iter()
                .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
        })
        .with_context(|| format!("no image {tag} in {}", dir.display()))?;
    Ok(desc["digest"]
        .as_str()
        .context("descriptor without digest")?
        .to_owned())
}

/// Bytes of the layer blobs of the image tagged `tag` in the OCI layout `dir`.
pub fn layer_blob_bytes(dir: &Path, tag: &str) -> Result<u64> {
    Ok(layout_manifest(dir, tag)?["layers"]
        .as_array()
        .context("manifest without layers")?
        .iter()
        .filter_map(|l| l["size"].as_u64())
        .sum())
}

/// Where a blob of an OCI layout lives.
pub fn blob_path(dir: &Path, digest: &str) -> std::path::PathBuf {
    dir.join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// The uncompressed tars of `layers`.
pub fn layer_tars(layers: &[Layer]) -> Result<Vec<Vec<u8>>> {
    layers.iter().map(layer_tar).collect()
}

/// Compresses a tar as the fixtures do.
pub fn compress_tar(tar: &[u8], compression: Compression) -> Result<Vec<u8>> {
    compress(tar, compression)
}

/// The layer media type of a compression.
pub fn media_type(compression: Compression) -> &'static str {
    compression.media_type()
}

/// A tar compressed as zstd:chunked, and the layer annotations that locate its metadata.
pub fn chunked(tar: &[u8]) -> Result<(Vec<u8>, std::collections::BTreeMap<String, String>)> {
    use crate::zstd_chunked_writer as writer;
    let mut blob = Vec::new();
    let written = writer::write_zstd_chunked(tar, &mut blob, 3)?;
    Ok((blob, written.annotations))
}

/// sha256 digest (`sha256:hex`) of bytes.
pub fn digest(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

/// GOARCH of this machine.
pub fn native_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Deterministic pseudo-random bytes (xorshift64*), `len` long, from `seed`.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Text-like bytes (compressible), `len` long, from `seed`.
pub fn text(seed: u64, len: usize) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "lorem ",
        "ipsum ",
        "dolor ",
        "sit ",
        "amet ",
        "config\n",
        "value=",
        "true\n",
        "usr/lib ",
        "libc.so.6 ",
        "# comment\n",
        "path ",
        "0123456789 ",
        "skiff ",
        "composefs ",
        "layer\n",
    ];
    let picks = noise(seed, len / 4 + 1);
    let mut out = Vec::with_capacity(len + 16);
    for p in picks {
        if out.len() >= len {
            break;
        }
        out.extend_from_slice(WORDS[(p & 15) as usize].as_bytes());
    }
    out.truncate(len);
    out
}

/// Page size of [`page_database`].
pub const DB_PAGE: usize = 4096;

/// A database-like file of `pages` pages of [`DB_PAGE`] bytes, as a B-tree store lays them out:
/// each page a small header, then records of text, then free space of zeros (10 to 40% of
/// the page).
pub fn page_database(seed: u64, pages: usize) -> Vec<u8> {
    (0..pages)
        .flat_map(|n| database_page(seed, n as u64, 0))
        .collect()
}

/// One page of [`page_database`]: `generation` tells versions of the same page apart.
fn database_page(seed: u64, page: u64, generation: u64) -> Vec<u8> {
    let mix = seed ^ page.wrapping_mul(0x9E37_79B9) ^ generation.wrapping_mul(0x85EB_CA6B);
    let free = DB_PAGE * (10 + (noise(mix, 1)[0] as usize % 31)) / 100;
    let mut out = Vec::with_capacity(DB_PAGE);
    out.extend_from_slice(&page.to_le_bytes());
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend(text(mix, DB_PAGE - free - out.len()));
    out.resize(DB_PAGE, 0);
    out
}

/// `db` with `count` of its pages (chosen from `seed`, spread over the file) rewritten, as a
/// transaction that updates records in place leaves it.
pub fn rewrite_pages(db: &[u8], seed: u64, count: usize) -> Vec<u8> {
    let pages = db.len() / DB_PAGE;
    let mut out = db.to_vec();
    let picks = noise(seed ^ 0x5EED, count * 8);
    for pick in picks.chunks(8) {
        let page = u64::from_le_bytes(pick.try_into().expect("8 bytes")) % pages as u64;
        let at = page as usize * DB_PAGE;
        out[at..at + DB_PAGE].copy_from_slice(&database_page(seed, page, 1));
    }
    out
}

/// The feature-rich two-layer image: every kind of entry skiff must store faithfully.
pub fn rich_image() -> Vec<Layer> {
    let mut base = Layer::default();
    base.add("usr/", dir())
        .add("usr/bin/", dir())
        .add(
            "usr/bin/tool",
            Node::File {
                data: noise(1, 200_000),
                mode: 0o755,
                uid: 0,
                gid: 0,
                xattrs: vec![(
                    "security.capability".into(),
                    vec![
                        1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                    ],
                )],
            },
        )
        .add(
            "usr/bin/tool-link",
            Node::Hardlink {
                target: "usr/bin/tool".into(),
            },
        )
        .add("usr/lib/", dir())
        .add("usr/lib/libfoo.so.1", file(noise(2, 70_000)))
        .add(
            "usr/lib/libfoo.so",
            Node::Symlink {
                target: "libfoo.so.1".into(),
            },
        )
        .add(
            "usr/lib/abs-link",
            Node::Symlink {
                target: "/usr/lib/libfoo.so.1".into(),
            },
        )
        .add(
            "usr/lib/dangling",
            Node::Symlink {
                target: "/nonexistent/target".into(),
            },
        )
        .add("usr/share/", dir())
        .add("usr/share/small.txt", file("just a few bytes\n"))
        .add("usr/share/empty", file(Vec::new()))
        .add(
            "usr/share/owned",
            Node::File {
                data: text(3, 5000),
                mode: 0o600,
                uid: 1000,
                gid: 1000,
                xattrs: vec![("user.note".into(), b"hello".to_vec())],
            },
        )
        .add(format!("usr/share/{}", "n".repeat(150)), file(text(4, 300)))
        .add(b"usr/share/latin1-\xe9t\xe9".as_slice(), file(text(5, 100)))
        .add("etc/", dir())
        .add("etc/os-release", file("ID=skiff-fixture\nVERSION_ID=1\n"))
        .add("etc/old.conf", file(text(6, 4000)))
        .add("etc/conf.d/", dir())
        .add("etc/conf.d/a.conf", file(text(7, 3000)))
        .add("dev/", dir())
        .add("dev/null", Node::CharDev { major: 1, minor: 3 })
        .add("run/", dir())
        .add("run/fifo", Node::Fifo)
        .add("var/", dir())
        .add("var/cache/", dir())
        .add("var/cache/big.bin", file(noise(8, 1_500_000)));
    let mut top = Layer::default();
    top.add("etc/", dir())
        .add("etc/.wh.old.conf", Node::Whiteout)
        .add("etc/conf.d/", dir())
        .add("etc/conf.d/.wh..wh..opq", Node::Opaque)
        .add("etc/conf.d/b.conf", file(text(9, 2500)))
        .add("usr/", dir())
        .add("usr/bin/", dir())
        .add(
            "usr/bin/tool2",
            Node::Hardlink {
                target: "usr/share/small.txt".into(),
            },
        )
        .add("usr/share/", dir())
        .add("usr/share/small.txt", file("replaced in the upper layer\n"))
        .add("usr/share/dup-of-tool", file(noise(1, 200_000)))
        // A hard link to a file of the lower layer, from another directory.
        .add(
            "etc/lib-link",
            Node::Hardlink {
                target: "usr/lib/libfoo.so.1".into(),
            },
        );
    // A hard link to a file of the same layer (the tar crate writes what we ask).
    top.entries
        .retain(|(n, _)| n.as_slice() != b"usr/bin/tool2");
    top.add(
        "usr/bin/tool2",
        Node::Hardlink {
            target: "usr/share/small.txt".into(),
        },
    );
    vec![base, top]
}

/// Thousands of small files (`count`) in a few directories, each under 4 KiB.
pub fn many_files_image(count: usize) -> Vec<Layer> {
    let mut l = Layer::default();
    l.add("usr/", dir());
    for i in 0..count {
        if i % 500 == 0 {
            l.add(format!("usr/d{:02}/", i / 500), dir());
        }
        let size = 1 + (i * 37) % 4000;
        l.add(
            format!("usr/d{:02}/file-{i:05}", i / 500),
            file(text(i as u64, size)),
        );
    }
    vec![l]
}

/// One file over 64 MiB (composefs-rs and tar-diff treat large files differently).
pub fn big_file_image() -> Vec<Layer> {
    let mut l = Layer::default();
    l.add("usr/", dir())
        .add("usr/big.bin", file(noise(64, (64 << 20) + 12_345)));
    vec![l]
}

/// An image without `/usr`: one static binary, as scratch-based images are.
pub fn scratch_image() -> Vec<Layer> {
    let mut l = Layer::default();
    l.add(
        "app",
        Node::File {
            data: noise(42, 300_000),
            mode: 0o755,
            uid: 0,
            gid: 0,
            xattrs: Vec::new(),
        },
    );
    vec![l]
}

/// A large image: `files` files over `layers` layers, `bytes` uncompressed in total, half
/// text-like and half random, plus one file over 64 MiB when `bytes` allows.
pub fn large_image(layers: usize, files: usize, bytes: u64, seed: u64) -> Vec<Layer> {
    let mut out: Vec<Layer> = (0..layers).map(|_| Layer::default()).collect();
    let big = if bytes > 128 << 20 { 65 << 20 } else { 0 };
    let per_file = ((bytes - big) / files as u64).max(1) as usize;
    for l in &mut out {
        l.add("usr/", dir()).add("usr/share/", dir());
    }
    for i in 0..files {
        let layer = &mut out[i % layers];
        if i % 100 == 0 {
            layer.add(format!("usr/share/d{:03}/", i / 100), dir());
        }
        // Sizes vary around the mean (6 × 1/4 + 3 × 1 + 1 × 11/2 = 10 × 1): many small files,
        // a few large ones.
        let size = match i % 10 {
            0..=5 => per_file / 4,
            6..=8 => per_file,
            _ => per_file * 11 / 2,
        };
        let data = if i % 2 == 0 {
            text(seed ^ i as u64, size)
        } else {
            noise(seed ^ i as u64, size)
        };
        layer.add(format!("usr/share/d{:03}/f{i:05}", i / 100), file(data));
    }
    if big > 0 {
        out[0].add(
            "usr/share/huge.bin",
            file(noise(seed ^ 0xb16, big as usize)),
        );
    }
    out
}

/// A version pair for update scenarios: `v2` changes `changed_pct` percent of v1's files,
/// adds a few and deletes a few.
pub fn version_pair(files: usize, bytes: u64, changed_pct: usize) -> (Vec<Layer>, Vec<Layer>) {
    let v1 = large_image(4, files, bytes, 7);
    let mut v2 = v1.clone();
    let every = (100 / changed_pct.max(1)).max(1);
    let mut n = 0;
    for layer in &mut v2 {
        layer
            .entries
            .retain(|(name, _)| !name.ends_with(b"7") || !name.starts_with(b"usr/share/d000/"));
        for (name, node) in &mut layer.entries {
            if let Node::File { data, .. } = node {
                n += 1;
                if n % every == 0 {
                    // Change a few bytes in the middle: a realistic small edit.
                    let mid = data.len() / 2;
                    for b in data.iter_mut().skip(mid).take(64) {
                        *b = b.wrapping_add(1);
                    }
                    let _ = name;
                }
            }
        }
    }
    v2[0].add("usr/share/added/", dir());
    for i in 0..5 {
        v2[0].add(
            format!("usr/share/added/new{i}"),
            file(text(1000 + i, 20_000)),
        );
    }
    (v1, v2)
}

/// Fixtures by name, for the `skiff-fixtures` tool.
pub fn by_name(kind: &str) -> Result<Vec<Layer>> {
    Ok(match kind {
        "rich" => rich_image(),
        "scratch" => scratch_image(),
        "many" => many_files_image(5000),
        "big-file" => big_file_image(),
        // The benchmark image: 340 MB uncompressed, 6,000 files and one of 65 MiB.
        "large" => version_pair(6000, 320 << 20, 5).0,
        "large-v2" => version_pair(6000, 320 << 20, 5).1,
        // The demo pair: small enough to build and copy in seconds.
        "demo-v1" => version_pair(800, 24 << 20, 5).0,
        "demo-v2" => version_pair(800, 24 << 20, 5).1,
        other => anyhow::bail!(
            "unknown fixture {other} (rich, scratch, many, big-file, large, large-v2, demo-v1, demo-v2)"
        ),
    })
}

/// An image podman can run: a static busybox and files in a base layer, and a top layer that
/// replaces a file, deletes one (whiteout) and hides a directory's lower content (opaque).
/// (The rich fixture is not one: a hard link to a lower layer's file is beyond c/storage.)
pub fn runnable_image() -> Vec<Layer> {
    let busybox = std::fs::read(crate::tools::require("busybox")).unwrap();
    let mut base = Layer::default();
    base.add("bin/", dir())
        .add(
            "bin/busybox",
            Node::File {
                data: busybox,
                mode: 0o755,
                uid: 0,
                gid: 0,
                xattrs: Vec::new(),
            },
        )
        .add(
            "bin/sh",
            Node::Symlink {
                target: "busybox".into(),
            },
        )
        .add("usr/", dir())
        .add("usr/lib/", dir())
        .add("usr/lib/data.bin", file(noise(1, 200_000)))
        .add("etc/", dir())
        .add("etc/skiff-test", file("from the base layer\n"))
        .add("etc/gone.conf", file("deleted above\n"))
        .add("etc/conf.d/", dir())
        .add("etc/conf.d/a.conf", file("hidden above\n"));
    let mut top = Layer::default();
    top.add("etc/", dir())
        .add("etc/skiff-test", file("served from composefs storage\n"))
        .add("etc/.wh.gone.conf", Node::Whiteout)
        .add("etc/conf.d/", dir())
        .add("etc/conf.d/.wh..wh..opq", Node::Opaque)
        .add("etc/conf.d/b.conf", file("the only one\n"));
    vec![base, top]
}
