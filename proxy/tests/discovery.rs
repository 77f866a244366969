//! Outbound service discovery against a real `weft-controller` serving
//! Kubernetes-style YAML from a directory: balancing over the endpoints it
//! announces, mTLS to meshed ones, following changes, surviving the
//! controller going away, and falling back for names it does not know.
//!
//! The scenarios shared with the Kubernetes-fed tests
//! (`discovery_kube.rs`) live in `weft_test_support::scenario`; here they
//! run on the file feed.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use weft_test_support::backend::HttpBackend;
use weft_test_support::controller::identity;
use weft_test_support::metrics::sum;
use weft_test_support::proxy::ProxyProcess;
use weft_test_support::scenario::{self, request, Discovery, FileDiscovery, Replica, API, NS};
use weft_test_support::{controller_bin, proxy_bin};

async fn get(proxy: &ProxyProcess, uri: &str) -> http::Response<hyper::body::Incoming> {
    request(proxy, uri).await.unwrap()
}

/// A client proxy "web" that resolves names through `d`'s controller.
async fn web(d: &FileDiscovery) -> ProxyProcess {
    d.ctl()
        .client_proxy(proxy_bin!(), NS, "web")
        .unwrap()
        .spawn()
        .await
        .unwrap()
}

/// Two meshed "api" pods (a proxy in front of a backend each), Service
/// `api` without endpoints yet, and a client proxy "web".
struct Mesh {
    d: FileDiscovery,
    backends: [HttpBackend; 2],
    pods: [ProxyProcess; 2],
    web: ProxyProcess,
}

async fn mesh() -> Mesh {
    let d = FileDiscovery::start(&controller_bin!(), Some("api"), &["api"])
        .await
        .unwrap();
    let backends = [HttpBackend::start().await, HttpBackend::start().await];
    let apps = backends.each_ref().map(|b| b.addr);
    let pods = d.ctl().meshed_pods(proxy_bin!(), NS, "api", &apps).await;
    let pods: [ProxyProcess; 2] = pods.unwrap().try_into().unwrap();
    let web = web(&d).await;
    Mesh {
        d,
        backends,
        pods,
        web,
    }
}

#[tokio::test]
async fn services_are_balanced_over_discovered_endpoints_and_follow_changes() {
    let mut m = mesh().await;
    let eps = [m.pods[0].inbound, m.pods[1].inbound];
    m.d.set_endpoints("api", &eps).await.unwrap();

    // Both endpoints serve (within a few seconds of the file change).
    let deadline = Instant::now() + Duration::from_secs(10);
    while m.backends[0].requests() == 0 || m.backends[1].requests() == 0 {
        assert!(
            Instant::now() < deadline,
            "not balanced over both endpoints"
        );
        let rsp = get(&m.web, API).await;
        assert!(
            matches!(rsp.status().as_u16(), 200 | 503),
            "{:?}",
            rsp.headers()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..20 {
        assert_eq!(get(&m.web, API).await.status(), 200);
    }
    // Meshed endpoints: mTLS to the pods' identity, HTTP/2 between proxies.
    let metrics = m.web.metrics().await;
    let api_id = identity(NS, "api");
    let secured = [
        ("direction", "outbound"),
        ("tls", "true"),
        ("server_id", api_id.as_str()),
    ];
    assert!(
        sum(&metrics, "response_total", &secured) >= 20.0,
        "{metrics}"
    );
    // Requests are attributed to what they reached (dst_* labels; the
    // pods are named `api-PORT`).
    let dst = [
        ("dst_namespace", "shop"),
        ("dst_service", "api"),
        ("dst_serviceaccount", "api"),
    ];
    assert!(sum(&metrics, "request_total", &dst) >= 20.0, "{metrics}");
    for ep in eps {
        let pod = format!("api-{}", ep.port());
        assert!(
            sum(&metrics, "request_total", &[("dst_pod", &pod)]) >= 1.0,
            "{metrics}"
        );
    }
    assert_eq!(
        m.backends[0].requests() + m.backends[1].requests(),
        (sum(&metrics, "response_total", &[("status_code", "200")])) as usize
    );

    // Scale down to the second pod: traffic follows.
    m.d.set_endpoints("api", &eps[1..]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let before = m.backends[0].requests();
        for _ in 0..10 {
            assert_eq!(get(&m.web, API).await.status(), 200);
        }
        if m.backends[0].requests() == before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "traffic still reaches the removed endpoint"
        );
    }

    // The controller goes away: the last known endpoints keep serving.
    m.d.controller().kill();
    let served = m.backends[1].requests();
    for _ in 0..10 {
        assert_eq!(get(&m.web, API).await.status(), 200);
    }
    assert_eq!(m.backends[1].requests(), served + 10);
}

#[tokio::test]
async fn empty_services_fail_fast_and_unknown_names_fall_back() {
    let m = mesh().await;
    // `api` exists with no endpoints: 503 with a reason, no waiting.
    let started = Instant::now();
    let rsp = get(&m.web, API).await;
    assert_eq!(rsp.status(), 503);
    let reason = rsp.headers()["l5d-proxy-error"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("no endpoints"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // A name the controller does not serve goes where it names.
    let other = HttpBackend::start().await;
    let rsp = get(&m.web, &format!("http://localhost:{}/", other.addr.port())).await;
    assert_eq!(rsp.status(), 200);
    assert_eq!(other.requests(), 1);
}

/// The split scenario over meshed pods: `api-v1` and `api-v2` are one
/// meshed pod each (mTLS between the proxies).
#[tokio::test]
async fn traffic_split_weights_are_applied_and_follow_changes() {
    let mut m = mesh().await;
    let Mesh {
        d,
        backends,
        pods,
        web,
    } = &mut m;
    // Each endpoint is a pod's proxy; its backend counts what arrives.
    let [v1, v2] = [0, 1].map(|i| Replica {
        addr: pods[i].inbound,
        backend: &backends[i],
    });
    scenario::traffic_split(d, web, v1, v2).await.unwrap();
}

/// A controller on a config dir of plain (unmeshed) endpoints, and a
/// client proxy resolving through it.
async fn plain() -> (FileDiscovery, ProxyProcess) {
    let d = FileDiscovery::start(&controller_bin!(), None, &["api"])
        .await
        .unwrap();
    let web = web(&d).await;
    (d, web)
}

/// Runs scenario `run` on `n` plain backends (started together) behind
/// [`plain`]'s controller and client proxy.
async fn on_plain_replicas(
    n: usize,
    run: impl AsyncFnOnce(&mut FileDiscovery, &ProxyProcess, &[Replica<'_>]) -> scenario::Result<()>,
) {
    let backends: Vec<HttpBackend> =
        futures::future::join_all((0..n).map(|_| HttpBackend::start())).await;
    let replicas: Vec<Replica<'_>> = backends.iter().map(Replica::plain).collect();
    let (mut d, web) = plain().await;
    run(&mut d, &web, &replicas).await.unwrap();
}

#[tokio::test]
async fn scaling_and_rolling_replacement_under_load_lose_nothing() {
    on_plain_replicas(7, scenario::scale_and_replace_under_load).await;
}

#[tokio::test]
async fn controller_outage_under_load_loses_nothing_and_restart_catches_up() {
    on_plain_replicas(4, scenario::controller_outage_under_load).await;
}

#[tokio::test]
async fn peak_ewma_avoids_a_slow_endpoint() {
    let fast = [HttpBackend::start().await, HttpBackend::start().await];
    let slow = HttpBackend::start_with_delay(Duration::from_millis(50)).await;
    let (mut d, web) = plain().await;
    let eps: Vec<SocketAddr> = [&fast[0], &fast[1], &slow].map(|b| b.addr).into();
    d.set_endpoints("api", &eps).await.unwrap();
    scenario::wait_for("api to serve", || async {
        Ok(request(&web, API).await?.status() == 200)
    })
    .await
    .unwrap();

    // Four concurrent clients for a fixed number of requests each.
    let loops = (0..4).map(|_| async {
        for _ in 0..150 {
            assert_eq!(get(&web, API).await.status(), 200);
        }
    });
    futures::future::join_all(loops).await;
    let total = fast[0].requests() + fast[1].requests() + slow.requests();
    let share = slow.requests() as f64 / total as f64;
    eprintln!("slow endpoint share: {share:.3} of {total}");
    assert!(
        share < 0.10,
        "the 50 ms endpoint got {share:.3} of {total} requests"
    );
}
