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
//! So is `unauthorized`: the workload's own proxies'
//! `inbound_http_authz_deny_total` + `inbound_tcp_authz_deny_total`, read as
//! counters created on the first refusal ([`query::lazy_counter`]).
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
                let Some((row, part)) = group_of(kind, q, &own, key, &viz.settings.cluster_domain)
                else {
                    continue;
                };
                let g = groups.entry(row).or_default();
                match part {
                    Part::Tcp => g.add_tcp(key, &samples, range),
                    Part::Http => g.add_http(key, &samples, range),
                    Part::Authz => g.add_authz(&query::lazy_counter(ring, samples, range), range),
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

/// Whether the rows of `q` get `unauthorized`: workloads' own inbound
/// side, as for the TCP cells (no `--from`/`--to`).
fn counts_unauthorized(q: &StatQuery) -> bool {
    q.resource.kind.has_pods() && q.from.is_none() && q.to.is_none()
}

/// Which cells of a row a series adds to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    /// Success, rate and latency.
    Http,
    /// Connections and bytes.
    Tcp,
    /// Authorization refusals.
    Authz,
}

/// Which row a series counts towards, and which of its cells; `None` to
/// skip it.
fn group_of(
    kind: ResourceKind,
    q: &StatQuery,
    own: &Option<RowKey>,
    key: &SeriesKey,
    cluster_domain: &str,
) -> Option<(RowKey, Part)> {
    if key.family().is_authz_deny() {
        // Inbound by name (no `direction` label): the workload's own.
        if !counts_unauthorized(q) {
            return None;
        }
        return own.clone().map(|r| (r, Part::Authz));
    }
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
    let part = if tcp { Part::Tcp } else { Part::Http };
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
            dst_resource(ResourceKind::Service, key).map(|r| (r, Part::Http))
        }
        ResourceKind::Authority => {
            if dir != "inbound" || tcp {
                return None;
            }
            let ns = own_namespace(own)?;
            Some(((ns, key.labels().get("authority")?.to_owned()), Part::Http))
        }
        _ if q.from.is_some() => {
            if dir != "outbound" || tcp {
                return None;
            }
            dst_resource(kind, key).map(|r| (r, Part::Http))
        }
        _ if q.to.is_some() => {
            let to = q.to.as_ref()?;
            if dir != "outbound" || tcp || !goes_to(key, to, cluster_domain) {
                return None;
            }
            own.clone().map(|r| (r, Part::Http))
        }
        _ => {
            if dir != "inbound" {
                return None;
            }
            if tcp && key.labels().get("peer") != Some("src") {
                return None;
            }
            own.clone().map(|r| (r, part))
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
                if counts_unauthorized(q) {
                    g.fill_authz(&mut row);
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ObjectKey, Store};
    use crate::viz::targets::Target;
    use crate::viz::Settings;
    use std::time::Duration;
    use weft_metrics_api::api::Scope;
    use weft_metrics_api::exposition::reduce;
    use weft_metrics_api::resource::Resource;

    const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web-5d8f-a
  namespace: shop
  labels: {pod-template-hash: 5d8f}
  annotations: {linkerd.io/inject: enabled}
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-5d8f, uid: u1, controller: true}]
spec: {containers: [{name: app}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: books-6c7d-a
  namespace: shop
  labels: {pod-template-hash: 6c7d}
  annotations: {linkerd.io/inject: enabled}
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: books-6c7d, uid: u2, controller: true}]
spec: {containers: [{name: app}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: idle-7e8f-a
  namespace: shop
  labels: {pod-template-hash: 7e8f}
  annotations: {linkerd.io/inject: enabled}
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: idle-7e8f, uid: u3, controller: true}]
spec: {containers: [{name: app}]}
"#;

    /// A proxy's exposition as the proxy writes it: its inbound responses,
    /// and the authorization refusal counters once it has refused
    /// something (`None`: not created yet).
    fn exposition(
        pod: &str,
        deploy: &str,
        http_deny: Option<u32>,
        tcp_deny: Option<u32>,
    ) -> String {
        let target = format!(r#"namespace="shop",pod="{pod}",deployment="{deploy}""#);
        let mut text = format!(
            "# HELP response Total count of HTTP responses.\n# TYPE response counter\n\
             response_total{{{target},direction=\"inbound\",authority=\"{deploy}.shop:80\",tls=\"true\",status_code=\"200\",classification=\"success\"}} 10\n"
        );
        if let Some(n) = http_deny {
            text.push_str(&format!(
                "# HELP inbound_http_authz_deny The number of unauthorized HTTP requests.\n\
                 # TYPE inbound_http_authz_deny counter\n\
                 inbound_http_authz_deny_total{{{target},target_addr=\"127.0.0.1:8080\",srv_group=\"\",srv_kind=\"default\",srv_name=\"deny\",route_group=\"\",route_kind=\"default\",route_name=\"default\",tls=\"true\",client_id=\"a.shop.serviceaccount.identity.weft.cluster.local\"}} {n}\n\
                 inbound_http_authz_deny_total{{{target},target_addr=\"127.0.0.1:8080\",srv_group=\"\",srv_kind=\"default\",srv_name=\"deny\",route_group=\"\",route_kind=\"default\",route_name=\"default\",tls=\"disabled\",client_id=\"\"}} 0\n"
            ));
        }
        if let Some(n) = tcp_deny {
            text.push_str(&format!(
                "# HELP inbound_tcp_authz_deny The number of unauthorized TCP connections.\n\
                 # TYPE inbound_tcp_authz_deny counter\n\
                 inbound_tcp_authz_deny_total{{{target},target_addr=\"127.0.0.1:5432\",srv_group=\"\",srv_kind=\"default\",srv_name=\"deny\",tls=\"disabled\",client_id=\"\"}} {n}\n"
            ));
        }
        text.push_str("# EOF\n");
        text
    }

    fn viz() -> Viz {
        let parsed =
            crate::feed::files::parse_documents(std::path::Path::new("t.yaml"), PODS).unwrap();
        let store = Store::new();
        store.replace_all(parsed.objects);
        let settings = Settings {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            concurrency: 1,
            limits: weft_metrics_api::ring::Limits::default(),
            default_ip: None,
            trust_domain: "cluster.local".into(),
            cluster_domain: "cluster.local".into(),
            inbound: crate::destination::inbound::InboundSettings {
                default_policy: weft_policy::DefaultPolicy::Deny,
                cluster_networks: Vec::new(),
                trust_domain: "cluster.local".into(),
            },
        };
        Viz::new(settings, store)
    }

    fn target(pod: &str) -> Target {
        Target {
            pod: ObjectKey::new("shop", pod),
            addr: "127.0.0.1:4191".parse().unwrap(),
            owner: None,
            service_account: "default".into(),
        }
    }

    fn query(resource: &str, to: Option<&str>) -> StatQuery {
        StatQuery {
            resource: Resource::parse(resource).unwrap(),
            scope: Scope::Namespace("shop".into()),
            from: None,
            to: to.map(|t| NamespacedResource {
                resource: Resource::parse(t).unwrap(),
                namespace: "shop".into(),
            }),
            window: Duration::from_secs(10),
        }
    }

    #[test]
    fn unauthorized_counts_each_workloads_refusals_from_the_first() {
        let viz = viz();
        let now = now_unix();
        // web refuses 2 requests between its first two scrapes (the
        // counter is created then), one more request and one connection
        // before the third; books refuses nothing.
        let web = [
            (None, None),
            (Some(2), None),
            (Some(3), Some(1)),
            (Some(3), Some(1)),
        ];
        for (i, (http, tcp)) in web.into_iter().enumerate() {
            let at = now - 4.5 + i as f64;
            let text = exposition("web-5d8f-a", "web", http, tcp);
            viz.record(&target("web-5d8f-a"), at, Ok(reduce(&text).unwrap()));
            let text = exposition("books-6c7d-a", "books", None, None);
            viz.record(&target("books-6c7d-a"), at, Ok(reduce(&text).unwrap()));
        }

        let rows = stat(&viz, &query("deploy", None)).unwrap().rows;
        let unauthorized: Vec<(&str, Option<u64>)> = rows
            .iter()
            .map(|r| (r.name.as_str(), r.unauthorized))
            .collect();
        // 4 refusals, extrapolated as Prometheus' `increase` does (never
        // back past zero; half an interval past the last sample): 3 × 3.5/3
        // + 1 × 2.5/2 = 4.75. Without the zero before each counter's first
        // sample, the first 2 and the connection would be missed (1.17).
        assert_eq!(
            unauthorized,
            [("books", Some(0)), ("idle", None), ("web", Some(5))],
            "{rows:?}"
        );
        // The pod view sums the same way; views that are not a workload's
        // own inbound side have no such count.
        let pod = stat(&viz, &query("po/web-5d8f-a", None)).unwrap().rows;
        assert_eq!(pod[0].unauthorized, Some(5));
        let to = stat(&viz, &query("deploy", Some("deploy/books")))
            .unwrap()
            .rows;
        assert!(to.iter().all(|r| r.unauthorized.is_none()), "{to:?}");
        let svc = stat(&viz, &query("svc", None)).unwrap().rows;
        assert!(svc.iter().all(|r| r.unauthorized.is_none()), "{svc:?}");
    }
}
