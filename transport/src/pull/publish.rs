//! The last stage of a copy: the image (EROFS, config, manifest) stored once every layer is,
//! and the tag moved to it.

use anyhow::Result;
use skiff_storage::layer_import::stored_layer;
use skiff_storage::publish::publish_image;
use skiff_storage::tree_path::on_tree_stack;
use skiff_storage::{FsVerityHashValue, OciDigest, Store};

use super::events::{CopyEvent, Observer};

/// Stores the image (config, manifest, EROFS) once every layer of `diff_ids` is stored, and
/// moves `tag` to it.
pub(super) async fn publish<H: FsVerityHashValue>(
    store: &Store<H>,
    diff_ids: &[OciDigest],
    manifest_json: Vec<u8>,
    config_json: Vec<u8>,
    tag: &str,
    observer: &dyn Observer,
) -> Result<()> {
    let manifest_digest = skiff_storage::digest::digest_of(&manifest_json);
    let (store, diff_ids, tag_owned) = (store.clone(), diff_ids.to_vec(), tag.to_owned());
    tokio::task::spawn_blocking(move || {
        let layers: Vec<(OciDigest, H)> = diff_ids
            .into_iter()
            .map(|d| match stored_layer(&store, &d)? {
                Some(verity) => Ok((d, verity)),
                None => anyhow::bail!("layer {d} vanished from the store during the copy"),
            })
            .collect::<Result<_>>()?;
        // composefs recurses over the tree it builds and writes: a deep one needs a big stack.
        on_tree_stack(|| {
            publish_image(
                &store,
                &manifest_json,
                &config_json,
                &layers,
                Some(&tag_owned),
            )
        })?
    })
    .await??;
    observer.event(&CopyEvent::Published {
        manifest_digest: manifest_digest.to_string(),
        tag: tag.to_owned(),
    });
    Ok(())
}
