//! The node agents: kubelet and kube-proxy in the node's network namespace,
//! kube-scheduler beside the API server. Configuration files and
//! credentials are written under the node's directory.

use std::path::{Path, PathBuf};

use crate::binaries::NodeBinaries;
use crate::error::{io_err, Result};
use crate::node::network::{HOST_IP, NODE_IP, POD_CIDR};
use crate::node::runtime::RuntimeDirs;
use crate::process::Managed;
use crate::{kubeconfig_yaml, TestCa};

/// The Node's name (also its hostname label).
pub const NODE_NAME: &str = "weft-node";
/// The cluster's DNS domain.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// Credentials and configuration of the node's agents.
pub(crate) struct AgentFiles {
    kubelet_config: PathBuf,
    kubelet_kubeconfig: PathBuf,
    kubelet_root: PathBuf,
    proxy_config: PathBuf,
    scheduler_kubeconfig: PathBuf,
}

impl AgentFiles {
    /// Writes every file the agents read; `ca_crt` is the cluster CA file.
    pub(crate) fn write(dir: &Path, ca: &TestCa, ca_crt: &Path, server_url: &str) -> Result<Self> {
        let w = |name: &str, contents: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            std::fs::write(&p, contents).map_err(io_err(&p))?;
            Ok(p)
        };
        let ca_pem = ca.cert_pem();
        // The Node authorizer knows a kubelet by this name and group.
        let node_user =
            ca.issue_client(&format!("system:node:{NODE_NAME}"), Some("system:nodes"))?;
        let proxy_user = ca.issue_client("system:kube-proxy", Some("system:node-proxier"))?;
        let scheduler_user = ca.issue_client("system:kube-scheduler", None)?;
        let serving = ca.issue_server(&[&NODE_IP.to_string(), NODE_NAME])?;
        let kubelet_root = dir.join("kubelet");
        std::fs::create_dir_all(&kubelet_root).map_err(io_err(&kubelet_root))?;
        let serving_crt = w("kubelet.crt", &serving.cert_pem)?;
        let serving_key = w("kubelet.key", &serving.key_pem)?;
        let resolv = w("resolv.conf", "")?;
        let kubelet_kubeconfig = w(
            "kubelet.kubeconfig",
            &kubeconfig_yaml(server_url, &ca_pem, &node_user),
        )?;
        let proxy_kubeconfig = w(
            "kube-proxy.kubeconfig",
            &kubeconfig_yaml(server_url, &ca_pem, &proxy_user),
        )?;
        let scheduler_kubeconfig = w(
            "kube-scheduler.kubeconfig",
            &kubeconfig_yaml(server_url, &ca_pem, &scheduler_user),
        )?;
        let p = |p: &Path| p.display().to_string();
        // The API server authenticates to the kubelet with a client
        // certificate from the cluster CA (logs, exec, port-forward).
        // Eviction and image GC are off: the images were imported, not
        // pulled, and a busy CI disk must not evict test pods.
        let kubelet_config = w(
            "kubelet-config.yaml",
            &format!(
                r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {NODE_IP}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: {crt}
tlsPrivateKeyFile: {key}
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
  x509:
    clientCAFile: {ca}
authorization:
  mode: AlwaysAllow
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
clusterDNS:
- {HOST_IP}
clusterDomain: {CLUSTER_DOMAIN}
resolvConf: {resolv}
evictionHard:
  memory.available: "0%"
  nodefs.available: "0%"
  imagefs.available: "0%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
rotateCertificates: false
serverTLSBootstrap: false
registerNode: true
maxPods: 60
podPidsLimit: 4096
containerLogMaxSize: 10Mi
containerLogMaxFiles: 2
nodeStatusUpdateFrequency: 4s
syncFrequency: 10s
fileCheckFrequency: 5s
volumeStatsAggPeriod: 0s
"#,
                crt = p(&serving_crt),
                key = p(&serving_key),
                ca = p(ca_crt),
                resolv = p(&resolv),
            ),
        )?;
        let proxy_config = w(
            "kube-proxy-config.yaml",
            &format!(
                r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {kubeconfig}
mode: iptables
clusterCIDR: {POD_CIDR}
hostnameOverride: {NODE_NAME}
bindAddress: {NODE_IP}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
"#,
                kubeconfig = p(&proxy_kubeconfig),
            ),
        )?;
        Ok(Self {
            kubelet_config,
            kubelet_kubeconfig,
            kubelet_root,
            proxy_config,
            scheduler_kubeconfig,
        })
    }
}

/// Starts the kubelet in the node's network namespace.
pub(crate) fn start_kubelet(
    bins: &NodeBinaries,
    files: &AgentFiles,
    runtime: &RuntimeDirs,
    log: PathBuf,
) -> Result<Managed> {
    let p = |p: &Path| p.display().to_string();
    let args = vec![
        format!("--config={}", p(&files.kubelet_config)),
        format!("--kubeconfig={}", p(&files.kubelet_kubeconfig)),
        format!("--root-dir={}", p(&files.kubelet_root)),
        format!("--cert-dir={}", p(&files.kubelet_root.join("pki"))),
        "--container-runtime=remote".to_owned(),
        format!("--container-runtime-endpoint=unix://{}", p(&runtime.socket)),
        "--runtime-request-timeout=5m".to_owned(),
        "--network-plugin=cni".to_owned(),
        "--cni-bin-dir=/usr/lib/cni".to_owned(),
        format!("--cni-conf-dir={}", p(&runtime.cni_conf)),
        format!("--hostname-override={NODE_NAME}"),
        format!("--node-ip={NODE_IP}"),
        format!(
            "--volume-plugin-dir={}",
            p(&files.kubelet_root.join("volume-plugins"))
        ),
        "--v=2".to_owned(),
    ];
    Managed::spawn_in_netns("kubelet", &bins.kubelet, &args, log)
}

/// Starts kube-proxy (iptables mode) in the node's network namespace.
pub(crate) fn start_kube_proxy(
    bins: &NodeBinaries,
    files: &AgentFiles,
    log: PathBuf,
) -> Result<Managed> {
    let args = vec![
        format!("--config={}", files.proxy_config.display()),
        "--v=1".to_owned(),
    ];
    Managed::spawn_in_netns("kube-proxy", &bins.kube_proxy, &args, log)
}

/// Starts kube-scheduler on the host, beside the API server.
pub(crate) fn start_scheduler(
    bins: &NodeBinaries,
    files: &AgentFiles,
    log: PathBuf,
) -> Result<Managed> {
    let kubeconfig = files.scheduler_kubeconfig.display().to_string();
    let args = vec![
        format!("--kubeconfig={kubeconfig}"),
        format!("--authentication-kubeconfig={kubeconfig}"),
        format!("--authorization-kubeconfig={kubeconfig}"),
        "--leader-elect=false".to_owned(),
        "--port=0".to_owned(),
        format!("--bind-address={HOST_IP}"),
        "--secure-port=0".to_owned(),
        "--v=1".to_owned(),
    ];
    Managed::spawn("kube-scheduler", &bins.kube_scheduler, &args, log)
}
