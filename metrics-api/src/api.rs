//! The JSON documents of the controller's metrics API.
//!
//! Every endpoint is a `GET` on the controller's admin port (`:9990`) with
//! its parameters in the query string, and answers `200` with a JSON
//! document, or `400`/`404` with an [`ErrorBody`]. The row types double as
//! the CLI's `-o json` output, so the keys here are a published contract:
//! they follow Linkerd's `viz` JSON (`success` is a fraction, latencies are
//! whole milliseconds, `null` where there was no traffic) and never change
//! meaning.
//!
//! | path              | query                                     | answer            |
//! |-------------------|-------------------------------------------|-------------------|
//! | `/api/v1/stat`    | [`StatQuery`]                             | [`StatResponse`]  |
//! | `/api/v1/edges`   | [`EdgesQuery`]                            | [`EdgesResponse`] |
//! | `/api/v1/routes`  | [`RoutesQuery`]                           | [`RoutesResponse`]|
//! | `/api/v1/top`     | [`TopQuery`]                              | [`TopResponse`]   |
//! | `/api/v1/targets` | none                                      | [`TargetsResponse`]|
//! | `/api/v1/authz`   | [`AuthzQuery`]                            | [`AuthzResponse`] |

use crate::resource::{Resource, ResourceError};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Path of the stat endpoint.
pub const STAT_PATH: &str = "/api/v1/stat";
/// Path of the edges endpoint.
pub const EDGES_PATH: &str = "/api/v1/edges";
/// Path of the routes endpoint.
pub const ROUTES_PATH: &str = "/api/v1/routes";
/// Path of the top endpoint.
pub const TOP_PATH: &str = "/api/v1/top";
/// Path of the scrape-targets endpoint.
pub const TARGETS_PATH: &str = "/api/v1/targets";
/// Path of the inbound-authorization endpoint (`weft authz`).
pub const AUTHZ_PATH: &str = "/api/v1/authz";

/// The window `stat` and `routes` use when none is asked for, as
/// `linkerd viz stat` does.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// How long `top` collects live requests when not told.
pub const DEFAULT_TOP_DURATION: Duration = Duration::from_secs(2);
/// The longest `top` collection one request may ask for.
pub const MAX_TOP_DURATION: Duration = Duration::from_secs(30);

/// The namespace a query without `namespace` means (kubectl's default).
pub const DEFAULT_NAMESPACE: &str = "default";

/// Where a query looks: one namespace, or all of them (`-A`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Only resources in this namespace.
    Namespace(String),
    /// Resources in every namespace.
    All,
}

/// A resource in a namespace, as `--from`/`--to` name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespacedResource {
    /// The resource (`deploy/web`).
    pub resource: Resource,
    /// Its namespace.
    pub namespace: String,
}

/// Why a query string was refused (answered with `400`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A resource parameter did not parse.
    #[error("{param}: {source}")]
    Resource {
        /// The parameter (`resource`, `from`, `to`).
        param: &'static str,
        /// What was wrong with it.
        source: ResourceError,
    },
    /// A required parameter is missing.
    #[error("missing query parameter {0:?}")]
    Missing(&'static str),
    /// A parameter's value is not valid.
    #[error("{param}: {reason}")]
    Invalid {
        /// The parameter.
        param: &'static str,
        /// What was wrong with it.
        reason: String,
    },
}

/// `GET /api/v1/stat`: golden metrics per resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatQuery {
    /// What to list (`deploy`) or show (`deploy/web`).
    pub resource: Resource,
    /// Which namespace(s).
    pub scope: Scope,
    /// Only traffic from this resource (outbound, as its proxies saw it).
    pub from: Option<NamespacedResource>,
    /// Only traffic to this resource (outbound, as the listed resources'
    /// proxies saw it).
    pub to: Option<NamespacedResource>,
    /// How far back rates and quantiles look.
    pub window: Duration,
}

/// `GET /api/v1/edges`: who talks to whom, and whether over mTLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgesQuery {
    /// The kind of resource at both ends (`deploy`); a name keeps only the
    /// edges that touch it.
    pub resource: Resource,
    /// Which namespace(s).
    pub scope: Scope,
    /// How far back traffic counts as an edge.
    pub window: Duration,
}

/// `GET /api/v1/routes`: per-route metrics from ServiceProfiles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutesQuery {
    /// A service (its clients' view) or a workload (its outbound routes,
    /// with `to`).
    pub resource: Resource,
    /// The namespace of `resource`.
    pub namespace: String,
    /// Only routes of this service, as the resource's proxies call it.
    pub to: Option<NamespacedResource>,
    /// How far back rates and quantiles look.
    pub window: Duration,
}

/// `GET /api/v1/top`: the busiest paths of live requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopQuery {
    /// Whose proxies to listen to.
    pub resource: Resource,
    /// Which namespace(s).
    pub scope: Scope,
    /// How long to collect (at most [`MAX_TOP_DURATION`]).
    pub duration: Duration,
}

/// One row of `weft stat` (and its `-o json` element).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatRow {
    /// The resource's namespace.
    pub namespace: String,
    /// Its kind, canonical (`deployment`).
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Meshed pods over all pods (`1/2`); absent for services,
    /// authorities and traffic splits, which have no pods of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meshed: Option<String>,
    /// Successful responses over all classified responses, `0.0..=1.0`.
    pub success: Option<f64>,
    /// Requests per second over the window.
    pub rps: Option<f64>,
    /// Median response latency, whole milliseconds.
    pub latency_ms_p50: Option<u64>,
    /// 95th percentile latency, whole milliseconds.
    pub latency_ms_p95: Option<u64>,
    /// 99th percentile latency, whole milliseconds.
    pub latency_ms_p99: Option<u64>,
    /// Open inbound TCP connections at the end of the window.
    pub tcp_open_connections: Option<u64>,
    /// Bytes per second read from inbound peers.
    pub tcp_read_bytes_rate: Option<f64>,
    /// Bytes per second written to inbound peers.
    pub tcp_write_bytes_rate: Option<f64>,
    /// Requests and connections the workload's proxies refused by inbound
    /// authorization in the window (`inbound_http_authz_deny_total` +
    /// `inbound_tcp_authz_deny_total`); `null` where nothing was measured
    /// and for kinds that are not workloads.
    #[serde(default)]
    pub unauthorized: Option<u64>,
    /// A traffic split's apex service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apex: Option<String>,
    /// A traffic split's leaf service (one row per leaf).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf: Option<String>,
    /// The leaf's share of the split's total weight (`90%`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<String>,
}

/// The answer of `/api/v1/stat`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatResponse {
    /// The window the numbers cover, in seconds.
    pub window_seconds: f64,
    /// One row per resource, sorted by namespace then name.
    pub rows: Vec<StatRow>,
}

/// One row of `weft edges`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeRow {
    /// The client resource's name (`(unmeshed)` when the client has no
    /// proxy and so is known only to the server).
    pub src: String,
    /// The client's namespace (`-` when unknown).
    pub src_namespace: String,
    /// The server resource's name.
    pub dst: String,
    /// The server's namespace.
    pub dst_namespace: String,
    /// Whether the traffic was mutually authenticated TLS.
    pub secured: bool,
    /// The client's mTLS identity, when secured.
    pub client_id: String,
    /// The server's mTLS identity, when secured.
    pub server_id: String,
    /// Why the edge is not secured (`not meshed`, `no identity`, ...);
    /// empty when secured.
    pub no_tls_reason: String,
}

/// The answer of `/api/v1/edges`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgesResponse {
    /// One row per (source, destination) pair, sorted.
    pub rows: Vec<EdgeRow>,
}

/// One row of `weft routes`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteRow {
    /// The ServiceProfile route's name, or `[DEFAULT]` for requests no
    /// route matched.
    pub route: String,
    /// The service's authority (`books.shop.svc.cluster.local:8080`).
    pub authority: String,
    /// Success as the caller saw it (after retries), `0.0..=1.0`.
    pub success: Option<f64>,
    /// Requests per second as the caller sent them.
    pub rps: Option<f64>,
    /// Median latency as the caller saw it, whole milliseconds.
    pub latency_ms_p50: Option<u64>,
    /// 95th percentile latency, whole milliseconds.
    pub latency_ms_p95: Option<u64>,
    /// 99th percentile latency, whole milliseconds.
    pub latency_ms_p99: Option<u64>,
    /// Same as `success` (Linkerd's wide name for it).
    pub effective_success: Option<f64>,
    /// Same as `rps`.
    pub effective_rps: Option<f64>,
    /// Success of every attempt the proxy sent, retries included.
    pub actual_success: Option<f64>,
    /// Attempts per second, retries included.
    pub actual_rps: Option<f64>,
}

/// The answer of `/api/v1/routes`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoutesResponse {
    /// The window the numbers cover, in seconds.
    pub window_seconds: f64,
    /// One row per route, in profile order, `[DEFAULT]` last.
    pub rows: Vec<RouteRow>,
}

/// One row of `weft top`: requests grouped by who sent them where.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TopRow {
    /// The client (`deploy/web`, or its address when unknown).
    pub source: String,
    /// The server (`deploy/books`, or the authority).
    pub destination: String,
    /// The HTTP method.
    pub method: String,
    /// The request path, without its query string.
    pub path: String,
    /// Requests seen (after sampling).
    pub count: u64,
    /// Fastest response, milliseconds.
    pub best_ms: f64,
    /// Slowest response, milliseconds.
    pub worst_ms: f64,
    /// The latest response's latency, milliseconds.
    pub last_ms: f64,
    /// Successful responses over all, `0.0..=1.0`.
    pub success: f64,
}

/// The answer of `/api/v1/top`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TopResponse {
    /// How long requests were collected, in seconds.
    pub duration_seconds: f64,
    /// Proxies that were listened to.
    pub proxies: usize,
    /// Events the proxies dropped (feed full or sampled out).
    pub dropped: u64,
    /// Rows, busiest first.
    pub rows: Vec<TopRow>,
}

/// One proxy the controller scrapes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// `namespace/pod`.
    pub pod: String,
    /// Where its `/metrics` is (`10.0.0.5:4191`).
    pub address: String,
    /// Unix time of the last successful scrape, if any.
    pub last_scrape_unix: Option<f64>,
    /// The last scrape's error, if it failed.
    pub last_error: Option<String>,
    /// Series kept for this proxy.
    pub series: usize,
    /// Scrapes kept in its ring.
    pub samples: usize,
}

/// The answer of `/api/v1/targets`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetsResponse {
    /// The scrape interval, in seconds.
    pub scrape_interval_seconds: f64,
    /// How long samples are kept, in seconds (the longest window).
    pub retention_seconds: f64,
    /// Every proxy known, sorted by pod.
    pub targets: Vec<Target>,
}

/// `GET /api/v1/authz`: the inbound policy in force on each port of a
/// workload's pods, as the controller serves it to their proxies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthzQuery {
    /// A workload kind (`deploy`, `sts`, `ds`, `job`, `po`, `ns`), with or
    /// without a name: without, every resource of that kind.
    pub resource: Resource,
    /// Its namespace.
    pub namespace: String,
}

/// The answer of `/api/v1/authz`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthzResponse {
    /// One row per pod and TCP container port, sorted by pod then port.
    pub rows: Vec<AuthzPortRow>,
}

/// One port of one pod (and `weft authz -o json`'s element).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthzPortRow {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod.
    pub pod: String,
    /// The container port.
    pub port: u16,
    /// The server in force: `kind=default` and the policy's name, or the
    /// resource that governs the port (`serviceaccount`, for SMI).
    pub server: PolicyRef,
    /// `detect` (HTTP routes apply when the connection is HTTP) or
    /// `opaque`.
    pub protocol: String,
    /// What the server admits: its own authorizations (route `*`), then
    /// each route's; a server no authorization of its own admits has a rule
    /// with no authorization (what no route admits is refused).
    pub rules: Vec<AuthzRule>,
    /// What the controller could not apply for this port (a TrafficTarget
    /// naming a missing route group, ...): narrowed, never widened.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// A server, route or authorization by its labels (Linkerd's `group`,
/// `kind`, `name`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRef {
    /// API group (`""` for defaults, `access.smi-spec.io`, ...).
    pub group: String,
    /// Kind, lower case (`default`, `serviceaccount`, `traffictarget`).
    pub kind: String,
    /// Name (`deny`, `web`, the TrafficTarget's name).
    pub name: String,
}

/// One (route, authorization) pair of a port's policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthzRule {
    /// The route the authorization belongs to, or `*` for the server's own
    /// authorizations (any connection, any request).
    pub route: String,
    /// What the route matches, for a person (`GET /metrics`, `any path`).
    #[serde(default)]
    pub matches: Vec<String>,
    /// The authorization; `None` when nothing is admitted.
    pub authorization: Option<PolicyRef>,
    /// Client networks it admits (CIDRs).
    pub networks: Vec<String>,
    /// Who it admits: `unauthenticated` (anyone, mTLS or not), `any meshed
    /// identity`, or `identities` / `suffixes` (mTLS only).
    pub authentication: String,
    /// The mTLS identities it admits by name.
    #[serde(default)]
    pub identities: Vec<String>,
    /// The identity suffixes it admits (`*.shop.serviceaccount...`).
    #[serde(default)]
    pub suffixes: Vec<String>,
}

/// [`AuthzRule::authentication`] of an authorization that admits clients
/// with or without mTLS.
pub const AUTHN_UNAUTHENTICATED: &str = "unauthenticated";
/// [`AuthzRule::authentication`] of an authorization that admits any
/// verified mTLS identity.
pub const AUTHN_ANY_MESHED: &str = "any meshed identity";
/// [`AuthzRule::authentication`] of an authorization that admits the listed
/// identities and suffixes only.
pub const AUTHN_IDENTITIES: &str = "identities";
/// [`AuthzRule::route`] of the server's own authorizations.
pub const SERVER_ROUTE: &str = "*";

/// The body of every `400`/`404`/`5xx` answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
}

// === query strings ===

/// A decoded query string: the parameters in order, later ones winning.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: &str) -> Self {
        Self(
            form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn resource(&self, param: &'static str) -> Result<Option<Resource>, QueryError> {
        self.get(param)
            .map(|v| Resource::parse(v).map_err(|source| QueryError::Resource { param, source }))
            .transpose()
    }

    fn required_resource(&self) -> Result<Resource, QueryError> {
        self.resource("resource")?
            .ok_or(QueryError::Missing("resource"))
    }

    fn namespace(&self) -> String {
        self.get("namespace")
            .filter(|n| !n.is_empty())
            .unwrap_or(DEFAULT_NAMESPACE)
            .to_owned()
    }

    fn scope(&self) -> Result<Scope, QueryError> {
        match self.get("all_namespaces") {
            None | Some("false") => Ok(Scope::Namespace(self.namespace())),
            Some("true") => Ok(Scope::All),
            Some(other) => Err(QueryError::Invalid {
                param: "all_namespaces",
                reason: format!("{other:?} is not true or false"),
            }),
        }
    }

    /// `from`/`to` with their `*_namespace`, defaulting to `namespace`.
    fn peer(
        &self,
        param: &'static str,
        ns_param: &str,
    ) -> Result<Option<NamespacedResource>, QueryError> {
        Ok(self.resource(param)?.map(|resource| NamespacedResource {
            resource,
            namespace: self
                .get(ns_param)
                .filter(|n| !n.is_empty())
                .map_or_else(|| self.namespace(), str::to_owned),
        }))
    }

    fn duration(&self, param: &'static str, default: Duration) -> Result<Duration, QueryError> {
        match self.get(param) {
            None => Ok(default),
            Some(text) => parse_seconds(text).ok_or_else(|| QueryError::Invalid {
                param,
                reason: format!("{text:?} is not a duration in seconds (e.g. 60 or 1.5)"),
            }),
        }
    }
}

/// Seconds on the wire (`60`, `2.5`): the CLI parses operators' `1m` with
/// the workspace's one duration syntax and sends plain seconds.
fn parse_seconds(text: &str) -> Option<Duration> {
    let secs: f64 = text.parse().ok()?;
    (secs.is_finite() && secs > 0.0 && secs < 1e9).then(|| Duration::from_secs_f64(secs))
}

/// Encodes parameters for a URL.
fn encode(pairs: &[(&str, String)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

fn scope_pairs(scope: &Scope, pairs: &mut Vec<(&'static str, String)>) {
    match scope {
        Scope::Namespace(ns) => pairs.push(("namespace", ns.clone())),
        Scope::All => pairs.push(("all_namespaces", "true".to_owned())),
    }
}

fn peer_pairs(
    peer: &Option<NamespacedResource>,
    param: &'static str,
    ns_param: &'static str,
    pairs: &mut Vec<(&'static str, String)>,
) {
    if let Some(p) = peer {
        pairs.push((param, p.resource.to_string()));
        pairs.push((ns_param, p.namespace.clone()));
    }
}

// === impl StatQuery ===

impl StatQuery {
    /// The query string (without `?`).
    pub fn to_query(&self) -> String {
        let mut pairs = vec![("resource", self.resource.to_string())];
        scope_pairs(&self.scope, &mut pairs);
        peer_pairs(&self.from, "from", "from_namespace", &mut pairs);
        peer_pairs(&self.to, "to", "to_namespace", &mut pairs);
        pairs.push(("window", self.window.as_secs_f64().to_string()));
        encode(&pairs)
    }

    /// Decodes a query string; `from` and `to` are mutually exclusive, as
    /// in Linkerd.
    pub fn from_query(query: &str) -> Result<Self, QueryError> {
        let p = Params::parse(query);
        let q = Self {
            resource: p.required_resource()?,
            scope: p.scope()?,
            from: p.peer("from", "from_namespace")?,
            to: p.peer("to", "to_namespace")?,
            window: p.duration("window", DEFAULT_WINDOW)?,
        };
        if q.from.is_some() && q.to.is_some() {
            return Err(QueryError::Invalid {
                param: "from",
                reason: "from and to cannot be used together".to_owned(),
            });
        }
        Ok(q)
    }
}

// === impl EdgesQuery ===

impl EdgesQuery {
    /// The query string (without `?`).
    pub fn to_query(&self) -> String {
        let mut pairs = vec![("resource", self.resource.to_string())];
        scope_pairs(&self.scope, &mut pairs);
        pairs.push(("window", self.window.as_secs_f64().to_string()));
        encode(&pairs)
    }

    /// Decodes a query string.
    pub fn from_query(query: &str) -> Result<Self, QueryError> {
        let p = Params::parse(query);
        Ok(Self {
            resource: p.required_resource()?,
            scope: p.scope()?,
            window: p.duration("window", DEFAULT_WINDOW)?,
        })
    }
}

// === impl RoutesQuery ===

impl RoutesQuery {
    /// The query string (without `?`).
    pub fn to_query(&self) -> String {
        let mut pairs = vec![
            ("resource", self.resource.to_string()),
            ("namespace", self.namespace.clone()),
        ];
        peer_pairs(&self.to, "to", "to_namespace", &mut pairs);
        pairs.push(("window", self.window.as_secs_f64().to_string()));
        encode(&pairs)
    }

    /// Decodes a query string.
    pub fn from_query(query: &str) -> Result<Self, QueryError> {
        let p = Params::parse(query);
        Ok(Self {
            resource: p.required_resource()?,
            namespace: p.namespace(),
            to: p.peer("to", "to_namespace")?,
            window: p.duration("window", DEFAULT_WINDOW)?,
        })
    }
}

// === impl TopQuery ===

impl TopQuery {
    /// The query string (without `?`).
    pub fn to_query(&self) -> String {
        let mut pairs = vec![("resource", self.resource.to_string())];
        scope_pairs(&self.scope, &mut pairs);
        pairs.push(("duration", self.duration.as_secs_f64().to_string()));
        encode(&pairs)
    }

    /// Decodes a query string; the duration is capped at
    /// [`MAX_TOP_DURATION`].
    pub fn from_query(query: &str) -> Result<Self, QueryError> {
        let p = Params::parse(query);
        Ok(Self {
            resource: p.required_resource()?,
            scope: p.scope()?,
            duration: p
                .duration("duration", DEFAULT_TOP_DURATION)?
                .min(MAX_TOP_DURATION),
        })
    }
}

// === impl AuthzQuery ===

impl AuthzQuery {
    /// The query string (without `?`).
    pub fn to_query(&self) -> String {
        encode(&[
            ("resource", self.resource.to_string()),
            ("namespace", self.namespace.clone()),
        ])
    }

    /// Decodes a query string; only workload kinds have pods to show.
    pub fn from_query(query: &str) -> Result<Self, QueryError> {
        let p = Params::parse(query);
        let resource = p.required_resource()?;
        if !resource.kind.has_pods() {
            return Err(QueryError::Invalid {
                param: "resource",
                reason: format!(
                    "{} has no pods of its own; use a workload (deploy, sts, ds, job, po, ns)",
                    resource.kind
                ),
            });
        }
        Ok(Self {
            resource,
            namespace: p.namespace(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::ResourceKind;

    #[test]
    fn authz_queries_round_trip_and_want_workloads() {
        let q = AuthzQuery {
            resource: Resource::parse("deploy/web").unwrap(),
            namespace: "shop".into(),
        };
        assert_eq!(AuthzQuery::from_query(&q.to_query()).unwrap(), q);
        let q = AuthzQuery::from_query("resource=po").unwrap();
        assert_eq!(q.namespace, "default");
        let e = AuthzQuery::from_query("resource=svc/books").unwrap_err();
        assert!(
            e.to_string().starts_with("resource: service has no pods"),
            "{e}"
        );
        assert_eq!(
            AuthzQuery::from_query("").unwrap_err(),
            QueryError::Missing("resource")
        );
    }

    #[test]
    fn stat_queries_round_trip() {
        let q = StatQuery {
            resource: Resource::parse("deploy/web").unwrap(),
            scope: Scope::Namespace("shop floor".into()),
            from: None,
            to: Some(NamespacedResource {
                resource: Resource::parse("svc/books").unwrap(),
                namespace: "lib".into(),
            }),
            window: Duration::from_secs(90),
        };
        assert_eq!(StatQuery::from_query(&q.to_query()).unwrap(), q);
        let all = StatQuery {
            scope: Scope::All,
            to: None,
            ..q
        };
        assert_eq!(StatQuery::from_query(&all.to_query()).unwrap(), all);
    }

    #[test]
    fn defaults_follow_linkerd() {
        let q = StatQuery::from_query("resource=deploy").unwrap();
        assert_eq!(q.resource.kind, ResourceKind::Deployment);
        assert_eq!(q.scope, Scope::Namespace("default".into()));
        assert_eq!(q.window, DEFAULT_WINDOW);
        let q = StatQuery::from_query("resource=deploy&namespace=a&to=svc/b").unwrap();
        assert_eq!(q.to.unwrap().namespace, "a");
    }

    #[test]
    fn bad_queries_say_which_parameter() {
        let e = StatQuery::from_query("").unwrap_err();
        assert_eq!(e, QueryError::Missing("resource"));
        let e = StatQuery::from_query("resource=nope").unwrap_err();
        assert!(e.to_string().starts_with("resource:"), "{e}");
        let e = StatQuery::from_query("resource=po&window=-1").unwrap_err();
        assert!(e.to_string().starts_with("window:"), "{e}");
        let e = StatQuery::from_query("resource=po&from=po/a&to=po/b").unwrap_err();
        assert!(e.to_string().contains("together"), "{e}");
        let e = EdgesQuery::from_query("resource=po&all_namespaces=yes").unwrap_err();
        assert!(e.to_string().starts_with("all_namespaces:"), "{e}");
    }

    #[test]
    fn top_durations_are_capped() {
        let q = TopQuery::from_query("resource=deploy&duration=3600").unwrap();
        assert_eq!(q.duration, MAX_TOP_DURATION);
    }

    #[test]
    fn rows_without_traffic_serialize_nulls_like_linkerd() {
        let row = StatRow {
            namespace: "shop".into(),
            kind: "deployment".into(),
            name: "web".into(),
            meshed: Some("1/2".into()),
            ..StatRow::default()
        };
        let json = serde_json::to_value(&row).unwrap();
        assert_eq!(json["meshed"], "1/2");
        assert!(json["success"].is_null());
        assert!(json["latency_ms_p99"].is_null());
        assert!(json.get("apex").is_none());
    }
}
