//! A private network for endpoints that must not be on loopback.
//!
//! The Kubernetes API rejects Endpoints addresses in 127.0.0.0/8, so tests
//! that run real traffic through Kubernetes discovery need backends on
//! other addresses, without touching any network but their own. A
//! [`TestNet`] is a network namespace joined to the host by a veth pair,
//! with a /24 from `10.214.0.0/16` (one third octet per test, probed free):
//! the host side is `.1`, the namespace side `.2`, and
//! [`add_ip`](TestNet::add_ip) adds more addresses in the namespace (one
//! per "pod"). Servers are bound **inside** the namespace on a dedicated
//! thread that entered it (`setns`) and runs its own Tokio runtime; sockets
//! keep the namespace they were created in, so everything else (proxies,
//! clients) stays in the host namespace and reaches them over the veth.
//!
//! Needs root and `ip` (iproute2); [`TestNet::unavailable`] says why not
//! so a test can skip with a clear message. Dropping a `TestNet` stops its
//! servers and deletes the namespace and the veth, also when the test
//! panics.

use crate::backend::HttpBackend;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::mpsc;

/// The second octet of every test network (`10.214.N.0/24`).
const SECOND_OCTET: u8 = 214;

/// A network namespace with a veth to the host and a /24 of its own.
#[derive(Debug)]
pub struct TestNet {
    name: String,
    host_veth: String,
    peer_veth: String,
    third: u8,
    runtime: Option<NamespaceRuntime>,
}

/// A Tokio runtime on a thread inside the namespace.
#[derive(Debug)]
struct NamespaceRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn ip_cmd(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip").args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

// === impl TestNet ===

impl TestNet {
    /// Why a `TestNet` cannot be made here (not root, no `ip`), or `None`.
    pub fn unavailable() -> Option<String> {
        let uid = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
            });
        if uid.as_deref() != Some("0") {
            return Some("not root: network namespaces need root".into());
        }
        if ip_cmd(&["-V"]).is_err() {
            return Some("no `ip` command (iproute2)".into());
        }
        None
    }

    /// Creates the namespace and the veth, on the first free /24 (a
    /// namespace name that already exists means another test has it).
    pub fn create() -> anyhow::Result<Self> {
        let start = std::process::id() as usize;
        let mut last = None;
        for i in 0..250 {
            let third = ((start + i) % 250 + 1) as u8;
            match Self::create_on(third) {
                Ok(net) => return Ok(net),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no free test network")))
    }

    fn create_on(third: u8) -> anyhow::Result<Self> {
        let name = format!("weft-tn-{third}");
        // `ip netns add` fails if the name exists: that is the lock.
        ip_cmd(&["netns", "add", &name])?;
        let mut net = Self {
            name,
            host_veth: format!("wtn{third}h"),
            peer_veth: format!("wtn{third}p"),
            third,
            runtime: None,
        };
        let host_cidr = format!("{}/24", net.host_ip());
        let peer_cidr = format!("{}/24", net.ip(2));
        let (host_veth, peer_veth, ns) = (
            net.host_veth.clone(),
            net.peer_veth.clone(),
            net.name.clone(),
        );
        let routes = ip_cmd(&["-4", "route", "show"])?;
        anyhow::ensure!(
            !routes.contains(&format!("10.{SECOND_OCTET}.{third}.0/24")),
            "10.{SECOND_OCTET}.{third}.0/24 is routed already"
        );
        ip_cmd(&[
            "link", "add", &host_veth, "type", "veth", "peer", "name", &peer_veth,
        ])?;
        ip_cmd(&["link", "set", &peer_veth, "netns", &ns])?;
        ip_cmd(&["addr", "add", &host_cidr, "dev", &host_veth])?;
        ip_cmd(&["link", "set", &host_veth, "up"])?;
        net.exec(&["ip", "addr", "add", &peer_cidr, "dev", &peer_veth])?;
        net.exec(&["ip", "link", "set", &peer_veth, "up"])?;
        net.exec(&["ip", "link", "set", "lo", "up"])?;
        // Traffic for the /24 must leave through our veth and nowhere else.
        let route = ip_cmd(&["-4", "route", "get", &net.ip(2).to_string()])?;
        anyhow::ensure!(
            route.contains(&format!("dev {host_veth}")),
            "{} is not routed to {host_veth}: {route}",
            net.ip(2)
        );
        net.runtime = Some(NamespaceRuntime::start(&net.name)?);
        Ok(net)
    }

    /// The namespace's name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host side of the veth (`10.214.N.1`).
    pub fn host_ip(&self) -> IpAddr {
        self.ip(1)
    }

    /// Address `.host` of this network (`10.214.N.host`).
    pub fn ip(&self, host: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, SECOND_OCTET, self.third, host))
    }

    /// Adds `10.214.N.host` inside the namespace (a second "pod" address;
    /// `.2` is there already) and returns it.
    pub fn add_ip(&self, host: u8) -> anyhow::Result<IpAddr> {
        anyhow::ensure!(host > 2 && host < 255, "host part {host} is reserved");
        let ip = self.ip(host);
        let cidr = format!("{ip}/24");
        self.exec(&["ip", "addr", "add", &cidr, "dev", &self.peer_veth])?;
        Ok(ip)
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["netns", "exec", &self.name];
        full.extend_from_slice(args);
        ip_cmd(&full)
    }

    /// Starts an [`HttpBackend`] listening inside the namespace on `addr`,
    /// which must be one of its addresses. It is served by the namespace's
    /// runtime and stops when dropped or when the `TestNet` goes.
    pub async fn http_backend(&self, addr: SocketAddr) -> anyhow::Result<HttpBackend> {
        anyhow::ensure!(
            self.contains(addr.ip()),
            "{addr} is not in this test network"
        );
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("namespace runtime stopped"))?;
        Ok(runtime.handle.spawn(HttpBackend::bind(addr)).await?)
    }

    /// Whether `ip` is in this network's /24.
    pub fn contains(&self, ip: IpAddr) -> bool {
        matches!(ip, IpAddr::V4(v4) if v4.octets()[..3] == [10, SECOND_OCTET, self.third])
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // Servers first (their sockets), then the namespace and the veth
        // (deleting the namespace removes the peer; the host end goes too,
        // the explicit delete is for a half-made network).
        drop(self.runtime.take());
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_veth])
            .output();
    }
}

// === impl NamespaceRuntime ===

impl NamespaceRuntime {
    /// Starts a thread that enters namespace `name` and runs a
    /// current-thread runtime until dropped.
    fn start(name: &str) -> anyhow::Result<Self> {
        let path = format!("/var/run/netns/{name}");
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("netns-{name}"))
            .spawn(move || {
                let entered = std::fs::File::open(&path)
                    .map_err(anyhow::Error::from)
                    .and_then(|f| {
                        rustix::thread::move_into_link_name_space(
                            f.as_fd(),
                            Some(rustix::thread::LinkNameSpaceType::Network),
                        )
                        .map_err(anyhow::Error::from)
                    })
                    .and_then(|()| {
                        tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .map_err(anyhow::Error::from)
                    });
                let rt = match entered {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(rt.handle().clone()));
                rt.block_on(async {
                    let _ = stop_rx.await;
                });
            })?;
        let handle = ready_rx
            .recv()
            .map_err(|_| anyhow::anyhow!("namespace thread died"))??;
        Ok(Self {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for NamespaceRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend inside the namespace answers from the host over the veth,
    /// and is not reachable on the host's own loopback.
    #[tokio::test]
    async fn backends_in_the_namespace_answer_over_the_veth() {
        if let Some(why) = TestNet::unavailable() {
            panic!("{why}: this test needs a network namespace (root and `ip`)");
        }
        let net = TestNet::create().expect("test network");
        let ip = net.add_ip(10).expect("second address");
        let backend = net
            .http_backend(SocketAddr::new(ip, 8080))
            .await
            .expect("backend in the namespace");
        let (status, body) = crate::client::get(backend.addr, "/")
            .await
            .expect("request over the veth");
        assert_eq!((status, body.as_str()), (200, "hello\n"));
        assert_eq!(backend.requests(), 1);
        // Not on the host's loopback: whatever answers there, it is not it.
        let _ = crate::client::get(SocketAddr::from(([127, 0, 0, 1], 8080)), "/").await;
        assert_eq!(backend.requests(), 1);
        let name = net.name().to_owned();
        drop(backend);
        drop(net);
        let list = ip_cmd(&["netns", "list"]).unwrap_or_default();
        assert!(!list.contains(&name), "{name} left behind: {list}");
    }
}
