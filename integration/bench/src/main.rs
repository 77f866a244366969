//! `weft-bench`: latency and throughput of the Weft data plane, measured
//! side by side with a direct baseline in the same run.
//!
//! For each topology (direct, one proxy, two proxies, two proxies with
//! mTLS) and each rate, it
//! sends open-loop load at a fixed rate: request *i* is issued at
//! `start + i / rate`, and its latency is measured from that moment, not
//! from when a connection was free, so queueing behind a slow response is
//! counted (no coordinated omission). Latencies go into an HdrHistogram.
//! Proxies run as separate processes; their CPU time and peak RSS are read
//! from `/proc`. A closed-loop saturation run per topology gives the
//! maximum throughput. See `docs/benchmarks.md`.

mod lb;
mod load;
mod propagation;
mod report;
mod retry;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use weft_test_support::controller::{identity, ControllerProcess};
use weft_test_support::proxy::{ProxyBuilder, ProxyProcess};

#[derive(Debug, Parser)]
#[command(name = "weft-bench", about = "Benchmark the Weft data plane")]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Serve the benchmark backend (used internally; runs in its own process).
    #[command(hide = true)]
    Backend {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 1024)]
        body: usize,
    },
    /// Compare balancing strategies when one of ten replicas turns slow.
    Lb(lb::LbArgs),
    /// Compare retry policies against a backend failing a share of requests.
    Retry(retry::RetryArgs),
    /// Time from an endpoint change to the first request routed to it.
    Propagation(propagation::PropagationArgs),
}

/// Flags of a benchmark run.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Request rates to measure, per second.
    #[arg(long, value_delimiter = ',', default_value = "500,1000,2000")]
    rates: Vec<u32>,
    /// Measured seconds per rate (after a warm-up of one second).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Connections the load generator may use (requests queue beyond this).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Connections for the closed-loop saturation run.
    #[arg(long, default_value_t = 16)]
    saturation_connections: usize,
    /// Seconds of the saturation run per topology (0 skips it).
    #[arg(long, default_value_t = 5)]
    saturation_seconds: u64,
    /// Response body size in bytes.
    #[arg(long, default_value_t = 1024)]
    body: usize,
    /// Worker threads per proxy (WEFT_PROXY_CORES).
    #[arg(long, default_value_t = 1)]
    proxy_cores: usize,
    /// Topologies to run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,one-proxy,two-proxies,two-proxies-mtls"
    )]
    topologies: Vec<Topology>,
    /// The weft-proxy binary (default: beside this one).
    #[arg(long, value_name = "PATH")]
    proxy_bin: Option<PathBuf>,
    /// The weft-controller binary, for the mTLS topology (default: beside
    /// this one).
    #[arg(long, value_name = "PATH")]
    controller_bin: Option<PathBuf>,
    /// Also write the results as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// What sits between the load generator and the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Topology {
    /// client → backend.
    Direct,
    /// client → proxy (inbound, forwarding) → backend.
    OneProxy,
    /// client → proxy A (outbound) ══ HTTP/2 ══ proxy B (inbound) → backend.
    TwoProxies,
    /// The same with mTLS between A and B (certificates from a real
    /// weft-controller).
    TwoProxiesMtls,
}

/// A running topology: where to send requests and the proxies to watch.
struct Setup {
    /// Where the load generator connects.
    connect: SocketAddr,
    /// The URI requests carry (absolute-form when going through an outbound).
    uri: String,
    proxies: Vec<ProxyProcess>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match cli.command {
        Some(Cmd::Backend { .. }) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Some(Cmd::Backend { addr, body }) => runtime.block_on(load::serve_backend(addr, body)),
        Some(Cmd::Lb(args)) => {
            let bins = binaries(&cli.run);
            runtime.block_on(async move {
                let (proxy, controller) = bins?;
                lb::run(args, &proxy, &controller).await
            })
        }
        Some(Cmd::Retry(args)) => {
            let bins = binaries(&cli.run);
            runtime.block_on(async move {
                let (proxy, controller) = bins?;
                retry::run(args, &proxy, &controller).await
            })
        }
        Some(Cmd::Propagation(args)) => {
            let bins = binaries(&cli.run);
            runtime.block_on(async move {
                let (proxy, controller) = bins?;
                propagation::run(args, &proxy, &controller).await
            })
        }
        None => runtime.block_on(run(cli.run)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The proxy and controller binaries: the flags, else beside this one.
fn binaries(args: &RunArgs) -> anyhow::Result<(PathBuf, PathBuf)> {
    let here = std::env::current_exe()?;
    let proxy = args
        .proxy_bin
        .clone()
        .unwrap_or_else(|| here.with_file_name("weft-proxy"));
    let controller = args
        .controller_bin
        .clone()
        .unwrap_or_else(|| here.with_file_name("weft-controller"));
    for bin in [&proxy, &controller] {
        if !bin.is_file() {
            bail!(
                "{} not found: build it (cargo build --release) or pass its flag",
                bin.display()
            );
        }
    }
    Ok((proxy, controller))
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let proxy_bin = match &args.proxy_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("weft-proxy"),
    };
    if !proxy_bin.is_file() {
        bail!(
            "{} not found: build it (cargo build --release) or pass --proxy-bin",
            proxy_bin.display()
        );
    }
    if args.rates.is_empty() || args.seconds == 0 {
        bail!("need at least one rate and a positive --seconds");
    }
    let backend_addr = weft_test_support::free_addr();
    let mut backend = std::process::Command::new(std::env::current_exe()?)
        .args([
            "backend",
            "--addr",
            &backend_addr.to_string(),
            "--body",
            &args.body.to_string(),
        ])
        .stdin(std::process::Stdio::null())
        .spawn()
        .context("starting the backend process")?;
    let backend_guard = scopeguard(move || {
        let _ = backend.kill();
        let _ = backend.wait();
    });
    load::wait_listening(backend_addr, Duration::from_secs(10)).await?;

    // The mTLS topology needs a controller for certificates; one serves the
    // whole run.
    let controller = if args.topologies.contains(&Topology::TwoProxiesMtls) {
        let bin = match &args.controller_bin {
            Some(p) => p.clone(),
            None => std::env::current_exe()?.with_file_name("weft-controller"),
        };
        Some(
            ControllerProcess::start(&bin, "24h")
                .await
                .context("starting weft-controller")?,
        )
    } else {
        None
    };

    let mut results = report::Results::new(&args);
    for &topology in &args.topologies {
        for &rate in &args.rates {
            let setup = setup(
                topology,
                backend_addr,
                &proxy_bin,
                args.proxy_cores,
                controller.as_ref(),
            )
            .await?;
            let before: Vec<_> = setup
                .proxies
                .iter()
                .map(|p| load::cpu_ms(p.pid()))
                .collect();
            let run = load::open_loop(
                setup.connect,
                &setup.uri,
                rate,
                Duration::from_secs(args.seconds),
                args.connections,
            )
            .await?;
            let cpu: Vec<f64> = setup
                .proxies
                .iter()
                .zip(before)
                .map(|(p, b)| (load::cpu_ms(p.pid()) - b) / (run.completed as f64 / 1000.0))
                .collect();
            let rss: Vec<f64> = setup
                .proxies
                .iter()
                .map(|p| p.peak_rss_kib().unwrap_or(0) as f64 / 1024.0)
                .collect();
            eprintln!(
                "{topology:?} @ {rate}/s: p50 {:.3} ms, p99 {:.3} ms, errors {}",
                run.quantile_ms(0.5),
                run.quantile_ms(0.99),
                run.errors
            );
            results.add_rate(topology, rate, &run, cpu, rss);
        }
        if args.saturation_seconds > 0 {
            let setup = setup(
                topology,
                backend_addr,
                &proxy_bin,
                args.proxy_cores,
                controller.as_ref(),
            )
            .await?;
            let rps = load::saturate(
                setup.connect,
                &setup.uri,
                Duration::from_secs(args.saturation_seconds),
                args.saturation_connections,
            )
            .await?;
            eprintln!("{topology:?} saturation: {rps:.0} req/s");
            results.add_saturation(topology, rps);
        }
    }
    drop(backend_guard);

    println!("{}", results.markdown());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Starts the proxies of `topology` and says where to send requests.
async fn setup(
    topology: Topology,
    backend: SocketAddr,
    bin: &PathBuf,
    cores: usize,
    controller: Option<&ControllerProcess>,
) -> anyhow::Result<Setup> {
    let tune = |p: ProxyBuilder| {
        p.env("WEFT_PROXY_CORES", cores)
            .env("WEFT_PROXY_LOG", "warn")
    };
    let proxy = || tune(ProxyBuilder::new(bin));
    Ok(match topology {
        Topology::Direct => Setup {
            connect: backend,
            uri: "/".into(),
            proxies: vec![],
        },
        Topology::OneProxy => {
            let p = proxy()
                .env("WEFT_PROXY_INBOUND_FORWARD", backend)
                .spawn()
                .await?;
            Setup {
                connect: p.inbound,
                uri: "/".into(),
                proxies: vec![p],
            }
        }
        Topology::TwoProxies => {
            let b = proxy()
                .env("WEFT_PROXY_INBOUND_FORWARD", backend)
                .spawn()
                .await?;
            let a = proxy()
                .env("WEFT_PROXY_MESHED_TARGETS", b.inbound)
                .spawn()
                .await?;
            Setup {
                connect: a.outbound,
                uri: format!("http://{}/", b.inbound),
                proxies: vec![a, b],
            }
        }
        Topology::TwoProxiesMtls => {
            let ctl = controller.context("the mTLS topology needs a controller")?;
            let b = tune(ctl.proxy(bin, "bench", "api")?)
                .env("WEFT_PROXY_INBOUND_FORWARD", backend)
                .spawn()
                .await?;
            let meshed = format!("{}={}", b.inbound, identity("bench", "api"));
            let a = tune(ctl.proxy(bin, "bench", "web")?)
                .env("WEFT_PROXY_MESHED_TARGETS", meshed)
                .spawn()
                .await?;
            Setup {
                connect: a.outbound,
                uri: format!("http://{}/", b.inbound),
                proxies: vec![a, b],
            }
        }
    })
}

/// Runs `f` when dropped.
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
