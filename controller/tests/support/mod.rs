//! `weft-controller` as a real child process, and a real TLS gRPC client.
#![allow(dead_code)] // each test binary uses part of it

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use linkerd2_proxy_api::destination::destination_client::DestinationClient;
use linkerd2_proxy_api::identity::identity_client::IdentityClient;
use linkerd2_proxy_api::identity::{CertifyRequest, CertifyResponse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// How long the controller gets to become ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A running `weft-controller`, killed when dropped (its log is printed
/// if the test failed).
pub struct Controller {
    child: Child,
    /// Identity service (gRPC over TLS).
    pub identity: SocketAddr,
    /// Admin server.
    pub admin: SocketAddr,
    /// Destination service (gRPC over TLS; only served with `--config-dir`).
    pub destination: SocketAddr,
    log: PathBuf,
}

/// Writes a fresh identity directory (as `weft identity init` would).
pub fn identity_dir() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    weft_identity::init(tmp.path(), &weft_identity::InitOptions::default()).unwrap();
    tmp
}

impl Controller {
    /// Starts `weft-controller --identity-dir DIR` on free loopback ports
    /// with `extra` flags, and waits (bounded) for `/ready`.
    pub async fn start(dir: &Path, extra: &[&str]) -> Result<Self> {
        let identity = free_addr();
        let admin = free_addr();
        let destination = free_addr();
        let log = std::env::temp_dir().join(format!(
            "weft-controller-test-{}-{}.log",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let log_file = std::fs::File::create(&log)?;
        let child = Command::new(env!("CARGO_BIN_EXE_weft-controller"))
            .arg("--identity-dir")
            .arg(dir)
            .arg("--identity-addr")
            .arg(identity.to_string())
            .arg("--admin-addr")
            .arg(admin.to_string())
            .arg("--destination-addr")
            .arg(destination.to_string())
            .args(extra)
            .env("WEFT_CONTROLLER_LOG", "info,weft_controller=debug")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .context("spawning weft-controller")?;
        let mut c = Self {
            child,
            identity,
            admin,
            destination,
            log,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = c.child.try_wait()? {
                bail!(
                    "weft-controller exited during start-up ({status}):\n{}",
                    c.log()
                );
            }
            if let Ok((200, _)) = http_get(admin, "/ready").await {
                return Ok(c);
            }
            if Instant::now() > deadline {
                bail!(
                    "weft-controller not ready after {START_TIMEOUT:?}:\n{}",
                    c.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything the controller logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Current `/metrics` text.
    pub async fn metrics(&self) -> String {
        http_get(self.admin, "/metrics").await.unwrap().1
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
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

    /// Waits (bounded) until the log contains `needle`.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "log never contained {needle:?} within {timeout:?}:\n{}",
            self.log()
        )
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- weft-controller log ({}) ---\n{}",
                self.log.display(),
                self.log()
            );
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// A minimal HTTP/1.1 GET: (status, body). Bounded by 5 s.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    tokio::time::timeout(Duration::from_secs(5), async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .context("no status line")?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    })
    .await
    .context("GET timed out")?
}

/// A gRPC client for the identity service over TLS, trusting `anchor_pem`
/// and expecting the server to be `server_name`. Calls are bounded by 15 s.
pub async fn client(
    addr: SocketAddr,
    anchor_pem: &str,
    server_name: &str,
) -> Result<IdentityClient<Channel>> {
    let channel = endpoint(addr, anchor_pem, server_name)?
        .timeout(Duration::from_secs(15))
        .connect()
        .await?;
    Ok(IdentityClient::new(channel))
}

/// A TLS gRPC channel to the controller, trusting `anchor_pem` and
/// expecting the server to be `server_name`; no per-call timeout, for
/// long-lived streams (callers bound their waits).
pub async fn channel(addr: SocketAddr, anchor_pem: &str, server_name: &str) -> Result<Channel> {
    Ok(endpoint(addr, anchor_pem, server_name)?.connect().await?)
}

fn endpoint(addr: SocketAddr, anchor_pem: &str, server_name: &str) -> Result<Endpoint> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(anchor_pem))
        .domain_name(server_name);
    Ok(Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5)))
}

/// The controller's identity in the default trust domain.
pub fn controller_name() -> String {
    weft_identity::controller_identity(weft_identity::DEFAULT_TRUST_DOMAIN)
}

/// Sends one Certify request.
pub async fn certify(
    client: &mut IdentityClient<Channel>,
    identity: &str,
    token: &str,
    csr: Vec<u8>,
) -> Result<CertifyResponse, tonic::Status> {
    client
        .certify(CertifyRequest {
            identity: identity.to_owned(),
            token: token.as_bytes().to_vec(),
            certificate_signing_request: csr,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Sum of a metric's samples whose line contains every `labels` fragment.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Replaces `name` in `dir` atomically (write a hidden temp file, rename),
/// as docs/destination.md recommends for the config dir.
pub fn write_config(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// Starts a controller with a fresh identity dir and a config dir holding
/// `files`, polled every 200 ms. Returns (identity dir, config dir, controller).
pub async fn start_with_config(
    files: &[(&str, &str)],
) -> (tempfile::TempDir, tempfile::TempDir, Controller) {
    let id = identity_dir();
    let cfg = tempfile::tempdir().unwrap();
    for (name, text) in files {
        write_config(cfg.path(), name, text);
    }
    let ctl = Controller::start(
        id.path(),
        &[
            "--config-dir",
            cfg.path().to_str().unwrap(),
            "--config-poll-interval",
            "200ms",
        ],
    )
    .await
    .unwrap();
    (id, cfg, ctl)
}

/// A destination client over TLS to `ctl`, trusting the anchor in `id`.
pub async fn destination_client(id: &Path, ctl: &Controller) -> DestinationClient<Channel> {
    let anchor = weft_identity::IdentityDir::new(id)
        .read_trust_anchors_pem()
        .unwrap();
    DestinationClient::new(
        channel(ctl.destination, &anchor, &controller_name())
            .await
            .unwrap(),
    )
}

/// How long a test waits for a matching `Get` update.
pub const GET_WAIT: Duration = Duration::from_secs(30);

/// A `Get`/`GetProfile` request for `path` (`host:port`).
pub fn get_request(path: &str) -> linkerd2_proxy_api::destination::GetDestination {
    linkerd2_proxy_api::destination::GetDestination {
        scheme: "k8s".into(),
        path: path.into(),
        context_token: String::new(),
    }
}

/// `ip:port` of an endpoint address in an update.
pub fn addr_of(a: &Option<linkerd2_proxy_api::net::TcpAddress>) -> String {
    #![allow(clippy::unwrap_used)] // test support: a panic is the failure report
    let a = a.as_ref().unwrap();
    let ip = match a.ip.as_ref().unwrap().ip.unwrap() {
        linkerd2_proxy_api::net::ip_address::Ip::Ipv4(v4) => std::net::Ipv4Addr::from(v4),
        other => panic!("unexpected {other:?}"),
    };
    format!("{ip}:{}", a.port)
}

/// Reads `Get` updates into `known` (endpoints by `ip:port`) until `done`
/// holds for them and for whether the target exists (`None` until an
/// update says); bounded by [`GET_WAIT`].
pub async fn follow(
    stream: &mut tonic::Streaming<linkerd2_proxy_api::destination::Update>,
    known: &mut std::collections::BTreeMap<String, linkerd2_proxy_api::destination::WeightedAddr>,
    done: impl Fn(
        &std::collections::BTreeMap<String, linkerd2_proxy_api::destination::WeightedAddr>,
        Option<bool>,
    ) -> bool,
) {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // test support
    use linkerd2_proxy_api::destination::update;
    let deadline = Instant::now() + GET_WAIT;
    let mut exists = None;
    while !done(known, exists) {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, stream.message())
            .await
            .unwrap_or_else(|_| {
                panic!("no matching Get update within {GET_WAIT:?}; have {known:?}")
            })
            .unwrap()
            .expect("Get stream ended");
        match msg.update.unwrap() {
            update::Update::Add(set) => {
                exists = Some(true);
                for a in set.addrs {
                    known.insert(addr_of(&a.addr), a);
                }
            }
            update::Update::Remove(set) => {
                for a in set.addrs {
                    known.remove(&addr_of(&Some(a)));
                }
            }
            update::Update::NoEndpoints(n) => {
                exists = Some(n.exists);
                known.clear();
            }
        }
    }
}
