//! Requests addressed to a pod IP rather than a service name: the proxy
//! asks the controller about the address, and a meshed pod gets mTLS to
//! its identity; an address the controller does not know is forwarded as
//! it is.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use weft_test_support::backend::HttpBackend;
use weft_test_support::client::send_h1;
use weft_test_support::controller::{identity, ControllerProcess};
use weft_test_support::metrics::sum;

fn proxy_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_weft-proxy"))
}

fn controller_bin() -> PathBuf {
    proxy_bin().with_file_name("weft-controller")
}

/// A free port on `ip` (any 127/8 address works on Linux loopback).
fn free_on(ip: [u8; 4]) -> SocketAddr {
    let l = std::net::TcpListener::bind(SocketAddr::from((ip, 0))).unwrap();
    l.local_addr().unwrap()
}

#[tokio::test]
async fn meshed_pod_addresses_get_mtls_and_unknown_ones_pass_through() {
    let config = tempfile::tempdir().unwrap();
    // Pod db-0 has its own loopback address, so it alone answers there.
    let pod_ip = [127, 0, 0, 23];
    std::fs::write(
        config.path().join("db.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: db-0\n  namespace: shop\n  annotations: {linkerd.io/inject: enabled}\nspec:\n  serviceAccountName: db\n  containers: [{name: db, image: db}]\nstatus: {phase: Running, podIP: 127.0.0.23}\n",
    )
    .unwrap();
    let ctl = ControllerProcess::start_with_config(&controller_bin(), "24h", config.path())
        .await
        .unwrap();
    let app = HttpBackend::start().await;
    let inbound = free_on(pod_ip);
    let _db = ctl
        .proxy(proxy_bin(), "shop", "db")
        .unwrap()
        .env("WEFT_PROXY_INBOUND_ADDR", inbound)
        .env("WEFT_PROXY_INBOUND_FORWARD", app.addr)
        .spawn()
        .await
        .unwrap();
    let web = ctl
        .proxy(proxy_bin(), "shop", "web")
        .unwrap()
        .env("WEFT_PROXY_DESTINATION_ADDR", ctl.destination_addr)
        .spawn()
        .await
        .unwrap();

    for _ in 0..3 {
        let req = Request::get(format!("http://{inbound}/"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let rsp = send_h1(web.outbound, req).await.unwrap();
        assert_eq!(rsp.status(), 200);
    }
    // An address that is no pod: forwarded directly, in plaintext.
    let other = HttpBackend::start().await;
    let req = Request::get(format!("http://{}/", other.addr))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let rsp = send_h1(web.outbound, req).await.unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(other.requests(), 1);

    let m = web.metrics().await;
    let db_id = identity("shop", "db");
    let secured = [
        ("direction", "outbound"),
        ("tls", "true"),
        ("server_id", db_id.as_str()),
        ("dst_pod", "db-0"),
    ];
    assert_eq!(sum(&m, "response_total", &secured), 3.0, "{m}");
    assert_eq!(app.requests(), 3);
    // The unknown address was not secured (and has no dst_* labels).
    let plain = [("direction", "outbound"), ("tls", "no_identity")];
    assert_eq!(sum(&m, "response_total", &plain), 1.0, "{m}");
}
