//! Golden metrics with no Prometheus, in file mode: a real controller reads
//! the scenario from a config dir and scrapes two real proxies; the real
//! `weft` CLI reads `stat`, `edges` and `routes` back while known traffic
//! flows (see `golden/mod.rs` for the world and the tolerances).
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod golden;

use golden::*;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use weft_test_support::backend::HttpBackend;
use weft_test_support::controller::{identity, ControllerOptions, ControllerProcess};
use weft_test_support::proxy::ProxyProcess;

const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

struct World {
    _dir: tempfile::TempDir,
    ctl: ControllerProcess,
    backend: HttpBackend,
    books: Option<ProxyProcess>,
    web: ProxyProcess,
    books_addrs: PodAddrs,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let web_addrs = PodAddrs::free(LOOPBACK);
    let books_addrs = PodAddrs::free(LOOPBACK);
    let yaml = [
        pod_yaml("web", web_addrs, true),
        pod_yaml("books", books_addrs, true),
        books_yaml(books_addrs, true),
    ]
    .join("---\n");
    std::fs::write(dir.path().join("golden.yaml"), yaml).unwrap();
    let options = ControllerOptions::config_dir(dir.path()).args(&[
        "--metrics-scrape-interval",
        SCRAPE,
        "--metrics-retention",
        "10s",
    ]);
    let ctl = ControllerProcess::start_with(&sibling("weft-controller"), "24h", options)
        .await
        .unwrap();
    let backend = HttpBackend::start_with_delay(DELAY).await;
    backend.set_failure_percent(FAILURE_PERCENT);
    let proxy = sibling("weft-proxy");
    let books = ctl
        .pod_proxy(&proxy, NS, "books", backend.addr)
        .unwrap()
        .env("WEFT_PROXY_INBOUND_ADDR", books_addrs.inbound)
        .env("WEFT_PROXY_ADMIN_ADDR", books_addrs.admin)
        .env("WEFT_PROXY_WORKLOAD", workload("books", &pod_name("books")))
        .spawn()
        .await
        .unwrap();
    let web = ctl
        .client_proxy(&proxy, NS, "web")
        .unwrap()
        .env("WEFT_PROXY_ADMIN_ADDR", web_addrs.admin)
        .env("WEFT_PROXY_WORKLOAD", workload("web", &pod_name("web")))
        .spawn()
        .await
        .unwrap();
    World {
        _dir: dir,
        ctl,
        backend,
        books: Some(books),
        web,
        books_addrs,
    }
}

/// `stat` while 50 RPS with 10 % failures and 25 ms flow; the other views
/// of the same traffic; `edges` with an unmeshed client; `routes` with
/// retries; and a proxy that stops answering ages out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_edges_and_routes_report_known_traffic() {
    let mut w = world().await;
    let admin = w.ctl.admin_addr;

    // Nothing yet: rows for both deployments, no numbers.
    let rows = weft_json(admin, &["stat", "deploy", "-n", NS, "-t", WINDOW]);
    assert!(row(&rows, "books")["rps"].is_null(), "{rows:#?}");

    // Known load on the [DEFAULT] route (not retryable): 50 RPS for 12 s.
    let outbound = w.web.outbound;
    let run = tokio::spawn(load(outbound, "/plain/", RPS, Duration::from_secs(12)));
    wait_for_books_traffic(admin, f64::from(RPS) * 0.5).await;
    // Let a whole window of steady load be scraped, then read it.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let stat = weft_json(admin, &["stat", "deploy", "-n", NS, "-t", WINDOW]);
    let from_web = weft_json(
        admin,
        &[
            "stat",
            "deploy",
            "-n",
            NS,
            "--from",
            "deploy/web",
            "-t",
            WINDOW,
        ],
    );
    let svc = weft_json(admin, &["stat", "svc", "-n", NS, "-t", WINDOW]);
    let pods = weft_json(admin, &["stat", "po", "-n", NS, "-t", WINDOW]);
    let (code, table, err) = weft(admin, &["stat", "deploy", "-n", NS, "-t", WINDOW]);
    let sent = run.await.unwrap();
    eprintln!("load: {sent:?}\nstat: {stat:#?}\n{table}");
    assert!(
        sent.sent >= 500 && sent.ok + sent.failed == sent.sent,
        "{sent:?}"
    );
    assert_golden_stat(&stat);
    assert_eq!(code, 0, "{err}");
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "MESHED",
            "SUCCESS",
            "RPS",
            "LATENCY_P50",
            "LATENCY_P95",
            "LATENCY_P99",
            "TCP_CONN"
        ]
    );
    let books_line = table.lines().find(|l| l.starts_with("books")).unwrap();
    assert!(
        books_line.contains("rps") && books_line.contains('%'),
        "{table}"
    );

    // The client's view (outbound from web) and the service's agree.
    for (what, rows) in [("--from deploy/web", &from_web), ("svc", &svc)] {
        let rps = row(rows, "books")["rps"].as_f64().unwrap();
        assert!(
            (rps - f64::from(RPS)).abs() <= f64::from(RPS) * 0.2,
            "{what}: books rps {rps}: {rows:#?}"
        );
    }
    assert!(row(&svc, "books")["meshed"].is_null(), "{svc:#?}");
    let books_pod = row(&pods, &pod_name("books"));
    assert!(books_pod["rps"].as_f64().unwrap() > 0.0, "{pods:#?}");

    // Edges: web → books over mTLS with both identities; an unmeshed
    // client (plaintext straight to the books proxy) is not secured.
    for n in 0..20 {
        let (status, _) =
            weft_test_support::client::get(w.books_addrs.inbound, &format!("/direct/{n}"))
                .await
                .unwrap();
        assert!(matches!(status, 200 | 500), "{status}");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let edges = loop {
        let edges = weft_json(admin, &["edges", "deploy", "-n", NS]);
        if edges.iter().any(|e| e["src"] == "(unmeshed)") {
            break edges;
        }
        if Instant::now() > deadline {
            let books = w.books.as_ref().unwrap().metrics().await;
            let responses: Vec<&str> = books
                .lines()
                .filter(|l| l.starts_with("response_total"))
                .collect();
            panic!("no unmeshed edge: {edges:#?}\nbooks' proxy: {responses:#?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let secured = edges
        .iter()
        .find(|e| e["src"] == "web" && e["dst"] == "books")
        .unwrap_or_else(|| panic!("no web → books edge: {edges:#?}"));
    assert_eq!(secured["src_namespace"], NS);
    assert_eq!(secured["dst_namespace"], NS);
    assert_eq!(secured["client_id"], identity(NS, "web"), "{secured}");
    assert_eq!(secured["server_id"], identity(NS, "books"), "{secured}");
    assert_eq!(secured["no_tls_reason"], "", "{secured}");
    let plain = edges.iter().find(|e| e["src"] == "(unmeshed)").unwrap();
    assert_eq!(plain["dst"], "books", "{plain}");
    assert_eq!(plain["no_tls_reason"], "not meshed", "{plain}");
    let (code, table, err) = weft(admin, &["edges", "deploy", "-n", NS]);
    assert_eq!(code, 0, "{err}");
    let line = table
        .lines()
        .find(|l| l.starts_with("web"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(line.contains('√'), "{table}");

    // Routes: the retryable route is retried (actual > effective), its
    // effective success is higher than what the backend gives.
    let run = tokio::spawn(load(outbound, "/books/", 30, Duration::from_secs(8)));
    let deadline = Instant::now() + Duration::from_secs(30);
    let routes = loop {
        let routes = weft_json(admin, &["routes", "svc/books", "-n", NS, "-t", WINDOW]);
        let r = routes.iter().find(|r| r["route"] == "GET /books/{id}");
        if r.is_some_and(|r| r["effective_rps"].as_f64().unwrap_or(0.0) > 15.0) {
            break routes;
        }
        assert!(Instant::now() < deadline, "no route traffic: {routes:#?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    run.await.unwrap();
    eprintln!("routes: {routes:#?}");
    let names: Vec<&str> = routes
        .iter()
        .map(|r| r["route"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["GET /books/{id}", "POST /books", "[DEFAULT]"],
        "{routes:#?}"
    );
    let get = &routes[0];
    assert!(
        get["actual_rps"].as_f64().unwrap() > get["effective_rps"].as_f64().unwrap(),
        "retries make more attempts than requests: {get}"
    );
    assert!(
        get["effective_success"].as_f64().unwrap() > get["actual_success"].as_f64().unwrap(),
        "retries hide failures: {get}"
    );
    assert!(
        routes[1]["rps"].is_null(),
        "POST /books had no traffic: {routes:#?}"
    );
    assert!(w.backend.retries() > 0, "the backend saw retries");
    let (code, wide, err) = weft(
        admin,
        &["routes", "svc/books", "-n", NS, "-t", WINDOW, "-o", "wide"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        wide.lines().next().unwrap().contains("ACTUAL_SUCCESS"),
        "{wide}"
    );

    // The books proxy goes away: its scrapes fail, and its samples age out
    // of the ring after the retention (10 s).
    let books_pod_key = format!("{NS}/{}", pod_name("books"));
    drop(w.books.take());
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (_, body) = weft_test_support::client::get(admin, "/api/v1/targets")
            .await
            .unwrap();
        let targets: serde_json::Value = serde_json::from_str(&body).unwrap();
        let books = targets["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["pod"] == books_pod_key.as_str())
            .cloned()
            .unwrap();
        if books["samples"] == 0 && books["last_error"].is_string() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "books' samples did not age out: {books}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let rows = weft_json(admin, &["stat", "deploy", "-n", NS, "-t", WINDOW]);
    let books = row(&rows, "books");
    assert!(
        books["rps"].is_null(),
        "an aged-out proxy has no numbers: {books}"
    );
    assert!(books["tcp_open_connections"].is_null(), "{books}");
}

/// Errors an operator meets: unknown names, a window too short, a
/// controller that is not there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_errors_are_clear() {
    let w = world().await;
    let admin = w.ctl.admin_addr;
    let (code, _, err) = weft(admin, &["stat", "deploy/nope", "-n", NS]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("nope") && err.contains("not found"), "{err}");
    let (code, _, err) = weft(admin, &["stat", "deploy", "-n", NS, "-t", "1s"]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("two scrape intervals"), "{err}");
    let (code, _, err) = weft(admin, &["stat", "widgets"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("widgets"), "{err}");
    let nobody: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (code, _, err) = weft(nobody, &["stat", "deploy"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&nobody.to_string()),
        "says where it looked: {err}"
    );
}
