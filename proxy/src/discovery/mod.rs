//! Service discovery through the controller's destination service.
//!
//! For each authority a request names, one background task holds a
//! `Destination.Get` stream open and publishes the current endpoint set on
//! a watch channel that every request shares. If the stream breaks, the
//! task reconnects with backoff and the **last known endpoints stay in
//! force** meanwhile, so a controller outage never takes traffic down.
//! Authorities unused for [`IDLE_EVICT`] are dropped, so the number of
//! streams does not grow with the names ever requested.
//!
//! [`balance`] picks one endpoint per request (P2C over peak-EWMA).

pub mod balance;

use linkerd2_proxy_api::destination::destination_client::DestinationClient;
use linkerd2_proxy_api::destination::{update, GetDestination, WeightedAddr};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Authorities with no request for this long stop being watched.
pub const IDLE_EVICT: Duration = Duration::from_secs(300);
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What the controller says about an authority.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// No answer yet.
    Pending,
    /// Not a service the controller knows: use the original destination.
    Unknown,
    /// The service's current endpoints (empty: it exists, nothing is ready).
    Endpoints(Arc<Vec<DiscoveredEndpoint>>),
}

/// One endpoint of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveredEndpoint {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The identity its proxy proves (meshed pods), for mTLS.
    pub identity: Option<Arc<str>>,
    /// True if the endpoint's proxy accepts HTTP/2 (HTTP/1 is upgraded).
    pub h2: bool,
}

/// Shared by all requests of the outbound side.
#[derive(Clone)]
pub struct Discovery {
    inner: Arc<Inner>,
}

struct Inner {
    client: DestinationClient<Channel>,
    watches: Mutex<HashMap<String, Watch>>,
}

struct Watch {
    rx: watch::Receiver<Resolution>,
    used: Instant,
    stop: CancellationToken,
}

// === impl Discovery ===

impl Discovery {
    /// Discovery over `channel` (see [`crate::control::channel`]).
    pub fn new(channel: Channel) -> Self {
        Self {
            inner: Arc::new(Inner {
                client: DestinationClient::new(channel),
                watches: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The resolution of `authority` (`name:port`), waiting at most
    /// `timeout` for the first answer.
    pub async fn resolve(&self, authority: &str, timeout: Duration) -> Resolution {
        let mut rx = self.watch(authority);
        let first = tokio::time::timeout(timeout, rx.wait_for(|r| *r != Resolution::Pending)).await;
        match first {
            Ok(Ok(r)) => r.clone(),
            _ => Resolution::Pending,
        }
    }

    fn watch(&self, authority: &str) -> watch::Receiver<Resolution> {
        let now = Instant::now();
        let mut watches = self
            .inner
            .watches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        watches.retain(|_, w| {
            let keep = now.duration_since(w.used) < IDLE_EVICT;
            if !keep {
                w.stop.cancel();
            }
            keep
        });
        if let Some(w) = watches.get_mut(authority) {
            w.used = now;
            return w.rx.clone();
        }
        let (tx, rx) = watch::channel(Resolution::Pending);
        let stop = CancellationToken::new();
        tokio::spawn(follow(
            self.inner.client.clone(),
            authority.to_string(),
            tx,
            stop.clone(),
        ));
        watches.insert(
            authority.to_string(),
            Watch {
                rx: rx.clone(),
                used: now,
                stop,
            },
        );
        rx
    }
}

/// Follows one authority until stopped, reconnecting with backoff.
async fn follow(
    mut client: DestinationClient<Channel>,
    authority: String,
    tx: watch::Sender<Resolution>,
    stop: CancellationToken,
) {
    let mut backoff = MIN_BACKOFF;
    let mut endpoints: BTreeMap<SocketAddr, DiscoveredEndpoint> = BTreeMap::new();
    loop {
        let req = GetDestination {
            scheme: "k8s".into(),
            path: authority.clone(),
            context_token: String::new(),
        };
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            rsp = client.get(req) => rsp,
        };
        match stream {
            Ok(rsp) => {
                let mut stream = rsp.into_inner();
                // A new stream starts with the full set: replace, don't merge.
                let mut fresh = true;
                loop {
                    let msg = tokio::select! {
                        _ = stop.cancelled() => return,
                        msg = stream.message() => msg,
                    };
                    match msg {
                        Ok(Some(update)) => {
                            backoff = MIN_BACKOFF;
                            if let Some(update) = update.update {
                                let resolution = apply(&mut endpoints, update, fresh);
                                tracing::debug!(%authority, ?resolution, "destination update");
                                fresh = false;
                                tx.send_replace(resolution);
                            }
                        }
                        Ok(None) => break,
                        Err(status) => {
                            tracing::info!(%authority, %status, "destination stream failed; keeping last known endpoints");
                            break;
                        }
                    }
                }
            }
            Err(status) if status.code() == tonic::Code::InvalidArgument => {
                // Not a name the controller serves (e.g. outside the
                // cluster domain): not an error, just not ours.
                tx.send_replace(Resolution::Unknown);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(MAX_BACKOFF) => {}
                }
                continue;
            }
            Err(status) => {
                tracing::info!(%authority, %status, retry_in = ?backoff, "destination lookup failed");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Applies one update and returns the new resolution.
fn apply(
    endpoints: &mut BTreeMap<SocketAddr, DiscoveredEndpoint>,
    update: update::Update,
    fresh: bool,
) -> Resolution {
    if fresh {
        endpoints.clear();
    }
    match update {
        update::Update::Add(set) => {
            for addr in set.addrs {
                if let Some(ep) = endpoint(addr) {
                    endpoints.insert(ep.addr, ep);
                }
            }
        }
        update::Update::Remove(set) => {
            for addr in set.addrs {
                if let Ok(addr) = SocketAddr::try_from(addr) {
                    endpoints.remove(&addr);
                }
            }
        }
        update::Update::NoEndpoints(none) => {
            endpoints.clear();
            if !none.exists {
                return Resolution::Unknown;
            }
        }
    }
    Resolution::Endpoints(Arc::new(endpoints.values().cloned().collect()))
}

fn endpoint(addr: WeightedAddr) -> Option<DiscoveredEndpoint> {
    use linkerd2_proxy_api::destination::{protocol_hint, tls_identity};
    let sock = SocketAddr::try_from(addr.addr?).ok()?;
    let identity = addr.tls_identity.and_then(|id| match id.strategy? {
        tls_identity::Strategy::DnsLikeIdentity(dns) => Some(Arc::from(dns.name.as_str())),
        tls_identity::Strategy::UriLikeIdentity(_) => None,
    });
    let h2 = matches!(
        addr.protocol_hint.and_then(|h| h.protocol),
        Some(protocol_hint::Protocol::H2(_))
    );
    Some(DiscoveredEndpoint {
        addr: sock,
        identity,
        h2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use linkerd2_proxy_api::destination::{AddrSet, NoEndpoints, WeightedAddrSet};
    use linkerd2_proxy_api::net::TcpAddress;

    fn tcp(port: u16) -> TcpAddress {
        SocketAddr::from(([10, 0, 0, 1], port)).into()
    }

    fn add(ports: &[u16]) -> update::Update {
        update::Update::Add(WeightedAddrSet {
            addrs: ports
                .iter()
                .map(|p| WeightedAddr {
                    addr: Some(tcp(*p)),
                    weight: 10000,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    fn ports(r: &Resolution) -> Vec<u16> {
        match r {
            Resolution::Endpoints(eps) => eps.iter().map(|e| e.addr.port()).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn adds_removes_and_fresh_streams_replace() {
        let mut eps = BTreeMap::new();
        assert_eq!(ports(&apply(&mut eps, add(&[1, 2]), true)), [1, 2]);
        assert_eq!(ports(&apply(&mut eps, add(&[3]), false)), [1, 2, 3]);
        let remove = update::Update::Remove(AddrSet {
            addrs: vec![tcp(2)],
        });
        assert_eq!(ports(&apply(&mut eps, remove, false)), [1, 3]);
        // After a reconnect the first Add is the whole set.
        assert_eq!(ports(&apply(&mut eps, add(&[4]), true)), [4]);
        let none = update::Update::NoEndpoints(NoEndpoints { exists: true });
        assert_eq!(ports(&apply(&mut eps, none, false)), Vec::<u16>::new());
        let unknown = update::Update::NoEndpoints(NoEndpoints { exists: false });
        assert_eq!(apply(&mut eps, unknown, false), Resolution::Unknown);
    }
}
