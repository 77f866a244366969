//! A real single-node Kubernetes for end-to-end tests.
//!
//! [`TestNode::start`] runs a [`TestControlPlane`] (with the node lifecycle
//! controller on) and a real node beside it: kubelet and kube-proxy built
//! from the same Kubernetes source as the API server, Debian's containerd
//! (CRI plugin) and runc, CNI bridge + host-local IPAM, kube-scheduler, and
//! cluster DNS answered by the harness. Images are imported from
//! `install/image.sh`'s archives, never pulled. See [`network`] for the
//! addresses and docs/testing.md for how to use it by hand.
//!
//! There is one node per machine at a time (fixed addresses and names): a
//! second `start` waits for the first to finish. Dropping the node removes
//! every container, mount, cgroup, network namespace and route it made,
//! also when the test panics; a node whose test process was killed is
//! cleaned up by the next `start`.

pub(crate) mod kubelet;
pub(crate) mod network;
pub(crate) mod runtime;

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::Api;

use crate::binaries::NodeBinaries;
use crate::error::{io_err, Error, Result};
use crate::process::Managed;
use crate::{ClusterDns, RealNodeSettings, StartOptions, TestControlPlane};

pub use kubelet::{CLUSTER_DOMAIN, NODE_NAME};
pub(crate) use network::NETNS;

/// Environment variable naming the directory with the image archives
/// (`weft.tar`, `pause.tar`, `test-app.tar`) that `install/image.sh` writes.
pub const IMAGE_DIR_ENV: &str = "WEFT_IMAGE_DIR";
/// The image archives a node imports.
pub const IMAGE_ARCHIVES: [&str; 3] = ["pause.tar", "weft.tar", "test-app.tar"];
/// Environment variable overriding where the node keeps its files
/// (default `/var/lib/weft-test-node`; must not be on overlayfs or tmpfs
/// for containerd's overlay snapshots to be fast and legal).
pub const NODE_DIR_ENV: &str = "WEFT_NODE_DIR";
/// The lock that makes the node one per machine.
const LOCK_FILE: &str = "/run/weft-test-node.lock";
/// How long a second node waits for the first one.
const LOCK_WAIT: Duration = Duration::from_secs(30 * 60);

/// A running node with its control plane. Deref to the
/// [`TestControlPlane`] for clients, kubeconfig and kubectl.
pub struct TestNode {
    kubelet: Option<Managed>,
    kube_proxy: Option<Managed>,
    scheduler: Option<Managed>,
    containerd: Option<Managed>,
    dns: Option<ClusterDns>,
    plane: Option<TestControlPlane>,
    dir: PathBuf,
    runtime: runtime::RuntimeDirs,
    runc: PathBuf,
    started_in: Duration,
    _lock: NodeLock,
}

impl std::fmt::Debug for TestNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNode")
            .field("dir", &self.dir)
            .field("plane", &self.plane)
            .finish_non_exhaustive()
    }
}

impl TestNode {
    /// Starts the control plane and the node, imports the images and waits
    /// until the Node is Ready and schedulable.
    pub async fn start() -> Result<Self> {
        let started = Instant::now();
        let opts = StartOptions::default();
        let settings = RealNodeSettings {
            address: network::HOST_IP,
            service_cidr: network::SERVICE_CIDR,
            kubernetes_service_ip: network::KUBERNETES_SERVICE_IP,
        };
        let deadline = started + opts.timeout;
        let bins = NodeBinaries::locate()?;
        let images = image_archives()?;
        check_prerequisites()?;

        let lock = NodeLock::acquire().await?;
        let dir = node_dir();
        let runtime = runtime::RuntimeDirs::under(&dir);
        // Whatever a killed predecessor left.
        clean_up(&dir, &runtime, &bins.runc);
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;

        let mut node = Self {
            kubelet: None,
            kube_proxy: None,
            scheduler: None,
            containerd: None,
            dns: None,
            plane: None,
            dir: dir.clone(),
            runtime: runtime.clone(),
            runc: bins.runc.clone(),
            started_in: Duration::ZERO,
            _lock: lock,
        };
        network::create()?;
        let plane = TestControlPlane::start_inner(opts, Some(settings)).await?;
        let client = plane.client();
        let server_url = plane.server_url().to_owned();
        let ca_crt = plane
            .dir()
            .map(|d| d.join("ca.crt"))
            .ok_or_else(|| Error::Node("control plane has no directory".into()))?;
        let ca = plane
            .ca()
            .ok_or_else(|| Error::Node("control plane kept no CA".into()))?;
        let files = kubelet::AgentFiles::write(&dir, ca, &ca_crt, &server_url)?;
        node.plane = Some(plane);
        tracing::info!(elapsed = ?started.elapsed(), "control plane ready");

        runtime::write_config(&runtime)?;
        node.containerd =
            Some(runtime::start(&bins, &runtime, dir.join("containerd.log"), deadline).await?);
        let import = Instant::now();
        runtime::import_images(&bins, &runtime, &images)?;
        tracing::info!(elapsed = ?import.elapsed(), "images imported");

        node.dns = Some(
            ClusterDns::start(
                client.clone(),
                (network::HOST_IP, 53).into(),
                CLUSTER_DOMAIN,
            )
            .await?,
        );
        node.kubelet = Some(kubelet::start_kubelet(
            &bins,
            &files,
            &runtime,
            dir.join("kubelet.log"),
        )?);
        node.kube_proxy = Some(kubelet::start_kube_proxy(
            &bins,
            &files,
            dir.join("kube-proxy.log"),
        )?);
        node.scheduler = Some(kubelet::start_scheduler(
            &bins,
            &files,
            dir.join("kube-scheduler.log"),
        )?);
        node.wait_ready(&client, deadline).await?;
        node.started_in = started.elapsed();
        tracing::info!(elapsed = ?node.started_in, "node ready");
        Ok(node)
    }

    /// The control plane.
    pub fn plane(&self) -> &TestControlPlane {
        // Set before `start` returns; only `drop` takes it.
        self.plane
            .as_ref()
            .unwrap_or_else(|| unreachable!("TestNode without a control plane"))
    }

    /// How long [`start`](Self::start) took.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// Where the node's logs (`kubelet.log`, `containerd.log`, ...) and
    /// state live.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What a node leaves behind on this machine: nothing, after a clean
    /// drop. For tests of the harness itself.
    pub fn leftovers() -> Vec<String> {
        let dir = node_dir();
        let runtime = runtime::RuntimeDirs::under(&dir);
        let mut found = network::leftovers();
        found.extend(runtime::leftovers(&runtime));
        found.extend(
            runtime::mounts_under(&dir)
                .into_iter()
                .map(|m| format!("mount {m}")),
        );
        if dir.exists() {
            found.push(format!("directory {}", dir.display()));
        }
        found
    }

    async fn wait_ready(&self, client: &kube::Client, deadline: Instant) -> Result<()> {
        let nodes: Api<Node> = Api::all(client.clone());
        let mut last = "the kubelet has not registered the Node yet".to_owned();
        loop {
            self.check_alive()?;
            match nodes.get_opt(NODE_NAME).await {
                Ok(Some(node)) => match not_ready_reason(&node) {
                    None => return Ok(()),
                    Some(why) => last = why,
                },
                Ok(None) => {}
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                let kubelet = self
                    .kubelet
                    .as_ref()
                    .map(|k| k.log_tail(30))
                    .unwrap_or_default();
                return Err(Error::Node(format!(
                    "Node {NODE_NAME} not Ready in time: {last}\n--- kubelet log ---\n{kubelet}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `Ok` while every process of the node and its control plane runs.
    pub fn check_alive(&self) -> Result<()> {
        for m in self.agents() {
            if let Some(status) = m.exited() {
                return Err(m.not_ready(format!("exited unexpectedly with {status}")));
            }
        }
        self.plane().check_alive()
    }

    fn agents(&self) -> impl Iterator<Item = &Managed> {
        [
            &self.kubelet,
            &self.kube_proxy,
            &self.scheduler,
            &self.containerd,
        ]
        .into_iter()
        .flatten()
    }
}

impl Deref for TestNode {
    type Target = TestControlPlane;

    fn deref(&self) -> &TestControlPlane {
        self.plane()
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        for m in self.agents() {
            let died = m.exited();
            if panicking || died.is_some() {
                let how = died.map_or_else(String::new, |s| format!(", exited by itself: {s}"));
                eprintln!(
                    "--- weft-kube-harness: last lines of {} ({}{how}) ---\n{}",
                    m.component,
                    m.log.display(),
                    m.log_tail(if died.is_some() { 40 } else { 15 })
                );
            }
        }
        let keep = std::env::var_os("WEFT_KUBE_KEEP_DIR").is_some_and(|v| v == "1");
        if keep {
            // Logs outlive the node; the state is still removed below.
            let logs = std::env::temp_dir().join(format!("weft-node-logs-{}", std::process::id()));
            if std::fs::create_dir_all(&logs).is_ok() {
                for m in self.agents() {
                    if let Some(name) = m.log.file_name() {
                        let _ = std::fs::copy(&m.log, logs.join(name));
                    }
                }
                eprintln!("weft-kube-harness: node logs kept in {}", logs.display());
            }
        }
        // The kubelet first, so nothing restarts what is being removed;
        // containers and shims outlive containerd and go in clean_up.
        for m in [
            self.kubelet.take(),
            self.scheduler.take(),
            self.kube_proxy.take(),
            self.containerd.take(),
        ]
        .into_iter()
        .flatten()
        {
            m.stop();
        }
        clean_up(&self.dir, &self.runtime, &self.runc);
        self.dns = None;
        self.plane = None;
    }
}

/// Removes everything a node makes; safe to run when some or all of it is
/// already gone.
fn clean_up(dir: &Path, runtime: &runtime::RuntimeDirs, runc: &Path) {
    runtime::kill_containers(runc, runtime);
    runtime::unmount_under(dir);
    runtime::remove_cgroups();
    network::teardown();
    if dir.exists() {
        if let Err(e) = std::fs::remove_dir_all(dir) {
            tracing::warn!(dir = %dir.display(), "removing the node's directory: {e}");
        }
    }
}

/// Why a Node is not ready for pods yet, or `None`.
fn not_ready_reason(node: &Node) -> Option<String> {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
    match ready {
        Some(c) if c.status == "True" => {}
        Some(c) => {
            return Some(format!(
                "Ready={} ({}: {})",
                c.status,
                c.reason.as_deref().unwrap_or(""),
                c.message.as_deref().unwrap_or("")
            ))
        }
        None => return Some("no Ready condition yet".into()),
    }
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|t| {
            t.iter()
                .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
                .map(|t| t.key.clone())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    (!taints.is_empty()).then(|| format!("still tainted: {}", taints.join(", ")))
}

fn node_dir() -> PathBuf {
    std::env::var_os(NODE_DIR_ENV)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/weft-test-node"))
}

/// The image archives, from `$WEFT_IMAGE_DIR`, else
/// `$CARGO_TARGET_DIR/weft-images`, else the workspace's
/// `target/weft-images`.
pub fn image_dir() -> PathBuf {
    if let Some(d) = std::env::var_os(IMAGE_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(t).join("weft-images");
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/weft-images")
}

fn image_archives() -> Result<Vec<PathBuf>> {
    let dir = image_dir();
    IMAGE_ARCHIVES
        .iter()
        .map(|name| {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(Error::Node(format!(
                    "image archive {} is missing: run install/image.sh (or set {IMAGE_DIR_ENV})",
                    p.display()
                )))
            }
        })
        .collect()
}

/// Root, `ip`, `nsenter`, the CNI plugins and bridge netfilter: a clear
/// error for each that is missing.
fn check_prerequisites() -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        return Err(Error::Node(
            "must run as root (network namespaces, mounts, cgroups)".into(),
        ));
    }
    for (path, package) in [
        ("/usr/bin/nsenter", "util-linux"),
        ("/usr/lib/cni/bridge", "containernetworking-plugins"),
        ("/usr/lib/cni/host-local", "containernetworking-plugins"),
        ("/usr/lib/cni/loopback", "containernetworking-plugins"),
        ("/usr/sbin/conntrack", "conntrack"),
    ] {
        if !Path::new(path).exists() {
            return Err(Error::Node(format!(
                "{path} is missing: install the Debian package `{package}` (integration/k8s/install.sh does)"
            )));
        }
    }
    if !Path::new("/proc/sys/net/bridge").exists() {
        // br_netfilter: kube-proxy's rules must see bridged pod traffic.
        let _ = std::process::Command::new("modprobe")
            .arg("br_netfilter")
            .output();
        if !Path::new("/proc/sys/net/bridge").exists() {
            return Err(Error::Node(
                "bridge netfilter is unavailable (modprobe br_netfilter failed): \
                 kube-proxy cannot see traffic between pods on the bridge"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// An exclusive lock on [`LOCK_FILE`], held while a node exists. The
/// kernel drops it when the holder dies, so a killed test never blocks the
/// next one.
struct NodeLock {
    _file: std::fs::File,
}

impl NodeLock {
    async fn acquire() -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK_FILE)
            .map_err(io_err(LOCK_FILE))?;
        let waited = Instant::now();
        loop {
            let locked =
                rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive);
            if locked.is_ok() {
                return Ok(Self { _file: file });
            }
            if waited.elapsed() >= LOCK_WAIT {
                return Err(Error::Timeout {
                    what: format!("{LOCK_FILE} (another test node is running)"),
                    waited: LOCK_WAIT,
                });
            }
            if waited.elapsed() < Duration::from_millis(600) {
                tracing::info!("another test node is running; waiting for it to finish");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
