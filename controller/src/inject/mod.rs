//! The proxy injector: a mutating admission webhook that adds the
//! `weft-init` and `weft-proxy` containers to new pods that ask for them
//! (`linkerd.io/inject: enabled` on the pod or its namespace). See
//! `docs/injection.md`.
//!
//! - [`server`]: HTTPS on `--webhook-addr`, certificate from
//!   `--webhook-tls-dir` (reloaded when the Secret's files change);
//! - [`admission`]: AdmissionReview in, JSONPatch out, never refusing a pod
//!   because of the injector's own error;
//! - [`cluster`]: the namespace's annotations and the pod's workload
//!   (ReplicaSet → Deployment, Job → CronJob);
//! - [`events`]: `InjectionSkipped`, `Injected` and
//!   `InvalidInjectionAnnotation` Events on the workload;
//! - [`metrics`]: Linkerd's `proxy_inject_admission_*` counters.
//!
//! The mutation itself is [`weft_inject::Injector`], shared with `weft
//! inject --manual`. It is built from the install values (`--values`, the
//! `weft-config` ConfigMap) and the trust anchors (`ca.crt` of the identity
//! directory), both re-read every [`CONFIG_RELOAD_INTERVAL`], so rotating
//! the anchors or changing the values needs no restart; a bad new file is
//! logged and the injector in force stays.

pub mod admission;
pub mod cluster;
pub mod events;
pub mod metrics;
pub mod server;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use weft_identity::IdentityDir;
use weft_inject::{Injector, Values};

/// How often the values file and the trust anchors are re-read.
pub const CONFIG_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// The injector in force, swapped whole when its settings change; every
/// admission clones the inner `Arc` and uses one consistent injector.
pub type SharedInjector = Arc<RwLock<Arc<Injector>>>;

/// Why the injector could not start.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// `--values` could not be read or is not valid.
    #[error("--values {}: {reason}", path.display())]
    Values {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The trust anchors could not be read.
    #[error("trust anchors for injected proxies: {0}")]
    Anchors(#[from] weft_identity::Error),
    /// The serving certificate could not be loaded.
    #[error("--webhook-tls-dir {0}")]
    Cert(#[from] server::CertError),
    /// The TLS configuration could not be built.
    #[error("webhook TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// Where the injector's settings come from.
#[derive(Clone, Debug)]
pub struct Config {
    /// `--values FILE`, or `None` for the defaults.
    pub values_file: Option<PathBuf>,
    /// The identity directory (its `ca.crt` is what proxies trust).
    pub identity_dir: IdentityDir,
    /// `--trust-domain`: identity names the identity service issues; wins
    /// over the values file so proxies ask for names it will sign.
    pub trust_domain: String,
    /// `--cluster-domain`: wins over the values file likewise.
    pub cluster_domain: String,
}

/// The inputs an [`Injector`] is built from, compared to notice a change.
#[derive(Clone, PartialEq)]
struct Inputs {
    values: Values,
    anchors: String,
}

// === impl Config ===

impl Config {
    fn read(&self) -> Result<Inputs, InjectError> {
        let mut values = match &self.values_file {
            None => Values::default(),
            Some(path) => {
                let err = |reason: String| InjectError::Values {
                    path: path.clone(),
                    reason,
                };
                let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
                Values::from_yaml(&path.display().to_string(), &text)
                    .map_err(|e| err(e.to_string()))?
            }
        };
        for (what, from_values, flag) in [
            (
                "identity.trustDomain",
                &mut values.identity.trust_domain,
                &self.trust_domain,
            ),
            (
                "clusterDomain",
                &mut values.cluster_domain,
                &self.cluster_domain,
            ),
        ] {
            if self.values_file.is_some() && from_values != flag {
                tracing::warn!(
                    key = what,
                    values = %from_values,
                    flag = %flag,
                    "the values file and the controller's flag disagree; injecting with the flag's value"
                );
            }
            *from_values = flag.clone();
        }
        let anchors = self.identity_dir.read_trust_anchors_pem()?;
        Ok(Inputs { values, anchors })
    }
}

/// Asks the API server its version; `false` (the mechanism that works
/// everywhere) when it cannot be read.
pub async fn detect_native_sidecars(client: &kube::Client) -> bool {
    match tokio::time::timeout(Duration::from_secs(10), client.apiserver_version()).await {
        Ok(Ok(info)) => {
            let native = weft_inject::mutate::native_sidecars_supported(&info.major, &info.minor);
            tracing::info!(
                version = %info.git_version,
                native_sidecars = native,
                "Kubernetes API server version read"
            );
            native
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, "cannot read the API server version; injecting without native sidecars");
            false
        }
        Err(_) => {
            tracing::warn!("the API server did not report its version in time; injecting without native sidecars");
            false
        }
    }
}

/// Builds the injector from `config` now (start-up fails on a bad values
/// file or unreadable anchors) and returns it with the task that rebuilds
/// it when either changes.
pub fn load_injector(
    config: Config,
    native_sidecar_supported: bool,
) -> Result<(SharedInjector, impl std::future::Future<Output = ()>), InjectError> {
    let inputs = config.read()?;
    let injector = Arc::new(RwLock::new(Arc::new(build(
        &inputs,
        native_sidecar_supported,
    ))));
    let task = reload_loop(config, inputs, injector.clone(), native_sidecar_supported);
    Ok((injector, task))
}

fn build(inputs: &Inputs, native: bool) -> Injector {
    Injector::new(inputs.values.clone(), inputs.anchors.clone(), native)
}

async fn reload_loop(config: Config, mut last: Inputs, injector: SharedInjector, native: bool) {
    let mut ticker = tokio::time::interval(CONFIG_RELOAD_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut last_error: Option<String> = None;
    loop {
        ticker.tick().await;
        let read = {
            let config = config.clone();
            tokio::task::spawn_blocking(move || config.read()).await
        };
        match read {
            Ok(Ok(inputs)) => {
                last_error = None;
                if inputs == last {
                    continue;
                }
                let anchors_changed = inputs.anchors != last.anchors;
                *injector.write().unwrap_or_else(|p| p.into_inner()) =
                    Arc::new(build(&inputs, native));
                last = inputs;
                tracing::info!(
                    anchors_changed,
                    "injector settings changed: new pods get the new proxy configuration"
                );
            }
            Ok(Err(error)) => {
                let text = error.to_string();
                if last_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!(%error, "cannot reload the injector's settings; keeping those in force");
                    last_error = Some(text);
                }
            }
            Err(error) => tracing::warn!(%error, "injector settings reload task failed"),
        }
    }
}
