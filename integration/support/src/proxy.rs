//! `weft-proxy` as a real child process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Builds a proxy process: listeners default to free loopback ports.
#[derive(Debug)]
pub struct ProxyBuilder {
    bin: PathBuf,
    env: Vec<(String, String)>,
    wrapper: Vec<String>,
}

/// A running `weft-proxy`, killed when dropped.
#[derive(Debug)]
pub struct ProxyProcess {
    child: Child,
    /// Inbound listener.
    pub inbound: SocketAddr,
    /// Outbound listener.
    pub outbound: SocketAddr,
    /// Admin server.
    pub admin: SocketAddr,
    log: PathBuf,
}

impl ProxyBuilder {
    /// A proxy run from the binary at `bin`.
    pub fn new(bin: impl AsRef<Path>) -> Self {
        Self {
            bin: bin.as_ref().to_path_buf(),
            env: Vec::new(),
            wrapper: Vec::new(),
        }
    }

    /// Runs the proxy through a command that execs it (e.g. `ip netns exec
    /// NS setpriv --reuid 2102 ...`), so the child's pid is the proxy's.
    pub fn wrap(mut self, command: &[&str]) -> Self {
        self.wrapper = command.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: &str, value: impl ToString) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Starts the proxy and waits (at most 20 s) until `/ready` answers 200.
    pub async fn spawn(self) -> anyhow::Result<ProxyProcess> {
        self.start(true).await
    }

    /// Starts the proxy and waits only until its admin server answers
    /// (`/ready` may still be 503, e.g. while it has no certificate).
    pub async fn spawn_unready(self) -> anyhow::Result<ProxyProcess> {
        self.start(false).await
    }

    async fn start(self, ready: bool) -> anyhow::Result<ProxyProcess> {
        let addr = |key: &str| -> anyhow::Result<SocketAddr> {
            Ok(match self.get(key) {
                Some(v) => v.parse()?,
                None => crate::free_addr(),
            })
        };
        let inbound = addr("WEFT_PROXY_INBOUND_ADDR")?;
        let outbound = addr("WEFT_PROXY_OUTBOUND_ADDR")?;
        let admin = addr("WEFT_PROXY_ADMIN_ADDR")?;
        let log = std::env::temp_dir().join(format!(
            "weft-proxy-test-{}-{}.log",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let log_file = std::fs::File::create(&log)?;
        let mut cmd = match self.wrapper.split_first() {
            None => Command::new(&self.bin),
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&self.bin);
                c
            }
        };
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("WEFT_PROXY_LOG", "info,weft_proxy=debug")
            .env("WEFT_PROXY_INBOUND_ADDR", inbound.to_string())
            .env("WEFT_PROXY_OUTBOUND_ADDR", outbound.to_string())
            .env("WEFT_PROXY_ADMIN_ADDR", admin.to_string())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", self.bin.display()))?;
        let mut proxy = ProxyProcess {
            child,
            inbound,
            outbound,
            admin,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = proxy.child.try_wait()? {
                anyhow::bail!(
                    "weft-proxy exited during start-up ({status}):\n{}",
                    proxy.log()
                );
            }
            match crate::client::get(admin, "/ready").await {
                Ok((200, _)) => return Ok(proxy),
                Ok(_) if !ready => return Ok(proxy),
                _ => {}
            }
            if Instant::now() > deadline {
                anyhow::bail!("weft-proxy not ready after 20s:\n{}", proxy.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl ProxyProcess {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the proxy logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The current `/metrics` text.
    pub async fn metrics(&self) -> String {
        match crate::client::get(self.admin, "/metrics").await {
            Ok((_, body)) => body,
            Err(e) => panic!("scraping {}: {e}\n{}", self.admin, self.log()),
        }
    }

    /// The status of `/ready` (0 if the admin server does not answer).
    pub async fn ready_status(&self) -> u16 {
        crate::client::get(self.admin, "/ready")
            .await
            .map_or(0, |(s, _)| s)
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Peak resident set size in KiB (`VmHWM`).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        } else {
            eprintln!(
                "--- weft-proxy log ({}) ---\n{}",
                self.log.display(),
                self.log()
            );
        }
    }
}
