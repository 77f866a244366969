//! `weft-bench retry`: what retries buy and what they cost.
//!
//! One backend fails a fixed share of requests (0, 10, 50, 100 %) behind
//! a service with a ServiceProfile in a real `weft-controller`; a client
//! proxy resolves it. Three policies run side by side in the same run,
//! each with a fresh proxy (so budgets start equal):
//!
//! - `none`: the route is not retryable;
//! - `budget`: the route is retryable within Linkerd's default budget
//!   (20 % extra load + 10 retries/s, tokens live 10 s);
//! - `naive-3`: no proxy retries; the client tries each request up to
//!   three times itself, the policy budgets exist to replace.
//!
//! For each it reports the effective success rate the client saw, the
//! attempts the backend received per request, and the p99 latency of
//! successful requests.

use crate::lb::success;
use crate::load::{self, ClientPolicy, Faults};
use anyhow::Context;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use weft_test_support::controller::ControllerProcess;

/// Flags of `weft-bench retry`.
#[derive(Debug, clap::Args)]
pub struct RetryArgs {
    /// Requests per second.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Measured seconds per cell.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Failure rates of the backend, in percent.
    #[arg(long, value_delimiter = ',', default_value = "0,10,50,100")]
    failure_rates: Vec<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Policy {
    None,
    Budget,
    Naive3,
}

impl Policy {
    fn name(self) -> &'static str {
        match self {
            Policy::None => "none",
            Policy::Budget => "budget 20%+10/s",
            Policy::Naive3 => "naive 3 attempts",
        }
    }

    /// The route's path: `/retry` is retryable in the profile, `/plain`
    /// is not.
    fn path(self) -> &'static str {
        match self {
            Policy::Budget => "/retry",
            Policy::None | Policy::Naive3 => "/plain",
        }
    }
}

const PROFILE: &str = "apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: {name: api.bench.svc.cluster.local, namespace: bench}
spec:
  retryBudget: {retryRatio: 0.2, minRetriesPerSecond: 10, ttl: 10s}
  routes:
  - name: retry
    condition: {pathRegex: /retry}
    isRetryable: true
  - name: plain
    condition: {pathRegex: /plain}
";

/// Runs the experiment and prints a markdown table.
pub async fn run(args: RetryArgs, proxy_bin: &Path, controller_bin: &Path) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let faults = Arc::new(Faults::default());
    tokio::spawn(load::serve(listener, 1024, faults.clone()));
    let config = tempfile::tempdir()?;
    std::fs::write(
        config.path().join("api.yaml"),
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: api, namespace: bench}}\nspec:\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: api, namespace: bench}}\nsubsets:\n- addresses: [{{ip: 127.0.0.1}}]\n  ports: [{{name: http, port: {port}}}]\n"
        ),
    )?;
    std::fs::write(config.path().join("profile.yaml"), PROFILE)?;
    let ctl = ControllerProcess::start_with_config(controller_bin, "24h", config.path())
        .await
        .context("starting weft-controller")?;

    let duration = Duration::from_secs(args.seconds);
    let mut rows = Vec::new();
    for &rate in &args.failure_rates {
        for policy in [Policy::None, Policy::Budget, Policy::Naive3] {
            // A fresh proxy per cell: the budget starts full each time.
            // Failure accrual is off: with one endpoint it would turn the
            // failures into fast 503s and hide what retries do.
            let proxy = ctl
                .proxy(proxy_bin, "bench", "client")?
                .env("WEFT_PROXY_DESTINATION_ADDR", ctl.destination_addr)
                .env("WEFT_PROXY_FAILURE_ACCRUAL_MAX_FAILURES", "0")
                .env("WEFT_PROXY_LOG", "warn")
                .spawn()
                .await?;
            let uri = format!("http://api.bench.svc.cluster.local{}", policy.path());
            faults.failure_percent.store(0, Ordering::Relaxed);
            load::open_loop(proxy.outbound, &uri, 50, Duration::from_secs(1), 8).await?;
            faults.failure_percent.store(rate, Ordering::Relaxed);
            let client = ClientPolicy {
                timeout: None,
                attempts: if policy == Policy::Naive3 { 3 } else { 1 },
            };
            let before = faults.requests.load(Ordering::Relaxed);
            // The generator's first second is warm-up at the same rate.
            let run =
                load::open_loop_with(proxy.outbound, &uri, args.rate, duration, 32, client).await?;
            let received = faults.requests.load(Ordering::Relaxed) - before;
            let sent = args.rate as u64 * (args.seconds + 1);
            let attempts = received as f64 / sent as f64;
            eprintln!(
                "{rate}% failing, {}: {:.2}% ok, {attempts:.2} attempts/request",
                policy.name(),
                success(&run) * 100.0
            );
            rows.push((rate, policy, run, attempts));
        }
    }
    faults.failure_percent.store(0, Ordering::Relaxed);

    println!(
        "\n### Retries: one backend failing a share of requests ({} req/s, {} s per cell)\n",
        args.rate, args.seconds
    );
    println!("| failing | policy | effective success | attempts per request | p99 ms (successes) |\n|---:|---|---:|---:|---:|");
    for (rate, policy, run, attempts) in &rows {
        let p99 = if run.completed > 0 {
            format!("{:.2}", run.quantile_ms(0.99))
        } else {
            "–".into()
        };
        println!(
            "| {rate}% | {} | {:.2}% | {attempts:.2} | {p99} |",
            policy.name(),
            success(run) * 100.0
        );
    }
    Ok(())
}
