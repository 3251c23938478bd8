//! `skiff sync`: mirror images, with their indexes, referrers and digests, between registries
//! and OCI layouts. Prints one line per image and a summary (or JSON lines), with GitHub
//! Actions' `::group::` markers when `GITHUB_ACTIONS=true`.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use skiff_transport::platform::WantedPlatform;
use skiff_transport::sync::inputs::{self, DestinationKind, PairSettings};
use skiff_transport::sync::{self, ImageReport, Status, SyncOptions, SyncPair, TagSelection};

use super::GlobalOptions;
use super::registry_flags::{DestRegistryFlags, SrcRegistryFlags};

#[derive(Debug, Args)]
pub(crate) struct SyncArgs {
    /// The image (docker://NAME:TAG, docker://NAME@DIGEST, oci:PATH:TAG, composefs:PATH:NAME
    /// with kept blobs) or repository (docker://NAME, oci:PATH: every tag) to mirror; with
    /// --src yaml, skopeo sync's YAML file.
    source: Option<String>,
    /// Where it goes: docker://NAME[:TAG] or oci:PATH[:TAG]; with --src yaml, the registry
    /// namespace (HOST/PATH) or, with --dest oci, the directory, each image going to
    /// DESTINATION/REGISTRY/REPOSITORY.
    destination: Option<String>,
    /// Mirror every pair of this list: `SOURCE DESTINATION [key=value ...]` a line, `#`
    /// comments (options: referrers=, cosign=, force=, tag-regex=, platforms=,
    /// allow-digest-change=).
    #[arg(long, value_name = "LIST", conflicts_with_all = ["source", "destination", "src"])]
    from_file: Option<PathBuf>,
    /// `yaml`: SOURCE is skopeo sync's YAML (images, images-by-tag-regex, credentials,
    /// tls-verify, cert-dir).
    #[arg(long, value_enum, value_name = "yaml")]
    src: Option<SrcKind>,
    /// With --src yaml: whether DESTINATION is a registry namespace (docker, the default) or
    /// a directory of OCI layouts (oci).
    #[arg(long, value_enum, value_name = "docker|oci", requires = "src")]
    dest: Option<DestKind>,
    /// Do not copy referrers (deltas, signatures, SBOMs attached to the images).
    #[arg(long)]
    no_referrers: bool,
    /// Also copy cosign's sha256-HEX.sig, .att and .sbom tags.
    #[arg(long)]
    cosign: bool,
    /// Move a destination tag that is at another digest than a source pinned by digest.
    #[arg(long)]
    force: bool,
    /// Keep only this platform of an index (OS/ARCH[/VARIANT]; repeat for more). The index
    /// written is a new one, with another digest: needs --allow-digest-change.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]", value_parser = WantedPlatform::parse)]
    platform: Vec<WantedPlatform>,
    /// Let --platform write an index whose digest is not the source's.
    #[arg(long)]
    allow_digest_change: bool,
    /// List what would be copied, and copy nothing.
    #[arg(long)]
    dry_run: bool,
    /// Afterwards, read every manifest and blob back from the destination and check its digest.
    #[arg(long)]
    verify: bool,
    /// Go on with the other images after one fails (then exit 1).
    #[arg(long)]
    keep_going: bool,
    /// Print one JSON object per line.
    #[arg(long)]
    json: bool,
    /// Number of times to retry a failed request (network errors, HTTP 429, 502, 503, 504),
    /// after 1s, 2s, 4s...
    #[arg(long, value_name = "N", default_value_t = 3)]
    retry_times: u32,
    /// Blobs copied at once.
    #[arg(long, short = 'j', value_name = "N", default_value_t = 4)]
    jobs: usize,
    /// Print only errors and the summary.
    #[arg(short, long)]
    quiet: bool,

    /// Path of the authentication file (default: skopeo's lookup of auth.json).
    #[arg(long, value_name = "PATH")]
    authfile: Option<PathBuf>,
    #[command(flatten)]
    src_registry: SrcRegistryFlags,
    #[command(flatten)]
    dest_registry: DestRegistryFlags,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SrcKind {
    Yaml,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DestKind {
    Docker,
    Oci,
}

impl SyncArgs {
    fn options(&self, global: &GlobalOptions) -> Result<SyncOptions> {
        let source = self.src_registry.options(global, self.authfile.as_ref())?;
        let destination = self.dest_registry.options(global, self.authfile.as_ref())?;
        anyhow::ensure!(self.jobs > 0, "--jobs must be at least 1");
        Ok(SyncOptions {
            source,
            destination,
            referrers: !self.no_referrers,
            cosign: self.cosign,
            force: self.force,
            platforms: self.platform.clone(),
            allow_digest_change: self.allow_digest_change,
            dry_run: self.dry_run,
            verify: self.verify,
            retry_times: self.retry_times,
            jobs: self.jobs,
        })
    }

    /// The pairs named on the command line, in the list, or in the YAML.
    fn pairs(&self) -> Result<Vec<(SyncPair, PairSettings)>> {
        if let Some(list) = &self.from_file {
            return inputs::read_list(list);
        }
        let (Some(source), Some(destination)) = (&self.source, &self.destination) else {
            bail!("give SOURCE and DESTINATION, or --from-file LIST");
        };
        if self.src.is_some() {
            let kind = match self.dest {
                Some(DestKind::Oci) => DestinationKind::Oci,
                Some(DestKind::Docker) | None => DestinationKind::Docker,
            };
            return inputs::read_yaml(source.as_ref(), destination, kind);
        }
        Ok(vec![(
            SyncPair {
                source: source.parse()?,
                destination: destination.parse()?,
                tags: TagSelection::All,
            },
            PairSettings::default(),
        )])
    }
}

/// What is printed.
struct Printer {
    json: bool,
    quiet: bool,
    groups: bool,
}

impl Printer {
    fn group(&self, title: &str) {
        if self.groups && !self.json {
            println!("::group::{title}");
        }
    }

    fn end_group(&self) {
        if self.groups && !self.json {
            println!("::endgroup::");
        }
    }

    fn report(&self, report: &ImageReport) {
        if self.json {
            let mut value = serde_json::to_value(report).unwrap_or_default();
            value["event"] = "image".into();
            println!("{value}");
            return;
        }
        if self.quiet {
            return;
        }
        let t = &report.transfer;
        let (src, dst) = (&report.source, &report.destination);
        let digest = match &report.filtered_from {
            Some(from) => format!("{}, a new index of some platforms of {from}", report.digest),
            None => report.digest.clone(),
        };
        match report.status {
            Status::UpToDate => println!("{src} → {dst} ({digest}): up to date"),
            Status::Mirrored => println!(
                "Copying {src} → {dst} ({digest}): {} blobs ({}) copied, {} mounted, {} present; \
                 {} manifests written; {} referrers{}",
                t.blobs_copied,
                super::output::human(t.bytes_copied),
                t.blobs_mounted,
                t.blobs_present,
                t.manifests_pushed,
                t.referrers,
                report
                    .verified
                    .map(|n| format!("; verified {n} digests"))
                    .unwrap_or_default()
            ),
            Status::WouldCopy => {
                println!("Would copy {src} → {dst} ({digest}):");
                for line in &report.would_write {
                    println!("  {line}");
                }
            }
        }
    }

    fn failure(&self, source: &str, destination: &str, error: &anyhow::Error) {
        if self.json {
            println!(
                "{}",
                serde_json::json!({
                    "event": "failed", "source": source, "destination": destination,
                    "error": format!("{error:#}"),
                })
            );
        } else {
            eprintln!("skiff: {source} → {destination}: {error:#}");
        }
    }
}

/// Counts of the summary line.
#[derive(Default)]
struct Tally {
    mirrored: u64,
    up_to_date: u64,
    would_copy: u64,
    failed: u64,
    bytes_copied: u64,
    requests: u64,
}

/// Images failed, their errors printed already: only the exit status remains to give.
#[derive(Debug)]
pub(crate) struct SomeFailed(pub u64);

impl std::fmt::Display for SomeFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} image(s) failed", self.0)
    }
}

impl std::error::Error for SomeFailed {}

pub(crate) async fn run(args: SyncArgs, global: &GlobalOptions) -> Result<()> {
    let options = args.options(global)?;
    let pairs = args.pairs()?;
    let printer = Printer {
        json: args.json,
        quiet: args.quiet,
        groups: std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true"),
    };
    let mut tally = Tally::default();
    let mut first_error = None;
    'pairs: for (pair, settings) in &pairs {
        let options = options.with(settings);
        let jobs = match sync::expand(pair, &options).await {
            Ok(jobs) => jobs,
            Err(e) => {
                printer.failure(&pair.source.to_string(), &pair.destination.to_string(), &e);
                tally.failed += 1;
                if !args.keep_going {
                    first_error = Some(e);
                    break 'pairs;
                }
                continue;
            }
        };
        for job in jobs {
            printer.group(&format!("{} → {}", job.source, job.destination));
            let outcome = sync::sync_image(&job, &options).await;
            match &outcome {
                Ok(report) => {
                    printer.report(report);
                    tally.requests += report.transfer.requests;
                    tally.bytes_copied += report.transfer.bytes_copied;
                    match report.status {
                        Status::Mirrored => tally.mirrored += 1,
                        Status::UpToDate => tally.up_to_date += 1,
                        Status::WouldCopy => tally.would_copy += 1,
                    }
                }
                Err(e) => {
                    printer.failure(&job.source, &job.destination, e);
                    tally.failed += 1;
                }
            }
            printer.end_group();
            if let Err(e) = outcome
                && !args.keep_going
            {
                first_error = Some(e);
                break 'pairs;
            }
        }
    }
    if printer.json {
        let value = serde_json::json!({
            "event": "summary",
            "mirrored": tally.mirrored,
            "up_to_date": tally.up_to_date,
            "would_copy": tally.would_copy,
            "failed": tally.failed,
            "bytes_copied": tally.bytes_copied,
            "requests": tally.requests,
        });
        println!("{value}");
    } else {
        let mut line = format!(
            "Mirrored {}, up to date {}, failed {}",
            tally.mirrored, tally.up_to_date, tally.failed
        );
        if args.dry_run {
            line.push_str(&format!(", would copy {}", tally.would_copy));
        }
        line.push_str(&format!(
            " ({} copied, {} requests)",
            super::output::human(tally.bytes_copied),
            tally.requests
        ));
        println!("{line}");
    }
    match first_error {
        // Printed already; what remains is its exit status (2 for a missing source).
        Some(e) => Err(e.context(SomeFailed(tally.failed))),
        None if tally.failed > 0 => Err(SomeFailed(tally.failed).into()),
        None => Ok(()),
    }
}
