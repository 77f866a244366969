//! `weft check` against a real kube-apiserver (the test control plane of
//! `weft-kube-harness`): the real `weft` binary, `weft install | kubectl
//! apply -f -` with the real kubectl, and the cluster then broken in the
//! ways operators break it (an expired issuer, a wrong caBundle, a deleted
//! CRD, a proxy that is not ready) to see `weft check` go red and say why.
//!
//! There is no kubelet: the test plays it with `set_pod_ready`. The tests
//! fail, never skip, when the control plane binaries are missing (run
//! `integration/k8s/install.sh`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Output;
use std::time::{Duration, SystemTime};

use anyhow::{ensure, Context, Result};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use weft_inject::names;
use weft_kube_harness::{wait_for, TestControlPlane, SERVICE_ACCOUNT_ISSUER};
use weft_test_support::command::describe;

/// Every category `weft check` runs without `--pre` / `--proxy`.
const CATEGORIES: [&str; 5] = [
    "kubernetes-api",
    "kubernetes-version",
    "weft-existence",
    "weft-identity",
    "weft-webhooks-and-apisvc-tls",
];

/// Upper bound on one run of the `weft` binary.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

async fn start() -> Result<TestControlPlane> {
    TestControlPlane::start()
        .await
        .context("test control plane failed to start (run integration/k8s/install.sh)")
}

/// Runs `weft ARGS --kubeconfig <admin>` (bounded).
async fn weft(plane: &TestControlPlane, args: &[&str]) -> Result<Output> {
    weft_with(plane.kubeconfig_path(), args).await
}

/// Runs `weft ARGS --kubeconfig KUBECONFIG` (bounded).
async fn weft_with(kubeconfig: &Path, args: &[&str]) -> Result<Output> {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_weft"));
    cmd.args(args).arg("--kubeconfig").arg(kubeconfig);
    cmd.kill_on_drop(true);
    tokio::time::timeout(RUN_TIMEOUT, cmd.output())
        .await
        .context("weft did not finish in time")?
        .context("cannot run weft")
}

/// Runs `weft install ARGS` (it reads nothing from the cluster) and
/// returns what it printed.
async fn render(args: &[&str]) -> Result<String> {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .arg("install")
        .args(args)
        .output()
        .await?;
    ensure!(out.status.success(), "weft install: {}", describe(&out));
    Ok(String::from_utf8(out.stdout)?)
}

/// `weft install --crds | kubectl apply -f -`, then `weft install |
/// kubectl apply -f -`, then plays the kubelet for the controller's pod.
async fn install(plane: &TestControlPlane) -> Result<()> {
    let crds = render(&["--crds"]).await?;
    plane
        .kubectl_with_stdin(&["apply", "-f", "-"], Some(&crds))
        .await?;
    for crd in weft_smi_crds::crds()? {
        plane
            .wait_for_crd_established(crd.metadata.name.as_deref().unwrap_or_default())
            .await?;
    }
    let control_plane = render(&[]).await?;
    plane
        .kubectl_with_stdin(&["apply", "-f", "-"], Some(&control_plane))
        .await?;

    // The controller-manager turns the Deployment into a pending Pod.
    let pods: Api<Pod> = Api::namespaced(plane.client(), names::NAMESPACE);
    let selector = format!("{}=controller", names::CONTROL_PLANE_COMPONENT_LABEL);
    let pod_name = wait_for("the controller's pod", Duration::from_secs(90), || {
        let pods = pods.clone();
        let selector = selector.clone();
        async move {
            let list = pods.list(&ListParams::default().labels(&selector)).await?;
            Ok(list.items.into_iter().find_map(|p| p.metadata.name))
        }
    })
    .await?;
    plane
        .set_pod_ready(
            names::NAMESPACE,
            &pod_name,
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
        )
        .await?;
    Ok(())
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The descriptions of the lines marked `symbol` (`×`, `‼`).
fn marked(out: &Output, symbol: &str) -> Vec<String> {
    stdout(out)
        .lines()
        .filter_map(|l| l.strip_prefix(symbol))
        .map(|l| l.trim().to_owned())
        .collect()
}

/// Asserts `weft check` exited `code` and that exactly `failed` checks
/// are marked × (in order).
fn expect(out: &Output, code: i32, failed: &[&str]) {
    assert_eq!(out.status.code(), Some(code), "{}", describe(out));
    assert_eq!(marked(out, "×"), failed, "{}", describe(out));
}

/// Replaces the trust anchors ConfigMap and the issuer Secret (as an
/// operator rotating by hand would).
async fn put_identity(plane: &TestControlPlane, anchors: &str, crt: &str, key: &str) -> Result<()> {
    let cms: Api<ConfigMap> = Api::namespaced(plane.client(), names::NAMESPACE);
    let patch = json!({ "data": { names::TRUST_ANCHORS_KEY: anchors } });
    cms.patch(
        names::TRUST_ANCHORS_CONFIG_MAP,
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    let secrets: Api<Secret> = Api::namespaced(plane.client(), names::NAMESPACE);
    let patch =
        json!({ "stringData": { names::ISSUER_CERT_KEY: crt, names::ISSUER_KEY_KEY: key } });
    secrets
        .patch(
            names::ISSUER_SECRET,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}

async fn current_identity(plane: &TestControlPlane) -> Result<(String, String, String)> {
    let cms: Api<ConfigMap> = Api::namespaced(plane.client(), names::NAMESPACE);
    let cm = cms.get(names::TRUST_ANCHORS_CONFIG_MAP).await?;
    let anchors = cm.data.unwrap_or_default()[names::TRUST_ANCHORS_KEY].clone();
    let secrets: Api<Secret> = Api::namespaced(plane.client(), names::NAMESPACE);
    let data = secrets
        .get(names::ISSUER_SECRET)
        .await?
        .data
        .unwrap_or_default();
    let text = |k: &str| String::from_utf8(data[k].0.clone());
    Ok((
        anchors,
        text(names::ISSUER_CERT_KEY)?,
        text(names::ISSUER_KEY_KEY)?,
    ))
}

/// Sets the injector webhook's caBundle.
async fn set_ca_bundle(plane: &TestControlPlane, pem: &[u8]) -> Result<()> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(plane.client());
    let mut mwc = api.get(names::WEBHOOK_CONFIGURATION).await?;
    let hook = mwc
        .webhooks
        .iter_mut()
        .flatten()
        .find(|w| w.name == names::WEBHOOK_NAME)
        .context("no injector webhook")?;
    hook.client_config.ca_bundle = Some(ByteString(pem.to_vec()));
    api.replace(names::WEBHOOK_CONFIGURATION, &PostParams::default(), &mwc)
        .await?;
    Ok(())
}

async fn ca_bundle(plane: &TestControlPlane) -> Result<Vec<u8>> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(plane.client());
    let mwc = api.get(names::WEBHOOK_CONFIGURATION).await?;
    mwc.webhooks
        .into_iter()
        .flatten()
        .find(|w| w.name == names::WEBHOOK_NAME)
        .and_then(|w| w.client_config.ca_bundle)
        .map(|b| b.0)
        .context("no caBundle")
}

#[tokio::test]
async fn check_passes_on_an_install_and_names_what_breaks() -> Result<()> {
    let plane = start().await?;

    // Before install: --pre passes, the plain check fails at once and
    // says the control plane is missing.
    let out = weft(&plane, &["check", "--pre"]).await?;
    expect(&out, 0, &[]);
    let text = stdout(&out);
    for line in [
        "pre-kubernetes-setup",
        "√ control plane namespace does not already exist",
        "√ can create CustomResourceDefinitions",
        "√ can create MutatingWebhookConfigurations",
        "Status check results are √",
    ] {
        assert!(text.contains(line), "missing {line:?}:\n{text}");
    }
    // A user without rights (a ServiceAccount nobody bound a role to):
    // --pre names every kind it may not create.
    plane.create_service_account("default", "nobody").await?;
    let token = plane
        .request_token("default", "nobody", &[SERVICE_ACCOUNT_ISSUER], None)
        .await?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("nobody.kubeconfig");
    std::fs::write(&kubeconfig, plane.token_kubeconfig(&token))?;
    let out = weft_with(&kubeconfig, &["check", "--pre"]).await?;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let failed = marked(&out, "×");
    assert_eq!(failed.len(), 11, "{}", describe(&out));
    assert!(
        failed.contains(&"can create ClusterRoles".to_owned()),
        "{}",
        describe(&out)
    );
    assert!(
        stdout(&out).contains("not allowed to create clusterroles"),
        "{}",
        describe(&out)
    );

    // No --wait: with nothing installed there is nothing to wait for.
    let out = weft(&plane, &["check"]).await?;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        marked(&out, "×").contains(&"control plane Namespace exists".to_owned()),
        "{}",
        describe(&out)
    );

    install(&plane).await?;

    // Installed and the controller's pod ready: every category green.
    let out = weft(&plane, &["check"]).await?;
    expect(&out, 0, &[]);
    assert_eq!(
        marked(&out, "‼"),
        Vec::<String>::new(),
        "{}",
        describe(&out)
    );
    let text = stdout(&out);
    for category in CATEGORIES {
        assert!(
            text.contains(&format!("\n{category}\n{}\n", "-".repeat(category.len()))),
            "no {category} header:\n{text}"
        );
    }
    for line in [
        "√ control plane CustomResourceDefinitions are established and served",
        "√ control plane pods are ready",
        "√ issuer cert is issued by the trust anchor",
        "√ proxy-injector caBundle matches the serving cert",
    ] {
        assert!(text.contains(line), "missing {line:?}:\n{text}");
    }
    assert!(text.ends_with("\nStatus check results are √\n"), "{text}");

    let out = weft(&plane, &["check", "-o", "json"]).await?;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(doc["success"], true, "{doc:#}");
    let names: Vec<&str> = doc["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["categoryName"].as_str().unwrap())
        .collect();
    assert_eq!(names, CATEGORIES);
    for check in doc["categories"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["checks"].as_array().unwrap())
    {
        assert_eq!(check["result"], "success", "{check:#}");
    }

    let out = weft(&plane, &["check", "-o", "short"]).await?;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(stdout(&out), "Status check results are √\n");

    // --pre after install: the namespace is taken.
    let out = weft(&plane, &["check", "--pre"]).await?;
    expect(&out, 1, &["control plane namespace does not already exist"]);
    assert!(stdout(&out).contains("The \"weft\" namespace already exists"));

    // An issuer that expires within 60 days: a warning, exit 0.
    let original = current_identity(&plane).await?;
    let anchor = weft_identity::generate_anchor("cluster.local", Duration::from_secs(365 * 86400))?;
    let short = weft_identity::generate_issuer(
        &anchor.cert_pem,
        &anchor.key_pem,
        "cluster.local",
        Duration::from_secs(30 * 86400),
    )?;
    put_identity(&plane, &anchor.cert_pem, &short.cert_pem, &short.key_pem).await?;
    let out = weft(&plane, &["check", "-o", "short"]).await?;
    expect(&out, 0, &[]);
    assert_eq!(
        marked(&out, "‼"),
        ["issuer cert is valid for at least 60 days"],
        "{}",
        describe(&out)
    );
    assert!(
        stdout(&out).contains("will expire on"),
        "{}",
        describe(&out)
    );
    assert!(stdout(&out).contains("see docs/check.md#weft-identity-issuer for hints"));

    // An expired issuer: red, and it says so.
    let expired = weft_identity::generate_issuer(
        &anchor.cert_pem,
        &anchor.key_pem,
        "cluster.local",
        Duration::from_secs(1),
    )?;
    let wait = expired
        .not_after
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(1100)).await;
    put_identity(
        &plane,
        &anchor.cert_pem,
        &expired.cert_pem,
        &expired.key_pem,
    )
    .await?;
    let out = weft(&plane, &["check"]).await?;
    expect(
        &out,
        1,
        &[
            "issuer cert is within its validity period",
            "issuer cert is issued by the trust anchor",
        ],
    );
    assert!(
        stdout(&out).contains("issuer certificate \"CN=identity.weft.cluster.local\" expired on"),
        "{}",
        describe(&out)
    );
    assert!(stdout(&out).ends_with("Status check results are ×\n"));
    let out = weft(&plane, &["check", "-o", "json"]).await?;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(doc["success"], false);
    let identity = doc["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["categoryName"] == "weft-identity")
        .unwrap();
    let bad = identity["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["description"] == "issuer cert is within its validity period")
        .unwrap();
    assert_eq!(bad["result"], "error");
    assert!(
        bad["error"].as_str().unwrap().contains("expired on"),
        "{bad:#}"
    );
    assert_eq!(bad["hint"], "docs/check.md#weft-identity-issuer");
    put_identity(&plane, &original.0, &original.1, &original.2).await?;

    // A caBundle that does not sign the webhook's certificate.
    let bundle = ca_bundle(&plane).await?;
    set_ca_bundle(&plane, plane.ca_pem().as_bytes()).await?;
    let out = weft(&plane, &["check"]).await?;
    expect(
        &out,
        1,
        &["proxy-injector caBundle matches the serving cert"],
    );
    assert!(
        stdout(&out).contains("does not verify the certificate in Secret weft/weft-injector-tls"),
        "{}",
        describe(&out)
    );
    set_ca_bundle(&plane, &bundle).await?;
    let out = weft(&plane, &["check", "-o", "short"]).await?;
    expect(&out, 0, &[]);

    // A deleted CRD.
    let crds: Api<CustomResourceDefinition> = Api::all(plane.client());
    crds.delete("trafficsplits.split.smi-spec.io", &DeleteParams::default())
        .await?;
    wait_for("the CRD to be gone", Duration::from_secs(30), || {
        let crds = crds.clone();
        async move {
            Ok(crds
                .get_opt("trafficsplits.split.smi-spec.io")
                .await?
                .is_none()
                .then_some(()))
        }
    })
    .await?;
    let out = weft(&plane, &["check"]).await?;
    expect(&out, 1, &["control plane CustomResourceDefinitions exist"]);
    assert!(
        stdout(&out).contains("missing CustomResourceDefinitions: trafficsplits.split.smi-spec.io"),
        "{}",
        describe(&out)
    );
    Ok(())
}

/// A pod as the injector leaves it: labelled as meshed, with a
/// `weft-proxy` container holding `anchors` inline.
fn meshed_pod(name: &str, anchors: &str) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": { names::CONTROL_PLANE_NS_LABEL: names::NAMESPACE, "app": name },
            "annotations": { names::INJECT_ANNOTATION: "enabled" },
        },
        "spec": {
            "containers": [
                { "name": "app", "image": "example.test/app:1" },
                {
                    "name": names::PROXY_CONTAINER,
                    "image": "example.test/weft-proxy:1",
                    "env": [ { "name": "WEFT_PROXY_TRUST_ANCHORS", "value": anchors } ],
                },
            ],
        },
    }))?)
}

#[tokio::test]
async fn proxy_checks_flag_unready_and_stale_proxies() -> Result<()> {
    let plane = start().await?;
    install(&plane).await?;
    plane.create_namespace_for_pods("shop").await?;
    let (anchors, _, _) = current_identity(&plane).await?;
    let pods: Api<Pod> = Api::namespaced(plane.client(), "shop");
    pods.create(&PostParams::default(), &meshed_pod("web", &anchors)?)
        .await?;

    // The proxy is not ready (no kubelet): red after a short wait, and the
    // wait is announced on stderr. The wait is counted from the start of
    // the command, so it must outlast the checks before this one on a
    // loaded machine for the retry to be seen.
    let out = weft(&plane, &["check", "--proxy", "-n", "shop", "--wait", "12s"]).await?;
    expect(&out, 1, &["data plane proxies are ready"]);
    assert!(
        stdout(&out)
            .contains("pod shop/web (phase Pending): container \"weft-proxy\" is not ready"),
        "{}",
        describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("waiting for check to complete"),
        "{}",
        describe(&out)
    );

    // Ready, with the current anchors: green, data plane included.
    plane
        .set_pod_ready("shop", "web", IpAddr::V4(Ipv4Addr::new(192, 0, 2, 20)))
        .await?;
    let out = weft(&plane, &["check", "--proxy", "-n", "shop"]).await?;
    expect(&out, 0, &[]);
    let text = stdout(&out);
    for line in [
        "weft-data-plane\n---------------\n",
        "√ data plane namespace exists",
        "√ data plane proxies are ready",
        "√ data plane proxies certificate match CA",
    ] {
        assert!(text.contains(line), "missing {line:?}:\n{text}");
    }

    // A pod injected with other anchors (from before a rotation): red.
    let other = weft_identity::generate_anchor("cluster.local", Duration::from_secs(86400))?;
    pods.create(&PostParams::default(), &meshed_pod("old", &other.cert_pem)?)
        .await?;
    plane
        .set_pod_ready("shop", "old", IpAddr::V4(Ipv4Addr::new(192, 0, 2, 21)))
        .await?;
    let out = weft(&plane, &["check", "--proxy", "--wait", "0s"]).await?;
    expect(&out, 1, &["data plane proxies certificate match CA"]);
    assert!(
        stdout(&out).contains("pod shop/old was injected with other trust anchors"),
        "{}",
        describe(&out)
    );
    assert!(!stdout(&out).contains("shop/web"), "{}", describe(&out));

    // A namespace that does not exist.
    let out = weft(&plane, &["check", "--proxy", "-n", "nowhere"]).await?;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let failed = marked(&out, "×");
    assert_eq!(
        failed,
        [
            "data plane namespace exists",
            "data plane proxies are ready"
        ],
        "{}",
        describe(&out)
    );
    assert!(
        stdout(&out).contains("No \"weft-proxy\" containers found in the \"nowhere\" namespace")
    );
    Ok(())
}

#[tokio::test]
async fn bad_flags_are_usage_errors() -> Result<()> {
    for args in [
        &["check", "--wait", "soon"][..],
        &["check", "--pre", "--proxy"],
        &["check", "-o", "yaml"],
    ] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_weft"))
            .args(args)
            .output()
            .await?;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
        assert!(out.stdout.is_empty(), "{args:?}: {}", describe(&out));
    }
    Ok(())
}
