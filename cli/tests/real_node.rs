//! The whole mesh on a real node, driven the way an operator drives it:
//! `weft install | kubectl apply -f -`, an annotated namespace, kubectl
//! applies, rollouts and deletes, `weft check`, `weft uninstall`. Nothing is
//! hand-marked: the kubelet runs the pods (init container iptables, projected
//! tokens, probes), kube-proxy serves ClusterIPs, and the harness's DNS
//! answers Service names (see docs/testing.md, "The test node").
//!
//! One test, because there is one node per machine and starting it costs
//! about a minute; each scenario prints a `=== scenario:` line so a failure
//! says where it happened. Fails, never skips, when a prerequisite is
//! missing (`integration/k8s/install.sh`, `install/image.sh`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;
use serde_json::Value;
use weft_kube_harness::{wait_for, TestNode};
use weft_test_support::command::{self, describe};

const NS: &str = "demo";
const APP: &str = "localhost/weft/test-app:0.1.0";
/// The client's load: requests per second to `web`.
const RPS: u32 = 25;

fn scenario(name: &str) {
    println!("\n=== scenario: {name}");
}

/// `weft ARGS --kubeconfig K`, which must exit 0; its stdout.
fn weft(node: &TestNode, args: &[&str]) -> Result<String> {
    let kubeconfig = node.kubeconfig_path().display().to_string();
    let mut full: Vec<&str> = args.to_vec();
    if !["install"].contains(&args[0]) {
        full.extend(["--kubeconfig", &kubeconfig]);
    }
    let out = command::run(env!("CARGO_BIN_EXE_weft"), &full)?;
    ensure!(
        out.status.success(),
        "weft {}: {}",
        full.join(" "),
        describe(&out)
    );
    Ok(String::from_utf8(out.stdout)?)
}

async fn apply(node: &TestNode, yaml: &str) -> Result<String> {
    Ok(node
        .kubectl_with_stdin(&["apply", "-f", "-"], Some(yaml))
        .await?)
}

/// What the helpers polled by [`wait_for`] return.
type KubeResult<T> = weft_kube_harness::Result<T>;

async fn get_json(node: &TestNode, args: &[&str]) -> KubeResult<Value> {
    let mut full = vec!["get"];
    full.extend_from_slice(args);
    full.extend(["-o", "json"]);
    Ok(serde_json::from_str(&node.kubectl(&full).await?)?)
}

async fn rollout_status(node: &TestNode, ns: &str, deployment: &str) -> Result<()> {
    node.kubectl(&[
        "-n",
        ns,
        "rollout",
        "status",
        &format!("deployment/{deployment}"),
        "--timeout=240s",
    ])
    .await
    .with_context(|| format!("rollout of {ns}/{deployment}"))?;
    Ok(())
}

/// The names of the pods matching `selector`, and whether each is Ready
/// with every container ready.
async fn pods(node: &TestNode, ns: &str, selector: &str) -> KubeResult<Vec<Value>> {
    let list = get_json(node, &["-n", ns, "pods", "-l", selector]).await?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}

fn pod_name(pod: &Value) -> String {
    pod["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn is_ready(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
        && pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn container_names(pod: &Value, field: &str) -> Vec<String> {
    pod["spec"][field]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect()
}

/// `GET` through the API server's proxy to a pod's port, as
/// `kubectl get --raw` does.
async fn pod_get(node: &TestNode, pod: &str, port: u16, path: &str) -> KubeResult<String> {
    node.kubectl(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/{NS}/pods/{pod}:{port}/proxy{path}"),
    ])
    .await
}

/// What the load client counted (`weft-test-app client`'s `/stats`).
#[derive(Debug, Deserialize)]
struct Stats {
    total: u64,
    ok: u64,
    failed: u64,
    versions: BTreeMap<String, u64>,
    /// Read only through `{:?}` in failure messages.
    #[allow(dead_code)]
    recent_errors: Vec<String>,
}

struct LoadClient {
    pod: String,
}

impl LoadClient {
    async fn find(node: &TestNode) -> Result<Self> {
        let pods = pods(node, NS, "app=client").await?;
        let pod = pods
            .iter()
            .find(|p| is_ready(p))
            .map(pod_name)
            .context("no Ready client pod")?;
        Ok(Self { pod })
    }

    async fn stats(&self, node: &TestNode) -> KubeResult<Stats> {
        let body = pod_get(node, &self.pod, 8079, "/stats").await?;
        serde_json::from_str(&body).map_err(|e| {
            weft_kube_harness::Error::InvalidObject(format!("client stats {body}: {e}"))
        })
    }

    /// `POST /reset`, tried up to three times: the API server's proxy
    /// reuses idle connections to the pod, and a POST (unlike a GET) is not
    /// retried when the pod closed one just as it was reused ("broken
    /// pipe"). Resetting twice is harmless.
    async fn reset(&self, node: &TestNode) -> KubeResult<()> {
        let path = format!("/api/v1/namespaces/{NS}/pods/{}:8079/proxy/reset", self.pod);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match node
                .kubectl_with_stdin(&["create", "--raw", &path, "-f", "-"], Some("{}"))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if attempt < 3 => {
                    println!("reset failed ({e}); trying again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Resets, then waits until at least `n` requests were counted.
    async fn measure(&self, node: &TestNode, n: u64) -> KubeResult<Stats> {
        self.reset(node).await?;
        let limit = Duration::from_secs(u64::from(n as u32 / RPS) * 4 + 30);
        wait_for(&format!("{n} requests from the client"), limit, || async {
            let s = self.stats(node).await?;
            Ok((s.total >= n).then_some(s))
        })
        .await
    }
}

fn app_manifests() -> String {
    let server = |name: &str, version: &str, replicas: u32, upstream: Option<&str>| {
        let upstream = upstream
            .map(|u| format!(r#", "--upstream", "{u}""#))
            .unwrap_or_default();
        format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {NS}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}, version: "{version}"}}
      annotations:
        # Linkerd's advice for rollouts without errors: the proxy keeps
        # serving until every client has seen the endpoint go.
        config.alpha.linkerd.io/proxy-wait-before-exit-seconds: "5"
    spec:
      terminationGracePeriodSeconds: 30
      containers:
      - name: app
        image: {APP}
        imagePullPolicy: IfNotPresent
        args: ["server", "--port", "8080", "--version", "{version}", "--drain-secs", "3"{upstream}]
        env:
        - name: POD_NAME
          valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
        ports:
        - {{name: http, containerPort: 8080}}
        readinessProbe:
          httpGet: {{path: /ready, port: 8080}}
          periodSeconds: 2
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {NS}
spec:
  selector: {{app: {name}}}
  ports:
  - {{name: http, port: 8080, targetPort: 8080}}
---
"#
        )
    };
    let mut yaml = String::new();
    yaml += &server("web", "web", 2, Some("http://backend:8080/"));
    yaml += &server("backend-v1", "v1", 1, None);
    yaml += &server("backend-v2", "v2", 1, None);
    // The apex Service: both versions behind it until a TrafficSplit
    // says otherwise.
    yaml += &format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: backend
  namespace: {NS}
spec:
  selector: {{tier: backend}}
  ports:
  - {{name: http, port: 8080, targetPort: 8080}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: client
  namespace: {NS}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: client}}
  template:
    metadata:
      labels: {{app: client}}
    spec:
      containers:
      - name: app
        image: {APP}
        imagePullPolicy: IfNotPresent
        args: ["client", "--url", "http://web:8080/", "--rps", "{RPS}", "--stats-port", "8079", "--timeout-ms", "10000"]
        readinessProbe:
          httpGet: {{path: /healthz, port: 8079}}
          periodSeconds: 2
"#
    );
    // Both backend versions also carry `tier: backend`.
    yaml.replace(
        "labels: {app: backend-v1, version: \"v1\"}",
        "labels: {app: backend-v1, version: \"v1\", tier: backend}",
    )
    .replace(
        "labels: {app: backend-v2, version: \"v2\"}",
        "labels: {app: backend-v2, version: \"v2\", tier: backend}",
    )
}

fn namespace() -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: {NS}
  annotations:
    linkerd.io/inject: enabled
"#
    )
}

/// A Pod the injector must mutate, for a server-side dry run.
fn probe_pod() -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: injection-probe
  namespace: {NS}
spec:
  containers:
  - name: app
    image: {APP}
"#
    )
}

fn traffic_split(v1: u32, v2: u32) -> String {
    format!(
        r#"apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata:
  name: backend-split
  namespace: {NS}
spec:
  service: backend
  backends:
  - service: backend-v1
    weight: {v1}
  - service: backend-v2
    weight: {v2}
"#
    )
}

fn job(name: &str, args: &str) -> String {
    format!(
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
  namespace: {NS}
spec:
  backoffLimit: 0
  activeDeadlineSeconds: 180
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: app
        image: {APP}
        imagePullPolicy: IfNotPresent
        args: [{args}]
"#
    )
}

/// Waits for a Job's pod to end; its phase, container states and app log.
async fn job_outcome(node: &TestNode, name: &str) -> Result<(String, Value, String)> {
    let pod = wait_for(
        &format!("job {name}'s pod to end"),
        Duration::from_secs(200),
        || async {
            let pods = pods(node, NS, &format!("job-name={name}")).await?;
            Ok(pods.into_iter().find(|p| {
                ["Succeeded", "Failed"].contains(&p["status"]["phase"].as_str().unwrap_or_default())
            }))
        },
    )
    .await?;
    let log = node
        .kubectl(&["-n", NS, "logs", &pod_name(&pod), "-c", "app"])
        .await
        .unwrap_or_else(|e| format!("(no log: {e})"));
    Ok((
        pod["status"]["phase"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        pod["status"]["containerStatuses"].clone(),
        log,
    ))
}

/// What an operator would look at first: pods, endpoints, events, the
/// controller's log and every meshed pod's proxy log.
async fn print_diagnostics(node: &TestNode) {
    let mut commands: Vec<Vec<String>> = [
        "get pods -A -o wide",
        "get endpoints -A",
        "get events -A --sort-by=.lastTimestamp",
        "-n weft logs deploy/weft-controller --tail=120",
    ]
    .iter()
    .map(|c| c.split(' ').map(str::to_owned).collect())
    .collect();
    if let Ok(pods) = pods(node, NS, "app").await {
        for p in pods {
            for c in ["weft-proxy", "app"] {
                commands.push(
                    ["-n", NS, "logs", &pod_name(&p), "-c", c, "--tail=40"]
                        .map(str::to_owned)
                        .to_vec(),
                );
            }
        }
    }
    for c in commands {
        let args: Vec<&str> = c.iter().map(String::as_str).collect();
        let out = node.kubectl(&args).await.unwrap_or_else(|e| e.to_string());
        println!("--- kubectl {} ---\n{out}", args.join(" "));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_node_whole_mesh() -> Result<()> {
    let node = TestNode::start()
        .await
        .context("the test node failed to start")?;
    println!("test node started in {:.1?}", node.started_in());
    if let Err(e) = scenarios(&node).await {
        println!("scenario failed: {e:#}");
        print_diagnostics(&node).await;
        // To look around by hand before the node goes away:
        // WEFT_NODE_PAUSE_ON_FAILURE=SECONDS (bounded, at most an hour).
        if let Some(secs) = std::env::var("WEFT_NODE_PAUSE_ON_FAILURE")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        {
            println!(
                "paused {secs}s: kubectl --kubeconfig {}",
                node.kubeconfig_path().display()
            );
            tokio::time::sleep(Duration::from_secs(secs.min(3600))).await;
        }
        return Err(e);
    }
    drop(node);
    let left = TestNode::leftovers();
    ensure!(left.is_empty(), "the node left things behind: {left:#?}");
    Ok(())
}

async fn scenarios(node: &TestNode) -> Result<()> {
    scenario("weft install --crds | kubectl apply; weft install | kubectl apply; weft check");
    apply(node, &weft(node, &["install", "--crds"])?).await?;
    apply(node, &weft(node, &["install"])?).await?;
    let started = Instant::now();
    rollout_status(node, "weft", "weft-controller").await?;
    println!("controller Ready {:.1?} after apply", started.elapsed());
    // The webhook is served once the pod is Ready; `weft check` says so.
    let check = wait_for("weft check to pass", Duration::from_secs(60), || async {
        Ok(weft(node, &["check"]).ok())
    })
    .await?;
    println!("{check}");

    scenario("an annotated namespace: every pod injected, Ready 2/2");
    apply(node, &namespace()).await?;
    // The webhook's failure policy is Ignore: until the API server can
    // reach it through the new Service, pods start uninjected. Wait the way
    // an operator can check it: a server-side dry run comes back injected.
    let started = Instant::now();
    wait_for(
        "the injector to mutate a dry-run Pod",
        Duration::from_secs(60),
        || async {
            let out = node
                .kubectl_with_stdin(
                    &["create", "--dry-run=server", "-o", "json", "-f", "-"],
                    Some(&probe_pod()),
                )
                .await?;
            let pod: Value = serde_json::from_str(&out)?;
            Ok(container_names(&pod, "containers")
                .contains(&"weft-proxy".to_owned())
                .then_some(()))
        },
    )
    .await?;
    println!(
        "injector answering {:.1?} after the namespace was created",
        started.elapsed()
    );
    apply(node, &app_manifests()).await?;
    for d in ["backend-v1", "backend-v2", "web", "client"] {
        rollout_status(node, NS, d).await?;
    }
    let all = pods(node, NS, "app").await?;
    ensure!(all.len() == 5, "expected 5 pods, got {}", all.len());
    for pod in &all {
        let name = pod_name(pod);
        let containers = container_names(pod, "containers");
        ensure!(
            containers.contains(&"weft-proxy".to_owned()) && containers.len() == 2,
            "{name} is not injected: containers {containers:?}"
        );
        ensure!(
            container_names(pod, "initContainers").contains(&"weft-init".to_owned()),
            "{name} has no weft-init"
        );
        ensure!(is_ready(pod), "{name} is not Ready");
    }
    println!("{}", weft(node, &["check", "--proxy", "-n", NS])?);

    scenario("traffic goes through the redirect, over mTLS, by identity");
    let client = LoadClient::find(node).await?;
    let s = client.measure(node, 100).await?;
    ensure!(
        s.failed == 0 && s.ok >= 100,
        "client through the mesh: {s:?}"
    );
    let web = pods(node, NS, "app=web").await?;
    let web_pod = pod_name(&web[0]);
    let metrics = pod_get(node, &web_pod, 4191, "/metrics").await?;
    let client_id =
        weft_identity::identity_name("default", NS, weft_identity::DEFAULT_TRUST_DOMAIN)?;
    let inbound = weft_test_support::metrics::sum(
        &metrics,
        "request_total",
        &[
            ("direction", "inbound"),
            ("tls", "true"),
            ("client_id", &client_id),
        ],
    );
    ensure!(
        inbound > 0.0,
        "web's proxy counted no inbound mTLS requests from {client_id}:\n{}",
        metrics
            .lines()
            .filter(|l| l.starts_with("request_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The app sees its connections come from its own proxy (loopback),
    // even for a request from outside the mesh (the API server's proxy).
    let direct: Value = serde_json::from_str(&pod_get(node, &web_pod, 8080, "/").await?)?;
    let peer = direct["peer"].as_str().unwrap_or_default();
    let web_ip = web[0]["status"]["podIP"].as_str().unwrap_or_default();
    ensure!(
        peer.starts_with("127.0.0.1:") || peer.starts_with(&format!("{web_ip}:")),
        "web's app saw a connection from {peer}, not from its own pod ({web_ip})"
    );
    println!("web's proxy: {inbound} inbound mTLS requests from {client_id}; app peer {peer}");

    scenario("golden metrics: weft stat / edges through the API server's service proxy");
    // The controller scrapes every 10 s; a 30 s window holds three scrapes
    // once the pods have been scraped for that long.
    let deadline = Instant::now() + Duration::from_secs(150);
    let rps_ok = |rps: f64| (f64::from(RPS) * 0.5..=f64::from(RPS) * 1.5).contains(&rps);
    let (web, edges) = loop {
        let stat: Vec<Value> = serde_json::from_str(&weft(
            node,
            &["stat", "deploy", "-n", NS, "-t", "30s", "-o", "json"],
        )?)?;
        let edges: Vec<Value> =
            serde_json::from_str(&weft(node, &["edges", "deploy", "-n", NS, "-o", "json"])?)?;
        let web = stat.iter().find(|r| r["name"] == "web").cloned();
        let rps = web.as_ref().and_then(|r| r["rps"].as_f64()).unwrap_or(0.0);
        let secured = edges
            .iter()
            .any(|e| e["src"] == "client" && e["dst"] == "web" && e["secured"] == true);
        if let (Some(web), true, true) = (web, rps_ok(rps), secured) {
            break (web, edges);
        }
        if Instant::now() > deadline {
            let targets = node
                .kubectl(&[
                    "get",
                    "--raw",
                    "/api/v1/namespaces/weft/services/weft-admin:admin/proxy/api/v1/targets",
                ])
                .await
                .unwrap_or_else(|e| e.to_string());
            bail!(
                "weft stat/edges never showed client → web at {RPS} rps over mTLS:\n{stat:#?}\n\
                 {edges:#?}\ntargets: {targets}"
            );
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    };
    let rps = web["rps"].as_f64().unwrap_or(0.0);
    ensure!(web["success"].as_f64() == Some(1.0), "web's success: {web}");
    ensure!(
        web["meshed"]
            .as_str()
            .is_some_and(|m| m.split('/').next() == m.split('/').nth(1)),
        "every web pod is meshed: {web}"
    );
    let edge = edges
        .iter()
        .find(|e| e["src"] == "client" && e["dst"] == "web")
        .context("no client → web edge")?;
    ensure!(
        edge["client_id"] == client_id.as_str(),
        "client_id {} is not {client_id}",
        edge["client_id"]
    );
    println!("weft stat: web {rps:.1} rps, success 100 %; edge client → web secured ({client_id})");

    scenario("SMI TrafficSplit 90/10, then a weight change without restarts");
    apply(node, &traffic_split(900, 100)).await?;
    // Let the split reach the proxies, then measure.
    wait_for("the split to apply", Duration::from_secs(60), || async {
        let s = client.measure(node, 50).await?;
        let v2 = *s.versions.get("v2").unwrap_or(&0) as f64 / s.total.max(1) as f64;
        Ok((v2 < 0.3).then_some(()))
    })
    .await?;
    let s = client.measure(node, 500).await?;
    let share = |s: &Stats, v: &str| *s.versions.get(v).unwrap_or(&0) as f64 / s.ok.max(1) as f64;
    println!(
        "90/10 split over {} requests: v1 {:.3}, v2 {:.3}",
        s.ok,
        share(&s, "v1"),
        share(&s, "v2")
    );
    // 10 % of 500: 3.5 standard deviations either side.
    ensure!(s.failed == 0, "failures under the split: {s:?}");
    ensure!(
        (0.05..=0.15).contains(&share(&s, "v2")) && share(&s, "v1") + share(&s, "v2") > 0.99,
        "v2 share out of bounds: {s:?}"
    );
    apply(node, &traffic_split(0, 1000)).await?;
    let moved = Instant::now();
    wait_for(
        "the new weights to apply",
        Duration::from_secs(60),
        || async {
            let s = client.measure(node, 50).await?;
            Ok((share(&s, "v2") > 0.99).then_some(()))
        },
    )
    .await?;
    println!("weights 0/1000 took effect within {:.1?}", moved.elapsed());
    let s = client.measure(node, 200).await?;
    ensure!(
        s.failed == 0 && share(&s, "v2") > 0.99,
        "after 0/1000: {s:?}"
    );

    scenario("kubectl rollout restart deployment/web under load: zero failures");
    client.reset(node).await?;
    node.kubectl(&["-n", NS, "rollout", "restart", "deployment/web"])
        .await?;
    rollout_status(node, NS, "web").await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let s = client.stats(node).await?;
    println!("rollout restart: {} requests, {} failed", s.total, s.failed);
    ensure!(
        s.total > 0 && s.failed == 0,
        "failures during the rollout: {s:?}"
    );

    scenario("deleting the controller pod under load: zero failures");
    client.reset(node).await?;
    let controller = pods(node, "weft", "app.kubernetes.io/part-of=weft").await?;
    let old: Vec<String> = controller.iter().map(pod_name).collect();
    for p in &old {
        node.kubectl(&["-n", "weft", "delete", "pod", p, "--wait=false"])
            .await?;
    }
    let replaced = wait_for(
        "a new controller pod Ready",
        Duration::from_secs(180),
        || async {
            let now = pods(node, "weft", "app.kubernetes.io/part-of=weft").await?;
            Ok(now
                .iter()
                .find(|p| is_ready(p) && !old.contains(&pod_name(p)))
                .map(pod_name))
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let s = client.stats(node).await?;
    println!(
        "controller replaced by {replaced}: {} requests, {} failed",
        s.total, s.failed
    );
    ensure!(
        s.total > 0 && s.failed == 0,
        "failures while the controller was replaced: {s:?}"
    );

    scenario("a meshed Job completes (the proxy exits with the app)");
    apply(
        node,
        &job(
            "once",
            r#""get", "--url", "http://web:8080/", "--count", "5", "--retry-until-ok-secs", "60""#,
        ),
    )
    .await?;
    let (phase, statuses, log) = job_outcome(node, "once").await?;
    println!("job pod {phase}; app log: {}", log.trim());
    ensure!(
        phase == "Succeeded",
        "job pod ended {phase}: {statuses}\n{log}"
    );
    node.kubectl(&[
        "-n",
        NS,
        "wait",
        "--for=condition=complete",
        "job/once",
        "--timeout=60s",
    ])
    .await?;

    scenario("a server-speaks-first TCP service called from a meshed pod");
    apply(
        node,
        &format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: smtp
  namespace: {NS}
spec:
  selector:
    matchLabels: {{app: smtp}}
  template:
    metadata:
      labels: {{app: smtp}}
    spec:
      containers:
      - name: app
        image: {APP}
        imagePullPolicy: IfNotPresent
        args: ["banner-server", "--port", "2525"]
---
apiVersion: v1
kind: Service
metadata:
  name: smtp
  namespace: {NS}
spec:
  selector: {{app: smtp}}
  ports:
  - {{name: smtp, port: 2525, targetPort: 2525}}
"#
        ),
    )
    .await?;
    rollout_status(node, NS, "smtp").await?;
    apply(
        node,
        &job(
            "banner",
            r#""banner-client", "--addr", "smtp:2525", "--count", "3", "--timeout-ms", "30000""#,
        ),
    )
    .await?;
    let (phase, statuses, log) = job_outcome(node, "banner").await?;
    println!("banner job {phase}: {}", log.trim());
    ensure!(
        phase == "Succeeded",
        "banner job ended {phase}: {statuses}\n{log}"
    );
    let summary: Value = log
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .context("no JSON summary in the banner client's log")?;
    println!(
        "server-speaks-first: banner after {} ms (p50), {} ms (max)",
        summary["banner_ms_p50"], summary["banner_ms_max"]
    );

    scenario("weft uninstall | kubectl delete: nothing left behind");
    node.kubectl(&["delete", "namespace", NS, "--timeout=180s"])
        .await?;
    let objects = weft(node, &["uninstall"])?;
    node.kubectl_with_stdin(&["delete", "--ignore-not-found", "-f", "-"], Some(&objects))
        .await?;
    let left = wait_for("weft's objects to go", Duration::from_secs(180), || async {
        let out = node
            .kubectl(&[
                "get",
                "namespaces,clusterroles,clusterrolebindings,mutatingwebhookconfigurations,\
                 customresourcedefinitions",
                "-l",
                "app.kubernetes.io/part-of=weft",
                "-o",
                "name",
            ])
            .await?;
        let ns = node.kubectl(&["get", "namespaces", "-o", "name"]).await?;
        Ok((out.trim().is_empty() && !ns.contains("namespace/weft\n")).then_some(()))
    })
    .await;
    if let Err(e) = left {
        bail!("weft uninstall left objects behind: {e}");
    }
    Ok(())
}
