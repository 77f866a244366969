#![allow(clippy::unwrap_used)]
//! Every kind of `OutboundPolicies` answer, decoded with the
//! `linkerd2-proxy-api` types and checked field by field against the rules
//! the API's clients validate (a Linkerd proxy refuses a policy that breaks
//! one): the real `weft-controller` binary fed by `--config-dir`, over TLS.
//!
//! Kinds: a Service by name and by `clusterIP:port` (the `Authority` and
//! the `Addr` target), without a TrafficSplit, with a v1alpha2 weighted
//! split, with a v1alpha4 header-match split, with ServiceProfile routes
//! (timeouts, retries), opaque ports (profile, Service annotation, Pod
//! annotation); and the targets without a policy (`NotFound`,
//! `InvalidArgument`). For each HTTP policy, requests are routed the way
//! an API client does (first rule whose match holds), so a request that
//! matches no rule must reach the catch-all.

mod support;

use std::time::Duration;

use linkerd2_proxy_api::http_route::{header_match, path_match, HttpRouteMatch};
use linkerd2_proxy_api::meta::{metadata, Metadata};
use linkerd2_proxy_api::net::{ip_address, IpAddress, TcpAddress};
use linkerd2_proxy_api::outbound::backend::{balance_p2c, endpoint_discovery};
use linkerd2_proxy_api::outbound::outbound_policies_client::OutboundPoliciesClient;
use linkerd2_proxy_api::outbound::{
    backend, failure_accrual, http_route, opaque_route, proxy_protocol, traffic_spec, Backend,
    FailureAccrual, HttpRoute, OpaqueRoute, OutboundPolicy, TrafficSpec,
};
use support::{channel, controller_name, start_with_config, Controller};
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(10);

const SERVICES: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-v1, namespace: shop}
spec: {clusterIP: 10.96.0.11, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: web-v2, namespace: shop}
spec: {clusterIP: 10.96.0.12, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: shop}
spec: {containers: [{name: app, image: web}]}
status: {podIP: 10.1.0.5}
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

const CANARY: &str = "\
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: canary-users, namespace: shop}
spec:
  matches:
  - name: canary
    headers: [{x-canary: \"true\"}]
---
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

const PROFILE: &str = "\
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: {name: web.shop.svc.cluster.local, namespace: shop}
spec:
  routes:
  - name: GET /books/{id}
    condition: {method: GET, pathRegex: '/books/[^/]+'}
    responseClasses:
    - condition: {status: {min: 500}}
      isFailure: true
    isRetryable: true
    timeout: 300ms
  - name: not GET
    condition: {not: {method: GET}}
    timeout: 1s
";

async fn client(id: &std::path::Path, ctl: &Controller) -> OutboundPoliciesClient<Channel> {
    let anchor = weft_identity::IdentityDir::new(id)
        .read_trust_anchors_pem()
        .unwrap();
    OutboundPoliciesClient::new(
        channel(ctl.destination, &anchor, &controller_name())
            .await
            .unwrap(),
    )
}

fn by_authority(authority: &str) -> TrafficSpec {
    TrafficSpec {
        source_workload: "shop:client".into(),
        target: Some(traffic_spec::Target::Authority(authority.into())),
    }
}

fn by_addr(ip: [u8; 4], port: u32) -> TrafficSpec {
    TrafficSpec {
        source_workload: "shop:client".into(),
        target: Some(traffic_spec::Target::Addr(TcpAddress {
            ip: Some(IpAddress {
                ip: Some(ip_address::Ip::Ipv4(u32::from_be_bytes(ip))),
            }),
            port,
        })),
    }
}

/// `Get` and the first `Watch` message, which must agree.
async fn policy(c: &mut OutboundPoliciesClient<Channel>, spec: TrafficSpec) -> OutboundPolicy {
    let got = c.get(spec.clone()).await.unwrap().into_inner();
    let mut s = c.watch(spec).await.unwrap().into_inner();
    let first = tokio::time::timeout(WAIT, s.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got, first);
    got
}

// === Validation, as the API's clients do it ===

fn duration(d: &Option<prost_types::Duration>, what: &str) -> Duration {
    let d = d.unwrap_or_else(|| panic!("{what}: duration not set"));
    assert!(
        d.seconds >= 0 && (0..1_000_000_000).contains(&d.nanos),
        "{what}: {d:?}"
    );
    let d = Duration::new(d.seconds as u64, d.nanos as u32);
    assert!(!d.is_zero(), "{what}: zero duration");
    d
}

fn check_metadata(m: &Option<Metadata>, what: &str) {
    match m.as_ref().and_then(|m| m.kind.as_ref()) {
        Some(metadata::Kind::Resource(r)) => {
            for (field, v) in [
                ("group", &r.group),
                ("kind", &r.kind),
                ("name", &r.name),
                ("namespace", &r.namespace),
            ] {
                assert!(!v.is_empty(), "{what}: metadata.{field} empty: {r:?}");
            }
        }
        Some(metadata::Kind::Default(name)) => assert!(!name.is_empty(), "{what}: {m:?}"),
        None => panic!("{what}: no metadata"),
    }
}

/// The `Destination.Get` path of a backend, after checking it.
fn check_backend(b: &Backend, what: &str) -> String {
    check_metadata(&b.metadata, what);
    let q = b
        .queue
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: no queue"));
    assert_eq!(q.capacity, 100, "{what}");
    assert_eq!(duration(&q.failfast_timeout, what), Duration::from_secs(3));
    let Some(backend::Kind::Balancer(p2c)) = &b.kind else {
        panic!("{what}: not a balancer: {b:?}")
    };
    let Some(balance_p2c::Load::PeakEwma(ewma)) = &p2c.load else {
        panic!("{what}: load {:?}", p2c.load)
    };
    assert_eq!(duration(&ewma.default_rtt, what), Duration::from_millis(30));
    assert_eq!(duration(&ewma.decay, what), Duration::from_secs(10));
    let Some(endpoint_discovery::Kind::Dst(dst)) =
        p2c.discovery.as_ref().and_then(|d| d.kind.as_ref())
    else {
        panic!("{what}: no discovery")
    };
    let (host, port) = dst.path.rsplit_once(':').unwrap();
    assert!(host.ends_with(".svc.cluster.local"), "{what}: {}", dst.path);
    assert!(port.parse::<u16>().unwrap() > 0);
    dst.path.clone()
}

fn check_accrual(a: &Option<FailureAccrual>, what: &str) {
    let Some(failure_accrual::Kind::ConsecutiveFailures(c)) =
        a.as_ref().and_then(|a| a.kind.as_ref())
    else {
        panic!("{what}: failure accrual {a:?}")
    };
    assert_eq!(c.max_failures, 7);
    let b = c.backoff.as_ref().unwrap();
    let min = duration(&b.min_backoff, what);
    let max = duration(&b.max_backoff, what);
    assert_eq!(
        (min, max),
        (Duration::from_secs(1), Duration::from_secs(60))
    );
    assert!(b.jitter_ratio >= 0.0 && b.jitter_ratio == 0.5);
}

fn check_match(m: &HttpRouteMatch, what: &str) {
    assert!(m.query_params.is_empty());
    if let Some(p) = &m.path {
        match p
            .kind
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: empty path"))
        {
            path_match::Kind::Regex(re) => {
                weft_smi_crds::profile::compile_anchored(re).unwrap();
            }
            path_match::Kind::Prefix(p) | path_match::Kind::Exact(p) => {
                assert!(p.starts_with('/'), "{what}: {p}")
            }
        }
    }
    for h in &m.headers {
        http::HeaderName::from_bytes(h.name.as_bytes()).unwrap();
        match h
            .value
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: header value"))
        {
            header_match::Value::Regex(re) => {
                weft_smi_crds::profile::compile_anchored(re).unwrap();
            }
            header_match::Value::Exact(_) => {}
        }
    }
    if let Some(method) = &m.method {
        http::Method::try_from(method.clone()).unwrap();
    }
}

fn check_http_route(r: &HttpRoute, what: &str) {
    check_metadata(&r.metadata, what);
    assert!(!r.rules.is_empty(), "{what}: no rules");
    for rule in &r.rules {
        assert!(!rule.matches.is_empty(), "{what}: a rule without matches");
        for m in &rule.matches {
            check_match(m, what);
        }
        assert!(rule.filters.is_empty(), "{what}");
        for path in rule_backends(r, rule, what) {
            assert!(!path.0.is_empty());
        }
        if let Some(t) = &rule.timeouts {
            for d in [&t.request, &t.response, &t.idle].into_iter().flatten() {
                duration(&Some(*d), what);
            }
        }
        if let Some(retry) = &rule.retry {
            assert!(retry.max_retries > 0, "{what}");
            let c = retry
                .conditions
                .as_ref()
                .unwrap_or_else(|| panic!("{what}: retry conditions must be set"));
            assert!(!c.status_ranges.is_empty(), "{what}");
            for s in &c.status_ranges {
                assert!(
                    (100..=599).contains(&s.start) && (100..=599).contains(&s.end),
                    "{what}: {s:?}"
                );
                assert!(s.start <= s.end, "{what}: {s:?}");
            }
            if retry.timeout.is_some() {
                duration(&retry.timeout, what);
            }
        }
    }
}

/// A rule's `(Destination.Get path, weight)`s, checked.
fn rule_backends(r: &HttpRoute, rule: &http_route::Rule, what: &str) -> Vec<(String, u32)> {
    let _ = r;
    match rule
        .backends
        .as_ref()
        .and_then(|d| d.kind.as_ref())
        .unwrap_or_else(|| panic!("{what}: no distribution"))
    {
        http_route::distribution::Kind::FirstAvailable(fa) => {
            assert!(!fa.backends.is_empty(), "{what}: empty FirstAvailable");
            fa.backends
                .iter()
                .map(|b| (check_backend(b.backend.as_ref().unwrap(), what), 1))
                .collect()
        }
        http_route::distribution::Kind::RandomAvailable(ra) => {
            assert!(!ra.backends.is_empty(), "{what}: empty RandomAvailable");
            assert!(
                ra.backends.iter().any(|b| b.weight > 0),
                "{what}: all weights 0"
            );
            ra.backends
                .iter()
                .map(|b| {
                    let rb = b.backend.as_ref().unwrap();
                    assert!(rb.filters.is_empty());
                    (check_backend(rb.backend.as_ref().unwrap(), what), b.weight)
                })
                .collect()
        }
        http_route::distribution::Kind::Empty(_) => panic!("{what}: empty distribution"),
    }
}

/// An opaque route's backends, checked.
fn check_opaque_route(r: &OpaqueRoute, what: &str) -> Vec<(String, u32)> {
    check_metadata(&r.metadata, what);
    assert_eq!(r.rules.len(), 1, "{what}");
    let rule = &r.rules[0];
    assert!(rule.filters.is_empty());
    match rule
        .backends
        .as_ref()
        .and_then(|d| d.kind.as_ref())
        .unwrap()
    {
        opaque_route::distribution::Kind::FirstAvailable(fa) => {
            assert!(!fa.backends.is_empty(), "{what}");
            fa.backends
                .iter()
                .map(|b| (check_backend(b.backend.as_ref().unwrap(), what), 1))
                .collect()
        }
        opaque_route::distribution::Kind::RandomAvailable(ra) => {
            assert!(!ra.backends.is_empty(), "{what}");
            ra.backends
                .iter()
                .map(|b| {
                    let rb = b.backend.as_ref().unwrap();
                    (check_backend(rb.backend.as_ref().unwrap(), what), b.weight)
                })
                .collect()
        }
        opaque_route::distribution::Kind::Empty(_) => panic!("{what}: empty distribution"),
    }
}

/// What a checked policy is.
enum Checked {
    /// `Detect`: the HTTP routes (HTTP/1 = HTTP/2) and the opaque route's
    /// backends.
    Detect(Vec<HttpRoute>, Vec<(String, u32)>),
    /// `Opaque`: its one route's backends.
    Opaque(Vec<(String, u32)>),
}

/// Checks every field of `p`, a policy for Service `svc` in `shop` at `port`.
fn check(p: &OutboundPolicy, svc: &str, port: u32) -> Checked {
    let Some(metadata::Kind::Resource(r)) = p.metadata.as_ref().and_then(|m| m.kind.as_ref())
    else {
        panic!("policy metadata: {p:?}")
    };
    assert_eq!(
        (
            r.group.as_str(),
            r.kind.as_str(),
            r.name.as_str(),
            r.namespace.as_str(),
            r.port
        ),
        ("core", "Service", svc, "shop", port)
    );
    match p.protocol.as_ref().and_then(|p| p.kind.as_ref()).unwrap() {
        proxy_protocol::Kind::Detect(d) => {
            assert_eq!(duration(&d.timeout, "detect"), Duration::from_secs(10));
            let opaque = d.opaque.as_ref().unwrap();
            assert_eq!(opaque.routes.len(), 1, "exactly one opaque route");
            let opaque = check_opaque_route(&opaque.routes[0], "detect opaque");
            let h1 = d.http1.as_ref().unwrap();
            let h2 = d.http2.as_ref().unwrap();
            assert_eq!(h1.routes, h2.routes);
            check_accrual(&h1.failure_accrual, "http1");
            check_accrual(&h2.failure_accrual, "http2");
            assert!(!h1.routes.is_empty());
            for (i, r) in h1.routes.iter().enumerate() {
                check_http_route(r, &format!("route #{i}"));
            }
            // The last route catches everything.
            let last = h1.routes.last().unwrap();
            assert_eq!(
                last.rules[0].matches,
                [HttpRouteMatch {
                    path: Some(linkerd2_proxy_api::http_route::PathMatch {
                        kind: Some(path_match::Kind::Prefix("/".into()))
                    }),
                    ..Default::default()
                }]
            );
            Checked::Detect(h1.routes.clone(), opaque)
        }
        proxy_protocol::Kind::Opaque(o) => {
            assert_eq!(o.routes.len(), 1);
            Checked::Opaque(check_opaque_route(&o.routes[0], "opaque"))
        }
        other => panic!("unexpected protocol {other:?}"),
    }
}

fn detect(c: Checked) -> (Vec<HttpRoute>, Vec<(String, u32)>) {
    match c {
        Checked::Detect(r, o) => (r, o),
        Checked::Opaque(_) => panic!("opaque, expected Detect"),
    }
}

/// Routes a request as an API client does: the first rule (in route
/// order) one of whose matches holds; its backends and the route's name.
fn route(
    routes: &[HttpRoute],
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (Vec<(String, u32)>, Metadata) {
    for r in routes {
        for rule in &r.rules {
            let hit = rule.matches.iter().any(|m| {
                let method_ok = m
                    .method
                    .as_ref()
                    .is_none_or(|x| http::Method::try_from(x.clone()).unwrap().as_str() == method);
                let path_ok = match m.path.as_ref().and_then(|p| p.kind.as_ref()) {
                    None => true,
                    Some(path_match::Kind::Prefix(p)) => path.starts_with(p.as_str()),
                    Some(path_match::Kind::Exact(p)) => path == p,
                    Some(path_match::Kind::Regex(re)) => {
                        weft_smi_crds::profile::compile_anchored(re)
                            .unwrap()
                            .is_match(path)
                    }
                };
                let headers_ok = m.headers.iter().all(|h| {
                    headers.iter().any(|(n, v)| {
                        n.eq_ignore_ascii_case(&h.name)
                            && match h.value.as_ref().unwrap() {
                                header_match::Value::Exact(x) => x == v.as_bytes(),
                                header_match::Value::Regex(re) => {
                                    weft_smi_crds::profile::compile_anchored(re)
                                        .unwrap()
                                        .is_match(v)
                                }
                            }
                    })
                });
                method_ok && path_ok && headers_ok
            });
            if hit {
                return (
                    rule_backends(r, rule, "routed"),
                    r.metadata.clone().unwrap(),
                );
            }
        }
    }
    panic!("{method} {path} {headers:?}: no route (a client would answer 404)")
}

fn svc(name: &str, port: u16) -> (String, u32) {
    (format!("{name}.shop.svc.cluster.local:{port}"), 1)
}

fn is_default(m: &Metadata, name: &str) -> bool {
    m.kind == Some(metadata::Kind::Default(name.into()))
}

#[tokio::test]
async fn service_without_split_by_name_and_cluster_ip() {
    let (id, _cfg, ctl) = start_with_config(&[("svc.yaml", SERVICES)]).await;
    let mut c = client(id.path(), &ctl).await;
    let by_name = policy(&mut c, by_authority("web.shop.svc.cluster.local:80")).await;
    let (routes, opaque) = detect(check(&by_name, "web", 80));
    // Only the catch-all, to the Service itself.
    assert_eq!(routes.len(), 1);
    assert_eq!(opaque, [svc("web", 80)]);
    let (backends, name) = route(&routes, "GET", "/anything", &[]);
    assert_eq!(backends, [svc("web", 80)]);
    assert!(is_default(&name, "http"));
    // The short form and the ClusterIP (as an authority and as an address)
    // answer the same policy.
    assert_eq!(policy(&mut c, by_authority("web.shop:80")).await, by_name);
    assert_eq!(policy(&mut c, by_authority("10.96.0.10:80")).await, by_name);
    assert_eq!(policy(&mut c, by_addr([10, 96, 0, 10], 80)).await, by_name);
    // Another port of the same ClusterIP: the same Service at that port.
    let other = policy(&mut c, by_addr([10, 96, 0, 10], 9090)).await;
    let (routes, _) = detect(check(&other, "web", 9090));
    assert_eq!(route(&routes, "GET", "/", &[]).0, [svc("web", 9090)]);
}

#[tokio::test]
async fn weighted_split_is_the_catch_all() {
    let (id, _cfg, ctl) =
        start_with_config(&[("svc.yaml", SERVICES), ("rollout.yaml", ROLLOUT)]).await;
    let mut c = client(id.path(), &ctl).await;
    for spec in [
        by_authority("web.shop.svc.cluster.local:80"),
        by_addr([10, 96, 0, 10], 80),
    ] {
        let p = policy(&mut c, spec).await;
        let (routes, opaque) = detect(check(&p, "web", 80));
        assert_eq!(routes.len(), 1);
        let weights = vec![
            ("web-v1.shop.svc.cluster.local:80".to_owned(), 9000),
            ("web-v2.shop.svc.cluster.local:80".to_owned(), 1000),
        ];
        assert_eq!(opaque, weights);
        assert_eq!(route(&routes, "POST", "/x", &[]).0, weights);
    }
}

#[tokio::test]
async fn header_match_split_then_the_catch_all() {
    let (id, _cfg, ctl) =
        start_with_config(&[("svc.yaml", SERVICES), ("canary.yaml", CANARY)]).await;
    let mut c = client(id.path(), &ctl).await;
    let p = policy(&mut c, by_authority("web.shop:80")).await;
    let (routes, _) = detect(check(&p, "web", 80));
    assert_eq!(routes.len(), 2);
    let canary = vec![
        ("web-v1.shop.svc.cluster.local:80".to_owned(), 0),
        ("web-v2.shop.svc.cluster.local:80".to_owned(), 1000),
    ];
    let (b, name) = route(&routes, "GET", "/", &[("x-canary", "true")]);
    assert_eq!(b, canary);
    let Some(metadata::Kind::Resource(r)) = name.kind else {
        panic!()
    };
    assert_eq!(
        (r.kind.as_str(), r.name.as_str()),
        ("TrafficSplit", "web-canary")
    );
    // Matching no rule: the Service itself.
    for headers in [&[][..], &[("x-canary", "false")][..]] {
        let (b, name) = route(&routes, "GET", "/", headers);
        assert_eq!(b, [svc("web", 80)]);
        assert!(is_default(&name, "http"));
    }

    // With a matchless split too, unmatched requests follow its weights.
    let (id, _cfg, ctl) = start_with_config(&[
        ("svc.yaml", SERVICES),
        ("canary.yaml", CANARY),
        ("rollout.yaml", ROLLOUT),
    ])
    .await;
    let mut c = client(id.path(), &ctl).await;
    let p = policy(&mut c, by_addr([10, 96, 0, 10], 80)).await;
    let (routes, _) = detect(check(&p, "web", 80));
    assert_eq!(
        route(&routes, "GET", "/", &[("x-canary", "true")]).0,
        canary
    );
    assert_eq!(
        route(&routes, "GET", "/", &[]).0,
        [
            ("web-v1.shop.svc.cluster.local:80".to_owned(), 9000),
            ("web-v2.shop.svc.cluster.local:80".to_owned(), 1000),
        ]
    );
}

#[tokio::test]
async fn profile_routes_carry_timeouts_and_retries() {
    let (id, _cfg, ctl) =
        start_with_config(&[("svc.yaml", SERVICES), ("profile.yaml", PROFILE)]).await;
    let mut c = client(id.path(), &ctl).await;
    let p = policy(&mut c, by_authority("web.shop.svc.cluster.local:80")).await;
    let (routes, _) = detect(check(&p, "web", 80));
    // The `not` route cannot be expressed: the books route and the catch-all.
    assert_eq!(routes.len(), 2, "{routes:?}");
    let (b, name) = route(&routes, "GET", "/books/7", &[]);
    assert_eq!(b, [svc("web", 80)]);
    let Some(metadata::Kind::Resource(r)) = name.kind else {
        panic!()
    };
    assert_eq!(
        (r.group.as_str(), r.kind.as_str(), r.section.as_str()),
        ("linkerd.io", "ServiceProfile", "GET /books/{id}")
    );
    let rule = &routes[0].rules[0];
    assert_eq!(
        duration(&rule.timeouts.as_ref().unwrap().request, "timeout"),
        Duration::from_millis(300)
    );
    let ranges = &rule
        .retry
        .as_ref()
        .unwrap()
        .conditions
        .as_ref()
        .unwrap()
        .status_ranges;
    assert_eq!((ranges[0].start, ranges[0].end), (500, 599));
    // Everything else: the catch-all, no timeout, no retry.
    let (b, name) = route(&routes, "POST", "/books/7", &[]);
    assert_eq!(b, [svc("web", 80)]);
    assert!(is_default(&name, "http"));
    let catch_all = &routes[1].rules[0];
    assert!(catch_all.timeouts.is_none() && catch_all.retry.is_none());
    ctl.wait_for_log("route \"not GET\"", WAIT).await.unwrap();
}

#[tokio::test]
async fn opaque_ports_from_profile_service_and_pods() {
    let opaque = "\
apiVersion: v1
kind: Service
metadata:
  name: db
  namespace: shop
  annotations: {config.linkerd.io/opaque-ports: '5432'}
spec: {clusterIP: 10.96.0.20, ports: [{port: 5432}, {name: admin, port: 9000}]}
---
apiVersion: v1
kind: Service
metadata: {name: cache, namespace: shop}
spec: {clusterIP: 10.96.0.21, ports: [{name: redis, port: 6379, targetPort: redis}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: cache, namespace: shop}
subsets:
- addresses: [{ip: 10.1.0.9, targetRef: {kind: Pod, name: cache-0, namespace: shop}}]
  ports: [{name: redis, port: 16379}]
---
apiVersion: v1
kind: Pod
metadata:
  name: cache-0
  namespace: shop
  annotations: {config.linkerd.io/opaque-ports: '16379'}
spec: {containers: [{name: redis, image: redis, ports: [{name: redis, containerPort: 16379}]}]}
status: {podIP: 10.1.0.9}
---
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: {name: web.shop.svc.cluster.local, namespace: shop}
spec: {opaquePorts: ['3306']}
";
    let (id, _cfg, ctl) =
        start_with_config(&[("svc.yaml", SERVICES), ("opaque.yaml", opaque)]).await;
    let mut c = client(id.path(), &ctl).await;
    for (spec, name, port) in [
        (by_authority("web.shop:3306"), "web", 3306),
        (by_authority("db.shop:5432"), "db", 5432),
        (by_addr([10, 96, 0, 20], 5432), "db", 5432),
        (by_addr([10, 96, 0, 21], 6379), "cache", 6379),
    ] {
        let p = policy(&mut c, spec).await;
        let Checked::Opaque(b) = check(&p, name, port as u32) else {
            panic!("{name}:{port} is not opaque: {p:?}")
        };
        assert_eq!(b, [svc(name, port)]);
    }
    // Other ports of the same Services detect the protocol.
    detect(check(
        &policy(&mut c, by_authority("db.shop:9000")).await,
        "db",
        9000,
    ));
    detect(check(
        &policy(&mut c, by_authority("web.shop:80")).await,
        "web",
        80,
    ));
}

#[tokio::test]
async fn targets_without_a_policy() {
    let (id, _cfg, ctl) = start_with_config(&[("svc.yaml", SERVICES)]).await;
    let mut c = client(id.path(), &ctl).await;
    // A Pod IP, an address outside the cluster, an unknown Service.
    for spec in [
        by_addr([10, 1, 0, 5], 8080),
        by_authority("10.1.0.5:8080"),
        by_addr([93, 184, 216, 34], 443),
        by_authority("nope.shop.svc.cluster.local:80"),
    ] {
        let err = c.get(spec.clone()).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound, "{spec:?}: {err}");
        let err = c.watch(spec.clone()).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound, "{spec:?}: {err}");
    }
    // Names outside the cluster domain, bad ports, no target.
    for spec in [
        by_authority("www.example.com:443"),
        by_authority("web.shop:http"),
        by_addr([10, 96, 0, 10], 0),
        TrafficSpec {
            source_workload: String::new(),
            target: None,
        },
    ] {
        let err = c.get(spec.clone()).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{spec:?}: {err}");
    }
}

#[tokio::test]
async fn watch_ends_with_not_found_when_the_service_goes() {
    let (id, cfg, ctl) = start_with_config(&[
        ("web.yaml", SERVICES.split("---").next().unwrap()),
        ("rollout.yaml", ROLLOUT),
    ])
    .await;
    let mut c = client(id.path(), &ctl).await;
    let mut s = c
        .watch(by_addr([10, 96, 0, 10], 80))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(WAIT, s.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    detect(check(&first, "web", 80));
    std::fs::remove_file(cfg.path().join("web.yaml")).unwrap();
    let end = tokio::time::timeout(WAIT, s.message()).await.unwrap();
    assert_eq!(end.unwrap_err().code(), tonic::Code::NotFound);
}
