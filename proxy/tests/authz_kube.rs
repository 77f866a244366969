//! Inbound authorization end to end in cluster mode (docs/policy.md): the
//! scenarios of `authz.rs` with the controller fed by a real Kubernetes
//! API (the project's test control plane: etcd + kube-apiserver 1.20 +
//! kube-controller-manager) instead of files. Everything an operator would
//! do goes through kubectl: `install/crds.yaml`, the namespace's
//! `config.linkerd.io/default-inbound-policy` (`kubectl annotate`),
//! TrafficTargets and HTTPRouteGroups (`kubectl apply` / `kubectl
//! delete`), the Warning Events read back (`kubectl get events`).
//!
//! - The controller runs with `--kubeconfig`, authenticated as
//!   ServiceAccount `weft/weft-controller` bound to exactly the ClusterRole
//!   docs/destination.md documents (so missing RBAC for TrafficTargets,
//!   routes or Events fails here).
//! - Pod `b-0` is made by the StatefulSet controller from StatefulSet `b`
//!   (ServiceAccount `b`, container port 8080 with a readiness probe) and
//!   made ready with the harness at an address in a network namespace
//!   ([`TestNet`]: the API server refuses loopback pod addresses), where
//!   its application, an HTTP backend, listens. Its proxy runs in the host
//!   namespace as `WEFT_PROXY_WORKLOAD=shop/statefulset/b/b-0` with b's
//!   identity and forwards inbound traffic to the pod's address.
//! - The client is a proxy with ServiceAccount `a`'s identity. Both
//!   proxies get their certificates from the controller's identity service
//!   for real ServiceAccount tokens (TokenRequest, checked by TokenReview).
//!   They share the host's loopback, so
//!   `WEFT_PROXY_INBOUND_TRUST_LOOPBACK` stays unset, as in `authz.rs`.
//!
//! Needs root and `ip` for the network namespace, and the test control
//! plane's binaries (`integration/k8s/install.sh`): without them the test
//! fails, saying what is missing.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use weft_kube_harness::{wait_for, TestControlPlane, SERVICE_ACCOUNT_ISSUER};
use weft_test_support::authz::{self, traffic_target_yaml, until_counted, Reply, WAIT};
use weft_test_support::backend::HttpBackend;
use weft_test_support::client::send_h1;
use weft_test_support::controller::{identity, ControllerOptions, ControllerProcess};
use weft_test_support::metrics::sum;
use weft_test_support::netns::TestNet;
use weft_test_support::proxy::ProxyBuilder;
use weft_test_support::rbac::{
    controller_rbac_yaml, CONTROLLER_NAMESPACE, CONTROLLER_SERVICE_ACCOUNT,
};
use weft_test_support::scenario::{route_group_yaml, NS};
use weft_test_support::{controller_bin, proxy_bin};

/// The port b's application listens on (at the pod's own address).
const POD_PORT: u16 = 8080;
/// How fast a policy change must be in force (docs/policy.md), counted
/// from the moment kubectl has returned (the object is stored).
const WITHIN: Duration = Duration::from_secs(1);

/// StatefulSet `b`: one pod, `b-0`, of ServiceAccount `b`, meshed, with a
/// readiness probe (so under `deny` the port still has a route everyone
/// may use, and a refused request is answered, not its connection closed).
fn statefulset_yaml() -> String {
    format!(
        "apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: b, namespace: {NS}}}
spec:
  serviceName: b
  replicas: 1
  selector: {{matchLabels: {{app: b}}}}
  template:
    metadata:
      labels: {{app: b}}
      annotations: {{linkerd.io/inject: enabled}}
    spec:
      serviceAccountName: b
      automountServiceAccountToken: false
      containers:
      - name: app
        image: app
        ports: [{{name: http, containerPort: {POD_PORT}}}]
        readinessProbe: {{httpGet: {{path: /ready, port: {POD_PORT}}}}}
"
    )
}

/// A control plane with the CRDs, namespace [`NS`], ServiceAccounts `a`
/// and `b`, and the controller's ServiceAccount with the documented RBAC.
async fn cluster() -> TestControlPlane {
    let started = Instant::now();
    let plane = tokio::time::timeout(Duration::from_secs(100), TestControlPlane::start())
        .await
        .expect("control plane start timed out")
        .unwrap();
    plane
        .kubectl_with_stdin(
            &["apply", "-f", "-"],
            Some(include_str!("../../install/crds.yaml")),
        )
        .await
        .unwrap();
    for crd in [
        "traffictargets.access.smi-spec.io",
        "httproutegroups.specs.smi-spec.io",
        "tcproutes.specs.smi-spec.io",
    ] {
        plane.wait_for_crd_established(crd).await.unwrap();
    }
    plane.create_namespace_for_pods(NS).await.unwrap();
    for sa in ["a", "b"] {
        plane.create_service_account(NS, sa).await.unwrap();
    }
    plane.create_namespace(CONTROLLER_NAMESPACE).await.unwrap();
    plane
        .kubectl_with_stdin(&["apply", "-f", "-"], Some(&controller_rbac_yaml()))
        .await
        .unwrap();
    eprintln!("cluster ready after {:?}", started.elapsed());
    plane
}

/// `weft-controller --kubeconfig` with a kubeconfig for the controller's
/// ServiceAccount token: exactly the documented RBAC, no more.
async fn controller(plane: &TestControlPlane, dir: &std::path::Path) -> ControllerProcess {
    let token = plane
        .request_token(
            CONTROLLER_NAMESPACE,
            CONTROLLER_SERVICE_ACCOUNT,
            &[SERVICE_ACCOUNT_ISSUER],
            Some(3600),
        )
        .await
        .unwrap();
    let kubeconfig = dir.join("weft-controller.kubeconfig");
    std::fs::write(&kubeconfig, plane.token_kubeconfig(&token)).unwrap();
    let ctl = ControllerProcess::start_with(
        &controller_bin!(),
        "24h",
        ControllerOptions::kubeconfig(&kubeconfig),
    )
    .await
    .unwrap();
    assert!(
        ctl.log().contains("kubernetes feed started"),
        "{}",
        ctl.log()
    );
    ctl
}

/// A proxy builder with ServiceAccount `sa`'s identity, from a real token
/// for it (audience `identity.l5d.io`, written to `dir`).
async fn meshed(
    plane: &TestControlPlane,
    ctl: &ControllerProcess,
    dir: &std::path::Path,
    sa: &str,
) -> ProxyBuilder {
    let token = plane
        .request_token(NS, sa, &["identity.l5d.io"], None)
        .await
        .unwrap();
    let path = dir.join(format!("{sa}-token"));
    std::fs::write(&path, token).unwrap();
    ctl.proxy_as(proxy_bin!(), &identity(NS, sa), &path, &ctl.anchors())
}

/// Runs `kubectl ARGS` (with `stdin`); returns when it started and how
/// long it took (its own start-up and API discovery included).
async fn kubectl(
    plane: &TestControlPlane,
    args: &[&str],
    stdin: Option<&str>,
) -> (Instant, Duration) {
    let start = Instant::now();
    plane.kubectl_with_stdin(args, stdin).await.unwrap();
    (start, start.elapsed())
}

/// Waits (≤ [`WAIT`]) for a Warning Event with `reason` regarding
/// TrafficTarget `name`, as `kubectl get events` lists it; returns its
/// message.
async fn traffic_target_warning(plane: &TestControlPlane, name: &str, reason: &str) -> String {
    let found = wait_for(
        &format!("a {reason} Warning Event on TrafficTarget {name}"),
        WAIT,
        || async move {
            let out = plane
                .kubectl(&["get", "events", "-n", NS, "-o", "json"])
                .await?;
            let events: serde_json::Value = serde_json::from_str(&out)?;
            let field = |e: &serde_json::Value, path: &[&str]| {
                path.iter()
                    .try_fold(e, |v, k| v.get(*k))
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned)
            };
            Ok(events["items"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| {
                    field(e, &["type"]).as_deref() == Some("Warning")
                        && field(e, &["reason"]).as_deref() == Some(reason)
                        && field(e, &["involvedObject", "kind"]).as_deref() == Some("TrafficTarget")
                        && field(e, &["involvedObject", "name"]).as_deref() == Some(name)
                })
                .map(|e| field(e, &["message"]).unwrap_or_default()))
        },
    )
    .await;
    match found {
        Ok(message) => message,
        Err(e) => panic!(
            "{e}\n--- kubectl get events ---\n{}",
            plane
                .kubectl(&["get", "events", "-n", NS])
                .await
                .unwrap_or_default()
        ),
    }
}

/// What the test runs on. Locals drop in reverse order: the proxies, the
/// controller, the cluster, the backend, and the network last.
#[tokio::test]
async fn kube_traffic_targets_allow_and_revoke_through_real_proxies() {
    if let Some(why) = TestNet::unavailable() {
        panic!(
            "cannot run: {why}; the cluster-mode authorization test needs a network \
             namespace for pod addresses (run as root with iproute2)"
        );
    }
    let net = TestNet::create().unwrap();
    let pod_ip = net.add_ip(10).unwrap();
    let app: HttpBackend = net
        .http_backend(SocketAddr::new(pod_ip, POD_PORT))
        .await
        .unwrap();
    let plane = cluster().await;
    let up = Instant::now();
    let dir = tempfile::tempdir().unwrap();

    // Pod b-0, made by the StatefulSet controller, "running" at pod_ip.
    plane.apply_yaml(&statefulset_yaml()).await.unwrap();
    let plane_ref = &plane;
    wait_for("pod b-0 of StatefulSet b", WAIT, || async move {
        Ok(plane_ref
            .kubectl(&["get", "pod", "b-0", "-n", NS, "-o", "name"])
            .await
            .ok())
    })
    .await
    .unwrap();
    plane.set_pod_ready(NS, "b-0", pod_ip).await.unwrap();

    let ctl = controller(&plane, dir.path()).await;
    // What the injector gives b-0's proxy for an unannotated namespace.
    let b = meshed(&plane, &ctl, dir.path(), "b")
        .await
        .env("WEFT_PROXY_DESTINATION_ADDR", ctl.destination_addr)
        .env("WEFT_PROXY_WORKLOAD", format!("{NS}/statefulset/b/b-0"))
        .env(
            "WEFT_PROXY_INBOUND_FORWARD",
            SocketAddr::new(pod_ip, POD_PORT),
        )
        .env("WEFT_PROXY_DEFAULT_INBOUND_POLICY", "all-unauthenticated")
        .env("WEFT_PROXY_INBOUND_PORTS", POD_PORT)
        .spawn()
        .await
        .unwrap();
    let a = meshed(&plane, &ctl, dir.path(), "a")
        .await
        .env(
            "WEFT_PROXY_MESHED_TARGETS",
            format!("{}={}", b.inbound, identity(NS, "b")),
        )
        .spawn()
        .await
        .unwrap();
    let get = |path: &'static str| {
        let (a, b) = (&a, &b);
        async move { authz::send(a, b.inbound, "GET", path, &[]).await.unwrap() }
    };
    let until = |path: &'static str, status: u16| {
        let (a, b, ctl) = (&a, &b, &ctl);
        async move {
            authz::until_status(a, b.inbound, path, status, WAIT)
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "{e}\n--- b-0's proxy ---\n{}\n--- controller ---\n{}",
                        b.log(),
                        ctl.log()
                    )
                })
        }
    };
    // The controller's first answer for b-0's port is in force.
    let start = Instant::now();
    while !b.log().contains("inbound policy update") {
        assert!(
            start.elapsed() < WAIT,
            "no inbound policy from the controller:\n{}\n--- controller ---\n{}",
            b.log(),
            ctl.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let open = get("/allowed").await;
    assert_eq!(open.status, 200, "open before the annotation: {open:?}");

    eprintln!("=== scenario 1: the namespace annotated deny refuses a's requests");
    let (started, took) = kubectl(
        &plane,
        &[
            "annotate",
            "namespace",
            NS,
            "config.linkerd.io/default-inbound-policy=deny",
        ],
        None,
    )
    .await;
    let refused_after = until("/allowed", 403).await;
    eprintln!(
        "kubectl annotate took {took:?}; refused {refused_after:?} after it returned, {:?} after it started",
        started.elapsed()
    );
    assert!(refused_after < WITHIN, "refused after {refused_after:?}");
    let served = app.requests();
    let refused = get("/allowed").await;
    assert_eq!(
        (refused.status, refused.proxy_error.as_deref()),
        (403, Some("unauthorized request on route default")),
        "{refused:?}"
    );
    assert_eq!(app.requests(), served, "a refused request reached the app");
    // The kubelet's probe still passes (plaintext, from anyone).
    let probe = send_h1(
        b.inbound,
        http::Request::get(format!("http://{}/ready", b.inbound))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(Reply::read(probe).await.status, 200, "the probe under deny");
    until_counted(
        &b,
        "inbound_http_authz_deny_total",
        &[
            ("srv_kind", "default"),
            ("srv_name", "deny"),
            ("client_id", &identity(NS, "a")),
        ],
        1.0,
    )
    .await;

    eprintln!("=== scenario 2: a TrafficTarget allows a GET /allowed, nothing else");
    let objects = format!(
        "{}---\n{}",
        route_group_yaml(
            "v1alpha4",
            "b-routes",
            "  - {name: allowed, pathRegex: /allowed, methods: [GET]}\n"
        ),
        traffic_target_yaml(
            "a-to-b",
            "b",
            &["a"],
            "  - {kind: HTTPRouteGroup, name: b-routes, matches: [allowed]}\n",
        )
    );
    let (started, took) = kubectl(&plane, &["apply", "-f", "-"], Some(&objects)).await;
    let allowed_after = until("/allowed", 200).await;
    eprintln!(
        "kubectl apply took {took:?}; allowed {allowed_after:?} after it returned, {:?} after it started",
        started.elapsed()
    );
    assert!(allowed_after < WITHIN, "allowed after {allowed_after:?}");
    for (method, path) in [
        ("GET", "/other"),
        ("POST", "/allowed"),
        ("GET", "/allowed/x"),
    ] {
        let r = authz::send(&a, b.inbound, method, path, &[]).await.unwrap();
        assert_eq!(r.status, 403, "{method} {path}: {r:?}");
        let why = r.proxy_error.unwrap_or_default();
        assert!(why.starts_with("unauthorized request on route "), "{why}");
    }
    until_counted(
        &b,
        "inbound_http_authz_allow_total",
        &[
            ("srv_group", "access.smi-spec.io"),
            ("srv_kind", "serviceaccount"),
            ("srv_name", "b"),
            ("route_kind", "HTTPRouteGroup"),
            ("route_name", "b-routes"),
            ("authz_name", "a-to-b"),
            ("client_id", &identity(NS, "a")),
        ],
        1.0,
    )
    .await;

    eprintln!("=== scenario 3: deleting the TrafficTarget refuses again");
    let (started, took) = kubectl(
        &plane,
        &["delete", "traffictarget", "a-to-b", "-n", NS],
        None,
    )
    .await;
    let revoked_after = until("/allowed", 403).await;
    eprintln!(
        "kubectl delete took {took:?}; refused {revoked_after:?} after it returned, {:?} after it started",
        started.elapsed()
    );
    assert!(revoked_after < WITHIN, "refused after {revoked_after:?}");

    eprintln!("=== scenario 4: a TrafficTarget naming a missing HTTPRouteGroup");
    let governed = |text: &str| {
        sum(
            text,
            "inbound_http_authz_deny_total",
            &[("srv_kind", "serviceaccount"), ("srv_name", "b")],
        )
    };
    let before = governed(&b.metrics().await);
    let served = app.requests();
    let ghost = traffic_target_yaml(
        "a-to-b-ghost",
        "b",
        &["a"],
        "  - {kind: HTTPRouteGroup, name: no-such-group, matches: [allowed]}\n",
    );
    kubectl(&plane, &["apply", "-f", "-"], Some(&ghost)).await;
    // It governs b (the proxy's server is b's ServiceAccount again) and,
    // its only rule dropped, admits nothing: not even the source it names.
    let start = Instant::now();
    loop {
        let r = get("/allowed").await;
        assert_eq!(r.status, 403, "access widened: {r:?}");
        if governed(&b.metrics().await) > before {
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "the TrafficTarget never reached b-0's proxy:\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get("/other").await.status, 403);
    assert_eq!(app.requests(), served, "a refused request reached the app");
    let message =
        traffic_target_warning(&plane, "a-to-b-ghost", "TrafficTargetRouteNotFound").await;
    assert!(
        message.contains("unknown HTTPRouteGroup shop/no-such-group"),
        "{message}"
    );
    eprintln!(
        "kubectl get events -n {NS}:\n{}",
        plane.kubectl(&["get", "events", "-n", NS]).await.unwrap()
    );

    let log = ctl.log();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the documented RBAC is not enough:\n{log}"
    );
    assert!(!log.contains("cannot publish a Kubernetes Event"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    eprintln!("scenarios took {:?} after the cluster was up", up.elapsed());
}
