//! The outbound side: connections from this workload to others.
//!
//! The target is the original destination of a redirected connection; for
//! HTTP sent to the listener directly (an application using the proxy as
//! its `http_proxy`), each request's authority names its own target, and
//! `CONNECT` tunnels are supported for `https_proxy`. HTTP/1 to a meshed
//! target is carried over HTTP/2 (see [`crate::http::orig_proto`]).

use crate::config::MeshedTargets;
use crate::conn::{Balanced, Side, Target};
use crate::discovery::balance::{PeakEwma, Unavailable};
use crate::discovery::policy::Policy;
use crate::discovery::{pick_override, DiscoveredEndpoint, Discovery, Profile, Resolution};
use crate::http::classify::Classifier;
use crate::http::client::{Clients, Endpoint};
use crate::http::errors::{NewErrors, ProxyError};
use crate::http::forward::Forward;
use crate::http::metrics::{NewMetrics, RouteRecord};
use crate::http::server::HttpService;
use crate::http::{body, headers, orig_proto, BoxBody};
use crate::metrics::route::{RouteLabels, Skipped};
use crate::metrics::{Direction, DstLabels, HttpMetrics, RouteMetrics};
use crate::route::condition::ResponseClasses;
use crate::route::replay::{ReplayBody, MAX_REPLAY_BYTES};
use crate::route::Route as ProfileRoute;
use crate::transport::listen::Accepted;
use crate::HttpVersion;
use http::{HeaderValue, Method, Request, Response, Version};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The most attempts one request may make; the retry budget normally
/// stops retries long before.
const MAX_ATTEMPTS: u32 = 10;

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
    /// What discovery said about `orig_dst`, looked up once per connection.
    discovered: Option<Arc<Discovered>>,
}

/// What the controller says about an `IP:port` (a redirected connection's
/// original destination, or an address a request names): a Service's
/// ClusterIP resolves to the Service (its profile and endpoints), a pod IP
/// to that pod.
#[derive(Debug)]
struct Discovered {
    /// `IP:port`, as it was looked up.
    name: String,
    /// The address's profile (default when there is none yet).
    profile: Profile,
    /// Its endpoints; `None` when the controller does not know the address
    /// (it is then used as it is).
    endpoints: Option<Arc<Vec<DiscoveredEndpoint>>>,
}

struct Router {
    forward: Forward,
    meshed: MeshedTargets,
    listen_addr: SocketAddr,
    discovery: Option<(Discovery, PeakEwma)>,
    route_metrics: RouteMetrics,
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
        metrics: (HttpMetrics, RouteMetrics),
        clients: Clients,
        discovery: Option<Discovery>,
        balancer: PeakEwma,
    ) -> Self {
        let (http_metrics, route_metrics) = metrics;
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
                route_metrics,
            }),
        }
    }

    /// Handles one accepted outbound connection. A redirected connection's
    /// original destination is looked up first (bounded by the discovery
    /// timeout; a cached watch answers at once), so that an opaque port
    /// skips detection and opaque TCP is balanced over the endpoints.
    pub async fn serve(self, accepted: Accepted) {
        let orig_dst = accepted.orig_dst;
        let discovered = match orig_dst {
            Some(addr) if !self.router.is_self(addr) => self.router.discover_addr(addr).await,
            _ => None,
        };
        let opaque_target =
            orig_dst.map(|addr| self.router.opaque_target(addr, discovered.as_deref()));
        let route = Route {
            router: self.router.clone(),
            orig_dst,
            discovered,
        };
        let (http_metrics, direction) = (self.http_metrics.clone(), self.side.direction);
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
        let (orig_dst, discovered) = (self.orig_dst, self.discovered.clone());
        Box::pin(async move { router.route(orig_dst, discovered, req).await })
    }
}

// === impl Router ===

impl Router {
    async fn route(
        &self,
        orig_dst: Option<SocketAddr>,
        discovered: Option<Arc<Discovered>>,
        mut req: Request<BoxBody>,
    ) -> Result<Response<BoxBody>, ProxyError> {
        // Only a peer proxy may speak orig-proto; never trust the app's.
        req.headers_mut().remove(headers::L5D_ORIG_PROTO);

        // A name or address the controller knows is balanced over its
        // endpoints; anything else goes to the original destination.
        let req = match self.route_discovered(req, discovered).await {
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
    /// knows, or was redirected to an address it knows (`discovered`: a
    /// ClusterIP or pod IP); hands the request back (`Err`) when neither,
    /// to be routed as usual.
    async fn route_discovered(
        &self,
        req: Request<BoxBody>,
        discovered: Option<Arc<Discovered>>,
    ) -> Result<Result<Response<BoxBody>, ProxyError>, Request<BoxBody>> {
        let Some((discovery, _)) = self.discovery.as_ref() else {
            return Err(req);
        };
        let authority = headers::authority(&req);
        let ip = authority.as_ref().and_then(|a| {
            a.host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .ok()
        });
        let named = match (&authority, ip) {
            (Some(authority), None) => Some(authority),
            _ => None,
        };
        if let Some(authority) = named {
            let port = authority.port_u16().unwrap_or(80);
            let name = format!("{}:{}", authority.host(), port);
            // The profile, the outbound policy and the endpoints are looked
            // up together.
            let (profile, resolution, policy) = tokio::join!(
                discovery.profile(&name, DISCOVERY_TIMEOUT),
                discovery.resolve(&name, DISCOVERY_TIMEOUT),
                discovery.policy(&name, DISCOVERY_TIMEOUT)
            );
            let logical = Logical {
                name,
                port,
                profile: profile.unwrap_or_default(),
                policy,
            };
            if let Some(backend) = self.backend(&logical, Some(resolution), head(&req)).await {
                return Ok(Ok(self.route_request(req, logical, backend).await));
            }
            // A name the controller does not serve: the connection's
            // original destination may still be one it knows.
        }
        // An address: the redirected connection's original destination
        // (looked up when it was accepted), else the address the request
        // names (an application using the proxy as `http_proxy`).
        let discovered = match (discovered, ip, &authority) {
            (Some(d), _, _) => d,
            (None, Some(ip), Some(authority)) => {
                let addr = SocketAddr::new(ip, authority.port_u16().unwrap_or(80));
                match self.discover_addr(addr).await {
                    Some(d) => d,
                    None => return Err(req),
                }
            }
            _ => return Err(req),
        };
        // The connection's lookup named the service; its endpoints and
        // profile are read afresh for every request (a cache hit on the
        // watch), or a keep-alive connection would keep the endpoints it
        // was accepted with through every rollout.
        let (profile, resolution, policy) = tokio::join!(
            discovery.profile(&discovered.name, DISCOVERY_TIMEOUT),
            discovery.resolve(&discovered.name, DISCOVERY_TIMEOUT),
            discovery.policy(&discovered.name, DISCOVERY_TIMEOUT)
        );
        let endpoints = match resolution {
            Resolution::Endpoints(endpoints) => endpoints,
            Resolution::Unknown | Resolution::Pending => return Err(req),
        };
        let port = port_of(&discovered.name);
        let logical = Logical {
            name: discovered.name.clone(),
            port,
            profile: profile.unwrap_or_else(|| discovered.profile.clone()),
            policy,
        };
        let own = Resolution::Endpoints(endpoints);
        let Some(backend) = self.backend(&logical, Some(own), head(&req)).await else {
            return Err(req);
        };
        Ok(Ok(self.route_request(req, logical, backend).await))
    }

    /// Looks `addr` up (profile and endpoints together, each bounded by
    /// the discovery timeout); `None` without discovery.
    async fn discover_addr(&self, addr: SocketAddr) -> Option<Arc<Discovered>> {
        let (discovery, _) = self.discovery.as_ref()?;
        let name = addr.to_string();
        let (profile, resolution) = tokio::join!(
            discovery.profile(&name, DISCOVERY_TIMEOUT),
            discovery.resolve(&name, DISCOVERY_TIMEOUT)
        );
        let endpoints = match resolution {
            Resolution::Endpoints(endpoints) => Some(endpoints),
            Resolution::Unknown | Resolution::Pending => None,
        };
        Some(Arc::new(Discovered {
            name,
            profile: profile.unwrap_or_default(),
            endpoints,
        }))
    }

    /// Where a redirected connection's opaque bytes go: balanced over the
    /// endpoints discovery knows for `addr` (mTLS to each one's identity),
    /// else `addr` itself (mTLS if `WEFT_PROXY_MESHED_TARGETS` names its
    /// identity). An opaque port (from the profile) skips detection.
    fn opaque_target(&self, addr: SocketAddr, discovered: Option<&Discovered>) -> Target {
        let configured = self.meshed.get(&addr).and_then(|m| m.identity);
        let mut target = Target::direct(addr, configured);
        let (Some(d), Some((discovery, balancer))) = (discovered, self.discovery.as_ref()) else {
            return target;
        };
        target.opaque = d.profile.opaque;
        if d.endpoints.is_some() {
            target.identity = None;
            target.balanced = Some(Balanced {
                name: d.name.clone(),
                discovery: discovery.clone(),
                balancer: balancer.clone(),
                timeout: DISCOVERY_TIMEOUT,
            });
        }
        target
    }

    /// Chooses where one attempt goes: the backends of the first outbound
    /// policy rule the request matches (a TrafficSplit with `matches`),
    /// else the profile's TrafficSplit backends (by weight), else the name
    /// itself, with its current endpoints; `None` if that is not a service
    /// the controller knows. `own` is the name's resolution when the
    /// caller already has it (the first attempt), saving a lookup.
    async fn backend(
        &self,
        logical: &Logical,
        own: Option<Resolution>,
        head: Head<'_>,
    ) -> Option<Backend> {
        let (discovery, _) = self.discovery.as_ref()?;
        let matched = logical
            .policy
            .as_deref()
            .and_then(|p| p.backends(head.method, head.uri, head.headers));
        let chosen = matched
            .map_or_else(
                || pick_override(&logical.profile.dst_overrides),
                pick_override,
            )
            .map(|a| {
                if a.contains(':') {
                    a.to_string()
                } else {
                    format!("{a}:{}", logical.port)
                }
            })
            // The service itself, by the request's name or by the FQDN the
            // controller names it (the policy's catch-all backend): reuse
            // the request's own resolution instead of a second lookup.
            .filter(|a| *a != logical.name && a.as_str() != &*logical.profile.name);
        let (name, resolution) = match (chosen, own) {
            (None, Some(own)) => (logical.name.clone(), own),
            (chosen, _) => {
                let name = chosen.unwrap_or_else(|| logical.name.clone());
                let resolution = discovery.resolve(&name, DISCOVERY_TIMEOUT).await;
                (name, resolution)
            }
        };
        match resolution {
            Resolution::Endpoints(endpoints) => Some(Backend { name, endpoints }),
            Resolution::Unknown | Resolution::Pending => None,
        }
    }

    /// Applies the request's profile route: its timeout over all attempts,
    /// retries within the budget, and route metrics (recorded by the
    /// metrics layer from the [`RouteRecord`] on the response). Proxy
    /// errors are turned into responses here so they count too.
    async fn route_request(
        &self,
        req: Request<BoxBody>,
        logical: Logical,
        backend: Backend,
    ) -> Response<BoxBody> {
        let dst: Arc<str> = if logical.profile.name.is_empty() {
            logical.name.as_str().into()
        } else {
            logical.profile.name.clone()
        };
        let route = logical
            .profile
            .routes
            .route_for(req.method(), req.uri().path())
            .clone();
        let labels = self
            .route_metrics
            .labels(Direction::Outbound, &dst, &route.name);
        let grpc = headers::is_grpc(req.headers());
        let attempts = self.attempts(req, &logical, &route, &labels, backend);
        let result = match route.timeout {
            Some(timeout) => tokio::time::timeout(timeout, attempts)
                .await
                .unwrap_or_else(|_| {
                    Err(ProxyError::RouteTimeout {
                        route: route.name.clone(),
                        timeout,
                    })
                }),
            None => attempts.await,
        };
        let (mut rsp, actual) = match result {
            Ok(rsp) => (rsp, true),
            Err(e) => (e.to_response(grpc), false),
        };
        rsp.extensions_mut().insert(RouteRecord {
            metrics: self.route_metrics.clone(),
            labels,
            classes: route.classes.clone(),
            actual,
        });
        rsp
    }

    /// Sends the request, and again while it fails, its route is
    /// retryable, its body could be kept and the budget allows.
    async fn attempts(
        &self,
        req: Request<BoxBody>,
        logical: &Logical,
        route: &ProfileRoute,
        labels: &RouteLabels,
        mut backend: Backend,
    ) -> Result<Response<BoxBody>, ProxyError> {
        // Upgrades and tunnels take over the connection: never retried.
        let retryable =
            route.retryable && req.method() != Method::CONNECT && !headers::is_upgrade(&req);
        if !retryable {
            return self.attempt(req, &backend, labels, &route.classes).await.0;
        }
        let budget = logical.profile.routes.budget();
        budget.deposit();
        let (parts, body) = req.into_parts();
        let mut body = match ReplayBody::new(body, MAX_REPLAY_BYTES) {
            Ok(body) => body,
            Err(body) => {
                // Known to be too large: one attempt, as it is.
                let req = Request::from_parts(parts, body);
                let (result, failed) = self.attempt(req, &backend, labels, &route.classes).await;
                if failed {
                    self.route_metrics.retryable(labels, Skipped::BodyTooLarge);
                }
                return result;
            }
        };
        let kept = body.handle();
        let mut attempt = 1;
        loop {
            let mut req = clone_head(&parts, body::boxed(body));
            if attempt > 1 {
                req.headers_mut()
                    .insert(headers::L5D_RETRY_ATTEMPT, HeaderValue::from(attempt));
            }
            let (result, failed) = self.attempt(req, &backend, labels, &route.classes).await;
            if !failed {
                return result;
            }
            // The budget is asked last: a refusal for another reason must
            // not spend a retry. (If the body outgrows the cap between the
            // check and `replay`, one token is spent for nothing.)
            let next = if attempt >= MAX_ATTEMPTS {
                Err(Skipped::MaxAttempts)
            } else if !kept.is_replayable() {
                Err(Skipped::BodyTooLarge)
            } else if !budget.withdraw() {
                Err(Skipped::NoBudget)
            } else {
                kept.replay().ok_or(Skipped::BodyTooLarge)
            };
            self.route_metrics
                .retryable(labels, next.as_ref().err().copied().unwrap_or(Skipped::No));
            let Ok(next) = next else {
                return result;
            };
            body = next;
            if let Ok(rsp) = &result {
                // The failed attempt's response is dropped; count it now.
                self.route_metrics
                    .response(labels, rsp.status().as_u16(), false, true);
            }
            drop(result);
            attempt += 1;
            // A retry may go to another split backend, and P2C picks again.
            if let Some(next) = self.backend(logical, None, head_of(&parts)).await {
                backend = next;
            }
        }
    }

    /// One attempt: picks an endpoint (skipping ejected ones), sends, and
    /// reports the outcome to the balancer and the `route_actual_*`
    /// metrics. Returns the result and whether it failed (by the route's
    /// response classes, judged on the response head).
    async fn attempt(
        &self,
        req: Request<BoxBody>,
        backend: &Backend,
        labels: &RouteLabels,
        classes: &Arc<ResponseClasses>,
    ) -> (Result<Response<BoxBody>, ProxyError>, bool) {
        let (_, balancer) = match self.discovery.as_ref() {
            Some(d) => d,
            None => return (Err(ProxyError::NoEndpoints(backend.name.clone())), true),
        };
        let (endpoint, in_flight) = match balancer.pick(&backend.endpoints) {
            Ok(picked) => picked,
            Err(Unavailable::NoEndpoints) => {
                return (Err(ProxyError::NoEndpoints(backend.name.clone())), true)
            }
            Err(Unavailable::AllFailing(endpoints)) => {
                let e = ProxyError::AllFailing {
                    service: backend.name.clone(),
                    endpoints,
                };
                return (Err(e), true);
            }
        };
        if self.is_self(endpoint.addr) {
            return (Err(ProxyError::Loop(endpoint.addr)), true);
        }
        let grpc = headers::is_grpc(req.headers());
        self.route_metrics.request(labels, true);
        let start = Instant::now();
        let meshed = endpoint.h2.then(|| endpoint.identity.clone());
        match self.send(req, endpoint.addr, meshed).await {
            Ok(mut rsp) => {
                let elapsed_ms = start.elapsed().as_secs_f64() * 1e3;
                let status = rsp.status();
                self.route_metrics
                    .latency(labels, status.as_u16(), elapsed_ms, true);
                let grpc = grpc || headers::is_grpc(rsp.headers());
                // gRPC answers whose status is only in the trailers are
                // judged a success here (neither retried nor accrued).
                let success = Classifier::new(status, rsp.headers(), grpc)
                    .with_classes(classes.clone())
                    .success_at_headers()
                    .unwrap_or(true);
                in_flight.done(success);
                rsp.extensions_mut()
                    .insert(DstLabels(Some(endpoint.labels.clone())));
                (Ok(rsp), !success)
            }
            Err(e) => {
                in_flight.failed();
                self.route_metrics
                    .response(labels, e.status().as_u16(), false, true);
                (Err(e), true)
            }
        }
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

/// The name a request is for and what discovery said about it, looked up
/// once per request and used by every attempt (so a retry sees the same
/// profile and split rules as the first attempt).
struct Logical {
    /// `host:port` as the request named it.
    name: String,
    /// The request's port (split backends without one inherit it).
    port: u16,
    profile: Profile,
    /// Split rules with `matches` (`OutboundPolicies`), if any.
    policy: Option<Arc<Policy>>,
}

/// Where one attempt goes: a service and its current endpoints.
struct Backend {
    name: String,
    endpoints: Arc<Vec<DiscoveredEndpoint>>,
}

/// What routing may look at in a request (a TrafficSplit with `matches`
/// chooses its backend by method, path and headers).
#[derive(Clone, Copy)]
struct Head<'a> {
    method: &'a Method,
    uri: &'a http::Uri,
    headers: &'a http::HeaderMap,
}

fn head<B>(req: &Request<B>) -> Head<'_> {
    Head {
        method: req.method(),
        uri: req.uri(),
        headers: req.headers(),
    }
}

fn head_of(parts: &http::request::Parts) -> Head<'_> {
    Head {
        method: &parts.method,
        uri: &parts.uri,
        headers: &parts.headers,
    }
}

/// A request with `parts`' method, URI, version and headers (not its
/// extensions, which only upgrades use, and those are never retried).
fn clone_head(parts: &http::request::Parts, body: BoxBody) -> Request<BoxBody> {
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req
}

/// The port of `IP:port` (80 if absent).
fn port_of(addr: &str) -> u16 {
    addr.parse::<SocketAddr>().map_or(80, |a| a.port())
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
