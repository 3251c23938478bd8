//! Layers that Go's archive/tar (and so containers/storage) reads in its own way: each tar is
//! made here (bytes by hand, or GNU tar), extracted by GNU tar, and the tree `skiff copy`
//! stores is compared file by file with the extraction. What cfsctl 0.9.4 makes of the same
//! image is checked too, as the README states it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use skiff_integration::fixtures;
use skiff_integration::tools::{cfsctl, output, require, run, skiff};
use skiff_integration::tree::{Entry, Kind, Tree, makedev};

const TAR_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

/// ustar magic and version as GNU tar's POSIX mode writes them.
const USTAR: &[u8; 8] = b"ustar\x0000";
/// The ustar magic with GNU's version field: seen from some image builders.
const USTAR_GNU_VERSION: &[u8; 8] = b"ustar\x00 \x00";
/// GNU tar's own magic and version.
const GNU: &[u8; 8] = b"ustar  \x00";

fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    field[..digits].copy_from_slice(format!("{value:0digits$o}").as_bytes());
    field[digits] = 0;
}

/// One 512-byte header, by hand.
struct H {
    name: Vec<u8>,
    typeflag: u8,
    size: u64,
    magic: [u8; 8],
    prefix: Vec<u8>,
    link: Vec<u8>,
    mode: u64,
    dev: (u64, u64),
}

impl H {
    fn new(name: impl AsRef<[u8]>, typeflag: u8, size: u64) -> Self {
        Self {
            name: name.as_ref().to_vec(),
            typeflag,
            size,
            magic: *USTAR,
            prefix: Vec::new(),
            link: Vec::new(),
            mode: if typeflag == b'5' { 0o755 } else { 0o644 },
            dev: (0, 0),
        }
    }
    fn bytes(&self) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[..self.name.len()].copy_from_slice(&self.name);
        octal(&mut b[100..108], self.mode);
        octal(&mut b[108..116], 0);
        octal(&mut b[116..124], 0);
        octal(&mut b[124..136], self.size);
        octal(&mut b[136..148], 1_700_000_000);
        b[156] = self.typeflag;
        b[157..157 + self.link.len()].copy_from_slice(&self.link);
        b[257..265].copy_from_slice(&self.magic);
        octal(&mut b[329..337], self.dev.0);
        octal(&mut b[337..345], self.dev.1);
        b[345..345 + self.prefix.len()].copy_from_slice(&self.prefix);
        b[148..156].fill(b' ');
        let sum: u64 = b.iter().map(|&x| u64::from(x)).sum();
        b[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        b
    }
}

/// A tar being written by hand.
#[derive(Default)]
struct T(Vec<u8>);

impl T {
    /// A header and `data` (padded); `data` may be shorter than the header's size.
    fn put(&mut self, h: &H, data: &[u8]) -> &mut Self {
        self.0.extend_from_slice(&h.bytes());
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().next_multiple_of(512), 0);
        self
    }
    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.put(&H::new(name, b'0', data.len() as u64), data)
    }
    fn dir(&mut self, name: &str) -> &mut Self {
        self.put(&H::new(name, b'5', 0), b"")
    }
    /// A PAX extended header with these records.
    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut data = Vec::new();
        for (k, v) in records {
            let body = [b" ", k.as_bytes(), b"=", v, b"\n"].concat();
            let mut len = body.len() + 1;
            while len.to_string().len() + body.len() != len {
                len += 1;
            }
            data.extend_from_slice(len.to_string().as_bytes());
            data.extend_from_slice(&body);
        }
        self.put(&H::new("PaxHeaders/x", b'x', data.len() as u64), &data)
    }
    /// A GNU long-name (`L`) or long-link (`K`) header holding `data` as is.
    fn gnu_long(&mut self, typeflag: u8, data: &[u8]) -> &mut Self {
        let mut h = H::new("././@LongLink", typeflag, data.len() as u64);
        h.magic = *GNU;
        self.put(&h, data)
    }
    fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.0);
        out.resize(out.len() + 1024, 0);
        out
    }
}

/// The tree GNU tar extracts from `tar` (as root: owners kept), in the form of
/// [`Tree::from_stored_image`].
fn gnu_tar_tree(tar: &[u8], dir: &Path) -> Tree {
    std::fs::create_dir_all(dir).unwrap();
    let archive = dir.with_extension("tar");
    std::fs::write(&archive, tar).unwrap();
    run(Command::new(require("tar"))
        .args(["--same-owner", "--numeric-owner", "-xpf"])
        .arg(&archive)
        .arg("-C")
        .arg(dir))
    .unwrap();
    let mut tree = Tree::default();
    let mut inodes: HashMap<u64, BTreeSet<Vec<u8>>> = HashMap::new();
    walk_dir(dir, b"", &mut tree, &mut inodes);
    tree.hardlinks = inodes.into_values().filter(|g| g.len() > 1).collect();
    tree
}

fn walk_dir(
    dir: &Path,
    prefix: &[u8],
    tree: &mut Tree,
    inodes: &mut HashMap<u64, BTreeSet<Vec<u8>>>,
) {
    for item in std::fs::read_dir(dir).unwrap() {
        let item = item.unwrap();
        let path = [prefix, b"/", item.file_name().as_bytes()].concat();
        let meta = item.path().symlink_metadata().unwrap();
        let ft = meta.file_type();
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_dir() {
            walk_dir(&item.path(), &path, tree, inodes);
            Kind::Dir
        } else if ft.is_symlink() {
            let target = std::fs::read_link(item.path()).unwrap();
            Kind::Symlink(target.as_os_str().as_bytes().to_vec())
        } else if ft.is_file() {
            let data = std::fs::read(item.path()).unwrap();
            Kind::File(data.len() as u64, hex::encode(openssl::sha::sha256(&data)))
        } else if ft.is_char_device() {
            Kind::CharDev(meta.rdev())
        } else if ft.is_block_device() {
            Kind::BlockDev(meta.rdev())
        } else {
            Kind::Fifo
        };
        if !ft.is_dir() {
            inodes.entry(meta.ino()).or_default().insert(path.clone());
        }
        tree.entries.insert(
            path,
            Entry {
                kind,
                mode: meta.mode() & 0o7777,
                uid: meta.uid().into(),
                gid: meta.gid().into(),
                xattrs: BTreeMap::new(),
            },
        );
    }
}

/// One case: its layer, the tree GNU tar extracts, what skiff stores (the test fails unless it
/// equals GNU tar's) and what cfsctl 0.9.4 makes of the image.
struct Outcome {
    /// GNU tar's extraction.
    expected: Tree,
    /// cfsctl's pull: the tree it stored, or its error.
    cfsctl: Result<Tree, String>,
    /// `cfsctl oci compute-id` on skiff's copy: whether it equals skiff's EROFS, or its error.
    compute_id: Result<bool, String>,
}

/// The EROFS id of the image tagged `tag`.
fn erofs_id(repo: &Path, tag: &str) -> String {
    use composefs::fsverity::FsVerityHashValue;
    let repo =
        composefs::repository::Repository::<composefs::fsverity::Sha512HashValue>::open_path(
            rustix::fs::CWD,
            repo,
        )
        .unwrap();
    let image = composefs_oci::oci_image::OciImage::open_ref(&repo, tag).unwrap();
    image.image_ref(repo.erofs_version()).unwrap().to_hex()
}

fn check(name: &str, tar: &[u8]) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let expected = gnu_tar_tree(tar, &dir.path().join("extracted"));
    let layout = dir.path().join("layout");
    fixtures::write_image_raw(
        &layout,
        name,
        &[(TAR_MEDIA_TYPE.to_owned(), tar.to_vec())],
        &[fixtures::digest(tar)],
        fixtures::native_arch(),
    )
    .unwrap();
    let source = format!("oci:{}:{name}", layout.display());
    let repo = dir.path().join("repo");
    run(skiff()
        .arg("copy")
        .arg(&source)
        .arg(format!("composefs:{}:{name}", repo.display())))
    .unwrap();
    let mut expected = expected;
    without_symlink_modes(&mut expected);
    // Garbage collection keeps everything the image needs (a sparse file's logical object too).
    run(skiff().arg("gc").arg(&repo)).unwrap();
    let mut ours = Tree::from_stored_image(&repo, name).unwrap();
    without_symlink_modes(&mut ours);
    ours.assert_same(&expected, name);
    run(skiff().arg("fsck").arg(&repo)).unwrap();
    run(cfsctl(&repo).args(["oci", "fsck"])).unwrap();
    let id = output(cfsctl(&repo).args(["oci", "compute-id", name])).unwrap();
    let compute_id = if id.status.success() {
        Ok(String::from_utf8_lossy(&id.stdout).trim() == erofs_id(&repo, name))
    } else {
        Err(String::from_utf8_lossy(&id.stderr).into_owned())
    };
    // The layer still rebuilds the exact tar (its DiffID).
    let diff_id = fixtures::digest(tar);
    let cat = output(cfsctl(&repo).args(["cat", &format!("oci-layer-{diff_id}")])).unwrap();
    assert!(
        cat.status.success(),
        "{}",
        String::from_utf8_lossy(&cat.stderr)
    );
    assert!(cat.stdout == tar, "{name}: the stored layer is not the tar");

    let theirs = dir.path().join("cfsctl-repo");
    run(Command::new(require("cfsctl"))
        .arg("init")
        .arg("--insecure")
        .arg(&theirs))
    .unwrap();
    let pulled = output(cfsctl(&theirs).args(["oci", "pull", &source, name])).unwrap();
    let cfsctl = if pulled.status.success() {
        Tree::from_stored_image(&theirs, name)
            .map(|mut tree| {
                without_symlink_modes(&mut tree);
                tree
            })
            .map_err(|e| e.to_string())
    } else {
        Err(String::from_utf8_lossy(&pulled.stderr).into_owned())
    };
    eprintln!(
        "{name}: cfsctl pull: {}; cfsctl compute-id on skiff's copy: {:?}",
        match &cfsctl {
            Ok(t) if *t == expected => "same tree".to_owned(),
            Ok(_) => "a different tree".to_owned(),
            Err(e) => format!("failed: {}", first_error_line(e)),
        },
        compute_id
    );
    Outcome {
        expected,
        cfsctl,
        compute_id,
    }
}

/// Linux gives every symlink mode 0777 whatever the tar says: not compared.
fn without_symlink_modes(tree: &mut Tree) {
    for e in tree.entries.values_mut() {
        if matches!(e.kind, Kind::Symlink(_)) {
            e.mode = 0;
        }
    }
}

fn first_error_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| l.starts_with("Error"))
        .unwrap_or(stderr)
}

fn file_kind(data: &[u8]) -> Kind {
    Kind::File(data.len() as u64, hex::encode(openssl::sha::sha256(data)))
}

#[test]
fn ustar_magic_with_gnu_version_uses_the_prefix() {
    let big = fixtures::noise(1, 3000);
    let mut t = T::default();
    t.dir("usr/");
    for (dir, name, data) in [
        ("usr/share/deep", "small.txt", &b"tiny"[..]),
        ("usr/share/deep", "big.bin", &big[..]),
    ] {
        let mut h = H::new(name, b'0', data.len() as u64);
        h.magic = *USTAR_GNU_VERSION;
        h.prefix = dir.as_bytes().to_vec();
        t.put(&h, data);
    }
    let tar = t.finish();
    let out = check("prefix", &tar);
    assert_eq!(
        out.expected.entries[&b"/usr/share/deep/big.bin".to_vec()].kind,
        file_kind(&big)
    );
    // cfsctl stores the files at the top, without their directory.
    let theirs = out.cfsctl.unwrap();
    assert!(
        theirs.entries.contains_key(b"/big.bin".as_slice()),
        "{theirs:?}"
    );
    assert_eq!(out.compute_id, Ok(false));
}

#[test]
fn missing_parent_directories_are_created() {
    let mut t = T::default();
    t.dir("usr/")
        .file("opt/app/bin/tool", &fixtures::noise(2, 500))
        .file("usr/lib/deep/x/lib.so", b"elf");
    let tar = t.finish();
    let out = check("parents", &tar);
    for dir in ["/opt", "/opt/app", "/opt/app/bin", "/usr/lib/deep/x"] {
        let e = &out.expected.entries[dir.as_bytes()];
        assert_eq!((e.mode, e.uid, e.gid), (0o755, 0, 0), "{dir}");
    }
    assert!(out.cfsctl.is_err(), "cfsctl pulled it");
    assert!(out.compute_id.is_err());
}

/// A file with data regions and holes, archived by GNU tar in each sparse format.
#[test]
fn sparse_files_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("usr")).unwrap();
    let f = std::fs::File::create(src.join("usr/sparse.img")).unwrap();
    f.set_len(3 << 20).unwrap();
    f.write_all_at(b"hello", 100_000).unwrap();
    f.write_all_at(&fixtures::noise(3, 70_000), 1 << 20)
        .unwrap();
    f.write_all_at(b"end", (3 << 20) - 3).unwrap();
    drop(f);
    let f = std::fs::File::create(src.join("usr/tail-hole")).unwrap();
    f.write_all_at(b"data then a hole", 0).unwrap();
    f.set_len(1 << 20).unwrap();
    drop(f);
    for (format, args) in [
        ("gnu", &["--format=gnu"][..]),
        ("pax-0.0", &["--format=pax", "--sparse-version=0.0"]),
        ("pax-0.1", &["--format=pax", "--sparse-version=0.1"]),
        ("pax-1.0", &["--format=pax", "--sparse-version=1.0"]),
    ] {
        let archive = dir.path().join(format!("{format}.tar"));
        run(Command::new(require("tar"))
            .args(args)
            .args(["--sparse", "--numeric-owner", "-cf"])
            .arg(&archive)
            .arg("-C")
            .arg(&src)
            .arg("usr"))
        .unwrap();
        let tar = std::fs::read(&archive).unwrap();
        assert!(
            tar.len() < 1 << 20,
            "{format}: GNU tar wrote no sparse entry"
        );
        let out = check(format, &tar);
        assert_eq!(
            out.expected.entries[&b"/usr/sparse.img".to_vec()].kind,
            file_kind(&std::fs::read(src.join("usr/sparse.img")).unwrap())
        );
        assert!(out.cfsctl.is_err(), "{format}: cfsctl pulled it");
        assert!(out.compute_id.is_err());
    }
}

#[test]
fn repeated_extension_headers_the_last_wins() {
    let mut t = T::default();
    t.dir("usr/")
        .pax(&[("path", b"usr/first-pax"), ("uid", b"7")])
        .pax(&[("path", b"usr/second-pax")])
        .file("ignored-name", b"pax")
        .gnu_long(b'L', b"usr/first-long-name\0")
        .gnu_long(b'L', b"usr/second-long-name\0")
        .file("ignored-too", b"long")
        .gnu_long(b'L', b"usr/name-ends-at-nul\0garbage after\0")
        .file("ignored-also", b"nul");
    let mut link = H::new("usr/link", b'2', 0);
    link.link = b"ignored-target".to_vec();
    t.gnu_long(b'K', b"first-target\0")
        .gnu_long(b'K', b"usr/second-target\0")
        .put(&link, b"");
    let tar = t.finish();
    let out = check("repeated", &tar);
    let names: Vec<_> = out.expected.entries.keys().cloned().collect();
    for want in [
        &b"/usr/second-pax"[..],
        b"/usr/second-long-name",
        b"/usr/name-ends-at-nul",
        b"/usr/link",
    ] {
        assert!(names.contains(&want.to_vec()), "GNU tar: {names:?}");
    }
    assert_eq!(out.expected.entries[&b"/usr/second-pax".to_vec()].uid, 0);
    assert_eq!(
        out.expected.entries[&b"/usr/link".to_vec()].kind,
        Kind::Symlink(b"usr/second-target".to_vec())
    );
    assert!(out.cfsctl.is_err(), "cfsctl pulled it");
    assert!(out.compute_id.is_err());
}

#[test]
fn sizes_of_entries_without_data_are_ignored() {
    let mut t = T::default();
    t.dir("usr/").file("usr/target", b"the target");
    let mut symlink = H::new("usr/symlink", b'2', 100);
    symlink.link = b"target".to_vec();
    let mut hardlink = H::new("usr/hardlink", b'1', 10);
    hardlink.link = b"usr/target".to_vec();
    let mut dir = H::new("usr/dir/", b'5', 5000);
    dir.mode = 0o700;
    let mut fifo = H::new("usr/fifo", b'6', 1);
    fifo.mode = 0o600;
    let mut chr = H::new("usr/null", b'3', 600);
    chr.dev = (1, 3);
    for h in [&symlink, &hardlink, &dir, &fifo, &chr] {
        t.put(h, b"");
    }
    t.file("usr/after", b"still read");
    let tar = t.finish();
    let out = check("sizes", &tar);
    assert_eq!(
        out.expected.entries[&b"/usr/null".to_vec()].kind,
        Kind::CharDev(makedev(1, 3))
    );
    assert_eq!(
        out.expected.entries[&b"/usr/after".to_vec()].kind,
        file_kind(b"still read")
    );
    assert!(out.cfsctl.is_err(), "cfsctl pulled it");
    assert!(out.compute_id.is_err());
}

/// A sparse map that does not add up is refused with a clear error, and nothing is tagged.
#[test]
fn inconsistent_sparse_map_is_refused() {
    let mut t = T::default();
    t.dir("usr/")
        .pax(&[
            ("GNU.sparse.major", b"0"),
            ("GNU.sparse.minor", b"1"),
            ("GNU.sparse.name", b"usr/bad"),
            ("GNU.sparse.realsize", b"4096"),
            ("GNU.sparse.map", b"0,10,5,10"),
        ])
        .file("usr/GNUSparseFile.0/bad", &[7u8; 20]);
    let tar = t.finish();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    fixtures::write_image_raw(
        &layout,
        "bad",
        &[(TAR_MEDIA_TYPE.to_owned(), tar.clone())],
        &[fixtures::digest(&tar)],
        fixtures::native_arch(),
    )
    .unwrap();
    let repo = dir.path().join("repo");
    let out = output(
        skiff()
            .arg("copy")
            .arg(format!("oci:{}:bad", layout.display()))
            .arg(format!("composefs:{}:bad", repo.display())),
    )
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("sparse file \"usr/bad\": its regions overlap or are out of order"),
        "{err}"
    );
    assert!(!repo.join("streams/refs/oci/bad").exists());
    run(skiff().arg("fsck").arg(&repo)).unwrap();
    run(cfsctl(&repo).args(["oci", "fsck"])).unwrap();
}
