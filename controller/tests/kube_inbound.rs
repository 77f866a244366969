#![allow(clippy::unwrap_used)]
//! `InboundServerPolicies.WatchPort` fed by the Kubernetes feed, end to
//! end: the project's real test control plane (etcd + kube-apiserver
//! 1.20), `install/crds.yaml`, the real `weft-controller` binary with
//! `--kubeconfig`, TrafficTargets (v1alpha3 and v1alpha2) and their routes
//! applied and deleted through the API, and the Warning Events an operator
//! reads back for what cannot be applied.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use linkerd2_proxy_api::inbound::inbound_server_policies_client::InboundServerPoliciesClient;
use linkerd2_proxy_api::inbound::{proxy_protocol, PortSpec, Server};
use support::{channel, controller_name, identity_dir, Controller};
use tonic::transport::Channel;
use tonic::{Code, Streaming};
use weft_kube_harness::{StartOptions, TestControlPlane};

const NS: &str = "shop";
/// docs/policy.md: changes reach the proxies within a second (plus the
/// API server's watch delivery, which is immediate on loopback).
const PROMPT: Duration = Duration::from_secs(1);
const WAIT: Duration = Duration::from_secs(30);

fn pod(name: &str, annotations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {NS}\n  \
         annotations: {{{annotations}}}\n\
         spec:\n  serviceAccountName: web\n  automountServiceAccountToken: false\n  \
         containers:\n  - name: app\n    image: web\n    \
         ports: [{{containerPort: 8080, name: http}}, {{containerPort: 9090}}]\n"
    )
}

fn target(version: &str, name: &str, port: &str, rules: &str) -> String {
    format!(
        "apiVersion: access.smi-spec.io/{version}\nkind: TrafficTarget\n\
         metadata: {{name: {name}, namespace: {NS}}}\n\
         spec:\n  destination: {{kind: ServiceAccount, name: web, namespace: {NS}{port}}}\n  \
         sources: [{{kind: ServiceAccount, name: api}}]\n  rules: [{rules}]\n"
    )
}

const GROUP: &str = "apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: web-routes, namespace: shop}
spec:
  matches:
  - {name: metrics, pathRegex: /metrics, methods: [GET]}
";

const TCP: &str = "apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: every-port, namespace: shop}
spec: {}
";

async fn next(s: &mut Streaming<Server>, within: Duration) -> Server {
    tokio::time::timeout(within, s.message())
        .await
        .unwrap_or_else(|_| panic!("no inbound policy within {within:?}"))
        .unwrap()
        .expect("WatchPort stream ended")
}

fn kind_name(s: &Server) -> (String, String) {
    (s.labels["kind"].clone(), s.labels["name"].clone())
}

/// `default:NAME` or `GROUP/KIND:NAME` of each HTTP route.
fn route_names(s: &Server) -> Vec<String> {
    use linkerd2_proxy_api::meta::metadata::Kind;
    let Some(proxy_protocol::Kind::Detect(d)) = s.protocol.as_ref().and_then(|p| p.kind.as_ref())
    else {
        return Vec::new();
    };
    d.http_routes
        .iter()
        .map(
            |r| match r.metadata.as_ref().unwrap().kind.as_ref().unwrap() {
                Kind::Default(n) => format!("default:{n}"),
                Kind::Resource(r) => format!("{}/{}:{}", r.group, r.kind, r.name),
            },
        )
        .collect()
}

async fn wait_for_event(client: &kube::Client, ns: &str, name: &str, reason: &str) -> Event {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + WAIT;
    loop {
        let all = api.list(&ListParams::default()).await.unwrap().items;
        if let Some(e) = all.iter().find(|e| {
            e.reason.as_deref() == Some(reason)
                && e.reporting_controller.as_deref() == Some("weft-controller")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        }) {
            return e.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {reason} Event regarding {name} within {WAIT:?}; have {:?}",
            all.iter()
                .map(|e| (&e.reason, &e.regarding))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn watch_port_follows_traffic_targets_in_the_cluster() {
    let started = Instant::now();
    let opts = StartOptions {
        controller_manager: false,
        ..StartOptions::default()
    };
    let plane = tokio::time::timeout(Duration::from_secs(240), TestControlPlane::start_with(opts))
        .await
        .expect("control plane start timed out")
        .unwrap();
    plane
        .apply_yaml(include_str!("../../install/crds.yaml"))
        .await
        .unwrap();
    for name in [
        "traffictargets.access.smi-spec.io",
        "httproutegroups.specs.smi-spec.io",
        "tcproutes.specs.smi-spec.io",
    ] {
        plane.wait_for_crd_established(name).await.unwrap();
    }
    plane.create_namespace(NS).await.unwrap();
    plane.create_service_account(NS, "web").await.unwrap();
    plane.apply_yaml(&pod("web-0", "")).await.unwrap();
    plane
        .apply_yaml(&pod(
            "typo-0",
            "config.linkerd.io/default-inbound-policy: alow",
        ))
        .await
        .unwrap();
    let client = plane.client();
    eprintln!("cluster ready after {:?}", started.elapsed());

    let id = identity_dir();
    let kubeconfig = plane.kubeconfig_path().to_str().unwrap().to_owned();
    let ctl = Controller::start(
        id.path(),
        &[
            "--kubeconfig",
            &kubeconfig,
            "--default-inbound-policy",
            "deny",
        ],
    )
    .await
    .unwrap();
    let anchor = weft_identity::IdentityDir::new(id.path())
        .read_trust_anchors_pem()
        .unwrap();
    let mut c = InboundServerPoliciesClient::<Channel>::new(
        channel(ctl.destination, &anchor, &controller_name())
            .await
            .unwrap(),
    );
    let spec = |pod: &str, port| PortSpec {
        workload: format!(r#"{{"ns":"{NS}","pod":"{pod}"}}"#),
        port,
    };

    let t = Instant::now();
    let mut stream = c
        .watch_port(spec("web-0", 8080))
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut stream, PROMPT).await;
    assert!(t.elapsed() < PROMPT, "{:?}", t.elapsed());
    assert_eq!(kind_name(&first), ("default".into(), "deny".into()));
    // The bad annotation means deny, and is reported on the pod.
    let typo = c.get_port(spec("typo-0", 8080)).await.unwrap().into_inner();
    assert_eq!(kind_name(&typo), ("default".into(), "deny".into()));
    let err = c.get_port(spec("nope", 8080)).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = c.get_port(spec("web-0", 0)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // A TrafficTarget whose route group does not exist governs the pod
    // (admitting nothing) and is reported on the TrafficTarget.
    let t = Instant::now();
    let tt = target(
        "v1alpha3",
        "scrape",
        "",
        "{kind: HTTPRouteGroup, name: web-routes, matches: [metrics]}",
    );
    let created: Vec<DynamicObject> = plane.apply_yaml(&tt).await.unwrap();
    let governed = next(&mut stream, PROMPT).await;
    eprintln!("TrafficTarget applied after {:?}", t.elapsed());
    assert_eq!(
        kind_name(&governed),
        ("serviceaccount".into(), "web".into())
    );
    assert!(governed.authorizations.is_empty());
    assert_eq!(route_names(&governed), ["default:default"]);
    let e = wait_for_event(&client, NS, "scrape", "TrafficTargetRouteNotFound").await;
    let r = e.regarding.as_ref().unwrap();
    assert_eq!(r.kind.as_deref(), Some("TrafficTarget"));
    assert_eq!(r.uid, created[0].metadata.uid);
    let note = e.note.unwrap_or_default();
    assert!(
        note.contains("unknown HTTPRouteGroup shop/web-routes"),
        "{note}"
    );
    assert_eq!(e.type_.as_deref(), Some("Warning"));

    // The group appears: its route carries the TrafficTarget's authorization.
    let t = Instant::now();
    plane.apply_yaml(GROUP).await.unwrap();
    let routed = next(&mut stream, PROMPT).await;
    eprintln!("HTTPRouteGroup applied after {:?}", t.elapsed());
    assert_eq!(
        route_names(&routed),
        [
            "specs.smi-spec.io/HTTPRouteGroup:web-routes",
            "default:default"
        ]
    );

    // A v1alpha2 TrafficTarget's destination port survives being read as
    // v1alpha3: it opens 9090 only.
    plane.apply_yaml(TCP).await.unwrap();
    let v2 = target(
        "v1alpha2",
        "old",
        ", port: 9090",
        "{kind: TCPRoute, name: every-port}",
    );
    plane.apply_yaml(&v2).await.unwrap();
    let mut on_9090 = c
        .watch_port(spec("web-0", 9090))
        .await
        .unwrap()
        .into_inner();
    let deadline = Instant::now() + WAIT;
    loop {
        let s = next(&mut on_9090, WAIT).await;
        if s.authorizations.iter().any(|a| a.labels["name"] == "old") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "v1alpha2 target never applied: {s:?}"
        );
    }
    let on_8080 = c.get_port(spec("web-0", 8080)).await.unwrap().into_inner();
    assert!(on_8080.authorizations.is_empty(), "{on_8080:?}");

    // Deleting the TrafficTargets reverts to the default policy.
    let t = Instant::now();
    let gvk = GroupVersionKind::gvk("access.smi-spec.io", "v1alpha3", "TrafficTarget");
    let tts: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NS, &ApiResource::from_gvk(&gvk));
    tts.delete("scrape", &DeleteParams::default())
        .await
        .unwrap();
    tts.delete("old", &DeleteParams::default()).await.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let s = next(&mut stream, PROMPT).await;
        if kind_name(&s) == ("default".into(), "deny".into()) {
            break;
        }
        assert!(Instant::now() < deadline, "never reverted: {s:?}");
    }
    eprintln!("TrafficTargets deleted after {:?}", t.elapsed());
    assert!(t.elapsed() < PROMPT * 2, "{:?}", t.elapsed());

    let e = wait_for_event(&client, NS, "typo-0", "InvalidDefaultInboundPolicy").await;
    assert_eq!(e.regarding.as_ref().unwrap().kind.as_deref(), Some("Pod"));
    assert!(e.note.unwrap_or_default().contains("\"alow\""));

    // The pod is deleted: the stream ends with NotFound.
    plane.delete_pod_now(NS, "web-0").await.unwrap();
    let err = tokio::time::timeout(WAIT, stream.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let log = ctl.log();
    assert!(!log.contains("panicked"), "{log}");
    assert!(!log.contains("cannot publish a Kubernetes Event"), "{log}");
    eprintln!("whole test {:?}", started.elapsed());
}
