//! Outbound service discovery against a real `weft-controller` serving
//! Kubernetes-style YAML from a directory: balancing over the endpoints it
//! announces, mTLS to meshed ones, following changes, surviving the
//! controller going away, and falling back for names it does not know.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use weft_test_support::backend::HttpBackend;
use weft_test_support::client::send_h1;
use weft_test_support::controller::{identity, ControllerProcess};
use weft_test_support::metrics::sum;
use weft_test_support::proxy::ProxyProcess;

const NS: &str = "shop";
const API: &str = "http://api.shop.svc.cluster.local/";

fn proxy_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_weft-proxy"))
}

fn controller_bin() -> PathBuf {
    proxy_bin().with_file_name("weft-controller")
}

/// YAML for Service `api` whose endpoints are the given (pod, port) pairs;
/// every pod is meshed with ServiceAccount `api`.
fn api_service(endpoints: &[(&str, u16)]) -> String {
    service("api", endpoints)
}

/// YAML for Service `name` in `shop` with the given (pod, port) endpoints.
fn service(name: &str, endpoints: &[(&str, u16)]) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  ports:\n  - {{name: http, port: 80, targetPort: 8080}}\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: {name}, namespace: shop}}\nsubsets:\n",
    );
    for (pod, port) in endpoints {
        y.push_str(&format!(
            "- addresses:\n  - ip: 127.0.0.1\n    targetRef: {{kind: Pod, name: {pod}, namespace: shop}}\n  ports:\n  - {{name: http, port: {port}}}\n"
        ));
    }
    if endpoints.is_empty() {
        y.push_str("- addresses: []\n  ports:\n  - {name: http, port: 8080}\n");
    }
    for (pod, _) in endpoints {
        y.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {pod}\n  namespace: shop\n  annotations: {{linkerd.io/inject: enabled}}\nspec:\n  serviceAccountName: api\n  containers: [{{name: app, image: api}}]\n"
        ));
    }
    y
}

/// Replaces `file` atomically, as the file feed documentation asks.
fn write(dir: &Path, file: &str, yaml: &str) {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(tmp, dir.join(file)).unwrap();
}

async fn get(proxy: &ProxyProcess, uri: &str) -> http::Response<hyper::body::Incoming> {
    let req = Request::get(uri).body(Empty::<Bytes>::new()).unwrap();
    send_h1(proxy.outbound, req).await.unwrap()
}

/// Two meshed "api" pods (a proxy in front of a backend each) and a client
/// proxy "web" that resolves names through the controller.
struct Mesh {
    config: tempfile::TempDir,
    ctl: ControllerProcess,
    backends: [HttpBackend; 2],
    pods: [ProxyProcess; 2],
    web: ProxyProcess,
}

async fn mesh() -> Mesh {
    let config = tempfile::tempdir().unwrap();
    write(config.path(), "api.yaml", &api_service(&[]));
    let ctl = ControllerProcess::start_with_config(&controller_bin(), "24h", config.path())
        .await
        .unwrap();
    let backends = [HttpBackend::start().await, HttpBackend::start().await];
    let mut pods = Vec::new();
    for b in &backends {
        let p = ctl.proxy(proxy_bin(), NS, "api").unwrap();
        pods.push(
            p.env("WEFT_PROXY_INBOUND_FORWARD", b.addr)
                .spawn()
                .await
                .unwrap(),
        );
    }
    let web = ctl
        .proxy(proxy_bin(), NS, "web")
        .unwrap()
        .env("WEFT_PROXY_DESTINATION_ADDR", ctl.destination_addr)
        .spawn()
        .await
        .unwrap();
    let pods: [ProxyProcess; 2] = pods.try_into().unwrap();
    Mesh {
        config,
        ctl,
        backends,
        pods,
        web,
    }
}

#[tokio::test]
async fn services_are_balanced_over_discovered_endpoints_and_follow_changes() {
    let mut m = mesh().await;
    let eps = [
        ("api-0", m.pods[0].inbound.port()),
        ("api-1", m.pods[1].inbound.port()),
    ];
    write(m.config.path(), "api.yaml", &api_service(&eps));

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
    // Requests are attributed to what they reached (dst_* labels).
    let dst = [
        ("dst_namespace", "shop"),
        ("dst_service", "api"),
        ("dst_serviceaccount", "api"),
    ];
    assert!(sum(&metrics, "request_total", &dst) >= 20.0, "{metrics}");
    for pod in ["api-0", "api-1"] {
        assert!(
            sum(&metrics, "request_total", &[("dst_pod", pod)]) >= 1.0,
            "{metrics}"
        );
    }
    assert_eq!(
        m.backends[0].requests() + m.backends[1].requests(),
        (sum(&metrics, "response_total", &[("status_code", "200")])) as usize
    );

    // Scale down to api-1: traffic follows.
    write(m.config.path(), "api.yaml", &api_service(&eps[1..]));
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
    m.ctl.kill();
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

/// Counts, over `n` requests to the apex, how many reached backend 0.
async fn share_of_first(m: &Mesh, n: usize) -> f64 {
    let before = m.backends[0].requests();
    for _ in 0..n {
        assert_eq!(get(&m.web, API).await.status(), 200);
    }
    (m.backends[0].requests() - before) as f64 / n as f64
}

#[tokio::test]
async fn traffic_split_weights_are_applied_and_follow_changes() {
    let m = mesh().await;
    // Apex `api` (no endpoints of its own), `api-v1` and `api-v2` backed
    // by one meshed pod each.
    let (p1, p2) = (m.pods[0].inbound.port(), m.pods[1].inbound.port());
    write(
        m.config.path(),
        "v1.yaml",
        &service("api-v1", &[("v1-0", p1)]),
    );
    write(
        m.config.path(),
        "v2.yaml",
        &service("api-v2", &[("v2-0", p2)]),
    );
    let split = |w1: &str, w2: &str, version: &str| {
        format!(
            "apiVersion: split.smi-spec.io/{version}\nkind: TrafficSplit\nmetadata: {{name: api-rollout, namespace: shop}}\nspec:\n  service: api\n  backends:\n  - {{service: api-v1, weight: {w1}}}\n  - {{service: api-v2, weight: {w2}}}\n"
        )
    };
    write(
        m.config.path(),
        "split.yaml",
        &split("90", "10", "v1alpha2"),
    );

    // Wait for the split to be in force, then measure 2,000 requests.
    let deadline = Instant::now() + Duration::from_secs(10);
    while m.backends[1].requests() == 0 || m.backends[0].requests() == 0 {
        assert!(
            Instant::now() < deadline,
            "split not applied:\n{}",
            m.ctl.log()
        );
        let _ = get(&m.web, API).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let share = share_of_first(&m, 2000).await;
    assert!(
        (0.87..=0.93).contains(&share),
        "90/10 split sent {share:.3} to v1"
    );

    // A v1alpha1 split with quantities: 500m/500m. It takes effect quickly.
    write(
        m.config.path(),
        "split.yaml",
        &split("500m", "500m", "v1alpha1"),
    );
    let changed = Instant::now();
    loop {
        let share = share_of_first(&m, 100).await;
        if (0.35..=0.65).contains(&share) {
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_secs(10),
            "weight change not applied ({share:.2})"
        );
    }
    eprintln!("weight change applied within {:?}", changed.elapsed());
    let share = share_of_first(&m, 1000).await;
    assert!(
        (0.44..=0.56).contains(&share),
        "500m/500m split sent {share:.3} to v1"
    );
}

/// YAML for Service `api` whose endpoints are plain (unmeshed) backends.
fn plain_api(backends: &[&HttpBackend]) -> String {
    let mut y = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: shop}\nspec:\n  ports:\n  - {name: http, port: 80, targetPort: 8080}\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: api, namespace: shop}\nsubsets:\n",
    );
    for b in backends {
        y.push_str(&format!(
            "- addresses: [{{ip: 127.0.0.1}}]\n  ports: [{{name: http, port: {}}}]\n",
            b.addr.port()
        ));
    }
    y
}

/// A controller serving `config` and a client proxy resolving through it.
async fn client(config: &Path) -> (ControllerProcess, ProxyProcess) {
    let ctl = ControllerProcess::start_with_config(&controller_bin(), "24h", config)
        .await
        .unwrap();
    let web = ctl
        .proxy(proxy_bin(), NS, "web")
        .unwrap()
        .env("WEFT_PROXY_DESTINATION_ADDR", ctl.destination_addr)
        .spawn()
        .await
        .unwrap();
    (ctl, web)
}

/// Sends requests from `clients` concurrent loops until `stop`, returning
/// (succeeded, failures).
async fn load(
    web: &ProxyProcess,
    clients: usize,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (usize, Vec<String>) {
    let loops = (0..clients).map(|_| {
        let stop = stop.clone();
        let outbound = web.outbound;
        async move {
            let (mut ok, mut failed) = (0, Vec::new());
            while !*stop.borrow() {
                let req = Request::get(API).body(Empty::<Bytes>::new()).unwrap();
                match send_h1(outbound, req).await {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) => failed.push(format!(
                        "{} {:?}",
                        r.status(),
                        r.headers().get("l5d-proxy-error")
                    )),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        }
    });
    let results = futures::future::join_all(loops).await;
    let ok = results.iter().map(|r| r.0).sum();
    (ok, results.into_iter().flat_map(|r| r.1).collect())
}

#[tokio::test]
async fn scaling_and_rolling_replacement_under_load_lose_nothing() {
    let config = tempfile::tempdir().unwrap();
    let backends: Vec<HttpBackend> =
        futures::future::join_all((0..7).map(|_| HttpBackend::start())).await;
    let b: Vec<&HttpBackend> = backends.iter().collect();
    write(config.path(), "api.yaml", &plain_api(&b[..1]));
    let (_ctl, web) = client(config.path()).await;
    assert_eq!(get(&web, API).await.status(), 200);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let steps = async {
        let pause = || tokio::time::sleep(Duration::from_millis(1500));
        pause().await;
        write(config.path(), "api.yaml", &plain_api(&b[..5])); // 1 → 5
        pause().await;
        write(config.path(), "api.yaml", &plain_api(&b[..1])); // 5 → 1
        pause().await;
        write(config.path(), "api.yaml", &plain_api(&b[5..7])); // replace every endpoint
        pause().await;
        stop_tx.send_replace(true);
    };
    let ((ok, failed), ()) = tokio::join!(load(&web, 4, stop_rx), steps);
    assert!(
        failed.is_empty(),
        "{} failed, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(ok > 200, "only {ok} requests");
    for (i, backend) in backends.iter().enumerate() {
        assert!(backend.requests() > 0, "endpoint {i} never got traffic");
    }
}

#[tokio::test]
async fn peak_ewma_avoids_a_slow_endpoint() {
    let config = tempfile::tempdir().unwrap();
    let fast = [HttpBackend::start().await, HttpBackend::start().await];
    let slow = HttpBackend::start_with_delay(Duration::from_millis(50)).await;
    write(
        config.path(),
        "api.yaml",
        &plain_api(&[&fast[0], &fast[1], &slow]),
    );
    let (_ctl, web) = client(config.path()).await;

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
