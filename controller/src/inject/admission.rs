//! One AdmissionReview in, one out: the injector's decision for a pod.
//!
//! The API server POSTs `admission.k8s.io/v1` (or `v1beta1`, for older
//! servers and configurations that list it first) AdmissionReviews; the
//! answer is in the version asked, with the request's `uid`. The pod is
//! mutated with [`weft_inject::Injector::inject`] (the same code `weft
//! inject --manual` runs) and the difference is returned as an RFC 6902
//! JSONPatch.
//!
//! The rule that shapes this module: **the injector never refuses a pod
//! because of its own problem.** Undecodable input, a failed namespace or
//! owner lookup, a panicking mutation, a patch that would not apply: each
//! is logged, counted (`proxy_inject_admission_errors_total{reason}`) and
//! answered with `allowed: true` and no patch, plus an admission warning so
//! the person creating the pod sees it. With `failurePolicy: Ignore` the
//! API server does the same when the injector is down.
//!
//! The types here are a thin serde view of the AdmissionReview fields the
//! injector uses (k8s-openapi has no `admission.k8s.io` types, being
//! generated from the API's OpenAPI document, which does not serve them).

use super::cluster::{Lookup, ResolvedOwner};
use super::events::{
    InjectEvent, InjectEvents, REASON_INJECTED, REASON_INVALID_ANNOTATION, REASON_SKIPPED,
};
use super::metrics::InjectMetrics;
use super::SharedInjector;
use base64::Engine as _;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use serde::Deserialize;
use serde_json::{json, Value};
use std::panic::AssertUnwindSafe;
use weft_inject::{Outcome, PodContext, Skip};

/// API versions of AdmissionReview the injector answers.
pub const REVIEW_VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// Prefix of every admission warning and status message, so `kubectl`
/// output says who is talking.
const WHO: &str = "weft-proxy-injector";

/// Why a body is not an AdmissionReview the injector can answer at all
/// (no `uid` to answer with). The HTTP layer answers 400.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// Not JSON, or not shaped like an AdmissionReview.
    #[error("not an AdmissionReview: {0}")]
    Decode(String),
    /// An `apiVersion` other than [`REVIEW_VERSIONS`].
    #[error(
        "unsupported AdmissionReview apiVersion {0:?} (expected admission.k8s.io/v1 or v1beta1)"
    )]
    Version(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Review {
    api_version: String,
    kind: String,
    request: Option<Request>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    uid: String,
    #[serde(default)]
    kind: GroupVersionKind,
    #[serde(default)]
    operation: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    object: Option<Value>,
    #[serde(default)]
    dry_run: Option<bool>,
}

#[derive(Default, Deserialize)]
struct GroupVersionKind {
    #[serde(default)]
    group: String,
    #[serde(default)]
    kind: String,
}

/// What the injector decided, before it is written as a response.
#[derive(Debug, Default, PartialEq)]
pub struct Answer {
    /// RFC 6902 operations, when the pod was injected.
    pub patch: Option<Value>,
    /// `status.message` of the response.
    pub message: Option<String>,
    /// Admission warnings (`kubectl` prints them).
    pub warnings: Vec<String>,
}

/// Everything a decision needs; shared by every connection.
pub struct Admission<L> {
    /// The current injector (replaced when values or trust anchors change).
    pub injector: SharedInjector,
    /// Namespace and owner lookups.
    pub lookup: L,
    /// Where counts go.
    pub metrics: InjectMetrics,
    /// Where Events go; `None` publishes none (unit tests).
    pub events: Option<InjectEvents>,
}

// === impl Admission ===

impl<L: Lookup> Admission<L> {
    /// Answers one AdmissionReview body: `Ok` with the response body (always
    /// `allowed: true`), `Err` when there is no request to answer.
    pub async fn review(&self, body: &[u8]) -> Result<Value, ReviewError> {
        let review: Review = serde_json::from_slice(body).map_err(|e| {
            self.metrics.error("decode");
            ReviewError::Decode(e.to_string())
        })?;
        if !REVIEW_VERSIONS.contains(&review.api_version.as_str()) {
            self.metrics.error("decode");
            return Err(ReviewError::Version(review.api_version));
        }
        if review.kind != "AdmissionReview" {
            self.metrics.error("decode");
            return Err(ReviewError::Decode(format!(
                "kind is {:?}, not AdmissionReview",
                review.kind
            )));
        }
        let Some(request) = review.request else {
            self.metrics.error("decode");
            return Err(ReviewError::Decode("no request".into()));
        };
        let answer = self.decide(&request).await;
        Ok(response(&review.api_version, &request.uid, answer))
    }

    /// The decision for one request. Never fails: errors become an
    /// unmodified admission with a warning.
    async fn decide(&self, request: &Request) -> Answer {
        if !request.kind.group.is_empty()
            || request.kind.kind != "Pod"
            || request.operation != "CREATE"
        {
            // The webhook is registered for Pod CREATE only; anything else
            // is a misconfiguration, admitted as is.
            tracing::debug!(
                kind = %request.kind.kind,
                operation = %request.operation,
                "not a Pod CREATE; admitted unchanged"
            );
            return Answer {
                message: Some(format!("{WHO}: only Pod CREATE requests are injected")),
                ..Answer::default()
            };
        }
        let Some(object) = &request.object else {
            return self.failed("decode", "the request has no object".into(), "");
        };
        let pod: Pod = match serde_json::from_value(object.clone()) {
            Ok(p) => p,
            Err(e) => return self.failed("decode", format!("the Pod does not decode: {e}"), ""),
        };
        let namespace = request
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(|| pod.metadata.namespace.clone())
            .unwrap_or_else(|| "default".to_owned());
        let pod_name = pod_name(&pod);

        let owner = match self.lookup.owner(&namespace, &pod.metadata).await {
            Ok(o) => o,
            Err(e) => {
                return self.failed(
                    "owner_lookup",
                    format!("cannot resolve the owner of pod {namespace}/{pod_name}: {e}"),
                    &namespace,
                )
            }
        };
        let owner_kind = owner
            .as_ref()
            .map_or_else(|| "pod".to_owned(), |o| o.owner.kind.clone());
        self.metrics.request(&owner_kind, &namespace);
        let namespace_annotations = match self.lookup.namespace_annotations(&namespace).await {
            Ok(a) => a,
            Err(e) => {
                return self.failed(
                    "namespace_lookup",
                    format!("cannot read namespace {namespace}: {e}"),
                    &namespace,
                )
            }
        };
        let ctx = PodContext {
            namespace: namespace.clone(),
            namespace_annotations,
            owner: owner.as_ref().map(|o| o.owner.clone()),
        };

        let injector = self
            .injector
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let before = match serde_json::to_value(&pod) {
            Ok(v) => v,
            Err(e) => {
                return self.failed("decode", format!("re-encoding the Pod: {e}"), &namespace)
            }
        };
        let mut meta = pod.metadata.clone();
        let mut spec = pod.spec.clone().unwrap_or_default();
        let outcome = match std::panic::catch_unwind(AssertUnwindSafe(|| {
            injector.inject(&mut meta, &mut spec, &ctx)
        })) {
            Ok(o) => o,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_owned());
                return self.failed(
                    "mutation",
                    format!("the mutation of pod {namespace}/{pod_name} panicked: {what}"),
                    &namespace,
                );
            }
        };
        let regarding = owner
            .as_ref()
            .map(|o: &ResolvedOwner| o.reference.clone())
            .or_else(|| bare_pod_reference(&pod, &namespace));

        match outcome {
            Outcome::Skipped(skip) => {
                let (reason, text) = skip_reason(&skip);
                self.metrics.response(&owner_kind, &namespace, Some(reason));
                tracing::debug!(pod = %format!("{namespace}/{pod_name}"), owner = %owner_kind, reason, "not injected");
                let mut answer = Answer {
                    message: Some(format!("{WHO}: not injected: {text}")),
                    ..Answer::default()
                };
                if explicit(&skip) {
                    answer
                        .warnings
                        .push(format!("{WHO}: pod not injected: {text}"));
                }
                if skip != Skip::NotEnabled {
                    self.event(
                        regarding.as_ref(),
                        false,
                        REASON_SKIPPED,
                        &format!("Weft proxy injection skipped: {text} (skip_reason={reason})"),
                    );
                }
                answer
            }
            Outcome::Injected { warnings } => {
                let mut after_pod = pod.clone();
                after_pod.metadata = meta;
                after_pod.spec = Some(spec);
                let after = match serde_json::to_value(&after_pod) {
                    Ok(v) => v,
                    Err(e) => {
                        return self.failed(
                            "patch",
                            format!("encoding the mutated Pod: {e}"),
                            &namespace,
                        )
                    }
                };
                let patch = json_patch::diff(&before, &after);
                // The patch is applied by the API server to the object it
                // sent, not to our re-encoding of it: check that it applies
                // there, so a field this decoder does not know can never turn
                // into a rejected pod.
                let mut check = object.clone();
                if let Err(e) = json_patch::patch(&mut check, &patch) {
                    return self.failed(
                        "patch",
                        format!("the patch for pod {namespace}/{pod_name} does not apply: {e}"),
                        &namespace,
                    );
                }
                let patch = match serde_json::to_value(&patch) {
                    Ok(v) => v,
                    Err(e) => {
                        return self.failed("patch", format!("encoding the patch: {e}"), &namespace)
                    }
                };
                self.metrics.response(&owner_kind, &namespace, None);
                let mut answer = Answer {
                    patch: Some(patch),
                    message: None,
                    warnings: Vec::new(),
                };
                for w in &warnings {
                    let text = format!(
                        "annotation {}: {:?} not used: {}",
                        w.annotation, w.value, w.reason
                    );
                    tracing::info!(pod = %format!("{namespace}/{pod_name}"), annotation = %w.annotation, value = %w.value, reason = %w.reason, "invalid injection annotation; default used");
                    answer.warnings.push(format!("{WHO}: {text}"));
                    self.event(regarding.as_ref(), true, REASON_INVALID_ANNOTATION, &text);
                }
                tracing::debug!(pod = %format!("{namespace}/{pod_name}"), owner = %owner_kind, dry_run = request.dry_run.unwrap_or(false), "injected");
                self.event(
                    regarding.as_ref(),
                    false,
                    REASON_INJECTED,
                    "Weft sidecar proxy injected",
                );
                answer
            }
        }
    }

    /// Logs and counts an error of the injector's own, and admits the pod
    /// unchanged with a warning.
    fn failed(&self, reason: &'static str, error: String, namespace: &str) -> Answer {
        self.metrics.error(reason);
        tracing::warn!(%error, namespace, stage = reason, "injector error; pod admitted without a proxy");
        Answer {
            patch: None,
            message: Some(format!(
                "{WHO}: not injected because of an injector error: {error}"
            )),
            warnings: vec![format!(
                "{WHO}: pod not injected because of an injector error: {error}"
            )],
        }
    }

    fn event(
        &self,
        regarding: Option<&ObjectReference>,
        warning: bool,
        reason: &'static str,
        note: &str,
    ) {
        if let (Some(events), Some(r)) = (&self.events, regarding) {
            events.send(InjectEvent::new(r.clone(), warning, reason, note));
        }
    }
}

/// The pod's name, or its `generateName` prefix with `*` (pods of a
/// workload have no name yet at admission).
fn pod_name(pod: &Pod) -> String {
    match (&pod.metadata.name, &pod.metadata.generate_name) {
        (Some(n), _) if !n.is_empty() => n.clone(),
        (_, Some(g)) => format!("{g}*"),
        _ => String::new(),
    }
}

/// Events about a bare pod regard the pod itself (by name: it has no uid
/// yet). A nameless bare pod gets none.
fn bare_pod_reference(pod: &Pod, namespace: &str) -> Option<ObjectReference> {
    let name = pod.metadata.name.clone().filter(|n| !n.is_empty())?;
    Some(ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(name),
        namespace: Some(namespace.to_owned()),
        ..ObjectReference::default()
    })
}

/// Whether a skip is worth an admission warning: the pod (or namespace)
/// asked for injection and did not get it.
fn explicit(skip: &Skip) -> bool {
    !matches!(skip, Skip::NotEnabled | Skip::Disabled)
}

/// The `skip_reason` label for `skip` (Linkerd's names) and its sentence,
/// both from the mutation's own [`Skip`], so `weft inject` reports the same.
pub fn skip_reason(skip: &Skip) -> (&'static str, String) {
    (skip.label(), skip.reason())
}

/// The AdmissionReview answering request `uid` in `api_version`.
pub fn response(api_version: &str, uid: &str, answer: Answer) -> Value {
    let mut rsp = json!({ "uid": uid, "allowed": true });
    if let Some(patch) = &answer.patch {
        let encoded = base64::engine::general_purpose::STANDARD.encode(patch.to_string());
        rsp["patchType"] = json!("JSONPatch");
        rsp["patch"] = json!(encoded);
    }
    if let Some(message) = answer.message {
        rsp["status"] = json!({ "message": message });
    }
    if !answer.warnings.is_empty() {
        rsp["warnings"] = json!(answer.warnings);
    }
    json!({ "apiVersion": api_version, "kind": "AdmissionReview", "response": rsp })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::inject::cluster::resolved;
    use crate::inject::events::InjectEvents;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
    use std::collections::BTreeMap;
    use std::sync::{Arc, RwLock};
    use std::time::Duration;
    use tokio::sync::mpsc;
    use weft_inject::{Injector, Values};

    /// Namespaces by name; `None` annotations make the lookup fail.
    struct Fake {
        namespaces: BTreeMap<String, Option<BTreeMap<String, String>>>,
    }

    impl Lookup for Fake {
        async fn namespace_annotations(
            &self,
            name: &str,
        ) -> Result<BTreeMap<String, String>, String> {
            match self.namespaces.get(name) {
                Some(Some(a)) => Ok(a.clone()),
                Some(None) => Err("connection refused".into()),
                None => Err(format!("namespaces {name:?} not found")),
            }
        }

        async fn owner(
            &self,
            namespace: &str,
            meta: &ObjectMeta,
        ) -> Result<Option<ResolvedOwner>, String> {
            Ok(crate::inject::cluster::controller_of(meta).map(|r| resolved(namespace, r)))
        }
    }

    fn admission() -> (Admission<Fake>, mpsc::Receiver<InjectEvent>) {
        let enabled = BTreeMap::from([("linkerd.io/inject".to_owned(), "enabled".to_owned())]);
        let injector = Injector::new(
            Values::default().finish().unwrap(),
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
            false,
        );
        let (events, rx) = InjectEvents::channel(64, 64, Duration::from_secs(600));
        let a = Admission {
            injector: Arc::new(RwLock::new(Arc::new(injector))),
            lookup: Fake {
                namespaces: BTreeMap::from([
                    ("shop".to_owned(), Some(enabled)),
                    ("plain".to_owned(), Some(BTreeMap::new())),
                    ("broken".to_owned(), None),
                ]),
            },
            metrics: InjectMetrics::default(),
            events: Some(events),
        };
        (a, rx)
    }

    fn pod(namespace: &str, annotations: Value, host_network: bool) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": "web-7d4b9c-",
                "namespace": namespace,
                "annotations": annotations,
                "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web",
                    "uid": "u-1", "controller": true
                }],
                // A field this decoder may not know must survive.
                "someFutureField": {"x": 1}
            },
            "spec": {
                "hostNetwork": host_network,
                "containers": [{"name": "app", "image": "example/app:1"}]
            }
        })
    }

    fn review(version: &str, namespace: &str, object: Value) -> Vec<u8> {
        json!({
            "apiVersion": version,
            "kind": "AdmissionReview",
            "request": {
                "uid": "req-1",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "operation": "CREATE",
                "namespace": namespace,
                "object": object,
            }
        })
        .to_string()
        .into_bytes()
    }

    fn patch_of(rsp: &Value) -> Option<json_patch::Patch> {
        let b64 = rsp["response"]["patch"].as_str()?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        Some(serde_json::from_slice(&bytes).unwrap())
    }

    fn drain(rx: &mut mpsc::Receiver<InjectEvent>) -> Vec<InjectEvent> {
        let mut out = Vec::new();
        while let Ok(e) = rx.try_recv() {
            out.push(e);
        }
        out
    }

    #[tokio::test]
    async fn a_pod_of_an_enabled_namespace_gets_a_patch_that_applies() {
        for version in REVIEW_VERSIONS {
            let (a, mut rx) = admission();
            let object = pod("shop", json!({}), false);
            let rsp = a
                .review(&review(version, "shop", object.clone()))
                .await
                .unwrap();
            assert_eq!(rsp["apiVersion"], version);
            assert_eq!(rsp["kind"], "AdmissionReview");
            assert_eq!(rsp["response"]["uid"], "req-1");
            assert_eq!(rsp["response"]["allowed"], true);
            assert_eq!(rsp["response"]["patchType"], "JSONPatch");
            let patch = patch_of(&rsp).expect("a patch");
            let mut patched = object.clone();
            json_patch::patch(&mut patched, &patch).unwrap();
            let names: Vec<&str> = patched["spec"]["containers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].as_str().unwrap())
                .collect();
            assert!(
                names.contains(&"weft-proxy") && names.contains(&"app"),
                "{names:?}"
            );
            assert_eq!(patched["spec"]["initContainers"][0]["name"], "weft-init");
            assert_eq!(patched["metadata"]["someFutureField"], json!({"x": 1}));
            let env = patched["spec"]["containers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == "weft-proxy")
                .unwrap()["env"]
                .to_string();
            assert!(
                env.contains("$(_WEFT_POD_NS)/statefulset/web/$(_WEFT_POD_NAME)"),
                "{env}"
            );
            let text = a
                .metrics
                .responses
                .get_or_create(&crate::inject::metrics::ResponseLabels {
                    owner_kind: "statefulset".into(),
                    namespace: "shop".into(),
                    skip: "false",
                    skip_reason: "",
                })
                .get();
            assert_eq!(text, 1);
            let events = drain(&mut rx);
            assert!(
                events
                    .iter()
                    .any(|e| e.reason == REASON_INJECTED && !e.warning),
                "{events:?}"
            );
        }
    }

    #[tokio::test]
    async fn skips_answer_without_a_patch_and_say_why() {
        let (a, mut rx) = admission();
        let rsp = a
            .review(&review(
                "admission.k8s.io/v1",
                "plain",
                pod("plain", json!({}), false),
            ))
            .await
            .unwrap();
        assert!(patch_of(&rsp).is_none());
        assert_eq!(rsp["response"]["allowed"], true);
        assert!(rsp["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("linkerd.io/inject"));
        assert!(
            drain(&mut rx).is_empty(),
            "no Event for a pod that never asked"
        );

        let rsp = a
            .review(&review(
                "admission.k8s.io/v1",
                "shop",
                pod("shop", json!({}), true),
            ))
            .await
            .unwrap();
        assert!(patch_of(&rsp).is_none());
        assert!(rsp["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("hostNetwork"));
        let events = drain(&mut rx);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].reason, REASON_SKIPPED);
        assert!(
            events[0].note.contains("host_network_enabled"),
            "{}",
            events[0].note
        );
        assert_eq!(events[0].regarding.name.as_deref(), Some("web"));
        let skipped = a
            .metrics
            .responses
            .get_or_create(&crate::inject::metrics::ResponseLabels {
                owner_kind: "statefulset".into(),
                namespace: "shop".into(),
                skip: "true",
                skip_reason: "host_network_enabled",
            })
            .get();
        assert_eq!(skipped, 1);
    }

    #[tokio::test]
    async fn a_bad_config_annotation_injects_with_a_warning_event() {
        let (a, mut rx) = admission();
        let object = pod(
            "shop",
            json!({"config.linkerd.io/proxy-cpu-request": "banana"}),
            false,
        );
        let rsp = a
            .review(&review("admission.k8s.io/v1", "shop", object))
            .await
            .unwrap();
        assert!(patch_of(&rsp).is_some());
        let warnings = rsp["response"]["warnings"].to_string();
        assert!(
            warnings.contains("proxy-cpu-request") && warnings.contains("banana"),
            "{warnings}"
        );
        let events = drain(&mut rx);
        let w = events.iter().find(|e| e.warning).expect("a Warning Event");
        assert_eq!(w.reason, REASON_INVALID_ANNOTATION);
        assert!(
            w.note.contains("config.linkerd.io/proxy-cpu-request") && w.note.contains("banana"),
            "{}",
            w.note
        );
    }

    #[tokio::test]
    async fn own_errors_admit_unchanged_and_are_counted() {
        let (a, _rx) = admission();
        let rsp = a
            .review(&review(
                "admission.k8s.io/v1",
                "broken",
                pod("broken", json!({}), false),
            ))
            .await
            .unwrap();
        assert_eq!(rsp["response"]["allowed"], true);
        assert!(patch_of(&rsp).is_none());
        assert!(rsp["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("connection refused"));
        assert_eq!(a.metrics.error_count("namespace_lookup"), 1);

        let bad_pod = json!({"metadata": {"name": 7}, "spec": {"containers": "nope"}});
        let rsp = a
            .review(&review("admission.k8s.io/v1", "shop", bad_pod))
            .await
            .unwrap();
        assert_eq!(rsp["response"]["allowed"], true);
        assert!(patch_of(&rsp).is_none());
        assert_eq!(a.metrics.error_count("decode"), 1);

        assert!(matches!(
            a.review(b"{not json").await,
            Err(ReviewError::Decode(_))
        ));
        let v2 = review("admission.k8s.io/v2", "shop", json!({}));
        assert!(matches!(a.review(&v2).await, Err(ReviewError::Version(_))));
        assert_eq!(a.metrics.error_count("decode"), 3);
    }

    #[tokio::test]
    async fn other_requests_are_admitted_as_they_are() {
        let (a, _rx) = admission();
        let mut body: Value = serde_json::from_slice(&review(
            "admission.k8s.io/v1",
            "shop",
            pod("shop", json!({}), false),
        ))
        .unwrap();
        body["request"]["operation"] = json!("UPDATE");
        let rsp = a.review(body.to_string().as_bytes()).await.unwrap();
        assert_eq!(rsp["response"]["allowed"], true);
        assert!(patch_of(&rsp).is_none());
    }

    #[test]
    fn the_response_is_base64_json_patch() {
        let rsp = response(
            "admission.k8s.io/v1beta1",
            "u",
            Answer {
                patch: Some(json!([{"op": "add", "path": "/a", "value": 1}])),
                message: None,
                warnings: vec![],
            },
        );
        assert_eq!(rsp["apiVersion"], "admission.k8s.io/v1beta1");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rsp["response"]["patch"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&decoded).unwrap(),
            json!([{"op": "add", "path": "/a", "value": 1}])
        );
        assert!(rsp["response"].get("warnings").is_none());
    }

    #[test]
    fn owner_references_resolve_lower_case() {
        let r = OwnerReference {
            api_version: "apps/v1".into(),
            kind: "DaemonSet".into(),
            name: "agent".into(),
            uid: "u".into(),
            controller: Some(true),
            block_owner_deletion: None,
        };
        assert_eq!(resolved("ns", &r).owner.kind, "daemonset");
    }
}
