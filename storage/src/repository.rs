//! Opening and creating the store: a composefs-rs repository.
//!
//! A repository on a filesystem with fs-verity is created in secure mode (the kernel checks every
//! object). Where the filesystem has no fs-verity, it runs in composefs' insecure mode: object
//! names are still fs-verity digests, computed in user space, and the caller is told so once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use composefs::fsverity::{Algorithm, FsVerityHashValue, Sha256HashValue};
use composefs::repository::{Repository, RepositoryConfig, read_repo_algorithm};
use fn_error_context::context;
use rustix::fs::{CWD, Mode, OFlags};

/// Errors a caller of the store may need to tell apart.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Nothing exists at the path.
    #[error("no composefs repository at {0}")]
    NotFound(PathBuf),
    /// A directory with other content, where a repository was to be created implicitly.
    #[error(
        "{0} is a directory with other content, not a composefs repository (create a repository there with `skiff init`, or name another path)"
    )]
    NotEmpty(PathBuf),
    /// The path exists but is not a directory.
    #[error("{0} is not a directory, so it cannot be a composefs repository")]
    NotADirectory(PathBuf),
    /// A directory without `meta.json`.
    #[error("{0} is not a composefs repository (no meta.json)")]
    NotARepository(PathBuf),
    /// fs-verity was required and the filesystem lacks it.
    #[error("the filesystem of {0} does not support fs-verity, and --require-verity was given")]
    VerityUnsupported(PathBuf),
    /// The repository cannot be written to.
    #[error("the repository at {0} is read-only")]
    ReadOnly(PathBuf),
}

/// The hash behind object names: the repository's fs-verity algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HashAlgorithm {
    /// fs-verity with sha256 (composefs-rs' library default).
    Sha256,
    /// fs-verity with sha512 (cfsctl's and bootc's default).
    #[default]
    Sha512,
}

impl HashAlgorithm {
    fn from_composefs(alg: Algorithm) -> Self {
        match alg {
            Algorithm::Sha256 { .. } => Self::Sha256,
            Algorithm::Sha512 { .. } => Self::Sha512,
        }
    }
}

impl std::str::FromStr for HashAlgorithm {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "sha256" => Ok(Self::Sha256),
            "sha512" => Ok(Self::Sha512),
            other => anyhow::bail!("unknown hash algorithm {other:?} (expected sha256 or sha512)"),
        }
    }
}

/// How to create a repository.
#[derive(Debug, Clone, Copy, Default)]
pub struct InitOptions {
    /// The object-name algorithm; only used when the repository is created.
    pub hash: HashAlgorithm,
    /// Refuse to create an insecure repository on a filesystem without fs-verity.
    pub require_verity: bool,
    /// Create the repository in a directory that holds other files (`skiff init` does; a copy
    /// only creates repositories where nothing, or an empty directory, is).
    pub allow_non_empty: bool,
}

/// What [`init`] did.
#[derive(Debug, Clone, Copy)]
pub struct InitOutcome {
    /// A new repository was created (false: one was already there).
    pub created: bool,
    /// The repository runs in insecure mode (no fs-verity on its filesystem).
    pub insecure: bool,
    /// The algorithm of the repository.
    pub hash: HashAlgorithm,
}

/// Reports the algorithm of an existing repository.
#[context("Opening repository {}", path.display())]
pub fn repository_algorithm(path: &Path) -> Result<HashAlgorithm> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StoreError::NotFound(path.to_owned()).into());
        }
        Err(e) => return Err(e.into()),
    };
    if !meta.is_dir() {
        return Err(StoreError::NotADirectory(path.to_owned()).into());
    }
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    match read_repo_algorithm(&fd)? {
        Some(alg) => Ok(HashAlgorithm::from_composefs(alg)),
        None => Err(StoreError::NotARepository(path.to_owned()).into()),
    }
}

/// Tells whether the filesystem holding the directory `dir` supports fs-verity, by enabling it on
/// an anonymous file there.
#[context("Probing fs-verity support in {}", dir.display())]
pub fn filesystem_supports_verity(dir: &Path) -> Result<bool> {
    let dir = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    crate::new_object::probe_verity(&dir)
}

/// Creates a repository at `path` (and its parent directories) unless one is already there.
///
/// Creation holds an exclusive lock on the parent directory, so that processes creating the
/// same repository at once (two copies into a new path) take turns: the later one finds the
/// repository the first made, never the first one's half-made directory.
#[context("Initializing repository {}", path.display())]
pub fn init(path: &Path, options: InitOptions) -> Result<InitOutcome> {
    if let Some(existing) = existing_repository(path, options)? {
        return Ok(existing);
    }
    let parent = match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => path,
    };
    std::fs::create_dir_all(parent)
        .with_context(|| format!("Creating directory {}", parent.display()))?;
    let _lock = lock_exclusive(parent)?;
    if let Some(existing) = existing_repository(path, options)? {
        return Ok(existing);
    }
    create_repository(path, options)
}

/// Takes an exclusive `flock` on the directory `dir`, held until the descriptor is dropped.
/// (Not on the repository directory itself: composefs takes its shared lock there.)
#[context("Locking {}", dir.display())]
fn lock_exclusive(dir: &Path) -> Result<rustix::fd::OwnedFd> {
    let fd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    rustix::fs::flock(&fd, rustix::fs::FlockOperation::LockExclusive)?;
    Ok(fd)
}

/// What [`init`] reports for a repository that is already at `path`, if one is.
fn existing_repository(path: &Path, options: InitOptions) -> Result<Option<InitOutcome>> {
    if let Ok(hash) = repository_algorithm(path) {
        // An existing repository says itself whether it is secure (verity on meta.json).
        let insecure = match hash {
            HashAlgorithm::Sha256 => {
                Repository::<Sha256HashValue>::open_path(CWD, path)?.is_insecure()
            }
            HashAlgorithm::Sha512 => {
                Repository::<composefs::fsverity::Sha512HashValue>::open_path(CWD, path)?
                    .is_insecure()
            }
        };
        if insecure && options.require_verity {
            return Err(StoreError::VerityUnsupported(path.to_owned()).into());
        }
        return Ok(Some(InitOutcome {
            created: false,
            insecure,
            hash,
        }));
    }
    Ok(None)
}

/// Creates the repository (with the parent directory locked).
fn create_repository(path: &Path, options: InitOptions) -> Result<InitOutcome> {
    match std::fs::metadata(path) {
        Ok(m) if !m.is_dir() => return Err(StoreError::NotADirectory(path.to_owned()).into()),
        Ok(_) => {
            if !options.allow_non_empty && std::fs::read_dir(path)?.next().is_some() {
                return Err(StoreError::NotEmpty(path.to_owned()).into());
            }
        }
        Err(_) => std::fs::create_dir_all(path)
            .with_context(|| format!("Creating directory {}", path.display()))?,
    }
    let insecure = !filesystem_supports_verity(path)?;
    if insecure && options.require_verity {
        return Err(StoreError::VerityUnsupported(path.to_owned()).into());
    }
    let algorithm = match options.hash {
        HashAlgorithm::Sha256 => Algorithm::SHA256,
        HashAlgorithm::Sha512 => Algorithm::SHA512,
    };
    let mut config = RepositoryConfig::new(algorithm);
    if insecure {
        config = config.set_insecure();
    }
    match options.hash {
        HashAlgorithm::Sha256 => {
            Repository::<Sha256HashValue>::init_path(CWD, path, config)?;
        }
        HashAlgorithm::Sha512 => {
            Repository::<composefs::fsverity::Sha512HashValue>::init_path(CWD, path, config)?;
        }
    }
    Ok(InitOutcome {
        created: true,
        insecure,
        hash: options.hash,
    })
}

/// An open store: a composefs-rs repository whose object names use the hash `H`.
pub struct Store<H: FsVerityHashValue> {
    repo: Arc<Repository<H>>,
    path: PathBuf,
}

impl<H: FsVerityHashValue> std::fmt::Debug for Store<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("insecure", &self.repo.is_insecure())
            .finish()
    }
}

impl<H: FsVerityHashValue> Clone for Store<H> {
    fn clone(&self) -> Self {
        Self {
            repo: self.repo.clone(),
            path: self.path.clone(),
        }
    }
}

/// Objects written at once per layer job. A writer spends much of its time in system calls
/// (creating, linking and re-reading the object) and waiting for the next file, so two per job
/// keep the cores busy where one leaves gaps: a cold copy of a 455 MB, 12k-file image into
/// tmpfs used 1.6 cores with two and about 1.3 with one, on two cores.
pub const OBJECT_WRITERS_PER_JOB: usize = 2;

impl<H: FsVerityHashValue> Store<H> {
    /// Opens an existing repository (taking composefs' shared lock on it, so that a garbage
    /// collection in another process waits until this store is dropped).
    #[context("Opening repository {}", path.display())]
    pub fn open(path: &Path) -> Result<Self> {
        repository_algorithm(path)?;
        let repo = Repository::<H>::open_path(CWD, path)?;
        Ok(Self {
            repo: Arc::new(repo),
            path: path.to_owned(),
        })
    }

    /// Opens an existing repository for writing: fails with [`StoreError::ReadOnly`] when the
    /// repository cannot be written, before any work is done.
    #[context("Opening repository {} for writing", path.display())]
    pub fn open_writable(path: &Path) -> Result<Self> {
        let store = Self::open(path)?;
        if store.repo.ensure_writable().is_err() {
            return Err(StoreError::ReadOnly(path.to_owned()).into());
        }
        Ok(store)
    }

    /// Limits how many objects are written at once across all layers, for `jobs` layers
    /// imported at once ([`OBJECT_WRITERS_PER_JOB`] each). Must be called before the store is
    /// cloned or written to.
    pub fn set_write_concurrency(&mut self, jobs: usize) -> Result<()> {
        let repo = Arc::get_mut(&mut self.repo).ok_or_else(|| {
            anyhow::anyhow!("write concurrency must be set before the store is shared")
        })?;
        repo.set_write_concurrency(jobs.max(1) * OBJECT_WRITERS_PER_JOB);
        Ok(())
    }

    /// The composefs repository, for this crate and for tests that check the repository
    /// itself. Other code uses the operations of [`Store`].
    pub fn repo(&self) -> &Arc<Repository<H>> {
        &self.repo
    }

    /// Opens the object `id` for reading (blocking).
    pub fn open_object(&self, id: &H) -> Result<std::fs::File> {
        Ok(std::fs::File::from(self.repo.open_object(id)?))
    }

    /// Writes the tar of the stored layer whose splitstream is `layer` to `out` (blocking).
    #[context("Reading stored layer {}", layer.to_hex())]
    pub fn write_layer_tar(&self, layer: &H, out: &mut impl std::io::Write) -> Result<()> {
        self.repo
            .open_stream("", Some(layer), None)?
            .cat(&self.repo, out)
    }

    /// Where the repository lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when the repository runs without fs-verity.
    pub fn is_insecure(&self) -> bool {
        self.repo.is_insecure()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_is_idempotent_and_reports_algorithm() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repo");
        let out = init(
            &path,
            InitOptions {
                hash: HashAlgorithm::Sha256,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(out.created);
        assert_eq!(repository_algorithm(&path).unwrap(), HashAlgorithm::Sha256);
        let again = init(&path, InitOptions::default()).unwrap();
        assert!(!again.created);
        assert_eq!(again.hash, HashAlgorithm::Sha256);
        Store::<Sha256HashValue>::open(&path).unwrap();
        assert!(Store::<composefs::fsverity::Sha512HashValue>::open(&path).is_err());
    }

    #[test]
    fn a_file_is_not_a_repository() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let err = init(&file, InitOptions::default()).unwrap_err();
        assert!(
            matches!(
                err.downcast_ref::<StoreError>(),
                Some(StoreError::NotADirectory(_))
            ),
            "{err:#}"
        );
        let err = Store::<Sha256HashValue>::open(&file).unwrap_err();
        assert!(format!("{err:#}").contains("is not a directory"), "{err:#}");
        let err = Store::<Sha256HashValue>::open(&dir.path().join("missing")).unwrap_err();
        assert!(
            matches!(
                err.downcast_ref::<StoreError>(),
                Some(StoreError::NotFound(_))
            ),
            "{err:#}"
        );
    }
}
