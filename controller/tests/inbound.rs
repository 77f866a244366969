#![allow(clippy::unwrap_used)]
//! `InboundServerPolicies.GetPort`/`WatchPort` fed by `--config-dir`, end
//! to end: the real `weft-controller` binary, a TrafficTarget written to
//! and deleted from the config dir, real TLS over loopback, and the
//! `linkerd2-proxy-api` client a proxy uses.

mod support;

use std::time::{Duration, Instant};

use linkerd2_proxy_api::inbound::inbound_server_policies_client::InboundServerPoliciesClient;
use linkerd2_proxy_api::inbound::{proxy_protocol, PortSpec, Server};
use support::{channel, controller_name, identity_dir, write_config, Controller};
use tonic::transport::Channel;
use tonic::{Code, Streaming};

/// What docs/policy.md promises for the first message and for changes.
const PROMPT: Duration = Duration::from_secs(1);
/// Bound on waits that are not about latency.
const WAIT: Duration = Duration::from_secs(10);

const WORKLOAD: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: shop}
spec:
  serviceAccountName: web
  containers:
  - name: app
    ports: [{name: http, containerPort: 8080}]
    readinessProbe: {httpGet: {port: http, path: /ready}}
";

const TARGET: &str = "\
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: api-to-web, namespace: shop}
spec:
  destination: {kind: ServiceAccount, name: web}
  sources: [{kind: ServiceAccount, name: api}]
  rules: [{kind: TCPRoute, name: web-port}]
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: web-port, namespace: shop}
spec: {matches: {ports: [8080]}}
";

async fn start(extra: &[&str]) -> (tempfile::TempDir, tempfile::TempDir, Controller) {
    let id = identity_dir();
    let cfg = tempfile::tempdir().unwrap();
    write_config(cfg.path(), "workload.yaml", WORKLOAD);
    let mut args = vec![
        "--config-dir",
        cfg.path().to_str().unwrap(),
        "--config-poll-interval",
        "200ms",
    ];
    args.extend_from_slice(extra);
    let ctl = Controller::start(id.path(), &args).await.unwrap();
    (id, cfg, ctl)
}

async fn client(id: &std::path::Path, ctl: &Controller) -> InboundServerPoliciesClient<Channel> {
    let anchor = weft_identity::IdentityDir::new(id)
        .read_trust_anchors_pem()
        .unwrap();
    InboundServerPoliciesClient::new(
        channel(ctl.destination, &anchor, &controller_name())
            .await
            .unwrap(),
    )
}

fn spec(workload: &str, port: u32) -> PortSpec {
    PortSpec {
        workload: workload.into(),
        port,
    }
}

async fn next(s: &mut Streaming<Server>, within: Duration) -> Server {
    tokio::time::timeout(within, s.message())
        .await
        .unwrap_or_else(|_| panic!("no inbound policy within {within:?}"))
        .unwrap()
        .expect("WatchPort stream ended")
}

/// `(group, kind, name)` labels of a server.
fn labels(s: &Server) -> (String, String, String) {
    let l = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
    (l("group"), l("kind"), l("name"))
}

fn check_valid(s: &Server) {
    let Some(proxy_protocol::Kind::Detect(d)) = s.protocol.as_ref().and_then(|p| p.kind.as_ref())
    else {
        panic!("not Detect: {s:?}")
    };
    assert!(d.timeout.is_some());
    for a in s
        .authorizations
        .iter()
        .chain(d.http_routes.iter().flat_map(|r| r.authorizations.iter()))
    {
        assert!(!a.networks.is_empty() && a.authentication.is_some() && a.metadata.is_some());
    }
    assert!(d.http_routes.iter().all(|r| r.metadata.is_some()));
}

#[tokio::test]
async fn watch_port_follows_traffic_targets_in_the_config_dir() {
    let (id, cfg, ctl) = start(&["--default-inbound-policy", "deny"]).await;
    let mut c = client(id.path(), &ctl).await;

    let t = Instant::now();
    let mut stream = c
        .watch_port(spec(r#"{"ns":"shop","pod":"web-0"}"#, 8080))
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut stream, PROMPT).await;
    eprintln!("first message after {:?}", t.elapsed());
    assert!(t.elapsed() < PROMPT, "{:?}", t.elapsed());
    check_valid(&first);
    assert_eq!(labels(&first), ("".into(), "default".into(), "deny".into()));
    assert!(first.authorizations.is_empty());

    // A TrafficTarget appears: the stream changes within a second.
    let t = Instant::now();
    write_config(cfg.path(), "target.yaml", TARGET);
    let governed = next(&mut stream, PROMPT).await;
    eprintln!("TrafficTarget applied after {:?}", t.elapsed());
    check_valid(&governed);
    assert_eq!(
        labels(&governed),
        (
            "access.smi-spec.io".into(),
            "serviceaccount".into(),
            "web".into()
        )
    );
    assert_eq!(governed.authorizations.len(), 1);
    assert_eq!(governed.authorizations[0].labels["name"], "api-to-web");

    // GetPort answers the same, also for the older workload form.
    let got = c
        .get_port(spec("shop:web-0", 8080))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, governed);

    // Deleting it reverts within a second.
    let t = Instant::now();
    std::fs::remove_file(cfg.path().join("target.yaml")).unwrap();
    let reverted = next(&mut stream, PROMPT).await;
    eprintln!("TrafficTarget deleted after {:?}", t.elapsed());
    assert_eq!(reverted, first);

    // Unknown pods and malformed requests get clear statuses.
    let err = c
        .get_port(spec(r#"{"ns":"shop","pod":"nope"}"#, 8080))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("unknown pod shop/nope"), "{err:?}");
    let err = c.watch_port(spec("shop:nope", 8080)).await.err().unwrap();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    for (workload, port) in [
        ("web-0", 8080),
        ("{\"ns\":\"shop\"}", 8080),
        ("shop:web-0", 0),
        ("shop:web-0", 65536),
    ] {
        let err = c.watch_port(spec(workload, port)).await.err().unwrap();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{workload} {port}: {err:?}"
        );
        let err = c.get_port(spec(workload, port)).await.unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{workload} {port}: {err:?}"
        );
    }

    // The pod goes away: the stream ends with NotFound.
    std::fs::remove_file(cfg.path().join("workload.yaml")).unwrap();
    let err = tokio::time::timeout(WAIT, stream.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
}

#[tokio::test]
async fn a_target_naming_a_missing_route_group_admits_nothing_and_is_logged() {
    let (id, cfg, ctl) = start(&[]).await;
    let mut c = client(id.path(), &ctl).await;
    let mut stream = c
        .watch_port(spec("shop:web-0", 8080))
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut stream, PROMPT).await;
    assert_eq!(labels(&first).2, "all-unauthenticated");
    assert_eq!(first.authorizations.len(), 1);
    write_config(
        cfg.path(),
        "target.yaml",
        &TARGET.replace(
            "[{kind: TCPRoute, name: web-port}]",
            "[{kind: HTTPRouteGroup, name: missing}]",
        ),
    );
    let governed = next(&mut stream, PROMPT).await;
    assert_eq!(labels(&governed).1, "serviceaccount");
    assert!(governed.authorizations.is_empty(), "{governed:?}");
    let Some(proxy_protocol::Kind::Detect(d)) = governed.protocol.unwrap().kind else {
        panic!()
    };
    let routes: Vec<String> = d
        .http_routes
        .iter()
        .map(|r| format!("{:?}", r.metadata.as_ref().unwrap().kind))
        .collect();
    assert_eq!(
        d.http_routes.len(),
        2,
        "probe and catch-all only: {routes:?}"
    );
    assert!(d.http_routes.iter().all(|r| r.authorizations.len() <= 1));
    ctl.wait_for_log(
        "TrafficTarget shop/api-to-web: spec.rules[0]: unknown HTTPRouteGroup shop/missing",
        WAIT,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn bad_inbound_flags_stop_start_up_with_a_clear_error() {
    let id = identity_dir();
    let cfg = tempfile::tempdir().unwrap();
    for (flag, value, want) in [
        (
            "--default-inbound-policy",
            "allow",
            "unknown default inbound policy \"allow\"",
        ),
        (
            "--cluster-networks",
            "10.0.0.0/33",
            "invalid network \"10.0.0.0/33\"",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft-controller"))
            .arg("--identity-dir")
            .arg(id.path())
            .arg("--config-dir")
            .arg(cfg.path())
            .args([flag, value])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag), "{stderr}");
        assert!(stderr.contains(want), "{stderr}");
    }
}
