//! `weft install | kubectl apply -f -` and `weft uninstall | kubectl delete
//! -f -` for real: the test control plane's kube-apiserver (with its
//! controller-manager, so the Deployment gets its ReplicaSet and Pods) and
//! the version-matched kubectl from `integration/k8s/install.sh`. Fails,
//! never skips, when those are missing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::process::Output;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use weft_kube_harness::{wait_for, TestControlPlane};
use weft_test_support::command::{self, describe};

/// Every kind `weft install` creates, plus what Kubernetes derives from
/// them (ReplicaSets and Pods of the Deployment, Endpoints of the
/// Services), for `kubectl get -l`.
const KINDS: &str = "namespaces,clusterroles,clusterrolebindings,mutatingwebhookconfigurations,\
customresourcedefinitions,serviceaccounts,configmaps,secrets,deployments,replicasets,pods,\
services,endpoints";
const SELECTOR: &str = "app.kubernetes.io/part-of=weft";

fn weft(args: &[&str]) -> Output {
    command::run(env!("CARGO_BIN_EXE_weft"), args).unwrap()
}

fn weft_ok(args: &[&str]) -> String {
    let out = weft(args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "weft {args:?}: {}",
        describe(&out)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn kind_name(o: &Value) -> String {
    format!(
        "{}/{}",
        o["kind"].as_str().unwrap(),
        o["metadata"]["name"].as_str().unwrap()
    )
}

/// The names of labelled objects still in the cluster (Terminating ones
/// included), as `kubectl get -o name` prints them.
async fn labelled(cp: &TestControlPlane) -> weft_kube_harness::Result<Vec<String>> {
    let out = cp
        .kubectl(&[
            "get",
            KINDS,
            "--all-namespaces",
            "-l",
            SELECTOR,
            "-o",
            "name",
        ])
        .await?;
    Ok(out.lines().map(str::to_owned).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_applies_for_real_and_uninstall_removes_every_labelled_object() -> Result<()> {
    let cp = TestControlPlane::start()
        .await
        .context("test control plane failed to start (run integration/k8s/install.sh)")?;
    let kubeconfig = cp.kubeconfig_path().to_str().unwrap().to_owned();

    // Phase 1: the CRDs, validated and stored by the API server.
    let crds = weft_ok(&["install", "--crds"]);
    cp.kubectl_with_stdin(&["apply", "-f", "-"], Some(&crds))
        .await
        .context("applying the CRDs")?;
    let crd_names: Vec<String> = documents(&crds)
        .iter()
        .map(|c| c["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    for name in &crd_names {
        cp.wait_for_crd_established(name).await?;
    }

    // Phase 2: the control plane. The webhook points at a closed port, so
    // pod creation exercises `failurePolicy: Ignore`.
    let args = [
        "install",
        "--set",
        "webhook.externalUrl=https://127.0.0.1:1",
    ];
    let rendered = weft_ok(&args);
    let objects = documents(&rendered);
    let applied = cp
        .kubectl_with_stdin(&["apply", "-f", "-"], Some(&rendered))
        .await
        .context("applying weft install")?;
    ensure!(applied.lines().count() == objects.len(), "{applied}");
    // Each object exists (kubectl fails on a missing one).
    let got = cp
        .kubectl_with_stdin(&["get", "-f", "-", "-o", "name"], Some(&rendered))
        .await?;
    ensure!(got.lines().count() == objects.len(), "{got}");

    // The same manifest again changes nothing.
    let again = cp
        .kubectl_with_stdin(&["apply", "-f", "-"], Some(&rendered))
        .await?;
    ensure!(
        again.lines().all(|l| l.ends_with(" unchanged")),
        "a second apply changed something:\n{again}"
    );
    // A fresh render (new key material) applies over the installed one.
    let fresh = weft_ok(&args);
    cp.kubectl_with_stdin(&["apply", "-f", "-"], Some(&fresh))
        .await
        .context("applying a second weft install")?;

    // HA passes the server's validation too (dry run; the PDB is policy/v1,
    // which this 1.20 server does not serve, so it is left out here).
    let ha = weft_ok(&["install", "--ha", "-o", "json"]);
    let mut ha: Value = serde_json::from_str(&ha)?;
    let items = ha["items"].as_array_mut().unwrap();
    let before = items.len();
    items.retain(|o| o["kind"] != "PodDisruptionBudget");
    ensure!(items.len() == before - 1, "--ha renders one PDB");
    cp.kubectl_with_stdin(
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&ha.to_string()),
    )
    .await
    .context("server-side dry run of weft install --ha")?;

    // The controller-manager turns the Deployment into Pods; being the
    // control plane's own, they do not block uninstall.
    let client_pods = || async {
        let out = cp
            .kubectl(&[
                "get",
                "pods",
                "-n",
                "weft",
                "-l",
                "linkerd.io/control-plane-component=controller",
                "-o",
                "name",
            ])
            .await?;
        Ok((!out.trim().is_empty()).then_some(out))
    };
    wait_for("the controller's Pod", Duration::from_secs(90), client_pods).await?;
    let listed = weft_ok(&["uninstall", "--kubeconfig", &kubeconfig]);
    ensure!(!listed.is_empty());

    // A meshed pod elsewhere: uninstall refuses, naming it.
    cp.create_namespace_for_pods("shop").await?;
    cp.kubectl_with_stdin(
        &["apply", "-f", "-"],
        Some(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: meshed\n  namespace: shop\n  labels:\n    \
             linkerd.io/control-plane-ns: weft\nspec:\n  containers:\n  - name: app\n    image: example.invalid/app\n",
        ),
    )
    .await
    .context("creating a pod with the webhook unreachable (failurePolicy Ignore)")?;
    let out = weft(&["uninstall", "--kubeconfig", &kubeconfig]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(out.stdout.is_empty(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("shop/meshed"), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");

    // --force lists every installed object, CRDs included, for kubectl delete.
    let listed = weft_ok(&["uninstall", "--force", "--kubeconfig", &kubeconfig]);
    let refs = documents(&listed);
    let listed_names: Vec<String> = refs.iter().map(kind_name).collect();
    for o in &objects {
        ensure!(
            listed_names.contains(&kind_name(o)),
            "{} not listed:\n{listed}",
            kind_name(o)
        );
    }
    for name in &crd_names {
        let want = format!("CustomResourceDefinition/{name}");
        ensure!(listed_names.contains(&want), "{want} not listed:\n{listed}");
    }
    ensure!(refs.len() == objects.len() + crd_names.len(), "{listed}");
    let json = weft_ok(&[
        "uninstall",
        "--force",
        "-o",
        "json",
        "--kubeconfig",
        &kubeconfig,
    ]);
    let list: Value = serde_json::from_str(&json)?;
    ensure!(list["kind"] == "List" && list["items"].as_array().unwrap().len() == refs.len());

    cp.kubectl_with_stdin(&["delete", "-f", "-"], Some(&listed))
        .await
        .context("kubectl delete of weft uninstall")?;
    let cp_ref = &cp;
    wait_for(
        "no object labelled app.kubernetes.io/part-of=weft",
        Duration::from_secs(180),
        || async move {
            let left = labelled(cp_ref).await?;
            Ok(left.is_empty().then_some(()))
        },
    )
    .await
    .with_context(|| format!("left behind: {:?}", still_labelled(&cp)))?;

    // Nothing left to uninstall: an empty listing, and a note on stderr.
    let out = weft(&["uninstall", "--force", "--kubeconfig", &kubeconfig]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(out.stdout.is_empty(), "{}", describe(&out));
    // The meshed pod was never the installer's to delete.
    cp.kubectl(&["get", "pod", "-n", "shop", "meshed"]).await?;
    Ok(())
}

/// What is still there, for the failure message (best effort).
fn still_labelled(cp: &TestControlPlane) -> String {
    let Some(kubectl) = cp.kubectl_path() else {
        return "kubectl missing".into();
    };
    let out = std::process::Command::new(kubectl)
        .args([
            "--kubeconfig",
            cp.kubeconfig_path().to_str().unwrap_or_default(),
        ])
        .args([
            "get",
            KINDS,
            "--all-namespaces",
            "-l",
            SELECTOR,
            "-o",
            "name",
        ])
        .output();
    match out {
        Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
        Err(e) => e.to_string(),
    }
}
