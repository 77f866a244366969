//! `weft-bench propagation`: how long an endpoint change takes to reach
//! traffic, with 1, 100 and 1,000 services in the mesh.
//!
//! A real `weft-controller` serves N services from a config directory (one
//! file each); a client proxy has resolved every one of them, so the
//! controller holds N live `Get` streams. Each trial replaces the one
//! endpoint of service 0 with a fresh backend (rewriting that service's
//! file) and sends requests to it back to back; the latency is from the
//! file's rename to the first request the new backend receives. It
//! includes the file feed's polling (`--config-poll-interval`, set low
//! here and printed with the results); the Kubernetes feed is pushed by
//! watches and has no such term.

use crate::load::{self, Faults};
use anyhow::Context;
use hdrhistogram::Histogram;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use weft_test_support::controller::{ControllerOptions, ControllerProcess};

/// Flags of `weft-bench propagation`.
#[derive(Debug, clap::Args)]
pub struct PropagationArgs {
    /// Mesh sizes (number of services) to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    services: Vec<usize>,
    /// Endpoint changes measured per mesh size.
    #[arg(long, default_value_t = 20)]
    trials: usize,
    /// The file feed's poll interval (`--config-poll-interval`), ms.
    #[arg(long, default_value_t = 10)]
    poll_ms: u64,
}

/// Runs the measurement and prints a markdown table.
pub async fn run(
    args: PropagationArgs,
    proxy_bin: &Path,
    controller_bin: &Path,
) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for &n in &args.services {
        let hist = measure(&args, n, proxy_bin, controller_bin)
            .await
            .with_context(|| format!("{n} services"))?;
        eprintln!(
            "{n} services: p50 {:.1} ms, max {:.1} ms",
            hist.value_at_quantile(0.5) as f64 / 1000.0,
            hist.max() as f64 / 1000.0
        );
        rows.push((n, hist));
    }
    println!(
        "\n### Update propagation: endpoint change → first request routed to it ({} trials, file feed polled every {} ms)\n",
        args.trials, args.poll_ms
    );
    println!("| services | p50 ms | p90 ms | max ms |\n|---:|---:|---:|---:|");
    for (n, h) in &rows {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "| {n} | {:.1} | {:.1} | {:.1} |",
            ms(0.5),
            ms(0.9),
            h.max() as f64 / 1000.0
        );
    }
    Ok(())
}

fn service_yaml(i: usize, port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: bench}}\nspec:\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: svc-{i}, namespace: bench}}\nsubsets:\n- addresses: [{{ip: 127.0.0.1}}]\n  ports: [{{name: http, port: {port}}}]\n"
    )
}

async fn backend() -> anyhow::Result<(u16, Arc<Faults>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let faults = Arc::new(Faults::default());
    tokio::spawn(load::serve(listener, 64, faults.clone()));
    Ok((port, faults))
}

async fn measure(
    args: &PropagationArgs,
    n: usize,
    proxy_bin: &Path,
    controller_bin: &Path,
) -> anyhow::Result<Histogram<u64>> {
    let config = tempfile::tempdir()?;
    let (port, _) = backend().await?;
    for i in 0..n {
        std::fs::write(
            config.path().join(format!("svc-{i}.yaml")),
            service_yaml(i, port),
        )?;
    }
    let options = ControllerOptions::default().args(&[
        "--config-dir",
        &config.path().display().to_string(),
        "--config-poll-interval",
        &format!("{}ms", args.poll_ms),
    ]);
    let ctl = ControllerProcess::start_with(controller_bin, "24h", options)
        .await
        .context("starting weft-controller")?;
    let proxy = ctl
        .proxy(proxy_bin, "bench", "client")?
        .env("WEFT_PROXY_DESTINATION_ADDR", ctl.destination_addr)
        .env("WEFT_PROXY_LOG", "warn")
        .spawn()
        .await?;
    let client = load::Client::connect(proxy.outbound).await?;
    // Resolve every service once, so each has a live stream.
    for i in 0..n {
        let uri = format!("http://svc-{i}.bench.svc.cluster.local/");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !client.get(&uri).await {
            anyhow::ensure!(Instant::now() < deadline, "svc-{i} never served");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    let uri = "http://svc-0.bench.svc.cluster.local/";
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let file = config.path().join("svc-0.yaml");
    let tmp = config.path().join(".svc-0.yaml.tmp");
    for _ in 0..args.trials {
        let (port, fresh) = backend().await?;
        std::fs::write(&tmp, service_yaml(0, port))?;
        let changed = Instant::now();
        std::fs::rename(&tmp, &file)?;
        let deadline = changed + Duration::from_secs(30);
        while fresh.requests.load(Ordering::Relaxed) == 0 {
            anyhow::ensure!(Instant::now() < deadline, "change not seen in 30 s");
            client.get(uri).await;
        }
        hist.record((changed.elapsed().as_micros() as u64).max(1))?;
        // Let the poll interval pass so the next change is a new poll.
        tokio::time::sleep(Duration::from_millis(args.poll_ms * 3 + 50)).await;
    }
    Ok(hist)
}
