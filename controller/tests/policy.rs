#![allow(clippy::unwrap_used)]
//! `OutboundPolicies.Get`/`Watch` fed by `--config-dir`, end to end: the
//! real `weft-controller` binary, TrafficSplits with `matches` and their
//! HTTPRouteGroups rewritten on disk, real TLS over loopback, and the
//! `linkerd2-proxy-api` client a proxy uses.

mod support;

use std::time::{Duration, Instant};

use linkerd2_proxy_api::destination::destination_client::DestinationClient;
use linkerd2_proxy_api::destination::GetDestination;
use linkerd2_proxy_api::http_route::{header_match, path_match, HttpRouteMatch};
use linkerd2_proxy_api::http_types::HttpMethod;
use linkerd2_proxy_api::outbound::backend::endpoint_discovery;
use linkerd2_proxy_api::outbound::http_route::distribution;
use linkerd2_proxy_api::outbound::outbound_policies_client::OutboundPoliciesClient;
use linkerd2_proxy_api::outbound::{
    backend, proxy_protocol, traffic_spec, HttpRoute, OutboundPolicy, TrafficSpec,
};
use support::{channel, controller_name, start_with_config, write_config, Controller};
use tonic::transport::Channel;
use tonic::Streaming;

/// Upper bound on every wait for a policy.
const WAIT: Duration = Duration::from_secs(10);
/// How long "nothing arrives" is checked (> 2 polls of the config dir).
const QUIET: Duration = Duration::from_millis(1500);

const SERVICES: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: web-v1, namespace: shop}
spec:
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: web-v2, namespace: shop}
spec:
  ports: [{name: http, port: 80}]
";

fn group(header_value: &str) -> String {
    format!(
        "apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {{name: canary-users, namespace: shop}}
spec:
  matches:
  - name: canary
    headers:
    - x-canary: \"{header_value}\"
  - name: firefox
    pathRegex: /api/.*
    methods: [GET, POST]
    headers:
    - user-agent: \".*Firefox.*\"
"
    )
}

const CANARY: &str = "\
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: web-canary, namespace: shop}
spec:
  service: web
  matches:
  - {apiGroup: specs.smi-spec.io, kind: HTTPRouteGroup, name: canary-users}
  backends:
  - {service: web-v1, weight: 0}
  - {service: web-v2, weight: 100}
";

const ROLLOUT: &str = "\
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {name: web-rollout, namespace: shop}
spec:
  service: web
  backends:
  - {service: web-v1, weight: 90}
  - {service: web-v2, weight: 10}
";

async fn clients(
    id: &std::path::Path,
    ctl: &Controller,
) -> (OutboundPoliciesClient<Channel>, DestinationClient<Channel>) {
    let anchor = weft_identity::IdentityDir::new(id)
        .read_trust_anchors_pem()
        .unwrap();
    let ch = channel(ctl.destination, &anchor, &controller_name())
        .await
        .unwrap();
    (
        OutboundPoliciesClient::new(ch.clone()),
        DestinationClient::new(ch),
    )
}

fn spec(authority: &str) -> TrafficSpec {
    TrafficSpec {
        source_workload: "shop:web-client".into(),
        target: Some(traffic_spec::Target::Authority(authority.into())),
    }
}

async fn watch(
    c: &mut OutboundPoliciesClient<Channel>,
    authority: &str,
) -> Streaming<OutboundPolicy> {
    tokio::time::timeout(WAIT, c.watch(spec(authority)))
        .await
        .unwrap()
        .unwrap()
        .into_inner()
}

async fn next(s: &mut Streaming<OutboundPolicy>) -> OutboundPolicy {
    tokio::time::timeout(WAIT, s.message())
        .await
        .expect("no policy within 10s")
        .unwrap()
        .expect("stream ended")
}

async fn quiet(s: &mut Streaming<OutboundPolicy>) {
    if let Ok(m) = tokio::time::timeout(QUIET, s.message()).await {
        panic!("unexpected policy: {m:?}");
    }
}

/// The HTTP routes of a `Detect` policy (HTTP/1 and HTTP/2 are equal)
/// before the catch-all, which must be last (`controller/tests/outbound_api.rs`
/// checks it field by field).
fn routes(p: &OutboundPolicy) -> Vec<HttpRoute> {
    let Some(proxy_protocol::Kind::Detect(d)) = p.protocol.as_ref().unwrap().kind.as_ref() else {
        panic!("not Detect: {p:?}")
    };
    assert!(d.timeout.is_some());
    let mut h1 = d.http1.as_ref().unwrap().routes.clone();
    assert_eq!(h1, d.http2.as_ref().unwrap().routes);
    let last = h1.pop().unwrap();
    assert_eq!(
        last.metadata.unwrap().kind,
        Some(linkerd2_proxy_api::meta::metadata::Kind::Default(
            "http".into()
        ))
    );
    h1
}

/// `(Destination.Get path, weight)` of a rule's backends.
fn backends(r: &HttpRoute) -> Vec<(String, u32)> {
    let Some(distribution::Kind::RandomAvailable(ra)) =
        r.rules[0].backends.as_ref().unwrap().kind.as_ref()
    else {
        panic!("{r:?}")
    };
    ra.backends
        .iter()
        .map(|b| {
            let be = b.backend.as_ref().unwrap().backend.as_ref().unwrap();
            let Some(backend::Kind::Balancer(p2c)) = &be.kind else {
                panic!("{be:?}")
            };
            let Some(endpoint_discovery::Kind::Dst(dst)) = &p2c.discovery.as_ref().unwrap().kind
            else {
                panic!("{p2c:?}")
            };
            assert!(p2c.load.is_some());
            (dst.path.clone(), b.weight)
        })
        .collect()
}

fn header_regex(m: &HttpRouteMatch, name: &str) -> String {
    let h = m.headers.iter().find(|h| h.name == name).unwrap();
    let Some(header_match::Value::Regex(re)) = &h.value else {
        panic!("{h:?}")
    };
    re.clone()
}

fn path_regex(m: &HttpRouteMatch) -> Option<String> {
    match m.path.as_ref()?.kind.as_ref()? {
        path_match::Kind::Regex(re) => Some(re.clone()),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn matched_split_is_served_as_policy_and_follows_changes() {
    let (id, cfg, ctl) = start_with_config(&[
        ("svc.yaml", SERVICES),
        ("group.yaml", &group("true")),
        ("canary.yaml", CANARY),
        ("rollout.yaml", ROLLOUT),
    ])
    .await;
    let (mut policies, mut dst) = clients(id.path(), &ctl).await;
    let mut s = watch(&mut policies, "web.shop.svc.cluster.local:80").await;
    let first = next(&mut s).await;
    let r = routes(&first);
    assert_eq!(r.len(), 1, "{r:?}");
    let m = &r[0].rules[0].matches;
    // The header-only match (any method), then the Firefox match once per
    // method.
    assert_eq!(m.len(), 3, "{m:?}");
    assert_eq!(header_regex(&m[0], "x-canary"), "^(?:true)$");
    assert_eq!((m[0].method.clone(), path_regex(&m[0])), (None, None));
    assert_eq!(header_regex(&m[1], "user-agent"), "^(?:.*Firefox.*)$");
    assert_eq!(path_regex(&m[1]).unwrap(), "^(?:/api/.*)$");
    assert_eq!(m[1].method, Some(HttpMethod::from(http::Method::GET)));
    assert_eq!(m[2].method, Some(HttpMethod::from(http::Method::POST)));
    assert_eq!(
        backends(&r[0]),
        [
            ("web-v1.shop.svc.cluster.local:80".to_owned(), 0),
            ("web-v2.shop.svc.cluster.local:80".to_owned(), 1000)
        ]
    );
    // `Get` answers the same; the short form names the same Service.
    let got = policies
        .get(spec("web.shop:80"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, first);

    // The profile keeps the matchless split only: non-matching requests
    // follow it.
    let mut profile = dst
        .get_profile(GetDestination {
            scheme: "k8s".into(),
            path: "web.shop:80".into(),
            context_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let p = tokio::time::timeout(WAIT, profile.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let overrides: Vec<_> = p
        .dst_overrides
        .iter()
        .map(|d| (d.authority.as_str(), d.weight))
        .collect();
    assert_eq!(
        overrides,
        [
            ("web-v1.shop.svc.cluster.local:80", 9000),
            ("web-v2.shop.svc.cluster.local:80", 1000)
        ]
    );

    // Changing the route group reaches the open stream.
    let t0 = Instant::now();
    write_config(cfg.path(), "group.yaml", &group("yes|1"));
    let changed = next(&mut s).await;
    eprintln!("route group change propagated in {:?}", t0.elapsed());
    assert_eq!(
        header_regex(&routes(&changed)[0].rules[0].matches[0], "x-canary"),
        "^(?:yes|1)$"
    );
    // Rewriting it unchanged (another file layout) sends nothing.
    write_config(
        cfg.path(),
        "group.yaml",
        &format!("# same\n{}", group("yes|1")),
    );
    quiet(&mut s).await;

    // A bad regex is rejected by the feed; the previous group stays.
    write_config(cfg.path(), "group.yaml", &group("(yes"));
    ctl.wait_for_log("spec.matches[0].headers.x-canary", WAIT)
        .await
        .unwrap();
    quiet(&mut s).await;

    // Deleting the group: the split cannot be applied, the policy has no
    // route, and the warning names the split and the missing group.
    std::fs::remove_file(cfg.path().join("group.yaml")).unwrap();
    let gone = next(&mut s).await;
    assert!(routes(&gone).is_empty(), "{gone:?}");
    ctl.wait_for_log("unknown HTTPRouteGroup shop/canary-users", WAIT)
        .await
        .unwrap();
    let log = ctl.log();
    let line = log
        .lines()
        .find(|l| l.contains("unknown HTTPRouteGroup shop/canary-users"))
        .unwrap();
    assert!(line.contains("TrafficSplit shop/web-canary"), "{line}");
    assert!(line.contains("WARN"), "{line}");
    // The profile was not affected.
    quiet_profile(&mut profile).await;
}

async fn quiet_profile(s: &mut Streaming<linkerd2_proxy_api::destination::DestinationProfile>) {
    if let Ok(m) = tokio::time::timeout(QUIET, s.message()).await {
        panic!("unexpected profile: {m:?}");
    }
}

#[tokio::test]
async fn v1alpha3_path_split_and_other_authorities() {
    let v1alpha3 = "\
apiVersion: specs.smi-spec.io/v1alpha3
kind: HTTPRouteGroup
metadata: {name: v2-api, namespace: shop}
spec:
  matches:
  - {name: v2, pathRegex: '/v2(/.*)?', methods: ['*']}
---
apiVersion: split.smi-spec.io/v1alpha3
kind: TrafficSplit
metadata: {name: web-v2-api, namespace: shop}
spec:
  service: web.shop.svc.cluster.local
  matches: [{kind: HTTPRouteGroup, name: v2-api}]
  backends: [{service: web-v2, weight: 1}]
";
    let (id, _cfg, ctl) = start_with_config(&[("svc.yaml", SERVICES), ("v3.yaml", v1alpha3)]).await;
    let (mut policies, _) = clients(id.path(), &ctl).await;
    let p = policies
        .get(spec("web.shop.svc.cluster.local:8080"))
        .await
        .unwrap()
        .into_inner();
    let r = routes(&p);
    assert_eq!(r.len(), 1);
    let m = &r[0].rules[0].matches;
    assert_eq!(m.len(), 1);
    assert_eq!(path_regex(&m[0]).unwrap(), "^(?:/v2(/.*)?)$");
    assert!(m[0].method.is_none() && m[0].headers.is_empty());
    // Backends use the port asked about.
    assert_eq!(
        backends(&r[0]),
        [("web-v2.shop.svc.cluster.local:8080".to_owned(), 1000)]
    );

    // A Service without match-gated splits: only the catch-all.
    let plain = policies.get(spec("web-v1.shop:80")).await.unwrap();
    assert!(routes(plain.get_ref()).is_empty());
    // An unknown Service, and an `IP:port` that is no Service's ClusterIP
    // (a Pod, an address outside the cluster): no policy, as Linkerd.
    for what in ["nope.shop:80", "10.1.2.3:8080"] {
        let err = policies.watch(spec(what)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound, "{what}: {err}");
        let err = policies.get(spec(what)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound, "{what}: {err}");
    }

    // Names outside the cluster are refused as Get/GetProfile refuse them.
    for bad in [
        "www.example.com:443",
        "web.shop:http",
        "web.shop.svc.other:80",
    ] {
        let err = policies.watch(spec(bad)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad}: {err}");
    }
    let none = TrafficSpec {
        source_workload: String::new(),
        target: None,
    };
    let err = policies.get(none).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}
