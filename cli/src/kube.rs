//! Reaching the cluster the way kubectl does: `--kubeconfig`, else
//! `$KUBECONFIG`, else `~/.kube/config`, with `--context` to pick one.
//!
//! Shared by every subcommand that talks to the API server (`check`,
//! `uninstall`, `inject --manual`), so they all find the same cluster.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Flags that choose the cluster, flattened into each subcommand.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct KubeArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, value_name = "PATH", global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, value_name = "NAME", global = true)]
    pub context: Option<String>,
}

impl KubeArgs {
    /// A client for the chosen cluster. Requests time out (connect 5 s,
    /// reads 30 s) so a cluster that does not answer fails the command
    /// instead of hanging it.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..KubeConfigOptions::default()
        };
        let mut config = match &self.kubeconfig {
            Some(path) => {
                let kc = Kubeconfig::read_from(path)
                    .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kc, &options)
                    .await
                    .with_context(|| format!("kubeconfig {}", path.display()))?
            }
            None => kube::Config::from_kubeconfig(&options).await.context(
                "no usable kubeconfig ($KUBECONFIG or ~/.kube/config); pass --kubeconfig PATH",
            )?,
        };
        config.connect_timeout = Some(Duration::from_secs(5));
        config.read_timeout = Some(Duration::from_secs(30));
        config.write_timeout = Some(Duration::from_secs(30));
        kube::Client::try_from(config).context("cannot build a Kubernetes client")
    }
}
