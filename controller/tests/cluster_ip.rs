#![allow(clippy::unwrap_used)]
//! A Service's `clusterIP:port` resolves to that Service (`Get`,
//! `GetProfile`, `OutboundPolicies`), from the file feed (`spec.clusterIP`
//! in YAML) and from the Kubernetes feed (the test API server assigns the
//! ClusterIP), with Service port → target port mapping, named target ports
//! included. The real `weft-controller` binary, over TLS.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use linkerd2_proxy_api::destination::destination_client::DestinationClient;
use linkerd2_proxy_api::destination::{
    protocol_hint, tls_identity, DestinationProfile, WeightedAddr,
};
use linkerd2_proxy_api::meta::metadata;
use linkerd2_proxy_api::outbound::outbound_policies_client::OutboundPoliciesClient;
use linkerd2_proxy_api::outbound::{traffic_spec, OutboundPolicy, TrafficSpec};
use support::{
    addr_of, channel, controller_name, destination_client, follow, get_request as request,
    identity_dir, start_with_config, write_config, Controller,
};
use tonic::transport::Channel;
use weft_kube_harness::TestControlPlane;

const WAIT: Duration = Duration::from_secs(30);

async fn profile(dst: &mut DestinationClient<Channel>, path: &str) -> DestinationProfile {
    let mut s = dst.get_profile(request(path)).await.unwrap().into_inner();
    tokio::time::timeout(WAIT, s.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
}

fn identity(a: &WeightedAddr) -> String {
    let Some(tls_identity::Strategy::DnsLikeIdentity(id)) =
        a.tls_identity.as_ref().unwrap().strategy.as_ref()
    else {
        panic!("{a:?}")
    };
    id.name.clone()
}

fn is_h2(a: &WeightedAddr) -> bool {
    matches!(
        a.protocol_hint.as_ref().and_then(|h| h.protocol.as_ref()),
        Some(protocol_hint::Protocol::H2(_))
    )
}

async fn policies(id: &std::path::Path, ctl: &Controller) -> OutboundPoliciesClient<Channel> {
    let anchor = weft_identity::IdentityDir::new(id)
        .read_trust_anchors_pem()
        .unwrap();
    OutboundPoliciesClient::new(
        channel(ctl.destination, &anchor, &controller_name())
            .await
            .unwrap(),
    )
}

/// `(name, namespace, port)` of a policy's `core/Service` metadata.
fn policy_service(p: &OutboundPolicy) -> (String, String, u32) {
    let Some(metadata::Kind::Resource(r)) = p.metadata.as_ref().unwrap().kind.as_ref() else {
        panic!("{p:?}")
    };
    assert_eq!((r.group.as_str(), r.kind.as_str()), ("core", "Service"));
    (r.name.clone(), r.namespace.clone(), r.port)
}

fn authority(a: &str) -> TrafficSpec {
    TrafficSpec {
        source_workload: String::new(),
        target: Some(traffic_spec::Target::Authority(a.into())),
    }
}

fn web(cluster_ip: &str) -> String {
    format!(
        "\
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop}}
spec:
  clusterIP: {cluster_ip}
  ports:
  - {{name: http, port: 80, targetPort: http}}
  - {{name: admin, port: 9990, targetPort: admin-http}}
"
    )
}

const FILES: &str = "\
apiVersion: v1
kind: Endpoints
metadata: {name: web, namespace: shop}
subsets:
- addresses:
  - ip: 127.0.0.1
    targetRef: {kind: Pod, name: web-0, namespace: shop}
  ports:
  - {name: http, port: 24143}
  # Hand-written, named after the container port the named targetPort
  # refers to.
  - {name: admin-http, port: 24190}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-0
  namespace: shop
  annotations: {linkerd.io/inject: enabled}
spec:
  serviceAccountName: web
  containers: [{name: app, image: web, ports: [{name: http, containerPort: 8080}]}]
status: {podIP: 10.1.0.5}
---
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: {name: web.shop.svc.cluster.local, namespace: shop}
spec:
  routes:
  - name: books
    condition: {method: GET, pathRegex: /books}
    timeout: 1s
---
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {name: web-split, namespace: shop}
spec:
  service: web
  backends: [{service: web-v1, weight: 3}, {service: web-v2, weight: 1}]
";

#[tokio::test]
async fn file_feed_resolves_cluster_ips() {
    let (id, cfg, ctl) =
        start_with_config(&[("web.yaml", &web("10.96.0.10")), ("rest.yaml", FILES)]).await;
    let mut dst = destination_client(id.path(), &ctl).await;

    // Endpoints of the Service port, mapped to the target port by name,
    // with identity and hint, labelled as the Service's.
    let mut get = dst
        .get(request("10.96.0.10:80"))
        .await
        .unwrap()
        .into_inner();
    let mut known = BTreeMap::new();
    follow(&mut get, &mut known, |k, _| {
        k.contains_key("127.0.0.1:24143")
    })
    .await;
    assert_eq!(known.len(), 1);
    let a = &known["127.0.0.1:24143"];
    assert_eq!(
        identity(a),
        "web.shop.serviceaccount.identity.weft.cluster.local"
    );
    assert!(is_h2(a));
    assert_eq!(a.metric_labels["service"], "web");
    assert_eq!(a.metric_labels["pod"], "web-0");
    // A named targetPort whose Endpoints port carries the target's name.
    let mut admin = dst
        .get(request("10.96.0.10:9990"))
        .await
        .unwrap()
        .into_inner();
    let mut admin_known = BTreeMap::new();
    follow(&mut admin, &mut admin_known, |k, _| {
        k.contains_key("127.0.0.1:24190")
    })
    .await;
    assert_eq!(admin_known.len(), 1);

    // The profile is the Service's: its FQDN, routes and split.
    let p = profile(&mut dst, "10.96.0.10:80").await;
    assert_eq!(p.fully_qualified_name, "web.shop.svc.cluster.local");
    assert_eq!(p.routes.len(), 1);
    let overrides: Vec<_> = p
        .dst_overrides
        .iter()
        .map(|d| (d.authority.as_str(), d.weight))
        .collect();
    assert_eq!(
        overrides,
        [
            ("web-v1.shop.svc.cluster.local:80", 3000),
            ("web-v2.shop.svc.cluster.local:80", 1000)
        ]
    );
    assert!(p.endpoint.is_none());
    assert_eq!(p, profile(&mut dst, "web.shop.svc.cluster.local:80").await);

    // The Pod IP still names the Pod.
    let pod = profile(&mut dst, "10.1.0.5:8080").await;
    assert_eq!(pod.fully_qualified_name, "");
    assert_eq!(addr_of(&pod.endpoint.unwrap().addr), "10.1.0.5:8080");

    // The outbound policy of the ClusterIP is the Service's.
    let mut pol = policies(id.path(), &ctl).await;
    let by_ip = pol
        .get(authority("10.96.0.10:80"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        policy_service(&by_ip),
        ("web".to_owned(), "shop".to_owned(), 80)
    );
    let by_name = pol
        .get(authority("web.shop:80"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_ip, by_name);

    // The ClusterIP changes: the old address names nothing any more (the
    // open stream says so), the new one names the Service.
    write_config(cfg.path(), "web.yaml", &web("10.96.0.99"));
    follow(&mut get, &mut known, |k, exists| {
        k.is_empty() && exists == Some(false)
    })
    .await;
    let mut moved = dst
        .get(request("10.96.0.99:80"))
        .await
        .unwrap()
        .into_inner();
    let mut moved_known = BTreeMap::new();
    follow(&mut moved, &mut moved_known, |k, _| {
        k.contains_key("127.0.0.1:24143")
    })
    .await;
    let err = pol.get(authority("10.96.0.10:80")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn kubernetes_feed_resolves_assigned_cluster_ips() {
    let plane = tokio::time::timeout(Duration::from_secs(240), TestControlPlane::start())
        .await
        .expect("control plane start timed out")
        .unwrap();
    plane.create_namespace("shop").await.unwrap();
    plane
        .wait_for_service_account("shop", "default")
        .await
        .unwrap();
    plane
        .apply_yaml(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: web, namespace: shop}\n",
        )
        .await
        .unwrap();
    plane.wait_for_service_account("shop", "web").await.unwrap();
    // A named targetPort: the endpoints controller resolves it against
    // the Pod's container port named `http`.
    plane
        .apply_yaml(
            "\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: web, port: 80, targetPort: http, protocol: TCP}]
---
apiVersion: v1
kind: Pod
metadata:
  name: web-0
  namespace: shop
  labels: {app: web}
  annotations: {linkerd.io/inject: enabled}
spec:
  serviceAccountName: web
  containers:
  - {name: app, image: web, ports: [{containerPort: 8080, name: http}]}
",
        )
        .await
        .unwrap();
    plane
        .set_pod_ready("shop", "web-0", "192.0.2.20".parse().unwrap())
        .await
        .unwrap();
    let svc = Api::<Service>::namespaced(plane.client(), "shop")
        .get("web")
        .await
        .unwrap();
    let cluster_ip = svc.spec.unwrap().cluster_ip.unwrap();
    assert!(
        cluster_ip.parse::<std::net::IpAddr>().is_ok(),
        "{cluster_ip}"
    );
    eprintln!("assigned ClusterIP {cluster_ip}");

    let id = identity_dir();
    let kubeconfig = plane.kubeconfig_path().to_str().unwrap().to_owned();
    let ctl = Controller::start(id.path(), &["--kubeconfig", &kubeconfig])
        .await
        .unwrap();
    let mut dst = destination_client(id.path(), &ctl).await;
    let path = format!("{cluster_ip}:80");
    let mut get = dst.get(request(&path)).await.unwrap().into_inner();
    let mut known = BTreeMap::new();
    follow(&mut get, &mut known, |k, _| {
        k.contains_key("192.0.2.20:8080")
    })
    .await;
    let a = &known["192.0.2.20:8080"];
    assert_eq!(
        identity(a),
        "web.shop.serviceaccount.identity.weft.cluster.local"
    );
    assert!(is_h2(a));
    assert_eq!(a.metric_labels["service"], "web");

    let p = profile(&mut dst, &path).await;
    assert_eq!(p.fully_qualified_name, "web.shop.svc.cluster.local");

    let mut pol = policies(id.path(), &ctl).await;
    let policy = pol.get(authority(&path)).await.unwrap().into_inner();
    assert_eq!(
        policy_service(&policy),
        ("web".to_owned(), "shop".to_owned(), 80)
    );
}
