//! Inbound authorization end to end (docs/policy.md), shared by the tests
//! that feed the controller from files (`proxy/tests/authz.rs`) and from a
//! real Kubernetes API (`proxy/tests/authz_kube.rs`): the SMI objects they
//! apply, requests from a client proxy to a server proxy and what came
//! back, and bounded waits for a policy change to show, so both feeds face
//! the same checks and bounds.

use crate::client::send_h1;
use crate::metrics::sum;
use crate::proxy::ProxyProcess;
use crate::scenario::NS;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Bound on waiting for anything that is not a policy change's promptness
/// (a metric to be scraped, a refusal to show up at all).
pub const WAIT: Duration = Duration::from_secs(15);

/// What a request got: the parts an authorization test looks at.
#[derive(Debug)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// `l5d-proxy-error`: why the proxy refused (or failed) it.
    pub proxy_error: Option<String>,
    /// `x-seen-client-id`: the `l5d-client-id` values an application that
    /// reports them received.
    pub seen_client_id: Option<String>,
    /// `grpc-status`, for gRPC requests.
    pub grpc_status: Option<String>,
}

// === impl Reply ===

impl Reply {
    /// Reads the headers of `rsp`, then its whole body (so the connection
    /// is done with when this returns).
    pub async fn read(rsp: Response<Incoming>) -> Self {
        let header = |name: &str| {
            rsp.headers()
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let reply = Self {
            status: rsp.status().as_u16(),
            proxy_error: header("l5d-proxy-error"),
            seen_client_id: header("x-seen-client-id"),
            grpc_status: header("grpc-status"),
        };
        let _ = rsp.into_body().collect().await;
        reply
    }
}

/// `method path` to `to` (a server proxy's inbound address) from
/// `client`'s application: sent to the client proxy's outbound listener,
/// over a new HTTP/1.1 connection, with `headers`.
pub async fn send(
    client: &ProxyProcess,
    to: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Reply> {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{to}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let rsp = send_h1(client.outbound, req.body(Empty::<Bytes>::new())?).await?;
    Ok(Reply::read(rsp).await)
}

/// Sends `client`'s `GET path` to `to` until it gets `status`, for at most
/// `wait`; returns how long that took, or, past `wait`, what it got last.
pub async fn until_status(
    client: &ProxyProcess,
    to: SocketAddr,
    path: &str,
    status: u16,
    wait: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        let got = send(client, to, "GET", path, &[]).await?;
        if got.status == status {
            return Ok(start.elapsed());
        }
        anyhow::ensure!(
            start.elapsed() < wait,
            "GET {path} still {} after {wait:?}, not {status}: {got:?}",
            got.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (at most [`WAIT`]) until `proxy`'s `/metrics` has `name` with
/// `labels` summing to at least `at_least`; panics with the metrics text
/// otherwise.
pub async fn until_counted(
    proxy: &ProxyProcess,
    name: &str,
    labels: &[(&str, &str)],
    at_least: f64,
) {
    let start = Instant::now();
    loop {
        let text = proxy.metrics().await;
        if sum(&text, name, labels) >= at_least {
            return;
        }
        assert!(
            start.elapsed() < WAIT,
            "{name}{labels:?} < {at_least} in\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// TrafficTarget `name` (`access.smi-spec.io/v1alpha3`) in [`NS`] to
/// ServiceAccount `destination` from ServiceAccounts `sources` (all in
/// [`NS`]), with `rules`: YAML list items indented by two spaces, e.g.
/// `"  - {kind: TCPRoute, name: every-port}\n"`.
pub fn traffic_target_yaml(name: &str, destination: &str, sources: &[&str], rules: &str) -> String {
    let mut y = format!(
        "apiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\n\
         metadata: {{name: {name}, namespace: {NS}}}\nspec:\n  \
         destination: {{kind: ServiceAccount, name: {destination}, namespace: {NS}}}\n  sources:\n"
    );
    for s in sources {
        y.push_str(&format!(
            "  - {{kind: ServiceAccount, name: {s}, namespace: {NS}}}\n"
        ));
    }
    y.push_str("  rules:\n");
    y.push_str(rules);
    y
}
