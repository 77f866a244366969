#![allow(clippy::unwrap_used)]
//! The proxy injector end to end: the project's real test control plane
//! (etcd + kube-apiserver + kube-controller-manager), the real
//! `weft-controller` binary with `--kubeconfig --webhook-tls-dir`,
//! registered as a MutatingWebhookConfiguration by `url:` the way `weft
//! install` registers it (webhook.externalUrl), and pods created through
//! the API server as `kubectl` would. There is no kubelet: pods stay
//! Pending, and the tests read back what the API server stored.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, WebhookClientConfig,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Namespace, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::ByteString;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use support::{free_addr, identity_dir, metric, Controller};
use weft_inject::names;
use weft_kube_harness::{TestCa, TestControlPlane, FIELD_MANAGER};

const WAIT: Duration = Duration::from_secs(60);
/// The namespace annotated `linkerd.io/inject: enabled`.
const NS: &str = "shop";

/// A running injector: control plane, controller and its files.
struct Setup {
    plane: TestControlPlane,
    ctl: Controller,
    identity: tempfile::TempDir,
    tls: tempfile::TempDir,
    ca: TestCa,
    webhook: SocketAddr,
}

/// Writes `tls.crt`/`tls.key` into `dir` the way the kubelet updates a
/// mounted Secret: new files, then one rename.
fn write_tls(dir: &Path, cert: &str, key: &str) {
    for (name, text) in [("tls.crt", cert), ("tls.key", key)] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

/// Starts everything and registers the webhook; returns once a probe pod
/// comes back injected (the API server picks up webhook configurations
/// asynchronously).
async fn setup() -> Setup {
    setup_with(&[]).await
}

/// [`setup`], with more controller flags.
async fn setup_with(extra: &[&str]) -> Setup {
    let plane = TestControlPlane::start().await.unwrap();
    let identity = identity_dir();
    let ca = TestCa::new("weft-injector-test-ca").unwrap();
    let leaf = ca.issue_server(&["127.0.0.1"]).unwrap();
    let tls = tempfile::tempdir().unwrap();
    write_tls(tls.path(), &leaf.cert_pem, &leaf.key_pem);
    let webhook = free_addr();
    let webhook_flag = webhook.to_string();
    let mut flags = vec![
        "--kubeconfig",
        plane.kubeconfig_path().to_str().unwrap(),
        "--webhook-tls-dir",
        tls.path().to_str().unwrap(),
        "--webhook-addr",
        &webhook_flag,
    ];
    flags.extend_from_slice(extra);
    let ctl = Controller::start(identity.path(), &flags).await.unwrap();
    let url = format!("https://{webhook}{}", names::WEBHOOK_PATH);
    register(&plane, &url, &ca.cert_pem()).await;
    create_namespace(&plane, NS, Some("enabled")).await;
    let setup = Setup {
        plane,
        ctl,
        identity,
        tls,
        ca,
        webhook,
    };
    // Bounded: the configuration is usually live within a second.
    let deadline = Instant::now() + WAIT;
    for i in 0.. {
        let probe = create_pod(
            &setup.plane,
            NS,
            &format!("probe-{i}"),
            json!({}),
            json!({}),
        )
        .await;
        if proxy(&probe).is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the webhook never injected a probe pod:\n{}",
            setup.ctl.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    setup
}

/// The MutatingWebhookConfiguration as `weft install` writes it (with
/// webhook.externalUrl), minus the objectSelector, so the injector's own
/// control-plane check is what keeps control-plane pods uninjected here.
async fn register(plane: &TestControlPlane, url: &str, ca_pem: &str) {
    let config = MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(names::WEBHOOK_CONFIGURATION.into()),
            ..ObjectMeta::default()
        },
        webhooks: Some(vec![MutatingWebhook {
            name: names::WEBHOOK_NAME.into(),
            admission_review_versions: vec!["v1".into(), "v1beta1".into()],
            client_config: WebhookClientConfig {
                url: Some(url.into()),
                ca_bundle: Some(ByteString(ca_pem.as_bytes().to_vec())),
                service: None,
            },
            failure_policy: Some("Ignore".into()),
            namespace_selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: names::ADMISSION_WEBHOOKS_LABEL.into(),
                    operator: "NotIn".into(),
                    values: Some(vec!["disabled".into()]),
                }]),
                match_labels: None,
            }),
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec![String::new()]),
                api_versions: Some(vec!["v1".into()]),
                operations: Some(vec!["CREATE".into()]),
                resources: Some(vec!["pods".into()]),
                scope: None,
            }]),
            side_effects: "None".into(),
            timeout_seconds: Some(10),
            ..MutatingWebhook::default()
        }]),
    };
    let api: Api<MutatingWebhookConfiguration> = Api::all(plane.client());
    api.patch(
        names::WEBHOOK_CONFIGURATION,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&config),
    )
    .await
    .unwrap();
}

/// Creates namespace `name` (annotated `linkerd.io/inject: VALUE`) and
/// waits for its default ServiceAccount.
async fn create_namespace(plane: &TestControlPlane, name: &str, inject: Option<&str>) {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            annotations: inject
                .map(|v| BTreeMap::from([(names::INJECT_ANNOTATION.to_owned(), v.to_owned())])),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    let api: Api<Namespace> = Api::all(plane.client());
    api.create(&PostParams::default(), &ns).await.unwrap();
    plane
        .wait_for_service_account(name, "default")
        .await
        .unwrap();
}

/// Creates a one-container pod and returns it as stored.
async fn create_pod(
    plane: &TestControlPlane,
    ns: &str,
    name: &str,
    metadata: Value,
    spec: Value,
) -> Pod {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"containers": [{"name": "app", "image": "example.com/app:1", "ports": [{"containerPort": 8080}]}]},
    });
    merge(&mut pod["metadata"], metadata);
    merge(&mut pod["spec"], spec);
    let pod: Pod = serde_json::from_value(pod).unwrap();
    let api: Api<Pod> = Api::namespaced(plane.client(), ns);
    api.create(&PostParams::default(), &pod).await.unwrap()
}

fn merge(base: &mut Value, overlay: Value) {
    if let (Some(b), Value::Object(o)) = (base.as_object_mut(), overlay) {
        for (k, v) in o {
            b.insert(k, v);
        }
    }
}

/// The proxy container, wherever the mutation put it.
fn proxy(pod: &Pod) -> Option<&Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == names::PROXY_CONTAINER)
}

fn init(pod: &Pod) -> Option<&Container> {
    let spec = pod.spec.as_ref()?;
    spec.init_containers
        .iter()
        .flatten()
        .find(|c| c.name == names::INIT_CONTAINER)
}

fn env<'a>(c: &'a Container, name: &str) -> Option<&'a str> {
    c.env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.as_deref())
}

fn proxy_count(pod: &Pod) -> usize {
    let spec = pod.spec.as_ref().unwrap();
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .filter(|c| c.name == names::PROXY_CONTAINER || c.name == names::INIT_CONTAINER)
        .count()
}

/// The injector's Events in `ns`.
async fn events(plane: &TestControlPlane, ns: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(plane.client(), ns);
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("weft-controller"))
        .collect()
}

/// Waits for an Event with `reason` regarding `name` whose note has `note`.
async fn wait_for_event(
    plane: &TestControlPlane,
    ns: &str,
    name: &str,
    reason: &str,
    note: &str,
) -> Event {
    let deadline = Instant::now() + WAIT;
    loop {
        let all = events(plane, ns).await;
        if let Some(e) = all.iter().find(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                && e.note.as_deref().unwrap_or_default().contains(note)
        }) {
            return e.clone();
        }
        let seen: Vec<String> = all
            .iter()
            .map(|e| {
                format!(
                    "{:?} {:?}: {:?}",
                    e.regarding.as_ref().and_then(|r| r.name.clone()),
                    e.reason,
                    e.note
                )
            })
            .collect();
        assert!(
            Instant::now() < deadline,
            "no {reason} Event on {name} with {note:?} within {WAIT:?}; have {seen:#?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_injected_skipped_and_configured_through_the_api_server() {
    let s = setup().await;
    let plane = &s.plane;
    let anchors = weft_identity::IdentityDir::new(s.identity.path())
        .read_trust_anchors_pem()
        .unwrap();

    // --- A bare pod in the annotated namespace: injected as specified.
    let pod = create_pod(plane, NS, "web", json!({}), json!({})).await;
    let p = proxy(&pod).expect("weft-proxy injected").clone();
    let spec = pod.spec.clone().unwrap();
    assert!(spec.containers.iter().any(|c| c.name == "app"), "app kept");
    // Kubernetes 1.20 has no native sidecars: the proxy is the first
    // container, holding the app with its postStart hook.
    assert_eq!(spec.containers[0].name, names::PROXY_CONTAINER);
    assert!(
        p.lifecycle
            .as_ref()
            .and_then(|l| l.post_start.as_ref())
            .is_some(),
        "proxy-await postStart"
    );
    let init_c = init(&pod).expect("weft-init injected");
    let caps = init_c
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref())
        .and_then(|c| c.add.clone())
        .unwrap_or_default();
    assert_eq!(caps, ["NET_ADMIN", "NET_RAW"], "{init_c:?}");
    assert_eq!(p.command.as_deref(), Some(&["weft-proxy".to_owned()][..]));
    for (name, want) in [
        ("WEFT_PROXY_INBOUND_ADDR", "0.0.0.0:4143"),
        ("WEFT_PROXY_OUTBOUND_ADDR", "127.0.0.1:4140"),
        ("WEFT_PROXY_ADMIN_ADDR", "0.0.0.0:4191"),
        (
            "WEFT_PROXY_DESTINATION_ADDR",
            "weft-dst.weft.svc.cluster.local:8086",
        ),
        (
            "WEFT_PROXY_IDENTITY_ADDR",
            "weft-identity.weft.svc.cluster.local:8080",
        ),
        (
            "WEFT_PROXY_IDENTITY_NAME",
            "$(_WEFT_POD_SA).$(_WEFT_POD_NS).serviceaccount.identity.weft.cluster.local",
        ),
        (
            "WEFT_PROXY_IDENTITY_TOKEN_FILE",
            "/var/run/weft/identity/token",
        ),
        (
            "WEFT_PROXY_CONTROL_IDENTITY",
            "weft-controller.weft.serviceaccount.identity.weft.cluster.local",
        ),
        ("WEFT_PROXY_WORKLOAD", "$(_WEFT_POD_NS)///$(_WEFT_POD_NAME)"),
    ] {
        assert_eq!(env(&p, name), Some(want), "{name} in {:?}", p.env);
    }
    assert_eq!(env(&p, "WEFT_PROXY_TRUST_ANCHORS"), Some(anchors.as_str()));
    let downward: BTreeMap<&str, &str> = p
        .env
        .iter()
        .flatten()
        .filter_map(|e| {
            let f = e.value_from.as_ref()?.field_ref.as_ref()?;
            Some((e.name.as_str(), f.field_path.as_str()))
        })
        .collect();
    assert_eq!(downward.get("_WEFT_POD_NS"), Some(&"metadata.namespace"));
    assert_eq!(downward.get("_WEFT_POD_NAME"), Some(&"metadata.name"));
    assert_eq!(
        downward.get("_WEFT_POD_SA"),
        Some(&"spec.serviceAccountName")
    );
    let ports: BTreeMap<i32, Option<String>> = p
        .ports
        .iter()
        .flatten()
        .map(|port| (port.container_port, port.name.clone()))
        .collect();
    assert_eq!(ports.get(&4143), Some(&Some("weft-proxy".to_owned())));
    assert_eq!(ports.get(&4191), Some(&Some("weft-admin".to_owned())));
    let path = |probe: &Option<k8s_openapi::api::core::v1::Probe>| {
        probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.clone())
    };
    assert_eq!(path(&p.liveness_probe).as_deref(), Some("/live"));
    assert_eq!(path(&p.readiness_probe).as_deref(), Some("/ready"));
    let sc = p.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_user, Some(2102));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    let token = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "weft-identity-token")
        .expect("identity token volume");
    let projection = token.projected.as_ref().unwrap().sources.as_ref().unwrap()[0]
        .service_account_token
        .clone()
        .unwrap();
    assert_eq!(projection.audience.as_deref(), Some("identity.l5d.io"));
    assert_eq!(projection.expiration_seconds, Some(86_400));
    assert!(
        p.volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == "weft-identity-token" && m.mount_path == "/var/run/weft/identity"),
        "{:?}",
        p.volume_mounts
    );
    assert_eq!(
        pod.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(names::CONTROL_PLANE_NS_LABEL))
            .map(String::as_str),
        Some(names::NAMESPACE)
    );

    // --- Not injected twice: the stored, injected spec created again is
    // skipped and still has one proxy.
    let again = create_pod(
        plane,
        NS,
        "web-again",
        json!({"annotations": pod.metadata.annotations, "labels": pod.metadata.labels}),
        serde_json::to_value(pod.spec.clone().unwrap()).unwrap(),
    )
    .await;
    assert_eq!(
        proxy_count(&again),
        2,
        "one weft-proxy and one weft-init: {:?}",
        again.spec
    );
    wait_for_event(
        plane,
        NS,
        "web-again",
        "InjectionSkipped",
        "sidecar_already_exists",
    )
    .await;

    // --- A Deployment's pods (made by kube-controller-manager through a
    // ReplicaSet) name the Deployment as their workload.
    let deploy: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "shopfront", "namespace": NS},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "shopfront"}},
            "template": {
                "metadata": {"labels": {"app": "shopfront"}},
                "spec": {"containers": [{"name": "app", "image": "example.com/shopfront:1"}]}
            }
        }
    }))
    .unwrap();
    Api::<Deployment>::namespaced(plane.client(), NS)
        .create(&PostParams::default(), &deploy)
        .await
        .unwrap();
    let pods_api: Api<Pod> = Api::namespaced(plane.client(), NS);
    let deadline = Instant::now() + WAIT;
    let deploy_pods = loop {
        let pods = pods_api
            .list(&ListParams::default().labels("app=shopfront"))
            .await
            .unwrap()
            .items;
        if pods.len() >= 2 {
            break pods;
        }
        assert!(
            Instant::now() < deadline,
            "the Deployment's pods never appeared"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for pod in &deploy_pods {
        let p = proxy(pod).expect("Deployment pod injected");
        assert_eq!(
            env(p, "WEFT_PROXY_WORKLOAD"),
            Some("$(_WEFT_POD_NS)/deployment/shopfront/$(_WEFT_POD_NAME)")
        );
    }
    wait_for_event(plane, NS, "shopfront", "Injected", "injected").await;

    // --- Skips: each with its reason in an Event and the metric.
    let disabled = create_pod(
        plane,
        NS,
        "opted-out",
        json!({"annotations": {names::INJECT_ANNOTATION: "disabled"}}),
        json!({}),
    )
    .await;
    assert!(proxy(&disabled).is_none() && init(&disabled).is_none());
    let host = create_pod(plane, NS, "host", json!({}), json!({"hostNetwork": true})).await;
    assert!(proxy(&host).is_none() && init(&host).is_none());
    let cp = create_pod(
        plane,
        NS,
        "cp",
        json!({"labels": {names::CONTROL_PLANE_COMPONENT_LABEL: "controller"}}),
        json!({}),
    )
    .await;
    assert!(proxy(&cp).is_none() && init(&cp).is_none());
    create_namespace(plane, "plain", None).await;
    let plain = create_pod(plane, "plain", "unasked", json!({}), json!({})).await;
    assert!(proxy(&plain).is_none());
    for (name, reason) in [
        ("opted-out", "injection_disable_annotation_present"),
        ("host", "host_network_enabled"),
        ("cp", "control_plane_component"),
    ] {
        let e = wait_for_event(plane, NS, name, "InjectionSkipped", reason).await;
        assert_eq!(e.type_.as_deref(), Some("Normal"));
    }

    // --- Each config annotation changes the spec as documented.
    let default_proxy = p.clone();
    let default_init = init_c.clone();
    let configured = create_pod(
        plane,
        NS,
        "configured",
        json!({"annotations": {
            "config.linkerd.io/skip-inbound-ports": "4567",
            "config.linkerd.io/skip-outbound-ports": "3306",
            "config.linkerd.io/skip-subnets": "203.0.113.0/24",
            "config.linkerd.io/opaque-ports": "4222",
            "config.linkerd.io/proxy-log-level": "warn,weft_proxy=debug",
            "config.linkerd.io/proxy-cpu-request": "150m",
            "config.linkerd.io/proxy-cpu-limit": "1500m",
            "config.linkerd.io/proxy-memory-request": "30Mi",
            "config.linkerd.io/proxy-memory-limit": "300Mi",
            "config.linkerd.io/proxy-await": "disabled",
            "config.linkerd.io/default-inbound-policy": "deny",
            "config.linkerd.io/proxy-require-identity-inbound-ports": "8443",
            "config.linkerd.io/shutdown-grace-period": "45s",
            "config.alpha.linkerd.io/proxy-wait-before-exit-seconds": "7",
        }}),
        json!({}),
    )
    .await;
    let cp_ = proxy(&configured).expect("configured pod injected");
    let ci = init(&configured).unwrap();
    let argv = |c: &Container| {
        let mut all = c.command.clone().unwrap_or_default();
        all.extend(c.args.clone().unwrap_or_default());
        all.join(" ")
    };
    let init_args = argv(ci);
    let default_args = argv(&default_init);
    for needle in ["4567", "3306", "203.0.113.0/24"] {
        assert!(
            init_args.contains(needle) && !default_args.contains(needle),
            "{needle}: {init_args}"
        );
    }
    assert!(env(cp_, "WEFT_PROXY_OPAQUE_PORTS")
        .unwrap()
        .contains("4222"));
    assert_eq!(env(cp_, "WEFT_PROXY_LOG"), Some("warn,weft_proxy=debug"));
    assert_ne!(
        env(&default_proxy, "WEFT_PROXY_LOG"),
        Some("warn,weft_proxy=debug")
    );
    let res = cp_.resources.as_ref().unwrap();
    let q =
        |m: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
         k: &str| { m.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone()) };
    assert_eq!(q(&res.requests, "cpu").as_deref(), Some("150m"));
    assert_eq!(q(&res.limits, "cpu").as_deref(), Some("1500m"));
    assert_eq!(q(&res.requests, "memory").as_deref(), Some("30Mi"));
    assert_eq!(q(&res.limits, "memory").as_deref(), Some("300Mi"));
    assert!(
        cp_.lifecycle
            .as_ref()
            .and_then(|l| l.post_start.as_ref())
            .is_none(),
        "proxy-await disabled"
    );
    assert_eq!(env(cp_, "WEFT_PROXY_DEFAULT_INBOUND_POLICY"), Some("deny"));
    assert!(env(cp_, "WEFT_PROXY_REQUIRE_IDENTITY_PORTS")
        .unwrap()
        .contains("8443"));
    assert_eq!(env(cp_, "WEFT_PROXY_SHUTDOWN_GRACE_PERIOD"), Some("45s"));
    assert_eq!(env(cp_, "WEFT_PROXY_WAIT_BEFORE_EXIT"), Some("7s"));
    for name in [
        "WEFT_PROXY_DEFAULT_INBOUND_POLICY",
        "WEFT_PROXY_SHUTDOWN_GRACE_PERIOD",
        "WEFT_PROXY_WAIT_BEFORE_EXIT",
    ] {
        assert_ne!(
            env(&default_proxy, name),
            env(cp_, name),
            "{name} has a different default"
        );
    }

    // --- A Job's pods: the workload is the Job, and without native
    // sidecars the proxy exits with the app (shared process namespace).
    let job: k8s_openapi::api::batch::v1::Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "migrate", "namespace": NS},
        "spec": {"template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "app", "image": "example.com/migrate:1"}]
        }}}
    }))
    .unwrap();
    Api::<k8s_openapi::api::batch::v1::Job>::namespaced(plane.client(), NS)
        .create(&PostParams::default(), &job)
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let job_pod = loop {
        let pods = pods_api
            .list(&ListParams::default().labels("job-name=migrate"))
            .await
            .unwrap()
            .items;
        if let Some(p) = pods.into_iter().next() {
            break p;
        }
        assert!(Instant::now() < deadline, "the Job's pod never appeared");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let jp = proxy(&job_pod).expect("Job pod injected");
    assert_eq!(
        env(jp, "WEFT_PROXY_WORKLOAD"),
        Some("$(_WEFT_POD_NS)/job/migrate/$(_WEFT_POD_NAME)")
    );
    assert_eq!(env(jp, "WEFT_PROXY_EXIT_WITH_APP"), Some("true"));
    assert_eq!(
        job_pod.spec.as_ref().unwrap().share_process_namespace,
        Some(true)
    );

    // --- A malformed value: the default is used, and a Warning Event
    // names the annotation and the value.
    let banana = create_pod(
        plane,
        NS,
        "banana",
        json!({"annotations": {"config.linkerd.io/proxy-cpu-request": "banana"}}),
        json!({}),
    )
    .await;
    let bp = proxy(&banana).expect("a bad value never blocks injection");
    assert_eq!(
        bp.resources, default_proxy.resources,
        "the default resources"
    );
    let e = wait_for_event(
        plane,
        NS,
        "banana",
        "InvalidInjectionAnnotation",
        "config.linkerd.io/proxy-cpu-request",
    )
    .await;
    assert_eq!(e.type_.as_deref(), Some("Warning"));
    assert!(e.note.as_deref().unwrap().contains("banana"), "{e:?}");

    // --- The metrics count what happened.
    let text = s.ctl.metrics().await;
    let injected = metric(
        &text,
        "proxy_inject_admission_responses_total",
        &["skip=\"false\"", &format!("namespace=\"{NS}\"")],
    );
    assert!(injected >= 6.0, "{text}");
    for (kind, reason) in [
        ("pod", "injection_disable_annotation_present"),
        ("pod", "host_network_enabled"),
        ("pod", "control_plane_component"),
        ("pod", "sidecar_already_exists"),
    ] {
        let n = metric(
            &text,
            "proxy_inject_admission_responses_total",
            &[
                &format!("skip_reason=\"{reason}\""),
                &format!("owner_kind=\"{kind}\""),
                "skip=\"true\"",
            ],
        );
        assert_eq!(n, 1.0, "{reason}: {text}");
    }
    assert_eq!(
        metric(
            &text,
            "proxy_inject_admission_responses_total",
            &["owner_kind=\"deployment\"", "skip=\"false\""]
        ),
        2.0,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "proxy_inject_admission_requests_total",
            &["namespace=\"plain\""]
        ) >= 1.0
    );
    assert_eq!(
        metric(&text, "proxy_inject_admission_errors_total", &[]),
        0.0,
        "{text}"
    );

    // --- Not an AdmissionReview: refused with 400 (the API server then
    // applies failurePolicy), counted as an error; other paths and methods
    // are not served.
    let ca_pem = s.ca.cert_pem();
    let (status, _) = https(s.webhook, &ca_pem, "POST", names::WEBHOOK_PATH, "{nope").await;
    assert_eq!(status, 400);
    let (status, _) = https(s.webhook, &ca_pem, "GET", names::WEBHOOK_PATH, "").await;
    assert_eq!(status, 405);
    let (status, _) = https(s.webhook, &ca_pem, "POST", "/other", "{}").await;
    assert_eq!(status, 404);
    let text = s.ctl.metrics().await;
    assert_eq!(
        metric(
            &text,
            "proxy_inject_admission_errors_total",
            &["reason=\"decode\""]
        ),
        1.0,
        "{text}"
    );

    // --- The serving certificate follows its files: a broken pair keeps
    // the old one, a new pair is served.
    handshake(s.webhook, &s.ca.cert_pem())
        .await
        .expect("serving");
    std::fs::write(s.tls.path().join("tls.crt"), "not a certificate").unwrap();
    s.ctl
        .wait_for_log("keeping the certificate in force", Duration::from_secs(30))
        .await
        .unwrap();
    let still = create_pod(plane, NS, "still-injected", json!({}), json!({})).await;
    assert!(proxy(&still).is_some(), "the old certificate still serves");
    handshake(s.webhook, &s.ca.cert_pem())
        .await
        .expect("the old certificate still serves");
    let ca2 = TestCa::new("weft-injector-test-ca-2").unwrap();
    let leaf2 = ca2.issue_server(&["127.0.0.1"]).unwrap();
    write_tls(s.tls.path(), &leaf2.cert_pem, &leaf2.key_pem);
    s.ctl
        .wait_for_log(
            "webhook serving certificate reloaded",
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    handshake(s.webhook, &ca2.cert_pem())
        .await
        .expect("the new certificate is served");
    assert!(
        handshake(s.webhook, &s.ca.cert_pem()).await.is_err(),
        "the old one is not"
    );

    // --- With the controller stopped, pods are still created, unmodified.
    let mut ctl = s.ctl;
    ctl.terminate();
    assert!(
        ctl.wait_exit(Duration::from_secs(20)).await.is_some(),
        "controller did not stop"
    );
    let orphan = create_pod(plane, NS, "while-down", json!({}), json!({})).await;
    assert!(proxy(&orphan).is_none() && init(&orphan).is_none());
    assert_eq!(orphan.spec.unwrap().containers.len(), 1);
}

/// One HTTP/1.1 request to the webhook over TLS: (status, body).
async fn https(
    addr: SocketAddr,
    ca_pem: &str,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = connect(addr, ca_pem).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A TLS handshake with the webhook, trusting only `ca_pem` for
/// 127.0.0.1.
async fn handshake(addr: SocketAddr, ca_pem: &str) -> anyhow::Result<()> {
    connect(addr, ca_pem).await.map(|_| ())
}

async fn connect(
    addr: SocketAddr,
    ca_pem: &str,
) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
    Ok(tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp)).await??)
}

/// `target/debug/weft`, next to this test's own directory.
fn weft_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join("weft");
    assert!(
        bin.exists(),
        "{} is missing: build the CLI first (cargo build -p weft-cli)",
        bin.display()
    );
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_writes_what_weft_inject_manual_writes() {
    let weft = weft_binary();
    // The same install values for both (as `weft install -f` would have
    // stored them in the weft-config ConfigMap).
    let values = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        values.path(),
        "proxy:\n  logLevel: warn,weft_proxy=trace\n  opaquePorts: \"5432\"\n",
    )
    .unwrap();
    let s = setup_with(&["--values", values.path().to_str().unwrap()]).await;
    let plane = &s.plane;
    let manifest = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {NS}\n  \
             annotations:\n    config.linkerd.io/proxy-log-level: debug\n    \
             config.linkerd.io/skip-outbound-ports: \"3306\"\nspec:\n  containers:\n  \
             - name: app\n    image: example.com/app:1\n    ports:\n    - containerPort: 8080\n"
        )
    };
    // The webhook's version, as stored.
    let pods: Api<Pod> = Api::namespaced(plane.client(), NS);
    let webhook: Pod = serde_yaml::from_str(&manifest("twin")).unwrap();
    let webhook = pods.create(&PostParams::default(), &webhook).await.unwrap();
    let p = proxy(&webhook).expect("the webhook injected the pod");
    assert_eq!(
        env(p, "WEFT_PROXY_LOG"),
        Some("debug"),
        "the pod's annotation wins"
    );
    assert_eq!(
        env(p, "WEFT_PROXY_OPAQUE_PORTS"),
        Some("5432"),
        "from --values"
    );

    // The CLI's version of the same pod (another name), stored through the
    // same API server so both get the same defaults; the webhook skips it.
    let input = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(input.path(), manifest("twin-cli")).unwrap();
    let out = tokio::process::Command::new(&weft)
        .args(["inject", "--manual", "-f"])
        .arg(values.path())
        .arg("--kubeconfig")
        .arg(plane.kubeconfig_path())
        .arg("--identity-trust-anchors-file")
        .arg(s.identity.path().join("ca.crt"))
        .arg(input.path())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "weft inject --manual failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Pod = serde_yaml::from_slice(&out.stdout).unwrap();
    let cli = pods.create(&PostParams::default(), &cli).await.unwrap();
    wait_for_event(
        plane,
        NS,
        "twin-cli",
        "InjectionSkipped",
        "sidecar_already_exists",
    )
    .await;

    // Volume order differs and does not matter: the API server's
    // ServiceAccount admission adds its token volume before the webhook
    // runs, but after `weft inject` wrote its volumes.
    let normalized = |pod: &Pod| {
        let mut spec = pod.spec.clone().unwrap();
        if let Some(v) = spec.volumes.as_mut() {
            v.sort_by(|a, b| a.name.cmp(&b.name));
        }
        spec
    };
    assert_eq!(normalized(&cli), normalized(&webhook), "same spec");
    let strip = |m: &ObjectMeta| (m.annotations.clone(), m.labels.clone());
    assert_eq!(
        strip(&cli.metadata),
        strip(&webhook.metadata),
        "same annotations and labels"
    );
}

/// `config.alpha.linkerd.io/proxy-enable-native-sidecar: "true"` on an API
/// server without native sidecars (the test control plane runs 1.20): the
/// pod must still be created, with a proxy, never rejected because of the
/// annotation (an init container with probes is invalid before 1.29).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_native_sidecar_switch_never_blocks_a_pod() {
    let s = setup().await;
    let pods: Api<Pod> = Api::namespaced(s.plane.client(), NS);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "native", "namespace": NS, "annotations": {
            "config.alpha.linkerd.io/proxy-enable-native-sidecar": "true"
        }},
        "spec": {"containers": [{"name": "app", "image": "example.com/app:1"}]}
    }))
    .unwrap();
    let created = pods.create(&PostParams::default(), &pod).await;
    let created = created.unwrap_or_else(|e| {
        panic!("the API server refused the pod because of the native-sidecar annotation: {e}")
    });
    assert!(proxy(&created).is_some(), "{:?}", created.spec);
}
