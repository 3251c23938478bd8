//! A stored image made ready to leave the store: its config, and for each layer the blob it
//! came with (kept, see [`skiff_storage::kept_blobs`]) or, where that is not held, one made
//! again from the stored tar ([`super::compress`]). With every blob kept, the manifest is the
//! stored one, byte for byte, and so is its digest; otherwise the regenerated layers' entries
//! (media type, digest, size, annotations of the old blob) are replaced in a new manifest.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use composefs_oci::oci_image::OciImage;
use fn_error_context::context;
use skiff_storage::digest::HashingReader;
use skiff_storage::images::{StoredRef, open_image};
use skiff_storage::kept_blobs::open_kept_blob;
use skiff_storage::{FsVerityHashValue, OciDigest, Store};

use super::compress::{DestCompression, Regenerated, regenerate};
use crate::format::media::MANIFEST_MEDIA_TYPE;

/// Annotation prefixes that describe a compressed blob's inside (zstd:chunked, eStargz): wrong
/// for a blob compressed again.
const BLOB_ANNOTATION_PREFIXES: [&str; 2] = [
    "io.github.containers.zstd-chunked.",
    "containerd.io/snapshot/stargz/",
];

/// Where a blob's bytes come from.
#[derive(Debug)]
pub(crate) enum OutData {
    /// Small blobs (the config): in memory, read from the store and checked by composefs-oci.
    Memory(Vec<u8>),
    /// A kept original blob, checked against its digest as it is read.
    Kept(File),
    /// A blob made again, in a temporary file.
    Regenerated(tempfile::NamedTempFile),
}

/// One blob to send.
#[derive(Debug)]
pub(crate) struct OutBlob {
    pub(crate) digest: OciDigest,
    pub(crate) size: u64,
    pub(crate) data: OutData,
}

impl OutBlob {
    /// A reader of the blob's bytes. A kept blob's reader fails at its end when the bytes are
    /// not the digest's.
    pub(crate) fn reader(&self) -> Result<Box<dyn Read + Send>> {
        Ok(match &self.data {
            OutData::Memory(bytes) => Box::new(std::io::Cursor::new(bytes.clone())),
            OutData::Kept(file) => Box::new(Verified {
                inner: HashingReader::new(file.try_clone()?.take(self.size + 1)),
                digest: self.digest.clone(),
                size: self.size,
                checked: false,
            }),
            OutData::Regenerated(tmp) => Box::new(tmp.reopen()?),
        })
    }
}

/// Checks a kept blob against its digest and size at its end.
struct Verified<R> {
    inner: HashingReader<R>,
    digest: OciDigest,
    size: u64,
    /// The end was reached and checked.
    checked: bool,
}

impl<R: Read> Read for Verified<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.checked {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 || self.inner.count() > self.size {
            self.checked = true;
            let (count, actual) = (self.inner.count(), self.inner.finish());
            if count != self.size || actual != self.digest {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "the kept blob {} reads back as {count} bytes of digest {actual}: the \
                         store is damaged (see skiff fsck)",
                        self.digest
                    ),
                ));
            }
        }
        Ok(n)
    }
}

/// A stored image ready to be written out.
#[derive(Debug)]
pub(crate) struct Outgoing {
    /// The manifest to write: the stored bytes, or a new manifest when a layer was regenerated.
    pub(crate) manifest_json: Vec<u8>,
    pub(crate) manifest_digest: OciDigest,
    /// The manifest's media type.
    pub(crate) media_type: String,
    /// The digest of the stored manifest.
    pub(crate) stored_digest: OciDigest,
    pub(crate) config: OutBlob,
    /// The layers, in manifest order.
    pub(crate) layers: Vec<OutBlob>,
    /// How many layers were compressed again (their original blobs are not kept).
    pub(crate) regenerated: usize,
}

/// How to prepare an image.
#[derive(Debug, Clone)]
pub(crate) struct ExportOptions {
    /// How layers without a kept blob are compressed.
    pub(crate) compression: DestCompression,
    /// Refuse instead of writing a manifest of another digest.
    pub(crate) preserve_digests: bool,
    /// Layers compressed at once.
    pub(crate) jobs: usize,
}

/// Reads the stored image `image` and makes each of its blobs ready (blocking: it compresses
/// regenerated layers into temporary files in the directory `stage_dir` returns, asked for only
/// when a layer must be compressed again).
#[context("Preparing image {image} to leave the store")]
pub(crate) fn prepare<H: FsVerityHashValue>(
    store: &Store<H>,
    image: &StoredRef,
    options: &ExportOptions,
    stage_dir: &dyn Fn() -> Result<PathBuf>,
) -> Result<Outgoing> {
    let stored = open_image(store, image)?;
    let manifest_json = stored.read_manifest_json(store.repo())?;
    let config_json = stored.read_config_json(store.repo())?;
    let config_digest = stored.manifest().config().digest();
    // An insecure repository does not check objects on read: the config is small, hash it.
    anyhow::ensure!(
        skiff_storage::digest::digest_of(&config_json) == *config_digest,
        "the stored config reads back with another digest than {config_digest}: the store is \
         damaged (see skiff fsck)"
    );
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&manifest_json).context("the stored manifest is not JSON")?;
    let media_type = manifest["mediaType"]
        .as_str()
        .unwrap_or(MANIFEST_MEDIA_TYPE)
        .to_owned();
    let layers = layers_of(store, &stored)?;
    let missing: Vec<usize> = (0..layers.len())
        .filter(|&i| layers[i].kept.is_none())
        .collect();
    if options.preserve_digests && !missing.is_empty() {
        bail!(
            "--preserve-digests: the store does not keep the original blob of {} of the image's \
             {} layers (first: {}), so the copy would have another manifest digest (pull with \
             --keep-blobs to keep blobs)",
            missing.len(),
            layers.len(),
            layers[missing[0]].digest
        );
    }
    let docker = media_type.starts_with("application/vnd.docker.");
    if docker && !missing.is_empty() && options.compression.docker_media_type().is_none() {
        bail!(
            "a Docker schema 2 manifest cannot name {} layers (use --dest-compress-format gzip)",
            options.compression
        );
    }
    let regenerated = match missing.is_empty() {
        true => Vec::new(),
        false => regenerate_all(store, &layers, &missing, options, &stage_dir()?)?,
    };
    let mut out = Vec::with_capacity(layers.len());
    let mut regenerated = regenerated.into_iter();
    for (i, layer) in layers.into_iter().enumerate() {
        match layer.kept {
            Some((file, size)) => out.push(OutBlob {
                digest: layer.digest,
                size,
                data: OutData::Kept(file),
            }),
            None => {
                let blob = regenerated
                    .next()
                    .context("a regenerated layer is missing")?;
                let media = match docker {
                    false => options.compression.oci_media_type(),
                    true => options
                        .compression
                        .docker_media_type()
                        .context("no Docker media type")?,
                };
                replace_layer(&mut manifest["layers"][i], media, &blob)?;
                out.push(OutBlob {
                    digest: blob.digest,
                    size: blob.size,
                    data: OutData::Regenerated(blob.file),
                });
            }
        }
    }
    let manifest_json = if missing.is_empty() {
        manifest_json
    } else {
        serde_json::to_vec(&manifest)?
    };
    Ok(Outgoing {
        manifest_digest: skiff_storage::digest::digest_of(&manifest_json),
        stored_digest: stored.manifest_digest().clone(),
        manifest_json,
        media_type,
        config: OutBlob {
            digest: config_digest.clone(),
            size: config_json.len() as u64,
            data: OutData::Memory(config_json),
        },
        layers: out,
        regenerated: missing.len(),
    })
}

/// A layer of the stored image: its manifest digest, its DiffID and splitstream, its kept
/// blob if held.
struct StoredLayer<H> {
    digest: OciDigest,
    diff_id: OciDigest,
    stream: H,
    kept: Option<(File, u64)>,
}

fn layers_of<H: FsVerityHashValue>(
    store: &Store<H>,
    image: &OciImage<H>,
) -> Result<Vec<StoredLayer<H>>> {
    skiff_storage::images::image_layers(image)?
        .into_iter()
        .map(|layer| {
            let kept = open_kept_blob(store, &layer.digest)?
                .filter(|k| k.size == layer.size)
                .map(|k| (k.file, k.size));
            Ok(StoredLayer {
                digest: layer.digest,
                diff_id: layer.diff_id,
                stream: layer.stream,
                kept,
            })
        })
        .collect()
}

/// Compresses the layers at `indexes` again, `options.jobs` at once; returns them in order.
fn regenerate_all<H: FsVerityHashValue>(
    store: &Store<H>,
    layers: &[StoredLayer<H>],
    indexes: &[usize],
    options: &ExportOptions,
    dir: &Path,
) -> Result<Vec<Regenerated>> {
    let next = Mutex::new(0usize);
    // Set by the first failure: the other workers take no further layer.
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<Result<Regenerated>>>> =
        Mutex::new((0..indexes.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..options.jobs.clamp(1, indexes.len().max(1)) {
            scope.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let n = {
                        let mut next = next.lock().expect("poisoned");
                        let n = *next;
                        *next += 1;
                        n
                    };
                    let Some(&i) = indexes.get(n) else { break };
                    let layer = &layers[i];
                    let result = regenerate(
                        store,
                        &layer.diff_id,
                        &layer.stream,
                        options.compression,
                        dir,
                    );
                    if result.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    results.lock().expect("poisoned")[n] = Some(result);
                }
            });
        }
    });
    let results = results.into_inner().expect("poisoned");
    // The first failure, not a layer left undone because of it.
    if let Some(pos) = results.iter().position(|r| matches!(r, Some(Err(_)))) {
        return results
            .into_iter()
            .nth(pos)
            .flatten()
            .expect("a failure found")
            .map(|_| Vec::new());
    }
    results
        .into_iter()
        .map(|r| r.context("a layer was not compressed")?)
        .collect()
}

/// Points a manifest's layer entry at a regenerated blob.
fn replace_layer(
    entry: &mut serde_json::Value,
    media_type: &str,
    blob: &Regenerated,
) -> Result<()> {
    let entry = entry
        .as_object_mut()
        .context("a layer entry of the manifest is not an object")?;
    entry.insert("mediaType".into(), media_type.into());
    entry.insert("digest".into(), blob.digest.to_string().into());
    entry.insert("size".into(), blob.size.into());
    // Where the old blob could be fetched from: not this one.
    entry.remove("urls");
    if let Some(annotations) = entry.get_mut("annotations").and_then(|a| a.as_object_mut()) {
        annotations.retain(|k, _| !BLOB_ANNOTATION_PREFIXES.iter().any(|p| k.starts_with(p)));
        if annotations.is_empty() {
            entry.remove("annotations");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(data: &'static [u8], digest_of: &[u8], size: u64) -> Verified<&'static [u8]> {
        Verified {
            inner: HashingReader::new(data),
            digest: skiff_storage::digest::digest_of(digest_of),
            size,
            checked: false,
        }
    }

    #[test]
    fn a_kept_blob_is_read_only_when_its_bytes_are_its_digest() {
        let mut out = Vec::new();
        verified(b"blob", b"blob", 4).read_to_end(&mut out).unwrap();
        assert_eq!(out, b"blob");
        for mut bad in [
            verified(b"blub", b"blob", 4),
            verified(b"blob", b"blob", 3),
            verified(b"blo", b"blob", 4),
        ] {
            let e = bad.read_to_end(&mut Vec::new()).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
            assert!(e.to_string().contains("the store is damaged"), "{e}");
        }
    }

    #[test]
    fn a_regenerated_layer_loses_the_old_blobs_annotations_only() {
        let mut entry = serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+zstd",
            "digest": "sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "size": 1,
            "annotations": {
                "io.github.containers.zstd-chunked.manifest-checksum": "sha256:00",
                "org.example.kept": "yes",
            },
        });
        let blob = Regenerated {
            digest: skiff_storage::digest::digest_of(b"new"),
            size: 3,
            file: tempfile::NamedTempFile::new().unwrap(),
        };
        replace_layer(&mut entry, DestCompression::Gzip.oci_media_type(), &blob).unwrap();
        assert_eq!(
            entry,
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": blob.digest.to_string(),
                "size": 3,
                "annotations": { "org.example.kept": "yes" },
            })
        );
    }
}
