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
//! the veth. No other network is touched. Needs root and `ip`; fails
//! with a message otherwise.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use weft_kube_harness::{ServiceAccountVolume, TestControlPlane};
use weft_test_support::backend::HttpBackend;
use weft_test_support::controller::{identity, ControllerOptions, ControllerProcess};
use weft_test_support::netns::TestNet;
use weft_test_support::proxy::ProxyProcess;
use weft_test_support::rbac::{
    controller_rbac_yaml, CONTROLLER_NAMESPACE, CONTROLLER_SERVICE_ACCOUNT,
};
use weft_test_support::scenario::{self, split_yaml, Discovery, Replica, NS};
use weft_test_support::{controller_bin, proxy_bin};

/// The port every backend pod listens on (each pod has its own IP).
const POD_PORT: u16 = 8080;

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
    plane.create_namespace_for_pods(NS).await.unwrap();
    plane.create_service_account(NS, "web").await.unwrap();
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
    /// Where the client proxy's token is written.
    tokens: tempfile::TempDir,
}

impl<'a> KubeDiscovery<'a> {
    fn new(plane: &'a TestControlPlane, ctl: ControllerProcess) -> Self {
        Self {
            plane,
            ctl,
            pods: BTreeMap::new(),
            services: BTreeSet::new(),
            next_pod: 0,
            tokens: tempfile::tempdir().unwrap(),
        }
    }

    /// A client proxy "web" with a real ServiceAccount token (the
    /// identity service checks it with TokenReview) resolving through the
    /// controller.
    async fn web(&self) -> ProxyProcess {
        let token = self
            .plane
            .request_token(NS, "web", &["identity.l5d.io"], None)
            .await
            .unwrap();
        let path = self.tokens.path().join("web-token");
        std::fs::write(&path, token).unwrap();
        self.ctl
            .proxy_as(
                proxy_bin!(),
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

/// What every test here runs on: `n` backend "pods" in a [`TestNet`],
/// pod `i` at `10.214.N.(10+i):8080`, and a [`cluster`]. Fields drop in
/// order: the backends, then the cluster, then the network.
struct Pods {
    backends: Vec<HttpBackend>,
    plane: TestControlPlane,
    _net: TestNet,
}

impl Pods {
    /// The network, the cluster and `n` backends. Where no network
    /// namespace can be made the test fails, saying why: a missing
    /// prerequisite must not pass as a skipped test.
    async fn start(n: u8) -> Self {
        if let Some(why) = TestNet::unavailable() {
            panic!("{why} (the Kubernetes discovery scenarios need a network namespace: root and `ip`)");
        }
        let net = TestNet::create().unwrap();
        let plane = cluster().await;
        let mut backends = Vec::new();
        for i in 0..n {
            let ip = net.add_ip(10 + i).unwrap();
            backends.push(
                net.http_backend(SocketAddr::new(ip, POD_PORT))
                    .await
                    .unwrap(),
            );
        }
        Self {
            backends,
            plane,
            _net: net,
        }
    }

    /// The backends as endpoints without a proxy in front.
    fn replicas(&self) -> Vec<Replica<'_>> {
        self.backends.iter().map(Replica::plain).collect()
    }
}

async fn kubeconfig_controller(plane: &TestControlPlane) -> ControllerProcess {
    let options = ControllerOptions::kubeconfig(plane.kubeconfig_path());
    let ctl = ControllerProcess::start_with(&controller_bin!(), "24h", options)
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

/// Runs scenario `run` on the Kubernetes feed read by a `--kubeconfig`
/// controller, with a client proxy and `n` backend pods; fails where no
/// network namespace can be made.
async fn on_kubeconfig_feed(
    n: u8,
    run: impl AsyncFnOnce(&mut KubeDiscovery<'_>, &ProxyProcess, &[Replica<'_>]) -> scenario::Result<()>,
) {
    let pods = Pods::start(n).await;
    let mut d = KubeDiscovery::new(&pods.plane, kubeconfig_controller(&pods.plane).await);
    let web = d.web().await;
    run(&mut d, &web, &pods.replicas()).await.unwrap();
}

#[tokio::test]
async fn kube_scaling_and_rolling_replacement_under_load_lose_nothing() {
    on_kubeconfig_feed(7, async |d, web, replicas| {
        scenario::scale_and_replace_under_load(d, web, replicas).await
    })
    .await;
}

#[tokio::test]
async fn kube_traffic_split_weights_are_applied_and_follow_changes() {
    on_kubeconfig_feed(2, async |d, web, replicas| {
        let report = scenario::traffic_split(d, web, replicas[0], replicas[1]).await?;
        eprintln!("kubernetes feed: {report:?}");
        Ok(())
    })
    .await;
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
    let pods = Pods::start(4).await;
    let plane = &pods.plane;
    plane
        .create_namespace_for_pods(CONTROLLER_NAMESPACE)
        .await
        .unwrap();
    plane
        .kubectl_with_stdin(&["apply", "-f", "-"], Some(&controller_rbac_yaml()))
        .await
        .unwrap();
    let volume = plane
        .service_account_volume(CONTROLLER_NAMESPACE, CONTROLLER_SERVICE_ACCOUNT)
        .await
        .unwrap();
    let ctl = ControllerProcess::start_with(&controller_bin!(), "24h", in_cluster_options(&volume))
        .await
        .unwrap();
    let log = ctl.log();
    assert!(log.contains("kubernetes feed started"), "{log}");
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the documented RBAC is not enough:\n{log}"
    );

    let mut d = KubeDiscovery::new(plane, ctl);
    let web = d.web().await;
    scenario::controller_outage_under_load(&mut d, &web, &pods.replicas())
        .await
        .unwrap();
    let log = d.controller().log();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the documented RBAC is not enough:\n{log}"
    );
}
