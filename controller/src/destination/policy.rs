//! `io.linkerd.proxy.outbound.OutboundPolicies`: the complete outbound
//! policy of a Service port, as Linkerd's policy controller shapes it.
//!
//! The target is a Service, by name (`svc.ns.svc.CLUSTER_DOMAIN:port`, or
//! the short forms `Get` accepts) or by its `clusterIP:port`. Anything
//! else has no outbound policy and is answered `NotFound`: a Service that
//! does not exist, a Pod IP (the client uses `GetProfile`'s `endpoint`), an
//! address outside the cluster (the client forwards to it as it is). Names
//! outside the cluster domain and bad ports are `InvalidArgument`, as for
//! `Get`.
//!
//! The policy (metadata `core/Service` with the port) is
//!
//! - `Opaque` with one route when the port is opaque (ServiceProfile
//!   `opaquePorts`, `config.linkerd.io/opaque-ports` on the Service, or on
//!   a ready endpoint's Pod for the endpoint port);
//! - else `Detect` (timeout [`DETECT_TIMEOUT`]) with that same opaque route
//!   and the same HTTP routes for HTTP/1 and HTTP/2, with failure accrual
//!   ([`failure_accrual`], Weft's proxy defaults). The HTTP routes, in
//!   order:
//!   1. one per TrafficSplit **with `matches`** (SMI v1alpha3/v1alpha4
//!      HTTPRouteGroup A/B routing), in name order, each with one rule:
//!      every match of every referenced HTTPRouteGroup (one
//!      `HttpRouteMatch` per listed method; regexes **anchored** as
//!      `^(?:RE)$` like ServiceProfile paths) and the split's backends
//!      (`RandomAvailable`, weights as `dst_overrides` has them,
//!      [`linkerd_weights`]);
//!   2. one per ServiceProfile route whose condition the API can express
//!      (method and path regex, `all`, `any`; not `not`), carrying the
//!      route's `timeout` as the rule's request timeout and, for
//!      `isRetryable` routes, a `retry` on its failure status ranges, to the
//!      default backends;
//!   3. a **catch-all** (path prefix `/`) to the default backends.
//!
//! The default backends are what `GetProfile` sends as `dst_overrides` (a
//! TrafficSplit without `matches`, else the profile's `dstOverrides`), as
//! `RandomAvailable` with those weights, else the Service itself
//! (`FirstAvailable`). Every backend is a P2C peak-EWMA balancer over
//! `Destination.Get` of its `svc.ns.svc.CLUSTER_DOMAIN:port` with a queue.
//! So Weft's proxy, which takes the backends of the first rule a request
//! matches, routes exactly as the profile alone would for requests no
//! split matches.
//!
//! A split whose references cannot be resolved (unknown HTTPRouteGroup, a
//! group without matches, an invalid regex or header name) is left out,
//! never widened to all traffic; a profile route that cannot be expressed
//! is left out too (its requests take the catch-all, without the route's
//! timeout or retries); a warning says why. `Watch` sends the current
//! policy at once and then each one that differs; it ends with `NotFound`
//! if the Service is deleted.

use super::authority::{self, Authority, Target};
use super::endpoints;
use super::profile::{self as dst_profile, fully_qualified_name, linkerd_weights, splits_of};
use super::{Follower, UpdateStream};
use crate::store::{ObjectKey, Snapshot, Store};
use linkerd2_proxy_api::destination::WeightedDst;
use linkerd2_proxy_api::http_route::{
    header_match, path_match, HeaderMatch, HttpRouteMatch, PathMatch, Timeouts,
};
use linkerd2_proxy_api::http_types::{http_method, HttpMethod};
use linkerd2_proxy_api::meta::{metadata, Metadata};
use linkerd2_proxy_api::outbound::backend::{balance_p2c, endpoint_discovery};
use linkerd2_proxy_api::outbound::http_route::{distribution, retry, Distribution, Retry, Rule};
use linkerd2_proxy_api::outbound::outbound_policies_server::OutboundPolicies;
use linkerd2_proxy_api::outbound::{
    backend, failure_accrual, http_route, opaque_route, proxy_protocol, traffic_spec, Backend,
    ExponentialBackoff, FailureAccrual, HttpRoute, OpaqueRoute, OutboundPolicy, ProxyProtocol,
    Queue, TrafficSpec,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use weft_policy::default_meta;
use weft_smi_crds::profile as sp;
use weft_smi_crds::profile::compile_anchored;
use weft_smi_crds::specs::HttpMatch;
use weft_smi_crds::Split;

/// Protocol detection timeout sent with every `Detect` policy (Linkerd's
/// default; Weft's proxy uses its own setting).
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
/// Failure accrual, as Weft's proxy does it by default (its `Accrual`):
/// this many consecutive failures eject an endpoint ...
pub const ACCRUAL_MAX_FAILURES: u32 = 7;
/// ... for a penalty starting here ...
pub const ACCRUAL_MIN_BACKOFF: Duration = Duration::from_secs(1);
/// ... doubling up to this ...
pub const ACCRUAL_MAX_BACKOFF: Duration = Duration::from_secs(60);
/// ... each stretched by up to half again.
pub const ACCRUAL_JITTER: f32 = 0.5;
/// Retries per request of a retryable ServiceProfile route: Weft's proxy
/// makes at most 10 attempts (the retry budget limits them further; the
/// API has no budget).
pub const RETRY_MAX_RETRIES: u32 = 9;
/// Largest request body a retry replays (Weft's proxy: 64 KiB).
pub const RETRY_MAX_REQUEST_BYTES: u32 = 64 * 1024;
/// Failure statuses retried when a retryable route has no response
/// classes (the default classification: 5xx is a failure).
const DEFAULT_FAILURE: (u32, u32) = (500, 599);
/// Cap on the `HttpRouteMatch`es one profile condition may expand to.
const MAX_MATCHES: usize = 64;

/// The policy for one Service port, and what could not be applied
/// (logged when the policy changes, not on every snapshot).
#[derive(Clone, Debug, PartialEq)]
pub struct Translation {
    /// What the proxy receives.
    pub policy: OutboundPolicy,
    /// Human-readable notes about splits and routes left out and why.
    pub ignored: Vec<String>,
}

/// Why one match-gated split cannot be turned into a route. The split is
/// left out (its requests take the catch-all), never applied to all
/// traffic.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
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

/// Why a ServiceProfile route is not sent as an HTTP route.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProfileRouteError {
    /// The condition uses `not`, two different path regexes that must
    /// both hold, or expands to too many matches.
    #[error("its condition cannot be expressed as HTTP route matches (`not`, two paths that must both match, or more than {MAX_MATCHES} alternatives)")]
    Condition,
    /// A failure response class other than status ranges (`all`, `not`).
    #[error("its failure classes cannot be expressed as retry status ranges")]
    RetryConditions,
}

/// The backends requests go to when no split rule takes them.
enum Leaves {
    /// Weighted (a TrafficSplit or the profile's `dstOverrides`).
    Weighted(Vec<(Backend, u32)>),
    /// The Service itself.
    Service(Box<Backend>),
}

/// The outbound policy for `target` from `snap`; `None` when the Service
/// does not exist (no policy: `NotFound`).
pub fn translate_service(
    snap: &Snapshot,
    target: &Target,
    cluster_domain: &str,
) -> Option<Translation> {
    snap.services
        .contains_key(&ObjectKey::new(&target.namespace, &target.service))
        .then(|| translate(snap, target, cluster_domain))
}

/// Builds the outbound policy for `target` from `snap`, whether or not the
/// Service exists ([`translate_service`] checks).
pub fn translate(snap: &Snapshot, target: &Target, cluster_domain: &str) -> Translation {
    let fqn = fully_qualified_name(target, cluster_domain);
    let mut ignored = Vec::new();
    let mut routes = Vec::new();
    for (key, split) in splits_of(snap, target, &fqn).filter(|(_, s)| !s.matches.is_empty()) {
        match route(snap, key, split, target, cluster_domain) {
            Ok(r) => routes.push(r),
            Err(error) => ignored.push(format!(
                "TrafficSplit {key}: {error}; the split is not applied (its requests take the catch-all route)"
            )),
        }
    }
    let profile = dst_profile::translate(snap, target, cluster_domain).profile;
    let leaves = leaves(&profile.dst_overrides, target, cluster_domain);
    let profile_key = ObjectKey::new(&target.namespace, &fqn);
    if let Some(sp) = snap.service_profiles.get(&profile_key) {
        for r in &sp.spec.routes {
            match profile_route(&profile_key, r, &leaves) {
                Ok(Some(route)) => routes.push(route),
                Ok(None) => {}
                Err(error) => ignored.push(format!(
                    "ServiceProfile {profile_key} route {:?}: {error}; its requests take the catch-all route without the route's timeout and retries",
                    r.name
                )),
            }
        }
    }
    routes.push(HttpRoute {
        metadata: Some(default_meta("http")),
        hosts: Vec::new(),
        rules: vec![Rule {
            matches: vec![HttpRouteMatch {
                path: Some(PathMatch {
                    kind: Some(path_match::Kind::Prefix("/".into())),
                }),
                ..Default::default()
            }],
            backends: Some(http_distribution(&leaves)),
            ..Default::default()
        }],
    });
    let opaque_route = OpaqueRoute {
        metadata: Some(default_meta("opaq")),
        rules: vec![opaque_route::Rule {
            backends: Some(opaque_distribution(&leaves)),
            filters: Vec::new(),
        }],
    };
    // The profile's `opaque_protocol` covers every source (ServiceProfile
    // `opaquePorts`, the Service's and its Pods' annotations).
    let opaque = profile.opaque_protocol;
    let kind = if opaque {
        proxy_protocol::Kind::Opaque(proxy_protocol::Opaque {
            routes: vec![opaque_route],
        })
    } else {
        proxy_protocol::Kind::Detect(proxy_protocol::Detect {
            timeout: Some(proto_duration(DETECT_TIMEOUT)),
            opaque: Some(proxy_protocol::Opaque {
                routes: vec![opaque_route],
            }),
            http1: Some(proxy_protocol::Http1 {
                routes: routes.clone(),
                failure_accrual: Some(failure_accrual()),
            }),
            http2: Some(proxy_protocol::Http2 {
                routes,
                failure_accrual: Some(failure_accrual()),
            }),
        })
    };
    let metadata = resource(
        "core",
        "Service",
        &target.service,
        &target.namespace,
        target.port,
    );
    Translation {
        policy: OutboundPolicy {
            metadata: Some(metadata),
            protocol: Some(ProxyProtocol { kind: Some(kind) }),
        },
        ignored,
    }
}

/// The Service `authority` names now: itself for a name, the Service
/// whose ClusterIP it is for an `IP:port`; `None` for anything else (a
/// Pod IP, an address outside the cluster).
pub fn service_of(snap: &Snapshot, authority: &Authority) -> Option<Target> {
    match authority {
        Authority::Service(target) => Some(target.clone()),
        Authority::Addr(addr) => endpoints::service_at(snap, *addr),
    }
}

/// Consecutive-failure accrual with Weft's proxy defaults.
pub fn failure_accrual() -> FailureAccrual {
    FailureAccrual {
        ejection: None,
        kind: Some(failure_accrual::Kind::ConsecutiveFailures(
            failure_accrual::ConsecutiveFailures {
                max_failures: ACCRUAL_MAX_FAILURES,
                backoff: Some(ExponentialBackoff {
                    min_backoff: Some(proto_duration(ACCRUAL_MIN_BACKOFF)),
                    max_backoff: Some(proto_duration(ACCRUAL_MAX_BACKOFF)),
                    jitter_ratio: ACCRUAL_JITTER,
                    respect_retry_after_hint: false,
                }),
            },
        )),
    }
}

/// The default backends: the profile's `dst_overrides`, else the Service.
fn leaves(overrides: &[WeightedDst], target: &Target, cluster_domain: &str) -> Leaves {
    if overrides.is_empty() || overrides.iter().all(|d| d.weight == 0) {
        let path = format!(
            "{}:{}",
            fully_qualified_name(target, cluster_domain),
            target.port
        );
        return Leaves::Service(Box::new(balancer(
            resource(
                "core",
                "Service",
                &target.service,
                &target.namespace,
                target.port,
            ),
            path,
        )));
    }
    Leaves::Weighted(
        overrides
            .iter()
            .map(|d| {
                (
                    override_backend(&d.authority, target, cluster_domain),
                    d.weight,
                )
            })
            .collect(),
    )
}

/// A `dst_overrides` authority as a backend: a Service of this cluster
/// (the port as written, else the one asked about, as Weft's proxy reads
/// it) by its FQDN; anything else as written, named by a default
/// metadata.
fn override_backend(authority: &str, target: &Target, cluster_domain: &str) -> Backend {
    let with_port = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:{}", target.port)
    };
    match authority::parse(&with_port, cluster_domain) {
        Ok(t) => balancer(
            resource("core", "Service", &t.service, &t.namespace, t.port),
            format!("{}:{}", fully_qualified_name(&t, cluster_domain), t.port),
        ),
        Err(_) => balancer(default_meta(&with_port), with_port),
    }
}

fn http_distribution(leaves: &Leaves) -> Distribution {
    let kind = match leaves {
        Leaves::Service(b) => distribution::Kind::FirstAvailable(distribution::FirstAvailable {
            backends: vec![http_route::RouteBackend {
                backend: Some(b.as_ref().clone()),
                ..Default::default()
            }],
        }),
        Leaves::Weighted(v) => distribution::Kind::RandomAvailable(distribution::RandomAvailable {
            backends: v
                .iter()
                .map(|(b, weight)| http_route::WeightedRouteBackend {
                    backend: Some(http_route::RouteBackend {
                        backend: Some(b.clone()),
                        ..Default::default()
                    }),
                    weight: *weight,
                })
                .collect(),
        }),
    };
    Distribution { kind: Some(kind) }
}

fn opaque_distribution(leaves: &Leaves) -> opaque_route::Distribution {
    use opaque_route::distribution as d;
    let kind = match leaves {
        Leaves::Service(b) => d::Kind::FirstAvailable(d::FirstAvailable {
            backends: vec![opaque_route::RouteBackend {
                backend: Some(b.as_ref().clone()),
                filters: Vec::new(),
            }],
        }),
        Leaves::Weighted(v) => d::Kind::RandomAvailable(d::RandomAvailable {
            backends: v
                .iter()
                .map(|(b, weight)| opaque_route::WeightedRouteBackend {
                    backend: Some(opaque_route::RouteBackend {
                        backend: Some(b.clone()),
                        filters: Vec::new(),
                    }),
                    weight: *weight,
                })
                .collect(),
        }),
    };
    opaque_route::Distribution { kind: Some(kind) }
}

/// One ServiceProfile route as an HTTP route to the default backends;
/// `Ok(None)` when its condition matches no request at all.
fn profile_route(
    profile: &ObjectKey,
    r: &sp::RouteSpec,
    leaves: &Leaves,
) -> Result<Option<HttpRoute>, ProfileRouteError> {
    let matches = condition(&r.condition).ok_or(ProfileRouteError::Condition)?;
    if matches.is_empty() {
        return Ok(None);
    }
    let retry = if r.is_retryable {
        Some(Retry {
            max_retries: RETRY_MAX_RETRIES,
            max_request_bytes: RETRY_MAX_REQUEST_BYTES,
            conditions: Some(retry::Conditions {
                status_ranges: retry_ranges(&r.response_classes)
                    .ok_or(ProfileRouteError::RetryConditions)?,
            }),
            timeout: None,
            backoff: None,
        })
    } else {
        None
    };
    let timeouts = r
        .timeout_duration()
        .and_then(|d| prost_types::Duration::try_from(d).ok())
        .map(|d| Timeouts {
            request: Some(d),
            ..Default::default()
        });
    let mut metadata = resource(
        "linkerd.io",
        "ServiceProfile",
        &profile.name,
        &profile.namespace,
        0,
    );
    if let Some(metadata::Kind::Resource(res)) = metadata.kind.as_mut() {
        res.section = r.name.clone();
    }
    Ok(Some(HttpRoute {
        metadata: Some(metadata),
        hosts: Vec::new(),
        rules: vec![Rule {
            matches,
            backends: Some(http_distribution(leaves)),
            timeouts,
            retry,
            ..Default::default()
        }],
    }))
}

/// A profile condition as alternatives (`HttpRouteMatch`es, any of which
/// matches), each a method and a path regex that must both hold; `None`
/// when the API cannot say it. Empty: no request can match.
fn condition(m: &sp::RequestMatch) -> Option<Vec<HttpRouteMatch>> {
    if m.not.is_some() {
        return None;
    }
    let mut acc = vec![HttpRouteMatch::default()];
    if let Some(name) = &m.method {
        let one = HttpRouteMatch {
            method: Some(method(name)),
            ..Default::default()
        };
        acc = and(&acc, &[one])?;
    }
    if let Some(re) = &m.path_regex {
        let one = HttpRouteMatch {
            path: Some(PathMatch {
                kind: Some(path_match::Kind::Regex(format!("^(?:{re})$"))),
            }),
            ..Default::default()
        };
        acc = and(&acc, &[one])?;
    }
    for sub in m.all.iter().flatten() {
        acc = and(&acc, &condition(sub)?)?;
    }
    if let Some(any) = &m.any {
        let mut union = Vec::new();
        for sub in any {
            union.extend(condition(sub)?);
        }
        acc = and(&acc, &union)?;
    }
    (acc.len() <= MAX_MATCHES).then_some(acc)
}

/// Every alternative of `a` with every one of `b`, both holding; `None`
/// when two different paths would have to match or there are too many.
fn and(a: &[HttpRouteMatch], b: &[HttpRouteMatch]) -> Option<Vec<HttpRouteMatch>> {
    let mut out = Vec::new();
    for x in a {
        for y in b {
            let method = match (&x.method, &y.method) {
                (Some(p), Some(q)) if p != q => continue,
                (Some(p), _) | (None, Some(p)) => Some(p.clone()),
                (None, None) => None,
            };
            let path = match (&x.path, &y.path) {
                (Some(p), Some(q)) if p != q => return None,
                (Some(p), _) | (None, Some(p)) => Some(p.clone()),
                (None, None) => None,
            };
            out.push(HttpRouteMatch {
                method,
                path,
                ..Default::default()
            });
            if out.len() > MAX_MATCHES {
                return None;
            }
        }
    }
    Some(out)
}

/// The statuses a retryable route retries: the status ranges of its
/// failure classes (5xx without classes), bounds within 100–599; `None`
/// when a failure class is not status ranges.
fn retry_ranges(classes: &[sp::ResponseClass]) -> Option<Vec<retry::conditions::StatusRange>> {
    let mut ranges = Vec::new();
    for class in classes.iter().filter(|c| c.is_failure) {
        ranges.extend(status_ranges(&class.condition)?);
    }
    if ranges.is_empty() && classes.iter().all(|c| !c.is_failure) {
        ranges.push(DEFAULT_FAILURE);
    }
    Some(
        ranges
            .into_iter()
            .map(|(start, end)| retry::conditions::StatusRange { start, end })
            .collect(),
    )
}

fn status_ranges(m: &sp::ResponseMatch) -> Option<Vec<(u32, u32)>> {
    if m.all.is_some() || m.not.is_some() || (m.status.is_some() && m.any.is_some()) {
        return None;
    }
    let mut out = Vec::new();
    if let Some(s) = &m.status {
        let start = s.min.unwrap_or(100).clamp(100, 599);
        let end = s.max.unwrap_or(599).clamp(100, 599);
        if start <= end {
            out.push((start, end));
        }
    }
    for sub in m.any.iter().flatten() {
        out.extend(status_ranges(sub)?);
    }
    Some(out)
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
                backend: Some(service_backend(&b.service, target, cluster_domain)),
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
/// without), each with the anchored path and header regexes. Shared with
/// the inbound policy (`inbound`), so both read an HTTPRouteGroup alike.
pub(crate) fn route_matches(
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

/// A backend Service of a split (SMI backends are Services in the split's
/// namespace exposing the root's ports), on the port the client asked
/// about.
fn service_backend(service: &str, target: &Target, cluster_domain: &str) -> Backend {
    let path = format!(
        "{service}.{}.svc.{}:{}",
        target.namespace,
        cluster_domain.trim_end_matches('.'),
        target.port
    );
    balancer(
        resource("core", "Service", service, &target.namespace, target.port),
        path,
    )
}

/// P2C over peak-EWMA, endpoints from `Destination.Get` of `path`, with
/// Linkerd's queue settings.
fn balancer(metadata: Metadata, path: String) -> Backend {
    Backend {
        metadata: Some(metadata),
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

/// Metadata of a resource's port, in this module's argument order.
fn resource(group: &str, kind: &str, name: &str, namespace: &str, port: u16) -> Metadata {
    weft_policy::resource_port_meta(group, kind, namespace, name, port)
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
                if addr.port() == 0 {
                    return Err(Status::invalid_argument("target port cannot be zero"));
                }
                tracing::debug!(rpc, %addr, "outbound policy for an address");
                return Ok(Authority::Addr(addr));
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

    /// The Service the request names in the current store, or `NotFound`.
    fn service(&self, authority: &Authority, rpc: &str) -> Result<Target, Status> {
        let snap = self.store.snapshot();
        let found = service_of(&snap, authority).filter(|t| {
            snap.services
                .contains_key(&ObjectKey::new(&t.namespace, &t.service))
        });
        found.ok_or_else(|| {
            tracing::debug!(rpc, target_service = %authority, "no outbound policy: not a known Service");
            not_found(authority)
        })
    }
}

/// The answer for what has no outbound policy.
fn not_found(authority: &Authority) -> Status {
    match authority {
        Authority::Service(t) => Status::not_found(format!("no such Service {t}")),
        Authority::Addr(addr) => Status::not_found(format!(
            "{addr} is not a Service's ClusterIP (Pods and addresses outside the cluster have no outbound policy)"
        )),
    }
}

/// Per-stream state of a `Watch`: it follows the Service by name (a
/// ClusterIP is resolved once, when the stream starts).
struct WatchState {
    target: Target,
    cluster_domain: Arc<str>,
    follower: Follower,
    sent: Option<Translation>,
    done: bool,
}

// === impl WatchState ===

impl WatchState {
    /// The next policy to send: the current one at first, then each one
    /// that differs from what was sent; `NotFound` once the Service is
    /// gone, after which (or at shutdown) the stream ends (`None`).
    async fn next(&mut self) -> Option<Result<OutboundPolicy, Status>> {
        if self.done {
            return None;
        }
        let authority = Authority::Service(self.target.clone());
        loop {
            let snap = self.follower.next().await?;
            let Some(next) = translate_service(&snap, &self.target, &self.cluster_domain) else {
                tracing::debug!(target_service = %self.target, "outbound policy: the Service is gone");
                self.done = true;
                return Some(Err(not_found(&authority)));
            };
            if self.sent.as_ref() == Some(&next) {
                continue;
            }
            let already = self.sent.as_ref().map_or(&[][..], |s| &s.ignored[..]);
            warn_ignored(&authority, &next.ignored, already);
            tracing::debug!(
                target_service = %self.target,
                version = snap.version,
                routes = routes(&next.policy),
                "outbound policy update"
            );
            let out = next.policy.clone();
            self.sent = Some(next);
            return Some(Ok(out));
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
        let authority = self.target(request.get_ref(), "Get")?;
        let target = self.service(&authority, "Get")?;
        let t = translate_service(&self.store.snapshot(), &target, &self.cluster_domain)
            .ok_or_else(|| not_found(&authority))?;
        warn_ignored(&authority, &t.ignored, &[]);
        Ok(Response::new(t.policy))
    }

    async fn watch(
        &self,
        request: Request<TrafficSpec>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let authority = self.target(request.get_ref(), "Watch")?;
        let target = self.service(&authority, "Watch")?;
        let state = WatchState {
            target,
            cluster_domain: self.cluster_domain.clone(),
            follower: Follower::new(&self.store, &self.shutdown),
            sent: None,
            done: false,
        };
        let stream =
            futures::stream::unfold(state, |mut s| async move { s.next().await.map(|p| (p, s)) });
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

    use crate::destination::testing::{self, web};

    /// The HTTP/1 routes of a policy (HTTP/2 must carry the same) before
    /// the catch-all, which must be last.
    fn http_routes(p: &OutboundPolicy) -> Vec<HttpRoute> {
        let Some(proxy_protocol::Kind::Detect(d)) = p.protocol.as_ref().unwrap().kind.as_ref()
        else {
            panic!("{p:?}")
        };
        let mut h1 = d.http1.as_ref().unwrap().routes.clone();
        assert_eq!(h1, d.http2.as_ref().unwrap().routes);
        let last = h1.pop().unwrap();
        assert_eq!(last.metadata, Some(default_meta("http")), "{last:?}");
        h1
    }

    /// The `web` Service, so that it exists.
    const WEB: &str = "apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {ports: [{name: http, port: 80}]}
---
";

    /// The policy for `target`, which must exist.
    fn translate(s: &Snapshot, target: &Target, cd: &str) -> Translation {
        translate_service(s, target, cd).unwrap()
    }

    fn snap(yaml: &str) -> Snapshot {
        testing::snapshot(&format!("{WEB}{yaml}"))
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
        assert!(translate_service(&s, &other, "cluster.local").is_none());
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
        objects.extend(
            testing::snapshot(WEB)
                .services
                .values()
                .cloned()
                .map(Object::Service),
        );
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

    /// `(Destination.Get path, weight)` of the catch-all's backends, and
    /// whether they are `FirstAvailable` (the Service itself).
    fn catch_all(p: &OutboundPolicy) -> (Vec<(String, u32)>, bool) {
        let Some(proxy_protocol::Kind::Detect(d)) = p.protocol.as_ref().unwrap().kind.as_ref()
        else {
            panic!("{p:?}")
        };
        let last = d.http1.as_ref().unwrap().routes.last().unwrap().clone();
        assert_eq!(
            last.rules[0].matches,
            [HttpRouteMatch {
                path: Some(PathMatch {
                    kind: Some(path_match::Kind::Prefix("/".into()))
                }),
                ..Default::default()
            }]
        );
        match last.rules[0]
            .backends
            .as_ref()
            .unwrap()
            .kind
            .as_ref()
            .unwrap()
        {
            distribution::Kind::FirstAvailable(fa) => {
                let b = fa.backends[0].backend.as_ref().unwrap();
                let Some(backend::Kind::Balancer(p2c)) = &b.kind else {
                    panic!("{b:?}")
                };
                let Some(endpoint_discovery::Kind::Dst(dst)) =
                    &p2c.discovery.as_ref().unwrap().kind
                else {
                    panic!("{p2c:?}")
                };
                (vec![(dst.path.clone(), 1)], true)
            }
            distribution::Kind::RandomAvailable(_) => (backends(&last), false),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn catch_all_goes_to_the_service_or_its_matchless_split() {
        let t = translate(&snap(""), &web(80), "cluster.local");
        assert_eq!(
            catch_all(&t.policy),
            (vec![("web.shop.svc.cluster.local:80".to_owned(), 1)], true)
        );
        let Some(proxy_protocol::Kind::Detect(d)) = t.policy.protocol.unwrap().kind else {
            panic!()
        };
        assert_eq!(d.timeout, Some(proto_duration(DETECT_TIMEOUT)));
        assert_eq!(d.opaque.unwrap().routes.len(), 1);
        assert_eq!(d.http1.unwrap().failure_accrual, Some(failure_accrual()));

        let rollout = "apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {name: rollout, namespace: shop}
spec:
  service: web
  backends: [{service: web-v1, weight: 90}, {service: web-v2, weight: 10}]
";
        let t = translate(
            &snap(&format!("{rollout}---\n{GROUP}---\n{SPLIT}")),
            &web(80),
            "cluster.local",
        );
        assert_eq!(http_routes(&t.policy).len(), 1);
        assert_eq!(
            catch_all(&t.policy),
            (
                vec![
                    ("web-v1.shop.svc.cluster.local:80".to_owned(), 9000),
                    ("web-v2.shop.svc.cluster.local:80".to_owned(), 1000)
                ],
                false
            )
        );
    }

    #[test]
    fn opaque_ports_from_profile_service_or_pods() {
        let profile = "apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: {name: web.shop.svc.cluster.local, namespace: shop}
spec: {opaquePorts: ['3306']}
";
        let opaque = |s: &Snapshot, port| {
            matches!(
                translate(s, &web(port), "cluster.local")
                    .policy
                    .protocol
                    .unwrap()
                    .kind,
                Some(proxy_protocol::Kind::Opaque(_))
            )
        };
        let s = snap(profile);
        assert!(opaque(&s, 3306) && !opaque(&s, 80));
        let annotated = "apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  annotations: {config.linkerd.io/opaque-ports: '4000-4100'}
spec: {ports: [{name: tcp, port: 5000, targetPort: 7000}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: web, namespace: shop}
subsets:
- addresses: [{ip: 10.1.0.1, targetRef: {kind: Pod, name: web-0, namespace: shop}}]
  ports: [{name: tcp, port: 7000}]
---
apiVersion: v1
kind: Pod
metadata:
  name: web-0
  namespace: shop
  annotations: {config.linkerd.io/opaque-ports: '7000'}
spec: {containers: [{name: app, image: web}]}
";
        let s = testing::snapshot(annotated);
        assert!(opaque(&s, 4050) && !opaque(&s, 80));
        // Port 5000 maps to the Pod's 7000, which the Pod marks opaque.
        assert!(opaque(&s, 5000));
        let Some(proxy_protocol::Kind::Opaque(o)) = translate(&s, &web(5000), "c.l")
            .policy
            .protocol
            .unwrap()
            .kind
        else {
            panic!()
        };
        assert_eq!(o.routes.len(), 1);
        assert_eq!(o.routes[0].metadata, Some(default_meta("opaq")));
    }

    #[test]
    fn profile_routes_carry_timeouts_and_retries() {
        let profile = "apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: {name: web.shop.svc.cluster.local, namespace: shop}
spec:
  routes:
  - name: books
    condition:
      method: GET
      any: [{pathRegex: /books}, {pathRegex: '/books/[^/]+'}]
    timeout: 300ms
    isRetryable: true
    responseClasses:
    - condition: {any: [{status: {min: 500, max: 503}}, {status: {min: 429, max: 429}}]}
      isFailure: true
  - name: plain
    condition: {pathRegex: /plain}
    isRetryable: true
  - name: not-get
    condition: {not: {method: GET}}
    timeout: 1s
";
        let t = translate(&snap(profile), &web(80), "cluster.local");
        let routes = http_routes(&t.policy);
        assert_eq!(routes.len(), 2, "{routes:?}");
        let books = &routes[0].rules[0];
        assert_eq!(books.matches.len(), 2);
        assert!(books
            .matches
            .iter()
            .all(|m| m.method == Some(HttpMethod::from(http::Method::GET))));
        assert_eq!(
            books.matches[1].path,
            Some(PathMatch {
                kind: Some(path_match::Kind::Regex("^(?:/books/[^/]+)$".into()))
            })
        );
        assert_eq!(
            books.timeouts.as_ref().unwrap().request,
            Some(proto_duration(Duration::from_millis(300)))
        );
        let ranges: Vec<(u32, u32)> = books
            .retry
            .as_ref()
            .unwrap()
            .conditions
            .as_ref()
            .unwrap()
            .status_ranges
            .iter()
            .map(|r| (r.start, r.end))
            .collect();
        assert_eq!(ranges, [(500, 503), (429, 429)]);
        let plain = &routes[1].rules[0];
        assert!(plain.timeouts.is_none());
        assert_eq!(
            plain
                .retry
                .as_ref()
                .unwrap()
                .conditions
                .as_ref()
                .unwrap()
                .status_ranges[0],
            retry::conditions::StatusRange {
                start: 500,
                end: 599
            }
        );
        let Some(metadata::Kind::Resource(r)) = routes[1].metadata.as_ref().unwrap().kind.as_ref()
        else {
            panic!()
        };
        assert_eq!(
            (r.kind.as_str(), r.name.as_str(), r.section.as_str()),
            ("ServiceProfile", "web.shop.svc.cluster.local", "plain")
        );
        assert_eq!(t.ignored.len(), 1, "{:?}", t.ignored);
        assert!(t.ignored[0].contains("\"not-get\""), "{:?}", t.ignored);
    }

    #[test]
    fn unknown_services_pods_and_outside_addresses_have_no_policy() {
        let s = snap(
            "apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec: {clusterIP: 10.96.0.20, ports: [{port: 5432}]}
",
        );
        let addr = |a: &str| Authority::Addr(a.parse().unwrap());
        assert_eq!(
            service_of(&s, &addr("10.96.0.20:5432")),
            Some(Target {
                namespace: "shop".into(),
                service: "db".into(),
                port: 5432
            })
        );
        assert_eq!(service_of(&s, &addr("10.1.2.3:8080")), None);
        let nope = Target {
            namespace: "shop".into(),
            service: "nope".into(),
            port: 80,
        };
        assert!(translate_service(&s, &nope, "cluster.local").is_none());
    }
}
