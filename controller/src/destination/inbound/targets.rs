//! A TrafficTarget read against the store: which identities it admits,
//! which ports and requests its rules select, and what in it cannot be
//! applied ([`TargetProblem`]). Shared by the translation (per port) and
//! the reconciler that reports problems (`feed::access`), so a
//! TrafficTarget is reported exactly when the policy leaves part of it
//! out.

use super::super::policy::{route_matches, RuleError};
use crate::store::{ObjectKey, Snapshot};
use linkerd2_proxy_api::http_route::HttpRouteMatch;
use linkerd2_proxy_api::inbound::{http_route, Authz, HttpRoute};
use std::sync::Arc;
use weft_smi_crds::access::{TrafficTarget, HTTP_ROUTE_GROUP, TCP_ROUTE};
use weft_smi_crds::specs::v1alpha4::TCPRoute;

/// API group of TrafficTargets (server and authorization labels, metadata).
pub const ACCESS_GROUP: &str = "access.smi-spec.io";
/// API group of the route kinds.
pub const SPECS_GROUP: &str = "specs.smi-spec.io";
/// `kind` label/metadata of a server some TrafficTarget governs.
pub const SERVER_KIND: &str = "serviceaccount";
/// `kind` metadata/label of a TrafficTarget's authorization.
pub const AUTHZ_KIND: &str = "traffictarget";
/// `kind` metadata of an HTTPRouteGroup rule's route.
pub const ROUTE_KIND: &str = "HTTPRouteGroup";

/// Something in a stored (valid) TrafficTarget that cannot be applied.
/// Each one narrows what the TrafficTarget admits, never widens it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetProblem {
    /// The destination is in another namespace: the TrafficTarget is
    /// ignored (it governs nothing and admits no one).
    #[error(
        "spec.destination.namespace: {destination} is not the TrafficTarget's own namespace \
         {own}; the TrafficTarget is ignored (it may only govern its own namespace's workloads)"
    )]
    ForeignDestination {
        /// The destination's namespace.
        destination: String,
        /// The TrafficTarget's namespace.
        own: String,
    },
    /// A rule names a route resource that is not in the store (never
    /// created, deleted, or rejected by validation).
    #[error("spec.rules[{index}]: unknown {kind} {route}; the rule is dropped")]
    RouteNotFound {
        /// Index in `spec.rules`.
        index: usize,
        /// `HTTPRouteGroup` or `TCPRoute`.
        kind: &'static str,
        /// The missing resource.
        route: ObjectKey,
    },
    /// A rule names a match its route resource does not have.
    #[error(
        "spec.rules[{index}].matches: {kind} {route} has no match named {name:?}; it is dropped"
    )]
    MatchNotFound {
        /// Index in `spec.rules`.
        index: usize,
        /// `HTTPRouteGroup` or `TCPRoute`.
        kind: &'static str,
        /// The route resource.
        route: ObjectKey,
        /// The unknown match name.
        name: String,
    },
    /// Nothing of an HTTPRouteGroup rule is left (the group has no
    /// matches, or none of the named ones could be used).
    #[error("spec.rules[{index}]: no usable match in HTTPRouteGroup {group}; the rule is dropped")]
    NoMatches {
        /// Index in `spec.rules`.
        index: usize,
        /// The group.
        group: ObjectKey,
    },
    /// A match that cannot be expressed (a regex or header name the feeds
    /// should have refused).
    #[error("spec.rules[{index}]: {error}; the match is dropped")]
    InvalidMatch {
        /// Index in `spec.rules`.
        index: usize,
        /// Why.
        error: RuleError,
    },
    /// A source whose identity cannot be named (not a DNS label).
    #[error("spec.sources[{index}]: {reason}; the source is dropped")]
    InvalidSource {
        /// Index in `spec.sources`.
        index: usize,
        /// Why.
        reason: String,
    },
    /// No rules at all.
    #[error(
        "spec.rules is empty: the TrafficTarget governs its destination and admits no traffic"
    )]
    NoRules,
    /// No usable sources.
    #[error("no usable spec.sources: the TrafficTarget governs its destination and admits no one")]
    NoSources,
}

// === impl TargetProblem ===

impl TargetProblem {
    /// The Event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ForeignDestination { .. } => "TrafficTargetForeignDestination",
            Self::RouteNotFound { .. } => "TrafficTargetRouteNotFound",
            Self::MatchNotFound { .. } => "TrafficTargetMatchNotFound",
            Self::NoMatches { .. } => "TrafficTargetNoMatches",
            Self::InvalidMatch { .. } => "TrafficTargetInvalidMatch",
            Self::InvalidSource { .. } => "TrafficTargetInvalidSource",
            Self::NoRules => "TrafficTargetNoRules",
            Self::NoSources => "TrafficTargetNoSources",
        }
    }
}

/// One HTTPRouteGroup rule, resolved.
#[derive(Clone, Debug)]
pub struct HttpRule {
    /// The group.
    pub group: ObjectKey,
    /// Its selected matches (never empty).
    pub matches: Vec<HttpRouteMatch>,
}

/// A TrafficTarget read against the store.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The TrafficTarget.
    pub key: ObjectKey,
    /// The source identities it admits.
    pub sources: Vec<String>,
    /// A v1alpha2 destination port.
    pub port: Option<u16>,
    /// Whether any rule (as written) is a TCPRoute: then only the ports its
    /// resolved TCPRoutes select are open, even if none resolved.
    pub has_tcp: bool,
    /// Whether any rule (as written) is an HTTPRouteGroup: then only HTTP
    /// requests its resolved groups select are admitted.
    pub has_http: bool,
    /// The TCPRoutes found.
    pub tcp_routes: Vec<Arc<TCPRoute>>,
    /// The HTTPRouteGroup rules that resolved.
    pub http_rules: Vec<HttpRule>,
    /// What could not be applied.
    pub problems: Vec<TargetProblem>,
}

/// What one TrafficTarget contributes to one port.
#[derive(Clone, Debug, Default)]
pub struct Contribution {
    /// Server-level authorizations (only-TCPRoute TrafficTargets).
    pub authorizations: Vec<Authz>,
    /// HTTP routes carrying the TrafficTarget's authorization.
    pub routes: Vec<HttpRoute>,
}

/// Whether `tt` lives in its destination's namespace (else it is ignored).
pub fn governs_own_namespace(tt: &TrafficTarget) -> Option<TargetProblem> {
    let (destination, own) = (tt.destination_namespace(), tt.own_namespace());
    (destination != own).then(|| TargetProblem::ForeignDestination {
        destination: destination.to_owned(),
        own: own.to_owned(),
    })
}

/// Reads `tt` (stored under `key`) against `snap`.
pub fn resolve(
    snap: &Snapshot,
    key: &ObjectKey,
    tt: &TrafficTarget,
    trust_domain: &str,
) -> Resolved {
    let ns = &key.namespace;
    let mut problems = Vec::new();
    let mut sources = Vec::new();
    for (index, s) in tt.spec.sources.iter().enumerate() {
        let source_ns = s
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(ns);
        match weft_identity::identity_name(&s.name, source_ns, trust_domain) {
            Ok(id) => sources.push(id),
            Err(e) => problems.push(TargetProblem::InvalidSource {
                index,
                reason: e.to_string(),
            }),
        }
    }
    sources.sort();
    sources.dedup();
    if sources.is_empty() {
        problems.push(TargetProblem::NoSources);
    }
    if tt.spec.rules.is_empty() {
        problems.push(TargetProblem::NoRules);
    }
    let mut resolved = Resolved {
        key: key.clone(),
        sources,
        port: tt.spec.destination.port,
        has_tcp: false,
        has_http: false,
        tcp_routes: Vec::new(),
        http_rules: Vec::new(),
        problems,
    };
    for (index, rule) in tt.spec.rules.iter().enumerate() {
        let route = ObjectKey::new(ns, &rule.name);
        match rule.kind.as_str() {
            TCP_ROUTE => {
                resolved.has_tcp = true;
                let Some(r) = snap.tcp_routes.get(&route) else {
                    resolved.problems.push(TargetProblem::RouteNotFound {
                        index,
                        kind: TCP_ROUTE,
                        route,
                    });
                    continue;
                };
                // A TCPRoute has at most one (optionally named) match.
                let name = r.spec.matches.as_ref().and_then(|m| m.name.as_deref());
                let unknown: Vec<&String> = rule
                    .matches
                    .iter()
                    .filter(|m| Some(m.as_str()) != name)
                    .collect();
                for m in &unknown {
                    resolved.problems.push(TargetProblem::MatchNotFound {
                        index,
                        kind: TCP_ROUTE,
                        route: route.clone(),
                        name: (*m).clone(),
                    });
                }
                if rule.matches.is_empty() || unknown.len() < rule.matches.len() {
                    resolved.tcp_routes.push(r.clone());
                }
            }
            HTTP_ROUTE_GROUP => {
                resolved.has_http = true;
                let Some(g) = snap.http_route_groups.get(&route) else {
                    resolved.problems.push(TargetProblem::RouteNotFound {
                        index,
                        kind: HTTP_ROUTE_GROUP,
                        route,
                    });
                    continue;
                };
                for name in &rule.matches {
                    if !g.spec.matches.iter().any(|m| &m.name == name) {
                        resolved.problems.push(TargetProblem::MatchNotFound {
                            index,
                            kind: HTTP_ROUTE_GROUP,
                            route: route.clone(),
                            name: name.clone(),
                        });
                    }
                }
                let mut matches = Vec::new();
                for (i, m) in g.spec.matches.iter().enumerate() {
                    if !rule.matches.is_empty() && !rule.matches.contains(&m.name) {
                        continue;
                    }
                    match route_matches(&route, i, m) {
                        Ok(ms) => matches.extend(ms),
                        Err(error) => resolved
                            .problems
                            .push(TargetProblem::InvalidMatch { index, error }),
                    }
                }
                if matches.is_empty() {
                    resolved.problems.push(TargetProblem::NoMatches {
                        index,
                        group: route,
                    });
                    continue;
                }
                resolved.http_rules.push(HttpRule {
                    group: route,
                    matches,
                });
            }
            // Validation admits no other kind; a store filled otherwise
            // gets nothing from the rule (narrower, never wider).
            _ => {}
        }
    }
    resolved
}

// === impl Resolved ===

impl Resolved {
    /// Whether the TrafficTarget's rules select `port` at all.
    pub fn selects_port(&self, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        !self.has_tcp || self.tcp_routes.iter().any(|r| r.selects_port(port))
    }

    /// What the TrafficTarget admits on `port`, per docs/policy.md's
    /// table: only TCPRoutes, a server-level authorization; any
    /// HTTPRouteGroup, one route per resolved group rule (on the ports
    /// its TCPRoutes select, if it has any). Nothing when the port is not
    /// selected or no source is usable.
    pub fn contribution(&self, port: u16) -> Contribution {
        if self.sources.is_empty() || !self.selects_port(port) {
            return Contribution::default();
        }
        let authz = self.authz();
        if !self.has_http {
            return Contribution {
                authorizations: if self.has_tcp {
                    vec![authz]
                } else {
                    Vec::new()
                },
                routes: Vec::new(),
            };
        }
        let routes = self
            .http_rules
            .iter()
            .map(|rule| HttpRoute {
                metadata: Some(weft_policy::resource_meta(
                    SPECS_GROUP,
                    ROUTE_KIND,
                    &rule.group.namespace,
                    &rule.group.name,
                )),
                hosts: Vec::new(),
                authorizations: vec![authz.clone()],
                rules: vec![http_route::Rule {
                    matches: rule.matches.clone(),
                    filters: Vec::new(),
                }],
            })
            .collect();
        Contribution {
            authorizations: Vec::new(),
            routes,
        }
    }

    /// The TrafficTarget's authorization: its sources' mTLS identities,
    /// from anywhere.
    fn authz(&self) -> Authz {
        Authz {
            networks: weft_policy::all_networks(),
            authentication: Some(weft_policy::mesh_identities(
                self.sources.clone(),
                Vec::new(),
            )),
            labels: weft_policy::labels(ACCESS_GROUP, AUTHZ_KIND, &self.key.name),
            metadata: Some(weft_policy::resource_meta(
                ACCESS_GROUP,
                AUTHZ_KIND,
                &self.key.namespace,
                &self.key.name,
            )),
        }
    }
}
