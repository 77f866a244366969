#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
//! SMI TrafficSplit `matches` (v1alpha3/v1alpha4 header/path A/B routing)
//! end to end: a real `weft-controller` serving Kubernetes-style YAML from
//! a directory (the splits reach the proxy over `OutboundPolicies.Watch`),
//! a client proxy, and two meshed "pods" (a proxy in front of a backend
//! each): `stable` behind `api` and `api-v1`, `canary` behind `api-v2`.

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use std::time::{Duration, Instant};
use weft_test_support::backend::HttpBackend;
use weft_test_support::client::send_h1;
use weft_test_support::controller::ControllerProcess;
use weft_test_support::proxy::ProxyProcess;
use weft_test_support::scenario::{
    route_group_yaml, service_yaml, traffic_split_yaml, write_atomic, NS,
};
use weft_test_support::{controller_bin, proxy_bin};

const API: &str = "http://api.shop.svc.cluster.local";
/// Bound on waiting for a change to be in force.
const WAIT: Duration = Duration::from_secs(10);

/// YAML for Service `name` in `shop` whose endpoints are `pods`, meshed
/// with ServiceAccount `api`.
fn service(name: &str, pods: &[&ProxyProcess]) -> String {
    let endpoints: Vec<_> = pods.iter().map(|p| p.inbound).collect();
    service_yaml(name, &endpoints, Some("api"))
}

/// A v1alpha4 HTTPRouteGroup `canary-users`: `x-canary` equal to
/// `canary_value` (a regex), or a Firefox user agent on `/api/...`.
fn canary_group(canary_value: &str) -> String {
    let matches = format!(
        "  - name: canary-header
    headers:
    - x-canary: \"{canary_value}\"
  - name: firefox-api
    pathRegex: /api/.*
    headers:
    - user-agent: \".*Firefox.*\"
"
    );
    route_group_yaml("v1alpha4", "canary-users", &matches)
}

/// A v1alpha4 TrafficSplit of `api` gated by the route group `group`, as
/// in the SMI A/B example (stable weight 0, canary 100).
fn canary_split(group: &str) -> String {
    traffic_split_yaml(
        "v1alpha4",
        "api-canary",
        Some(group),
        &[("api-v1", "0"), ("api-v2", "100")],
    )
}

struct Mesh {
    config: tempfile::TempDir,
    ctl: ControllerProcess,
    stable: HttpBackend,
    canary: HttpBackend,
    _pods: [ProxyProcess; 2],
    web: ProxyProcess,
}

/// The controller, the two pods and the client proxy, with `api-v1`
/// (stable) and `api-v2` (canary) defined; the root `api` has the stable
/// pod as its endpoint when `root_has_endpoints`, else none.
async fn mesh(root_has_endpoints: bool) -> Mesh {
    let config = tempfile::tempdir().unwrap();
    write_atomic(config.path(), "api.yaml", &service("api", &[])).unwrap();
    let ctl = ControllerProcess::start_with_config(&controller_bin!(), "24h", config.path())
        .await
        .unwrap();
    let (stable, canary) = (HttpBackend::start().await, HttpBackend::start().await);
    let pods = ctl
        .meshed_pods(proxy_bin!(), NS, "api", &[stable.addr, canary.addr])
        .await
        .unwrap();
    let (ps, pc) = (&pods[0], &pods[1]);
    if root_has_endpoints {
        write_atomic(config.path(), "api.yaml", &service("api", &[ps])).unwrap();
    }
    write_atomic(config.path(), "v1.yaml", &service("api-v1", &[ps])).unwrap();
    write_atomic(config.path(), "v2.yaml", &service("api-v2", &[pc])).unwrap();
    let web = ctl
        .client_proxy(proxy_bin!(), NS, "web")
        .unwrap()
        .spawn()
        .await
        .unwrap();
    let m = Mesh {
        config,
        ctl,
        stable,
        canary,
        _pods: pods.try_into().unwrap(),
        web,
    };
    // Wait for the endpoints just written to be served.
    let deadline = Instant::now() + WAIT;
    while root_has_endpoints && send(&m, "GET", "/", &[]).await != 200 {
        assert!(
            Instant::now() < deadline,
            "api not served:\n{}",
            m.ctl.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    m
}

/// Sends `method path` with `headers` to `api` through the client proxy.
async fn send(m: &Mesh, method: &str, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("{API}{path}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Empty::<Bytes>::new()).unwrap();
    send_h1(m.web.outbound, req)
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Sends `n` such requests (all must succeed) and returns how many
/// reached (stable, canary).
async fn count(
    m: &Mesh,
    n: usize,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (usize, usize) {
    let (s0, c0) = (m.stable.requests(), m.canary.requests());
    for _ in 0..n {
        let status = send(m, method, path, headers).await;
        assert_eq!(status, 200, "{method} {path} {headers:?}:\n{}", m.ctl.log());
    }
    (m.stable.requests() - s0, m.canary.requests() - c0)
}

/// Waits (bounded) until one such request reaches the canary; returns how
/// long that took.
async fn until_canary(m: &Mesh, method: &str, path: &str, headers: &[(&str, &str)]) -> Duration {
    let start = Instant::now();
    loop {
        let before = m.canary.requests();
        let _ = send(m, method, path, headers).await;
        if m.canary.requests() > before {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < WAIT,
            "{method} {path} {headers:?} never reached the canary:\n{}",
            m.ctl.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn header_matches_send_only_matching_requests_to_the_canary() {
    let m = mesh(true).await;
    write_atomic(m.config.path(), "group.yaml", &canary_group("true")).unwrap();
    write_atomic(m.config.path(), "split.yaml", &canary_split("canary-users")).unwrap();
    until_canary(&m, "GET", "/", &[("x-canary", "true")]).await;

    // Matching requests: all to the canary.
    assert_eq!(
        count(&m, 200, "GET", "/", &[("x-canary", "true")]).await,
        (0, 200)
    );
    // Non-matching ones (no header, another value, a longer value: the
    // regex is anchored): none to the canary, they go to the root service.
    for headers in [
        &[][..],
        &[("x-canary", "false")][..],
        &[("x-canary", "truex")][..],
    ] {
        assert_eq!(
            count(&m, 70, "GET", "/", headers).await,
            (70, 0),
            "{headers:?}"
        );
    }
    // The second match of the group: a Firefox user agent on /api/...
    let firefox = (
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Firefox/128.0",
    );
    assert_eq!(
        count(&m, 50, "POST", "/api/books", &[firefox]).await,
        (0, 50)
    );
    assert_eq!(count(&m, 50, "GET", "/books", &[firefox]).await, (50, 0));
    let chrome = ("user-agent", "Mozilla/5.0 Chrome/126.0");
    assert_eq!(count(&m, 50, "GET", "/api/books", &[chrome]).await, (50, 0));

    // Changing the route group at runtime takes effect within about one
    // poll of the config dir (200 ms in tests).
    let changed = Instant::now();
    write_atomic(m.config.path(), "group.yaml", &canary_group("yes")).unwrap();
    let took = until_canary(&m, "GET", "/", &[("x-canary", "yes")]).await;
    eprintln!("route group change in force after {took:?}");
    assert!(
        changed.elapsed() < Duration::from_secs(3),
        "route group change took {:?}",
        changed.elapsed()
    );
    assert_eq!(
        count(&m, 50, "GET", "/", &[("x-canary", "yes")]).await,
        (0, 50)
    );
    assert_eq!(
        count(&m, 50, "GET", "/", &[("x-canary", "true")]).await,
        (50, 0)
    );
}

#[tokio::test]
async fn v1alpha3_path_split_leaves_the_rest_to_the_matchless_split() {
    // The root `api` has no endpoints: a request that followed neither
    // split would get a 503.
    let m = mesh(false).await;
    // Without the splits, the endpoint-less root fails fast.
    assert_eq!(send(&m, "GET", "/v2/books", &[]).await, 503);
    // GET /v2 and below follow a v1alpha3 split to `api-v2`; the rest a
    // matchless v1alpha2 split to `api-v1`.
    let v2_paths = "  - name: v2\n    pathRegex: /v2(/.*)?\n    methods: [GET]\n";
    let yaml = [
        route_group_yaml("v1alpha3", "v2-api", v2_paths),
        traffic_split_yaml(
            "v1alpha3",
            "api-v2-paths",
            Some("v2-api"),
            &[("api-v2", "1")],
        ),
        traffic_split_yaml("v1alpha2", "api-rollout", None, &[("api-v1", "1")]),
    ]
    .join("---\n");
    write_atomic(m.config.path(), "splits.yaml", &yaml).unwrap();
    until_canary(&m, "GET", "/v2/books", &[]).await;

    assert_eq!(count(&m, 100, "GET", "/v2/books", &[]).await, (0, 100));
    assert_eq!(count(&m, 20, "GET", "/v2", &[]).await, (0, 20));
    // Another method, another path, the path only containing the match,
    // a path merely starting with it: all follow the matchless split.
    for (method, path) in [
        ("POST", "/v2/books"),
        ("GET", "/v1/books"),
        ("GET", "/x/v2/books"),
        ("GET", "/v2books"),
    ] {
        assert_eq!(
            count(&m, 25, method, path, &[]).await,
            (25, 0),
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn an_invalid_match_is_reported_and_the_service_keeps_working() {
    let m = mesh(true).await;
    // The split names a route group that does not exist.
    write_atomic(
        m.config.path(),
        "split.yaml",
        &canary_split("no-such-group"),
    )
    .unwrap();
    let deadline = Instant::now() + WAIT;
    let needle = "unknown HTTPRouteGroup shop/no-such-group";
    // Requests make the proxy ask for the policy; the controller logs why
    // the split is not applied.
    while !m.ctl.log().contains(needle) {
        assert_eq!(send(&m, "GET", "/", &[("x-canary", "true")]).await, 200);
        assert!(Instant::now() < deadline, "not reported:\n{}", m.ctl.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = m.ctl.log();
    let line = log.lines().find(|l| l.contains(needle)).unwrap();
    eprintln!("{line}");
    assert!(
        line.contains("WARN") && line.contains("TrafficSplit shop/api-canary"),
        "{line}"
    );
    // The service works, and the split is not widened to all traffic.
    assert_eq!(
        count(&m, 50, "GET", "/", &[("x-canary", "true")]).await,
        (50, 0)
    );
    assert_eq!(count(&m, 50, "GET", "/", &[]).await, (50, 0));

    // Once the group exists (here under the referenced name), the split
    // applies.
    write_atomic(
        m.config.path(),
        "group.yaml",
        &canary_group("true").replace("canary-users", "no-such-group"),
    )
    .unwrap();
    until_canary(&m, "GET", "/", &[("x-canary", "true")]).await;
    assert_eq!(
        count(&m, 50, "GET", "/", &[("x-canary", "true")]).await,
        (0, 50)
    );
    assert_eq!(count(&m, 50, "GET", "/", &[]).await, (50, 0));
}
