//! Start-up, admin endpoints, idle reaping and graceful shutdown.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use std::time::{Duration, Instant};
use weft_test_support::backend::HttpBackend;
use weft_test_support::client::{get, send_h1};
use weft_test_support::metrics::sum;
use weft_test_support::proxy::ProxyBuilder;

fn proxy() -> ProxyBuilder {
    ProxyBuilder::new(env!("CARGO_BIN_EXE_weft-proxy"))
}

#[tokio::test]
async fn admin_endpoints() {
    let proxy = proxy().spawn().await.unwrap();
    let (status, body) = get(proxy.admin, "/ready").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("identity: disabled"), "{body}");
    assert_eq!(get(proxy.admin, "/live").await.unwrap().0, 200);
    assert_eq!(get(proxy.admin, "/nope").await.unwrap().0, 404);
    assert_eq!(
        get(proxy.admin, "/shutdown").await.unwrap().0,
        405,
        "GET must not shut down"
    );
    // The admin requests above are not proxied traffic: no HTTP series yet,
    // but the exposition is complete.
    let (status, metrics) = get(proxy.admin, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(!metrics.contains("request_total{"), "{metrics}");
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
}

#[tokio::test]
async fn bad_configuration_exits_with_a_clear_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft-proxy"))
        .env("WEFT_PROXY_OPAQUE_PORTS", "25,smtp")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("WEFT_PROXY_OPAQUE_PORTS"), "{stderr}");

    let help = std::process::Command::new(env!("CARGO_BIN_EXE_weft-proxy"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("WEFT_PROXY_INBOUND_FORWARD"));
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits() {
    let backend = HttpBackend::start().await;
    let mut proxy = proxy()
        .env("WEFT_PROXY_INBOUND_FORWARD", backend.addr)
        .env("WEFT_PROXY_SHUTDOWN_GRACE_PERIOD", "20s")
        .spawn()
        .await
        .unwrap();
    let inbound = proxy.inbound;
    let in_flight = tokio::spawn(async move {
        let req = Request::get("/slow/1500")
            .header("host", "x")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let rsp = send_h1(inbound, req).await.unwrap();
        weft_test_support::client::body_string(rsp)
            .await
            .map(|_| ())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    proxy.terminate();

    // New connections are refused once the listener is closed.
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(inbound).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "inbound listener still accepting after SIGTERM");

    in_flight
        .await
        .unwrap()
        .expect("the in-flight request completes");
    let status = proxy
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("proxy exits after draining");
    assert!(status.success(), "{status}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn post_shutdown_from_loopback_stops_the_proxy() {
    let mut proxy = proxy().spawn().await.unwrap();
    let req = Request::post("/shutdown")
        .header("host", "admin")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let rsp = send_h1(proxy.admin, req).await.unwrap();
    assert_eq!(rsp.status(), 200);
    let status = proxy
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits");
    assert!(status.success());
}

#[tokio::test]
async fn idle_http_connections_are_closed() {
    let backend = HttpBackend::start().await;
    let proxy = proxy()
        .env("WEFT_PROXY_INBOUND_FORWARD", backend.addr)
        .env("WEFT_PROXY_IDLE_TIMEOUT", "500ms")
        .spawn()
        .await
        .unwrap();
    // An HTTP/2 client connection that does one request and then idles.
    let io =
        hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(proxy.inbound).await.unwrap());
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let rsp = send
        .send_request(
            Request::get("http://x/")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    drop(rsp);
    tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("the proxy closes the idle connection")
        .unwrap()
        .unwrap();
    let m = proxy.metrics().await;
    assert_eq!(
        sum(
            &m,
            "tcp_open_connections",
            &[("direction", "inbound"), ("peer", "src")]
        ),
        0.0,
        "{m}"
    );
}
