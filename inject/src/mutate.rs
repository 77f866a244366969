//! The injection mutation: what the webhook and `weft inject` do to a pod.
//!
//! (Contract written first so the webhook, the CLI and the tests can be
//! built against it; see `docs/injection.md` for the behaviour.)

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::values::Values;

/// Builds sidecars from one set of install values.
#[derive(Clone, Debug)]
pub struct Injector {
    values: Values,
    trust_anchors_pem: String,
    native_sidecar_supported: bool,
}

/// What the caller knows about the pod beyond its own object.
#[derive(Clone, Debug, Default)]
pub struct PodContext {
    /// The pod's namespace (admission requests carry it even when the pod
    /// object does not).
    pub namespace: String,
    /// The namespace's annotations (`linkerd.io/inject`,
    /// `config.linkerd.io/*` defaults for its pods).
    pub namespace_annotations: BTreeMap<String, String>,
    /// The workload that owns the pod, resolved through ReplicaSets
    /// (`deployment/web`), or `None` for a bare pod.
    pub owner: Option<Owner>,
}

/// A pod's owning workload, as its metrics label it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// Lower-case kind: `deployment`, `statefulset`, `daemonset`, `job`,
    /// `cronjob`, `replicaset`, `replicationcontroller`, ...
    pub kind: String,
    /// Its name.
    pub name: String,
}

/// How much `weft inject` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectMode {
    /// Only `linkerd.io/inject: enabled` on the pod template; the webhook
    /// does the rest when pods are created.
    Annotation,
    /// The whole sidecar, as the webhook would write it.
    Manual,
}

/// The result of [`Injector::inject`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The pod now has the proxy. Malformed `config.linkerd.io/*` values
    /// were replaced by defaults, one warning each.
    Injected {
        /// One per annotation whose value was not used.
        warnings: Vec<AnnotationWarning>,
    },
    /// The pod was left unchanged, for this reason.
    Skipped(Skip),
}

/// An annotation whose value could not be used (the default was).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnotationWarning {
    /// The annotation key, e.g. `config.linkerd.io/proxy-cpu-request`.
    pub annotation: String,
    /// The value that was refused.
    pub value: String,
    /// Why, and what was used instead.
    pub reason: String,
}

/// Why a pod was not injected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Neither the pod nor its namespace asks for injection.
    NotEnabled,
    /// `linkerd.io/inject: disabled` on the pod or namespace.
    Disabled,
    /// `linkerd.io/inject` has a value other than enabled/disabled/ingress.
    InvalidAnnotation(String),
    /// The pod uses the host's network: a redirect would capture the node.
    HostNetwork,
    /// The pod already has a `weft-proxy` container (or a Linkerd proxy).
    AlreadyInjected,
    /// The pod belongs to the Weft control plane.
    ControlPlane,
}

// === impl Injector ===

impl Injector {
    /// An injector for `values` (already [`Values::finish`]ed). Proxies get
    /// `trust_anchors_pem` inline (a pod cannot mount the control plane's
    /// ConfigMap from another namespace); `native_sidecar_supported` says
    /// whether the API server runs sidecar init containers (1.29+), which
    /// `proxy.nativeSidecar: auto` follows.
    pub fn new(values: Values, trust_anchors_pem: String, native_sidecar_supported: bool) -> Self {
        Self {
            values,
            trust_anchors_pem,
            native_sidecar_supported,
        }
    }

    /// Injects the proxy into a pod (or pod template) in place, or says why
    /// not. Never fails: malformed `config.linkerd.io/*` values fall back to
    /// defaults and are reported in [`Outcome::Injected`].
    pub fn inject(&self, meta: &mut ObjectMeta, spec: &mut PodSpec, ctx: &PodContext) -> Outcome {
        let _ = (meta, spec, ctx, &self.values, &self.trust_anchors_pem, self.native_sidecar_supported);
        todo!("helper A: the mutation")
    }
}

/// Removes everything [`Injector::inject`] added (and the
/// `linkerd.io/inject` annotation), so `uninject(inject(x)) == x`. Returns
/// whether anything changed.
pub fn uninject(meta: &mut ObjectMeta, spec: &mut PodSpec) -> bool {
    let _ = (meta, spec);
    todo!("helper A: the inverse")
}
