//! The `weft-proxy` binary. All settings come from `WEFT_PROXY_*`
//! environment variables (see `docs/proxy.md`).

use std::process::ExitCode;
use weft_proxy::config::Config;

const HELP: &str = "\
weft-proxy: the Weft sidecar proxy

USAGE: weft-proxy [--help | --version]

Configured by environment variables (defaults in brackets):
  WEFT_PROXY_INBOUND_ADDR            inbound listener [0.0.0.0:4143]
  WEFT_PROXY_OUTBOUND_ADDR           outbound listener [127.0.0.1:4140]
  WEFT_PROXY_ADMIN_ADDR              admin server [127.0.0.1:4191]
  WEFT_PROXY_INBOUND_FORWARD         app address for non-redirected inbound traffic
  WEFT_PROXY_OPAQUE_PORTS            ports never inspected, e.g. 25,3306,4222-4224
  WEFT_PROXY_MESHED_TARGETS          '*' or ip:port list carried as HTTP/2 between proxies
  WEFT_PROXY_DETECT_TIMEOUT          protocol detection timeout [10s]
  WEFT_PROXY_CONNECT_TIMEOUT         TCP connect timeout [1s]
  WEFT_PROXY_IDLE_TIMEOUT            idle served HTTP connections are closed [60s]
  WEFT_PROXY_CLIENT_IDLE_TIMEOUT     idle pooled connections to targets are closed [3s]
  WEFT_PROXY_SHUTDOWN_GRACE_PERIOD   drain time on SIGTERM or POST /shutdown [30s]
  WEFT_PROXY_CORES                   worker threads [1]
  WEFT_PROXY_MAX_CONCURRENT_STREAMS  HTTP/2 streams per connection [1000]
  WEFT_PROXY_LOG                     log filter, e.g. info or weft_proxy=debug [info]
";

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        None => {}
        Some("-h" | "--help") => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Some("-V" | "--version") => {
            println!("weft-proxy {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("weft-proxy: unexpected argument {other:?}\n\n{HELP}");
            return ExitCode::from(2);
        }
    }

    let filter = std::env::var("WEFT_PROXY_LOG").unwrap_or_else(|_| "info".into());
    let filter = match tracing_subscriber::EnvFilter::try_new(&filter) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("weft-proxy: invalid WEFT_PROXY_LOG={filter:?}: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };

    let runtime = if config.cores == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.cores)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(weft_proxy::app::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
