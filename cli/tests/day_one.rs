//! The operator's day-one path as one story, on the project's real test
//! control plane (etcd + kube-apiserver + kube-controller-manager) with the
//! real `weft` and `weft-controller` binaries and the real kubectl:
//!
//! 1. `weft install --crds | kubectl apply -f -`, then `weft install
//!    --set webhook.externalUrl=https://127.0.0.1:PORT/inject | kubectl
//!    apply -f -`;
//! 2. `weft-controller` runs as a process exactly as the applied Deployment
//!    says: its mounts are rebuilt from the applied ConfigMaps and Secrets,
//!    its arguments are the container's command (paths and listen
//!    addresses moved to temp dirs and loopback ports, `--kubeconfig`
//!    instead of `--in-cluster`), and it authenticates as ServiceAccount
//!    `weft/weft-controller`, so it has exactly the install's ClusterRole;
//! 3. `weft check` is all √;
//! 4. `kubectl annotate namespace shop linkerd.io/inject=enabled` and a
//!    Deployment: kube-controller-manager creates the pod through the
//!    webhook, and it is stored injected;
//! 5. the control plane's namespace and an opted-out namespace are not
//!    injected;
//! 6. the meshed pod ready → `weft check --proxy` passes;
//! 7. `weft uninstall` refuses while it runs, then `weft uninstall |
//!    kubectl delete -f -` leaves nothing labelled.
//!
//! There is no kubelet: the test plays it (`set_pod_ready`, and deleting
//! terminating pods at once). Fails, never skips, when the control plane
//! binaries or `weft-controller` are missing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Event, Pod, Secret, Volume};
use kube::api::ListParams;
use kube::Api;
use serde_json::Value;
use weft_inject::mutate::{
    IDENTITY_TOKEN_AUDIENCE, IDENTITY_TOKEN_DIR, IDENTITY_TOKEN_EXPIRATION_SECONDS,
    IDENTITY_TOKEN_FILE, IDENTITY_TOKEN_VOLUME,
};
use weft_inject::names;
use weft_kube_harness::{wait_for, TestControlPlane, SERVICE_ACCOUNT_ISSUER};
use weft_test_support::command::describe;
use weft_test_support::{free_addr, metrics};

/// Upper bound on one run of the `weft` binary.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// Upper bound on waiting for the cluster to act (a pod to appear, the
/// controller to become ready, objects to go).
const WAIT: Duration = Duration::from_secs(90);
/// The install label every object of `weft install` carries.
const SELECTOR: &str = "app.kubernetes.io/part-of=weft";
/// The application namespace.
const SHOP: &str = "shop";
/// A namespace that opted out of the webhook.
const OPTED_OUT: &str = "legacy";

// === the weft binary ===

/// Runs `weft ARGS` (bounded), with stdin `input` when given.
async fn weft(args: &[&str], input: Option<&str>) -> Result<Output> {
    use tokio::io::AsyncWriteExt as _;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_weft"));
    cmd.args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().context("cannot run weft")?;
    if let (Some(text), Some(mut pipe)) = (input, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).await?;
    }
    tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
        .await
        .with_context(|| format!("weft {args:?} did not finish in time"))?
        .context("waiting for weft")
}

/// Runs `weft ARGS --kubeconfig <admin>` (bounded).
async fn weft_on(plane: &TestControlPlane, args: &[&str]) -> Result<Output> {
    let kubeconfig = plane.kubeconfig_path().to_str().unwrap();
    let mut all = args.to_vec();
    all.extend(["--kubeconfig", kubeconfig]);
    weft(&all, None).await
}

/// Runs `weft ARGS`, requires exit 0, returns stdout.
async fn weft_ok(args: &[&str]) -> Result<String> {
    let out = weft(args, None).await?;
    ensure!(
        out.status.success(),
        "weft {args:?} failed: {}",
        describe(&out)
    );
    Ok(String::from_utf8(out.stdout)?)
}

// === weft-controller, run the way the Deployment runs it ===

/// `weft-controller` is built beside `weft` (`cargo build -p weft-cli -p
/// weft-controller`); Cargo does not build another package's binaries for
/// this test.
fn controller_bin() -> Result<PathBuf> {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_weft")).with_file_name("weft-controller");
    ensure!(
        bin.is_file(),
        "{} missing: run `cargo build -p weft-cli -p weft-controller` first",
        bin.display()
    );
    Ok(bin)
}

/// The controller process and the files standing in for its pod.
struct Controller {
    child: tokio::process::Child,
    log: PathBuf,
    /// `--admin-addr` (`/ready`, `/metrics`).
    admin: SocketAddr,
    _dir: tempfile::TempDir,
}

// === impl Controller ===

impl Controller {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (≤ [`WAIT`]) for `/ready` on the admin port; fails at once,
    /// with the log, when the process exits.
    async fn wait_ready(&mut self) -> Result<()> {
        let admin = self.admin;
        for _ in 0..(WAIT.as_millis() / 200) {
            if let Some(status) = self.child.try_wait()? {
                bail!("weft-controller exited ({status}):\n{}", self.log());
            }
            if let Ok((200, _)) = weft_test_support::client::get(admin, "/ready").await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!(
            "weft-controller not ready on {admin} within {WAIT:?}:\n{}",
            self.log()
        )
    }

    /// The admin server's `/metrics`.
    async fn metrics(&self) -> Result<String> {
        let (status, body) = weft_test_support::client::get(self.admin, "/metrics").await?;
        ensure!(status == 200, "/metrics answered {status}: {body}");
        Ok(body)
    }

    /// Asserts the controller never logged an RBAC refusal: with exactly
    /// the install's ClusterRole, everything it reads and writes is allowed.
    fn assert_no_rbac_errors(&self) {
        let log = self.log();
        let denied: Vec<&str> = log
            .lines()
            .filter(|l| l.to_ascii_lowercase().contains("forbidden"))
            .collect();
        assert!(
            denied.is_empty(),
            "the controller hit RBAC refusals (the install's ClusterRole misses a permission):\n{}\n\
             --- full log ---\n{log}",
            denied.join("\n")
        );
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            eprintln!("--- weft-controller log ---\n{}", self.log());
        }
    }
}

/// What the kubelet would mount for `volume`: `(path in the mount, bytes)`
/// for each file, read from the applied ConfigMaps and Secrets. Handles the
/// kinds `weft install` uses: `configMap`, `secret` and `projected` (of
/// both), with or without `items`.
async fn volume_files(
    plane: &TestControlPlane,
    ns: &str,
    volume: &Volume,
) -> Result<Vec<(String, Vec<u8>)>> {
    /// Picks `items` (key → path) out of `data`, or every key as its own
    /// file when there are none.
    fn pick(
        data: BTreeMap<String, Vec<u8>>,
        items: Option<&Vec<k8s_openapi::api::core::v1::KeyToPath>>,
        what: &str,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        match items {
            None => Ok(data.into_iter().collect()),
            Some(items) => items
                .iter()
                .map(|i| {
                    let bytes = data
                        .get(&i.key)
                        .with_context(|| format!("{what} has no key {:?}", i.key))?;
                    Ok((i.path.clone(), bytes.clone()))
                })
                .collect(),
        }
    }
    let cms: Api<ConfigMap> = Api::namespaced(plane.client(), ns);
    let secrets: Api<Secret> = Api::namespaced(plane.client(), ns);
    let config_map = |name: String| {
        let cms = cms.clone();
        async move {
            let cm = cms
                .get(&name)
                .await
                .with_context(|| format!("ConfigMap {ns}/{name}"))?;
            Ok::<_, anyhow::Error>(
                cm.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect::<BTreeMap<_, _>>(),
            )
        }
    };
    let secret = |name: String| {
        let secrets = secrets.clone();
        async move {
            let s = secrets
                .get(&name)
                .await
                .with_context(|| format!("Secret {ns}/{name}"))?;
            Ok::<_, anyhow::Error>(
                s.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect::<BTreeMap<_, _>>(),
            )
        }
    };
    let mut files = Vec::new();
    if let Some(cm) = &volume.config_map {
        let data = config_map(cm.name.clone()).await?;
        files.extend(pick(data, cm.items.as_ref(), &cm.name)?);
    } else if let Some(s) = &volume.secret {
        let name = s
            .secret_name
            .clone()
            .context("secret volume without secretName")?;
        let data = secret(name.clone()).await?;
        files.extend(pick(data, s.items.as_ref(), &name)?);
    } else if let Some(p) = &volume.projected {
        for source in p.sources.iter().flatten() {
            if let Some(cm) = &source.config_map {
                let data = config_map(cm.name.clone()).await?;
                files.extend(pick(data, cm.items.as_ref(), &cm.name)?);
            } else if let Some(s) = &source.secret {
                let data = secret(s.name.clone()).await?;
                files.extend(pick(data, s.items.as_ref(), &s.name)?);
            } else {
                bail!(
                    "volume {}: unexpected projected source {source:?}",
                    volume.name
                );
            }
        }
    } else {
        bail!(
            "volume {}: a kind this test cannot mount: {volume:?}",
            volume.name
        );
    }
    Ok(files)
}

/// Starts `weft-controller` as the applied Deployment `weft/weft-controller`
/// would run it in a pod: every volume mount rebuilt under a temp dir from
/// the API server's ConfigMaps and Secrets, the container's command with
/// mount paths moved there, `--in-cluster` replaced by `--kubeconfig` with
/// a ServiceAccount token of `weft/weft-controller`, each `--*-addr` on
/// loopback (`--webhook-addr` on `webhook`, the port the webhook
/// configuration's URL names), and the container's env.
async fn start_controller(plane: &TestControlPlane, webhook: SocketAddr) -> Result<Controller> {
    let bin = controller_bin()?;
    let ns = names::NAMESPACE;
    let deploys: Api<Deployment> = Api::namespaced(plane.client(), ns);
    let deploy = deploys.get(names::CONTROLLER_DEPLOYMENT).await?;
    let pod = deploy
        .spec
        .template
        .spec
        .context("the Deployment has no pod spec")?;
    ensure!(
        pod.service_account_name.as_deref() == Some(names::CONTROLLER_SERVICE_ACCOUNT),
        "the controller pod runs as {:?}",
        pod.service_account_name
    );
    let container: &Container = pod
        .containers
        .iter()
        .find(|c| c.name == "weft-controller")
        .context("no weft-controller container")?;
    let dir = tempfile::tempdir()?;

    // The mounts, as the kubelet would write them.
    let mut mounts: Vec<(String, PathBuf)> = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == m.name)
            .with_context(|| format!("mount {} names no volume", m.name))?;
        let target = dir.path().join(format!("mount-{}", m.name));
        std::fs::create_dir(&target)?;
        for (path, bytes) in volume_files(plane, ns, volume).await? {
            std::fs::write(target.join(path), bytes)?;
        }
        mounts.push((m.mount_path.trim_end_matches('/').to_owned(), target));
    }

    // The ServiceAccount's credentials, as a kubeconfig.
    let token = plane
        .request_token(
            ns,
            names::CONTROLLER_SERVICE_ACCOUNT,
            &[SERVICE_ACCOUNT_ISSUER],
            Some(3600),
        )
        .await?;
    let kubeconfig = dir.path().join("weft-controller.kubeconfig");
    std::fs::write(&kubeconfig, plane.token_kubeconfig(&token))?;

    // The command, rewritten for a process outside a pod.
    let command = container.command.clone().unwrap_or_default();
    ensure!(
        command.first().map(String::as_str) == Some("weft-controller"),
        "unexpected command {command:?}"
    );
    let mut args: Vec<String> = Vec::new();
    let mut admin = None;
    let mut saw_in_cluster = false;
    for arg in &command[1..] {
        let flag = args.last().cloned().unwrap_or_default();
        if arg == "--in-cluster" {
            saw_in_cluster = true;
            args.push("--kubeconfig".into());
            args.push(kubeconfig.display().to_string());
        } else if flag.starts_with("--") && flag.ends_with("-addr") {
            let _: SocketAddr = arg
                .parse()
                .with_context(|| format!("{flag} {arg} is not an address"))?;
            let addr = if flag == "--webhook-addr" {
                webhook
            } else {
                free_addr()
            };
            if flag == "--admin-addr" {
                admin = Some(addr);
            }
            args.push(addr.to_string());
        } else if let Some((mount, target)) = mounts
            .iter()
            .find(|(m, _)| arg == m || arg.starts_with(&format!("{m}/")))
        {
            args.push(format!("{}{}", target.display(), &arg[mount.len()..]));
        } else {
            args.push(arg.clone());
        }
    }
    ensure!(
        saw_in_cluster,
        "the Deployment's command has no --in-cluster: {command:?}"
    );
    let admin = admin.with_context(|| format!("no --admin-addr in {command:?}"))?;
    for flag in ["--webhook-tls-dir", "--values", "--identity-dir"] {
        ensure!(
            args.iter().any(|a| a == flag),
            "the Deployment's command has no {flag}: {command:?}"
        );
    }

    let log = dir.path().join("controller.log");
    let log_file = std::fs::File::create(&log)?;
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.args(&args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .kill_on_drop(true);
    for e in container.env.iter().flatten() {
        let value = e
            .value
            .clone()
            .with_context(|| format!("env {} has no plain value", e.name))?;
        cmd.env(&e.name, value);
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("spawning {}", bin.display()))?;
    let mut controller = Controller {
        child,
        log,
        admin,
        _dir: dir,
    };
    controller.wait_ready().await?;
    Ok(controller)
}

// === pods ===

/// Waits (≤ [`WAIT`]) for a pod matching `selector` in `ns` and returns it.
async fn wait_pod(plane: &TestControlPlane, ns: &str, selector: &str) -> Result<Pod> {
    let pods: Api<Pod> = Api::namespaced(plane.client(), ns);
    let pods = &pods;
    Ok(
        wait_for(&format!("a pod {selector} in {ns}"), WAIT, || async move {
            let list = pods.list(&ListParams::default().labels(selector)).await?;
            Ok(list.items.into_iter().next())
        })
        .await?,
    )
}

/// Every container of `pod` (init containers first).
fn all_containers(pod: &Pod) -> Vec<&Container> {
    let spec = pod.spec.as_ref().unwrap();
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .collect()
}

fn container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    all_containers(pod).into_iter().find(|c| c.name == name)
}

fn env<'a>(c: &'a Container, name: &str) -> Option<&'a str> {
    c.env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.as_deref())
}

fn pod_name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

/// Asserts `pod` has neither Weft container.
fn assert_not_injected(pod: &Pod) {
    let names: Vec<&str> = all_containers(pod)
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["app"],
        "pod {}/{} was injected: {pod:#?}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod_name(pod)
    );
}

/// Asserts the stored pod of Deployment `shop/web` carries the sidecar
/// exactly as the install's values and identity material say.
fn assert_injected(pod: &Pod, anchors: &str) {
    let show = || format!("{pod:#?}");
    let spec = pod.spec.as_ref().unwrap();
    let init = container(pod, names::INIT_CONTAINER)
        .unwrap_or_else(|| panic!("no {} container: {}", names::INIT_CONTAINER, show()));
    assert_eq!(
        init.command
            .as_ref()
            .and_then(|c| c.first())
            .map(String::as_str),
        Some("weft-proxy"),
        "{}",
        show()
    );
    let proxy = container(pod, names::PROXY_CONTAINER)
        .unwrap_or_else(|| panic!("no {} container: {}", names::PROXY_CONTAINER, show()));
    assert!(
        spec.containers.iter().any(|c| c.name == "app"),
        "the app container is gone: {}",
        show()
    );
    for (name, want) in [
        (
            "WEFT_PROXY_WORKLOAD",
            "$(_WEFT_POD_NS)/deployment/web/$(_WEFT_POD_NAME)",
        ),
        ("WEFT_PROXY_TRUST_ANCHORS", anchors),
        (
            "WEFT_PROXY_IDENTITY_ADDR",
            "weft-identity.weft.svc.cluster.local:8080",
        ),
        (
            "WEFT_PROXY_DESTINATION_ADDR",
            "weft-dst.weft.svc.cluster.local:8086",
        ),
        (
            "WEFT_PROXY_IDENTITY_NAME",
            "$(_WEFT_POD_SA).$(_WEFT_POD_NS).serviceaccount.identity.weft.cluster.local",
        ),
        (
            "WEFT_PROXY_CONTROL_IDENTITY",
            "weft-controller.weft.serviceaccount.identity.weft.cluster.local",
        ),
        (
            "WEFT_PROXY_IDENTITY_TOKEN_FILE",
            &format!("{IDENTITY_TOKEN_DIR}/{IDENTITY_TOKEN_FILE}"),
        ),
    ] {
        assert_eq!(env(proxy, name), Some(want), "{name}: {}", show());
    }
    // The downward API the variables above refer to.
    for (name, field) in [
        ("_WEFT_POD_NS", "metadata.namespace"),
        ("_WEFT_POD_NAME", "metadata.name"),
        ("_WEFT_POD_SA", "spec.serviceAccountName"),
    ] {
        let got = proxy
            .env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str());
        assert_eq!(got, Some(field), "{name}: {}", show());
    }
    // The identity token: projected, for the identity audience, mounted
    // where the env says.
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == IDENTITY_TOKEN_VOLUME)
        .unwrap_or_else(|| panic!("no {IDENTITY_TOKEN_VOLUME} volume: {}", show()));
    let token = volume
        .projected
        .as_ref()
        .and_then(|p| p.sources.as_ref())
        .and_then(|s| s.iter().find_map(|s| s.service_account_token.as_ref()))
        .unwrap_or_else(|| panic!("{IDENTITY_TOKEN_VOLUME} is no projected token: {}", show()));
    assert_eq!(
        token.audience.as_deref(),
        Some(IDENTITY_TOKEN_AUDIENCE),
        "{}",
        show()
    );
    assert_eq!(
        token.expiration_seconds,
        Some(IDENTITY_TOKEN_EXPIRATION_SECONDS),
        "{}",
        show()
    );
    assert_eq!(token.path, IDENTITY_TOKEN_FILE, "{}", show());
    assert!(
        proxy
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == IDENTITY_TOKEN_VOLUME && m.mount_path == IDENTITY_TOKEN_DIR),
        "the proxy does not mount {IDENTITY_TOKEN_VOLUME} at {IDENTITY_TOKEN_DIR}: {}",
        show()
    );
    assert_eq!(
        spec.service_account_name.as_deref(),
        Some("web"),
        "{}",
        show()
    );
    // Labelled as meshed by this control plane (what uninstall looks for).
    assert_eq!(
        pod.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(names::CONTROL_PLANE_NS_LABEL))
            .map(String::as_str),
        Some(names::NAMESPACE),
        "{}",
        show()
    );
}

/// `kubectl apply -f -` of a bare pod `name` in `ns`, annotated
/// `linkerd.io/inject: enabled`, so only the webhook's selectors can keep
/// it unmeshed.
async fn create_asking_pod(plane: &TestControlPlane, ns: &str, name: &str) -> Result<Pod> {
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n    \
         app: {name}\n  annotations:\n    linkerd.io/inject: enabled\nspec:\n  containers:\n  \
         - name: app\n    image: example.test/{name}:1\n"
    );
    plane
        .kubectl_with_stdin(&["apply", "-f", "-"], Some(&yaml))
        .await?;
    let pods: Api<Pod> = Api::namespaced(plane.client(), ns);
    Ok(pods.get(name).await?)
}

/// Plays the kubelet for pods being deleted in `ns`: a terminating pod is
/// removed at once (there are no containers to stop).
async fn finish_terminating_pods(
    plane: &TestControlPlane,
    ns: &str,
    selector: &str,
) -> Result<usize> {
    let pods: Api<Pod> = Api::namespaced(plane.client(), ns);
    let params = match selector {
        "" => ListParams::default(),
        s => ListParams::default().labels(s),
    };
    let list = pods.list(&params).await?;
    for p in &list.items {
        if p.metadata.deletion_timestamp.is_some() {
            plane.delete_pod_now(ns, &pod_name(p)).await?;
        }
    }
    Ok(list.items.len())
}

// === what is left ===

/// `kubectl get` of every listable kind, namespaced ones in all namespaces
/// and cluster-scoped ones (CRDs, the webhook configuration, RBAC,
/// namespaces included), for objects with the install label.
async fn labelled_objects(plane: &TestControlPlane) -> Result<Vec<String>> {
    let kinds = plane
        .kubectl(&["api-resources", "--verbs=list", "-o", "name"])
        .await?;
    let kinds: Vec<&str> = kinds
        .lines()
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .collect();
    for must in [
        "customresourcedefinitions.apiextensions.k8s.io",
        "mutatingwebhookconfigurations.admissionregistration.k8s.io",
        "namespaces",
        "pods",
    ] {
        ensure!(
            kinds.contains(&must),
            "kubectl api-resources misses {must}: {kinds:?}"
        );
    }
    let out = plane
        .kubectl(&[
            "get",
            &kinds.join(","),
            "--all-namespaces",
            "-l",
            SELECTOR,
            "-o",
            "name",
        ])
        .await?;
    Ok(out.lines().map(str::to_owned).collect())
}

/// Makes an error of this file's helpers fit [`wait_for`]'s "not yet".
fn harness_err(e: anyhow::Error) -> weft_kube_harness::Error {
    weft_kube_harness::Error::InvalidObject(format!("{e:#}"))
}

/// Lines `weft check` marked × or ‼.
fn not_green(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('×') || l.starts_with('‼'))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn day_one_install_check_inject_uninstall() -> Result<()> {
    let plane = TestControlPlane::start()
        .await
        .context("test control plane failed to start (run integration/k8s/install.sh)")?;
    let kubeconfig = plane.kubeconfig_path().to_str().unwrap().to_owned();
    let pods_in = |ns: &str| Api::<Pod>::namespaced(plane.client(), ns);

    // 1. Install, in Linkerd's two phases, validated by the real API server.
    let crds = weft_ok(&["install", "--crds"]).await?;
    plane
        .kubectl_with_stdin(&["apply", "-f", "-"], Some(&crds))
        .await
        .context("weft install --crds | kubectl apply -f -")?;
    for crd in weft_smi_crds::crds()? {
        plane
            .wait_for_crd_established(crd.metadata.name.as_deref().unwrap_or_default())
            .await?;
    }
    let webhook = free_addr();
    let external_url = format!(
        "webhook.externalUrl=https://{webhook}{}",
        names::WEBHOOK_PATH
    );
    let control_plane = weft_ok(&["install", "--set", &external_url]).await?;
    plane
        .kubectl_with_stdin(&["apply", "-f", "-"], Some(&control_plane))
        .await
        .context("weft install | kubectl apply -f -")?;

    // 2. The controller, with the install's material and RBAC; its pod
    // (made by kube-controller-manager from the Deployment) marked Ready.
    let controller = start_controller(&plane, webhook).await?;
    let controller_pod = wait_pod(
        &plane,
        names::NAMESPACE,
        &format!("{}=controller", names::CONTROL_PLANE_COMPONENT_LABEL),
    )
    .await?;
    plane
        .set_pod_ready(
            names::NAMESPACE,
            &pod_name(&controller_pod),
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
        )
        .await?;

    // 3. weft check: all √, in both output formats.
    let out = weft_on(&plane, &["check", "--wait", "60s"]).await?;
    assert_eq!(out.status.code(), Some(0), "weft check: {}", describe(&out));
    assert!(not_green(&out).is_empty(), "weft check: {}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Status check results are √"),
        "{}",
        describe(&out)
    );
    let out = weft_on(&plane, &["check", "-o", "json", "--wait", "60s"]).await?;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let report: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("weft check -o json: {}", describe(&out)))?;
    assert_eq!(report["success"], true, "{report:#}");
    let results: Vec<&Value> = report["categories"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["checks"].as_array().unwrap())
        .collect();
    assert!(!results.is_empty(), "{report:#}");
    assert!(
        results.iter().all(|c| c["result"] == "success"),
        "{report:#}"
    );

    // 4. The operator meshes a namespace; kube-controller-manager creates
    // the Deployment's pod, through the webhook.
    plane.kubectl(&["create", "namespace", SHOP]).await?;
    plane
        .kubectl(&["annotate", "namespace", SHOP, "linkerd.io/inject=enabled"])
        .await?;
    let web = "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: web\n  namespace: shop\n\
---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  \
replicas: 1\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      \
labels:\n        app: web\n    spec:\n      serviceAccountName: web\n      containers:\n      \
- name: app\n        image: example.test/web:1\n        ports:\n        - containerPort: 8080\n";
    plane
        .kubectl_with_stdin(&["apply", "-f", "-"], Some(web))
        .await?;
    let pod = wait_pod(&plane, SHOP, "app=web").await?;
    let cms: Api<ConfigMap> = Api::namespaced(plane.client(), names::NAMESPACE);
    let anchors = cms
        .get(names::TRUST_ANCHORS_CONFIG_MAP)
        .await?
        .data
        .unwrap_or_default()
        .remove(names::TRUST_ANCHORS_KEY)
        .context("no trust anchors in the ConfigMap")?;
    assert_injected(&pod, &anchors);
    let web_pod = pod_name(&pod);

    let events: Api<Event> = Api::namespaced(plane.client(), SHOP);
    let events = &events;
    wait_for("an Injected Event in shop", WAIT, || async move {
        let list = events.list(&ListParams::default()).await?;
        Ok(list
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("Injected")))
    })
    .await
    .with_context(|| format!("controller log:\n{}", controller.log()))?;
    let text = controller.metrics().await?;
    let injected = metrics::sum(
        &text,
        "proxy_inject_admission_responses_total",
        &[("skip", "false"), ("namespace", SHOP)],
    );
    assert!(injected >= 1.0, "no injection counted:\n{text}");
    controller.assert_no_rbac_errors();

    // 5. Pods the webhook must not even see, although they ask for a proxy:
    // the control plane's namespace, and a namespace that opted out.
    let in_weft = create_asking_pod(&plane, names::NAMESPACE, "visitor").await?;
    assert_not_injected(&in_weft);
    plane.kubectl(&["create", "namespace", OPTED_OUT]).await?;
    plane
        .kubectl(&[
            "label",
            "namespace",
            OPTED_OUT,
            &format!("{}=disabled", names::ADMISSION_WEBHOOKS_LABEL),
        ])
        .await?;
    plane
        .kubectl(&[
            "annotate",
            "namespace",
            OPTED_OUT,
            "linkerd.io/inject=enabled",
        ])
        .await?;
    let opted_out = create_asking_pod(&plane, OPTED_OUT, "old-app").await?;
    assert_not_injected(&opted_out);
    let text = controller.metrics().await?;
    for ns in [names::NAMESPACE, OPTED_OUT] {
        let asked = metrics::sum(
            &text,
            "proxy_inject_admission_requests_total",
            &[("namespace", ns)],
        );
        assert_eq!(
            asked, 0.0,
            "the webhook was called for namespace {ns}:\n{text}"
        );
    }

    // 6. The meshed pod running: the data plane checks pass for it.
    plane
        .set_pod_ready(SHOP, &web_pod, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 20)))
        .await?;
    let out = weft_on(&plane, &["check", "--proxy", "--wait", "60s"]).await?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "weft check --proxy: {}",
        describe(&out)
    );
    assert!(not_green(&out).is_empty(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in [
        "√ data plane proxies are ready",
        "√ data plane proxies certificate match CA",
    ] {
        assert!(
            stdout.contains(line),
            "missing {line:?}: {}",
            describe(&out)
        );
    }
    controller.assert_no_rbac_errors();

    // 7. Uninstall: refused while shop/web runs meshed.
    let out = weft_on(&plane, &["uninstall"]).await?;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(out.stdout.is_empty(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{SHOP}/{web_pod}")),
        "uninstall does not name the meshed pod: {}",
        describe(&out)
    );

    // The workload goes (the test plays the kubelet for its pods).
    plane
        .kubectl(&["delete", "deployment", "web", "-n", SHOP, "--wait=false"])
        .await?;
    let plane_ref = &plane;
    wait_for("the pods of shop/web to be gone", WAIT, || async move {
        let left = finish_terminating_pods(plane_ref, SHOP, "app=web")
            .await
            .map_err(harness_err)?;
        Ok((left == 0).then_some(()))
    })
    .await?;

    // Now uninstall lists the control plane; kubectl deletes it, waiting for
    // each object while the "kubelet" finishes the controller's pod.
    let listing = weft_ok(&["uninstall", "--kubeconfig", &kubeconfig]).await?;
    ensure!(!listing.trim().is_empty(), "weft uninstall printed nothing");
    let deleted = AtomicBool::new(false);
    let delete = async {
        let r = plane
            .kubectl_with_stdin(&["delete", "-f", "-"], Some(&listing))
            .await;
        deleted.store(true, Ordering::SeqCst);
        r
    };
    let kubelet = async {
        while !deleted.load(Ordering::SeqCst) {
            let _ = finish_terminating_pods(&plane, names::NAMESPACE, "").await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let (result, ()) = tokio::join!(delete, kubelet);
    result.context("weft uninstall | kubectl delete -f -")?;
    // The controller's pod is gone, so is its process.
    drop(controller);

    let last = std::sync::Mutex::new(Vec::new());
    let last_ref = &last;
    let gone = wait_for(
        "no object labelled app.kubernetes.io/part-of=weft",
        Duration::from_secs(120),
        || async move {
            let left = labelled_objects(plane_ref).await.map_err(harness_err)?;
            let empty = left.is_empty();
            *last_ref.lock().unwrap() = left;
            Ok(empty.then_some(()))
        },
    )
    .await;
    if let Err(e) = gone {
        bail!("{e}; still there: {:?}", last.lock().unwrap());
    }
    // The application's pods outside the mesh were never the installer's.
    pods_in(OPTED_OUT).get("old-app").await?;
    Ok(())
}
