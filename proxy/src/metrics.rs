//! Prometheus metrics with Linkerd's names and labels.
//!
//! Operators bring dashboards and queries written for Linkerd; keeping the
//! same metric names (`request_total`, `response_latency_ms`, `tcp_*`) and
//! label names (`direction`, `authority`, `tls`, `status_code`,
//! `classification`, `peer`, `errno`) lets them work unchanged.
//!
//! A proxy started with `WEFT_PROXY_WORKLOAD` adds `namespace`, `pod` and
//! its owner (`deployment="web"`, ...) to every series, as Linkerd's
//! metrics look after Prometheus relabelling. Those labels are constant for
//! the process, so they live on the [`Registry`] and are written only when
//! `/metrics` is rendered: the per-request path never sees them.
//!
//! Label cardinality is bounded: once [`MAX_REQUEST_SERIES`] distinct
//! request label sets have been seen, new authorities are counted under
//! `authority="overflow"`, so a client inventing Host headers cannot grow the
//! proxy's memory without limit.

pub mod authz;
pub mod route;

pub use authz::AuthzMetrics;
pub use route::RouteMetrics;

use crate::live::Live;
use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Labels added to every exported series (see the module docs).
pub type ConstLabels = Vec<(Cow<'static, str>, Cow<'static, str>)>;

/// Linkerd's `response_latency_ms` buckets, in milliseconds.
pub const LATENCY_BUCKETS_MS: [f64; 25] = [
    1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0,
    1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 10000.0, 20000.0, 30000.0, 40000.0, 50000.0,
];

/// Distinct `request_total` series (direction × authority) kept before new
/// authorities are folded into `overflow`.
pub const MAX_REQUEST_SERIES: usize = 2000;

/// The `authority` value used once [`MAX_REQUEST_SERIES`] is reached.
pub const OVERFLOW_AUTHORITY: &str = "overflow";

/// Which side of the proxy traffic passed through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Accepted on the inbound listener, sent to the local application.
    Inbound,
    /// Accepted from the local application, sent to another workload.
    Outbound,
}

/// The `tls` label and, for mTLS, the peer's identity (`client_id` on
/// inbound, `server_id` on outbound), as Linkerd reports them.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Tls {
    /// This proxy has no identity configured: `tls="disabled"`.
    Disabled,
    /// Identity is configured but this connection is plaintext:
    /// `tls="no_identity"`.
    NoIdentity,
    /// TLS not addressed to this proxy, forwarded untouched:
    /// `tls="passthru"`.
    Passthru,
    /// Inbound mTLS from a client with this identity.
    Client(Arc<str>),
    /// Outbound mTLS to a server with this identity.
    Server(Arc<str>),
}

/// Labels of `request_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// The request's authority (`host:port`).
    pub authority: String,
    /// See [`Tls`].
    #[prometheus(flatten)]
    pub tls: Tls,
    /// The destination's discovery labels (outbound only).
    #[prometheus(flatten)]
    pub dst: DstLabels,
}

/// An outbound endpoint's discovery labels, exported as `dst_<name>`
/// (`dst_namespace`, `dst_service`, `dst_pod`, `dst_serviceaccount`,
/// `dst_deployment`, ...), so requests can be attributed to what they
/// reached. Empty when the destination was not discovered.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq)]
pub struct DstLabels(pub Option<Arc<[(String, String)]>>);

/// Labels of `response_latency_ms`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    #[prometheus(flatten)]
    request: RequestLabels,
    /// HTTP status of the response.
    pub status_code: u16,
}

/// Labels of `response_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResponseLabels {
    #[prometheus(flatten)]
    request: RequestLabels,
    /// HTTP status of the response.
    pub status_code: u16,
    /// `success` or `failure` (see [`crate::http::classify`]).
    pub classification: &'static str,
}

/// Labels of the `tcp_*` metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// `src` for accepted connections, `dst` for connections the proxy opened.
    pub peer: &'static str,
    /// See [`Tls`].
    #[prometheus(flatten)]
    pub tls: Tls,
}

/// Labels of `tcp_close_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpCloseLabels {
    #[prometheus(flatten)]
    tcp: TcpLabels,
    /// Empty for a clean close, else the error (`ECONNRESET`, ...).
    pub errno: &'static str,
}

/// All of the proxy's metrics, and the registry that renders them.
#[derive(Clone)]
pub struct Metrics {
    /// HTTP request and response metrics.
    pub http: HttpMetrics,
    /// Transport-level metrics.
    pub tcp: TcpMetrics,
    /// Certificate refreshes and expiry.
    pub identity: IdentityMetrics,
    /// Per-route metrics (ServiceProfile routes).
    pub route: RouteMetrics,
    /// Inbound authorization decisions.
    pub authz: AuthzMetrics,
    registry: Arc<Registry>,
}

/// HTTP metric families (cheap to clone: families are shared), and the
/// live request feed that sees the same responses.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    request_series: Arc<AtomicUsize>,
    responses: Family<ResponseLabels, Counter>,
    latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    live: Live,
}

/// TCP metric families (cheap to clone: families are shared).
#[derive(Clone, Default)]
pub struct TcpMetrics {
    identity_enabled: bool,
    open_total: Family<TcpLabels, Counter>,
    open_connections: Family<TcpLabels, Gauge>,
    read_bytes: Family<TcpLabels, Counter>,
    write_bytes: Family<TcpLabels, Counter>,
    close_total: Family<TcpCloseLabels, Counter>,
}

/// Identity metrics (Linkerd's names): when the current certificate
/// expires, and how refreshes went.
#[derive(Clone, Default)]
pub struct IdentityMetrics {
    /// `identity_cert_expiration_timestamp_seconds`.
    pub expiration: Gauge,
    refresh: Family<RefreshLabels, Counter>,
}

/// Labels of `identity_cert_refresh_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefreshLabels {
    result: &'static str,
}

// === impl IdentityMetrics ===

impl IdentityMetrics {
    /// Counts a refresh attempt.
    pub fn refreshed(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.refresh.get_or_create(&RefreshLabels { result }).inc();
    }
}

/// The metrics of one open connection, held for its lifetime; dropping it
/// records the close.
#[derive(Debug)]
pub struct TcpConnMetrics {
    /// Bytes read from the peer.
    pub read_bytes: Counter,
    /// Bytes written to the peer.
    pub write_bytes: Counter,
    open: Gauge,
    labels: TcpLabels,
    close_total: Family<TcpCloseLabels, Counter>,
    errno: &'static str,
}

// === impl Tls ===

impl EncodeLabelSet for Tls {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        match self {
            Tls::Disabled => [("tls", "disabled")].encode(encoder),
            Tls::NoIdentity => [("tls", "no_identity")].encode(encoder),
            Tls::Passthru => [("tls", "passthru")].encode(encoder),
            Tls::Client(id) => [("tls", "true"), ("client_id", id)].encode(encoder),
            Tls::Server(id) => [("tls", "true"), ("server_id", id)].encode(encoder),
        }
    }
}

// === impl DstLabels ===

impl EncodeLabelSet for DstLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(labels) = &self.0 else {
            return Ok(());
        };
        let named: Vec<(String, &str)> = labels
            .iter()
            .map(|(k, v)| (format!("dst_{k}"), v.as_str()))
            .collect();
        named.as_slice().encode(encoder)
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS_MS)
}

// === impl Direction ===

impl Direction {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

// === impl Metrics ===

impl Metrics {
    /// Creates the families and registers them under Linkerd's names.
    /// `identity_enabled` decides how plaintext is labelled (`no_identity`
    /// when this proxy has an identity, `disabled` when it has none).
    /// `const_labels` are written on every series (the pod's workload
    /// labels; empty outside a pod).
    pub fn new(identity_enabled: bool, const_labels: ConstLabels) -> Self {
        let http = HttpMetrics {
            requests: Family::default(),
            request_series: Arc::default(),
            responses: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            live: Live::default(),
        };
        let tcp = TcpMetrics {
            identity_enabled,
            ..TcpMetrics::default()
        };
        let mut registry = Registry::with_labels(const_labels.into_iter());
        registry.register(
            "request",
            "Total count of HTTP requests",
            http.requests.clone(),
        );
        registry.register(
            "response",
            "Total count of HTTP responses",
            http.responses.clone(),
        );
        registry.register(
            "response_latency_ms",
            "Elapsed times between a request's headers being received and its response's headers being received",
            http.latency.clone(),
        );
        registry.register(
            "tcp_open",
            "Total count of opened connections",
            tcp.open_total.clone(),
        );
        registry.register(
            "tcp_open_connections",
            "Number of currently-open connections",
            tcp.open_connections.clone(),
        );
        registry.register(
            "tcp_read_bytes",
            "Total count of bytes read from peers",
            tcp.read_bytes.clone(),
        );
        registry.register(
            "tcp_write_bytes",
            "Total count of bytes written to peers",
            tcp.write_bytes.clone(),
        );
        registry.register(
            "tcp_close",
            "Total count of closed connections",
            tcp.close_total.clone(),
        );
        let identity = IdentityMetrics::default();
        registry.register(
            "identity_cert_expiration_timestamp_seconds",
            "Time when this proxy's current mTLS certificate expires (Unix seconds)",
            identity.expiration.clone(),
        );
        registry.register(
            "identity_cert_refresh",
            "Certificate refresh attempts by result",
            identity.refresh.clone(),
        );
        let route = RouteMetrics::new(&mut registry);
        let authz = AuthzMetrics::new(&mut registry);
        Self {
            http,
            tcp,
            identity,
            route,
            authz,
            registry: Arc::new(registry),
        }
    }

    /// Renders every metric in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

// === impl HttpMetrics ===

impl HttpMetrics {
    /// The live request feed (`GET /live-requests`), fed from the same
    /// place as these metrics.
    pub fn live(&self) -> &Live {
        &self.live
    }

    /// Builds request labels, folding the authority into `overflow` once
    /// too many distinct values have been seen.
    pub fn request_labels(
        &self,
        direction: Direction,
        authority: &str,
        tls: Tls,
        dst: DstLabels,
    ) -> RequestLabels {
        let labels = RequestLabels {
            direction: direction.as_str(),
            authority: authority.to_string(),
            tls,
            dst,
        };
        if self.requests.get(&labels).is_some()
            || self.request_series.fetch_add(1, Ordering::Relaxed) < MAX_REQUEST_SERIES
        {
            labels
        } else {
            RequestLabels {
                authority: OVERFLOW_AUTHORITY.to_string(),
                ..labels
            }
        }
    }

    /// Counts a request as it arrives.
    pub fn request(&self, labels: &RequestLabels) {
        self.requests.get_or_create(labels).inc();
    }

    /// Records the time to the response's headers.
    pub fn latency(&self, labels: &RequestLabels, status: u16, elapsed_ms: f64) {
        let labels = LatencyLabels {
            request: labels.clone(),
            status_code: status,
        };
        self.latency.get_or_create(&labels).observe(elapsed_ms);
    }

    /// Counts a finished response with its classification.
    pub fn response(&self, labels: &RequestLabels, status: u16, success: bool) {
        let labels = ResponseLabels {
            request: labels.clone(),
            status_code: status,
            classification: if success { "success" } else { "failure" },
        };
        self.responses.get_or_create(&labels).inc();
    }
}

// === impl TcpMetrics ===

impl TcpMetrics {
    /// The `tls` label of a plaintext connection on this proxy.
    pub fn plaintext(&self) -> Tls {
        if self.identity_enabled {
            Tls::NoIdentity
        } else {
            Tls::Disabled
        }
    }

    /// Records a connection opening and returns its per-connection handle.
    pub fn open(&self, direction: Direction, peer: &'static str, tls: Tls) -> TcpConnMetrics {
        let labels = TcpLabels {
            direction: direction.as_str(),
            peer,
            tls,
        };
        self.open_total.get_or_create(&labels).inc();
        let open = self.open_connections.get_or_create_owned(&labels);
        open.inc();
        TcpConnMetrics {
            read_bytes: self.read_bytes.get_or_create_owned(&labels),
            write_bytes: self.write_bytes.get_or_create_owned(&labels),
            open,
            labels,
            close_total: self.close_total.clone(),
            errno: "",
        }
    }
}

// === impl TcpConnMetrics ===

impl TcpConnMetrics {
    /// Remembers the error that ended the connection, for `tcp_close_total`.
    pub fn set_error(&mut self, err: &std::io::Error) {
        use std::io::ErrorKind::*;
        self.errno = match err.kind() {
            ConnectionReset => "ECONNRESET",
            ConnectionAborted => "ECONNABORTED",
            BrokenPipe => "EPIPE",
            TimedOut => "ETIMEDOUT",
            ConnectionRefused => "ECONNREFUSED",
            _ => "EIO",
        };
    }
}

impl Drop for TcpConnMetrics {
    fn drop(&mut self) {
        self.open.dec();
        let labels = TcpCloseLabels {
            tcp: self.labels.clone(),
            errno: self.errno,
        };
        self.close_total.get_or_create(&labels).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_are_linkerds() {
        let m = Metrics::new(false, ConstLabels::new());
        let labels = m.http.request_labels(
            Direction::Inbound,
            "web.default:80",
            Tls::Disabled,
            DstLabels::default(),
        );
        m.http.request(&labels);
        m.http.latency(&labels, 200, 3.2);
        m.http.response(&labels, 200, true);
        drop(m.tcp.open(Direction::Outbound, "dst", Tls::Disabled));
        let client = Tls::Client("a.b.serviceaccount.identity.weft.cluster.local".into());
        drop(m.tcp.open(Direction::Inbound, "src", client));
        let text = m.encode();
        for needle in [
            r#"request_total{direction="inbound",authority="web.default:80",tls="disabled"} 1"#,
            r#"response_total{direction="inbound",authority="web.default:80",tls="disabled",status_code="200",classification="success"} 1"#,
            r#"response_latency_ms_bucket{le="4.0",direction="inbound",authority="web.default:80",tls="disabled",status_code="200"} 1"#,
            r#"tcp_open_total{direction="outbound",peer="dst",tls="disabled"} 1"#,
            r#"tcp_open_connections{direction="outbound",peer="dst",tls="disabled"} 0"#,
            r#"tcp_close_total{direction="outbound",peer="dst",tls="disabled",errno=""} 1"#,
            r#"tcp_open_total{direction="inbound",peer="src",tls="true",client_id="a.b.serviceaccount.identity.weft.cluster.local"} 1"#,
            r#"tcp_open_total{direction="inbound",peer="src",tls="true",client_id="a.b.serviceaccount.identity.weft.cluster.local"} 1"#,
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }

    #[test]
    fn workload_labels_are_on_every_series() {
        let workload = crate::config::Workload::parse("shop/deployment/web/web-1").unwrap();
        let m = Metrics::new(false, workload.metric_labels());
        let labels = m.http.request_labels(
            Direction::Inbound,
            "web.shop:80",
            Tls::Disabled,
            DstLabels::default(),
        );
        m.http.request(&labels);
        m.http.latency(&labels, 200, 3.2);
        drop(m.tcp.open(Direction::Inbound, "src", Tls::Disabled));
        m.identity.refreshed(true);
        let text = m.encode();
        for needle in [
            r#"request_total{namespace="shop",pod="web-1",deployment="web",direction="inbound",authority="web.shop:80",tls="disabled"} 1"#,
            r#"response_latency_ms_bucket{namespace="shop",pod="web-1",deployment="web",le="4.0",direction="inbound""#,
            r#"tcp_close_total{namespace="shop",pod="web-1",deployment="web",direction="inbound",peer="src",tls="disabled",errno=""} 1"#,
            r#"identity_cert_refresh_total{namespace="shop",pod="web-1",deployment="web",result="success"} 1"#,
            r#"identity_cert_expiration_timestamp_seconds{namespace="shop",pod="web-1",deployment="web"} 0"#,
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        // Unknown owner kinds never reuse a label name the metrics have.
        let custom = crate::config::Workload::parse("shop/rollout/web/web-1").unwrap();
        let m = Metrics::new(false, custom.metric_labels());
        m.identity.refreshed(true);
        assert!(
            m.encode().contains(
                r#"{namespace="shop",pod="web-1",owner_kind="rollout",owner_name="web",result="success"}"#
            ),
            "{}",
            m.encode()
        );
    }

    #[test]
    fn authority_cardinality_is_bounded() {
        let m = Metrics::new(false, ConstLabels::new());
        for i in 0..(MAX_REQUEST_SERIES + 500) {
            let labels = m.http.request_labels(
                Direction::Outbound,
                &format!("h{i}:80"),
                Tls::Disabled,
                DstLabels::default(),
            );
            m.http.request(&labels);
        }
        let text = m.encode();
        let series = text
            .lines()
            .filter(|l| l.starts_with("request_total{"))
            .count();
        assert_eq!(series, MAX_REQUEST_SERIES + 1);
        assert!(text.contains(r#"authority="overflow""#));
    }
}
