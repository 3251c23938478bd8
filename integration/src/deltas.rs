//! Tar-diff deltas made wrong on purpose: raw op streams, and edits of a delta written as an
//! OCI layout.

use std::path::Path;

use crate::fixtures;

/// A tar-diff made of raw ops: (kind, size, data).
pub fn tar_diff(v2: bool, ops: &[(u8, u64, &[u8])]) -> Vec<u8> {
    let mut stream = Vec::new();
    for (kind, size, data) in ops {
        stream.push(*kind);
        let mut v = *size;
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                stream.push(b);
                break;
            }
            stream.push(b | 0x80);
        }
        stream.extend_from_slice(data);
    }
    let mut out = if v2 {
        b"tardf2\n\0".to_vec()
    } else {
        b"tardf1\n\0".to_vec()
    };
    out.extend(zstd::encode_all(&stream[..], 3).unwrap());
    out
}

/// A delta (OCI layout `dir`, name `d`) whose manifest, or the blobs it names, `edit` changes.
pub fn edit_delta(dir: &Path, edit: impl FnOnce(&Path, &mut serde_json::Value)) {
    let index_path = dir.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures::blob_path(dir, &digest)).unwrap()).unwrap();
    edit(dir, &mut m);
    let bytes = serde_json::to_vec(&m).unwrap();
    let digest = fixtures::digest(&bytes);
    std::fs::write(fixtures::blob_path(dir, &digest), &bytes).unwrap();
    index["manifests"][0]["digest"] = digest.into();
    index["manifests"][0]["size"] = bytes.len().into();
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}

/// Replaces the delta's tar-diff blob by `blob`.
pub fn replace_tar_diff(dir: &Path, blob: Vec<u8>) {
    edit_delta(dir, |dir, m| {
        let digest = fixtures::digest(&blob);
        std::fs::write(fixtures::blob_path(dir, &digest), &blob).unwrap();
        for l in m["layers"].as_array_mut().unwrap() {
            if l["mediaType"] == "application/vnd.tar-diff" {
                l["digest"] = digest.clone().into();
                l["size"] = blob.len().into();
            }
        }
    });
}
