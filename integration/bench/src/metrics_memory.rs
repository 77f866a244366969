//! `weft-bench-metrics`: what the controller's metrics store costs with
//! many proxies, measured rather than estimated.
//!
//! Each simulated proxy is the proxy's own `weft_proxy::metrics::Metrics`
//! (same families, names, labels and encoder as a running `weft-proxy`),
//! with a workload label set (`WEFT_PROXY_WORKLOAD`-style
//! `bench/deployment/deploy-D/deploy-D-7c9d8f-R`) and this traffic:
//! - inbound from 3 clients (mTLS, `client_id` of three other deployments);
//! - outbound to 2 services of 2 endpoints each (mTLS `server_id`, `dst_*`
//!   labels as the destination service sends them);
//! - every request label set answered with 200, 404 (success) and 503
//!   (failure), so 3 status codes and 26 latency buckets each;
//! - TCP series for each client, each endpoint, and the two local legs;
//! - a ServiceProfile on the first service with 2 routes and `[DEFAULT]`,
//!   effective and actual.
//!
//! Every round (one simulated scrape interval) each deployment's first pod
//! serves a few dozen requests per label set and is rendered with the
//! proxy's encoder; its replicas serve the same traffic, so their
//! expositions are that text with their own `pod` label (rendering is the
//! proxy's cost, not the controller's, and dominates otherwise). Every
//! proxy's text is then reduced with `weft_metrics_api::exposition::reduce`
//! and recorded into one `weft_metrics_api::ring::Rings` on its own, and
//! the rings expire. A counting global allocator gives the bytes the rings
//! hold: what dropping them frees (the live heap's growth over the run is
//! printed beside it); bytes are as requested, without the allocator's own
//! per-block overhead (the block count is printed). Timings include the
//! counting allocator's bookkeeping.
//!
//! Replicas of one deployment share label sets once target labels are
//! split off; `--replicas 1` makes every proxy's labels unique (the worst
//! case for interning) and renders every proxy.

use anyhow::{bail, Context};
use clap::Parser;
use hdrhistogram::Histogram;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft_metrics_api::exposition::{self, Family, Reduced};
use weft_metrics_api::promql;
use weft_metrics_api::ring::{Limits, RecordOutcome, Rings};
use weft_proxy::metrics::{Direction, DstLabels, Metrics, RequestLabels, TcpConnMetrics, Tls};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Flags of `weft-bench-metrics`.
#[derive(Debug, Parser)]
#[command(
    name = "weft-bench-metrics",
    about = "Memory and CPU of the controller's metrics rings with many proxies"
)]
struct Args {
    /// Simulated proxies.
    #[arg(long, default_value_t = 1000)]
    proxies: usize,
    /// Pods per deployment (label sets are shared within a deployment).
    #[arg(long, default_value_t = 10)]
    replicas: usize,
    /// Scrapes recorded per proxy (31 = 5 minutes at 10 s).
    #[arg(long, default_value_t = 31)]
    scrapes: usize,
    /// Simulated seconds between scrapes.
    #[arg(long, default_value_t = 10)]
    interval_secs: u64,
    /// Threads that render and reduce (recording is on one thread, as in
    /// the controller).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Also write the figures as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// One simulated deployment's first proxy: its metrics and the label sets
/// its traffic uses, and the proxies (index, pod) that serve the same.
struct SimProxy {
    index: usize,
    pod: String,
    replicas: Vec<(usize, String)>,
    metrics: Metrics,
    inbound: Vec<RequestLabels>,
    outbound: Vec<RequestLabels>,
    routes: Vec<weft_proxy::metrics::route::RouteLabels>,
    /// Open connections per TCP label set (dropping one records a close).
    conns: Vec<TcpConnMetrics>,
    rng: fastrand::Rng,
}

/// The figures, printed and optionally written as JSON.
#[derive(Debug, serde::Serialize)]
struct Figures {
    proxies: usize,
    replicas: usize,
    scrapes: usize,
    exposition_bytes_per_scrape: f64,
    exposition_lines_per_scrape: f64,
    kept_lines_per_scrape: f64,
    series_per_proxy: f64,
    scrapes_held_per_proxy: f64,
    /// What dropping the rings frees: exactly the heap they held.
    rings_bytes: i64,
    /// The live heap's growth over the run (the rings, plus one-time
    /// allocations such as thread bookkeeping).
    heap_growth_bytes: i64,
    heap_growth_blocks: i64,
    rings_bytes_per_proxy: f64,
    rings_approx_bytes: usize,
    bytes_per_sample: f64,
    reduce_us_p50: f64,
    reduce_us_p99: f64,
    reduce_us_mean: f64,
    reduce_mb_per_s: f64,
    record_us_mean: f64,
    expire_ms_mean: f64,
    refused_series: usize,
    check_rps_true: f64,
    check_rps_computed: f64,
    wall_secs: f64,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let result = run(&args).and_then(|figures| {
        println!("{}", markdown(&figures));
        if let Some(path) = &args.json {
            std::fs::write(path, serde_json::to_string_pretty(&figures)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft-bench-metrics: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Simulates, records and measures (see the module docs).
fn run(args: &Args) -> anyhow::Result<Figures> {
    if args.proxies == 0 || args.scrapes < 2 || args.replicas == 0 || args.threads == 0 {
        bail!("need --proxies, --replicas, --threads ≥ 1 and --scrapes ≥ 2");
    }
    let wall = Instant::now();
    let interval = args.interval_secs as f64;
    let deployments = args.proxies.div_ceil(args.replicas);
    let mut proxies: Vec<SimProxy> = (0..deployments)
        .map(|d| SimProxy::new(d, args.replicas, args.proxies, deployments.max(4)))
        .collect::<anyhow::Result<_>>()?;
    // One round of every status on every label set, so the proxies' own
    // series exist before the baseline and only the rings grow after it.
    for p in &mut proxies {
        p.warm_up();
    }
    let mut reduce_us = Histogram::<u64>::new(3).context("histogram")?;
    let mut record_ns: u128 = 0;
    let mut expire_ns: u128 = 0;
    let mut text_bytes: usize = 0;
    let mut text_lines: usize = 0;
    let mut kept_lines: usize = 0;
    let mut refused_series = 0;
    let mut batch: Vec<(usize, Reduced)> = Vec::with_capacity(args.proxies);
    let limits = Limits {
        retention: Duration::from_secs(args.interval_secs * (args.scrapes as u64 - 1)),
        ..Limits::default()
    };

    let region = Region::new(GLOBAL);
    let mut rings: Rings<usize> = Rings::new(limits);
    let t0 = 1_700_000_000.0;
    for scrape in 0..args.scrapes {
        let at = t0 + scrape as f64 * interval;
        let chunk = deployments.div_ceil(args.threads);
        let results: Vec<anyhow::Result<Vec<Scraped>>> = std::thread::scope(|s| {
            let handles: Vec<_> = proxies
                .chunks_mut(chunk)
                .map(|part| s.spawn(move || scrape_all(part)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("worker panicked")))
                })
                .collect()
        });
        for r in results {
            for s in r? {
                reduce_us.record(s.reduce_ns.div_ceil(1000))?;
                text_bytes += s.text_bytes;
                text_lines += s.text_lines;
                kept_lines += s.reduced.raw_series;
                batch.push((s.index, s.reduced));
            }
        }
        let start = Instant::now();
        for (index, reduced) in batch.drain(..) {
            match rings.record(index, at, reduced) {
                RecordOutcome::Recorded {
                    refused_series: r, ..
                } => refused_series += r,
                other => bail!("proxy {index} scrape {scrape}: {other:?}"),
            }
        }
        record_ns += start.elapsed().as_nanos();
        let start = Instant::now();
        rings.expire(at);
        expire_ns += start.elapsed().as_nanos();
    }
    batch.shrink_to_fit();
    let held = region.change();
    let heap_growth_bytes = held.bytes_allocated as i64 - held.bytes_deallocated as i64;
    let heap_growth_blocks = held.allocations as i64 - held.deallocations as i64;
    let approx = rings.approx_bytes();

    // A check of the whole path: proxy 0's inbound RPS over the last
    // minute, as `weft stat` computes it, against what was sent.
    let end = t0 + (args.scrapes - 1) as f64 * interval;
    let window = 60.0_f64.min(end - t0);
    let ring = rings.get(&0).context("proxy 0 recorded")?;
    let mut computed = 0.0;
    for (key, samples) in ring.series_of(Family::ResponseTotal, end - window, end) {
        if key.labels().get("direction") == Some("inbound") {
            let samples: Vec<_> = samples.collect();
            computed += promql::rate(&samples, end - window, end).unwrap_or(0.0);
        }
    }
    let true_rps = INBOUND_PER_ROUND as f64 / interval;
    let samples: usize = rings
        .iter()
        .map(|(_, r)| {
            r.series(f64::MIN, f64::MAX)
                .map(|(_, s)| s.count())
                .sum::<usize>()
        })
        .sum();
    let series: usize = rings.iter().map(|(_, r)| r.series_count()).sum();
    let rows: usize = rings.iter().map(|(_, r)| r.scrapes()).sum();

    let before_drop = GLOBAL.stats();
    drop(rings);
    let after_drop = GLOBAL.stats();
    let rings_bytes = (after_drop.bytes_deallocated - before_drop.bytes_deallocated) as i64
        - (after_drop.bytes_allocated - before_drop.bytes_allocated) as i64;

    let scrapes_total = (args.proxies * args.scrapes) as f64;
    let figures = Figures {
        proxies: args.proxies,
        replicas: args.replicas,
        scrapes: args.scrapes,
        exposition_bytes_per_scrape: text_bytes as f64 / scrapes_total,
        exposition_lines_per_scrape: text_lines as f64 / scrapes_total,
        kept_lines_per_scrape: kept_lines as f64 / scrapes_total,
        series_per_proxy: series as f64 / args.proxies as f64,
        scrapes_held_per_proxy: rows as f64 / args.proxies as f64,
        rings_bytes,
        heap_growth_bytes,
        heap_growth_blocks,
        rings_bytes_per_proxy: rings_bytes as f64 / args.proxies as f64,
        rings_approx_bytes: approx,
        bytes_per_sample: rings_bytes as f64 / samples as f64,
        reduce_us_p50: reduce_us.value_at_quantile(0.5) as f64,
        reduce_us_p99: reduce_us.value_at_quantile(0.99) as f64,
        reduce_us_mean: reduce_us.mean(),
        reduce_mb_per_s: (text_bytes as f64 / 1e6) / (reduce_us.mean() * scrapes_total / 1e6),
        record_us_mean: record_ns as f64 / 1000.0 / scrapes_total,
        expire_ms_mean: expire_ns as f64 / 1e6 / args.scrapes as f64,
        refused_series,
        check_rps_true: true_rps,
        check_rps_computed: computed,
        wall_secs: wall.elapsed().as_secs_f64(),
    };
    Ok(figures)
}

/// One proxy's scrape, rendered and reduced by a worker.
struct Scraped {
    index: usize,
    reduced: Reduced,
    reduce_ns: u64,
    text_bytes: usize,
    text_lines: usize,
}

/// Serves one round of traffic on each deployment's first proxy, renders
/// it, and reduces its and its replicas' expositions.
fn scrape_all(leaders: &mut [SimProxy]) -> anyhow::Result<Vec<Scraped>> {
    let mut out = Vec::new();
    for p in leaders.iter_mut() {
        p.round();
        let text = p.metrics.encode();
        for (index, pod) in &p.replicas {
            let replica;
            let text = if *index == p.index {
                &text
            } else {
                replica = text.replace(&p.pod_label(&p.pod), &p.pod_label(pod));
                &replica
            };
            let start = Instant::now();
            let reduced = exposition::reduce(text)
                .with_context(|| format!("reducing proxy {index}'s exposition"))?;
            let reduce_ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            if reduced.target_labels.get("pod") != Some(pod.as_str()) {
                bail!("proxy {index}: target labels {}", reduced.target_labels);
            }
            out.push(Scraped {
                index: *index,
                reduced,
                reduce_ns,
                text_bytes: text.len(),
                text_lines: text.bytes().filter(|&b| b == b'\n').count(),
            });
        }
    }
    Ok(out)
}

fn markdown(f: &Figures) -> String {
    let mib = |b: f64| b / (1024.0 * 1024.0);
    format!(
        "### Metrics rings: {} proxies × {} scrapes ({} pods per deployment)\n\n\
         | figure | value |\n|---|---|\n\
         | exposition per scrape | {:.0} KiB, {:.0} lines ({:.0} of kept families) |\n\
         | series per proxy after reduction | {:.0} ({:.0} scrapes held) |\n\
         | rings heap (freed on drop, counting allocator) | {:.1} MiB (live heap grew {:.1} MiB in {} blocks) |\n\
         | rings heap per proxy | {:.1} KiB |\n\
         | rings heap per stored sample | {:.1} bytes |\n\
         | `approx_bytes()` estimate | {:.1} MiB |\n\
         | parse+reduce per scrape | p50 {:.0} µs, p99 {:.0} µs, mean {:.0} µs ({:.0} MB/s) |\n\
         | record per scrape | {:.1} µs |\n\
         | expire of all targets | {:.2} ms |\n\
         | series refused by the cap | {} |\n\
         | check: proxy 0 inbound RPS (1 m) | {:.2} computed, {:.2} sent |\n\
         | wall time | {:.1} s |\n",
        f.proxies,
        f.scrapes,
        f.replicas,
        f.exposition_bytes_per_scrape / 1024.0,
        f.exposition_lines_per_scrape,
        f.kept_lines_per_scrape,
        f.series_per_proxy,
        f.scrapes_held_per_proxy,
        mib(f.rings_bytes as f64),
        mib(f.heap_growth_bytes as f64),
        f.heap_growth_blocks,
        f.rings_bytes_per_proxy / 1024.0,
        f.bytes_per_sample,
        mib(f.rings_approx_bytes as f64),
        f.reduce_us_p50,
        f.reduce_us_p99,
        f.reduce_us_mean,
        f.reduce_mb_per_s,
        f.record_us_mean,
        f.expire_ms_mean,
        f.refused_series,
        f.check_rps_computed,
        f.check_rps_true,
        f.wall_secs,
    )
}

// === impl SimProxy ===

/// Statuses every request label set answers with, and whether each counts
/// as success.
const STATUSES: [(u16, bool); 3] = [(200, true), (404, true), (503, false)];

/// Requests per label set per round.
const REQUESTS_PER_ROUND: usize = 12;

/// Inbound requests per round (three clients), for the RPS check.
const INBOUND_PER_ROUND: usize = 3 * REQUESTS_PER_ROUND;

impl SimProxy {
    /// Deployment `d` of `deployments` (at least 4, for its peers), whose
    /// pods are proxies `d * replicas ..` (below `proxies`).
    fn new(d: usize, replicas: usize, proxies: usize, deployments: usize) -> anyhow::Result<Self> {
        let deploy = |n: usize| format!("deploy-{}", n % deployments);
        let pod = |r: usize| format!("{}-7c9d8f-{r}", deploy(d));
        let index = d * replicas;
        let replicas: Vec<(usize, String)> = (0..replicas)
            .map(|r| (index + r, pod(r)))
            .filter(|(i, _)| *i < proxies)
            .collect();
        let identity = |n: usize| {
            format!(
                "{}.bench.serviceaccount.identity.weft.cluster.local",
                deploy(n)
            )
        };
        let authority = |n: usize| format!("{}.bench.svc.cluster.local:8080", deploy(n));
        let workload = weft_proxy::config::Workload::parse(&format!(
            "bench/deployment/{}/{}",
            deploy(d),
            pod(0)
        ))
        .map_err(anyhow::Error::msg)?;
        let metrics = Metrics::new(true, workload.metric_labels());
        let http = &metrics.http;

        let inbound = (1..=3)
            .map(|c| {
                http.request_labels(
                    Direction::Inbound,
                    &authority(d),
                    Tls::Client(identity(d + c).into()),
                    DstLabels::default(),
                )
            })
            .collect();
        let mut outbound = Vec::new();
        let mut conns = Vec::new();
        for s in [d + 1, d + 2] {
            for e in 0..2 {
                let dst: Vec<(String, String)> = vec![
                    ("deployment".into(), deploy(s)),
                    ("namespace".into(), "bench".into()),
                    ("pod".into(), format!("{}-7c9d8f-{e}", deploy(s))),
                    ("service".into(), deploy(s)),
                    ("serviceaccount".into(), deploy(s)),
                ];
                let server = Tls::Server(identity(s).into());
                outbound.push(http.request_labels(
                    Direction::Outbound,
                    &authority(s),
                    server.clone(),
                    DstLabels(Some(dst.into())),
                ));
                conns.push(metrics.tcp.open(Direction::Outbound, "dst", server));
            }
        }
        for c in 1..=3 {
            let client = Tls::Client(identity(d + c).into());
            conns.push(metrics.tcp.open(Direction::Inbound, "src", client));
        }
        let plain = metrics.tcp.plaintext();
        conns.push(metrics.tcp.open(Direction::Inbound, "dst", plain.clone()));
        conns.push(metrics.tcp.open(Direction::Outbound, "src", plain));

        let dst: Arc<str> = authority(d + 1).into();
        let routes = ["GET /books/{id}", "POST /books", "[DEFAULT]"]
            .into_iter()
            .map(|name| {
                metrics
                    .route
                    .labels(Direction::Outbound, &dst, &name.into())
            })
            .collect();
        Ok(SimProxy {
            index,
            pod: pod(0),
            replicas,
            metrics,
            inbound,
            outbound,
            routes,
            conns,
            rng: fastrand::Rng::with_seed(d as u64),
        })
    }

    /// How the proxy's text starts every series of `pod` (its constant
    /// labels come first), so a replica's text is the leader's with this
    /// replaced.
    fn pod_label(&self, pod: &str) -> String {
        format!("{{namespace=\"bench\",pod=\"{pod}\",")
    }

    /// Requests of every status on every label set.
    fn warm_up(&mut self) {
        for (status, ok) in STATUSES {
            for l in self.inbound.iter().chain(&self.outbound) {
                self.serve(l, status, ok, 3.0);
            }
            for rl in &self.routes {
                let route = &self.metrics.route;
                for actual in [false, true] {
                    route.request(rl, actual);
                    route.latency(rl, status, 3.0, actual);
                    route.response(rl, status, ok, actual);
                }
            }
        }
    }

    /// One scrape interval of traffic.
    fn round(&mut self) {
        let labels: Vec<RequestLabels> =
            self.inbound.iter().chain(&self.outbound).cloned().collect();
        for l in labels {
            for _ in 0..REQUESTS_PER_ROUND {
                let (status, ok) = self.status();
                let ms = self.latency_ms();
                self.serve(&l, status, ok, ms);
            }
        }
        for i in 0..self.routes.len() {
            for _ in 0..REQUESTS_PER_ROUND {
                let (status, ok) = self.status();
                let ms = self.latency_ms();
                let rl = &self.routes[i];
                let route = &self.metrics.route;
                route.request(rl, false);
                route.latency(rl, status, ms, false);
                route.response(rl, status, ok, false);
                // A failure is retried once.
                let attempts = if ok { 1 } else { 2 };
                for _ in 0..attempts {
                    route.request(rl, true);
                    route.latency(rl, status, ms / attempts as f64, true);
                    route.response(rl, status, ok, true);
                }
            }
        }
        for c in &self.conns {
            c.read_bytes.inc_by(self.rng.u64(1_000..50_000));
            c.write_bytes.inc_by(self.rng.u64(1_000..200_000));
        }
    }

    fn serve(&self, labels: &RequestLabels, status: u16, ok: bool, ms: f64) {
        let http = &self.metrics.http;
        http.request(labels);
        http.latency(labels, status, ms);
        http.response(labels, status, ok);
    }

    /// 90 % 200, 7 % 404, 3 % 503.
    fn status(&mut self) -> (u16, bool) {
        match self.rng.u32(0..100) {
            0..90 => STATUSES[0],
            90..97 => STATUSES[1],
            _ => STATUSES[2],
        }
    }

    /// Mostly a few milliseconds, with a slow tail.
    fn latency_ms(&mut self) -> f64 {
        let base = 1.0 + self.rng.f64() * 20.0;
        if self.rng.u32(0..100) < 5 {
            base * 50.0
        } else {
            base
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_run_measures_the_real_proxy_output() {
        let args = Args::parse_from([
            "weft-bench-metrics",
            "--proxies",
            "12",
            "--replicas",
            "3",
            "--scrapes",
            "8",
        ]);
        let f = run(&args).unwrap();
        // 7 request label sets × (2 classifications + 26 buckets), 7 TCP
        // label sets × 3 families, 3 routes × (2 + 2 + 26).
        assert_eq!(f.series_per_proxy, (7 * 28 + 7 * 3 + 3 * 30) as f64);
        // 70 s of retention at 10 s: the 8th scrape's oldest is dropped.
        assert_eq!(f.scrapes_held_per_proxy, 7.0);
        assert_eq!(f.refused_series, 0);
        assert!(
            f.rings_bytes > 0 && f.heap_growth_bytes >= f.rings_bytes,
            "{f:?}"
        );
        let estimate = f.rings_approx_bytes as f64 / f.rings_bytes as f64;
        assert!(
            (0.8..1.25).contains(&estimate),
            "approx_bytes off by {estimate}"
        );
        assert!(
            (f.check_rps_computed - f.check_rps_true).abs() < 1e-9,
            "{f:?}"
        );
        assert!(
            markdown(&f).contains("| series per proxy after reduction | 307 (7 scrapes held) |")
        );
    }
}
