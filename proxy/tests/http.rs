//! HTTP through real `weft-proxy` processes on loopback.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use std::net::SocketAddr;
use std::time::Duration;
use weft_test_support::backend::{HttpBackend, TcpServer};
use weft_test_support::client::{body_string, raw, send_h1, send_h2};
use weft_test_support::grpc;
use weft_test_support::metrics::sum;
use weft_test_support::proxy::{ProxyBuilder, ProxyProcess};

fn proxy() -> ProxyBuilder {
    ProxyBuilder::new(env!("CARGO_BIN_EXE_weft-proxy"))
}

async fn inbound_to(target: SocketAddr) -> ProxyProcess {
    proxy()
        .env("WEFT_PROXY_INBOUND_FORWARD", target)
        .spawn()
        .await
        .unwrap()
}

fn get(uri: &str) -> Request<Empty<Bytes>> {
    Request::get(uri).body(Empty::new()).unwrap()
}

#[tokio::test]
async fn http1_keepalive_is_pooled_and_counted() {
    let backend = HttpBackend::start().await;
    let proxy = inbound_to(backend.addr).await;

    // Five requests on one client connection.
    let io =
        hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(proxy.inbound).await.unwrap());
    let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    for _ in 0..5 {
        let req = Request::get("/")
            .header("host", "web.test:80")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let rsp = send.send_request(req).await.unwrap();
        assert_eq!(rsp.status(), 200);
        assert_eq!(rsp.headers()["x-version"], "HTTP/1.1");
        assert_eq!(rsp.headers()["x-host"], "web.test:80");
        assert_eq!(body_string(rsp).await.unwrap(), "hello\n");
    }
    assert_eq!(
        backend.connections(),
        1,
        "the proxy reuses its connection to the app"
    );

    let m = proxy.metrics().await;
    let inbound = [
        ("direction", "inbound"),
        ("authority", "web.test:80"),
        ("tls", "disabled"),
    ];
    assert_eq!(sum(&m, "request_total", &inbound), 5.0, "{m}");
    let ok = [
        ("direction", "inbound"),
        ("status_code", "200"),
        ("classification", "success"),
    ];
    assert_eq!(sum(&m, "response_total", &ok), 5.0, "{m}");
    assert_eq!(
        sum(&m, "response_latency_ms_count", &[("status_code", "200")]),
        5.0,
        "{m}"
    );
    assert_eq!(
        sum(
            &m,
            "tcp_open_total",
            &[("direction", "inbound"), ("peer", "src")]
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        sum(
            &m,
            "tcp_open_total",
            &[("direction", "inbound"), ("peer", "dst")]
        ),
        1.0,
        "{m}"
    );
    assert!(
        sum(
            &m,
            "tcp_read_bytes_total",
            &[("direction", "inbound"), ("peer", "src")]
        ) > 0.0
    );
}

#[tokio::test]
async fn outbound_routes_absolute_form_by_authority() {
    let a = HttpBackend::start().await;
    let b = HttpBackend::start().await;
    let proxy = proxy().spawn().await.unwrap();
    for backend in [&a, &b] {
        let rsp = send_h1(proxy.outbound, get(&format!("http://{}/", backend.addr)))
            .await
            .unwrap();
        assert_eq!(rsp.status(), 200);
        assert_eq!(rsp.headers()["x-host"], backend.addr.to_string().as_str());
    }
    // An origin-form request with a Host header works the same way.
    let req = Request::get("/")
        .header("host", a.addr.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(send_h1(proxy.outbound, req).await.unwrap().status(), 200);
    assert_eq!((a.requests(), b.requests()), (2, 1));
    let m = proxy.metrics().await;
    let auth = b.addr.to_string();
    assert_eq!(
        sum(
            &m,
            "request_total",
            &[("direction", "outbound"), ("authority", &auth)]
        ),
        1.0,
        "{m}"
    );
}

#[tokio::test]
async fn chunked_request_and_response_bodies_stream() {
    let backend = HttpBackend::start().await;
    let proxy = proxy().spawn().await.unwrap();
    let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = (0..50)
        .map(|i| Ok(Frame::data(Bytes::from(format!("chunk-{i};")))))
        .collect();
    let expected: String = (0..50).map(|i| format!("chunk-{i};")).collect();
    let req = Request::post(format!("http://{}/echo", backend.addr))
        .body(StreamBody::new(futures::stream::iter(chunks)))
        .unwrap();
    let rsp = send_h1(proxy.outbound, req).await.unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(body_string(rsp).await.unwrap(), expected);
}

#[tokio::test]
async fn http2_requests_stay_http2() {
    let backend = HttpBackend::start().await;
    let proxy = inbound_to(backend.addr).await;
    let rsp = send_h2(proxy.inbound, get(&format!("http://{}/", "api.test")))
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.headers()["x-version"], "HTTP/2.0");
    assert_eq!(rsp.headers()["x-host"], "api.test");
}

#[tokio::test]
async fn grpc_through_the_proxy_keeps_trailers_and_classifies_status() {
    use tonic_health::pb::health_check_response::ServingStatus;

    let grpc_addr = grpc::health_server().await.unwrap();
    let proxy = inbound_to(grpc_addr).await;
    let mut client = grpc::health_client(proxy.inbound, None).await.unwrap();
    let rsp = grpc::check(&mut client, grpc::SERVING).await.unwrap();
    assert_eq!(rsp.status, ServingStatus::Serving as i32);
    let err = grpc::check(&mut client, "missing").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    let m = proxy.metrics().await;
    let grpc = [("direction", "inbound"), ("status_code", "200")];
    assert_eq!(
        sum(
            &m,
            "response_total",
            &[grpc[0], grpc[1], ("classification", "success")]
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        sum(
            &m,
            "response_total",
            &[grpc[0], grpc[1], ("classification", "failure")]
        ),
        1.0,
        "{m}"
    );
}

#[tokio::test]
async fn grpc_to_a_dead_target_gets_unavailable() {
    let dead = weft_test_support::free_addr();
    let proxy = inbound_to(dead).await;
    let mut client = grpc::health_client(proxy.inbound, None).await.unwrap();
    let err = grpc::check(&mut client, "").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("connect to"), "{err:?}");
}

/// Two proxies: A's outbound knows B is meshed, B forwards to the app.
async fn meshed_pair(backend: SocketAddr) -> (ProxyProcess, ProxyProcess) {
    let b = inbound_to(backend).await;
    let a = proxy()
        .env("WEFT_PROXY_MESHED_TARGETS", b.inbound)
        .spawn()
        .await
        .unwrap();
    (a, b)
}

async fn concurrent_slow_requests(
    via: SocketAddr,
    to: SocketAddr,
    n: usize,
) -> Vec<http::Response<hyper::body::Incoming>> {
    let reqs = (0..n).map(|_| send_h1(via, get(&format!("http://{to}/slow/1000"))));
    futures::future::join_all(reqs)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
}

#[tokio::test]
async fn http1_is_carried_over_one_http2_connection_between_proxies() {
    let backend = HttpBackend::start().await;
    let (a, b) = meshed_pair(backend.addr).await;
    let rsps = concurrent_slow_requests(a.outbound, b.inbound, 10).await;
    assert!(rsps.iter().all(|r| r.status() == 200));

    let rsp = send_h1(a.outbound, get(&format!("http://{}/", b.inbound)))
        .await
        .unwrap();
    assert_eq!(rsp.version(), http::Version::HTTP_11);
    assert_eq!(
        rsp.headers()["x-version"],
        "HTTP/1.1",
        "the app sees HTTP/1.1"
    );
    assert_eq!(
        rsp.headers()["x-orig-proto"],
        "false",
        "the header is removed before the app"
    );
    assert!(
        !rsp.headers().contains_key("l5d-orig-proto"),
        "and before the client"
    );

    let m = b.metrics().await;
    assert_eq!(
        sum(
            &m,
            "tcp_open_total",
            &[("direction", "inbound"), ("peer", "src")]
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        sum(&m, "request_total", &[("direction", "inbound")]),
        11.0,
        "{m}"
    );

    // Contrast: without the meshed hint each concurrent request needs its
    // own HTTP/1 connection.
    let plain = proxy().spawn().await.unwrap();
    let c = inbound_to(backend.addr).await;
    concurrent_slow_requests(plain.outbound, c.inbound, 10).await;
    let m = c.metrics().await;
    assert_eq!(
        sum(
            &m,
            "tcp_open_total",
            &[("direction", "inbound"), ("peer", "src")]
        ),
        10.0,
        "{m}"
    );
}

#[tokio::test]
async fn websocket_upgrade_passes_through_two_proxies() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        ws.send(msg).await.unwrap();
                    }
                }
            });
        }
    });

    let (a, b) = meshed_pair(ws_addr).await;
    // The client talks to A's outbound as if it were B (what iptables would
    // arrange); the request line names B so A can route it.
    let stream = tokio::net::TcpStream::connect(a.outbound).await.unwrap();
    let url = format!("ws://{}/chat", b.inbound);
    let (mut ws, rsp) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    assert_eq!(rsp.status(), 101);
    for i in 0..3 {
        ws.send(Message::text(format!("ping {i}"))).await.unwrap();
        let echo = ws.next().await.unwrap().unwrap();
        assert_eq!(echo.into_text().unwrap().as_str(), format!("ping {i}"));
    }
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn large_bodies_stream_without_buffering() {
    const SIZE: u64 = 256 * 1024 * 1024;
    let backend = HttpBackend::start().await;
    let proxy = proxy().spawn().await.unwrap();

    // Upload: 256 MiB generated on the fly.
    let chunk = Bytes::from(vec![7u8; 256 * 1024]);
    let chunks = (0..(SIZE / chunk.len() as u64))
        .map(move |_| Ok::<_, std::convert::Infallible>(Frame::data(chunk.clone())));
    let req = Request::post(format!("http://{}/count", backend.addr))
        .body(StreamBody::new(futures::stream::iter(chunks)))
        .unwrap();
    let rsp = send_h1(proxy.outbound, req).await.unwrap();
    assert_eq!(body_string(rsp).await.unwrap(), SIZE.to_string());

    // Download: counted frame by frame, never collected.
    let rsp = send_h1(
        proxy.outbound,
        get(&format!("http://{}/bytes/{SIZE}", backend.addr)),
    )
    .await
    .unwrap();
    let mut body = rsp.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        n += frame.unwrap().data_ref().map_or(0, |d| d.len() as u64);
    }
    assert_eq!(n, SIZE);

    let rss = proxy.peak_rss_kib().unwrap();
    assert!(
        rss < 64 * 1024,
        "proxy peak RSS {rss} KiB: bodies were buffered"
    );
}

#[tokio::test]
async fn many_concurrent_clients() {
    let backend = HttpBackend::start().await;
    let (a, b) = meshed_pair(backend.addr).await;
    let clients = (0..40).map(|_| async {
        let mut ok = 0;
        for _ in 0..10 {
            let rsp = send_h1(a.outbound, get(&format!("http://{}/", b.inbound)))
                .await
                .unwrap();
            ok += (rsp.status() == 200) as usize;
            body_string(rsp).await.unwrap();
        }
        ok
    });
    let ok: usize = futures::future::join_all(clients).await.into_iter().sum();
    assert_eq!(ok, 400);
    let m = a.metrics().await;
    assert_eq!(
        sum(
            &m,
            "response_total",
            &[("direction", "outbound"), ("classification", "success")]
        ),
        400.0
    );
}

#[tokio::test]
async fn unreachable_target_is_a_502_with_a_reason() {
    let dead = weft_test_support::free_addr();
    let proxy = inbound_to(dead).await;
    let rsp = send_h1(proxy.inbound, get("/")).await.unwrap();
    assert_eq!(rsp.status(), 502);
    let reason = rsp.headers()["l5d-proxy-error"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(reason.contains(&dead.to_string()), "{reason}");

    let rsp = send_h1(proxy.outbound, get(&format!("http://{dead}/")))
        .await
        .unwrap();
    assert_eq!(rsp.status(), 502);

    let m = proxy.metrics().await;
    let failed = [("status_code", "502"), ("classification", "failure")];
    assert_eq!(sum(&m, "response_total", &failed), 2.0, "{m}");
}

#[tokio::test]
async fn malformed_requests_get_400_and_the_proxy_survives() {
    let backend = HttpBackend::start().await;
    let proxy = inbound_to(backend.addr).await;
    let t = Duration::from_secs(5);

    let bad_header = raw(
        proxy.inbound,
        b"GET / HTTP/1.1\r\nHost: a\r\nno colon here\r\n\r\n",
        t,
    )
    .await
    .unwrap();
    assert!(
        bad_header.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&bad_header)
    );

    // Outbound, not redirected, no authority: nowhere to send it.
    let no_target = raw(proxy.outbound, b"GET / HTTP/1.0\r\n\r\n", t)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&no_target);
    assert!(text.starts_with("HTTP/1.0 400"), "{text}");
    assert!(
        text.to_lowercase()
            .contains("l5d-proxy-error: request has no authority"),
        "{text}"
    );

    // A loop back into the proxy's own listener is refused.
    let rsp = send_h1(proxy.outbound, get(&format!("http://{}/", proxy.outbound)))
        .await
        .unwrap();
    assert_eq!(rsp.status(), 502);
    assert!(rsp.headers()["l5d-proxy-error"]
        .to_str()
        .unwrap()
        .contains("loop"));

    // Still serving.
    let rsp = send_h1(
        proxy.inbound,
        Request::get("/")
            .header("host", "x")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(backend.requests(), 1, "nothing malformed reached the app");
}

#[tokio::test]
async fn connect_tunnels_for_https_proxy_clients() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let echo = TcpServer::echo().await;
    let proxy = proxy().spawn().await.unwrap();
    let mut s = tokio::net::TcpStream::connect(proxy.outbound)
        .await
        .unwrap();
    s.write_all(format!("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\n", echo.addr).as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let t = Duration::from_secs(5);
    let n = tokio::time::timeout(t, s.read(&mut buf))
        .await
        .expect("CONNECT response")
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    let payload = b"\x16\x03\x01 not really tls";
    s.write_all(payload).await.unwrap();
    let mut echoed = vec![0u8; payload.len()];
    tokio::time::timeout(t, s.read_exact(&mut echoed))
        .await
        .expect("echo through the tunnel")
        .unwrap();
    assert_eq!(&echoed, payload);
}

/// A request body that breaks off mid-stream (a malformed chunk) is the
/// client's error: `400` with the reason, not a `502` blaming the app.
#[tokio::test]
async fn a_malformed_request_body_is_the_clients_error() {
    let backend = HttpBackend::start().await;
    let proxy = inbound_to(backend.addr).await;
    let rsp = raw(
        proxy.inbound,
        b"POST /count HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\nZZ\r\n",
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&rsp);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(
        text.to_lowercase()
            .contains("l5d-proxy-error: invalid request body"),
        "{text}"
    );
}
