//! Layers imported as their blobs arrive, before any manifest names them.
//!
//! Clients push the layer blobs first and the config and manifest last, so a blob that looks
//! like a layer (gzip, zstd, or a tar header) is imported as soon as its upload checks against
//! its digest: kept whole, split into the store, named by the DiffID its tar hashes to, and
//! paired with that layer ([`skiff_storage::kept_blobs`]). The manifest `PUT` then waits for
//! the imports of the blobs it names, and the pull engine finds those layers stored and their
//! blobs paired, so the `PUT` only checks the config's DiffIDs against them, writes the EROFS
//! and tags. Whichever config names the blob is still checked: a DiffID that is not the one the
//! blob's bytes gave has the blob read again, and the image refused.
//!
//! An import that fails (the blob is no tar after all, or an artifact's) is forgotten: if a
//! manifest names the blob, its `PUT` imports it again and says why it fails. A layer imported
//! for a manifest that never comes is named by nothing and goes at the next garbage
//! collection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use containers_image_proxy::oci_spec::image::{Descriptor, MediaType};
use skiff_storage::{FsVerityHashValue, OciDigest, Store};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::{Semaphore, watch};

use crate::format::media::Compression;
use crate::pull::convert::full::keep_and_import_new_blob;

/// Offset of the `ustar` magic in a tar header block.
const TAR_MAGIC_OFFSET: usize = 257;

/// The imports running, by blob digest: each receiver turns `true` when its import ended,
/// however it ended, and leaves the map then.
#[derive(Debug)]
pub(crate) struct Arrivals {
    running: Arc<Mutex<HashMap<OciDigest, watch::Receiver<bool>>>>,
    /// Imports at once: each takes a core (decompression and hashing).
    permits: Arc<Semaphore>,
}

/// The layer media type a blob's first bytes suggest, if they suggest one.
fn layer_type(head: &[u8]) -> Option<MediaType> {
    match Compression::sniff(head) {
        Compression::Gzip => Some(MediaType::ImageLayerGzip),
        Compression::Zstd => Some(MediaType::ImageLayerZstd),
        Compression::None => head
            .get(TAR_MAGIC_OFFSET..TAR_MAGIC_OFFSET + 5)
            .filter(|magic| *magic == b"ustar")
            .map(|_| MediaType::ImageLayer),
    }
}

impl Arrivals {
    pub(crate) fn new(jobs: usize) -> Self {
        Self {
            running: Arc::new(Mutex::new(HashMap::new())),
            permits: Arc::new(Semaphore::new(jobs.max(1))),
        }
    }

    /// The blob `digest` of `size` bytes, staged at `path` and checked against its digest,
    /// has arrived: if it looks like a layer and is not being imported already, starts its
    /// import in the background.
    pub(crate) fn arrived<H: FsVerityHashValue>(
        &self,
        store: &Store<H>,
        digest: &OciDigest,
        path: std::path::PathBuf,
        size: u64,
    ) {
        let (done, watcher) = watch::channel(false);
        {
            let mut running = self.running.lock().expect("poisoned");
            if running.get(digest).is_some_and(|w| !*w.borrow()) {
                return;
            }
            running.insert(digest.clone(), watcher.clone());
        }
        let (store, digest, permits) = (store.clone(), digest.clone(), self.permits.clone());
        let running = self.running.clone();
        tokio::spawn(async move {
            let imported = async {
                let mut file = tokio::fs::File::open(&path).await?;
                let mut head = Vec::with_capacity(512);
                (&mut file).take(512).read_to_end(&mut head).await?;
                let Some(media_type) = layer_type(&head) else {
                    return anyhow::Ok(None);
                };
                let _permit = permits.acquire_owned().await?;
                file.rewind().await?;
                let descriptor = Descriptor::new(media_type, size, digest.clone());
                let pending = keep_and_import_new_blob(&store, file, &descriptor).await?;
                let diff_id = pending.diff_id().clone();
                pending.register().await?;
                Ok(Some(diff_id))
            };
            match imported.await {
                Ok(Some(diff_id)) => {
                    log::debug!("pushed blob {digest} imported as layer {diff_id}")
                }
                Ok(None) => {}
                Err(e) => log::debug!("pushed blob {digest} is not imported as a layer: {e:#}"),
            }
            let _ = done.send(true);
            // Ended: nothing to wait for any more (unless a later upload started another).
            let mut running = running.lock().expect("poisoned");
            if running
                .get(&digest)
                .is_some_and(|w| w.same_channel(&watcher))
            {
                running.remove(&digest);
            }
        });
    }

    /// Waits until the imports of `digests` started by [`Self::arrived`] have ended.
    pub(crate) async fn settled<'a>(&self, digests: impl IntoIterator<Item = &'a OciDigest>) {
        let watchers: Vec<_> = {
            let running = self.running.lock().expect("poisoned");
            digests
                .into_iter()
                .filter_map(|d| running.get(d).cloned())
                .collect()
        };
        for mut watcher in watchers {
            let _ = watcher.wait_for(|done| *done).await;
        }
    }

    /// Waits until every import started has ended (the server is stopping).
    pub(crate) async fn settle_all(&self) {
        let watchers: Vec<_> = self
            .running
            .lock()
            .expect("poisoned")
            .values()
            .cloned()
            .collect();
        for mut watcher in watchers {
            let _ = watcher.wait_for(|done| *done).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_looks_like_a_layer_is_imported_on_arrival() {
        assert_eq!(
            layer_type(&[0x1f, 0x8b, 8, 0]),
            Some(MediaType::ImageLayerGzip)
        );
        assert_eq!(
            layer_type(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Some(MediaType::ImageLayerZstd)
        );
        let mut tar = vec![0u8; 512];
        tar[TAR_MAGIC_OFFSET..TAR_MAGIC_OFFSET + 6].copy_from_slice(b"ustar\0");
        assert_eq!(layer_type(&tar), Some(MediaType::ImageLayer));
        // A config, a short blob, a header-sized block without the magic.
        assert_eq!(layer_type(br#"{"architecture":"amd64"}"#), None);
        assert_eq!(layer_type(b"ten bytes!"), None);
        assert_eq!(layer_type(&[0u8; 512]), None);
    }
}
