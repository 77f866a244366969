//! What every query shares: the time range, who a proxy is, and the sums
//! Linkerd's PromQL computes.
//!
//! A query walks every proxy's ring once. For each series in the range it
//! computes what the PromQL function would (`increase` for counters,
//! `irate` for histogram buckets, the last sample for gauges) and adds it
//! to a group ([`Golden`]); grouping by resource is the `sum(...) by (...)`.

use super::targets::finished;
use crate::destination::endpoints::{is_meshed, owner};
use crate::store::{ObjectKey, Snapshot};
use std::collections::BTreeMap;
use weft_metrics_api::api::{Scope, StatRow};
use weft_metrics_api::exposition::{Family, SeriesKey};
use weft_metrics_api::promql;
use weft_metrics_api::resource::ResourceKind;
use weft_metrics_api::ring::TargetRing;

/// The range `[start, end]` (Unix seconds) a query reads.
#[derive(Clone, Copy, Debug)]
pub struct Range {
    /// Oldest sample considered.
    pub start: f64,
    /// Newest sample considered (now).
    pub end: f64,
}

impl Range {
    /// The window ending at `end`.
    pub fn ending(end: f64, window: std::time::Duration) -> Self {
        Self {
            start: end - window.as_secs_f64(),
            end,
        }
    }

    /// Its length in seconds.
    pub fn seconds(&self) -> f64 {
        self.end - self.start
    }
}

/// A resource's namespace and name: the key of a result row.
pub type RowKey = (String, String);

/// One scraped proxy, as queries see it.
#[derive(Clone, Debug)]
pub struct Proxy<'a> {
    /// Its pod.
    pub pod: &'a ObjectKey,
    /// Its workload (`deployment`, `web`), from the store or, for a pod
    /// that has left it, from the proxy's own labels.
    pub owner: Option<(String, String)>,
}

impl<'a> Proxy<'a> {
    /// The proxy of `pod`, whose ring is `ring`.
    pub fn new(pod: &'a ObjectKey, ring: &TargetRing, snapshot: &Snapshot) -> Self {
        let owner = snapshot
            .pods
            .get(pod)
            .and_then(|p| owner(p))
            .map(|(k, n)| (k.to_owned(), n))
            .or_else(|| {
                let labels = ring.target_labels();
                OWNER_LABELS
                    .iter()
                    .find_map(|k| labels.get(k).map(|v| ((*k).to_owned(), v.to_owned())))
            });
        Self { pod, owner }
    }

    /// The resource of `kind` this proxy belongs to, if any.
    pub fn resource(&self, kind: ResourceKind) -> Option<RowKey> {
        resource_of(
            kind,
            self.pod,
            self.owner.as_ref().map(|(k, n)| (k.as_str(), n.as_str())),
        )
    }
}

/// The resource of `kind` a pod with this workload owner belongs to
/// (`deployment`, `web`): its namespace, itself, or its owner when the
/// owner is of that kind. The one answer to "whose is this pod" for every
/// query.
pub fn resource_of(
    kind: ResourceKind,
    pod: &ObjectKey,
    owner: Option<(&str, &str)>,
) -> Option<RowKey> {
    let ns = pod.namespace.clone();
    match kind {
        ResourceKind::Namespace => Some((ns.clone(), ns)),
        ResourceKind::Pod => Some((ns, pod.name.clone())),
        ResourceKind::Deployment
        | ResourceKind::StatefulSet
        | ResourceKind::DaemonSet
        | ResourceKind::Job => {
            let label = kind.workload_label()?;
            let (k, name) = owner?;
            (k == label).then(|| (ns, name.to_owned()))
        }
        ResourceKind::Service | ResourceKind::Authority | ResourceKind::TrafficSplit => None,
    }
}

/// The workload labels a proxy may carry.
const OWNER_LABELS: [&str; 5] = [
    "deployment",
    "statefulset",
    "daemonset",
    "job",
    "replicaset",
];

/// The destination resource of `kind` an outbound series names through its
/// `dst_*` labels.
pub fn dst_resource(kind: ResourceKind, key: &SeriesKey) -> Option<RowKey> {
    let ns = key.labels().get("dst_namespace")?.to_owned();
    match kind {
        ResourceKind::Namespace => Some((ns.clone(), ns)),
        ResourceKind::Authority => Some((ns, key.labels().get("authority")?.to_owned())),
        ResourceKind::TrafficSplit => None,
        _ => {
            let label = format!("dst_{}", kind.workload_label()?);
            Some((ns, key.labels().get(&label)?.to_owned()))
        }
    }
}

/// Whether a row in `namespace` is in the query's scope.
pub fn in_scope(scope: &Scope, namespace: &str) -> bool {
    match scope {
        Scope::All => true,
        Scope::Namespace(ns) => ns == namespace,
    }
}

/// The direction label of a series.
pub fn direction(key: &SeriesKey) -> Option<&str> {
    key.labels().get("direction")
}

/// The sums behind one row of golden metrics.
#[derive(Clone, Debug, Default)]
pub struct Golden {
    /// `increase(response_total{classification="success"})`.
    pub success: f64,
    /// `increase(response_total{classification="failure"})`.
    pub failure: f64,
    /// `irate(response_latency_ms_bucket)` summed per `le` (bits of the
    /// bound, for ordering).
    pub buckets: BTreeMap<u64, f64>,
    /// Whether any response series was in range.
    pub http: bool,
    /// `tcp_open_connections`, the last sample of each series.
    pub tcp_open: f64,
    /// `increase(tcp_read_bytes_total)`.
    pub read_bytes: f64,
    /// `increase(tcp_write_bytes_total)`.
    pub write_bytes: f64,
    /// Whether any TCP series was in range.
    pub tcp: bool,
    /// `increase(inbound_http_authz_deny_total)` +
    /// `increase(inbound_tcp_authz_deny_total)`.
    pub unauthorized: f64,
    /// Whether any authorization refusal series was in range.
    pub authz: bool,
}

impl Golden {
    /// Adds one series of the HTTP families (`response_total` and the
    /// latency buckets, or their `route_` twins).
    pub fn add_http(&mut self, key: &SeriesKey, samples: &[(f64, f64)], range: Range) {
        match key.family() {
            Family::ResponseTotal
            | Family::RouteResponseTotal
            | Family::RouteActualResponseTotal => {
                let Some(inc) = promql::increase(samples, range.start, range.end) else {
                    return;
                };
                self.http = true;
                match key.labels().get("classification") {
                    Some("success") => self.success += inc,
                    Some("failure") => self.failure += inc,
                    _ => {}
                }
            }
            Family::ResponseLatencyMsBucket | Family::RouteResponseLatencyMsBucket => {
                let (Some(le), Some(rate)) = (key.le(), promql::irate(samples)) else {
                    return;
                };
                *self.buckets.entry(order_bits(le)).or_default() += rate;
            }
            _ => {}
        }
    }

    /// Adds one series of the `tcp_*` families.
    pub fn add_tcp(&mut self, key: &SeriesKey, samples: &[(f64, f64)], range: Range) {
        match key.family() {
            Family::TcpOpenConnections => {
                if let Some((_, v)) = samples.last() {
                    self.tcp = true;
                    self.tcp_open += v;
                }
            }
            Family::TcpReadBytesTotal | Family::TcpWriteBytesTotal => {
                let Some(inc) = promql::increase(samples, range.start, range.end) else {
                    return;
                };
                self.tcp = true;
                if key.family() == Family::TcpReadBytesTotal {
                    self.read_bytes += inc;
                } else {
                    self.write_bytes += inc;
                }
            }
            _ => {}
        }
    }

    /// Adds one series of the authorization refusal families, read with
    /// [`lazy_counter`] (the proxy creates them on the first refusal).
    pub fn add_authz(&mut self, samples: &[(f64, f64)], range: Range) {
        if let Some(inc) = promql::increase(samples, range.start, range.end) {
            self.authz = true;
            self.unauthorized += inc;
        }
    }

    /// Responses in the window.
    pub fn requests(&self) -> f64 {
        self.success + self.failure
    }

    /// `histogram_quantile(q, ...)` over the summed buckets, in ms.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let buckets: Vec<(f64, f64)> = self
            .buckets
            .iter()
            .map(|(bits, v)| (from_order_bits(*bits), *v))
            .collect();
        let ms = promql::histogram_quantile(q, &buckets)?;
        ms.is_finite().then(|| ms.max(0.0).round() as u64)
    }

    /// Writes the HTTP cells of a stat row (nothing when no request was
    /// answered in the window: the cells stay `null`, printed `-`).
    pub fn fill_http(&self, row: &mut StatRow, range: Range) {
        if !self.http || self.requests() <= 0.0 {
            return;
        }
        row.success = Some(self.success / self.requests());
        row.rps = Some(self.requests() / range.seconds());
        row.latency_ms_p50 = self.quantile(0.5);
        row.latency_ms_p95 = self.quantile(0.95);
        row.latency_ms_p99 = self.quantile(0.99);
    }

    /// Writes `unauthorized`: a count wherever anything of the workload's
    /// inbound side was measured (0 when its proxies refused nothing),
    /// `null` (printed `-`) where nothing was.
    pub fn fill_authz(&self, row: &mut StatRow) {
        if self.authz || self.http || self.tcp {
            row.unauthorized = Some(self.unauthorized.max(0.0).round() as u64);
        }
    }

    /// Writes the TCP cells of a stat row.
    pub fn fill_tcp(&self, row: &mut StatRow, range: Range) {
        if !self.tcp {
            return;
        }
        row.tcp_open_connections = Some(self.tcp_open.max(0.0).round() as u64);
        row.tcp_read_bytes_rate = Some(self.read_bytes / range.seconds());
        row.tcp_write_bytes_rate = Some(self.write_bytes / range.seconds());
    }
}

/// `f64` bucket bounds as keys that sort like the numbers (all bounds are
/// positive, so the IEEE bits of a positive float sort in order).
fn order_bits(le: f64) -> u64 {
    le.max(0.0).to_bits()
}

fn from_order_bits(bits: u64) -> f64 {
    f64::from_bits(bits)
}

/// Pods per workload: `(meshed, total)` of the unfinished pods of every
/// resource of `kind` (workload kinds only).
pub fn pod_counts(snapshot: &Snapshot, kind: ResourceKind) -> BTreeMap<RowKey, (usize, usize)> {
    let mut counts: BTreeMap<RowKey, (usize, usize)> = BTreeMap::new();
    for (key, pod) in &snapshot.pods {
        if finished(pod) {
            continue;
        }
        let owner = owner(pod);
        let owner = owner.as_ref().map(|(k, n)| (*k, n.as_str()));
        if let Some(row) = resource_of(kind, key, owner) {
            let c = counts.entry(row).or_default();
            c.1 += 1;
            if is_meshed(pod) {
                c.0 += 1;
            }
        }
    }
    counts
}

/// The samples of a counter the proxy creates on first use (the
/// authorization refusals): when the series first appears inside `range`
/// after a scrape of the same proxy without it, that scrape counted 0, so
/// the first refusals count as an increase. (Prometheus' `increase` would
/// take the first value as the baseline and miss them; with one series per
/// proxy, that would hide every proxy's first refusals.)
pub fn lazy_counter(
    ring: &TargetRing,
    mut samples: Vec<(f64, f64)>,
    range: Range,
) -> Vec<(f64, f64)> {
    if let Some(&(first, _)) = samples.first() {
        if let Some(before) = ring.scrape_before(first, range.start) {
            samples.insert(0, (before, 0.0));
        }
    }
    samples
}

/// Every series of a ring with its samples in `range` (the one place that
/// knows how the ring is read).
pub fn series(
    ring: &TargetRing,
    range: Range,
) -> impl Iterator<Item = (&SeriesKey, Vec<(f64, f64)>)> {
    ring.series(range.start, range.end)
        .map(|(key, samples)| (key, samples.collect::<Vec<_>>()))
        .filter(|(_, samples)| !samples.is_empty())
}
