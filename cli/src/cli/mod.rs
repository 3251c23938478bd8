//! Command-line interface: skopeo's flag names and meanings, plus the store commands.

mod copy;
mod delta;
pub mod help;
pub mod logger;
mod output;
mod podman;
mod registry_flags;
mod serve;
mod store;
mod sync;
mod watch;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use skiff_storage::HashAlgorithm;

/// Runs `$body` with the type alias `$h` set to the object-id type of the repository at `$path`.
macro_rules! with_repo_hash {
    ($path:expr, $h:ident => $body:expr) => {
        match skiff_storage::repository::repository_algorithm($path)? {
            skiff_storage::HashAlgorithm::Sha256 => {
                type $h = skiff_storage::Sha256HashValue;
                $body
            }
            skiff_storage::HashAlgorithm::Sha512 => {
                type $h = skiff_storage::Sha512HashValue;
                $body
            }
        }
    };
}
pub(crate) use with_repo_hash;

/// The command line: global options and one command.
#[derive(Debug, Parser)]
#[command(
    name = "skiff",
    version,
    about = help::ABOUT,
    long_about = help::LONG_ABOUT,
    after_help = help::examples(help::SKIFF)
)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalOptions,
    #[command(subcommand)]
    command: Command,
}

/// skopeo's global options that skiff honours.
#[derive(Debug, Args, Clone)]
pub(crate) struct GlobalOptions {
    /// Use ARCH instead of the machine's architecture when choosing an image.
    #[arg(long, global = true, value_name = "ARCH")]
    override_arch: Option<String>,
    /// Use OS instead of the machine's OS when choosing an image.
    #[arg(long, global = true, value_name = "OS")]
    override_os: Option<String>,
    /// Use VARIANT instead of the machine's architecture variant when choosing an image.
    #[arg(long, global = true, value_name = "VARIANT")]
    override_variant: Option<String>,
    /// Path to a signature policy file.
    #[arg(long, global = true, value_name = "PATH")]
    policy: Option<PathBuf>,
    /// Run without any policy check.
    #[arg(long, global = true)]
    insecure_policy: bool,
    /// Log debug messages.
    #[arg(long, global = true)]
    debug: bool,
    /// Give up on a command after this long (for example 90s, 5m, 1h).
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_duration)]
    command_timeout: Option<std::time::Duration>,
}

/// Parses skopeo's (Go) durations: a number with a unit of h, m, s or ms, or a sum of them.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let mut total = std::time::Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("invalid duration {text:?}"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let seconds = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return Err(format!("invalid duration {text:?}: use h, m, s or ms")),
        };
        total += std::time::Duration::from_secs_f64(value * seconds);
        rest = tail;
    }
    Ok(total)
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Copy an image into composefs storage (skiff copy [flags] SOURCE composefs:PATH:NAME), or
    /// out of it (skiff copy [flags] composefs:PATH:NAME DESTINATION).
    #[command(after_help = help::examples(help::COPY))]
    Copy(Box<copy::CopyArgs>),
    /// oci-delta artifacts: skiff delta create OLD NEW DESTINATION.
    #[command(subcommand, after_help = help::examples(help::DELTA))]
    Delta(DeltaCommand),
    /// Create a composefs repository (insecure mode, with a notice, where there is no fs-verity).
    #[command(after_help = help::examples(help::INIT))]
    Init {
        /// Where to create it.
        path: PathBuf,
        /// Object-name algorithm.
        #[arg(long, value_enum, default_value_t = HashArg::Sha512)]
        hash: HashArg,
        /// Refuse to create a repository without fs-verity.
        #[arg(long)]
        require_verity: bool,
        /// Keep the original compressed blob of every layer pulled in full, so that images copied
        /// out keep their manifest digests (a setting of the repository, in skiff.json; also for
        /// an existing repository).
        #[arg(long)]
        keep_blobs: bool,
    },
    /// List the images of a repository (default: $SKIFF_REPO, else ~/.var/lib/composefs).
    #[command(after_help = help::examples(help::IMAGES))]
    Images {
        /// The repository.
        path: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show an image of a repository, as skopeo inspect does.
    #[command(after_help = help::examples(help::INSPECT))]
    Inspect {
        /// composefs:PATH:NAME, composefs:PATH@sha256:HEX or composefs::NAME.
        image: String,
        /// Print the raw manifest (with --config: the raw config).
        #[arg(long)]
        raw: bool,
        /// Print the image's config.
        #[arg(long)]
        config: bool,
    },
    /// Remove an image's tag; its data goes at the next gc.
    #[command(after_help = help::examples(help::RM))]
    Rm {
        /// composefs:PATH:NAME or composefs:PATH@sha256:HEX (removes every tag of that image).
        image: String,
    },
    /// Remove what no tag reaches and report what was freed.
    #[command(after_help = help::examples(help::GC))]
    Gc {
        /// The repository.
        path: Option<PathBuf>,
    },
    /// Serve a repository over the OCI distribution API, so that skopeo, podman, crane and oras
    /// pull from and push to it.
    #[command(after_help = help::examples(help::SERVE))]
    Serve(Box<serve::ServeArgs>),
    /// Serve the repository's layers to podman's pulls (an Additional Layer Store).
    #[command(subcommand, after_help = help::examples(help::PODMAN))]
    Podman(podman::PodmanCommand),
    /// Mirror images between registries and OCI layouts with their indexes, referrers
    /// (deltas, signatures) and digests unchanged.
    #[command(after_help = help::examples(help::SYNC))]
    Sync(Box<sync::SyncArgs>),
    /// Check every object, stream, image and content index.
    #[command(after_help = help::examples(help::FSCK))]
    Fsck {
        /// The repository.
        path: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum DeltaCommand {
    /// Make the delta that rebuilds NEW from OLD (apply it with skiff copy DELTA composefs:...).
    #[command(after_help = help::examples(help::DELTA_CREATE))]
    Create(Box<delta::CreateArgs>),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum HashArg {
    Sha256,
    Sha512,
}

impl From<HashArg> for HashAlgorithm {
    fn from(h: HashArg) -> Self {
        match h {
            HashArg::Sha256 => HashAlgorithm::Sha256,
            HashArg::Sha512 => HashAlgorithm::Sha512,
        }
    }
}

/// The clap definition of the command line, from which the man pages and completions are made.
pub fn command() -> clap::Command {
    Cli::command()
}

/// Parses the command line: help and version exit 0, usage errors exit 1 (as skopeo's do),
/// not clap's 2, which skiff keeps for a missing source image.
pub fn parse() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() { 1 } else { 0 });
        }
    }
}

/// Runs the command.
pub async fn run(cli: Cli) -> Result<()> {
    if cli.global.debug {
        log::set_max_level(log::LevelFilter::Debug);
    }
    let command = async {
        match cli.command {
            Command::Copy(args) => copy::run(*args, &cli.global).await,
            Command::Delta(DeltaCommand::Create(args)) => delta::create(*args, &cli.global).await,
            // The store commands block: on a thread of their own, so the timeout can end them.
            Command::Init {
                path,
                hash,
                require_verity,
                keep_blobs,
            } => {
                blocking(move || store::init(&path, hash.into(), require_verity, keep_blobs)).await
            }
            Command::Images { path, json } => blocking(move || store::images(path, json)).await,
            Command::Inspect { image, raw, config } => {
                blocking(move || store::inspect(&image, raw, config)).await
            }
            Command::Rm { image } => blocking(move || store::rm(&image)).await,
            Command::Gc { path } => blocking(move || store::gc(path)).await,
            Command::Fsck { path } => store::fsck(path).await,
            Command::Serve(args) => serve::run(*args).await,
            Command::Sync(args) => sync::run(*args, &cli.global).await,
            Command::Podman(podman::PodmanCommand::Watch(args)) => {
                watch::run(args, &cli.global).await
            }
            Command::Podman(command) => blocking(move || podman::run(command)).await,
        }
    };
    match cli.global.command_timeout {
        Some(limit) => tokio::time::timeout(limit, command).await.map_err(|_| {
            anyhow::anyhow!("the command did not finish within --command-timeout ({limit:?})")
        })?,
        None => command.await,
    }
}

/// SIGTERM and SIGINT, listened to from creation on (a signal before the first
/// [`Self::recv`] is not lost): how `skiff serve` and `skiff podman watch` are stopped.
pub(crate) struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    pub(crate) fn new() -> Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Completes at the next SIGTERM or SIGINT.
    pub(crate) async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Runs blocking `work` off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work).await?
}

/// `USER[:PASSWORD]` as skopeo's `--*-creds` flags take it (no `:`: an empty password).
fn parse_creds(value: &str, flag: &str) -> Result<(String, String)> {
    let (user, password) = value.split_once(':').unwrap_or((value, ""));
    anyhow::ensure!(!user.is_empty(), "{flag}: empty user name");
    Ok((user.to_owned(), password.to_owned()))
}

/// [`parse_creds`] of a flag that may be absent.
fn parse_optional_creds(value: Option<&str>, flag: &str) -> Result<Option<(String, String)>> {
    value.map(|v| parse_creds(v, flag)).transpose()
}

/// What to print of `error`: all of it, unless it only says how many images failed whose
/// errors were printed as they happened.
pub fn message(error: &anyhow::Error) -> String {
    match error.downcast_ref::<sync::SomeFailed>() {
        Some(failed) => failed.to_string(),
        None => format!("{error:#}"),
    }
}

/// Exit status for an error: 2 when the source image does not exist, as skopeo does.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    if error
        .chain()
        .any(|e| e.is::<skiff_transport::options::SourceNotFound>())
    {
        2
    } else {
        1
    }
}
