//! Helpers that stand in for what a real cluster (or a person with kubectl)
//! would do, so tests read as the scenario they check.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, WebhookClientConfig,
};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::discovery::{self, Scope};
use kube::Api;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::error::{io_err, Error, Result};
use crate::{TestControlPlane, TEST_NODE_NAME};

/// Field manager the helpers write objects as.
pub const FIELD_MANAGER: &str = "weft-kube-harness";
/// How long helpers wait for the API to catch up (a CRD to be served, a
/// ServiceAccount to get its token) unless told otherwise.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);
/// Upper bound for one kubectl run.
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(200);

/// Polls `check` until it yields `Some`, at most every 200 ms and for at most
/// `timeout` (so at most `timeout / 200ms + 1` calls). Errors from `check`
/// count as "not yet" and the last one is reported on time-out.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    let max_tries = timeout.as_millis() / POLL.as_millis() + 1;
    let mut last_err = None;
    for _ in 0..max_tries {
        match tokio::time::timeout(remaining_or_poll(start, timeout), check()).await {
            Ok(Ok(Some(v))) => return Ok(v),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => last_err = Some(e.to_string()),
            Err(_) => last_err = Some("check did not finish in time".to_owned()),
        }
        if start.elapsed() >= timeout {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    Err(Error::Timeout {
        what: match last_err {
            Some(e) => format!("{what} (last error: {e})"),
            None => what.to_owned(),
        },
        waited: start.elapsed(),
    })
}

fn remaining_or_poll(start: Instant, timeout: Duration) -> Duration {
    timeout.saturating_sub(start.elapsed()).max(POLL)
}

/// A mutating admission webhook reached by `url:` (no Service needed), as
/// the injector registers itself in tests.
#[derive(Clone, Debug)]
pub struct WebhookRegistration {
    /// Name of the MutatingWebhookConfiguration and of its one webhook (the
    /// latter must look like a domain with at least three labels, e.g.
    /// `inject.weft.test.io`).
    pub name: String,
    /// `https://127.0.0.1:PORT/path` the API server will POST AdmissionReviews to.
    pub url: String,
    /// PEM of the CA that signed the webhook's serving certificate.
    pub ca_bundle_pem: String,
    /// Which requests are sent to the webhook.
    pub rules: Vec<RuleWithOperations>,
    /// Only requests in namespaces matching this selector (`None`: all).
    pub namespace_selector: Option<LabelSelector>,
    /// `Fail` or `Ignore`.
    pub failure_policy: String,
    /// Per-call timeout, 1–30 s.
    pub timeout_seconds: i32,
}

impl WebhookRegistration {
    /// A webhook for Pod CREATE in every namespace, failure policy `Fail`
    /// (so a test notices a broken webhook), 10 s timeout.
    pub fn pods(name: &str, url: &str, ca_bundle_pem: &str) -> Self {
        Self {
            name: name.to_owned(),
            url: url.to_owned(),
            ca_bundle_pem: ca_bundle_pem.to_owned(),
            rules: vec![RuleWithOperations {
                api_groups: Some(vec![String::new()]),
                api_versions: Some(vec!["v1".to_owned()]),
                operations: Some(vec!["CREATE".to_owned()]),
                resources: Some(vec!["pods".to_owned()]),
                scope: None,
            }],
            namespace_selector: None,
            failure_policy: "Fail".to_owned(),
            timeout_seconds: 10,
        }
    }

    /// Restricts the webhook to namespaces carrying label `key=value`, so
    /// parallel tests or system namespaces are not affected.
    pub fn in_namespaces_labelled(mut self, key: &str, value: &str) -> Self {
        self.namespace_selector = Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(key.to_owned(), value.to_owned())])),
            match_expressions: None,
        });
        self
    }

    /// The object this registration creates.
    pub fn to_object(&self) -> MutatingWebhookConfiguration {
        MutatingWebhookConfiguration {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                ..ObjectMeta::default()
            },
            webhooks: Some(vec![MutatingWebhook {
                name: self.name.clone(),
                admission_review_versions: vec!["v1".to_owned()],
                client_config: WebhookClientConfig {
                    url: Some(self.url.clone()),
                    ca_bundle: Some(ByteString(self.ca_bundle_pem.clone().into_bytes())),
                    service: None,
                },
                failure_policy: Some(self.failure_policy.clone()),
                namespace_selector: self.namespace_selector.clone(),
                rules: Some(self.rules.clone()),
                side_effects: "None".to_owned(),
                timeout_seconds: Some(self.timeout_seconds),
                ..MutatingWebhook::default()
            }]),
        }
    }
}

impl TestControlPlane {
    /// Creates a namespace (no labels).
    pub async fn create_namespace(&self, name: &str) -> Result<Namespace> {
        self.create_namespace_with_labels(name, &[]).await
    }

    /// Creates a namespace with labels, e.g. one a webhook selects on.
    pub async fn create_namespace_with_labels(
        &self,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Result<Namespace> {
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: (!labels.is_empty()).then(|| {
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect()
                }),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        let api: Api<Namespace> = Api::all(self.client());
        api.create(&PostParams::default(), &ns)
            .await
            .map_err(|e| self.explain(e))
    }

    /// Creates a namespace and waits for its `default` ServiceAccount (see
    /// [`wait_for_service_account`](Self::wait_for_service_account)), so
    /// that Pods can be created in it right away.
    pub async fn create_namespace_for_pods(&self, name: &str) -> Result<Namespace> {
        let ns = self.create_namespace(name).await?;
        self.wait_for_service_account(name, "default").await?;
        Ok(ns)
    }

    /// Creates ServiceAccount `ns/name`: an identity to request tokens for
    /// or to run Pods as. Its token Secret comes later (when the
    /// controller-manager runs): wait for it with
    /// [`wait_for_service_account`](Self::wait_for_service_account) where
    /// that matters.
    pub async fn create_service_account(&self, ns: &str, name: &str) -> Result<ServiceAccount> {
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(ns.to_owned()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        let api: Api<ServiceAccount> = Api::namespaced(self.client(), ns);
        api.create(&PostParams::default(), &sa)
            .await
            .map_err(|e| self.explain(e))
    }

    /// Waits until ServiceAccount `ns/name` exists and, when the
    /// controller-manager runs, has its token Secret. Kubernetes 1.20's
    /// ServiceAccount admission rejects Pods until then, so call this (for
    /// `default`) after creating a namespace and before creating Pods in it.
    pub async fn wait_for_service_account(&self, ns: &str, name: &str) -> Result<ServiceAccount> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client(), ns);
        let need_secret = self.controller_manager.is_some();
        let api = &api;
        wait_for(
            &format!("ServiceAccount {ns}/{name} with a token"),
            DEFAULT_WAIT,
            || async move {
                Ok(api.get_opt(name).await?.filter(|sa| {
                    !need_secret || sa.secrets.as_ref().is_some_and(|s| !s.is_empty())
                }))
            },
        )
        .await
        .map_err(|e| self.check_alive().err().unwrap_or(e))
    }

    /// Creates or updates every object in a multi-document YAML string, by
    /// create, or JSON merge patch when the object exists, through the API's
    /// discovery (no kubectl needed). Server-side apply is not used: 1.20's
    /// rejects common objects (a Service port without `protocol`).
    /// Namespaced objects without a namespace go to `default`. Kinds not
    /// served yet (a CRD applied in the same string) are retried until they
    /// appear, for at most a minute.
    pub async fn apply_yaml(&self, yaml: &str) -> Result<Vec<DynamicObject>> {
        let mut out = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(yaml) {
            let value = Value::deserialize(doc)?;
            if value.is_null() {
                continue;
            }
            out.push(self.apply_value(value).await?);
        }
        Ok(out)
    }

    async fn apply_value(&self, value: Value) -> Result<DynamicObject> {
        let field = |f: &str| value.get(f).and_then(Value::as_str).map(str::to_owned);
        let api_version = field("apiVersion")
            .ok_or_else(|| Error::InvalidObject("document without apiVersion".into()))?;
        let kind =
            field("kind").ok_or_else(|| Error::InvalidObject("document without kind".into()))?;
        let meta = value.get("metadata");
        let name = meta
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .ok_or_else(|| Error::InvalidObject(format!("{kind} without metadata.name")))?
            .to_owned();
        let namespace = meta
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_owned();
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g.to_owned(), v.to_owned()),
            None => (String::new(), api_version.clone()),
        };
        let gvk = GroupVersionKind::gvk(&group, &version, &kind);
        let client = self.client();
        let (client_ref, gvk) = (&client, &gvk);
        let (ar, caps) = wait_for(
            &format!("the API to serve {api_version} {kind}"),
            DEFAULT_WAIT,
            || async move { Ok(Some(discovery::pinned_kind(client_ref, gvk).await?)) },
        )
        .await
        .map_err(|e| self.check_alive().err().unwrap_or(e))?;
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => Api::namespaced_with(client, &namespace, &ar),
            Scope::Cluster => Api::all_with(client, &ar),
        };
        let obj: DynamicObject = serde_json::from_value(value.clone())?;
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        match api.create(&pp, &obj).await {
            Ok(created) => Ok(created),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let mp = PatchParams {
                    field_manager: Some(FIELD_MANAGER.to_owned()),
                    ..PatchParams::default()
                };
                api.patch(&name, &mp, &Patch::Merge(&value))
                    .await
                    .map_err(|e| self.explain(e))
            }
            Err(e) => Err(self.explain(e)),
        }
    }

    /// Waits until CustomResourceDefinition `name` (`plural.group`) is
    /// Established, i.e. its custom objects can be created.
    pub async fn wait_for_crd_established(&self, name: &str) -> Result<CustomResourceDefinition> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client());
        let api = &api;
        wait_for(
            &format!("CRD {name} to be Established"),
            DEFAULT_WAIT,
            || async move {
                let crd = api.get_opt(name).await?;
                let established = crd
                    .as_ref()
                    .and_then(|c| c.status.as_ref())
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                    });
                Ok(crd.filter(|_| established))
            },
        )
        .await
        .map_err(|e| self.check_alive().err().unwrap_or(e))
    }

    /// Runs `kubectl --kubeconfig <admin> ARGS...` and returns its stdout;
    /// a non-zero exit is an error carrying stderr.
    pub async fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.kubectl_with_stdin(args, None).await
    }

    /// Like [`kubectl`](Self::kubectl), feeding `stdin` (for `apply -f -`).
    pub async fn kubectl_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let kubectl = self.kubectl_path().ok_or(Error::MissingBinary {
            binary: "kubectl",
            looked_in: "WEFT_KUBE_BIN_DIR, PATH".to_owned(),
            env: crate::binaries::BIN_DIR_ENV,
        })?;
        run_kubectl(kubectl, self.kubeconfig_path(), args, stdin).await
    }

    /// Gets a ServiceAccount token for `audiences` through the TokenRequest
    /// API, as the kubelet does for a projected token volume. The API server
    /// allows `expiration_seconds` of at least 600 (default 3600).
    pub async fn request_token(
        &self,
        ns: &str,
        service_account: &str,
        audiences: &[&str],
        expiration_seconds: Option<i64>,
    ) -> Result<String> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client(), ns);
        let req = TokenRequest {
            metadata: ObjectMeta::default(),
            spec: Some(TokenRequestSpec {
                audiences: Some(audiences.iter().map(|a| (*a).to_owned()).collect()),
                expiration_seconds,
                ..TokenRequestSpec::default()
            }),
            status: None,
        };
        let resp = api
            .create_token_request(service_account, &PostParams::default(), &req)
            .await
            .map_err(|e| self.explain(e))?;
        resp.status.and_then(|s| s.token).ok_or_else(|| {
            Error::InvalidObject(format!(
                "TokenRequest for {ns}/{service_account} came back without a token"
            ))
        })
    }

    /// Creates (or replaces) a MutatingWebhookConfiguration. The API server
    /// picks it up within about a second; tests should retry their first
    /// request until the webhook's effect shows (bounded).
    pub async fn register_mutating_webhook(
        &self,
        reg: &WebhookRegistration,
    ) -> Result<MutatingWebhookConfiguration> {
        let api: Api<MutatingWebhookConfiguration> = Api::all(self.client());
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        api.patch(&reg.name, &pp, &Patch::Apply(&reg.to_object()))
            .await
            .map_err(|e| self.explain(e))
    }

    /// Plays the scheduler and the kubelet for Pod `ns/name`: binds it to
    /// [`TEST_NODE_NAME`] (through the `binding` subresource) if it is not
    /// bound yet, then sets phase Running, `podIP`/`podIPs` to `ip`, every
    /// container running and ready, and the Ready condition, through the
    /// status subresource. The endpoints controllers then list the Pod behind
    /// matching Services.
    ///
    /// The API rejects Endpoints addresses in 127.0.0.0/8 and link-local
    /// ranges; use a documentation range such as 192.0.2.0/24 (the address
    /// is only data: nothing connects to it).
    pub async fn set_pod_ready(&self, ns: &str, name: &str, ip: IpAddr) -> Result<Pod> {
        let api: Api<Pod> = Api::namespaced(self.client(), ns);
        let mut pod = api.get(name).await.map_err(|e| self.explain(e))?;
        if pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_none()
        {
            let binding = json!({
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": { "name": name, "namespace": ns },
                "target": { "apiVersion": "v1", "kind": "Node", "name": TEST_NODE_NAME },
            });
            let _: Value = api
                .create_subresource("binding", name, &PostParams::default(), &binding)
                .await
                .map_err(|e| self.explain(e))?;
            pod = api.get(name).await.map_err(|e| self.explain(e))?;
        }
        let now = serde_json::to_value(Time(k8s_openapi::jiff::Timestamp::now()))?;
        let containers = pod
            .spec
            .as_ref()
            .map(|s| s.containers.as_slice())
            .unwrap_or(&[]);
        let statuses: Vec<Value> = containers
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "image": c.image.clone().unwrap_or_default(),
                    "imageID": "",
                    "ready": true,
                    "started": true,
                    "restartCount": 0,
                    "state": { "running": { "startedAt": now } },
                })
            })
            .collect();
        let cond = |t: &str| json!({ "type": t, "status": "True", "lastTransitionTime": now });
        let status = json!({
            "status": {
                "phase": "Running",
                "podIP": ip.to_string(),
                "podIPs": [ { "ip": ip.to_string() } ],
                "startTime": now,
                "conditions": [
                    cond("PodScheduled"),
                    cond("Initialized"),
                    cond("ContainersReady"),
                    cond("Ready"),
                ],
                "containerStatuses": statuses,
            }
        });
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .map_err(|e| self.explain(e))
    }
}

/// What a pod's ServiceAccount volume holds, written to a directory by
/// [`TestControlPlane::service_account_volume`].
#[derive(Debug)]
pub struct ServiceAccountVolume {
    dir: tempfile::TempDir,
    host: String,
    port: String,
}

// === impl ServiceAccountVolume ===

impl ServiceAccountVolume {
    /// The directory holding `token`, `ca.crt` and `namespace` (removed on
    /// drop): copy or mount it at
    /// `/var/run/secrets/kubernetes.io/serviceaccount` for the program.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT` for this
    /// control plane, as a pod's environment has them.
    pub fn env(&self) -> [(&'static str, &str); 2] {
        [
            ("KUBERNETES_SERVICE_HOST", self.host.as_str()),
            ("KUBERNETES_SERVICE_PORT", self.port.as_str()),
        ]
    }
}

impl TestControlPlane {
    /// Deletes Pod `ns/name` at once (grace period 0, like `kubectl delete
    /// --force`): with no kubelet, a graceful delete would never complete.
    /// A Pod that is already gone is fine.
    pub async fn delete_pod_now(&self, ns: &str, name: &str) -> Result<()> {
        let api: Api<Pod> = Api::namespaced(self.client(), ns);
        match api
            .delete(name, &DeleteParams::default().grace_period(0))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(self.explain(e)),
        }
    }

    /// Waits (≤ [`DEFAULT_WAIT`]) until the Endpoints of Service `ns/name`
    /// list every one of `ips` as ready (as the endpoints controller
    /// publishes Pods that [`set_pod_ready`](Self::set_pod_ready) made
    /// ready); returns all the ready IPs. Lets a test act like a rolling
    /// update that removes old Pods only once new ones are available.
    pub async fn wait_for_ready_endpoints(
        &self,
        ns: &str,
        name: &str,
        ips: &[IpAddr],
    ) -> Result<Vec<IpAddr>> {
        let api: Api<Endpoints> = Api::namespaced(self.client(), ns);
        let api = &api;
        wait_for(
            &format!("Endpoints {ns}/{name} to list {ips:?} as ready"),
            DEFAULT_WAIT,
            || async move {
                let ready: Vec<IpAddr> = api
                    .get_opt(name)
                    .await?
                    .into_iter()
                    .flat_map(|e| e.subsets.unwrap_or_default())
                    .flat_map(|s| s.addresses.unwrap_or_default())
                    .filter_map(|a| a.ip.parse().ok())
                    .collect();
                Ok(ips.iter().all(|ip| ready.contains(ip)).then_some(ready))
            },
        )
        .await
        .map_err(|e| self.check_alive().err().unwrap_or(e))
    }

    /// Writes what the kubelet mounts at
    /// `/var/run/secrets/kubernetes.io/serviceaccount` in a pod running as
    /// ServiceAccount `ns/sa` (a one-hour `token` for the API audience from
    /// the TokenRequest API, the cluster `ca.crt`, the `namespace`), plus
    /// the pod environment's `KUBERNETES_SERVICE_HOST`/`PORT`, so a
    /// program's in-cluster configuration can be tested from outside a
    /// pod (the test makes the directory appear at that path, e.g. in a
    /// private mount namespace).
    pub async fn service_account_volume(&self, ns: &str, sa: &str) -> Result<ServiceAccountVolume> {
        let token = self
            .request_token(ns, sa, &[crate::SERVICE_ACCOUNT_ISSUER], Some(3600))
            .await?;
        let dir = tempfile::Builder::new()
            .prefix("weft-sa-volume-")
            .tempdir()
            .map_err(io_err(std::env::temp_dir()))?;
        for (file, contents) in [
            ("token", token.as_str()),
            ("ca.crt", self.ca_pem()),
            ("namespace", ns),
        ] {
            let path = dir.path().join(file);
            std::fs::write(&path, contents).map_err(io_err(&path))?;
        }
        let authority = self.server_url().trim_start_matches("https://").to_owned();
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| Error::InvalidObject(format!("server URL {authority} has no port")))?;
        Ok(ServiceAccountVolume {
            dir,
            host: host.to_owned(),
            port: port.to_owned(),
        })
    }
}

/// Creates the Node that test Pods are bound to, and marks it Ready once.
pub(crate) async fn create_test_node(client: &kube::Client) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    let mut node = Node::default();
    node.metadata.name = Some(TEST_NODE_NAME.to_owned());
    node.metadata.labels = Some(BTreeMap::from([
        (
            "kubernetes.io/hostname".to_owned(),
            TEST_NODE_NAME.to_owned(),
        ),
        ("kubernetes.io/os".to_owned(), "linux".to_owned()),
    ]));
    api.create(&PostParams::default(), &node).await?;
    let now = serde_json::to_value(Time(k8s_openapi::jiff::Timestamp::now()))
        .map_err(kube::Error::SerdeError)?;
    let status = json!({
        "status": {
            "conditions": [{
                "type": "Ready",
                "status": "True",
                "reason": "WeftTestNode",
                "message": "no kubelet: the test harness stands in for it",
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }],
            "addresses": [
                { "type": "InternalIP", "address": "127.0.0.1" },
                { "type": "Hostname", "address": TEST_NODE_NAME },
            ],
        }
    });
    api.patch_status(
        TEST_NODE_NAME,
        &PatchParams::default(),
        &Patch::Merge(&status),
    )
    .await?;
    Ok(())
}

async fn run_kubectl(
    kubectl: &Path,
    kubeconfig: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String> {
    let mut cmd = tokio::process::Command::new(kubectl);
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let shown = args.join(" ");
    let io = |e: std::io::Error| Error::Io {
        path: kubectl.to_owned(),
        source: e,
    };
    let mut child = cmd.spawn().map_err(io)?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).await.map_err(io)?;
        drop(pipe);
    }
    let out = tokio::time::timeout(KUBECTL_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| Error::Timeout {
            what: format!("kubectl {shown}"),
            waited: KUBECTL_TIMEOUT,
        })?
        .map_err(io)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Kubectl {
            args: shown,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}
