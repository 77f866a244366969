//! The real test node: a kubelet, containerd and kube-proxy beside the test
//! control plane. One test, because there is one node per machine; it fails,
//! never skips, when a prerequisite is missing (run
//! `integration/k8s/install.sh` and `install/image.sh`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use weft_kube_harness::{wait_for, TestNode};

const APP: &str = "localhost/weft/test-app:0.1.0";

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "weft_kube_harness=info".into()),
        )
        .with_test_writer()
        .try_init();
}

fn manifests() -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: smoke
---
apiVersion: v1
kind: Pod
metadata:
  name: server
  namespace: smoke
  labels: {{app: echo}}
spec:
  initContainers:
  - name: init
    image: {APP}
    imagePullPolicy: IfNotPresent
    args: ["--help"]
  containers:
  - name: app
    image: {APP}
    imagePullPolicy: IfNotPresent
    args: ["server", "--port", "8080", "--version", "smoke"]
    env:
    - name: POD_NAME
      valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
    readinessProbe:
      httpGet: {{path: /ready, port: 8080}}
      periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: echo
  namespace: smoke
spec:
  selector: {{app: echo}}
  ports:
  - port: 80
    targetPort: 8080
"#
    )
}

fn caller() -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: caller
  namespace: smoke
spec:
  restartPolicy: Never
  containers:
  - name: app
    image: {APP}
    imagePullPolicy: IfNotPresent
    args: ["get", "--url", "http://echo/", "--count", "3", "--retry-until-ok-secs", "60"]
"#
    )
}

async fn pod_json(node: &TestNode, name: &str) -> weft_kube_harness::Result<Value> {
    let out = node
        .kubectl(&["-n", "smoke", "get", "pod", name, "-o", "json"])
        .await?;
    Ok(serde_json::from_str(&out)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_node_runs_pods_and_cleans_up() -> Result<()> {
    init_tracing();
    let node = TestNode::start()
        .await
        .context("the test node failed to start")?;
    println!("test node started in {:.1?}", node.started_in());

    node.kubectl_with_stdin(&["apply", "-f", "-"], Some(&manifests()))
        .await?;
    // The kubelet ran the init container, then the app; CNI gave it an
    // address on the node's bridge; the readiness probe reached it.
    let server = wait_for(
        "pod smoke/server Ready",
        Duration::from_secs(120),
        || async {
            let pod = pod_json(&node, "server").await?;
            let ready = pod["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            Ok(ready.then_some(pod))
        },
    )
    .await?;
    let ip = server["status"]["podIP"].as_str().unwrap_or_default();
    ensure!(
        ip.starts_with("10.212.0."),
        "pod IP {ip:?} is not from the node's pod range"
    );
    let init = &server["status"]["initContainerStatuses"][0]["state"]["terminated"];
    ensure!(
        init["exitCode"] == 0,
        "init container did not complete: {init}"
    );

    // Cluster DNS (the Service's name) and kube-proxy (its ClusterIP) from
    // another pod.
    let started = Instant::now();
    node.kubectl_with_stdin(&["apply", "-f", "-"], Some(&caller()))
        .await?;
    let phase = wait_for(
        "pod smoke/caller to finish",
        Duration::from_secs(120),
        || async {
            let pod = pod_json(&node, "caller").await?;
            let phase = pod["status"]["phase"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            Ok(["Succeeded", "Failed"]
                .contains(&phase.as_str())
                .then_some(phase))
        },
    )
    .await?;
    let logs = node
        .kubectl(&["-n", "smoke", "logs", "caller"])
        .await
        .context("kubectl logs (the API server reaching the kubelet)")?;
    ensure!(
        phase == "Succeeded" && logs.contains(r#""ok":3"#),
        "caller ended {phase}; its log:\n{logs}"
    );
    println!(
        "a pod reached a Service by name in {:.1?}",
        started.elapsed()
    );

    // kubectl exec, through the kubelet, into the pod's own network.
    let out = node
        .kubectl(&[
            "-n",
            "smoke",
            "exec",
            "server",
            "-c",
            "app",
            "--",
            "weft-test-app",
            "get",
            "--url",
            "http://127.0.0.1:8080/",
        ])
        .await
        .context("kubectl exec")?;
    ensure!(out.contains(r#""ok":1"#), "exec output: {out}");

    drop(node);
    let left = TestNode::leftovers();
    ensure!(left.is_empty(), "the node left things behind: {left:#?}");
    Ok(())
}
