//! Opaque TCP through real `weft-proxy` processes on loopback.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_test_support::backend::TcpServer;
use weft_test_support::metrics::sum;
use weft_test_support::proxy::ProxyBuilder;

fn proxy() -> ProxyBuilder {
    ProxyBuilder::new(env!("CARGO_BIN_EXE_weft-proxy"))
}

#[tokio::test]
async fn non_http_bytes_are_forwarded_opaquely() {
    let echo = TcpServer::echo().await;
    let proxy = proxy()
        .env("WEFT_PROXY_INBOUND_FORWARD", echo.addr)
        .spawn()
        .await
        .unwrap();
    let mut s = TcpStream::connect(proxy.inbound).await.unwrap();
    // A Postgres-style binary startup packet: clearly not HTTP.
    let msg = b"\x00\x00\x00\x08\x04\xd2\x16\x2fhello";
    s.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, msg);
    drop(s);

    tokio::time::sleep(Duration::from_millis(200)).await;
    let m = proxy.metrics().await;
    let src = [("direction", "inbound"), ("peer", "src")];
    assert_eq!(
        sum(&m, "tcp_read_bytes_total", &src),
        msg.len() as f64,
        "{m}"
    );
    assert_eq!(
        sum(&m, "tcp_write_bytes_total", &src),
        msg.len() as f64,
        "{m}"
    );
    assert_eq!(sum(&m, "tcp_close_total", &src), 1.0, "{m}");
    assert_eq!(sum(&m, "tcp_open_connections", &src), 0.0, "{m}");
    assert_eq!(sum(&m, "request_total", &[]), 0.0, "not counted as HTTP");
}

#[tokio::test]
async fn server_speaks_first_on_an_opaque_port_without_waiting() {
    let server = TcpServer::server_first(b"220 mail.test ESMTP ready\r\n").await;
    // A detect timeout far longer than the test's patience: the banner can
    // only arrive in time if detection is skipped.
    let proxy = proxy()
        .env("WEFT_PROXY_INBOUND_FORWARD", server.addr)
        .env("WEFT_PROXY_OPAQUE_PORTS", server.addr.port())
        .env("WEFT_PROXY_DETECT_TIMEOUT", "60s")
        .spawn()
        .await
        .unwrap();
    let mut s = TcpStream::connect(proxy.inbound).await.unwrap();
    let mut banner = vec![0u8; 27];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut banner))
        .await
        .expect("banner should arrive without client bytes")
        .unwrap();
    assert_eq!(&banner, b"220 mail.test ESMTP ready\r\n");
}

#[tokio::test]
async fn server_speaks_first_elsewhere_after_the_detect_timeout() {
    let server = TcpServer::server_first(b"* OK imap ready\r\n").await;
    let proxy = proxy()
        .env("WEFT_PROXY_INBOUND_FORWARD", server.addr)
        .env("WEFT_PROXY_DETECT_TIMEOUT", "300ms")
        .spawn()
        .await
        .unwrap();
    let mut s = TcpStream::connect(proxy.inbound).await.unwrap();
    let mut banner = vec![0u8; 17];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut banner))
        .await
        .expect("banner after the detect timeout")
        .unwrap();
    assert_eq!(&banner, b"* OK imap ready\r\n");
    // And the connection still works both ways.
    s.write_all(b"a1 NOOP\r\n").await.unwrap();
    let mut echo = vec![0u8; 9];
    s.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"a1 NOOP\r\n");
}

#[tokio::test]
async fn unreachable_tcp_target_resets_the_client() {
    let dead = weft_test_support::free_addr();
    let proxy = proxy()
        .env("WEFT_PROXY_INBOUND_FORWARD", dead)
        .spawn()
        .await
        .unwrap();
    let mut s = TcpStream::connect(proxy.inbound).await.unwrap();
    s.write_all(b"\x00\x01binary").await.unwrap();
    let mut buf = [0u8; 16];
    let res = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap();
    match res {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        Ok(n) => panic!("expected a reset, read {n} bytes"),
    }
}

#[tokio::test]
async fn outbound_opaque_without_a_destination_is_refused() {
    let proxy = proxy().spawn().await.unwrap();
    let mut s = TcpStream::connect(proxy.outbound).await.unwrap();
    s.write_all(b"\x00\x01binary").await.unwrap();
    let mut buf = [0u8; 16];
    let res = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(res, Err(_) | Ok(0)), "{res:?}");
    assert!(
        proxy.log().contains("no original destination"),
        "{}",
        proxy.log()
    );
}
