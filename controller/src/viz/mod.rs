//! The metrics API: golden metrics of every meshed workload, computed by the
//! controller itself from its proxies' `/metrics`, with no Prometheus.
//!
//! [`scrape`] fetches each proxy the store knows ([`targets`]) on an
//! interval into a bounded ring of samples per proxy
//! (`weft_metrics_api::ring`); the query modules ([`stat`], [`edges`],
//! [`routes`], [`top`]) answer `/api/v1/...` on the admin port with
//! Linkerd's PromQL semantics (`weft_metrics_api::promql`). See
//! `docs/observability.md`. [`authz`] answers `weft authz` from the store
//! alone: the inbound policy each pod port is served.

pub mod authz;
pub mod edges;
pub mod query;
pub mod routes;
pub mod scrape;
pub mod stat;
pub mod targets;
pub mod top;

use crate::store::{ObjectKey, Store};
use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::Full;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use targets::Target;
use weft_metrics_api::api;
use weft_metrics_api::exposition::Reduced;
use weft_metrics_api::ring::{Limits, RecordOutcome, Rings};

/// How the metrics API scrapes and how much it keeps.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Time between scrapes of each proxy.
    pub interval: Duration,
    /// Bound on one scrape, connect included.
    pub timeout: Duration,
    /// Scrapes in flight at once.
    pub concurrency: usize,
    /// Retention and caps of the sample rings.
    pub limits: Limits,
    /// The address of pods without one (file mode: loopback).
    pub default_ip: Option<IpAddr>,
    /// The trust domain of identity names (`client_id` of edges).
    pub trust_domain: String,
    /// The cluster domain of Service names.
    pub cluster_domain: String,
    /// What inbound policy is computed from (`/api/v1/authz`): the same
    /// settings the inbound policy API serves proxies with.
    pub inbound: crate::destination::inbound::InboundSettings,
}

/// What the scrape loop last saw of one proxy.
#[derive(Clone, Debug)]
struct TargetStatus {
    target: Target,
    last_ok: Option<f64>,
    last_error: Option<String>,
}

/// The metrics API's state, shared by the scrape loop and the handlers.
pub struct Viz {
    /// How it scrapes.
    pub settings: Settings,
    /// The objects it attributes traffic with.
    pub store: Store,
    state: Mutex<State>,
}

/// Samples and scrape health, behind one lock held only briefly (a
/// record, an expiry, one query's pass over the rings).
pub struct State {
    /// Recent samples per proxy.
    pub rings: Rings<ObjectKey>,
    targets: BTreeMap<ObjectKey, TargetStatus>,
}

// === impl Viz ===

impl Viz {
    /// A metrics API over `store`; start [`scrape::run`] to fill it.
    pub fn new(settings: Settings, store: Store) -> Self {
        let rings = Rings::new(settings.limits.clone());
        Self {
            settings,
            store,
            state: Mutex::new(State {
                rings,
                targets: BTreeMap::new(),
            }),
        }
    }

    /// The state, even if a panicking holder poisoned the lock (the rings
    /// stay consistent: every update is one call).
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the set of known proxies; health of proxies that left is
    /// forgotten (their samples age out with the retention).
    fn set_targets(&self, found: &[Target]) {
        let mut state = self.state();
        let mut next = BTreeMap::new();
        for t in found {
            let mut status = state.targets.remove(&t.pod).unwrap_or(TargetStatus {
                target: t.clone(),
                last_ok: None,
                last_error: None,
            });
            status.target = t.clone();
            next.insert(t.pod.clone(), status);
        }
        state.targets = next;
    }

    /// Records one scrape's outcome.
    fn record(&self, target: &Target, at: f64, result: Result<Reduced, scrape::ScrapeError>) {
        let mut state = self.state();
        match result {
            Ok(reduced) => {
                match state.rings.record(target.pod.clone(), at, reduced) {
                    RecordOutcome::Recorded { refused_series, .. } if refused_series > 0 => {
                        tracing::warn!(
                            pod = %target.pod,
                            refused_series,
                            "--metrics-max-series-per-proxy reached; new series are not kept"
                        );
                    }
                    RecordOutcome::TooManyTargets => tracing::warn!(
                        pod = %target.pod,
                        "--metrics-max-proxies reached; this proxy's metrics are not kept"
                    ),
                    RecordOutcome::OutOfOrder => {
                        tracing::debug!(pod = %target.pod, "scrape older than the last; dropped")
                    }
                    RecordOutcome::Recorded { .. } => {}
                }
                if let Some(s) = state.targets.get_mut(&target.pod) {
                    s.last_ok = Some(at);
                    s.last_error = None;
                }
            }
            Err(error) => {
                tracing::debug!(pod = %target.pod, %error, "scrape failed");
                if let Some(s) = state.targets.get_mut(&target.pod) {
                    s.last_error = Some(error.to_string());
                }
            }
        }
    }

    /// Drops samples older than the retention.
    fn expire(&self, now: f64) {
        self.state().rings.expire(now);
    }

    /// `/api/v1/targets`.
    pub fn targets(&self) -> api::TargetsResponse {
        let state = self.state();
        let targets = state
            .targets
            .values()
            .map(|s| {
                let ring = state.rings.get(&s.target.pod);
                api::Target {
                    pod: s.target.pod.to_string(),
                    address: s.target.addr.to_string(),
                    last_scrape_unix: s.last_ok,
                    last_error: s.last_error.clone(),
                    series: ring.map_or(0, |r| r.series_count()),
                    samples: ring.map_or(0, |r| r.scrapes()),
                }
            })
            .collect();
        api::TargetsResponse {
            scrape_interval_seconds: self.settings.interval.as_secs_f64(),
            retention_seconds: self.settings.limits.retention.as_secs_f64(),
            targets,
        }
    }

    /// Answers a `GET /api/v1/...` request, or `None` when the path is not
    /// the API's.
    pub async fn handle(&self, path: &str, query: &str) -> Option<Response<Full<Bytes>>> {
        let rsp = match path {
            api::STAT_PATH => json_result(
                api::StatQuery::from_query(query)
                    .map_err(bad_request)
                    .and_then(|q| stat::stat(self, &q)),
            ),
            api::EDGES_PATH => json_result(
                api::EdgesQuery::from_query(query)
                    .map_err(bad_request)
                    .and_then(|q| edges::edges(self, &q)),
            ),
            api::ROUTES_PATH => json_result(
                api::RoutesQuery::from_query(query)
                    .map_err(bad_request)
                    .and_then(|q| routes::routes(self, &q)),
            ),
            api::TOP_PATH => match api::TopQuery::from_query(query) {
                Ok(q) => json_result(top::top(self, &q).await),
                Err(e) => json_result::<()>(Err(bad_request(e))),
            },
            api::TARGETS_PATH => json_result(Ok(self.targets())),
            api::AUTHZ_PATH => json_result(
                api::AuthzQuery::from_query(query)
                    .map_err(bad_request)
                    .and_then(|q| authz::authz(self, &q)),
            ),
            _ => return None,
        };
        Some(rsp)
    }
}

/// A refused query: the status and what to tell the caller.
#[derive(Debug)]
pub struct ApiError {
    /// 400, 404, ...
    pub status: StatusCode,
    /// The message.
    pub message: String,
}

impl ApiError {
    /// 404 with a message naming what was not found.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    /// 400 with a message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

fn bad_request(e: api::QueryError) -> ApiError {
    ApiError::bad_request(e.to_string())
}

fn json_result<T: serde::Serialize>(result: Result<T, ApiError>) -> Response<Full<Bytes>> {
    let (status, body) = match result {
        Ok(value) => (StatusCode::OK, serde_json::to_vec(&value)),
        Err(e) => (
            e.status,
            serde_json::to_vec(&api::ErrorBody { error: e.message }),
        ),
    };
    let body =
        body.unwrap_or_else(|e| format!("{{\"error\":\"encoding failed: {e}\"}}").into_bytes());
    let mut rsp = Response::new(Full::new(Bytes::from(body)));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    rsp
}
