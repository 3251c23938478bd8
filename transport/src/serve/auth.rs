//! HTTP Basic authentication against an htpasswd file, as Debian's docker-registry takes it:
//! one `user:hash` per line, bcrypt hashes only (`htpasswd -B`; other schemes are refused when
//! the file is read, not at the first login).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use base64::Engine;
use fn_error_context::context;
use hyper::header::HeaderValue;

use super::errors::{ApiError, ApiResult, Code};

/// Largest htpasswd file read (a few thousand users).
const MAX_HTPASSWD_SIZE: u64 = 1 << 20;

/// The users and their bcrypt hashes.
pub(crate) struct Htpasswd {
    users: HashMap<String, String>,
    /// Hashes of `Authorization` values already checked: bcrypt costs milliseconds per check
    /// by design, and a pull makes dozens of requests.
    verified: Mutex<HashSet<[u8; 32]>>,
}

impl std::fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Htpasswd")
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

impl Htpasswd {
    /// Reads `path`.
    #[context("Reading htpasswd file {}", path.display())]
    pub(crate) fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)?;
        anyhow::ensure!(
            text.len() as u64 <= MAX_HTPASSWD_SIZE,
            "larger than {MAX_HTPASSWD_SIZE} bytes"
        );
        Self::parse(&text)
    }

    fn parse(text: &str) -> Result<Self> {
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .with_context(|| format!("line {}: not user:hash", n + 1))?;
            if !["$2y$", "$2a$", "$2b$"].iter().any(|p| hash.starts_with(p)) {
                bail!(
                    "line {}: user {user}'s password is not bcrypt-hashed (make it with htpasswd -B)",
                    n + 1
                );
            }
            users.insert(user.to_owned(), hash.to_owned());
        }
        anyhow::ensure!(!users.is_empty(), "no users");
        Ok(Self {
            users,
            verified: Mutex::new(HashSet::new()),
        })
    }

    /// Checks a request's `Authorization` header.
    pub(crate) fn check(&self, header: Option<&HeaderValue>) -> ApiResult<()> {
        let denied = |why: &str| ApiError::new(Code::Unauthorized, why.to_owned());
        let header = header.ok_or_else(|| denied("authentication required"))?;
        let key = openssl::sha::sha256(header.as_bytes());
        if self.verified.lock().expect("poisoned").contains(&key) {
            return Ok(());
        }
        let encoded = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Basic "))
            .ok_or_else(|| denied("only Basic authentication is supported"))?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| denied("malformed Basic credentials"))?;
        let decoded =
            String::from_utf8(decoded).map_err(|_| denied("malformed Basic credentials"))?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or_else(|| denied("malformed Basic credentials"))?;
        let ok = self
            .users
            .get(user)
            .is_some_and(|hash| bcrypt::verify(password, hash).unwrap_or(false));
        if !ok {
            return Err(denied("invalid user name or password"));
        }
        self.verified.lock().expect("poisoned").insert(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> HeaderValue {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {token}")).unwrap()
    }

    #[test]
    fn bcrypt_users_log_in_and_nobody_else_does() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let auth = Htpasswd::parse(&format!("# users\nalice:{hash}\n")).unwrap();
        auth.check(Some(&basic("alice", "s3cret"))).unwrap();
        // Checked once, then remembered.
        auth.check(Some(&basic("alice", "s3cret"))).unwrap();
        for bad in [
            Some(basic("alice", "wrong")),
            Some(basic("bob", "s3cret")),
            Some(HeaderValue::from_static("Bearer x")),
            Some(HeaderValue::from_static("Basic !!!")),
            None,
        ] {
            let e = auth.check(bad.as_ref()).unwrap_err();
            assert_eq!(e.code, Code::Unauthorized);
        }
        let md5 = Htpasswd::parse("bob:$apr1$abc$def").unwrap_err();
        assert!(format!("{md5:#}").contains("htpasswd -B"), "{md5:#}");
        assert!(Htpasswd::parse("").is_err());
    }
}
