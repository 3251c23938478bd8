//! `skiff serve`: the OCI distribution API over composefs storage, so that unmodified clients
//! (skopeo, podman, crane, oras) pull from and push to the store.
//!
//! ```text
//! request → api (route, names checked) → handlers → content  (read: export of 2., kept blobs)
//!                                                  → listings (catalog, tags, referrers)
//!                                                  → uploads  (blobs staged, hashed as they come)
//!                                                    → arrivals (layer blobs imported at once)
//!                                                  → ingest   (manifest PUT: pull engine from a
//!                                                              staging layout, or an artifact)
//! ```
//!
//! - Pull: manifests by tag and digest, exact bytes; an image whose original blobs are all
//!   kept is served as it came, any other with its missing layers compressed again (once per
//!   image, under the digests the served manifest names). Blobs with byte ranges; tags list;
//!   catalog; the referrers API.
//! - Push: blobs monolithic or chunked, resumable, mounted from any repository (one store
//!   behind them all); a manifest `PUT` stores the image through the pull engine, every layer
//!   checked against its DiffID, its blobs kept so that it is served back with the digest it
//!   was pushed with, and tags it only then. Artifacts are stored as they are, and listed as
//!   referrers of their subject.
//! - Plain HTTP only on loopback addresses; anything else needs TLS and an htpasswd file.
//!   On shutdown, listening stops and requests in flight finish: a manifest being stored is
//!   stored or not, never half.

mod api;
mod arrivals;
mod auth;
mod content;
mod errors;
mod handlers;
mod ingest;
mod listings;
mod uploads;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use fn_error_context::context;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use skiff_storage::{FsVerityHashValue, Store};
use tokio::net::TcpListener;

use self::auth::Htpasswd;
use self::content::Content;
use self::handlers::State;
use self::uploads::Uploads;

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 256;

/// A certificate and its private key, PEM (the key PKCS#8, as `openssl req -newkey` writes it).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate (chain).
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Refuse every write.
    pub read_only: bool,
    /// HTTPS instead of HTTP.
    pub tls: Option<TlsFiles>,
    /// Basic authentication against this htpasswd file (bcrypt).
    pub htpasswd: Option<PathBuf>,
    /// Layers imported, or compressed again, at once.
    pub jobs: usize,
}

/// A server bound to its address, not yet serving.
#[derive(Debug)]
pub struct Server<H: FsVerityHashValue> {
    listener: TcpListener,
    state: Arc<State<H>>,
    tls: Option<tokio_native_tls::TlsAcceptor>,
    /// The state directory (uploads, staging), removed when the server ends.
    state_dir: tempfile::TempDir,
}

/// Checks the options and binds the address.
#[context("Starting the server on {}", options.listen)]
pub async fn bind<H: FsVerityHashValue>(
    store: Store<H>,
    options: &ServeOptions,
) -> Result<Server<H>> {
    if !options.listen.ip().is_loopback() && (options.tls.is_none() || options.htpasswd.is_none()) {
        bail!(
            "{} is not a loopback address: serving it needs TLS (--tls-cert, --tls-key) and \
             authentication (--htpasswd); plain HTTP is for 127.0.0.1 and ::1 only",
            options.listen
        );
    }
    if !options.read_only {
        store.repo().ensure_writable()?;
    }
    let tls = options.tls.as_ref().map(acceptor).transpose()?;
    let auth = options
        .htpasswd
        .as_deref()
        .map(Htpasswd::load)
        .transpose()?;
    // In the repository, so staged blobs hard-link into staging layouts and the store's
    // files hard-link out; removed at exit, and any left by a killed server at the next start.
    // A read-only server writes nothing there: its state (layers compressed again) goes to
    // the temporary directory.
    let state_parent = match options.read_only {
        true => std::env::temp_dir(),
        false => {
            remove_stale_state(store.path());
            store.path().to_owned()
        }
    };
    let state_dir = tempfile::Builder::new()
        .prefix(&format!("{STATE_PREFIX}{}-", std::process::id()))
        .tempdir_in(&state_parent)
        .with_context(|| {
            format!(
                "Creating the server's state directory in {}",
                state_parent.display()
            )
        })?;
    let uploads = Arc::new(Uploads::new(state_dir.path())?);
    let stage = state_dir.path().join("regenerated");
    std::fs::create_dir_all(&stage)?;
    let content = Arc::new(Content::new(store, uploads, stage, options.jobs));
    let listener = TcpListener::bind(options.listen).await?;
    Ok(Server {
        listener,
        state: Arc::new(State {
            content,
            read_only: options.read_only,
            auth,
            jobs: options.jobs,
        }),
        tls,
        state_dir,
    })
}

/// A client must send a request's headers within this long (an idle connection holds one of
/// [`MAX_CONNECTIONS`]).
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A TLS handshake must end within this long.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Pause after a failed accept (out of file descriptors: spinning would not help).
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// HTTP/1.1 as the server speaks it: headers read within [`HEADER_READ_TIMEOUT`].
fn http1_builder() -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
}

/// Prefix of state directories in the repository: `.skiff-serve-<pid>-XXXX`.
const STATE_PREFIX: &str = ".skiff-serve-";

/// Removes the state directories of servers that are no longer running.
fn remove_stale_state(repo: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(repo) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(STATE_PREFIX)) else {
            continue;
        };
        let alive = rest
            .split('-')
            .next()
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            log::info!(
                "removing {}, left by a server that stopped",
                entry.path().display()
            );
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[context("Loading the TLS certificate {} and key {}", files.cert.display(), files.key.display())]
fn acceptor(files: &TlsFiles) -> Result<tokio_native_tls::TlsAcceptor> {
    let cert = std::fs::read(&files.cert)?;
    let key = std::fs::read(&files.key)?;
    let identity = native_tls::Identity::from_pkcs8(&cert, &key)
        .context("the key must be PKCS#8 PEM (BEGIN PRIVATE KEY)")?;
    Ok(native_tls::TlsAcceptor::new(identity)?.into())
}

impl<H: FsVerityHashValue> Server<H> {
    /// The address it listens on (the port chosen when asked for port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until `shutdown` completes, then lets the requests in flight finish.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let graceful = GracefulShutdown::new();
        let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                permit = limit.clone().acquire_owned() => permit?,
            };
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors, most likely: give requests time to end.
                        log::warn!("accepting a connection: {e}");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
            };
            let state = self.state.clone();
            let service = service_fn(move |request| handlers::handle(state.clone(), request));
            match &self.tls {
                None => {
                    let conn = http1_builder().serve_connection(TokioIo::new(stream), service);
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            log::debug!("connection from {peer}: {e}");
                        }
                        drop(permit);
                    });
                }
                Some(tls) => {
                    // The handshake runs in the connection's task; only then can it be watched.
                    let (tls, watcher) = (tls.clone(), graceful.watcher());
                    tokio::spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                            Err(_) => log::debug!("TLS handshake with {peer}: timed out"),
                            Ok(Err(e)) => log::debug!("TLS handshake with {peer}: {e}"),
                            Ok(Ok(stream)) => {
                                let conn =
                                    http1_builder().serve_connection(TokioIo::new(stream), service);
                                if let Err(e) = watcher.watch(conn).await {
                                    log::debug!("connection from {peer}: {e}");
                                }
                            }
                        }
                        drop(permit);
                    });
                }
            }
        }
        log::info!("stopping: finishing the requests in flight");
        drop(self.listener);
        graceful.shutdown().await;
        self.state.content.arrivals.settle_all().await;
        drop(self.state_dir);
        Ok(())
    }
}
