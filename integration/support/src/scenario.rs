//! Service-discovery scenarios through a real proxy, shared by the tests
//! that feed the controller from files (`proxy/tests/discovery.rs`) and
//! from a real Kubernetes API (`proxy/tests/discovery_kube.rs`): the same
//! steps and the same bounds whatever the feed, so the two cannot drift
//! apart. A feed plugs in through [`Discovery`].
//!
//! Every scenario talks to Service `api` in namespace [`NS`] through the
//! client proxy's outbound listener (as an `http_proxy`), counts what each
//! backend received, bounds every wait in time and every loop in count,
//! and reports failures as errors (the test unwraps them).

use crate::backend::HttpBackend;
use crate::client::send_h1;
use crate::controller::ControllerProcess;
use crate::proxy::ProxyProcess;
use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use std::collections::VecDeque;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The namespace of every scenario object.
pub const NS: &str = "shop";
/// The apex Service, as the client application names it.
pub const API: &str = "http://api.shop.svc.cluster.local/";
/// Bound on each wait for the mesh to follow a change.
pub const WAIT: Duration = Duration::from_secs(30);
/// Bound on one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Safety net on a load run whose stop signal never comes.
const LOAD_LIMIT: Duration = Duration::from_secs(180);
/// A backend is "quiet" when it gets nothing for this long under load.
const QUIET: Duration = Duration::from_millis(400);
/// Requests per share measurement.
const SHARE_REQUESTS: usize = 2000;
/// Window over which a weight change is detected.
const WINDOW: usize = 20;

/// What scenarios and [`Discovery`] implementations return: any error,
/// with its context (so a test's feed needs no `anyhow` of its own).
pub type Result<T, E = anyhow::Error> = std::result::Result<T, E>;

/// What the scenarios change in the controller's world: objects in a
/// config dir, or objects in a Kubernetes API.
#[allow(async_fn_in_trait)] // awaited in one task; callers need no Send bound
pub trait Discovery {
    /// Makes Service `service` in [`NS`] (port 80, named `http`) list
    /// exactly `endpoints` as ready, creating the Service if needed (with
    /// no endpoints it exists but is empty). Returns once the objects are
    /// written; controller and proxies follow on their own.
    async fn set_endpoints(
        &mut self,
        service: &str,
        endpoints: &[SocketAddr],
    ) -> anyhow::Result<()>;

    /// Writes TrafficSplit [`split_yaml`]`(version, weights)`.
    async fn set_split(&mut self, version: &str, weights: [&str; 2]) -> anyhow::Result<()>;

    /// The controller the proxies use (to kill and restart it).
    fn controller(&mut self) -> &mut ControllerProcess;
}

/// One endpoint as the scenario sees it: where discovery points
/// (`addr`: the backend itself, or a meshed pod's proxy in front of it) and
/// the backend that counts what arrives.
#[derive(Clone, Copy, Debug)]
pub struct Replica<'a> {
    /// The endpoint address listed in discovery.
    pub addr: SocketAddr,
    /// The server behind it.
    pub backend: &'a HttpBackend,
}

// === impl Replica ===

impl<'a> Replica<'a> {
    /// An unmeshed endpoint: the backend's own address.
    pub fn plain(backend: &'a HttpBackend) -> Self {
        Self {
            addr: backend.addr,
            backend,
        }
    }
}

/// TrafficSplit `api-rollout` in [`NS`]: apex `api`, backends `api-v1` and
/// `api-v2` with `weights` as written (`"90"`, or `"900m"` in v1alpha1).
pub fn split_yaml(version: &str, [w1, w2]: [&str; 2]) -> String {
    traffic_split_yaml(
        version,
        "api-rollout",
        None,
        &[("api-v1", w1), ("api-v2", w2)],
    )
}

/// TrafficSplit `name` in [`NS`] (`split.smi-spec.io/{version}`) of the
/// apex Service `api` over `backends` (`(service, weight)`, weights as
/// written). With `route_group`, only requests matching that
/// HTTPRouteGroup follow it (`matches`, v1alpha3 and later).
pub fn traffic_split_yaml(
    version: &str,
    name: &str,
    route_group: Option<&str>,
    backends: &[(&str, &str)],
) -> String {
    let mut y = format!(
        "apiVersion: split.smi-spec.io/{version}\nkind: TrafficSplit\n\
         metadata: {{name: {name}, namespace: {NS}}}\nspec:\n  service: api\n"
    );
    if let Some(group) = route_group {
        y.push_str(&format!(
            "  matches:\n  - {{kind: HTTPRouteGroup, name: {group}}}\n"
        ));
    }
    y.push_str("  backends:\n");
    for (service, weight) in backends {
        y.push_str(&format!("  - {{service: {service}, weight: {weight}}}\n"));
    }
    y
}

/// HTTPRouteGroup `name` in [`NS`] (`specs.smi-spec.io/{version}`) whose
/// `spec.matches` are `matches`: YAML list items indented by two spaces.
pub fn route_group_yaml(version: &str, name: &str, matches: &str) -> String {
    format!(
        "apiVersion: specs.smi-spec.io/{version}\nkind: HTTPRouteGroup\n\
         metadata: {{name: {name}, namespace: {NS}}}\nspec:\n  matches:\n{matches}"
    )
}

/// The ServiceProfile of Service `service` in [`NS`], named by the
/// Service's FQDN as the controller looks it up, with `spec`: the YAML
/// under `spec:`, indented by two spaces.
pub fn service_profile_yaml(service: &str, spec: &str) -> String {
    format!(
        "apiVersion: linkerd.io/v1alpha2\nkind: ServiceProfile\n\
         metadata: {{name: {service}.{NS}.svc.cluster.local, namespace: {NS}}}\nspec:\n{spec}"
    )
}

/// Service `name` in [`NS`] (port 80 named `http`, target port 8080) and
/// its Endpoints, one subset per endpoint (their ports differ on
/// loopback). With `meshed_as: Some(sa)` each endpoint is Pod
/// `NAME-PORT`, a [`meshed_pod_yaml`] of ServiceAccount `sa` (so the
/// controller announces its identity); with `None` the addresses are
/// plain. No endpoints: the Service exists, empty.
pub fn service_yaml(name: &str, endpoints: &[SocketAddr], meshed_as: Option<&str>) -> String {
    named_port_service_yaml(name, "http", endpoints, meshed_as)
}

/// Like [`service_yaml`], with the port named `port` in the Service and
/// its Endpoints (the two must agree), e.g. `grpc`.
pub fn named_port_service_yaml(
    name: &str,
    port: &str,
    endpoints: &[SocketAddr],
    meshed_as: Option<&str>,
) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n  \
         ports:\n  - {{name: {port}, port: 80, targetPort: 8080}}\n---\napiVersion: v1\n\
         kind: Endpoints\nmetadata: {{name: {name}, namespace: {NS}}}\nsubsets:\n"
    );
    for addr in endpoints {
        let target = match meshed_as {
            Some(_) => format!(
                ", targetRef: {{kind: Pod, name: {name}-{}, namespace: {NS}}}",
                addr.port()
            ),
            None => String::new(),
        };
        y.push_str(&format!(
            "- addresses: [{{ip: {}{target}}}]\n  ports: [{{name: {port}, port: {}}}]\n",
            addr.ip(),
            addr.port()
        ));
    }
    if endpoints.is_empty() {
        y.push_str(&format!(
            "- addresses: []\n  ports: [{{name: {port}, port: 8080}}]\n"
        ));
    }
    if let Some(sa) = meshed_as {
        for addr in endpoints {
            let pod = format!("{name}-{}", addr.port());
            y.push_str("---\n");
            y.push_str(&meshed_pod_yaml(&pod, sa, None));
        }
    }
    y
}

/// Pod `name` in [`NS`] of ServiceAccount `sa`, annotated
/// `linkerd.io/inject: enabled`: a meshed pod, whose identity the
/// controller announces. With `ip` it is running at that address
/// (`status.podIP`), so the controller also knows it by address.
pub fn meshed_pod_yaml(name: &str, sa: &str, ip: Option<IpAddr>) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {NS}\n  \
         annotations: {{linkerd.io/inject: enabled}}\nspec:\n  serviceAccountName: {sa}\n  \
         containers: [{{name: app, image: app}}]\n"
    );
    if let Some(ip) = ip {
        y.push_str(&format!("status: {{phase: Running, podIP: {ip}}}\n"));
    }
    y
}

/// Replaces `file` in `dir` atomically (temporary file + rename), as the
/// file feed's documentation asks.
pub fn write_atomic(dir: &Path, file: &str, yaml: &str) -> anyhow::Result<()> {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, yaml)?;
    std::fs::rename(tmp, dir.join(file))?;
    Ok(())
}

/// The file feed as a [`Discovery`]: one YAML file per Service in a config
/// dir the controller polls every 200 ms.
#[derive(Debug)]
pub struct FileDiscovery {
    dir: tempfile::TempDir,
    meshed_as: Option<String>,
    ctl: ControllerProcess,
}

// === impl FileDiscovery ===

impl FileDiscovery {
    /// Starts a controller (`controller_bin`) on a config dir that already
    /// holds the (empty) `services`, so they exist from the first request.
    /// Endpoints are meshed pods of ServiceAccount `meshed_as`, or plain.
    pub async fn start(
        controller_bin: &Path,
        meshed_as: Option<&str>,
        services: &[&str],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        for service in services {
            let yaml = service_yaml(service, &[], meshed_as);
            write_atomic(dir.path(), &format!("{service}.yaml"), &yaml)?;
        }
        let ctl = ControllerProcess::start_with_config(controller_bin, "24h", dir.path()).await?;
        Ok(Self {
            dir,
            meshed_as: meshed_as.map(str::to_owned),
            ctl,
        })
    }

    /// The config dir (for tests that write other objects themselves).
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// The controller (shared borrow, e.g. for `proxy()`).
    pub fn ctl(&self) -> &ControllerProcess {
        &self.ctl
    }
}

impl Discovery for FileDiscovery {
    async fn set_endpoints(
        &mut self,
        service: &str,
        endpoints: &[SocketAddr],
    ) -> anyhow::Result<()> {
        let yaml = service_yaml(service, endpoints, self.meshed_as.as_deref());
        write_atomic(self.dir.path(), &format!("{service}.yaml"), &yaml)
    }

    async fn set_split(&mut self, version: &str, weights: [&str; 2]) -> anyhow::Result<()> {
        write_atomic(self.dir.path(), "split.yaml", &split_yaml(version, weights))
    }

    fn controller(&mut self) -> &mut ControllerProcess {
        &mut self.ctl
    }
}

/// Sends `GET uri` through `proxy`'s outbound listener on a new connection,
/// bounded by 10 s.
pub async fn request(
    proxy: &ProxyProcess,
    uri: &str,
) -> anyhow::Result<http::Response<hyper::body::Incoming>> {
    let req = Request::get(uri).body(Empty::<Bytes>::new())?;
    tokio::time::timeout(REQUEST_TIMEOUT, send_h1(proxy.outbound, req))
        .await
        .map_err(|_| anyhow::anyhow!("no response within {REQUEST_TIMEOUT:?}"))?
}

/// What a [`load`] run saw.
#[derive(Debug, Default)]
pub struct LoadResult {
    /// Requests answered `200`.
    pub ok: usize,
    /// Everything else, described (status and `l5d-proxy-error`, or the
    /// error).
    pub failures: Vec<String>,
}

// === impl LoadResult ===

impl LoadResult {
    /// An error naming the first failures, unless there were none.
    pub fn check_no_failures(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.failures.is_empty(),
            "{} of {} requests failed, e.g. {:?}",
            self.failures.len(),
            self.failures.len() + self.ok,
            &self.failures[..self.failures.len().min(3)]
        );
        Ok(())
    }
}

/// Sends `GET API` from `clients` concurrent loops through `proxy` until
/// `stop` turns true (or, as a safety net, for at most three minutes).
pub async fn load(proxy: &ProxyProcess, clients: usize, stop: watch::Receiver<bool>) -> LoadResult {
    let deadline = Instant::now() + LOAD_LIMIT;
    let loops = (0..clients).map(|_| {
        let stop = stop.clone();
        async move {
            let mut out = LoadResult::default();
            while !*stop.borrow() && Instant::now() < deadline {
                match request(proxy, API).await {
                    Ok(r) if r.status() == 200 => out.ok += 1,
                    Ok(r) => out.failures.push(format!(
                        "{} {:?}",
                        r.status(),
                        r.headers().get("l5d-proxy-error")
                    )),
                    Err(e) => out.failures.push(e.to_string()),
                }
            }
            out
        }
    });
    let mut total = LoadResult::default();
    for r in futures::future::join_all(loops).await {
        total.ok += r.ok;
        total.failures.extend(r.failures);
    }
    total
}

/// Runs `steps` while [`load`] runs with `clients` loops, stopping the load
/// when the steps end (also when they fail). Returns both outcomes.
pub async fn under_load<T>(
    proxy: &ProxyProcess,
    clients: usize,
    steps: impl Future<Output = anyhow::Result<T>>,
) -> (LoadResult, anyhow::Result<T>) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let steps = async {
        let result = steps.await;
        stop_tx.send_replace(true);
        result
    };
    tokio::join!(load(proxy, clients, stop_rx), steps)
}

/// Runs `steps` under [`load`] from `clients` loops, as [`under_load`]
/// does; the steps' error if they failed, else an error naming failed
/// requests if any failed, else what the load saw.
async fn under_load_without_failures(
    proxy: &ProxyProcess,
    clients: usize,
    steps: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<LoadResult> {
    let (load, steps) = under_load(proxy, clients, steps).await;
    steps?;
    load.check_no_failures()?;
    Ok(load)
}

/// `replicas` as the `N` a scenario needs, or an error saying so.
fn exactly<'r, 'a, const N: usize>(
    replicas: &'r [Replica<'a>],
) -> anyhow::Result<&'r [Replica<'a>; N]> {
    replicas
        .try_into()
        .map_err(|_| anyhow::anyhow!("needs {N} replicas, got {}", replicas.len()))
}

/// The endpoint addresses of `replicas`, for [`Discovery::set_endpoints`].
fn addrs(replicas: &[Replica<'_>]) -> Vec<SocketAddr> {
    replicas.iter().map(|r| r.addr).collect()
}

fn counts(replicas: &[Replica<'_>]) -> Vec<usize> {
    replicas.iter().map(|r| r.backend.requests()).collect()
}

/// Waits (≤ [`WAIT`]) until every replica has received a request since
/// the call; the caller keeps traffic flowing.
pub async fn wait_for_traffic(what: &str, replicas: &[Replica<'_>]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let before = counts(replicas);
    while counts(replicas)
        .iter()
        .zip(&before)
        .any(|(now, then)| now == then)
    {
        anyhow::ensure!(
            started.elapsed() < WAIT,
            "{what}: no traffic within {WAIT:?} (requests before/after: {before:?} / {:?})",
            counts(replicas)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(started.elapsed())
}

/// Waits (≤ [`WAIT`]) until the replicas get nothing for [`QUIET`] while
/// the caller keeps traffic flowing: the proxy stopped using them.
pub async fn wait_for_quiet(what: &str, replicas: &[Replica<'_>]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let before = counts(replicas);
        tokio::time::sleep(QUIET).await;
        if counts(replicas) == before {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < WAIT,
            "{what}: still receiving traffic after {WAIT:?}"
        );
    }
}

/// Sends requests one at a time (≤ [`WAIT`]) until both backends have
/// answered at least once. Until discovery has caught up other answers
/// are expected (`503` for a Service without endpoints yet, or a
/// resolution error for a name the controller has not loaded yet).
async fn until_both_serve(
    proxy: &ProxyProcess,
    a: &HttpBackend,
    b: &HttpBackend,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let (a0, b0) = (a.requests(), b.requests());
    while a.requests() == a0 || b.requests() == b0 {
        anyhow::ensure!(
            started.elapsed() < WAIT,
            "not both endpoints served within {WAIT:?}"
        );
        let _ = request(proxy, API).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// One request; whether it reached `first` (requests are sequential, so
/// the counters attribute it exactly).
async fn reached_first(proxy: &ProxyProcess, first: &HttpBackend) -> anyhow::Result<bool> {
    let before = first.requests();
    let status = request(proxy, API).await?.status();
    anyhow::ensure!(status == 200, "request failed: {status}");
    Ok(first.requests() > before)
}

/// The share of `n` sequential requests that reached `first`.
pub async fn share_of_first(
    proxy: &ProxyProcess,
    first: &HttpBackend,
    n: usize,
) -> anyhow::Result<f64> {
    let mut hits = 0;
    for _ in 0..n {
        hits += usize::from(reached_first(proxy, first).await?);
    }
    Ok(hits as f64 / n as f64)
}

/// Sends requests one at a time until, over the last [`WINDOW`], at least
/// 60 % reached `first` (impossible at a 10 % weight: p < 1e-7); returns
/// how long that took (≤ [`WAIT`]).
async fn until_majority(proxy: &ProxyProcess, first: &HttpBackend) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut window = VecDeque::with_capacity(WINDOW);
    loop {
        if window.len() == WINDOW {
            window.pop_front();
        }
        window.push_back(reached_first(proxy, first).await?);
        if window.len() == WINDOW && window.iter().filter(|&&h| h).count() * 10 >= WINDOW * 6 {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < WAIT,
            "weight change not in force after {WAIT:?}"
        );
    }
}

/// Scale 1 → 5 → 1 and then replace every endpoint, under continuous load
/// from 4 clients: no request may fail, every replica must serve, and each
/// step must be followed (traffic reaches new endpoints, leaves removed
/// ones). `replicas` are 7: 0..5 scale, 5..7 replace.
pub async fn scale_and_replace_under_load<D: Discovery>(
    d: &mut D,
    proxy: &ProxyProcess,
    replicas: &[Replica<'_>],
) -> anyhow::Result<()> {
    let replicas = exactly::<7>(replicas)?;
    d.set_endpoints("api", &addrs(&replicas[..1])).await?;
    wait_for("the first endpoint to serve", || async {
        Ok(request(proxy, API).await?.status() == 200)
    })
    .await?;
    let steps = async {
        d.set_endpoints("api", &addrs(&replicas[..5])).await?;
        let t = wait_for_traffic("1 → 5", &replicas[..5]).await?;
        eprintln!("1 → 5: all five serve after {t:?}");
        d.set_endpoints("api", &addrs(&replicas[..1])).await?;
        let t = wait_for_quiet("5 → 1", &replicas[1..5]).await?;
        eprintln!("5 → 1: removed ones quiet after {t:?}");
        d.set_endpoints("api", &addrs(&replicas[5..])).await?;
        let t = wait_for_traffic("replacement", &replicas[5..]).await?;
        let q = wait_for_quiet("replacement", &replicas[..1]).await?;
        eprintln!("replacement: new ones serve after {t:?}, the old one quiet {q:?} later");
        Ok(())
    };
    let load = under_load_without_failures(proxy, 4, steps).await?;
    anyhow::ensure!(load.ok > 200, "only {} requests", load.ok);
    eprintln!("scale and replace: {} requests, none failed", load.ok);
    Ok(())
}

/// What [`traffic_split`] measured.
#[derive(Clone, Copy, Debug)]
pub struct SplitReport {
    /// Share of 2,000 requests that reached v1 under v1alpha2 `90/10`.
    pub v1alpha2_share: f64,
    /// From writing `10/90` to most requests reaching v2.
    pub change: Duration,
    /// Share of 2,000 requests that reached v1 under v1alpha1 `900m/100m`.
    pub v1alpha1_share: f64,
}

/// TrafficSplit `api` → `api-v1` (`v1`) / `api-v2` (`v2`): v1alpha2 `90/10`
/// sends 87–93 % of 2,000 requests to v1; rewritten to `10/90` it is in
/// force within 1 s; v1alpha1 `900m/100m` then gives the same 87–93 % as
/// `90/10`.
pub async fn traffic_split<D: Discovery>(
    d: &mut D,
    proxy: &ProxyProcess,
    v1: Replica<'_>,
    v2: Replica<'_>,
) -> anyhow::Result<SplitReport> {
    d.set_endpoints("api-v1", &[v1.addr]).await?;
    d.set_endpoints("api-v2", &[v2.addr]).await?;
    d.set_endpoints("api", &[]).await?;
    d.set_split("v1alpha2", ["90", "10"]).await?;
    until_both_serve(proxy, v1.backend, v2.backend).await?;
    let v1alpha2_share = share_of_first(proxy, v1.backend, SHARE_REQUESTS).await?;
    anyhow::ensure!(
        (0.87..=0.93).contains(&v1alpha2_share),
        "v1alpha2 90/10 sent {v1alpha2_share:.3} to v1"
    );

    d.set_split("v1alpha2", ["10", "90"]).await?;
    let change = until_majority(proxy, v2.backend).await?;
    anyhow::ensure!(
        change < Duration::from_secs(1),
        "the weight change took {change:?} to be in force"
    );

    d.set_split("v1alpha1", ["900m", "100m"]).await?;
    until_majority(proxy, v1.backend).await?;
    let v1alpha1_share = share_of_first(proxy, v1.backend, SHARE_REQUESTS).await?;
    anyhow::ensure!(
        (0.87..=0.93).contains(&v1alpha1_share),
        "v1alpha1 900m/100m sent {v1alpha1_share:.3} to v1"
    );
    let report = SplitReport {
        v1alpha2_share,
        change,
        v1alpha1_share,
    };
    eprintln!("traffic split: {report:?}");
    Ok(report)
}

/// The controller dies under load: requests to the known service keep
/// succeeding on the last endpoints, a change made meanwhile is not seen;
/// restarted, the controller's new endpoints are picked up, still without
/// a failed request. `replicas` are 4: 0..2 before, 2..4 after.
pub async fn controller_outage_under_load<D: Discovery>(
    d: &mut D,
    proxy: &ProxyProcess,
    replicas: &[Replica<'_>],
) -> anyhow::Result<()> {
    let (old, new) = exactly::<4>(replicas)?.split_at(2);
    d.set_endpoints("api", &addrs(old)).await?;
    until_both_serve(proxy, old[0].backend, old[1].backend).await?;
    let steps = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        d.controller().kill();
        wait_for_traffic("known endpoints with the controller gone", old).await?;
        d.set_endpoints("api", &addrs(new)).await?;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        anyhow::ensure!(
            new.iter().all(|r| r.backend.requests() == 0),
            "endpoints reached the proxy without a controller"
        );
        d.controller().restart().await?;
        let t = wait_for_traffic("new endpoints after the restart", new).await?;
        let q = wait_for_quiet("old endpoints after the restart", old).await?;
        eprintln!(
            "restarted controller: new endpoints serve after {t:?}, old ones quiet {q:?} later"
        );
        Ok(())
    };
    let load = under_load_without_failures(proxy, 4, steps).await?;
    eprintln!("controller outage: {} requests, none failed", load.ok);
    Ok(())
}

/// Polls `check` every 20 ms until it is true, for at most [`WAIT`].
pub async fn wait_for<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < WAIT {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => last = None,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match last {
        Some(e) => Err(e.context(format!("{what}: not within {WAIT:?}"))),
        None => anyhow::bail!("{what}: not within {WAIT:?}"),
    }
}
