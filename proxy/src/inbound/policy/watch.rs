//! Watching each inbound port's policy
//! (`io.linkerd.proxy.inbound.InboundServerPolicies.WatchPort`).
//!
//! One background task per port holds a `WatchPort` stream open and
//! publishes the compiled policy on a watch channel; every connection to
//! the port holds a receiver and every request reads the current value
//! (`borrow`, no lock held across anything, no compilation).
//!
//! - **Until the first answer** a port has the default policy
//!   (`WEFT_PROXY_DEFAULT_INBOUND_POLICY` over `WEFT_PROXY_CLUSTER_NETWORKS`).
//! - **Declared ports** (`WEFT_PROXY_INBOUND_PORTS`) are watched from
//!   start-up and never dropped. Any other port is watched from its first
//!   connection, which waits at most [`FIRST_ANSWER_WAIT`] for the
//!   controller (later connections never wait), and dropped after
//!   [`IDLE_EVICT`] without connections. At most [`MAX_PORTS`] ports are
//!   watched; beyond that a connection gets the default policy.
//! - **Outages**: a failed stream keeps the last policy and reconnects
//!   with backoff ([`MIN_BACKOFF`] doubling to [`MAX_BACKOFF`]); so does a
//!   stream silent for [`STREAM_IDLE_TIMEOUT`] (the controller re-sends
//!   its policy every minute). A message that fails validation is logged
//!   and the last valid policy stays in force.
//! - **Unknown pod** (`NotFound`, or a controller without this API):
//!   before any answer the port keeps the default policy (now counted as
//!   answered, so no connection waits); once the controller has answered,
//!   its last policy stays: a controller that temporarily forgets a pod
//!   must not change what a running proxy admits. Retried with backoff.

use super::model::ServerPolicy;
use crate::config::PortSet;
use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use ipnet::IpNet;
use linkerd2_proxy_api::inbound::inbound_server_policies_client::InboundServerPoliciesClient;
use linkerd2_proxy_api::inbound::{PortSpec, Server};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// The longest a connection to a newly seen port waits for the
/// controller's first answer.
pub const FIRST_ANSWER_WAIT: Duration = Duration::from_secs(1);
/// Undeclared ports without connections for this long stop being watched.
pub const IDLE_EVICT: Duration = Duration::from_secs(300);
/// Ports watched at most.
pub const MAX_PORTS: usize = 1000;
/// A stream without a message for this long is reconnected.
pub const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// First reconnection delay.
pub const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// Longest reconnection delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often idle ports are looked for (on lookups, not on a timer).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// A stream of a port's servers, as `WatchPort` answers.
pub type ServerStream = BoxStream<'static, Result<Server, tonic::Status>>;

/// Where port policies come from: the controller, or a test.
pub trait Source: Send + Sync + 'static {
    /// Opens a `WatchPort` stream for `port` of this proxy's workload.
    fn watch_port(&self, port: u16) -> BoxFuture<'static, Result<ServerStream, tonic::Status>>;
}

/// The controller's `InboundServerPolicies` over the destination channel.
#[derive(Clone, Debug)]
pub struct GrpcSource {
    client: InboundServerPoliciesClient<Channel>,
    workload: String,
}

/// What every port's policy is built from besides the controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `WEFT_PROXY_DEFAULT_INBOUND_POLICY`.
    pub default_policy: weft_policy::DefaultPolicy,
    /// `WEFT_PROXY_CLUSTER_NETWORKS`.
    pub cluster_networks: Vec<IpNet>,
    /// `WEFT_PROXY_OPAQUE_PORTS`: their default policy is opaque.
    pub opaque_ports: PortSet,
    /// `WEFT_PROXY_INBOUND_TRUST_LOOPBACK`: `localhost` is admitted.
    pub trust_loopback: bool,
}

/// Every inbound port's policy watch (cheap to clone: shared).
#[derive(Clone)]
pub struct PortPolicies {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Arc<Settings>,
    source: Option<Arc<dyn Source>>,
    ports: Mutex<PortMap>,
}

struct PortMap {
    ports: HashMap<u16, PortWatch>,
    swept: Instant,
}

struct PortWatch {
    tx: Arc<watch::Sender<Arc<ServerPolicy>>>,
    /// Connections until then wait for the first answer.
    wait_until: Instant,
    used: Instant,
    declared: bool,
    stop: CancellationToken,
    audit: Arc<AuditLog>,
}

/// One connection's view of its port's policy.
#[derive(Clone, Debug)]
pub struct PortPolicy {
    /// The port.
    pub port: u16,
    /// The current policy (read per request with `borrow`).
    pub rx: watch::Receiver<Arc<ServerPolicy>>,
    /// Rate limit of the port's `audit` log lines.
    pub audit: Arc<AuditLog>,
}

/// Allows about one log line per second (per port): a flood of requests
/// only `audit` admits is counted in full but logged sparingly.
#[derive(Debug)]
pub struct AuditLog {
    origin: Instant,
    /// Milliseconds since `origin` of the last line, plus one (0: never).
    last: AtomicU64,
}

// === impl GrpcSource ===

impl GrpcSource {
    /// Watches the ports of pod `pod` in `namespace` over `channel`.
    pub fn new(channel: Channel, namespace: &str, pod: &str) -> Self {
        Self {
            client: InboundServerPoliciesClient::new(channel),
            workload: serde_json::json!({ "ns": namespace, "pod": pod }).to_string(),
        }
    }
}

impl Source for GrpcSource {
    fn watch_port(&self, port: u16) -> BoxFuture<'static, Result<ServerStream, tonic::Status>> {
        let mut client = self.client.clone();
        let spec = PortSpec {
            workload: self.workload.clone(),
            port: port.into(),
        };
        Box::pin(async move {
            let rsp = client.watch_port(spec).await?;
            Ok(rsp.into_inner().boxed())
        })
    }
}

// === impl Settings ===

impl Settings {
    /// The default policy of `port`.
    pub fn default_policy(&self, port: u16) -> ServerPolicy {
        ServerPolicy::default_for(
            self.default_policy,
            &self.cluster_networks,
            self.opaque_ports.contains(port),
            self.trust_loopback,
        )
    }
}

// === impl PortPolicies ===

impl PortPolicies {
    /// Watches through `source` (`None`: no controller, every port keeps
    /// its default policy), starting with the `declared` ports. Must be
    /// called on the runtime.
    pub fn new(
        settings: Settings,
        source: Option<Arc<dyn Source>>,
        declared: impl IntoIterator<Item = u16>,
    ) -> Self {
        let this = Self {
            inner: Arc::new(Inner {
                settings: Arc::new(settings),
                source,
                ports: Mutex::new(PortMap {
                    ports: HashMap::new(),
                    swept: Instant::now(),
                }),
            }),
        };
        for port in declared.into_iter().take(MAX_PORTS) {
            drop(this.lookup(port, true));
        }
        this
    }

    /// `port`'s policy for a new connection, waiting at most
    /// [`FIRST_ANSWER_WAIT`] (from the port's first connection) for the
    /// controller's first answer.
    pub async fn port(&self, port: u16) -> PortPolicy {
        let (mut policy, wait_until) = self.lookup(port, false);
        if !policy.rx.borrow().answered && Instant::now() < wait_until {
            let answered = policy.rx.wait_for(|p| p.answered);
            match tokio::time::timeout_at(wait_until, answered).await {
                Ok(_) => {}
                Err(_) => {
                    tracing::debug!(
                        port,
                        "no inbound policy from the controller yet; using the default"
                    );
                }
            }
        }
        policy
    }

    /// Ports currently watched (tests, diagnostics).
    pub fn len(&self) -> usize {
        self.inner
            .ports
            .lock()
            .map(|m| m.ports.len())
            .unwrap_or_default()
    }

    /// True if no port is watched.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The port's watch, started if needed, and until when its
    /// connections wait for a first answer.
    fn lookup(&self, port: u16, declare: bool) -> (PortPolicy, Instant) {
        let now = Instant::now();
        let mut map = self
            .inner
            .ports
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(w) = map.ports.get_mut(&port) {
            w.used = now;
            w.declared |= declare;
            return (w.policy(port), w.wait_until);
        }
        if now.duration_since(map.swept) >= SWEEP_EVERY || map.ports.len() >= MAX_PORTS {
            map.swept = now;
            map.ports.retain(|port, w| {
                let keep = w.declared
                    || w.tx.receiver_count() > 0
                    || now.duration_since(w.used) < IDLE_EVICT;
                if !keep {
                    tracing::debug!(port, "inbound port idle; no longer watching its policy");
                    w.stop.cancel();
                }
                keep
            });
        }
        let initial = Arc::new(self.inner.settings.default_policy(port));
        if map.ports.len() >= MAX_PORTS {
            tracing::debug!(
                port,
                max = MAX_PORTS,
                "too many inbound ports watched; using the default policy"
            );
            let (_, rx) = watch::channel(initial);
            let policy = PortPolicy {
                port,
                rx,
                audit: Arc::new(AuditLog::new()),
            };
            return (policy, now);
        }
        let tx = Arc::new(watch::Sender::new(initial));
        let stop = CancellationToken::new();
        if let Some(source) = &self.inner.source {
            tokio::spawn(follow(
                source.clone(),
                port,
                tx.clone(),
                self.inner.settings.clone(),
                stop.clone(),
            ));
        }
        let w = PortWatch {
            tx,
            // Without a controller there is nothing to wait for.
            wait_until: if self.inner.source.is_some() {
                now + FIRST_ANSWER_WAIT
            } else {
                now
            },
            used: now,
            declared: declare,
            stop,
            audit: Arc::new(AuditLog::new()),
        };
        let found = (w.policy(port), w.wait_until);
        map.ports.insert(port, w);
        found
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(map) = self.ports.get_mut() {
            for w in map.ports.values() {
                w.stop.cancel();
            }
        }
    }
}

// === impl PortWatch ===

impl PortWatch {
    fn policy(&self, port: u16) -> PortPolicy {
        PortPolicy {
            port,
            rx: self.tx.subscribe(),
            audit: self.audit.clone(),
        }
    }
}

// === impl AuditLog ===

impl Default for AuditLog {
    fn default() -> Self {
        Self::new()
    }
}

impl AuditLog {
    /// A limiter that allows a line at once.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    /// True if a line may be logged now (at most one per second).
    pub fn allow(&self) -> bool {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX) + 1;
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < 1000 {
            return false;
        }
        self.last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

/// Follows `port`'s policy until stopped (see the module docs).
async fn follow(
    source: Arc<dyn Source>,
    port: u16,
    tx: Arc<watch::Sender<Arc<ServerPolicy>>>,
    settings: Arc<Settings>,
    stop: CancellationToken,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let opened = tokio::select! {
            _ = stop.cancelled() => return,
            opened = source.watch_port(port) => opened,
        };
        match opened {
            Ok(mut stream) => loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => return,
                    next = tokio::time::timeout(STREAM_IDLE_TIMEOUT, stream.next()) => next,
                };
                match next {
                    Ok(Some(Ok(server))) => {
                        backoff = MIN_BACKOFF;
                        match ServerPolicy::from_proto(server, settings.trust_loopback) {
                            Ok(policy) => {
                                tracing::debug!(
                                    port,
                                    server = %policy.meta.name,
                                    authorizations = policy.authorizations.len(),
                                    routes = policy.routes.len(),
                                    "inbound policy update"
                                );
                                tx.send_replace(Arc::new(policy));
                            }
                            Err(error) => {
                                tracing::warn!(port, %error, "invalid inbound policy from the controller; keeping the last valid one");
                            }
                        }
                    }
                    Ok(Some(Err(status))) => {
                        tracing::info!(port, %status, "inbound policy stream failed; keeping the last policy");
                        break;
                    }
                    Ok(None) => {
                        tracing::debug!(port, "inbound policy stream ended; reconnecting");
                        break;
                    }
                    Err(_) => {
                        tracing::info!(port, idle = ?STREAM_IDLE_TIMEOUT, "inbound policy stream silent; reconnecting");
                        break;
                    }
                }
            },
            Err(status) if unknown(&status) => {
                if !tx.borrow().answered {
                    tracing::info!(port, %status, "the controller has no inbound policy for this pod; using the default");
                    let mut default = settings.default_policy(port);
                    default.answered = true;
                    tx.send_replace(Arc::new(default));
                } else {
                    tracing::info!(port, %status, "the controller no longer knows this pod; keeping the last policy");
                }
            }
            Err(status) => {
                tracing::info!(port, %status, retry_in = ?backoff, "inbound policy lookup failed");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The controller does not know the pod (or has no inbound policy API).
fn unknown(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::NotFound | tonic::Code::InvalidArgument | tonic::Code::Unimplemented
    )
}

#[cfg(test)]
mod tests;
