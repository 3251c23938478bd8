//! Retrying one request (a manifest read or write, one blob's copy) as skopeo retries a copy:
//! after 1 s, 2 s, 4 s… (2^attempt seconds plus up to 10% jitter), and only on failures that
//! may pass: network errors, and HTTP 429, 502, 503 and 504. An authentication failure, a
//! missing manifest, a digest that does not match are final.

use std::future::Future;
use std::time::Duration;

use anyhow::Result;

use crate::blob::BlobError;
use crate::source::registry::UnexpectedStatus;

/// Runs `attempt` until it succeeds, fails for good, or has been retried `times` times.
pub(crate) async fn with_retries<T, F, Fut>(times: u32, what: &str, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut retried = 0;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if retried < times && retryable(&e) => {
                retried += 1;
                let delay = backoff(retried);
                log::warn!(
                    "{what}: failed, retrying in {:.1}s ({retried}/{times}): {e:#}",
                    delay.as_secs_f64()
                );
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The wait before retry number `retry` (from 1).
fn backoff(retry: u32) -> Duration {
    let base = Duration::from_secs(1u64 << (retry - 1).min(6));
    // Jitter from the clock: retries of parallel requests do not line up.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    base + base.mul_f64(f64::from(nanos % 1000) / 10_000.0)
}

/// Whether `error` may pass on a second attempt.
pub(crate) fn retryable(error: &anyhow::Error) -> bool {
    for cause in error.chain() {
        if let Some(status) = cause.downcast_ref::<UnexpectedStatus>() {
            return matches!(status.status, 429 | 502 | 503 | 504);
        }
        if cause.is::<BlobError>() {
            return false;
        }
        if let Some(e) = cause.downcast_ref::<reqwest::Error>() {
            return !e.is_status() && !e.is_builder() && !e.is_redirect() && !e.is_decode();
        }
        if let Some(e) = cause.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            // A body stream's failure comes wrapped in an io::Error of kind Other.
            if let Some(inner) = e.get_ref()
                && let Some(e) = inner.downcast_ref::<reqwest::Error>()
            {
                return !e.is_status() && !e.is_builder() && !e.is_redirect() && !e.is_decode();
            }
            return matches!(
                e.kind(),
                ConnectionReset | ConnectionAborted | BrokenPipe | TimedOut | UnexpectedEof
            );
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_as_skopeo() {
        let status = |s| {
            anyhow::Error::new(UnexpectedStatus {
                status: s,
                detail: None,
            })
            .context("Pushing manifest x")
        };
        assert!(retryable(&status(503)));
        assert!(retryable(&status(429)));
        assert!(!retryable(&status(401)));
        assert!(!retryable(&status(404)));
        assert!(!retryable(&status(500)));
        let reset = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(retryable(&reset));
        assert!(!retryable(&anyhow::anyhow!("digest mismatch")));
    }

    #[test]
    fn backoff_doubles_with_jitter_below_ten_percent() {
        for (retry, secs) in [(1, 1.0), (2, 2.0), (3, 4.0)] {
            let d = backoff(retry).as_secs_f64();
            assert!(d >= secs && d < secs * 1.1, "retry {retry}: {d}");
        }
    }

    #[tokio::test]
    async fn retries_then_gives_up() {
        let mut calls = 0;
        let result: Result<()> = with_retries(1, "test", || {
            calls += 1;
            async {
                Err(UnexpectedStatus {
                    status: 502,
                    detail: None,
                }
                .into())
            }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls, 2);
    }
}
