//! `weft-proxy await`: wait until the proxy's `/ready` answers 200.
//!
//! Without native sidecars, containers start in order but without waiting
//! for each other, so an application could send its first requests before
//! the proxy can carry them. Kubernetes does not start the next container
//! until the previous one's `postStart` hook returns, so the injector puts
//! the proxy first with `postStart: exec: weft-proxy await`: the app starts
//! only once the proxy is ready (or the hook gives up and the kubelet
//! restarts the proxy container).
//!
//! The check is a plain HTTP/1.1 `GET /ready` over TCP: the hook runs in the
//! proxy's own image and network namespace, so nothing more is needed.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// First pause between attempts; it doubles up to [`MAX_INTERVAL`].
pub const MIN_INTERVAL: Duration = Duration::from_millis(50);

/// Longest pause between attempts, so readiness is noticed within a second.
pub const MAX_INTERVAL: Duration = Duration::from_secs(1);

/// Longest a single attempt may take (connect, request, status line).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// The proxy did not become ready in time.
#[derive(Debug, thiserror::Error)]
#[error("the proxy at http://{addr}/ready was not ready within {timeout:?} (last attempt: {last})")]
pub struct NotReady {
    addr: SocketAddr,
    timeout: Duration,
    last: String,
}

/// Polls `http://addr/ready` until it answers 200 or `timeout` has passed.
pub async fn wait_ready(addr: SocketAddr, timeout: Duration) -> Result<(), NotReady> {
    let deadline = Instant::now() + timeout;
    let mut interval = MIN_INTERVAL;
    let mut last: Option<String> = None;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let attempt = tokio::time::timeout(remaining.min(ATTEMPT_TIMEOUT), ready_status(addr));
        last = match attempt.await {
            Ok(Ok(200)) => return Ok(()),
            Ok(Ok(status)) => Some(format!("/ready answered {status}")),
            Ok(Err(e)) => Some(e.to_string()),
            // An attempt cut short by the deadline says less than the
            // answer before it, which is what the operator needs to see.
            Err(_) => last.or_else(|| Some("no answer in time".to_string())),
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(NotReady {
                addr,
                timeout,
                last: last.unwrap_or_default(),
            });
        }
        tracing::debug!(%addr, last = last.as_deref().unwrap_or(""), "proxy not ready yet");
        tokio::time::sleep(interval.min(remaining)).await;
        interval = (interval * 2).min(MAX_INTERVAL);
    }
}

/// One `GET /ready`: the response's status code.
async fn ready_status(addr: SocketAddr) -> std::io::Result<u16> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET /ready HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    // The status line is all we need; 1 KiB bounds what is read.
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 256];
    while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 1024 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    // `HTTP/1.1 200 OK`
    let line = String::from_utf8_lossy(&buf);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "not an HTTP response: {:?}",
                    line.lines().next().unwrap_or("")
                ),
            )
        })
}
