//! `skiff serve` run as a client sees it: started on 127.0.0.1 with a port it picks itself
//! (`--listen 127.0.0.1:0`, read from its first line of output), stopped by SIGTERM to its PID,
//! and spoken to over raw HTTP/1.1 for requests no client tool makes (bad input).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::tools::skiff;

/// A running `skiff serve`, stopped (SIGKILL) when dropped if not stopped before.
#[derive(Debug)]
pub struct SkiffServer {
    child: Option<Child>,
    /// Its standard output, kept open so that its last line can be written and read.
    stdout: BufReader<std::process::ChildStdout>,
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// Where its standard error goes.
    log: tempfile::NamedTempFile,
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The distribution-spec error code of the body, if any.
    pub fn error_code(&self) -> Option<String> {
        let json: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        json["errors"][0]["code"].as_str().map(str::to_owned)
    }
}

impl SkiffServer {
    /// Starts `skiff serve REPO` with `args`, on a free loopback port.
    pub fn start(repo: &Path, args: &[&str]) -> Result<Self> {
        let log = tempfile::NamedTempFile::new()?;
        let mut child = skiff()
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .arg(repo)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log.reopen()?)
            .spawn()
            .context("starting skiff serve")?;
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let Some(host) = line
            .trim()
            .rsplit("://")
            .next()
            .and_then(|h| h.split_whitespace().next())
            .filter(|_| line.starts_with("Serving "))
        else {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "skiff serve did not start: {line:?}\n{}",
                std::fs::read_to_string(log.path()).unwrap_or_default()
            );
        };
        Ok(Self {
            host: host.to_owned(),
            child: Some(child),
            stdout,
            log,
        })
    }

    /// `docker://HOST/REPO_TAG`.
    pub fn docker_ref(&self, repo_tag: &str) -> String {
        format!("docker://{}/{repo_tag}", self.host)
    }

    /// What the server wrote to its standard error so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// The server's PID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends SIGTERM and waits for the server to end; gives its exit status and what it
    /// printed after its first line.
    pub fn terminate(&mut self) -> Result<(ExitStatus, String)> {
        let mut child = self.child.take().context("already stopped")?;
        let pid = rustix::process::Pid::from_raw(child.id() as i32).context("PID 0")?;
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
        let status = child.wait()?;
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest)?;
        Ok((status, rest))
    }

    /// One request over a fresh connection (`Connection: close`), read to its end.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Answer> {
        let mut stream = TcpStream::connect(&self.host)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.host
        );
        if !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        {
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes())?;
        stream.write_all(body)?;
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw);
        parse_answer(&raw).with_context(|| format!("{method} {path}"))
    }
}

impl Drop for SkiffServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Parses an HTTP/1.1 answer (a `Content-Length` body, or chunked).
fn parse_answer(raw: &[u8]) -> Result<Answer> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers in the answer")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .context("no status line")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body)?;
    }
    Ok(Answer {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("a chunk without its size line")?;
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&data[..line_end])
                .split(';')
                .next()
                .unwrap_or_default()
                .trim(),
            16,
        )?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        anyhow::ensure!(data.len() >= size + 2, "a chunk cut short");
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}
