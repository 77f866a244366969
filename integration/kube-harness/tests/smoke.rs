//! Smoke tests of the test control plane against real processes: each test
//! starts its own etcd + kube-apiserver (+ kube-controller-manager) on free
//! loopback ports. They fail, never skip, when the binaries are missing: run
//! `integration/k8s/install.sh` first.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Pod, Service, ServiceAccount};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::Api;
use serde_json::json;
use weft_kube_harness::{wait_for, StartOptions, TestCa, TestControlPlane, WebhookRegistration};

mod webhook;

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "weft_kube_harness=info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// API only: no controller-manager, for tests that do not need one.
async fn start_api_only() -> Result<TestControlPlane> {
    init_tracing();
    let opts = StartOptions {
        controller_manager: false,
        ..StartOptions::default()
    };
    TestControlPlane::start_with(opts)
        .await
        .context("test control plane failed to start")
}

async fn start_full() -> Result<TestControlPlane> {
    init_tracing();
    TestControlPlane::start()
        .await
        .context("test control plane failed to start")
}

const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.smoke.weft.io
spec:
  group: smoke.weft.io
  scope: Namespaced
  names:
    plural: widgets
    singular: widget
    kind: Widget
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size:
                type: integer
              colour:
                type: string
"#;

#[tokio::test]
async fn crd_and_custom_object_round_trip() -> Result<()> {
    let plane = start_api_only().await?;
    // CRD and an object of it in one multi-document string: apply waits for
    // the new kind to be served.
    let yaml = format!(
        "{WIDGET_CRD}\n---\napiVersion: smoke.weft.io/v1\nkind: Widget\nmetadata:\n  name: first\n  namespace: default\nspec:\n  size: 3\n  colour: teal\n"
    );
    let applied = plane.apply_yaml(&yaml).await?;
    ensure!(applied.len() == 2, "applied {} objects", applied.len());
    plane
        .wait_for_crd_established("widgets.smoke.weft.io")
        .await?;

    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("smoke.weft.io", "v1", "Widget"),
        "widgets",
    );
    let widgets: Api<DynamicObject> = Api::namespaced_with(plane.client(), "default", &ar);
    let first = widgets.get("first").await?;
    ensure!(first.data["spec"]["size"] == 3, "got {:?}", first.data);
    ensure!(first.data["spec"]["colour"] == "teal");

    // Typed create through the client, read back by list.
    let mut second = DynamicObject::new("second", &ar).within("default");
    second.data = json!({ "spec": { "size": 7, "colour": "plum" } });
    widgets.create(&PostParams::default(), &second).await?;
    let list = widgets.list(&Default::default()).await?;
    let mut names: Vec<_> = list
        .items
        .iter()
        .filter_map(|w| w.metadata.name.clone())
        .collect();
    names.sort();
    ensure!(names == ["first", "second"], "listed {names:?}");
    let got = widgets.get("second").await?;
    ensure!(got.data["spec"]["size"] == 7);

    // Teardown kills exactly our processes and removes the files.
    let pids = plane.pids();
    let dir = plane.dir().map(ToOwned::to_owned).context("no dir")?;
    ensure!(pids.len() == 2, "expected etcd + apiserver, got {pids:?}");
    drop(plane);
    for pid in pids {
        ensure!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} still there after drop"
        );
    }
    ensure!(!dir.exists(), "{} not removed", dir.display());
    Ok(())
}

#[tokio::test]
async fn token_request_then_token_review() -> Result<()> {
    let plane = start_api_only().await?;
    let ns = "identity-smoke";
    plane.create_namespace(ns).await?;
    let sas: Api<ServiceAccount> = Api::namespaced(plane.client(), ns);
    let mut sa = ServiceAccount::default();
    sa.metadata.name = Some("web".into());
    sas.create(&PostParams::default(), &sa).await?;

    let token = plane
        .request_token(ns, "web", &["identity.l5d.io"], Some(600))
        .await?;
    ensure!(token.split('.').count() == 3, "not a JWT: {token}");

    let reviews: Api<TokenReview> = Api::all(plane.client());
    let review = |audience: &str| TokenReview {
        spec: TokenReviewSpec {
            token: token.clone(),
            audiences: Some(vec![audience.to_owned()]),
        },
        ..TokenReview::default()
    };
    let ok = reviews
        .create(&PostParams::default(), &review("identity.l5d.io"))
        .await?;
    let status = ok.status.context("TokenReview without status")?;
    ensure!(
        status.authenticated == Some(true),
        "not authenticated: {status:?}"
    );
    let user = status.user.context("no user")?;
    ensure!(
        user.username.as_deref() == Some("system:serviceaccount:identity-smoke:web"),
        "username {:?}",
        user.username
    );
    ensure!(
        status
            .audiences
            .unwrap_or_default()
            .contains(&"identity.l5d.io".to_owned()),
        "audience not echoed"
    );

    // The same token is not valid for another audience.
    let other = reviews
        .create(&PostParams::default(), &review("some-other-audience"))
        .await?;
    ensure!(
        other.status.and_then(|s| s.authenticated) != Some(true),
        "token accepted for the wrong audience"
    );
    Ok(())
}

const WEB_SERVICE_AND_POD: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: endpoints-smoke
spec:
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: 8080
---
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  namespace: endpoints-smoke
  labels:
    app: web
spec:
  containers:
  - name: app
    image: weft.test/web:1
    ports:
    - containerPort: 8080
"#;

#[tokio::test]
async fn ready_pod_yields_endpoints_from_controller_manager() -> Result<()> {
    let plane = start_full().await?;
    let ns = "endpoints-smoke";
    plane.create_namespace(ns).await?;
    plane.wait_for_service_account(ns, "default").await?;
    plane.apply_yaml(WEB_SERVICE_AND_POD).await?;

    // The controller makes the Endpoints object at once, empty while the Pod
    // has no IP and is not Ready.
    let eps: Api<Endpoints> = Api::namespaced(plane.client(), ns);
    let eps = &eps;
    let empty = wait_for(
        "Endpoints web to exist",
        Duration::from_secs(60),
        || async move { Ok(eps.get_opt("web").await?) },
    )
    .await?;
    ensure!(
        empty.subsets.unwrap_or_default().is_empty(),
        "endpoints before the Pod is ready"
    );

    let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)); // TEST-NET-1: data only
    let pod = plane.set_pod_ready(ns, "web-1", ip).await?;
    ensure!(
        pod.status.and_then(|s| s.pod_ip).as_deref() == Some("192.0.2.10"),
        "pod IP not set"
    );

    let ep = wait_for(
        "Endpoints web to list web-1",
        Duration::from_secs(60),
        || async move {
            let ep = eps.get_opt("web").await?;
            let found = ep.as_ref().is_some_and(|ep| {
                ep.subsets.iter().flatten().any(|s| {
                    s.addresses.iter().flatten().any(|a| {
                        a.ip == "192.0.2.10"
                            && a.target_ref.as_ref().and_then(|t| t.name.as_deref())
                                == Some("web-1")
                    }) && s.ports.iter().flatten().any(|p| p.port == 8080)
                })
            });
            Ok(ep.filter(|_| found))
        },
    )
    .await?;
    tracing::info!(?ep, "endpoints");

    // 1.20 serves EndpointSlices as discovery.k8s.io/v1beta1 only (the
    // controller must fall back to core/v1 Endpoints); the slice controller
    // lists the Pod there too.
    let client = plane.client();
    let v1 = GroupVersionKind::gvk("discovery.k8s.io", "v1", "EndpointSlice");
    ensure!(
        kube::discovery::pinned_kind(&client, &v1).await.is_err(),
        "discovery.k8s.io/v1 is served: not a 1.20 server?"
    );
    let v1beta1 = GroupVersionKind::gvk("discovery.k8s.io", "v1beta1", "EndpointSlice");
    let (ar, _) = kube::discovery::pinned_kind(&client, &v1beta1).await?;
    let slices: Api<DynamicObject> = Api::namespaced_with(client, ns, &ar);
    let slices = &slices;
    wait_for(
        "an EndpointSlice for web listing 192.0.2.10",
        Duration::from_secs(60),
        || async move {
            let list = slices
                .list(&kube::api::ListParams::default().labels("kubernetes.io/service-name=web"))
                .await?;
            let found = list.items.iter().any(|s| {
                s.data["endpoints"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|e| e["addresses"][0] == "192.0.2.10")
            });
            Ok(found.then_some(()))
        },
    )
    .await?;

    // The Service got a cluster IP from the API server.
    let svc = Api::<Service>::namespaced(plane.client(), ns)
        .get("web")
        .await?;
    ensure!(
        svc.spec.and_then(|s| s.cluster_ip).is_some(),
        "no cluster IP"
    );
    Ok(())
}

#[tokio::test]
async fn mutating_webhook_patch_is_applied_on_pod_create() -> Result<()> {
    let plane = start_full().await?;
    let ca = TestCa::new("smoke-webhook-ca")?;
    let calls = Arc::new(AtomicUsize::new(0));
    let server = webhook::serve(&ca, calls.clone()).await?;

    let ns = "webhook-smoke";
    plane
        .create_namespace_with_labels(ns, &[("weft.test/webhook", "on")])
        .await?;
    plane.wait_for_service_account(ns, "default").await?;
    let reg = WebhookRegistration::pods(
        "mutate.smoke.weft.io",
        &format!("https://127.0.0.1:{}/mutate", server.port),
        &ca.cert_pem(),
    )
    .in_namespaces_labelled("weft.test/webhook", "on");
    plane.register_mutating_webhook(&reg).await?;

    // The API server loads webhook configurations asynchronously: create
    // Pods until one comes back mutated (bounded).
    let pods: Api<Pod> = Api::namespaced(plane.client(), ns);
    let attempt = AtomicUsize::new(0);
    let (pods_ref, attempt) = (&pods, &attempt);
    let pod = wait_for(
        "a Pod mutated by the webhook",
        Duration::from_secs(60),
        || async move {
            let n = attempt.fetch_add(1, Ordering::SeqCst);
            let pod: Pod = serde_json::from_value(json!({
                "metadata": { "name": format!("p-{n}"), "labels": { "app": "p" } },
                "spec": { "containers": [ { "name": "app", "image": "weft.test/p:1" } ] }
            }))?;
            let created = pods_ref.create(&PostParams::default(), &pod).await?;
            let mutated = created
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(webhook::ANNOTATION))
                .is_some_and(|v| v == "true");
            Ok(mutated.then_some(created))
        },
    )
    .await?;
    ensure!(calls.load(Ordering::SeqCst) >= 1, "webhook never called");
    // The label the Pod was created with survives the patch.
    ensure!(
        pod.metadata
            .labels
            .unwrap_or_default()
            .get("app")
            .map(String::as_str)
            == Some("p")
    );
    // Pods outside the selected namespace are not sent to the webhook.
    let before = calls.load(Ordering::SeqCst);
    plane
        .apply_yaml(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: plain\n  namespace: default\nspec:\n  containers:\n  - name: app\n    image: weft.test/p:1\n",
        )
        .await?;
    let plain = Api::<Pod>::namespaced(plane.client(), "default")
        .get("plain")
        .await?;
    ensure!(
        !plain
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key(webhook::ANNOTATION),
        "pod outside the namespace selector was mutated"
    );
    ensure!(
        calls.load(Ordering::SeqCst) == before,
        "webhook called for default ns"
    );
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn kubectl_apply_works() -> Result<()> {
    let plane = start_api_only().await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("objects.yaml");
    std::fs::write(
        &file,
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: kubectl-smoke
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: kubectl-smoke
data:
  colour: teal
"#,
    )?;
    let path = file.to_str().context("non-UTF-8 temp path")?;
    let out = plane.kubectl(&["apply", "-f", path]).await?;
    ensure!(out.contains("configmap/settings"), "kubectl said: {out}");
    let cm = Api::<ConfigMap>::namespaced(plane.client(), "kubectl-smoke")
        .get("settings")
        .await?;
    ensure!(
        cm.data
            .unwrap_or_default()
            .get("colour")
            .map(String::as_str)
            == Some("teal")
    );

    // Re-apply with a change, from stdin this time.
    let out = plane
        .kubectl_with_stdin(
            &["apply", "-f", "-"],
            Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: kubectl-smoke\ndata:\n  colour: plum\n"),
        )
        .await?;
    ensure!(out.contains("configured"), "kubectl said: {out}");
    let got = plane
        .kubectl(&[
            "get",
            "configmap",
            "settings",
            "-n",
            "kubectl-smoke",
            "-o",
            "jsonpath={.data.colour}",
        ])
        .await?;
    ensure!(got == "plum", "kubectl get said {got:?}");
    Ok(())
}

#[tokio::test]
async fn failed_start_is_an_error_with_the_log_tail() -> Result<()> {
    init_tracing();
    // A stand-in "kube-apiserver" that complains and exits.
    let dir = tempfile::tempdir()?;
    let fake = dir.path().join("kube-apiserver");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'boom: this is not an API server' >&2\nexit 3\n",
    )?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755))?;
    }
    let mut bins = weft_kube_harness::Binaries::locate()?;
    bins.kube_apiserver = fake;
    let opts = StartOptions {
        controller_manager: false,
        timeout: Duration::from_secs(60),
        binaries: Some(bins),
    };
    let err = match TestControlPlane::start_with(opts).await {
        Ok(_) => anyhow::bail!("start succeeded with a broken kube-apiserver"),
        Err(e) => e.to_string(),
    };
    ensure!(err.contains("kube-apiserver did not become ready"), "{err}");
    ensure!(err.contains("exit status: 3"), "{err}");
    ensure!(err.contains("boom: this is not an API server"), "{err}");
    Ok(())
}
