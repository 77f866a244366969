//! Requests addressed to a pod IP rather than a service name: the proxy
//! asks the controller about the address, and a meshed pod gets mTLS to
//! its identity; an address the controller does not know is forwarded as
//! it is.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::net::SocketAddr;
use weft_test_support::backend::HttpBackend;
use weft_test_support::client::get_through;
use weft_test_support::controller::{identity, ControllerProcess};
use weft_test_support::metrics::sum;
use weft_test_support::scenario::{meshed_pod_yaml, write_atomic};
use weft_test_support::{controller_bin, proxy_bin};

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
    let pod = meshed_pod_yaml("db-0", "db", Some(pod_ip.into()));
    write_atomic(config.path(), "db.yaml", &pod).unwrap();
    let ctl = ControllerProcess::start_with_config(&controller_bin!(), "24h", config.path())
        .await
        .unwrap();
    let app = HttpBackend::start().await;
    let inbound = free_on(pod_ip);
    let _db = ctl
        .pod_proxy(proxy_bin!(), "shop", "db", app.addr)
        .unwrap()
        .env("WEFT_PROXY_INBOUND_ADDR", inbound)
        .spawn()
        .await
        .unwrap();
    let web = ctl
        .client_proxy(proxy_bin!(), "shop", "web")
        .unwrap()
        .spawn()
        .await
        .unwrap();

    for _ in 0..3 {
        let (status, _) = get_through(web.outbound, &format!("http://{inbound}/"))
            .await
            .unwrap();
        assert_eq!(status, 200);
    }
    // An address that is no pod: forwarded directly, in plaintext.
    let other = HttpBackend::start().await;
    let (status, _) = get_through(web.outbound, &format!("http://{}/", other.addr))
        .await
        .unwrap();
    assert_eq!(status, 200);
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
