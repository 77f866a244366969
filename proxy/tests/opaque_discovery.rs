//! Redirected connections resolved through the controller: an application
//! in a "pod" (a network namespace with `weft-proxy init`'s iptables
//! redirect, its proxy running as uid 2102) connects to an address that
//! never names the proxy, and the proxy asks the controller what is
//! there — a pod IP or a Service's ClusterIP. Opaque TCP to a meshed
//! endpoint goes over mTLS to its identity (no `WEFT_PROXY_MESHED_TARGETS`),
//! opaque ports from discovery skip detection on both proxies (a server
//! that speaks first answers at once), and HTTP to a ClusterIP is balanced
//! over the Service's endpoints.
//!
//! Needs root (network namespaces, iptables), like CI.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use tokio::net::{TcpListener, TcpStream};
use weft_test_support::backend::{HttpBackend, TcpServer};
use weft_test_support::controller::{identity, ControllerProcess};
use weft_test_support::metrics::sum;
use weft_test_support::netns::TestNet;
use weft_test_support::proxy::ProxyProcess;
use weft_test_support::scenario::{meshed_pod_yaml, write_atomic, NS};
use weft_test_support::{controller_bin, proxy_bin};

const PROXY_UID: &str = "2102";
/// Both proxies' detect timeout: long enough that waiting for it would
/// fail the server-speaks-first checks, which must answer within 2 s.
const DETECT_TIMEOUT: &str = "6s";
const BANNER: &[u8] = b"220 weft-test ready\r\n";

/// A "client pod": a network namespace whose outbound TCP is redirected to
/// its proxy, which resolves through the controller (reached over relays
/// on the host side of the veth, since the controller listens on
/// loopback).
struct ClientPod {
    net: TestNet,
    proxy: ProxyProcess,
    _dir: tempfile::TempDir,
    _relays: Vec<tokio::task::JoinHandle<()>>,
}

impl ClientPod {
    async fn start(ctl: &ControllerProcess) -> Self {
        let net = TestNet::create()
            .map_err(|e| e.context("these tests need root: network namespaces and iptables"))
            .unwrap();
        net.exec(&[
            env!("CARGO_BIN_EXE_weft-proxy"),
            "init",
            "--proxy-uid",
            PROXY_UID,
            "--skip-inbound-ports",
            "4191",
        ])
        .unwrap();
        let host = net.host_ip();
        let identity_relay = relay(host, ctl.identity_addr).await;
        let destination_relay = relay(host, ctl.destination_addr).await;
        // What the proxy's uid must be able to read: its binary and token.
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = readable_copy(env!("CARGO_BIN_EXE_weft-proxy").as_ref(), dir.path());
        let token = readable_copy(&ctl.token(NS, "web").unwrap(), dir.path());
        let anchors = std::fs::read_to_string(ctl.anchors()).unwrap();
        let proxy = ctl
            .proxy_as(&bin, &identity(NS, "web"), &token, Path::new("unused"))
            .env("WEFT_PROXY_TRUST_ANCHORS", anchors)
            .env("WEFT_PROXY_IDENTITY_ADDR", identity_relay.0)
            .env("WEFT_PROXY_DESTINATION_ADDR", destination_relay.0)
            .env("WEFT_PROXY_DETECT_TIMEOUT", DETECT_TIMEOUT)
            .env("WEFT_PROXY_INBOUND_ADDR", "0.0.0.0:4143")
            .env("WEFT_PROXY_OUTBOUND_ADDR", "127.0.0.1:4140")
            .env("WEFT_PROXY_ADMIN_ADDR", SocketAddr::new(net.ip(2), 4191))
            .wrap(&[
                "ip",
                "netns",
                "exec",
                net.name(),
                "setpriv",
                "--reuid",
                PROXY_UID,
                "--regid",
                PROXY_UID,
                "--clear-groups",
            ])
            .spawn()
            .await
            .unwrap();
        Self {
            net,
            proxy,
            _dir: dir,
            _relays: vec![identity_relay.1, destination_relay.1],
        }
    }

    /// Adds `10.214.N.host` to the host side of the veth (another
    /// "node" address the pod reaches; removed with the veth) and returns it.
    fn host_side(&self, host: u8) -> IpAddr {
        let IpAddr::V4(v4) = self.net.host_ip() else {
            unreachable!("test networks are IPv4")
        };
        let veth = format!("wtn{}h", v4.octets()[2]);
        let ip = self.net.ip(host);
        let out = Command::new("ip")
            .args(["addr", "add", &format!("{ip}/32"), "dev", &veth])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        ip
    }

    /// Runs a Python one-liner as the pod's application; its stdout.
    async fn python(&self, script: String) -> String {
        let name = self.net.name().to_owned();
        let out = tokio::task::spawn_blocking(move || {
            Command::new("ip")
                .args(["netns", "exec", &name, "python3", "-c", &script])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{}\n--- proxy log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.proxy.log()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Connects to `addr`, waits for the server's first bytes without
    /// sending any, then sends `ping` and reads the echo. Prints
    /// `BANNER|ECHO|SECONDS-TO-BANNER`.
    async fn server_first(&self, addr: SocketAddr) -> (String, String, f64) {
        let script = format!(
            "import socket, time\n\
             s = socket.create_connection(('{}', {}), timeout=15)\n\
             t = time.time(); b = s.recv(64); d = time.time() - t\n\
             s.sendall(b'ping'); e = s.recv(64)\n\
             print(b.decode().strip() + '|' + e.decode() + '|' + str(d))",
            addr.ip(),
            addr.port()
        );
        let out = self.python(script).await;
        let mut parts = out.split('|');
        let (b, e, d) = (parts.next(), parts.next(), parts.next());
        (
            b.unwrap_or_default().to_owned(),
            e.unwrap_or_default().to_owned(),
            d.and_then(|d| d.parse().ok()).unwrap_or(f64::MAX),
        )
    }

    /// Sends `ping` to `addr` and returns the echo.
    async fn echo(&self, addr: SocketAddr) -> String {
        let script = format!(
            "import socket\n\
             s = socket.create_connection(('{}', {}), timeout=15)\n\
             s.sendall(b'\\x00\\x01ping'); print(s.recv(64))",
            addr.ip(),
            addr.port()
        );
        self.python(script).await
    }
}

/// Copies `file` into `dir`, readable (and executable) by anyone.
fn readable_copy(file: &Path, dir: &Path) -> PathBuf {
    let to = dir.join(file.file_name().unwrap());
    std::fs::copy(file, &to).unwrap();
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
    to
}

/// A TCP relay on `ip` (a free port) to `to`, until the task is dropped
/// with the runtime.
async fn relay(ip: IpAddr, to: SocketAddr) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut server) = TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (addr, task)
}

/// Waits (≤ 10 s) until the controller has loaded `file` from its config
/// dir, so the first connection already finds what it describes.
async fn loaded(ctl: &ControllerProcess, file: &str) {
    let line = format!("{file} objects=");
    for _ in 0..200 {
        if ctl.log().contains(&line) {
            // The store is updated right after the file is read.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("controller did not load {file}:\n{}", ctl.log());
}

/// A port on `ip` that was free a moment ago.
fn free_on(ip: IpAddr) -> SocketAddr {
    let l = std::net::TcpListener::bind(SocketAddr::new(ip, 0)).unwrap();
    l.local_addr().unwrap()
}

/// A meshed pod's proxy ("db" or "api" identity) whose inbound listens on
/// `inbound` and forwards to `app`.
async fn server_proxy(
    ctl: &ControllerProcess,
    sa: &str,
    inbound: SocketAddr,
    app: SocketAddr,
) -> ProxyProcess {
    ctl.pod_proxy(proxy_bin!(), NS, sa, app)
        .unwrap()
        .env("WEFT_PROXY_INBOUND_ADDR", inbound)
        .env("WEFT_PROXY_DETECT_TIMEOUT", DETECT_TIMEOUT)
        .spawn()
        .await
        .unwrap()
}

#[tokio::test]
async fn opaque_tcp_to_a_meshed_pod_ip_goes_over_mtls_and_skips_detection() {
    let config = tempfile::tempdir().unwrap();
    let ctl = ControllerProcess::start_with_config(&controller_bin!(), "24h", config.path())
        .await
        .unwrap();
    let pod = ClientPod::start(&ctl).await;
    let host = pod.host_side(3);

    // Pod db-0 (identity db) runs on the host side of the veth: its proxy's
    // inbound is where the client pod's connections arrive. Its first port
    // is opaque (`config.linkerd.io/opaque-ports`) with a server that
    // speaks first; the second is detected, with an echo server.
    let (first, second) = (free_on(host), free_on(host));
    let banner = TcpServer::server_first(BANNER).await;
    let echo = TcpServer::echo().await;
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: db-0\n  namespace: {NS}\n  \
         annotations: {{linkerd.io/inject: enabled, config.linkerd.io/opaque-ports: \"{}\"}}\n\
         spec:\n  serviceAccountName: db\n  containers: [{{name: app, image: app}}]\n\
         status: {{phase: Running, podIP: {host}}}\n",
        first.port()
    );
    write_atomic(config.path(), "db.yaml", &yaml).unwrap();
    loaded(&ctl, "db.yaml").await;
    let _first = server_proxy(&ctl, "db", first, banner.addr).await;
    let _second = server_proxy(&ctl, "db", second, echo.addr).await;

    // Server speaks first: the banner arrives without either proxy waiting
    // for the detect timeout, through mTLS.
    let (got, echoed, seconds) = pod.server_first(first).await;
    assert_eq!(got, "220 weft-test ready");
    assert_eq!(echoed, "ping");
    assert!(
        seconds < 2.0,
        "banner after {seconds}s\n{}",
        pod.proxy.log()
    );

    // A client-first binary protocol on the detected port: opaque after
    // detection, still balanced over discovery's endpoint and mTLS.
    assert_eq!(pod.echo(second).await, r"b'\x00\x01ping'");

    let m = pod.proxy.metrics().await;
    let db = identity(NS, "db");
    let secured = [
        ("direction", "outbound"),
        ("peer", "dst"),
        ("tls", "true"),
        ("server_id", db.as_str()),
    ];
    assert_eq!(sum(&m, "tcp_open_total", &secured), 2.0, "{m}");
    // Nothing went out in plaintext.
    let plain = [
        ("direction", "outbound"),
        ("peer", "dst"),
        ("tls", "no_identity"),
    ];
    assert_eq!(sum(&m, "tcp_open_total", &plain), 0.0, "{m}");

    // An address the controller does not know: forwarded where it was
    // going, in plaintext, as before.
    let other = TcpServer::echo_on(SocketAddr::new(pod.net.host_ip(), 0)).await;
    assert_eq!(pod.echo(other.addr).await, r"b'\x00\x01ping'");
    let m = pod.proxy.metrics().await;
    assert_eq!(sum(&m, "tcp_open_total", &plain), 1.0, "{m}");
}

#[tokio::test]
async fn a_cluster_ip_resolves_to_the_service_endpoints_http_and_opaque() {
    let config = tempfile::tempdir().unwrap();
    let ctl = ControllerProcess::start_with_config(&controller_bin!(), "24h", config.path())
        .await
        .unwrap();
    let pod = ClientPod::start(&ctl).await;
    let host = pod.net.host_ip();
    // The ClusterIP: an address in the pod's network that nothing
    // listens on, so only the proxy's resolution can make it work.
    let cluster_ip = pod.net.ip(200);

    // Service api: port 80 (HTTP) over two meshed pods, port 3306 opaque
    // by its ServiceProfile, with a server that speaks first.
    let backends = [HttpBackend::start().await, HttpBackend::start().await];
    let mut http_pods = Vec::new();
    let mut http_eps = Vec::new();
    for b in &backends {
        let inbound = free_on(host);
        http_pods.push(server_proxy(&ctl, "api", inbound, b.addr).await);
        http_eps.push(inbound);
    }
    let banner = TcpServer::server_first(BANNER).await;
    let mysql = free_on(host);
    let _mysql_pod = server_proxy(&ctl, "api", mysql, banner.addr).await;

    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: api, namespace: {NS}}}\nspec:\n  \
         clusterIP: {cluster_ip}\n  ports:\n  - {{name: http, port: 80, targetPort: 8080}}\n  \
         - {{name: mysql, port: 3306, targetPort: 3306}}\n---\napiVersion: v1\n\
         kind: Endpoints\nmetadata: {{name: api, namespace: {NS}}}\nsubsets:\n"
    );
    for (i, ep) in http_eps.iter().enumerate() {
        y.push_str(&format!(
            "- addresses: [{{ip: {host}, targetRef: {{kind: Pod, name: api-{i}, namespace: {NS}}}}}]\n  \
             ports: [{{name: http, port: {}}}]\n",
            ep.port()
        ));
    }
    y.push_str(&format!(
        "- addresses: [{{ip: {host}, targetRef: {{kind: Pod, name: api-db, namespace: {NS}}}}}]\n  \
         ports: [{{name: mysql, port: {}}}]\n",
        mysql.port()
    ));
    for pod in ["api-0", "api-1", "api-db"] {
        y.push_str("---\n");
        y.push_str(&meshed_pod_yaml(pod, "api", None));
    }
    y.push_str(&format!(
        "---\napiVersion: linkerd.io/v1alpha2\nkind: ServiceProfile\n\
         metadata: {{name: api.{NS}.svc.cluster.local, namespace: {NS}}}\n\
         spec:\n  opaquePorts: [\"3306\"]\n  routes: []\n"
    ));
    write_atomic(config.path(), "api.yaml", &y).unwrap();
    loaded(&ctl, "api.yaml").await;

    // HTTP to the ClusterIP reaches both endpoints (never the ClusterIP).
    let url = format!("http://{cluster_ip}/");
    let script = format!(
        "import urllib.request as u\n\
         for _ in range(20):\n    assert u.urlopen('{url}', timeout=10).status == 200\n\
         print('ok')"
    );
    assert_eq!(pod.python(script).await, "ok");
    assert_eq!(backends[0].requests() + backends[1].requests(), 20);
    assert!(
        backends[0].requests() > 0 && backends[1].requests() > 0,
        "not balanced: {} / {}",
        backends[0].requests(),
        backends[1].requests()
    );
    let m = pod.proxy.metrics().await;
    let api = identity(NS, "api");
    let secured = [
        ("direction", "outbound"),
        ("tls", "true"),
        ("server_id", api.as_str()),
    ];
    assert_eq!(sum(&m, "response_total", &secured), 20.0, "{m}");

    // The opaque port: the banner arrives at once, over mTLS.
    let (got, echoed, seconds) = pod.server_first(SocketAddr::new(cluster_ip, 3306)).await;
    assert_eq!(got, "220 weft-test ready");
    assert_eq!(echoed, "ping");
    assert!(
        seconds < 2.0,
        "banner after {seconds}s\n{}",
        pod.proxy.log()
    );
    let m = pod.proxy.metrics().await;
    let tcp = [
        ("direction", "outbound"),
        ("peer", "dst"),
        ("tls", "true"),
        ("server_id", api.as_str()),
    ];
    assert!(sum(&m, "tcp_open_total", &tcp) >= 3.0, "{m}");
}

/// One HTTP/1.1 connection from the client pod's application to `to`,
/// made once: a relay in the pod (the application, redirected like any)
/// accepts a single Unix-socket client, opens a single TCP connection and
/// then only copies bytes, so every request on [`PodConnection::get`]
/// rides the same pod → proxy connection. A closed connection is an error,
/// never a silent reconnect.
struct PodConnection {
    send: hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    authority: String,
    _relay: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl ClientPod {
    /// Opens the one connection to `to` (see [`PodConnection`]).
    async fn connect_http(&self, to: SocketAddr) -> PodConnection {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.sock");
        let script = format!(
            "import os, socket, sys, threading\n\
             l = socket.socket(socket.AF_UNIX); l.bind({path:?}); l.listen(1)\n\
             print('ready', flush=True)\n\
             c, _ = l.accept(); l.close()\n\
             u = socket.create_connection(('{}', {}), timeout=30); u.settimeout(None)\n\
             def pipe(a, b):\n    \
                 while True:\n        \
                     d = a.recv(65536)\n        \
                     if not d: break\n        \
                     b.sendall(d)\n    \
                 try: b.shutdown(socket.SHUT_WR)\n    \
                 except OSError: pass\n\
             threading.Thread(target=pipe, args=(u, c), daemon=True).start()\n\
             pipe(c, u)\n\
             sys.stdin.read()\n",
            to.ip(),
            to.port()
        );
        let mut relay = tokio::process::Command::new("ip")
            .args(["netns", "exec", self.net.name(), "python3", "-c", &script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut ready = String::new();
        let stdout = relay.stdout.take().unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            use tokio::io::AsyncBufReadExt;
            tokio::io::BufReader::new(stdout)
                .read_line(&mut ready)
                .await
                .unwrap()
        })
        .await
        .unwrap();
        assert_eq!(ready.trim(), "ready", "relay did not start");
        let io =
            hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(&path).await.unwrap());
        let (send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        PodConnection {
            send,
            authority: to.to_string(),
            _relay: relay,
            _dir: dir,
        }
    }
}

impl PodConnection {
    /// `GET /` on the connection: the status, or why there was none (the
    /// connection closed: the test's failure).
    async fn get(&mut self) -> Result<http::StatusCode, String> {
        use http_body_util::BodyExt;
        let wait = std::time::Duration::from_secs(15);
        tokio::time::timeout(wait, self.send.ready())
            .await
            .map_err(|_| "connection not ready".to_owned())?
            .map_err(|e| format!("connection closed: {e}"))?;
        let req = http::Request::get("/")
            .header(http::header::HOST, &self.authority)
            .body(http_body_util::Empty::new())
            .unwrap();
        let rsp = tokio::time::timeout(wait, self.send.send_request(req))
            .await
            .map_err(|_| "no response".to_owned())?
            .map_err(|e| format!("request failed: {e}"))?;
        let status = rsp.status();
        // Read the whole body, so the connection is ready for the next one.
        tokio::time::timeout(wait, rsp.into_body().collect())
            .await
            .map_err(|_| "body timed out".to_owned())?
            .map_err(|e| format!("body failed: {e}"))?;
        Ok(status)
    }
}

/// Service `web` (ClusterIP `cluster_ip`, port 80) whose Endpoints are
/// `subsets` (YAML list items), over meshed pods `web-a` and `web-b`.
fn web_yaml(cluster_ip: IpAddr, subsets: &str) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: {NS}}}\nspec:\n  \
         clusterIP: {cluster_ip}\n  ports:\n  - {{name: http, port: 80, targetPort: 8080}}\n\
         ---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: web, namespace: {NS}}}\n\
         subsets:\n{subsets}"
    );
    for pod in ["web-a", "web-b"] {
        y.push_str("---\n");
        y.push_str(&meshed_pod_yaml(pod, "api", None));
    }
    y
}

/// One Endpoints subset: `pod` at `addr`, ready or not.
fn web_subset(pod: &str, addr: SocketAddr, ready: bool) -> String {
    let key = if ready {
        "addresses"
    } else {
        "notReadyAddresses"
    };
    format!(
        "- {key}: [{{ip: {}, targetRef: {{kind: Pod, name: {pod}, namespace: {NS}}}}}]\n  \
         ports: [{{name: http, port: {}}}]\n",
        addr.ip(),
        addr.port()
    )
}

/// The client pod started before `web` was Ready: its keep-alive
/// connection to the ClusterIP was accepted while the Service had no ready
/// endpoints. Each request on it must use the endpoints as they are then —
/// the first ready one as soon as it is ready, and after a rollout only
/// the new one — not the snapshot taken when the connection was accepted.
#[tokio::test]
async fn a_keep_alive_connection_to_a_cluster_ip_follows_endpoint_changes() {
    let started = std::time::Instant::now();
    let config = tempfile::tempdir().unwrap();
    let ctl = ControllerProcess::start_with_config(&controller_bin!(), "24h", config.path())
        .await
        .unwrap();
    let pod = ClientPod::start(&ctl).await;
    let host = pod.net.host_ip();
    let cluster_ip = pod.net.ip(200);
    let (a, b) = (HttpBackend::start().await, HttpBackend::start().await);
    let (a_in, b_in) = (free_on(host), free_on(host));
    let _a_pod = server_proxy(&ctl, "api", a_in, a.addr).await;
    let _b_pod = server_proxy(&ctl, "api", b_in, b.addr).await;

    // web-a exists but is not Ready yet.
    let not_ready = web_yaml(cluster_ip, &web_subset("web-a", a_in, false));
    write_atomic(config.path(), "web.yaml", &not_ready).unwrap();
    loaded(&ctl, "web.yaml").await;
    let mut conn = pod.connect_http(SocketAddr::new(cluster_ip, 80)).await;
    let first = conn.get().await;
    eprintln!("no ready endpoint: {first:?}");
    assert!(
        !matches!(first, Ok(s) if s.is_success()),
        "{first:?} with no ready endpoint"
    );
    assert_eq!(a.requests() + b.requests(), 0);

    // Poll (same connection) until a request reaches `want`, ≤ 10 s.
    async fn until_served(
        conn: &mut PodConnection,
        want: &HttpBackend,
        pod: &ClientPod,
    ) -> (usize, std::time::Duration) {
        let t = std::time::Instant::now();
        let mut last = Err(String::new());
        for tries in 1..=100 {
            let before = want.requests();
            last = conn.get().await;
            if let Err(e) = &last {
                panic!(
                    "try {tries}: {e} (the connection must live on)\n--- proxy log ---\n{}",
                    pod.proxy.log()
                );
            }
            if matches!(last, Ok(s) if s.is_success()) && want.requests() > before {
                return (tries, t.elapsed());
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!(
            "100 requests over {:?} on the connection never reached {}; last: {last:?}\n\
             --- proxy log ---\n{}",
            t.elapsed(),
            want.addr,
            pod.proxy.log()
        );
    }

    // web-a becomes Ready: the same connection reaches it.
    let ready_a = web_yaml(cluster_ip, &web_subset("web-a", a_in, true));
    write_atomic(config.path(), "web.yaml", &ready_a).unwrap();
    let (tries, took) = until_served(&mut conn, &a, &pod).await;
    eprintln!("web-a ready: served after {tries} tries, {took:?}");
    assert_eq!(b.requests(), 0);

    // A rollout replaces web-a with web-b: the same connection moves to it
    // and never goes back.
    let ready_b = web_yaml(cluster_ip, &web_subset("web-b", b_in, true));
    write_atomic(config.path(), "web.yaml", &ready_b).unwrap();
    let (tries, took) = until_served(&mut conn, &b, &pod).await;
    eprintln!("rolled to web-b: served after {tries} tries, {took:?}");
    let a_done = a.requests();
    for i in 0..20 {
        let status = conn.get().await;
        assert!(
            matches!(status, Ok(s) if s.is_success()),
            "request {i} after the rollout: {status:?}"
        );
    }
    assert_eq!(a.requests(), a_done, "requests went to the removed web-a");
    eprintln!("total {:?}", started.elapsed());
}
