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
//! The proxy's per-target stacks hold the watches ([`Discovery::watch_endpoints`],
//! [`Discovery::watch_profile`], [`Discovery::watch_policy`]) for as long as
//! they live, so a request to a known target reads the current state
//! without a lookup.

pub mod policy;

use crate::route::RoutePolicy;
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
    /// Discovery labels (namespace, service, pod, ...), sorted, for the
    /// `dst_*` metric labels.
    pub labels: Arc<[(String, String)]>,
}

/// Shared by all requests of the outbound side.
#[derive(Clone)]
pub struct Discovery {
    inner: Arc<Inner>,
}

struct Inner {
    client: DestinationClient<Channel>,
    endpoints: Watches<Resolution>,
    profiles: Watches<Option<Arc<Profile>>>,
    policies: policy::Policies,
}

/// What the proxy applies from a name's profile: routes (ServiceProfile)
/// and backends (TrafficSplit).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profile {
    /// The service's fully qualified name and port, as route metrics
    /// name it (`dst`); empty if the controller did not say.
    pub name: Arc<str>,
    /// Authorities to send the name's traffic to instead, with weights
    /// (from a TrafficSplit); empty: the name itself.
    pub dst_overrides: Vec<(String, u32)>,
    /// Routes and retry budget (from a ServiceProfile).
    pub routes: Arc<RoutePolicy>,
    /// The port is opaque (`opaque_protocol`: ServiceProfile `opaquePorts`,
    /// `config.linkerd.io/opaque-ports`): connections to it are forwarded
    /// as TCP without protocol detection.
    pub opaque: bool,
}

/// One background stream per authority, shared and evicted when idle.
pub(crate) struct Watches<T> {
    by_authority: Mutex<WatchMap<T>>,
}

struct WatchMap<T> {
    watches: HashMap<String, Watch<T>>,
    /// When idle watches were last looked for: at most once a minute, so
    /// a lookup never pays for scanning every name.
    swept: Instant,
}

/// How often idle watches are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

struct Watch<T> {
    /// Shared with the task that follows the stream; the map hands out
    /// receivers from it and can tell whether anyone still holds one.
    tx: Arc<watch::Sender<T>>,
    used: Instant,
    stop: CancellationToken,
}

// === impl Watches ===

impl<T: Clone + Send + Sync + 'static> Watches<T> {
    pub(crate) fn new() -> Self {
        Self {
            by_authority: Mutex::new(WatchMap {
                watches: HashMap::new(),
                swept: Instant::now(),
            }),
        }
    }

    /// The watch for `authority`, starting `follow` for it on first use.
    /// A stream is stopped once nobody has asked for it for
    /// [`IDLE_EVICT`] *and* no receiver handed out is still held (the
    /// proxy's per-target stacks hold theirs for as long as they live).
    pub(crate) fn get<F>(
        &self,
        authority: &str,
        initial: T,
        follow: impl FnOnce(Arc<watch::Sender<T>>, CancellationToken) -> F,
    ) -> watch::Receiver<T>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let now = Instant::now();
        let mut map = self
            .by_authority
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if now.duration_since(map.swept) > SWEEP_EVERY {
            map.swept = now;
            map.watches.retain(|_, w| {
                let keep = now.duration_since(w.used) < IDLE_EVICT || w.tx.receiver_count() > 0;
                if !keep {
                    w.stop.cancel();
                }
                keep
            });
        }
        let watches = &mut map.watches;
        if let Some(w) = watches.get_mut(authority) {
            w.used = now;
            return w.tx.subscribe();
        }
        let tx = Arc::new(watch::Sender::new(initial));
        let stop = CancellationToken::new();
        tokio::spawn(follow(tx.clone(), stop.clone()));
        let rx = tx.subscribe();
        watches.insert(
            authority.to_string(),
            Watch {
                tx,
                used: now,
                stop,
            },
        );
        rx
    }

    /// Streams currently followed (tests, diagnostics).
    pub(crate) fn len(&self) -> usize {
        self.by_authority
            .lock()
            .map(|m| m.watches.len())
            .unwrap_or_default()
    }
}

/// Waits at most `timeout` for `rx`'s first answer (`answered`), without
/// a timer when it already has one (the common case: a cached watch).
pub async fn first_answer<T>(
    rx: &mut watch::Receiver<T>,
    timeout: Duration,
    answered: impl Fn(&T) -> bool,
) -> bool {
    if answered(&rx.borrow()) {
        return true;
    }
    matches!(
        tokio::time::timeout(timeout, rx.wait_for(|v| answered(v))).await,
        Ok(Ok(_))
    )
}

// === impl Discovery ===

impl Discovery {
    /// Discovery over `channel` (see [`crate::control::channel`]).
    pub fn new(channel: Channel) -> Self {
        Self {
            inner: Arc::new(Inner {
                policies: policy::Policies::new(channel.clone()),
                client: DestinationClient::new(channel),
                endpoints: Watches::new(),
                profiles: Watches::new(),
            }),
        }
    }

    /// The endpoints of `authority` (`name:port`) as a watch: starts with
    /// [`Resolution::Pending`] until the controller answers, then follows
    /// every update. Holding the receiver keeps the stream alive.
    pub fn watch_endpoints(&self, authority: &str) -> watch::Receiver<Resolution> {
        let client = self.inner.client.clone();
        let name = authority.to_string();
        self.inner
            .endpoints
            .get(authority, Resolution::Pending, move |tx, stop| {
                follow(client, name, tx, stop)
            })
    }

    /// The profile of `authority` as a watch (`None` until the first
    /// answer).
    pub fn watch_profile(&self, authority: &str) -> watch::Receiver<Option<Arc<Profile>>> {
        let client = self.inner.client.clone();
        let name = authority.to_string();
        self.inner.profiles.get(authority, None, move |tx, stop| {
            follow_profile(client, name, tx, stop)
        })
    }

    /// The resolution of `authority` (`name:port`), waiting at most
    /// `timeout` for the first answer.
    pub async fn resolve(&self, authority: &str, timeout: Duration) -> Resolution {
        let mut rx = self.watch_endpoints(authority);
        first_answer(&mut rx, timeout, |r| *r != Resolution::Pending).await;
        let r = rx.borrow().clone();
        r
    }

    /// The profile of `authority`, waiting at most `timeout` for the first
    /// answer (`None`: none yet; route by the name itself).
    pub async fn profile(&self, authority: &str, timeout: Duration) -> Option<Arc<Profile>> {
        let mut rx = self.watch_profile(authority);
        first_answer(&mut rx, timeout, Option::is_some).await;
        let p = rx.borrow().clone();
        p
    }

    /// Streams currently followed, by kind: endpoints, profiles, policies
    /// (tests, diagnostics).
    pub fn streams(&self) -> (usize, usize, usize) {
        (
            self.inner.endpoints.len(),
            self.inner.profiles.len(),
            self.inner.policies.watches.len(),
        )
    }
}

/// Picks one of `overrides` with probability proportional to its weight;
/// `None` when every weight is zero.
pub fn pick_override(overrides: &[(String, u32)]) -> Option<&str> {
    let total: u64 = overrides.iter().map(|(_, w)| u64::from(*w)).sum();
    if total == 0 {
        return None;
    }
    let mut n = fastrand::u64(..total);
    for (authority, w) in overrides {
        let w = u64::from(*w);
        if n < w {
            return Some(authority);
        }
        n -= w;
    }
    None
}

/// The port of `host:port` (80 if absent or invalid).
fn port_of(authority: &str) -> u16 {
    authority
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(80)
}

fn request(authority: &str) -> GetDestination {
    GetDestination {
        scheme: "k8s".into(),
        path: authority.to_string(),
        context_token: String::new(),
    }
}

/// Follows one authority's endpoints until stopped.
async fn follow(
    client: DestinationClient<Channel>,
    authority: String,
    tx: Arc<watch::Sender<Resolution>>,
    stop: CancellationToken,
) {
    let mut endpoints: BTreeMap<SocketAddr, DiscoveredEndpoint> = BTreeMap::new();
    let call = |authority: &str| {
        let mut client = client.clone();
        let req = request(authority);
        async move { client.get(req).await }
    };
    let on_update = |update: linkerd2_proxy_api::destination::Update, fresh: bool| {
        if let Some(update) = update.update {
            let resolution = apply(&mut endpoints, update, fresh);
            tracing::debug!(%authority, ?resolution, "destination update");
            tx.send_replace(resolution);
        }
    };
    // Not a name the controller serves (e.g. outside the cluster domain):
    // not an error, just not ours.
    let refused = |status: &tonic::Status| {
        let ours = status.code() == tonic::Code::InvalidArgument;
        if ours {
            tx.send_replace(Resolution::Unknown);
        }
        ours
    };
    follow_stream(&authority, &stop, call, on_update, refused).await
}

/// Follows one authority's profile until stopped. A controller without
/// profiles (Unimplemented) or a name it does not serve yields the default
/// profile.
async fn follow_profile(
    client: DestinationClient<Channel>,
    authority: String,
    tx: Arc<watch::Sender<Option<Arc<Profile>>>>,
    stop: CancellationToken,
) {
    let call = |authority: &str| {
        let mut client = client.clone();
        let req = request(authority);
        async move { client.get_profile(req).await }
    };
    let on_profile = |p: linkerd2_proxy_api::destination::DestinationProfile, _fresh: bool| {
        // Compiled once per update; the retry budget survives updates
        // that leave it unchanged.
        let routes = {
            let previous = tx.borrow();
            RoutePolicy::compile(
                &p.routes,
                p.retry_budget.as_ref(),
                previous.as_ref().map(|p| &*p.routes),
            )
        };
        let profile = Profile {
            name: if p.fully_qualified_name.is_empty() {
                Arc::from("")
            } else {
                Arc::from(format!(
                    "{}:{}",
                    p.fully_qualified_name,
                    port_of(&authority)
                ))
            },
            dst_overrides: p
                .dst_overrides
                .into_iter()
                .map(|d| (d.authority, d.weight))
                .collect(),
            routes: Arc::new(routes),
            opaque: p.opaque_protocol,
        };
        tracing::debug!(%authority, ?profile, "profile update");
        tx.send_replace(Some(Arc::new(profile)));
    };
    let refused = |status: &tonic::Status| {
        let ours = matches!(
            status.code(),
            tonic::Code::Unimplemented | tonic::Code::InvalidArgument
        );
        if ours {
            tx.send_replace(Some(Arc::default()));
        }
        ours
    };
    follow_stream(&authority, &stop, call, on_profile, refused).await
}

/// Holds a server-streaming call for `authority` open until `stop`,
/// reconnecting with backoff. Each message goes to `on_message` (with
/// `true` for the first of a new stream, which carries the whole state).
/// A failed stream leaves the last state in force. A call that `refused`
/// claims (the controller will not serve this name) is retried only after
/// [`MAX_BACKOFF`].
async fn follow_stream<M, F>(
    authority: &str,
    stop: &CancellationToken,
    call: impl Fn(&str) -> F,
    mut on_message: impl FnMut(M, bool),
    refused: impl Fn(&tonic::Status) -> bool,
) where
    F: std::future::Future<Output = Result<tonic::Response<tonic::Streaming<M>>, tonic::Status>>,
{
    let mut backoff = MIN_BACKOFF;
    loop {
        let rsp = tokio::select! {
            _ = stop.cancelled() => return,
            rsp = call(authority) => rsp,
        };
        let wait = match rsp {
            Ok(rsp) => {
                let mut stream = rsp.into_inner();
                let mut fresh = true;
                loop {
                    let msg = tokio::select! {
                        _ = stop.cancelled() => return,
                        msg = stream.message() => msg,
                    };
                    match msg {
                        Ok(Some(m)) => {
                            backoff = MIN_BACKOFF;
                            on_message(m, fresh);
                            fresh = false;
                        }
                        Ok(None) => break,
                        Err(status) => {
                            tracing::info!(%authority, %status, "destination stream failed; keeping the last state");
                            break;
                        }
                    }
                }
                backoff
            }
            Err(status) if refused(&status) => MAX_BACKOFF,
            Err(status) => {
                tracing::info!(%authority, %status, retry_in = ?backoff, "destination lookup failed");
                backoff
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
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
    let mut labels: Vec<(String, String)> = addr
        .metric_labels
        .into_iter()
        .filter(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .collect();
    labels.sort();
    Some(DiscoveredEndpoint {
        addr: sock,
        identity,
        h2,
        labels: labels.into(),
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
    fn overrides_are_picked_by_weight() {
        let o = vec![
            ("a:80".to_string(), 900),
            ("b:80".to_string(), 100),
            ("c:80".to_string(), 0),
        ];
        let mut a = 0;
        for _ in 0..10_000 {
            match pick_override(&o) {
                Some("a:80") => a += 1,
                Some("b:80") => {}
                other => panic!("{other:?}"),
            }
        }
        assert!((8_800..=9_200).contains(&a), "{a}");
        assert_eq!(pick_override(&[("x:1".to_string(), 0)]), None);
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
