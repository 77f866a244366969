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
//! Every round (one simulated scrape interval) each proxy serves a few
//! dozen requests, is rendered with the proxy's encoder, reduced with
//! `weft_metrics_api::exposition::reduce` and recorded into one
//! `weft_metrics_api::ring::Rings`, then the rings expire. A counting
//! global allocator gives the bytes the rings hold (the live heap after
//! recording minus before, and again what dropping them frees).
//!
//! Replicas of one deployment share label sets once target labels are
//! split off; `--replicas 1` makes every proxy's labels unique (the worst
//! case for interning).

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

/// One simulated proxy: its metrics and the label sets its traffic uses.
struct SimProxy {
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
    rings_bytes: i64,
    rings_bytes_freed_on_drop: i64,
    rings_live_blocks: i64,
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
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft-bench-metrics: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    if args.proxies == 0 || args.scrapes < 2 || args.replicas == 0 || args.threads == 0 {
        bail!("need --proxies, --replicas, --threads ≥ 1 and --scrapes ≥ 2");
    }
    let wall = Instant::now();
    let interval = args.interval_secs as f64;
    let deployments = args.proxies.div_ceil(args.replicas).max(4);
    let mut proxies: Vec<SimProxy> = (0..args.proxies)
        .map(|i| SimProxy::new(i, args.replicas, deployments))
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
        let chunk = args.proxies.div_ceil(args.threads);
        let results: Vec<anyhow::Result<Vec<Scraped>>> = std::thread::scope(|s| {
            let handles: Vec<_> = proxies
                .chunks_mut(chunk)
                .enumerate()
                .map(|(n, part)| s.spawn(move || scrape_all(n * chunk, part)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("worker panicked"))))
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
                RecordOutcome::Recorded { refused_series: r, .. } => refused_series += r,
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
    let rings_bytes = held.bytes_allocated as i64 - held.bytes_deallocated as i64;
    let rings_live_blocks = held.allocations as i64 - held.deallocations as i64;
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
        .map(|(_, r)| r.series(f64::MIN, f64::MAX).map(|(_, s)| s.count()).sum::<usize>())
        .sum();
    let series: usize = rings.iter().map(|(_, r)| r.series_count()).sum();

    let before_drop = GLOBAL.stats();
    drop(rings);
    let after_drop = GLOBAL.stats();
    let freed = (after_drop.bytes_deallocated - before_drop.bytes_deallocated) as i64
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
        rings_bytes,
        rings_bytes_freed_on_drop: freed,
        rings_live_blocks,
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
    println!("{}", markdown(&figures));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&figures)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// One proxy's scrape, rendered and reduced by a worker.
struct Scraped {
    index: usize,
    reduced: Reduced,
    reduce_ns: u64,
    text_bytes: usize,
    text_lines: usize,
}

/// Serves one round of traffic on each proxy, renders and reduces it.
fn scrape_all(first: usize, proxies: &mut [SimProxy]) -> anyhow::Result<Vec<Scraped>> {
    let mut out = Vec::with_capacity(proxies.len());
    for (i, p) in proxies.iter_mut().enumerate() {
        p.round();
        let text = p.metrics.encode();
        let start = Instant::now();
        let reduced = exposition::reduce(&text)
            .with_context(|| format!("reducing proxy {}'s exposition", first + i))?;
        let reduce_ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        out.push(Scraped {
            index: first + i,
            reduced,
            reduce_ns,
            text_bytes: text.len(),
            text_lines: text.bytes().filter(|&b| b == b'\n').count(),
        });
    }
    Ok(out)
}

fn markdown(f: &Figures) -> String {
    let mib = |b: f64| b / (1024.0 * 1024.0);
    format!(
        "### Metrics rings: {} proxies × {} scrapes ({} pods per deployment)\n\n\
         | figure | value |\n|---|---|\n\
         | exposition per scrape | {:.0} KiB, {:.0} lines ({:.0} of kept families) |\n\
         | series per proxy after reduction | {:.0} |\n\
         | rings heap (counting allocator) | {:.1} MiB ({:.1} MiB freed on drop, {} blocks) |\n\
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
        mib(f.rings_bytes as f64),
        mib(f.rings_bytes_freed_on_drop as f64),
        f.rings_live_blocks,
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
    fn new(index: usize, replicas: usize, deployments: usize) -> anyhow::Result<Self> {
        let d = index / replicas;
        let r = index % replicas;
        let deploy = |n: usize| format!("deploy-{}", n % deployments);
        let identity =
            |n: usize| format!("{}.bench.serviceaccount.identity.weft.cluster.local", deploy(n));
        let authority = |n: usize| format!("{}.bench.svc.cluster.local:8080", deploy(n));
        let workload = weft_proxy::config::Workload::parse(&format!(
            "bench/deployment/{}/{}-7c9d8f-{r}",
            deploy(d),
            deploy(d)
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
            .map(|name| metrics.route.labels(Direction::Outbound, &dst, &name.into()))
            .collect();
        Ok(SimProxy {
            metrics,
            inbound,
            outbound,
            routes,
            conns,
            rng: fastrand::Rng::with_seed(index as u64),
        })
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
