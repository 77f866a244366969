//! The translation against docs/policy.md: default policies and their
//! precedence, probes, opaque ports, every row of the TrafficTarget table,
//! and what cannot be applied (never wider).
#![allow(clippy::unwrap_used)]

use super::*;
use crate::destination::testing::snapshot;
use linkerd2_proxy_api::http_route::{header_match, path_match, HttpRouteMatch};
use linkerd2_proxy_api::http_types::{http_method, HttpMethod};
use linkerd2_proxy_api::inbound::{authn, proxy_protocol, Authz, HttpRoute};
use linkerd2_proxy_api::meta::{metadata, Metadata};

const TD: &str = "cluster.local";

fn settings(default_policy: DefaultPolicy) -> InboundSettings {
    InboundSettings {
        default_policy,
        cluster_networks: weft_policy::parse_networks("10.0.0.0/8").unwrap(),
        trust_domain: TD.into(),
    }
}

/// Pod `web-0` (ServiceAccount `web`) in `shop`: ports 8080 (`http`,
/// probed by name and by number) and 9090, with `annotations`.
fn web_pod(annotations: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: web-0
  namespace: shop
  annotations: {{{annotations}}}
spec:
  serviceAccountName: web
  containers:
  - name: app
    ports: [{{name: http, containerPort: 8080}}, {{containerPort: 9090}}]
    readinessProbe: {{httpGet: {{port: http, path: /ready}}}}
    livenessProbe: {{httpGet: {{port: 8080, path: \"/live?verbose=1\"}}}}
    startupProbe: {{httpGet: {{port: 9999, path: /elsewhere}}}}
---
"
    )
}

fn namespace(annotations: &str) -> String {
    format!(
        "apiVersion: v1
kind: Namespace
metadata:
  name: shop
  annotations: {{{annotations}}}
---
"
    )
}

/// A TrafficTarget `name` for `web` from `sources` (`sa` or `sa.ns`)
/// with `rules` (YAML flow items).
fn target(name: &str, sources: &[&str], rules: &str) -> String {
    let sources: Vec<String> = sources
        .iter()
        .map(|s| match s.split_once('.') {
            Some((sa, ns)) => format!("{{kind: ServiceAccount, name: {sa}, namespace: {ns}}}"),
            None => format!("{{kind: ServiceAccount, name: {s}}}"),
        })
        .collect();
    format!(
        "apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {{name: {name}, namespace: shop}}
spec:
  destination: {{kind: ServiceAccount, name: web}}
  sources: [{}]
  rules: [{rules}]
---
",
        sources.join(", ")
    )
}

const ROUTES: &str = "apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: web-routes, namespace: shop}
spec:
  matches:
  - {name: metrics, pathRegex: /metrics, methods: [GET]}
  - {name: api, pathRegex: \"/api/.*\", methods: [\"*\"], headers: [{x-user: \"a.*\"}]}
  - {name: write, methods: [PUT, POST]}
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: http-port, namespace: shop}
spec: {matches: {ports: [8080]}}
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: every-port, namespace: shop}
spec: {}
---
";

fn policy_of(yaml: &str, s: &InboundSettings, port: u16) -> PortPolicy {
    port_policy(&snapshot(yaml), s, &ObjectKey::new("shop", "web-0"), port).unwrap()
}

fn allow_all() -> InboundSettings {
    settings(DefaultPolicy::AllUnauthenticated)
}

/// What Linkerd's proxy requires of every message (docs/policy.md, "On
/// the wire"); also: no rule without matches (that would match all).
fn assert_valid(server: &Server) {
    let kind = server.protocol.as_ref().and_then(|p| p.kind.as_ref());
    assert!(kind.is_some(), "protocol must be set: {server:?}");
    assert!(server.labels.contains_key("name"), "{server:?}");
    let routes = match kind {
        Some(proxy_protocol::Kind::Detect(d)) => {
            assert!(d.timeout.is_some());
            d.http_routes.clone()
        }
        _ => Vec::new(),
    };
    let route_authzs = routes.iter().flat_map(|r| r.authorizations.iter());
    for a in server.authorizations.iter().chain(route_authzs) {
        assert!(!a.networks.is_empty(), "{a:?}");
        assert!(a.networks.iter().all(|n| n.net.is_some()), "{a:?}");
        assert!(
            a.authentication
                .as_ref()
                .and_then(|x| x.permit.as_ref())
                .is_some(),
            "{a:?}"
        );
        assert!(
            a.metadata.as_ref().and_then(|m| m.kind.as_ref()).is_some(),
            "{a:?}"
        );
    }
    for r in &routes {
        assert!(
            r.metadata.as_ref().and_then(|m| m.kind.as_ref()).is_some(),
            "{r:?}"
        );
        assert!(!r.rules.is_empty(), "{r:?}");
        assert!(r.rules.iter().all(|rule| !rule.matches.is_empty()), "{r:?}");
    }
}

fn routes(server: &Server) -> Vec<HttpRoute> {
    match server.protocol.as_ref().unwrap().kind.as_ref().unwrap() {
        proxy_protocol::Kind::Detect(d) => d.http_routes.clone(),
        _ => Vec::new(),
    }
}

fn is_opaque(server: &Server) -> bool {
    matches!(
        server.protocol.as_ref().unwrap().kind,
        Some(proxy_protocol::Kind::Opaque(_))
    )
}

fn meta_name(m: &Option<Metadata>) -> String {
    match m.as_ref().unwrap().kind.as_ref().unwrap() {
        metadata::Kind::Default(n) => format!("default:{n}"),
        metadata::Kind::Resource(r) => format!("{}/{}:{}/{}", r.group, r.kind, r.namespace, r.name),
    }
}

/// Route names in order, e.g. `default:probe`, `specs.smi-spec.io/HTTPRouteGroup:shop/web-routes`.
fn route_names(server: &Server) -> Vec<String> {
    routes(server)
        .iter()
        .map(|r| meta_name(&r.metadata))
        .collect()
}

fn authz_names(authzs: &[Authz]) -> Vec<String> {
    authzs.iter().map(|a| meta_name(&a.metadata)).collect()
}

/// The identities an authorization admits; `None` for unauthenticated.
fn identities(a: &Authz) -> Option<Vec<String>> {
    use authn::permit_mesh_tls::Clients;
    match a.authentication.as_ref().unwrap().permit.as_ref().unwrap() {
        authn::Permit::Unauthenticated(_) => None,
        authn::Permit::MeshTls(m) => match m.clients.as_ref().unwrap() {
            Clients::Identities(ids) => {
                Some(ids.identities.iter().map(|i| i.name.clone()).collect())
            }
            Clients::Unauthenticated(_) => None,
        },
    }
}

fn id(sa: &str, ns: &str) -> String {
    weft_identity::identity_name(sa, ns, TD).unwrap()
}

fn tt_authz(name: &str) -> String {
    format!("access.smi-spec.io/traffictarget:shop/{name}")
}

const SMI_ROUTE: &str = "specs.smi-spec.io/HTTPRouteGroup:shop/web-routes";

#[test]
fn unknown_pods_are_an_error() {
    let snap = snapshot(&web_pod(""));
    let err = port_policy(&snap, &allow_all(), &ObjectKey::new("shop", "nope"), 80).unwrap_err();
    assert_eq!(err.to_string(), "unknown pod shop/nope");
}

#[test]
fn an_ungoverned_pod_gets_its_default_policy_server() {
    for policy in DefaultPolicy::ALL {
        let p = policy_of(&web_pod(""), &settings(policy), 8080);
        assert_valid(&p.server);
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert_eq!(p.server.labels["kind"], "default");
        assert_eq!(p.server.labels["group"], "");
        assert_eq!(p.server.labels["name"], policy.as_str());
        let want = weft_policy::default_authorizations(policy, &settings(policy).cluster_networks);
        assert_eq!(p.server.authorizations, want);
        let names = authz_names(&p.server.authorizations);
        match policy {
            DefaultPolicy::Deny => assert!(names.is_empty()),
            _ => assert_eq!(names, [format!("default:{policy}")]),
        }
        assert_eq!(route_names(&p.server), ["default:probe", "default:default"]);
    }
    // The cluster-* policies admit the install's cluster networks only.
    let p = policy_of(
        &web_pod(""),
        &settings(DefaultPolicy::ClusterAuthenticated),
        9090,
    );
    assert_eq!(p.server.authorizations[0].networks.len(), 1);
    assert!(identities(&p.server.authorizations[0]).is_some());
    // No probes on 9090: only the catch-all route.
    assert_eq!(route_names(&p.server), ["default:default"]);
}

#[test]
fn the_most_specific_default_policy_wins_and_a_bad_one_denies() {
    let install = settings(DefaultPolicy::AllUnauthenticated);
    let name = |yaml: &str| {
        let p = policy_of(yaml, &install, 8080);
        (p.server.labels["name"].clone(), p.warnings)
    };
    let ann = |v: &str| format!("config.linkerd.io/default-inbound-policy: {v}");
    assert_eq!(name(&web_pod("")).0, "all-unauthenticated");
    let ns_deny = format!("{}{}", namespace(&ann("deny")), web_pod(""));
    assert_eq!(name(&ns_deny).0, "deny");
    let pod_wins = format!("{}{}", namespace(&ann("deny")), web_pod(&ann("audit")));
    assert_eq!(name(&pod_wins).0, "audit");
    // A typo never opens: deny, with a warning naming the object.
    let (n, w) = name(&format!(
        "{}{}",
        namespace(&ann("deny")),
        web_pod(&ann("allow"))
    ));
    assert_eq!(n, "deny");
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("Pod shop/web-0: annotation config.linkerd.io/default-inbound-policy"),
        "{w:?}"
    );
    assert!(w[0].contains("\"allow\""), "{w:?}");
    let (n, w) = name(&format!(
        "{}{}",
        namespace(&ann("cluster-open")),
        web_pod("")
    ));
    assert_eq!(n, "deny");
    assert!(w[0].starts_with("Namespace /shop: "), "{w:?}");
}

#[test]
fn probe_paths_are_admitted_from_anyone_by_number_or_name() {
    let p = policy_of(&web_pod(""), &settings(DefaultPolicy::Deny), 8080);
    let probe = &routes(&p.server)[0];
    assert_eq!(meta_name(&probe.metadata), "default:probe");
    let paths: Vec<String> = probe.rules[0]
        .matches
        .iter()
        .map(|m| match m.path.as_ref().unwrap().kind.as_ref().unwrap() {
            path_match::Kind::Exact(p) => p.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    // Sorted; the query string is not part of the path; the probe on
    // another port is not here.
    assert_eq!(paths, ["/live", "/ready"]);
    assert!(probe.rules[0].matches.iter().all(|m| m.method
        == Some(HttpMethod {
            r#type: Some(http_method::Type::Registered(
                http_method::Registered::Get.into()
            ))
        })));
    assert_eq!(identities(&probe.authorizations[0]), None, "from anyone");
    assert_eq!(
        probe.authorizations[0].networks,
        weft_policy::all_networks()
    );
}

#[test]
fn opaque_ports_come_from_the_pod_else_its_namespace() {
    let ann = |v: &str| format!("config.linkerd.io/opaque-ports: \"{v}\"");
    let s = allow_all();
    let pod_only = web_pod(&ann("9000-9100"));
    assert!(is_opaque(&policy_of(&pod_only, &s, 9090).server));
    assert!(!is_opaque(&policy_of(&pod_only, &s, 8080).server));
    let ns_only = format!("{}{}", namespace(&ann("8080")), web_pod(""));
    assert!(is_opaque(&policy_of(&ns_only, &s, 8080).server));
    // The pod's own list replaces its namespace's.
    let both = format!("{}{}", namespace(&ann("8080")), web_pod(&ann("9090")));
    assert!(!is_opaque(&policy_of(&both, &s, 8080).server));
    let p = policy_of(&both, &s, 9090);
    assert!(is_opaque(&p.server));
    assert_valid(&p.server);
}

#[test]
fn only_tcp_routes_open_the_selected_ports_to_the_sources() {
    let yaml = format!(
        "{}{ROUTES}{}",
        web_pod(""),
        target(
            "db",
            &["api", "prom.monitoring"],
            "{kind: TCPRoute, name: http-port}"
        )
    );
    let s = allow_all();
    let p = policy_of(&yaml, &s, 8080);
    assert_valid(&p.server);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    assert_eq!(p.server.labels["group"], "access.smi-spec.io");
    assert_eq!(p.server.labels["kind"], "serviceaccount");
    assert_eq!(p.server.labels["name"], "web");
    assert_eq!(authz_names(&p.server.authorizations), [tt_authz("db")]);
    let a = &p.server.authorizations[0];
    assert_eq!(a.labels["kind"], "traffictarget");
    assert_eq!(a.labels["name"], "db");
    assert_eq!(a.networks, weft_policy::all_networks());
    assert_eq!(
        identities(a),
        Some(vec![id("api", "shop"), id("prom", "monitoring")])
    );
    // Governed: the default policy no longer admits anyone; the probe and
    // catch-all routes stay.
    assert_eq!(route_names(&p.server), ["default:probe", "default:default"]);
    // Another port is not selected: nothing but probes.
    let other = policy_of(&yaml, &s, 9090);
    assert_valid(&other.server);
    assert_eq!(other.server.labels["kind"], "serviceaccount");
    assert!(other.server.authorizations.is_empty());
    assert_eq!(route_names(&other.server), ["default:default"]);
    // A TCPRoute without ports selects every port, opaque ones too.
    let every = format!(
        "{}{ROUTES}{}",
        web_pod("config.linkerd.io/opaque-ports: \"9090\""),
        target("db", &["api"], "{kind: TCPRoute, name: every-port}")
    );
    let p = policy_of(&every, &s, 9090);
    assert!(is_opaque(&p.server));
    assert_eq!(authz_names(&p.server.authorizations), [tt_authz("db")]);
}

/// The HttpRouteMatches of the SMI route of `server` (the only one).
fn smi_matches(server: &Server) -> Vec<HttpRouteMatch> {
    let rs: Vec<HttpRoute> = routes(server)
        .into_iter()
        .filter(|r| meta_name(&r.metadata) == SMI_ROUTE)
        .collect();
    assert_eq!(rs.len(), 1, "{rs:?}");
    rs[0].rules[0].matches.clone()
}

#[test]
fn only_route_groups_admit_matching_requests_on_any_port() {
    let yaml = format!(
        "{}{ROUTES}{}",
        web_pod(""),
        target(
            "scrape",
            &["prom.monitoring"],
            "{kind: HTTPRouteGroup, name: web-routes, matches: [metrics]}"
        )
    );
    let s = settings(DefaultPolicy::AllUnauthenticated);
    for port in [8080, 9090] {
        let p = policy_of(&yaml, &s, port);
        assert_valid(&p.server);
        assert!(
            p.server.authorizations.is_empty(),
            "nothing at the server level"
        );
        let names = route_names(&p.server);
        assert_eq!(names.last().unwrap(), "default:default");
        assert!(names.contains(&SMI_ROUTE.to_owned()), "{names:?}");
        let smi = routes(&p.server)
            .into_iter()
            .find(|r| meta_name(&r.metadata) == SMI_ROUTE)
            .unwrap();
        assert_eq!(authz_names(&smi.authorizations), [tt_authz("scrape")]);
        assert_eq!(
            identities(&smi.authorizations[0]),
            Some(vec![id("prom", "monitoring")])
        );
        // Only the named match: GET of the anchored path.
        let m = smi_matches(&p.server);
        assert_eq!(m.len(), 1);
        assert_eq!(
            m[0].path.as_ref().unwrap().kind,
            Some(path_match::Kind::Regex("^(?:/metrics)$".into()))
        );
        assert_eq!(
            m[0].method,
            Some(HttpMethod {
                r#type: Some(http_method::Type::Registered(
                    http_method::Registered::Get.into()
                ))
            })
        );
    }
    // The probe route comes first, the catch-all last.
    assert_eq!(
        route_names(&policy_of(&yaml, &s, 8080).server),
        ["default:probe", SMI_ROUTE, "default:default"]
    );
}

#[test]
fn without_named_matches_every_match_of_the_group_applies() {
    let yaml = format!(
        "{}{ROUTES}{}",
        web_pod(""),
        target("all", &["api"], "{kind: HTTPRouteGroup, name: web-routes}")
    );
    let m = smi_matches(&policy_of(&yaml, &allow_all(), 9090).server);
    // metrics (GET), api (any method: none), write (PUT and POST).
    assert_eq!(m.len(), 4, "{m:?}");
    let api = &m[1];
    assert_eq!(api.method, None, "`*` is any method");
    assert_eq!(
        api.path.as_ref().unwrap().kind,
        Some(path_match::Kind::Regex("^(?:/api/.*)$".into()))
    );
    assert_eq!(api.headers.len(), 1);
    assert_eq!(api.headers[0].name, "x-user");
    assert_eq!(
        api.headers[0].value,
        Some(header_match::Value::Regex("^(?:a.*)$".into()))
    );
    let methods: Vec<_> = m[2..].iter().map(|x| x.method.clone().unwrap()).collect();
    assert_eq!(
        methods,
        [
            HttpMethod {
                r#type: Some(http_method::Type::Registered(
                    http_method::Registered::Put.into()
                ))
            },
            HttpMethod {
                r#type: Some(http_method::Type::Registered(
                    http_method::Registered::Post.into()
                ))
            },
        ]
    );
    assert_eq!(m[2].path, None, "no pathRegex: any path");
}

#[test]
fn both_kinds_admit_matching_requests_on_the_selected_ports_only() {
    let yaml = format!(
        "{}{ROUTES}{}",
        web_pod(""),
        target(
            "both",
            &["api"],
            "{kind: TCPRoute, name: http-port}, {kind: HTTPRouteGroup, name: web-routes, matches: [api]}"
        )
    );
    let s = allow_all();
    let p = policy_of(&yaml, &s, 8080);
    assert_valid(&p.server);
    assert!(p.server.authorizations.is_empty(), "no TCP-level admission");
    assert_eq!(
        route_names(&p.server),
        ["default:probe", SMI_ROUTE, "default:default"]
    );
    let other = policy_of(&yaml, &s, 9090);
    assert!(other.server.authorizations.is_empty());
    assert_eq!(route_names(&other.server), ["default:default"]);
}

#[test]
fn allow_rules_of_several_targets_add_up() {
    let yaml = format!(
        "{}{ROUTES}{}{}{}",
        web_pod(""),
        target("a-db", &["a"], "{kind: TCPRoute, name: http-port}"),
        target(
            "b-scrape",
            &["b"],
            "{kind: HTTPRouteGroup, name: web-routes, matches: [metrics]}"
        ),
        target("c-db", &["c"], "{kind: TCPRoute, name: every-port}")
    );
    let p = policy_of(&yaml, &allow_all(), 8080);
    assert_valid(&p.server);
    assert_eq!(
        authz_names(&p.server.authorizations),
        [tt_authz("a-db"), tt_authz("c-db")]
    );
    assert_eq!(
        route_names(&p.server),
        ["default:probe", SMI_ROUTE, "default:default"]
    );
    let p = policy_of(&yaml, &allow_all(), 9090);
    assert_eq!(authz_names(&p.server.authorizations), [tt_authz("c-db")]);
}

#[test]
fn a_target_in_another_namespace_governs_nothing() {
    let foreign = "apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: sneaky, namespace: other}
spec:
  destination: {kind: ServiceAccount, name: web, namespace: shop}
  sources: [{kind: ServiceAccount, name: attacker}]
  rules: [{kind: TCPRoute, name: every-port}]
---
";
    let yaml = format!("{}{ROUTES}{foreign}", web_pod(""));
    let p = policy_of(&yaml, &settings(DefaultPolicy::Deny), 8080);
    assert_eq!(p.server.labels["kind"], "default");
    assert_eq!(p.server.labels["name"], "deny");
    assert!(p.server.authorizations.is_empty());
}

#[test]
fn rules_that_cannot_be_applied_are_dropped_and_never_widen() {
    let s = allow_all();
    // A missing route group: the target still governs, admits nothing.
    let missing = format!(
        "{}{ROUTES}{}",
        web_pod(""),
        target("t", &["api"], "{kind: HTTPRouteGroup, name: nope}")
    );
    let p = policy_of(&missing, &s, 8080);
    assert_valid(&p.server);
    assert_eq!(p.server.labels["kind"], "serviceaccount");
    assert!(p.server.authorizations.is_empty());
    assert_eq!(route_names(&p.server), ["default:probe", "default:default"]);
    assert_eq!(
        p.warnings,
        ["TrafficTarget shop/t: spec.rules[0]: unknown HTTPRouteGroup shop/nope; the rule is dropped"]
    );
    // A missing TCPRoute next to a group: the group must not widen to
    // every port (the TCPRoute was to limit them).
    let missing_tcp = format!(
        "{}{ROUTES}{}",
        web_pod(""),
        target(
            "t",
            &["api"],
            "{kind: TCPRoute, name: gone}, {kind: HTTPRouteGroup, name: web-routes}"
        )
    );
    let p = policy_of(&missing_tcp, &s, 8080);
    assert_eq!(route_names(&p.server), ["default:probe", "default:default"]);
    assert!(
        p.warnings[0].contains("unknown TCPRoute shop/gone"),
        "{:?}",
        p.warnings
    );
    // Unknown match names are dropped, known ones kept; all unknown: no route.
    let some = format!(
        "{}{ROUTES}{}",
        web_pod(""),
        target(
            "t",
            &["api"],
            "{kind: HTTPRouteGroup, name: web-routes, matches: [metrics, typo]}"
        )
    );
    let p = policy_of(&some, &s, 8080);
    assert_eq!(smi_matches(&p.server).len(), 1);
    assert!(
        p.warnings[0].contains("has no match named \"typo\""),
        "{:?}",
        p.warnings
    );
    let none = some.replace("[metrics, typo]", "[typo]");
    let p = policy_of(&none, &s, 8080);
    assert_eq!(route_names(&p.server), ["default:probe", "default:default"]);
    assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
    assert!(
        p.warnings[1].contains("no usable match"),
        "{:?}",
        p.warnings
    );
    // A TCPRoute rule naming a match the route does not have selects nothing.
    let tcp_match = format!(
        "{}{ROUTES}{}",
        web_pod(""),
        target(
            "t",
            &["api"],
            "{kind: TCPRoute, name: http-port, matches: [x]}"
        )
    );
    assert!(policy_of(&tcp_match, &s, 8080)
        .server
        .authorizations
        .is_empty());
    // No rules, or no usable source: governs and admits nothing.
    let empty = format!("{}{}", web_pod(""), target("t", &["api"], ""));
    let p = policy_of(&empty, &s, 8080);
    assert_eq!(p.server.labels["kind"], "serviceaccount");
    assert!(p.server.authorizations.is_empty());
    assert!(
        p.warnings[0].contains("spec.rules is empty"),
        "{:?}",
        p.warnings
    );
    let bad_source = format!(
        "{}{ROUTES}{}",
        web_pod(""),
        target("t", &["Not_A_Label"], "{kind: TCPRoute, name: every-port}")
    );
    let p = policy_of(&bad_source, &s, 8080);
    assert!(p.server.authorizations.is_empty());
    assert!(
        p.warnings[0].starts_with("TrafficTarget shop/t: spec.sources[0]: "),
        "{:?}",
        p.warnings
    );
    assert!(
        p.warnings[1].contains("no usable spec.sources"),
        "{:?}",
        p.warnings
    );
}

#[test]
fn an_invalid_regex_in_a_stored_group_drops_only_that_match() {
    // The feeds refuse such groups; the translation still never widens a
    // store filled otherwise.
    use weft_smi_crds::specs::v1alpha4::{HTTPRouteGroup, HTTPRouteGroupSpec};
    use weft_smi_crds::specs::HttpMatch;
    let mut snap = snapshot(&format!(
        "{}{}",
        web_pod(""),
        target("t", &["api"], "{kind: HTTPRouteGroup, name: bad}")
    ));
    let mut g = HTTPRouteGroup::new(
        "bad",
        HTTPRouteGroupSpec {
            matches: vec![
                HttpMatch {
                    name: "broken".into(),
                    path_regex: Some("(".into()),
                    ..Default::default()
                },
                HttpMatch {
                    name: "fine".into(),
                    path_regex: Some("/ok".into()),
                    ..Default::default()
                },
            ],
        },
    );
    g.metadata.namespace = Some("shop".into());
    snap.http_route_groups
        .insert(ObjectKey::new("shop", "bad"), std::sync::Arc::new(g));
    let p = port_policy(&snap, &allow_all(), &ObjectKey::new("shop", "web-0"), 8080).unwrap();
    assert_valid(&p.server);
    let smi: Vec<HttpRoute> = routes(&p.server)
        .into_iter()
        .filter(|r| meta_name(&r.metadata).ends_with("shop/bad"))
        .collect();
    assert_eq!(smi[0].rules[0].matches.len(), 1);
    assert!(
        p.warnings[0].contains("spec.matches[0].pathRegex"),
        "{:?}",
        p.warnings
    );
}

#[test]
fn a_v1alpha2_destination_port_narrows_the_target_to_it() {
    let v2 = "apiVersion: access.smi-spec.io/v1alpha2
kind: TrafficTarget
metadata: {name: old, namespace: shop}
spec:
  destination: {kind: ServiceAccount, name: web, namespace: shop, port: 9090}
  sources: [{kind: ServiceAccount, name: api}]
  rules: [{kind: TCPRoute, name: every-port}]
---
";
    let yaml = format!("{}{ROUTES}{v2}", web_pod(""));
    let s = allow_all();
    assert_eq!(
        authz_names(&policy_of(&yaml, &s, 9090).server.authorizations),
        [tt_authz("old")]
    );
    let p = policy_of(&yaml, &s, 8080);
    assert_eq!(p.server.labels["kind"], "serviceaccount", "still governed");
    assert!(p.server.authorizations.is_empty());
}

#[test]
fn audit_is_the_last_authorization_of_a_governed_pod() {
    let yaml = format!(
        "{}{ROUTES}{}",
        web_pod("config.linkerd.io/default-inbound-policy: audit"),
        target("db", &["api"], "{kind: TCPRoute, name: every-port}")
    );
    let p = policy_of(&yaml, &allow_all(), 8080);
    assert_valid(&p.server);
    assert_eq!(
        authz_names(&p.server.authorizations),
        [tt_authz("db"), "default:audit".to_owned()]
    );
    assert_eq!(identities(&p.server.authorizations[1]), None);
    // Any other default policy admits nothing once governed.
    let deny = yaml.replace("audit", "all-unauthenticated");
    assert_eq!(
        authz_names(&policy_of(&deny, &allow_all(), 8080).server.authorizations),
        [tt_authz("db")]
    );
}

#[test]
fn pods_without_a_service_account_run_as_default() {
    let yaml = format!(
        "{}{ROUTES}{}",
        web_pod("").replace("  serviceAccountName: web\n", ""),
        target("db", &["api"], "{kind: TCPRoute, name: every-port}")
            .replace("name: web}", "name: default}")
    );
    let p = policy_of(&yaml, &allow_all(), 8080);
    assert_eq!(p.server.labels["name"], "default");
    assert_eq!(authz_names(&p.server.authorizations), [tt_authz("db")]);
}

#[test]
fn http_routes_on_an_opaque_port_are_reported() {
    let yaml = format!(
        "{}{ROUTES}{}",
        web_pod("config.linkerd.io/opaque-ports: \"8080\""),
        target("t", &["api"], "{kind: HTTPRouteGroup, name: web-routes}")
    );
    let p = policy_of(&yaml, &allow_all(), 8080);
    assert!(is_opaque(&p.server));
    assert!(p.server.authorizations.is_empty());
    assert!(
        p.warnings[0].contains("port 8080 is opaque"),
        "{:?}",
        p.warnings
    );
}

mod service {
    use super::super::service::{parse_spec, parse_workload, SpecError, RESEND_INTERVAL};
    use super::*;
    use crate::store::Store;
    use futures::StreamExt;
    use linkerd2_proxy_api::inbound::inbound_server_policies_server::InboundServerPolicies;
    use linkerd2_proxy_api::inbound::PortSpec;
    use std::time::Duration;
    use tokio::sync::watch;
    use tonic::{Code, Request};

    #[test]
    fn workloads_in_both_forms_and_bad_ones() {
        let key = ObjectKey::new("shop", "web-0");
        assert_eq!(
            parse_workload(r#"{"ns":"shop","pod":"web-0"}"#).unwrap(),
            key
        );
        assert_eq!(parse_workload("shop:web-0").unwrap(), key);
        for bad in [
            "",
            "shop",
            ":web-0",
            "shop:",
            "{\"ns\":\"shop\"}",
            "{nope",
            "a/b:c",
            r#"{"ns":"shop","external_workload":"vm"}"#,
        ] {
            assert!(
                matches!(parse_workload(bad), Err(SpecError::Workload { .. })),
                "{bad:?}"
            );
        }
        let spec = |port| PortSpec {
            workload: "shop:web-0".into(),
            port,
        };
        assert_eq!(parse_spec(&spec(8080)).unwrap(), (key, 8080));
        assert_eq!(parse_spec(&spec(0)), Err(SpecError::Port(0)));
        assert_eq!(parse_spec(&spec(65536)), Err(SpecError::Port(65536)));
    }

    fn service(store: &Store) -> (InboundPolicyService, watch::Sender<bool>) {
        let (tx, rx) = watch::channel(false);
        (
            InboundPolicyService::new(store.clone(), allow_all(), rx),
            tx,
        )
    }

    fn load(store: &Store, yaml: &str) {
        let parsed =
            crate::feed::files::parse_documents(std::path::Path::new("t.yaml"), yaml).unwrap();
        store.replace_all(parsed.objects);
    }

    #[tokio::test(start_paused = true)]
    async fn watch_sends_at_once_on_change_every_minute_and_ends_when_the_pod_goes() {
        let store = Store::new();
        load(&store, &web_pod(""));
        let (svc, _stop) = service(&store);
        let spec = || {
            Request::new(PortSpec {
                workload: r#"{"ns":"shop","pod":"web-0"}"#.into(),
                port: 8080,
            })
        };
        let mut stream = svc.watch_port(spec()).await.unwrap().into_inner();
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.labels["name"], "all-unauthenticated");
        assert_valid(&first);
        // A change that does not alter this port's policy sends nothing;
        // an idle minute sends the same policy again.
        let start = tokio::time::Instant::now();
        load(&store, &format!("{}{ROUTES}", web_pod("")));
        let again = stream.next().await.unwrap().unwrap();
        assert_eq!(again, first);
        assert!(start.elapsed() >= RESEND_INTERVAL, "{:?}", start.elapsed());
        // A TrafficTarget changes it at once.
        let governed = format!(
            "{}{ROUTES}{}",
            web_pod(""),
            target("db", &["api"], "{kind: TCPRoute, name: every-port}")
        );
        load(&store, &governed);
        let at = tokio::time::Instant::now();
        let next = tokio::time::timeout(Duration::from_secs(1), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(at.elapsed(), Duration::ZERO);
        assert_eq!(next.labels["kind"], "serviceaccount");
        // GetPort agrees.
        assert_eq!(svc.get_port(spec()).await.unwrap().into_inner(), next);
        // The pod goes: NotFound, then the stream ends.
        load(&store, ROUTES);
        let err = stream.next().await.unwrap().unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        assert!(
            err.message().contains("unknown pod shop/web-0"),
            "{}",
            err.message()
        );
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn bad_requests_and_unknown_pods_are_refused_with_clear_statuses() {
        let store = Store::new();
        load(&store, &web_pod(""));
        let (svc, stop) = service(&store);
        let req = |workload: &str, port| {
            Request::new(PortSpec {
                workload: workload.into(),
                port,
            })
        };
        for (w, port) in [("shop", 8080), ("shop:web-0", 0), ("shop:web-0", 70000)] {
            let err = svc.get_port(req(w, port)).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{w} {port}");
            let err = svc.watch_port(req(w, port)).await.err().unwrap();
            assert_eq!(err.code(), Code::InvalidArgument, "{w} {port}");
        }
        let err = svc.get_port(req("shop:nope", 80)).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        assert!(
            err.message().contains("unknown pod shop/nope"),
            "{}",
            err.message()
        );
        let err = svc.watch_port(req("shop:nope", 80)).await.err().unwrap();
        assert_eq!(err.code(), Code::NotFound);
        // Shutdown ends open streams.
        let mut stream = svc
            .watch_port(req("shop:web-0", 8080))
            .await
            .unwrap()
            .into_inner();
        stream.next().await.unwrap().unwrap();
        stop.send(true).unwrap();
        assert!(tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .is_none());
    }
}
