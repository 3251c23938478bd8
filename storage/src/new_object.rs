//! A new object written into the repository's objects directory as its bytes arrive.
//!
//! An object is a file named by its fs-verity digest, `objects/<2 hex>/<62 hex>` for sha256
//! (composefs' layout, which `cfsctl` and bootc read). It is written to an anonymous
//! `O_TMPFILE` in the objects directory and linked under its name once complete, so a failed
//! write leaves no object behind (at most an empty objects subdirectory) and a reader never sees
//! half an object. Like composefs' own writer, this needs a filesystem with `O_TMPFILE`.
//!
//! Where the filesystem has fs-verity, the kernel computes the digest when verity is enabled
//! (composefs' own finalisation does that). Where it has none (an insecure repository), the
//! digest is computed here while the bytes pass, instead of composefs reading the whole file
//! back after it was written; the object is then linked with one `linkat`, its directory made
//! only when the link finds it missing.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;

use anyhow::{Context, Result};
use composefs::fsverity::{FsVerityHashValue, FsVerityHasher};
use composefs::repository::{ObjectStoreMethod, Repository};
use fn_error_context::context;
use rustix::fs::{AtFlags, CWD, Mode, OFlags};
use rustix::io::Errno;

/// Writes new objects into one repository.
pub struct ObjectWriter<H: FsVerityHashValue> {
    repo: Arc<Repository<H>>,
    /// The repository is insecure on a filesystem without fs-verity: digests are computed here.
    userspace_verity: bool,
}

impl<H: FsVerityHashValue> std::fmt::Debug for ObjectWriter<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectWriter")
            .field("userspace_verity", &self.userspace_verity)
            .finish_non_exhaustive()
    }
}

impl<H: FsVerityHashValue> ObjectWriter<H> {
    /// A writer of objects into `repo` (blocking: for an insecure repository, it probes the
    /// filesystem for fs-verity).
    #[context("Preparing to write objects")]
    pub fn new(repo: Arc<Repository<H>>) -> Result<Self> {
        let userspace_verity = repo.is_insecure() && !probe_verity(repo.objects_dir()?)?;
        Ok(Self {
            repo,
            userspace_verity,
        })
    }

    /// The repository written to.
    pub fn repo(&self) -> &Arc<Repository<H>> {
        &self.repo
    }

    /// Starts a new object (blocking).
    #[context("Creating a new object")]
    pub fn create(&self) -> Result<NewObject<H>> {
        let file = rustix::fs::openat(
            self.repo.objects_dir()?,
            ".",
            OFlags::RDWR | OFlags::TMPFILE | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .context("Opening an anonymous file in the objects directory")?;
        Ok(NewObject {
            file: File::from(file),
            verity: self.userspace_verity.then(FsVerityHasher::new),
            written: 0,
        })
    }

    /// Links `object` under its digest, which it returns with whether the store held that
    /// object already (this copy is then dropped). The caller has written exactly `size` bytes.
    #[context("Storing a new object of {size} bytes")]
    pub fn finish(&self, object: NewObject<H>, size: u64) -> Result<(H, ObjectStoreMethod)> {
        anyhow::ensure!(
            object.written == size,
            "the object has {} bytes, not {size}",
            object.written
        );
        let Some(mut verity) = object.verity else {
            return self.repo.finalize_object_tmpfile(object.file, size);
        };
        let id = verity.digest();
        let method = link_object(self.repo.objects_dir()?, &object.file, &id)?;
        Ok((id, method))
    }
}

/// A new object being written: an anonymous file in the objects directory until
/// [`ObjectWriter::finish`] links it, gone if dropped before.
pub struct NewObject<H: FsVerityHashValue> {
    file: File,
    /// The digest computed as the bytes pass, where the kernel cannot compute it.
    verity: Option<FsVerityHasher<H>>,
    written: u64,
}

impl<H: FsVerityHashValue> std::fmt::Debug for NewObject<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewObject")
            .field("written", &self.written)
            .field("userspace_verity", &self.verity.is_some())
            .finish_non_exhaustive()
    }
}

impl<H: FsVerityHashValue> Write for NewObject<H> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        if let Some(verity) = &mut self.verity {
            verity.write_all(&buf[..n])?;
        }
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Gives the anonymous `file` the name of object `id`; an object of that name already there
/// wins (its content is the same, since names are digests).
fn link_object<H: FsVerityHashValue>(
    objects: impl AsFd,
    file: &File,
    id: &H,
) -> Result<ObjectStoreMethod> {
    let source = proc_fd_path(file);
    let path = id.to_object_pathname();
    let link = || rustix::fs::linkat(CWD, &*source, &objects, &*path, AtFlags::SYMLINK_FOLLOW);
    let linked = match link() {
        Err(Errno::NOENT) => {
            match rustix::fs::mkdirat(&objects, &*id.to_object_dir(), Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(e).context("Creating an objects subdirectory"),
            }
            link()
        }
        other => other,
    };
    match linked {
        Ok(()) => Ok(ObjectStoreMethod::Copied),
        Err(Errno::EXIST) => Ok(ObjectStoreMethod::AlreadyPresent),
        Err(e) => Err(e).with_context(|| format!("Linking object {path}")),
    }
}

/// The path naming the open file `fd` (how an anonymous file is linked or re-opened).
fn proc_fd_path(fd: impl AsFd) -> String {
    format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd())
}

/// Whether the filesystem holding `dir` supports fs-verity, found by enabling it on an
/// anonymous file there.
#[context("Probing fs-verity support")]
pub(crate) fn probe_verity(dir: impl AsFd) -> Result<bool> {
    use composefs::fsverity::{EnableVerityError, Sha256HashValue, enable_verity_raw};
    let writable = rustix::fs::openat(
        &dir,
        ".",
        OFlags::RDWR | OFlags::TMPFILE | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    rustix::io::write(&writable, b"skiff fs-verity probe")?;
    // fs-verity needs a file with no writable descriptor open.
    let readonly = rustix::fs::open(
        proc_fd_path(&writable),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    drop(writable);
    match enable_verity_raw::<Sha256HashValue>(&readonly) {
        // A writable descriptor of the file inherited by a child forked meanwhile (ETXTBSY)
        // means the filesystem got as far as checking: it has fs-verity.
        Ok(())
        | Err(EnableVerityError::AlreadyEnabled)
        | Err(EnableVerityError::FileOpenedForWrite) => Ok(true),
        Err(EnableVerityError::FilesystemNotSupported) => Ok(false),
        Err(e) => Err(e).context("Enabling fs-verity on an anonymous file"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::{HashAlgorithm, InitOptions, Store, init};
    use composefs::fsverity::{Sha256HashValue, Sha512HashValue, compute_verity};

    fn store_of<H: FsVerityHashValue>(hash: HashAlgorithm) -> (tempfile::TempDir, Store<H>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repo");
        init(
            &path,
            InitOptions {
                hash,
                ..Default::default()
            },
        )
        .unwrap();
        (dir, Store::open_writable(&path).unwrap())
    }

    fn store() -> (tempfile::TempDir, Store<Sha256HashValue>) {
        store_of(HashAlgorithm::Sha256)
    }

    fn write<H: FsVerityHashValue>(
        store: &Store<H>,
        content: &[u8],
        piece: usize,
    ) -> (ObjectWriter<H>, NewObject<H>) {
        let writer = ObjectWriter::new(store.repo().clone()).unwrap();
        let mut object = writer.create().unwrap();
        for part in content.chunks(piece.max(1)) {
            object.write_all(part).unwrap();
        }
        (writer, object)
    }

    fn named_by_verity_and_read_back<H: FsVerityHashValue>(hash: HashAlgorithm) {
        let (_dir, store) = store_of::<H>(hash);
        for size in [0usize, 1, 4095, 4096, 4097, (1 << 20) + 3] {
            let content: Vec<u8> = (0..size).map(|i| (i * 131 % 251) as u8).collect();
            for piece in [1usize, 4096, 65536] {
                if size > 70_000 && piece == 1 {
                    continue;
                }
                let (writer, object) = write(&store, &content, piece);
                let (id, _) = writer.finish(object, size as u64).unwrap();
                assert_eq!(id, compute_verity::<H>(&content), "size {size}");
                let mut stored = Vec::new();
                std::io::Read::read_to_end(&mut store.open_object(&id).unwrap(), &mut stored)
                    .unwrap();
                assert_eq!(stored, content);
            }
        }
    }

    #[test]
    fn objects_are_named_by_their_verity_digest_and_read_back() {
        named_by_verity_and_read_back::<Sha256HashValue>(HashAlgorithm::Sha256);
        named_by_verity_and_read_back::<Sha512HashValue>(HashAlgorithm::Sha512);
    }

    #[test]
    fn a_second_copy_is_already_present_and_a_missing_directory_is_made() {
        let (_dir, store) = store();
        let content = b"an object of some bytes".repeat(100);
        let id = compute_verity::<Sha256HashValue>(&content);
        let objects = store.path().join("objects");
        let _ = std::fs::remove_dir(objects.join(id.to_object_dir()));
        let (writer, object) = write(&store, &content, 7);
        let (first, method) = writer.finish(object, content.len() as u64).unwrap();
        assert_eq!(first, id);
        assert!(matches!(method, ObjectStoreMethod::Copied));
        let (writer, object) = write(&store, &content, 4096);
        let (second, method) = writer.finish(object, content.len() as u64).unwrap();
        assert_eq!(second, id);
        assert!(matches!(method, ObjectStoreMethod::AlreadyPresent));
        // composefs' own writer names the same bytes the same.
        assert_eq!(store.repo().ensure_object(&content).unwrap(), id);
    }

    #[test]
    fn a_short_object_is_refused_and_leaves_nothing() {
        let (_dir, store) = store();
        let content = b"short".repeat(40);
        let (writer, object) = write(&store, &content, 64);
        let err = writer.finish(object, content.len() as u64 + 1).unwrap_err();
        assert!(format!("{err:#}").contains("not 201"), "{err:#}");
        let id = compute_verity::<Sha256HashValue>(&content);
        assert!(store.open_object(&id).is_err());
    }
}
