//! The logical router: which logical target a request is for.
//!
//! One per HTTP connection. Each request is tried, in order, as
//!
//! 1. the **name** its authority gives (`web.ns.svc.cluster.local:80`), if
//!    the controller serves it;
//! 2. the **address** its connection was going to (a ClusterIP or pod IP,
//!    the original destination of a redirected connection) or that its
//!    authority gives (an application using the proxy as `http_proxy`),
//!    if the controller serves it;
//! 3. otherwise it is **passed through** to that address (or the
//!    authority resolved by DNS), meshed if `WEFT_PROXY_MESHED_TARGETS`
//!    says so.
//!
//! Logical stacks come from a shared cache, so steps 1–2 cost a cache hit
//! and two watch reads for a known target.

use super::concrete::{Concrete, ConcreteService};
use super::endpoint::{BoxResponse, Endpoint, NewEndpoint};
use super::logical::{Logical, LogicalService};
use crate::config::MeshedTargets;
use crate::http::errors::ProxyError;
use crate::http::{headers, BoxBody};
use http::{Request, Response};
use std::net::{IpAddr, SocketAddr};
use std::task::{Context, Poll};
use std::time::Duration;
use tower::Service;
use weft_proxy_stack::NewService;

/// How long a DNS lookup of a request's authority may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Routes each request of one connection to its logical target.
#[derive(Clone)]
pub struct Router<L> {
    /// Where the connection was going (redirected connections), unless
    /// that is this proxy's own listener.
    orig_dst: Option<SocketAddr>,
    /// Logical stacks; `None` without a destination service.
    logicals: Option<L>,
    passthrough: Passthrough,
}

/// What an unknown target's requests need: where to send them, and whether
/// a proxy is there.
#[derive(Clone)]
pub struct Passthrough {
    endpoint: NewEndpoint,
    meshed: MeshedTargets,
    listen_addr: SocketAddr,
}

// === impl Router ===

impl<L, C> Router<L>
where
    L: NewService<Logical, Service = LogicalService<C>> + Clone + Send + Sync + 'static,
    C: NewService<Concrete, Service = ConcreteService> + Clone + Send + Sync + 'static,
{
    /// The router of a connection to `orig_dst` (if redirected).
    pub fn new(
        orig_dst: Option<SocketAddr>,
        logicals: Option<L>,
        passthrough: Passthrough,
    ) -> Self {
        let orig_dst = orig_dst.filter(|a| !passthrough.is_self(*a));
        Self {
            orig_dst,
            logicals,
            passthrough,
        }
    }

    async fn route(self, mut req: Request<BoxBody>) -> Result<Response<BoxBody>, ProxyError> {
        // Only a peer proxy may speak orig-proto; never trust the app's.
        req.headers_mut().remove(headers::L5D_ORIG_PROTO);
        let authority = headers::authority(&req);
        let ip = authority.as_ref().and_then(|a| {
            a.host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .ok()
        });
        if let Some(logicals) = &self.logicals {
            let named = match (&authority, ip) {
                (Some(a), None) => Some(format!("{}:{}", a.host(), a.port_u16().unwrap_or(80))),
                _ => None,
            };
            let addressed = self.orig_dst.or_else(|| {
                ip.map(|ip| {
                    let port = authority.as_ref().and_then(|a| a.port_u16()).unwrap_or(80);
                    SocketAddr::new(ip, port)
                })
            });
            let candidates = named.into_iter().chain(addressed.map(|a| a.to_string()));
            for authority in candidates {
                let logical = logicals.new_service(Logical {
                    authority: authority.into(),
                });
                if logical.discovered().await {
                    // Always ready: a logical target waits per backend.
                    let mut logical = logical;
                    return logical.call(req).await;
                }
            }
        }
        let target = match self.orig_dst {
            Some(addr) => addr,
            None => resolve(authority).await?,
        };
        self.passthrough.send(req, target).await
    }
}

impl<L, C> tower::Service<Request<BoxBody>> for Router<L>
where
    L: NewService<Logical, Service = LogicalService<C>> + Clone + Send + Sync + 'static,
    C: NewService<Concrete, Service = ConcreteService> + Clone + Send + Sync + 'static,
{
    type Response = Response<BoxBody>;
    type Error = ProxyError;
    type Future = BoxResponse;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<BoxBody>) -> BoxResponse {
        Box::pin(self.clone().route(req))
    }
}

// === impl Passthrough ===

impl Passthrough {
    /// Passes requests through `endpoint`; `listen_addr` is the outbound
    /// listener's own address, refused as a target (it would loop).
    pub fn new(endpoint: NewEndpoint, meshed: MeshedTargets, listen_addr: SocketAddr) -> Self {
        Self {
            endpoint,
            meshed,
            listen_addr,
        }
    }

    /// The identity `WEFT_PROXY_MESHED_TARGETS` gives `target`, if any.
    pub fn meshed_identity(&self, target: SocketAddr) -> Option<std::sync::Arc<str>> {
        self.meshed.get(&target).and_then(|m| m.identity)
    }

    /// True if `target` is this listener: forwarding there would loop.
    pub fn is_self(&self, target: SocketAddr) -> bool {
        is_listener(self.listen_addr, target)
    }

    async fn send(
        &self,
        req: Request<BoxBody>,
        target: SocketAddr,
    ) -> Result<Response<BoxBody>, ProxyError> {
        if self.is_self(target) {
            return Err(ProxyError::Loop(target));
        }
        let meshed = self.meshed.get(&target);
        let endpoint = Endpoint {
            addr: target,
            meshed: meshed.is_some(),
            identity: meshed.and_then(|m| m.identity),
        };
        // Always ready: the pool dials on demand.
        self.endpoint.new_service(endpoint).call(req).await
    }
}

/// True if `target` is the listener bound to `listen`: forwarding there
/// would loop.
pub fn is_listener(listen: SocketAddr, target: SocketAddr) -> bool {
    target.port() == listen.port()
        && (target.ip() == listen.ip()
            || (listen.ip().is_unspecified() || listen.ip().is_loopback())
                && (target.ip().is_loopback() || target.ip().is_unspecified()))
}

/// Resolves a request's authority (`host[:port]`, port 80 by default) to a
/// socket address.
async fn resolve(authority: Option<http::uri::Authority>) -> Result<SocketAddr, ProxyError> {
    let authority = authority.ok_or(ProxyError::NoTarget)?;
    let port = authority.port_u16().unwrap_or(80);
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let failed = |reason: String| ProxyError::Resolve {
        authority: authority.to_string(),
        reason,
    };
    let lookup = tokio::time::timeout(
        RESOLVE_TIMEOUT,
        tokio::net::lookup_host((host.as_str(), port)),
    )
    .await;
    match lookup {
        Err(_) => Err(failed(format!("timed out after {RESOLVE_TIMEOUT:?}"))),
        Ok(Err(e)) => Err(failed(e.to_string())),
        Ok(Ok(mut addrs)) => addrs.next().ok_or_else(|| failed("no addresses".into())),
    }
}
