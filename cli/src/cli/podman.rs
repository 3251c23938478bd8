//! `skiff podman`: the store's layers served to podman's pulls (an Additional Layer Store).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use skiff_storage::images::StoredRef;
use skiff_storage::settings::RepoSettings;
use skiff_storage::{FsVerityHashValue, Store};
use skiff_transport::podman::layer_store::{ExposedLayer, LayerStore};
use skiff_transport::podman::storage_conf;
use skiff_transport::reference::default_repository;

use super::{help, with_repo_hash};

/// Where `skiff podman enable` puts the layer store unless told.
pub(crate) const DEFAULT_LAYER_STORE: &str = "/var/lib/skiff/als";

#[derive(Debug, Subcommand)]
pub(crate) enum PodmanCommand {
    /// Make a directory the Additional Layer Store of a repository and list it in podman's
    /// storage.conf.
    #[command(after_help = help::examples(help::PODMAN_ENABLE))]
    Enable(EnableArgs),
    /// Make the layers of a stored image available to podman's pulls.
    #[command(after_help = help::examples(help::PODMAN_EXPOSE))]
    Expose {
        /// composefs:PATH:NAME or composefs:PATH@sha256:HEX.
        image: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the exposed layers, the stored images naming each and the podman layers using each.
    #[command(after_help = help::examples(help::PODMAN_STATUS))]
    Status {
        /// The repository (default: $SKIFF_REPO, else ~/.var/lib/composefs).
        repo: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Withdraw the layers no stored image names and podman does not use (skiff gc does too).
    #[command(after_help = help::examples(help::PODMAN_PRUNE))]
    Prune {
        /// The repository (default: $SKIFF_REPO, else ~/.var/lib/composefs).
        repo: Option<PathBuf>,
    },
    /// Copy every image podman pulls into the repository as it is pulled, read from podman's
    /// store (until SIGTERM or SIGINT).
    #[command(after_help = help::examples(help::PODMAN_WATCH))]
    Watch(super::watch::WatchArgs),
}

#[derive(Debug, Args)]
pub(crate) struct EnableArgs {
    /// The repository (default: $SKIFF_REPO, else ~/.var/lib/composefs).
    repo: Option<PathBuf>,
    /// The layer store directory.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_LAYER_STORE)]
    dir: PathBuf,
    /// The storage.conf to edit (default: $CONTAINERS_STORAGE_CONF, else
    /// /etc/containers/storage.conf, started from the distribution's when missing).
    #[arg(long, value_name = "PATH")]
    storage_conf: Option<PathBuf>,
    /// Podman graphroots whose layers may use the store (default: the storage.conf's graphroot,
    /// else /var/lib/containers/storage).
    #[arg(long, value_name = "DIR")]
    graphroot: Vec<PathBuf>,
    /// Print the storage.conf line instead of editing the file.
    #[arg(long)]
    print: bool,
}

/// Runs the blocking podman commands (`watch` is run by [`super::watch::run`]).
pub(crate) fn run(command: PodmanCommand) -> Result<()> {
    match command {
        PodmanCommand::Watch(_) => bail!("skiff podman watch runs asynchronously"),
        PodmanCommand::Enable(args) => enable(args),
        PodmanCommand::Expose { image, json } => {
            let (path, image) = super::store::stored_image(&image)?;
            let layers = with_repo_hash!(&path, H => expose::<H>(&path, &image)?);
            if json {
                println!("{}", serde_json::to_string_pretty(&layers)?);
            } else {
                print_exposed(&layers);
            }
            Ok(())
        }
        PodmanCommand::Status { repo, json } => {
            let path = repo.map_or_else(default_repository, Ok)?;
            let layer_store = layer_store_of(&path)?;
            let entries =
                with_repo_hash!(&path, H => layer_store.entries(&Store::<H>::open(&path)?)?);
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
                return Ok(());
            }
            println!("{}: {} layers", layer_store.dir().display(), entries.len());
            for e in entries {
                let images = if e.images.is_empty() {
                    "no stored image".to_owned()
                } else {
                    e.images.join(", ")
                };
                println!(
                    "{}  {}  {} podman layer(s)  {images}",
                    e.digest,
                    super::output::human(e.info.diff_size),
                    e.podman_layers.len()
                );
            }
            Ok(())
        }
        PodmanCommand::Prune { repo } => {
            let path = repo.map_or_else(default_repository, Ok)?;
            prune(&path)
        }
    }
}

fn enable(args: EnableArgs) -> Result<()> {
    let path = args.repo.map_or_else(default_repository, Ok)?;
    let conf = args
        .storage_conf
        .clone()
        .unwrap_or_else(storage_conf::active_storage_conf);
    let text = storage_conf::read_or_default(&conf)?;
    let graphroots = if args.graphroot.is_empty() {
        vec![
            storage_conf::graphroot(&text)
                .unwrap_or_else(|| PathBuf::from(storage_conf::DEFAULT_GRAPHROOT)),
        ]
    } else {
        args.graphroot
    };
    // The repository must exist and be skiff's to write.
    with_repo_hash!(&path, H => drop(Store::<H>::open_writable(&path)?));
    let layer_store = LayerStore::create(&args.dir, &path, graphroots)?;
    let mut settings = RepoSettings::load(&path)?;
    if settings.podman_layer_store.as_deref() != Some(layer_store.dir()) {
        settings.podman_layer_store = Some(layer_store.dir().to_owned());
        settings.save(&path)?;
    }
    println!(
        "{} serves the layers of {} to podman",
        layer_store.dir().display(),
        path.display()
    );
    if args.print {
        println!(
            "Add to [storage.options] of {}:\n{}",
            conf.display(),
            storage_conf::layer_store_line(layer_store.dir())
        );
        return Ok(());
    }
    match storage_conf::with_layer_store(&text, layer_store.dir())
        .with_context(|| format!("Editing {}", conf.display()))?
    {
        None => println!("{} lists it already", conf.display()),
        Some(new) => {
            write_atomically(&conf, new.as_bytes())?;
            println!("Listed it in {}", conf.display());
        }
    }
    Ok(())
}

/// The layer store `skiff podman enable` set up for the repository at `path`.
pub(crate) fn layer_store_of(path: &Path) -> Result<LayerStore> {
    match RepoSettings::load(path)?.podman_layer_store {
        Some(dir) => LayerStore::open(&dir),
        None => bail!(
            "{} has no podman layer store: run skiff podman enable {0}",
            path.display()
        ),
    }
}

/// Exposes `image` of the repository at `path` in its layer store.
pub(crate) fn expose<H: FsVerityHashValue>(
    path: &Path,
    image: &StoredRef,
) -> Result<Vec<ExposedLayer>> {
    let layer_store = layer_store_of(path)?;
    layer_store.expose(&Store::<H>::open(path)?, image)
}

pub(crate) fn print_exposed(layers: &[ExposedLayer]) {
    let written = layers.iter().filter(|l| l.written).count();
    let cloned: u64 = layers.iter().map(|l| l.cloned_bytes).sum();
    let copied: u64 = layers.iter().map(|l| l.copied_bytes).sum();
    println!(
        "Exposed {} layers to podman ({written} new, {} already there): {} cloned, {} written",
        layers.len(),
        layers.len() - written,
        super::output::human(cloned),
        super::output::human(copied)
    );
    if let Some(reason) = layers.iter().find_map(|l| l.clone_failure.as_deref()) {
        eprintln!(
            "warning: file contents were copied, not cloned ({reason}): put the layer store on \
             the repository's filesystem, on XFS or btrfs, to share them"
        );
    }
}

/// Withdraws what no stored image names from the repository's layer store, if it has one.
pub(crate) fn prune(path: &Path) -> Result<()> {
    let layer_store = layer_store_of(path)?;
    let report = with_repo_hash!(path, H => layer_store.prune(&Store::<H>::open(path)?)?);
    println!(
        "Withdrew {} layers from {}; kept {} that podman still uses",
        report.withdrawn.len(),
        layer_store.dir().display(),
        report.kept_in_use.len()
    );
    Ok(())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".skiff-storage-conf-")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))?;
    }
    tmp.persist(path)
        .with_context(|| format!("Writing {}", path.display()))?;
    Ok(())
}
