//! The scrape loop: every interval, fetch each known proxy's `/metrics`,
//! reduce it to the series the API reads and record it in the rings.
//!
//! Every scrape is bounded: at most `concurrency` at once, each within
//! `timeout` (connect included) and [`MAX_BODY`] bytes. A proxy that stops
//! answering keeps its old samples until they are older than the retention,
//! then disappears from every answer; a pod that leaves the store stops
//! being scraped at the next tick.

use super::targets::{targets, Target};
use super::Viz;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Largest `/metrics` body accepted from one proxy.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// An HTTP client for the proxies' admin servers.
pub type AdminClient = Client<HttpConnector, Empty<Bytes>>;

/// A client for proxies' admin servers: plain HTTP/1, connects bounded by
/// `connect_timeout`, at most one idle connection kept per proxy.
pub fn admin_client(connect_timeout: Duration, idle: Duration) -> AdminClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .pool_idle_timeout(idle)
        .build(connector)
}

/// Why one scrape failed; kept per target for `/api/v1/targets`.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// Connect, request or body read failed.
    #[error("GET {url}: {reason}")]
    Http {
        /// What was fetched.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// No answer within the scrape timeout.
    #[error("GET {url}: no answer within {timeout:?}")]
    Timeout {
        /// What was fetched.
        url: String,
        /// The bound.
        timeout: Duration,
    },
    /// The proxy answered with something other than 200.
    #[error("GET {url}: HTTP {status}")]
    Status {
        /// What was fetched.
        url: String,
        /// The status.
        status: http::StatusCode,
    },
    /// The body is not the Prometheus text format.
    #[error("GET {url}: {reason}")]
    Parse {
        /// What was fetched.
        url: String,
        /// The parser's complaint.
        reason: String,
    },
}

/// Seconds since the Unix epoch, the rings' clock.
pub fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Scrapes until `stop` turns true.
pub async fn run(viz: Arc<Viz>, mut stop: watch::Receiver<bool>) {
    let client = admin_client(
        viz.settings.timeout,
        viz.settings.interval.saturating_mul(3),
    );
    let mut tick = tokio::time::interval(viz.settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let snapshot = viz.store.snapshot();
        let found = targets(&snapshot, viz.settings.default_ip);
        viz.set_targets(&found);
        let client = &client;
        let timeout = viz.settings.timeout;
        futures::stream::iter(found)
            .map(|target| async move {
                let at = now_unix();
                let result = scrape(client, &target, timeout).await;
                (target, at, result)
            })
            .buffer_unordered(viz.settings.concurrency)
            .for_each(|(target, at, result)| {
                viz.record(&target, at, result);
                async {}
            })
            .await;
        viz.expire(now_unix());
    }
}

/// Fetches and reduces one proxy's metrics.
async fn scrape(
    client: &AdminClient,
    target: &Target,
    timeout: Duration,
) -> Result<weft_metrics_api::exposition::Reduced, ScrapeError> {
    let url = format!("http://{}/metrics", target.addr);
    let http = |reason: String| ScrapeError::Http {
        url: url.clone(),
        reason,
    };
    let fetch = async {
        let uri: http::Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| http(e.to_string()))?;
        let rsp = client.get(uri).await.map_err(|e| http(error_chain(&e)))?;
        if rsp.status() != http::StatusCode::OK {
            return Err(ScrapeError::Status {
                url: url.clone(),
                status: rsp.status(),
            });
        }
        let body = Limited::new(rsp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| http(format!("reading the body: {e}")))?
            .to_bytes();
        Ok(body)
    };
    let body = tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| ScrapeError::Timeout {
            url: url.clone(),
            timeout,
        })??;
    let text = std::str::from_utf8(&body).map_err(|e| ScrapeError::Parse {
        url: url.clone(),
        reason: format!("not UTF-8: {e}"),
    })?;
    weft_metrics_api::exposition::reduce(text).map_err(|e| ScrapeError::Parse {
        url: url.clone(),
        reason: e.to_string(),
    })
}

/// An error and its sources on one line (hyper's top-level message alone
/// says only "client error (Connect)").
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}
