//! The modes over real sockets on 127.0.0.1: in-process where a test only
//! needs the protocol, and through the built binary for exit codes and
//! signals.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use weft_test_app::signal::Terminate;
use weft_test_app::{banner, client, server, web};

/// How long a test waits for something that should take milliseconds.
const PATIENCE: Duration = Duration::from_secs(10);

async fn local_listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

/// A port nothing listens on (bound, then closed).
async fn closed_port() -> SocketAddr {
    let (l, a) = local_listener().await;
    drop(l);
    a
}

/// One HTTP/1.1 request on a fresh connection: status, body and the local
/// address the connection came from. `Err` when it cannot connect.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
) -> std::io::Result<(u16, String, SocketAddr)> {
    let mut s = TcpStream::connect(addr).await?;
    let local = s.local_addr()?;
    s.write_all(format!("{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned(), local))
}

async fn get_json(addr: SocketAddr, path: &str) -> (u16, Value) {
    let (status, body, _) = request(addr, "GET", path).await.unwrap();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Starts `server` in-process; the sender terminates it.
async fn start_server(
    version: &str,
    upstream: Option<SocketAddr>,
) -> (SocketAddr, mpsc::Sender<()>) {
    let (listener, addr) = local_listener().await;
    let config = server::ServerConfig {
        pod: format!("pod-{version}"),
        version: version.to_owned(),
        upstream: upstream.map(|u| web::parse_url(&format!("http://{u}/")).unwrap()),
        drain: Duration::ZERO,
    };
    let (tx, terminate) = Terminate::channel();
    tokio::spawn(server::run(listener, config, terminate));
    (addr, tx)
}

/// Starts `client` in-process against `target`; returns its stats address.
async fn start_client(target: SocketAddr, rps: u32) -> (SocketAddr, mpsc::Sender<()>) {
    let (listener, addr) = local_listener().await;
    let config = client::ClientConfig {
        url: web::parse_url(&format!("http://{target}/")).unwrap(),
        rps,
        timeout: Duration::from_secs(2),
    };
    let (tx, terminate) = Terminate::channel();
    tokio::spawn(client::run(listener, config, terminate));
    (addr, tx)
}

/// Polls `/stats` until `done` holds for it.
async fn stats_until(stats: SocketAddr, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, v) = get_json(stats, "/stats").await;
        assert_eq!(status, 200);
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "stats never got there: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_says_who_answered() {
    let (addr, _stop) = start_server("v1", None).await;
    let (status, body, local) = request(addr, "GET", "/").await.unwrap();
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["pod"], "pod-v1");
    assert_eq!(v["version"], "v1");
    assert_eq!(v["peer"], local.to_string());
    assert_eq!(v["upstream"], Value::Null);

    assert_eq!(request(addr, "GET", "/healthz").await.unwrap().1, "ok");
    assert_eq!(request(addr, "GET", "/ready").await.unwrap().0, 200);
    assert_eq!(request(addr, "GET", "/nope").await.unwrap().0, 404);
    assert_eq!(request(addr, "POST", "/").await.unwrap().0, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_embeds_its_upstream_or_answers_502() {
    let (back, _s1) = start_server("v2", None).await;
    let (front, _s2) = start_server("front", Some(back)).await;
    let (status, v) = get_json(front, "/").await;
    assert_eq!(status, 200);
    assert_eq!(v["version"], "front");
    assert_eq!(v["upstream"]["version"], "v2");
    assert_eq!(v["upstream"]["pod"], "pod-v2");

    let (broken, _s3) = start_server("broken", Some(closed_port().await)).await;
    let (status, v) = get_json(broken, "/").await;
    assert_eq!(status, 502);
    assert!(v["error"].as_str().unwrap().contains("upstream"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_speaks_h2c() {
    let (addr, _stop) = start_server("v1", None).await;
    let io = hyper_util::rt::TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("http://{addr}/"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let rsp = send.send_request(req).await.unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.version(), http::Version::HTTP_2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tallies_versions_through_a_chain_and_resets() {
    let (back, _s1) = start_server("v7", None).await;
    let (front, _s2) = start_server("front", Some(back)).await;
    let (stats, _c) = start_client(front, 200).await;

    let v = stats_until(stats, |v| v["total"].as_u64() >= Some(5)).await;
    let ok = v["ok"].as_u64().unwrap();
    assert_eq!(v["total"].as_u64(), Some(ok), "{v}");
    assert_eq!(v["failed"], 0, "{v}");
    let versions: BTreeMap<String, u64> = serde_json::from_value(v["versions"].clone()).unwrap();
    assert_eq!(versions, BTreeMap::from([("v7".to_owned(), ok)]));
    assert_eq!(v["recent_errors"], Value::Array(vec![]));

    let (status, _, _) = request(stats, "POST", "/reset").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(request(stats, "GET", "/healthz").await.unwrap().0, 200);
    assert_eq!(request(stats, "GET", "/reset").await.unwrap().0, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_counts_failures_with_their_errors() {
    let (stats, _c) = start_client(closed_port().await, 200).await;
    let v = stats_until(stats, |v| v["failed"].as_u64() >= Some(25)).await;
    assert_eq!(v["ok"], 0, "{v}");
    let errors = v["recent_errors"].as_array().unwrap();
    assert_eq!(errors.len(), client::RECENT_ERRORS, "{v}");
    assert!(errors[0].as_str().unwrap().contains("refused"), "{v}");
    assert_eq!(v["versions"], serde_json::json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn banner_round_trip() {
    let (listener, addr) = local_listener().await;
    let stop = tokio_util::sync::CancellationToken::new();
    let serving = tokio::spawn(banner::serve(
        listener,
        banner::DEFAULT_BANNER.to_owned(),
        stop.clone(),
    ));

    // By hand: the banner comes first, then every line is echoed.
    let s = TcpStream::connect(addr).await.unwrap();
    let (r, mut w) = s.into_split();
    let mut lines = BufReader::new(r).lines();
    assert_eq!(
        lines.next_line().await.unwrap().as_deref(),
        Some(banner::DEFAULT_BANNER)
    );
    w.write_all(b"hello\r\nEHLO x\r\n").await.unwrap();
    assert_eq!(
        lines.next_line().await.unwrap().as_deref(),
        Some("250 hello")
    );
    assert_eq!(
        lines.next_line().await.unwrap().as_deref(),
        Some("250 EHLO x")
    );

    // The client, through a DNS name.
    let config = banner::BannerClientConfig {
        addr: format!("localhost:{}", addr.port()),
        count: 3,
        timeout: Duration::from_secs(5),
    };
    let (_tx, terminate) = Terminate::channel();
    let summary = banner::run_client(&config, terminate).await;
    assert!(summary.all_ok(3), "{summary:?}");
    assert_eq!(summary.banner, banner::DEFAULT_BANNER);
    assert!(summary.banner_ms_p50 <= summary.banner_ms_max);

    // Stopping closes the open connection too.
    stop.cancel();
    serving.await.unwrap();
    assert_eq!(lines.next_line().await.unwrap(), None);

    let (_tx, terminate) = Terminate::channel();
    let config = banner::BannerClientConfig {
        addr: addr.to_string(),
        count: 2,
        timeout: Duration::from_secs(5),
    };
    let summary = banner::run_client(&config, terminate).await;
    assert_eq!((summary.ok, summary.failed), (0, 2), "{summary:?}");
    assert!(summary.last_error.is_some());
}

/// The built binary, with its stderr lines forwarded for [`App::wait_for`].
struct App {
    child: tokio::process::Child,
    lines: mpsc::UnboundedReceiver<String>,
}

impl App {
    fn spawn(args: &[&str]) -> Self {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_weft-test-app"))
            .args(args)
            .env("WEFT_TEST_APP_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut r = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = r.next_line().await {
                eprintln!("app: {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// Waits for a stderr line containing `needle` and returns it.
    async fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) if line.contains(needle) => return line,
                Ok(Some(_)) => {}
                Ok(None) => panic!("the app exited before logging {needle:?}"),
                Err(_) => panic!("the app never logged {needle:?}"),
            }
        }
    }

    /// Waits for `listening addr=0.0.0.0:PORT` and returns 127.0.0.1:PORT.
    async fn listening(&mut self) -> SocketAddr {
        let line = self.wait_for("listening").await;
        let port = line
            .rsplit(':')
            .next()
            .unwrap()
            .trim()
            .parse::<u16>()
            .unwrap();
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[allow(unsafe_code)]
    fn signal(&self, signal: libc::c_int) {
        let pid = self.child.id().unwrap() as libc::pid_t;
        // SAFETY: kill has no memory effects; pid is our own live child.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// Waits for the exit and returns the code, and stdout.
    async fn exit(self) -> (Option<i32>, String) {
        let out = tokio::time::timeout(PATIENCE, self.child.wait_with_output())
            .await
            .expect("the app did not exit")
            .unwrap();
        (out.status.code(), String::from_utf8(out.stdout).unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_exits_zero_only_when_all_succeed() {
    let (addr, _s) = start_server("v1", None).await;
    let url = format!("http://{addr}/");
    let (code, out) = App::spawn(&["get", "--url", &url, "--count", "3", "--interval-ms", "1"])
        .exit()
        .await;
    assert_eq!(code, Some(0), "{out}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((v["ok"].as_u64(), v["failed"].as_u64()), (Some(3), Some(0)));

    let url = format!("http://{}/", closed_port().await);
    let (code, out) = App::spawn(&["get", "--url", &url, "--count", "2", "--interval-ms", "1"])
        .exit()
        .await;
    assert_eq!(code, Some(1), "{out}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((v["ok"].as_u64(), v["failed"].as_u64()), (Some(0), Some(2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_retries_the_first_request_until_the_server_is_up() {
    let addr = closed_port().await;
    let url = format!("http://{addr}/");
    let mut app = App::spawn(&[
        "get",
        "--url",
        &url,
        "--count",
        "2",
        "--interval-ms",
        "10",
        "--retry-until-ok-secs",
        "30",
    ]);
    app.wait_for("retrying").await;
    // Only now does the server come up, on the port the Job kept trying.
    let listener = TcpListener::bind(addr).await.unwrap();
    let config = server::ServerConfig {
        pod: "p".into(),
        version: "v".into(),
        upstream: None,
        drain: Duration::ZERO,
    };
    let (_tx, terminate) = Terminate::channel();
    tokio::spawn(server::run(listener, config, terminate));
    let (code, out) = app.exit().await;
    assert_eq!(code, Some(0), "{out}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((v["ok"].as_u64(), v["failed"].as_u64()), (Some(2), Some(0)));
}

/// A fake upstream that takes one request and answers only when released.
async fn held_upstream() -> (
    SocketAddr,
    tokio::sync::oneshot::Receiver<()>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (listener, addr) = local_listener().await;
    let (arrived_tx, arrived) = tokio::sync::oneshot::channel();
    let (release, release_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        while !buf.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            assert_eq!(s.read(&mut b).await.unwrap(), 1);
            buf.push(b[0]);
        }
        let _ = arrived_tx.send(());
        let _ = release_rx.await;
        let body = r#"{"version":"held"}"#;
        let rsp = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        s.write_all(rsp.as_bytes()).await.unwrap();
    });
    (addr, arrived, release)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_drains_on_sigterm_and_finishes_in_flight_requests() {
    let (upstream, arrived, release) = held_upstream().await;
    let up = format!("http://{upstream}/");
    let mut app = App::spawn(&[
        "server",
        "--port",
        "0",
        "--version",
        "v1",
        "--upstream",
        &up,
        "--drain-secs",
        "1",
    ]);
    let addr = app.listening().await;
    assert_eq!(request(addr, "GET", "/ready").await.unwrap().0, 200);

    // A request in flight (held at the upstream) when the signal comes.
    let in_flight = tokio::spawn(async move { get_json(addr, "/").await });
    arrived.await.unwrap();
    app.signal(libc::SIGTERM);

    // Draining: still serving, but not ready.
    let deadline = Instant::now() + PATIENCE;
    loop {
        match request(addr, "GET", "/ready").await {
            Ok((503, _, _)) => break,
            Ok((200, _, _)) => {}
            other => panic!("unexpected /ready while draining: {other:?}"),
        }
        assert!(Instant::now() < deadline, "/ready never turned 503");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Then the listener closes while the held request is still running.
    loop {
        if TcpStream::connect(addr).await.is_err() {
            break;
        }
        assert!(Instant::now() < deadline, "the listener never closed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        app.child.try_wait().unwrap().is_none(),
        "exited with a request in flight"
    );

    release.send(()).unwrap();
    let (status, v) = in_flight.await.unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["upstream"]["version"], "held");
    let (code, _) = app.exit().await;
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_running_modes_exit_zero_on_sigterm_and_sigint() {
    let (target, _s) = start_server("v1", None).await;
    let url = format!("http://{target}/");
    let modes: [(&[&str], &str); 4] = [
        (&["pause"], "pausing"),
        (
            &["client", "--url", &url, "--stats-port", "0", "--rps", "50"],
            "listening",
        ),
        (&["banner-server", "--port", "0"], "listening"),
        (&["server", "--port", "0", "--drain-secs", "0"], "listening"),
    ];
    for (args, ready) in modes {
        for signal in [libc::SIGTERM, libc::SIGINT] {
            let mut app = App::spawn(args);
            app.wait_for(ready).await;
            app.signal(signal);
            let (code, _) = app.exit().await;
            assert_eq!(code, Some(0), "{args:?} after signal {signal}");
        }
    }
}
