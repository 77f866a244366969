//! The typed inbound policy of one port, converted once from the
//! controller's `io.linkerd.proxy.inbound.Server` message.
//!
//! Conversion validates the message the way Linkerd's proxy does: a
//! protocol must be set, the server must have a `name` label, every
//! authorization needs at least one network, an authentication and
//! metadata (or the older `name` label), every route needs metadata and at
//! least one rule, and every regex must compile. A message that fails any
//! of these is refused as a whole ([`InvalidPolicy`]): the watch logs it and
//! keeps the last valid policy, since applying part of a policy could admit
//! what the whole would not.
//!
//! Regexes are compiled here, once per update, never per request.

use crate::route::matching::{self, HostMatch, InvalidMatch, RequestHead, RequestMatch, Score};
use ipnet::IpNet;
use linkerd2_proxy_api::grpc_route::GrpcRouteMatch;
use linkerd2_proxy_api::http_route::{self as api_route, HttpRouteMatch};
use linkerd2_proxy_api::inbound::{self as api, authn, proxy_protocol};
use linkerd2_proxy_api::meta::{metadata, Metadata};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// Names a server, authorization or route in metrics and errors, as
/// Linkerd's `Meta` does: a resource (`group`/`kind`/`name`) or a default
/// (group `""`, kind `default`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Meta {
    /// The API group (`""` for defaults).
    pub group: Arc<str>,
    /// The kind (`default` for defaults).
    pub kind: Arc<str>,
    /// The name.
    pub name: Arc<str>,
}

/// The policy in force on one inbound port.
#[derive(Debug)]
pub struct ServerPolicy {
    /// The server's labels (`srv_*` in metrics).
    pub meta: Meta,
    /// How connections to the port are treated.
    pub protocol: Protocol,
    /// Who may connect at all (and, for HTTP, send any request the
    /// port's routes match). With `WEFT_PROXY_INBOUND_TRUST_LOOPBACK`,
    /// `localhost` is the last of them.
    pub authorizations: Box<[Authz]>,
    /// HTTP routes, each with authorizations of its own (opaque and TLS
    /// servers have only the catch-all `default`).
    pub routes: Box<[HttpRoute]>,
    /// True once the controller answered for this port, with a policy or
    /// with "no such pod" (false: the default policy from the proxy's own
    /// settings, in force until then).
    pub answered: bool,
}

/// What the server says about a port's protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Detect HTTP; anything else is checked as TCP.
    Detect {
        /// Linkerd's detection timeout (the proxy uses its own setting).
        timeout: Duration,
    },
    /// HTTP/1 only.
    Http1,
    /// HTTP/2 only.
    Http2,
    /// gRPC (routes match `/service/method`).
    Grpc,
    /// Opaque TCP: server-level authorizations only.
    Opaque,
    /// TLS not terminated by the proxy: server-level authorizations only.
    Tls,
}

/// One authorization: which clients it admits.
#[derive(Clone, Debug)]
pub struct Authz {
    /// The client's address must be in one of these.
    pub networks: Box<[Network]>,
    /// What the client must prove.
    pub authn: Authn,
    /// The authorization's labels (`authz_*` in metrics).
    pub meta: Meta,
}

/// A network of client addresses, minus exceptions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    /// The network.
    pub net: IpNet,
    /// Addresses in `net` that are not admitted.
    pub except: Box<[IpNet]>,
}

/// What a client must prove to an authorization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authn {
    /// Nothing: plaintext is fine.
    Unauthenticated,
    /// A mesh TLS connection (terminated by this proxy), whatever the
    /// client's identity.
    MeshTls,
    /// A mesh TLS connection from one of these identities.
    Identities {
        /// Exact identities.
        names: BTreeSet<String>,
        /// Identity suffixes.
        suffixes: Box<[Suffix]>,
    },
}

/// An identity suffix: `["b", "c"]` admits `a.b.c` (whole DNS labels);
/// the empty suffix admits every identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suffix {
    /// `.b.c`, or `""` for every identity.
    ends_with: String,
}

/// An HTTP route of a server.
#[derive(Debug)]
pub struct HttpRoute {
    /// The route's labels (`route_*` in metrics; `ROUTE` in the 403).
    pub meta: Meta,
    /// Hosts the route is limited to; empty: any.
    pub hosts: Box<[HostMatch]>,
    /// A request matching any rule is on the route.
    pub rules: Box<[Rule]>,
    /// Who may send requests on this route (besides the server's own
    /// authorizations).
    pub authorizations: Box<[Authz]>,
}

/// One rule of a route: a request matching any of `matches` is on it; a
/// rule without matches matches every request.
#[derive(Debug)]
pub struct Rule {
    /// The rule's matches.
    pub matches: Box<[RequestMatch]>,
}

/// Why a policy message was refused.
#[derive(Debug, thiserror::Error)]
pub enum InvalidPolicy {
    /// `protocol` (or its kind) is not set.
    #[error("the server has no protocol")]
    MissingProtocol,
    /// `Detect` without a timeout.
    #[error("protocol detection has no timeout")]
    MissingDetectTimeout,
    /// A negative or out-of-range detect timeout.
    #[error("invalid protocol detection timeout: {0}")]
    DetectTimeout(String),
    /// The server's labels name nothing.
    #[error("server labels: {0}")]
    ServerMeta(InvalidMeta),
    /// A server-level authorization is invalid.
    #[error("authorization #{index}: {reason}")]
    Authz {
        /// Its position in the message.
        index: usize,
        /// What is wrong with it.
        reason: InvalidAuthz,
    },
    /// A route is invalid.
    #[error("route #{index}: {reason}")]
    Route {
        /// Its position in the message.
        index: usize,
        /// What is wrong with it.
        reason: InvalidRoute,
    },
}

/// Why metadata (or labels standing in for it) could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidMeta {
    /// No metadata and no kind in it.
    #[error("missing metadata")]
    Missing,
    /// Labels without `name`.
    #[error("missing 'name' label")]
    Name,
}

/// Why an authorization was refused.
#[derive(Debug, thiserror::Error)]
pub enum InvalidAuthz {
    /// No networks: Linkerd's API says such an authorization must be
    /// ignored; a policy carrying one is malformed.
    #[error("no networks")]
    NoNetworks,
    /// A network entry without its `net`.
    #[error("a network without an address")]
    MissingNetwork,
    /// An address or prefix length that does not parse.
    #[error("invalid network: {0}")]
    Network(#[from] linkerd2_proxy_api::net::InvalidIpNetwork),
    /// No authentication (or no permit / clients in it).
    #[error("missing authentication")]
    MissingAuthentication,
    /// No usable metadata.
    #[error("{0}")]
    Meta(#[from] InvalidMeta),
}

/// Why a route was refused.
#[derive(Debug, thiserror::Error)]
pub enum InvalidRoute {
    /// A route without metadata.
    #[error("metadata: {0}")]
    Meta(#[from] InvalidMeta),
    /// A route without rules (it could never match).
    #[error("no rules")]
    NoRules,
    /// A host match without a value.
    #[error("a host match without a value")]
    Host,
    /// A route authorization is invalid.
    #[error("authorization #{index}: {reason}")]
    Authz {
        /// Its position in the route.
        index: usize,
        /// What is wrong with it.
        reason: InvalidAuthz,
    },
    /// A request match is invalid.
    #[error("{0}")]
    Match(#[from] InvalidMatch),
}

// === impl Meta ===

impl Meta {
    /// The metadata of something a default policy (not a resource) made.
    pub fn default_named(name: &str) -> Self {
        Self {
            group: Arc::from(""),
            kind: Arc::from(weft_policy::DEFAULT_KIND),
            name: Arc::from(name),
        }
    }

    /// True for the `audit` authorization: what it alone admits, `deny`
    /// would refuse.
    pub fn is_audit(&self) -> bool {
        self.group.is_empty()
            && &*self.kind == weft_policy::DEFAULT_KIND
            && &*self.name == weft_policy::DefaultPolicy::Audit.as_str()
    }

    /// From API metadata (required).
    fn from_proto(meta: Option<Metadata>) -> Result<Self, InvalidMeta> {
        match meta.and_then(|m| m.kind).ok_or(InvalidMeta::Missing)? {
            metadata::Kind::Default(name) => Ok(Self::default_named(&name)),
            metadata::Kind::Resource(r) => Ok(Self {
                group: r.group.into(),
                kind: r.kind.into(),
                name: r.name.into(),
            }),
        }
    }

    /// From `group`/`kind`/`name` labels, as older controllers send them
    /// (and as servers always are): `name` is required; `kind=default`
    /// with an empty group is a default.
    fn from_labels(
        labels: &HashMap<String, String>,
        default_group: &str,
        default_kind: &str,
    ) -> Result<Self, InvalidMeta> {
        let name = labels.get("name").ok_or(InvalidMeta::Name)?;
        let group = labels.get("group").map_or(default_group, String::as_str);
        match labels.get("kind") {
            Some(kind) if group.is_empty() && kind == weft_policy::DEFAULT_KIND => {
                Ok(Self::default_named(name))
            }
            Some(kind) => Ok(Self {
                group: group.into(),
                kind: kind.as_str().into(),
                name: name.as_str().into(),
            }),
            // Older controllers encode defaults as `default:NAME`.
            None => match name.split_once(':') {
                Some((weft_policy::DEFAULT_KIND, name)) => Ok(Self::default_named(name)),
                Some((kind, name)) => Ok(Self {
                    group: group.into(),
                    kind: kind.into(),
                    name: name.into(),
                }),
                None => Ok(Self {
                    group: group.into(),
                    kind: default_kind.into(),
                    name: name.as_str().into(),
                }),
            },
        }
    }
}

impl std::fmt::Display for Meta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

// === impl ServerPolicy ===

impl ServerPolicy {
    /// Converts and validates a controller message. `trust_loopback` adds
    /// the `localhost` authorization last (`WEFT_PROXY_INBOUND_TRUST_LOOPBACK`).
    pub fn from_proto(server: api::Server, trust_loopback: bool) -> Result<Self, InvalidPolicy> {
        let api::Server {
            protocol,
            authorizations,
            labels,
            server_ips: _,
        } = server;
        let meta = Meta::from_labels(&labels, "policy.linkerd.io", "server")
            .map_err(InvalidPolicy::ServerMeta)?;
        let mut authzs = authorizations
            .into_iter()
            .enumerate()
            .map(|(index, a)| {
                Authz::from_proto(a).map_err(|reason| InvalidPolicy::Authz { index, reason })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if trust_loopback {
            // Our own message: it always converts.
            if let Ok(localhost) = Authz::from_proto(weft_policy::localhost_authz()) {
                authzs.push(localhost);
            }
        }
        let kind = protocol
            .and_then(|p| p.kind)
            .ok_or(InvalidPolicy::MissingProtocol)?;
        let (protocol, routes) = match kind {
            proxy_protocol::Kind::Detect(d) => {
                let timeout = d.timeout.ok_or(InvalidPolicy::MissingDetectTimeout)?;
                let timeout = Duration::try_from(timeout)
                    .map_err(|e| InvalidPolicy::DetectTimeout(e.to_string()))?;
                (Protocol::Detect { timeout }, http_routes(d.http_routes)?)
            }
            proxy_protocol::Kind::Http1(h) => (Protocol::Http1, http_routes(h.routes)?),
            proxy_protocol::Kind::Http2(h) => (Protocol::Http2, http_routes(h.routes)?),
            proxy_protocol::Kind::Grpc(g) => (Protocol::Grpc, grpc_routes(g.routes)?),
            // Such connections are checked as TCP; should one turn out to
            // be HTTP (the proxy's opaque ports disagree), its requests are
            // judged by the server's authorizations alone.
            proxy_protocol::Kind::Opaque(_) => (Protocol::Opaque, vec![HttpRoute::catch_all()]),
            proxy_protocol::Kind::Tls(_) => (Protocol::Tls, vec![HttpRoute::catch_all()]),
        };
        Ok(Self {
            meta,
            protocol,
            authorizations: authzs.into(),
            routes: routes.into(),
            answered: true,
        })
    }

    /// The default policy of a port (`WEFT_PROXY_DEFAULT_INBOUND_POLICY`
    /// over `WEFT_PROXY_CLUSTER_NETWORKS`), in force until the controller
    /// answers and wherever there is no controller.
    pub fn default_for(
        policy: weft_policy::DefaultPolicy,
        cluster_networks: &[IpNet],
        opaque: bool,
        trust_loopback: bool,
    ) -> Self {
        let server = weft_policy::default_server(policy, cluster_networks, opaque, &[]);
        match Self::from_proto(server, trust_loopback) {
            Ok(p) => Self {
                answered: false,
                ..p
            },
            Err(error) => {
                // weft-policy's own messages are valid (tested there and
                // here); should one not be, admit no one.
                tracing::error!(%error, "the default inbound policy is invalid; denying");
                Self {
                    meta: Meta::default_named(weft_policy::DefaultPolicy::Deny.as_str()),
                    protocol: Protocol::Opaque,
                    authorizations: Box::new([]),
                    routes: Box::new([HttpRoute::catch_all()]),
                    answered: false,
                }
            }
        }
    }

    /// True if connections are checked against server-level
    /// authorizations only, whatever their bytes look like.
    pub fn is_opaque(&self) -> bool {
        matches!(self.protocol, Protocol::Opaque | Protocol::Tls)
    }
}

/// Converts HTTP routes. Linkerd's proxy gives a server without routes a
/// catch-all `default` route (older controllers sent none); so does Weft.
fn http_routes(routes: Vec<api::HttpRoute>) -> Result<Vec<HttpRoute>, InvalidPolicy> {
    if routes.is_empty() {
        return Ok(vec![HttpRoute::catch_all()]);
    }
    routes
        .into_iter()
        .enumerate()
        .map(|(index, r)| {
            HttpRoute::from_proto(r).map_err(|reason| InvalidPolicy::Route { index, reason })
        })
        .collect()
}

/// Converts gRPC routes into HTTP routes on `/service/method` paths.
fn grpc_routes(routes: Vec<api::GrpcRoute>) -> Result<Vec<HttpRoute>, InvalidPolicy> {
    if routes.is_empty() {
        return Ok(vec![HttpRoute::catch_all()]);
    }
    routes
        .into_iter()
        .enumerate()
        .map(|(index, r)| {
            HttpRoute::from_grpc(r).map_err(|reason| InvalidPolicy::Route { index, reason })
        })
        .collect()
}

// === impl Authz ===

impl Authz {
    /// Converts and validates one authorization.
    pub fn from_proto(authz: api::Authz) -> Result<Self, InvalidAuthz> {
        let api::Authz {
            networks,
            authentication,
            labels,
            metadata,
        } = authz;
        if networks.is_empty() {
            return Err(InvalidAuthz::NoNetworks);
        }
        let networks = networks
            .into_iter()
            .map(|api::Network { net, except }| {
                let net = IpNet::try_from(net.ok_or(InvalidAuthz::MissingNetwork)?)?;
                let except = except
                    .into_iter()
                    .map(IpNet::try_from)
                    .collect::<Result<Box<[_]>, _>>()?;
                Ok(Network { net, except })
            })
            .collect::<Result<Box<[_]>, InvalidAuthz>>()?;
        let permit = authentication
            .and_then(|a| a.permit)
            .ok_or(InvalidAuthz::MissingAuthentication)?;
        let authn = match permit {
            authn::Permit::Unauthenticated(_) => Authn::Unauthenticated,
            authn::Permit::MeshTls(mtls) => {
                use authn::permit_mesh_tls::Clients;
                match mtls.clients.ok_or(InvalidAuthz::MissingAuthentication)? {
                    Clients::Unauthenticated(_) => Authn::MeshTls,
                    Clients::Identities(ids) => Authn::Identities {
                        names: ids.identities.into_iter().map(|i| i.name).collect(),
                        suffixes: ids
                            .suffixes
                            .into_iter()
                            .map(|s| Suffix::new(&s.parts))
                            .collect(),
                    },
                }
            }
        };
        let meta = match metadata {
            Some(m) => Meta::from_proto(Some(m))?,
            None => Meta::from_labels(&labels, "policy.linkerd.io", "serverauthorization")?,
        };
        Ok(Self {
            networks,
            authn,
            meta,
        })
    }
}

// === impl Suffix ===

impl Suffix {
    /// The suffix of DNS labels `parts` (empty: every identity).
    pub fn new(parts: &[String]) -> Self {
        let ends_with = if parts.is_empty() {
            String::new()
        } else {
            format!(".{}", parts.join("."))
        };
        Self { ends_with }
    }

    /// True if `identity` ends with the suffix's labels, with at least one
    /// label before them (`b.c` admits `a.b.c`, not `b.c` nor `ab.c`).
    pub fn contains(&self, identity: &str) -> bool {
        self.ends_with.is_empty()
            || (identity.len() > self.ends_with.len() && identity.ends_with(&self.ends_with))
    }
}

// === impl HttpRoute ===

impl HttpRoute {
    /// How well `req` (for `host`, compared case-insensitively, port
    /// stripped) matches this route, or `None` if it is not on it: the
    /// shared matcher over this route's hosts and rules, so the best
    /// route can be reported.
    pub fn score(&self, req: &RequestHead<'_>, host: Option<&str>) -> Option<Score> {
        matching::route_score(
            &self.hosts,
            self.rules.iter().map(|r| &*r.matches),
            req,
            host,
        )
    }

    /// The catch-all route with no authorizations of its own (the
    /// server's decide), as Linkerd's proxy builds for a server without
    /// routes.
    fn catch_all() -> Self {
        Self {
            meta: Meta::default_named(weft_policy::DEFAULT_ROUTE),
            hosts: Box::new([]),
            rules: Box::new([Rule {
                matches: Box::new([]),
            }]),
            authorizations: Box::new([]),
        }
    }

    pub(super) fn from_proto(route: api::HttpRoute) -> Result<Self, InvalidRoute> {
        // Filters (header changes, redirects, failure injection) never
        // decide who is admitted; they are not applied.
        let rules = route.rules.into_iter().map(|r| r.matches);
        Self::assemble(
            route.metadata,
            route.hosts,
            route.authorizations,
            rules,
            RequestMatch::from_proto,
        )
    }

    fn from_grpc(route: api::GrpcRoute) -> Result<Self, InvalidRoute> {
        let rules = route.rules.into_iter().map(|r| r.matches);
        Self::assemble(
            route.metadata,
            route.hosts,
            route.authorizations,
            rules,
            grpc_match,
        )
    }

    /// The parts both kinds of route share; `to_match` converts one rule's
    /// matches (HTTP or gRPC) into request matches.
    fn assemble<M>(
        metadata: Option<linkerd2_proxy_api::meta::Metadata>,
        hosts: Vec<api_route::HostMatch>,
        authorizations: Vec<api::Authz>,
        rules: impl ExactSizeIterator<Item = Vec<M>>,
        to_match: impl Fn(M) -> Result<RequestMatch, InvalidMatch>,
    ) -> Result<Self, InvalidRoute> {
        let meta = Meta::from_proto(metadata)?;
        if rules.len() == 0 {
            return Err(InvalidRoute::NoRules);
        }
        let rules = rules
            .map(|matches| {
                let matches = matches
                    .into_iter()
                    .map(&to_match)
                    .collect::<Result<Box<[_]>, _>>()?;
                Ok(Rule { matches })
            })
            .collect::<Result<Box<[_]>, InvalidRoute>>()?;
        Ok(Self {
            meta,
            hosts: route_hosts(hosts)?,
            rules,
            authorizations: route_authzs(authorizations)?,
        })
    }
}

fn route_hosts(hosts: Vec<api_route::HostMatch>) -> Result<Box<[HostMatch]>, InvalidRoute> {
    hosts
        .into_iter()
        .map(|h| HostMatch::from_proto(h).ok_or(InvalidRoute::Host))
        .collect()
}

fn route_authzs(authzs: Vec<api::Authz>) -> Result<Box<[Authz]>, InvalidRoute> {
    authzs
        .into_iter()
        .enumerate()
        .map(|(index, a)| {
            Authz::from_proto(a).map_err(|reason| InvalidRoute::Authz { index, reason })
        })
        .collect()
}

/// A gRPC match as an HTTP match: gRPC calls are `POST /service/method`.
fn grpc_match(m: GrpcRouteMatch) -> Result<RequestMatch, InvalidMatch> {
    use api_route::{path_match, PathMatch};
    let path = m.rpc.map(|rpc| {
        let kind = match (rpc.service.is_empty(), rpc.method.is_empty()) {
            (false, false) => path_match::Kind::Exact(format!("/{}/{}", rpc.service, rpc.method)),
            (false, true) => path_match::Kind::Prefix(format!("/{}", rpc.service)),
            (true, false) => {
                path_match::Kind::Regex(format!("/[^/]+/{}", regex::escape(&rpc.method)))
            }
            (true, true) => path_match::Kind::Prefix("/".to_owned()),
        };
        PathMatch { kind: Some(kind) }
    });
    RequestMatch::from_proto(HttpRouteMatch {
        path,
        headers: m.headers,
        query_params: Vec::new(),
        method: None,
    })
}

#[cfg(test)]
mod tests;
