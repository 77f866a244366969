//! Weft's inbound policy vocabulary, in one place for every component.
//!
//! The controller serves inbound policy over Linkerd's
//! `io.linkerd.proxy.inbound.InboundServerPolicies`; the proxy enforces it
//! and falls back to a *default policy* until the controller answers; the
//! injector and `weft install` pass that default along. All of them must
//! agree on the default policies' names ([`DefaultPolicy`]), on what each
//! one admits ([`default_authorizations`]), on the cluster networks
//! ([`parse_networks`]) and on how a default server looks on the wire
//! ([`default_server`]), so those live here and nowhere else.
//!
//! The messages built here follow what Linkerd's policy controller sends
//! and what Linkerd's proxy requires: `protocol` always set, a `name`
//! label on every server, every authorization with at least one network,
//! an authentication and metadata, metadata on every route.

use ipnet::IpNet;
use linkerd2_proxy_api::http_route::{path_match, HttpRouteMatch, PathMatch};
use linkerd2_proxy_api::http_types::{http_method, HttpMethod};
use linkerd2_proxy_api::inbound::{
    authn, http_route, proxy_protocol, Authn, Authz, HttpRoute, Network, ProxyProtocol, Server,
};
use linkerd2_proxy_api::meta::{metadata, Metadata, Resource};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The pod and namespace annotation that overrides the install's default
/// inbound policy (the pod's wins over its namespace's).
pub const DEFAULT_POLICY_ANNOTATION: &str = "config.linkerd.io/default-inbound-policy";

/// The networks `cluster-*` policies admit unless the install says
/// otherwise: Linkerd's default `clusterNetworks` (the private ranges).
pub const DEFAULT_CLUSTER_NETWORKS: &str =
    "10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8";

/// Protocol detection timeout sent with every `Detect` server (Linkerd's
/// default).
pub const DETECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The `kind` label of servers and authorizations that come from a
/// default policy rather than a resource (as Linkerd labels them).
pub const DEFAULT_KIND: &str = "default";

/// Name of the authorization that admits the kubelet's probes.
pub const PROBE: &str = "probe";

/// Name of the catch-all HTTP route every `Detect` server carries.
pub const DEFAULT_ROUTE: &str = "default";

/// Name of the authorization the proxy adds for the pod's own loopback.
pub const LOCALHOST: &str = "localhost";

/// What a port admits when no TrafficTarget governs it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DefaultPolicy {
    /// Everyone, with or without mTLS (today's behaviour, the default).
    #[default]
    AllUnauthenticated,
    /// Any meshed client (verified mTLS identity), from anywhere.
    AllAuthenticated,
    /// Anyone from the cluster networks.
    ClusterUnauthenticated,
    /// Meshed clients from the cluster networks.
    ClusterAuthenticated,
    /// No one (only probes and the pod's own loopback).
    Deny,
    /// Everyone, but what `deny` would refuse is logged and counted
    /// (`authz_name="audit"`).
    Audit,
}

/// A default policy name that is not one of [`DefaultPolicy::ALL`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown default inbound policy {0:?} (expected one of all-unauthenticated, all-authenticated, cluster-unauthenticated, cluster-authenticated, deny, audit)")]
pub struct UnknownPolicy(pub String);

/// A cluster network list that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid network {network:?} (expected a CIDR such as 10.0.0.0/8): {reason}")]
pub struct InvalidNetwork {
    /// The offending entry.
    pub network: String,
    /// Why it was refused.
    pub reason: String,
}

// === impl DefaultPolicy ===

impl DefaultPolicy {
    /// Every default policy, in the order the docs list them.
    pub const ALL: [DefaultPolicy; 6] = [
        DefaultPolicy::AllUnauthenticated,
        DefaultPolicy::AllAuthenticated,
        DefaultPolicy::ClusterUnauthenticated,
        DefaultPolicy::ClusterAuthenticated,
        DefaultPolicy::Deny,
        DefaultPolicy::Audit,
    ];

    /// The policy's name, as annotations and flags spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            DefaultPolicy::AllUnauthenticated => "all-unauthenticated",
            DefaultPolicy::AllAuthenticated => "all-authenticated",
            DefaultPolicy::ClusterUnauthenticated => "cluster-unauthenticated",
            DefaultPolicy::ClusterAuthenticated => "cluster-authenticated",
            DefaultPolicy::Deny => "deny",
            DefaultPolicy::Audit => "audit",
        }
    }
}

impl fmt::Display for DefaultPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DefaultPolicy {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, UnknownPolicy> {
        let s = s.trim();
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPolicy(s.to_owned()))
    }
}

/// Parses a comma-separated list of CIDRs (`10.0.0.0/8,fd00::/8`); a bare
/// address counts as a single-host network. Empty entries are skipped.
pub fn parse_networks(s: &str) -> Result<Vec<IpNet>, InvalidNetwork> {
    s.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| {
            n.parse::<IpNet>()
                .or_else(|e| {
                    n.parse::<std::net::IpAddr>()
                        .map(IpNet::from)
                        .map_err(|_| e)
                })
                .map_err(|e| InvalidNetwork {
                    network: n.to_owned(),
                    reason: e.to_string(),
                })
        })
        .collect()
}

/// Metadata of something that comes from a default policy, not a resource.
pub fn default_meta(name: &str) -> Metadata {
    Metadata {
        kind: Some(metadata::Kind::Default(name.to_owned())),
    }
}

/// Metadata of something that comes from a Kubernetes resource.
pub fn resource_meta(group: &str, kind: &str, namespace: &str, name: &str) -> Metadata {
    resource_port_meta(group, kind, namespace, name, 0)
}

/// Metadata of one port of a Kubernetes resource (a Service port, say);
/// port 0 means none, as the API has it.
pub fn resource_port_meta(
    group: &str,
    kind: &str,
    namespace: &str,
    name: &str,
    port: u16,
) -> Metadata {
    Metadata {
        kind: Some(metadata::Kind::Resource(Resource {
            group: group.to_owned(),
            kind: kind.to_owned(),
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            section: String::new(),
            port: u32::from(port),
        })),
    }
}

/// The `group`/`kind`/`name` labels Linkerd puts on servers and
/// authorizations (older proxies read these instead of `metadata`).
pub fn labels(group: &str, kind: &str, name: &str) -> HashMap<String, String> {
    HashMap::from([
        ("group".to_owned(), group.to_owned()),
        ("kind".to_owned(), kind.to_owned()),
        ("name".to_owned(), name.to_owned()),
    ])
}

/// Every address, IPv4 and IPv6: how the API says "from anywhere".
pub fn all_networks() -> Vec<Network> {
    let any: [IpNet; 2] = [
        IpNet::from(std::net::IpAddr::from([0, 0, 0, 0])),
        IpNet::from(std::net::IpAddr::from([0u16; 8])),
    ];
    any.into_iter()
        .map(|n| {
            // `from(IpAddr)` is a host route; widen it to the whole family.
            let net = IpNet::new(n.addr(), 0).unwrap_or(n);
            Network {
                net: Some(net.into()),
                except: Vec::new(),
            }
        })
        .collect()
}

/// The API form of `nets`.
pub fn networks(nets: &[IpNet]) -> Vec<Network> {
    nets.iter()
        .map(|n| Network {
            net: Some((*n).into()),
            except: Vec::new(),
        })
        .collect()
}

/// Admits connections without mTLS (and with it).
pub fn unauthenticated() -> Authn {
    Authn {
        permit: Some(authn::Permit::Unauthenticated(
            authn::PermitUnauthenticated {},
        )),
    }
}

/// Admits mTLS connections from any identity the trust anchors vouch for.
pub fn any_mesh_identity() -> Authn {
    mesh_identities(Vec::new(), vec![Vec::new()])
}

/// Admits mTLS connections from the listed identities, or from identities
/// ending in one of the suffixes (each as DNS labels; an empty suffix
/// matches every identity).
pub fn mesh_identities(identities: Vec<String>, suffixes: Vec<Vec<String>>) -> Authn {
    use authn::permit_mesh_tls::{Clients, PermitClientIdentities};
    use linkerd2_proxy_api::inbound::{Identity, IdentitySuffix};
    Authn {
        permit: Some(authn::Permit::MeshTls(authn::PermitMeshTls {
            clients: Some(Clients::Identities(PermitClientIdentities {
                identities: identities
                    .into_iter()
                    .map(|name| Identity { name })
                    .collect(),
                suffixes: suffixes
                    .into_iter()
                    .map(|parts| IdentitySuffix { parts })
                    .collect(),
            })),
        })),
    }
}

/// An authorization named `name` from a default policy.
pub fn default_authz(name: &str, networks: Vec<Network>, authentication: Authn) -> Authz {
    Authz {
        networks,
        authentication: Some(authentication),
        labels: labels("", DEFAULT_KIND, name),
        metadata: Some(default_meta(name)),
    }
}

/// What `policy` admits, as authorizations (none for `deny`).
pub fn default_authorizations(policy: DefaultPolicy, cluster_networks: &[IpNet]) -> Vec<Authz> {
    let name = policy.as_str();
    match policy {
        DefaultPolicy::AllUnauthenticated | DefaultPolicy::Audit => {
            vec![default_authz(name, all_networks(), unauthenticated())]
        }
        DefaultPolicy::AllAuthenticated => {
            vec![default_authz(name, all_networks(), any_mesh_identity())]
        }
        DefaultPolicy::ClusterUnauthenticated => vec![default_authz(
            name,
            networks(cluster_networks),
            unauthenticated(),
        )],
        DefaultPolicy::ClusterAuthenticated => vec![default_authz(
            name,
            networks(cluster_networks),
            any_mesh_identity(),
        )],
        DefaultPolicy::Deny => Vec::new(),
    }
}

/// The authorization the proxy always adds: its pod's own loopback.
pub fn localhost_authz() -> Authz {
    let hosts: [std::net::IpAddr; 2] = [
        std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::Ipv6Addr::LOCALHOST.into(),
    ];
    let nets: Vec<IpNet> = hosts.into_iter().map(IpNet::from).collect();
    default_authz(LOCALHOST, networks(&nets), unauthenticated())
}

/// The route that admits the kubelet's `httpGet` probes: `GET` of each of
/// `paths` exactly, from anyone. `None` when there are no probe paths.
pub fn probe_route(paths: &[String]) -> Option<HttpRoute> {
    if paths.is_empty() {
        return None;
    }
    let matches = paths
        .iter()
        .map(|p| HttpRouteMatch {
            path: Some(PathMatch {
                kind: Some(path_match::Kind::Exact(p.clone())),
            }),
            method: Some(HttpMethod {
                r#type: Some(http_method::Type::Registered(
                    http_method::Registered::Get.into(),
                )),
            }),
            ..HttpRouteMatch::default()
        })
        .collect();
    Some(HttpRoute {
        metadata: Some(default_meta(PROBE)),
        hosts: Vec::new(),
        authorizations: vec![default_authz(PROBE, all_networks(), unauthenticated())],
        rules: vec![http_route::Rule {
            matches,
            filters: Vec::new(),
        }],
    })
}

/// The catch-all route (every path): it carries no authorizations of its
/// own, so the server's decide.
pub fn default_route() -> HttpRoute {
    HttpRoute {
        metadata: Some(default_meta(DEFAULT_ROUTE)),
        hosts: Vec::new(),
        authorizations: Vec::new(),
        rules: vec![http_route::Rule {
            matches: vec![HttpRouteMatch {
                path: Some(PathMatch {
                    kind: Some(path_match::Kind::Prefix("/".to_owned())),
                }),
                ..HttpRouteMatch::default()
            }],
            filters: Vec::new(),
        }],
    }
}

/// `Detect` (HTTP routes apply when the connection turns out to be HTTP),
/// or `Opaque` for ports whose bytes are never inspected.
pub fn protocol(opaque: bool, http_routes: Vec<HttpRoute>) -> ProxyProtocol {
    let kind = if opaque {
        proxy_protocol::Kind::Opaque(proxy_protocol::Opaque {})
    } else {
        proxy_protocol::Kind::Detect(proxy_protocol::Detect {
            timeout: prost_types::Duration::try_from(DETECT_TIMEOUT).ok(),
            http_routes,
            http_local_rate_limit: None,
        })
    };
    ProxyProtocol { kind: Some(kind) }
}

/// The routes of a server no resource governs: the probe route (when the
/// port has probes) and the catch-all.
pub fn default_routes(probe_paths: &[String]) -> Vec<HttpRoute> {
    probe_route(probe_paths)
        .into_iter()
        .chain(std::iter::once(default_route()))
        .collect()
}

/// The server of a port no resource governs: `policy`'s authorizations,
/// the probe route for `probe_paths`, and the catch-all route. Labelled
/// `kind=default`, `name=POLICY`, as Linkerd labels default servers.
pub fn default_server(
    policy: DefaultPolicy,
    cluster_networks: &[IpNet],
    opaque: bool,
    probe_paths: &[String],
) -> Server {
    Server {
        protocol: Some(protocol(opaque, default_routes(probe_paths))),
        server_ips: Vec::new(),
        authorizations: default_authorizations(policy, cluster_networks),
        labels: labels("", DEFAULT_KIND, policy.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in DefaultPolicy::ALL {
            assert_eq!(p.as_str().parse::<DefaultPolicy>(), Ok(p));
        }
        let err = "allow".parse::<DefaultPolicy>().unwrap_err();
        assert!(err.to_string().contains("all-unauthenticated"), "{err}");
        assert_eq!(DefaultPolicy::default(), DefaultPolicy::AllUnauthenticated);
    }

    #[test]
    fn networks_parse_and_refuse() {
        let nets = parse_networks(DEFAULT_CLUSTER_NETWORKS).unwrap();
        assert_eq!(nets.len(), 5);
        assert_eq!(
            parse_networks(" 10.1.2.3 , ,::1").unwrap(),
            vec![
                "10.1.2.3/32".parse::<IpNet>().unwrap(),
                "::1/128".parse().unwrap()
            ]
        );
        let err = parse_networks("10.0.0.0/8,10.0.0.0/33").unwrap_err();
        assert_eq!(err.network, "10.0.0.0/33");
    }

    #[test]
    fn all_networks_cover_both_families() {
        let nets: Vec<IpNet> = all_networks()
            .into_iter()
            .map(|n| IpNet::try_from(n.net.unwrap()).unwrap())
            .collect();
        assert_eq!(
            nets,
            vec![
                "0.0.0.0/0".parse::<IpNet>().unwrap(),
                "::/0".parse().unwrap()
            ]
        );
    }

    /// What Linkerd's proxy requires of every message (see the crate docs).
    fn assert_valid(server: &Server) {
        assert!(server
            .protocol
            .as_ref()
            .and_then(|p| p.kind.as_ref())
            .is_some());
        assert!(server.labels.contains_key("name"));
        let routes = match server.protocol.as_ref().and_then(|p| p.kind.as_ref()) {
            Some(proxy_protocol::Kind::Detect(d)) => d.http_routes.clone(),
            _ => Vec::new(),
        };
        let route_authzs = routes.iter().flat_map(|r| r.authorizations.iter());
        for a in server.authorizations.iter().chain(route_authzs) {
            assert!(!a.networks.is_empty(), "{a:?}");
            assert!(a.authentication.is_some(), "{a:?}");
            assert!(a.metadata.is_some(), "{a:?}");
        }
        for r in &routes {
            assert!(r.metadata.is_some());
            assert!(!r.rules.is_empty());
        }
    }

    #[test]
    fn default_servers_are_valid_and_admit_what_they_say() {
        let cluster = parse_networks(DEFAULT_CLUSTER_NETWORKS).unwrap();
        for p in DefaultPolicy::ALL {
            for opaque in [false, true] {
                let s = default_server(p, &cluster, opaque, &["/ready".to_owned()]);
                assert_valid(&s);
                assert_eq!(s.labels["name"], p.as_str());
                assert_eq!(s.labels["kind"], "default");
            }
        }
        assert!(default_authorizations(DefaultPolicy::Deny, &cluster).is_empty());
        let cu = &default_authorizations(DefaultPolicy::ClusterUnauthenticated, &cluster)[0];
        assert_eq!(cu.networks.len(), 5);
        let aa = &default_authorizations(DefaultPolicy::AllAuthenticated, &cluster)[0];
        assert!(matches!(
            aa.authentication.as_ref().unwrap().permit,
            Some(authn::Permit::MeshTls(_))
        ));
        assert_valid(&Server {
            authorizations: vec![localhost_authz()],
            ..default_server(DefaultPolicy::Deny, &cluster, false, &[])
        });
    }

    #[test]
    fn routes_probe_then_catch_all() {
        let routes = default_routes(&["/live".to_owned(), "/ready".to_owned()]);
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0].metadata, Some(default_meta(PROBE)));
        assert_eq!(routes[0].rules[0].matches.len(), 2);
        assert_eq!(routes[1].metadata, Some(default_meta(DEFAULT_ROUTE)));
        assert!(routes[1].authorizations.is_empty());
        assert_eq!(default_routes(&[]).len(), 1);
    }
}
