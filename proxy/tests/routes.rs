//! ServiceProfile routes on real processes: a `weft-controller` serving a
//! ServiceProfile from a directory, a client proxy resolving `api` through
//! it, and backends that fail on demand. Covers retries within the budget,
//! non-retryable routes, body size limits for retries, timeouts, failure
//! accrual, gRPC classification and profile changes at runtime.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use weft_test_support::backend::HttpBackend;
use weft_test_support::client::{body_string, get_through, send_h1};
use weft_test_support::controller::ControllerProcess;
use weft_test_support::grpc;
use weft_test_support::metrics::sum;
use weft_test_support::proxy::ProxyProcess;
use weft_test_support::scenario::{
    named_port_service_yaml, service_profile_yaml, service_yaml, write_atomic, NS,
};
use weft_test_support::{controller_bin, proxy_bin};

const API: &str = "http://api.shop.svc.cluster.local";
const DST: &str = "api.shop.svc.cluster.local:80";

/// A controller serving `api` (with `profile_spec`), its backends (if
/// any) and a client proxy that resolves through the controller.
struct Routes {
    config: tempfile::TempDir,
    _ctl: ControllerProcess,
    backends: Vec<HttpBackend>,
    web: ProxyProcess,
}

/// `n` backends as the (unmeshed) endpoints of `api`.
async fn routes(n: usize, profile_spec: &str, env: &[(&str, &str)]) -> Routes {
    let mut backends = Vec::new();
    for _ in 0..n {
        backends.push(HttpBackend::start().await);
    }
    let endpoints: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let service = service_yaml("api", &endpoints, None);
    serve(&service, backends, profile_spec, env).await
}

/// A controller serving `service` (the YAML of `api`) and the profile of
/// `api` with `profile_spec`, and a client proxy with `env` resolving
/// through it; `backends` are the test's.
async fn serve(
    service: &str,
    backends: Vec<HttpBackend>,
    profile_spec: &str,
    env: &[(&str, &str)],
) -> Routes {
    let config = tempfile::tempdir().unwrap();
    write_atomic(config.path(), "api.yaml", service).unwrap();
    let profile = service_profile_yaml("api", profile_spec);
    write_atomic(config.path(), "profile.yaml", &profile).unwrap();
    let ctl = ControllerProcess::start_with_config(&controller_bin!(), "24h", config.path())
        .await
        .unwrap();
    let mut web = ctl.client_proxy(proxy_bin!(), NS, "web").unwrap();
    for (k, v) in env {
        web = web.env(k, v);
    }
    let web = web.spawn().await.unwrap();
    Routes {
        config,
        _ctl: ctl,
        backends,
        web,
    }
}

async fn request(
    web: &ProxyProcess,
    method: Method,
    path: &str,
    body: Bytes,
) -> (u16, http::HeaderMap, String) {
    let req = Request::builder()
        .method(method)
        .uri(format!("{API}{path}"))
        .body(Full::new(body))
        .unwrap();
    let rsp = send_h1(web.outbound, req).await.unwrap();
    let (status, headers) = (rsp.status().as_u16(), rsp.headers().clone());
    (status, headers, body_string(rsp).await.unwrap())
}

async fn get(web: &ProxyProcess, path: &str) -> u16 {
    get_through(web.outbound, &format!("{API}{path}"))
        .await
        .unwrap()
        .0
}

/// Waits until the proxy applies the profile: `check` holds for the
/// route metrics after a request.
async fn wait_for_route(web: &ProxyProcess, path: &str, route: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        get(web, path).await;
        let m = web.metrics().await;
        if sum(&m, "route_request_total", &[("rt_route", route)]) > 0.0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "route {route} never applied: {m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Retry tests fail one endpoint on purpose; failure accrual would eject
/// it (and answer 503) before the retry budget shows.
const NO_ACCRUAL: &[(&str, &str)] = &[("WEFT_PROXY_FAILURE_ACCRUAL_MAX_FAILURES", "0")];

const BUDGET_AND_ROUTES: &str =
    "  retryBudget: {retryRatio: 0.5, minRetriesPerSecond: 10, ttl: 10s}
  routes:
  - name: flaky
    condition: {method: GET, pathRegex: /flaky}
    isRetryable: true
  - name: upload
    condition: {method: POST, pathRegex: /count}
    isRetryable: true
  - name: echo
    condition: {method: POST, pathRegex: /echo}
";

/// One backend without failure accrual, and `api` with the routes of
/// `spec`, whose route `flaky` (`GET /flaky`) is in force.
async fn flaky_routes(spec: &str) -> Routes {
    let r = routes(1, spec, NO_ACCRUAL).await;
    wait_for_route(&r.web, "/flaky", "flaky").await;
    r
}

#[tokio::test]
async fn retries_hide_a_flaky_route_within_the_budget() {
    let r = flaky_routes(BUDGET_AND_ROUTES).await;
    let backend = &r.backends[0];
    backend.set_failure_percent(50);
    let before = backend.requests();
    let route = [("rt_route", "flaky"), ("dst", DST)];
    let m = r.web.metrics().await;
    let effective_before = sum(&m, "route_request_total", &route);
    let attempts_before = sum(&m, "route_actual_request_total", &route);

    // 10 requests a second for 12 s, paced (open loop, sequential).
    let n = 120;
    let start = Instant::now();
    let mut ok = 0;
    for i in 0..n {
        if get(&r.web, "/flaky").await == 200 {
            ok += 1;
        }
        let due = start + Duration::from_millis(100 * (i + 1));
        tokio::time::sleep_until(due.into()).await;
    }
    let seconds = start.elapsed().as_secs_f64();
    let actual = backend.requests() - before;
    assert!(ok as f64 >= 0.99 * n as f64, "{ok}/{n} succeeded");
    // The budget's bound: (1 + ratio) × original + min/s × (seconds + ttl),
    // since the floor's reserve is a ttl's worth of retries.
    let bound = 1.5 * n as f64 + 10.0 * (seconds + 10.0);
    assert!(
        (actual as f64) <= bound,
        "{actual} upstream requests for {n}"
    );
    assert!(actual > n as usize, "retries happened: {actual}");
    assert_eq!(backend.retries(), actual - n as usize);

    let m = r.web.metrics().await;
    let effective = sum(&m, "route_request_total", &route) - effective_before;
    let attempts = sum(&m, "route_actual_request_total", &route) - attempts_before;
    assert_eq!(effective as usize, n as usize, "{m}");
    assert_eq!(attempts as usize, actual, "{m}");
    let retried = sum(
        &m,
        "route_retryable_total",
        &[("rt_route", "flaky"), ("skipped", "false")],
    );
    assert_eq!(retried as usize, actual - n as usize, "{m}");
    assert!(
        sum(
            &m,
            "route_actual_response_total",
            &[("rt_route", "flaky"), ("classification", "failure")]
        ) >= 1.0,
        "{m}"
    );
}

#[tokio::test]
async fn at_total_failure_retries_stop_at_the_budget() {
    let spec = BUDGET_AND_ROUTES.replace(
        "{retryRatio: 0.5, minRetriesPerSecond: 10, ttl: 10s}",
        "{retryRatio: 0.2, minRetriesPerSecond: 1, ttl: 1s}",
    );
    let r = flaky_routes(&spec).await;
    let backend = &r.backends[0];
    backend.set_failure_percent(100);
    let before = backend.requests();
    let n = 200;
    let start = Instant::now();
    for _ in 0..n {
        assert_eq!(get(&r.web, "/flaky").await, 500);
    }
    let seconds = start.elapsed().as_secs_f64();
    let retries = backend.requests() - before - n;
    // 20 % of the requests plus 1/s (and one ttl of reserve), where
    // "3 attempts each" would have made 400.
    let bound = 0.2 * n as f64 + 1.0 * (seconds + 1.0) + 2.0;
    assert!(
        (retries as f64) <= bound,
        "{retries} retries in {seconds:.1}s"
    );
    assert!(retries >= n / 10, "the budget allowed retries: {retries}");
    let m = r.web.metrics().await;
    assert!(
        sum(
            &m,
            "route_retryable_total",
            &[("rt_route", "flaky"), ("skipped", "no_budget")]
        ) >= (n - retries) as f64 * 0.5,
        "{m}"
    );
}

#[tokio::test]
async fn unmarked_routes_are_never_retried() {
    let r = flaky_routes(BUDGET_AND_ROUTES).await;
    let backend = &r.backends[0];
    backend.set_failure_percent(100);
    let before = backend.requests();
    for _ in 0..20 {
        // `echo` is a route without isRetryable; `/other` has no route.
        let (status, ..) = request(&r.web, Method::POST, "/echo", Bytes::from("x")).await;
        assert_eq!(status, 500);
        assert_eq!(get(&r.web, "/other").await, 500);
    }
    assert_eq!(backend.requests() - before, 40);
    assert_eq!(backend.retries(), 0);
    let m = r.web.metrics().await;
    assert_eq!(sum(&m, "route_retryable_total", &[]), 0.0, "{m}");
    assert_eq!(
        sum(&m, "route_request_total", &[("rt_route", "echo")]),
        20.0,
        "{m}"
    );
    assert!(
        sum(&m, "route_request_total", &[("rt_route", "[DEFAULT]")]) >= 20.0,
        "{m}"
    );
}

/// A body streamed in 4 KiB chunks without a length, so the proxy cannot
/// know its size in advance.
fn streamed(len: usize) -> http_body_util::combinators::BoxBody<Bytes, std::io::Error> {
    let chunks: Vec<Result<Frame<Bytes>, std::io::Error>> = (0..len.div_ceil(4096))
        .map(|i| {
            let n = (len - i * 4096).min(4096);
            Ok(Frame::data(Bytes::from(vec![b'b'; n])))
        })
        .collect();
    StreamBody::new(futures::stream::iter(chunks)).boxed()
}

async fn upload(web: &ProxyProcess, len: usize) -> (u16, String) {
    let req = Request::post(format!("{API}/count"))
        .body(streamed(len))
        .unwrap();
    let rsp = send_h1(web.outbound, req).await.unwrap();
    let status = rsp.status().as_u16();
    (status, body_string(rsp).await.unwrap())
}

#[tokio::test]
async fn bodies_up_to_64k_are_retried_larger_ones_pass_intact() {
    let r = flaky_routes(BUDGET_AND_ROUTES).await;
    let backend = &r.backends[0];

    // Healthy: a 100 KiB upload on a retryable route arrives whole.
    assert_eq!(upload(&r.web, 100 * 1024).await, (200, "102400".into()));

    backend.set_failure_percent(100);
    // Small bodies are replayed byte for byte on every attempt.
    let before = backend.requests();
    let (status, body) = upload(&r.web, 1024).await;
    assert_eq!((status, body.as_str()), (500, "failed after 1024 bytes"));
    assert!(backend.requests() - before > 1, "a small body is retried");
    // Over 64 KiB: sent once, intact, never retried.
    let before = backend.requests();
    let (status, body) = upload(&r.web, 100 * 1024).await;
    assert_eq!((status, body.as_str()), (500, "failed after 102400 bytes"));
    assert_eq!(backend.requests() - before, 1);
    let m = r.web.metrics().await;
    assert_eq!(
        sum(
            &m,
            "route_retryable_total",
            &[("rt_route", "upload"), ("skipped", "body_too_large")]
        ),
        1.0,
        "{m}"
    );
}

/// A profile spec whose one route `name` covers `/slow/...` with
/// `timeout`.
fn slow_route(name: &str, timeout: &str) -> String {
    format!(
        "  routes:\n  - name: {name}\n    condition: {{pathRegex: '/slow/.*'}}\n    \
         timeout: {timeout}\n"
    )
}

/// One backend, and `api` with the route `slow` (`/slow/...`, `timeout`)
/// in force.
async fn slow_routes(timeout: &str) -> Routes {
    let r = routes(1, &slow_route("slow", timeout), &[]).await;
    wait_for_route(&r.web, "/slow/1", "slow").await;
    r
}

#[tokio::test]
async fn route_timeouts_answer_504_and_count_as_failures() {
    let r = slow_routes("300ms").await;
    let started = Instant::now();
    let (status, headers, _) = request(&r.web, Method::GET, "/slow/3000", Bytes::new()).await;
    let elapsed = started.elapsed();
    assert_eq!(status, 504);
    let reason = headers["l5d-proxy-error"].to_str().unwrap();
    assert!(reason.contains("timed out after 300ms"), "{reason}");
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_millis(1500),
        "{elapsed:?}"
    );
    assert_eq!(get(&r.web, "/slow/10").await, 200);
    let m = r.web.metrics().await;
    let failed = [
        ("rt_route", "slow"),
        ("status_code", "504"),
        ("classification", "failure"),
    ];
    assert_eq!(sum(&m, "route_response_total", &failed), 1.0, "{m}");
    assert_eq!(sum(&m, "response_total", &failed[1..]), 1.0, "{m}");
}

#[tokio::test]
async fn a_profile_change_applies_without_restarting_the_proxy() {
    let r = slow_routes("5s").await;
    assert_eq!(get(&r.web, "/slow/600").await, 200);
    let profile = service_profile_yaml("api", &slow_route("slow-v2", "200ms"));
    write_atomic(r.config.path(), "profile.yaml", &profile).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&r.web, "/slow/600").await != 504 {
        assert!(Instant::now() < deadline, "the new timeout never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = r.web.metrics().await;
    assert!(
        sum(&m, "route_request_total", &[("rt_route", "slow-v2")]) >= 1.0,
        "{m}"
    );
}

#[tokio::test]
async fn failing_endpoints_are_ejected_and_return_after_recovery() {
    let r = routes(
        2,
        "  routes: []\n",
        &[("WEFT_PROXY_FAILURE_ACCRUAL_MIN_PENALTY", "1s")],
    )
    .await;
    wait_for_route(&r.web, "/", "[DEFAULT]").await;
    let (bad, good) = (&r.backends[0], &r.backends[1]);
    bad.set_failure_percent(100);
    let before = bad.requests();
    let mut failures = 0;
    for _ in 0..200 {
        if get(&r.web, "/").await != 200 {
            failures += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // 7 consecutive failures eject it; afterwards only probes reach it
    // (one per penalty: 1 s, then 2 s, ...).
    let reached = bad.requests() - before;
    assert!(reached <= 7 + 5, "failing endpoint still got {reached}");
    assert_eq!(failures, reached);
    assert!(good.requests() >= 190);

    // Healthy again: a probe succeeds and it is back in rotation.
    bad.set_failure_percent(0);
    let deadline = Instant::now() + Duration::from_secs(15);
    let before = bad.requests();
    while bad.requests() < before + 20 {
        assert!(
            Instant::now() < deadline,
            "recovered endpoint never returned"
        );
        assert_eq!(get(&r.web, "/").await, 200);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Every endpoint failing: the circuit opens and requests fail fast.
    bad.set_failure_percent(100);
    r.backends[1].set_failure_percent(100);
    for _ in 0..40 {
        get(&r.web, "/").await;
    }
    let (status, headers, _) = request(&r.web, Method::GET, "/", Bytes::new()).await;
    assert_eq!(status, 503);
    let reason = headers["l5d-proxy-error"].to_str().unwrap();
    assert!(reason.contains("failing"), "{reason}");
}

#[tokio::test]
async fn grpc_routes_are_classified_by_grpc_status() {
    // A gRPC server as the service's one endpoint.
    let addr = grpc::health_server().await.unwrap();
    let service = named_port_service_yaml("api", "grpc", &[addr], None);
    let spec = "  routes:\n  - name: check\n    condition: {method: POST, pathRegex: /grpc\\.health\\.v1\\.Health/Check}\n";
    let r = serve(&service, Vec::new(), spec, &[]).await;
    // The app uses the proxy by connecting to it with the service's name
    // as the authority (as it would after an iptables redirect).
    let mut client = grpc::health_client(r.web.outbound, Some(API))
        .await
        .unwrap();
    for _ in 0..3 {
        let ok = grpc::check(&mut client, grpc::SERVING).await;
        assert!(ok.is_ok(), "{ok:?}");
        let missing = grpc::check(&mut client, "nope").await.unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound);
    }
    let m = r.web.metrics().await;
    let route = |c| [("rt_route", "check"), ("classification", c)];
    assert_eq!(
        sum(&m, "route_response_total", &route("success")),
        3.0,
        "{m}"
    );
    assert_eq!(
        sum(&m, "route_response_total", &route("failure")),
        3.0,
        "{m}"
    );
}
