//! The outbound side: connections from this workload to others.
//!
//! The target is the original destination of a redirected connection; for
//! HTTP sent to the listener directly (an application using the proxy as
//! its `http_proxy`), each request's authority names its own target, and
//! `CONNECT` tunnels are supported for `https_proxy`. HTTP/1 to a meshed
//! target is carried over HTTP/2 (see [`crate::http::orig_proto`]).

use crate::config::MeshedTargets;
use crate::conn::{Side, Target};
use crate::discovery::balance::PeakEwma;
use crate::discovery::{pick_override, Discovery, Resolution};
use crate::http::client::{Clients, Endpoint};
use crate::http::errors::{NewErrors, ProxyError};
use crate::http::forward::Forward;
use crate::http::metrics::NewMetrics;
use crate::http::server::HttpService;
use crate::http::{headers, orig_proto, BoxBody};
use crate::metrics::{DstLabels, HttpMetrics};
use crate::transport::listen::Accepted;
use crate::HttpVersion;
use http::{Method, Request, Response, Version};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// How long a DNS lookup of a request's authority may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The outbound side of the proxy.
#[derive(Clone)]
pub struct Outbound {
    side: Side,
    http_metrics: HttpMetrics,
    router: Arc<Router>,
}

/// Chooses each request's target and protocol, and forwards it.
#[derive(Clone)]
pub struct Route {
    router: Arc<Router>,
    orig_dst: Option<SocketAddr>,
}

struct Router {
    forward: Forward,
    meshed: MeshedTargets,
    listen_addr: SocketAddr,
    discovery: Option<(Discovery, PeakEwma)>,
}

/// How long a request waits for the controller's first answer about a
/// name before falling back to the original destination.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(2);

// === impl Outbound ===

impl Outbound {
    /// Builds the outbound side. `listen_addr` is the outbound listener's
    /// own address, used to refuse requests that would loop back to it.
    pub fn new(
        side: Side,
        listen_addr: SocketAddr,
        meshed: MeshedTargets,
        http_metrics: HttpMetrics,
        clients: Clients,
        discovery: Option<Discovery>,
        balancer: PeakEwma,
    ) -> Self {
        let forward = Forward::new(
            clients,
            side.drain.clone(),
            side.tcp.clone(),
            side.direction,
            side.connect_timeout,
        );
        Self {
            side,
            http_metrics,
            router: Arc::new(Router {
                forward,
                meshed,
                listen_addr,
                discovery: discovery.map(|d| (d, balancer)),
            }),
        }
    }

    /// Handles one accepted outbound connection.
    pub async fn serve(self, accepted: Accepted) {
        let orig_dst = accepted.orig_dst;
        let route = Route {
            router: self.router.clone(),
            orig_dst,
        };
        let (http_metrics, direction) = (self.http_metrics.clone(), self.side.direction);
        let opaque_target = orig_dst.map(|addr| Target {
            addr,
            identity: self.router.meshed.get(&addr).and_then(|m| m.identity),
        });
        self.side
            .serve(accepted, opaque_target, move |tls| {
                let metrics = NewMetrics::new(http_metrics, direction, tls);
                HttpService::new(
                    tower::ServiceBuilder::new()
                        .layer(metrics)
                        .layer(NewErrors)
                        .service(route),
                )
            })
            .await
    }
}

// === impl Route ===

impl tower::Service<Request<BoxBody>> for Route {
    type Response = Response<BoxBody>;
    type Error = ProxyError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<BoxBody>, ProxyError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<BoxBody>) -> Self::Future {
        let router = self.router.clone();
        let orig_dst = self.orig_dst;
        Box::pin(async move { router.route(orig_dst, req).await })
    }
}

// === impl Router ===

impl Router {
    async fn route(
        &self,
        orig_dst: Option<SocketAddr>,
        mut req: Request<BoxBody>,
    ) -> Result<Response<BoxBody>, ProxyError> {
        // Only a peer proxy may speak orig-proto; never trust the app's.
        req.headers_mut().remove(headers::L5D_ORIG_PROTO);

        // A name the controller knows is balanced over its endpoints;
        // anything else goes to the original destination.
        let req = match self.route_discovered(req).await {
            Ok(rsp) => return rsp,
            Err(req) => req,
        };

        let target = match orig_dst {
            Some(addr) => addr,
            None => resolve(headers::authority(&req)).await?,
        };
        if self.is_self(target) {
            return Err(ProxyError::Loop(target));
        }
        let meshed = self.meshed.get(&target).map(|m| m.identity);
        self.send(req, target, meshed).await
    }

    /// Routes by discovery when the request names a service the controller
    /// knows; hands the request back (`Err`) when it does not, to be routed
    /// as usual.
    async fn route_discovered(
        &self,
        req: Request<BoxBody>,
    ) -> Result<Result<Response<BoxBody>, ProxyError>, Request<BoxBody>> {
        let Some((discovery, balancer)) = self.discovery.as_ref() else {
            return Err(req);
        };
        let Some(authority) = headers::authority(&req) else {
            return Err(req);
        };
        if authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok()
        {
            return Err(req);
        }
        let port = authority.port_u16().unwrap_or(80);
        let name = format!("{}:{}", authority.host(), port);
        // The profile and the endpoints are looked up together; a
        // TrafficSplit in the profile sends the request to one of its
        // backends (by weight), each a service resolved on its own.
        let (profile, resolution) = tokio::join!(
            discovery.profile(&name, DISCOVERY_TIMEOUT),
            discovery.resolve(&name, DISCOVERY_TIMEOUT)
        );
        let backend = profile
            .as_ref()
            .and_then(|p| pick_override(&p.dst_overrides))
            .map(|a| {
                if a.contains(':') {
                    a.to_string()
                } else {
                    format!("{a}:{port}")
                }
            });
        let resolution = match &backend {
            Some(b) if *b != name => discovery.resolve(b, DISCOVERY_TIMEOUT).await,
            _ => resolution,
        };
        let endpoints = match resolution {
            Resolution::Endpoints(eps) => eps,
            Resolution::Unknown | Resolution::Pending => return Err(req),
        };
        let Some((endpoint, in_flight)) = balancer.pick(&endpoints) else {
            return Ok(Err(ProxyError::NoEndpoints(backend.unwrap_or(name))));
        };
        if self.is_self(endpoint.addr) {
            return Ok(Err(ProxyError::Loop(endpoint.addr)));
        }
        let rsp = self
            .send(
                req,
                endpoint.addr,
                endpoint.h2.then(|| endpoint.identity.clone()),
            )
            .await;
        let dst = DstLabels(Some(endpoint.labels.clone()));
        Ok(rsp.map(|mut rsp| {
            in_flight.done();
            rsp.extensions_mut().insert(dst);
            rsp
        }))
    }

    /// Sends to `addr`; `meshed` is `Some(identity)` when a Weft proxy is
    /// there (HTTP/1 is carried over HTTP/2, mTLS when the identity is known).
    async fn send(
        &self,
        mut req: Request<BoxBody>,
        addr: SocketAddr,
        meshed: Option<Option<Arc<str>>>,
    ) -> Result<Response<BoxBody>, ProxyError> {
        if req.method() == Method::CONNECT {
            return self.forward.connect_tunnel(addr, req).await;
        }
        let http1 = matches!(req.version(), Version::HTTP_10 | Version::HTTP_11);
        let identity = meshed.clone().flatten();
        if http1 && meshed.is_some() && !headers::is_upgrade(&req) {
            if let Some(orig) = orig_proto::upgrade_request(&mut req) {
                let endpoint = Endpoint {
                    addr,
                    version: HttpVersion::Http2,
                    identity,
                };
                let mut rsp = self.forward.http(endpoint, req).await?;
                orig_proto::downgrade_response(&mut rsp, orig);
                return Ok(rsp);
            }
        }
        let version = if http1 {
            HttpVersion::Http1
        } else {
            HttpVersion::Http2
        };
        let endpoint = Endpoint {
            addr,
            version,
            identity,
        };
        self.forward.http(endpoint, req).await
    }

    /// True if `target` is this listener: forwarding there would loop.
    fn is_self(&self, target: SocketAddr) -> bool {
        let listen = self.listen_addr;
        target.port() == listen.port()
            && (target.ip() == listen.ip()
                || (listen.ip().is_unspecified() || listen.ip().is_loopback())
                    && (target.ip().is_loopback() || target.ip().is_unspecified()))
    }
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
