//! The outbound stack's per-backend queue and fail-fast, and the listener's
//! load shedding, through a real proxy and a real controller (file feed).
//!
//! - A backend that *loses* its endpoints queues requests for new ones,
//!   then fails fast with `503` naming it, until an endpoint is back.
//! - Requests over `WEFT_PROXY_OUTBOUND_MAX_IN_FLIGHT` are shed at once.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use std::time::{Duration, Instant};
use weft_test_support::backend::HttpBackend;
use weft_test_support::client::send_h1;
use weft_test_support::proxy::ProxyProcess;
use weft_test_support::scenario::{request, Discovery, FileDiscovery, API, NS};
use weft_test_support::{controller_bin, proxy_bin};

/// Bound on each wait for the proxy to follow a change.
const WAIT: Duration = Duration::from_secs(15);

/// The proxy's answer to `GET uri`: status and `l5d-proxy-error`.
async fn get(proxy: &ProxyProcess, uri: &str) -> (u16, String) {
    let rsp = request(proxy, uri).await.unwrap();
    let reason = rsp
        .headers()
        .get("l5d-proxy-error")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (rsp.status().as_u16(), reason)
}

/// Sends `GET API` until it answers `status` (bounded by [`WAIT`]).
async fn until_status(proxy: &ProxyProcess, status: u16) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (got, reason) = get(proxy, API).await;
        if got == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still {got} ({reason}), waiting for {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// True if `GET API` gets no answer within `within`: it is waiting in the
/// backend's queue.
async fn queued(proxy: &ProxyProcess, within: Duration) -> bool {
    let req = Request::get(API).body(Empty::<Bytes>::new()).unwrap();
    tokio::time::timeout(within, send_h1(proxy.outbound, req))
        .await
        .is_err()
}

/// Service `api` with one plain endpoint, and a client proxy configured
/// with `env` that has been served by it.
async fn serving(env: (&str, &str)) -> (FileDiscovery, HttpBackend, ProxyProcess) {
    let mut d = FileDiscovery::start(&controller_bin!(), None, &["api"])
        .await
        .unwrap();
    let backend = HttpBackend::start().await;
    let web = d
        .ctl()
        .client_proxy(proxy_bin!(), NS, "web")
        .unwrap()
        .env(env.0, env.1)
        .spawn()
        .await
        .unwrap();
    d.set_endpoints("api", &[backend.addr]).await.unwrap();
    until_status(&web, 200).await;
    (d, backend, web)
}

#[tokio::test]
async fn a_backend_that_loses_its_endpoints_queues_then_fails_fast_and_recovers() {
    let (mut d, backend, web) = serving(("WEFT_PROXY_OUTBOUND_FAILFAST_TIMEOUT", "2s")).await;

    // The endpoint goes away: requests wait for a new one...
    d.set_endpoints("api", &[]).await.unwrap();
    let deadline = Instant::now() + WAIT;
    while !queued(&web, Duration::from_millis(500)).await {
        assert!(Instant::now() < deadline, "requests never queued");
    }
    // ...and one that is back in time serves them.
    let waiting = {
        let outbound = web.outbound;
        tokio::spawn(async move {
            let started = Instant::now();
            let req = Request::get(API).body(Empty::<Bytes>::new()).unwrap();
            let rsp = send_h1(outbound, req).await.unwrap();
            (rsp.status().as_u16(), started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = backend.requests();
    d.set_endpoints("api", &[backend.addr]).await.unwrap();
    let (status, waited) = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap();
    assert_eq!(status, 200, "a queued request was not served");
    assert!(
        waited >= Duration::from_millis(300),
        "it did not wait: {waited:?}"
    );
    assert!(backend.requests() > before);

    // Gone for longer than the fail-fast timeout: 503 naming the backend,
    // after the timeout for the first request, at once for the next ones.
    d.set_endpoints("api", &[]).await.unwrap();
    let deadline = Instant::now() + WAIT;
    let (status, reason) = loop {
        let (status, reason) = get(&web, API).await;
        if status != 200 {
            break (status, reason);
        }
        assert!(Instant::now() < deadline, "the endpoint never went away");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status, 503, "{reason}");
    assert!(reason.contains("api.shop.svc.cluster.local:80"), "{reason}");
    assert!(reason.contains("fail-fast"), "{reason}");
    let started = Instant::now();
    let (status, reason) = get(&web, API).await;
    assert_eq!(status, 503);
    assert!(reason.contains("fail-fast"), "{reason}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "in fail-fast a request must not wait: {:?}",
        started.elapsed()
    );

    // An endpoint is back: the backend leaves fail-fast.
    d.set_endpoints("api", &[backend.addr]).await.unwrap();
    until_status(&web, 200).await;
    for _ in 0..10 {
        assert_eq!(get(&web, API).await.0, 200);
    }
}

#[tokio::test]
async fn requests_over_the_listener_limit_are_shed_at_once() {
    // The controller must outlive the test: `_d` keeps it.
    let (_d, backend, web) = serving(("WEFT_PROXY_OUTBOUND_MAX_IN_FLIGHT", "2")).await;

    // Two slow requests hold both slots...
    let base = backend.requests();
    let slow = format!("{API}slow/3000");
    let held: Vec<_> = (0..2)
        .map(|_| {
            let (outbound, uri) = (web.outbound, slow.clone());
            tokio::spawn(async move {
                let req = Request::get(uri).body(Empty::<Bytes>::new()).unwrap();
                send_h1(outbound, req).await.unwrap().status().as_u16()
            })
        })
        .collect();
    let deadline = Instant::now() + WAIT;
    while backend.requests() < base + 2 {
        assert!(Instant::now() < deadline, "the slow requests never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...so a third is refused at once, with the reason.
    let started = Instant::now();
    let (status, reason) = get(&web, API).await;
    assert_eq!(status, 503, "{reason}");
    assert!(reason.contains("overloaded"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(2));
    for task in held {
        assert_eq!(task.await.unwrap(), 200);
    }
    // The slots are free again.
    assert_eq!(get(&web, API).await.0, 200);
    let metrics = web.metrics().await;
    assert!(metrics.contains("status_code=\"503\""), "{metrics}");
}
