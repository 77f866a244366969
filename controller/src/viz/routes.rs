//! `/api/v1/routes`: per-route metrics of a service's ServiceProfile.
//!
//! Weft's proxies measure routes on the client side (`route_*` series with
//! `direction="outbound"`, `dst` the profile's name, `rt_route` the route),
//! so a service's routes are what its clients saw:
//!
//! - `svc/NAME`: every client's view of service NAME;
//! - `deploy/W --to svc/NAME`: W's proxies' view of NAME;
//! - `deploy/W` alone: every client's view of the services W's pods serve.
//!
//! Rows are the profile's routes in order, then any other route seen, then
//! `[DEFAULT]` (requests no route matched). The effective numbers are
//! `route_response_total` (what the caller got, after retries), the actual
//! ones `route_actual_response_total` (every attempt sent).

use super::query::{self, Golden, Proxy, Range};
use super::scrape::now_unix;
use super::stat::authority_host;
use super::{ApiError, Viz};
use crate::store::{ObjectKey, Snapshot};
use std::collections::BTreeMap;
use weft_metrics_api::api::{NamespacedResource, RouteRow, RoutesQuery, RoutesResponse};
use weft_metrics_api::exposition::Family;
use weft_metrics_api::resource::{Resource, ResourceKind};

/// The `rt_route` of requests no profile route matched.
pub const DEFAULT_ROUTE: &str = "[DEFAULT]";

/// Effective and actual sums of one route.
#[derive(Default)]
struct RouteSums {
    effective: Golden,
    actual: Golden,
}

/// Answers a routes query.
pub fn routes(viz: &Viz, q: &RoutesQuery) -> Result<RoutesResponse, ApiError> {
    super::stat::check_window(viz, q.window)?;
    let snapshot = viz.store.snapshot();
    let range = Range::ending(now_unix(), q.window);
    let (services, sources) = targets_of(&snapshot, viz, q)?;
    let domain = &viz.settings.cluster_domain;
    let hosts: Vec<String> = services
        .iter()
        .map(|s| format!("{}.{}.svc.{domain}", s.name, s.namespace))
        .collect();
    let mut sums: BTreeMap<(usize, String), RouteSums> = BTreeMap::new();
    {
        let state = viz.state();
        for (pod, ring) in state.rings.iter() {
            if let Some(src) = &sources {
                let proxy = Proxy::new(pod, ring, &snapshot);
                let own = proxy.resource(src.kind);
                if pod.namespace != q.namespace
                    || own.is_none_or(|(_, n)| src.name.as_ref().is_some_and(|want| *want != n))
                {
                    continue;
                }
            }
            for (key, samples) in query::series(ring, range) {
                if !matches!(
                    key.family(),
                    Family::RouteResponseTotal
                        | Family::RouteActualResponseTotal
                        | Family::RouteResponseLatencyMsBucket
                ) || query::direction(key) != Some("outbound")
                {
                    continue;
                }
                let Some(host) = authority_host(key.labels().get("dst")) else {
                    continue;
                };
                let Some(index) = hosts.iter().position(|h| h == host) else {
                    continue;
                };
                let route = key
                    .labels()
                    .get("rt_route")
                    .unwrap_or(DEFAULT_ROUTE)
                    .to_owned();
                let s = sums.entry((index, route)).or_default();
                match key.family() {
                    Family::RouteActualResponseTotal => s.actual.add_http(key, &samples, range),
                    _ => s.effective.add_http(key, &samples, range),
                }
            }
        }
    }
    let mut rows = Vec::new();
    for (index, (service, host)) in services.iter().zip(&hosts).enumerate() {
        let mut names: Vec<String> = snapshot
            .service_profiles
            .get(&ObjectKey::new(&service.namespace, host))
            .map(|p| p.spec.routes.iter().map(|r| r.name.clone()).collect())
            .unwrap_or_default();
        for (i, route) in sums.keys() {
            if *i == index && route != DEFAULT_ROUTE && !names.contains(route) {
                names.push(route.clone());
            }
        }
        names.push(DEFAULT_ROUTE.to_owned());
        for name in names {
            let mut row = RouteRow {
                route: name.clone(),
                authority: host.clone(),
                ..RouteRow::default()
            };
            if let Some(s) = sums.get(&(index, name)) {
                fill(&mut row, s, range);
            }
            rows.push(row);
        }
    }
    Ok(RoutesResponse {
        window_seconds: range.seconds(),
        rows,
    })
}

fn fill(row: &mut RouteRow, s: &RouteSums, range: Range) {
    let mut stat = weft_metrics_api::api::StatRow::default();
    s.effective.fill_http(&mut stat, range);
    row.success = stat.success;
    row.rps = stat.rps;
    row.latency_ms_p50 = stat.latency_ms_p50;
    row.latency_ms_p95 = stat.latency_ms_p95;
    row.latency_ms_p99 = stat.latency_ms_p99;
    row.effective_success = stat.success;
    row.effective_rps = stat.rps;
    let mut actual = weft_metrics_api::api::StatRow::default();
    s.actual.fill_http(&mut actual, range);
    row.actual_success = actual.success;
    row.actual_rps = actual.rps;
}

/// A Service by namespace and name.
struct ServiceRef {
    namespace: String,
    name: String,
}

/// The services whose routes to show and, with `--to`, whose proxies'
/// view to use.
fn targets_of(
    snapshot: &Snapshot,
    viz: &Viz,
    q: &RoutesQuery,
) -> Result<(Vec<ServiceRef>, Option<Resource>), ApiError> {
    let kind = q.resource.kind;
    let service = |ns: &str, name: &str| -> Result<ServiceRef, ApiError> {
        if snapshot.services.contains_key(&ObjectKey::new(ns, name)) {
            Ok(ServiceRef {
                namespace: ns.to_owned(),
                name: name.to_owned(),
            })
        } else {
            Err(ApiError::not_found(format!(
                "service {name} not found in namespace {ns}"
            )))
        }
    };
    match (kind, &q.to) {
        (ResourceKind::Service, None) => {
            let name = q.resource.name.as_deref().ok_or_else(|| {
                ApiError::bad_request("routes needs one service: svc/NAME".to_owned())
            })?;
            Ok((vec![service(&q.namespace, name)?], None))
        }
        (ResourceKind::Service, Some(_)) => Err(ApiError::bad_request(
            "--to applies to a workload's routes (routes deploy/W --to svc/NAME)".to_owned(),
        )),
        (ResourceKind::Authority | ResourceKind::TrafficSplit | ResourceKind::Namespace, _) => {
            Err(ApiError::bad_request(format!(
                "routes are per service: use svc/NAME, or a workload (deployment, statefulset, \
                 daemonset, job, pod) with or without --to svc/NAME, not {kind}"
            )))
        }
        (
            _,
            Some(NamespacedResource {
                resource,
                namespace,
            }),
        ) => {
            if resource.kind != ResourceKind::Service {
                return Err(ApiError::bad_request(
                    "--to must name a service (svc/NAME)".to_owned(),
                ));
            }
            let name = resource.name.as_deref().ok_or_else(|| {
                ApiError::bad_request("--to needs one service: svc/NAME".to_owned())
            })?;
            workload_exists(snapshot, viz, q)?;
            Ok((vec![service(namespace, name)?], Some(q.resource.clone())))
        }
        (_, None) => {
            workload_exists(snapshot, viz, q)?;
            Ok((served_by(snapshot, q), None))
        }
    }
}

/// Refuses a named workload nobody knows.
fn workload_exists(snapshot: &Snapshot, viz: &Viz, q: &RoutesQuery) -> Result<(), ApiError> {
    super::stat::check_exists(
        snapshot,
        viz,
        &NamespacedResource {
            resource: q.resource.clone(),
            namespace: q.namespace.clone(),
        },
    )
}

/// The Services in the namespace with an endpoint on one of the
/// workload's pods.
fn served_by(snapshot: &Snapshot, q: &RoutesQuery) -> Vec<ServiceRef> {
    let kind = q.resource.kind;
    let owns = |pod: &ObjectKey| -> bool {
        let Some(p) = snapshot.pods.get(pod) else {
            return false;
        };
        let owner = crate::destination::endpoints::owner(p);
        query::resource_of(kind, pod, owner.as_ref().map(|(k, n)| (*k, n.as_str())))
            .is_some_and(|(_, n)| q.resource.name.as_ref().is_none_or(|want| *want == n))
    };
    snapshot
        .services
        .keys()
        .filter(|svc| svc.namespace == q.namespace)
        .filter(|svc| {
            snapshot.endpoint_set(svc).is_some_and(|set| {
                set.groups
                    .iter()
                    .flat_map(|g| &g.addresses)
                    .any(|a| a.pod.as_ref().is_some_and(&owns))
            })
        })
        .map(|svc| ServiceRef {
            namespace: svc.namespace.clone(),
            name: svc.name.clone(),
        })
        .collect()
}
