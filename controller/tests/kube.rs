#![allow(clippy::unwrap_used)]
//! The destination service fed by the Kubernetes feed, end to end: the
//! project's real test control plane (etcd + kube-apiserver 1.20 +
//! kube-controller-manager, which builds the Endpoints), the real
//! `weft-controller` binary started with `--kubeconfig`, and the
//! `linkerd2-proxy-api` client a proxy uses over TLS.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};
use linkerd2_proxy_api::destination::destination_client::DestinationClient;
use linkerd2_proxy_api::destination::{protocol_hint, tls_identity, update, DestinationProfile};
use support::{destination_client, follow, get_request as request, identity_dir, Controller};
use tonic::transport::Channel;
use tonic::Streaming;
use weft_kube_harness::TestControlPlane;

const NS: &str = "shop";
/// Upper bound on every wait for the cluster (the controller-manager
/// builds Endpoints on its own schedule) and the feed.
const WAIT: Duration = Duration::from_secs(30);
const WEB: &str = "web.shop.svc.cluster.local:80";

/// `install/crds.yaml` without the HTTPRouteGroup CRD, so the feed runs
/// with one of its kinds not served (as on a cluster where someone
/// installed only some CRDs).
fn crds_without_route_groups() -> Vec<String> {
    let text = include_str!("../../install/crds.yaml");
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &serde_json::Value| !v.is_null())
        .filter(|v| v["metadata"]["name"] != "httproutegroups.specs.smi-spec.io")
        .map(|v| serde_yaml::to_string(&v).unwrap())
        .collect()
}

fn service(name: &str, app: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {NS}}}\n\
         spec:\n  selector: {{app: {app}}}\n  ports:\n  - name: http\n    port: 80\n    \
         targetPort: 8080\n    protocol: TCP\n"
    )
}

fn pod(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {NS}\n  \
         labels: {{app: web}}\n  annotations: {{linkerd.io/inject: enabled}}\n\
         spec:\n  serviceAccountName: web\n  containers:\n  - name: app\n    image: web\n    \
         ports: [{{containerPort: 8080, name: http}}]\n"
    )
}

fn split(version: &str, v1: &str, v2: &str) -> String {
    format!(
        "apiVersion: split.smi-spec.io/{version}\nkind: TrafficSplit\n\
         metadata: {{name: web-split, namespace: {NS}}}\n\
         spec:\n  service: web\n  backends:\n  - {{service: web-v1, weight: {v1}}}\n  \
         - {{service: web-v2, weight: {v2}}}\n"
    )
}

/// Reads profiles until one satisfies `done`; bounded by [`WAIT`].
async fn profile_until(
    stream: &mut Streaming<DestinationProfile>,
    done: impl Fn(&DestinationProfile) -> bool,
) -> DestinationProfile {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let p = tokio::time::timeout(left, stream.message())
            .await
            .unwrap_or_else(|_| panic!("no matching profile within {WAIT:?}"))
            .unwrap()
            .expect("GetProfile stream ended");
        if done(&p) {
            return p;
        }
    }
}

fn overrides(p: &DestinationProfile) -> Vec<(String, u32)> {
    p.dst_overrides
        .iter()
        .map(|o| (o.authority.clone(), o.weight))
        .collect()
}

#[tokio::test]
async fn kubernetes_feed_serves_endpoints_and_profiles() {
    let started = Instant::now();
    let plane = tokio::time::timeout(Duration::from_secs(240), TestControlPlane::start())
        .await
        .expect("control plane start timed out")
        .unwrap();
    for crd in crds_without_route_groups() {
        plane.apply_yaml(&crd).await.unwrap();
    }
    for name in [
        "serviceprofiles.linkerd.io",
        "trafficsplits.split.smi-spec.io",
    ] {
        plane.wait_for_crd_established(name).await.unwrap();
    }
    plane.create_namespace(NS).await.unwrap();
    plane.wait_for_service_account(NS, "default").await.unwrap();
    plane
        .apply_yaml(&format!(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: web, namespace: {NS}}}\n"
        ))
        .await
        .unwrap();
    plane.wait_for_service_account(NS, "web").await.unwrap();
    for (name, app) in [("web", "web"), ("web-v1", "web-v1"), ("web-v2", "web-v2")] {
        plane.apply_yaml(&service(name, app)).await.unwrap();
    }
    for (name, ip) in [("web-0", "192.0.2.10"), ("web-1", "192.0.2.11")] {
        plane.apply_yaml(&pod(name)).await.unwrap();
        plane
            .set_pod_ready(NS, name, ip.parse().unwrap())
            .await
            .unwrap();
    }
    eprintln!("cluster ready after {:?}", started.elapsed());

    let id = identity_dir();
    let kubeconfig = plane.kubeconfig_path().to_str().unwrap().to_owned();
    let ctl = Controller::start(id.path(), &["--kubeconfig", &kubeconfig])
        .await
        .unwrap();
    let mut dst: DestinationClient<Channel> = destination_client(id.path(), &ctl).await;

    // Both pods, on the Service's targetPort, meshed: identity from their
    // ServiceAccount and the H2 hint.
    let mut get = dst.get(request(WEB)).await.unwrap().into_inner();
    let mut known = BTreeMap::new();
    let both: BTreeSet<String> = ["192.0.2.10:8080", "192.0.2.11:8080"]
        .map(String::from)
        .into();
    follow(&mut get, &mut known, |k, _| {
        k.keys().cloned().collect::<BTreeSet<_>>() == both
    })
    .await;
    for (addr, a) in &known {
        let Some(tls_identity::Strategy::DnsLikeIdentity(id)) =
            a.tls_identity.as_ref().and_then(|t| t.strategy.clone())
        else {
            panic!("{addr}: no identity: {a:?}")
        };
        assert_eq!(
            id.name, "web.shop.serviceaccount.identity.weft.cluster.local",
            "{addr}"
        );
        let hint = a.protocol_hint.as_ref().and_then(|h| h.protocol);
        assert!(
            matches!(hint, Some(protocol_hint::Protocol::H2(_))),
            "{addr}: {hint:?}"
        );
        assert_eq!(a.metric_labels["serviceaccount"], "web", "{addr}");
        assert_eq!(a.metric_labels["namespace"], NS, "{addr}");
    }
    assert_eq!(known["192.0.2.10:8080"].metric_labels["pod"], "web-0");
    // 1.20 serves no discovery.k8s.io/v1 EndpointSlices: the feed said it
    // reads core/v1 Endpoints instead.
    assert!(
        ctl.log()
            .contains("kubernetes feed: endpoints from v1 Endpoints"),
        "{}",
        ctl.log()
    );

    // Pod IP authorities: a pod's IP with any port is that pod (with its
    // identity), for as long as it exists.
    let mut by_ip = dst
        .get(request("192.0.2.11:8080"))
        .await
        .unwrap()
        .into_inner();
    let mut pod_known = BTreeMap::new();
    follow(&mut by_ip, &mut pod_known, |k, _| {
        k.contains_key("192.0.2.11:8080")
    })
    .await;
    let web1 = &pod_known["192.0.2.11:8080"];
    assert_eq!(web1.metric_labels["pod"], "web-1");
    assert!(web1.tls_identity.is_some(), "{web1:?}");

    // Deleting a pod (no kubelet: at once) removes it from the Endpoints.
    let t = Instant::now();
    let pods: Api<Pod> = Api::namespaced(plane.client(), NS);
    pods.delete("web-1", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    follow(&mut get, &mut known, |k, _| {
        k.keys().map(String::as_str).collect::<Vec<_>>() == ["192.0.2.10:8080"]
    })
    .await;
    eprintln!("pod deletion → Remove in {:?}", t.elapsed());
    // The deleted pod's IP no longer names anything: Remove, then
    // NoEndpoints { exists: false }.
    let deadline = Instant::now() + WAIT;
    let last = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let u = tokio::time::timeout(left, by_ip.message())
            .await
            .expect("pod IP stream never said the pod is gone")
            .unwrap()
            .expect("stream ended")
            .update
            .unwrap();
        if matches!(u, update::Update::NoEndpoints(_)) {
            break u;
        }
    };
    assert_eq!(
        last,
        update::Update::NoEndpoints(linkerd2_proxy_api::destination::NoEndpoints { exists: false })
    );

    // A v1alpha2 TrafficSplit (served and stored as v1alpha4) becomes
    // dst_overrides in milli-units.
    let mut profiles = dst.get_profile(request(WEB)).await.unwrap().into_inner();
    let first = profile_until(&mut profiles, |_| true).await;
    assert!(first.dst_overrides.is_empty(), "{first:?}");
    let t = Instant::now();
    plane
        .apply_yaml(&split("v1alpha2", "90", "10"))
        .await
        .unwrap();
    let want = vec![
        ("web-v1.shop.svc.cluster.local:80".to_owned(), 9000),
        ("web-v2.shop.svc.cluster.local:80".to_owned(), 1000),
    ];
    let p = profile_until(&mut profiles, |p| !p.dst_overrides.is_empty()).await;
    assert_eq!(overrides(&p), want);
    eprintln!("TrafficSplit → profile in {:?}", t.elapsed());

    // An invalid update (all-zero weights, which the CRD schema allows) is
    // rejected with its field path; the previous split stays in force.
    plane
        .apply_yaml(&split("v1alpha2", "0", "0"))
        .await
        .unwrap();
    ctl.wait_for_log("invalid object rejected", WAIT)
        .await
        .unwrap();
    let log = ctl.log();
    let line = log
        .lines()
        .find(|l| l.contains("invalid object rejected"))
        .unwrap();
    assert!(line.contains("shop/web-split"), "{line}");
    assert!(line.contains("spec.backends"), "{line}");
    assert!(line.contains("kept_previous=true"), "{line}");
    let mut fresh = dst.get_profile(request(WEB)).await.unwrap().into_inner();
    let p = profile_until(&mut fresh, |_| true).await;
    assert_eq!(overrides(&p), want);
    // A valid change after that applies again.
    plane
        .apply_yaml(&split("v1alpha2", "1", "3"))
        .await
        .unwrap();
    let p = profile_until(&mut profiles, |p| overrides(p) != want).await;
    assert_eq!(
        p.dst_overrides.iter().map(|o| o.weight).collect::<Vec<_>>(),
        [1000, 3000]
    );
    // Written as v1alpha1 with quantities, 900m/100m is the same split as
    // v1alpha2 90/10: the identical profile.
    plane
        .apply_yaml(&split("v1alpha1", "900m", "100m"))
        .await
        .unwrap();
    let p = profile_until(&mut profiles, |p| overrides(p) == want).await;
    assert_eq!(overrides(&p), want);

    // The missing HTTPRouteGroup CRD was reported once and broke nothing.
    let log = ctl.log();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("does not serve this kind") && l.contains("HTTPRouteGroup"))
            .count(),
        1,
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    eprintln!("whole test {:?}", started.elapsed());
}

/// `--in-cluster` outside a pod fails at once, saying why and what to use
/// instead.
#[tokio::test]
async fn in_cluster_outside_a_pod_is_a_clear_error() {
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        eprintln!("skipping: this test process runs in a Kubernetes pod");
        return;
    }
    let id = identity_dir();
    let err = Controller::start(id.path(), &["--in-cluster"])
        .await
        .err()
        .expect("the controller must not start");
    let text = err.to_string();
    assert!(
        text.contains("--in-cluster: KUBERNETES_SERVICE_HOST is not set")
            && text.contains("use --kubeconfig PATH or --config-dir DIR"),
        "{text}"
    );
    // Exclusive with the other sources.
    let err = Controller::start(id.path(), &["--in-cluster", "--kubeconfig", "/nope"])
        .await
        .err()
        .expect("conflicting sources must be refused");
    assert!(err.to_string().contains("cannot be used with"), "{err}");
}
