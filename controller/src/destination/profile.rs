//! Translation from stored ServiceProfiles and TrafficSplits to the
//! destination API's `DestinationProfile`. Pure functions over a
//! [`Snapshot`], shared by every feed, like the endpoint translation.
//!
//! Conventions (Linkerd's, so manifests written for Linkerd work):
//! - the profile of Service `svc` in `ns` is the ServiceProfile named
//!   `svc.ns.svc.CLUSTER_DOMAIN` in `ns`;
//! - `dst_overrides` come from a TrafficSplit in `ns` whose `spec.service`
//!   is `svc` (or its FQDN) and that has no `matches`, else from the
//!   profile's own `dstOverrides` (splits with `matches` apply to some
//!   requests only: they are served as outbound policy, see
//!   [`super::policy`]);
//! - without a ServiceProfile the profile has no routes, and the retry
//!   budget is Linkerd's default (20 %, 10/s, 10 s) either way.
//!
//! Everything stored has been validated by the feed, so translation cannot
//! fail; the few conversions that still could (a duration too large for
//! protobuf) drop that one field with a warning rather than the profile.

use super::authority::Target;
use crate::store::{ObjectKey, Snapshot};
use linkerd2_proxy_api::destination::{
    request_match, response_match, DestinationProfile, HttpStatusRange, PathMatch, RequestMatch,
    ResponseClass, ResponseMatch, RetryBudget, Route, WeightedDst,
};
use linkerd2_proxy_api::http_types::{http_method, HttpMethod};
use std::collections::HashMap;
use std::time::Duration;
use weft_smi_crds::profile as sp;
use weft_smi_crds::profile::parse_port_range;
use weft_smi_crds::Split;

/// How many `dst_overrides` weight units one unit of a split's (reduced)
/// proportion is worth. Linkerd expresses weights in milli-units (its
/// controller sends a quantity's `MilliValue()`, so `1` = 1000); we do the
/// same *after* reducing the proportions to lowest terms, so `90/10`
/// (v1alpha2), `9/1` and `900m/100m` (v1alpha1) all become `9000/1000`:
/// equal splits give byte-identical profiles whatever their version.
pub const WEIGHT_UNIT: u64 = 1000;

/// The Service annotation listing opaque ports (`"3306,4000-4100"`), as
/// Linkerd reads it; the ServiceProfile's `opaquePorts` is the other source.
pub const OPAQUE_PORTS_ANNOTATION: &str = "config.linkerd.io/opaque-ports";

/// The profile for one Service port, and what was present but could not be
/// expressed (logged by the caller when the profile changes, not on every
/// snapshot).
#[derive(Clone, Debug, PartialEq)]
pub struct Translation {
    /// What the proxy receives.
    pub profile: DestinationProfile,
    /// Human-readable notes about objects that were ignored and why.
    pub ignored: Vec<String>,
}

/// `svc.ns.svc.CLUSTER_DOMAIN`: the Service's DNS name, which is also the
/// name Linkerd gives its ServiceProfile.
pub fn fully_qualified_name(target: &Target, cluster_domain: &str) -> String {
    format!(
        "{}.{}.svc.{}",
        target.service,
        target.namespace,
        cluster_domain.trim_end_matches('.')
    )
}

/// Linkerd's default retry budget, sent when the profile sets none (and
/// when there is no profile), as Linkerd's controller does.
fn default_budget() -> RetryBudget {
    budget(&sp::RetryBudget::default())
}

/// Builds the profile for `target` from `snap`.
pub fn translate(snap: &Snapshot, target: &Target, cluster_domain: &str) -> Translation {
    let fqn = fully_qualified_name(target, cluster_domain);
    let mut ignored = Vec::new();
    let mut profile = DestinationProfile {
        fully_qualified_name: fqn.clone(),
        retry_budget: Some(default_budget()),
        ..Default::default()
    };
    let service_key = ObjectKey::new(&target.namespace, &target.service);
    if let Some(svc) = snap.services.get(&service_key) {
        let annotated = svc
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(OPAQUE_PORTS_ANNOTATION));
        if let Some(list) = annotated {
            profile.opaque_protocol |= list
                .split(',')
                .filter(|p| !p.trim().is_empty())
                .filter_map(|p| parse_port_range(p.trim()).ok())
                .any(|(lo, hi)| (lo..=hi).contains(&target.port));
        }
    }
    let profile_key = ObjectKey::new(&target.namespace, &fqn);
    if let Some(sp) = snap.service_profiles.get(&profile_key) {
        let spec = &sp.spec;
        profile.routes = spec.routes.iter().map(route).collect();
        if let Some(b) = &spec.retry_budget {
            profile.retry_budget = Some(budget(b));
        }
        profile.opaque_protocol |= spec
            .opaque_ports
            .iter()
            .filter_map(|p| parse_port_range(p).ok())
            .any(|(lo, hi)| (lo..=hi).contains(&target.port));
        let milli: Vec<u64> = spec
            .dst_overrides
            .iter()
            .map(|d| d.weight.milli().map_or(0, i64::unsigned_abs))
            .collect();
        profile.dst_overrides = spec
            .dst_overrides
            .iter()
            .zip(linkerd_weights(&milli))
            .map(|(d, weight)| WeightedDst {
                authority: d.authority.clone(),
                weight,
                backend_ref: None,
            })
            .collect();
    }
    // A Pod marking the target port opaque makes the Service port opaque
    // (as the outbound policy says, so both APIs agree).
    profile.opaque_protocol |= super::endpoints::endpoints_opaque(snap, target);
    if let Some(split) = traffic_split(snap, target, &fqn, &mut ignored) {
        if !profile.dst_overrides.is_empty() {
            ignored.push(format!(
                "ServiceProfile {profile_key} dstOverrides (TrafficSplit {}/{} takes precedence)",
                target.namespace, split.name
            ));
        }
        let parts: Vec<u64> = split.backends.iter().map(|b| u64::from(b.weight)).collect();
        profile.dst_overrides = split
            .backends
            .iter()
            .zip(linkerd_weights(&parts))
            .map(|(b, weight)| WeightedDst {
                authority: format!(
                    "{}.{}.svc.{}:{}",
                    b.service,
                    target.namespace,
                    cluster_domain.trim_end_matches('.'),
                    target.port
                ),
                weight,
                backend_ref: None,
            })
            .collect();
    }
    Translation { profile, ignored }
}

/// The TrafficSplits in `target`'s namespace whose `spec.service` names it
/// (short name or FQDN), in name order. Shared with the outbound policy
/// translation ([`super::policy`]), so both agree on which splits are the
/// Service's.
pub(super) fn splits_of<'s: 'q, 'q>(
    snap: &'s Snapshot,
    target: &'q Target,
    fqn: &'q str,
) -> impl Iterator<Item = (&'s ObjectKey, &'s Split)> + 'q {
    snap.traffic_splits
        .range(ObjectKey::new(&target.namespace, "")..)
        .take_while(|(k, _)| k.namespace == target.namespace)
        .filter(move |(_, split)| names_service(&split.service, target, fqn))
        .map(|(k, split)| (k, split.as_ref()))
}

/// Whether a split's `spec.service` (`name`) names `target`'s Service:
/// its short name or its FQDN `fqn`, one trailing dot ignored. The one
/// rule for "this split is that Service's", shared by [`splits_of`] and
/// the feed's reference checks (`feed::events`), so a split reported as
/// self-referencing or as naming no Service is exactly one the
/// translation would treat that way.
pub(crate) fn names_service(name: &str, target: &Target, fqn: &str) -> bool {
    let name = name.trim_end_matches('.');
    name == target.service || name == fqn
}

/// The TrafficSplit that applies to every request for `target`: one of
/// [`splits_of`] without `matches`. A split gated by `matches` (v1alpha3/4
/// HTTPRouteGroup A/B routing) applies to some requests only, which
/// `dst_overrides` cannot say: it is served by the `OutboundPolicies` API
/// instead ([`super::policy`]), and requests it does not match follow this
/// split (or the Service itself). With several candidates the first by
/// name wins.
fn traffic_split<'a>(
    snap: &'a Snapshot,
    target: &Target,
    fqn: &str,
    ignored: &mut Vec<String>,
) -> Option<&'a Split> {
    let mut chosen: Option<&Split> = None;
    for (key, split) in splits_of(snap, target, fqn).filter(|(_, s)| s.matches.is_empty()) {
        match chosen {
            None => chosen = Some(split),
            Some(first) => ignored.push(format!(
                "TrafficSplit {key}: another split for the same service ({}/{}) is applied",
                target.namespace, first.name
            )),
        }
    }
    chosen
}

/// Proportions → Linkerd weight units: reduced to lowest terms, then times
/// [`WEIGHT_UNIT`]. If that would not fit in a `u32` total (proxies add
/// weights up), the reduced values are used, or as a last resort values
/// scaled down proportionally.
pub fn linkerd_weights(parts: &[u64]) -> Vec<u32> {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let g = parts.iter().fold(0, |acc, w| gcd(acc, *w)).max(1);
    let reduced: Vec<u64> = parts.iter().map(|w| w / g).collect();
    let total: u64 = reduced.iter().fold(0, |a, w| a.saturating_add(*w));
    let max = u64::from(u32::MAX);
    let factor = if total.saturating_mul(WEIGHT_UNIT) <= max {
        WEIGHT_UNIT
    } else {
        1
    };
    reduced
        .iter()
        .map(|w| {
            if total <= max {
                u32::try_from(w * factor).unwrap_or(u32::MAX)
            } else {
                let scaled = u128::from(*w) * u128::from(u32::MAX) / u128::from(total);
                u32::try_from(scaled).unwrap_or(u32::MAX)
            }
        })
        .collect()
}

fn route(r: &sp::RouteSpec) -> Route {
    Route {
        condition: Some(request_match(&r.condition)),
        response_classes: r
            .response_classes
            .iter()
            .map(|c| ResponseClass {
                condition: Some(response_match(&c.condition)),
                is_failure: c.is_failure,
            })
            .collect(),
        metrics_labels: HashMap::from([("route".to_owned(), r.name.clone())]),
        is_retryable: r.is_retryable,
        timeout: r
            .timeout_duration()
            .and_then(|d| proto_duration(d, "timeout", &r.name)),
    }
}

fn budget(b: &sp::RetryBudget) -> RetryBudget {
    RetryBudget {
        retry_ratio: b.retry_ratio,
        min_retries_per_second: b.min_retries_per_second,
        ttl: b
            .ttl_duration()
            .and_then(|d| proto_duration(d, "retryBudget.ttl", "")),
    }
}

fn proto_duration(d: Duration, field: &str, route: &str) -> Option<prost_types::Duration> {
    match prost_types::Duration::try_from(d) {
        Ok(d) => Some(d),
        Err(error) => {
            tracing::warn!(field, route, %error, "duration not representable in protobuf; left unset");
            None
        }
    }
}

/// A ServiceProfile condition: the fields set on one object must all hold,
/// so several become an `all`. `pathRegex` is sent anchored (`^(?:re)$`),
/// the way validation compiled it, so a proxy that matches unanchored and
/// one that anchors again agree.
fn request_match(m: &sp::RequestMatch) -> RequestMatch {
    use request_match::{Match, Seq};
    let seq = |v: &[sp::RequestMatch]| Seq {
        matches: v.iter().map(request_match).collect(),
    };
    let mut parts = Vec::new();
    if let Some(method) = &m.method {
        let r#type = match http::Method::from_bytes(method.as_bytes()) {
            Ok(m) => http_method::Type::from(m),
            Err(_) => http_method::Type::Unregistered(method.clone()),
        };
        parts.push(Match::Method(HttpMethod {
            r#type: Some(r#type),
        }));
    }
    if let Some(re) = &m.path_regex {
        parts.push(Match::Path(PathMatch {
            regex: format!("^(?:{re})$"),
        }));
    }
    if let Some(all) = &m.all {
        parts.push(Match::All(seq(all)));
    }
    if let Some(any) = &m.any {
        parts.push(Match::Any(seq(any)));
    }
    if let Some(not) = &m.not {
        parts.push(Match::Not(Box::new(request_match(not))));
    }
    RequestMatch {
        r#match: one_or_all(parts, |matches| {
            Match::All(Seq {
                matches: matches
                    .into_iter()
                    .map(|m| RequestMatch { r#match: Some(m) })
                    .collect(),
            })
        }),
    }
}

/// A response condition, like [`request_match`]. Status bounds are always
/// sent explicitly (an open `min` is 100, an open `max` 599): the protocol
/// reads a zero bound as "a single status", not as "open".
fn response_match(m: &sp::ResponseMatch) -> ResponseMatch {
    use response_match::{Match, Seq};
    let seq = |v: &[sp::ResponseMatch]| Seq {
        matches: v.iter().map(response_match).collect(),
    };
    let mut parts = Vec::new();
    if let Some(s) = &m.status {
        parts.push(Match::Status(HttpStatusRange {
            min: s.min.unwrap_or(100),
            max: s.max.unwrap_or(599),
        }));
    }
    if let Some(all) = &m.all {
        parts.push(Match::All(seq(all)));
    }
    if let Some(any) = &m.any {
        parts.push(Match::Any(seq(any)));
    }
    if let Some(not) = &m.not {
        parts.push(Match::Not(Box::new(response_match(not))));
    }
    ResponseMatch {
        r#match: one_or_all(parts, |matches| {
            Match::All(Seq {
                matches: matches
                    .into_iter()
                    .map(|m| ResponseMatch { r#match: Some(m) })
                    .collect(),
            })
        }),
    }
}

/// One predicate as is; several combined with `all`.
fn one_or_all<M>(mut parts: Vec<M>, all: impl FnOnce(Vec<M>) -> M) -> Option<M> {
    match parts.len() {
        0 => None,
        1 => parts.pop(),
        _ => Some(all(parts)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    use crate::destination::testing::{snapshot as snap, web};

    #[test]
    fn weights_are_reduced_then_in_milli_units() {
        assert_eq!(linkerd_weights(&[90, 10]), [9000, 1000]);
        assert_eq!(linkerd_weights(&[900, 100]), [9000, 1000]);
        assert_eq!(linkerd_weights(&[1, 0]), [1000, 0]);
        assert_eq!(linkerd_weights(&[5_000_000, 1]), [5_000_000, 1]);
        let big = linkerd_weights(&[u64::MAX - 1, 1]);
        assert!(big[0] > 0 && u64::from(big[0]) + u64::from(big[1]) <= u64::from(u32::MAX));
    }

    #[test]
    fn default_profile_without_objects() {
        let t = translate(&Snapshot::default(), &web(80), "cluster.local.");
        assert_eq!(t.profile.fully_qualified_name, "web.shop.svc.cluster.local");
        assert!(t.profile.routes.is_empty() && t.profile.dst_overrides.is_empty());
        let b = t.profile.retry_budget.unwrap();
        assert_eq!((b.retry_ratio, b.min_retries_per_second), (0.2, 10));
        assert_eq!(b.ttl.unwrap().seconds, 10);
        assert!(!t.profile.opaque_protocol);
    }

    #[test]
    fn matched_splits_are_left_to_the_policy_and_opaque_ports_count() {
        let s = snap(
            "apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: ab, namespace: shop}
spec:
  service: web
  backends: [{service: web-v1, weight: 1}, {service: web-v2, weight: 1}]
  matches: [{kind: HTTPRouteGroup, name: canary-users}]
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  annotations: {config.linkerd.io/opaque-ports: \"3306, 4000-4100\"}
spec:
  ports: [{port: 4001}]
",
        );
        // The matched split is the outbound policy's (see `policy`), not
        // something this profile ignores.
        let t = translate(&s, &web(4001), "cluster.local");
        assert!(t.profile.dst_overrides.is_empty());
        assert!(t.profile.opaque_protocol);
        assert!(t.ignored.is_empty(), "{:?}", t.ignored);
        assert!(
            !translate(&s, &web(80), "cluster.local")
                .profile
                .opaque_protocol
        );
    }

    #[test]
    fn conditions_translate() {
        let s = snap(
            "apiVersion: linkerd.io/v1alpha1
kind: ServiceProfile
metadata: {name: web.shop.svc.cluster.local, namespace: shop}
spec:
  routes:
  - name: get
    condition: {method: GET, pathRegex: /a}
    responseClasses: [{condition: {status: {min: 500}}, isFailure: true}]
    timeout: 1m30s
  opaquePorts: [\"80\"]
",
        );
        let t = translate(&s, &web(80), "cluster.local");
        assert!(t.profile.opaque_protocol);
        let r = &t.profile.routes[0];
        assert_eq!(r.metrics_labels["route"], "get");
        assert_eq!(r.timeout.unwrap().seconds, 90);
        let Some(request_match::Match::All(all)) = &r.condition.as_ref().unwrap().r#match else {
            panic!("{r:?}")
        };
        assert_eq!(all.matches.len(), 2);
        assert_eq!(
            all.matches[1].r#match,
            Some(request_match::Match::Path(PathMatch {
                regex: "^(?:/a)$".into()
            }))
        );
        let c = r.response_classes[0].condition.as_ref().unwrap();
        assert_eq!(
            c.r#match,
            Some(response_match::Match::Status(HttpStatusRange {
                min: 500,
                max: 599
            }))
        );
    }

    #[test]
    fn profile_overrides_unless_a_split_applies() {
        let sp = "apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: {name: web.shop.svc.cluster.local, namespace: shop}
spec:
  dstOverrides:
  - {authority: web-v2.shop.svc.cluster.local:80, weight: 100m}
  - {authority: web.shop.svc.cluster.local:80, weight: 900m}
";
        let t = translate(&snap(sp), &web(80), "cluster.local");
        let w: Vec<_> = t.profile.dst_overrides.iter().map(|d| d.weight).collect();
        assert_eq!(w, [1000, 9000]);
        assert!(t.ignored.is_empty());

        let split = "apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {name: s, namespace: shop}
spec:
  service: web.shop.svc.cluster.local
  backends: [{service: a, weight: 1}, {service: b, weight: 3}]
";
        let t = translate(
            &snap(&format!("{sp}---\n{split}")),
            &web(80),
            "cluster.local",
        );
        let got: Vec<_> = t
            .profile
            .dst_overrides
            .iter()
            .map(|d| (d.authority.as_str(), d.weight))
            .collect();
        assert_eq!(
            got,
            [
                ("a.shop.svc.cluster.local:80", 1000),
                ("b.shop.svc.cluster.local:80", 3000)
            ]
        );
        assert_eq!(t.ignored.len(), 1, "{:?}", t.ignored);
    }
}
