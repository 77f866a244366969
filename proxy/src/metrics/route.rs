//! Per-route metrics with Linkerd's names.
//!
//! `route_*` families describe requests as the caller saw them (one per
//! request, whatever retries happened, latency including retries and
//! timeouts); `route_actual_*` describe each attempt sent upstream. The
//! difference between the two is what retries cost and what they bought.
//! `route_retryable_total` counts failures on retryable routes, with
//! `skipped` saying why one was not retried.

use super::{Direction, LATENCY_BUCKETS_MS, OVERFLOW_AUTHORITY};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Distinct route label sets kept before new `dst` values are folded into
/// `overflow` (route names are bounded by profiles; names by this).
pub const MAX_ROUTE_SERIES: usize = 2000;

/// Labels shared by every route metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// `outbound` (routes apply where requests are sent).
    pub direction: &'static str,
    /// The service's name and port as the profile names it.
    pub dst: Arc<str>,
    /// The route's name, or `[DEFAULT]` for requests no route covers.
    pub rt_route: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResponseLabels {
    #[prometheus(flatten)]
    route: RouteLabels,
    status_code: u16,
    classification: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    #[prometheus(flatten)]
    route: RouteLabels,
    status_code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetryableLabels {
    #[prometheus(flatten)]
    route: RouteLabels,
    skipped: &'static str,
}

/// Why a failed request on a retryable route was not retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skipped {
    /// It was retried.
    No,
    /// The retry budget was spent.
    NoBudget,
    /// The request body was too large to keep (over 64 KiB).
    BodyTooLarge,
    /// The request already used every attempt allowed.
    MaxAttempts,
}

/// One set of request/response/latency families.
#[derive(Clone)]
struct Families {
    requests: Family<RouteLabels, Counter>,
    responses: Family<ResponseLabels, Counter>,
    latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
}

/// The route metric families (cheap to clone: families are shared).
#[derive(Clone)]
pub struct RouteMetrics {
    effective: Families,
    actual: Families,
    retryable: Family<RetryableLabels, Counter>,
    series: Arc<AtomicUsize>,
}

// === impl Skipped ===

impl Skipped {
    /// The `skipped` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Skipped::No => "false",
            Skipped::NoBudget => "no_budget",
            Skipped::BodyTooLarge => "body_too_large",
            Skipped::MaxAttempts => "max_attempts",
        }
    }
}

// === impl Families ===

impl Families {
    fn new() -> Self {
        Self {
            requests: Family::default(),
            responses: Family::default(),
            latency: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS_MS)),
        }
    }

    fn register(&self, registry: &mut Registry, prefix: &str, what: &str) {
        registry.register(
            format!("{prefix}request"),
            format!("Total count of HTTP requests per route ({what})"),
            self.requests.clone(),
        );
        registry.register(
            format!("{prefix}response"),
            format!("Total count of HTTP responses per route ({what})"),
            self.responses.clone(),
        );
        registry.register(
            format!("{prefix}response_latency_ms"),
            format!("Time to response headers per route ({what})"),
            self.latency.clone(),
        );
    }
}

// === impl RouteMetrics ===

impl RouteMetrics {
    /// Creates the families and registers them under Linkerd's names.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self {
            effective: Families::new(),
            actual: Families::new(),
            retryable: Family::default(),
            series: Arc::default(),
        };
        metrics
            .effective
            .register(registry, "route_", "as the caller saw them");
        metrics
            .actual
            .register(registry, "route_actual_", "each attempt sent");
        registry.register(
            "route_retryable",
            "Failed requests on retryable routes; skipped says why one was not retried",
            metrics.retryable.clone(),
        );
        metrics
    }

    /// Labels for a route of `dst`, folding `dst` into `overflow` once too
    /// many label sets have been seen.
    pub fn labels(&self, direction: Direction, dst: &Arc<str>, route: &Arc<str>) -> RouteLabels {
        let labels = RouteLabels {
            direction: direction.as_str(),
            dst: dst.clone(),
            rt_route: route.clone(),
        };
        if self.effective.requests.get(&labels).is_some()
            || self.series.fetch_add(1, Ordering::Relaxed) < MAX_ROUTE_SERIES
        {
            labels
        } else {
            RouteLabels {
                dst: OVERFLOW_AUTHORITY.into(),
                ..labels
            }
        }
    }

    fn families(&self, actual: bool) -> &Families {
        if actual {
            &self.actual
        } else {
            &self.effective
        }
    }

    /// Counts a request (`actual`: an attempt sent upstream).
    pub fn request(&self, labels: &RouteLabels, actual: bool) {
        self.families(actual).requests.get_or_create(labels).inc();
    }

    /// Records the time to response headers.
    pub fn latency(&self, labels: &RouteLabels, status: u16, elapsed_ms: f64, actual: bool) {
        let l = LatencyLabels {
            route: labels.clone(),
            status_code: status,
        };
        self.families(actual)
            .latency
            .get_or_create(&l)
            .observe(elapsed_ms);
    }

    /// Counts a finished response with its classification.
    pub fn response(&self, labels: &RouteLabels, status: u16, success: bool, actual: bool) {
        let l = ResponseLabels {
            route: labels.clone(),
            status_code: status,
            classification: if success { "success" } else { "failure" },
        };
        self.families(actual).responses.get_or_create(&l).inc();
    }

    /// Counts a failure on a retryable route.
    pub fn retryable(&self, labels: &RouteLabels, skipped: Skipped) {
        let l = RetryableLabels {
            route: labels.clone(),
            skipped: skipped.as_str(),
        };
        self.retryable.get_or_create(&l).inc();
    }
}
