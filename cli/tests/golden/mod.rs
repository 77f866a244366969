//! The golden-metrics scenario shared by the file-mode and cluster-mode
//! tests: known traffic through real proxies, read back with the real
//! `weft stat`, `edges` and `routes` from the controller's metrics API.
//!
//! The world, in namespace [`NS`]: deployment `web` (one meshed pod, a
//! client proxy) calls service `books` (deployment `books`, one meshed pod:
//! a proxy in front of an [`HttpBackend`] that waits [`DELAY`] and fails
//! [`FAILURE_PERCENT`] % of requests). `books` has a ServiceProfile with a
//! retryable route `GET /books/{id}`; everything else is `[DEFAULT]`.
//! The test also sends plaintext requests straight to the books proxy: an
//! unmeshed client.
#![allow(dead_code)] // each test binary uses its own part
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use weft_test_support::client::get_through;

/// The scenario's namespace.
pub const NS: &str = "golden";
/// The books backend's latency.
pub const DELAY: Duration = Duration::from_millis(25);
/// The share of books requests that fail with 500.
pub const FAILURE_PERCENT: usize = 10;
/// The load's rate.
pub const RPS: u32 = 50;
/// The scrape interval the controller runs with.
pub const SCRAPE: &str = "1s";
/// The window queries use (at least two scrapes).
pub const WINDOW: &str = "6s";
/// The ReplicaSet hash in the pods' names.
pub const HASH: &str = "7c9f4d";

/// `weft`, built by this package.
pub fn weft_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_weft"))
}

/// A sibling binary of `weft` (the workspace build puts them together).
pub fn sibling(name: &str) -> PathBuf {
    let bin = weft_bin().with_file_name(name);
    assert!(
        bin.is_file(),
        "{} missing: build the whole workspace (cargo build --workspace)",
        bin.display()
    );
    bin
}

/// Where one pod's proxy listens.
#[derive(Clone, Copy, Debug)]
pub struct PodAddrs {
    /// Inbound listener (the pod's endpoint).
    pub inbound: SocketAddr,
    /// Admin server (scraped by the controller).
    pub admin: SocketAddr,
}

impl PodAddrs {
    /// Free ports on `ip`.
    pub fn free(ip: IpAddr) -> Self {
        let free = || {
            let l = std::net::TcpListener::bind(SocketAddr::new(ip, 0)).unwrap();
            l.local_addr().unwrap()
        };
        Self {
            inbound: free(),
            admin: free(),
        }
    }
}

/// A pod's name (`web-7c9f4d-x1`).
pub fn pod_name(deployment: &str) -> String {
    format!("{deployment}-{HASH}-x1")
}

/// `WEFT_PROXY_WORKLOAD` for a deployment's pod.
pub fn workload(deployment: &str, pod: &str) -> String {
    format!("{NS}/deployment/{deployment}/{pod}")
}

/// A meshed pod of `deployment` (ServiceAccount of the same name) owned by
/// its ReplicaSet, with its proxy's admin port annotated; `status` only in
/// file mode (cluster mode sets it with the harness).
pub fn pod_yaml(deployment: &str, addrs: PodAddrs, file_mode: bool) -> String {
    let name = pod_name(deployment);
    let mut y = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {NS}\n  \
         labels: {{app: {deployment}, pod-template-hash: {HASH}}}\n  annotations:\n    \
         linkerd.io/inject: enabled\n    config.linkerd.io/admin-port: \"{admin}\"\n  \
         ownerReferences:\n  - {{apiVersion: apps/v1, kind: ReplicaSet, name: {deployment}-{HASH}, \
         uid: 00000000-0000-0000-0000-00000000000{n}, controller: true}}\nspec:\n  \
         serviceAccountName: {deployment}\n  containers:\n  - name: app\n    image: app\n    \
         ports: [{{name: http, containerPort: {port}}}]\n",
        admin = addrs.admin.port(),
        port = addrs.inbound.port(),
        n = deployment.len() % 10,
    );
    if file_mode {
        y.push_str(&format!(
            "status: {{phase: Running, podIP: {}}}\n",
            addrs.inbound.ip()
        ));
    }
    y
}

/// A ReplicaSet `DEPLOYMENT-HASH` of one meshed pod, as a Deployment
/// would make it (cluster mode: the API's garbage collector removes pods
/// whose owner does not exist, so the owner is real and names the pod).
pub fn replicaset_yaml(deployment: &str, addrs: PodAddrs) -> String {
    format!(
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {{name: {deployment}-{HASH}, namespace: {NS}}}\n\
         spec:\n  replicas: 1\n  selector: {{matchLabels: {{app: {deployment}}}}}\n  template:\n    \
         metadata:\n      labels: {{app: {deployment}, pod-template-hash: {HASH}}}\n      annotations:\n        \
         linkerd.io/inject: enabled\n        config.linkerd.io/admin-port: \"{admin}\"\n    spec:\n      \
         serviceAccountName: {deployment}\n      containers:\n      - name: app\n        image: app\n        \
         ports: [{{name: http, containerPort: {port}}}]\n",
        admin = addrs.admin.port(),
        port = addrs.inbound.port(),
    )
}

/// Service `books` (port 8080 to the pod's inbound port) and its profile;
/// in file mode also its Endpoints.
pub fn books_yaml(books: PodAddrs, file_mode: bool) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: books, namespace: {NS}}}\nspec:\n  \
         selector: {{app: books}}\n  ports:\n  - {{name: http, port: 8080, targetPort: {port}}}\n\
         ---\napiVersion: linkerd.io/v1alpha2\nkind: ServiceProfile\nmetadata:\n  \
         name: books.{NS}.svc.cluster.local\n  namespace: {NS}\nspec:\n  routes:\n  \
         - name: GET /books/{{id}}\n    condition: {{method: GET, pathRegex: '/books/[0-9]+'}}\n    \
         isRetryable: true\n  - name: POST /books\n    condition: {{method: POST, pathRegex: /books}}\n  \
         retryBudget: {{retryRatio: 0.5, minRetriesPerSecond: 20, ttl: 10s}}\n",
        port = books.inbound.port()
    );
    if file_mode {
        y.push_str(&format!(
            "---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: books, namespace: {NS}}}\n\
             subsets:\n- addresses: [{{ip: {ip}, targetRef: {{kind: Pod, name: {pod}, namespace: {NS}}}}}]\n  \
             ports: [{{name: http, port: {port}}}]\n",
            ip = books.inbound.ip(),
            pod = pod_name("books"),
            port = books.inbound.port()
        ));
    }
    y
}

/// What a load run saw.
#[derive(Debug, Default)]
pub struct Load {
    /// Requests sent.
    pub sent: usize,
    /// Answered 200.
    pub ok: usize,
    /// Answered 500.
    pub failed: usize,
}

/// Sends `GET http://books.NS.svc.cluster.local:8080{path}N` through
/// `outbound` at [`RPS`] for `duration` (open loop: one request per tick,
/// each on its own task).
pub async fn load(outbound: SocketAddr, path: &str, rps: u32, duration: Duration) -> Load {
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rps);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut n = 0;
    while started.elapsed() < duration {
        tick.tick().await;
        n += 1;
        let uri = format!("http://books.{NS}.svc.cluster.local:8080{path}{n}");
        tasks.spawn(async move {
            tokio::time::timeout(Duration::from_secs(10), get_through(outbound, &uri))
                .await
                .ok()
                .and_then(Result::ok)
                .map(|(status, _)| status)
        });
    }
    let mut load = Load::default();
    while let Some(status) = tasks.join_next().await {
        load.sent += 1;
        match status.unwrap() {
            Some(200) => load.ok += 1,
            Some(500) => load.failed += 1,
            _ => {}
        }
    }
    load
}

/// Runs `weft ARGS --controller-addr ADMIN` and returns (exit code,
/// stdout, stderr).
pub fn weft(admin: SocketAddr, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(weft_bin())
        .args(args)
        .args(["--controller-addr", &admin.to_string()])
        .env_remove("KUBECONFIG")
        .env_remove("WEFT_CONTROLLER_ADDR")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `weft ARGS -o json`, parsed; panics with the output on failure.
pub fn weft_json(admin: SocketAddr, args: &[&str]) -> Vec<Value> {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let (code, out, err) = weft(admin, &all);
    assert_eq!(code, 0, "weft {all:?}: {err}\n{out}");
    serde_json::from_str::<Vec<Value>>(&out)
        .unwrap_or_else(|e| panic!("weft {all:?} printed no JSON array ({e}): {out}"))
}

/// The row named `name` of a JSON table.
pub fn row<'a>(rows: &'a [Value], name: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no row {name}: {rows:#?}"))
}

/// Polls `weft stat deploy` until books shows at least `min_rps` (the
/// controller needs a few scrapes of the new traffic), at most 30 s.
pub async fn wait_for_books_traffic(admin: SocketAddr, min_rps: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = weft_json(admin, &["stat", "deploy", "-n", NS, "-t", WINDOW]);
        let rps = rows
            .iter()
            .find(|r| r["name"] == "books")
            .and_then(|r| r["rps"].as_f64());
        if rps.is_some_and(|r| r >= min_rps) {
            return;
        }
        if Instant::now() > deadline {
            let targets = weft_test_support::client::get(admin, "/api/v1/targets").await;
            panic!("books never showed {min_rps} rps: {rows:#?}\ntargets: {targets:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Asserts what `stat` must say about a run of [`RPS`] with
/// [`FAILURE_PERCENT`] failures and [`DELAY`], sampled while the load
/// runs. Tolerances: RPS ±20 %, success ±7 points (about 300 requests per
/// window: the failures are random), p50 within the histogram bucket of
/// the delay or the next, p99 under 100 ms.
pub fn assert_golden_stat(rows: &[Value]) {
    let books = row(rows, "books");
    assert_eq!(books["namespace"], NS, "{books}");
    assert_eq!(books["kind"], "deployment", "{books}");
    assert_eq!(books["meshed"], "1/1", "{books}");
    let rps = books["rps"].as_f64().unwrap();
    let expect = f64::from(RPS);
    assert!(
        (rps - expect).abs() <= expect * 0.2,
        "books rps {rps}, expected {expect} ± 20 %: {books}"
    );
    let success = books["success"].as_f64().unwrap();
    let expected_success = 1.0 - FAILURE_PERCENT as f64 / 100.0;
    assert!(
        (success - expected_success).abs() <= 0.07,
        "books success {success}, expected {expected_success} ± 0.07: {books}"
    );
    let p50 = books["latency_ms_p50"].as_u64().unwrap();
    let p99 = books["latency_ms_p99"].as_u64().unwrap();
    assert!(
        (20..=40).contains(&p50),
        "p50 {p50} ms for a {DELAY:?} backend: {books}"
    );
    assert!((p50..=100).contains(&p99), "p99 {p99} ms: {books}");
    assert!(
        books["tcp_open_connections"].as_u64().unwrap() >= 1,
        "the web proxy keeps a connection to books open: {books}"
    );
    // web receives nothing: no HTTP numbers, but a row.
    let web = row(rows, "web");
    assert_eq!(web["meshed"], "1/1", "{web}");
    assert!(web["rps"].is_null(), "{web}");
}
