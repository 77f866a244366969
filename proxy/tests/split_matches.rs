#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
//! SMI TrafficSplit `matches` (v1alpha3/v1alpha4 header/path A/B routing)
//! end to end: a real `weft-controller` serving Kubernetes-style YAML from
//! a directory (the splits reach the proxy over `OutboundPolicies.Watch`),
//! a client proxy, and two meshed "pods" (a proxy in front of a backend
//! each): `stable` behind `api` and `api-v1`, `canary` behind `api-v2`.

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use weft_test_support::backend::HttpBackend;
use weft_test_support::client::send_h1;
use weft_test_support::controller::ControllerProcess;
use weft_test_support::proxy::ProxyProcess;

const NS: &str = "shop";
const API: &str = "http://api.shop.svc.cluster.local";
/// Bound on waiting for a change to be in force.
const WAIT: Duration = Duration::from_secs(10);

fn proxy_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_weft-proxy"))
}

fn controller_bin() -> PathBuf {
    proxy_bin().with_file_name("weft-controller")
}

/// YAML for Service `name` in `shop` with the given (pod, port) endpoints;
/// every pod is meshed with ServiceAccount `api`.
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

/// A v1alpha4 HTTPRouteGroup `canary-users`: `x-canary` equal to
/// `canary_value` (a regex), or a Firefox user agent on `/api/...`.
fn canary_group(canary_value: &str) -> String {
    format!(
        "apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {{name: canary-users, namespace: shop}}
spec:
  matches:
  - name: canary-header
    headers:
    - x-canary: \"{canary_value}\"
  - name: firefox-api
    pathRegex: /api/.*
    headers:
    - user-agent: \".*Firefox.*\"
"
    )
}

/// A v1alpha4 TrafficSplit of `api` gated by the route group `group`, as
/// in the SMI A/B example (stable weight 0, canary 100).
fn canary_split(group: &str) -> String {
    format!(
        "apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {{name: api-canary, namespace: shop}}
spec:
  service: api
  matches:
  - {{kind: HTTPRouteGroup, name: {group}}}
  backends:
  - {{service: api-v1, weight: 0}}
  - {{service: api-v2, weight: 100}}
"
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
    write(config.path(), "api.yaml", &service("api", &[]));
    let ctl = ControllerProcess::start_with_config(&controller_bin(), "24h", config.path())
        .await
        .unwrap();
    let (stable, canary) = (HttpBackend::start().await, HttpBackend::start().await);
    let mut pods = Vec::new();
    for b in [&stable, &canary] {
        let p = ctl.proxy(proxy_bin(), NS, "api").unwrap();
        pods.push(
            p.env("WEFT_PROXY_INBOUND_FORWARD", b.addr)
                .spawn()
                .await
                .unwrap(),
        );
    }
    let (ps, pc) = (pods[0].inbound.port(), pods[1].inbound.port());
    if root_has_endpoints {
        write(config.path(), "api.yaml", &service("api", &[("api-0", ps)]));
    }
    write(
        config.path(),
        "v1.yaml",
        &service("api-v1", &[("v1-0", ps)]),
    );
    write(
        config.path(),
        "v2.yaml",
        &service("api-v2", &[("v2-0", pc)]),
    );
    let web = ctl
        .proxy(proxy_bin(), NS, "web")
        .unwrap()
        .env("WEFT_PROXY_DESTINATION_ADDR", ctl.destination_addr)
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
    write(m.config.path(), "group.yaml", &canary_group("true"));
    write(m.config.path(), "split.yaml", &canary_split("canary-users"));
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
    write(m.config.path(), "group.yaml", &canary_group("yes"));
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
    let yaml = "\
apiVersion: specs.smi-spec.io/v1alpha3
kind: HTTPRouteGroup
metadata: {name: v2-api, namespace: shop}
spec:
  matches:
  - name: v2
    pathRegex: /v2(/.*)?
    methods: [GET]
---
apiVersion: split.smi-spec.io/v1alpha3
kind: TrafficSplit
metadata: {name: api-v2-paths, namespace: shop}
spec:
  service: api
  matches: [{kind: HTTPRouteGroup, name: v2-api}]
  backends: [{service: api-v2, weight: 1}]
---
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {name: api-rollout, namespace: shop}
spec:
  service: api
  backends: [{service: api-v1, weight: 1}]
";
    write(m.config.path(), "splits.yaml", yaml);
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
    write(
        m.config.path(),
        "split.yaml",
        &canary_split("no-such-group"),
    );
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
    write(
        m.config.path(),
        "group.yaml",
        &canary_group("true").replace("canary-users", "no-such-group"),
    );
    until_canary(&m, "GET", "/", &[("x-canary", "true")]).await;
    assert_eq!(
        count(&m, 50, "GET", "/", &[("x-canary", "true")]).await,
        (0, 50)
    );
    assert_eq!(count(&m, 50, "GET", "/", &[]).await, (50, 0));
}
