#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
//! Inbound authorization end to end (docs/policy.md): a real
//! `weft-controller` in file mode serving `InboundServerPolicies` from
//! Kubernetes-style YAML in a directory, real proxies with real mTLS
//! (certificates from the controller's identity service), and a test
//! client holding a certificate from the same trust anchors for opaque
//! mTLS connections.
//!
//! Pod `b-0` (ServiceAccount `b`) has two ports, each behind its own
//! proxy process (one proxy forwards to one target): an HTTP port whose
//! application reports the `l5d-client-id` it received, with a readiness
//! probe on `/ready`, and an opaque TCP echo port. Clients are proxies
//! `a` and `c` (ServiceAccounts `a`, `c`) and the test itself. In file
//! mode every proxy shares 127.0.0.1, so `WEFT_PROXY_INBOUND_TRUST_LOOPBACK`
//! stays unset except where a test is about it.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_proxy::identity::LocalIdentity;
use weft_test_support::authz::{self, traffic_target_yaml, until_counted, Reply, WAIT};
use weft_test_support::backend::TcpServer;
use weft_test_support::client::send_h1;
use weft_test_support::controller::{identity, ControllerOptions, ControllerProcess};
use weft_test_support::metrics::sum;
use weft_test_support::proxy::ProxyProcess;
use weft_test_support::scenario::{write_atomic, NS};
use weft_test_support::{controller_bin, proxy_bin};

/// How fast a policy change must be in force (docs/policy.md).
const WITHIN: Duration = Duration::from_secs(1);

/// The HTTP application of `b`: `200` for every request, reporting the
/// `l5d-client-id` values it received in `x-seen-client-id`.
struct App {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl App {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        counted.fetch_add(1, Ordering::SeqCst);
                        let seen: Vec<&str> = req
                            .headers()
                            .get_all("l5d-client-id")
                            .iter()
                            .map(|v| v.to_str().unwrap_or("?"))
                            .collect();
                        let seen = if seen.is_empty() {
                            "<none>".to_owned()
                        } else {
                            seen.join(",")
                        };
                        let rsp = Response::builder()
                            .header("x-seen-client-id", seen)
                            .body(Full::new(Bytes::from_static(b"app")))
                            .unwrap();
                        async move { Ok::<_, Infallible>(rsp) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            requests,
            task,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The controller, pod `b-0`'s two proxies, and client proxies `a`, `c`.
struct Mesh {
    config: tempfile::TempDir,
    ctl: ControllerProcess,
    app: App,
    echo: TcpServer,
    /// `b-0`'s HTTP port.
    b_http: ProxyProcess,
    /// `b-0`'s opaque port.
    b_tcp: ProxyProcess,
    a: ProxyProcess,
    c: ProxyProcess,
}

/// How a mesh is set up.
struct Setup {
    /// The namespace's `config.linkerd.io/default-inbound-policy`.
    namespace_policy: Option<&'static str>,
    /// The controller's `--default-inbound-policy`.
    install_policy: Option<&'static str>,
    /// `WEFT_PROXY_INBOUND_TRUST_LOOPBACK` on b's proxies.
    trust_loopback: bool,
}

impl Setup {
    fn namespace(policy: &'static str) -> Self {
        Self {
            namespace_policy: Some(policy),
            install_policy: None,
            trust_loopback: false,
        }
    }

    fn install(policy: &'static str) -> Self {
        Self {
            namespace_policy: None,
            install_policy: Some(policy),
            trust_loopback: false,
        }
    }

    /// The policy b's pod ends up with (what the injector would pass).
    fn pod_policy(&self) -> &'static str {
        self.namespace_policy
            .or(self.install_policy)
            .unwrap_or("all-unauthenticated")
    }
}

fn namespace_yaml(policy: Option<&str>) -> String {
    let annotations = policy
        .map(|p| format!("\n  annotations: {{config.linkerd.io/default-inbound-policy: {p}}}"))
        .unwrap_or_default();
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NS}{annotations}\n")
}

/// Pod `b-0` of ServiceAccount `b`: `http` with a readiness probe on
/// `/ready`, `tcp` opaque.
fn pod_yaml(http: u16, tcp: u16) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: b-0
  namespace: {NS}
  annotations: {{linkerd.io/inject: enabled, config.linkerd.io/opaque-ports: \"{tcp}\"}}
spec:
  serviceAccountName: b
  containers:
  - name: app
    image: app
    ports: [{{containerPort: {http}}}, {{containerPort: {tcp}}}]
    readinessProbe: {{httpGet: {{path: /ready, port: {http}}}}}
"
    )
}

/// TCPRoute `name` selecting `ports` (none: every port).
fn tcp_route(name: &str, ports: &[u16]) -> String {
    let spec = if ports.is_empty() {
        "spec: {}".to_owned()
    } else {
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        format!("spec:\n  matches:\n    ports: [{}]", ports.join(", "))
    };
    format!(
        "apiVersion: specs.smi-spec.io/v1alpha4\nkind: TCPRoute\n\
         metadata: {{name: {name}, namespace: {NS}}}\n{spec}\n"
    )
}

/// HTTPRouteGroup `b-routes`: `metrics` is `GET /metrics`, `api` any
/// method on `/api/...`.
fn route_group() -> String {
    format!(
        "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\n\
         metadata: {{name: b-routes, namespace: {NS}}}\nspec:\n  matches:\n  \
         - {{name: metrics, pathRegex: /metrics, methods: [GET]}}\n  \
         - {{name: api, pathRegex: \"/api/.*\", methods: [\"*\"]}}\n"
    )
}

impl Mesh {
    async fn start(setup: Setup) -> Self {
        let config = tempfile::tempdir().unwrap();
        let app = App::start().await;
        let echo = TcpServer::echo().await;
        write_atomic(
            config.path(),
            "ns.yaml",
            &namespace_yaml(setup.namespace_policy),
        )
        .unwrap();
        write_atomic(
            config.path(),
            "b.yaml",
            &pod_yaml(app.addr.port(), echo.addr.port()),
        )
        .unwrap();
        let mut options = ControllerOptions::config_dir(config.path());
        if let Some(p) = setup.install_policy {
            options = options.args(&["--default-inbound-policy", p]);
        }
        let ctl = ControllerProcess::start_with(&controller_bin!(), "24h", options)
            .await
            .unwrap();
        let b = |forward: SocketAddr| {
            let mut p = ctl
                .pod_proxy(proxy_bin!(), NS, "b", forward)
                .unwrap()
                .env("WEFT_PROXY_DESTINATION_ADDR", ctl.destination_addr)
                .env("WEFT_PROXY_WORKLOAD", format!("{NS}/deployment/b/b-0"))
                .env("WEFT_PROXY_DEFAULT_INBOUND_POLICY", setup.pod_policy())
                .env(
                    "WEFT_PROXY_INBOUND_PORTS",
                    format!("{},{}", app.addr.port(), echo.addr.port()),
                )
                .env("WEFT_PROXY_OPAQUE_PORTS", echo.addr.port());
            if setup.trust_loopback {
                p = p.env("WEFT_PROXY_INBOUND_TRUST_LOOPBACK", "true");
            }
            p
        };
        let b_http = b(app.addr).spawn().await.unwrap();
        let b_tcp = b(echo.addr).spawn().await.unwrap();
        let client = |sa: &str| {
            ctl.proxy(proxy_bin!(), NS, sa).unwrap().env(
                "WEFT_PROXY_MESHED_TARGETS",
                format!("{}={}", b_http.inbound, identity(NS, "b")),
            )
        };
        let a = client("a").spawn().await.unwrap();
        let c = client("c").spawn().await.unwrap();
        Self {
            config,
            ctl,
            app,
            echo,
            b_http,
            b_tcp,
            a,
            c,
        }
    }

    fn write(&self, file: &str, yaml: &str) {
        write_atomic(self.config.path(), file, yaml).unwrap();
    }

    fn remove(&self, file: &str) {
        std::fs::remove_file(self.config.path().join(file)).unwrap();
    }

    /// `method path` from `client`'s application to b's HTTP port, with
    /// `headers`: the status, `l5d-proxy-error`, and the client ids the
    /// application saw.
    async fn send(
        &self,
        client: &ProxyProcess,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        authz::send(client, self.b_http.inbound, method, path, headers)
            .await
            .unwrap()
    }

    /// A plaintext `GET path` straight to b's HTTP port (a kubelet probe,
    /// an unmeshed client).
    async fn plaintext(&self, path: &str, headers: &[(&str, &str)]) -> Result<Reply, String> {
        let mut req = Request::get(format!("http://{}{path}", self.b_http.inbound));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        match send_h1(
            self.b_http.inbound,
            req.body(Empty::<Bytes>::new()).unwrap(),
        )
        .await
        {
            Ok(rsp) => Ok(Reply::read(rsp).await),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Waits (≤ `WAIT`) until `client`'s `GET path` gets `status`;
    /// returns how long that took.
    async fn until_status(&self, client: &ProxyProcess, path: &str, status: u16) -> Duration {
        authz::until_status(client, self.b_http.inbound, path, status, WAIT)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{e}\n--- b ---\n{}\n--- controller ---\n{}",
                    self.b_http.log(),
                    self.ctl.log()
                )
            })
    }

    /// An mTLS test client with a certificate for `sa` from the mesh's CA.
    fn mesh_client(&self, sa: &str) -> MeshClient {
        MeshClient::new(&self.ctl, sa)
    }
}

/// A client of the mesh outside any proxy: a certificate for
/// `SA.shop.serviceaccount...` signed by the controller's issuer, opening
/// mTLS connections the way a peer proxy does.
struct MeshClient {
    identity: LocalIdentity,
}

impl MeshClient {
    fn new(ctl: &ControllerProcess, sa: &str) -> Self {
        let name = identity(NS, sa);
        let anchors = ctl.anchors();
        let dir = weft_identity::IdentityDir::new(anchors.parent().unwrap());
        let issuer = dir.load_issuer().unwrap();
        let (key, csr) = weft_identity::generate_csr(&name).unwrap();
        let cert = issuer
            .certify(
                &csr,
                &name,
                Duration::from_secs(3600),
                Duration::from_secs(60),
            )
            .unwrap();
        let certified = weft_identity::certified_key(&key, &cert.leaf_der, &cert.chain).unwrap();
        let roots =
            weft_identity::load_trust_anchors(&std::fs::read_to_string(anchors).unwrap()).unwrap();
        let identity = LocalIdentity::new(&name, roots).unwrap();
        identity.set_certificate(certified, cert.valid_until);
        Self { identity }
    }

    /// An opaque mTLS connection to b's proxy at `to`; an error when the
    /// proxy closed it during the handshake (a refusal can be that fast).
    async fn opaque(
        &self,
        to: SocketAddr,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(to).await?;
        weft_proxy::transport::tls::connect(tcp, &self.identity, &identity(NS, "b"), true).await
    }

    /// True if an opaque connection to `to` echoes, false if it is closed.
    async fn echoes(&self, to: SocketAddr) -> bool {
        match self.opaque(to).await {
            Ok(mut conn) => echoes(&mut conn).await,
            Err(_) => false,
        }
    }
}

/// True if a plaintext connection to `to` echoes, false if it is closed.
async fn plaintext_echoes(to: SocketAddr) -> bool {
    match TcpStream::connect(to).await {
        Ok(mut conn) => echoes(&mut conn).await,
        Err(_) => false,
    }
}

/// Sends `ping` and reads: true if it was echoed, false if the
/// connection was closed instead.
async fn echoes<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(conn: &mut S) -> bool {
    if conn.write_all(b"ping").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 4];
    match tokio::time::timeout(WAIT, conn.read_exact(&mut buf)).await {
        Ok(Ok(_)) => {
            assert_eq!(&buf, b"ping");
            true
        }
        Ok(Err(_)) => false,
        Err(_) => panic!("neither echoed nor closed within {WAIT:?}"),
    }
}

#[tokio::test]
async fn deny_refuses_until_a_traffic_target_allows_and_again_once_it_is_deleted() {
    let mesh = Mesh::start(Setup::namespace("deny")).await;
    let refused = mesh.send(&mesh.a, "GET", "/", &[]).await;
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(
        refused.proxy_error.as_deref(),
        Some("unauthorized request on route default")
    );
    assert_eq!(mesh.app.requests(), 0);

    mesh.write("b-ports.yaml", &tcp_route("b-ports", &[]));
    mesh.write(
        "a-to-b.yaml",
        &traffic_target_yaml(
            "a-to-b",
            "b",
            &["a"],
            "  - {kind: TCPRoute, name: b-ports}\n",
        ),
    );
    let allowed_after = mesh.until_status(&mesh.a, "/", 200).await;
    assert!(allowed_after < WITHIN, "allowed after {allowed_after:?}");
    let ok = mesh.send(&mesh.a, "GET", "/any/path", &[]).await;
    assert_eq!(
        ok.seen_client_id.as_deref(),
        Some(identity(NS, "a").as_str())
    );

    mesh.remove("a-to-b.yaml");
    let refused_after = mesh.until_status(&mesh.a, "/", 403).await;
    assert!(refused_after < WITHIN, "refused after {refused_after:?}");
    until_counted(
        &mesh.b_http,
        "inbound_http_authz_deny_total",
        &[
            ("srv_kind", "default"),
            ("srv_name", "deny"),
            ("route_name", "default"),
        ],
        2.0,
    )
    .await;
    until_counted(
        &mesh.b_http,
        "inbound_http_authz_allow_total",
        &[
            ("srv_group", "access.smi-spec.io"),
            ("srv_kind", "serviceaccount"),
            ("srv_name", "b"),
            ("authz_group", "access.smi-spec.io"),
            ("authz_name", "a-to-b"),
            ("client_id", &identity(NS, "a")),
        ],
        2.0,
    )
    .await;
}

#[tokio::test]
async fn an_http_route_group_allows_only_its_matches() {
    let mesh = Mesh::start(Setup::install("deny")).await;
    mesh.write("routes.yaml", &route_group());
    mesh.write(
        "a-to-b.yaml",
        &traffic_target_yaml(
            "a-scrapes-b",
            "b",
            &["a"],
            "  - {kind: HTTPRouteGroup, name: b-routes, matches: [metrics]}\n",
        ),
    );
    mesh.until_status(&mesh.a, "/metrics", 200).await;
    for (method, path) in [
        ("POST", "/metrics"),
        ("GET", "/other"),
        ("GET", "/api/v1"),
        ("GET", "/metrics/x"),
    ] {
        let r = mesh.send(&mesh.a, method, path, &[]).await;
        assert_eq!(r.status, 403, "{method} {path}: {r:?}");
        let why = r.proxy_error.unwrap();
        assert!(why.starts_with("unauthorized request on route "), "{why}");
    }
    let served = mesh.app.requests();
    assert_eq!(mesh.send(&mesh.a, "GET", "/metrics", &[]).await.status, 200);
    assert_eq!(
        mesh.app.requests(),
        served + 1,
        "only the admitted request reached the app"
    );
    // gRPC is refused with PERMISSION_DENIED.
    let r = mesh
        .send(
            &mesh.a,
            "POST",
            "/shop.B/Get",
            &[("content-type", "application/grpc")],
        )
        .await;
    assert_eq!(
        (r.status, r.grpc_status.as_deref()),
        (200, Some("7")),
        "{r:?}"
    );
    until_counted(
        &mesh.b_http,
        "inbound_http_authz_allow_total",
        &[
            ("route_kind", "HTTPRouteGroup"),
            ("authz_name", "a-scrapes-b"),
        ],
        2.0,
    )
    .await;
    until_counted(
        &mesh.b_http,
        "inbound_http_authz_deny_total",
        &[("srv_name", "b"), ("client_id", &identity(NS, "a"))],
        5.0,
    )
    .await;
}

#[tokio::test]
async fn a_tcp_route_limits_ports() {
    let mesh = Mesh::start(Setup::install("deny")).await;
    let client = mesh.mesh_client("a");
    assert!(
        !client.echoes(mesh.b_tcp.inbound).await,
        "deny: the opaque port is closed"
    );

    // Only the HTTP port.
    mesh.write(
        "b-ports.yaml",
        &tcp_route("b-ports", &[mesh.app.addr.port()]),
    );
    mesh.write(
        "a-to-b.yaml",
        &traffic_target_yaml(
            "a-to-b",
            "b",
            &["a"],
            "  - {kind: TCPRoute, name: b-ports}\n",
        ),
    );
    mesh.until_status(&mesh.a, "/", 200).await;
    assert!(
        !client.echoes(mesh.b_tcp.inbound).await,
        "the opaque port is not selected"
    );
    until_counted(
        &mesh.b_tcp,
        "inbound_tcp_authz_deny_total",
        &[("srv_name", "b"), ("client_id", &identity(NS, "a"))],
        1.0,
    )
    .await;

    // Only the opaque port.
    mesh.write(
        "b-ports.yaml",
        &tcp_route("b-ports", &[mesh.echo.addr.port()]),
    );
    mesh.until_status(&mesh.a, "/", 403).await;
    let start = Instant::now();
    loop {
        if client.echoes(mesh.b_tcp.inbound).await {
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "the opaque port never opened:\n{}",
            mesh.b_tcp.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    until_counted(
        &mesh.b_tcp,
        "inbound_tcp_authz_allow_total",
        &[
            ("srv_name", "b"),
            ("authz_name", "a-to-b"),
            ("client_id", &identity(NS, "a")),
        ],
        1.0,
    )
    .await;
}

#[tokio::test]
async fn a_source_not_listed_is_refused_even_with_a_valid_certificate() {
    let mesh = Mesh::start(Setup::namespace("deny")).await;
    mesh.write("b-ports.yaml", &tcp_route("b-ports", &[]));
    mesh.write(
        "a-to-b.yaml",
        &traffic_target_yaml(
            "a-to-b",
            "b",
            &["a"],
            "  - {kind: TCPRoute, name: b-ports}\n",
        ),
    );
    mesh.until_status(&mesh.a, "/", 200).await;
    let r = mesh.send(&mesh.c, "GET", "/", &[]).await;
    assert_eq!(r.status, 403, "{r:?}");
    // The same over opaque mTLS with the test's own certificate for c.
    assert!(!mesh.mesh_client("c").echoes(mesh.b_tcp.inbound).await);
    assert!(mesh.mesh_client("a").echoes(mesh.b_tcp.inbound).await);
}

#[tokio::test]
async fn a_forged_client_id_never_grants_access_and_the_app_sees_the_real_one() {
    let mesh = Mesh::start(Setup::namespace("deny")).await;
    mesh.write("b-ports.yaml", &tcp_route("b-ports", &[]));
    mesh.write(
        "a-to-b.yaml",
        &traffic_target_yaml(
            "a-to-b",
            "b",
            &["a"],
            "  - {kind: TCPRoute, name: b-ports}\n",
        ),
    );
    mesh.until_status(&mesh.a, "/", 200).await;
    let a_id = identity(NS, "a");
    let forged = [("l5d-client-id", a_id.as_str())];
    let r = mesh.send(&mesh.c, "GET", "/", &forged).await;
    assert_eq!(r.status, 403, "c claiming to be a: {r:?}");
    let r = mesh.plaintext("/", &forged).await.unwrap();
    assert_eq!(r.status, 403, "plaintext claiming to be a: {r:?}");
    let r = mesh
        .send(
            &mesh.a,
            "GET",
            "/",
            &[(
                "l5d-client-id",
                "root.kube-system.serviceaccount.identity.weft.cluster.local",
            )],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.seen_client_id.as_deref(),
        Some(a_id.as_str()),
        "the app sees a's proven identity only"
    );
}

#[tokio::test]
async fn an_open_opaque_connection_is_closed_when_its_traffic_target_is_deleted() {
    let mesh = Mesh::start(Setup::namespace("deny")).await;
    mesh.write("b-ports.yaml", &tcp_route("b-ports", &[]));
    mesh.write(
        "a-to-b.yaml",
        &traffic_target_yaml(
            "a-to-b",
            "b",
            &["a"],
            "  - {kind: TCPRoute, name: b-ports}\n",
        ),
    );
    mesh.until_status(&mesh.a, "/", 200).await;
    let mut conn = mesh
        .mesh_client("a")
        .opaque(mesh.b_tcp.inbound)
        .await
        .unwrap();
    assert!(echoes(&mut conn).await);
    assert!(echoes(&mut conn).await, "still open");

    mesh.remove("a-to-b.yaml");
    let revoked = Instant::now();
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(WAIT, conn.read(&mut buf)).await;
    let elapsed = revoked.elapsed();
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "expected the connection closed, got {closed:?}"
    );
    assert!(elapsed < WITHIN, "closed after {elapsed:?}");
    until_counted(
        &mesh.b_tcp,
        "inbound_tcp_authz_terminate_total",
        &[("authz_name", "a-to-b"), ("client_id", &identity(NS, "a"))],
        1.0,
    )
    .await;
}

#[tokio::test]
async fn probes_pass_under_deny() {
    let mesh = Mesh::start(Setup::install("deny")).await;
    let probe = mesh.plaintext("/ready", &[]).await.unwrap();
    assert_eq!(probe.status, 200, "{probe:?}");
    let other = mesh.plaintext("/other", &[]).await.unwrap();
    assert_eq!(other.status, 403, "{other:?}");
    assert_eq!(mesh.send(&mesh.a, "GET", "/ready", &[]).await.status, 200);
    assert_eq!(mesh.send(&mesh.a, "POST", "/ready", &[]).await.status, 403);
    // The admin port is not an inbound port: no policy applies.
    assert_eq!(mesh.b_http.ready_status().await, 200);
    until_counted(
        &mesh.b_http,
        "inbound_http_authz_allow_total",
        &[
            ("route_name", "probe"),
            ("authz_name", "probe"),
            ("tls", "no_identity"),
        ],
        1.0,
    )
    .await;
}

#[tokio::test]
async fn audit_admits_and_counts() {
    let mesh = Mesh::start(Setup::namespace("audit")).await;
    mesh.write("routes.yaml", &route_group());
    mesh.write(
        "a-to-b.yaml",
        &traffic_target_yaml(
            "a-scrapes-b",
            "b",
            &["a"],
            "  - {kind: HTTPRouteGroup, name: b-routes, matches: [metrics]}\n",
        ),
    );
    // Governed now: a's scrape is admitted by the TrafficTarget...
    let start = Instant::now();
    loop {
        assert_eq!(mesh.send(&mesh.a, "GET", "/metrics", &[]).await.status, 200);
        let text = mesh.b_http.metrics().await;
        if sum(
            &text,
            "inbound_http_authz_allow_total",
            &[("authz_name", "a-scrapes-b")],
        ) >= 1.0
        {
            break;
        }
        assert!(start.elapsed() < WAIT, "{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...and what deny would refuse is admitted by audit, and counted.
    for (client, path) in [(&mesh.c, "/metrics"), (&mesh.a, "/other")] {
        assert_eq!(mesh.send(client, "GET", path, &[]).await.status, 200);
    }
    assert_eq!(mesh.plaintext("/x", &[]).await.unwrap().status, 200);
    until_counted(
        &mesh.b_http,
        "inbound_http_authz_allow_total",
        &[
            ("authz_kind", "default"),
            ("authz_name", "audit"),
            ("client_id", &identity(NS, "c")),
        ],
        1.0,
    )
    .await;
    until_counted(
        &mesh.b_http,
        "inbound_http_authz_allow_total",
        &[("authz_name", "audit"), ("tls", "no_identity")],
        1.0,
    )
    .await;
    let text = mesh.b_http.metrics().await;
    assert_eq!(
        sum(&text, "inbound_http_authz_deny_total", &[]),
        0.0,
        "{text}"
    );
    assert!(
        mesh.b_http
            .log()
            .contains("audit: request admitted that would be denied"),
        "{}",
        mesh.b_http.log()
    );
}

#[tokio::test]
async fn a_traffic_target_naming_a_missing_route_group_never_widens_access() {
    // Open by default: everyone may call b.
    let mesh = Mesh::start(Setup::install("all-unauthenticated")).await;
    assert_eq!(mesh.send(&mesh.a, "GET", "/", &[]).await.status, 200);
    assert_eq!(mesh.send(&mesh.c, "GET", "/", &[]).await.status, 200);
    mesh.write(
        "a-to-b.yaml",
        &traffic_target_yaml(
            "a-to-b",
            "b",
            &["a"],
            "  - {kind: HTTPRouteGroup, name: no-such-group, matches: [metrics]}\n",
        ),
    );
    // The TrafficTarget governs b, and with its only rule dropped it
    // admits nothing: not even the source it names.
    mesh.until_status(&mesh.a, "/", 403).await;
    assert_eq!(mesh.send(&mesh.a, "GET", "/metrics", &[]).await.status, 403);
    assert_eq!(mesh.send(&mesh.c, "GET", "/", &[]).await.status, 403);
    assert!(!mesh.mesh_client("a").echoes(mesh.b_tcp.inbound).await);
    assert!(
        mesh.ctl.log().contains("no-such-group"),
        "the controller reports the missing route group:\n{}",
        mesh.ctl.log()
    );
}

#[tokio::test]
async fn a_trusted_loopback_is_admitted_under_deny() {
    let mesh = Mesh::start(Setup {
        trust_loopback: true,
        ..Setup::namespace("deny")
    })
    .await;
    // Plaintext from 127.0.0.1 (the pod's own loopback, as this proxy is
    // told): admitted by `localhost`, on any path.
    let r = mesh.plaintext("/anything", &[]).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        plaintext_echoes(mesh.b_tcp.inbound).await,
        "plaintext TCP from loopback"
    );
    until_counted(
        &mesh.b_http,
        "inbound_http_authz_allow_total",
        &[("authz_name", "localhost"), ("tls", "no_identity")],
        1.0,
    )
    .await;
    // Untrusted (the other proxies of this file): loopback is judged like
    // anyone else.
    let untrusted = Mesh::start(Setup::namespace("deny")).await;
    assert_eq!(
        untrusted.plaintext("/anything", &[]).await.unwrap().status,
        403
    );
    assert!(!plaintext_echoes(untrusted.b_tcp.inbound).await);
}

#[tokio::test]
async fn without_a_controller_the_default_policy_applies() {
    let ctl = ControllerProcess::start(&controller_bin!(), "24h")
        .await
        .unwrap();
    let app = App::start().await;
    let deny = ctl
        .pod_proxy(proxy_bin!(), NS, "b", app.addr)
        .unwrap()
        .env("WEFT_PROXY_DEFAULT_INBOUND_POLICY", "deny")
        .spawn()
        .await
        .unwrap();
    assert!(
        deny.log()
            .contains("inbound policy is not watched (WEFT_PROXY_DESTINATION_ADDR is unset)"),
        "{}",
        deny.log()
    );
    // No probe route without a controller: plaintext can never be
    // admitted, so the connection is refused at once.
    let r = send_h1(
        deny.inbound,
        Request::get(format!("http://{}/", deny.inbound))
            .body(Empty::<Bytes>::new())
            .unwrap(),
    )
    .await;
    assert!(r.is_err(), "refused connection, got {r:?}");
    assert_eq!(app.requests(), 0);
    until_counted(
        &deny,
        "inbound_tcp_authz_deny_total",
        &[("srv_name", "deny")],
        1.0,
    )
    .await;

    let bad = weft_test_support::proxy::ProxyBuilder::new(proxy_bin!())
        .env("WEFT_PROXY_DEFAULT_INBOUND_POLICY", "allow")
        .spawn()
        .await
        .unwrap_err()
        .to_string();
    assert!(bad.contains("WEFT_PROXY_DEFAULT_INBOUND_POLICY"), "{bad}");
}

#[tokio::test]
async fn a_controller_outage_keeps_the_last_policy() {
    let mut mesh = Mesh::start(Setup::namespace("all-unauthenticated")).await;
    mesh.write("b-ports.yaml", &tcp_route("b-ports", &[]));
    mesh.write(
        "a-to-b.yaml",
        &traffic_target_yaml(
            "a-to-b",
            "b",
            &["a"],
            "  - {kind: TCPRoute, name: b-ports}\n",
        ),
    );
    mesh.until_status(&mesh.c, "/", 403).await;
    mesh.ctl.kill();
    // Neither back to the default policy nor closed: what was in force
    // stays, for new connections too.
    for _ in 0..3 {
        assert_eq!(mesh.send(&mesh.a, "GET", "/", &[]).await.status, 200);
        assert_eq!(mesh.send(&mesh.c, "GET", "/", &[]).await.status, 403);
        assert!(mesh.mesh_client("a").echoes(mesh.b_tcp.inbound).await);
        assert!(!mesh.mesh_client("c").echoes(mesh.b_tcp.inbound).await);
    }
    // Back, with the TrafficTarget gone meanwhile: followed again.
    mesh.remove("a-to-b.yaml");
    mesh.ctl.restart().await.unwrap();
    mesh.until_status(&mesh.c, "/", 200).await;
}
