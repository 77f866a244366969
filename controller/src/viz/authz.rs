//! `/api/v1/authz`: the inbound policy in force on each port of a
//! workload's pods, exactly as the controller serves it to their proxies
//! (`destination::inbound::port_policy`, the function behind
//! `InboundServerPolicies`), turned into rows a person can read.
//!
//! Pods are found as every other query finds them ([`query::resource_of`]
//! over the store's unfinished pods); their ports are the app containers'
//! TCP `containerPort`s, as the injector lists them for the proxy
//! (`weft_inject::inbound_ports`). Each port's server becomes one
//! [`AuthzPortRow`]: the server's own authorizations first (route `*`), then
//! each HTTP route's, one [`AuthzRule`] per (route, authorization). A
//! server with no authorization of its own gets a `*` rule without one:
//! what no route admits is refused.

use super::query;
use super::targets::finished;
use super::{ApiError, Viz};
use crate::destination::endpoints::owner;
use crate::destination::inbound::port_policy;
use linkerd2_proxy_api::http_route::{header_match, path_match, HttpRouteMatch};
use linkerd2_proxy_api::inbound::{authn, proxy_protocol, Authz, HttpRoute, Network, Server};
use linkerd2_proxy_api::meta::{metadata, Metadata};
use std::collections::HashMap;
use weft_metrics_api::api::{
    AuthzPortRow, AuthzQuery, AuthzResponse, AuthzRule, PolicyRef, AUTHN_ANY_MESHED,
    AUTHN_IDENTITIES, AUTHN_UNAUTHENTICATED, SERVER_ROUTE,
};
use weft_metrics_api::resource::ResourceKind;

/// [`AuthzRule::authentication`] of mesh TLS without a client identity
/// (Linkerd's `PermitMeshTLS.unauthenticated`).
const AUTHN_ANY_TLS: &str = "any mesh TLS client";

/// Answers an authz query.
pub fn authz(viz: &Viz, q: &AuthzQuery) -> Result<AuthzResponse, ApiError> {
    let snapshot = viz.store.snapshot();
    let kind = q.resource.kind;
    // `ns/shop` names its namespace itself; other kinds live in `-n`'s.
    let namespace = match (kind, &q.resource.name) {
        (ResourceKind::Namespace, Some(name)) => name.as_str(),
        _ => q.namespace.as_str(),
    };
    let mut found = false;
    let mut rows = Vec::new();
    for (key, pod) in &snapshot.pods {
        if key.namespace != namespace || finished(pod) {
            continue;
        }
        let owner = owner(pod);
        let owner = owner.as_ref().map(|(k, n)| (*k, n.as_str()));
        let Some((_, name)) = query::resource_of(kind, key, owner) else {
            continue;
        };
        if kind != ResourceKind::Namespace && q.resource.name.as_ref().is_some_and(|n| *n != name) {
            continue;
        }
        found = true;
        let ports = pod
            .spec
            .as_ref()
            .map(weft_inject::inbound_ports)
            .unwrap_or_default();
        for port in ports {
            let policy =
                port_policy(&snapshot, &viz.settings.inbound, key, port).map_err(|e| ApiError {
                    status: http::StatusCode::INTERNAL_SERVER_ERROR,
                    message: format!("policy of {key} port {port}: {e}"),
                })?;
            rows.push(AuthzPortRow {
                namespace: key.namespace.clone(),
                pod: key.name.clone(),
                port,
                server: labels_ref(&policy.server.labels).unwrap_or_default(),
                protocol: protocol_name(&policy.server).to_owned(),
                rules: rules(&policy.server),
                warnings: policy.warnings,
            });
        }
    }
    if !found {
        if let Some(name) = &q.resource.name {
            return Err(ApiError::not_found(format!(
                "{kind} {name} not found in namespace {namespace}"
            )));
        }
    }
    Ok(AuthzResponse { rows })
}

/// `detect`, `opaque`, or the fixed protocol's name.
fn protocol_name(server: &Server) -> &'static str {
    match server.protocol.as_ref().and_then(|p| p.kind.as_ref()) {
        Some(proxy_protocol::Kind::Detect(_)) => "detect",
        Some(proxy_protocol::Kind::Opaque(_)) => "opaque",
        Some(proxy_protocol::Kind::Tls(_)) => "tls",
        Some(proxy_protocol::Kind::Http1(_)) => "http1",
        Some(proxy_protocol::Kind::Http2(_)) => "http2",
        Some(proxy_protocol::Kind::Grpc(_)) => "grpc",
        None => "unknown",
    }
}

/// The server's HTTP routes, whichever protocol carries them.
fn http_routes(server: &Server) -> &[HttpRoute] {
    match server.protocol.as_ref().and_then(|p| p.kind.as_ref()) {
        Some(proxy_protocol::Kind::Detect(d)) => &d.http_routes,
        Some(proxy_protocol::Kind::Http1(h)) => &h.routes,
        Some(proxy_protocol::Kind::Http2(h)) => &h.routes,
        _ => &[],
    }
}

/// The server's authorizations (route `*`, or one refusing rule), then one
/// rule per route authorization; routes without any (the catch-all) add
/// nothing to what the server admits and are left out.
fn rules(server: &Server) -> Vec<AuthzRule> {
    let mut out: Vec<AuthzRule> = server
        .authorizations
        .iter()
        .map(|a| rule(SERVER_ROUTE, Vec::new(), a))
        .collect();
    if out.is_empty() {
        out.push(AuthzRule {
            route: SERVER_ROUTE.to_owned(),
            ..AuthzRule::default()
        });
    }
    for route in http_routes(server) {
        let name = route
            .metadata
            .as_ref()
            .and_then(meta_ref)
            .map_or_else(String::new, |r| r.name);
        let matches: Vec<String> = route
            .rules
            .iter()
            .flat_map(|r| r.matches.iter())
            .map(describe_match)
            .collect();
        for a in &route.authorizations {
            out.push(rule(&name, matches.clone(), a));
        }
    }
    out
}

fn rule(route: &str, matches: Vec<String>, authz: &Authz) -> AuthzRule {
    let mut rule = AuthzRule {
        route: route.to_owned(),
        matches,
        authorization: labels_ref(&authz.labels)
            .or_else(|| authz.metadata.as_ref().and_then(meta_ref)),
        networks: authz.networks.iter().map(describe_network).collect(),
        ..AuthzRule::default()
    };
    match authz
        .authentication
        .as_ref()
        .and_then(|a| a.permit.as_ref())
    {
        Some(authn::Permit::Unauthenticated(_)) => {
            rule.authentication = AUTHN_UNAUTHENTICATED.to_owned();
        }
        Some(authn::Permit::MeshTls(tls)) => match &tls.clients {
            Some(authn::permit_mesh_tls::Clients::Identities(ids)) => {
                rule.identities = ids.identities.iter().map(|i| i.name.clone()).collect();
                rule.suffixes = ids
                    .suffixes
                    .iter()
                    .map(|s| match s.parts.as_slice() {
                        [] => "*".to_owned(),
                        parts => format!("*.{}", parts.join(".")),
                    })
                    .collect();
                rule.authentication =
                    if rule.identities.is_empty() && rule.suffixes.iter().any(|s| s == "*") {
                        AUTHN_ANY_MESHED
                    } else {
                        AUTHN_IDENTITIES
                    }
                    .to_owned();
            }
            Some(authn::permit_mesh_tls::Clients::Unauthenticated(_)) => {
                rule.authentication = AUTHN_ANY_TLS.to_owned();
            }
            // Linkerd's proxy refuses such an authorization.
            None => rule.authentication = "invalid (no clients)".to_owned(),
        },
        None => rule.authentication = "invalid (no authentication)".to_owned(),
    }
    rule
}

/// `group`/`kind`/`name` labels, when there is a name.
fn labels_ref(labels: &HashMap<String, String>) -> Option<PolicyRef> {
    let name = labels.get("name")?;
    let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
    Some(PolicyRef {
        group: get("group"),
        kind: get("kind").to_lowercase(),
        name: name.clone(),
    })
}

/// The same from `metadata`.
fn meta_ref(meta: &Metadata) -> Option<PolicyRef> {
    match meta.kind.as_ref()? {
        metadata::Kind::Default(name) => Some(PolicyRef {
            group: String::new(),
            kind: weft_policy::DEFAULT_KIND.to_owned(),
            name: name.clone(),
        }),
        metadata::Kind::Resource(r) => Some(PolicyRef {
            group: r.group.clone(),
            kind: r.kind.to_lowercase(),
            name: r.name.clone(),
        }),
    }
}

/// `10.0.0.0/8`, or `10.0.0.0/8 except 10.1.0.0/16`.
fn describe_network(n: &Network) -> String {
    let net = |n: &linkerd2_proxy_api::net::IpNetwork| {
        ipnet::IpNet::try_from(*n).map_or_else(|_| "invalid".to_owned(), |n| n.to_string())
    };
    let mut text = n.net.as_ref().map_or_else(|| "none".to_owned(), net);
    if !n.except.is_empty() {
        let except: Vec<String> = n.except.iter().map(net).collect();
        text = format!("{text} except {}", except.join(","));
    }
    text
}

/// One route match for a person: `GET /ready`, `* ~^/api/.*$`, `/*`, with
/// headers as `name=value` / `name~regex`.
fn describe_match(m: &HttpRouteMatch) -> String {
    let method = m
        .method
        .clone()
        .and_then(|m| http::Method::try_from(m).ok())
        .map_or_else(|| "*".to_owned(), |m| m.as_str().to_owned());
    let path = match m.path.as_ref().and_then(|p| p.kind.as_ref()) {
        Some(path_match::Kind::Exact(p)) => p.clone(),
        Some(path_match::Kind::Prefix(p)) => format!("{}*", p),
        Some(path_match::Kind::Regex(r)) => format!("~{r}"),
        None => "*".to_owned(),
    };
    let mut text = format!("{method} {path}");
    for h in &m.headers {
        match &h.value {
            Some(header_match::Value::Exact(v)) => {
                text.push_str(&format!(" {}={}", h.name, String::from_utf8_lossy(v)));
            }
            Some(header_match::Value::Regex(r)) => text.push_str(&format!(" {}~{r}", h.name)),
            None => text.push_str(&format!(" {}", h.name)),
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_policy::{parse_networks, DefaultPolicy, DEFAULT_CLUSTER_NETWORKS};

    #[test]
    fn default_servers_read_as_the_policy_says() {
        let cluster = parse_networks(DEFAULT_CLUSTER_NETWORKS).unwrap();
        let probes = ["/ready".to_owned()];
        let deny = weft_policy::default_server(DefaultPolicy::Deny, &cluster, false, &probes);
        assert_eq!(protocol_name(&deny), "detect");
        let r = rules(&deny);
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r[0].route, "*");
        assert_eq!(r[0].authorization, None, "deny: nothing of its own");
        assert_eq!(r[1].route, "probe");
        assert_eq!(r[1].matches, ["GET /ready"]);
        assert_eq!(r[1].authentication, AUTHN_UNAUTHENTICATED);
        assert_eq!(r[1].networks, ["0.0.0.0/0", "::/0"]);
        let probe = r[1].authorization.as_ref().unwrap();
        assert_eq!(
            (probe.kind.as_str(), probe.name.as_str()),
            ("default", "probe")
        );

        let ca =
            weft_policy::default_server(DefaultPolicy::ClusterAuthenticated, &cluster, true, &[]);
        assert_eq!(protocol_name(&ca), "opaque");
        let r = rules(&ca);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].authentication, AUTHN_ANY_MESHED);
        assert_eq!(r[0].suffixes, ["*"]);
        assert_eq!(r[0].networks.len(), 5);
        assert_eq!(
            labels_ref(&ca.labels).unwrap().name,
            "cluster-authenticated"
        );
    }

    #[test]
    fn identities_suffixes_and_matches_are_spelled_out() {
        let a = weft_policy::default_authz(
            "tt",
            weft_policy::all_networks(),
            weft_policy::mesh_identities(
                vec!["web.shop.serviceaccount.identity.weft.cluster.local".into()],
                vec![vec!["shop".into(), "serviceaccount".into()]],
            ),
        );
        let r = rule("r", Vec::new(), &a);
        assert_eq!(r.authentication, AUTHN_IDENTITIES);
        assert_eq!(
            r.identities,
            ["web.shop.serviceaccount.identity.weft.cluster.local"]
        );
        assert_eq!(r.suffixes, ["*.shop.serviceaccount"]);
        let m = HttpRouteMatch {
            path: Some(linkerd2_proxy_api::http_route::PathMatch {
                kind: Some(path_match::Kind::Regex("^(?:/api/.*)$".into())),
            }),
            headers: vec![linkerd2_proxy_api::http_route::HeaderMatch {
                name: "x-env".into(),
                value: Some(header_match::Value::Regex("^(?:prod)$".into())),
            }],
            ..HttpRouteMatch::default()
        };
        assert_eq!(describe_match(&m), "* ~^(?:/api/.*)$ x-env~^(?:prod)$");
        assert_eq!(
            describe_match(&weft_policy::default_route().rules[0].matches[0]),
            "* /*"
        );
    }
}
