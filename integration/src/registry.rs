//! Local registry harness, on 127.0.0.1: Debian's `docker-registry` (distribution 2.8), either
//! plain HTTP or TLS with a test-made CA and htpasswd (bcrypt) authentication, or plain HTTP
//! with Bearer tokens from the harness's [`TokenServer`]; or, plain HTTP,
//! one of two registries with the OCI 1.1 referrers API that distribution 2.8 lacks:
//! `ferro-oci-server` (crates.io; answers `OCI-Subject`, applies the `artifactType` filter) and
//! go-containerregistry's registry (`skiff-peer-registry`; no `OCI-Subject`, lists a referrer's
//! config media type as its `artifactType`). contrib/install-deps.sh installs both.
//!
//! Every instance has its own temporary directory (configuration, storage, certificates,
//! credentials, log) and a port chosen at run time; it is killed when dropped.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::token_server::TokenServer;
use crate::tools::{require, run, skopeo};

/// How long a registry may take to answer after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Starts attempted when the chosen port was taken by someone else in the meantime.
const START_ATTEMPTS: usize = 3;

/// TLS material of a registry.
#[derive(Debug)]
pub struct Tls {
    /// The server certificate (signed by the test CA).
    pub cert: PathBuf,
    /// The server key.
    pub key: PathBuf,
    /// A directory holding only `ca.crt`.
    pub cert_dir: PathBuf,
}

/// One line of a registry's access log.
#[derive(Debug, Clone)]
pub struct LoggedRequest {
    /// `GET`, `HEAD`, `PUT`...
    pub method: String,
    /// The path and query.
    pub path: String,
    /// The status answered.
    pub status: u16,
    /// Bytes of the answer's body.
    pub sent: u64,
}

/// Which registry program serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    /// Debian's `docker-registry`: byte ranges, TLS, htpasswd; no referrers API.
    Distribution,
    /// `ferro-oci-server`: the referrers API as OCI 1.1 specifies it.
    Ferro,
    /// `skiff-peer-registry` (go-containerregistry): the referrers API as an early draft had it.
    Ggcr,
}

impl Server {
    fn program(self) -> &'static str {
        match self {
            Server::Distribution => "docker-registry",
            Server::Ferro => "ferro-oci-server",
            Server::Ggcr => "skiff-peer-registry",
        }
    }
}

/// A running registry bound to 127.0.0.1, stopped when dropped.
#[derive(Debug)]
pub struct Registry {
    /// The program serving.
    server: Server,
    /// Holds the configuration, storage, certificates, credentials and log.
    dir: tempfile::TempDir,
    /// The port on 127.0.0.1.
    port: u16,
    /// The server process; `None` once stopped.
    child: Option<Child>,
    /// TLS material, when the registry speaks HTTPS.
    tls: Option<Tls>,
    /// User and password, when the registry requires authentication.
    creds: Option<(String, String)>,
    /// The auth.json, written on first use.
    authfile: OnceLock<PathBuf>,
    /// The token server, when the registry authenticates with Bearer tokens.
    token: Option<TokenServer>,
}

impl Registry {
    /// Starts a plain-HTTP registry without authentication.
    pub fn start_plain() -> Result<Registry> {
        let dir = new_dir()?;
        Self::start(Server::Distribution, dir, None, None)
    }

    /// Starts a plain-HTTP registry with the OCI 1.1 referrers API (`ferro-oci-server`).
    pub fn start_referrers() -> Result<Registry> {
        let dir = new_dir()?;
        Self::start(Server::Ferro, dir, None, None)
    }

    /// Starts go-containerregistry's registry (plain HTTP), whose referrers API lists a
    /// referrer's config media type as its `artifactType` and which answers no `OCI-Subject`.
    pub fn start_ggcr() -> Result<Registry> {
        let dir = new_dir()?;
        Self::start(Server::Ggcr, dir, None, None)
    }

    /// Starts an HTTPS registry whose certificate (for IP 127.0.0.1) is signed by a CA made
    /// for it (see [`Registry::cert_dir`]), requiring `user`/`password` (htpasswd, bcrypt).
    pub fn start_tls_auth(user: &str, password: &str) -> Result<Registry> {
        let dir = new_dir()?;
        let tls =
            make_certificates(dir.path()).context("creating the test CA and server certificate")?;
        let htpasswd = run(Command::new(require("htpasswd")).args(["-Bbn", user, password]))?;
        std::fs::write(dir.path().join("htpasswd"), htpasswd)?;
        Self::start(
            Server::Distribution,
            dir,
            Some(tls),
            Some((user.to_owned(), password.to_owned())),
        )
    }

    /// Starts a plain-HTTP registry that requires Bearer tokens (`auth: token`) from a token
    /// server of the test's own ([`TokenServer`]), which gives them to `user`/`password`.
    pub fn start_token_auth(user: &str, password: &str) -> Result<Registry> {
        let dir = new_dir()?;
        let token = TokenServer::start(dir.path(), user, password)?;
        Self::start_with(
            Server::Distribution,
            dir,
            None,
            Some((user.to_owned(), password.to_owned())),
            Some(token),
        )
    }

    /// The scopes clients asked the token server for.
    pub fn token_scopes(&self) -> Vec<String> {
        self.token
            .as_ref()
            .map(TokenServer::scopes)
            .unwrap_or_default()
    }

    fn start(
        server: Server,
        dir: tempfile::TempDir,
        tls: Option<Tls>,
        creds: Option<(String, String)>,
    ) -> Result<Registry> {
        Self::start_with(server, dir, tls, creds, None)
    }

    fn start_with(
        server: Server,
        dir: tempfile::TempDir,
        tls: Option<Tls>,
        creds: Option<(String, String)>,
        token: Option<TokenServer>,
    ) -> Result<Registry> {
        let mut registry = Registry {
            server,
            dir,
            port: 0,
            child: None,
            tls,
            creds,
            authfile: OnceLock::new(),
            token,
        };
        let mut attempt = 1;
        loop {
            match registry.launch() {
                Ok(()) => return Ok(registry),
                // Someone took the port between our probe and the registry's bind: retry.
                Err(e)
                    if attempt < START_ATTEMPTS
                        && format!("{e:#}").contains("address already in use") =>
                {
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Picks a port, writes the configuration, starts the server and waits until it answers.
    fn launch(&mut self) -> Result<()> {
        self.port = free_port()?;
        let log_path = self.dir.path().join("registry.log");
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = Command::new(require(self.server.program()));
        match self.server {
            Server::Distribution => {
                let config = self.dir.path().join("config.yml");
                std::fs::write(
                    &config,
                    config_yaml(
                        self.dir.path(),
                        self.port,
                        self.tls.as_ref(),
                        self.creds.is_some(),
                        self.token.as_ref(),
                    )?,
                )?;
                cmd.arg("serve").arg(&config);
                // The environment overrides the configuration (REGISTRY_HTTP_DEBUG_ADDR, ...).
                for (name, _) in std::env::vars_os() {
                    if name.to_string_lossy().starts_with("REGISTRY_") {
                        cmd.env_remove(name);
                    }
                }
            }
            Server::Ferro => {
                let data = self.dir.path().join("data");
                std::fs::create_dir_all(&data)?;
                cmd.env("FERRO_OCI_LISTEN", self.host())
                    .env("FERRO_OCI_STORAGE_DIR", &data)
                    .env("NO_COLOR", "1");
            }
            Server::Ggcr => {
                let data = self.dir.path().join("data");
                std::fs::create_dir_all(&data)?;
                cmd.arg("-listen").arg(self.host()).arg("-disk").arg(&data);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.child = Some(cmd.spawn().with_context(|| format!("starting {cmd:?}"))?);
        let ready = self.wait_ready(&log_path);
        if ready.is_err() {
            self.stop();
        }
        ready
    }

    /// The blobs fetched (`GET .../blobs/DIGEST`) since the registry started, with the bytes
    /// sent for each, from its access log (docker-registry only), in order.
    pub fn blob_gets_sized(&self) -> Result<Vec<(String, u64)>> {
        Ok(self
            .access_log()?
            .into_iter()
            .filter(|r| r.method == "GET")
            .filter_map(|r| {
                let (_, digest) = r.path.rsplit_once("/blobs/")?;
                Some((digest.to_owned(), r.sent))
            })
            .collect())
    }

    /// Every request since the registry started, from its access log (docker-registry only),
    /// in order.
    pub fn access_log(&self) -> Result<Vec<LoggedRequest>> {
        anyhow::ensure!(
            matches!(self.server, Server::Distribution),
            "only docker-registry keeps an access log here"
        );
        let log = std::fs::read_to_string(self.dir.path().join("registry.log"))?;
        // Combined log format: HOST - - [TIME] "GET PATH HTTP/1.1" STATUS BYTES "REF" "AGENT"
        Ok(log
            .lines()
            .filter_map(|line| {
                let mut quoted = line.split('"');
                let request = quoted.nth(1)?;
                let mut status_bytes = quoted.next()?.split_whitespace();
                let status = status_bytes.next()?.parse().ok()?;
                let sent = status_bytes.next()?.parse().unwrap_or(0);
                let (method, rest) = request.split_once(' ')?;
                Some(LoggedRequest {
                    method: method.to_owned(),
                    path: rest.split(' ').next()?.to_owned(),
                    status,
                    sent,
                })
            })
            .collect())
    }

    /// The digests of the blobs fetched since the registry started, in order.
    pub fn blob_gets(&self) -> Result<Vec<String>> {
        Ok(self
            .blob_gets_sized()?
            .into_iter()
            .map(|(d, _)| d)
            .collect())
    }

    /// Polls until the registry answers `GET /v2/`; fails with its log if it exits first.
    fn wait_ready(&mut self, log_path: &Path) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("registry is running");
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(log_path).unwrap_or_default();
                bail!(
                    "{} exited ({status}) before answering:\n{log}",
                    self.server.program()
                );
            }
            match self.probe() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    let log = std::fs::read_to_string(log_path).unwrap_or_default();
                    bail!(
                        "{} did not answer on {} within {START_TIMEOUT:?}: {e:#}\n{log}",
                        self.server.program(),
                        self.host()
                    );
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// One `GET /v2/` (over TLS verified against the test CA when TLS is on); any HTTP answer
    /// (200, or 401 with authentication) means the registry is serving.
    fn probe(&self) -> Result<()> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.set_write_timeout(Some(Duration::from_secs(2)))?;
        let request = format!(
            "GET /v2/ HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.host()
        );
        let mut response = Vec::new();
        match &self.tls {
            None => {
                let mut stream = stream;
                stream.write_all(request.as_bytes())?;
                stream.read_to_end(&mut response)?;
            }
            Some(tls) => {
                let mut builder =
                    openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls())?;
                builder.set_ca_file(tls.cert_dir.join("ca.crt"))?;
                let mut stream = builder.build().connect("127.0.0.1", stream)?;
                stream.write_all(request.as_bytes())?;
                // Go closes without close_notify at times: keep what was read.
                let _ = stream.read_to_end(&mut response);
            }
        }
        let status = String::from_utf8_lossy(&response)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        let expected = if self.creds.is_some() {
            " 401 "
        } else {
            " 200 "
        };
        if !status.starts_with("HTTP/1.") || !status.contains(expected) {
            bail!("unexpected answer to GET /v2/: {status:?}");
        }
        Ok(())
    }

    /// Stops the registry (kills it and waits for it). Stopping twice, or dropping a stopped
    /// registry, does nothing more.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the registry answers a manifest PUT with `subject` by `OCI-Subject` (it indexes
    /// referrers itself, so a client writes no `sha256-<hex>` referrers tag).
    pub fn indexes_subjects(&self) -> bool {
        self.server == Server::Ferro
    }

    /// The tags of `repo`, as `skopeo list-tags` reads them.
    pub fn tags(&self, repo: &str) -> Result<Vec<String>> {
        let mut cmd = skopeo();
        cmd.arg("list-tags");
        match &self.tls {
            None => cmd.arg("--tls-verify=false"),
            Some(tls) => cmd.arg("--cert-dir").arg(&tls.cert_dir),
        };
        if let Some((user, password)) = &self.creds {
            cmd.arg("--creds").arg(format!("{user}:{password}"));
        }
        let out = run(cmd.arg(format!("docker://{}/{repo}", self.host())))?;
        let list: serde_json::Value = serde_json::from_str(&out)?;
        Ok(list["Tags"]
            .as_array()
            .context("list-tags without Tags")?
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect())
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `docker://127.0.0.1:PORT/REPO:TAG` for `repo_tag` = `REPO:TAG`.
    pub fn docker_ref(&self, repo_tag: &str) -> String {
        format!("docker://{}/{repo_tag}", self.host())
    }

    /// With TLS: a directory holding only the CA certificate `ca.crt`, for skopeo's
    /// `--src-cert-dir`/`--dest-cert-dir` (and skiff's `--src-cert-dir`).
    pub fn cert_dir(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.cert_dir.as_path())
    }

    /// With authentication: the user name and password.
    pub fn creds(&self) -> Option<(String, String)> {
        self.creds.clone()
    }

    /// With authentication: an auth.json (`{"auths":{"127.0.0.1:PORT":{"auth":"…"}}}`, as
    /// `skopeo login` writes), written on the first call.
    pub fn authfile(&self) -> Option<PathBuf> {
        let (user, password) = self.creds.as_ref()?;
        let path = self.authfile.get_or_init(|| {
            let auth = openssl::base64::encode_block(format!("{user}:{password}").as_bytes());
            let json = serde_json::json!({ "auths": { self.host(): { "auth": auth } } });
            let path = self.dir.path().join("auth.json");
            std::fs::write(&path, serde_json::to_vec_pretty(&json).expect("JSON"))
                .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
            path
        });
        Some(path.clone())
    }

    /// Pushes the skopeo source `source` (e.g. `oci:/dir:tag`) to `REPO:TAG` of this registry
    /// with skopeo; returns its `docker://` reference.
    pub fn push(&self, source: &str, repo_tag: &str) -> Result<String> {
        let dest = self.docker_ref(repo_tag);
        let mut cmd = skopeo();
        cmd.args(["copy", "--quiet"]);
        match &self.tls {
            None => {
                cmd.arg("--dest-tls-verify=false");
            }
            Some(tls) => {
                cmd.arg("--dest-cert-dir").arg(&tls.cert_dir);
            }
        }
        if let Some((user, password)) = &self.creds {
            cmd.arg("--dest-creds").arg(format!("{user}:{password}"));
        }
        cmd.arg(source).arg(&dest);
        run(&mut cmd).with_context(|| format!("pushing {source} to {dest}"))?;
        Ok(dest)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn new_dir() -> Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new()
        .prefix("skiff-registry-")
        .tempdir()?)
}

/// A port of 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A YAML string (JSON strings are YAML strings).
fn quoted(path: &Path) -> Result<String> {
    let s = path
        .to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))?;
    Ok(serde_json::to_string(s)?)
}

fn config_yaml(
    dir: &Path,
    port: u16,
    tls: Option<&Tls>,
    auth: bool,
    token: Option<&TokenServer>,
) -> Result<String> {
    let mut y = format!(
        "version: 0.1\n\
         log:\n  level: error\n  accesslog:\n    disabled: false\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: skiff-integration-test\n  debug:\n    addr: \"\"\n",
        quoted(&dir.join("data"))?
    );
    if let Some(tls) = tls {
        y += &format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            quoted(&tls.cert)?,
            quoted(&tls.key)?
        );
    }
    if let Some(token) = token {
        y += &format!(
            "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
            token.realm(),
            crate::token_server::SERVICE,
            crate::token_server::ISSUER,
            quoted(&token.certificate)?
        );
    } else if auth {
        y += &format!(
            "auth:\n  htpasswd:\n    realm: skiff-test\n    path: {}\n",
            quoted(&dir.join("htpasswd"))?
        );
    }
    Ok(y)
}

/// Creates with the `openssl` command a CA and a server certificate for IP 127.0.0.1 signed by it.
pub fn make_certificates(dir: &Path) -> Result<Tls> {
    let pki = dir.join("pki");
    std::fs::create_dir_all(&pki)?;
    let openssl = require("openssl");
    let ssl = |args: &[&str]| -> Result<String> {
        let mut cmd = Command::new(&openssl);
        cmd.current_dir(&pki).args(args);
        run(&mut cmd)
    };
    ssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "7",
        "-subj",
        "/CN=skiff test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ])?;
    ssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ])?;
    std::fs::write(
        pki.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )?;
    ssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "7",
        "-extfile",
        "server.ext",
    ])?;
    let cert_dir = dir.join("certs.d");
    std::fs::create_dir_all(&cert_dir)?;
    std::fs::copy(pki.join("ca.crt"), cert_dir.join("ca.crt"))?;
    Ok(Tls {
        cert: pki.join("server.crt"),
        key: pki.join("server.key"),
        cert_dir,
    })
}
