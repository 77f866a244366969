//! Where every process of the demo listens, and the check that all of it
//! is free before anything starts.
//!
//! All ports come from one block starting at `--port-base` (default
//! 24000), laid out so the numbers read like Linkerd's (`4140` outbound,
//! `4191` admin, `4143` inbound, apps on `8080`):
//!
//! ```text
//! BASE+0           controller identity      (like :8080)
//! BASE+6           controller destination   (like :8086)
//! BASE+10·(i+1)+0  workload i's proxy outbound
//!            +1    workload i's proxy admin
//!            +3    workload i's proxy inbound
//!            +8    workload i's app
//! ```
//!
//! The controller's admin server is separate (`--controller-admin-addr`,
//! default `127.0.0.1:9990`, the CLI's default `--controller-addr`), so
//! `weft stat` works with no flags.

use super::topology::WORKLOADS;
use anyhow::bail;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};

/// How many consecutive ports from `--port-base` the demo uses.
pub const BLOCK: u16 = 10 * (WORKLOADS.len() as u16 + 1);

/// The largest `--port-base` whose block still fits below 65536.
pub const MAX_BASE: u16 = u16::MAX - BLOCK + 1;

/// The ports of one workload's pod.
#[derive(Clone, Copy, Debug)]
pub struct PodPorts {
    /// The app's own listener (`None` for the load generator, which only
    /// sends).
    pub app: Option<SocketAddr>,
    /// The proxy's inbound listener: the pod's endpoint in the Endpoints.
    pub inbound: SocketAddr,
    /// The proxy's outbound listener, the app's `http_proxy`.
    pub outbound: SocketAddr,
    /// The proxy's admin server (`/metrics`, `/ready`), scraped by the
    /// controller.
    pub admin: SocketAddr,
}

/// Every address the demo listens on.
#[derive(Clone, Debug)]
pub struct Plan {
    /// `--port-base`, named in errors.
    pub base: u16,
    /// The controller's identity service (Certify).
    pub identity: SocketAddr,
    /// The controller's destination service.
    pub destination: SocketAddr,
    /// The controller's admin server (metrics API, `/ready`).
    pub admin: SocketAddr,
    /// Whether the identity address came from its own flag.
    identity_given: bool,
    /// Whether the destination address came from its own flag.
    destination_given: bool,
    /// Per workload, in the order of [`WORKLOADS`].
    pub pods: Vec<PodPorts>,
}

/// One address to claim: what it is for, where it came from and the
/// flag that moves it.
struct Claim {
    addr: SocketAddr,
    what: String,
    /// `--port-base 24000`, or the flag that set it.
    source: String,
    /// The flag to change when it is taken.
    flag: &'static str,
    /// Kept bound (an in-process app serves on it) or released for a
    /// child to bind.
    keep: bool,
}

/// The app listeners, bound by [`Plan::claim`] and served in-process.
pub type AppListeners = Vec<Option<TcpListener>>;

// === impl Plan ===

impl Plan {
    /// The layout for `base`, with the controller's identity and
    /// destination addresses from the block unless given.
    pub fn new(
        base: u16,
        admin: SocketAddr,
        identity: Option<SocketAddr>,
        destination: Option<SocketAddr>,
    ) -> anyhow::Result<Self> {
        if base > MAX_BASE {
            bail!("--port-base {base} is too high: the demo uses {BLOCK} ports from it, so at most {MAX_BASE}");
        }
        let at = |offset: u16| SocketAddr::from((Ipv4Addr::LOCALHOST, base + offset));
        let pods = WORKLOADS
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let first = 10 * (i as u16 + 1);
                PodPorts {
                    app: w.app.serves().then(|| at(first + 8)),
                    outbound: at(first),
                    admin: at(first + 1),
                    inbound: at(first + 3),
                }
            })
            .collect();
        Ok(Self {
            base,
            identity: identity.unwrap_or_else(|| at(0)),
            destination: destination.unwrap_or_else(|| at(6)),
            admin,
            identity_given: identity.is_some(),
            destination_given: destination.is_some(),
            pods,
        })
    }

    fn claims(&self) -> Vec<Claim> {
        let base = format!("--port-base {}", self.base);
        let controller = |addr: SocketAddr, what: &str, flag: &'static str, given: bool| Claim {
            addr,
            what: format!("controller {what}"),
            source: if given { flag.to_owned() } else { base.clone() },
            flag: if given { flag } else { "--port-base" },
            keep: false,
        };
        let mut claims = vec![
            controller(self.admin, "admin", "--controller-admin-addr", true),
            controller(
                self.identity,
                "identity",
                "--controller-identity-addr",
                self.identity_given,
            ),
            controller(
                self.destination,
                "destination",
                "--controller-destination-addr",
                self.destination_given,
            ),
        ];
        for (w, p) in WORKLOADS.iter().zip(&self.pods) {
            let claim = |addr, what: String, keep| Claim {
                addr,
                what,
                source: base.clone(),
                flag: "--port-base",
                keep,
            };
            claims.push(claim(
                p.outbound,
                format!("{} proxy outbound", w.name),
                false,
            ));
            claims.push(claim(p.admin, format!("{} proxy admin", w.name), false));
            claims.push(claim(p.inbound, format!("{} proxy inbound", w.name), false));
            if let Some(app) = p.app {
                claims.push(claim(app, format!("{} app", w.name), true));
            }
        }
        claims
    }

    /// Binds every address once, before any process starts, so a port
    /// that is taken is reported naming the flag that moves it. The apps'
    /// listeners stay bound and are returned (in [`WORKLOADS`] order); the
    /// others are released for the child processes to bind.
    pub fn claim(&self) -> anyhow::Result<AppListeners> {
        let claims = self.claims();
        for (i, a) in claims.iter().enumerate() {
            if let Some(b) = claims[..i].iter().find(|b| b.addr == a.addr) {
                bail!(
                    "{} would be both the {} ({}) and the {} ({}): choose another {}",
                    a.addr,
                    b.what,
                    b.source,
                    a.what,
                    a.source,
                    a.flag
                );
            }
        }
        let mut held = Vec::with_capacity(claims.len());
        for c in &claims {
            match TcpListener::bind(c.addr) {
                Ok(l) => held.push((c, l)),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
                    "{} (the {}, from {}) is already in use: choose another {} \
                     (is another weft demo or weft-controller running?)",
                    c.addr,
                    c.what,
                    c.source,
                    c.flag
                ),
                Err(e) => bail!(
                    "cannot listen on {} (the {}, from {}): {e}; choose another {}",
                    c.addr,
                    c.what,
                    c.source,
                    c.flag
                ),
            }
        }
        let mut apps: AppListeners = WORKLOADS.iter().map(|_| None).collect();
        for (c, listener) in held {
            if !c.keep {
                continue;
            }
            if let Some(i) = self.pods.iter().position(|p| p.app == Some(c.addr)) {
                apps[i] = Some(listener);
            }
        }
        Ok(apps)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn plan(base: u16) -> Plan {
        Plan::new(base, "127.0.0.1:0".parse().unwrap(), None, None).unwrap()
    }

    #[test]
    fn ports_follow_the_documented_layout() {
        let p = plan(24000);
        assert_eq!(p.identity.port(), 24000);
        assert_eq!(p.destination.port(), 24006);
        let web = p.pods[1];
        assert_eq!(web.outbound.port(), 24020);
        assert_eq!(web.admin.port(), 24021);
        assert_eq!(web.inbound.port(), 24023);
        assert_eq!(web.app.unwrap().port(), 24028);
        // The load generator has no app listener.
        assert!(p.pods[0].app.is_none());
        let last = p.pods.last().unwrap();
        assert!(last.app.unwrap().port() < 24000 + BLOCK);
    }

    #[test]
    fn a_base_too_high_is_refused() {
        let err = Plan::new(65500, "127.0.0.1:0".parse().unwrap(), None, None).unwrap_err();
        assert!(err.to_string().contains("--port-base 65500"), "{err}");
        assert!(Plan::new(MAX_BASE, "127.0.0.1:0".parse().unwrap(), None, None).is_ok());
    }

    #[test]
    fn the_same_address_twice_is_refused() {
        let mut p = plan(24000);
        p.admin = p.pods[1].admin;
        let err = p.claim().unwrap_err().to_string();
        assert!(
            err.contains("controller admin") && err.contains("web proxy admin"),
            "{err}"
        );
    }

    #[test]
    fn a_taken_port_names_its_flag() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut p = plan(24000);
        p.admin = taken.local_addr().unwrap();
        let err = p.claim().unwrap_err().to_string();
        assert!(
            err.contains("already in use") && err.contains("--controller-admin-addr"),
            "{err}"
        );
    }
}
