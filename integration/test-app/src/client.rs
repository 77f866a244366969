//! `client`: a steady load generator that tallies what it saw.
//!
//! End-to-end tests leave it running through a rollout, a traffic split or
//! a proxy restart, then read `/stats` to check that nothing failed and
//! which versions answered. `POST /reset` starts a fresh tally; answers to
//! requests sent before the reset are not counted after it.

use crate::signal::Terminate;
use crate::web::{self, Body, Client};
use http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// At most this many requests are in flight; a tick that finds them all
/// busy is skipped rather than queued.
pub const MAX_IN_FLIGHT: usize = 64;

/// `recent_errors` keeps the last this many errors.
pub const RECENT_ERRORS: usize = 20;

/// At most this many distinct versions are tallied; the rest count as
/// [`OTHER_VERSIONS`] so a misbehaving server cannot grow the map.
pub const MAX_VERSIONS: usize = 64;

/// The version key that stands for every version past [`MAX_VERSIONS`].
pub const OTHER_VERSIONS: &str = "<other>";

/// What to load and how hard.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The URL to GET.
    pub url: Uri,
    /// Requests per second.
    pub rps: u32,
    /// Overall timeout of one request (headers and body).
    pub timeout: Duration,
}

/// The tally served at `GET /stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// Completed requests: `ok + failed`.
    pub total: u64,
    /// Requests answered 2xx.
    pub ok: u64,
    /// Transport errors, timeouts and non-2xx answers.
    pub failed: u64,
    /// 2xx answers per version (see [`response_version`]); sums to `ok`.
    pub versions: BTreeMap<String, u64>,
    /// The last [`RECENT_ERRORS`] failures, oldest first.
    pub recent_errors: Vec<String>,
}

/// The outcome of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx, with the version that answered.
    Ok(String),
    /// Anything else, and why.
    Failed(String),
}

#[derive(Debug, Default)]
struct Tally {
    epoch: u64,
    total: u64,
    ok: u64,
    failed: u64,
    versions: BTreeMap<String, u64>,
    recent_errors: VecDeque<String>,
}

/// The shared, resettable tally.
#[derive(Clone, Debug, Default)]
pub struct Stats(Arc<Mutex<Tally>>);

impl Stats {
    fn lock(&self) -> MutexGuard<'_, Tally> {
        // A panic while holding the lock cannot leave the counters torn in a
        // way that matters for a test tally.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current epoch: pass it to [`Stats::record`] with the outcome of
    /// a request started now.
    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// Counts `outcome` unless the tally was reset since `epoch`.
    pub fn record(&self, epoch: u64, outcome: Outcome) {
        let mut t = self.lock();
        if t.epoch != epoch {
            return;
        }
        t.total += 1;
        match outcome {
            Outcome::Ok(version) => {
                t.ok += 1;
                let key = if t.versions.contains_key(&version) || t.versions.len() < MAX_VERSIONS {
                    version
                } else {
                    OTHER_VERSIONS.to_owned()
                };
                *t.versions.entry(key).or_default() += 1;
            }
            Outcome::Failed(error) => {
                t.failed += 1;
                if t.recent_errors.len() == RECENT_ERRORS {
                    t.recent_errors.pop_front();
                }
                t.recent_errors.push_back(error);
            }
        }
    }

    /// Zeroes everything; answers to requests started before are dropped.
    pub fn reset(&self) {
        let mut t = self.lock();
        *t = Tally {
            epoch: t.epoch + 1,
            ..Tally::default()
        };
    }

    /// A copy of the tally.
    pub fn snapshot(&self) -> Snapshot {
        let t = self.lock();
        Snapshot {
            total: t.total,
            ok: t.ok,
            failed: t.failed,
            versions: t.versions.clone(),
            recent_errors: t.recent_errors.iter().cloned().collect(),
        }
    }
}

/// The version an answer reports: `upstream.version` when `upstream` is an
/// object (a server that proxied to another), else the top-level `version`;
/// `""` when there is none or the body is not JSON.
pub fn response_version(body: &[u8]) -> String {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return String::new();
    };
    let field = match value.get("upstream") {
        Some(up @ Value::Object(_)) => up.get("version"),
        _ => value.get("version"),
    };
    field.and_then(Value::as_str).unwrap_or_default().to_owned()
}

/// Sends load and serves the stats on `stats_listener` until terminated.
pub async fn run(
    stats_listener: TcpListener,
    config: ClientConfig,
    mut terminate: Terminate,
) -> anyhow::Result<()> {
    anyhow::ensure!(config.rps > 0, "--rps must be at least 1");
    let stats = Stats::default();
    let stop = CancellationToken::new();
    let handler = {
        let stats = stats.clone();
        move |req: Request<Incoming>, _peer: SocketAddr| {
            let stats = stats.clone();
            async move { handle(&stats, &req) }
        }
    };
    let serving = tokio::spawn(web::serve(stats_listener, handler, stop.clone()));
    let load = tokio::spawn(load(config, stats, stop.clone()));
    terminate.recv().await;
    stop.cancel();
    load.await
        .map_err(|e| anyhow::anyhow!("load task failed: {e}"))?;
    serving
        .await
        .map_err(|e| anyhow::anyhow!("stats server failed: {e}"))?;
    Ok(())
}

async fn load(config: ClientConfig, stats: Stats, stop: CancellationToken) {
    let client = web::client(config.timeout);
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(config.rps)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tracing::info!(url = %config.url, rps = config.rps, "sending load");
    let mut skipped: u64 = 0;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            skipped += 1;
            if skipped.is_power_of_two() {
                tracing::warn!(
                    skipped,
                    "all {MAX_IN_FLIGHT} requests in flight: skipping ticks"
                );
            }
            continue;
        };
        let epoch = stats.epoch();
        let (client, stats, url, timeout) = (
            client.clone(),
            stats.clone(),
            config.url.clone(),
            config.timeout,
        );
        let stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            tokio::select! {
                outcome = one(&client, &url, timeout) => {
                    if let Outcome::Failed(error) = &outcome {
                        tracing::debug!(%error, "request failed");
                    }
                    stats.record(epoch, outcome);
                }
                // Stopping: the answer would not be read by anyone.
                () = stop.cancelled() => {}
            }
        });
    }
}

async fn one(client: &Client, url: &Uri, timeout: Duration) -> Outcome {
    match web::get(client, url, timeout).await {
        Ok((status, body)) if status.is_success() => Outcome::Ok(response_version(&body)),
        Ok((status, body)) => {
            let detail = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            Outcome::Failed(format!("{status}: {}", detail.trim()))
        }
        Err(error) => Outcome::Failed(error),
    }
}

fn handle(stats: &Stats, req: &Request<Incoming>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/stats") => match serde_json::to_value(stats.snapshot()) {
            Ok(v) => web::json(StatusCode::OK, &v),
            Err(_) => web::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot encode the stats\n",
            ),
        },
        (&Method::POST, "/reset") => {
            stats.reset();
            tracing::info!("stats reset");
            web::text(StatusCode::OK, "reset")
        }
        (&Method::GET, "/healthz") => web::text(StatusCode::OK, "ok"),
        (_, "/stats" | "/reset" | "/healthz") => {
            web::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => web::text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_prefers_an_upstream_object() {
        assert_eq!(
            response_version(br#"{"version":"a","upstream":{"version":"b"}}"#),
            "b"
        );
        assert_eq!(response_version(br#"{"version":"a","upstream":null}"#), "a");
        assert_eq!(response_version(br#"{"version":"a"}"#), "a");
        assert_eq!(response_version(br#"{"upstream":{}}"#), "");
        assert_eq!(response_version(b"not json"), "");
        assert_eq!(response_version(br#"{"error":"x"}"#), "");
    }

    #[test]
    fn reset_zeroes_and_drops_older_answers() {
        let stats = Stats::default();
        let before = stats.epoch();
        stats.record(before, Outcome::Ok("v1".into()));
        stats.record(before, Outcome::Failed("boom".into()));
        let s = stats.snapshot();
        assert_eq!((s.total, s.ok, s.failed), (2, 1, 1));
        assert_eq!(s.versions, BTreeMap::from([("v1".to_owned(), 1)]));
        assert_eq!(s.recent_errors, vec!["boom".to_owned()]);

        stats.reset();
        stats.record(before, Outcome::Ok("v1".into()));
        assert_eq!(stats.snapshot(), Snapshot::default());
        stats.record(stats.epoch(), Outcome::Ok("v2".into()));
        assert_eq!(
            stats.snapshot().versions,
            BTreeMap::from([("v2".to_owned(), 1)])
        );
    }

    #[test]
    fn errors_and_versions_stay_bounded() {
        let stats = Stats::default();
        let e = stats.epoch();
        for i in 0..100 {
            stats.record(e, Outcome::Failed(format!("e{i}")));
            stats.record(e, Outcome::Ok(format!("v{i}")));
        }
        let s = stats.snapshot();
        assert_eq!(s.recent_errors.len(), RECENT_ERRORS);
        assert_eq!(s.recent_errors.first().map(String::as_str), Some("e80"));
        assert_eq!(s.versions.len(), MAX_VERSIONS + 1);
        assert_eq!(s.versions[OTHER_VERSIONS], 100 - MAX_VERSIONS as u64);
    }
}
