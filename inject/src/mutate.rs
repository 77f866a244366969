//! The injection mutation: what the webhook and `weft inject` do to a pod.
//!
//! One code path for both callers, so a pod injected by `weft inject
//! --manual` is byte-for-byte the pod the webhook would have produced from
//! the same input. `docs/injection.md` is the operator's view of what is
//! written here; keep the two in step.
//!
//! The mutation is split in three steps:
//!
//! 1. [`skip_reason`]: should this pod get a proxy at all?
//! 2. [`config`]: which settings apply, from the pod's `config.linkerd.io/*`
//!    annotations, else its namespace's, else the install values; every
//!    malformed value becomes a default plus an [`AnnotationWarning`].
//! 3. [`Injector::inject`] writes the containers, volumes, annotations and
//!    labels; [`uninject`] removes exactly those again.

mod config;
mod containers;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::names;
use crate::values::Values;

pub use config::{ProxyConfig, CONFIG_ANNOTATIONS};
pub use containers::inbound_ports;

/// Name of the projected ServiceAccount token volume the proxy presents to
/// the identity service.
pub const IDENTITY_TOKEN_VOLUME: &str = "weft-identity-token";
/// Where the proxy mounts [`IDENTITY_TOKEN_VOLUME`].
pub const IDENTITY_TOKEN_DIR: &str = "/var/run/weft/identity";
/// File of the token inside [`IDENTITY_TOKEN_DIR`].
pub const IDENTITY_TOKEN_FILE: &str = "token";
/// Audience of the projected token (Linkerd's, so tokens are only good for
/// the identity service).
pub const IDENTITY_TOKEN_AUDIENCE: &str = "identity.l5d.io";
/// Lifetime of the projected token (the kubelet refreshes it).
pub const IDENTITY_TOKEN_EXPIRATION_SECONDS: i64 = 86_400;
/// The emptyDir `weft-init` mounts at `/run`: iptables takes its
/// `xtables.lock` there, and the root filesystem is read-only.
pub const XTABLES_LOCK_VOLUME: &str = "weft-init-xtables-lock";
/// Pod label: the namespace of the workload, as Linkerd sets it.
pub const WORKLOAD_NS_LABEL: &str = "linkerd.io/workload-ns";
/// Pod annotation written only when inject overwrote something that was
/// already there (a same-named annotation or label, `shareProcessNamespace`):
/// what it was, so [`uninject`] can put it back exactly.
pub const RESTORE_ANNOTATION: &str = "weft.io/uninject";
/// Proxy env var: exit once the app containers have exited (Jobs on
/// clusters without native sidecars).
pub const EXIT_WITH_APP_ENV: &str = "WEFT_PROXY_EXIT_WITH_APP";

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

/// The value of `linkerd.io/inject` that decided a pod is injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InjectValue {
    Enabled,
    Ingress,
}

// === impl Skip ===

impl Skip {
    /// Human text for the admission response, the `InjectionSkipped` Event
    /// and `weft inject`'s report (Linkerd's wording where it has one).
    pub fn reason(&self) -> String {
        match self {
            Skip::NotEnabled => format!(
                "neither the namespace nor the pod have the annotation \"{}:enabled\"",
                names::INJECT_ANNOTATION
            ),
            Skip::Disabled => format!(
                "the pod or its namespace has the annotation \"{}:disabled\"",
                names::INJECT_ANNOTATION
            ),
            Skip::InvalidAnnotation(value) => format!(
                "invalid value {value:?} for annotation \"{}\" (expected enabled, disabled or ingress)",
                names::INJECT_ANNOTATION
            ),
            Skip::HostNetwork => "hostNetwork is enabled".into(),
            Skip::AlreadyInjected => "pod has a sidecar injected already".into(),
            Skip::ControlPlane => format!(
                "pod is part of the control plane (label \"{}\")",
                names::CONTROL_PLANE_COMPONENT_LABEL
            ),
        }
    }

    /// The `skip_reason` label of `proxy_inject_admission_responses_total`:
    /// Linkerd's values, so dashboards built for Linkerd keep working.
    /// (Linkerd splits invalid values into `..._at_workload` and `..._at_ns`;
    /// Weft judges only the value that applies, so it has one label.
    /// Linkerd has no control-plane skip: its webhook objectSelector keeps
    /// those pods away, and so does Weft's, this is the backstop.)
    pub fn label(&self) -> &'static str {
        match self {
            Skip::NotEnabled => "injection_enable_annotation_absent",
            Skip::Disabled => "injection_disable_annotation_present",
            Skip::InvalidAnnotation(_) => "invalid_inject_annotation",
            Skip::HostNetwork => "host_network_enabled",
            Skip::AlreadyInjected => "sidecar_already_exists",
            Skip::ControlPlane => "control_plane_component",
        }
    }
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason())
    }
}

/// Why `pod` must not be injected, or `None` if it should be.
///
/// Checked in this order, so a pod that fails several checks always
/// reports the same one: control plane, hostNetwork, an existing proxy,
/// then `linkerd.io/inject` (the pod's value if it has one, else the
/// namespace's; only that value is judged).
pub fn skip_reason(meta: &ObjectMeta, spec: &PodSpec, ctx: &PodContext) -> Option<Skip> {
    decide(meta, spec, ctx).err()
}

fn decide(meta: &ObjectMeta, spec: &PodSpec, ctx: &PodContext) -> Result<InjectValue, Skip> {
    let has_label = meta
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(names::CONTROL_PLANE_COMPONENT_LABEL));
    if has_label {
        return Err(Skip::ControlPlane);
    }
    if spec.host_network == Some(true) {
        return Err(Skip::HostNetwork);
    }
    if has_proxy(spec) {
        return Err(Skip::AlreadyInjected);
    }
    let on_pod = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(names::INJECT_ANNOTATION));
    match on_pod.or_else(|| ctx.namespace_annotations.get(names::INJECT_ANNOTATION)) {
        None => Err(Skip::NotEnabled),
        Some(v) => match v.as_str() {
            "enabled" => Ok(InjectValue::Enabled),
            "ingress" => Ok(InjectValue::Ingress),
            "disabled" => Err(Skip::Disabled),
            other => Err(Skip::InvalidAnnotation(other.to_owned())),
        },
    }
}

/// Containers that mean "this pod is meshed already": ours, and Linkerd's
/// (two proxies in one pod would fight over the iptables redirect).
const PROXY_NAMES: &[&str] = &[names::PROXY_CONTAINER, "linkerd-proxy"];

fn has_proxy(spec: &PodSpec) -> bool {
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| PROXY_NAMES.contains(&c.name.as_str()))
}

/// The first Kubernetes minor version (1.x) that runs sidecar init
/// containers (`restartPolicy: Always`) by default.
pub const NATIVE_SIDECAR_MINOR: u32 = 29;

/// Whether an API server reporting `major.minor` (its `/version`) runs
/// native sidecars. Minor versions may carry a suffix (`"29+"` on some
/// distributions). The webhook and `weft inject --manual` both ask this.
pub fn native_sidecars_supported(major: &str, minor: &str) -> bool {
    let digits = |s: &str| -> Option<u32> {
        let d: String = s.chars().take_while(char::is_ascii_digit).collect();
        d.parse().ok()
    };
    match (digits(major), digits(minor)) {
        (Some(1), Some(minor)) => minor >= NATIVE_SIDECAR_MINOR,
        (Some(major), _) => major > 1,
        _ => false,
    }
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

    /// The install values this injector builds from.
    pub fn values(&self) -> &Values {
        &self.values
    }

    /// The settings that apply to this pod, and a warning per malformed
    /// annotation, without changing anything (what `inject` would use).
    pub fn config(
        &self,
        meta: &ObjectMeta,
        ctx: &PodContext,
    ) -> (ProxyConfig, Vec<AnnotationWarning>) {
        config::resolve(&self.values, self.native_sidecar_supported, meta, ctx)
    }

    /// Injects the proxy into a pod (or pod template) in place, or says why
    /// not. Never fails: malformed `config.linkerd.io/*` values fall back to
    /// defaults and are reported in [`Outcome::Injected`].
    pub fn inject(&self, meta: &mut ObjectMeta, spec: &mut PodSpec, ctx: &PodContext) -> Outcome {
        if let Err(skip) = decide(meta, spec, ctx) {
            return Outcome::Skipped(skip);
        }
        let (cfg, warnings) = self.config(meta, ctx);
        let mut restore = Restore::default();

        // Jobs must complete: without a native sidecar, the proxy watches
        // the app's processes (shared pid namespace) and exits after them.
        let exit_with_app = !cfg.native_sidecar && runs_to_completion(spec, ctx);
        let build = containers::Build {
            values: &self.values,
            cfg: &cfg,
            trust_anchors_pem: &self.trust_anchors_pem,
            owner: ctx.owner.as_ref(),
            exit_with_app,
            inbound_ports: containers::inbound_ports(spec),
        };

        let init = spec.init_containers.get_or_insert_with(Vec::new);
        init.insert(0, build.init_container());
        if cfg.native_sidecar {
            init.insert(1, build.proxy_container());
        } else {
            spec.containers.insert(0, build.proxy_container());
        }
        let volumes = spec.volumes.get_or_insert_with(Vec::new);
        volumes.push(containers::xtables_lock_volume());
        volumes.push(containers::identity_token_volume());
        if exit_with_app && spec.share_process_namespace != Some(true) {
            if let Some(prior) = spec.share_process_namespace {
                restore.share_process_namespace = Some(prior);
            }
            spec.share_process_namespace = Some(true);
        } else if exit_with_app {
            restore.share_process_namespace = Some(true);
        }

        let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
        for (key, value) in [
            (
                names::PROXY_VERSION_ANNOTATION,
                self.values.image.tag.clone(),
            ),
            (names::CREATED_BY_ANNOTATION, created_by()),
            (names::IDENTITY_MODE_ANNOTATION, "default".to_owned()),
        ] {
            if let Some(prior) = annotations.insert(key.to_owned(), value) {
                restore.annotations.insert(key.to_owned(), prior);
            }
        }
        let labels = meta.labels.get_or_insert_with(BTreeMap::new);
        let mut added_labels = vec![(names::CONTROL_PLANE_NS_LABEL, names::NAMESPACE.to_owned())];
        if !ctx.namespace.is_empty() {
            added_labels.push((WORKLOAD_NS_LABEL, ctx.namespace.clone()));
        }
        for (key, value) in added_labels {
            if let Some(prior) = labels.insert(key.to_owned(), value) {
                restore.labels.insert(key.to_owned(), prior);
            }
        }
        if restore != Restore::default() {
            // Serializing maps of strings cannot fail.
            let text = serde_json::to_string(&restore).unwrap_or_default();
            annotations.insert(RESTORE_ANNOTATION.to_owned(), text);
        }
        Outcome::Injected { warnings }
    }
}

/// `linkerd.io/created-by`: the same for the webhook and the CLI, so their
/// outputs compare equal.
fn created_by() -> String {
    format!("weft/weft-inject {}", env!("CARGO_PKG_VERSION"))
}

/// A pod that is meant to finish: owned by a Job or CronJob, or one whose
/// restartPolicy says it runs to completion (a bare `kubectl run
/// --restart=Never` pod must not hang in Running because of its proxy).
fn runs_to_completion(spec: &PodSpec, ctx: &PodContext) -> bool {
    let job_owner = ctx
        .owner
        .as_ref()
        .is_some_and(|o| o.kind == "job" || o.kind == "cronjob");
    let finite = matches!(spec.restart_policy.as_deref(), Some("Never" | "OnFailure"));
    job_owner || finite
}

/// What inject overwrote, stored in [`RESTORE_ANNOTATION`] only when there
/// is something (most pods never get it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Restore {
    /// Annotations inject replaced, with their earlier values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
    /// Labels inject replaced, with their earlier values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
    /// The pod's `shareProcessNamespace` before inject, when it was set
    /// (unset and turned on by inject is the case without a record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    share_process_namespace: Option<bool>,
}

/// Removes everything [`Injector::inject`] added, so `uninject(inject(x))
/// == x`. On a pod without a proxy it removes the `linkerd.io/inject`
/// annotation instead (undoing `weft inject` without `--manual`); on an
/// injected pod that annotation is the user's own and stays. Returns
/// whether anything changed.
pub fn uninject(meta: &mut ObjectMeta, spec: &mut PodSpec) -> bool {
    let injected = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| c.name == names::PROXY_CONTAINER);
    if !injected {
        let removed = meta
            .annotations
            .as_mut()
            .is_some_and(|a| a.remove(names::INJECT_ANNOTATION).is_some());
        if removed {
            normalize_meta(meta);
        }
        return removed;
    }

    let restore: Restore = meta
        .annotations
        .as_mut()
        .and_then(|a| a.remove(RESTORE_ANNOTATION))
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();

    // The proxy tells whether inject turned shareProcessNamespace on.
    let proxy = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == names::PROXY_CONTAINER);
    let exit_with_app = proxy
        .and_then(|c| c.env.as_ref())
        .is_some_and(|env| env.iter().any(|e| e.name == EXIT_WITH_APP_ENV));
    if exit_with_app {
        spec.share_process_namespace = restore.share_process_namespace;
    }

    // inject put its containers first, so the first of each name is ours.
    remove_first(&mut spec.containers, names::PROXY_CONTAINER);
    if let Some(init) = spec.init_containers.as_mut() {
        remove_first(init, names::INIT_CONTAINER);
        remove_first(init, names::PROXY_CONTAINER);
        if init.is_empty() {
            spec.init_containers = None;
        }
    }
    // ...and its volumes last, so the last of each name is ours.
    if let Some(volumes) = spec.volumes.as_mut() {
        for name in [IDENTITY_TOKEN_VOLUME, XTABLES_LOCK_VOLUME] {
            if let Some(i) = volumes.iter().rposition(|v| v.name == name) {
                volumes.remove(i);
            }
        }
        if volumes.is_empty() {
            spec.volumes = None;
        }
    }

    if let Some(annotations) = meta.annotations.as_mut() {
        for key in [
            names::PROXY_VERSION_ANNOTATION,
            names::CREATED_BY_ANNOTATION,
            names::IDENTITY_MODE_ANNOTATION,
        ] {
            annotations.remove(key);
        }
        annotations.extend(restore.annotations);
    }
    if let Some(labels) = meta.labels.as_mut() {
        for key in [names::CONTROL_PLANE_NS_LABEL, WORKLOAD_NS_LABEL] {
            labels.remove(key);
        }
        labels.extend(restore.labels);
    }
    normalize_meta(meta);
    true
}

fn remove_first(containers: &mut Vec<k8s_openapi::api::core::v1::Container>, name: &str) {
    if let Some(i) = containers.iter().position(|c| c.name == name) {
        containers.remove(i);
    }
}

/// inject creates the maps when the pod had none; an emptied map goes back
/// to "absent" (an input's explicit `{}` comes back absent too).
fn normalize_meta(meta: &mut ObjectMeta) {
    if meta.annotations.as_ref().is_some_and(BTreeMap::is_empty) {
        meta.annotations = None;
    }
    if meta.labels.as_ref().is_some_and(BTreeMap::is_empty) {
        meta.labels = None;
    }
}
