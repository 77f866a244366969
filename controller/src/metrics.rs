//! The controller's Prometheus metrics, served on the admin `/metrics`.
//!
//! Operators alert on certification failures and on CA expiry, so those are
//! what is counted: every `Certify` by result (the gRPC status it ended
//! with), issuer reloads, and the expiry times of the issuer and of the
//! controller's own certificate. The proxy injector adds its
//! `proxy_inject_admission_*` families ([`crate::inject::metrics`]).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// How a `Certify` call ended: `ok` or the gRPC status code's name in
/// snake case (`invalid_argument`, `unauthenticated`,
/// `failed_precondition`, `unavailable`, `internal`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertifyLabels {
    /// The outcome.
    pub result: &'static str,
}

/// Labels of `identity_issuer_reload_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// Every metric the controller exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// `identity_certify_total{result}`.
    pub certify: Family<CertifyLabels, Counter>,
    /// `identity_issuer_reload_total{result}`.
    pub issuer_reload: Family<ReloadLabels, Counter>,
    /// `identity_issuer_expiry_timestamp_seconds`.
    pub issuer_expiry: Gauge,
    /// `identity_controller_cert_expiry_timestamp_seconds`.
    pub controller_cert_expiry: Gauge,
    /// `identity_controller_cert_refresh_total{result}`.
    pub controller_cert_refresh: Family<ReloadLabels, Counter>,
    /// The proxy injector's `proxy_inject_admission_*` families.
    pub inject: crate::inject::metrics::InjectMetrics,
}

impl Metrics {
    /// Registers all metrics in a fresh registry.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let certify = Family::<CertifyLabels, Counter>::default();
        registry.register(
            "identity_certify",
            "Certify requests by result (ok or the gRPC status returned)",
            certify.clone(),
        );
        let issuer_reload = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "identity_issuer_reload",
            "Attempts to load changed issuer files, by result",
            issuer_reload.clone(),
        );
        let issuer_expiry = Gauge::default();
        registry.register(
            "identity_issuer_expiry_timestamp_seconds",
            "notAfter of the issuer in use, as a Unix timestamp",
            issuer_expiry.clone(),
        );
        let controller_cert_expiry = Gauge::default();
        registry.register(
            "identity_controller_cert_expiry_timestamp_seconds",
            "notAfter of the controller's own serving certificate, as a Unix timestamp",
            controller_cert_expiry.clone(),
        );
        let controller_cert_refresh = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "identity_controller_cert_refresh",
            "Issuing of the controller's own serving certificate, by result",
            controller_cert_refresh.clone(),
        );
        let inject = crate::inject::metrics::InjectMetrics::register(&mut registry);
        // Every outcome is exported from the start, so rates work at once.
        for result in [
            "ok",
            "invalid_argument",
            "unauthenticated",
            "failed_precondition",
            "unavailable",
            "internal",
        ] {
            let _ = certify.get_or_create(&CertifyLabels { result });
        }
        Self {
            registry: Arc::new(registry),
            certify,
            issuer_reload,
            issuer_expiry,
            controller_cert_expiry,
            controller_cert_refresh,
            inject,
        }
    }

    /// Counts one `Certify` outcome.
    pub fn certify_result(&self, result: &'static str) {
        self.certify.get_or_create(&CertifyLabels { result }).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(%error, "encoding metrics failed");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Seconds since the Unix epoch, for expiry gauges.
pub fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
