//! What an injected proxy is given (see `docs/proxy.md`, "Running in a
//! pod"): workload labels on its metrics, inline trust anchors, the
//! `weft-proxy await` start-up hook, a wait before exit on SIGTERM, and
//! exiting with a Job's application. Real processes and sockets throughout;
//! exit-with-app runs the proxy and an "application" in their own PID
//! namespace and cgroups, as in a pod with `shareProcessNamespace: true`.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use weft_test_support::backend::HttpBackend;
use weft_test_support::client::send_h1;
use weft_test_support::controller::ControllerProcess;
use weft_test_support::metrics::sum;
use weft_test_support::proxy::{ProxyBuilder, ProxyProcess};

fn proxy_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_weft-proxy"))
}

fn proxy() -> ProxyBuilder {
    ProxyBuilder::new(proxy_bin())
}

fn get_req(path: &str) -> Request<Empty<Bytes>> {
    Request::get(path)
        .header("host", "web.shop:80")
        .body(Empty::new())
        .unwrap()
}

/// Sends one request to the proxy's inbound side; its status.
async fn inbound_status(proxy: &ProxyProcess) -> u16 {
    match send_h1(proxy.inbound, get_req("/")).await {
        Ok(rsp) => rsp.status().as_u16(),
        Err(e) => panic!("request through {}: {e}\n{}", proxy.inbound, proxy.log()),
    }
}

/// Waits (bounded) until the proxy's log contains `needle`.
async fn wait_for_log(proxy: &ProxyProcess, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !proxy.log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "proxy never logged {needle:?}:\n{}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// === WEFT_PROXY_WORKLOAD ===

#[tokio::test]
async fn workload_labels_every_exported_metric() {
    let backend = HttpBackend::start().await;
    let proxy = proxy()
        .env("WEFT_PROXY_INBOUND_FORWARD", backend.addr)
        .env("WEFT_PROXY_WORKLOAD", "shop/deployment/web/web-1")
        .spawn()
        .await
        .unwrap();
    assert_eq!(inbound_status(&proxy).await, 200);
    let m = proxy.metrics().await;
    assert!(
        m.contains(r#"request_total{namespace="shop",pod="web-1",deployment="web",direction="inbound",authority="web.shop:80",tls="disabled"} 1"#),
        "{m}"
    );
    let pod = [
        ("namespace", "shop"),
        ("pod", "web-1"),
        ("deployment", "web"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut labels = pod.to_vec();
        labels.extend_from_slice(extra);
        labels
    };
    assert_eq!(
        sum(&m, "response_total", &with(&[("status_code", "200")])),
        1.0,
        "{m}"
    );
    assert_eq!(sum(&m, "response_latency_ms_count", &with(&[])), 1.0, "{m}");
    assert!(
        sum(&m, "tcp_open_total", &with(&[("direction", "inbound")])) >= 1.0,
        "{m}"
    );
    // Every sample carries the pod's labels: none is left without them.
    for line in m.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            line.contains(r#"namespace="shop",pod="web-1",deployment="web""#),
            "unlabelled sample {line:?}"
        );
    }
}

#[tokio::test]
async fn a_bare_pod_has_namespace_and_pod_labels_only() {
    let backend = HttpBackend::start().await;
    let proxy = proxy()
        .env("WEFT_PROXY_INBOUND_FORWARD", backend.addr)
        .env("WEFT_PROXY_WORKLOAD", "shop///debug")
        .spawn()
        .await
        .unwrap();
    assert_eq!(inbound_status(&proxy).await, 200);
    let m = proxy.metrics().await;
    assert!(
        m.contains(r#"request_total{namespace="shop",pod="debug",direction="inbound","#),
        "{m}"
    );
}

#[test]
fn a_malformed_workload_stops_the_proxy_naming_the_variable() {
    let out = Command::new(proxy_bin())
        .env("WEFT_PROXY_WORKLOAD", "shop/deployment/web")
        .env("WEFT_PROXY_ADMIN_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("WEFT_PROXY_WORKLOAD") && stderr.contains("NAMESPACE/KIND/NAME/POD"),
        "{stderr}"
    );
}

// === WEFT_PROXY_TRUST_ANCHORS ===

/// The controller binary, built beside the proxy.
fn controller_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_weft-proxy")).with_file_name("weft-controller")
}

#[tokio::test]
async fn trust_anchors_from_a_file_or_inline() {
    let bin = controller_bin();
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build -p weft-controller)",
        bin.display()
    );
    let controller = ControllerProcess::start(&bin, "1h").await.unwrap();
    let pem = std::fs::read_to_string(controller.anchors()).unwrap();
    assert!(pem.starts_with("-----BEGIN"), "{pem}");

    // /ready is 200 only once the proxy holds a certificate, which it got
    // over TLS verified against the anchors: both forms were used for real.
    for (form, anchors) in [
        ("file", controller.anchors().display().to_string()),
        ("inline", pem.clone()),
    ] {
        let builder = controller
            .proxy(proxy_bin(), "shop", "web")
            .unwrap()
            .env("WEFT_PROXY_TRUST_ANCHORS", &anchors);
        let proxy = builder
            .spawn()
            .await
            .unwrap_or_else(|e| panic!("{form}: {e}"));
        let (status, body) = weft_test_support::client::get(proxy.admin, "/ready")
            .await
            .unwrap();
        assert_eq!(status, 200, "{form}: {body}");
        assert!(body.contains("identity: web.shop."), "{form}: {body}");
    }
}

#[test]
fn bad_inline_anchors_are_reported_without_dumping_them() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t").unwrap();
    let out = Command::new(proxy_bin())
        .env(
            "WEFT_PROXY_IDENTITY_NAME",
            "web.shop.serviceaccount.identity.weft.cluster.local",
        )
        .env("WEFT_PROXY_IDENTITY_ADDR", "127.0.0.1:1")
        .env("WEFT_PROXY_IDENTITY_TOKEN_FILE", &token)
        .env(
            "WEFT_PROXY_TRUST_ANCHORS",
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
        )
        .env("WEFT_PROXY_INBOUND_ADDR", "127.0.0.1:0")
        .env("WEFT_PROXY_OUTBOUND_ADDR", "127.0.0.1:0")
        .env("WEFT_PROXY_ADMIN_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("WEFT_PROXY_TRUST_ANCHORS (inline PEM)"),
        "{stderr}"
    );
    assert!(!stderr.contains("bm90IGEgY2VydA"), "{stderr}");
}

// === weft-proxy await ===

async fn run_await(args: &[&str], env: &[(&str, String)]) -> Output {
    let mut cmd = tokio::process::Command::new(proxy_bin());
    cmd.arg("await")
        .args(args)
        .env_remove("WEFT_PROXY_ADMIN_ADDR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("weft-proxy await is bounded by its timeout")
        .unwrap()
}

#[tokio::test]
async fn await_returns_once_the_proxy_is_ready() {
    let proxy = proxy().spawn().await.unwrap();
    // The injected proxy's admin listens on 0.0.0.0; await polls loopback.
    let wildcard = format!("0.0.0.0:{}", proxy.admin.port());
    let out = run_await(&[], &[("WEFT_PROXY_ADMIN_ADDR", wildcard)]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("is ready"),
        "{out:?}"
    );

    let flag = proxy.admin.to_string();
    let out = run_await(&["--timeout", "10s", "--admin-addr", &flag], &[]).await;
    assert!(out.status.success(), "{out:?}");
}

#[tokio::test]
async fn await_waits_for_a_proxy_that_starts_later() {
    let admin = weft_test_support::free_addr();
    let mut waiting = tokio::process::Command::new(proxy_bin())
        .args([
            "await",
            "--timeout",
            "60s",
            "--admin-addr",
            &admin.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Nothing listens yet: await keeps polling.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(waiting.try_wait().unwrap().is_none(), "await gave up early");
    let _proxy = proxy()
        .env("WEFT_PROXY_ADMIN_ADDR", admin)
        .spawn()
        .await
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), waiting.wait())
        .await
        .expect("await notices the proxy")
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn await_gives_up_after_the_timeout() {
    // Nothing listens.
    let nothing = weft_test_support::free_addr().to_string();
    let out = run_await(&["--timeout", "1s", "--admin-addr", &nothing], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("http://{nothing}/ready was not ready within 1s")),
        "{stderr}"
    );

    // A proxy that answers 503 (identity configured, no controller).
    let dir = tempfile::tempdir().unwrap();
    let anchor =
        weft_identity::generate_anchor("cluster.local", Duration::from_secs(3600)).unwrap();
    let anchors = dir.path().join("ca.crt");
    std::fs::write(&anchors, anchor.cert_pem).unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t").unwrap();
    let unready = proxy()
        .env(
            "WEFT_PROXY_IDENTITY_NAME",
            "web.shop.serviceaccount.identity.weft.cluster.local",
        )
        .env("WEFT_PROXY_IDENTITY_ADDR", weft_test_support::free_addr())
        .env("WEFT_PROXY_IDENTITY_TOKEN_FILE", token.display())
        .env("WEFT_PROXY_TRUST_ANCHORS", anchors.display())
        .spawn_unready()
        .await
        .unwrap();
    assert_eq!(unready.ready_status().await, 503);
    let admin = unready.admin.to_string();
    let out = run_await(&["--timeout", "1s", "--admin-addr", &admin], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/ready answered 503"),
        "{out:?}"
    );

    // Usage errors exit 2.
    let out = run_await(&["--timeout", "soon"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = run_await(&[], &[("WEFT_PROXY_ADMIN_ADDR", "nowhere".into())]).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("WEFT_PROXY_ADMIN_ADDR"),
        "{out:?}"
    );
}

// === WEFT_PROXY_WAIT_BEFORE_EXIT ===

#[tokio::test]
async fn sigterm_keeps_serving_for_the_wait_then_drains_and_exits() {
    let backend = HttpBackend::start().await;
    let mut proxy = proxy()
        .env("WEFT_PROXY_INBOUND_FORWARD", backend.addr)
        .env("WEFT_PROXY_WAIT_BEFORE_EXIT", "8s")
        .spawn()
        .await
        .unwrap();
    proxy.terminate();
    wait_for_log(&proxy, "serving for WEFT_PROXY_WAIT_BEFORE_EXIT").await;
    // Still serving normally: new connections, requests, readiness.
    for _ in 0..3 {
        assert_eq!(inbound_status(&proxy).await, 200);
    }
    assert_eq!(proxy.ready_status().await, 200);
    assert!(
        !proxy.log().contains("wait before exit elapsed"),
        "the checks above ran after the wait (machine too slow?):\n{}",
        proxy.log()
    );
    let status = proxy
        .wait_exit(Duration::from_secs(60))
        .await
        .expect("the proxy exits after the wait");
    assert!(status.success(), "{status}");
    let log = proxy.log();
    let waited = log.find("wait before exit elapsed; draining").unwrap();
    let drained = log.find("drained; exiting").unwrap();
    assert!(waited < drained, "{log}");
}

#[tokio::test]
async fn post_shutdown_skips_the_wait() {
    let mut proxy = proxy()
        .env("WEFT_PROXY_WAIT_BEFORE_EXIT", "10m")
        .spawn()
        .await
        .unwrap();
    let req = Request::post("/shutdown")
        .header("host", "admin")
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(send_h1(proxy.admin, req).await.unwrap().status(), 200);
    let status = proxy
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("exits without waiting");
    assert!(status.success(), "{status}");
}

// === WEFT_PROXY_EXIT_WITH_APP ===

/// A cgroup (v1 `pids` hierarchy) standing in for the application
/// container's, removed when dropped.
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn create() -> Self {
        let root = Path::new("/sys/fs/cgroup/pids");
        assert!(
            root.join("cgroup.procs").exists(),
            "this test needs the cgroup v1 pids hierarchy at {} (and root) to put the \
             application in a cgroup of its own",
            root.display()
        );
        let dir = root.join(format!("weft-proxy-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {} (needs root): {e}", dir.display()));
        Self(dir)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Empty once the namespace's processes are gone; retry briefly.
        for _ in 0..100 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[tokio::test]
async fn exit_with_app_exits_zero_once_the_app_container_is_done() {
    assert!(
        Path::new("/usr/bin/unshare").exists() || which("unshare"),
        "this test needs util-linux unshare"
    );
    let cgroup = TestCgroup::create();
    let dir = tempfile::tempdir().unwrap();
    let done = dir.path().join("done");
    // PID 1 of a new PID namespace plays the pod's pause process. It starts
    // the "application" (which moves itself into its own cgroup, like a
    // second container, and runs until the test says so, forking a child
    // each iteration) and the proxy, then waits for the proxy.
    let app = format!(
        "echo $$ > {procs}; while [ ! -e {done} ]; do sleep 0.05; done",
        procs = cgroup.0.join("cgroup.procs").display(),
        done = done.display(),
    );
    let pod = format!("sh -c '{app}' & \"$1\" & wait $!");
    let mut proxy = proxy()
        .env("WEFT_PROXY_EXIT_WITH_APP", "true")
        .wrap(&[
            "unshare",
            "--pid",
            "--fork",
            "--kill-child",
            "--mount-proc",
            "sh",
            "-c",
            &pod,
            "pod",
        ])
        .spawn()
        .await
        .unwrap();
    wait_for_log(&proxy, "application processes seen").await;
    // The proxy's own container (and pid 1) do not count; the app does.
    assert_eq!(proxy.ready_status().await, 200);
    std::fs::write(&done, "").unwrap();
    let status = proxy
        .wait_exit(Duration::from_secs(60))
        .await
        .unwrap_or_else(|| panic!("the proxy outlived the app:\n{}", proxy.log()));
    assert!(status.success(), "{status}\n{}", proxy.log());
    let log = proxy.log();
    assert!(
        log.contains("the application has exited; draining"),
        "{log}"
    );
    drop(proxy);
    drop(cgroup);
}

fn which(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(bin).exists()))
}
