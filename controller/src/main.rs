//! `weft-controller`: the single control-plane process of the Weft mesh.
//!
//! The destination service, identity CA, sidecar injector and metrics API
//! will all live in this process (see `docs/architecture.md`). This first
//! version only parses its command line so that the interface in the design
//! is fixed early; it refuses to start rather than pretend to serve APIs it
//! does not have yet.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Command-line interface of `weft-controller` (see `docs/controller.md`).
#[derive(Debug, Parser)]
#[command(name = "weft-controller", version, about)]
struct Args {
    /// Read Kubernetes-style YAML from this directory (the embedded default).
    #[arg(long, value_name = "DIR", conflicts_with = "kubeconfig")]
    config_dir: Option<PathBuf>,
    /// Watch a Kubernetes API server using this kubeconfig.
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    /// Directory holding the trust anchor and issuer certificate.
    #[arg(long, value_name = "DIR")]
    identity_dir: Option<PathBuf>,
    /// Trust domain used in identity names.
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// Listen address of the destination service.
    #[arg(long, default_value = "0.0.0.0:8086")]
    destination_addr: SocketAddr,
    /// Listen address of the identity service.
    #[arg(long, default_value = "0.0.0.0:8080")]
    identity_addr: SocketAddr,
    /// Listen address of the injector webhook.
    #[arg(long, default_value = "0.0.0.0:8443")]
    webhook_addr: SocketAddr,
    /// Listen address of the admin server and metrics API.
    #[arg(long, default_value = "0.0.0.0:9990")]
    admin_addr: SocketAddr,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEFT_CONTROLLER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    tracing::error!(
        ?args,
        "weft-controller's services are not built yet; refusing to start"
    );
    ExitCode::FAILURE
}
