//! The concrete layer: one backend, its balancer and its queue.
//!
//! A *concrete* target is a backend a logical target's traffic goes to: a
//! TrafficSplit leaf, or the service itself. Each gets its own stack,
//! built once and cached: a [`Balance`] over the backend's discovered
//! endpoints (P2C over peak-EWMA with failure accrual, with load state of
//! its own) behind a [`Queue`] (bounded waiting while no endpoint is ready,
//! then fail-fast). The balancer's readiness is what the queue waits for:
//!
//! - endpoints known → ready; the pick happens in `call`, and if every
//!   endpoint is ejected by failure accrual the request fails at once
//!   (`503 … are failing`: the circuit is open, queueing behind endpoints
//!   known to fail only adds latency);
//! - no answer from discovery yet, or the backend *lost* its endpoints (a
//!   rollout, a crash) → not ready: requests wait in the queue for new
//!   ones, and after the fail-fast timeout fail with
//!   `503 … (fail-fast)` until an endpoint is ready again;
//! - an empty set from the first answer on (a Service with nothing behind
//!   it), or a name the controller no longer serves → ready, and the
//!   request fails at once with `503 service … has no endpoints`: there is
//!   nothing to wait for.

use super::endpoint::{BoxResponse, Endpoint, NewEndpoint};
use crate::balance::{InFlight, PeakEwma, Unavailable};
use crate::discovery::{DiscoveredEndpoint, Discovery, Resolution};
use crate::http::classify::Classifier;
use crate::http::errors::ProxyError;
use crate::http::{headers, BoxBody};
use crate::metrics::DstLabels;
use crate::route::condition::ResponseClasses;
use http::{Request, Response};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::watch;
use weft_proxy_stack::{NewService, Queue, QueueConfig};

/// A backend: the authority (`name:port`) its endpoints are discovered by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Concrete {
    /// `svc.ns.svc.cluster.local:port`, `IP:port`, or a split leaf as the
    /// split names it.
    pub authority: Arc<str>,
}

/// Builds a backend's stack: [`Queue`] over [`Balance`].
#[derive(Clone)]
pub struct NewConcrete {
    discovery: Discovery,
    balancer: PeakEwma,
    queue: QueueConfig,
    endpoint: NewEndpoint,
    is_self: fn(SocketAddr, SocketAddr) -> bool,
    listen_addr: SocketAddr,
}

/// A backend's stack, shared by every request to it (clones share the
/// queue and the balancer).
#[derive(Clone)]
pub struct ConcreteService {
    queue: Queue<Balance>,
    /// The same balancer, for opaque connections (which do not queue).
    balance: Balance,
}

/// P2C over one backend's endpoints, as a service whose readiness says
/// whether an endpoint could take a request.
pub struct Balance {
    shared: Arc<Shared>,
    endpoints: watch::Receiver<Resolution>,
    /// While not ready: wakes this caller when the endpoints change.
    changed: Option<Pin<Box<dyn Future<Output = bool> + Send + Sync>>>,
}

struct Shared {
    target: Concrete,
    balancer: PeakEwma,
    endpoint: NewEndpoint,
    /// The backend has had endpoints since this stack was built: an empty
    /// set now means they went away (and new ones are worth waiting for).
    had_endpoints: AtomicBool,
    is_self: fn(SocketAddr, SocketAddr) -> bool,
    listen_addr: SocketAddr,
}

// === impl NewConcrete ===

impl NewConcrete {
    /// Backends discovered through `discovery`, each balanced by a fresh
    /// copy of `balancer` and queued per `queue`. `is_self(listen_addr,
    /// endpoint)` refuses endpoints that would loop back to this proxy.
    pub fn new(
        discovery: Discovery,
        balancer: PeakEwma,
        queue: QueueConfig,
        endpoint: NewEndpoint,
        is_self: fn(SocketAddr, SocketAddr) -> bool,
        listen_addr: SocketAddr,
    ) -> Self {
        Self {
            discovery,
            balancer,
            queue,
            endpoint,
            is_self,
            listen_addr,
        }
    }
}

impl NewService<Concrete> for NewConcrete {
    type Service = ConcreteService;

    fn new_service(&self, target: Concrete) -> ConcreteService {
        let endpoints = self.discovery.watch_endpoints(&target.authority);
        self.build(target, endpoints)
    }
}

impl NewConcrete {
    /// Where backends' endpoints are discovered.
    pub fn discovery(&self) -> &Discovery {
        &self.discovery
    }

    /// The stack of `target`, balancing over `endpoints`.
    fn build(&self, target: Concrete, endpoints: watch::Receiver<Resolution>) -> ConcreteService {
        let name = target.authority.clone();
        let balance = Balance {
            shared: Arc::new(Shared {
                target,
                balancer: self.balancer.fresh(),
                endpoint: self.endpoint.clone(),
                had_endpoints: AtomicBool::new(false),
                is_self: self.is_self,
                listen_addr: self.listen_addr,
            }),
            endpoints,
            changed: None,
        };
        ConcreteService {
            queue: Queue::new(balance.clone(), self.queue, name),
            balance,
        }
    }
}

// === impl ConcreteService ===

impl ConcreteService {
    /// The balancer's shared state (tests: two handles on one stack).
    #[cfg(test)]
    pub(crate) fn balance_state(&self) -> Arc<impl Sized> {
        self.balance.shared.clone()
    }

    /// The backend this stack sends to.
    pub fn target(&self) -> &Concrete {
        &self.balance.shared.target
    }

    /// True while the backend fails requests fast.
    pub fn in_failfast(&self) -> bool {
        self.queue.in_failfast()
    }

    /// Picks an endpoint for an opaque TCP connection (same balancer and
    /// load state as HTTP): its address, identity and load guard.
    pub fn pick_opaque(&self) -> Result<(SocketAddr, Option<Arc<str>>, InFlight), ProxyError> {
        self.balance.pick_opaque()
    }
}

impl tower::Service<Request<BoxBody>> for ConcreteService {
    type Response = Response<BoxBody>;
    type Error = ProxyError;
    type Future = <Queue<Balance> as tower::Service<Request<BoxBody>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.queue.poll_ready(cx)
    }

    fn call(&mut self, req: Request<BoxBody>) -> Self::Future {
        self.queue.call(req)
    }
}

// === impl Balance ===

impl Clone for Balance {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            endpoints: self.endpoints.clone(),
            changed: None,
        }
    }
}

impl Balance {
    /// Whether a request should be dispatched now (see the module docs):
    /// `true` also when it can only fail, and fail at once.
    fn dispatchable(&mut self) -> bool {
        match &*self.endpoints.borrow_and_update() {
            Resolution::Endpoints(eps) if !eps.is_empty() => {
                if !self.shared.had_endpoints.load(Ordering::Relaxed) {
                    self.shared.had_endpoints.store(true, Ordering::Relaxed);
                }
                true
            }
            Resolution::Endpoints(_) => !self.shared.had_endpoints.load(Ordering::Relaxed),
            Resolution::Unknown => true,
            Resolution::Pending => false,
        }
    }

    fn pick_opaque(&self) -> Result<(SocketAddr, Option<Arc<str>>, InFlight), ProxyError> {
        let endpoints = self.current();
        let (ep, in_flight) = self.pick(&endpoints)?;
        Ok((ep.addr, ep.identity.clone(), in_flight))
    }

    fn current(&self) -> Arc<Vec<DiscoveredEndpoint>> {
        match &*self.endpoints.borrow() {
            Resolution::Endpoints(eps) => eps.clone(),
            Resolution::Unknown | Resolution::Pending => Arc::default(),
        }
    }

    fn pick<'a>(
        &self,
        endpoints: &'a [DiscoveredEndpoint],
    ) -> Result<(&'a DiscoveredEndpoint, InFlight), ProxyError> {
        let name = &self.shared.target.authority;
        let (ep, in_flight) = self
            .shared
            .balancer
            .pick(endpoints)
            .map_err(|why| match why {
                Unavailable::NoEndpoints => ProxyError::NoEndpoints(name.to_string()),
                Unavailable::AllFailing(endpoints) => ProxyError::AllFailing {
                    service: name.to_string(),
                    endpoints,
                },
            })?;
        if (self.shared.is_self)(self.shared.listen_addr, ep.addr) {
            return Err(ProxyError::Loop(ep.addr));
        }
        Ok((ep, in_flight))
    }
}

impl tower::Service<Request<BoxBody>> for Balance {
    type Response = Response<BoxBody>;
    type Error = ProxyError;
    type Future = BoxResponse;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        loop {
            if self.dispatchable() {
                self.changed = None;
                return Poll::Ready(Ok(()));
            }
            let changed = self.changed.get_or_insert_with(|| {
                // A clone has seen the current version: `changed` waits
                // for the next one.
                let mut rx = self.endpoints.clone();
                Box::pin(async move { rx.changed().await.is_ok() })
            });
            match changed.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(open) => {
                    self.changed = None;
                    if !open {
                        // The stream is gone: nothing will change; let the
                        // request fail with what is known.
                        return Poll::Ready(Ok(()));
                    }
                }
            }
        }
    }

    fn call(&mut self, req: Request<BoxBody>) -> BoxResponse {
        let endpoints = self.current();
        let picked = self
            .pick(&endpoints)
            .map(|(ep, in_flight)| (ep.clone(), in_flight));
        let (ep, in_flight) = match picked {
            Ok(picked) => picked,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let classes = req.extensions().get::<Arc<ResponseClasses>>().cloned();
        let grpc = headers::is_grpc(req.headers());
        let mut svc = self.shared.endpoint.new_service(Endpoint {
            addr: ep.addr,
            meshed: ep.h2,
            identity: ep.identity.clone().filter(|_| ep.h2),
        });
        // Always ready (the pool dials on demand): called at once.
        let sent = tower::Service::call(&mut svc, req);
        Box::pin(async move {
            match sent.await {
                Ok(mut rsp) => {
                    let grpc = grpc || headers::is_grpc(rsp.headers());
                    let mut classifier = Classifier::new(rsp.status(), rsp.headers(), grpc);
                    if let Some(classes) = classes {
                        classifier = classifier.with_classes(classes);
                    }
                    // gRPC answers whose status is only in the trailers are
                    // judged a success here (neither retried nor accrued).
                    in_flight.done(classifier.success_at_headers().unwrap_or(true));
                    rsp.extensions_mut()
                        .insert(DstLabels(Some(ep.labels.clone())));
                    Ok(rsp)
                }
                Err(e) => {
                    in_flight.failed();
                    Err(e)
                }
            }
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::balance::{Accrual, Strategy};
    use crate::drain::Drain;
    use crate::http::body;
    use crate::http::client::{ClientSettings, Clients};
    use crate::http::forward::Forward;
    use crate::metrics::{Direction, Metrics};
    use std::time::Duration;
    use tower::Service;

    const LISTEN: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 4140);

    /// A concrete stack builder whose discovery is never dialled.
    pub(crate) fn new_concrete(strategy: Strategy, accrual: Accrual) -> NewConcrete {
        let metrics = Metrics::new(false, Default::default());
        let clients = Clients::new(
            ClientSettings {
                connect_timeout: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(3),
            },
            metrics.tcp.clone(),
            Direction::Outbound,
            None,
        );
        let forward = Forward::new(
            clients,
            Drain::new(),
            metrics.tcp.clone(),
            Direction::Outbound,
            Duration::from_secs(1),
        );
        // Never dialled: the tests hand the stack its endpoints directly.
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        NewConcrete::new(
            Discovery::new(channel),
            PeakEwma::default()
                .with_strategy(strategy)
                .with_accrual(accrual),
            QueueConfig {
                capacity: 2,
                failfast_timeout: Duration::from_secs(3),
            },
            NewEndpoint::new(forward),
            crate::outbound::router::is_listener,
            LISTEN,
        )
    }

    fn endpoints(ports: &[u16]) -> Resolution {
        Resolution::Endpoints(Arc::new(
            ports
                .iter()
                .map(|p| DiscoveredEndpoint {
                    addr: SocketAddr::from(([10, 0, 0, 1], *p)),
                    identity: None,
                    h2: false,
                    labels: Arc::from(Vec::new()),
                })
                .collect(),
        ))
    }

    fn backend(
        new: &NewConcrete,
        initial: Resolution,
    ) -> (ConcreteService, watch::Sender<Resolution>) {
        let (tx, rx) = watch::channel(initial);
        let target = Concrete {
            authority: "api.test.svc.cluster.local:80".into(),
        };
        (new.build(target, rx), tx)
    }

    fn poll_ready(svc: &mut ConcreteService) -> Poll<Result<(), ProxyError>> {
        let waker = futures::task::noop_waker();
        svc.poll_ready(&mut Context::from_waker(&waker))
    }

    async fn call_error(svc: &mut ConcreteService) -> ProxyError {
        match svc.call(Request::new(body::empty())).await {
            Ok(rsp) => panic!("expected an error, got {}", rsp.status()),
            Err(e) => e,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_backend_without_an_answer_queues_then_fails_fast() {
        let new = new_concrete(Strategy::PeakEwma, Accrual::default());
        let (mut svc, _tx) = backend(&new, Resolution::Pending);
        assert!(poll_ready(&mut svc).is_pending());
        tokio::time::advance(Duration::from_millis(2_900)).await;
        assert!(poll_ready(&mut svc).is_pending(), "too early to fail fast");
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(matches!(poll_ready(&mut svc), Poll::Ready(Ok(()))));
        assert!(svc.in_failfast());
        let e = call_error(&mut svc).await;
        assert_eq!(e.status(), 503);
        let message = e.to_string();
        assert!(
            message.contains("api.test.svc.cluster.local:80"),
            "{message}"
        );
        assert!(message.contains("fail-fast"), "{message}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_backend_that_loses_its_endpoints_waits_for_new_ones() {
        let new = new_concrete(Strategy::PeakEwma, Accrual::default());
        let (mut svc, tx) = backend(&new, endpoints(&[1]));
        assert!(matches!(poll_ready(&mut svc), Poll::Ready(Ok(()))));
        tx.send_replace(endpoints(&[]));
        assert!(
            poll_ready(&mut svc).is_pending(),
            "lost its endpoints: waits"
        );
        // A waiter is woken by the new endpoints, before the fail-fast deadline.
        let mut waiter = svc.clone();
        let ready =
            tokio::spawn(async move { futures::future::poll_fn(|cx| waiter.poll_ready(cx)).await });
        tokio::time::advance(Duration::from_secs(1)).await;
        tx.send_replace(endpoints(&[2]));
        assert!(ready.await.unwrap().is_ok());
        assert!(!svc.in_failfast());
        // Gone again for longer than the timeout: fail-fast, until one returns.
        tx.send_replace(endpoints(&[]));
        assert!(poll_ready(&mut svc).is_pending());
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(matches!(poll_ready(&mut svc), Poll::Ready(Ok(()))));
        assert!(svc.in_failfast());
        assert!(matches!(
            call_error(&mut svc).await,
            ProxyError::FailFast(_)
        ));
        tx.send_replace(endpoints(&[3]));
        assert!(matches!(poll_ready(&mut svc), Poll::Ready(Ok(()))));
        assert!(!svc.in_failfast());
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_backend_fails_at_once() {
        let new = new_concrete(Strategy::PeakEwma, Accrual::default());
        let (mut svc, _tx) = backend(&new, endpoints(&[]));
        assert!(matches!(poll_ready(&mut svc), Poll::Ready(Ok(()))));
        let e = call_error(&mut svc).await;
        assert!(
            matches!(e, ProxyError::NoEndpoints(ref n) if n == "api.test.svc.cluster.local:80"),
            "{e}"
        );
        assert!(!svc.in_failfast());
    }

    #[tokio::test(start_paused = true)]
    async fn a_backend_whose_endpoints_are_all_ejected_fails_at_once() {
        let accrual = Accrual {
            max_failures: 1,
            ..Accrual::default()
        };
        let new = new_concrete(Strategy::PeakEwma, accrual);
        let (mut svc, _tx) = backend(&new, endpoints(&[1]));
        let (_, _, in_flight) = svc.pick_opaque().unwrap();
        in_flight.failed();
        assert!(matches!(poll_ready(&mut svc), Poll::Ready(Ok(()))));
        let e = call_error(&mut svc).await;
        assert!(
            matches!(e, ProxyError::AllFailing { endpoints: 1, .. }),
            "{e}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_endpoint_that_is_this_proxy_is_refused() {
        let new = new_concrete(Strategy::PeakEwma, Accrual::default());
        let (tx, rx) = watch::channel(Resolution::Endpoints(Arc::new(vec![DiscoveredEndpoint {
            addr: LISTEN,
            identity: None,
            h2: false,
            labels: Arc::from(Vec::new()),
        }])));
        let target = Concrete {
            authority: "loop:80".into(),
        };
        let mut svc = new.build(target, rx);
        assert!(matches!(poll_ready(&mut svc), Poll::Ready(Ok(()))));
        assert!(matches!(call_error(&mut svc).await, ProxyError::Loop(a) if a == LISTEN));
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn each_backend_balances_with_its_own_state() {
        let new = new_concrete(Strategy::RoundRobin, Accrual::default());
        let (a, _ta) = backend(&new, endpoints(&[1, 2]));
        let (b, _tb) = backend(&new, endpoints(&[1, 2]));
        let port = |svc: &ConcreteService| svc.pick_opaque().unwrap().0.port();
        assert_eq!([port(&a), port(&a), port(&a)], [1, 2, 1]);
        // `b`'s turn counter is its own: it starts at the first endpoint.
        assert_eq!([port(&b), port(&b)], [1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn open_connections_steer_a_backends_picks() {
        let new = new_concrete(Strategy::LeastLoaded, Accrual::default());
        let (a, _ta) = backend(&new, endpoints(&[1, 2]));
        // An open connection on one endpoint steers picks to the other.
        let (busy, _, guard) = a.pick_opaque().unwrap();
        let open = guard.established();
        for _ in 0..10 {
            let (other, _, _) = a.pick_opaque().unwrap();
            assert_ne!(other, busy);
        }
        drop(open);
    }
}
