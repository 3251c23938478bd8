//! NEW, the image a delta rebuilds: its manifest and config, and where its layers are read
//! from (an OCI layout, which keeps the layer blobs, or a composefs repository, which keeps
//! only their tars).

use std::io::Read;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use containers_image_proxy::oci_spec::image::Descriptor;
use skiff_storage::images::{StoredRef, raw_manifest_and_config};
use skiff_storage::layer_import::stored_layer;
use skiff_storage::{FsVerityHashValue, Store};

use crate::format::media::Compression;
use crate::source::layout::LayoutSource;
use crate::source::{Resolved, ResolvedImage, parse_config, parse_manifest};

/// Where NEW's layers are read from.
pub(crate) trait NewLayers: Send + Sync {
    /// The layer's uncompressed tar (checked against its DiffID by the caller).
    fn tar(&self, layer: &Descriptor, diff_id: &str) -> Result<Box<dyn Read + Send>>;
    /// The layer blob the manifest names, if this source keeps it.
    fn blob(&self, layer: &Descriptor) -> Result<Option<Box<dyn Read + Send>>>;
}

impl NewLayers for LayoutSource {
    fn tar(&self, layer: &Descriptor, _diff_id: &str) -> Result<Box<dyn Read + Send>> {
        let mut blob = std::io::BufReader::with_capacity(128 * 1024, self.blob_reader(layer)?);
        let head = std::io::BufRead::fill_buf(&mut blob)?;
        let compression = Compression::sniff(head);
        Ok(crate::decompress::reader(compression, blob)?)
    }

    fn blob(&self, layer: &Descriptor) -> Result<Option<Box<dyn Read + Send>>> {
        Ok(Some(Box::new(self.blob_reader(layer)?.take(layer.size()))))
    }
}

/// NEW as a composefs repository holds it: layer tars rebuilt from their splitstreams; no
/// compressed blobs (a layer carried whole is recompressed with gzip, under a new digest, as
/// Go oci-delta does for containers-storage).
#[derive(Debug)]
pub(crate) struct StoredLayers<H: FsVerityHashValue> {
    /// The repository.
    pub(crate) store: Store<H>,
}

impl<H: FsVerityHashValue> NewLayers for StoredLayers<H> {
    fn tar(&self, _layer: &Descriptor, diff_id: &str) -> Result<Box<dyn Read + Send>> {
        let id = stored_layer(&self.store, &diff_id.parse()?)?
            .with_context(|| format!("layer {diff_id} is not in the repository"))?;
        let (reader, mut writer) = std::io::pipe()?;
        let store = self.store.clone();
        // A failure ends the tar early; the caller's DiffID check reports it.
        std::thread::spawn(move || {
            if let Err(e) = store.write_layer_tar(&id, &mut writer) {
                log::warn!("reading layer {id:?}: {e:#}");
            }
        });
        Ok(Box::new(reader))
    }

    fn blob(&self, _layer: &Descriptor) -> Result<Option<Box<dyn Read + Send>>> {
        Ok(None)
    }
}

/// The image a delta rebuilds, and where its layers are read from.
pub struct NewImage {
    /// Its manifest and config.
    pub(crate) image: ResolvedImage,
    /// Its layers.
    pub(crate) layers: Arc<dyn NewLayers>,
}

impl NewImage {
    /// NEW from an OCI layout.
    pub async fn from_layout(layout: LayoutSource) -> Result<Self> {
        match layout.resolve().await? {
            Resolved::Image(image) => Ok(Self {
                image: *image,
                layers: Arc::new(layout),
            }),
            Resolved::Delta(_) => bail!("NEW is a delta, not an image"),
        }
    }

    /// NEW from a composefs repository.
    pub fn from_store<H: FsVerityHashValue>(
        store: Store<H>,
        reference: &StoredRef,
    ) -> Result<Self> {
        let (manifest_json, config_json) = raw_manifest_and_config(&store, reference)?;
        let manifest = parse_manifest(&manifest_json, "NEW")?;
        let config = parse_config(&config_json, &manifest)?;
        Ok(Self {
            image: ResolvedImage {
                manifest_json,
                manifest,
                config_json,
                config,
            },
            layers: Arc::new(StoredLayers { store }),
        })
    }
}

impl std::fmt::Debug for NewImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewImage").finish_non_exhaustive()
    }
}
