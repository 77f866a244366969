//! `weft-test-app`: see the library docs; this is the command line.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;
use tokio::net::TcpListener;
use weft_test_app::signal::Terminate;
use weft_test_app::{banner, client, get, pause, server, web};

/// Workloads for Weft's end-to-end tests.
#[derive(Debug, Parser)]
#[command(name = "weft-test-app", version, about)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// The pod sandbox process: waits for SIGTERM/SIGINT, reaping zombies.
    Pause,
    /// HTTP/1.1 and h2c server: `/` (who answered), `/healthz`, `/ready`.
    Server {
        /// Port to listen on (all IPv4 addresses).
        #[arg(long)]
        port: u16,
        /// `version` reported by `/`.
        #[arg(long, default_value = "")]
        version: String,
        /// GET this URL on every `/` and embed its JSON answer as `upstream`.
        #[arg(long)]
        upstream: Option<String>,
        /// Seconds to keep serving (with `/ready` 503) after SIGTERM.
        #[arg(long, default_value_t = 5)]
        drain_secs: u64,
    },
    /// Steady load generator with a tally at `/stats` (`POST /reset`).
    Client {
        /// URL to GET.
        #[arg(long)]
        url: String,
        /// Requests per second.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        rps: u32,
        /// Port of the stats server (all IPv4 addresses).
        #[arg(long, default_value_t = 8079)]
        stats_port: u16,
        /// Timeout of one request, in ms.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
    /// N sequential GETs; prints `{"ok":..,"failed":..}`, exits 0 iff all succeeded.
    Get {
        /// URL to GET.
        #[arg(long)]
        url: String,
        /// Number of requests.
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Pause between requests, in ms.
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
        /// Timeout of one request, in ms.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
        /// Retry the first request until it succeeds or this many seconds pass.
        #[arg(long, default_value_t = 0)]
        retry_until_ok_secs: u64,
    },
    /// Server-speaks-first TCP server: sends a banner, echoes lines as `250 LINE`.
    BannerServer {
        /// Port to listen on (all IPv4 addresses).
        #[arg(long)]
        port: u16,
        /// The first line sent on every connection.
        #[arg(long, default_value = banner::DEFAULT_BANNER)]
        banner: String,
    },
    /// Connects N times to a banner server and times the banner's arrival.
    BannerClient {
        /// `HOST:PORT`; HOST may be a DNS name.
        #[arg(long)]
        addr: String,
        /// Number of connections.
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Timeout of one connection, in ms.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = std::env::var("WEFT_TEST_APP_LOG").unwrap_or_else(|_| "info".into());
    let filter = match tracing_subscriber::EnvFilter::try_new(&filter) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("weft-test-app: invalid WEFT_TEST_APP_LOG={filter:?}: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    // The sandbox process stays tiny: one thread.
    let runtime = if matches!(cli.mode, Mode::Pause) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("weft-test-app: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.mode)) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(mode: Mode) -> anyhow::Result<ExitCode> {
    // First, so a SIGTERM during startup is a request, not a kill.
    let terminate = Terminate::from_signals()?;
    match mode {
        Mode::Pause => pause::run(terminate).await?,
        Mode::Server {
            port,
            version,
            upstream,
            drain_secs,
        } => {
            let upstream = upstream.as_deref().map(web::parse_url).transpose()?;
            let config = server::ServerConfig {
                pod: server::pod_name(),
                version,
                upstream,
                drain: Duration::from_secs(drain_secs),
            };
            server::run(listen(port).await?, config, terminate).await?;
        }
        Mode::Client {
            url,
            rps,
            stats_port,
            timeout_ms,
        } => {
            let config = client::ClientConfig {
                url: web::parse_url(&url)?,
                rps,
                timeout: Duration::from_millis(timeout_ms),
            };
            client::run(listen(stats_port).await?, config, terminate).await?;
        }
        Mode::Get {
            url,
            count,
            interval_ms,
            timeout_ms,
            retry_until_ok_secs,
        } => {
            let config = get::GetConfig {
                url: web::parse_url(&url)?,
                count,
                interval: Duration::from_millis(interval_ms),
                timeout: Duration::from_millis(timeout_ms),
                retry_until_ok: Duration::from_secs(retry_until_ok_secs),
            };
            let summary = get::run(&config, terminate).await;
            println!("{}", serde_json::to_string(&summary)?);
            return Ok(exit(summary.all_ok(count)));
        }
        Mode::BannerServer { port, banner } => {
            banner::run_server(listen(port).await?, banner, terminate).await?;
        }
        Mode::BannerClient {
            addr,
            count,
            timeout_ms,
        } => {
            let config = banner::BannerClientConfig {
                addr,
                count,
                timeout: Duration::from_millis(timeout_ms),
            };
            let summary = banner::run_client(&config, terminate).await;
            println!("{}", serde_json::to_string(&summary)?);
            return Ok(exit(summary.all_ok(count)));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Binds `0.0.0.0:port` and logs the bound address (`listening
/// addr=0.0.0.0:PORT`, which tests using port 0 read).
async fn listen(port: u16) -> anyhow::Result<TcpListener> {
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr().context("reading the bound address")?;
    tracing::info!(addr = %local, "listening");
    Ok(listener)
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
