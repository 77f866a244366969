//! The live request feed (`GET /live-requests` on the admin server) of
//! real `weft-proxy` processes: what each event says, the last line's
//! counts, the limits, and that nothing is recorded while nobody watches.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};
use tokio::net::TcpStream;
use weft_test_support::backend::HttpBackend;
use weft_test_support::client::{body_string, send_h1, send_h2};
use weft_test_support::controller::identity;
use weft_test_support::proxy::{ProxyBuilder, ProxyProcess};
use weft_test_support::scenario::{self, request, Discovery, FileDiscovery, API, NS};
use weft_test_support::{controller_bin, proxy_bin};

fn proxy() -> ProxyBuilder {
    ProxyBuilder::new(proxy_bin!())
}

async fn inbound_to(target: SocketAddr) -> ProxyProcess {
    proxy()
        .env("WEFT_PROXY_INBOUND_FORWARD", target)
        .spawn()
        .await
        .unwrap()
}

/// `GET /live-requests?query` on the admin server; returns once the
/// response head arrived (so the proxy is already recording).
async fn live_requests(proxy: &ProxyProcess, query: &str) -> http::Response<Incoming> {
    let req = Request::get(format!("/live-requests?{query}"))
        .header("host", proxy.admin.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), send_h1(proxy.admin, req))
        .await
        .expect("the admin server answers within 10s")
        .unwrap()
}

/// Subscribes and checks the response is a feed.
async fn subscribe(proxy: &ProxyProcess, query: &str) -> http::Response<Incoming> {
    let rsp = live_requests(proxy, query).await;
    assert_eq!(rsp.status(), 200, "{query}");
    assert_eq!(rsp.headers()["content-type"], "application/x-ndjson");
    rsp
}

/// Reads a feed to its end (bounded by the longest duration and then
/// some): the events, and the last line.
async fn collect(feed: http::Response<Incoming>) -> (Vec<Value>, Value) {
    let body = tokio::time::timeout(Duration::from_secs(45), feed.into_body().collect())
        .await
        .expect("the feed ends after its duration")
        .unwrap()
        .to_bytes();
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(text.ends_with('\n'), "{text}");
    let mut lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let end = lines.pop().expect("a last line");
    assert_eq!(end["end"], true, "{text}");
    assert!(lines.iter().all(|l| l.get("end").is_none()), "{text}");
    (lines, end)
}

fn counts(end: &Value) -> (u64, u64, u64) {
    let n = |k: &str| end[k].as_u64().unwrap_or_else(|| panic!("{k} in {end}"));
    (n("events"), n("dropped"), n("sampled_out"))
}

fn get(uri: &str, host: &str) -> Request<Empty<Bytes>> {
    Request::get(uri)
        .header("host", host)
        .body(Empty::new())
        .unwrap()
}

/// The event with this path (exactly one).
fn event<'a>(events: &'a [Value], path: &str) -> &'a Value {
    let found: Vec<&Value> = events.iter().filter(|e| e["path"] == path).collect();
    assert_eq!(found.len(), 1, "one event for {path} in {events:#?}");
    found[0]
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test]
async fn live_requests_stream_inbound_responses_and_nothing_from_before() {
    let backend = HttpBackend::start().await;
    let proxy = inbound_to(backend.addr).await;
    let host = "books.demo.svc.cluster.local:8080";

    // Before anyone watches: served and counted, but never in a feed.
    for i in 0..3 {
        let rsp = send_h1(proxy.inbound, get(&format!("/before/{i}"), host))
            .await
            .unwrap();
        assert_eq!(rsp.status(), 200);
        body_string(rsp).await.unwrap();
    }

    let feed = subscribe(&proxy, "duration=3").await;
    let started = now_unix();
    // One client connection, so its address is the events' client_addr.
    let stream = TcpStream::connect(proxy.inbound).await.unwrap();
    let client_addr = stream.local_addr().unwrap().to_string();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for (method, uri, status) in [
        ("GET", "/books/7?secret=token", 200),
        ("GET", "/status/500?q=1", 500),
        ("POST", "/status/201", 201),
    ] {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", host)
            .body(Empty::<Bytes>::new())
            .unwrap();
        send.ready().await.unwrap();
        let rsp = send.send_request(req).await.unwrap();
        assert_eq!(rsp.status(), status, "{uri}");
        body_string(rsp).await.unwrap();
    }

    let (events, end) = collect(feed).await;
    assert_eq!(counts(&end), (3, 0, 0), "{end}");
    assert_eq!(events.len(), 3, "{events:#?}");
    assert!(
        events
            .iter()
            .all(|e| !e["path"].as_str().unwrap().starts_with("/before")),
        "requests served before subscribing are never reported: {events:#?}"
    );
    for e in &events {
        assert_eq!(e["direction"], "inbound", "{e}");
        assert_eq!(e["client_addr"], client_addr.as_str(), "{e}");
        assert_eq!(e["client_id"], Value::Null, "{e}");
        assert_eq!(e["server_id"], Value::Null, "{e}");
        assert_eq!(e["authority"], host, "{e}");
        assert_eq!(e["dst"], json!({}), "{e}");
        assert!(e["latency_ms"].as_f64().unwrap() > 0.0, "{e}");
        let ts = e["ts_unix"].as_f64().unwrap();
        assert!(ts >= started - 1.0 && ts <= now_unix() + 1.0, "{e}");
        assert!(!e.to_string().contains("secret"), "no query string: {e}");
    }
    let ok = event(&events, "/books/7");
    assert_eq!(
        (&ok["method"], &ok["status"], &ok["success"]),
        (&json!("GET"), &json!(200), &json!(true))
    );
    let failed = event(&events, "/status/500");
    assert_eq!(
        (&failed["method"], &failed["status"], &failed["success"]),
        (&json!("GET"), &json!(500), &json!(false))
    );
    let created = event(&events, "/status/201");
    assert_eq!(
        (&created["method"], &created["status"], &created["success"]),
        (&json!("POST"), &json!(201), &json!(true))
    );
}

#[tokio::test]
async fn live_requests_stream_outbound_responses_over_http1_and_http2() {
    let backend = HttpBackend::start().await;
    let proxy = proxy().spawn().await.unwrap();
    let authority = backend.addr.to_string();

    let feed = subscribe(&proxy, "duration=3&sample=1&max_rps=1000").await;
    let uri = |path: &str| format!("http://{authority}{path}");
    let rsp = send_h1(proxy.outbound, get(&uri("/status/503?x=1"), &authority))
        .await
        .unwrap();
    assert_eq!(rsp.status(), 503);
    body_string(rsp).await.unwrap();
    let rsp = send_h1(proxy.outbound, get(&uri("/authors/1"), &authority))
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    body_string(rsp).await.unwrap();
    let h2 = Request::get(uri("/h2/path?y=2"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let rsp = send_h2(proxy.outbound, h2).await.unwrap();
    assert_eq!(rsp.status(), 200);
    body_string(rsp).await.unwrap();

    let (events, end) = collect(feed).await;
    assert_eq!(counts(&end), (3, 0, 0), "{end}");
    for e in &events {
        assert_eq!(e["direction"], "outbound", "{e}");
        assert_eq!(e["client_addr"], Value::Null, "{e}");
        assert_eq!(e["authority"], authority.as_str(), "{e}");
        assert_eq!(e["dst"], json!({}), "not discovered: {e}");
        assert_eq!(e["server_id"], Value::Null, "{e}");
    }
    let failed = event(&events, "/status/503");
    assert_eq!(
        (&failed["status"], &failed["success"]),
        (&json!(503), &json!(false))
    );
    assert_eq!(event(&events, "/authors/1")["success"], true);
    assert_eq!(event(&events, "/h2/path")["method"], "GET");
}

#[tokio::test]
async fn live_requests_take_four_subscribers_and_free_their_places() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = HttpBackend::start().await;
    let proxy = inbound_to(backend.addr).await;

    // Three subscribers, and a fourth on a raw connection.
    let mut feeds = Vec::new();
    for _ in 0..3 {
        feeds.push(subscribe(&proxy, "duration=2").await);
    }
    let mut raw = TcpStream::connect(proxy.admin).await.unwrap();
    raw.write_all(b"GET /live-requests?duration=30 HTTP/1.1\r\nhost: admin\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(10), raw.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&head));
        head.extend_from_slice(&buf[..n]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );

    let fifth = live_requests(&proxy, "duration=1").await;
    assert_eq!(fifth.status(), 503);
    let msg = body_string(fifth).await.unwrap();
    assert!(msg.contains("4 live-requests subscribers"), "{msg}");

    // A subscriber that goes away frees its place (long before its 30 s).
    drop(raw);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rsp = live_requests(&proxy, "duration=1").await;
        if rsp.status() == 200 {
            feeds.push(rsp);
            break;
        }
        assert_eq!(rsp.status(), 503);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place is still taken"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for feed in feeds {
        collect(feed).await;
    }

    // The four have ended: a new subscriber gets in. With sample=0 it is
    // told what it missed.
    let feed = subscribe(&proxy, "duration=2&sample=0").await;
    for _ in 0..5 {
        let rsp = send_h1(proxy.inbound, get("/", "web:80")).await.unwrap();
        body_string(rsp).await.unwrap();
    }
    let (events, end) = collect(feed).await;
    assert!(events.is_empty(), "{events:#?}");
    assert_eq!(counts(&end), (0, 0, 5), "{end}");
}

#[tokio::test]
async fn live_requests_refuse_bad_parameters_with_a_reason() {
    let proxy = proxy().spawn().await.unwrap();
    for (query, names) in [
        ("duration=abc", "duration"),
        ("duration=0", "duration"),
        ("duration=-1", "duration"),
        ("sample=1.5", "sample"),
        ("sample=x", "sample"),
        ("max_rps=0", "max_rps"),
        ("max_rps=ten", "max_rps"),
        ("maxrps=10", "unknown parameter \"maxrps\""),
        ("duration=1&duration=2", "duration is given more than once"),
    ] {
        let rsp = live_requests(&proxy, query).await;
        assert_eq!(rsp.status(), 400, "{query}");
        let msg = body_string(rsp).await.unwrap();
        assert!(msg.contains(names), "{query}: {msg}");
    }
    let req = Request::post("/live-requests")
        .header("host", proxy.admin.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(send_h1(proxy.admin, req).await.unwrap().status(), 405);
    // None of those took a place.
    let feed = subscribe(&proxy, "duration=0.2").await;
    let (_, end) = collect(feed).await;
    assert_eq!(counts(&end), (0, 0, 0));
}

#[tokio::test]
async fn live_requests_max_rps_caps_the_events() {
    let backend = HttpBackend::start().await;
    let proxy = inbound_to(backend.addr).await;
    let feed = subscribe(&proxy, "duration=3&max_rps=5").await;

    let stream = TcpStream::connect(proxy.inbound).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let sent = 60;
    for i in 0..sent {
        send.ready().await.unwrap();
        let rsp = send
            .send_request(get(&format!("/r/{i}"), "web:80"))
            .await
            .unwrap();
        body_string(rsp).await.unwrap();
    }

    let (events, end) = collect(feed).await;
    let (n, dropped, sampled_out) = counts(&end);
    assert_eq!(n as usize, events.len());
    // A burst of one second's worth, then 5 a second: at most 5 × (3 + 1).
    assert!((5..=20).contains(&n), "{end}");
    assert_eq!((n + dropped, sampled_out), (sent, 0), "{end}");
}

#[tokio::test]
async fn live_requests_connection_of_a_reader_that_stalls_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = HttpBackend::start().await;
    let proxy = inbound_to(backend.addr).await;

    // A subscriber that never reads, with a small receive buffer.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(proxy.admin).await.unwrap();
    stalled
        .write_all(b"GET /live-requests?duration=5&max_rps=1000 HTTP/1.1\r\nhost: admin\r\n\r\n")
        .await
        .unwrap();
    // Wait until it is subscribed: the feed then counts it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !proxy.log().contains("live-requests subscriber connected") {
        assert!(tokio::time::Instant::now() < deadline, "{}", proxy.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Events of 8 KiB paths (the most an event keeps), far more than
    // the socket buffers hold (the kernel's send buffer grows to 4 MiB at
    // most), sent well within the duration.
    let long_path = format!("/{}", "p".repeat(8 * 1024 - 1));
    let stream = TcpStream::connect(proxy.inbound).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for _ in 0..1000 {
        send.ready().await.unwrap();
        let rsp = send.send_request(get(&long_path, "web:80")).await.unwrap();
        body_string(rsp).await.unwrap();
    }

    // The body cannot end while nobody reads it: the admin server closes
    // the connection CLOSE_GRACE (5 s) after the duration.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !proxy
        .log()
        .contains("closing a live-requests connection past its duration")
    {
        assert!(tokio::time::Instant::now() < deadline, "not closed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the connection ended");
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "{}",
        &text[..text.len().min(200)]
    );
    assert!(!text.contains("\"end\":true"), "it was cut, not finished");
    // Its place is free again.
    let feed = subscribe(&proxy, "duration=0.2").await;
    collect(feed).await;
}

#[tokio::test]
async fn live_requests_of_a_meshed_call_name_both_identities_and_the_destination() {
    let mut d = FileDiscovery::start(&controller_bin!(), Some("api"), &["api"])
        .await
        .unwrap();
    let backend = HttpBackend::start().await;
    let pod = d
        .ctl()
        .pod_proxy(proxy_bin!(), NS, "api", backend.addr)
        .unwrap()
        .spawn()
        .await
        .unwrap();
    let web = d
        .ctl()
        .client_proxy(proxy_bin!(), NS, "web")
        .unwrap()
        .spawn()
        .await
        .unwrap();
    d.set_endpoints("api", &[pod.inbound]).await.unwrap();
    scenario::wait_for("api answers through web's proxy", || async {
        Ok(request(&web, API).await?.status() == 200)
    })
    .await
    .unwrap();

    let (client_feed, server_feed) = (
        subscribe(&web, "duration=3").await,
        subscribe(&pod, "duration=3").await,
    );
    for _ in 0..2 {
        let rsp = request(&web, &format!("{API}items/1?k=v")).await.unwrap();
        assert_eq!(rsp.status(), 200);
        body_string(rsp).await.unwrap();
    }
    let ((client, client_end), (server, server_end)) =
        tokio::join!(collect(client_feed), collect(server_feed));
    assert_eq!(counts(&client_end), (2, 0, 0), "{client:#?}");
    assert_eq!(counts(&server_end), (2, 0, 0), "{server:#?}");

    let pod_name = format!("api-{}", pod.inbound.port());
    for e in &client {
        assert_eq!(e["direction"], "outbound", "{e}");
        assert_eq!(
            (&e["method"], &e["path"]),
            (&json!("GET"), &json!("/items/1"))
        );
        assert_eq!(e["authority"], "api.shop.svc.cluster.local", "{e}");
        assert_eq!(e["server_id"], identity(NS, "api").as_str(), "{e}");
        assert_eq!(e["client_id"], Value::Null, "{e}");
        assert_eq!(e["dst"]["namespace"], NS, "{e}");
        assert_eq!(e["dst"]["service"], "api", "{e}");
        assert_eq!(e["dst"]["serviceaccount"], "api", "{e}");
        assert_eq!(e["dst"]["pod"], pod_name.as_str(), "{e}");
        assert!(e["dst"].get("dst_pod").is_none(), "{e}");
    }
    for e in &server {
        assert_eq!(e["direction"], "inbound", "{e}");
        assert_eq!(
            (&e["method"], &e["path"]),
            (&json!("GET"), &json!("/items/1"))
        );
        assert_eq!(e["client_id"], identity(NS, "web").as_str(), "{e}");
        assert_eq!(e["server_id"], Value::Null, "{e}");
        let peer: SocketAddr = e["client_addr"].as_str().unwrap().parse().unwrap();
        assert!(peer.ip().is_loopback(), "the client proxy's address: {e}");
        assert_eq!(e["dst"], json!({}), "{e}");
    }
}
