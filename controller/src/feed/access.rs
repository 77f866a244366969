//! The access reconciler: reports what of the stored TrafficTargets and
//! default-policy annotations the inbound policy cannot apply, as a `warn`
//! log and, in cluster mode, a `Warning` Kubernetes Event regarding the
//! object (the TrafficTarget, the Pod or the Namespace).
//!
//! The problems are found with the translation's own rules
//! ([`targets::resolve`], [`pod::annotated_policy`]), so an object is
//! reported exactly when the policy leaves part of it out (or, for an
//! annotation, reads it as `deny`). TrafficTargets whose destination is in
//! another namespace, which the policy never looks at, are reported here.
//! Each problem is reported once it has lasted
//! [`REPORT_AFTER`](super::events::REPORT_AFTER) (one `kubectl apply` of
//! a TrafficTarget and its routes arrives in no fixed order), and again
//! only if it goes away and comes back ([`super::events::Tracker`]).

use super::events::{self, Events, Warning, ACTION_RESOLVE};
use crate::destination::inbound::{pod, targets};
use crate::store::{Kind, ObjectKey, Snapshot, Store};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use std::future::Future;
use weft_smi_crds::access::TrafficTarget;

/// Event reason of an annotation that is not a default policy's name.
pub const BAD_ANNOTATION: &str = "InvalidDefaultInboundPolicy";

/// One problem, about the object of [`AccessProblem::kind`] and the key it
/// is found under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessProblem {
    /// TrafficTarget, Pod or Namespace.
    pub kind: Kind,
    /// The Event reason.
    pub reason: &'static str,
    /// What is wrong and what the policy does about it.
    pub message: String,
}

impl std::fmt::Display for AccessProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// Every current problem in `snap`, in key order: the TrafficTargets'
/// ([`targets::TargetProblem`]), then the Pods' and Namespaces'
/// unparsable `config.linkerd.io/default-inbound-policy` annotations.
pub fn access_problems(snap: &Snapshot, trust_domain: &str) -> Vec<(ObjectKey, AccessProblem)> {
    let mut out = Vec::new();
    for (key, tt) in &snap.traffic_targets {
        let problems = match targets::governs_own_namespace(tt) {
            Some(p) => vec![p],
            None => targets::resolve(snap, key, tt, trust_domain).problems,
        };
        out.extend(problems.into_iter().map(|p| {
            (
                key.clone(),
                AccessProblem {
                    kind: Kind::TrafficTarget,
                    reason: p.reason(),
                    message: p.to_string(),
                },
            )
        }));
    }
    let annotation =
        |kind: Kind, key: &ObjectKey, meta: &ObjectMeta| match pod::annotated_policy(meta) {
            Some(Err(error)) => Some((
                key.clone(),
                AccessProblem {
                    kind,
                    reason: BAD_ANNOTATION,
                    message: format!(
                        "annotation {}: {error}; {} treated as deny",
                        weft_policy::DEFAULT_POLICY_ANNOTATION,
                        if kind == Kind::Pod {
                            "the pod is"
                        } else {
                            "its pods without their own annotation are"
                        }
                    ),
                },
            )),
            _ => None,
        };
    for (key, p) in &snap.pods {
        out.extend(annotation(Kind::Pod, key, &p.metadata));
    }
    for (name, ns) in &snap.namespaces {
        out.extend(annotation(
            Kind::Namespace,
            &ObjectKey::cluster(name),
            &ns.metadata,
        ));
    }
    out
}

/// The reconciler: after `start` resolves (the Kubernetes feed's first
/// sync), evaluates [`access_problems`] on each store change and reports
/// each lasting problem (log; with `events`, a Warning Event). Runs until
/// the store is dropped.
pub async fn check_access(
    store: Store,
    trust_domain: String,
    events: Option<Events>,
    start: impl Future<Output = ()>,
) {
    let snapshots = store.subscribe();
    events::reconcile(
        store,
        start,
        |snap| access_problems(snap, &trust_domain),
        |key, problem| {
            let snap = snapshots.borrow().clone();
            report(&snap, key, problem, events.as_ref());
        },
    )
    .await;
}

/// Logs one problem and, with `events`, queues its Event.
fn report(snap: &Snapshot, key: &ObjectKey, problem: &AccessProblem, events: Option<&Events>) {
    let object = if key.namespace.is_empty() {
        key.name.clone()
    } else {
        key.to_string()
    };
    tracing::warn!(
        kind = %problem.kind,
        object = %object,
        reason = problem.reason,
        "{} {object}: {}",
        problem.kind,
        problem.message
    );
    let Some(events) = events else { return };
    let Some(regarding) = regarding(snap, problem.kind, key) else {
        return;
    };
    events.warn(Warning::new(
        regarding,
        problem.reason,
        ACTION_RESOLVE,
        &problem.message,
    ));
}

/// The Event's `regarding`, from the stored object (its `uid` and
/// `resourceVersion`); `None` once the object is gone.
fn regarding(snap: &Snapshot, kind: Kind, key: &ObjectKey) -> Option<ObjectReference> {
    let (api_version, meta) = match kind {
        Kind::TrafficTarget => (
            TrafficTarget::api_version(&()).into_owned(),
            &snap.traffic_targets.get(key)?.metadata,
        ),
        Kind::Pod => ("v1".to_owned(), &snap.pods.get(key)?.metadata),
        Kind::Namespace => ("v1".to_owned(), &snap.namespaces.get(&key.name)?.metadata),
        _ => return None,
    };
    let mut r = events::reference(
        kind,
        &api_version,
        key,
        meta.uid.clone(),
        meta.resource_version.clone(),
    );
    if key.namespace.is_empty() {
        r.namespace = None;
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::destination::testing::snapshot;

    #[test]
    fn problems_of_targets_and_annotations_are_found() {
        let yaml = "\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  annotations: {config.linkerd.io/default-inbound-policy: closed}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-0
  namespace: shop
  uid: u-1
  annotations: {config.linkerd.io/default-inbound-policy: deny}
spec: {containers: []}
---
apiVersion: v1
kind: Pod
metadata:
  name: api-0
  namespace: shop
  annotations: {config.linkerd.io/default-inbound-policy: alow}
spec: {containers: []}
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: ok, namespace: shop}
spec:
  destination: {kind: ServiceAccount, name: web}
  sources: [{kind: ServiceAccount, name: a}]
  rules: [{kind: TCPRoute, name: db}]
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: elsewhere, namespace: shop}
spec:
  destination: {kind: ServiceAccount, name: web, namespace: bank}
  sources: [{kind: ServiceAccount, name: a}]
  rules: [{kind: TCPRoute, name: db}]
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: db, namespace: shop}
spec: {matches: {ports: [3306]}}
";
        let snap = snapshot(yaml);
        let found = access_problems(&snap, "cluster.local");
        let summary: Vec<(String, Kind, &str)> = found
            .iter()
            .map(|(k, p)| (k.to_string(), p.kind, p.reason))
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "shop/elsewhere".to_owned(),
                    Kind::TrafficTarget,
                    "TrafficTargetForeignDestination"
                ),
                ("shop/api-0".to_owned(), Kind::Pod, BAD_ANNOTATION),
                ("/shop".to_owned(), Kind::Namespace, BAD_ANNOTATION),
            ]
        );
        assert!(found[1].1.message.contains("\"alow\""), "{}", found[1].1);
        // Events regard the stored objects; a Namespace is cluster-scoped.
        let r = regarding(&snap, Kind::Namespace, &found[2].0).unwrap();
        assert_eq!((r.namespace, r.name.as_deref()), (None, Some("shop")));
        let r = regarding(&snap, Kind::TrafficTarget, &found[0].0).unwrap();
        assert_eq!(
            r.api_version.as_deref(),
            Some("access.smi-spec.io/v1alpha3")
        );
        assert_eq!(r.namespace.as_deref(), Some("shop"));
    }

    #[tokio::test(start_paused = true)]
    async fn lasting_problems_are_reported_as_warnings_once() {
        let store = Store::new();
        let tt = "\
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: t, namespace: shop, uid: tt-1, resourceVersion: \"5\"}
spec:
  destination: {kind: ServiceAccount, name: web}
  sources: [{kind: ServiceAccount, name: a}]
  rules: [{kind: HTTPRouteGroup, name: missing}]
";
        let parsed =
            crate::feed::files::parse_documents(std::path::Path::new("t.yaml"), tt).unwrap();
        store.replace_all(parsed.objects);
        let (events, mut rx) = Events::channel(8, 8);
        tokio::spawn(check_access(
            store.clone(),
            "cluster.local".into(),
            Some(events),
            async {},
        ));
        let w = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(w.reason, "TrafficTargetRouteNotFound");
        assert_eq!(w.regarding.uid.as_deref(), Some("tt-1"));
        assert!(
            w.note.contains("unknown HTTPRouteGroup shop/missing"),
            "{}",
            w.note
        );
        // Reported once, however long it lasts.
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        assert!(rx.try_recv().is_err());
    }
}
