//! `weft-controller` as a real child process, with its own CA material.

use crate::proxy::{ProxyBuilder, ProxyProcess};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How a controller is run beyond its identity settings: where its objects
/// come from and what wraps the process. Kept by [`ControllerProcess`] so
/// [`restart`](ControllerProcess::restart) runs the same controller again.
#[derive(Clone, Debug, Default)]
pub struct ControllerOptions {
    args: Vec<String>,
    env: Vec<(String, String)>,
    wrapper: Vec<String>,
}

// === impl ControllerOptions ===

impl ControllerOptions {
    /// Objects from a config dir (`--config-dir`), polled every 200 ms.
    pub fn config_dir(dir: &Path) -> Self {
        Self::default().args(&[
            "--config-dir",
            &dir.display().to_string(),
            "--config-poll-interval",
            "200ms",
        ])
    }

    /// Objects from the API server of a kubeconfig (`--kubeconfig`).
    pub fn kubeconfig(path: &Path) -> Self {
        Self::default().args(&["--kubeconfig", &path.display().to_string()])
    }

    /// Adds command-line arguments.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Sets an environment variable for the controller.
    pub fn env(mut self, key: &str, value: impl ToString) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Runs the controller through a command that execs it (e.g. one that
    /// sets up a mount namespace first), so the child's pid is its own.
    pub fn wrap(mut self, command: &[&str]) -> Self {
        self.wrapper = command.iter().map(|s| s.to_string()).collect();
        self
    }
}

/// A running controller serving identity, killed when dropped.
#[derive(Debug)]
pub struct ControllerProcess {
    child: Child,
    dir: tempfile::TempDir,
    bin: PathBuf,
    leaf_lifetime: String,
    options: ControllerOptions,
    /// The identity service (TLS).
    pub identity_addr: SocketAddr,
    /// The admin server.
    pub admin_addr: SocketAddr,
    /// The destination service (served only with a config dir).
    pub destination_addr: SocketAddr,
}

/// `SA.NS.serviceaccount.identity.weft.cluster.local`.
pub fn identity(ns: &str, sa: &str) -> String {
    format!("{sa}.{ns}.serviceaccount.identity.weft.cluster.local")
}

// === impl ControllerProcess ===

impl ControllerProcess {
    /// Makes fresh CA material (`weft identity init`) and starts the
    /// controller at `bin`, issuing leaves that live `leaf_lifetime`.
    pub async fn start(bin: &Path, leaf_lifetime: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        weft_identity::init(dir.path(), &weft_identity::InitOptions::default())?;
        Self::start_in(bin, dir, leaf_lifetime, crate::free_addr()).await
    }

    /// Like [`start`](Self::start), also serving the destination service
    /// from the Kubernetes-style YAML in `config_dir`.
    pub async fn start_with_config(
        bin: &Path,
        leaf_lifetime: &str,
        config_dir: &Path,
    ) -> anyhow::Result<Self> {
        Self::start_with(
            bin,
            leaf_lifetime,
            ControllerOptions::config_dir(config_dir),
        )
        .await
    }

    /// Like [`start`](Self::start), run as `options` say (a feed, a
    /// wrapper, environment).
    pub async fn start_with(
        bin: &Path,
        leaf_lifetime: &str,
        options: ControllerOptions,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        weft_identity::init(dir.path(), &weft_identity::InitOptions::default())?;
        Self::launch(bin, dir, leaf_lifetime, crate::free_addr(), options).await
    }

    /// Starts the controller on existing material in `dir`, serving
    /// identity on `identity_addr`; waits (≤ 20 s) for `/ready`.
    pub async fn start_in(
        bin: &Path,
        dir: tempfile::TempDir,
        leaf_lifetime: &str,
        identity_addr: SocketAddr,
    ) -> anyhow::Result<Self> {
        Self::launch(
            bin,
            dir,
            leaf_lifetime,
            identity_addr,
            ControllerOptions::default(),
        )
        .await
    }

    async fn launch(
        bin: &Path,
        dir: tempfile::TempDir,
        leaf_lifetime: &str,
        identity_addr: SocketAddr,
        options: ControllerOptions,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            bin.is_file(),
            "{} missing: build the workspace first",
            bin.display()
        );
        let admin_addr = crate::free_addr();
        let destination_addr = crate::free_addr();
        std::fs::File::create(dir.path().join("controller.log"))?;
        let child = spawn(
            bin,
            dir.path(),
            leaf_lifetime,
            [identity_addr, destination_addr, admin_addr],
            &options,
        )?;
        let mut c = Self {
            child,
            dir,
            bin: bin.to_owned(),
            leaf_lifetime: leaf_lifetime.to_owned(),
            options,
            identity_addr,
            admin_addr,
            destination_addr,
        };
        c.wait_ready().await?;
        Ok(c)
    }

    /// Waits (≤ 20 s) for `/ready`; fails at once if the process exits.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !matches!(
            crate::client::get(self.admin_addr, "/ready").await,
            Ok((200, _))
        ) {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("controller exited ({status}):\n{}", self.log());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "controller not ready:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Stops the controller (if it runs) and starts it again with the same
    /// identity material, addresses and options, as a crashed controller
    /// comes back; waits for `/ready`. Its log continues in the same file.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let addrs = [self.identity_addr, self.destination_addr, self.admin_addr];
        self.child = spawn(
            &self.bin,
            self.dir.path(),
            &self.leaf_lifetime,
            addrs,
            &self.options,
        )?;
        self.wait_ready().await
    }

    /// Everything the controller logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("controller.log")).unwrap_or_default()
    }

    /// The trust anchors file.
    pub fn anchors(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// Writes a one-hour token for `ns/sa` and returns its path.
    pub fn token(&self, ns: &str, sa: &str) -> anyhow::Result<PathBuf> {
        let key = weft_identity::IdentityDir::new(self.dir.path()).load_token_key()?;
        let token = weft_identity::mint_token(&key, ns, sa, Duration::from_secs(3600))?;
        let path = self.dir.path().join(format!("token-{ns}-{sa}"));
        std::fs::write(&path, token)?;
        Ok(path)
    }

    /// A proxy builder with identity `ns/sa` from this controller.
    pub fn proxy(&self, proxy_bin: &Path, ns: &str, sa: &str) -> anyhow::Result<ProxyBuilder> {
        Ok(self.proxy_as(
            proxy_bin,
            &identity(ns, sa),
            &self.token(ns, sa)?,
            &self.anchors(),
        ))
    }

    /// A proxy builder with identity `ns/sa` that also resolves names
    /// through this controller's destination service: a client pod's
    /// proxy in a mesh fed by this controller.
    pub fn client_proxy(
        &self,
        proxy_bin: &Path,
        ns: &str,
        sa: &str,
    ) -> anyhow::Result<ProxyBuilder> {
        Ok(self
            .proxy(proxy_bin, ns, sa)?
            .env("WEFT_PROXY_DESTINATION_ADDR", self.destination_addr))
    }

    /// A proxy builder with identity `ns/sa` forwarding its inbound
    /// traffic to `app`: a meshed pod, reached at the proxy's inbound
    /// address.
    pub fn pod_proxy(
        &self,
        proxy_bin: &Path,
        ns: &str,
        sa: &str,
        app: SocketAddr,
    ) -> anyhow::Result<ProxyBuilder> {
        Ok(self
            .proxy(proxy_bin, ns, sa)?
            .env("WEFT_PROXY_INBOUND_FORWARD", app))
    }

    /// Starts one [`pod_proxy`](Self::pod_proxy) per app, in order: the
    /// meshed replicas of a service.
    pub async fn meshed_pods(
        &self,
        proxy_bin: &Path,
        ns: &str,
        sa: &str,
        apps: &[SocketAddr],
    ) -> anyhow::Result<Vec<ProxyProcess>> {
        let mut pods = Vec::with_capacity(apps.len());
        for app in apps {
            pods.push(self.pod_proxy(proxy_bin, ns, sa, *app)?.spawn().await?);
        }
        Ok(pods)
    }

    /// A proxy builder claiming `name` with `token` and trusting `anchors`.
    pub fn proxy_as(
        &self,
        proxy_bin: &Path,
        name: &str,
        token: &Path,
        anchors: &Path,
    ) -> ProxyBuilder {
        ProxyBuilder::new(proxy_bin)
            .env("WEFT_PROXY_IDENTITY_NAME", name)
            .env("WEFT_PROXY_IDENTITY_ADDR", self.identity_addr)
            .env("WEFT_PROXY_IDENTITY_TOKEN_FILE", token.display())
            .env("WEFT_PROXY_TRUST_ANCHORS", anchors.display())
    }

    /// Stops the controller now.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the controller; `[identity, destination, admin]` addresses. The
/// log file in `dir` is appended to, so a restart keeps the earlier lines.
fn spawn(
    bin: &Path,
    dir: &Path,
    leaf_lifetime: &str,
    [identity, destination, admin]: [SocketAddr; 3],
    options: &ControllerOptions,
) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(dir.join("controller.log"))?;
    let mut cmd = match options.wrapper.split_first() {
        None => Command::new(bin),
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin);
            c
        }
    };
    cmd.args(&options.args)
        .arg("--identity-dir")
        .arg(dir)
        .args(["--identity-addr", &identity.to_string()])
        .args(["--destination-addr", &destination.to_string()])
        .args(["--admin-addr", &admin.to_string()])
        .args(["--identity-leaf-lifetime", leaf_lifetime])
        .env("WEFT_CONTROLLER_LOG", "info")
        .envs(options.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    Ok(cmd.spawn()?)
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- weft-controller log ---\n{}", self.log());
        }
    }
}
