//! The outbound side: connections from this workload to others.
//!
//! ```text
//! accept ─► discover the original destination ─► detect ─┬─ HTTP ─► server ─► metrics ─► errors ─► concurrency limit
//!                                                         │        ─► router ─┬─ logical (cached per name/address)
//!                                                         │                   │    ─► route (timeout, retries, route metrics)
//!                                                         │                   │    ─► backends ─► concrete (cached per backend)
//!                                                         │                   │         ─► queue (bounded, fail-fast) ─► balance (P2C peak-EWMA)
//!                                                         │                   │         ─► endpoint (mTLS, HTTP/2 when meshed)
//!                                                         │                   └─ passthrough ─► endpoint (original destination / DNS)
//!                                                         └─ opaque ─► balanced over the concrete's endpoints, or the original destination
//! ```
//!
//! Each box is one module: [`router`], [`logical`], [`http_route`],
//! [`concrete`], [`endpoint`]; [`Outbound::new`] composes them, and it is
//! the one place to read the whole stack. A new per-request feature is a
//! new layer at the level whose target it depends on: per route (the
//! policy API's retries and timeouts), per backend (circuit breaking), per
//! endpoint (connection settings). See `docs/architecture.md`.
//!
//! For HTTP sent to the listener directly (an application using the proxy
//! as its `http_proxy`), each request's authority names its own target,
//! and `CONNECT` tunnels are supported for `https_proxy`.

pub mod concrete;
pub mod endpoint;
pub mod http_route;
pub mod logical;
pub mod router;

use self::concrete::{Concrete, ConcreteService, NewConcrete};
use self::endpoint::NewEndpoint;
use self::logical::{Logical, NewLogical, DISCOVERY_TIMEOUT};
use self::router::{Passthrough, Router};
use crate::balance::PeakEwma;
use crate::config::MeshedTargets;
use crate::conn::{Balanced, Side, Target};
use crate::discovery::{Discovery, Resolution};
use crate::http::client::Clients;
use crate::http::errors::NewErrors;
use crate::http::metrics::NewMetrics;
use crate::http::server::HttpService;
use crate::metrics::{HttpMetrics, RouteMetrics};
use crate::transport::listen::Accepted;
use std::net::SocketAddr;
use weft_proxy_stack::{CacheConfig, ConcurrencyLimit, Limit, NewCache, QueueConfig, Stack};

/// The cache of logical stacks.
type Logicals = NewCache<Logical, NewLogical<Concretes>>;
/// The cache of concrete (backend) stacks.
type Concretes = NewCache<Concrete, NewConcrete>;

/// Logical and concrete stacks: at most 10,000 of each, dropped after a
/// minute unused (their discovery streams follow five minutes later).
pub const CACHE: CacheConfig = CacheConfig {
    idle: std::time::Duration::from_secs(60),
    capacity: 10_000,
};

/// How the outbound stacks are sized.
#[derive(Clone, Copy, Debug)]
pub struct OutboundSettings {
    /// Per backend: requests waiting for a ready endpoint, and how long
    /// before the backend fails fast.
    pub queue: QueueConfig,
    /// Logical and concrete stacks kept, and for how long unused.
    pub cache: CacheConfig,
    /// Requests in flight on the listener before new ones are shed.
    pub max_in_flight: usize,
}

/// The outbound side of the proxy.
#[derive(Clone)]
pub struct Outbound {
    side: Side,
    http_metrics: HttpMetrics,
    limit: Limit,
    passthrough: Passthrough,
    discovered: Option<(Discovery, Logicals, Concretes)>,
}

// === impl Outbound ===

impl Outbound {
    /// Builds the outbound side. `listen_addr` is the outbound listener's
    /// own address, used to refuse requests that would loop back to it.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        side: Side,
        listen_addr: SocketAddr,
        meshed: MeshedTargets,
        metrics: (HttpMetrics, RouteMetrics),
        clients: Clients,
        discovery: Option<Discovery>,
        balancer: PeakEwma,
        settings: OutboundSettings,
    ) -> Self {
        let (http_metrics, route_metrics) = metrics;
        let forward = side.forward(clients);
        // Innermost first: endpoint → concrete (balancer behind a queue,
        // one per backend) → logical (routes and splits, one per target).
        let endpoint = NewEndpoint::new(forward);
        let discovered = discovery.map(|discovery| {
            let concretes = NewCache::new(
                NewConcrete::new(
                    discovery.clone(),
                    balancer,
                    settings.queue,
                    endpoint.clone(),
                    router::is_listener,
                    listen_addr,
                ),
                settings.cache,
            );
            let logicals = NewCache::new(
                NewLogical::new(discovery.clone(), concretes.clone(), route_metrics),
                settings.cache,
            );
            (discovery, logicals, concretes)
        });
        Self {
            limit: Limit::new(settings.max_in_flight),
            passthrough: Passthrough::new(endpoint, meshed, listen_addr),
            side,
            http_metrics,
            discovered,
        }
    }

    /// Handles one accepted outbound connection. A redirected connection's
    /// original destination is looked up first (bounded by the discovery
    /// timeout; a cached watch answers at once), so that an opaque port
    /// skips detection and opaque TCP is balanced over the endpoints.
    pub async fn serve(self, accepted: Accepted) {
        let orig_dst = accepted.orig_dst;
        let opaque = match orig_dst {
            Some(addr) if !self.passthrough.is_self(addr) => Some(self.opaque_target(addr).await),
            _ => None,
        };
        let this = self.clone();
        self.side
            .serve(
                accepted,
                opaque,
                move |tls| this.http_stack(orig_dst, tls),
                crate::conn::AdmitAll,
            )
            .await
    }

    /// The HTTP stack of one connection, outermost last.
    fn http_stack(&self, orig_dst: Option<SocketAddr>, tls: crate::metrics::Tls) -> HttpService {
        let router = Router::<Logicals>::new(
            orig_dst,
            self.discovered.as_ref().map(|(_, l, _)| l.clone()),
            self.passthrough.clone(),
        );
        let stack = Stack::new(router)
            .push(ConcurrencyLimit::layer(self.limit.clone()))
            .push(NewErrors)
            .push(NewMetrics::new(
                self.http_metrics.clone(),
                self.side.direction,
                tls,
            ))
            .into_inner();
        HttpService::new(stack)
    }

    /// Where a redirected connection's opaque bytes go: balanced over the
    /// endpoints discovery knows for `addr` (mTLS to each one's identity),
    /// else `addr` itself (mTLS if `WEFT_PROXY_MESHED_TARGETS` names its
    /// identity). An opaque port (from the profile) skips detection.
    async fn opaque_target(&self, addr: SocketAddr) -> Target {
        let configured = self.passthrough.meshed_identity(addr);
        let mut target = Target::direct(addr, configured);
        let Some((discovery, _, concretes)) = self.discovered.as_ref() else {
            return target;
        };
        let name = addr.to_string();
        let (profile, resolution) = tokio::join!(
            discovery.profile(&name, DISCOVERY_TIMEOUT),
            discovery.resolve(&name, DISCOVERY_TIMEOUT)
        );
        target.opaque = profile.is_some_and(|p| p.opaque);
        if matches!(resolution, Resolution::Endpoints(_)) {
            target.identity = None;
            let concrete: ConcreteService = weft_proxy_stack::NewService::new_service(
                concretes,
                Concrete {
                    authority: name.as_str().into(),
                },
            );
            target.balanced = Some(Balanced {
                name,
                discovery: discovery.clone(),
                concrete,
                timeout: DISCOVERY_TIMEOUT,
            });
        }
        target
    }
}
