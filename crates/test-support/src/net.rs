//! Raw-socket helpers for the slow-client tests (plain and TLS alike).

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};

/// Read until the peer closes (EOF or reset) or `limit` passes. Returns when
/// it closed (`None`: still open at `limit`) and everything it sent.
pub async fn wait_closed<S: AsyncRead + Unpin>(
    s: &mut S,
    limit: Duration,
) -> (Option<Duration>, String) {
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return (None, String::from_utf8_lossy(&seen).into_owned()),
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (Some(started.elapsed()), String::from_utf8_lossy(&seen).into_owned());
            }
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}
