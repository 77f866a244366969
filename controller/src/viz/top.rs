//! `/api/v1/top`: the busiest request paths, from the proxies' live
//! request feeds (`GET /live-requests` on each proxy's admin port).
//!
//! The controller listens to the proxies of the resource asked for, all at
//! once, for the query's duration, and groups what they report by source,
//! destination, method and path. A request between two listened-to
//! proxies is reported by both; only the server's (inbound) report is
//! kept. Bounded: at most [`MAX_PROXIES`] proxies, [`MAX_FEED_BYTES`] per
//! feed, [`MAX_ROWS`] rows.

use super::query::{in_scope, resource_of};
use super::scrape::{admin_client, error_chain};
use super::targets::Target;
use super::{ApiError, Viz};
use crate::destination::endpoints::{owner, service_account};
use crate::store::{ObjectKey, Snapshot};
use futures::StreamExt;
use http_body_util::BodyExt;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;
use weft_metrics_api::api::{TopQuery, TopResponse, TopRow};
use weft_metrics_api::resource::ResourceKind;

/// Most proxies one top query listens to.
pub const MAX_PROXIES: usize = 64;
/// Most bytes read from one proxy's feed.
pub const MAX_FEED_BYTES: usize = 4 * 1024 * 1024;
/// Most rows returned.
pub const MAX_ROWS: usize = 1000;
/// Events per second each proxy may send.
const MAX_RPS: u32 = 100;

/// One line of a proxy's feed: a finished request, or the end summary.
#[derive(Debug, Deserialize)]
struct FeedLine {
    #[serde(default)]
    end: bool,
    #[serde(default)]
    dropped: u64,
    #[serde(default)]
    sampled_out: u64,
    #[serde(default)]
    direction: String,
    #[serde(default)]
    client_addr: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    authority: String,
    #[serde(default)]
    dst: BTreeMap<String, String>,
    #[serde(default)]
    method: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    latency_ms: f64,
    #[serde(default)]
    success: bool,
    #[serde(default)]
    ts_unix: f64,
}

/// A row being built.
struct Acc {
    count: u64,
    successes: u64,
    best: f64,
    worst: f64,
    last: (f64, f64),
}

/// Answers a top query.
pub async fn top(viz: &Viz, q: &TopQuery) -> Result<TopResponse, ApiError> {
    let kind = q.resource.kind;
    if kind.workload_label().is_none() || kind == ResourceKind::Service {
        return Err(ApiError::bad_request(format!(
            "top listens to workloads' proxies: use namespace, deployment, statefulset, \
             daemonset, job or pod, not {kind}"
        )));
    }
    let snapshot = viz.store.snapshot();
    let chosen: Vec<Target> = {
        let state = viz.state();
        state
            .targets
            .values()
            .map(|s| s.target.clone())
            .filter(|t| {
                let owner = t.owner.as_ref().map(|(k, n)| (*k, n.as_str()));
                resource_of(kind, &t.pod, owner).is_some_and(|(ns, name)| {
                    in_scope(&q.scope, &ns) && q.resource.name.as_ref().is_none_or(|n| *n == name)
                })
            })
            .take(MAX_PROXIES)
            .collect()
    };
    if chosen.is_empty() {
        if let Some(name) = &q.resource.name {
            return Err(ApiError::not_found(format!(
                "no meshed {kind} {name} is running (nothing to listen to)"
            )));
        }
    }
    let tapped: BTreeSet<ObjectKey> = chosen.iter().map(|t| t.pod.clone()).collect();
    let client = admin_client(Duration::from_secs(5), Duration::from_secs(1));
    let duration = q.duration;
    let feeds = futures::stream::iter(chosen.clone())
        .map(|t| {
            let client = client.clone();
            async move {
                let feed = listen(&client, &t, duration).await;
                (t, feed)
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let mut dropped = 0;
    let mut rows: HashMap<(String, String, String, String), Acc> = HashMap::new();
    for (target, feed) in feeds {
        let lines = match feed {
            Ok(lines) => lines,
            Err(error) => {
                tracing::debug!(pod = %target.pod, %error, "live request feed failed");
                continue;
            }
        };
        let me = name_of(
            kind,
            &target.pod,
            target.owner.as_ref().map(|(k, n)| (*k, n.as_str())),
        );
        for line in lines {
            if line.end {
                dropped += line.dropped + line.sampled_out;
                continue;
            }
            let (source, destination) = match line.direction.as_str() {
                "inbound" => (client_name(&snapshot, kind, &line), me.clone()),
                "outbound" => {
                    let dst_pod = line
                        .dst
                        .get("pod")
                        .map(|p| ObjectKey::new(line.dst.get("namespace").map_or("", |s| s), p));
                    if dst_pod.is_some_and(|p| tapped.contains(&p)) {
                        continue; // the server's proxy reports it
                    }
                    (me.clone(), dst_name(kind, &line))
                }
                _ => continue,
            };
            let key = (source, destination, line.method.clone(), line.path.clone());
            if !rows.contains_key(&key) && rows.len() >= MAX_ROWS * 4 {
                continue;
            }
            let acc = rows.entry(key).or_insert(Acc {
                count: 0,
                successes: 0,
                best: f64::INFINITY,
                worst: 0.0,
                last: (f64::NEG_INFINITY, 0.0),
            });
            acc.count += 1;
            acc.successes += u64::from(line.success);
            acc.best = acc.best.min(line.latency_ms);
            acc.worst = acc.worst.max(line.latency_ms);
            if line.ts_unix >= acc.last.0 {
                acc.last = (line.ts_unix, line.latency_ms);
            }
        }
    }
    let mut rows: Vec<TopRow> = rows
        .into_iter()
        .map(|((source, destination, method, path), a)| TopRow {
            source,
            destination,
            method,
            path,
            count: a.count,
            best_ms: a.best,
            worst_ms: a.worst,
            last_ms: a.last.1,
            success: a.successes as f64 / a.count.max(1) as f64,
        })
        .collect();
    rows.sort_by(|a, b| {
        b.count.cmp(&a.count).then_with(|| {
            (&a.source, &a.destination, &a.path).cmp(&(&b.source, &b.destination, &b.path))
        })
    });
    rows.truncate(MAX_ROWS);
    Ok(TopResponse {
        duration_seconds: duration.as_secs_f64(),
        proxies: chosen.len(),
        dropped,
        rows,
    })
}

/// Reads one proxy's feed to its end (or its bounds).
async fn listen(
    client: &super::scrape::AdminClient,
    target: &Target,
    duration: Duration,
) -> Result<Vec<FeedLine>, String> {
    let url = format!(
        "http://{}/live-requests?duration={}&sample=1&max_rps={MAX_RPS}",
        target.addr,
        duration.as_secs_f64()
    );
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| e.to_string())?;
    let read = async {
        let rsp = client.get(uri).await.map_err(|e| error_chain(&e))?;
        if rsp.status() != http::StatusCode::OK {
            return Err(format!("GET {url}: HTTP {}", rsp.status()));
        }
        let mut body = rsp.into_body();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| e.to_string())?;
            if let Some(data) = frame.data_ref() {
                if buf.len() + data.len() > MAX_FEED_BYTES {
                    break;
                }
                buf.extend_from_slice(data);
            }
        }
        Ok(buf)
    };
    let buf = match tokio::time::timeout(duration + Duration::from_secs(5), read).await {
        Ok(r) => r?,
        Err(_) => return Err(format!("GET {url}: feed did not end in time")),
    };
    Ok(buf
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice::<FeedLine>(l).ok())
        .collect())
}

/// `deploy/web` for a pod of deployment web (or `po/NAME`).
fn name_of(kind: ResourceKind, pod: &ObjectKey, owner: Option<(&str, &str)>) -> String {
    match (kind, owner) {
        (ResourceKind::Pod | ResourceKind::Namespace, _) | (_, None) => format!("po/{}", pod.name),
        (_, Some((k, n))) => match k.parse::<ResourceKind>() {
            Ok(kind) => format!("{}/{n}", kind.short()),
            Err(_) => format!("{k}/{n}"),
        },
    }
}

/// Who sent an inbound request: the client's identity names its
/// ServiceAccount, whose pods name the workload; else its address.
fn client_name(snapshot: &Snapshot, kind: ResourceKind, line: &FeedLine) -> String {
    if let Some(id) = &line.client_id {
        let mut parts = id.splitn(3, '.');
        if let (Some(sa), Some(ns)) = (parts.next(), parts.next()) {
            let owners: BTreeSet<String> = snapshot
                .pods
                .iter()
                .filter(|(k, p)| k.namespace == ns && service_account(p) == sa)
                .map(|(k, p)| name_of(kind, k, owner(p).as_ref().map(|(k, n)| (*k, n.as_str()))))
                .collect();
            if owners.len() == 1 {
                if let Some(only) = owners.into_iter().next() {
                    return only;
                }
            }
            return format!("sa/{sa}.{ns}");
        }
    }
    let ip = line
        .client_addr
        .as_deref()
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.ip());
    if let Some(ip) = ip {
        let pods: Vec<_> = snapshot.pods_with_ip(ip).collect();
        if let [(key, pod)] = pods.as_slice() {
            return name_of(
                kind,
                key,
                owner(pod).as_ref().map(|(k, n)| (*k, n.as_str())),
            );
        }
        return ip.to_string();
    }
    "-".to_owned()
}

/// Where an outbound request went, from its discovery labels.
fn dst_name(kind: ResourceKind, line: &FeedLine) -> String {
    if let Some(label) = kind.workload_label() {
        if kind != ResourceKind::Namespace && kind != ResourceKind::Pod {
            if let Some(n) = line.dst.get(label) {
                return format!("{}/{n}", kind.short());
            }
        }
    }
    for (label, short) in [
        ("deployment", "deploy"),
        ("statefulset", "sts"),
        ("daemonset", "ds"),
        ("job", "job"),
    ] {
        if let Some(n) = line.dst.get(label) {
            return format!("{short}/{n}");
        }
    }
    if let Some(p) = line.dst.get("pod") {
        return format!("po/{p}");
    }
    line.authority.clone()
}
