//! The `weft-proxy` binary. All settings come from `WEFT_PROXY_*`
//! environment variables (see `docs/proxy.md`).

use std::process::ExitCode;
use weft_proxy::config::Config;

const HELP: &str = "\
weft-proxy: the Weft sidecar proxy

USAGE: weft-proxy [--help | --version]
       weft-proxy init [--help] ...   install the iptables redirect (init container)
       weft-proxy await [--help] [--timeout DURATION] [--admin-addr ADDR]
                                      wait until the proxy's /ready answers 200
                                      (postStart hook) [2m; WEFT_PROXY_ADMIN_ADDR]

Configured by environment variables (defaults in brackets):
  WEFT_PROXY_INBOUND_ADDR            inbound listener [0.0.0.0:4143]
  WEFT_PROXY_OUTBOUND_ADDR           outbound listener [127.0.0.1:4140]
  WEFT_PROXY_ADMIN_ADDR              admin server [127.0.0.1:4191]
  WEFT_PROXY_INBOUND_FORWARD         app address for non-redirected inbound traffic
  WEFT_PROXY_OPAQUE_PORTS            ports never inspected, e.g. 25,3306,4222-4224
  WEFT_PROXY_MESHED_TARGETS          '*' or ip:port[=identity] list of Weft proxies (override)
  WEFT_PROXY_DETECT_TIMEOUT          protocol detection timeout [10s]
  WEFT_PROXY_CONNECT_TIMEOUT         TCP connect timeout [1s]
  WEFT_PROXY_IDLE_TIMEOUT            idle served HTTP connections are closed [60s]
  WEFT_PROXY_CLIENT_IDLE_TIMEOUT     idle pooled connections to targets are closed [3s]
  WEFT_PROXY_SHUTDOWN_GRACE_PERIOD   drain time on SIGTERM or POST /shutdown [30s]
  WEFT_PROXY_CORES                   worker threads [1]
  WEFT_PROXY_MAX_CONCURRENT_STREAMS  HTTP/2 streams per connection [1000]
  WEFT_PROXY_DESTINATION_ADDR        controller destination service (needs identity)
  WEFT_PROXY_BALANCER                peak-ewma | least-loaded | round-robin [peak-ewma]
  WEFT_PROXY_REQUIRE_IDENTITY_PORTS  inbound ports that accept only mTLS
  WEFT_PROXY_IDENTITY_NAME, WEFT_PROXY_IDENTITY_ADDR, WEFT_PROXY_IDENTITY_TOKEN_FILE,
  WEFT_PROXY_TRUST_ANCHORS, WEFT_PROXY_CONTROL_IDENTITY
                                     mTLS identity: all four or none (see docs/proxy.md);
                                     the trust anchors are a PEM file or the PEM text itself
  WEFT_PROXY_WORKLOAD                NS/KIND/NAME/POD (NS///POD for a bare pod): adds
                                     namespace, pod and KIND=NAME labels to every metric
  WEFT_PROXY_WAIT_BEFORE_EXIT        keep serving this long after SIGTERM, then drain [0]
  WEFT_PROXY_EXIT_WITH_APP           true: exit 0 once the pod's other containers' processes
                                     are gone (Jobs; needs shareProcessNamespace) [false]
  WEFT_PROXY_DEFAULT_INBOUND_POLICY  all-unauthenticated | all-authenticated |
                                     cluster-unauthenticated | cluster-authenticated |
                                     deny | audit: what inbound ports admit until the
                                     controller answers [all-unauthenticated]
  WEFT_PROXY_CLUSTER_NETWORKS        CIDRs cluster-* policies admit
                                     [10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8]
  WEFT_PROXY_INBOUND_PORTS           app ports whose policies are watched from start-up
  WEFT_PROXY_INBOUND_TRUST_LOOPBACK  true: always admit 127.0.0.1 / ::1 (in a pod) [false]
  WEFT_PROXY_LOG                     log filter, e.g. info or weft_proxy=debug [info]
";

/// Flags of `weft-proxy init`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "weft-proxy init",
    about = "Install the iptables NAT redirect that sends a pod's TCP traffic through weft-proxy. \
             Run as root in the pod's network namespace (the injected init container does this); \
             safe to run again."
)]
struct InitArgs {
    /// Port of the proxy's inbound listener.
    #[arg(long, default_value_t = 4143)]
    inbound_port: u16,
    /// Port of the proxy's outbound listener.
    #[arg(long, default_value_t = 4140)]
    outbound_port: u16,
    /// uid the proxy runs as; its own connections are never redirected.
    #[arg(long, default_value_t = 2102)]
    proxy_uid: u32,
    /// Inbound ports left alone (the admin port by default), e.g. 4191,9000-9010.
    #[arg(long, default_value = "4191")]
    skip_inbound_ports: String,
    /// Outbound ports left alone.
    #[arg(long, default_value = "")]
    skip_outbound_ports: String,
    /// Outbound destination subnets left alone (CIDR, comma-separated).
    #[arg(long, value_delimiter = ',')]
    skip_subnets: Vec<String>,
    /// Print the rules instead of installing them.
    #[arg(long)]
    dry_run: bool,
}

/// Flags of `weft-proxy await`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "weft-proxy await",
    about = "Wait until the proxy's admin server answers 200 on /ready; exit 1 if it does not \
             within the timeout. The injected proxy container's postStart hook, so the \
             application starts only once the proxy can carry its traffic."
)]
struct AwaitArgs {
    /// How long to wait, e.g. 30s, 2m.
    #[arg(long, default_value = "2m", value_parser = parse_duration_arg)]
    timeout: std::time::Duration,
    /// The admin server to poll [default: WEFT_PROXY_ADMIN_ADDR, else
    /// 127.0.0.1:4191; 0.0.0.0 is polled on 127.0.0.1].
    #[arg(long)]
    admin_addr: Option<std::net::SocketAddr>,
}

/// A subcommand's arguments, named `name` in its usage and error messages.
fn subcommand_args(name: &str) -> impl Iterator<Item = String> {
    std::iter::once(name.to_string()).chain(std::env::args().skip(2))
}

fn parse_duration_arg(value: &str) -> Result<std::time::Duration, String> {
    weft_proxy::config::parse_duration(value)
}

fn await_ready() -> ExitCode {
    use clap::Parser;
    let args = AwaitArgs::parse_from(subcommand_args("weft-proxy await"));
    let addr = match args.admin_addr {
        Some(addr) => weft_proxy::config::loopback_if_unspecified(addr),
        None => match weft_proxy::config::await_admin_addr(|k| std::env::var(k).ok()) {
            Ok(addr) => addr,
            Err(e) => {
                eprintln!("weft-proxy await: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft-proxy await: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(weft_proxy::await_ready::wait_ready(addr, args.timeout)) {
        Ok(()) => {
            println!("weft-proxy await: the proxy at {addr} is ready");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weft-proxy await: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init() -> ExitCode {
    use clap::Parser;
    use weft_proxy::init::{InitConfig, PortRange};
    let args = InitArgs::parse_from(subcommand_args("weft-proxy init"));
    let config = (|| {
        Ok::<_, weft_proxy::init::InitError>(InitConfig {
            inbound_port: args.inbound_port,
            outbound_port: args.outbound_port,
            proxy_uid: args.proxy_uid,
            skip_inbound_ports: PortRange::parse_list(
                "--skip-inbound-ports",
                &args.skip_inbound_ports,
            )?,
            skip_outbound_ports: PortRange::parse_list(
                "--skip-outbound-ports",
                &args.skip_outbound_ports,
            )?,
            skip_subnets: args
                .skip_subnets
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect(),
        })
    })();
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("weft-proxy init: {e}");
            return ExitCode::from(2);
        }
    };
    if args.dry_run {
        print!("{}", config.ruleset());
        return ExitCode::SUCCESS;
    }
    match config.apply() {
        Ok(()) => {
            println!(
                "weft-proxy init: redirecting inbound TCP to :{} and outbound TCP to :{} (proxy uid {})",
                config.inbound_port, config.outbound_port, config.proxy_uid
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weft-proxy init: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        None => {}
        Some("init") => return init(),
        Some("await") => return await_ready(),
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
