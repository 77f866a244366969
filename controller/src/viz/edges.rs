//! `/api/v1/edges`: which workloads talked in the window, and whether the
//! traffic was mTLS.
//!
//! An edge comes from an outbound `response_total` series present in the
//! window (Linkerd counts `response_total` series, it does not ask for
//! growth): the source is the proxy's own workload, the destination its
//! `dst_*` labels, and it is secured when the series says `tls="true"`
//! (its `server_id` is the identity the server proved; the client's is its
//! pod's ServiceAccount identity). A client with no proxy is seen only by
//! the server: an inbound series with `tls` other than `true` becomes an
//! edge from `(unmeshed)`, with the reason.

use super::query::{self, dst_resource, in_scope, Proxy, Range};
use super::scrape::now_unix;
use super::{ApiError, Viz};
use crate::destination::endpoints::{is_meshed, service_account};
use crate::store::{ObjectKey, Snapshot};
use std::collections::BTreeMap;
use weft_metrics_api::api::{EdgeRow, EdgesQuery, EdgesResponse};
use weft_metrics_api::exposition::{Family, SeriesKey};
use weft_metrics_api::resource::ResourceKind;

/// The source of edges whose client has no proxy.
pub const UNMESHED_SOURCE: &str = "(unmeshed)";
/// Why an edge from a client without a proxy is not secured.
pub const REASON_NOT_MESHED: &str = "not meshed";
/// Why an edge between proxies without identity is not secured.
pub const REASON_NO_IDENTITY: &str = "no identity";

/// `(src_ns, src, dst_ns, dst)`.
type EdgeKey = (String, String, String, String);

/// Answers an edges query.
pub fn edges(viz: &Viz, q: &EdgesQuery) -> Result<EdgesResponse, ApiError> {
    let kind = q.resource.kind;
    if kind.workload_label().is_none() || kind == ResourceKind::Service {
        return Err(ApiError::bad_request(format!(
            "edges are between workloads: use namespace, deployment, statefulset, daemonset, \
             job or pod, not {kind}"
        )));
    }
    super::stat::check_window(viz, q.window)?;
    let snapshot = viz.store.snapshot();
    let range = Range::ending(now_unix(), q.window);
    let mut found: BTreeMap<EdgeKey, EdgeRow> = BTreeMap::new();
    {
        let state = viz.state();
        for (pod, ring) in state.rings.iter() {
            let proxy = Proxy::new(pod, ring, &snapshot);
            let Some(own) = proxy.resource(kind) else {
                continue;
            };
            for (key, _) in query::series(ring, range) {
                if key.family() != Family::ResponseTotal {
                    continue;
                }
                let edge = match query::direction(key) {
                    Some("outbound") => outbound_edge(viz, &snapshot, pod, &own, kind, key),
                    Some("inbound") => inbound_edge(&own, key),
                    _ => None,
                };
                if let Some(edge) = edge {
                    merge(&mut found, edge);
                }
            }
        }
    }
    let rows = found
        .into_values()
        .filter(|e| in_scope(&q.scope, &e.src_namespace) || in_scope(&q.scope, &e.dst_namespace))
        .filter(|e| {
            q.resource
                .name
                .as_ref()
                .is_none_or(|n| *n == e.src || *n == e.dst)
        })
        .collect();
    Ok(EdgesResponse { rows })
}

/// An edge an outbound series describes, from this proxy's workload.
fn outbound_edge(
    viz: &Viz,
    snapshot: &Snapshot,
    pod: &ObjectKey,
    own: &query::RowKey,
    kind: ResourceKind,
    key: &SeriesKey,
) -> Option<EdgeRow> {
    let (dst_ns, dst) = dst_resource(kind, key)?;
    let mut edge = EdgeRow {
        src: own.1.clone(),
        src_namespace: own.0.clone(),
        dst,
        dst_namespace: dst_ns,
        ..EdgeRow::default()
    };
    match key.labels().get("tls") {
        Some("true") => {
            edge.secured = true;
            edge.server_id = key.labels().get("server_id").unwrap_or_default().to_owned();
            edge.client_id = snapshot
                .pods
                .get(pod)
                .and_then(|p| {
                    weft_identity::Name::new(
                        &service_account(p),
                        &pod.namespace,
                        &viz.settings.trust_domain,
                    )
                    .ok()
                })
                .map(|n| n.as_str().to_owned())
                .unwrap_or_default();
        }
        Some("disabled") => edge.no_tls_reason = REASON_NO_IDENTITY.to_owned(),
        _ => {
            let dst_pod = key
                .labels()
                .get("dst_pod")
                .and_then(|p| snapshot.pods.get(&ObjectKey::new(&edge.dst_namespace, p)));
            edge.no_tls_reason = match dst_pod {
                Some(p) if !is_meshed(p) => REASON_NOT_MESHED,
                _ => REASON_NO_IDENTITY,
            }
            .to_owned();
        }
    }
    Some(edge)
}

/// An edge from a client the server's proxy could not identify.
fn inbound_edge(own: &query::RowKey, key: &SeriesKey) -> Option<EdgeRow> {
    let reason = match key.labels().get("tls") {
        Some("true") => return None, // the client's own proxy reports it
        Some("disabled") => REASON_NO_IDENTITY,
        _ => REASON_NOT_MESHED,
    };
    Some(EdgeRow {
        src: UNMESHED_SOURCE.to_owned(),
        src_namespace: "-".to_owned(),
        dst: own.1.clone(),
        dst_namespace: own.0.clone(),
        no_tls_reason: reason.to_owned(),
        ..EdgeRow::default()
    })
}

/// Adds an edge; a pair is secured only if all of its traffic was.
fn merge(found: &mut BTreeMap<EdgeKey, EdgeRow>, edge: EdgeRow) {
    let key = (
        edge.src_namespace.clone(),
        edge.src.clone(),
        edge.dst_namespace.clone(),
        edge.dst.clone(),
    );
    match found.get_mut(&key) {
        None => {
            found.insert(key, edge);
        }
        Some(seen) => {
            if seen.secured && !edge.secured {
                seen.secured = false;
                seen.no_tls_reason = edge.no_tls_reason;
            }
            if seen.client_id.is_empty() {
                seen.client_id = edge.client_id;
            }
            if seen.server_id.is_empty() {
                seen.server_id = edge.server_id;
            }
        }
    }
}
