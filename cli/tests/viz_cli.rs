//! `weft stat`, `edges`, `routes` and `top` as an operator runs them: the
//! real `weft` binary against a fake controller on loopback that answers
//! the metrics API's paths with canned documents built from
//! `weft_metrics_api::api`'s own types, so the tests pin the CLI's tables,
//! JSON, exit statuses and messages, and the queries it sends.
//!
//! The fake also plays the Kubernetes API server (plain HTTP) for cluster
//! mode, where requests go through the service proxy path.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use weft_metrics_api::api::{
    AuthzPortRow, AuthzResponse, AuthzRule, EdgeRow, EdgesResponse, ErrorBody, PolicyRef, RouteRow,
    RoutesResponse, StatResponse, StatRow, TopResponse, TopRow,
};

/// Upper bound on one run of `weft`.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound on one connection to the fake.
const CONN_TIMEOUT: Duration = Duration::from_secs(30);

type Handler = dyn Fn(&str) -> (StatusCode, String) + Send + Sync;

/// A loopback HTTP server answering by path, recording every request's
/// path and query.
struct Fake {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Fake {
    async fn start(handler: impl Fn(&str) -> (StatusCode, String) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let handler = handler.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let target = req
                            .uri()
                            .path_and_query()
                            .map_or_else(String::new, |pq| pq.to_string());
                        log.lock().unwrap().push(target.clone());
                        let (status, body) = handler(req.uri().path());
                        async move {
                            let mut rsp = Response::new(Full::new(Bytes::from(body)));
                            *rsp.status_mut() = status;
                            rsp.headers_mut()
                                .insert("content-type", "application/json".parse().unwrap());
                            Ok::<_, Infallible>(rsp)
                        }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc);
                    let _ = tokio::time::timeout(CONN_TIMEOUT, conn).await;
                });
            }
        });
        Self { addr, seen }
    }

    /// A fake controller answering `path` with `doc`, and 404 elsewhere.
    async fn controller(path: &'static str, doc: impl serde::Serialize) -> Self {
        let body = serde_json::to_string(&doc).unwrap();
        Self::start(move |p| {
            if p.ends_with(path) {
                (StatusCode::OK, body.clone())
            } else {
                not_found(&format!("no such path {p}"))
            }
        })
        .await
    }

    fn addr(&self) -> String {
        self.addr.to_string()
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// The one request's decoded query parameters.
    fn query(&self) -> Vec<(String, String)> {
        let seen = self.seen();
        assert_eq!(seen.len(), 1, "{seen:?}");
        let query = seen[0].split_once('?').map_or("", |(_, q)| q).to_owned();
        query
            .split('&')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k.to_owned(), v.replace("%2F", "/"))
            })
            .collect()
    }
}

fn not_found(message: &str) -> (StatusCode, String) {
    let body = ErrorBody {
        error: message.to_owned(),
    };
    (StatusCode::NOT_FOUND, serde_json::to_string(&body).unwrap())
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Runs `weft` with `args`, none of the environment that would choose
/// another controller, and `env` added.
async fn weft_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_weft"));
    cmd.args(args)
        .env_remove("KUBECONFIG")
        .env_remove("WEFT_CONTROLLER_ADDR")
        .env_remove("WEFT_NAMESPACE")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::time::timeout(RUN_TIMEOUT, cmd.output())
        .await
        .expect("weft finished in time")
        .unwrap()
}

async fn weft(args: &[&str]) -> Output {
    weft_env(args, &[]).await
}

fn describe(out: &Output) -> String {
    weft_test_support::command::describe(out)
}

fn stdout(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(0), "{}", describe(out));
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> String {
    let l = StdListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn stat_rows() -> Vec<StatRow> {
    vec![
        StatRow {
            namespace: "shop".into(),
            kind: "deployment".into(),
            name: "books".into(),
            meshed: Some("0/1".into()),
            ..StatRow::default()
        },
        StatRow {
            namespace: "shop".into(),
            kind: "deployment".into(),
            name: "web".into(),
            meshed: Some("2/2".into()),
            success: Some(0.9615),
            rps: Some(2.0),
            latency_ms_p50: Some(3),
            latency_ms_p95: Some(9),
            latency_ms_p99: Some(10),
            tcp_open_connections: Some(4),
            tcp_read_bytes_rate: Some(1234.56),
            tcp_write_bytes_rate: Some(30.0),
            unauthorized: Some(3),
            ..StatRow::default()
        },
    ]
}

fn stat_doc(rows: Vec<StatRow>) -> StatResponse {
    StatResponse {
        window_seconds: 60.0,
        rows,
    }
}

#[tokio::test]
async fn stat_prints_linkerds_table_with_dashes_for_idle_resources() {
    let fake = Fake::controller("/api/v1/stat", stat_doc(stat_rows())).await;
    let out = weft(&[
        "stat",
        "deploy",
        "-n",
        "shop",
        "--controller-addr",
        &fake.addr(),
    ])
    .await;
    assert_eq!(
        stdout(&out),
        "\
NAME    MESHED   SUCCESS   RPS      LATENCY_P50   LATENCY_P95   LATENCY_P99   TCP_CONN
books   0/1      -         -        -             -             -             -
web     2/2      96.15%    2.0rps   3ms           9ms           10ms          4
"
    );
    assert_eq!(
        fake.query(),
        pairs(&[
            ("resource", "deploy"),
            ("namespace", "shop"),
            ("window", "60")
        ])
    );
    assert_eq!(fake.seen()[0].split('?').next(), Some("/api/v1/stat"));
}

#[tokio::test]
async fn stat_wide_adds_byte_rates_and_json_is_the_rows() {
    let fake = Fake::controller("/api/v1/stat", stat_doc(stat_rows())).await;
    let addr = fake.addr();
    let wide = weft(&["stat", "deploy", "-o", "wide", "--controller-addr", &addr]).await;
    let wide = stdout(&wide);
    let lines: Vec<&str> = wide.lines().collect();
    assert!(
        lines[0].ends_with("TCP_CONN   READ_BYTES/SEC   WRITE_BYTES/SEC   UNAUTHORIZED"),
        "{wide}"
    );
    assert!(
        lines[1].ends_with("-          -                -                 -"),
        "{wide}"
    );
    assert!(
        lines[2].ends_with("4          1234.6B/s        30.0B/s           3"),
        "{wide}"
    );

    let json = weft(&["stat", "deploy", "-o", "json", "--controller-addr", &addr]).await;
    let json: Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(json, serde_json::to_value(stat_rows()).unwrap());
    assert!(json[0]["success"].is_null(), "{json}");
    assert_eq!(json[1]["tcp_read_bytes_rate"], 1234.56);
    assert_eq!(json[1]["unauthorized"], 3);
    assert!(json[0]["unauthorized"].is_null(), "{json}");
}

#[tokio::test]
async fn stat_all_namespaces_puts_the_namespace_first() {
    let mut rows = stat_rows();
    rows[0].namespace = "lib".into();
    let fake = Fake::controller("/api/v1/stat", stat_doc(rows)).await;
    let out = weft(&["stat", "deploy", "-A", "--controller-addr", &fake.addr()]).await;
    let out = stdout(&out);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("NAMESPACE   NAME    MESHED   SUCCESS"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("lib         books   0/1      -"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("shop        web     2/2      96.15%"),
        "{out}"
    );
    assert_eq!(
        fake.query(),
        pairs(&[
            ("resource", "deploy"),
            ("all_namespaces", "true"),
            ("window", "60")
        ])
    );
}

#[tokio::test]
async fn stat_traffic_splits_show_apex_leaf_and_weight() {
    let leaf = |name: &str, weight: &str, rps: Option<f64>| StatRow {
        namespace: "shop".into(),
        kind: "trafficsplit".into(),
        name: "books-split".into(),
        success: rps.map(|_| 1.0),
        rps,
        latency_ms_p50: rps.map(|_| 5),
        latency_ms_p95: rps.map(|_| 7),
        latency_ms_p99: rps.map(|_| 8),
        apex: Some("books".into()),
        leaf: Some(name.into()),
        weight: Some(weight.into()),
        ..StatRow::default()
    };
    let rows = vec![
        leaf("books-v1", "90%", Some(1.8)),
        leaf("books-v2", "10%", None),
    ];
    let fake = Fake::controller("/api/v1/stat", stat_doc(rows)).await;
    let out = weft(&[
        "stat",
        "ts/books-split",
        "-n",
        "shop",
        "-t",
        "5m",
        "--controller-addr",
        &fake.addr(),
    ])
    .await;
    assert_eq!(
        stdout(&out),
        "\
NAME          APEX    LEAF       WEIGHT   SUCCESS   RPS      LATENCY_P50   LATENCY_P95   LATENCY_P99
books-split   books   books-v1   90%      100.00%   1.8rps   5ms           7ms           8ms
books-split   books   books-v2   10%      -         -        -             -             -
"
    );
    assert_eq!(
        fake.query(),
        pairs(&[
            ("resource", "ts/books-split"),
            ("namespace", "shop"),
            ("window", "300")
        ])
    );
}

#[tokio::test]
async fn stat_sends_names_and_peers_as_typed() {
    let fake = Fake::controller("/api/v1/stat", stat_doc(vec![])).await;
    let out = weft(&[
        "stat",
        "deploy",
        "web",
        "-n",
        "shop",
        "--to",
        "svc/books",
        "--to-namespace",
        "lib",
        "--controller-addr",
        &fake.addr(),
    ])
    .await;
    // No rows: nothing on stdout, Linkerd's notice on stderr.
    assert_eq!(stdout(&out), "");
    assert_eq!(stderr(&out), "No traffic found.\n");
    assert_eq!(
        fake.query(),
        pairs(&[
            ("resource", "deploy/web"),
            ("namespace", "shop"),
            ("to", "svc/books"),
            ("to_namespace", "lib"),
            ("window", "60"),
        ])
    );

    let fake = Fake::controller("/api/v1/stat", stat_doc(vec![])).await;
    let out = weft(&[
        "stat",
        "svc",
        "--from",
        "deploy/web",
        "-o",
        "json",
        "--controller-addr",
        &fake.addr(),
    ])
    .await;
    assert_eq!(stdout(&out), "[]\n");
    assert_eq!(
        fake.query(),
        pairs(&[
            ("resource", "svc"),
            ("namespace", "default"),
            ("from", "deploy/web"),
            ("from_namespace", "default"),
            ("window", "60"),
        ])
    );
}

fn edge_rows() -> Vec<EdgeRow> {
    vec![
        EdgeRow {
            src: "web".into(),
            src_namespace: "shop".into(),
            dst: "books".into(),
            dst_namespace: "shop".into(),
            secured: true,
            client_id: "web.shop.serviceaccount.identity.weft.cluster.local".into(),
            server_id: "books.shop.serviceaccount.identity.weft.cluster.local".into(),
            no_tls_reason: String::new(),
        },
        EdgeRow {
            src: "(unmeshed)".into(),
            src_namespace: "-".into(),
            dst: "web".into(),
            dst_namespace: "shop".into(),
            secured: false,
            client_id: String::new(),
            server_id: String::new(),
            no_tls_reason: "not meshed".into(),
        },
    ]
}

#[tokio::test]
async fn edges_mark_secured_traffic_and_say_why_not() {
    let fake = Fake::controller("/api/v1/edges", EdgesResponse { rows: edge_rows() }).await;
    let addr = fake.addr();
    let out = weft(&["edges", "deploy", "-n", "shop", "--controller-addr", &addr]).await;
    assert_eq!(
        stdout(&out),
        "\
SRC          DST     SRC_NS   DST_NS   SECURED
web          books   shop     shop     √
(unmeshed)   web     -        shop     not meshed
"
    );
    assert_eq!(
        fake.query(),
        pairs(&[
            ("resource", "deploy"),
            ("namespace", "shop"),
            ("window", "60")
        ])
    );

    let wide = weft(&[
        "edges",
        "deploy",
        "-A",
        "-o",
        "wide",
        "--controller-addr",
        &addr,
    ])
    .await;
    assert_eq!(
        stdout(&wide),
        "\
SRC          DST     SRC_NS   DST_NS   CLIENT_ID   SERVER_ID    SECURED
web          books   shop     shop     web.shop    books.shop   √
(unmeshed)   web     -        shop     -           -            not meshed
"
    );

    let json = weft(&["edges", "deploy", "-o", "json", "--controller-addr", &addr]).await;
    let json: Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(json, serde_json::to_value(edge_rows()).unwrap());
}

#[tokio::test]
async fn routes_wide_splits_effective_and_actual() {
    let rows = vec![
        RouteRow {
            route: "GET /books/{id}".into(),
            authority: "books.shop.svc.cluster.local:8080".into(),
            success: Some(1.0),
            rps: Some(1.5),
            latency_ms_p50: Some(4),
            latency_ms_p95: Some(9),
            latency_ms_p99: Some(12),
            effective_success: Some(1.0),
            effective_rps: Some(1.5),
            actual_success: Some(0.75),
            actual_rps: Some(2.0),
        },
        RouteRow {
            route: "[DEFAULT]".into(),
            authority: "books.shop.svc.cluster.local:8080".into(),
            ..RouteRow::default()
        },
    ];
    let doc = RoutesResponse {
        window_seconds: 60.0,
        rows: rows.clone(),
    };
    let fake = Fake::controller("/api/v1/routes", doc).await;
    let addr = fake.addr();
    let out = weft(&[
        "routes",
        "deploy/web",
        "-n",
        "shop",
        "--to",
        "svc/books",
        "-o",
        "wide",
        "--controller-addr",
        &addr,
    ])
    .await;
    assert_eq!(
        stdout(&out),
        "\
ROUTE             SERVICE   EFFECTIVE_SUCCESS   EFFECTIVE_RPS   ACTUAL_SUCCESS   ACTUAL_RPS   LATENCY_P50   LATENCY_P95   LATENCY_P99
GET /books/{id}   books     100.00%             1.5rps          75.00%           2.0rps       4ms           9ms           12ms
[DEFAULT]         books     -                   -               -                -            -             -             -
"
    );
    assert_eq!(
        fake.query(),
        pairs(&[
            ("resource", "deploy/web"),
            ("namespace", "shop"),
            ("to", "svc/books"),
            ("to_namespace", "shop"),
            ("window", "60"),
        ])
    );

    let table = weft(&["routes", "svc/books", "--controller-addr", &addr]).await;
    let table = stdout(&table);
    assert!(
        table.starts_with("ROUTE             SERVICE   SUCCESS   RPS      LATENCY_P50"),
        "{table}"
    );
    let json = weft(&[
        "routes",
        "svc/books",
        "-o",
        "json",
        "--controller-addr",
        &addr,
    ])
    .await;
    let json: Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(json, serde_json::to_value(rows).unwrap());
}

#[tokio::test]
async fn top_once_prints_the_busiest_paths_first() {
    let row = |path: &str, count: u64, best: f64, worst: f64, success: f64| TopRow {
        source: "deploy/web".into(),
        destination: "deploy/books".into(),
        method: "GET".into(),
        path: path.into(),
        count,
        best_ms: best,
        worst_ms: worst,
        last_ms: worst,
        success,
    };
    let doc = TopResponse {
        duration_seconds: 1.0,
        proxies: 2,
        dropped: 0,
        rows: vec![
            row("/authors", 3, 0.512, 2.0, 1.0),
            row("/books", 7, 1.2, 1_500.0, 6.0 / 7.0),
        ],
    };
    let fake = Fake::controller("/api/v1/top", doc).await;
    let out = weft(&[
        "top",
        "deploy/web",
        "-n",
        "shop",
        "--once",
        "--interval",
        "1s",
        "--controller-addr",
        &fake.addr(),
    ])
    .await;
    let out = stdout(&out);
    assert!(!out.contains('\x1b'), "no ANSI in --once: {out:?}");
    assert_eq!(
        out,
        "\
Source       Destination    Method   Path       Count   Best    Worst   Last   Success
deploy/web   deploy/books   GET      /books     7       1ms     2s      2s     85.71%
deploy/web   deploy/books   GET      /authors   3       512µs   2ms     2ms    100.00%
"
    );
    assert_eq!(
        fake.query(),
        pairs(&[
            ("resource", "deploy/web"),
            ("namespace", "shop"),
            ("duration", "1")
        ])
    );
}

#[tokio::test]
async fn an_unreachable_controller_fails_saying_where_it_looked() {
    let addr = closed_port();
    let out = weft(&["stat", "deploy", "--controller-addr", &addr]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "weft: cannot reach the Weft controller at {addr} (connection refused)"
        )),
        "{err}"
    );
    assert!(
        err.contains("weft demo") && err.contains("--controller-addr"),
        "{err}"
    );

    // The environment names the address as well as the flag.
    let out = weft_env(&["edges", "po"], &[("WEFT_CONTROLLER_ADDR", &addr)]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(stderr(&out).contains(&addr), "{}", describe(&out));
}

#[tokio::test]
async fn usage_errors_exit_2_before_contacting_anything() {
    let fake = Fake::controller("/api/v1/stat", stat_doc(stat_rows())).await;
    let addr = fake.addr();
    let cases: &[&[&str]] = &[
        &["stat", "deployz"],
        &["stat", "deploy/"],
        &["stat", "deploy/web", "web"],
        &["stat", "deploy", "--from", "deploy/a", "--to", "svc/b"],
        &["stat", "deploy", "--to", "nope/b"],
        &["stat", "deploy", "-A", "-n", "shop"],
        &["stat", "deploy", "-t", "500ms"],
        &["stat", "deploy", "-o", "yaml"],
        &["edges", "svc"],
        &["routes", "widget/x"],
        &["top", "au", "--once"],
        &["top", "deploy", "--interval", "1m"],
        &["authz", "svc/books"],
        &["authz", "deployz/web"],
        &["authz", "deploy/web", "-A"],
        &["authz", "deploy/web", "-o", "yaml"],
    ];
    for args in cases {
        let mut args = args.to_vec();
        args.extend(["--controller-addr", &addr]);
        let out = weft(&args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
        assert!(out.stdout.is_empty(), "{args:?}: {}", describe(&out));
    }
    assert!(fake.seen().is_empty(), "{:?}", fake.seen());

    let out = weft(&["stat", "deployz", "--controller-addr", &addr]).await;
    let err = stderr(&out);
    assert!(
        err.starts_with("weft: unknown resource type \"deployz\""),
        "{err}"
    );
    let out = weft(&["stat", "deploy", "--from", "deploy/a", "--to", "svc/b"]).await;
    assert!(stderr(&out).contains("--from"), "{}", describe(&out));
    let out = weft(&["authz", "svc/books", "--controller-addr", &addr]).await;
    assert!(
        stderr(&out).starts_with("weft: service has no pods of its own; use a workload"),
        "{}",
        describe(&out)
    );
}

fn authz_doc() -> AuthzResponse {
    AuthzResponse {
        rows: vec![AuthzPortRow {
            namespace: "shop".into(),
            pod: "web-0".into(),
            port: 8080,
            server: PolicyRef {
                group: String::new(),
                kind: "default".into(),
                name: "cluster-authenticated".into(),
            },
            protocol: "detect".into(),
            rules: vec![AuthzRule {
                route: "*".into(),
                authorization: Some(PolicyRef {
                    group: String::new(),
                    kind: "default".into(),
                    name: "cluster-authenticated".into(),
                }),
                networks: vec!["10.0.0.0/8".into(), "fd00::/8".into()],
                authentication: "any meshed identity".into(),
                suffixes: vec!["*".into()],
                ..AuthzRule::default()
            }],
            warnings: vec!["a warning".into()],
        }],
    }
}

#[tokio::test]
async fn authz_prints_sources_sends_the_query_and_goes_through_the_api_server() {
    let fake = Fake::controller("/api/v1/authz", authz_doc()).await;
    let addr = fake.addr();
    let out = weft(&[
        "authz",
        "-n",
        "shop",
        "deploy",
        "web",
        "--controller-addr",
        &addr,
    ])
    .await;
    assert_eq!(
        stdout(&out).lines().collect::<Vec<_>>(),
        [
            "POD     PORT   SERVER                          ROUTE   AUTHORIZATION                   SOURCES",
            "web-0   8080   default/cluster-authenticated   *       default/cluster-authenticated   any meshed identity from 10.0.0.0/8,fd00::/8",
        ]
    );
    assert_eq!(
        stderr(&out),
        "warning: shop/web-0 port 8080: a warning
"
    );
    assert_eq!(
        fake.query(),
        pairs(&[("resource", "deploy/web"), ("namespace", "shop")])
    );

    let json = weft(&[
        "authz",
        "deploy/web",
        "-o",
        "json",
        "--controller-addr",
        &addr,
    ])
    .await;
    let json: Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(json, serde_json::to_value(&authz_doc().rows).unwrap());

    let empty = Fake::controller("/api/v1/authz", AuthzResponse::default()).await;
    let out = weft(&["authz", "po", "--controller-addr", &empty.addr()]).await;
    assert!(stdout(&out).is_empty(), "{}", describe(&out));
    assert!(
        stderr(&out).starts_with("No ports found"),
        "{}",
        describe(&out)
    );

    // Cluster mode: the same request through the service proxy.
    let doc = serde_json::to_string(&authz_doc()).unwrap();
    let api = Fake::start(move |path| {
        if path == "/api/v1/namespaces/weft/services/weft-admin:admin/proxy/api/v1/authz" {
            (StatusCode::OK, doc.clone())
        } else {
            not_found("no")
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), &api.addr());
    let out = weft(&[
        "authz",
        "-n",
        "shop",
        "po/web-0",
        "--kubeconfig",
        config.to_str().unwrap(),
    ])
    .await;
    assert!(stdout(&out).contains("web-0   8080"), "{}", describe(&out));
    assert_eq!(
        api.seen(),
        ["/api/v1/namespaces/weft/services/weft-admin:admin/proxy/api/v1/authz?resource=po%2Fweb-0&namespace=shop"]
    );
}

#[tokio::test]
async fn controller_errors_fail_with_its_message() {
    let fake = Fake::start(|path| match path {
        "/api/v1/stat" => not_found("deployment \"nope\" not found in namespace \"shop\""),
        "/api/v1/edges" => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::to_string(&ErrorBody {
                error: "no scrape yet".into(),
            })
            .unwrap(),
        ),
        _ => (StatusCode::NOT_FOUND, "not found".into()),
    })
    .await;
    let addr = fake.addr();
    let out = weft(&[
        "stat",
        "deploy/nope",
        "-n",
        "shop",
        "--controller-addr",
        &addr,
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(
        stderr(&out),
        "weft: deployment \"nope\" not found in namespace \"shop\"\n"
    );

    let out = weft(&["edges", "deploy", "--controller-addr", &addr]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains("503") && err.contains("no scrape yet"),
        "{err}"
    );

    // Something that is not a controller answers in its own words.
    let out = weft(&["routes", "svc/books", "--controller-addr", &addr]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(stderr(&out).contains("admin port"), "{}", describe(&out));
}

/// A kubeconfig for a plain-HTTP API server at `addr`.
fn kubeconfig(dir: &std::path::Path, addr: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{addr}\n\
         contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
         current-context: fake\nusers:\n- name: fake\n  user:\n    token: t0ken\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn cluster_mode_goes_through_the_api_servers_service_proxy() {
    let doc = serde_json::to_string(&stat_doc(stat_rows())).unwrap();
    let api = Fake::start(move |path| {
        if path == "/api/v1/namespaces/weft/services/weft-admin:admin/proxy/api/v1/stat"
            || path == "/api/v1/namespaces/mesh/services/weft-admin:admin/proxy/api/v1/stat"
        {
            (StatusCode::OK, doc.clone())
        } else {
            let status = serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": "services \"weft-admin\" not found", "reason": "NotFound", "code": 404
            });
            (StatusCode::NOT_FOUND, status.to_string())
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), &api.addr());
    let config = config.to_str().unwrap();

    let out = weft(&["stat", "deploy", "-n", "shop", "--kubeconfig", config]).await;
    assert!(
        stdout(&out).contains("web     2/2      96.15%"),
        "{}",
        describe(&out)
    );
    let seen = api.seen();
    assert_eq!(
        seen,
        ["/api/v1/namespaces/weft/services/weft-admin:admin/proxy/api/v1/stat?resource=deploy&namespace=shop&window=60"]
    );

    // $KUBECONFIG alone chooses cluster mode; --weft-namespace moves it.
    let out = weft_env(
        &["stat", "deploy", "--weft-namespace", "mesh"],
        &[("KUBECONFIG", config)],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    // The API server's own refusal is reported with a hint.
    let out = weft_env(
        &["stat", "deploy"],
        &[("KUBECONFIG", config), ("WEFT_NAMESPACE", "elsewhere")],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains("service weft-admin:admin in namespace elsewhere")
            && err.contains("services \"weft-admin\" not found")
            && err.contains("--weft-namespace"),
        "{err}"
    );

    // An address wins over a kubeconfig.
    let controller = Fake::controller("/api/v1/stat", stat_doc(vec![])).await;
    let before = api.seen().len();
    let out = weft(&[
        "stat",
        "deploy",
        "--kubeconfig",
        config,
        "--controller-addr",
        &controller.addr(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(controller.seen().len(), 1);
    assert_eq!(api.seen().len(), before);
}
