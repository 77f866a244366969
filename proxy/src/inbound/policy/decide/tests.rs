#![allow(clippy::unwrap_used)]

use super::*;
use crate::inbound::policy::model::Protocol;
use linkerd2_proxy_api::http_route::{path_match, HttpRouteMatch, PathMatch};
use linkerd2_proxy_api::http_types::{http_method, HttpMethod};
use linkerd2_proxy_api::inbound as api;
use std::sync::Arc;
use weft_policy::{default_authz, DefaultPolicy, DEFAULT_CLUSTER_NETWORKS};

const A: &str = "a.shop.serviceaccount.identity.weft.cluster.local";
const B: &str = "b.shop.serviceaccount.identity.weft.cluster.local";
const OPS: &str = "mon.ops.serviceaccount.identity.weft.cluster.local";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn mtls(id: &str) -> Tls {
    Tls::Client(Arc::from(id))
}

fn authz(nets: &[&str], except: &[&str], authn: api::Authn, name: &str) -> Authz {
    let networks = nets
        .iter()
        .map(|n| api::Network {
            net: Some(n.parse::<ipnet::IpNet>().unwrap().into()),
            except: except
                .iter()
                .map(|e| e.parse::<ipnet::IpNet>().unwrap().into())
                .collect(),
        })
        .collect();
    Authz::from_proto(default_authz(name, networks, authn)).unwrap()
}

fn default(policy: DefaultPolicy, probes: &[&str], trust_loopback: bool) -> ServerPolicy {
    let cluster = weft_policy::parse_networks(DEFAULT_CLUSTER_NETWORKS).unwrap();
    let probes: Vec<String> = probes.iter().map(|p| p.to_string()).collect();
    let s = weft_policy::default_server(policy, &cluster, false, &probes);
    ServerPolicy::from_proto(s, trust_loopback).unwrap()
}

#[test]
fn networks_and_their_exceptions() {
    let a = authz(
        &["10.0.0.0/8", "fd00::/8"],
        &["10.9.0.0/16"],
        weft_policy::unauthenticated(),
        "n",
    );
    let plain = Tls::NoIdentity;
    assert!(a.admits(ip("10.1.2.3"), &plain));
    assert!(!a.admits(ip("10.9.1.1"), &plain), "excepted");
    assert!(!a.admits(ip("192.168.1.1"), &plain));
    assert!(a.admits(ip("fd00::1"), &plain));
    assert!(
        a.admits(ip("::ffff:10.1.2.3"), &plain),
        "IPv4-mapped counts as IPv4"
    );
    assert!(!a.admits(ip("::ffff:10.9.0.1"), &plain));
    assert!(!a.admits(ip("2001:db8::1"), &plain));
}

#[test]
fn every_authentication_shape() {
    let any = ["0.0.0.0/0", "::/0"];
    let unauth = authz(&any, &[], weft_policy::unauthenticated(), "u");
    let tls_only = Authz {
        authn: Authn::MeshTls,
        ..unauth.clone()
    };
    let exact = authz(
        &any,
        &[],
        weft_policy::mesh_identities(vec![A.into()], vec![]),
        "e",
    );
    let suffix = authz(
        &any,
        &[],
        weft_policy::mesh_identities(vec![], vec![vec!["ops".into(), "serviceaccount".into()]]),
        "s",
    );
    let anyone = authz(&any, &[], weft_policy::any_mesh_identity(), "m");
    let nobody = authz(
        &any,
        &[],
        weft_policy::mesh_identities(vec![], vec![]),
        "none",
    );
    let at = ip("10.0.0.1");
    for tls in [Tls::NoIdentity, Tls::Disabled, Tls::Passthru] {
        assert!(unauth.admits(at, &tls), "{tls:?}");
        for a in [&tls_only, &exact, &suffix, &anyone, &nobody] {
            assert!(!a.admits(at, &tls), "{} admitted {tls:?}", a.meta);
        }
    }
    assert!(unauth.admits(at, &mtls(A)));
    assert!(tls_only.admits(at, &mtls(B)));
    assert!(exact.admits(at, &mtls(A)));
    assert!(!exact.admits(at, &mtls(B)));
    assert!(!exact.admits(
        at,
        &mtls("x.a.shop.serviceaccount.identity.weft.cluster.local")
    ));
    assert!(suffix.admits(at, &mtls("mon.ops.serviceaccount")));
    assert!(
        !suffix.admits(at, &mtls(OPS)),
        "suffix is the end of the name"
    );
    assert!(anyone.admits(at, &mtls(OPS)) && anyone.admits(at, &mtls(A)));
    assert!(!nobody.admits(at, &mtls(A)));
}

#[test]
fn default_policies_at_the_tcp_level() {
    let cluster_client = ip("10.1.1.1");
    let outsider = ip("203.0.113.9");
    let cases = [
        (DefaultPolicy::AllUnauthenticated, [true, true, true, true]),
        (DefaultPolicy::AllAuthenticated, [false, true, false, true]),
        (
            DefaultPolicy::ClusterUnauthenticated,
            [true, true, false, false],
        ),
        (
            DefaultPolicy::ClusterAuthenticated,
            [false, true, false, false],
        ),
        (DefaultPolicy::Deny, [false, false, false, false]),
        (DefaultPolicy::Audit, [true, true, true, true]),
    ];
    for (policy, want) in cases {
        let p = default(policy, &[], false);
        let got = [
            tcp(&p, cluster_client, &Tls::NoIdentity).is_some(),
            tcp(&p, cluster_client, &mtls(A)).is_some(),
            tcp(&p, outsider, &Tls::NoIdentity).is_some(),
            tcp(&p, outsider, &mtls(A)).is_some(),
        ];
        assert_eq!(got, want, "{policy}");
    }
    let audit = default(DefaultPolicy::Audit, &[], false);
    assert!(tcp(&audit, outsider, &Tls::NoIdentity)
        .unwrap()
        .meta
        .is_audit());
}

#[test]
fn trusted_loopback_is_admitted_under_deny_and_untrusted_is_not() {
    let trusted = default(DefaultPolicy::Deny, &[], true);
    let untrusted = default(DefaultPolicy::Deny, &[], false);
    for lo in ["127.0.0.1", "::1"] {
        let a = tcp(&trusted, ip(lo), &Tls::NoIdentity).unwrap();
        assert_eq!(&*a.meta.name, "localhost");
        assert!(tcp(&untrusted, ip(lo), &Tls::NoIdentity).is_none());
    }
    assert!(tcp(&trusted, ip("127.0.0.2"), &Tls::NoIdentity).is_none());
    assert!(http_connection(&trusted, ip("127.0.0.1"), &Tls::NoIdentity));
}

/// `deny`, a probe route for `/ready`, and an SMI-style route allowing
/// `a` to `GET /metrics` (plus `POST` on `/api/...` for `ops` suffixes).
fn smi() -> ServerPolicy {
    let get = HttpMethod {
        r#type: Some(http_method::Type::Registered(
            http_method::Registered::Get.into(),
        )),
    };
    let rx = |re: &str| PathMatch {
        kind: Some(path_match::Kind::Regex(re.into())),
    };
    let tt = |name: &str, authn| {
        let mut a = default_authz(name, weft_policy::all_networks(), authn);
        a.metadata = Some(weft_policy::resource_meta(
            "access.smi-spec.io",
            "TrafficTarget",
            "shop",
            name,
        ));
        a
    };
    let metrics = api::HttpRoute {
        metadata: Some(weft_policy::resource_meta(
            "specs.smi-spec.io",
            "HTTPRouteGroup",
            "shop",
            "web-routes",
        )),
        hosts: Vec::new(),
        authorizations: vec![tt(
            "a-to-web",
            weft_policy::mesh_identities(vec![A.into()], vec![]),
        )],
        rules: vec![api::http_route::Rule {
            matches: vec![HttpRouteMatch {
                path: Some(rx("/metrics")),
                method: Some(get),
                ..Default::default()
            }],
            filters: Vec::new(),
        }],
    };
    let api_route = api::HttpRoute {
        metadata: Some(weft_policy::resource_meta(
            "specs.smi-spec.io",
            "HTTPRouteGroup",
            "shop",
            "api-routes",
        )),
        hosts: Vec::new(),
        authorizations: vec![tt(
            "ops-to-web",
            weft_policy::mesh_identities(
                vec![],
                vec![[
                    "ops",
                    "serviceaccount",
                    "identity",
                    "weft",
                    "cluster",
                    "local",
                ]
                .map(String::from)
                .to_vec()],
            ),
        )],
        rules: vec![api::http_route::Rule {
            matches: vec![HttpRouteMatch {
                path: Some(rx("/api/.*")),
                ..Default::default()
            }],
            filters: Vec::new(),
        }],
    };
    let mut routes = weft_policy::probe_route(&["/ready".to_owned()])
        .into_iter()
        .collect::<Vec<_>>();
    routes.push(metrics);
    routes.push(api_route);
    routes.push(weft_policy::default_route());
    let s = api::Server {
        protocol: Some(weft_policy::protocol(false, routes)),
        server_ips: Vec::new(),
        authorizations: Vec::new(),
        labels: weft_policy::labels("access.smi-spec.io", "serviceaccount", "web"),
    };
    ServerPolicy::from_proto(s, false).unwrap()
}

fn decide_on(p: &ServerPolicy, tls: &Tls, method: &str, path: &str) -> (bool, String, String) {
    let (method, uri, headers): (http::Method, http::Uri, _) = (
        method.parse().unwrap(),
        path.parse().unwrap(),
        http::HeaderMap::new(),
    );
    let head = RequestHead {
        method: &method,
        uri: &uri,
        headers: &headers,
    };
    match http(p, ip("10.0.0.7"), tls, &head) {
        HttpDecision::Allow { route, authz } => (
            true,
            route.meta.name.to_string(),
            authz.meta.name.to_string(),
        ),
        HttpDecision::Deny { route } => (false, route.meta.name.to_string(), String::new()),
        HttpDecision::NoRoute => (false, String::new(), String::new()),
    }
}

#[test]
fn requests_are_admitted_by_the_routes_they_match() {
    let p = smi();
    let a = mtls(A);
    assert_eq!(
        decide_on(&p, &a, "GET", "/metrics"),
        (true, "web-routes".into(), "a-to-web".into())
    );
    assert_eq!(
        decide_on(&p, &a, "POST", "/metrics"),
        (false, "default".into(), String::new())
    );
    assert_eq!(
        decide_on(&p, &a, "GET", "/other"),
        (false, "default".into(), String::new())
    );
    assert_eq!(
        decide_on(&p, &a, "GET", "/metrics/x"),
        (false, "default".into(), String::new())
    );
    // A source not listed is refused even with a valid certificate.
    let b = mtls(B);
    assert_eq!(
        decide_on(&p, &b, "GET", "/metrics"),
        (false, "web-routes".into(), String::new())
    );
    assert!(!decide_on(&p, &Tls::NoIdentity, "GET", "/metrics").0);
    // Suffix identities on another route.
    let ops = mtls(OPS);
    assert_eq!(
        decide_on(&p, &ops, "DELETE", "/api/x"),
        (true, "api-routes".into(), "ops-to-web".into())
    );
    assert!(!decide_on(&p, &ops, "GET", "/metrics").0);
    // Probes pass from anyone, only on their exact path and method.
    for tls in [Tls::NoIdentity, mtls(B)] {
        assert_eq!(
            decide_on(&p, &tls, "GET", "/ready"),
            (true, "probe".into(), "probe".into())
        );
        assert!(!decide_on(&p, &tls, "POST", "/ready").0);
        assert!(!decide_on(&p, &tls, "GET", "/ready/x").0);
    }
}

#[test]
fn any_matching_routes_authorization_admits_and_the_best_route_is_reported() {
    // Two overlapping routes: `/api/.*` for ops, and a more specific exact
    // `/api/x` for a only.
    let mut p = smi();
    let exact = api::HttpRoute {
        metadata: Some(weft_policy::default_meta("exact")),
        hosts: Vec::new(),
        authorizations: vec![default_authz(
            "a-only",
            weft_policy::all_networks(),
            weft_policy::mesh_identities(vec![A.into()], vec![]),
        )],
        rules: vec![api::http_route::Rule {
            matches: vec![HttpRouteMatch {
                path: Some(PathMatch {
                    kind: Some(path_match::Kind::Exact("/api/x".into())),
                }),
                ..Default::default()
            }],
            filters: Vec::new(),
        }],
    };
    let mut routes: Vec<HttpRoute> = std::mem::take(&mut p.routes).into_vec();
    routes.insert(0, HttpRoute::from_proto(exact).unwrap());
    p.routes = routes.into();
    // ops is admitted by the less specific route it is allowed on.
    assert_eq!(
        decide_on(&p, &mtls(OPS), "GET", "/api/x"),
        (true, "api-routes".into(), "ops-to-web".into())
    );
    assert_eq!(
        decide_on(&p, &mtls(A), "GET", "/api/x"),
        (true, "exact".into(), "a-only".into())
    );
    // Refused: reported on the best match.
    assert_eq!(
        decide_on(&p, &mtls(B), "GET", "/api/x"),
        (false, "exact".into(), String::new())
    );
}

#[test]
fn server_authorizations_apply_to_every_route() {
    let p = default(DefaultPolicy::AllAuthenticated, &["/live"], false);
    assert_eq!(
        decide_on(&p, &mtls(B), "GET", "/x"),
        (true, "default".into(), "all-authenticated".into())
    );
    assert_eq!(
        decide_on(&p, &Tls::NoIdentity, "GET", "/x"),
        (false, "default".into(), String::new())
    );
    // The probe's own authorization comes first on its route.
    assert_eq!(
        decide_on(&p, &mtls(B), "GET", "/live"),
        (true, "probe".into(), "probe".into())
    );
    assert_eq!(
        decide_on(&p, &Tls::NoIdentity, "GET", "/live"),
        (true, "probe".into(), "probe".into())
    );
}

#[test]
fn audit_admits_only_what_nothing_else_does() {
    let mut p = smi();
    let audit =
        Authz::from_proto(weft_policy::default_authorizations(DefaultPolicy::Audit, &[]).remove(0))
            .unwrap();
    p.authorizations = vec![audit].into();
    let (ok, route, by) = decide_on(&p, &mtls(B), "GET", "/metrics");
    assert_eq!(
        (ok, route.as_str(), by.as_str()),
        (true, "web-routes", "audit")
    );
    assert_eq!(decide_on(&p, &mtls(A), "GET", "/metrics").2, "a-to-web");
    assert_eq!(decide_on(&p, &Tls::NoIdentity, "POST", "/x").2, "audit");
    assert_eq!(decide_on(&p, &Tls::NoIdentity, "GET", "/ready").2, "probe");
    assert!(tcp(&p, ip("10.0.0.1"), &Tls::NoIdentity)
        .unwrap()
        .meta
        .is_audit());
}

#[test]
fn no_matching_route_is_no_route() {
    let mut p = smi();
    let routes: Vec<HttpRoute> = std::mem::take(&mut p.routes)
        .into_vec()
        .into_iter()
        .filter(|r| &*r.meta.name != "default")
        .collect();
    p.routes = routes.into();
    assert_eq!(
        decide_on(&p, &mtls(A), "GET", "/other"),
        (false, String::new(), String::new())
    );
    assert!(decide_on(&p, &mtls(A), "GET", "/metrics").0);
}

#[test]
fn http_connections_are_refused_only_when_nothing_could_admit_them() {
    let p = smi();
    let at = ip("10.0.0.7");
    // Plaintext may still reach the probe route.
    assert!(http_connection(&p, at, &Tls::NoIdentity));
    assert!(http_connection(&p, at, &mtls(B)));
    // Without the probe route, plaintext can never be admitted.
    let mut no_probe = smi();
    let routes: Vec<HttpRoute> = std::mem::take(&mut no_probe.routes)
        .into_vec()
        .into_iter()
        .filter(|r| &*r.meta.name != "probe")
        .collect();
    no_probe.routes = routes.into();
    assert!(!http_connection(&no_probe, at, &Tls::NoIdentity));
    assert!(http_connection(&no_probe, at, &mtls(A)));
    assert!(
        !http_connection(&no_probe, at, &mtls(B)),
        "no authorization names b"
    );
    assert!(http_connection(&no_probe, at, &mtls(OPS)));
    let deny = default(DefaultPolicy::Deny, &[], false);
    assert!(!http_connection(&deny, at, &mtls(A)));
    // Opaque servers: as TCP.
    let mut opaque = default(DefaultPolicy::AllAuthenticated, &[], false);
    opaque.protocol = Protocol::Opaque;
    assert!(!http_connection(&opaque, at, &Tls::NoIdentity));
    assert!(http_connection(&opaque, at, &mtls(A)));
}
