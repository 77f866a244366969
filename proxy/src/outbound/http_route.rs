//! The route layer: what a ServiceProfile route does to one request.
//!
//! Between the logical target (which picks the route) and its backends
//! (which this layer calls once per attempt): the route's **timeout** over
//! all attempts, **retries** while an attempt fails by the route's response
//! classes and the profile's retry budget allows (bodies up to 64 KiB are
//! kept for replay), and the `route_*` / `route_actual_*` metrics. Errors
//! become responses here, so the route metrics count them too.

use super::endpoint::BoxResponse;
use crate::http::classify::Classifier;
use crate::http::errors::ProxyError;
use crate::http::metrics::RouteRecord;
use crate::http::{body, headers, BoxBody};
use crate::metrics::route::{RouteLabels, Skipped};
use crate::metrics::RouteMetrics;
use crate::route::condition::ResponseClasses;
use crate::route::replay::{ReplayBody, MAX_REPLAY_BYTES};
use crate::route::{Route, RoutePolicy};
use http::{HeaderValue, Method, Request, Response};
use std::sync::Arc;
use std::time::Instant;

/// The most attempts one request may make; the retry budget normally
/// stops retries long before.
pub const MAX_ATTEMPTS: u32 = 10;

/// One request on one route of a profile. `B` is the route's backends: a
/// service that sends one attempt (choosing the backend anew each time,
/// so a retry may go to another split leaf and P2C picks again).
pub struct HttpRoute<B> {
    route: Arc<Route>,
    /// The profile's routes, for their shared retry budget.
    policy: Arc<RoutePolicy>,
    labels: RouteLabels,
    metrics: RouteMetrics,
    backends: B,
}

// === impl HttpRoute ===

/// What a route sends each attempt to: its backends, waiting for the
/// chosen backend's readiness inside the returned future.
pub trait Backends: Send + Sync + 'static {
    /// Sends one attempt.
    fn send(&self, req: Request<BoxBody>) -> BoxResponse;
}

impl<B: Backends> HttpRoute<B> {
    /// `route` of `policy`, metered under `labels`, sending to `backends`.
    pub fn new(
        route: Arc<Route>,
        policy: Arc<RoutePolicy>,
        labels: RouteLabels,
        metrics: RouteMetrics,
        backends: B,
    ) -> Self {
        Self {
            route,
            policy,
            labels,
            metrics,
            backends,
        }
    }

    /// Serves `req`: attempts within the timeout; the final response
    /// carries a [`RouteRecord`] for the metrics layer.
    pub async fn serve(self, req: Request<BoxBody>) -> Response<BoxBody> {
        let grpc = headers::is_grpc(req.headers());
        let result = match self.route.timeout {
            Some(timeout) => tokio::time::timeout(timeout, self.attempts(req))
                .await
                .unwrap_or_else(|_| {
                    Err(ProxyError::RouteTimeout {
                        route: self.route.name.clone(),
                        timeout,
                    })
                }),
            None => self.attempts(req).await,
        };
        let (mut rsp, actual) = match result {
            Ok(rsp) => (rsp, true),
            Err(e) => (e.to_response(grpc), false),
        };
        rsp.extensions_mut().insert(RouteRecord {
            metrics: self.metrics.clone(),
            labels: self.labels.clone(),
            classes: self.route.classes.clone(),
            actual,
        });
        rsp
    }

    /// Sends the request, and again while it fails, the route is
    /// retryable, the body could be kept and the budget allows.
    async fn attempts(&self, mut req: Request<BoxBody>) -> Result<Response<BoxBody>, ProxyError> {
        // The balancer classifies with the route's classes too (failure
        // accrual must agree with retries on what a failure is).
        req.extensions_mut().insert(self.route.classes.clone());
        // Upgrades and tunnels take over the connection: never retried.
        let retryable =
            self.route.retryable && req.method() != Method::CONNECT && !headers::is_upgrade(&req);
        if !retryable {
            return self.attempt(req).await.0;
        }
        let budget = self.policy.budget();
        budget.deposit();
        let (parts, body) = req.into_parts();
        let mut body = match ReplayBody::new(body, MAX_REPLAY_BYTES) {
            Ok(body) => body,
            Err(body) => {
                // Known to be too large: one attempt, as it is.
                let (result, failed) = self.attempt(Request::from_parts(parts, body)).await;
                if failed {
                    self.metrics.retryable(&self.labels, Skipped::BodyTooLarge);
                }
                return result;
            }
        };
        let kept = body.handle();
        let mut attempt = 1;
        loop {
            let mut req = clone_head(&parts, body::boxed(body));
            req.extensions_mut().insert(self.route.classes.clone());
            if attempt > 1 {
                req.headers_mut()
                    .insert(headers::L5D_RETRY_ATTEMPT, HeaderValue::from(attempt));
            }
            let (result, failed) = self.attempt(req).await;
            if !failed {
                return result;
            }
            // The budget is asked last: a refusal for another reason must
            // not spend a retry. (If the body outgrows the cap between the
            // check and `replay`, one token is spent for nothing.)
            let next = if attempt >= MAX_ATTEMPTS {
                Err(Skipped::MaxAttempts)
            } else if !kept.is_replayable() {
                Err(Skipped::BodyTooLarge)
            } else if !budget.withdraw() {
                Err(Skipped::NoBudget)
            } else {
                kept.replay().ok_or(Skipped::BodyTooLarge)
            };
            self.metrics.retryable(
                &self.labels,
                next.as_ref().err().copied().unwrap_or(Skipped::No),
            );
            let Ok(next) = next else {
                return result;
            };
            body = next;
            if let Ok(rsp) = &result {
                // The failed attempt's response is dropped; count it now.
                self.metrics
                    .response(&self.labels, rsp.status().as_u16(), false, true);
            }
            drop(result);
            attempt += 1;
        }
    }

    /// One attempt through the backends, metered as `route_actual_*`.
    /// Returns the result and whether it failed (by the route's response
    /// classes, judged on the response head).
    async fn attempt(
        &self,
        req: Request<BoxBody>,
    ) -> (Result<Response<BoxBody>, ProxyError>, bool) {
        let grpc = headers::is_grpc(req.headers());
        self.metrics.request(&self.labels, true);
        let start = Instant::now();
        match self.backends.send(req).await {
            Ok(rsp) => {
                let elapsed_ms = start.elapsed().as_secs_f64() * 1e3;
                let status = rsp.status();
                self.metrics
                    .latency(&self.labels, status.as_u16(), elapsed_ms, true);
                let grpc = grpc || headers::is_grpc(rsp.headers());
                let success = judge(status, rsp.headers(), grpc, &self.route.classes);
                (Ok(rsp), !success)
            }
            Err(e) => {
                self.metrics
                    .response(&self.labels, e.status().as_u16(), false, true);
                (Err(e), true)
            }
        }
    }
}

/// A response head judged by a route's classes (gRPC answers whose status
/// is only in the trailers count as a success: neither retried nor
/// accrued).
fn judge(
    status: http::StatusCode,
    headers: &http::HeaderMap,
    grpc: bool,
    classes: &Arc<ResponseClasses>,
) -> bool {
    Classifier::new(status, headers, grpc)
        .with_classes(classes.clone())
        .success_at_headers()
        .unwrap_or(true)
}

/// A request with `parts`' method, URI, version and headers (not its
/// extensions, which only upgrades use, and those are never retried).
fn clone_head(parts: &http::request::Parts, body: BoxBody) -> Request<BoxBody> {
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Direction, Metrics};
    use crate::route::DEFAULT_ROUTE;
    use linkerd2_proxy_api::destination as api;
    use std::collections::{HashMap, VecDeque};
    use std::sync::Mutex;
    use std::time::Duration;

    /// Backends that answer each attempt from a script: after `delay`,
    /// `status` (or an error for 0); they record every attempt's
    /// `l5d-retry-attempt` header.
    #[derive(Default)]
    struct Scripted {
        script: Mutex<VecDeque<(Duration, u16)>>,
        attempts: Mutex<Vec<Option<String>>>,
    }

    impl Scripted {
        fn new(script: &[(u64, u16)]) -> Arc<Self> {
            Arc::new(Self {
                script: Mutex::new(
                    script
                        .iter()
                        .map(|(ms, s)| (Duration::from_millis(*ms), *s))
                        .collect(),
                ),
                attempts: Mutex::default(),
            })
        }

        fn attempts(&self) -> Vec<Option<String>> {
            self.attempts.lock().unwrap().clone()
        }
    }

    impl Backends for Arc<Scripted> {
        fn send(&self, req: Request<BoxBody>) -> BoxResponse {
            let header = req
                .headers()
                .get(headers::L5D_RETRY_ATTEMPT)
                .map(|v| v.to_str().unwrap().to_string());
            self.attempts.lock().unwrap().push(header);
            let (delay, status) = self
                .script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or((Duration::ZERO, 200));
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                if status == 0 {
                    return Err(ProxyError::NoEndpoints("api:80".into()));
                }
                Ok(Response::builder()
                    .status(status)
                    .body(body::empty())
                    .unwrap())
            })
        }
    }

    fn wire_route(retryable: bool, timeout_ms: Option<i32>) -> api::Route {
        api::Route {
            condition: Some(api::RequestMatch {
                r#match: Some(api::request_match::Match::Path(api::PathMatch {
                    regex: "/.*".into(),
                })),
            }),
            metrics_labels: HashMap::from([("route".to_string(), "all".to_string())]),
            is_retryable: retryable,
            timeout: timeout_ms.map(|ms| prost_types::Duration {
                seconds: 0,
                nanos: ms * 1_000_000,
            }),
            ..Default::default()
        }
    }

    /// The route layer for `route` under a budget of `ratio` retries per
    /// request plus `per_second`.
    fn http_route(
        route: api::Route,
        ratio: f32,
        per_second: u32,
        backends: Arc<Scripted>,
    ) -> HttpRoute<Arc<Scripted>> {
        let budget = api::RetryBudget {
            retry_ratio: ratio,
            min_retries_per_second: per_second,
            ttl: Some(prost_types::Duration {
                seconds: 10,
                nanos: 0,
            }),
        };
        let policy = Arc::new(RoutePolicy::compile(&[route], Some(&budget), None));
        let route = policy.route_for(&Method::GET, "/").clone();
        assert_eq!(&*route.name, "all");
        let metrics = Metrics::new(false, Default::default()).route;
        let labels = metrics.labels(Direction::Outbound, &"api:80".into(), &route.name);
        HttpRoute::new(route, policy, labels, metrics, backends)
    }

    fn get(body: BoxBody) -> Request<BoxBody> {
        Request::get("http://api/").body(body).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn failed_attempts_are_retried_until_one_succeeds() {
        let backends = Scripted::new(&[(0, 500), (0, 503), (0, 200)]);
        let route = http_route(wire_route(true, None), 0.2, 10, backends.clone());
        let rsp = route.serve(get(body::empty())).await;
        assert_eq!(rsp.status(), 200);
        let record = rsp.extensions().get::<RouteRecord>().unwrap();
        assert!(record.actual);
        assert_eq!(
            backends.attempts(),
            [None, Some("2".to_string()), Some("3".to_string())]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_route_that_is_not_retryable_makes_one_attempt() {
        let backends = Scripted::new(&[(0, 500), (0, 200)]);
        let route = http_route(wire_route(false, None), 0.2, 10, backends.clone());
        assert_eq!(route.serve(get(body::empty())).await.status(), 500);
        assert_eq!(backends.attempts().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_when_the_budget_is_spent() {
        // No ratio and no floor: not a single retry is affordable.
        let backends = Scripted::new(&[(0, 500), (0, 200)]);
        let route = http_route(wire_route(true, None), 0.0, 0, backends.clone());
        assert_eq!(route.serve(get(body::empty())).await.status(), 500);
        assert_eq!(backends.attempts().len(), 1);

        // One retry per request: the first request's deposit pays for
        // exactly one retry.
        let backends = Scripted::new(&[(0, 500), (0, 500), (0, 200)]);
        let route = http_route(wire_route(true, None), 1.0, 0, backends.clone());
        assert_eq!(route.serve(get(body::empty())).await.status(), 500);
        assert_eq!(backends.attempts().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_never_exceed_the_attempt_cap() {
        let script: Vec<(u64, u16)> = (0..20).map(|_| (0, 500)).collect();
        let backends = Scripted::new(&script);
        let route = http_route(wire_route(true, None), 1000.0, 1000, backends.clone());
        assert_eq!(route.serve(get(body::empty())).await.status(), 500);
        assert_eq!(backends.attempts().len(), MAX_ATTEMPTS as usize);
    }

    #[tokio::test(start_paused = true)]
    async fn the_timeout_covers_every_attempt() {
        // Each attempt fails after 400 ms; the route allows 1 s in all.
        let backends = Scripted::new(&[(400, 500), (400, 500), (400, 500), (400, 200)]);
        let route = http_route(
            wire_route(true, Some(1_000)),
            1000.0,
            1000,
            backends.clone(),
        );
        let started = tokio::time::Instant::now();
        let rsp = route.serve(get(body::empty())).await;
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert_eq!(rsp.status(), 504);
        let reason = rsp.headers()["l5d-proxy-error"].to_str().unwrap();
        assert!(reason.contains("timed out"), "{reason}");
        // The third attempt started at 800 ms and was cut off.
        assert_eq!(backends.attempts().len(), 3);
        assert!(!rsp.extensions().get::<RouteRecord>().unwrap().actual);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_too_large_to_keep_is_sent_once() {
        let backends = Scripted::new(&[(0, 500), (0, 200)]);
        let route = http_route(wire_route(true, None), 1000.0, 1000, backends.clone());
        let big = body::full(vec![b'x'; MAX_REPLAY_BYTES + 1]);
        assert_eq!(route.serve(get(big)).await.status(), 500);
        assert_eq!(backends.attempts().len(), 1);
        // A small body is kept and replayed.
        let backends = Scripted::new(&[(0, 500), (0, 200)]);
        let route = http_route(wire_route(true, None), 1000.0, 1000, backends.clone());
        assert_eq!(route.serve(get(body::full("small"))).await.status(), 200);
        assert_eq!(backends.attempts().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn backend_errors_become_responses_the_route_metrics_count() {
        let backends = Scripted::new(&[(0, 0)]);
        let route = http_route(wire_route(false, None), 0.2, 10, backends.clone());
        let rsp = route.serve(get(body::empty())).await;
        assert_eq!(rsp.status(), 503);
        let record = rsp.extensions().get::<RouteRecord>().unwrap();
        assert!(!record.actual);
        assert_eq!(&*record.labels.rt_route, "all");
        assert_ne!(&*record.labels.rt_route, DEFAULT_ROUTE);
    }
}
