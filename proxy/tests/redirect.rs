//! Transparent proxying for real: `weft-proxy init` installs the iptables
//! redirect in a network namespace joined to the host by a veth pair, the
//! proxy runs there under its own uid, and connections that never mention
//! the proxy are redirected through it and reach their original
//! destinations (`SO_ORIGINAL_DST`).
//!
//! Needs root (network namespaces, iptables), like CI.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use weft_test_support::backend::{HttpBackend, TcpServer};
use weft_test_support::client::get;
use weft_test_support::metrics::sum;
use weft_test_support::netns::TestNet;
use weft_test_support::proxy::ProxyBuilder;

const PROXY_UID: &str = "2102";

/// The proxy binary, copied where the proxy's unprivileged uid can run it.
fn world_readable_proxy(dir: &tempfile::TempDir) -> PathBuf {
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("weft-proxy");
    std::fs::copy(env!("CARGO_BIN_EXE_weft-proxy"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[tokio::test]
async fn redirected_traffic_flows_through_the_proxy_to_its_original_destination() {
    // "The pod": a network namespace with a veth to the host, removed on
    // drop. The host is `host_ip`, the pod `pod_ip`.
    let pod = TestNet::create()
        .map_err(|e| e.context("these tests need root: network namespaces and iptables"))
        .unwrap();
    let (host_ip, pod_ip) = (pod.host_ip(), pod.ip(2));

    // The init container's job, twice: it must be idempotent.
    for _ in 0..2 {
        pod.exec(&[
            env!("CARGO_BIN_EXE_weft-proxy"),
            "init",
            "--proxy-uid",
            PROXY_UID,
            "--skip-inbound-ports",
            "4191",
        ])
        .unwrap();
    }
    let rules = pod.exec(&["iptables", "-t", "nat", "-S"]).unwrap();
    assert_eq!(
        rules
            .matches("-A PREROUTING -p tcp -j WEFT_PROXY_INBOUND")
            .count(),
        1,
        "{rules}"
    );
    assert_eq!(
        rules
            .matches("-A OUTPUT -p tcp -j WEFT_PROXY_OUTPUT")
            .count(),
        1,
        "{rules}"
    );
    assert_eq!(rules.matches("--to-ports 4143").count(), 1, "{rules}");

    // The "app" inside the pod, and the proxy as uid 2102.
    let mut app = Command::new("ip")
        .args([
            "netns",
            "exec",
            pod.name(),
            "python3",
            "-m",
            "http.server",
            "8080",
            "--bind",
            "0.0.0.0",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bin = world_readable_proxy(&dir);
    let admin = SocketAddr::new(pod_ip, 4191);
    let proxy = ProxyBuilder::new(&bin)
        .wrap(&[
            "ip",
            "netns",
            "exec",
            pod.name(),
            "setpriv",
            "--reuid",
            PROXY_UID,
            "--regid",
            PROXY_UID,
            "--clear-groups",
        ])
        .env("WEFT_PROXY_INBOUND_ADDR", "0.0.0.0:4143")
        .env("WEFT_PROXY_OUTBOUND_ADDR", "127.0.0.1:4140")
        .env("WEFT_PROXY_ADMIN_ADDR", admin)
        .spawn()
        .await
        .unwrap();

    // Inbound: the host calls the pod's app port; iptables sends it to the
    // proxy, which forwards to the original destination.
    let app_addr = SocketAddr::new(pod_ip, 8080);
    // (The app may still be starting: until it listens, the proxy answers
    // 502 for it, which is also a redirect that worked.)
    let mut inbound = None;
    for _ in 0..100 {
        match get(app_addr, "/").await {
            Ok((200, body)) => {
                inbound = Some((200, body));
                break;
            }
            other => inbound = other.ok(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = inbound.expect("the app answers through the proxy");
    assert_eq!(status, 200, "{body}");
    let m = proxy.metrics().await;
    let authority = app_addr.to_string();
    let ok = [
        ("direction", "inbound"),
        ("authority", authority.as_str()),
        ("status_code", "200"),
    ];
    assert_eq!(sum(&m, "response_total", &ok), 1.0, "{m}");

    // Outbound HTTP: the app calls a host service by its address.
    let backend = HttpBackend::bind(SocketAddr::new(host_ip, 0)).await;
    let url = format!("http://{}/", backend.addr);
    let script = format!("import urllib.request as u; r = u.urlopen('{url}', timeout=10); print(r.status, r.headers['x-version'])");
    let out = python_in(pod.name(), script).await;
    assert_eq!(out.trim(), "200 HTTP/1.1");
    assert_eq!(backend.requests(), 1);

    // Outbound opaque TCP: not HTTP, still delivered to where it was going.
    let echo = TcpServer::echo_on(SocketAddr::new(host_ip, 0)).await;
    let script = format!(
        "import socket; s = socket.create_connection(('{}', {}), timeout=10); s.sendall(b'\\x00\\x01ping'); print(s.recv(16))",
        echo.addr.ip(),
        echo.addr.port()
    );
    let out = python_in(pod.name(), script).await;
    assert_eq!(out.trim(), r"b'\x00\x01ping'");

    let m = proxy.metrics().await;
    let authority = backend.addr.to_string();
    let outbound = [("direction", "outbound"), ("authority", authority.as_str())];
    assert_eq!(sum(&m, "request_total", &outbound), 1.0, "{m}");
    // HTTP + opaque: two connections from the app were redirected to us.
    assert_eq!(
        sum(
            &m,
            "tcp_open_total",
            &[("direction", "outbound"), ("peer", "src")]
        ),
        2.0,
        "{m}"
    );

    let _ = app.kill();
    let _ = app.wait();
}

/// Runs a Python one-liner inside network namespace `netns` (as the
/// "pod's" application would) and returns its stdout; fails the test if
/// it exits unsuccessfully.
async fn python_in(netns: &str, script: String) -> String {
    let name = netns.to_owned();
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
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
