//! A token server for registry tests: the Bearer flow of ghcr, quay and Docker Hub, in front
//! of Debian's docker-registry configured with `auth: token`.
//!
//! It listens on 127.0.0.1 (a port chosen at run time) and answers `GET /token?service=S&
//! scope=repository:NAME:ACTIONS...` given the right Basic credentials with `{"token": JWT}`:
//! an ES256 JWT (signed by `jsonwebtoken` with a key made for the test, its certificate in
//! the `x5c` header and in the registry's `rootcertbundle`) granting the scopes asked for.
//! Anyone else gets 401. Every scope asked for is recorded, for tests to check what a client
//! asked (`pull` on a mount's source, `pull,push` on the destination).

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use base64::Engine;

use crate::tools::{require, run};

/// The `service` the registry names in its challenge, and the tokens' audience.
pub const SERVICE: &str = "skiff-test-registry";
/// The tokens' issuer.
pub const ISSUER: &str = "skiff-test-token-server";

/// A running token server; it stops with the test process (its thread only accepts).
#[derive(Debug)]
pub struct TokenServer {
    port: u16,
    /// The certificate of the signing key (the registry's `rootcertbundle`).
    pub certificate: PathBuf,
    scopes: Arc<Mutex<Vec<String>>>,
}

impl TokenServer {
    /// Makes a signing key in `dir` and starts serving tokens to `user`/`password`.
    pub fn start(dir: &Path, user: &str, password: &str) -> Result<TokenServer> {
        let key = dir.join("token.key");
        let certificate = dir.join("token.crt");
        run(Command::new(require("openssl"))
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "7",
                "-subj",
                "/CN=skiff test token signer",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&certificate))?;
        let encoding = jsonwebtoken::EncodingKey::from_ec_pem(&std::fs::read(&key)?)
            .context("reading the token key")?;
        let pem = std::fs::read(&certificate)?;
        let der = openssl::x509::X509::from_pem(&pem)?.to_der()?;
        let x5c = base64::engine::general_purpose::STANDARD.encode(der);
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        let scopes = Arc::new(Mutex::new(Vec::new()));
        let signer = Signer {
            key: encoding,
            x5c,
            basic: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            ),
            scopes: scopes.clone(),
        };
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(e) = signer.answer(stream) {
                    eprintln!("token server: {e:#}");
                }
            }
        });
        Ok(TokenServer {
            port,
            certificate,
            scopes,
        })
    }

    /// `http://127.0.0.1:PORT/token`.
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// Every scope asked for so far, in order.
    pub fn scopes(&self) -> Vec<String> {
        self.scopes.lock().unwrap().clone()
    }
}

struct Signer {
    key: jsonwebtoken::EncodingKey,
    x5c: String,
    basic: String,
    scopes: Arc<Mutex<Vec<String>>>,
}

#[derive(serde::Serialize)]
struct Claims {
    iss: &'static str,
    sub: String,
    aud: &'static str,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    access: Vec<Access>,
}

#[derive(serde::Serialize)]
struct Access {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    actions: Vec<String>,
}

impl Signer {
    fn answer(&self, stream: TcpStream) -> Result<()> {
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut request_line = String::new();
        reader.read_line(&mut request_line)?;
        let mut authorized = false;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("authorization")
            {
                authorized = value.trim() == self.basic;
            }
        }
        let target = request_line.split_whitespace().nth(1).unwrap_or_default();
        let query = target.split_once('?').map(|(_, q)| q).unwrap_or_default();
        let mut access = Vec::new();
        for pair in query.split('&') {
            let Some(("scope", scope)) = pair.split_once('=') else {
                continue;
            };
            let scope = percent_decode(scope);
            self.scopes.lock().unwrap().push(scope.clone());
            let mut parts = scope.splitn(3, ':');
            if let (Some(kind), Some(name), Some(actions)) =
                (parts.next(), parts.next(), parts.next())
            {
                access.push(Access {
                    kind: kind.to_owned(),
                    name: name.to_owned(),
                    actions: actions.split(',').map(str::to_owned).collect(),
                });
            }
        }
        let mut stream = stream;
        if !authorized {
            let body = r#"{"details":"wrong or no credentials"}"#;
            write!(
                stream,
                "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
            return Ok(());
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let claims = Claims {
            iss: ISSUER,
            sub: "skiff-test".into(),
            aud: SERVICE,
            exp: now + 300,
            nbf: now - 10,
            iat: now,
            jti: format!("{now}-{}", self.scopes.lock().unwrap().len()),
            access,
        };
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.x5c = Some(vec![self.x5c.clone()]);
        let token = jsonwebtoken::encode(&header, &claims, &self.key)?;
        let body = serde_json::to_string(&serde_json::json!({ "token": token }))?;
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        Ok(())
    }
}

/// Decodes `%XX` escapes and `+` of a query value.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
