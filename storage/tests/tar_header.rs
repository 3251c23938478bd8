//! tar-core's reading of the headers Go reads differently (pinned, since a crate's behaviour is
//! part of skiff), skiff's reading of them, and the layers built from them: the splitstream
//! rebuilds the exact tar, the tree holds what Go extracts.

use std::os::unix::fs::FileExt;

use composefs::fsverity::Sha256HashValue;
use composefs::tree::{FileSystem, Inode, LeafContent, RegularFile};
use skiff_storage::Store;
use skiff_storage::digest::digest_of;
use skiff_storage::layer_import::split_layer;
use skiff_storage::publish::build_filesystem;
use skiff_storage::tar_header::{EntryHeader, HeaderEvent, HeaderReader, MAX_SPARSE_SIZE};
use tar_core::parse::{ParseError, ParseEvent, Parser};

mod common;
use common::store;

/// A header made with the tar crate, then given the ustar magic with GNU's version field.
fn header(name: &str, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(size);
    h.set_path(name).unwrap();
    h.set_cksum();
    h
}

fn with_gnu_version(mut h: tar::Header) -> tar::Header {
    h.as_mut_bytes()[263..265].copy_from_slice(b" \0");
    h.set_cksum();
    h
}

fn ext(kind: u8, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_path("././@LongLink").unwrap();
    h.set_size(data.len() as u64);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(512), 0);
    out
}

/// One PAX record.
fn rec(key: &str, value: &str) -> String {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while len.to_string().len() + body.len() != len {
        len += 1;
    }
    format!("{len}{body}")
}

fn pax(records: &str) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_path("PaxHeaders/x").unwrap();
    h.set_size(records.len() as u64);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(records.as_bytes());
    out.resize(out.len().next_multiple_of(512), 0);
    out
}

fn tar_of(parts: &[&[u8]]) -> Vec<u8> {
    let mut out: Vec<u8> = parts.concat();
    out.resize(out.len() + 1024, 0);
    out
}

/// The first entry, as skiff reads it.
fn ours(input: &[u8]) -> (usize, EntryHeader) {
    match HeaderReader::new().parse(input).unwrap() {
        HeaderEvent::Entry { consumed, header } => (consumed, header),
        other => panic!("{other:?}"),
    }
}

/// The first entry, as tar-core reads it: path, size, or the error.
fn tar_core(input: &[u8]) -> Result<(Vec<u8>, u64), ParseError> {
    match Parser::with_defaults().parse(input)? {
        ParseEvent::Entry { entry, .. } => Ok((entry.path.into_owned(), entry.size)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ustar_magic_with_gnu_version() {
    let mut h = header("file.txt", tar::EntryType::Regular, 0);
    h.as_ustar_mut().unwrap().prefix[..8].copy_from_slice(b"usr/deep");
    let tar = tar_of(&[with_gnu_version(h).as_bytes()]);
    assert_eq!(
        tar_core(&tar).unwrap().0,
        b"file.txt",
        "tar-core drops the prefix"
    );
    assert_eq!(ours(&tar).1.path, b"usr/deep/file.txt");
    // Its extension headers count too.
    let mut pax_header = pax(&rec("path", "usr/from-pax"));
    pax_header[263..265].copy_from_slice(b" \0");
    let mut fixed = tar::Header::from_byte_slice(&pax_header[..512]).clone();
    fixed.set_cksum();
    pax_header[..512].copy_from_slice(fixed.as_bytes());
    let h = with_gnu_version(header("short", tar::EntryType::Regular, 0));
    let tar = tar_of(&[&pax_header, h.as_bytes()]);
    assert_eq!(ours(&tar).1.path, b"usr/from-pax");
}

#[test]
fn repeated_extensions_the_last_wins() {
    let h = header("name", tar::EntryType::Regular, 3);
    let body = [h.as_bytes(), &b"abc"[..], &[0u8; 509]].concat();
    let tar = tar_of(&[
        &pax(&(rec("path", "first-pax") + &rec("uid", "7"))),
        &pax(&rec("path", "second-pax")),
        &body,
    ]);
    assert!(matches!(
        tar_core(&tar),
        Err(ParseError::DuplicatePaxHeader)
    ));
    let (consumed, e) = ours(&tar);
    assert_eq!(
        (e.path.as_slice(), e.uid, consumed),
        (&b"second-pax"[..], 0, 5 * 512)
    );
    let tar = tar_of(&[&ext(b'L', b"first\0"), &ext(b'L', b"second\0"), &body]);
    assert!(matches!(
        tar_core(&tar),
        Err(ParseError::DuplicateGnuLongName)
    ));
    assert_eq!(ours(&tar).1.path, b"second");
}

#[test]
fn long_name_ends_at_nul() {
    let h = header("name", tar::EntryType::Regular, 0);
    let tar = tar_of(&[&ext(b'L', b"usr/real\0junk\0"), h.as_bytes()]);
    assert_eq!(tar_core(&tar).unwrap().0, b"usr/real\0junk");
    assert_eq!(ours(&tar).1.path, b"usr/real");
    let mut l = header("link", tar::EntryType::Symlink, 0);
    l.set_link_name("x").unwrap();
    l.set_cksum();
    let tar = tar_of(&[&ext(b'K', b"target\0junk\0"), l.as_bytes()]);
    assert_eq!(ours(&tar).1.link_target.as_deref(), Some(&b"target"[..]));
}

#[test]
fn entries_without_data_ignore_their_size() {
    for kind in [
        tar::EntryType::Symlink,
        tar::EntryType::Link,
        tar::EntryType::Directory,
        tar::EntryType::Char,
        tar::EntryType::Block,
        tar::EntryType::Fifo,
    ] {
        let tar = tar_of(&[header("x", kind, 700).as_bytes()]);
        assert_eq!(tar_core(&tar).unwrap().1, 700, "tar-core reports the size");
        assert_eq!(ours(&tar).1.data_size, 0, "{kind:?}");
    }
    let tar = tar_of(&[header("x", tar::EntryType::Regular, 700).as_bytes()]);
    assert_eq!(ours(&tar).1.data_size, 700);
}

/// Imports `tar` as one layer and builds its tree; checks that the layer rebuilds `tar`.
async fn import(
    store: &Store<Sha256HashValue>,
    tar: &[u8],
) -> (FileSystem<Sha256HashValue>, Vec<Sha256HashValue>) {
    let diff_id = digest_of(tar);
    let (verity, _) = split_layer(store, &diff_id, tar)
        .await
        .unwrap()
        .register()
        .await
        .unwrap();
    let mut stream = store.repo().open_stream("", Some(&verity), None).unwrap();
    let mut rebuilt = Vec::new();
    stream.cat(store.repo(), &mut rebuilt).unwrap();
    assert!(rebuilt == tar, "the layer does not rebuild the tar");
    build_filesystem(store.repo(), &[(diff_id, verity)]).unwrap()
}

fn content(
    store: &Store<Sha256HashValue>,
    fs: &FileSystem<Sha256HashValue>,
    path: &str,
) -> Vec<u8> {
    let (dir, name) = fs.root.split(path.as_ref()).unwrap();
    let Some(Inode::Leaf(id, _)) = dir.lookup(name) else {
        panic!("{path} is not a file")
    };
    match &fs.leaf(*id).content {
        LeafContent::Regular(RegularFile::Inline(data)) => data.to_vec(),
        LeafContent::Regular(RegularFile::External(obj, _)) => {
            store.repo().read_object(obj).unwrap()
        }
        other => panic!("{path}: {other:?}"),
    }
}

#[tokio::test]
async fn sparse_files_hold_their_logical_content() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src/usr");
    std::fs::create_dir_all(&src).unwrap();
    // Holes are made by seeking: GNU tar finds them with SEEK_HOLE.
    let big = std::fs::File::create(src.join("big")).unwrap();
    big.set_len(300_000).unwrap();
    big.write_all_at(&[1u8; 100], 5000).unwrap();
    let tail: Vec<u8> = (0..49_000u32).map(|i| i as u8).collect();
    big.write_all_at(&tail, 150_000).unwrap();
    drop(big);
    let logical = std::fs::read(src.join("big")).unwrap();
    let store = store(dir.path());
    for args in [
        &["--format=gnu"][..],
        &["--format=pax", "--sparse-version=0.0"],
        &["--format=pax", "--sparse-version=0.1"],
        &["--format=pax", "--sparse-version=1.0"],
    ] {
        let archive = dir.path().join("layer.tar");
        let status = std::process::Command::new("tar")
            .args(args)
            .args(["--sparse", "-cf"])
            .arg(&archive)
            .arg("-C")
            .arg(dir.path().join("src"))
            .arg("usr")
            .status()
            .unwrap();
        assert!(status.success());
        let tar = std::fs::read(&archive).unwrap();
        let (fs, sparse) = import(&store, &tar).await;
        assert_eq!(content(&store, &fs, "/usr/big"), logical, "{args:?}");
        assert_eq!(
            sparse.len(),
            1,
            "{args:?}: one logical file written as an object"
        );
        assert!(
            tar.len() < 200_000,
            "{args:?}: GNU tar wrote no sparse entry"
        );
    }
    // A small sparse file (PAX 0.1, by hand) is held inline.
    let records = [
        rec("GNU.sparse.major", "0"),
        rec("GNU.sparse.minor", "1"),
        rec("GNU.sparse.name", "usr/small"),
        rec("GNU.sparse.realsize", "50"),
        rec("GNU.sparse.map", "10,4,40,0"),
    ]
    .concat();
    let h = header("usr/GNUSparseFile.0/small", tar::EntryType::Regular, 4);
    let tar = tar_of(&[
        &pax(&records),
        h.as_bytes(),
        &[&b"tiny"[..], &[0u8; 508]].concat(),
    ]);
    let (fs, sparse) = import(&store, &tar).await;
    let mut small = vec![0u8; 50];
    small[10..14].copy_from_slice(b"tiny");
    assert_eq!(content(&store, &fs, "/usr/small"), small);
    assert!(sparse.is_empty());
}

#[tokio::test]
async fn sparse_file_above_the_limit_is_refused() {
    let records = [
        rec("GNU.sparse.major", "1"),
        rec("GNU.sparse.minor", "0"),
        rec("GNU.sparse.name", "usr/x"),
        rec("GNU.sparse.realsize", &(MAX_SPARSE_SIZE + 1).to_string()),
    ]
    .concat();
    let h = header("usr/GNUSparseFile.0/x", tar::EntryType::Regular, 512);
    let map = [&b"1\n0\n0\n"[..], &[0u8; 506]].concat();
    let tar = tar_of(&[&pax(&records), h.as_bytes(), &map]);
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let err = split_layer(&store, &digest_of(&tar), &tar[..])
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("sparse file \"usr/x\": its logical size 68719476737 is above"),
        "{err:#}"
    );
}

#[tokio::test]
async fn missing_parents_are_created_as_containers_storage_does() {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = header("opt/app/bin/tool", tar::EntryType::Regular, 4);
    h.set_mode(0o755);
    h.set_cksum();
    b.append(&h, &b"tool"[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let (fs, _) = import(&store, &tar).await;
    for path in ["/opt", "/opt/app", "/opt/app/bin"] {
        let d = fs.root.get_directory(path.as_ref()).unwrap();
        assert_eq!(
            (
                d.stat.st_mode,
                d.stat.st_uid,
                d.stat.st_gid,
                d.stat.st_mtim_sec
            ),
            (0o755, 0, 0, 0),
            "{path}"
        );
    }
    assert_eq!(content(&store, &fs, "/opt/app/bin/tool"), b"tool");
    // A parent that is a file is an error that names it.
    let mut b = tar::Builder::new(Vec::new());
    b.append(&header("opt", tar::EntryType::Regular, 0), &b""[..])
        .unwrap();
    b.append(&header("opt/x", tar::EntryType::Regular, 0), &b""[..])
        .unwrap();
    let tar = b.into_inner().unwrap();
    let diff_id = digest_of(&tar);
    let (verity, _) = split_layer(&store, &diff_id, &tar[..])
        .await
        .unwrap()
        .register()
        .await
        .unwrap();
    let err = build_filesystem(store.repo(), &[(diff_id, verity)]).unwrap_err();
    assert!(
        format!("{err:#}").contains("\"opt\" is not a directory in the layers below"),
        "{err:#}"
    );
}
