//! Golden metrics in cluster mode: the same scenario as
//! `golden_metrics.rs`, with the controller watching the project's test
//! API server (`--kubeconfig`), real ServiceAccount tokens for the proxies'
//! identities, and the pods known only through the API (their IP, their
//! ReplicaSet owner, their admin-port annotation).
//!
//! The API rejects loopback pod and endpoint addresses, so the pods' IP is
//! the host side of a [`TestNet`] veth (a local address of this machine in
//! `10.214.N.0/24`, on an interface the test creates): the proxies listen
//! there and the controller scrapes them there. Needs root and `ip`.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod golden;

use golden::*;
use std::time::{Duration, Instant};
use weft_kube_harness::TestControlPlane;
use weft_test_support::backend::HttpBackend;
use weft_test_support::controller::{identity, ControllerOptions, ControllerProcess};
use weft_test_support::netns::TestNet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_and_edges_in_cluster_mode() {
    if let Some(why) = TestNet::unavailable() {
        panic!("this test needs a network namespace and cannot make one: {why}");
    }
    let net = TestNet::create().unwrap();
    let ip = net.host_ip();
    let plane = tokio::time::timeout(Duration::from_secs(100), TestControlPlane::start())
        .await
        .expect("control plane start timed out")
        .unwrap();
    plane
        .kubectl_with_stdin(
            &["apply", "-f", "-"],
            Some(include_str!("../../install/crds.yaml")),
        )
        .await
        .unwrap();
    plane
        .wait_for_crd_established("serviceprofiles.linkerd.io")
        .await
        .unwrap();
    plane.create_namespace_for_pods(NS).await.unwrap();
    for sa in ["web", "books"] {
        plane.create_service_account(NS, sa).await.unwrap();
    }
    let web_addrs = PodAddrs::free(ip);
    let books_addrs = PodAddrs::free(ip);
    let yaml = [
        replicaset_yaml("web", web_addrs),
        replicaset_yaml("books", books_addrs),
        books_yaml(books_addrs, false),
    ]
    .join("---\n");
    plane
        .kubectl_with_stdin(&["apply", "-f", "-"], Some(&yaml))
        .await
        .unwrap();
    // The ReplicaSet controller names the pods; make each one ready at the
    // test network's address.
    let mut pods = std::collections::BTreeMap::new();
    for d in ["web", "books"] {
        let deadline = Instant::now() + Duration::from_secs(30);
        let name = loop {
            let name = plane
                .kubectl(&[
                    "get",
                    "pods",
                    "-n",
                    NS,
                    "-l",
                    &format!("app={d}"),
                    "-o",
                    "jsonpath={.items[0].metadata.name}",
                ])
                .await
                .unwrap_or_default();
            if !name.trim().is_empty() {
                break name.trim().to_owned();
            }
            assert!(Instant::now() < deadline, "ReplicaSet {d} made no pod");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        plane.set_pod_ready(NS, &name, ip).await.unwrap();
        pods.insert(d, name);
    }
    plane
        .wait_for_ready_endpoints(NS, "books", &[ip])
        .await
        .unwrap();

    let options = ControllerOptions::kubeconfig(plane.kubeconfig_path())
        .args(&["--metrics-scrape-interval", SCRAPE]);
    let ctl = ControllerProcess::start_with(&sibling("weft-controller"), "24h", options)
        .await
        .unwrap();
    let tokens = tempfile::tempdir().unwrap();
    let token = |sa: &'static str| {
        let plane = &plane;
        let dir = tokens.path().to_owned();
        async move {
            let t = plane
                .request_token(NS, sa, &["identity.l5d.io"], None)
                .await
                .unwrap();
            let path = dir.join(sa);
            std::fs::write(&path, t).unwrap();
            path
        }
    };
    let backend = HttpBackend::start_with_delay(DELAY).await;
    backend.set_failure_percent(FAILURE_PERCENT);
    let proxy = sibling("weft-proxy");
    let _books = ctl
        .proxy_as(
            &proxy,
            &identity(NS, "books"),
            &token("books").await,
            &ctl.anchors(),
        )
        .env("WEFT_PROXY_INBOUND_FORWARD", backend.addr)
        .env("WEFT_PROXY_INBOUND_ADDR", books_addrs.inbound)
        .env("WEFT_PROXY_ADMIN_ADDR", books_addrs.admin)
        .env("WEFT_PROXY_WORKLOAD", workload("books", &pods["books"]))
        .spawn()
        .await
        .unwrap();
    let web = ctl
        .proxy_as(
            &proxy,
            &identity(NS, "web"),
            &token("web").await,
            &ctl.anchors(),
        )
        .env("WEFT_PROXY_DESTINATION_ADDR", ctl.destination_addr)
        .env("WEFT_PROXY_ADMIN_ADDR", web_addrs.admin)
        .env("WEFT_PROXY_WORKLOAD", workload("web", &pods["web"]))
        .spawn()
        .await
        .unwrap();
    let admin = ctl.admin_addr;

    let run = tokio::spawn(load(web.outbound, "/plain/", RPS, Duration::from_secs(12)));
    wait_for_books_traffic(admin, f64::from(RPS) * 0.5).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let stat = weft_json(admin, &["stat", "deploy", "-n", NS, "-t", WINDOW]);
    let all = weft_json(admin, &["stat", "deploy", "-A", "-t", WINDOW]);
    let sent = run.await.unwrap();
    eprintln!("load: {sent:?}\nstat: {stat:#?}");
    assert_golden_stat(&stat);
    assert!(
        all.iter()
            .any(|r| r["namespace"] == NS && r["name"] == "books"),
        "-A lists every namespace: {all:#?}"
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    let edge = loop {
        let edges = weft_json(admin, &["edges", "deploy", "-n", NS]);
        if let Some(e) = edges
            .iter()
            .find(|e| e["src"] == "web" && e["dst"] == "books")
        {
            break e.clone();
        }
        assert!(Instant::now() < deadline, "no web → books edge: {edges:#?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(edge["client_id"], identity(NS, "web"), "{edge}");
    assert_eq!(edge["server_id"], identity(NS, "books"), "{edge}");
    assert_eq!(edge["no_tls_reason"], "", "{edge}");
}
