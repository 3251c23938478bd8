//! Mirroring: images copied between registries and OCI layouts with every digest unchanged,
//! with their indexes' children and their referrers (deltas, signatures, SBOMs).
//!
//! ```text
//! pair (SRC DEST, a list line, a YAML entry) → expand (one job per tag) → per job:
//!   source manifest (exact bytes) → walk: index → children; manifest → blobs; each → referrers
//!   → destination: blobs (skipped when there, mounted across repositories, else streamed and
//!      checked), manifests by digest (children before parents, referrers after their
//!      subject), referrers tag merged where there is no referrers API → the tag, last
//! ```
//!
//! - Nothing is re-serialised: manifests and indexes go out as the bytes read, with their
//!   media type, and the digest the destination answers (`Docker-Content-Digest`) must be
//!   the source's.
//! - The tag is written last, so a copy that fails leaves the destination's tag where it was.
//! - Blobs the destination has are looked up (`HEAD`), never fetched: a second sync sends
//!   lookups and referrer listings only.
//! - A destination tag at another digest is moved when the source is named by tag (the
//!   mirror follows), refused when the source is pinned by digest ([`TagMoved`]) unless
//!   forced.
//! - Referrers come from the referrers API, else the referrers tag `sha256-HEX`; at the
//!   destination they are listed where the registry indexes them itself, else added to its
//!   referrers tag (read, merged keeping each entry's `artifactType` and annotations, written
//!   back; the source's tag index is copied as its exact bytes when the destination has
//!   none). cosign's `sha256-HEX.sig`, `.att` and `.sbom` tags come along on request.

pub mod inputs;
mod repo;
mod retry;
mod tree;

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::io::Read;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use fn_error_context::context;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use self::repo::Repo;
use self::retry::with_retries;
use self::tree::{Content, Desc, Manifest};
use crate::format::media::INDEX_MEDIA_TYPE;
use crate::options::{SourceNotFound, SourceOptions};
use crate::platform::WantedPlatform;
use crate::reference::{DockerRef, ImageRef};
use crate::source::registry::{Client, PushedManifest, referrers_tag};
use skiff_storage::images::StoredRef;

/// Referrers of referrers followed (a signature of a delta of an image is depth 2): a
/// bound against cycles and hostile listings, far deeper than real artifact chains.
const MAX_REFERRER_DEPTH: usize = 4;

/// The suffixes of cosign's tags beside an image (`sha256-HEX.sig` and so on).
const COSIGN_SUFFIXES: [&str; 3] = ["sig", "att", "sbom"];

/// How to mirror.
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// Credentials and TLS for the source registry.
    pub source: SourceOptions,
    /// Credentials and TLS for the destination registry.
    pub destination: SourceOptions,
    /// Copy the referrers of every manifest copied.
    pub referrers: bool,
    /// Copy cosign's `.sig`, `.att` and `.sbom` tags.
    pub cosign: bool,
    /// Move a destination tag that is at another digest than a pinned source.
    pub force: bool,
    /// Only find out what would be copied.
    pub dry_run: bool,
    /// Re-read the destination afterwards and check every digest.
    pub verify: bool,
    /// Retries of a failed request.
    pub retry_times: u32,
    /// Blobs copied at once.
    pub jobs: usize,
    /// Keep only these platforms of an index (empty: every platform, the index unchanged).
    pub platforms: Vec<WantedPlatform>,
    /// Allow `platforms` to make a new index, with another digest than the source's.
    pub allow_digest_change: bool,
}

/// A source and where it goes, before its tags are listed.
#[derive(Debug, Clone)]
pub struct SyncPair {
    /// `docker://`, `oci:` (a tag, a digest, or neither for every tag), or `composefs:` (an
    /// image whose layers' original blobs the store keeps).
    pub source: ImageRef,
    /// `docker://` or `oci:`; with a tag only when the source names one image.
    pub destination: ImageRef,
    /// Which tags of a source named without tag or digest.
    pub tags: TagSelection,
}

/// The tags of a repository to mirror.
#[derive(Debug, Clone, Default)]
pub enum TagSelection {
    /// Every tag.
    #[default]
    All,
    /// The tags matching a regular expression (skopeo sync's `images-by-tag-regex`).
    Matching(regex::Regex),
}

/// One image to mirror.
#[derive(Debug, Clone)]
pub struct ImageJob {
    /// The source, as the user would name it.
    pub source: String,
    /// The destination, as the user would name it.
    pub destination: String,
    src: Endpoint,
    /// A tag or a digest.
    src_reference: String,
    /// Whether the source is pinned by digest.
    pinned: bool,
    dst: Endpoint,
    /// The tag written at the destination (none: by digest only).
    dst_tag: Option<String>,
}

/// Where a repository is.
#[derive(Debug, Clone)]
enum Endpoint {
    Registry(DockerRef),
    Layout(std::path::PathBuf),
    /// A repository of composefs storage and an image of it.
    Stored(std::path::PathBuf, StoredRef),
}

/// What became of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Something was written.
    Mirrored,
    /// The destination had everything.
    UpToDate,
    /// `--dry-run`: something would be written.
    WouldCopy,
}

/// What a mirror sent, and what it found already there.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Transfer {
    /// Blobs streamed from the source.
    pub blobs_copied: u64,
    /// Their bytes.
    pub bytes_copied: u64,
    /// Blobs mounted from the source repository of the same registry.
    pub blobs_mounted: u64,
    /// Blobs the destination had.
    pub blobs_present: u64,
    /// Manifests and indexes written (by digest).
    pub manifests_pushed: u64,
    /// Manifests the destination had.
    pub manifests_present: u64,
    /// Referrers found (copied or present).
    pub referrers: u64,
    /// Tags written: the image's, referrers tags, cosign tags.
    pub tags_written: u64,
    /// HTTP requests to the source and destination registries.
    pub requests: u64,
}

impl Transfer {
    fn wrote(&self) -> bool {
        self.blobs_copied + self.blobs_mounted + self.manifests_pushed + self.tags_written > 0
    }
}

/// The outcome of one image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageReport {
    /// As [`ImageJob::source`].
    pub source: String,
    /// As [`ImageJob::destination`].
    pub destination: String,
    /// The digest of the image's manifest or index.
    pub digest: String,
    /// What became of it.
    pub status: Status,
    /// What was sent.
    pub transfer: Transfer,
    /// `--dry-run`: what would be written, one line each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub would_write: Vec<String>,
    /// `--verify`: manifests and blobs read back from the destination and found right.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified: Option<u64>,
    /// With platforms chosen: the source index that `digest`, a new index, was made from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filtered_from: Option<String>,
}

/// A destination tag at another digest than the pinned source (fixture tags are meant to
/// stay where they are).
#[derive(Debug, thiserror::Error)]
#[error(
    "{destination} is at {current}, not at the pinned source digest {wanted}: refusing to move \
     the tag (give --force to move it)"
)]
pub struct TagMoved {
    /// The destination.
    pub destination: String,
    /// Where its tag is.
    pub current: String,
    /// The source digest.
    pub wanted: String,
}

/// Platforms chosen of an index without leave to change its digest.
#[derive(Debug, thiserror::Error)]
#[error(
    "{image} is an index ({digest}); keeping only {platforms} makes a new index with another \
     digest than upstream's: give --allow-digest-change to mirror that, or no --platform to \
     mirror the index as it is"
)]
pub struct DigestWouldChange {
    /// The source.
    pub image: String,
    /// Its index digest.
    pub digest: String,
    /// The platforms asked for.
    pub platforms: String,
}

/// A source or destination kind `skiff sync` does not handle.
#[derive(Debug, thiserror::Error)]
#[error(
    "{0}: skiff sync reads docker://, oci: and composefs: sources and writes docker:// and oci: \
     destinations"
)]
pub struct UnsupportedEndpoint(pub String);

/// The images `pair` stands for: itself when it names a tag or digest, else one per selected
/// tag of the source repository (referrers and cosign tags excepted when those are copied
/// along with their subjects).
#[context("Listing the images of {}", pair.source)]
pub async fn expand(pair: &SyncPair, options: &SyncOptions) -> Result<Vec<ImageJob>> {
    // A stored image is found by its tag but read by its digest; the tag is the mirror's.
    let mut stored_tag = None;
    let (src, src_reference) = match &pair.source {
        ImageRef::Docker(name) => (
            Endpoint::Registry(name.clone()),
            name.digest().or(name.tag()).map(str::to_owned),
        ),
        ImageRef::Oci { path, reference } => (
            Endpoint::Layout(path.clone()),
            reference
                .as_deref()
                .map(|r| r.strip_prefix('@').unwrap_or(r).to_owned()),
        ),
        ImageRef::Composefs { repo, image } => {
            let path = crate::reference::repository_path(repo)?;
            let (path2, image2) = (path.clone(), image.clone());
            let stored =
                tokio::task::spawn_blocking(move || repo::Stored::open(&path2, &image2)).await??;
            stored_tag = match image {
                StoredRef::Tag(tag) => Some(tag.clone()),
                StoredRef::Digest(_) => None,
            };
            (Endpoint::Stored(path, image.clone()), Some(stored.digest()))
        }
        other => return Err(UnsupportedEndpoint(other.to_string()).into()),
    };
    let (dst, dst_tag) = match &pair.destination {
        ImageRef::Docker(name) => {
            anyhow::ensure!(
                name.digest().is_none(),
                "the destination {} names a digest: name it by repository or tag (the digest \
                 is the source's)",
                pair.destination
            );
            (
                Endpoint::Registry(name.clone()),
                name.tag().map(str::to_owned),
            )
        }
        ImageRef::Oci { path, reference } => {
            if let Some(r) = reference.as_deref().filter(|r| r.contains(':')) {
                bail!(
                    "the destination {} names a digest ({r}): name it by tag",
                    pair.destination
                );
            }
            (Endpoint::Layout(path.clone()), reference.clone())
        }
        other => return Err(UnsupportedEndpoint(other.to_string()).into()),
    };
    let job = |reference: String, tag: Option<String>| {
        let pinned = reference.contains(':') && stored_tag.is_none();
        ImageJob {
            source: match &src {
                Endpoint::Stored(..) => pair.source.to_string(),
                _ => display(&src, &reference),
            },
            destination: match &tag {
                Some(t) => display(&dst, t),
                None => display(&dst, &reference),
            },
            src: src.clone(),
            src_reference: reference,
            pinned,
            dst: dst.clone(),
            dst_tag: tag,
        }
    };
    if let Some(reference) = src_reference {
        let tag = dst_tag
            .or_else(|| stored_tag.clone())
            .or_else(|| (!reference.contains(':')).then(|| reference.clone()));
        return Ok(vec![job(reference, tag)]);
    }
    anyhow::ensure!(
        dst_tag.is_none(),
        "{} names a tag, but the source {} is a whole repository: name a repository",
        pair.destination,
        pair.source
    );
    let (endpoint, source_options) = (src.clone(), options.source.clone());
    let repo =
        tokio::task::spawn_blocking(move || open_source(&endpoint, &source_options)).await??;
    let tags = with_retries(options.retry_times, "Listing tags", || repo.tags()).await?;
    let selected: Vec<String> = tags
        .into_iter()
        .filter(|t| {
            // A layout's ref names may hold what a registry tag may not (`:`, `/`), and a
            // listing is the source's word: such names are left out, never put in a path.
            let valid = crate::reference::docker::is_valid_tag(t);
            if !valid {
                log::warn!(
                    "{}: {t:?} is not a tag a registry takes; left out",
                    pair.source
                );
            }
            valid
        })
        .filter(|t| !is_artifact_tag(t, options))
        .filter(|t| match &pair.tags {
            TagSelection::All => true,
            TagSelection::Matching(re) => re.is_match(t),
        })
        .collect();
    anyhow::ensure!(!selected.is_empty(), "{} has no tag to mirror", pair.source);
    Ok(selected
        .into_iter()
        .map(|t| job(t.clone(), Some(t)))
        .collect())
}

/// Whether `tag` is a referrers tag (`sha256-HEX`) or a cosign tag, copied with its subject.
fn is_artifact_tag(tag: &str, options: &SyncOptions) -> bool {
    let Some(rest) = tag.strip_prefix("sha256-") else {
        return false;
    };
    let (hex, suffix) = rest.split_once('.').unwrap_or((rest, ""));
    let hex_ok = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    hex_ok
        && match suffix {
            "" => options.referrers,
            s => options.cosign && COSIGN_SUFFIXES.contains(&s),
        }
}

/// How `reference` of `endpoint` is named on a command line.
fn display(endpoint: &Endpoint, reference: &str) -> String {
    let sep = if reference.contains(':') { '@' } else { ':' };
    match endpoint {
        Endpoint::Registry(name) => format!("docker://{}{sep}{reference}", name.name()),
        Endpoint::Layout(path) if sep == '@' => format!("oci:{}:@{reference}", path.display()),
        Endpoint::Layout(path) => format!("oci:{}:{reference}", path.display()),
        Endpoint::Stored(path, _) => format!("composefs:{}@{reference}", path.display()),
    }
}

/// A reading client of `endpoint`.
fn open_source(endpoint: &Endpoint, options: &SourceOptions) -> Result<Repo> {
    Ok(match endpoint {
        Endpoint::Registry(name) => Repo::Registry(Arc::new(Client::new(name, options)?)),
        Endpoint::Layout(path) => Repo::layout(path),
        Endpoint::Stored(path, image) => Repo::Stored(Arc::new(repo::Stored::open(path, image)?)),
    })
}

/// Mirrors one image.
#[context("Mirroring {} to {}", job.source, job.destination)]
pub async fn sync_image(job: &ImageJob, options: &SyncOptions) -> Result<ImageReport> {
    let (src_endpoint, source_options) = (job.src.clone(), options.source.clone());
    let src =
        tokio::task::spawn_blocking(move || open_source(&src_endpoint, &source_options)).await??;
    let mount_from = match (&job.src, &job.dst) {
        (Endpoint::Registry(s), Endpoint::Registry(d))
            if s.host() == d.host() && s.repository() != d.repository() =>
        {
            Some(s.repository().to_owned())
        }
        _ => None,
    };
    let dst = match &job.dst {
        Endpoint::Registry(name) => {
            let client = Client::new_for_push(name, &options.destination)?;
            let client = match &mount_from {
                Some(from) => client.also_pulling(from),
                None => client,
            };
            Repo::Registry(Arc::new(client))
        }
        Endpoint::Layout(path) => Repo::layout(path),
        Endpoint::Stored(..) => return Err(UnsupportedEndpoint(job.destination.clone()).into()),
    };
    let retries = options.retry_times;
    let top = with_retries(retries, "Reading the source manifest", || {
        src.manifest(&job.src_reference)
    })
    .await?
    .ok_or_else(|| SourceNotFound(job.source.clone()))?;
    let (top, filtered_from) = choose_platforms(top, job, options)?;
    let current = match &job.dst_tag {
        Some(tag) => {
            with_retries(retries, "Reading the destination tag", || {
                dst.tag_digest(tag)
            })
            .await?
        }
        None => None,
    };
    if let Some(current) = &current
        && *current != top.digest
        && job.pinned
        && !options.force
    {
        return Err(TagMoved {
            destination: job.destination.clone(),
            current: current.clone(),
            wanted: top.digest.clone(),
        }
        .into());
    }
    let copier = Arc::new(Copier {
        src,
        dst,
        options: options.clone(),
        mount_from,
        seen: Mutex::default(),
        transfer: Mutex::default(),
        planned: Mutex::default(),
        limit: Arc::new(Semaphore::new(options.jobs.max(1))),
    });
    copier.clone().copy_node(top.clone(), 0).await?;
    // What the tag will name is read back before the tag moves, so that a failed check leaves
    // the tag where it was; then only the tag itself is.
    let verified = if options.verify && !options.dry_run {
        Some(copier.verify().await?)
    } else {
        None
    };
    if let Some(tag) = &job.dst_tag
        && current.as_deref() != Some(top.digest.as_str())
    {
        copier.put_manifest(tag, &top, "the image's tag").await?;
    }
    if let (Some(tag), Some(_)) = (&job.dst_tag, verified) {
        let at = copier.dst.tag_digest(tag).await?;
        anyhow::ensure!(
            at.as_deref() == Some(top.digest.as_str()),
            "tag {tag} is at {at:?}, not {}",
            top.digest
        );
    }
    let mut transfer = copier.transfer.lock().unwrap().clone();
    transfer.requests = copier.src.requests() + copier.dst.requests();
    let would_write = std::mem::take(&mut *copier.planned.lock().unwrap());
    let status = match (options.dry_run, transfer.wrote() || !would_write.is_empty()) {
        (_, false) => Status::UpToDate,
        (true, true) => Status::WouldCopy,
        (false, true) => Status::Mirrored,
    };
    Ok(ImageReport {
        source: job.source.clone(),
        destination: job.destination.clone(),
        digest: top.digest,
        status,
        transfer,
        would_write,
        verified,
        filtered_from,
    })
}

/// `top`, or with `options.platforms` and `top` an index, a new index of those platforms and
/// the digest of the one it was made from.
fn choose_platforms(
    top: Manifest,
    job: &ImageJob,
    options: &SyncOptions,
) -> Result<(Manifest, Option<String>)> {
    if options.platforms.is_empty() || !matches!(tree::content(&top)?, Content::Index(_)) {
        return Ok((top, None));
    }
    let kept = tree::keep_platforms(&top, &options.platforms)?;
    if kept.digest == top.digest {
        // Every entry is for a platform asked for: the index as it is.
        return Ok((top, None));
    }
    if !options.allow_digest_change {
        return Err(DigestWouldChange {
            image: job.source.clone(),
            digest: top.digest,
            platforms: options
                .platforms
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        }
        .into());
    }
    Ok((kept, Some(top.digest)))
}

/// What a mirror has met: manifests (by digest) and blobs (digest and size).
#[derive(Debug, Default)]
struct Seen {
    manifests: HashSet<String>,
    blobs: BTreeMap<String, u64>,
}

/// One image's copy in progress.
struct Copier {
    src: Repo,
    dst: Repo,
    options: SyncOptions,
    /// The source repository, when blobs may be mounted from it.
    mount_from: Option<String>,
    seen: Mutex<Seen>,
    transfer: Mutex<Transfer>,
    /// `--dry-run`: what would be written.
    planned: Mutex<Vec<String>>,
    /// Bounds the blobs copied at once.
    limit: Arc<Semaphore>,
}

type Step<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

impl Copier {
    fn count(&self, f: impl FnOnce(&mut Transfer)) {
        f(&mut self.transfer.lock().unwrap());
    }

    fn plan(&self, line: String) {
        self.planned.lock().unwrap().push(line);
    }

    /// Copies `manifest` and all it names, then its referrers.
    fn copy_node(self: Arc<Self>, manifest: Manifest, depth: usize) -> Step<'static> {
        Box::pin(async move {
            let digest = manifest.digest.clone();
            if !self.seen.lock().unwrap().manifests.insert(digest.clone()) {
                return Ok(());
            }
            let retries = self.options.retry_times;
            let content =
                tree::content(&manifest).with_context(|| format!("Reading manifest {digest}"))?;
            let present = with_retries(retries, "Looking up a manifest", || {
                self.dst.has_manifest(&digest)
            })
            .await?;
            let follow = self.options.referrers || self.options.cosign;
            match content {
                Content::Index(children) if !present || follow => {
                    for child in children {
                        let found = with_retries(retries, "Reading a manifest", || {
                            self.src.manifest(&child.digest)
                        })
                        .await?
                        .with_context(|| {
                            format!(
                                "the source lacks manifest {} of index {digest}",
                                child.digest
                            )
                        })?;
                        found.check(&child)?;
                        let found = found.typed_as(&child);
                        self.clone().copy_node(found, depth).await?;
                    }
                }
                Content::Index(_) => {}
                // Even when the destination answers for the manifest, its blobs are looked
                // up: distribution answers for a digest it holds only as a blob (an oci-delta's
                // embedded manifest), and a tag pushed on it would then be refused.
                Content::Image(blobs) => self.clone().copy_blobs(blobs).await?,
            }
            if present {
                self.count(|t| t.manifests_present += 1);
            } else {
                self.put_manifest(&digest, &manifest, "a manifest").await?;
            }
            if self.options.referrers {
                self.clone().copy_referrers(&digest, depth).await?;
            }
            if self.options.cosign {
                self.clone().copy_cosign_tags(&digest, depth).await?;
            }
            Ok(())
        })
    }

    /// Copies the blobs of an image manifest that the destination lacks.
    async fn copy_blobs(self: Arc<Self>, blobs: Vec<Desc>) -> Result<()> {
        let mut tasks = JoinSet::new();
        for desc in blobs {
            if desc.has_urls {
                log::info!("{}: a foreign layer, left where its URLs say", desc.digest);
                continue;
            }
            self.seen
                .lock()
                .unwrap()
                .blobs
                .insert(desc.digest.clone(), desc.size);
            let permit = self.limit.clone().acquire_owned().await?;
            let this = self.clone();
            tasks.spawn(async move {
                let _permit = permit;
                this.copy_blob(&desc).await
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        Ok(())
    }

    /// Copies one blob unless the destination has it.
    async fn copy_blob(&self, desc: &Desc) -> Result<()> {
        let retries = self.options.retry_times;
        let digest = desc.digest.as_str();
        if with_retries(retries, "Looking up a blob", || self.dst.has_blob(digest)).await? {
            self.count(|t| t.blobs_present += 1);
            return Ok(());
        }
        if self.options.dry_run {
            self.plan(format!("blob {digest} ({} bytes)", desc.size));
            return Ok(());
        }
        if let (Some(from), Repo::Registry(dst)) = (&self.mount_from, &self.dst)
            && with_retries(retries, "Mounting a blob", || dst.mount_blob(digest, from)).await?
        {
            self.count(|t| t.blobs_mounted += 1);
            return Ok(());
        }
        with_retries(retries, "Copying a blob", || async {
            let data = match self.src.blob(digest).await? {
                Some(data) => data,
                // An oci-delta carries the image's manifest as a layer; a registry may hold
                // those bytes as a manifest only.
                None if desc.is_manifest_type() => {
                    let manifest = self
                        .src
                        .manifest(digest)
                        .await?
                        .with_context(|| format!("the source has no blob {digest}"))?;
                    Box::new(std::io::Cursor::new(manifest.bytes))
                }
                None => bail!("the source has no blob {digest}"),
            };
            self.dst.put_blob(digest, desc.size, data).await
        })
        .await
        .with_context(|| format!("Copying blob {digest}"))?;
        self.count(|t| {
            t.blobs_copied += 1;
            t.bytes_copied += desc.size;
        });
        Ok(())
    }

    /// Writes `manifest` under `reference` (`what` names it in the plan), and checks that the
    /// destination stored the same digest.
    async fn put_manifest(&self, reference: &str, manifest: &Manifest, what: &str) -> Result<()> {
        if self.options.dry_run {
            self.plan(format!("{what} {reference} ({})", manifest.media_type));
            return Ok(());
        }
        let pushed: PushedManifest =
            with_retries(self.options.retry_times, "Writing a manifest", || {
                self.dst.put_manifest(reference, manifest)
            })
            .await?;
        if let Some(stored) = pushed.digest.filter(|d| *d != manifest.digest) {
            bail!(
                "the destination stored manifest {} as {stored} (Docker-Content-Digest): it \
                 changed the bytes",
                manifest.digest
            );
        }
        self.count(|t| {
            if reference.contains(':') {
                t.manifests_pushed += 1;
            } else {
                t.tags_written += 1;
            }
        });
        Ok(())
    }

    /// Copies the referrers of `subject`, then lists them at the destination.
    #[context("Copying the referrers of {subject}")]
    async fn copy_referrers(self: Arc<Self>, subject: &str, depth: usize) -> Result<()> {
        if depth >= MAX_REFERRER_DEPTH {
            log::warn!("{subject}: referrers deeper than {MAX_REFERRER_DEPTH} are not followed");
            return Ok(());
        }
        let retries = self.options.retry_times;
        let listed = with_retries(retries, "Listing referrers", || {
            self.src.referrers_listed(subject)
        })
        .await?;
        let (descriptors, source_index) = match listed {
            Some(list) => (list, None),
            None => {
                match with_retries(retries, "Reading the referrers tag", || {
                    self.src.referrers_tag_index(subject)
                })
                .await?
                {
                    Some(index) => (index_entries(&index)?, Some(index)),
                    None => return Ok(()),
                }
            }
        };
        let mut entries = Vec::new();
        for listed in descriptors {
            let desc = Desc::parse(&listed)?;
            let referrer = with_retries(retries, "Reading a referrer", || {
                self.src.manifest(&desc.digest)
            })
            .await?
            .with_context(|| {
                format!(
                    "the source lists referrer {} but has no such manifest",
                    desc.digest
                )
            })?;
            referrer.check(&desc)?;
            if tree::subject(&referrer).as_deref() != Some(subject) {
                log::warn!(
                    "{}: listed as a referrer of {subject} but has another subject; skipped",
                    desc.digest
                );
                continue;
            }
            // A registry's listing is the registry's rendering; a tag index is the source's
            // own bytes, kept as they are.
            entries.push(match source_index {
                Some(_) => listed,
                None => tree::referrer_descriptor(&referrer)?,
            });
            self.count(|t| t.referrers += 1);
            self.clone().copy_node(referrer, depth + 1).await?;
        }
        self.list_referrers(subject, entries, source_index).await
    }

    /// Makes the destination list `entries` as referrers of `subject`: through its referrers
    /// API when it indexed them, else in its referrers tag.
    async fn list_referrers(
        &self,
        subject: &str,
        entries: Vec<serde_json::Value>,
        source_index: Option<Manifest>,
    ) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let retries = self.options.retry_times;
        let digests: Vec<&str> = entries
            .iter()
            .filter_map(|e| e["digest"].as_str())
            .collect();
        let listed = with_retries(retries, "Listing referrers", || {
            self.dst.referrers_listed(subject)
        })
        .await?;
        if let Some(listed) = &listed {
            if digests
                .iter()
                .all(|d| listed.iter().any(|l| l["digest"] == *d))
            {
                return Ok(());
            }
            if self.options.dry_run {
                // The destination indexes referrers itself once they are pushed.
                return Ok(());
            }
        }
        let current = with_retries(retries, "Reading the referrers tag", || {
            self.dst.referrers_tag_index(subject)
        })
        .await?;
        let index = match current {
            None => match source_index {
                // The source's own index, when it lists exactly these: its digest is kept.
                Some(index)
                    if index_entries(&index)?
                        .iter()
                        .filter_map(|e| e["digest"].as_str())
                        .eq(digests.iter().copied()) =>
                {
                    index
                }
                _ => referrers_index(entries)?,
            },
            Some(current) => {
                let mut merged = index_entries(&current)?;
                let missing: Vec<_> = entries
                    .into_iter()
                    .filter(|e| !merged.iter().any(|m| m["digest"] == e["digest"]))
                    .collect();
                if missing.is_empty() {
                    return Ok(());
                }
                merged.extend(missing);
                referrers_index(merged)?
            }
        };
        self.put_manifest(&referrers_tag(subject), &index, "the referrers tag")
            .await
    }

    /// Copies cosign's tags of `digest` that the source has.
    async fn copy_cosign_tags(self: Arc<Self>, digest: &str, depth: usize) -> Result<()> {
        if depth >= MAX_REFERRER_DEPTH {
            log::warn!("{digest}: cosign tags deeper than {MAX_REFERRER_DEPTH} are not followed");
            return Ok(());
        }
        let retries = self.options.retry_times;
        for suffix in COSIGN_SUFFIXES {
            let tag = format!("{}.{suffix}", referrers_tag(digest));
            let Some(artifact) =
                with_retries(retries, "Reading a cosign tag", || self.src.manifest(&tag)).await?
            else {
                continue;
            };
            self.clone().copy_node(artifact.clone(), depth + 1).await?;
            let at = with_retries(retries, "Reading a cosign tag", || {
                self.dst.tag_digest(&tag)
            })
            .await?;
            if at.as_deref() != Some(artifact.digest.as_str()) {
                self.put_manifest(&tag, &artifact, "the cosign tag").await?;
            }
        }
        Ok(())
    }

    /// Reads back every manifest and blob met from the destination; returns how many were
    /// checked.
    #[context("Verifying the destination")]
    async fn verify(&self) -> Result<u64> {
        let (manifests, blobs) = {
            let seen = self.seen.lock().unwrap();
            (seen.manifests.clone(), seen.blobs.clone())
        };
        for digest in &manifests {
            // Reading by digest checks the bytes against it.
            self.dst
                .manifest(digest)
                .await?
                .with_context(|| format!("the destination has no manifest {digest}"))?;
        }
        for (digest, size) in &blobs {
            let data = self
                .dst
                .blob(digest)
                .await?
                .with_context(|| format!("the destination has no blob {digest}"))?;
            let (digest, size) = (digest.clone(), *size);
            tokio::task::spawn_blocking(move || -> Result<()> {
                let mut hashed = skiff_storage::digest::HashingWriter::new(std::io::sink());
                std::io::copy(&mut data.take(size + 1), &mut hashed)?;
                let (_, actual, read) = hashed.finish()?;
                anyhow::ensure!(
                    read == size && actual.to_string() == digest,
                    "blob {digest} reads back as {actual} of {read} bytes"
                );
                Ok(())
            })
            .await??;
        }
        Ok((manifests.len() + blobs.len()) as u64)
    }
}

/// The `manifests` of an index.
fn index_entries(index: &Manifest) -> Result<Vec<serde_json::Value>> {
    let value: serde_json::Value =
        serde_json::from_slice(&index.bytes).context("the referrers tag is not JSON")?;
    Ok(value["manifests"].as_array().cloned().unwrap_or_default())
}

/// A referrers tag index listing `entries`.
fn referrers_index(entries: Vec<serde_json::Value>) -> Result<Manifest> {
    let bytes = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": entries,
    }))?;
    Ok(Manifest::new(bytes, INDEX_MEDIA_TYPE))
}
