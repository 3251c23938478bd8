//! `skiff serve`: the OCI distribution API over a repository, until SIGTERM or SIGINT.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use skiff_storage::{FsVerityHashValue, Store};
use skiff_transport::serve::{ServeOptions, TlsFiles, bind};

use super::with_repo_hash;

/// Where `skiff serve` listens unless told: the port registries use, on loopback only.
const DEFAULT_LISTEN: &str = "127.0.0.1:5000";

/// `skiff serve` arguments.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The repository (default: $SKIFF_REPO, else ~/.var/lib/composefs).
    repo: Option<PathBuf>,
    /// Address and port to listen on (port 0: any free port, printed at start). Addresses other
    /// than loopback need --tls-cert, --tls-key and --htpasswd.
    #[arg(long, value_name = "ADDR:PORT", default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Serve pulls only: every push, tag and delete is refused.
    #[arg(long)]
    read_only: bool,
    /// Serve HTTPS with this certificate (PEM).
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PKCS#8 PEM).
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require HTTP Basic authentication against this htpasswd file (bcrypt: htpasswd -B).
    #[arg(long, value_name = "PATH")]
    htpasswd: Option<PathBuf>,
    /// Layers imported, or compressed again, at once (default: the number of CPUs).
    #[arg(long, short = 'j', value_name = "N")]
    jobs: Option<usize>,
}

/// Runs the server until SIGTERM or SIGINT, then finishes the requests in flight.
pub(crate) async fn run(args: ServeArgs) -> Result<()> {
    let path = args
        .repo
        .clone()
        .map_or_else(skiff_transport::reference::default_repository, Ok)?;
    with_repo_hash!(&path, H => serve::<H>(args, path).await)
}

async fn serve<H: FsVerityHashValue>(args: ServeArgs, path: PathBuf) -> Result<()> {
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut store = match args.read_only {
        true => Store::<H>::open(&path)?,
        false => Store::<H>::open_writable(&path)?,
    };
    store.set_write_concurrency(jobs)?;
    let options = ServeOptions {
        listen: args.listen,
        read_only: args.read_only,
        tls: args
            .tls_cert
            .zip(args.tls_key)
            .map(|(cert, key)| TlsFiles { cert, key }),
        htpasswd: args.htpasswd,
        jobs,
    };
    let server = bind(store, &options).await?;
    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let mode = if options.read_only {
        " (read-only)"
    } else {
        ""
    };
    println!(
        "Serving {} at {scheme}://{}{mode}",
        path.display(),
        server.local_addr()?
    );
    let mut signals = super::StopSignals::new()?;
    server.run(async move { signals.recv().await }).await?;
    // A supervisor may have closed standard output by now; the stop was clean all the same.
    let _ = writeln!(std::io::stdout(), "Stopped");
    Ok(())
}
