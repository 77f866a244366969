//! The results: a markdown table for people and JSON for tools.

use crate::load::RunResult;
use crate::{RunArgs, Topology};
use serde::Serialize;

/// Everything measured in one run.
#[derive(Debug, Serialize)]
pub struct Results {
    body_bytes: usize,
    seconds_per_rate: u64,
    connections: usize,
    proxy_cores: usize,
    rates: Vec<RateRow>,
    saturation: Vec<SaturationRow>,
}

/// One topology at one fixed rate.
#[derive(Debug, Serialize)]
pub struct RateRow {
    topology: Topology,
    rate: u32,
    achieved_rps: f64,
    requests: u64,
    errors: u64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    /// CPU milliseconds per 1,000 requests, one entry per proxy.
    cpu_ms_per_1k: Vec<f64>,
    /// Peak RSS in MiB, one entry per proxy.
    peak_rss_mib: Vec<f64>,
}

/// One topology's closed-loop maximum.
#[derive(Debug, Serialize)]
pub struct SaturationRow {
    topology: Topology,
    rps: f64,
}

impl Results {
    /// Empty results for a run with `args`.
    pub fn new(args: &RunArgs) -> Self {
        Self {
            body_bytes: args.body,
            seconds_per_rate: args.seconds,
            connections: args.connections,
            proxy_cores: args.proxy_cores,
            rates: Vec::new(),
            saturation: Vec::new(),
        }
    }

    /// Records a fixed-rate run.
    pub fn add_rate(
        &mut self,
        topology: Topology,
        rate: u32,
        run: &RunResult,
        cpu: Vec<f64>,
        rss: Vec<f64>,
    ) {
        self.rates.push(RateRow {
            topology,
            rate,
            achieved_rps: run.achieved_rps,
            requests: run.completed,
            errors: run.errors,
            p50_ms: run.quantile_ms(0.5),
            p90_ms: run.quantile_ms(0.9),
            p99_ms: run.quantile_ms(0.99),
            p999_ms: run.quantile_ms(0.999),
            max_ms: run.histogram.max() as f64 / 1000.0,
            cpu_ms_per_1k: cpu,
            peak_rss_mib: rss,
        });
    }

    /// Records a saturation run.
    pub fn add_saturation(&mut self, topology: Topology, rps: f64) {
        self.saturation.push(SaturationRow { topology, rps });
    }

    fn direct(&self, rate: u32) -> Option<&RateRow> {
        self.rates
            .iter()
            .find(|r| r.topology == Topology::Direct && r.rate == rate)
    }

    /// The tables, with latency added over the direct baseline.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "\n### Fixed-rate latency ({} B responses, {} s per rate, open loop, latency-corrected)\n\n",
            self.body_bytes, self.seconds_per_rate
        );
        out.push_str("| topology | rate | achieved | p50 ms | p90 ms | p99 ms | p99.9 ms | added p50 ms | added p99 ms | CPU ms / 1k req (per proxy) | peak RSS MiB (per proxy) | errors |\n");
        out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|\n");
        for r in &self.rates {
            let (add50, add99) = match self.direct(r.rate) {
                Some(d) if r.topology != Topology::Direct => (
                    format!("{:+.3}", r.p50_ms - d.p50_ms),
                    format!("{:+.3}", r.p99_ms - d.p99_ms),
                ),
                _ => ("–".into(), "–".into()),
            };
            let list = |v: &[f64], prec: usize| {
                if v.is_empty() {
                    "–".to_string()
                } else {
                    v.iter()
                        .map(|x| format!("{x:.prec$}"))
                        .collect::<Vec<_>>()
                        .join(" / ")
                }
            };
            out.push_str(&format!(
                "| {:?} | {} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {add50} | {add99} | {} | {} | {} |\n",
                r.topology,
                r.rate,
                r.achieved_rps,
                r.p50_ms,
                r.p90_ms,
                r.p99_ms,
                r.p999_ms,
                list(&r.cpu_ms_per_1k, 1),
                list(&r.peak_rss_mib, 1),
                r.errors
            ));
        }
        if !self.saturation.is_empty() {
            let direct = self
                .saturation
                .iter()
                .find(|s| s.topology == Topology::Direct)
                .map(|s| s.rps);
            out.push_str("\n### Maximum throughput (closed loop)\n\n| topology | req/s | × direct |\n|---|---:|---:|\n");
            for s in &self.saturation {
                let ratio = direct.map_or("–".to_string(), |d| format!("{:.2}", s.rps / d));
                out.push_str(&format!("| {:?} | {:.0} | {ratio} |\n", s.topology, s.rps));
            }
        }
        out
    }
}
