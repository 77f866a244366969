//! The discovery scenarios of `discovery.rs`, with the controller fed by a
//! real Kubernetes API (the project's test control plane: etcd +
//! kube-apiserver 1.20 + kube-controller-manager) instead of files: Pods
//! made ready with the harness, the endpoints controller building the
//! Endpoints, TrafficSplits applied with kubectl, the controller watching
//! with `--kubeconfig` (or `--in-cluster`), real traffic through a real
//! proxy.
//!
//! The API server rejects loopback Endpoints addresses, so the backends
//! ("pods") live in a network namespace the test creates
//! ([`TestNet`]: a veth pair and one address per pod in `10.214.N.0/24`);
//! the proxy and the load stay in the host namespace and reach them over
//! the veth. No other network is touched. Needs root and `ip`; skipped
//! with a message otherwise.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use weft_kube_harness::{ServiceAccountVolume, TestControlPlane};
use weft_test_support::backend::HttpBackend;
use weft_test_support::controller::{identity, ControllerOptions, ControllerProcess};
use weft_test_support::netns::TestNet;
use weft_test_support::proxy::ProxyProcess;
use weft_test_support::scenario::{self, split_yaml, Discovery, Replica, NS};

/// The port every backend pod listens on (each pod has its own IP).
const POD_PORT: u16 = 8080;

fn proxy_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_weft-proxy"))
}

fn controller_bin() -> PathBuf {
    proxy_bin().with_file_name("weft-controller")
}

/// Why these tests cannot run here, if they cannot.
fn skip() -> bool {
    match TestNet::unavailable() {
        Some(why) => {
            eprintln!(
                "skipping: {why} (the Kubernetes discovery scenarios need a network namespace)"
            );
            true
        }
        None => false,
    }
}

/// A control plane with the CRDs, namespace [`NS`] and ServiceAccount
/// `web` (the client proxy's identity).
async fn cluster() -> TestControlPlane {
    let started = Instant::now();
    let plane = tokio::time::timeout(Duration::from_secs(100), TestControlPlane::start())
        .await
        .expect("control plane start timed out")
        .unwrap();
    plane
        .kubectl_with_stdin(
            &["apply", "-f", "-"],
            Some(include_str!("../../install/crds.yaml")),
        )
        .await
        .unwrap();
    plane
        .wait_for_crd_established("trafficsplits.split.smi-spec.io")
        .await
        .unwrap();
    plane.create_namespace(NS).await.unwrap();
    plane.wait_for_service_account(NS, "default").await.unwrap();
    plane
        .apply_yaml(&format!(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: web, namespace: {NS}}}\n"
        ))
        .await
        .unwrap();
    eprintln!("cluster ready after {:?}", started.elapsed());
    plane
}

/// The Kubernetes feed as a [`scenario::Discovery`]: a Service with a
/// selector per name, one ready Pod per endpoint (its IP is the endpoint's,
/// its named port `http` the endpoint's port), the endpoints controller in
/// between.
struct KubeDiscovery<'a> {
    plane: &'a TestControlPlane,
    ctl: ControllerProcess,
    /// The Pods standing for each Service's endpoints, by address.
    pods: BTreeMap<String, BTreeMap<SocketAddr, String>>,
    services: BTreeSet<String>,
    next_pod: usize,
}

impl<'a> KubeDiscovery<'a> {
    fn new(plane: &'a TestControlPlane, ctl: ControllerProcess) -> Self {
        Self {
            plane,
            ctl,
            pods: BTreeMap::new(),
            services: BTreeSet::new(),
            next_pod: 0,
        }
    }

    /// A client proxy "web" with a real ServiceAccount token (the
    /// identity service checks it with TokenReview) resolving through the
    /// controller.
    async fn web(&self, tokens: &tempfile::TempDir) -> ProxyProcess {
        let token = self
            .plane
            .request_token(NS, "web", &["identity.l5d.io"], None)
            .await
            .unwrap();
        let path = tokens.path().join("web-token");
        std::fs::write(&path, token).unwrap();
        self.ctl
            .proxy_as(
                proxy_bin(),
                &identity(NS, "web"),
                &path,
                &self.ctl.anchors(),
            )
            .env("WEFT_PROXY_DESTINATION_ADDR", self.ctl.destination_addr)
            .spawn()
            .await
            .unwrap()
    }
}

impl Discovery for KubeDiscovery<'_> {
    /// Like a rolling update: new Pods are created and made ready, and only
    /// once the Endpoints list them are the old Pods deleted.
    async fn set_endpoints(
        &mut self,
        service: &str,
        endpoints: &[SocketAddr],
    ) -> scenario::Result<()> {
        if self.services.insert(service.to_owned()) {
            let yaml = format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: {service}, namespace: {NS}}}\n\
                 spec:\n  selector: {{app: {service}}}\n  ports:\n  - name: http\n    port: 80\n    \
                 targetPort: http\n    protocol: TCP\n"
            );
            self.plane
                .kubectl_with_stdin(&["apply", "-f", "-"], Some(&yaml))
                .await?;
        }
        let current = self.pods.entry(service.to_owned()).or_default();
        let mut added = Vec::new();
        let new: Vec<SocketAddr> = endpoints
            .iter()
            .filter(|a| !current.contains_key(a))
            .copied()
            .collect();
        for addr in new {
            let name = format!("{service}-{}", self.next_pod);
            self.next_pod += 1;
            self.plane
                .apply_yaml(&format!(
                    "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {NS}\n  \
                     labels: {{app: {service}}}\nspec:\n  containers:\n  - name: app\n    \
                     image: {service}\n    ports: [{{name: http, containerPort: {}}}]\n",
                    addr.port()
                ))
                .await?;
            self.plane.set_pod_ready(NS, &name, addr.ip()).await?;
            current.insert(addr, name);
            added.push(addr.ip());
        }
        if !added.is_empty() {
            self.plane
                .wait_for_ready_endpoints(NS, service, &added)
                .await?;
        }
        let gone: Vec<SocketAddr> = current
            .keys()
            .filter(|a| !endpoints.contains(a))
            .copied()
            .collect();
        for addr in gone {
            if let Some(name) = current.remove(&addr) {
                self.plane.delete_pod_now(NS, &name).await?;
            }
        }
        Ok(())
    }

    async fn set_split(&mut self, version: &str, weights: [&str; 2]) -> scenario::Result<()> {
        self.plane
            .kubectl_with_stdin(&["apply", "-f", "-"], Some(&split_yaml(version, weights)))
            .await?;
        Ok(())
    }

    fn controller(&mut self) -> &mut ControllerProcess {
        &mut self.ctl
    }
}

/// `n` backends in `net`, pod `i` at `10.214.N.(10+i):8080`.
async fn backends(net: &TestNet, n: u8) -> Vec<HttpBackend> {
    let mut out = Vec::new();
    for i in 0..n {
        let ip = net.add_ip(10 + i).unwrap();
        out.push(
            net.http_backend(SocketAddr::new(ip, POD_PORT))
                .await
                .unwrap(),
        );
    }
    out
}

async fn kubeconfig_controller(plane: &TestControlPlane) -> ControllerProcess {
    let options = ControllerOptions::kubeconfig(plane.kubeconfig_path());
    let ctl = ControllerProcess::start_with(&controller_bin(), "24h", options)
        .await
        .unwrap();
    // 1.20 serves no discovery.k8s.io/v1: the feed must have fallen back.
    assert!(
        ctl.log().contains("endpoints from v1 Endpoints"),
        "{}",
        ctl.log()
    );
    ctl
}

#[tokio::test]
async fn kube_scaling_and_rolling_replacement_under_load_lose_nothing() {
    if skip() {
        return;
    }
    let net = TestNet::create().unwrap();
    let plane = cluster().await;
    let backends = backends(&net, 7).await;
    let replicas: Vec<Replica<'_>> = backends.iter().map(Replica::plain).collect();
    let mut d = KubeDiscovery::new(&plane, kubeconfig_controller(&plane).await);
    let tokens = tempfile::tempdir().unwrap();
    let web = d.web(&tokens).await;
    scenario::scale_and_replace_under_load(&mut d, &web, &replicas)
        .await
        .unwrap();
}

#[tokio::test]
async fn kube_traffic_split_weights_are_applied_and_follow_changes() {
    if skip() {
        return;
    }
    let net = TestNet::create().unwrap();
    let plane = cluster().await;
    let backends = backends(&net, 2).await;
    let mut d = KubeDiscovery::new(&plane, kubeconfig_controller(&plane).await);
    let tokens = tempfile::tempdir().unwrap();
    let web = d.web(&tokens).await;
    let report = scenario::traffic_split(
        &mut d,
        &web,
        Replica::plain(&backends[0]),
        Replica::plain(&backends[1]),
    )
    .await
    .unwrap();
    eprintln!("kubernetes feed: {report:?}");
}

/// The RBAC that docs/destination.md documents for the controller, taken
/// from the page itself so the two cannot disagree.
fn documented_cluster_role() -> String {
    let page = include_str!("../../docs/destination.md");
    page.split("```yaml\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .find(|block| block.contains("kind: ClusterRole\n"))
        .expect("docs/destination.md documents the ClusterRole")
        .to_owned()
}

/// What a pod's ServiceAccount volume and environment provide, arranged
/// for a controller run outside a pod: a private mount namespace puts the
/// volume at `/var/run/secrets/kubernetes.io/serviceaccount` for the
/// controller alone (a tmpfs over `/run` inside that namespace).
fn in_cluster_options(volume: &ServiceAccountVolume) -> ControllerOptions {
    const SETUP: &str = "set -e; mount -t tmpfs weft-test-run /run; \
        d=/run/secrets/kubernetes.io/serviceaccount; mkdir -p \"$d\"; \
        cp \"$0/token\" \"$0/ca.crt\" \"$0/namespace\" \"$d/\"; exec \"$@\"";
    let dir = volume.dir().to_str().unwrap();
    let mut options = ControllerOptions::default().args(&["--in-cluster"]).wrap(&[
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        SETUP,
        dir,
    ]);
    for (k, v) in volume.env() {
        options = options.env(k, v);
    }
    options
}

/// Runs in-cluster as ServiceAccount `weft/weft-controller` bound to the
/// documented ClusterRole, so this also checks that RBAC is enough.
#[tokio::test]
async fn kube_controller_outage_under_load_in_cluster_loses_nothing() {
    if skip() {
        return;
    }
    let net = TestNet::create().unwrap();
    let plane = cluster().await;
    plane.create_namespace("weft").await.unwrap();
    plane
        .wait_for_service_account("weft", "default")
        .await
        .unwrap();
    plane
        .kubectl_with_stdin(&["apply", "-f", "-"], Some(&documented_cluster_role()))
        .await
        .unwrap();
    plane
        .apply_yaml(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: weft-controller, namespace: weft}\n\
             ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\n\
             metadata: {name: weft-controller}\n\
             roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: weft-controller}\n\
             subjects: [{kind: ServiceAccount, name: weft-controller, namespace: weft}]\n",
        )
        .await
        .unwrap();
    let volume = plane
        .service_account_volume("weft", "weft-controller")
        .await
        .unwrap();
    let ctl = ControllerProcess::start_with(&controller_bin(), "24h", in_cluster_options(&volume))
        .await
        .unwrap();
    let log = ctl.log();
    assert!(log.contains("kubernetes feed started"), "{log}");
    assert!(
        !log.contains("403"),
        "the documented RBAC is not enough:\n{log}"
    );

    let backends = backends(&net, 4).await;
    let replicas: Vec<Replica<'_>> = backends.iter().map(Replica::plain).collect();
    let mut d = KubeDiscovery::new(&plane, ctl);
    let tokens = tempfile::tempdir().unwrap();
    let web = d.web(&tokens).await;
    scenario::controller_outage_under_load(&mut d, &web, &replicas)
        .await
        .unwrap();
    let log = d.controller().log();
    assert!(
        !log.contains("403"),
        "the documented RBAC is not enough:\n{log}"
    );
}
