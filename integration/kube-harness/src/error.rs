//! The harness's error type.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while starting or driving a test control
/// plane. Messages name the component and, for a process that failed to come
/// up, carry the tail of its log so a CI failure explains itself.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A binary the control plane needs is not installed.
    #[error(
        "{binary} not found (looked in: {looked_in}); run integration/k8s/install.sh or set {env}"
    )]
    MissingBinary {
        /// Which binary.
        binary: &'static str,
        /// Where the harness looked.
        looked_in: String,
        /// The environment variable that overrides the location.
        env: &'static str,
    },

    /// A process could not be spawned at all.
    #[error("failed to spawn {component} ({program}): {source}")]
    Spawn {
        /// etcd, kube-apiserver or kube-controller-manager.
        component: &'static str,
        /// The program that was run.
        program: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// A process started but did not become ready (it exited, or it timed out).
    #[error("{component} did not become ready: {reason}\n--- last lines of {} ---\n{log_tail}", log.display())]
    NotReady {
        /// etcd, kube-apiserver or kube-controller-manager.
        component: &'static str,
        /// Why it is considered failed.
        reason: String,
        /// Its log file (kept until the harness is dropped).
        log: PathBuf,
        /// The last lines of that log.
        log_tail: String,
    },

    /// A file in the control plane's temporary directory could not be written or read.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// Certificate or key generation failed.
    #[error("certificate generation failed: {0}")]
    Cert(#[from] rcgen::Error),

    /// The generated kubeconfig could not be loaded by kube-rs.
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),

    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    /// A YAML document could not be parsed.
    #[error("invalid YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),

    /// JSON (de)serialisation failed.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),

    /// The real node (network, runtime, kubelet) could not be set up.
    #[error("test node: {0}")]
    Node(String),

    /// The cluster DNS responder could not bind or sync with the API.
    #[error("cluster DNS: {0}")]
    Dns(String),

    /// An object given to a helper lacks something it needs (kind, name, ...).
    #[error("invalid object: {0}")]
    InvalidObject(String),

    /// A bounded wait ran out.
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long the harness waited.
        waited: Duration,
    },

    /// `kubectl` exited unsuccessfully.
    #[error("kubectl {args} failed ({status}):\n{stderr}")]
    Kubectl {
        /// The arguments it was given (after `--kubeconfig`).
        args: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
}

/// Result alias used throughout the harness.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}
