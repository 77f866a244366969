#![allow(clippy::unwrap_used)]
//! Pod `IP:port` authorities, end to end with the file feed: `Get` and
//! `GetProfile` for an address answer with the Pod that has that IP (its
//! identity, the HTTP/2 hint, its labels), follow the Pod as it changes,
//! and say "does not exist" for an IP no Pod has, so the proxy uses the
//! address as it is.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use linkerd2_proxy_api::destination::destination_client::DestinationClient;
use linkerd2_proxy_api::destination::{
    protocol_hint, tls_identity, update, DestinationProfile, NoEndpoints, WeightedAddr,
};
use support::{destination_client, get_request as request, start_with_config, write_config};
use tonic::transport::Channel;
use tonic::Streaming;

/// Upper bound on every wait for an update (the feed polls every 200 ms).
const WAIT: Duration = Duration::from_secs(10);

/// Pod `api-0` at `ip`, meshed or not, owned by Deployment `api`.
fn pod(ip: &str, meshed: bool) -> String {
    let inject = if meshed { "enabled" } else { "disabled" };
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: api-0
  namespace: shop
  annotations: {{linkerd.io/inject: {inject}}}
  labels: {{pod-template-hash: 5d8f}}
  ownerReferences:
  - {{apiVersion: apps/v1, kind: ReplicaSet, name: api-5d8f, uid: u1, controller: true}}
spec:
  serviceAccountName: api
  containers: [{{name: app, image: api}}]
status:
  phase: Running
  podIP: {ip}
  podIPs: [{{ip: {ip}}}]
"
    )
}

async fn next_update(s: &mut Streaming<linkerd2_proxy_api::destination::Update>) -> update::Update {
    tokio::time::timeout(WAIT, s.message())
        .await
        .expect("no update in time")
        .unwrap()
        .expect("stream ended")
        .update
        .unwrap()
}

async fn next_profile(s: &mut Streaming<DestinationProfile>) -> DestinationProfile {
    tokio::time::timeout(WAIT, s.message())
        .await
        .expect("no profile in time")
        .unwrap()
        .expect("stream ended")
}

fn socket(w: &WeightedAddr) -> SocketAddr {
    SocketAddr::try_from(w.addr.unwrap()).unwrap()
}

fn identity_of(w: &WeightedAddr) -> Option<String> {
    match w.tls_identity.as_ref()?.strategy.as_ref()? {
        tls_identity::Strategy::DnsLikeIdentity(d) => Some(d.name.clone()),
        other => panic!("unexpected {other:?}"),
    }
}

/// Checks the one endpoint `u` adds: `api-0` at `addr`, meshed or not.
fn assert_api_pod(u: update::Update, addr: &str, meshed: bool) {
    let update::Update::Add(set) = u else {
        panic!("expected Add, got {u:?}")
    };
    assert_eq!(set.metric_labels["namespace"], "shop");
    let [w] = &set.addrs[..] else {
        panic!("expected one endpoint: {set:?}")
    };
    assert_eq!(socket(w).to_string(), addr);
    assert_eq!(w.metric_labels["pod"], "api-0");
    assert_eq!(w.metric_labels["namespace"], "shop");
    assert_eq!(w.metric_labels["serviceaccount"], "api");
    assert_eq!(w.metric_labels["deployment"], "api");
    let h2 = matches!(
        w.protocol_hint.as_ref().and_then(|h| h.protocol.as_ref()),
        Some(protocol_hint::Protocol::H2(_))
    );
    assert_eq!(h2, meshed, "{w:?}");
    let want = meshed.then(|| "api.shop.serviceaccount.identity.weft.cluster.local".to_owned());
    assert_eq!(identity_of(w), want);
}

#[tokio::test]
async fn pod_ip_authorities_resolve_to_the_pod_and_follow_it() {
    let (id, cfg, ctl) = start_with_config(&[("pod.yaml", &pod("10.1.2.3", true))]).await;
    let mut c: DestinationClient<Channel> = destination_client(id.path(), &ctl).await;

    // The pod's IP with any port: that pod, meshed.
    let mut get = c.get(request("10.1.2.3:8080")).await.unwrap().into_inner();
    assert_api_pod(next_update(&mut get).await, "10.1.2.3:8080", true);
    let mut profiles = c
        .get_profile(request("10.1.2.3:8080"))
        .await
        .unwrap()
        .into_inner();
    let p = next_profile(&mut profiles).await;
    let ep = p.endpoint.as_ref().expect("profile names the pod");
    assert_eq!(socket(ep).to_string(), "10.1.2.3:8080");
    assert!(identity_of(ep).is_some());
    assert!(p.dst_overrides.is_empty() && p.routes.is_empty());
    assert!(p.retry_budget.is_some());

    // An IP no pod has: "does not exist", stream kept open.
    let mut unknown = c.get(request("10.1.2.4:8080")).await.unwrap().into_inner();
    assert_eq!(
        next_update(&mut unknown).await,
        update::Update::NoEndpoints(NoEndpoints { exists: false })
    );
    let mut unknown_profile = c
        .get_profile(request("10.1.2.4:8080"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next_profile(&mut unknown_profile).await.endpoint, None);

    // The pod loses its sidecar: the same address again, without TLS.
    write_config(cfg.path(), "pod.yaml", &pod("10.1.2.3", false));
    assert_api_pod(next_update(&mut get).await, "10.1.2.3:8080", false);
    let p = next_profile(&mut profiles).await;
    assert_eq!(p.endpoint.as_ref().and_then(identity_of), None);

    // The pod moves to the other IP: the old stream sees it go, the
    // waiting one sees it arrive.
    write_config(cfg.path(), "pod.yaml", &pod("10.1.2.4", true));
    assert_eq!(
        next_update(&mut get).await,
        update::Update::Remove(linkerd2_proxy_api::destination::AddrSet {
            addrs: vec!["10.1.2.3:8080".parse::<SocketAddr>().unwrap().into()]
        })
    );
    assert_eq!(
        next_update(&mut get).await,
        update::Update::NoEndpoints(NoEndpoints { exists: false })
    );
    assert_api_pod(next_update(&mut unknown).await, "10.1.2.4:8080", true);
    assert_eq!(next_profile(&mut profiles).await.endpoint, None);
    assert!(next_profile(&mut unknown_profile).await.endpoint.is_some());

    // A port of 0 is refused like any malformed authority.
    let err = c.get(request("10.1.2.4:0")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
}
