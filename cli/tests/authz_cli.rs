//! `weft authz` and `weft stat -o wide`'s `UNAUTHORIZED` against the real
//! controller in file mode: the controller reads namespaces, pods, SMI
//! TrafficTargets and HTTPRouteGroups from a config dir and computes each
//! port's policy with the same function that serves proxies
//! (`InboundServerPolicies`); the real `weft` prints it. Stat's count comes
//! from scrapes of a proxy admin endpoint serving the proxy's exposition of
//! the authorization counters.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod golden;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use golden::sibling;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use weft_test_support::command::describe;
use weft_test_support::controller::{ControllerOptions, ControllerProcess};

/// Upper bound on one run of `weft`.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a change in the config dir may take to show (polled every
/// 200 ms).
const CHANGE: Duration = Duration::from_secs(10);

/// Namespace `shop` closed by its annotation; `web-0` runs as `web`, which
/// a TrafficTarget opens to Prometheus for `GET /metrics`; `books` has no
/// TrafficTarget; `open/lone-0` lives in a namespace without annotation.
const WORLD: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  annotations: {config.linkerd.io/default-inbound-policy: deny}
---
apiVersion: v1
kind: Namespace
metadata: {name: open}
---
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: shop}
spec:
  serviceAccountName: web
  containers:
  - name: app
    image: app
    ports: [{name: http, containerPort: 8080}, {name: admin, containerPort: 9090}]
    readinessProbe: {httpGet: {path: /ready, port: 8080}}
status: {phase: Running, podIP: 127.0.0.1}
---
apiVersion: v1
kind: Pod
metadata:
  name: books-7c9f4d-x1
  namespace: shop
  labels: {app: books, pod-template-hash: 7c9f4d}
  ownerReferences:
  - {apiVersion: apps/v1, kind: ReplicaSet, name: books-7c9f4d, uid: 00000000-0000-0000-0000-000000000001, controller: true}
spec:
  serviceAccountName: books
  containers:
  - {name: app, image: app, ports: [{containerPort: 7000}, {containerPort: 53, protocol: UDP}]}
status: {phase: Running, podIP: 127.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: lone-0, namespace: open}
spec:
  containers:
  - {name: app, image: app, ports: [{containerPort: 80}]}
status: {phase: Running, podIP: 127.0.0.1}
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: web-routes, namespace: shop}
spec:
  matches:
  - {name: metrics, pathRegex: /metrics, methods: [GET]}
  - {name: api, pathRegex: "/api/.*", methods: ["*"]}
"#;

const TRAFFIC_TARGET: &str = r#"
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: scrape-web, namespace: shop}
spec:
  destination: {kind: ServiceAccount, name: web, namespace: shop}
  sources:
  - {kind: ServiceAccount, name: prometheus, namespace: monitoring}
  rules:
  - {kind: HTTPRouteGroup, name: web-routes, matches: [metrics]}
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: web-extra, namespace: shop}
spec:
  destination: {kind: ServiceAccount, name: web, namespace: shop}
  sources:
  - {kind: ServiceAccount, name: web, namespace: shop}
  rules:
  - {kind: HTTPRouteGroup, name: missing-routes}
"#;

const PROMETHEUS: &str = "prometheus.monitoring.serviceaccount.identity.weft.cluster.local";

async fn weft(args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_weft"));
    cmd.args(args)
        .env_remove("KUBECONFIG")
        .env_remove("WEFT_CONTROLLER_ADDR")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    tokio::time::timeout(RUN_TIMEOUT, cmd.output())
        .await
        .expect("weft finished in time")
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(0), "{}", describe(out));
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The table's lines split into cells (columns are 3+ spaces apart).
fn cells(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|l| {
            l.split("   ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

async fn start(dir: &Path, extra: &[&str]) -> ControllerProcess {
    let options = ControllerOptions::config_dir(dir).args(extra);
    ControllerProcess::start_with(&sibling("weft-controller"), "24h", options)
        .await
        .unwrap()
}

/// `weft authz ARGS` against `ctl`, as table rows.
async fn authz(ctl: &ControllerProcess, args: &[&str]) -> Vec<Vec<String>> {
    let addr = ctl.admin_addr.to_string();
    let mut all = vec!["authz"];
    all.extend_from_slice(args);
    all.extend(["--controller-addr", &addr]);
    cells(&stdout(&weft(&all).await))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authz_shows_smi_servers_routes_and_sources_and_follows_changes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("world.yaml"), WORLD).unwrap();
    std::fs::write(dir.path().join("tt.yaml"), TRAFFIC_TARGET).unwrap();
    let ctl = start(dir.path(), &[]).await;

    let rows = authz(&ctl, &["-n", "shop", "po/web-0"]).await;
    assert_eq!(
        rows[0],
        ["POD", "PORT", "SERVER", "ROUTE", "AUTHORIZATION", "SOURCES"]
    );
    let port = |p: &str| -> Vec<Vec<String>> {
        rows.iter()
            .filter(|r| r.get(1).map(String::as_str) == Some(p))
            .cloned()
            .collect()
    };
    let http = port("8080");
    assert!(
        http.iter()
            .all(|r| r[0] == "web-0" && r[2] == "serviceaccount/web"),
        "a TrafficTarget governs web-0: {rows:?}"
    );
    assert_eq!(http[0][3..], ["*", "(none: denied)", "-"], "{rows:?}");
    assert!(
        http.iter()
            .any(|r| r[3..] == ["probe", "default/probe", "unauthenticated"]),
        "the readiness probe stays reachable: {rows:?}"
    );
    let smi: Vec<&Vec<String>> = http.iter().filter(|r| r[3] == "web-routes").collect();
    assert_eq!(smi.len(), 1, "{rows:?}");
    assert_eq!(smi[0][4], "traffictarget/scrape-web", "{rows:?}");
    assert_eq!(smi[0][5], PROMETHEUS, "{rows:?}");
    // The other port: the same route (an HTTPRouteGroup rule selects every
    // port), but no probe.
    let admin = port("9090");
    assert!(admin.iter().any(|r| r[3] == "web-routes"), "{rows:?}");
    assert!(admin.iter().all(|r| r[3] != "probe"), "{rows:?}");

    // web-extra's only rule names no route group: it admits nothing (no
    // row) and is reported for each port, after the table, on stderr.
    assert!(
        rows.iter()
            .all(|r| !r.iter().any(|c| c.contains("web-extra"))),
        "{rows:?}"
    );
    let addr = ctl.admin_addr.to_string();
    let out = weft(&[
        "authz",
        "-n",
        "shop",
        "po/web-0",
        "--controller-addr",
        &addr,
    ])
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 2, "{err}");
    assert!(
        err.lines()
            .all(|l| l.starts_with("warning: shop/web-0 port ")
                && l.contains("web-extra")
                && l.contains("missing-routes")),
        "{err}"
    );

    // Wide: protocol and what the route matches.
    let wide = authz(&ctl, &["-n", "shop", "po", "web-0", "-o", "wide"]).await;
    assert_eq!(
        wide[0],
        [
            "POD",
            "PORT",
            "SERVER",
            "PROTOCOL",
            "ROUTE",
            "MATCHES",
            "AUTHORIZATION",
            "SOURCES"
        ]
    );
    let smi = wide.iter().find(|r| r[4] == "web-routes").unwrap();
    assert_eq!(smi[3], "detect", "{wide:?}");
    assert!(
        smi[5].starts_with("GET ") && smi[5].contains("/metrics"),
        "{wide:?}"
    );

    // JSON: the API's rows, parsed, warnings included.
    let out = weft(&[
        "authz",
        "-n",
        "shop",
        "po/web-0",
        "-o",
        "json",
        "--controller-addr",
        &addr,
    ])
    .await;
    let json: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let ports: Vec<u64> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, [8080, 9090]);
    assert_eq!(json[0]["server"]["kind"], "serviceaccount");
    assert_eq!(json[0]["protocol"], "detect");
    let rule = json[0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "web-routes")
        .unwrap();
    assert_eq!(rule["identities"], serde_json::json!([PROMETHEUS]));
    assert_eq!(rule["authorization"]["name"], "scrape-web");
    assert!(
        json[1]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("missing-routes"),
        "{json}"
    );
    assert!(
        out.stderr.is_empty(),
        "json carries the warnings: {}",
        describe(&out)
    );

    // No TrafficTarget: the namespace's default server; UDP ports are not
    // inbound TCP ports.
    let books = authz(&ctl, &["-n", "shop", "deploy/books"]).await;
    assert_eq!(
        books[1..],
        [[
            "books-7c9f4d-x1",
            "7000",
            "default/deny",
            "*",
            "(none: denied)",
            "-"
        ]],
        "{books:?}"
    );
    let lone = authz(&ctl, &["-n", "open", "po/lone-0"]).await;
    assert_eq!(
        lone[1..],
        [[
            "lone-0",
            "80",
            "default/all-unauthenticated",
            "*",
            "default/all-unauthenticated",
            "unauthenticated"
        ]],
        "the install's default: {lone:?}"
    );
    // Every pod of a namespace.
    let ns = authz(&ctl, &["ns/shop"]).await;
    assert!(ns.iter().any(|r| r[0] == "web-0") && ns.iter().any(|r| r[0] == "books-7c9f4d-x1"));

    // Unknown resources: the controller's 404, exit 1.
    let out = weft(&[
        "authz",
        "-n",
        "shop",
        "deploy/nope",
        "--controller-addr",
        &addr,
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "weft: deployment nope not found in namespace shop\n"
    );

    // Deleting the TrafficTarget gives web-0 its namespace's policy back.
    std::fs::remove_file(dir.path().join("tt.yaml")).unwrap();
    let deadline = Instant::now() + CHANGE;
    loop {
        let rows = authz(&ctl, &["-n", "shop", "po/web-0"]).await;
        if rows[1..].iter().all(|r| r[2] == "default/deny") {
            assert!(rows.iter().all(|r| r[3] != "web-routes"), "{rows:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still governed {CHANGE:?} after the TrafficTarget was deleted: {rows:?}\n{}",
            ctl.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn authz_help_says_what_it_shows() {
    let out = weft(&["authz", "--help"]).await;
    let help = stdout(&out);
    for needle in [
        "inbound authorization policy",
        "(none: denied)",
        "any meshed identity",
        "--controller-addr",
        "-o, --output",
    ] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
    let out = weft(&["--help"]).await;
    assert!(stdout(&out).contains("authz"), "{}", describe(&out));
}

// === stat -o wide: UNAUTHORIZED ===

/// A proxy admin endpoint serving `/metrics` as the proxy renders it
/// (OpenMetrics text, workload labels first), with the authorization
/// refusal counters created on the first refusal and raised as the test
/// says.
struct Exposition {
    addr: SocketAddr,
    http_denied: Arc<AtomicU32>,
    tcp_denied: Arc<AtomicU32>,
}

impl Exposition {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let http_denied = Arc::new(AtomicU32::new(0));
        let tcp_denied = Arc::new(AtomicU32::new(0));
        let (h, t) = (http_denied.clone(), tcp_denied.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (h, t) = (h.clone(), t.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        let body = metrics_text(h.load(Ordering::SeqCst), t.load(Ordering::SeqCst));
                        async move {
                            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
                        }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc);
                    let _ = tokio::time::timeout(Duration::from_secs(10), conn).await;
                });
            }
        });
        Self {
            addr,
            http_denied,
            tcp_denied,
        }
    }
}

fn metrics_text(http_denied: u32, tcp_denied: u32) -> String {
    let target = r#"namespace="shop",pod="books-7c9f4d-x1",deployment="books""#;
    let mut text = format!(
        "# HELP response Total count of HTTP responses.\n\
         # TYPE response counter\n\
         response_total{{{target},direction=\"inbound\",authority=\"books.shop:7000\",tls=\"disabled\",status_code=\"200\",classification=\"success\"}} 12\n\
         # HELP inbound_http_authz_allow The total number of inbound HTTP requests that were authorized.\n\
         # TYPE inbound_http_authz_allow counter\n\
         inbound_http_authz_allow_total{{{target},target_addr=\"127.0.0.1:7000\",srv_group=\"\",srv_kind=\"default\",srv_name=\"deny\",route_group=\"\",route_kind=\"default\",route_name=\"probe\",authz_group=\"\",authz_kind=\"default\",authz_name=\"probe\",tls=\"disabled\",client_id=\"\"}} 12\n"
    );
    if http_denied > 0 {
        text.push_str(&format!(
            "# HELP inbound_http_authz_deny The total number of inbound HTTP requests that could not be processed due to a proxy error.\n\
             # TYPE inbound_http_authz_deny counter\n\
             inbound_http_authz_deny_total{{{target},target_addr=\"127.0.0.1:7000\",srv_group=\"\",srv_kind=\"default\",srv_name=\"deny\",route_group=\"\",route_kind=\"default\",route_name=\"default\",tls=\"true\",client_id=\"web.shop.serviceaccount.identity.weft.cluster.local\"}} {http_denied}\n"
        ));
    }
    if tcp_denied > 0 {
        text.push_str(&format!(
            "# HELP inbound_tcp_authz_deny The total number of inbound TCP connections that were denied.\n\
             # TYPE inbound_tcp_authz_deny counter\n\
             inbound_tcp_authz_deny_total{{{target},target_addr=\"127.0.0.1:7000\",srv_group=\"\",srv_kind=\"default\",srv_name=\"deny\",tls=\"disabled\",client_id=\"\"}} {tcp_denied}\n"
        ));
    }
    text.push_str("# EOF\n");
    text
}

/// The `UNAUTHORIZED` cell of `deploy/books` in `weft stat -o wide`.
async fn unauthorized(ctl: &ControllerProcess) -> String {
    let addr = ctl.admin_addr.to_string();
    let out = weft(&[
        "stat",
        "deploy/books",
        "-n",
        "shop",
        "-t",
        "5s",
        "-o",
        "wide",
        "--controller-addr",
        &addr,
    ])
    .await;
    let rows = cells(&stdout(&out));
    let col = rows[0].iter().position(|h| h == "UNAUTHORIZED").unwrap();
    rows[1][col].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_wide_counts_a_workloads_refused_requests_and_connections() {
    let proxy = Exposition::start().await;
    let dir = tempfile::tempdir().unwrap();
    // books' pod, meshed, its proxy's admin port the exposition above.
    let world = WORLD.replace(
        "  labels: {app: books, pod-template-hash: 7c9f4d}\n",
        &format!(
            "  labels: {{app: books, pod-template-hash: 7c9f4d}}\n  annotations: {{linkerd.io/inject: enabled, config.linkerd.io/admin-port: \"{}\"}}\n",
            proxy.addr.port()
        ),
    );
    assert_ne!(world, WORLD);
    std::fs::write(dir.path().join("world.yaml"), world).unwrap();
    let ctl = start(dir.path(), &["--metrics-scrape-interval", "500ms"]).await;

    // Scraped, nothing refused yet: 0, not `-`.
    let deadline = Instant::now() + CHANGE;
    loop {
        let cell = unauthorized(&ctl).await;
        if cell == "0" {
            break;
        }
        assert_eq!(cell, "-", "before any refusal");
        assert!(Instant::now() < deadline, "never scraped:\n{}", ctl.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Three refused requests and two refused connections, counted from the
    // counters' first appearance (Prometheus' `increase` extrapolates, so
    // the count may read a little above what happened, never below).
    proxy.http_denied.store(3, Ordering::SeqCst);
    proxy.tcp_denied.store(2, Ordering::SeqCst);
    let deadline = Instant::now() + CHANGE;
    loop {
        let cell = unauthorized(&ctl).await;
        let n: u64 = cell.parse().unwrap_or(0);
        if n >= 5 {
            // At most double, when the counters rose in the last interval.
            assert!(n <= 10, "{cell}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "UNAUTHORIZED still {cell}:\n{}",
            ctl.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
