//! `skiff delta create`: make an oci-delta artifact from two images.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use skiff_storage::images::StoredRef;
use skiff_storage::{FsVerityHashValue, InitOptions, Store};
use skiff_transport::delta_create::{
    CreateOptions, CreateSummary, NewImage, check_destination, create_delta,
};
use skiff_transport::format::oci_delta::tar_diff::BinaryDiff;
use skiff_transport::options::SourceOptions;
use skiff_transport::pull::{CopyOptions, NoObserver, copy_image};
use skiff_transport::reference::{ImageRef, repository_path};
use skiff_transport::source::Source;
use skiff_transport::source::layout::LayoutSource;
use skiff_transport::source::skopeo::copy_to_layout;

use super::GlobalOptions;
use super::output::human;
use super::registry_flags::{DestRegistryFlags, SrcRegistryFlags};
use super::with_repo_hash;

/// `skiff delta create [flags] OLD NEW DESTINATION`.
#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// How changed files are diffed: bsdiff (tardf1), zstd (a zstd frame with the old file as
    /// dictionary, tardf2) or auto (per file the smaller of the two; tardf2).
    #[arg(long, value_name = "METHOD", default_value = "bsdiff")]
    binary_diff: BinaryDiff,
    /// Layers diffed at once (default: number of CPUs).
    #[arg(short = 'j', long, value_name = "N")]
    jobs: Option<usize>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    // --dest-* for a docker:// destination, --src-* for OLD and NEW in a registry.
    #[command(flatten)]
    dest_registry: DestRegistryFlags,
    #[command(flatten)]
    src_registry: SrcRegistryFlags,
    /// The image the receiver has: composefs:PATH:NAME, or any source skiff reads.
    old: String,
    /// The image the delta rebuilds: composefs:PATH:NAME, or any source skopeo reads (oci: and
    /// uncompressed oci-archive: directly; others are first copied by skopeo into a temporary
    /// OCI layout, digests preserved).
    new: String,
    /// Where to write the delta: oci-archive:PATH, oci:PATH[:NAME] or docker://NAME[:TAG] (in
    /// a registry, it is also listed under NEW's referrers tag).
    destination: String,
}

pub(crate) async fn create(args: CreateArgs, global: &GlobalOptions) -> Result<()> {
    let old: ImageRef = args.old.parse()?;
    let new: ImageRef = args.new.parse()?;
    let dest: ImageRef = args.destination.parse()?;
    check_destination(&dest)?;
    let dest_options = args.dest_registry.options(global, None)?;
    let options = args.src_registry.options(global, None)?;
    let (new_image, _new_scratch) = load_new(&new, &options).await?;
    let create = CreateOptions {
        binary_diff: args.binary_diff,
        jobs: args
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
    };
    let (repo_path, tag, _old_scratch) = old_in_repository(&old, &options, create.jobs).await?;
    let summary = with_repo_hash!(&repo_path, H => run::<H>(&repo_path, &tag, new_image, &dest, &dest_options, create).await)?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&dest, &summary);
    }
    Ok(())
}

/// NEW, read where it is (a composefs repository, an OCI layout or uncompressed oci-archive),
/// else copied by skopeo into a temporary layout, which is returned to be kept while in use.
async fn load_new(
    new: &ImageRef,
    options: &SourceOptions,
) -> Result<(NewImage, Option<tempfile::TempDir>)> {
    if let ImageRef::Composefs { repo, image } = new {
        let path = repository_path(repo)?;
        let image =
            with_repo_hash!(&path, H => NewImage::from_store(Store::<H>::open(&path)?, image))
                .with_context(|| format!("NEW {new}"))?;
        return Ok((image, None));
    }
    let direct = match new {
        ImageRef::Oci { .. } | ImageRef::OciArchive { .. } => {
            let (new, options) = (new.clone(), options.clone());
            tokio::task::spawn_blocking(move || LayoutSource::open(&new, &options)).await??
        }
        _ => None,
    };
    let (layout, scratch) = match direct {
        Some(layout) => (layout, None),
        None => {
            let (layout, scratch) = copy_to_layout(new, options).await?;
            (layout, Some(scratch))
        }
    };
    Ok((NewImage::from_layout(layout).await?, scratch))
}

/// The composefs repository and tag holding OLD's files: its own, or a temporary one it is
/// copied into (returned to be kept while in use).
async fn old_in_repository(
    old: &ImageRef,
    options: &SourceOptions,
    jobs: usize,
) -> Result<(PathBuf, String, Option<tempfile::TempDir>)> {
    if let ImageRef::Composefs { repo, image } = old {
        let StoredRef::Tag(tag) = image else {
            bail!("OLD {old}: name the image by tag (composefs:PATH:NAME)");
        };
        return Ok((repository_path(repo)?, tag.clone(), None));
    }
    let scratch = tempfile::Builder::new().prefix("skiff-delta-").tempdir()?;
    let path = scratch.path().join("repo");
    skiff_storage::repository::init(&path, InitOptions::default())?;
    let store = Store::<skiff_storage::Sha512HashValue>::open_writable(&path)?;
    let source = Arc::new(Source::open(old, options).await?);
    let copy = CopyOptions {
        jobs,
        delta_jobs: jobs,
        use_deltas: false,
        retry_times: 0,
        keep_blobs: false,
    };
    copy_image(source, &store, "old", &copy, Arc::new(NoObserver))
        .await
        .context("Reading OLD")?;
    Ok((path, "old".to_owned(), Some(scratch)))
}

async fn run<H: FsVerityHashValue>(
    repo_path: &std::path::Path,
    tag: &str,
    new: NewImage,
    dest: &ImageRef,
    dest_options: &SourceOptions,
    options: CreateOptions,
) -> Result<CreateSummary> {
    let store = Store::<H>::open(repo_path)?;
    create_delta(&store, tag, new, dest, dest_options, options).await
}

fn print_summary(dest: &ImageRef, s: &CreateSummary) {
    println!("Wrote delta {} to {dest}", s.delta_digest);
    println!(
        "  layers    {} reused, {} tar-diff, {} whole",
        s.layers_reused, s.layers_tar_diff, s.layers_original
    );
    let percent = if s.replaced_bytes > 0 {
        100.0 * s.delta_bytes as f64 / s.replaced_bytes as f64
    } else {
        0.0
    };
    println!(
        "  size      {} for {} of layers ({percent:.1}%)",
        human(s.delta_bytes),
        human(s.replaced_bytes)
    );
    println!("  time      {:.2}s", s.seconds);
}
