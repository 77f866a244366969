//! `io.linkerd.proxy.outbound.OutboundPolicies`: TrafficSplits gated by
//! `matches` (SMI v1alpha3/v1alpha4 HTTPRouteGroup A/B routing).
//!
//! A `DestinationProfile`'s `dst_overrides` apply to every request, so a
//! split that applies only to requests with, say, `x-canary: true` cannot
//! be sent there (see [`super::profile`]). Linkerd's newer outbound policy
//! API can say it: an HTTP route whose rule has request matches and
//! weighted backends. For a Service that is the root (`spec.service`) of
//! such splits, the policy has one route per split (in name order), each
//! with one rule:
//!
//! - `matches`: every match of every referenced HTTPRouteGroup (SMI merges
//!   the groups; a request matching any of them is split). One SMI match
//!   becomes one `HttpRouteMatch` per listed method (the protocol has one
//!   method per match; `*` or no methods: any method), each carrying the
//!   `pathRegex` and the header regexes, all **anchored** as `^(?:RE)$`
//!   like ServiceProfile paths (SMI header values are regexes:
//!   `user-agent: ".*Firefox.*"`);
//! - `backends`: `RandomAvailable`, the split's backends with the same
//!   weights as `dst_overrides` ([`linkerd_weights`]), each a P2C balancer
//!   over `Destination.Get` of `BACKEND.ns.svc.CLUSTER_DOMAIN:PORT`.
//!
//! Requests no rule matches are not the policy's business: the proxy
//! follows the profile (a split without `matches`, or the Service itself),
//! so no catch-all route is sent. A split whose references cannot be
//! resolved (unknown HTTPRouteGroup, a group without matches, an invalid
//! regex or header name) is left out, never widened to all traffic, and a
//! warning says why. Like `GetProfile`, `Watch` sends the current policy at
//! once and then each one that differs, and unknown Services get an empty
//! policy (no routes) on a stream that stays open. Authorities are parsed
//! as for `Get`/`GetProfile`; a Pod `IP:port` (as an authority or as the
//! `addr` target) gets a policy without routes, since splits apply to
//! Services.

use super::authority::{self, Authority, Target};
use super::profile::{fully_qualified_name, linkerd_weights, splits_of};
use super::{Follower, UpdateStream};
use crate::store::{ObjectKey, Snapshot, Store};
use linkerd2_proxy_api::http_route::{
    header_match, path_match, HeaderMatch, HttpRouteMatch, PathMatch,
};
use linkerd2_proxy_api::http_types::{http_method, HttpMethod};
use linkerd2_proxy_api::meta::{metadata, Metadata, Resource};
use linkerd2_proxy_api::outbound::backend::{balance_p2c, endpoint_discovery};
use linkerd2_proxy_api::outbound::http_route::{distribution, Distribution, Rule};
use linkerd2_proxy_api::outbound::outbound_policies_server::OutboundPolicies;
use linkerd2_proxy_api::outbound::{
    backend, http_route, proxy_protocol, traffic_spec, Backend, HttpRoute, OutboundPolicy,
    ProxyProtocol, Queue, TrafficSpec,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use weft_smi_crds::profile::compile_anchored;
use weft_smi_crds::specs::HttpMatch;
use weft_smi_crds::Split;

/// Protocol detection timeout sent with every policy (Linkerd's default;
/// Weft's proxy uses its own setting).
pub const DETECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Peak-EWMA parameters sent for every backend: the proxy's defaults
/// (see docs/traffic.md), so a Linkerd proxy would balance alike.
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// See [`DEFAULT_RTT`].
pub const EWMA_DECAY: Duration = Duration::from_secs(10);
/// Backend queue settings (Linkerd's defaults; a Linkerd proxy requires
/// them, Weft's ignores them).
pub const QUEUE_CAPACITY: u32 = 100;
/// See [`QUEUE_CAPACITY`].
pub const QUEUE_FAILFAST: Duration = Duration::from_secs(3);

/// The policy for one Service port, and the splits that could not be
/// applied (logged when the policy changes, not on every snapshot).
#[derive(Clone, Debug, PartialEq)]
pub struct Translation {
    /// What the proxy receives.
    pub policy: OutboundPolicy,
    /// Human-readable notes about splits that were left out and why.
    pub ignored: Vec<String>,
}

/// Why one match-gated split cannot be turned into a route. The split is
/// left out (its requests follow the profile), never applied to all
/// traffic.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuleError {
    /// `spec.matches[i]` names a route group that is not in the store
    /// (never created, deleted, or rejected by validation).
    #[error("spec.matches[{index}]: unknown HTTPRouteGroup {group}")]
    UnknownRouteGroup {
        /// Index in the split's `spec.matches`.
        index: usize,
        /// `namespace/name` of the missing group.
        group: String,
    },
    /// The referenced groups have no matches at all, so the split would
    /// apply to no request.
    #[error("HTTPRouteGroup {groups}: no matches, so the split would apply to no request")]
    NoMatches {
        /// The referenced groups, `namespace/name`, comma-separated.
        groups: String,
    },
    /// A regex that does not compile (the feeds reject such groups, so
    /// this only guards the translation against a store it did not fill).
    #[error("HTTPRouteGroup {group}: spec.matches[{index}].{field}: {reason}")]
    InvalidRegex {
        /// `namespace/name` of the group.
        group: String,
        /// Index in the group's `spec.matches`.
        index: usize,
        /// `pathRegex` or `headers.NAME`.
        field: String,
        /// What the regex parser said.
        reason: String,
    },
    /// A header name that is not an HTTP token.
    #[error("HTTPRouteGroup {group}: spec.matches[{index}].headers: {name:?} is not a valid header name")]
    InvalidHeaderName {
        /// `namespace/name` of the group.
        group: String,
        /// Index in the group's `spec.matches`.
        index: usize,
        /// The header name.
        name: String,
    },
}

/// Builds the outbound policy for `target` from `snap`.
pub fn translate(snap: &Snapshot, target: &Target, cluster_domain: &str) -> Translation {
    let fqn = fully_qualified_name(target, cluster_domain);
    let mut ignored = Vec::new();
    let mut routes = Vec::new();
    for (key, split) in splits_of(snap, target, &fqn).filter(|(_, s)| !s.matches.is_empty()) {
        match route(snap, key, split, target, cluster_domain) {
            Ok(r) => routes.push(r),
            Err(error) => ignored.push(format!(
                "TrafficSplit {key}: {error}; the split is not applied (its requests follow the profile)"
            )),
        }
    }
    let metadata = resource(
        "core",
        "Service",
        &target.service,
        &target.namespace,
        target.port,
    );
    Translation {
        policy: policy(metadata, routes),
        ignored,
    }
}

/// [`translate`] for a Service; a policy without routes for a Pod.
pub fn translate_authority(
    snap: &Snapshot,
    authority: &Authority,
    cluster_domain: &str,
) -> Translation {
    match authority {
        Authority::Service(target) => translate(snap, target, cluster_domain),
        Authority::Pod(_) => Translation {
            policy: policy(
                Metadata {
                    kind: Some(metadata::Kind::Default("pod".into())),
                },
                Vec::new(),
            ),
            ignored: Vec::new(),
        },
    }
}

/// The policy message around `routes` (the same for HTTP/1 and HTTP/2).
fn policy(metadata: Metadata, routes: Vec<HttpRoute>) -> OutboundPolicy {
    let detect = proxy_protocol::Detect {
        timeout: Some(proto_duration(DETECT_TIMEOUT)),
        opaque: Some(proxy_protocol::Opaque { routes: Vec::new() }),
        http1: Some(proxy_protocol::Http1 {
            routes: routes.clone(),
            failure_accrual: None,
        }),
        http2: Some(proxy_protocol::Http2 {
            routes,
            failure_accrual: None,
        }),
    };
    OutboundPolicy {
        protocol: Some(ProxyProtocol {
            kind: Some(proxy_protocol::Kind::Detect(detect)),
        }),
        metadata: Some(metadata),
    }
}

/// One split as one route with one rule.
fn route(
    snap: &Snapshot,
    key: &ObjectKey,
    split: &Split,
    target: &Target,
    cluster_domain: &str,
) -> Result<HttpRoute, RuleError> {
    let matches = rule_matches(snap, key, split)?;
    let parts: Vec<u64> = split.backends.iter().map(|b| u64::from(b.weight)).collect();
    let backends = split
        .backends
        .iter()
        .zip(linkerd_weights(&parts))
        .map(|(b, weight)| http_route::WeightedRouteBackend {
            backend: Some(http_route::RouteBackend {
                backend: Some(balancer(&b.service, target, cluster_domain)),
                ..Default::default()
            }),
            weight,
        })
        .collect();
    Ok(HttpRoute {
        metadata: Some(resource(
            "split.smi-spec.io",
            "TrafficSplit",
            &key.name,
            &key.namespace,
            0,
        )),
        hosts: Vec::new(),
        rules: vec![Rule {
            matches,
            backends: Some(Distribution {
                kind: Some(distribution::Kind::RandomAvailable(
                    distribution::RandomAvailable { backends },
                )),
            }),
            ..Default::default()
        }],
    })
}

/// The request matches of a split's rule: every match of every
/// HTTPRouteGroup it references. Errors when a reference cannot be
/// resolved (unknown group, no matches at all, an invalid regex or header
/// name). Used by [`route`] and by the Kubernetes feed's reference checks
/// (`feed::events`), so a split is reported exactly when the policy leaves
/// it out.
pub(crate) fn rule_matches(
    snap: &Snapshot,
    key: &ObjectKey,
    split: &Split,
) -> Result<Vec<HttpRouteMatch>, RuleError> {
    let mut matches = Vec::new();
    let mut groups = Vec::new();
    for (index, reference) in split.matches.iter().enumerate() {
        let group_key = ObjectKey::new(&key.namespace, &reference.name);
        let group =
            snap.http_route_groups
                .get(&group_key)
                .ok_or_else(|| RuleError::UnknownRouteGroup {
                    index,
                    group: group_key.to_string(),
                })?;
        for (i, m) in group.spec.matches.iter().enumerate() {
            matches.extend(route_matches(&group_key, i, m)?);
        }
        groups.push(group_key.to_string());
    }
    if matches.is_empty() {
        return Err(RuleError::NoMatches {
            groups: groups.join(", "),
        });
    }
    Ok(matches)
}

/// One SMI match: one `HttpRouteMatch` per method (any method: one
/// without), each with the anchored path and header regexes.
fn route_matches(
    group: &ObjectKey,
    index: usize,
    m: &HttpMatch,
) -> Result<Vec<HttpRouteMatch>, RuleError> {
    let regex = |re: &str, field: String| {
        compile_anchored(re)
            .map(|_| format!("^(?:{re})$"))
            .map_err(|reason| RuleError::InvalidRegex {
                group: group.to_string(),
                index,
                field,
                reason,
            })
    };
    let path = match &m.path_regex {
        Some(re) => Some(PathMatch {
            kind: Some(path_match::Kind::Regex(regex(re, "pathRegex".into())?)),
        }),
        None => None,
    };
    let mut headers = Vec::new();
    for (name, re) in m.headers.iter().flat_map(|h| h.0.iter()) {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(RuleError::InvalidHeaderName {
                group: group.to_string(),
                index,
                name: name.clone(),
            });
        }
        headers.push(HeaderMatch {
            name: name.to_ascii_lowercase(),
            value: Some(header_match::Value::Regex(regex(
                re,
                format!("headers.{name}"),
            )?)),
        });
    }
    let methods: Vec<Option<HttpMethod>> =
        if m.methods.is_empty() || m.methods.iter().any(|x| x == "*") {
            vec![None]
        } else {
            m.methods.iter().map(|x| Some(method(x))).collect()
        };
    Ok(methods
        .into_iter()
        .map(|method| HttpRouteMatch {
            path: path.clone(),
            headers: headers.clone(),
            query_params: Vec::new(),
            method,
        })
        .collect())
}

/// Registered methods as the enum, any other token as a string (as the
/// profile translation does).
fn method(m: &str) -> HttpMethod {
    let r#type = match http::Method::from_bytes(m.as_bytes()) {
        Ok(m) => http_method::Type::from(m),
        Err(_) => http_method::Type::Unregistered(m.to_owned()),
    };
    HttpMethod {
        r#type: Some(r#type),
    }
}

/// A backend Service: P2C over peak-EWMA, endpoints from `Destination.Get`
/// of its FQDN authority on the port the proxy asked about (SMI backends
/// expose the root's ports).
fn balancer(service: &str, target: &Target, cluster_domain: &str) -> Backend {
    let path = format!(
        "{service}.{}.svc.{}:{}",
        target.namespace,
        cluster_domain.trim_end_matches('.'),
        target.port
    );
    Backend {
        metadata: Some(resource(
            "core",
            "Service",
            service,
            &target.namespace,
            target.port,
        )),
        queue: Some(Queue {
            capacity: QUEUE_CAPACITY,
            failfast_timeout: Some(proto_duration(QUEUE_FAILFAST)),
        }),
        kind: Some(backend::Kind::Balancer(backend::BalanceP2c {
            discovery: Some(backend::EndpointDiscovery {
                kind: Some(endpoint_discovery::Kind::Dst(
                    endpoint_discovery::DestinationGet { path },
                )),
            }),
            load: Some(balance_p2c::Load::PeakEwma(balance_p2c::PeakEwma {
                default_rtt: Some(proto_duration(DEFAULT_RTT)),
                decay: Some(proto_duration(EWMA_DECAY)),
            })),
        })),
    }
}

fn resource(group: &str, kind: &str, name: &str, namespace: &str, port: u16) -> Metadata {
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

/// The constants above as protobuf durations (they are far below the
/// range where conversion could fail).
fn proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// The outbound policy service, served next to `Destination`.
#[derive(Clone, Debug)]
pub struct OutboundPolicyService {
    store: Store,
    cluster_domain: Arc<str>,
    shutdown: watch::Receiver<bool>,
}

// === impl OutboundPolicyService ===

impl OutboundPolicyService {
    /// A service answering from `store` for Services in `cluster_domain`.
    /// Open `Watch` streams end when `shutdown` turns true, so graceful
    /// shutdown does not wait on them.
    pub fn new(store: Store, cluster_domain: &str, shutdown: watch::Receiver<bool>) -> Self {
        Self {
            store,
            cluster_domain: cluster_domain.into(),
            shutdown,
        }
    }

    /// What a request asks about, parsed and refused as `Get`/`GetProfile`
    /// do it (`InvalidArgument`, so the proxy treats the name as not ours).
    fn target(&self, spec: &TrafficSpec, rpc: &str) -> Result<Authority, Status> {
        let path = match &spec.target {
            Some(traffic_spec::Target::Authority(a)) => a,
            Some(traffic_spec::Target::Addr(addr)) => {
                let addr = std::net::SocketAddr::try_from(*addr).map_err(|error| {
                    Status::invalid_argument(format!("invalid target address: {error}"))
                })?;
                tracing::debug!(rpc, %addr, "outbound policy for a pod address");
                return Ok(Authority::Pod(addr));
            }
            None => return Err(Status::invalid_argument("TrafficSpec has no target")),
        };
        let target = authority::parse_authority(path, &self.cluster_domain).map_err(|error| {
            tracing::debug!(rpc, path, %error, "outbound policy refused");
            Status::invalid_argument(error.to_string())
        })?;
        tracing::debug!(rpc, path, target_service = %target, "outbound policy");
        Ok(target)
    }
}

/// Per-stream state of a `Watch`.
struct WatchState {
    target: Authority,
    cluster_domain: Arc<str>,
    follower: Follower,
    sent: Option<Translation>,
}

// === impl WatchState ===

impl WatchState {
    /// The next policy to send: the current one at first, then each one
    /// that differs from what was sent; `None` ends the stream.
    async fn next(&mut self) -> Option<OutboundPolicy> {
        loop {
            let snap = self.follower.next().await?;
            let next = translate_authority(&snap, &self.target, &self.cluster_domain);
            if self.sent.as_ref() == Some(&next) {
                continue;
            }
            let already = self.sent.as_ref().map_or(&[][..], |s| &s.ignored[..]);
            warn_ignored(&self.target, &next.ignored, already);
            tracing::debug!(
                target_service = %self.target,
                version = snap.version,
                routes = routes(&next.policy),
                "outbound policy update"
            );
            let out = next.policy.clone();
            self.sent = Some(next);
            return Some(out);
        }
    }
}

/// Logs each note in `notes` not already in `already`.
fn warn_ignored(target: &Authority, notes: &[String], already: &[String]) {
    for note in notes.iter().filter(|n| !already.contains(n)) {
        tracing::warn!(target_service = %target, "outbound policy: ignoring {note}");
    }
}

/// How many HTTP routes a policy carries (for logs).
fn routes(p: &OutboundPolicy) -> usize {
    match p.protocol.as_ref().and_then(|p| p.kind.as_ref()) {
        Some(proxy_protocol::Kind::Detect(d)) => d.http1.as_ref().map_or(0, |h| h.routes.len()),
        _ => 0,
    }
}

#[tonic::async_trait]
impl OutboundPolicies for OutboundPolicyService {
    type WatchStream = UpdateStream<OutboundPolicy>;

    async fn get(&self, request: Request<TrafficSpec>) -> Result<Response<OutboundPolicy>, Status> {
        let target = self.target(request.get_ref(), "Get")?;
        let t = translate_authority(&self.store.snapshot(), &target, &self.cluster_domain);
        warn_ignored(&target, &t.ignored, &[]);
        Ok(Response::new(t.policy))
    }

    async fn watch(
        &self,
        request: Request<TrafficSpec>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let target = self.target(request.get_ref(), "Watch")?;
        let state = WatchState {
            target,
            cluster_domain: self.cluster_domain.clone(),
            follower: Follower::new(&self.store, &self.shutdown),
            sent: None,
        };
        let stream =
            futures::stream::unfold(
                state,
                |mut s| async move { s.next().await.map(|p| (Ok(p), s)) },
            );
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::feed::files::parse_documents;
    use crate::store::Object;
    use weft_smi_crds::specs::v1alpha4::{HTTPRouteGroup, HTTPRouteGroupSpec};

    use crate::destination::testing::{snapshot as snap, web};

    /// The HTTP/1 routes of a policy (HTTP/2 must carry the same).
    fn http_routes(p: &OutboundPolicy) -> Vec<HttpRoute> {
        let Some(proxy_protocol::Kind::Detect(d)) = p.protocol.as_ref().unwrap().kind.as_ref()
        else {
            panic!("{p:?}")
        };
        let h1 = d.http1.as_ref().unwrap().routes.clone();
        assert_eq!(h1, d.http2.as_ref().unwrap().routes);
        h1
    }

    fn header(name: &str, re: &str) -> HeaderMatch {
        HeaderMatch {
            name: name.into(),
            value: Some(header_match::Value::Regex(re.into())),
        }
    }

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
                let Some(endpoint_discovery::Kind::Dst(dst)) =
                    &p2c.discovery.as_ref().unwrap().kind
                else {
                    panic!("{p2c:?}")
                };
                (dst.path.clone(), b.weight)
            })
            .collect()
    }

    const GROUP: &str = "apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: canary-users, namespace: shop}
spec:
  matches:
  - name: canary-header
    headers: {X-Canary: \"true\"}
  - name: firefox-api
    pathRegex: /api/.*
    methods: [GET, HEAD]
    headers:
    - user-agent: .*Firefox.*
";

    const SPLIT: &str = "apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: ab, namespace: shop}
spec:
  service: web
  matches: [{kind: HTTPRouteGroup, name: canary-users}]
  backends: [{service: web-v1, weight: 0}, {service: web-v2, weight: 100}]
";

    #[test]
    fn matched_split_becomes_one_route_with_anchored_matches() {
        let t = translate(
            &snap(&format!("{GROUP}---\n{SPLIT}")),
            &web(8080),
            "cluster.local.",
        );
        assert!(t.ignored.is_empty(), "{:?}", t.ignored);
        let routes = http_routes(&t.policy);
        assert_eq!(routes.len(), 1);
        let r = &routes[0];
        assert_eq!(
            r.metadata,
            Some(resource(
                "split.smi-spec.io",
                "TrafficSplit",
                "ab",
                "shop",
                0
            ))
        );
        let m = &r.rules[0].matches;
        // One match for the header-only entry (any method), one per method
        // for the other.
        assert_eq!(m.len(), 3, "{m:?}");
        assert_eq!(
            m[0],
            HttpRouteMatch {
                headers: vec![header("x-canary", "^(?:true)$")],
                ..Default::default()
            }
        );
        let path = Some(PathMatch {
            kind: Some(path_match::Kind::Regex("^(?:/api/.*)$".into())),
        });
        assert_eq!(m[1].path, path);
        assert_eq!(
            m[1].headers,
            vec![header("user-agent", "^(?:.*Firefox.*)$")]
        );
        assert_eq!(m[1].method, Some(HttpMethod::from(http::Method::GET)));
        assert_eq!(m[2].method, Some(HttpMethod::from(http::Method::HEAD)));
        assert_eq!(m[2].path, path);
        assert_eq!(
            backends(r),
            [
                ("web-v1.shop.svc.cluster.local:8080".to_owned(), 0),
                ("web-v2.shop.svc.cluster.local:8080".to_owned(), 1000)
            ]
        );
        assert_eq!(
            t.policy.metadata,
            Some(resource("core", "Service", "web", "shop", 8080))
        );
    }

    #[test]
    fn matchless_splits_and_other_services_get_no_routes() {
        let matchless = "apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {name: rollout, namespace: shop}
spec:
  service: web
  backends: [{service: web-v1, weight: 1}]
";
        let s = snap(&format!("{GROUP}---\n{matchless}"));
        let t = translate(&s, &web(80), "cluster.local");
        assert!(http_routes(&t.policy).is_empty());
        assert!(t.ignored.is_empty());
        let other = Target {
            namespace: "shop".into(),
            service: "nope".into(),
            port: 80,
        };
        assert!(http_routes(&translate(&s, &other, "cluster.local").policy).is_empty());
    }

    #[test]
    fn unresolvable_splits_are_left_out_with_a_reason() {
        // Unknown group: the split is not applied, the note names it.
        let t = translate(&snap(SPLIT), &web(80), "cluster.local");
        assert!(http_routes(&t.policy).is_empty());
        assert_eq!(t.ignored.len(), 1, "{:?}", t.ignored);
        assert!(
            t.ignored[0].contains("TrafficSplit shop/ab")
                && t.ignored[0].contains("unknown HTTPRouteGroup shop/canary-users"),
            "{}",
            t.ignored[0]
        );

        // A group with no matches matches nothing.
        let empty = "apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: canary-users, namespace: shop}
spec: {matches: []}
";
        let t = translate(&snap(&format!("{empty}---\n{SPLIT}")), &web(80), "c.l");
        assert!(http_routes(&t.policy).is_empty());
        assert!(t.ignored[0].contains("no matches"), "{:?}", t.ignored);

        // A bad regex or header name that reached the store anyway (the
        // feeds reject them) leaves the split out instead of failing.
        let mut objects = parse_documents(std::path::Path::new("t.yaml"), SPLIT)
            .unwrap()
            .objects;
        let mut group = HTTPRouteGroup::new(
            "canary-users",
            HTTPRouteGroupSpec {
                matches: vec![HttpMatch {
                    name: "bad".into(),
                    path_regex: Some("/api/(".into()),
                    ..Default::default()
                }],
            },
        );
        group.metadata.namespace = Some("shop".into());
        objects.push(Object::HttpRouteGroup(Arc::new(group.clone())));
        let t = translate(&Snapshot::from_objects(objects.clone()), &web(80), "c.l");
        assert!(http_routes(&t.policy).is_empty());
        assert!(
            t.ignored[0].contains("spec.matches[0].pathRegex: invalid regex"),
            "{:?}",
            t.ignored
        );
        group.spec.matches[0].path_regex = None;
        group.spec.matches[0].headers = Some(weft_smi_crds::specs::HttpHeaders(
            [("bad header".to_owned(), "x".to_owned())].into(),
        ));
        objects.push(Object::HttpRouteGroup(Arc::new(group)));
        let t = translate(&Snapshot::from_objects(objects), &web(80), "c.l");
        assert!(
            t.ignored[0].contains("not a valid header name"),
            "{:?}",
            t.ignored
        );
    }

    #[test]
    fn several_groups_merge_and_several_splits_are_routes_in_name_order() {
        let v1alpha3 = "apiVersion: specs.smi-spec.io/v1alpha3
kind: HTTPRouteGroup
metadata: {name: posts, namespace: shop}
spec:
  matches:
  - {name: post, methods: [POST, \"*\"], pathRegex: /posts}
---
apiVersion: split.smi-spec.io/v1alpha3
kind: TrafficSplit
metadata: {name: aa-first, namespace: shop}
spec:
  service: web.shop.svc.cluster.local
  matches:
  - {kind: HTTPRouteGroup, name: posts}
  - {kind: HTTPRouteGroup, name: canary-users}
  backends: [{service: web-v3, weight: 1}]
";
        let s = snap(&format!("{GROUP}---\n{SPLIT}---\n{v1alpha3}"));
        let t = translate(&s, &web(80), "cluster.local");
        let routes = http_routes(&t.policy);
        assert_eq!(routes.len(), 2);
        // `aa-first` sorts before `ab`; its rule has the `posts` match
        // (any method, since `*` is listed) and the three canary ones.
        let m = &routes[0].rules[0].matches;
        assert_eq!(m.len(), 4, "{m:?}");
        assert_eq!(m[0].method, None);
        assert_eq!(
            backends(&routes[0]),
            [("web-v3.shop.svc.cluster.local:80".to_owned(), 1000)]
        );
        assert_eq!(
            backends(&routes[1]),
            [
                ("web-v1.shop.svc.cluster.local:80".to_owned(), 0),
                ("web-v2.shop.svc.cluster.local:80".to_owned(), 1000)
            ]
        );
    }
}
