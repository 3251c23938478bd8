//! Layer import against composefs-oci's own importer: same tar, same objects.

use std::collections::HashSet;
use std::sync::Arc;

use composefs::fsverity::{FsVerityHashValue, Sha256HashValue};
use composefs::repository::{Repository, RepositoryConfig};
use rustix::fs::CWD;
use skiff_storage::content_index::ContentIndex;
use skiff_storage::digest::digest_of;
use skiff_storage::layer_import::{LayerError, split_layer, stored_layer};

mod common;
use common::store;

fn sample_tar(extra: Option<(&str, &[u8])>) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8], kind: tar::EntryType| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, name, data).unwrap();
    };
    add("usr/", b"", tar::EntryType::Directory);
    add("usr/small", b"tiny", tar::EntryType::Regular);
    add("usr/big", &vec![0xabu8; 300_000], tar::EntryType::Regular);
    add(
        "usr/other",
        &(0..100_000u32)
            .flat_map(|i| i.to_le_bytes())
            .collect::<Vec<_>>(),
        tar::EntryType::Regular,
    );
    add("usr/dup", &vec![0xabu8; 300_000], tar::EntryType::Regular);
    if let Some((name, data)) = extra {
        add(name, data, tar::EntryType::Regular);
    }
    b.into_inner().unwrap()
}

/// `len` bytes that do not repeat (xorshift), so that a file of them is many chunks of 64 KiB
/// on average.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A new store holding the layer of [`sample_tar`], registered: the store, the layer's DiffID
/// and its content index.
async fn store_with_sample_layer(
    dir: &std::path::Path,
) -> (
    skiff_storage::Store<Sha256HashValue>,
    skiff_storage::OciDigest,
    ContentIndex<Sha256HashValue>,
) {
    let store = store(dir);
    let tar = sample_tar(None);
    let diff_id = digest_of(&tar);
    split_layer(&store, &diff_id, &tar[..])
        .await
        .unwrap()
        .register()
        .await
        .unwrap();
    let index = ContentIndex::read_for_layer(store.repo(), &diff_id)
        .unwrap()
        .unwrap();
    (store, diff_id, index)
}

fn object_refs(repo: &Repository<Sha256HashValue>, layer: &Sha256HashValue) -> HashSet<String> {
    let mut r = repo.open_stream("", Some(layer), None).unwrap();
    let mut out = HashSet::new();
    r.get_object_refs(|id| {
        out.insert(id.to_hex());
    })
    .unwrap();
    out
}

fn cat(repo: &Repository<Sha256HashValue>, layer: &Sha256HashValue) -> Vec<u8> {
    let mut r = repo.open_stream("", Some(layer), None).unwrap();
    let mut out = Vec::new();
    r.cat(repo, &mut out).unwrap();
    out
}

#[tokio::test]
async fn same_tar_and_objects_as_composefs_oci() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let tar = sample_tar(None);
    let diff_id = digest_of(&tar);

    let pending = split_layer(&store, &diff_id, &tar[..]).await.unwrap();
    assert!(
        stored_layer(&store, &diff_id).unwrap().is_none(),
        "not named before register"
    );
    let (ours, stats) = pending.register().await.unwrap();
    assert_eq!(stats.tar_size, tar.len() as u64);
    assert_eq!(
        stats.objects_written, 2,
        "big and other; dup is deduplicated"
    );
    assert_eq!(stats.objects_reused, 1);
    assert_eq!(stored_layer(&store, &diff_id).unwrap(), Some(ours.clone()));
    assert_eq!(cat(store.repo(), &ours), tar);

    let theirs_path = dir.path().join("theirs");
    let (theirs, _) = Repository::<Sha256HashValue>::init_path(
        CWD,
        &theirs_path,
        RepositoryConfig::new(composefs::fsverity::Algorithm::SHA256).set_insecure(),
    )
    .unwrap();
    let theirs = Arc::new(theirs);
    let (their_layer, _) = composefs_oci::import_layer(&theirs, &diff_id, None, &tar[..])
        .await
        .unwrap();
    assert_eq!(
        object_refs(store.repo(), &ours),
        object_refs(&theirs, &their_layer)
    );
    assert_eq!(cat(&theirs, &their_layer), tar);

    let index = ContentIndex::<Sha256HashValue>::read_for_layer(store.repo(), &diff_id)
        .unwrap()
        .unwrap();
    assert_eq!(index.entries().len(), 2);
    let big = openssl::sha::sha256(&vec![0xabu8; 300_000]);
    let entry = index.lookup(&big).unwrap();
    assert_eq!(entry.size, 300_000);
    assert_eq!(
        store.repo().read_object(&entry.object).unwrap(),
        vec![0xabu8; 300_000]
    );
}

#[tokio::test]
async fn diff_id_mismatch_names_both_digests_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let tar = sample_tar(None);
    let wrong = digest_of(b"not this layer");
    let err = split_layer(&store, &wrong, &tar[..]).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        matches!(
            err.downcast_ref::<LayerError>(),
            Some(LayerError::DiffIdMismatch { .. })
        ),
        "{msg}"
    );
    assert!(
        msg.contains(&wrong.to_string()) && msg.contains(&digest_of(&tar).to_string()),
        "{msg}"
    );
    assert!(stored_layer(&store, &wrong).unwrap().is_none());
}

#[tokio::test]
async fn truncated_tar_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let tar = sample_tar(None);
    let cut = &tar[..2048 + 100];
    let err = split_layer(&store, &digest_of(cut), cut).await.unwrap_err();
    assert!(format!("{err:#}").contains("unexpected end"), "{err:#}");
}

/// A large file (cut into chunks on a thread beside its writer) that ends early fails the
/// import with the read error, and the layer is not stored.
#[tokio::test]
async fn a_large_file_cut_short_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let big = noise(3 << 20, 4);
    let tar = sample_tar(Some(("usr/large", &big)));
    let cut = &tar[..tar.len() - (2 << 20)];
    let diff_id = digest_of(cut);
    let err = split_layer(&store, &diff_id, cut).await.unwrap_err();
    assert!(format!("{err:#}").contains("unexpected end"), "{err:#}");
    assert!(stored_layer(&store, &diff_id).unwrap().is_none());
}

#[tokio::test]
async fn entries_leaving_the_root_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    // The tar crate refuses to write `..`, so patch the name in the header by hand.
    let mut tar = sample_tar(Some(("zz/escape", b"x")));
    let pos = tar.windows(9).position(|w| w == b"zz/escape").unwrap();
    tar[pos..pos + 9].copy_from_slice(b"../escape");
    // Fix the header checksum.
    let start = pos - pos % 512;
    let mut header = tar::Header::new_old();
    header
        .as_mut_bytes()
        .copy_from_slice(&tar[start..start + 512]);
    header.set_cksum();
    tar[start..start + 512].copy_from_slice(header.as_bytes());
    let err = split_layer(&store, &digest_of(&tar), &tar[..])
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("../escape") && msg.contains("leaves the image root"),
        "{msg}"
    );
}

#[tokio::test]
async fn data_after_the_archive_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    // Some record padding is fine (it counts in the DiffID)...
    let mut padded = sample_tar(None);
    padded.extend_from_slice(&[0u8; 10240]);
    let (_, stats) = split_layer(&store, &digest_of(&padded), &padded[..])
        .await
        .unwrap()
        .register()
        .await
        .unwrap();
    assert_eq!(stats.tar_size, padded.len() as u64);
    // ...a gigabyte of it is not held in memory.
    let mut hostile = sample_tar(None);
    hostile.extend(std::iter::repeat_n(0u8, 2 << 20));
    let err = split_layer(&store, &digest_of(&hostile), &hostile[..])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.downcast_ref::<LayerError>(),
            Some(LayerError::Malformed(_))
        ),
        "{err:#}"
    );
    assert!(
        format!("{err:#}").contains("after the end-of-archive"),
        "{err:#}"
    );
}

/// With an index of stored contents, files the store holds are not written again, and the
/// layer is the same as a plain import's (same objects, same tar back).
#[tokio::test]
async fn contents_found_in_the_index_are_not_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let first = sample_tar(None);
    let (_, _) = split_layer(&store, &digest_of(&first), &first[..])
        .await
        .unwrap()
        .register()
        .await
        .unwrap();
    // A second layer: the same files plus a new one.
    let second = sample_tar(Some(("usr/new", &vec![7u8; 5000])));
    let diff_id = digest_of(&second);
    let stored = Arc::new(skiff_storage::stored_files::StoredFiles::load(&store).unwrap());
    let (ours, stats) =
        skiff_storage::layer_import::split_layer_with_index(&store, &diff_id, &second[..], stored)
            .await
            .unwrap()
            .register()
            .await
            .unwrap();
    assert_eq!(stats.objects_written, 1, "only usr/new: {stats:?}");
    assert_eq!(stats.objects_reused, 3, "{stats:?}");
    assert_eq!(cat(store.repo(), &ours), second);

    let other = tempfile::tempdir().unwrap();
    let plain = self::store(other.path());
    let (theirs, _) = split_layer(&plain, &diff_id, &second[..])
        .await
        .unwrap()
        .register()
        .await
        .unwrap();
    assert_eq!(
        object_refs(store.repo(), &ours),
        object_refs(plain.repo(), &theirs)
    );
    // A wrong DiffID still fails.
    let stored = Arc::new(skiff_storage::stored_files::StoredFiles::load(&store).unwrap());
    let wrong = digest_of(b"not this");
    assert!(
        skiff_storage::layer_import::split_layer_with_index(&store, &wrong, &second[..], stored)
            .await
            .is_err()
    );
}

/// A hint must describe the file the tar has at that place: a hint out of step with the tar
/// (another offset or size), or a tar with more object-sized files than hints, fails the import
/// instead of storing an object for bytes it was not checked against.
#[tokio::test]
async fn hints_out_of_step_with_the_tar_are_refused() {
    use skiff_storage::layer_import::{ObjectHint, split_layer_with_hints};
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let tar = sample_tar(None);
    let diff_id = digest_of(&tar);
    // The object-sized files of the sample, where the tar crate put them.
    let mut files = Vec::new();
    let mut archive = tar::Archive::new(&tar[..]);
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        if entry.header().entry_type().is_file() && entry.size() > 64 {
            files.push((entry.raw_file_position(), entry.size()));
        }
    }
    assert_eq!(files.len(), 3);
    let run = |hints: Vec<ObjectHint<Sha256HashValue>>| {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        for h in hints {
            tx.send(h).unwrap();
        }
        drop(tx);
        let (store, tar, diff_id) = (store.clone(), tar.clone(), diff_id.clone());
        async move { split_layer_with_hints(&store, &diff_id, &tar[..], Some(rx)).await }
    };
    let hint = |(offset, size): (u64, u64)| ObjectHint {
        offset,
        size,
        object: None,
    };
    // In step: imports.
    assert!(run(files.iter().copied().map(hint).collect()).await.is_ok());
    // One offset wrong.
    let mut wrong: Vec<_> = files.iter().copied().map(hint).collect();
    wrong[1].offset += 512;
    let e = run(wrong).await.unwrap_err();
    assert!(format!("{e:#}").contains("layer's metadata says"), "{e:#}");
    // One hint missing.
    let e = run(files[..2].iter().copied().map(hint).collect())
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("no counterpart"), "{e:#}");
}

/// A hint may name the object without its content's sha256 (the containers-storage replay,
/// which has none): the import hashes the bytes as they pass, and the content index is the
/// one an import writing the objects itself records.
#[tokio::test]
async fn hinted_objects_without_a_digest_are_indexed_by_the_bytes_that_pass() {
    use skiff_storage::layer_import::{HintedObject, ObjectHint, split_layer_with_hints};
    let written = tempfile::tempdir().unwrap();
    let written = store(written.path());
    let tar = sample_tar(None);
    let diff_id = digest_of(&tar);
    split_layer(&written, &diff_id, &tar[..])
        .await
        .unwrap()
        .register()
        .await
        .unwrap();
    let expected = ContentIndex::read_for_layer(written.repo(), &diff_id)
        .unwrap()
        .unwrap();

    let hinted = tempfile::tempdir().unwrap();
    let hinted = store(hinted.path());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut archive = tar::Archive::new(&tar[..]);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if !entry.header().entry_type().is_file() || entry.size() <= 64 {
            continue;
        }
        let offset = entry.raw_file_position();
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
        let id = hinted.repo().ensure_object(&content).unwrap();
        tx.send(ObjectHint {
            offset,
            size: content.len() as u64,
            object: Some(HintedObject {
                id,
                sha256: None,
                chunks: Vec::new(),
            }),
        })
        .unwrap();
    }
    drop(tx);
    let (_, stats) = split_layer_with_hints(&hinted, &diff_id, &tar[..], Some(rx))
        .await
        .unwrap()
        .register()
        .await
        .unwrap();
    assert_eq!(stats.objects_written, 0, "{stats:?}");
    let index = ContentIndex::read_for_layer(hinted.repo(), &diff_id)
        .unwrap()
        .unwrap();
    assert_eq!(index.entries(), expected.entries());
}

/// Files of 1 MiB or more are cut into chunks on a thread beside their writer; files just
/// below are cut on the writer's own. Both must give the index what cutting the bytes in one
/// piece gives, and objects holding exactly those bytes.
#[tokio::test]
async fn large_files_are_indexed_like_small_ones_whichever_thread_cuts_them() {
    use skiff_storage::content_chunks::Chunker;

    let files = [
        ("usr/below", noise((1 << 20) - 1, 1)),
        ("usr/at", noise(1 << 20, 2)),
        ("usr/large", noise(5 << 20, 3)),
    ];
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in &files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let diff_id = digest_of(&tar);

    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let (layer, stats) = split_layer(&store, &diff_id, &tar[..])
        .await
        .unwrap()
        .register()
        .await
        .unwrap();
    assert_eq!(stats.objects_written, 3);
    assert_eq!(cat(store.repo(), &layer), tar);
    let index = ContentIndex::<Sha256HashValue>::read_for_layer(store.repo(), &diff_id)
        .unwrap()
        .unwrap();
    for (name, data) in &files {
        let mut chunker = Chunker::new();
        chunker.update(data);
        let (sha256, chunks) = chunker.finish();
        assert_eq!(sha256, openssl::sha::sha256(data), "{name}");
        let entry = index
            .lookup(&sha256)
            .unwrap_or_else(|| panic!("{name} indexed"));
        assert_eq!(entry.size, data.len() as u64, "{name}");
        assert!(chunks.len() > 4, "{name}: {} chunks", chunks.len());
        assert_eq!(
            entry.chunks,
            skiff_storage::content_index::IndexedChunk::of_file(&chunks),
            "{name}"
        );
        assert_eq!(&store.repo().read_object(&entry.object).unwrap(), data);
    }
}

/// A content index is an object now; indexes that earlier versions wrote inline in a
/// splitstream must still read, equal to the same index written now.
#[tokio::test]
async fn an_index_written_inline_by_an_earlier_version_still_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _, now) = store_with_sample_layer(dir.path()).await;
    let repo = store.repo();
    assert_eq!(now.entries().len(), 2);

    // The layer as an earlier version named it: its index inline.
    let mut old_index = repo
        .create_stream(skiff_storage::content_index::CONTENT_INDEX_CONTENT_TYPE)
        .unwrap();
    old_index.write_inline(&now.to_bytes());
    let old_index = old_index.done().unwrap();
    let old_diff_id = digest_of(b"not a real layer");
    let mut layer = repo
        .create_stream(composefs_oci::LAYER_CONTENT_TYPE)
        .unwrap();
    layer.add_named_stream_ref(
        skiff_storage::content_index::INLINE_CONTENT_INDEX_REF,
        &old_index,
    );
    layer.write_inline(b"layer bytes");
    repo.write_stream(layer, &composefs_oci::layer_content_id(&old_diff_id), None)
        .unwrap();
    let old = ContentIndex::<Sha256HashValue>::read_for_layer(repo, &old_diff_id)
        .unwrap()
        .unwrap();
    assert_eq!(old, now);
}

/// The index is an object that only a named reference of its layer names: garbage collection
/// must keep it as long as the layer, and take it with the layer.
#[tokio::test]
async fn an_index_lives_as_long_as_its_layer_through_garbage_collection() {
    let dir = tempfile::tempdir().unwrap();
    let (store, diff_id, before) = store_with_sample_layer(dir.path()).await;
    let repo = store.repo();
    let layer_name = composefs_oci::layer_content_id(&diff_id);
    repo.gc(&[layer_name.as_str()]).unwrap();
    let after = ContentIndex::<Sha256HashValue>::read_for_layer(repo, &diff_id)
        .unwrap()
        .expect("the index outlives a collection that keeps its layer");
    assert_eq!(after, before);

    let objects = || object_count(&dir.path().join("repo").join("objects"));
    assert!(objects() > 0);
    repo.gc(&[]).unwrap();
    assert_eq!(
        objects(),
        0,
        "a collection without the layer leaves nothing of it, index included"
    );
}

/// Files under `dir`, at any depth.
fn object_count(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                object_count(&e.path())
            } else {
                1
            }
        })
        .sum()
}
