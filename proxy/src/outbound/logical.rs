//! The logical layer: a name or address the application asked for.
//!
//! A *logical* target is what a request names (`host:port`) or where its
//! connection was going (`IP:port`, a ClusterIP), as discovery is asked
//! about it. Its stack is built once and cached: it holds the target's
//! endpoint, profile and outbound-policy watches, so a request reads the
//! current state without a lookup, and its own backend's stack. Per
//! request it
//!
//! 1. picks the profile **route** (ServiceProfile routes, first match, else
//!    `[DEFAULT]`) and hands the request to an [`HttpRoute`];
//! 2. which sends each attempt through [`Backends`]: the backends of the
//!    first outbound-policy rule the request matches (a TrafficSplit with
//!    `matches`), else the profile's TrafficSplit leaves by weight, else
//!    the target itself — one [`Concrete`] stack each, from the shared
//!    cache.

use super::concrete::{Concrete, ConcreteService};
use super::endpoint::BoxResponse;
use super::http_route::HttpRoute;
use crate::discovery::policy::Policy;
use crate::discovery::{first_answer, pick_override, Discovery, Profile, Resolution};
use crate::http::errors::ProxyError;
use crate::http::BoxBody;
use crate::metrics::{Direction, RouteMetrics};
use http::{Request, Response};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::watch;
use weft_proxy_stack::NewService;

/// How long a request waits for the controller's first answer about a
/// target before it is sent where it was going instead.
pub const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(2);

/// A name (`host:port`) or address (`IP:port`) as discovery knows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Logical {
    /// `host:port` or `IP:port`.
    pub authority: Arc<str>,
}

/// Builds a logical target's stack.
#[derive(Clone)]
pub struct NewLogical<C> {
    discovery: Discovery,
    concretes: C,
    metrics: RouteMetrics,
}

/// A logical target's stack; clones share it.
#[derive(Clone)]
pub struct LogicalService<C> {
    inner: Arc<Inner<C>>,
}

struct Inner<C> {
    target: Logical,
    /// The target's own resolution: whether the controller serves it.
    endpoints: watch::Receiver<Resolution>,
    profile: watch::Receiver<Option<Arc<Profile>>>,
    policy: watch::Receiver<Option<Arc<Policy>>>,
    /// The target as its own backend (no split): built with the stack.
    own: ConcreteService,
    concretes: C,
    metrics: RouteMetrics,
    /// Served while the controller has not sent a profile.
    no_profile: Arc<Profile>,
}

/// The backends of one request on one logical target: chooses a concrete
/// stack per attempt.
pub struct Backends<C> {
    logical: Arc<Inner<C>>,
    profile: Arc<Profile>,
    policy: Option<Arc<Policy>>,
}

// === impl Logical ===

impl Logical {
    /// The target's port (80 if it names none).
    pub fn port(&self) -> u16 {
        self.authority
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(80)
    }
}

// === impl NewLogical ===

impl<C> NewLogical<C> {
    /// Logical stacks discovered through `discovery`, whose backends come
    /// from `concretes` (a cache of concrete stacks).
    pub fn new(discovery: Discovery, concretes: C, metrics: RouteMetrics) -> Self {
        Self {
            discovery,
            concretes,
            metrics,
        }
    }
}

impl<C> NewService<Logical> for NewLogical<C>
where
    C: NewService<Concrete, Service = ConcreteService> + Clone,
{
    type Service = LogicalService<C>;

    fn new_service(&self, target: Logical) -> LogicalService<C> {
        let name = &*target.authority;
        let own = self.concretes.new_service(Concrete {
            authority: target.authority.clone(),
        });
        LogicalService {
            inner: Arc::new(Inner {
                endpoints: self.discovery.watch_endpoints(name),
                profile: self.discovery.watch_profile(name),
                policy: self.discovery.watch_policy(name),
                own,
                concretes: self.concretes.clone(),
                metrics: self.metrics.clone(),
                no_profile: Arc::default(),
                target,
            }),
        }
    }
}

// === impl LogicalService ===

impl<C> LogicalService<C>
where
    C: NewService<Concrete, Service = ConcreteService> + Clone + Send + Sync + 'static,
{
    /// Whether the controller serves this target (it knows the name or
    /// address, with or without endpoints). Waits at most
    /// [`DISCOVERY_TIMEOUT`] for the first answers, which a cached stack
    /// already has: then no timer is set at all.
    pub async fn discovered(&self) -> bool {
        let inner = &self.inner;
        let answered = !matches!(*inner.endpoints.borrow(), Resolution::Pending)
            && inner.profile.borrow().is_some()
            && inner.policy.borrow().is_some();
        if !answered {
            let (mut endpoints, mut profile, mut policy) = (
                inner.endpoints.clone(),
                inner.profile.clone(),
                inner.policy.clone(),
            );
            // The profile and policy are waited for too, so the first
            // request already follows the target's routes and splits.
            tokio::join!(
                first_answer(&mut endpoints, DISCOVERY_TIMEOUT, |r| {
                    *r != Resolution::Pending
                }),
                first_answer(&mut profile, DISCOVERY_TIMEOUT, Option::is_some),
                first_answer(&mut policy, DISCOVERY_TIMEOUT, Option::is_some),
            );
        }
        let served = matches!(*inner.endpoints.borrow(), Resolution::Endpoints(_));
        served
    }
}

impl<C> tower::Service<Request<BoxBody>> for LogicalService<C>
where
    C: NewService<Concrete, Service = ConcreteService> + Clone + Send + Sync + 'static,
{
    type Response = Response<BoxBody>;
    type Error = ProxyError;
    type Future = BoxResponse;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        // Which backend a request goes to depends on the request: each
        // attempt waits for its backend's readiness instead.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<BoxBody>) -> BoxResponse {
        let inner = &self.inner;
        let profile = inner
            .profile
            .borrow()
            .clone()
            .unwrap_or_else(|| inner.no_profile.clone());
        let policy = inner.policy.borrow().clone();
        let route = profile
            .routes
            .route_for(req.method(), req.uri().path())
            .clone();
        let dst: &Arc<str> = if profile.name.is_empty() {
            &inner.target.authority
        } else {
            &profile.name
        };
        let labels = inner.metrics.labels(Direction::Outbound, dst, &route.name);
        let routes = profile.routes.clone();
        let backends = Backends {
            logical: inner.clone(),
            profile,
            policy,
        };
        let route = HttpRoute::new(route, routes, labels, inner.metrics.clone(), backends);
        Box::pin(async move { Ok(route.serve(req).await) })
    }
}

// === impl Backends ===

impl<C> Clone for Backends<C> {
    fn clone(&self) -> Self {
        Self {
            logical: self.logical.clone(),
            profile: self.profile.clone(),
            policy: self.policy.clone(),
        }
    }
}

impl<C> Backends<C>
where
    C: NewService<Concrete, Service = ConcreteService>,
{
    /// The concrete stack this attempt goes to.
    fn choose<B>(&self, req: &Request<B>) -> ConcreteService {
        let logical = &self.logical;
        let matched = self
            .policy
            .as_deref()
            .filter(|p| !p.is_empty())
            .and_then(|p| p.backends(req.method(), req.uri(), req.headers()));
        let leaf = match matched {
            Some(backends) => pick_override(backends),
            None => pick_override(&self.profile.dst_overrides),
        };
        let Some(leaf) = leaf else {
            return logical.own.clone();
        };
        let authority: Arc<str> = if leaf.contains(':') {
            leaf.into()
        } else {
            format!("{leaf}:{}", logical.target.port()).into()
        };
        // The target itself, by the request's name or by the FQDN the
        // controller names it (the policy's catch-all backend).
        if authority == logical.target.authority || authority == self.profile.name {
            return logical.own.clone();
        }
        logical.concretes.new_service(Concrete { authority })
    }
}

impl<C> super::http_route::Backends for Backends<C>
where
    C: NewService<Concrete, Service = ConcreteService> + Send + Sync + 'static,
{
    fn send(&self, req: Request<BoxBody>) -> BoxResponse {
        let mut backend = self.choose(&req);
        // The backend's readiness (its queue) is waited for here, inside
        // the request: bounded by the queue's fail-fast timeout.
        Box::pin(async move {
            futures::future::poll_fn(|cx| tower::Service::poll_ready(&mut backend, cx)).await?;
            tower::Service::call(&mut backend, req).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::{Accrual, Strategy};
    use crate::metrics::Metrics;
    use weft_proxy_stack::{CacheConfig, NewCache};

    const API: &str = "api.shop.svc.cluster.local:80";

    fn logical() -> LogicalService<NewCache<Concrete, super::super::concrete::NewConcrete>> {
        let new_concrete =
            super::super::concrete::tests::new_concrete(Strategy::PeakEwma, Accrual::default());
        let discovery = new_concrete.discovery().clone();
        let concretes = NewCache::new(
            new_concrete,
            CacheConfig {
                idle: Duration::from_secs(60),
                capacity: 100,
            },
        );
        let metrics = Metrics::new(false, Default::default()).route;
        NewLogical::new(discovery, concretes, metrics).new_service(Logical {
            authority: API.into(),
        })
    }

    fn chosen<C>(backends: &Backends<C>) -> String
    where
        C: NewService<Concrete, Service = ConcreteService>,
    {
        let req = Request::get("http://api/").body(()).unwrap();
        backends.choose(&req).target().authority.to_string()
    }

    fn backends<C>(logical: &LogicalService<C>, overrides: &[(&str, u32)]) -> Backends<C> {
        Backends {
            logical: logical.inner.clone(),
            profile: Arc::new(Profile {
                name: API.into(),
                dst_overrides: overrides.iter().map(|(a, w)| (a.to_string(), *w)).collect(),
                ..Default::default()
            }),
            policy: None,
        }
    }

    #[tokio::test]
    async fn without_a_split_requests_go_to_the_target_itself() {
        let logical = logical();
        assert_eq!(chosen(&backends(&logical, &[])), API);
        // Every weight zero: no split in force.
        assert_eq!(chosen(&backends(&logical, &[("api-v2", 0)])), API);
    }

    #[tokio::test]
    async fn split_leaves_get_the_targets_port_and_their_own_stack() {
        let logical = logical();
        let split = backends(&logical, &[("api-v2.shop.svc.cluster.local", 1)]);
        assert_eq!(chosen(&split), "api-v2.shop.svc.cluster.local:80");
        let ported = backends(&logical, &[("api-v3.shop.svc.cluster.local:8080", 1)]);
        assert_eq!(chosen(&ported), "api-v3.shop.svc.cluster.local:8080");
    }

    #[tokio::test]
    async fn a_leaf_naming_the_target_itself_reuses_its_stack() {
        let logical = logical();
        let own = backends(&logical, &[("api.shop.svc.cluster.local", 1)]);
        let req = Request::get("http://api/").body(()).unwrap();
        let picked = own.choose(&req);
        assert_eq!(&*picked.target().authority, API);
        // The very same stack (shared queue and balancer), not a second one.
        assert!(Arc::ptr_eq(
            &picked.balance_state(),
            &logical.inner.own.balance_state()
        ));
    }

    #[tokio::test]
    async fn leaves_are_chosen_by_weight() {
        let logical = logical();
        let split = backends(&logical, &[("a.shop", 900), ("b.shop", 100)]);
        let picks: Vec<String> = (0..2000).map(|_| chosen(&split)).collect();
        let a = picks.iter().filter(|p| *p == "a.shop:80").count();
        assert_eq!(a + picks.iter().filter(|p| *p == "b.shop:80").count(), 2000);
        assert!((1700..=1900).contains(&a), "{a} of 2000 to the 90% leaf");
    }
}
