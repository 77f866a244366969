//! ServiceProfile routes: what the proxy does per route of a service.
//!
//! A profile lists routes, each a condition on the request (method, path
//! regex, and/or/not). The first route whose condition holds applies; a
//! request no route covers gets the default route. A route decides
//!
//! - how responses are classified ([`condition::ResponseClasses`]),
//! - how long the caller waits at most (`timeout`, retries included),
//! - whether failed requests are retried (`isRetryable`), within the
//!   profile's **retry budget**: every original request deposits a token,
//!   every retry withdraws one, tokens expire after `ttl`, so retries stay
//!   under `retryRatio` of the traffic plus a floor of
//!   `minRetriesPerSecond` — a failing service is never hit by a retry
//!   storm.
//!
//! [`replay`] keeps request bodies (up to 64 KiB) so they can be resent.
//! The retry loop itself lives on the outbound side, which owns sending.
//!
//! [`matching`] is the other kind of route: the policy API's HTTP routes
//! (Gateway API matches on hosts, path, headers, query parameters and
//! method), shared by the outbound policy and inbound authorization.

pub mod condition;
pub mod matching;
pub mod replay;

use condition::{RequestCondition, ResponseClasses};
use http::Method;
use linkerd2_proxy_api::destination as api;
use std::sync::Arc;
use std::time::Duration;
use tower::retry::budget::{Budget, TpsBudget};

/// The `rt_route` label of requests no profile route covers.
pub const DEFAULT_ROUTE: &str = "[DEFAULT]";

/// Linkerd's default retry budget: 20 % extra load, 10 retries a second
/// regardless, tokens live 10 s.
const DEFAULT_RETRY_RATIO: f32 = 0.2;
const DEFAULT_MIN_RETRIES_PER_SECOND: u32 = 10;
const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// One route of a profile, compiled.
#[derive(Debug)]
pub struct Route {
    /// The route's name (`rt_route` label).
    pub name: Arc<str>,
    condition: Option<RequestCondition>,
    /// How its responses are classified.
    pub classes: Arc<ResponseClasses>,
    /// Failed requests may be retried (within the budget).
    pub retryable: bool,
    /// The longest a caller waits for response headers, retries included.
    pub timeout: Option<Duration>,
}

/// A service's routes and retry budget, as the proxy applies them.
#[derive(Debug)]
pub struct RoutePolicy {
    routes: Vec<Arc<Route>>,
    default: Arc<Route>,
    budget: Arc<RetryBudget>,
}

/// The retry budget of one profile, shared by all its routes and kept
/// across profile updates that do not change it (so an update does not
/// hand out a fresh reserve of retries).
#[derive(Debug)]
pub struct RetryBudget {
    params: BudgetParams,
    tokens: TpsBudget,
}

/// A budget's configuration, after clamping to what is meaningful.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BudgetParams {
    /// Retries allowed per original request (0.2 = 20 %).
    pub ratio: f32,
    /// Retries allowed per second regardless of traffic.
    pub min_per_second: u32,
    /// How long a deposit counts.
    pub ttl: Duration,
}

// === impl RoutePolicy ===

impl RoutePolicy {
    /// Compiles a profile's routes and budget. A route whose condition does
    /// not compile (the controller validates, but another controller may
    /// not) is dropped with a warning rather than matching everything.
    /// `previous` is the policy being replaced: its budget is kept if the
    /// new one has the same parameters.
    pub fn compile(
        routes: &[api::Route],
        budget: Option<&api::RetryBudget>,
        previous: Option<&RoutePolicy>,
    ) -> Self {
        let routes = routes
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let name: Arc<str> = r
                    .metrics_labels
                    .get("route")
                    .map_or_else(|| format!("route-{i}"), Clone::clone)
                    .into();
                let condition = match r.condition.as_ref().map(RequestCondition::compile) {
                    None => None,
                    Some(Ok(c)) => Some(c),
                    Some(Err(error)) => {
                        tracing::warn!(route = %name, %error, "ignoring profile route");
                        return None;
                    }
                };
                Some(Arc::new(Route {
                    name,
                    condition,
                    classes: Arc::new(ResponseClasses::compile(&r.response_classes)),
                    retryable: r.is_retryable,
                    timeout: r
                        .timeout
                        .and_then(|t| Duration::try_from(t).ok())
                        .filter(|t| !t.is_zero()),
                }))
            })
            .collect();
        let params = BudgetParams::from_wire(budget);
        let budget = match previous {
            Some(p) if p.budget.params == params => p.budget.clone(),
            _ => Arc::new(RetryBudget::new(params)),
        };
        Self {
            routes,
            default: Arc::new(Route::default_route()),
            budget,
        }
    }

    /// The route for a request: the first whose condition holds, else the
    /// default route.
    pub fn route_for(&self, method: &Method, path: &str) -> &Arc<Route> {
        self.routes
            .iter()
            .find(|r| {
                r.condition
                    .as_ref()
                    .is_some_and(|c| c.matches(method, path))
            })
            .unwrap_or(&self.default)
    }

    /// The profile's retry budget.
    pub fn budget(&self) -> &RetryBudget {
        &self.budget
    }
}

impl Default for RoutePolicy {
    fn default() -> Self {
        Self::compile(&[], None, None)
    }
}

impl PartialEq for RoutePolicy {
    /// Policies are compared by identity: each profile update compiles a
    /// new one.
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

// === impl Route ===

impl Route {
    fn default_route() -> Self {
        Self {
            name: DEFAULT_ROUTE.into(),
            condition: None,
            classes: Arc::default(),
            retryable: false,
            timeout: None,
        }
    }
}

// === impl RetryBudget ===

impl RetryBudget {
    /// A full budget with these parameters.
    pub fn new(params: BudgetParams) -> Self {
        Self {
            params,
            tokens: TpsBudget::new(params.ttl, params.min_per_second, params.ratio),
        }
    }

    /// Records an original request (earns retry credit).
    pub fn deposit(&self) {
        self.tokens.deposit();
    }

    /// Takes the credit for one retry; false if the budget is spent.
    pub fn withdraw(&self) -> bool {
        self.tokens.withdraw()
    }
}

// === impl BudgetParams ===

impl BudgetParams {
    /// Reads a wire budget, clamping to the ranges the token bucket
    /// supports: `ttl` 1–60 s, ratio 0–1000. No budget: Linkerd's default.
    pub fn from_wire(budget: Option<&api::RetryBudget>) -> Self {
        let Some(b) = budget else {
            return Self::default();
        };
        let ttl = b
            .ttl
            .and_then(|t| Duration::try_from(t).ok())
            .unwrap_or(DEFAULT_TTL)
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        let ratio = if b.retry_ratio.is_finite() {
            b.retry_ratio.clamp(0.0, 1000.0)
        } else {
            0.0
        };
        Self {
            ratio,
            min_per_second: b.min_retries_per_second.min(i32::MAX as u32 - 1),
            ttl,
        }
    }
}

impl Default for BudgetParams {
    fn default() -> Self {
        Self {
            ratio: DEFAULT_RETRY_RATIO,
            min_per_second: DEFAULT_MIN_RETRIES_PER_SECOND,
            ttl: DEFAULT_TTL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn route(name: &str, regex: &str) -> api::Route {
        api::Route {
            condition: Some(api::RequestMatch {
                r#match: Some(api::request_match::Match::Path(api::PathMatch {
                    regex: regex.into(),
                })),
            }),
            metrics_labels: HashMap::from([("route".to_string(), name.to_string())]),
            is_retryable: true,
            timeout: Some(prost_types::Duration {
                seconds: 0,
                nanos: 250_000_000,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn first_match_wins_and_unmatched_get_the_default() {
        let p = RoutePolicy::compile(
            &[
                route("one", "/a/.*"),
                route("two", "/a/b"),
                route("bad", "/("),
            ],
            None,
            None,
        );
        let r = p.route_for(&Method::GET, "/a/b");
        assert_eq!(&*r.name, "one");
        assert!(r.retryable);
        assert_eq!(r.timeout, Some(Duration::from_millis(250)));
        let d = p.route_for(&Method::GET, "/(");
        assert_eq!(&*d.name, DEFAULT_ROUTE);
        assert!(!d.retryable && d.timeout.is_none());
    }

    #[test]
    fn budgets_are_clamped_and_kept_across_equal_updates() {
        let wire = api::RetryBudget {
            retry_ratio: f32::NAN,
            min_retries_per_second: 5,
            ttl: Some(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
        };
        let params = BudgetParams::from_wire(Some(&wire));
        assert_eq!(params.ratio, 0.0);
        assert_eq!(params.ttl, Duration::from_secs(60));
        assert_eq!(BudgetParams::from_wire(None), BudgetParams::default());

        let first = RoutePolicy::compile(&[], Some(&wire), None);
        let same = RoutePolicy::compile(&[route("x", "/")], Some(&wire), Some(&first));
        assert!(Arc::ptr_eq(&first.budget, &same.budget));
        let other = RoutePolicy::compile(&[], None, Some(&same));
        assert!(!Arc::ptr_eq(&other.budget, &same.budget));
    }

    #[test]
    fn the_budget_limits_retries() {
        let b = RetryBudget::new(BudgetParams {
            ratio: 0.5,
            min_per_second: 0,
            ttl: Duration::from_secs(10),
        });
        assert!(!b.withdraw());
        for _ in 0..10 {
            b.deposit();
        }
        let mut retries = 0;
        while b.withdraw() {
            retries += 1;
            assert!(retries < 100);
        }
        assert_eq!(retries, 5);
    }
}
