//! What a pod (and its namespace) says about its own inbound ports: the
//! ServiceAccount it runs as, its default inbound policy, the kubelet's
//! probe paths per port, its opaque ports and its declared ports.

use super::super::endpoints::{lists_port, opaque_ports};
use crate::store::ObjectKey;
use k8s_openapi::api::core::v1::{Container, Namespace, Pod, Probe};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeSet;
use weft_policy::{DefaultPolicy, DEFAULT_POLICY_ANNOTATION};

/// The ServiceAccount a pod runs as: `spec.serviceAccountName` (or the
/// deprecated `serviceAccount`), `default` when it names none, as the API
/// server fills it in.
pub fn service_account(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| {
            s.service_account_name
                .as_deref()
                .or(s.service_account.as_deref())
        })
        .filter(|sa| !sa.is_empty())
        .unwrap_or("default")
}

/// An unparsable `config.linkerd.io/default-inbound-policy` annotation:
/// the object it is on treats it as `deny`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} {key}: annotation {DEFAULT_POLICY_ANNOTATION}: {error}; its pods are treated as deny"
)]
pub struct BadAnnotation {
    /// `Pod` or `Namespace`.
    pub what: &'static str,
    /// The annotated object (a Namespace's key has no namespace).
    pub key: ObjectKey,
    /// Why the value was refused.
    pub error: weft_policy::UnknownPolicy,
}

/// The `config.linkerd.io/default-inbound-policy` of one object: `None`
/// when unset, else what it says (an unknown name is an error).
pub fn annotated_policy(
    meta: &ObjectMeta,
) -> Option<Result<DefaultPolicy, weft_policy::UnknownPolicy>> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(DEFAULT_POLICY_ANNOTATION))
        .map(|v| v.parse())
}

/// The default policy of pod `key`: its own annotation, else its
/// namespace's, else `install`. An annotation that does not parse means
/// `deny` (a typo must not open a workload that asked to be closed) and is
/// returned as the error next to it.
pub fn default_policy(
    key: &ObjectKey,
    pod: &Pod,
    namespace: Option<&Namespace>,
    install: DefaultPolicy,
) -> (DefaultPolicy, Option<BadAnnotation>) {
    let candidates = [
        ("Pod", key.clone(), annotated_policy(&pod.metadata)),
        (
            "Namespace",
            ObjectKey::cluster(&key.namespace),
            namespace.and_then(|ns| annotated_policy(&ns.metadata)),
        ),
    ];
    for (what, key, policy) in candidates {
        match policy {
            Some(Ok(p)) => return (p, None),
            Some(Err(error)) => {
                return (
                    DefaultPolicy::Deny,
                    Some(BadAnnotation { what, key, error }),
                )
            }
            None => {}
        }
    }
    (install, None)
}

/// Whether `port` is opaque for the pod: its own
/// `config.linkerd.io/opaque-ports` when set, else its namespace's.
pub fn is_opaque(pod: &Pod, namespace: Option<&Namespace>, port: u16) -> bool {
    opaque_ports(&pod.metadata)
        .or_else(|| namespace.and_then(|ns| opaque_ports(&ns.metadata)))
        .is_some_and(|list| lists_port(list, port))
}

/// The containers whose probes the kubelet runs: the app containers and
/// native sidecars (init containers with `restartPolicy: Always`).
fn probed_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    let spec = pod.spec.as_ref();
    let containers = spec.into_iter().flat_map(|s| s.containers.iter());
    let sidecars = spec
        .into_iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    containers.chain(sidecars)
}

/// The paths of the kubelet's `httpGet` probes (liveness, readiness,
/// startup) on `port`, whether the probe names the port by number or by
/// its container's port name; sorted, without duplicates. A probe without
/// a path asks for `/`; a query string is not part of the path.
pub fn probe_paths(pod: &Pod, port: u16) -> Vec<String> {
    let mut paths = BTreeSet::new();
    for c in probed_containers(pod) {
        let probes = [&c.liveness_probe, &c.readiness_probe, &c.startup_probe];
        for probe in probes.into_iter().flatten() {
            if let Some(path) = probe_path(c, probe, port) {
                paths.insert(path);
            }
        }
    }
    paths.into_iter().collect()
}

fn probe_path(c: &Container, probe: &Probe, port: u16) -> Option<String> {
    let get = probe.http_get.as_ref()?;
    let on_port = match &get.port {
        IntOrString::Int(n) => i64::from(*n) == i64::from(port),
        IntOrString::String(name) => c.ports.iter().flatten().any(|p| {
            p.name.as_deref() == Some(name) && i64::from(p.container_port) == i64::from(port)
        }),
    };
    if !on_port {
        return None;
    }
    let path = get.path.as_deref().unwrap_or("");
    let path = path.split('?').next().unwrap_or("");
    Some(if path.is_empty() {
        "/".to_owned()
    } else if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    })
}
