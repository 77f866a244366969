//! `weft-controller` as a real child process, with its own CA material.

use crate::proxy::ProxyBuilder;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running controller serving identity, killed when dropped.
#[derive(Debug)]
pub struct ControllerProcess {
    child: Child,
    dir: tempfile::TempDir,
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
        let dir = tempfile::tempdir()?;
        weft_identity::init(dir.path(), &weft_identity::InitOptions::default())?;
        Self::launch(
            bin,
            dir,
            leaf_lifetime,
            crate::free_addr(),
            Some(config_dir),
        )
        .await
    }

    /// Starts the controller on existing material in `dir`, serving
    /// identity on `identity_addr`; waits (≤ 20 s) for `/ready`.
    pub async fn start_in(
        bin: &Path,
        dir: tempfile::TempDir,
        leaf_lifetime: &str,
        identity_addr: SocketAddr,
    ) -> anyhow::Result<Self> {
        Self::launch(bin, dir, leaf_lifetime, identity_addr, None).await
    }

    async fn launch(
        bin: &Path,
        dir: tempfile::TempDir,
        leaf_lifetime: &str,
        identity_addr: SocketAddr,
        config_dir: Option<&Path>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            bin.is_file(),
            "{} missing: build the workspace first",
            bin.display()
        );
        let admin_addr = crate::free_addr();
        let destination_addr = crate::free_addr();
        let log = std::fs::File::create(dir.path().join("controller.log"))?;
        let mut cmd = Command::new(bin);
        if let Some(config) = config_dir {
            cmd.arg("--config-dir")
                .arg(config)
                .args(["--config-poll-interval", "200ms"]);
        }
        let child = cmd
            .arg("--identity-dir")
            .arg(dir.path())
            .args(["--identity-addr", &identity_addr.to_string()])
            .args(["--destination-addr", &destination_addr.to_string()])
            .args(["--admin-addr", &admin_addr.to_string()])
            .args(["--identity-leaf-lifetime", leaf_lifetime])
            .env("WEFT_CONTROLLER_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut c = Self {
            child,
            dir,
            identity_addr,
            admin_addr,
            destination_addr,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !matches!(
            crate::client::get(c.admin_addr, "/ready").await,
            Ok((200, _))
        ) {
            if let Some(status) = c.child.try_wait()? {
                anyhow::bail!("controller exited ({status}):\n{}", c.log());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "controller not ready:\n{}",
                c.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(c)
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

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- weft-controller log ---\n{}", self.log());
        }
    }
}
