//! `get`: N sequential GETs and a one-line verdict, for meshed Jobs.
//!
//! A Job's exit code is what the test reads, so `get` exits 0 only when
//! every request succeeded. A freshly started pod may not have its proxy
//! (or DNS) ready yet, so the first request can be retried for a while.

use crate::signal::Terminate;
use crate::web;
use http::Uri;
use serde::Serialize;
use std::time::Duration;
use tokio::time::Instant;

/// Retries of the first request are at least this far apart.
const MIN_RETRY_INTERVAL: Duration = Duration::from_millis(50);

/// What to fetch, how often and how patiently.
#[derive(Clone, Debug)]
pub struct GetConfig {
    /// The URL to GET.
    pub url: Uri,
    /// How many requests in total.
    pub count: u32,
    /// Pause between two requests (and between retries of the first).
    pub interval: Duration,
    /// Overall timeout of one request.
    pub timeout: Duration,
    /// Retry the first request until it succeeds or this much time passed.
    pub retry_until_ok: Duration,
}

/// The line printed on stdout.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Requests answered 2xx.
    pub ok: u32,
    /// Requests that were not (a retried first request counts once).
    pub failed: u32,
    /// Why the last failure failed, if any did.
    pub last_error: Option<String>,
}

impl Summary {
    /// Whether all `count` requests succeeded: the exit code.
    pub fn all_ok(&self, count: u32) -> bool {
        self.ok == count && self.failed == 0
    }
}

/// Runs the requests; a termination request stops early (so the summary
/// then falls short of `count`).
pub async fn run(config: &GetConfig, mut terminate: Terminate) -> Summary {
    let mut summary = Summary::default();
    tokio::select! {
        () = requests(config, &mut summary) => {}
        () = terminate.recv() => tracing::warn!("terminated before all requests were done"),
    }
    summary
}

async fn requests(config: &GetConfig, summary: &mut Summary) {
    let client = web::client(config.timeout);
    let retry_deadline = Instant::now() + config.retry_until_ok;
    for i in 0..config.count {
        if i > 0 {
            tokio::time::sleep(config.interval).await;
        }
        let mut attempt = 0u32;
        let result = loop {
            attempt += 1;
            let result = match web::get(&client, &config.url, config.timeout).await {
                Ok((status, _)) if status.is_success() => Ok(()),
                Ok((status, body)) => {
                    let detail = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                    Err(format!("{status}: {}", detail.trim()))
                }
                Err(e) => Err(e),
            };
            match result {
                Err(error) if i == 0 && Instant::now() < retry_deadline => {
                    tracing::info!(attempt, %error, "first request failed; retrying");
                    tokio::time::sleep(config.interval.max(MIN_RETRY_INTERVAL)).await;
                }
                r => break r,
            }
        };
        match result {
            Ok(()) => summary.ok += 1,
            Err(error) => {
                tracing::warn!(request = i + 1, %error, "request failed");
                summary.failed += 1;
                summary.last_error = Some(error);
            }
        }
    }
}
