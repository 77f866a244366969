//! mTLS between real proxies, with certificates from a real
//! `weft-controller` over real TLS on loopback.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use weft_test_support::backend::HttpBackend;
use weft_test_support::client::send_h1;
use weft_test_support::controller::ControllerProcess;
use weft_test_support::metrics::sum;
use weft_test_support::proxy::{ProxyBuilder, ProxyProcess};
use weft_test_support::tap::{contains, Tap};

const NS: &str = "shop";

fn identity(sa: &str) -> String {
    weft_test_support::controller::identity(NS, sa)
}

/// The controller binary, built beside the proxy.
fn controller_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_weft-proxy")).with_file_name("weft-controller")
}

fn proxy_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_weft-proxy"))
}

/// The test's controller: [`ControllerProcess`] with this file's namespace.
struct Controller(ControllerProcess);

impl Controller {
    async fn start(leaf_lifetime: &str) -> Self {
        Self(
            ControllerProcess::start(&controller_bin(), leaf_lifetime)
                .await
                .unwrap(),
        )
    }

    async fn start_in(
        dir: tempfile::TempDir,
        leaf_lifetime: &str,
        identity_addr: SocketAddr,
    ) -> Self {
        Self(
            ControllerProcess::start_in(&controller_bin(), dir, leaf_lifetime, identity_addr)
                .await
                .unwrap(),
        )
    }

    fn anchors(&self) -> PathBuf {
        self.0.anchors()
    }

    fn token(&self, sa: &str) -> PathBuf {
        self.0.token(NS, sa).unwrap()
    }

    fn proxy(&self, sa: &str) -> ProxyBuilder {
        self.0.proxy(proxy_bin(), NS, sa).unwrap()
    }

    fn proxy_as(&self, name: &str, token: &Path, anchors: &Path) -> ProxyBuilder {
        self.0.proxy_as(proxy_bin(), name, token, anchors)
    }

    fn kill(&mut self) {
        self.0.kill()
    }
}

fn get_req(uri: &str) -> Request<Empty<Bytes>> {
    Request::get(uri).body(Empty::new()).unwrap()
}

/// A ("web", outbound) → B ("api", inbound → backend), A told that B is
/// meshed with identity `b_identity` at `b_addr`.
async fn pair_via(
    ctl: &Controller,
    backend: SocketAddr,
    b_addr: impl Fn(&ProxyProcess) -> SocketAddr,
    b_identity: &str,
) -> (ProxyProcess, ProxyProcess) {
    let b = ctl
        .proxy("api")
        .env("WEFT_PROXY_INBOUND_FORWARD", backend)
        .spawn()
        .await
        .unwrap();
    let a = ctl
        .proxy("web")
        .env(
            "WEFT_PROXY_MESHED_TARGETS",
            format!("{}={b_identity}", b_addr(&b)),
        )
        .spawn()
        .await
        .unwrap();
    (a, b)
}

#[tokio::test]
async fn requests_between_proxies_are_encrypted_and_identified() {
    let ctl = Controller::start("24h").await;
    let backend = HttpBackend::start().await;
    let b = ctl
        .proxy("api")
        .env("WEFT_PROXY_INBOUND_FORWARD", backend.addr)
        .spawn()
        .await
        .unwrap();
    // Everything between A and B crosses this tap.
    let tap = Tap::start(b.inbound).await;
    let a = ctl
        .proxy("web")
        .env(
            "WEFT_PROXY_MESHED_TARGETS",
            format!("{}={}", tap.addr, identity("api")),
        )
        .spawn()
        .await
        .unwrap();

    let secret = "/orders/secret-marker-4711";
    for _ in 0..3 {
        let rsp = send_h1(a.outbound, get_req(&format!("http://{}{secret}", tap.addr)))
            .await
            .unwrap();
        assert_eq!(rsp.status(), 200);
        assert_eq!(rsp.headers()["x-version"], "HTTP/1.1");
    }
    let wire = tap.captured();
    assert!(wire.len() > 100, "traffic crossed the tap");
    assert_eq!(wire[0], 0x16, "starts with a TLS handshake record");
    assert!(
        !contains(&wire, secret.as_bytes()),
        "request path visible on the wire"
    );
    assert!(
        !contains(&wire, b"hello"),
        "response body visible on the wire"
    );
    assert!(!contains(&wire, b"HTTP/"), "HTTP visible on the wire");

    let ma = a.metrics().await;
    let server = [
        ("direction", "outbound"),
        ("tls", "true"),
        ("server_id", &identity("api")),
    ];
    assert_eq!(sum(&ma, "request_total", &server), 3.0, "{ma}");
    assert_eq!(
        sum(
            &ma,
            "tcp_open_total",
            &[server[0], server[1], server[2], ("peer", "dst")]
        ),
        1.0,
        "{ma}"
    );
    let mb = b.metrics().await;
    let client = [
        ("direction", "inbound"),
        ("tls", "true"),
        ("client_id", &identity("web")),
    ];
    assert_eq!(sum(&mb, "request_total", &client), 3.0, "{mb}");
    assert_eq!(
        sum(
            &mb,
            "tcp_open_total",
            &[client[0], client[1], client[2], ("peer", "src")]
        ),
        1.0,
        "{mb}"
    );
    assert_eq!(
        sum(&mb, "identity_cert_refresh_total", &[("result", "success")]),
        1.0,
        "{mb}"
    );
    assert!(sum(&mb, "identity_cert_expiration_timestamp_seconds", &[]) > 0.0);
}

#[tokio::test]
async fn certificates_rotate_under_load_without_failed_requests() {
    // Leaves live 4 s and are refreshed at 70%: several rotations per run.
    let ctl = Controller::start("4s").await;
    let backend = HttpBackend::start().await;
    let (a, b) = pair_via(&ctl, backend.addr, |b| b.inbound, &identity("api")).await;
    let target = format!("http://{}/", b.inbound);
    let deadline = Instant::now() + Duration::from_secs(9);
    let workers = (0..4).map(|_| {
        let target = target.clone();
        let outbound = a.outbound;
        async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while Instant::now() < deadline {
                match send_h1(outbound, get_req(&target)).await {
                    Ok(rsp) if rsp.status() == 200 => ok += 1,
                    Ok(rsp) => failed.push(format!(
                        "{} {:?}",
                        rsp.status(),
                        rsp.headers().get("l5d-proxy-error")
                    )),
                    Err(e) => failed.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (ok, failed)
        }
    });
    let results = futures::future::join_all(workers).await;
    let ok: u32 = results.iter().map(|r| r.0).sum();
    let failed: Vec<_> = results.into_iter().flat_map(|r| r.1).collect();
    assert!(
        failed.is_empty(),
        "{} failed requests, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(ok > 100, "only {ok} requests");
    for p in [&a, &b] {
        let m = p.metrics().await;
        let refreshed = sum(&m, "identity_cert_refresh_total", &[("result", "success")]);
        assert!(refreshed >= 3.0, "expected rotations, saw {refreshed}\n{m}");
    }
}

#[tokio::test]
async fn the_wrong_server_identity_is_refused() {
    let ctl = Controller::start("24h").await;
    let backend = HttpBackend::start().await;
    // A expects B to be "payments", but B is "api".
    let (a, b) = pair_via(&ctl, backend.addr, |b| b.inbound, &identity("payments")).await;
    let rsp = send_h1(a.outbound, get_req(&format!("http://{}/", b.inbound)))
        .await
        .unwrap();
    assert_eq!(rsp.status(), 502);
    let reason = rsp.headers()["l5d-proxy-error"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("mTLS"), "{reason}");
    assert_eq!(backend.requests(), 0);
}

#[tokio::test]
async fn a_peer_from_another_trust_root_is_refused() {
    let ctl1 = Controller::start("24h").await;
    let ctl2 = Controller::start("24h").await;
    let backend = HttpBackend::start().await;
    let b = ctl2
        .proxy("api")
        .env("WEFT_PROXY_INBOUND_FORWARD", backend.addr)
        .spawn()
        .await
        .unwrap();
    let a = ctl1
        .proxy("web")
        .env(
            "WEFT_PROXY_MESHED_TARGETS",
            format!("{}={}", b.inbound, identity("api")),
        )
        .spawn()
        .await
        .unwrap();
    let rsp = send_h1(a.outbound, get_req(&format!("http://{}/", b.inbound)))
        .await
        .unwrap();
    assert_eq!(rsp.status(), 502);
    assert!(rsp.headers()["l5d-proxy-error"]
        .to_str()
        .unwrap()
        .contains("mTLS"));
    assert_eq!(backend.requests(), 0);
}

#[tokio::test]
async fn identities_outlive_the_controller_until_they_expire() {
    let mut ctl = Controller::start("5s").await;
    let backend = HttpBackend::start().await;
    let b = ctl
        .proxy("api")
        .env("WEFT_PROXY_INBOUND_FORWARD", backend.addr)
        .spawn()
        .await
        .unwrap();
    // A short pool idle timeout, so the check after expiry needs a new
    // connection (established connections are not re-verified, by design).
    let a = ctl
        .proxy("web")
        .env(
            "WEFT_PROXY_MESHED_TARGETS",
            format!("{}={}", b.inbound, identity("api")),
        )
        .env("WEFT_PROXY_CLIENT_IDLE_TIMEOUT", "1s")
        .spawn()
        .await
        .unwrap();
    let target = format!("http://{}/", b.inbound);
    ctl.kill();
    // Controller gone: the certificates in hand keep working.
    for _ in 0..3 {
        let rsp = send_h1(a.outbound, get_req(&target)).await.unwrap();
        assert_eq!(rsp.status(), 200);
    }
    // Once they expire, new connections are refused rather than trusted.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let rsp = send_h1(a.outbound, get_req(&target)).await.unwrap();
    assert_eq!(
        rsp.status(),
        502,
        "an expired certificate must not be accepted"
    );
    let m = a.metrics().await;
    assert!(
        sum(&m, "identity_cert_refresh_total", &[("result", "failure")]) >= 1.0,
        "{m}"
    );
}

#[tokio::test]
async fn plaintext_to_a_port_that_requires_identity_is_refused() {
    let ctl = Controller::start("24h").await;
    let backend = HttpBackend::start().await;
    let b = ctl
        .proxy("api")
        .env("WEFT_PROXY_INBOUND_FORWARD", backend.addr)
        .env("WEFT_PROXY_REQUIRE_IDENTITY_PORTS", backend.addr.port())
        .spawn()
        .await
        .unwrap();
    // Plaintext straight to B: reset, nothing reaches the app.
    let plain = send_h1(
        b.inbound,
        Request::get("/")
            .header("host", "x")
            .body(Empty::<Bytes>::new())
            .unwrap(),
    )
    .await;
    assert!(plain.is_err(), "{plain:?}");
    // Through a meshed proxy with mTLS: allowed.
    let a = ctl
        .proxy("web")
        .env(
            "WEFT_PROXY_MESHED_TARGETS",
            format!("{}={}", b.inbound, identity("api")),
        )
        .spawn()
        .await
        .unwrap();
    let rsp = send_h1(a.outbound, get_req(&format!("http://{}/", b.inbound)))
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(backend.requests(), 1);
}

#[tokio::test]
async fn a_token_for_another_service_account_gets_no_certificate() {
    let ctl = Controller::start("24h").await;
    // Identity "admin", token for "web".
    let p = ctl
        .proxy_as(&identity("admin"), &ctl.token("web"), &ctl.anchors())
        .spawn_unready()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(p.ready_status().await, 503);
    let m = p.metrics().await;
    assert!(
        sum(&m, "identity_cert_refresh_total", &[("result", "failure")]) >= 1.0,
        "{m}"
    );
    assert_eq!(
        sum(&m, "identity_cert_refresh_total", &[("result", "success")]),
        0.0,
        "{m}"
    );
}

#[tokio::test]
async fn the_controller_must_prove_its_identity() {
    let ctl = Controller::start("24h").await;
    let p = ctl
        .proxy("web")
        .env(
            "WEFT_PROXY_CONTROL_IDENTITY",
            "impostor.weft.serviceaccount.identity.weft.cluster.local",
        )
        .spawn_unready()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(p.ready_status().await, 503);
    assert!(
        p.log().contains("certificate refresh failed"),
        "{}",
        p.log()
    );
}

#[tokio::test]
async fn ready_only_after_the_first_certificate() {
    // Material first, controller later.
    let dir = tempfile::tempdir().unwrap();
    weft_identity::init(dir.path(), &weft_identity::InitOptions::default()).unwrap();
    let key = weft_identity::IdentityDir::new(dir.path())
        .load_token_key()
        .unwrap();
    let token = dir.path().join("token");
    std::fs::write(
        &token,
        weft_identity::mint_token(&key, NS, "web", Duration::from_secs(600)).unwrap(),
    )
    .unwrap();
    let identity_addr = weft_test_support::free_addr();
    let p = ProxyBuilder::new(env!("CARGO_BIN_EXE_weft-proxy"))
        .env("WEFT_PROXY_IDENTITY_NAME", identity("web"))
        .env("WEFT_PROXY_IDENTITY_ADDR", identity_addr)
        .env("WEFT_PROXY_IDENTITY_TOKEN_FILE", token.display())
        .env(
            "WEFT_PROXY_TRUST_ANCHORS",
            dir.path().join("ca.crt").display(),
        )
        .spawn_unready()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(p.ready_status().await, 503, "no certificate yet");

    let _ctl = Controller::start_in(dir, "24h", identity_addr).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while p.ready_status().await != 200 {
        assert!(
            Instant::now() < deadline,
            "never became ready:\n{}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
