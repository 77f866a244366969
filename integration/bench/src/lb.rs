//! `weft-bench lb`: how the balancing strategies cope with a replica that
//! turns slow.
//!
//! Ten in-process backends sit behind one service in a real
//! `weft-controller` (file feed); a client proxy resolves the name and
//! balances. Open-loop load runs at a fixed rate; for the middle half of
//! the run one backend answers after 1 s. Each strategy gets a fresh proxy
//! in the same run, so the rows compare like with like. A request slower
//! than the timeout (1 s) counts as failed.

use crate::load::{self, Faults, RunResult};
use anyhow::Context;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use weft_test_support::controller::ControllerProcess;
use weft_test_support::proxy::ProxyBuilder;

/// Flags of `weft-bench lb`.
#[derive(Debug, clap::Args)]
pub struct LbArgs {
    /// Requests per second.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Measured seconds per strategy.
    #[arg(long, default_value_t = 12)]
    seconds: u64,
    /// Backends behind the service.
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// Latency of the slow backend, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    slow_ms: u64,
    /// Requests slower than this (ms) count as failed.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// Strategies to compare (WEFT_PROXY_BALANCER values).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "round-robin,least-loaded,peak-ewma"
    )]
    strategies: Vec<String>,
}

/// Runs the comparison and prints a markdown table.
pub async fn run(args: LbArgs, proxy_bin: &Path, controller_bin: &Path) -> anyhow::Result<()> {
    let mut faults = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..args.endpoints {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        ports.push(listener.local_addr()?.port());
        let f = Arc::new(Faults::default());
        faults.push(f.clone());
        tokio::spawn(load::serve(listener, 1024, f));
    }
    let config = tempfile::tempdir()?;
    let mut yaml = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: bench}\nspec:\n  ports: [{name: http, port: 80, targetPort: 8080}]\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: api, namespace: bench}\nsubsets:\n",
    );
    for port in &ports {
        yaml.push_str(&format!(
            "- addresses: [{{ip: 127.0.0.1}}]\n  ports: [{{name: http, port: {port}}}]\n"
        ));
    }
    std::fs::write(config.path().join("api.yaml"), yaml)?;
    let ctl = ControllerProcess::start_with_config(controller_bin, "24h", config.path())
        .await
        .context("starting weft-controller")?;

    let uri = "http://api.bench.svc.cluster.local/";
    let total = Duration::from_secs(args.seconds);
    let mut rows = Vec::new();
    // First a baseline: the default balancer with every replica fast, so
    // the slow-replica rows can be read as a ratio to it.
    let runs = std::iter::once(("peak-ewma", false))
        .chain(args.strategies.iter().map(|s| (s.as_str(), true)));
    for (strategy, with_slow) in runs {
        let proxy: ProxyBuilder = ctl.proxy(proxy_bin, "bench", "client")?;
        let proxy = proxy
            .env("WEFT_PROXY_DESTINATION_ADDR", ctl.destination_addr)
            .env("WEFT_PROXY_BALANCER", strategy)
            .env("WEFT_PROXY_LOG", "warn")
            .spawn()
            .await?;
        // Warm up discovery and connections.
        load::open_loop(proxy.outbound, uri, 100, Duration::from_secs(1), 16).await?;

        // Backend 0 turns slow for the middle half of the measured window
        // (which starts after the generator's one-second warm-up).
        let slow = faults[0].clone();
        let slow_ms = if with_slow { args.slow_ms } else { 0 };
        let switch = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1) + total / 4).await;
            slow.delay_ms.store(slow_ms, Ordering::Relaxed);
            tokio::time::sleep(total / 2).await;
            slow.delay_ms.store(0, Ordering::Relaxed);
        });
        let timeout = Some(Duration::from_millis(args.timeout_ms));
        let run = load::open_loop_with_timeout(proxy.outbound, uri, args.rate, total, 64, timeout)
            .await?;
        let _ = switch.await;
        faults[0].delay_ms.store(0, Ordering::Relaxed);
        eprintln!(
            "{strategy}: p99 {:.1} ms, {} errors",
            run.quantile_ms(0.99),
            run.errors
        );
        let label = if with_slow {
            strategy.to_string()
        } else {
            "peak-ewma, no slow replica (baseline)".to_string()
        };
        rows.push((label, run));
    }

    println!(
        "\n### Load balancing: {} endpoints, one at {} ms for half the run ({} req/s, {} s, timeout {} ms)\n",
        args.endpoints, args.slow_ms, args.rate, args.seconds, args.timeout_ms
    );
    println!("| strategy | p50 ms | p99 ms | p99.9 ms | p99 / baseline p99 | success within timeout |\n|---|---:|---:|---:|---:|---:|");
    let baseline = rows.first().map_or(0.0, |(_, r)| r.quantile_ms(0.99));
    for (strategy, run) in &rows {
        println!(
            "| {strategy} | {:.2} | {:.2} | {:.2} | {:.2}× | {:.2}% |",
            run.quantile_ms(0.5),
            run.quantile_ms(0.99),
            run.quantile_ms(0.999),
            run.quantile_ms(0.99) / baseline.max(0.001),
            success(run) * 100.0
        );
    }
    Ok(())
}

/// The share of requests answered with 200 (within the timeout, if any).
pub fn success(run: &RunResult) -> f64 {
    let all = run.completed + run.errors;
    if all == 0 {
        return 0.0;
    }
    run.completed as f64 / all as f64
}
