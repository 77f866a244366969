//! A real Kubernetes control plane for Weft's tests, with no cluster.
//!
//! [`TestControlPlane::start`] runs a private etcd, kube-apiserver and
//! kube-controller-manager on free 127.0.0.1 ports, with freshly generated
//! certificates, RBAC, admission webhooks and ServiceAccount tokens, and hands
//! back an admin [`kube::Client`] and kubeconfig. Dropping it kills exactly
//! those processes and removes their files. There is no kubelet, scheduler or
//! container runtime: tests stand in for them with helpers such as
//! [`TestControlPlane::set_pod_ready`]. See `docs/testing.md`.
//!
//! The binaries come from `integration/k8s/install.sh`; a control plane that
//! cannot start is an error, never a silent skip.

mod binaries;
mod certs;
mod cluster_dns;
mod error;
mod helpers;
mod node;
mod process;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use crate::binaries::{Binaries, NodeBinaries};
pub use crate::binaries::{BIN_DIR_ENV, ETCD_ENV};
pub use crate::certs::{IssuedCert, TestCa};
pub use crate::cluster_dns::ClusterDns;
pub use crate::error::{Error, Result};
pub use crate::helpers::{
    wait_for, ServiceAccountVolume, WebhookRegistration, DEFAULT_WAIT, FIELD_MANAGER,
};
pub use crate::node::{
    image_dir, TestNode, CLUSTER_DOMAIN, IMAGE_ARCHIVES, IMAGE_DIR_ENV, NODE_DIR_ENV, NODE_NAME,
};

use crate::certs::SigningKey;
use crate::error::io_err;
use crate::process::{free_port, free_port_on, is_port_clash, Managed};

/// How many times a component is started on fresh ports when its port was
/// taken between choosing it and binding it.
const PORT_ATTEMPTS: usize = 3;
/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(200);
/// The one Node object every control plane has. There is no kubelet behind
/// it: [`TestControlPlane::set_pod_ready`] binds Pods to it, because the
/// endpoints controllers need a Pod's node to exist.
pub const TEST_NODE_NAME: &str = "weft-test-node";
/// The ServiceAccount token issuer (also the default API audience).
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// What to start, and how long to wait for it.
#[derive(Clone, Debug)]
pub struct StartOptions {
    /// Run kube-controller-manager (Endpoints, ServiceAccounts and their token
    /// Secrets, garbage collection...). Off saves a few seconds for tests that
    /// only need the API.
    pub controller_manager: bool,
    /// Upper bound on the whole start-up. Default 180 s, or
    /// `WEFT_KUBE_START_TIMEOUT_SECS`.
    pub timeout: Duration,
    /// Programs to run instead of the ones [`Binaries::locate`] finds.
    pub binaries: Option<Binaries>,
}

/// How a control plane differs when a real kubelet joins it.
#[derive(Clone, Debug)]
pub(crate) struct RealNodeSettings {
    /// Address the API server binds and advertises (the `kubernetes`
    /// Service's endpoint), reachable from pods.
    pub(crate) address: std::net::Ipv4Addr,
    /// Service ClusterIP range.
    pub(crate) service_cidr: &'static str,
    /// The `kubernetes` Service's ClusterIP (first address of the range),
    /// which the serving certificate must name.
    pub(crate) kubernetes_service_ip: &'static str,
}

impl Default for StartOptions {
    fn default() -> Self {
        let secs = std::env::var("WEFT_KUBE_START_TIMEOUT_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(180);
        Self {
            controller_manager: true,
            timeout: Duration::from_secs(secs),
            binaries: None,
        }
    }
}

/// A running private control plane. Drop it to tear everything down.
pub struct TestControlPlane {
    client: Client,
    kubeconfig: PathBuf,
    server_url: String,
    ca_pem: String,
    kubectl: Option<PathBuf>,
    /// Kept for a [`TestNode`], which issues its agents' credentials.
    ca: Option<TestCa>,
    controller_manager: Option<Managed>,
    apiserver: Option<Managed>,
    etcd: Option<Managed>,
    etcd_data: Option<tempfile::TempDir>,
    dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for TestControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestControlPlane")
            .field("server_url", &self.server_url)
            .field("kubeconfig", &self.kubeconfig)
            .finish_non_exhaustive()
    }
}

impl TestControlPlane {
    /// Starts etcd, kube-apiserver and kube-controller-manager with the
    /// default [`StartOptions`], and waits until the API is ready and the
    /// controller-manager has created the `default` ServiceAccount.
    pub async fn start() -> Result<Self> {
        Self::start_with(StartOptions::default()).await
    }

    /// Like [`start`](Self::start), with explicit options.
    pub async fn start_with(opts: StartOptions) -> Result<Self> {
        Self::start_inner(opts, None).await
    }

    /// Starts a control plane; with `real_node`, one that serves where
    /// pods can reach the API and lets a real kubelet own the Node.
    pub(crate) async fn start_inner(
        opts: StartOptions,
        real_node: Option<RealNodeSettings>,
    ) -> Result<Self> {
        // kube-rs builds its rustls config from the process-wide provider;
        // pick one so a workspace that also enables aws-lc-rs cannot make it
        // ambiguous. Failing means one is already installed, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();

        let started = Instant::now();
        let deadline = started + opts.timeout;
        remove_orphaned_dirs();
        let bins = match opts.binaries {
            Some(b) => b,
            None => Binaries::locate()?,
        };
        let dir = tempfile::Builder::new()
            .prefix("weft-kube-")
            .tempdir()
            .map_err(io_err(std::env::temp_dir()))?;
        let base = dir.path().to_owned();
        // etcd fsyncs a lot; tmpfs keeps start-up and writes fast.
        let etcd_parent = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            base.clone()
        };
        let etcd_data = tempfile::Builder::new()
            .prefix("weft-etcd-")
            .tempdir_in(&etcd_parent)
            .map_err(io_err(&etcd_parent))?;

        for d in [dir.path(), etcd_data.path()] {
            let f = d.join(OWNER_FILE);
            std::fs::write(&f, std::process::id().to_string()).map_err(io_err(&f))?;
        }

        let pki = Pki::generate(&base, real_node.as_ref())?;

        let mut plane = Self {
            client: placeholder_client()?,
            kubeconfig: base.join("admin.kubeconfig"),
            server_url: String::new(),
            ca_pem: pki.ca.cert_pem(),
            kubectl: bins.kubectl.clone(),
            ca: None,
            controller_manager: None,
            apiserver: None,
            etcd: None,
            etcd_data: None,
            dir: None,
        };
        plane.dir = Some(dir);

        let (etcd, etcd_port) = start_etcd(&bins, &base, etcd_data.path(), deadline).await?;
        plane.etcd = Some(etcd);
        plane.etcd_data = Some(etcd_data);
        tracing::info!(port = etcd_port, elapsed = ?started.elapsed(), "etcd ready");

        let (apiserver, server_url, client) =
            start_apiserver(&bins, &base, &pki, etcd_port, real_node.as_ref(), deadline).await?;
        plane.apiserver = Some(apiserver);
        plane.client = client;
        plane.server_url = server_url;
        tracing::info!(url = %plane.server_url, elapsed = ?started.elapsed(), "kube-apiserver ready");
        if real_node.is_none() {
            helpers::create_test_node(&plane.client)
                .await
                .map_err(|e| plane.explain(e))?;
        }

        if opts.controller_manager {
            let kcm = start_controller_manager(
                &bins,
                &base,
                &pki,
                &plane.server_url,
                &plane.client,
                real_node.is_some(),
                deadline,
            )
            .await?;
            plane.controller_manager = Some(kcm);
            tracing::info!(elapsed = ?started.elapsed(), "kube-controller-manager ready");
        }
        plane.ca = Some(pki.ca);
        Ok(plane)
    }

    /// An admin (`system:masters`) client for this control plane.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Path of an admin kubeconfig, for `kubectl` or a controller under test
    /// (`--kubeconfig`). It lives as long as the control plane.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// A kubeconfig (YAML text) that authenticates with a bearer `token`
    /// (e.g. a ServiceAccount's, from TokenRequest), so a program under
    /// test runs with exactly that account's RBAC.
    pub fn token_kubeconfig(&self, token: &str) -> String {
        kubeconfig(
            &self.server_url,
            &self.ca_pem,
            "weft-test-token",
            &format!("    token: {token}\n"),
            None,
        )
    }

    /// The API server's URL, `https://127.0.0.1:PORT`.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// The cluster CA (PEM): it signed the API server's serving certificate
    /// and is the `ca.crt` in ServiceAccount token Secrets.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The cluster CA itself, to issue more credentials.
    pub(crate) fn ca(&self) -> Option<&TestCa> {
        self.ca.as_ref()
    }

    /// Directory holding the certificates, kubeconfigs and process logs.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_ref().map(|d| d.path())
    }

    /// Process ids of etcd, kube-apiserver and kube-controller-manager (for
    /// tests of the harness itself).
    pub fn pids(&self) -> Vec<u32> {
        [&self.etcd, &self.apiserver, &self.controller_manager]
            .into_iter()
            .flatten()
            .map(Managed::pid)
            .collect()
    }

    /// `Ok` while every process of the control plane still runs; otherwise
    /// an error naming the one that died, with the tail of its log.
    pub fn check_alive(&self) -> Result<()> {
        for m in self.components() {
            if let Some(status) = m.exited() {
                return Err(m.not_ready(format!("exited unexpectedly with {status}")));
            }
        }
        Ok(())
    }

    /// Turns an API error into "component X died" when that explains it.
    pub(crate) fn explain(&self, e: kube::Error) -> Error {
        match self.check_alive() {
            Err(died) => died,
            Ok(()) => Error::Kube(e),
        }
    }

    /// The kubectl this harness runs: the version-matched one from the
    /// install script if present, else the first on `PATH`.
    pub fn kubectl_path(&self) -> Option<&Path> {
        self.kubectl.as_deref()
    }

    fn components(&self) -> impl Iterator<Item = &Managed> {
        [&self.etcd, &self.apiserver, &self.controller_manager]
            .into_iter()
            .flatten()
    }
}

impl Drop for TestControlPlane {
    fn drop(&mut self) {
        // Help whoever reads a failed test's output.
        let panicking = std::thread::panicking();
        for m in self.components() {
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
        // Stop in reverse start order, then remove files.
        for m in [&self.controller_manager, &self.apiserver, &self.etcd]
            .into_iter()
            .flatten()
        {
            m.stop();
        }
        self.controller_manager = None;
        self.apiserver = None;
        self.etcd = None;
        let keep = std::env::var_os("WEFT_KUBE_KEEP_DIR").is_some_and(|v| v == "1");
        if let Some(dir) = self.dir.take() {
            if keep {
                let path = dir.keep();
                // Not an orphan: the next start must leave it alone.
                let _ = std::fs::remove_file(path.join(OWNER_FILE));
                eprintln!("weft-kube-harness: kept {}", path.display());
            }
        }
        drop(self.etcd_data.take());
    }
}

/// Generated certificates and keys, written to the control plane's directory.
struct Pki {
    ca: TestCa,
    ca_crt: PathBuf,
    ca_key: PathBuf,
    serving_crt: PathBuf,
    serving_key: PathBuf,
    sa_key: PathBuf,
    sa_pub: PathBuf,
    admin: IssuedCert,
    kcm: IssuedCert,
    kubelet_client_crt: PathBuf,
    kubelet_client_key: PathBuf,
}

impl Pki {
    fn generate(dir: &Path, real_node: Option<&RealNodeSettings>) -> Result<Self> {
        let ca = TestCa::new("weft-test-cluster-ca")?;
        let node_address = real_node.map(|n| n.address.to_string());
        let mut sans = vec![
            "127.0.0.1",
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ];
        if let (Some(node), Some(address)) = (real_node, node_address.as_deref()) {
            sans.extend([address, node.kubernetes_service_ip]);
        }
        let serving = ca.issue_server(&sans)?;
        // The API server's identity towards kubelets (logs, exec).
        let kubelet_client =
            ca.issue_client("weft-test-apiserver-kubelet-client", Some("system:masters"))?;
        let admin = ca.issue_client("weft-test-admin", Some("system:masters"))?;
        // The controller-manager runs every controller with its own identity
        // (no per-controller ServiceAccount credentials), so it needs to be a
        // superuser like the admin.
        let kcm = ca.issue_client("weft-test-controller-manager", Some("system:masters"))?;
        let sa = SigningKey::generate()?;
        let w = |name: &str, contents: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            std::fs::write(&p, contents).map_err(io_err(&p))?;
            Ok(p)
        };
        Ok(Self {
            ca_crt: w("ca.crt", &ca.cert_pem())?,
            ca_key: w("ca.key", ca.key_pem())?,
            serving_crt: w("apiserver.crt", &serving.cert_pem)?,
            serving_key: w("apiserver.key", &serving.key_pem)?,
            sa_key: w("sa.key", &sa.private_pem)?,
            sa_pub: w("sa.pub", &sa.public_pem)?,
            kubelet_client_crt: w("apiserver-kubelet-client.crt", &kubelet_client.cert_pem)?,
            kubelet_client_key: w("apiserver-kubelet-client.key", &kubelet_client.key_pem)?,
            ca,
            admin,
            kcm,
        })
    }
}

/// Names the process that owns a control plane's directory.
const OWNER_FILE: &str = "weft-owner.pid";

/// Removes the directories of control planes whose test process was killed
/// before it could clean up (its children die with it, via pdeathsig).
/// etcd's data dir lives on tmpfs, so a leftover costs memory.
fn remove_orphaned_dirs() {
    let parents = [std::env::temp_dir(), PathBuf::from("/dev/shm")];
    for parent in parents {
        let Ok(entries) = std::fs::read_dir(&parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !(name.starts_with("weft-kube-") || name.starts_with("weft-etcd-")) {
                continue;
            }
            let path = entry.path();
            let Ok(owner) = std::fs::read_to_string(path.join(OWNER_FILE)) else {
                continue;
            };
            let Ok(pid) = owner.trim().parse::<u32>() else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                tracing::debug!(path = %path.display(), pid, "removing orphaned control plane dir");
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }
}

/// A kubeconfig with the client certificate embedded.
fn kubeconfig_yaml(server: &str, ca_pem: &str, user: &IssuedCert) -> String {
    let cert = b64(&user.cert_pem);
    let key = b64(&user.key_pem);
    kubeconfig(
        server,
        ca_pem,
        "weft-test-user",
        &format!("    client-certificate-data: {cert}\n    client-key-data: {key}\n"),
        Some("default"),
    )
}

/// One cluster, one user (`credentials`: the lines under `user:`), one
/// context, current.
fn kubeconfig(
    server: &str,
    ca_pem: &str,
    user: &str,
    credentials: &str,
    namespace: Option<&str>,
) -> String {
    let ca = b64(ca_pem);
    let namespace = namespace
        .map(|ns| format!("    namespace: {ns}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: weft-test
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {user}
  user:
{credentials}contexts:
- name: weft-test
  context:
    cluster: weft-test
    user: {user}
{namespace}current-context: weft-test
"
    )
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

async fn client_from_kubeconfig(path: &Path) -> Result<Client> {
    let kc = Kubeconfig::read_from(path)?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// A client that is never used: the struct is built before the API server
/// exists so that a failure part-way still tears down what was started.
fn placeholder_client() -> Result<Client> {
    let uri = http::Uri::from_static("https://127.0.0.1:1");
    Ok(Client::try_from(Config::new(uri))?)
}

async fn start_etcd(
    bins: &Binaries,
    base: &Path,
    data: &Path,
    deadline: Instant,
) -> Result<(Managed, u16)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let client_port = free_port()?;
        let peer_port = free_port()?;
        let member_dir = data.join(format!("member-{attempt}"));
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let args = vec![
            "--name=weft-test".to_owned(),
            format!("--data-dir={}", member_dir.display()),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=weft-test={peer_url}"),
            "--initial-cluster-state=new".to_owned(),
            "--logger=zap".to_owned(),
            "--log-outputs=stderr".to_owned(),
        ];
        let log = base.join(format!("etcd-{attempt}.log"));
        let p = Managed::spawn("etcd", &bins.etcd, &args, log)?;
        match wait_etcd(&p, client_port, deadline).await {
            Ok(()) => return Ok((p, client_port)),
            Err(e) if attempt < PORT_ATTEMPTS && is_port_clash(&p.log_tail(50)) => {
                tracing::warn!("etcd port clash, retrying on new ports: {e}");
                p.stop();
            }
            Err(e) => return Err(e),
        }
    }
}

async fn wait_etcd(p: &Managed, port: u16, deadline: Instant) -> Result<()> {
    loop {
        if let Some(status) = p.exited() {
            return Err(p.not_ready(format!("exited with {status}")));
        }
        if etcd_healthy(port).await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(p.not_ready(format!("no healthy /health on 127.0.0.1:{port} in time")));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A minimal HTTP/1.0 GET of etcd's `/health`.
async fn etcd_healthy(port: u16) -> bool {
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf).contains("\"health\":\"true\""))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), probe).await,
        Ok(Ok(true))
    )
}

async fn start_apiserver(
    bins: &Binaries,
    base: &Path,
    pki: &Pki,
    etcd_port: u16,
    real_node: Option<&RealNodeSettings>,
    deadline: Instant,
) -> Result<(Managed, String, Client)> {
    let address = real_node.map_or(std::net::Ipv4Addr::LOCALHOST, |n| n.address);
    let service_cidr = real_node.map_or("10.96.0.0/16", |n| n.service_cidr);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = free_port_on(address)?;
        let server = format!("https://{address}:{port}");
        let kubeconfig = base.join("admin.kubeconfig");
        let kc = kubeconfig_yaml(&server, &pki.ca.cert_pem(), &pki.admin);
        std::fs::write(&kubeconfig, kc).map_err(io_err(&kubeconfig))?;
        let p = |p: &Path| p.display().to_string();
        let args = vec![
            format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
            format!("--bind-address={address}"),
            format!("--advertise-address={address}"),
            format!("--secure-port={port}"),
            "--insecure-port=0".to_owned(),
            format!("--cert-dir={}", p(base)),
            format!("--tls-cert-file={}", p(&pki.serving_crt)),
            format!("--tls-private-key-file={}", p(&pki.serving_key)),
            format!("--client-ca-file={}", p(&pki.ca_crt)),
            format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
            format!("--service-account-key-file={}", p(&pki.sa_pub)),
            format!("--service-account-signing-key-file={}", p(&pki.sa_key)),
            "--authorization-mode=Node,RBAC".to_owned(),
            "--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,\
             DefaultStorageClass,DefaultTolerationSeconds,MutatingAdmissionWebhook,\
             ValidatingAdmissionWebhook,ResourceQuota"
                .to_owned(),
            format!("--service-cluster-ip-range={service_cidr}"),
            // `kubectl logs`/`exec`: reach kubelets by address, as themselves.
            "--kubelet-preferred-address-types=InternalIP".to_owned(),
            format!(
                "--kubelet-client-certificate={}",
                p(&pki.kubelet_client_crt)
            ),
            format!("--kubelet-client-key={}", p(&pki.kubelet_client_key)),
            "--allow-privileged=true".to_owned(),
            "--profiling=false".to_owned(),
            "--v=1".to_owned(),
        ];
        let log = base.join(format!("kube-apiserver-{attempt}.log"));
        let proc = Managed::spawn("kube-apiserver", &bins.kube_apiserver, &args, log)?;
        let client = client_from_kubeconfig(&kubeconfig).await?;
        match wait_apiserver(&proc, &client, deadline).await {
            Ok(()) => return Ok((proc, server, client)),
            Err(e) if attempt < PORT_ATTEMPTS && is_port_clash(&proc.log_tail(50)) => {
                tracing::warn!("kube-apiserver port clash, retrying on a new port: {e}");
                proc.stop();
            }
            Err(e) => return Err(e),
        }
    }
}

async fn wait_apiserver(p: &Managed, client: &Client, deadline: Instant) -> Result<()> {
    loop {
        if let Some(status) = p.exited() {
            return Err(p.not_ready(format!("exited with {status}")));
        }
        let last;
        let req = http::Request::get("/readyz").body(Vec::new());
        match req {
            Ok(req) => {
                match tokio::time::timeout(Duration::from_secs(5), client.request_text(req)).await {
                    Ok(Ok(body)) if body.trim() == "ok" => return Ok(()),
                    Ok(Ok(body)) => last = format!("/readyz said {body:?}"),
                    Ok(Err(e)) => last = format!("/readyz: {e}"),
                    Err(_) => last = "/readyz took over 5s".to_owned(),
                }
            }
            Err(e) => last = e.to_string(),
        }
        if Instant::now() >= deadline {
            return Err(p.not_ready(format!("not ready in time; last check: {last}")));
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn start_controller_manager(
    bins: &Binaries,
    base: &Path,
    pki: &Pki,
    server_url: &str,
    client: &Client,
    real_node: bool,
    deadline: Instant,
) -> Result<Managed> {
    let kubeconfig = base.join("controller-manager.kubeconfig");
    // Without a kubelet posting heartbeats, the node lifecycle controller
    // would mark the stand-in Node unreachable and evict its Pods; with a
    // real kubelet it must run, or the Node keeps its not-ready taint.
    let controllers = if real_node {
        "--controllers=*"
    } else {
        "--controllers=*,-nodelifecycle"
    };
    let kc = kubeconfig_yaml(server_url, &pki.ca.cert_pem(), &pki.kcm);
    std::fs::write(&kubeconfig, kc).map_err(io_err(&kubeconfig))?;
    let p = |p: &Path| p.display().to_string();
    let args = vec![
        format!("--kubeconfig={}", p(&kubeconfig)),
        "--leader-elect=false".to_owned(),
        // No serving: nothing to clash with parallel control planes.
        "--port=0".to_owned(),
        "--secure-port=0".to_owned(),
        format!("--service-account-private-key-file={}", p(&pki.sa_key)),
        format!("--root-ca-file={}", p(&pki.ca_crt)),
        format!("--cluster-signing-cert-file={}", p(&pki.ca_crt)),
        format!("--cluster-signing-key-file={}", p(&pki.ca_key)),
        "--use-service-account-credentials=false".to_owned(),
        controllers.to_owned(),
        "--v=1".to_owned(),
    ];
    let log = base.join("kube-controller-manager.log");
    let proc = Managed::spawn(
        "kube-controller-manager",
        &bins.kube_controller_manager,
        &args,
        log,
    )?;
    // Ready once the ServiceAccount and token controllers have done their
    // first pass: `default/default` exists with a token Secret.
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    let mut last = String::from("default/default ServiceAccount not there yet");
    loop {
        if let Some(status) = proc.exited() {
            return Err(proc.not_ready(format!("exited with {status}")));
        }
        match sas.get_opt("default").await {
            Ok(Some(sa)) if sa.secrets.as_ref().is_some_and(|s| !s.is_empty()) => return Ok(proc),
            Ok(Some(_)) => last = "default/default has no token Secret yet".to_owned(),
            Ok(None) => {}
            Err(e) => last = e.to_string(),
        }
        if Instant::now() >= deadline {
            return Err(proc.not_ready(format!("not ready in time; last check: {last}")));
        }
        tokio::time::sleep(POLL).await;
    }
}
