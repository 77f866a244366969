//! `/api/v1/stat`: golden metrics per resource, as `linkerd viz stat`
//! computes them.
//!
//! | asked                    | series read                                   | grouped by                 |
//! |--------------------------|-----------------------------------------------|----------------------------|
//! | a workload kind          | inbound, on the workload's own proxies        | the proxy's workload       |
//! | `... --to R`             | outbound of the workload's proxies, dst = R   | the proxy's workload       |
//! | `... --from R`           | outbound of R's proxies                       | the destination (`dst_*`)  |
//! | `service`                | outbound of every proxy (or R's, `--from`)    | `dst_namespace/dst_service`|
//! | `authority`              | inbound of every proxy                        | the `authority` label      |
//! | `trafficsplit`           | outbound to each leaf service                 | split and leaf             |
//!
//! TCP columns come from inbound `tcp_*{peer="src"}` and are shown for
//! workloads without `--from`/`--to` (the TCP metrics carry no destination).
//! Resources with no traffic still get a row, with empty cells, as long as
//! the store knows them.

use super::query::{self, dst_resource, in_scope, Golden, Proxy, Range, RowKey};
use super::scrape::now_unix;
use super::{ApiError, Viz};
use crate::store::Snapshot;
use std::collections::BTreeMap;
use weft_metrics_api::api::{NamespacedResource, StatQuery, StatResponse, StatRow};
use weft_metrics_api::exposition::{Family, SeriesKey};
use weft_metrics_api::resource::ResourceKind;

/// Answers a stat query.
pub fn stat(viz: &Viz, q: &StatQuery) -> Result<StatResponse, ApiError> {
    check_window(viz, q.window)?;
    let snapshot = viz.store.snapshot();
    let range = Range::ending(now_unix(), q.window);
    let kind = q.resource.kind;
    for peer in [&q.from, &q.to].into_iter().flatten() {
        check_exists(&snapshot, viz, peer)?;
    }
    let mut groups: BTreeMap<RowKey, Golden> = BTreeMap::new();
    {
        let state = viz.state();
        for (pod, ring) in state.rings.iter() {
            let proxy = Proxy::new(pod, ring, &snapshot);
            let source_ok = q.from.as_ref().is_none_or(|from| belongs(&proxy, from));
            if !source_ok {
                continue;
            }
            let own = proxy.resource(kind);
            for (key, samples) in query::series(ring, range) {
                let Some((row, tcp)) = group_of(kind, q, &own, key, &viz.settings.cluster_domain)
                else {
                    continue;
                };
                let g = groups.entry(row).or_default();
                if tcp {
                    g.add_tcp(key, &samples, range);
                } else {
                    g.add_http(key, &samples, range);
                }
            }
        }
    }
    let rows = match kind {
        ResourceKind::TrafficSplit => split_rows(&snapshot, q, &groups, range),
        _ => plain_rows(&snapshot, q, groups, range),
    };
    if let Some(name) = &q.resource.name {
        if rows.is_empty() {
            return Err(ApiError::not_found(format!(
                "{} {name} not found{}",
                kind,
                scope_words(&q.scope)
            )));
        }
    }
    Ok(StatResponse {
        window_seconds: range.seconds(),
        rows,
    })
}

/// Windows must hold at least two scrapes, or no rate can be computed.
pub fn check_window(viz: &Viz, window: std::time::Duration) -> Result<(), ApiError> {
    let min = viz.settings.interval.saturating_mul(2);
    if window < min {
        return Err(ApiError::bad_request(format!(
            "window {:.0?} is shorter than two scrape intervals ({min:.0?}); rates need two samples",
            window
        )));
    }
    Ok(())
}

fn scope_words(scope: &weft_metrics_api::api::Scope) -> String {
    match scope {
        weft_metrics_api::api::Scope::Namespace(ns) => format!(" in namespace {ns}"),
        weft_metrics_api::api::Scope::All => String::new(),
    }
}

/// Refuses a named resource nobody knows (`--from`/`--to`, a routes
/// workload): not in the store and never scraped.
pub fn check_exists(
    snapshot: &Snapshot,
    viz: &Viz,
    peer: &NamespacedResource,
) -> Result<(), ApiError> {
    let Some(name) = &peer.resource.name else {
        return Ok(());
    };
    let key = (peer.namespace.clone(), name.clone());
    let known = match peer.resource.kind {
        ResourceKind::Service => snapshot
            .services
            .contains_key(&crate::store::ObjectKey::new(&peer.namespace, name)),
        ResourceKind::TrafficSplit => snapshot
            .traffic_splits
            .contains_key(&crate::store::ObjectKey::new(&peer.namespace, name)),
        ResourceKind::Authority => true,
        kind => {
            query::pod_counts(snapshot, kind).contains_key(&key)
                || viz.state().rings.iter().any(|(pod, ring)| {
                    Proxy::new(pod, ring, snapshot).resource(kind).as_ref() == Some(&key)
                })
        }
    };
    if known {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "{} {name} not found in namespace {}",
            peer.resource.kind, peer.namespace
        )))
    }
}

/// Whether a proxy is part of `resource` (a `--from` source).
fn belongs(proxy: &Proxy<'_>, resource: &NamespacedResource) -> bool {
    if proxy.pod.namespace != resource.namespace {
        return false;
    }
    match (
        &resource.resource.name,
        proxy.resource(resource.resource.kind),
    ) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(name), Some((_, own))) => *name == own,
    }
}

/// Whether an outbound series went to `resource` (a `--to` destination).
fn goes_to(key: &SeriesKey, resource: &NamespacedResource, cluster_domain: &str) -> bool {
    if key.labels().get("dst_namespace") != Some(resource.namespace.as_str()) {
        // An undiscovered destination has no dst labels; an authority
        // still names a Service by its FQDN.
        if resource.resource.kind != ResourceKind::Service {
            return false;
        }
    }
    let Some(name) = &resource.resource.name else {
        return dst_resource(resource.resource.kind, key).is_some();
    };
    match resource.resource.kind {
        ResourceKind::Service => {
            key.labels().get("dst_service") == Some(name.as_str())
                || authority_host(key.labels().get("authority"))
                    == Some(format!("{name}.{}.svc.{cluster_domain}", resource.namespace).as_str())
        }
        kind => dst_resource(kind, key).is_some_and(|(_, n)| n == *name),
    }
}

/// The host of an authority label (`books.shop.svc.cluster.local:8080`).
pub fn authority_host(authority: Option<&str>) -> Option<&str> {
    let a = authority?;
    Some(a.rsplit_once(':').map_or(a, |(h, _)| h))
}

/// Which row a series counts towards, and whether it is a TCP series;
/// `None` to skip it.
fn group_of(
    kind: ResourceKind,
    q: &StatQuery,
    own: &Option<RowKey>,
    key: &SeriesKey,
    cluster_domain: &str,
) -> Option<(RowKey, bool)> {
    let tcp = matches!(
        key.family(),
        Family::TcpOpenConnections | Family::TcpReadBytesTotal | Family::TcpWriteBytesTotal
    );
    let http = matches!(
        key.family(),
        Family::ResponseTotal | Family::ResponseLatencyMsBucket
    );
    if !tcp && !http {
        return None;
    }
    let dir = query::direction(key)?;
    match kind {
        ResourceKind::Service | ResourceKind::TrafficSplit => {
            if dir != "outbound" || tcp {
                return None;
            }
            if let Some(to) = &q.to {
                if !goes_to(key, to, cluster_domain) {
                    return None;
                }
            }
            dst_resource(ResourceKind::Service, key).map(|r| (r, false))
        }
        ResourceKind::Authority => {
            if dir != "inbound" || tcp {
                return None;
            }
            let ns = own_namespace(own)?;
            Some(((ns, key.labels().get("authority")?.to_owned()), false))
        }
        _ if q.from.is_some() => {
            if dir != "outbound" || tcp {
                return None;
            }
            dst_resource(kind, key).map(|r| (r, false))
        }
        _ if q.to.is_some() => {
            let to = q.to.as_ref()?;
            if dir != "outbound" || tcp || !goes_to(key, to, cluster_domain) {
                return None;
            }
            own.clone().map(|r| (r, false))
        }
        _ => {
            if dir != "inbound" {
                return None;
            }
            if tcp && key.labels().get("peer") != Some("src") {
                return None;
            }
            own.clone().map(|r| (r, tcp))
        }
    }
}

fn own_namespace(own: &Option<RowKey>) -> Option<String> {
    own.as_ref().map(|(ns, _)| ns.clone())
}

/// Rows for every kind but traffic splits: the known resources in scope
/// (with their pod counts) and every group that saw traffic.
fn plain_rows(
    snapshot: &Snapshot,
    q: &StatQuery,
    mut groups: BTreeMap<RowKey, Golden>,
    range: Range,
) -> Vec<StatRow> {
    let kind = q.resource.kind;
    let counts = match kind {
        ResourceKind::Service | ResourceKind::Authority | ResourceKind::TrafficSplit => {
            BTreeMap::new()
        }
        _ => query::pod_counts(snapshot, kind),
    };
    let mut keys: Vec<RowKey> = counts.keys().cloned().collect();
    if kind == ResourceKind::Service {
        keys.extend(
            snapshot
                .services
                .keys()
                .map(|k| (k.namespace.clone(), k.name.clone())),
        );
    }
    keys.extend(groups.keys().cloned());
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|(ns, name)| {
            // `stat ns` lists namespaces, whatever -n says (as Linkerd).
            (kind == ResourceKind::Namespace || in_scope(&q.scope, ns))
                && q.resource.name.as_ref().is_none_or(|n| n == name)
        })
        .map(|key| {
            let mut row = StatRow {
                namespace: key.0.clone(),
                kind: kind.as_str().to_owned(),
                name: key.1.clone(),
                meshed: counts.get(&key).map(|(m, t)| format!("{m}/{t}")),
                ..StatRow::default()
            };
            if let Some(g) = groups.remove(&key) {
                g.fill_http(&mut row, range);
                g.fill_tcp(&mut row, range);
            }
            row
        })
        .collect()
}

/// One row per leaf of every split in scope, with traffic to the leaf
/// service.
fn split_rows(
    snapshot: &Snapshot,
    q: &StatQuery,
    groups: &BTreeMap<RowKey, Golden>,
    range: Range,
) -> Vec<StatRow> {
    let mut rows = Vec::new();
    for (key, split) in &snapshot.traffic_splits {
        if !in_scope(&q.scope, &key.namespace)
            || q.resource.name.as_ref().is_some_and(|n| *n != key.name)
        {
            continue;
        }
        for backend in &split.backends {
            let mut row = StatRow {
                namespace: key.namespace.clone(),
                kind: ResourceKind::TrafficSplit.as_str().to_owned(),
                name: key.name.clone(),
                apex: Some(split.service.clone()),
                leaf: Some(backend.service.clone()),
                weight: Some(share(u64::from(backend.weight), split.total_weight())),
                ..StatRow::default()
            };
            if let Some(g) = groups.get(&(key.namespace.clone(), backend.service.clone())) {
                g.fill_http(&mut row, range);
            }
            rows.push(row);
        }
    }
    rows
}

/// A leaf's share of its split (`90%`): splits are kept with weights in
/// lowest terms, so the share is what survives of how they were written.
fn share(weight: u64, total: u64) -> String {
    if total == 0 {
        return "0%".to_owned();
    }
    let pct = weight as f64 * 100.0 / total as f64;
    if (pct - pct.round()).abs() < 0.005 {
        format!("{pct:.0}%")
    } else {
        format!("{pct:.2}%")
    }
}
