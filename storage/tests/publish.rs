//! Publishing gives the EROFS image that composefs-oci's own `finalize_oci_image` gives for
//! the same layers, keeps manifest and config bytes exactly, and tags last.

use std::sync::Arc;

use composefs::fsverity::{Algorithm, FsVerityHashValue, Sha256HashValue};
use composefs::repository::{Repository, RepositoryConfig};
use rustix::fs::CWD;
use skiff_storage::OciDigest;
use skiff_storage::digest::digest_of;
use skiff_storage::layer_import::split_layer;
use skiff_storage::publish::publish_image;

mod common;

fn layer(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_ustar();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    b.append_data(&mut dir, "usr/", &[][..]).unwrap();
    for (name, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn image(layers: &[Vec<u8>]) -> (Vec<u8>, Vec<u8>, Vec<OciDigest>) {
    let diff_ids: Vec<OciDigest> = layers.iter().map(|l| digest_of(l)).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>() },
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(&config).to_string(), "size": config.len() },
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest_of(l).to_string(), "size": l.len(),
        })).collect::<Vec<_>>(),
    }))
    .unwrap();
    (manifest, config, diff_ids)
}

#[tokio::test]
async fn same_erofs_as_composefs_oci() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ours");
    let store = common::store_at(&path);
    let layers = vec![
        layer(&[("usr/a", &[1u8; 5000][..]), ("usr/small", b"hi")]),
        layer(&[("usr/.wh.a", b""), ("usr/b", &[2u8; 9000][..])]),
    ];
    let (manifest, config, diff_ids) = image(&layers);

    let mut ours = Vec::new();
    for (tar, diff_id) in layers.iter().zip(&diff_ids) {
        let (verity, _) = split_layer(&store, diff_id, &tar[..])
            .await
            .unwrap()
            .register()
            .await
            .unwrap();
        ours.push((diff_id.clone(), verity));
    }
    let published = publish_image(&store, &manifest, &config, &ours, Some("img")).unwrap();
    assert_eq!(published.manifest_digest, digest_of(&manifest));
    let (stored_manifest, stored_config) = skiff_storage::images::raw_manifest_and_config(
        &store,
        &skiff_storage::images::StoredRef::Tag("img".into()),
    )
    .unwrap();
    assert_eq!(
        (stored_manifest, stored_config),
        (manifest.clone(), config.clone())
    );

    let (theirs, _) = Repository::<Sha256HashValue>::init_path(
        CWD,
        dir.path().join("theirs"),
        RepositoryConfig::new(Algorithm::SHA256).set_insecure(),
    )
    .unwrap();
    let theirs = Arc::new(theirs);
    let mut their_layers = Vec::new();
    for (tar, diff_id) in layers.iter().zip(&diff_ids) {
        let (verity, _) = composefs_oci::import_layer(&theirs, diff_id, None, &tar[..])
            .await
            .unwrap();
        their_layers.push((diff_id.clone(), verity));
    }
    composefs_oci::layer_sync::finalize_oci_image(
        &theirs,
        &manifest,
        &config,
        &their_layers,
        Some("img"),
        None,
    )
    .unwrap();
    let their_erofs = composefs_oci::composefs_erofs_for_manifest(
        &theirs,
        &digest_of(&manifest),
        None,
        theirs.erofs_version(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(published.erofs.to_hex(), their_erofs.to_hex());

    // Publishing again is idempotent.
    let again = publish_image(&store, &manifest, &config, &ours, Some("img2")).unwrap();
    assert_eq!(again.erofs.to_hex(), published.erofs.to_hex());
}
