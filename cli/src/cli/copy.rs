//! `skiff copy`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use skiff_storage::images::StoredRef;
use skiff_storage::settings::RepoSettings;
use skiff_storage::{FsVerityHashValue, InitOptions, Store};
use skiff_transport::options::SourceOptions;
use skiff_transport::pull::{CopyOptions, copy_image};
use skiff_transport::push::CopyOutOptions;
use skiff_transport::push::compress::DestCompression;
use skiff_transport::reference::{ImageRef, repository_path};
use skiff_transport::source::Source;

use super::GlobalOptions;
use super::output::{Output, ProgressMode};
use super::registry_flags::{DestRegistryFlags, SrcRegistryFlags};

#[derive(Debug, Args)]
pub(crate) struct CopyArgs {
    /// The image to copy, in skopeo's syntax (docker://, oci:, oci-archive:, docker-archive:, dir:,
    /// containers-storage:), or an image of composefs storage (composefs:PATH:NAME) to copy out.
    source: String,
    /// composefs:PATH:NAME (or composefs::NAME for the default repository); when copying out,
    /// oci:, oci-archive:, dir:, docker:// or containers-storage:.
    destination: String,

    #[command(flatten)]
    src: SrcRegistryFlags,
    /// User name for the source registry.
    #[arg(long)]
    src_username: Option<String>,
    /// Password for the source registry.
    #[arg(long)]
    src_password: Option<String>,
    /// Path of the authentication file (default: skopeo's lookup of auth.json).
    #[arg(long, value_name = "PATH")]
    authfile: Option<PathBuf>,
    /// Number of times to retry a failed layer fetch.
    #[arg(long, value_name = "N", default_value_t = 0)]
    retry_times: u32,
    /// Suppress output but errors.
    #[arg(short, long)]
    quiet: bool,
    /// Write the digest of the stored manifest to PATH.
    #[arg(long, value_name = "PATH")]
    digestfile: Option<PathBuf>,
    /// Do not look for oci-delta artifacts of the image in its registry.
    #[arg(long)]
    no_delta: bool,
    /// Layers fetched and imported at once (default: number of CPUs).
    #[arg(long, short = 'j', value_name = "N")]
    jobs: Option<usize>,
    /// Progress output: bars on a terminal, plain lines otherwise, or one JSON object a line.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    progress: ProgressMode,
    /// Refuse to create or write a repository without fs-verity.
    #[arg(long)]
    require_verity: bool,
    /// Accepted for skopeo compatibility: composefs storage keeps no signatures.
    #[arg(long)]
    remove_signatures: bool,
    /// Only `system` (the default: one image for this platform) applies to composefs storage.
    #[arg(long, value_name = "system")]
    multi_arch: Option<String>,
    /// Keep the original compressed blob of every layer (fetching whole the layers whose blob
    /// the store lacks), so that copying the image out keeps its manifest digest. Repositories
    /// made with `skiff init --keep-blobs` always do.
    #[arg(long)]
    keep_blobs: bool,
    /// Then make the image's layers available to podman's pulls, in the repository's layer
    /// store (set up by skiff podman enable).
    #[arg(long)]
    expose: bool,
    /// The graph root of containers-storage: sources (default: storage.conf's graphroot, else
    /// /var/lib/containers/storage); a [driver@root+runroot] in the reference wins.
    #[arg(long, value_name = "DIR")]
    storage_root: Option<PathBuf>,
    /// The run root of containers-storage: sources (default: storage.conf's runroot).
    #[arg(long, value_name = "DIR")]
    run_root: Option<PathBuf>,

    #[command(flatten)]
    dest: DestFlags,

    #[command(flatten)]
    rejected: RejectedFlags,
}

/// The flags of a copy out of composefs storage (refused when the destination is composefs
/// storage).
#[derive(Debug, Args)]
struct DestFlags {
    #[command(flatten)]
    registry: DestRegistryFlags,
    /// How to compress layers whose original blob the store does not keep: gzip (default) or
    /// zstd. The manifest digest then changes.
    #[arg(long, value_name = "FORMAT")]
    dest_compress_format: Option<String>,
    /// Refuse to copy out an image whose manifest digest would change (a layer without its
    /// kept original blob).
    #[arg(long)]
    preserve_digests: bool,
}

impl DestFlags {
    /// The first given flag, spelled as on the command line.
    fn first_given(&self) -> Option<&'static str> {
        self.registry.first_given().or_else(|| {
            [
                (
                    self.dest_compress_format.is_some(),
                    "--dest-compress-format",
                ),
                (self.preserve_digests, "--preserve-digests"),
            ]
            .into_iter()
            .find_map(|(given, name)| given.then_some(name))
        })
    }

    /// `authfile`: the global `--authfile`, used when `--dest-authfile` is not given.
    fn options(
        &self,
        global: &GlobalOptions,
        authfile: Option<&PathBuf>,
    ) -> Result<CopyOutOptions> {
        Ok(CopyOutOptions {
            compression: match &self.dest_compress_format {
                Some(format) => format.parse()?,
                None => DestCompression::default(),
            },
            preserve_digests: self.preserve_digests,
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            destination: self.registry.options(global, authfile)?,
        })
    }
}

/// skopeo copy flags that skiff does not implement. Accepted by the parser only to be refused by
/// name.
#[derive(Debug, Args)]
struct RejectedFlags {
    #[arg(long, hide = true)]
    dest_username: Option<String>,
    #[arg(long, hide = true)]
    dest_password: Option<String>,
    #[arg(long, hide = true)]
    dest_registry_token: Option<String>,
    #[arg(long, hide = true)]
    dest_compress: bool,
    #[arg(long, hide = true)]
    dest_compress_level: Option<String>,
    #[arg(long, hide = true)]
    dest_decompress: bool,
    #[arg(long, hide = true)]
    dest_oci_accept_uncompressed_layers: bool,
    #[arg(long, hide = true)]
    dest_precompute_digests: bool,
    #[arg(long, hide = true)]
    dest_shared_blob_dir: Option<String>,
    #[arg(long, hide = true)]
    dest_daemon_host: Option<String>,
    #[arg(long, short = 'f', hide = true)]
    format: Option<String>,
    #[arg(long, short = 'a', hide = true)]
    all: bool,
    #[arg(long, hide = true)]
    sign_by: Option<String>,
    #[arg(long, hide = true)]
    sign_by_sigstore: Option<String>,
    #[arg(long, hide = true)]
    sign_by_sigstore_private_key: Option<String>,
    #[arg(long, hide = true)]
    sign_passphrase_file: Option<String>,
    #[arg(long, hide = true)]
    sign_identity: Option<String>,
    #[arg(long, hide = true)]
    additional_tag: Option<String>,
    #[arg(long, hide = true)]
    encryption_key: Option<String>,
    #[arg(long, hide = true)]
    encrypt_layer: Option<String>,
    #[arg(long, hide = true)]
    decryption_key: Option<String>,
    #[arg(long, hide = true)]
    src_shared_blob_dir: Option<String>,
    #[arg(long, hide = true)]
    src_daemon_host: Option<String>,
    #[arg(long, hide = true)]
    src_registry_token: Option<String>,
}

impl RejectedFlags {
    /// The first given flag, spelled as on the command line.
    fn first_given(&self) -> Option<&'static str> {
        let given: [(bool, &'static str); 23] = [
            (self.dest_username.is_some(), "--dest-username"),
            (self.dest_password.is_some(), "--dest-password"),
            (self.dest_registry_token.is_some(), "--dest-registry-token"),
            (self.dest_compress, "--dest-compress"),
            (self.dest_compress_level.is_some(), "--dest-compress-level"),
            (self.dest_decompress, "--dest-decompress"),
            (
                self.dest_oci_accept_uncompressed_layers,
                "--dest-oci-accept-uncompressed-layers",
            ),
            (self.dest_precompute_digests, "--dest-precompute-digests"),
            (
                self.dest_shared_blob_dir.is_some(),
                "--dest-shared-blob-dir",
            ),
            (self.dest_daemon_host.is_some(), "--dest-daemon-host"),
            (self.format.is_some(), "--format"),
            (self.all, "--all"),
            (self.sign_by.is_some(), "--sign-by"),
            (self.sign_by_sigstore.is_some(), "--sign-by-sigstore"),
            (
                self.sign_by_sigstore_private_key.is_some(),
                "--sign-by-sigstore-private-key",
            ),
            (
                self.sign_passphrase_file.is_some(),
                "--sign-passphrase-file",
            ),
            (self.sign_identity.is_some(), "--sign-identity"),
            (self.additional_tag.is_some(), "--additional-tag"),
            (self.encryption_key.is_some(), "--encryption-key"),
            (self.encrypt_layer.is_some(), "--encrypt-layer"),
            (self.decryption_key.is_some(), "--decryption-key"),
            (self.src_shared_blob_dir.is_some(), "--src-shared-blob-dir"),
            (
                self.src_daemon_host.is_some() || self.src_registry_token.is_some(),
                "--src-daemon-host/--src-registry-token",
            ),
        ];
        given.iter().find(|(g, _)| *g).map(|(_, name)| *name)
    }
}

impl CopyArgs {
    fn source_options(&self, global: &GlobalOptions) -> Result<SourceOptions> {
        let mut options = self.src.options(global, self.authfile.as_ref())?;
        match (&options.creds, &self.src_username, &self.src_password) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                bail!("--src-creds and --src-username/--src-password cannot be used together")
            }
            (None, Some(_), _) if options.no_creds => {
                bail!("--src-no-creds and --src-username cannot be used together")
            }
            (None, Some(u), p) => options.creds = Some((u.clone(), p.clone().unwrap_or_default())),
            (None, None, Some(_)) => bail!("--src-password needs --src-username"),
            _ => {}
        }
        options.storage_root = self.storage_root.clone();
        options.run_root = self.run_root.clone();
        Ok(options)
    }
}

pub(crate) async fn run(args: CopyArgs, global: &GlobalOptions) -> Result<()> {
    if let Some(flag) = args.rejected.first_given() {
        bail!("{flag} is not supported by skiff copy");
    }
    let source_ref: ImageRef = args.source.parse()?;
    if let ImageRef::Composefs { repo, image } = &source_ref {
        return copy_out(&args, global, &source_ref, repo, image).await;
    }
    let dest_ref: ImageRef = args.destination.parse()?;
    if let Some(flag) = args.dest.first_given() {
        bail!(
            "{flag} applies when copying out of composefs storage (source composefs:...), not to \
             a copy from {source_ref} to {dest_ref}"
        );
    }
    if let Some(mode) = args.multi_arch.as_deref().filter(|m| *m != "system") {
        bail!(
            "--multi-arch {mode} has no meaning when the destination is composefs storage (it stores one image: --multi-arch system)"
        );
    }
    let ImageRef::Composefs { repo, image } = &dest_ref else {
        bail!(
            "destination {dest_ref}: skiff copies into composefs storage; use composefs:PATH:NAME"
        );
    };
    let StoredRef::Tag(tag) = image else {
        bail!(
            "destination {dest_ref}: name the image (composefs:PATH:NAME); a digest cannot be a destination"
        );
    };
    let options = args.source_options(global)?;
    let repo_path = repository_path(repo)?;
    let outcome = skiff_storage::repository::init(
        &repo_path,
        InitOptions {
            hash: Default::default(),
            require_verity: args.require_verity,
            allow_non_empty: false,
        },
    )
    .with_context(|| format!("Destination {dest_ref}"))?;
    let output = Output::new(args.progress, args.quiet);
    if outcome.insecure {
        output.notice(&format!(
            "{} has no fs-verity: the repository runs in insecure mode",
            repo_path.display()
        ));
    }
    super::with_repo_hash!(&repo_path, H => copy_into::<H>(&args, &options, &source_ref, &dest_ref, &repo_path, tag, output).await)
}

/// Delta layers fetched from a registry at once when `--jobs` is not given.
const REGISTRY_DELTA_JOBS: usize = 2;

async fn copy_into<H: FsVerityHashValue>(
    args: &CopyArgs,
    options: &SourceOptions,
    source_ref: &ImageRef,
    dest_ref: &ImageRef,
    repo_path: &std::path::Path,
    tag: &str,
    output: Output,
) -> Result<()> {
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut store =
        Store::<H>::open_writable(repo_path).with_context(|| format!("Destination {dest_ref}"))?;
    store.set_write_concurrency(jobs)?;
    let keep_blobs = args.keep_blobs || RepoSettings::load(repo_path)?.keep_blobs;
    if args.expose {
        // Before any work: a copy that cannot be exposed is refused, not half done.
        super::podman::layer_store_of(repo_path)?;
    }
    let source = Arc::new(Source::open(source_ref, options).await?);
    log::info!("reading {source_ref} via {}", source.kind());
    let observer = output.observer();
    let summary = copy_image(
        source.clone(),
        &store,
        tag,
        &CopyOptions {
            jobs,
            // Deltas from a registry: a tar-diff is small and the source image's reads are
            // the work, so two at once unless --jobs says otherwise; locally, every core.
            delta_jobs: match args.jobs {
                None if source.is_remote() => REGISTRY_DELTA_JOBS,
                _ => jobs,
            },
            // A delta rebuilds layers without their blobs: keeping blobs means fetching them.
            use_deltas: !args.no_delta && !keep_blobs,
            retry_times: args.retry_times,
            keep_blobs,
        },
        observer.clone(),
    )
    .await?;
    observer.finish();
    if let Some(path) = &args.digestfile {
        std::fs::write(path, &summary.manifest_digest)
            .with_context(|| format!("Writing the digest file {}", path.display()))?;
    }
    output.summary(source_ref, dest_ref, &summary);
    if args.expose {
        let path = repo_path.to_owned();
        let image = StoredRef::Tag(tag.to_owned());
        let layers = tokio::task::spawn_blocking(move || super::podman::expose::<H>(&path, &image))
            .await??;
        if !args.quiet {
            super::podman::print_exposed(&layers);
        }
    }
    Ok(())
}

/// `skiff copy composefs:... DESTINATION`: an image out of the store.
async fn copy_out(
    args: &CopyArgs,
    global: &GlobalOptions,
    source_ref: &ImageRef,
    repo: &Option<PathBuf>,
    image: &StoredRef,
) -> Result<()> {
    if let Some(flag) = args.src.first_given() {
        bail!("{flag} has no meaning when the source is composefs storage");
    }
    for (given, flag) in [
        (args.src_username.is_some(), "--src-username"),
        (args.src_password.is_some(), "--src-password"),
        (args.keep_blobs, "--keep-blobs"),
        (args.no_delta, "--no-delta"),
        (args.require_verity, "--require-verity"),
        (args.retry_times > 0, "--retry-times"),
        (args.multi_arch.is_some(), "--multi-arch"),
        (args.expose, "--expose"),
    ] {
        if given {
            bail!("{flag} has no meaning when the source is composefs storage");
        }
    }
    let dest_ref: ImageRef = args.destination.parse()?;
    if matches!(dest_ref, ImageRef::Composefs { .. }) {
        bail!(
            "copying from one composefs repository to another is not supported (copy out to \
             an oci: layout and in again, or use cfsctl oci copy)"
        );
    }
    let mut options = args.dest.options(global, args.authfile.as_ref())?;
    if let Some(jobs) = args.jobs {
        options.jobs = jobs;
    }
    let repo_path = repository_path(repo)?;
    let summary = super::with_repo_hash!(&repo_path, H => {
        let store = Store::<H>::open(&repo_path)
            .with_context(|| format!("Source {source_ref}"))?;
        skiff_transport::push::copy_out(&store, image, &dest_ref, &options).await?
    });
    if let Some(path) = &args.digestfile {
        std::fs::write(path, &summary.manifest_digest)
            .with_context(|| format!("Writing the digest file {}", path.display()))?;
    }
    Output::new(args.progress, args.quiet)
        .copy_out_summary(source_ref, &dest_ref, &summary, &options);
    Ok(())
}
