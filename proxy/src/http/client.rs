//! Pooled HTTP clients, one per endpoint and protocol.
//!
//! Each [`Endpoint`] gets its own hyper client, so connections are reused
//! only for the target they were opened to, whatever authority a request
//! names. Idle connections are closed after the pool idle timeout, and
//! clients for endpoints no longer used are dropped from the cache, so
//! neither grows with the number of targets ever seen.

use super::body::BoxBody;
use crate::identity::LocalIdentity;
use crate::metrics::{Direction, TcpMetrics};
use crate::transport::connect::{connect_endpoint, ConnectError};
use crate::transport::io::MeteredIo;
use crate::transport::tls::MaybeTls;
use crate::HttpVersion;
use http::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Idle connections kept per endpoint.
const MAX_IDLE_PER_ENDPOINT: usize = 64;

/// Where a request is sent, and how.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The socket address to connect to.
    pub addr: SocketAddr,
    /// The protocol spoken on the connection.
    pub version: HttpVersion,
    /// The identity the endpoint's proxy must prove (mTLS); `None` for
    /// plaintext. Ignored when this proxy has no identity of its own.
    pub identity: Option<Arc<str>>,
}

/// A hyper client bound to one endpoint.
pub type HttpClient = Client<Connector, BoxBody>;

/// Settings shared by all clients of one side of the proxy.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub idle_timeout: Duration,
}

/// The cache of per-endpoint clients.
#[derive(Clone)]
pub struct Clients {
    inner: Arc<Inner>,
}

struct Inner {
    settings: ClientSettings,
    metrics: TcpMetrics,
    direction: Direction,
    identity: Option<LocalIdentity>,
    cache: Mutex<Cache>,
}

struct Cache {
    clients: HashMap<Endpoint, (HttpClient, Instant)>,
    last_sweep: Instant,
}

/// Dials one endpoint for the hyper client (the request URI is ignored:
/// the endpoint was chosen before the request got here).
#[derive(Clone)]
pub struct Connector {
    addr: SocketAddr,
    timeout: Duration,
    metrics: TcpMetrics,
    direction: Direction,
    tls: Option<(LocalIdentity, Arc<str>)>,
}

// === impl Clients ===

impl Clients {
    /// An empty cache. With `identity`, endpoints that name an identity are
    /// dialled with mTLS.
    pub fn new(
        settings: ClientSettings,
        metrics: TcpMetrics,
        direction: Direction,
        identity: Option<LocalIdentity>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                metrics,
                direction,
                identity,
                cache: Mutex::new(Cache {
                    clients: HashMap::new(),
                    last_sweep: Instant::now(),
                }),
            }),
        }
    }

    /// The client for `endpoint`, created on first use.
    pub fn get(&self, endpoint: &Endpoint) -> HttpClient {
        let now = Instant::now();
        let ttl = self.inner.settings.idle_timeout.max(Duration::from_secs(1)) * 2;
        // A poisoned lock only means another request panicked mid-insert;
        // the map itself is still consistent.
        let mut cache = self
            .inner
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if now.duration_since(cache.last_sweep) > ttl {
            cache
                .clients
                .retain(|_, (_, used)| now.duration_since(*used) < ttl);
            cache.last_sweep = now;
        }
        if let Some((client, used)) = cache.clients.get_mut(endpoint) {
            *used = now;
            return client.clone();
        }
        let client = self.build(endpoint);
        cache
            .clients
            .insert(endpoint.clone(), (client.clone(), now));
        client
    }

    /// True when requests to `endpoint` will be sent over mTLS.
    pub fn uses_tls(&self, endpoint: &Endpoint) -> bool {
        self.inner.identity.is_some() && endpoint.identity.is_some()
    }

    fn build(&self, endpoint: &Endpoint) -> HttpClient {
        let settings = &self.inner.settings;
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(settings.idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_max_idle_per_host(MAX_IDLE_PER_ENDPOINT);
        if endpoint.version == HttpVersion::Http2 {
            builder
                .http2_only(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .http2_keep_alive_timeout(Duration::from_secs(5));
        }
        let tls = match (&self.inner.identity, &endpoint.identity) {
            (Some(local), Some(remote)) => Some((local.clone(), remote.clone())),
            _ => None,
        };
        builder.build(Connector {
            addr: endpoint.addr,
            timeout: settings.connect_timeout,
            metrics: self.inner.metrics.clone(),
            direction: self.inner.direction,
            tls,
        })
    }

    /// Number of cached clients (for tests and diagnostics).
    pub fn len(&self) -> usize {
        self.inner
            .cache
            .lock()
            .map(|c| c.clients.len())
            .unwrap_or_default()
    }

    /// True when no client is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// === impl Connector ===

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<MaybeTls<MeteredIo<TcpStream>>>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tls = this.tls.as_ref().map(|(local, remote)| (local, remote));
            let io = connect_endpoint(
                this.addr,
                this.timeout,
                &this.metrics,
                this.direction,
                tls,
                false,
            )
            .await?;
            Ok(TokioIo::new(io))
        })
    }
}
