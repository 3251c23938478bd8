//! A TCP forwarder on 127.0.0.1 that misbehaves on purpose: it relays to an upstream (a test
//! registry) and cuts the first `faulty` connections once they have carried `cut_after` bytes
//! from upstream, as a network that drops in the middle of a blob does; or it relays slowly, so
//! that a test can stop the registry while a copy is under way; or it relays a fixed number of
//! bytes and then holds every connection, so that a test can stop a copy at a chosen byte.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Result;

/// A running forwarder; stops accepting (and releases held connections) when dropped.
#[derive(Debug)]
pub struct FlakyForwarder {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

/// State the relays of one forwarder share.
#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    cuts: AtomicUsize,
    /// Bytes relayed from upstream, over all connections.
    relayed: AtomicU64,
    /// Bytes from upstream relayed over all connections before every connection is held.
    budget: AtomicU64,
}

impl FlakyForwarder {
    /// Relays 127.0.0.1:(a free port) to `upstream`, cutting the first `faulty` connections
    /// after `cut_after` bytes from upstream.
    pub fn start(upstream: SocketAddr, cut_after: u64, faulty: usize) -> Result<Self> {
        Self::spawn(
            upstream,
            Behaviour {
                cut_after,
                faulty,
                delay: Duration::ZERO,
            },
            u64::MAX,
        )
    }

    /// Relays to `upstream` without cutting, sleeping `delay` after every 16 KiB from upstream.
    pub fn start_slow(upstream: SocketAddr, delay: Duration) -> Result<Self> {
        Self::spawn(
            upstream,
            Behaviour {
                cut_after: u64::MAX,
                faulty: 0,
                delay,
            },
            u64::MAX,
        )
    }

    /// Relays to `upstream` until `budget` bytes from upstream have passed, over all
    /// connections, then holds every connection (sends nothing more, closes nothing) until
    /// [`Self::release`] or the forwarder is dropped. `u64::MAX`: relays everything, counting.
    pub fn start_held(upstream: SocketAddr, budget: u64) -> Result<Self> {
        Self::spawn(
            upstream,
            Behaviour {
                cut_after: u64::MAX,
                faulty: 0,
                delay: Duration::ZERO,
            },
            budget,
        )
    }

    /// Relays everything from now on, releasing the connections held at the budget.
    pub fn release(&self) {
        self.shared.budget.store(u64::MAX, Ordering::SeqCst);
    }

    fn spawn(upstream: SocketAddr, behaviour: Behaviour, budget: u64) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            budget: AtomicU64::new(budget),
            ..Default::default()
        });
        let state = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if state.stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let state = state.clone();
                std::thread::spawn(move || relay(client, server, behaviour, &state));
            }
        });
        Ok(Self { addr, shared })
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> usize {
        self.shared.cuts.load(Ordering::Relaxed)
    }

    /// Bytes relayed from upstream so far, over all connections.
    pub fn relayed(&self) -> u64 {
        self.shared.relayed.load(Ordering::SeqCst)
    }
}

impl Drop for FlakyForwarder {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

#[derive(Debug, Clone, Copy)]
struct Behaviour {
    cut_after: u64,
    faulty: usize,
    delay: Duration,
}

/// How often a held connection looks whether it was released or its forwarder dropped.
const HOLD_POLL: Duration = Duration::from_millis(2);

/// Claims up to `n` bytes of the forwarder's budget; returns how many may be relayed.
fn claim(shared: &Shared, n: usize) -> usize {
    let budget = shared.budget.load(Ordering::SeqCst);
    let before = shared
        .relayed
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| {
            Some(r + (n as u64).min(budget.saturating_sub(r)))
        })
        .unwrap_or_default();
    (n as u64).min(budget.saturating_sub(before)) as usize
}

/// Relays `data`, holding whatever exceeds the budget until it is released; false when the
/// client is gone or the forwarder was dropped.
fn relay_within_budget(shared: &Shared, client: &mut TcpStream, mut data: &[u8]) -> bool {
    loop {
        let allowed = claim(shared, data.len());
        if client.write_all(&data[..allowed]).is_err() {
            return false;
        }
        data = &data[allowed..];
        if data.is_empty() {
            return true;
        }
        if shared.stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(HOLD_POLL);
    }
}

fn relay(client: TcpStream, server: TcpStream, behaviour: Behaviour, shared: &Shared) {
    let Behaviour {
        cut_after,
        faulty,
        delay,
    } = behaviour;
    let cuts = &shared.cuts;
    let (Ok(mut client_r), Ok(mut server_w)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_r, &mut server_w);
        let _ = server_w.shutdown(Shutdown::Write);
    });
    let (mut server_r, mut client_w) = (server, client);
    let mut carried = 0u64;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match server_r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        carried += n as u64;
        if carried > cut_after {
            // Claim one of the faults, if any is left; then this connection's fate is settled.
            let claimed = cuts.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                (c < faulty).then_some(c + 1)
            });
            if claimed.is_ok() {
                let _ = client_w.shutdown(Shutdown::Both);
                let _ = server_r.shutdown(Shutdown::Both);
                return;
            }
            let _ = client_w
                .write_all(&buf[..n])
                .and_then(|()| std::io::copy(&mut server_r, &mut client_w).map(drop));
            break;
        }
        if !relay_within_budget(shared, &mut client_w, &buf[..n]) {
            break;
        }
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
    }
    let _ = client_w.shutdown(Shutdown::Write);
}

/// How a [`RangeFault`] treats requests that carry a `Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeBehaviour {
    /// Drops the header: the registry answers `200` with the whole blob (S3 and MinIO behind
    /// a registry do this for several ranges).
    Ignore,
    /// Answers requests for more than one range with this status (zot ≤ 2.1.11 answers 416).
    RefuseMultiple(u16),
    /// Answers every range request with this status.
    RefuseAll(u16),
}

/// An HTTP forwarder on 127.0.0.1 in front of a registry that mistreats range requests, one
/// request per connection (it asks both sides to close after each answer).
#[derive(Debug)]
pub struct RangeFault {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl RangeFault {
    /// Starts forwarding 127.0.0.1:(a free port) to `upstream`.
    pub fn start(upstream: SocketAddr, behaviour: RangeBehaviour) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (stop_flag, request_log) = (stop.clone(), log.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop_flag.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = client else { continue };
                let request_log = request_log.clone();
                std::thread::spawn(move || {
                    let _ = forward_one(client, upstream, behaviour, &request_log);
                });
            }
        });
        Ok(Self { addr, stop, log })
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Every request line seen so far, with ` [Range: …]` appended when it had one.
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for RangeFault {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn forward_one(
    mut client: TcpStream,
    upstream: SocketAddr,
    behaviour: RangeBehaviour,
    log: &std::sync::Mutex<Vec<String>>,
) -> std::io::Result<()> {
    // The request head; registry reads (GET, HEAD) have no body.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte)? == 0 {
            return Ok(());
        }
        // Not HTTP (a TLS handshake, as clients try HTTPS first): refuse at once.
        if head.is_empty() && !byte[0].is_ascii_uppercase() {
            return client.shutdown(Shutdown::Both);
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
    let request_line = lines.next().unwrap_or_default().to_owned();
    let mut range = None;
    let mut kept = vec![request_line.clone()];
    for line in lines {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("range:") {
            range = Some(line[6..].trim().to_owned());
        } else if !lower.starts_with("connection:") {
            kept.push(line.to_owned());
        }
    }
    log.lock().unwrap().push(match &range {
        Some(r) => format!("{request_line} [Range: {r}]"),
        None => request_line.clone(),
    });
    let refuse = match (behaviour, &range) {
        (RangeBehaviour::RefuseAll(status), Some(_)) => Some(status),
        (RangeBehaviour::RefuseMultiple(status), Some(r)) if r.contains(',') => Some(status),
        _ => None,
    };
    if let Some(status) = refuse {
        let answer =
            format!("HTTP/1.1 {status} Refused\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        client.write_all(answer.as_bytes())?;
        return client.shutdown(Shutdown::Both);
    }
    if let (Some(r), false) = (&range, behaviour == RangeBehaviour::Ignore) {
        kept.push(format!("Range: {r}"));
    }
    kept.push("Connection: close".to_owned());
    let mut server = TcpStream::connect(upstream)?;
    server.write_all(format!("{}\r\n\r\n", kept.join("\r\n")).as_bytes())?;
    std::io::copy(&mut server, &mut client)?;
    client.shutdown(Shutdown::Both)
}
