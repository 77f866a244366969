//! The injector's Prometheus metrics, named and labelled as Linkerd's
//! proxy injector labels them, so dashboards and alerts written for
//! Linkerd keep working:
//!
//! - `proxy_inject_admission_requests_total{owner_kind, namespace}`: every
//!   Pod admission request the injector looked at;
//! - `proxy_inject_admission_responses_total{owner_kind, namespace, skip,
//!   skip_reason}`: what it answered (`skip="false"` with an empty reason
//!   when it injected);
//! - `proxy_inject_admission_errors_total{reason}`: requests it admitted
//!   unchanged because of its own error (bad JSON, a failed lookup, a patch
//!   that would not apply). An operator alerts on this one: a non-zero rate
//!   means pods are starting without proxies.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Labels of `proxy_inject_admission_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Lower-case kind of the pod's workload (`deployment`, `job`, ...), or
    /// `pod` for a bare pod.
    pub owner_kind: String,
    /// The pod's namespace.
    pub namespace: String,
}

/// Labels of `proxy_inject_admission_responses_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResponseLabels {
    /// As in [`RequestLabels`].
    pub owner_kind: String,
    /// As in [`RequestLabels`].
    pub namespace: String,
    /// `"true"` when the pod was left without a proxy.
    pub skip: &'static str,
    /// Why (Linkerd's reason names, see `docs/injection.md`); empty when
    /// injected.
    pub skip_reason: &'static str,
}

/// Labels of `proxy_inject_admission_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// What failed: `decode`, `namespace_lookup`, `owner_lookup`,
    /// `mutation` or `patch`.
    pub reason: &'static str,
}

/// Every reason [`ErrorLabels`] can carry, exported at zero from the start
/// so `rate()` works before the first error.
pub const ERROR_REASONS: [&str; 5] = [
    "decode",
    "namespace_lookup",
    "owner_lookup",
    "mutation",
    "patch",
];

/// The injector's metric families; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct InjectMetrics {
    /// `proxy_inject_admission_requests_total`.
    pub requests: Family<RequestLabels, Counter>,
    /// `proxy_inject_admission_responses_total`.
    pub responses: Family<ResponseLabels, Counter>,
    /// `proxy_inject_admission_errors_total`.
    pub errors: Family<ErrorLabels, Counter>,
}

// === impl InjectMetrics ===

impl InjectMetrics {
    /// Registers the families in `registry` (the controller's, served on
    /// the admin `/metrics`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "proxy_inject_admission_requests",
            "Pod admission requests seen by the proxy injector",
            m.requests.clone(),
        );
        registry.register(
            "proxy_inject_admission_responses",
            "Admission responses of the proxy injector, by whether (and why) injection was skipped",
            m.responses.clone(),
        );
        registry.register(
            "proxy_inject_admission_errors",
            "Admission requests the proxy injector admitted unchanged because of its own error",
            m.errors.clone(),
        );
        for reason in ERROR_REASONS {
            let _ = m.errors.get_or_create(&ErrorLabels { reason });
        }
        m
    }

    /// Counts one request about a pod of `owner_kind` in `namespace`.
    pub fn request(&self, owner_kind: &str, namespace: &str) {
        self.requests
            .get_or_create(&RequestLabels {
                owner_kind: owner_kind.to_owned(),
                namespace: namespace.to_owned(),
            })
            .inc();
    }

    /// Counts one response; `skip_reason` `None` means injected.
    pub fn response(&self, owner_kind: &str, namespace: &str, skip_reason: Option<&'static str>) {
        self.responses
            .get_or_create(&ResponseLabels {
                owner_kind: owner_kind.to_owned(),
                namespace: namespace.to_owned(),
                skip: if skip_reason.is_some() {
                    "true"
                } else {
                    "false"
                },
                skip_reason: skip_reason.unwrap_or_default(),
            })
            .inc();
    }

    /// Counts one error of the injector itself.
    pub fn error(&self, reason: &'static str) {
        self.errors.get_or_create(&ErrorLabels { reason }).inc();
    }
}

#[cfg(test)]
impl InjectMetrics {
    /// The errors counter for `reason` (tests).
    pub fn error_count(&self, reason: &'static str) -> u64 {
        self.errors.get_or_create(&ErrorLabels { reason }).get()
    }
}
