//! Proxy configuration, read from `WEFT_PROXY_*` environment variables.
//!
//! Every setting has a default that suits a sidecar; a value that does not
//! parse stops the proxy at start-up with an error naming the variable, so a
//! typo never silently turns into a default. `docs/proxy.md` lists them all.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A configuration value that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid {var}={value:?}: {reason}")]
pub struct ConfigError {
    var: &'static str,
    value: String,
    reason: String,
}

/// Everything the proxy needs to start.
#[derive(Clone, Debug)]
pub struct Config {
    /// Inbound listener (`WEFT_PROXY_INBOUND_ADDR`, default `0.0.0.0:4143`).
    pub inbound_addr: SocketAddr,
    /// Outbound listener (`WEFT_PROXY_OUTBOUND_ADDR`, default `127.0.0.1:4140`).
    pub outbound_addr: SocketAddr,
    /// Admin server (`WEFT_PROXY_ADMIN_ADDR`, default `127.0.0.1:4191`).
    pub admin_addr: SocketAddr,
    /// Where inbound connections go when they were not redirected by iptables
    /// (`WEFT_PROXY_INBOUND_FORWARD`, e.g. the app's `127.0.0.1:8080`).
    pub inbound_forward: Option<SocketAddr>,
    /// Destination ports whose traffic is never inspected
    /// (`WEFT_PROXY_OPAQUE_PORTS`, e.g. `25,3306,4222-4224`).
    pub opaque_ports: PortSet,
    /// Targets known to run a Weft proxy, to which HTTP/1 is carried over
    /// HTTP/2 and, when their identity is given, mTLS is used
    /// (`WEFT_PROXY_MESHED_TARGETS`: `*` or `ip:port[=identity],...`).
    /// An override: addresses discovery knows use what it announces, so
    /// with a destination service this is needed only for the others.
    pub meshed_targets: MeshedTargets,
    /// This proxy's identity, when mTLS is configured (see
    /// [`IdentityConfig`]); `None` runs plaintext.
    pub identity: Option<IdentityConfig>,
    /// Inbound destination ports that refuse connections without a
    /// verified client identity (`WEFT_PROXY_REQUIRE_IDENTITY_PORTS`).
    pub require_identity_ports: PortSet,
    /// The controller's destination service (`WEFT_PROXY_DESTINATION_ADDR`,
    /// `host:port`). Needs identity: the controller only speaks TLS.
    pub destination_addr: Option<String>,
    /// How discovered endpoints are chosen (`WEFT_PROXY_BALANCER`:
    /// `peak-ewma`, the default; `least-loaded` and `round-robin` exist for
    /// comparison in benchmarks).
    pub balancer: crate::balance::Strategy,
    /// Circuit breaking of failing endpoints
    /// (`WEFT_PROXY_FAILURE_ACCRUAL_MAX_FAILURES`, default 7, 0 disables;
    /// `..._MIN_PENALTY` 1s; `..._MAX_PENALTY` 60s).
    pub accrual: crate::balance::Accrual,
    /// Per outbound backend: requests that may wait for a ready endpoint
    /// (`WEFT_PROXY_OUTBOUND_QUEUE_CAPACITY`, default 100), and how long a
    /// backend may have no ready endpoint before its requests fail fast
    /// with `503` (`WEFT_PROXY_OUTBOUND_FAILFAST_TIMEOUT`, default 3s).
    pub queue: weft_proxy_stack::QueueConfig,
    /// Requests in flight on the inbound listener before new ones are
    /// shed with `503` (`WEFT_PROXY_INBOUND_MAX_IN_FLIGHT`, default 10000).
    pub inbound_max_in_flight: usize,
    /// The same for the outbound listener
    /// (`WEFT_PROXY_OUTBOUND_MAX_IN_FLIGHT`, default 10000).
    pub outbound_max_in_flight: usize,
    /// How long to wait for a client's first bytes before treating the
    /// connection as opaque TCP (`WEFT_PROXY_DETECT_TIMEOUT`, default 10s).
    pub detect_timeout: Duration,
    /// TCP connect timeout to targets (`WEFT_PROXY_CONNECT_TIMEOUT`, 1s).
    pub connect_timeout: Duration,
    /// HTTP connections (client and server side) with no request for this
    /// long are closed (`WEFT_PROXY_IDLE_TIMEOUT`, default 60s).
    pub idle_timeout: Duration,
    /// Pooled connections to targets idle this long are closed
    /// (`WEFT_PROXY_CLIENT_IDLE_TIMEOUT`, default 3s: shorter than common
    /// server keep-alive timeouts, so the proxy closes first instead of
    /// racing the server's close with a new request).
    pub client_idle_timeout: Duration,
    /// How long shutdown waits for in-flight work
    /// (`WEFT_PROXY_SHUTDOWN_GRACE_PERIOD`, default 30s).
    pub shutdown_grace: Duration,
    /// Tokio worker threads (`WEFT_PROXY_CORES`, default 1).
    pub cores: usize,
    /// Maximum concurrent HTTP/2 streams per server connection
    /// (`WEFT_PROXY_MAX_CONCURRENT_STREAMS`, default 1000).
    pub max_concurrent_streams: u32,
    /// The pod this proxy serves (`WEFT_PROXY_WORKLOAD`), whose namespace,
    /// name and owner label every exported metric; `None` outside a pod.
    pub workload: Option<Workload>,
    /// How long the proxy keeps serving normally after SIGTERM before it
    /// starts draining (`WEFT_PROXY_WAIT_BEFORE_EXIT`, default 0). It gives
    /// the rest of the cluster time to stop sending traffic here, as
    /// Linkerd's preStop `sleep` hook does.
    pub wait_before_exit: Duration,
    /// Exit once the application's processes are gone
    /// (`WEFT_PROXY_EXIT_WITH_APP=true`; see [`crate::exit_with_app`]), so a
    /// meshed Job completes on clusters without native sidecars.
    pub exit_with_app: bool,
    /// What an inbound port admits until the controller's first answer
    /// for it, and always without a controller
    /// (`WEFT_PROXY_DEFAULT_INBOUND_POLICY`, default `all-unauthenticated`;
    /// see `docs/policy.md`).
    pub default_inbound_policy: weft_policy::DefaultPolicy,
    /// The networks `cluster-*` default policies admit
    /// (`WEFT_PROXY_CLUSTER_NETWORKS`, default
    /// [`weft_policy::DEFAULT_CLUSTER_NETWORKS`]).
    pub cluster_networks: Vec<ipnet::IpNet>,
    /// The application's ports, whose policies are watched from start-up
    /// (`WEFT_PROXY_INBOUND_PORTS`); other ports are watched from their
    /// first connection.
    pub inbound_ports: PortSet,
    /// Admit every connection from `127.0.0.1` / `::1`
    /// (`WEFT_PROXY_INBOUND_TRUST_LOOPBACK`, default `false`): true in a
    /// pod, whose loopback is its own; false where workloads share one.
    pub inbound_trust_loopback: bool,
}

/// The pod a proxy serves, from `WEFT_PROXY_WORKLOAD`
/// (`NAMESPACE/KIND/NAME/POD`, e.g. `shop/deployment/web/web-5d8f-x2x1`;
/// `shop///debug` for a bare pod). The injector fills it in from the
/// downward API and the pod's resolved owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The workload that owns the pod, if any.
    pub owner: Option<Owner>,
}

/// The workload that owns a pod, e.g. `deployment` `web`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// Lower-case Kubernetes kind (`deployment`, `statefulset`, ...).
    pub kind: String,
    /// The owner's name.
    pub name: String,
}

/// Owner kinds exported under their own label name (`deployment="web"`),
/// the names Linkerd's `linkerd.io/proxy-<kind>` pod labels become after
/// Prometheus relabelling. Any other kind is exported as
/// `owner_kind`/`owner_name`, so it can never collide with a metric's own
/// labels (`direction`, `authority`, ...).
pub const OWNER_KINDS: &[&str] = &[
    "deployment",
    "statefulset",
    "daemonset",
    "job",
    "cronjob",
    "replicaset",
    "replicationcontroller",
];

/// Where the trust anchors come from (`WEFT_PROXY_TRUST_ANCHORS`): injected
/// pods get the PEM text itself in the variable (no volume to mount, as in
/// Linkerd); local runs and tests usually point at a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrustAnchors {
    /// A PEM file, read at start-up.
    File(PathBuf),
    /// PEM text given inline (the value starts with `-----BEGIN`).
    Inline(String),
}

/// How the proxy obtains its mTLS identity. All four variables must be set
/// together (or none of them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityConfig {
    /// This proxy's identity (`WEFT_PROXY_IDENTITY_NAME`), e.g.
    /// `web.shop.serviceaccount.identity.weft.cluster.local`.
    pub name: String,
    /// The controller's identity service (`WEFT_PROXY_IDENTITY_ADDR`,
    /// `host:port`).
    pub addr: String,
    /// The ServiceAccount token, re-read on every refresh
    /// (`WEFT_PROXY_IDENTITY_TOKEN_FILE`).
    pub token_file: PathBuf,
    /// The mesh's trust anchors (`WEFT_PROXY_TRUST_ANCHORS`: a PEM file or
    /// the PEM text itself).
    pub trust_anchors: TrustAnchors,
    /// The identity the controller must present
    /// (`WEFT_PROXY_CONTROL_IDENTITY`; default
    /// `weft-controller.weft.serviceaccount.identity.weft.<trust domain>`,
    /// with the trust domain taken from this proxy's name).
    pub control_identity: String,
}

/// A set of TCP ports, parsed from `p1,p2,lo-hi`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortSet(BTreeSet<u16>);

/// Which targets run a Weft proxy (see [`Config::meshed_targets`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum MeshedTargets {
    /// No target is known to be meshed: plain HTTP/1 everywhere.
    #[default]
    None,
    /// Every target is meshed (identities unknown: no mTLS).
    All,
    /// Only these addresses are, each with its identity if known.
    Some(BTreeMap<SocketAddr, Option<Arc<str>>>),
}

/// What is known about a meshed target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meshed {
    /// The identity its proxy must prove; `None` means plaintext.
    pub identity: Option<Arc<str>>,
}

/// Requests in flight per listener before new ones are shed.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 10_000;

// === impl Config ===

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `get`, so tests need not touch the
    /// process environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &'static str| get(name).filter(|v| !v.trim().is_empty());
        let addr = |name: &'static str, default: &str| -> Result<SocketAddr, ConfigError> {
            let value = var(name).unwrap_or_else(|| default.to_string());
            parse_addr(name, &value)
        };
        let duration = |name: &'static str, default: Duration| -> Result<Duration, ConfigError> {
            match var(name) {
                None => Ok(default),
                Some(v) => parse_duration(&v).map_err(|reason| err(name, &v, reason)),
            }
        };

        let inbound_forward = var("WEFT_PROXY_INBOUND_FORWARD")
            .map(|v| parse_addr("WEFT_PROXY_INBOUND_FORWARD", &v))
            .transpose()?;
        let opaque_ports = match var("WEFT_PROXY_OPAQUE_PORTS") {
            None => PortSet::default(),
            Some(v) => PortSet::parse(&v).map_err(|r| err("WEFT_PROXY_OPAQUE_PORTS", &v, r))?,
        };
        let meshed_targets = match var("WEFT_PROXY_MESHED_TARGETS") {
            None => MeshedTargets::None,
            Some(v) => {
                MeshedTargets::parse(&v).map_err(|r| err("WEFT_PROXY_MESHED_TARGETS", &v, r))?
            }
        };
        let cores = match var("WEFT_PROXY_CORES") {
            None => 1,
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if (1..=64).contains(&n) => n,
                _ => return Err(err("WEFT_PROXY_CORES", &v, "expected 1..=64".into())),
            },
        };
        let max_concurrent_streams = match var("WEFT_PROXY_MAX_CONCURRENT_STREAMS") {
            None => 1000,
            Some(v) => match v.trim().parse::<u32>() {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(err(
                        "WEFT_PROXY_MAX_CONCURRENT_STREAMS",
                        &v,
                        "expected a positive integer".into(),
                    ))
                }
            },
        };

        let require_identity_ports = match var("WEFT_PROXY_REQUIRE_IDENTITY_PORTS") {
            None => PortSet::default(),
            Some(v) => {
                PortSet::parse(&v).map_err(|r| err("WEFT_PROXY_REQUIRE_IDENTITY_PORTS", &v, r))?
            }
        };
        let identity = IdentityConfig::from_vars(&var)?;
        if identity.is_none() && require_identity_ports != PortSet::default() {
            return Err(err(
                "WEFT_PROXY_REQUIRE_IDENTITY_PORTS",
                &var("WEFT_PROXY_REQUIRE_IDENTITY_PORTS").unwrap_or_default(),
                "requires identity (WEFT_PROXY_IDENTITY_*) to be configured".into(),
            ));
        }

        let destination_addr = var("WEFT_PROXY_DESTINATION_ADDR");
        if let (Some(addr), None) = (&destination_addr, &identity) {
            return Err(err(
                "WEFT_PROXY_DESTINATION_ADDR",
                addr,
                "requires identity (WEFT_PROXY_IDENTITY_*): the controller is reached over TLS"
                    .into(),
            ));
        }

        let balancer = match var("WEFT_PROXY_BALANCER") {
            None => Default::default(),
            Some(v) => v.parse().map_err(|r| err("WEFT_PROXY_BALANCER", &v, r))?,
        };

        let default_accrual = crate::balance::Accrual::default();
        let accrual = crate::balance::Accrual {
            max_failures: match var("WEFT_PROXY_FAILURE_ACCRUAL_MAX_FAILURES") {
                None => default_accrual.max_failures,
                Some(v) => v.trim().parse().map_err(|_| {
                    err(
                        "WEFT_PROXY_FAILURE_ACCRUAL_MAX_FAILURES",
                        &v,
                        "expected a count (0 disables ejection)".into(),
                    )
                })?,
            },
            min_penalty: duration(
                "WEFT_PROXY_FAILURE_ACCRUAL_MIN_PENALTY",
                default_accrual.min_penalty,
            )?,
            max_penalty: duration(
                "WEFT_PROXY_FAILURE_ACCRUAL_MAX_PENALTY",
                default_accrual.max_penalty,
            )?,
        };
        if accrual.min_penalty.is_zero() || accrual.max_penalty < accrual.min_penalty {
            return Err(err(
                "WEFT_PROXY_FAILURE_ACCRUAL_MAX_PENALTY",
                &format!("{:?}", accrual.max_penalty),
                format!(
                    "penalties must be positive with max >= min ({:?})",
                    accrual.min_penalty
                ),
            ));
        }

        let count = |name: &'static str, default: usize| -> Result<usize, ConfigError> {
            match var(name) {
                None => Ok(default),
                Some(v) => match v.trim().parse::<usize>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(err(name, &v, "expected a positive integer".into())),
                },
            }
        };
        let failfast_timeout = duration(
            "WEFT_PROXY_OUTBOUND_FAILFAST_TIMEOUT",
            weft_proxy_stack::QueueConfig::default().failfast_timeout,
        )?;
        if failfast_timeout.is_zero() {
            return Err(err(
                "WEFT_PROXY_OUTBOUND_FAILFAST_TIMEOUT",
                "0s",
                "must be positive".into(),
            ));
        }
        let queue = weft_proxy_stack::QueueConfig {
            capacity: count(
                "WEFT_PROXY_OUTBOUND_QUEUE_CAPACITY",
                weft_proxy_stack::QueueConfig::default().capacity,
            )?,
            failfast_timeout,
        };
        let inbound_max_in_flight =
            count("WEFT_PROXY_INBOUND_MAX_IN_FLIGHT", DEFAULT_MAX_IN_FLIGHT)?;
        let outbound_max_in_flight =
            count("WEFT_PROXY_OUTBOUND_MAX_IN_FLIGHT", DEFAULT_MAX_IN_FLIGHT)?;

        let workload = var("WEFT_PROXY_WORKLOAD")
            .map(|v| Workload::parse(&v).map_err(|r| err("WEFT_PROXY_WORKLOAD", &v, r)))
            .transpose()?;
        let flag = |name: &'static str| -> Result<bool, ConfigError> {
            match var(name) {
                None => Ok(false),
                Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                    "true" => Ok(true),
                    "false" => Ok(false),
                    _ => Err(err(name, &v, "expected true or false".into())),
                },
            }
        };
        let exit_with_app = flag("WEFT_PROXY_EXIT_WITH_APP")?;
        let inbound_trust_loopback = flag("WEFT_PROXY_INBOUND_TRUST_LOOPBACK")?;
        let default_inbound_policy = match var("WEFT_PROXY_DEFAULT_INBOUND_POLICY") {
            None => weft_policy::DefaultPolicy::default(),
            Some(v) => v.parse().map_err(|e: weft_policy::UnknownPolicy| {
                err("WEFT_PROXY_DEFAULT_INBOUND_POLICY", &v, e.to_string())
            })?,
        };
        let networks = var("WEFT_PROXY_CLUSTER_NETWORKS")
            .unwrap_or_else(|| weft_policy::DEFAULT_CLUSTER_NETWORKS.to_string());
        let cluster_networks = weft_policy::parse_networks(&networks)
            .map_err(|e| err("WEFT_PROXY_CLUSTER_NETWORKS", &networks, e.to_string()))?;
        if cluster_networks.is_empty() {
            return Err(err(
                "WEFT_PROXY_CLUSTER_NETWORKS",
                &networks,
                "lists no network".into(),
            ));
        }
        let inbound_ports = match var("WEFT_PROXY_INBOUND_PORTS") {
            None => PortSet::default(),
            Some(v) => PortSet::parse(&v).map_err(|r| err("WEFT_PROXY_INBOUND_PORTS", &v, r))?,
        };

        Ok(Config {
            queue,
            inbound_max_in_flight,
            outbound_max_in_flight,
            workload,
            wait_before_exit: duration("WEFT_PROXY_WAIT_BEFORE_EXIT", Duration::ZERO)?,
            exit_with_app,
            default_inbound_policy,
            cluster_networks,
            inbound_ports,
            inbound_trust_loopback,
            accrual,
            balancer,
            destination_addr,
            identity,
            require_identity_ports,
            inbound_addr: addr("WEFT_PROXY_INBOUND_ADDR", "0.0.0.0:4143")?,
            outbound_addr: addr("WEFT_PROXY_OUTBOUND_ADDR", "127.0.0.1:4140")?,
            admin_addr: addr("WEFT_PROXY_ADMIN_ADDR", "127.0.0.1:4191")?,
            inbound_forward,
            opaque_ports,
            meshed_targets,
            detect_timeout: duration("WEFT_PROXY_DETECT_TIMEOUT", Duration::from_secs(10))?,
            connect_timeout: duration("WEFT_PROXY_CONNECT_TIMEOUT", Duration::from_secs(1))?,
            idle_timeout: duration("WEFT_PROXY_IDLE_TIMEOUT", Duration::from_secs(60))?,
            client_idle_timeout: duration(
                "WEFT_PROXY_CLIENT_IDLE_TIMEOUT",
                Duration::from_secs(3),
            )?,
            shutdown_grace: duration("WEFT_PROXY_SHUTDOWN_GRACE_PERIOD", Duration::from_secs(30))?,
            cores,
            max_concurrent_streams,
        })
    }
}

/// The admin address `weft-proxy await` polls: `WEFT_PROXY_ADMIN_ADDR`
/// (default `127.0.0.1:4191`) with an unspecified IP (`0.0.0.0`, `::`)
/// replaced by loopback, since a listener on every address answers there
/// and the hook runs in the proxy's own network namespace.
pub fn await_admin_addr(get: impl Fn(&str) -> Option<String>) -> Result<SocketAddr, ConfigError> {
    let value = get("WEFT_PROXY_ADMIN_ADDR")
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "127.0.0.1:4191".to_string());
    parse_addr("WEFT_PROXY_ADMIN_ADDR", &value).map(loopback_if_unspecified)
}

/// Replaces an unspecified IP with the loopback address of its family.
pub fn loopback_if_unspecified(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

fn err(var: &'static str, value: &str, reason: String) -> ConfigError {
    ConfigError {
        var,
        value: value.to_string(),
        reason,
    }
}

/// Parses `ip:port`, or `host:port` resolved once at start-up.
fn parse_addr(var: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    let value = value.trim();
    if let Ok(addr) = value.parse() {
        return Ok(addr);
    }
    match value.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| err(var, value, "name resolved to no address".into())),
        Err(e) => Err(err(
            var,
            value,
            format!("expected ip:port or host:port ({e})"),
        )),
    }
}

/// Parses `500ms`, `10s`, `2m`, `1h30m`...; a bare number means seconds.
/// The same syntax as every other Weft duration (see `weft_identity`).
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    weft_identity::parse_duration(value).map_err(|e| e.to_string())
}

// === impl IdentityConfig ===

impl IdentityConfig {
    fn from_vars(
        var: &dyn Fn(&'static str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        const VARS: [&str; 4] = [
            "WEFT_PROXY_IDENTITY_NAME",
            "WEFT_PROXY_IDENTITY_ADDR",
            "WEFT_PROXY_IDENTITY_TOKEN_FILE",
            "WEFT_PROXY_TRUST_ANCHORS",
        ];
        let (name, addr, token_file, trust_anchors) = match VARS.map(var) {
            [None, None, None, None] => return Ok(None),
            [Some(n), Some(a), Some(t), Some(c)] => (n, a, t, c),
            values => {
                let missing = values.iter().position(Option::is_none).unwrap_or_default();
                return Err(err(
                    VARS[missing],
                    "",
                    format!("identity needs all of {} set", VARS.join(", ")),
                ));
            }
        };
        let control_identity = match var("WEFT_PROXY_CONTROL_IDENTITY") {
            Some(id) => id,
            None => {
                let domain = name
                    .split_once(".serviceaccount.identity.weft.")
                    .map(|(_, domain)| domain)
                    .ok_or_else(|| {
                        err(
                            "WEFT_PROXY_IDENTITY_NAME",
                            &name,
                            "expected SA.NS.serviceaccount.identity.weft.TRUST_DOMAIN (or set WEFT_PROXY_CONTROL_IDENTITY)".into(),
                        )
                    })?;
                format!("weft-controller.weft.serviceaccount.identity.weft.{domain}")
            }
        };
        Ok(Some(Self {
            name,
            addr,
            token_file: token_file.into(),
            trust_anchors: TrustAnchors::from_value(&trust_anchors),
            control_identity,
        }))
    }
}

// === impl TrustAnchors ===

impl TrustAnchors {
    /// Inline PEM when the value starts with `-----BEGIN` (leading
    /// whitespace ignored), else a file path.
    pub fn from_value(value: &str) -> Self {
        if value.trim_start().starts_with("-----BEGIN") {
            Self::Inline(value.to_string())
        } else {
            Self::File(value.trim().into())
        }
    }

    /// The PEM text: the inline value, or the file's contents.
    pub fn pem(&self) -> Result<Cow<'_, str>, String> {
        match self {
            Self::Inline(pem) => Ok(Cow::Borrowed(pem)),
            Self::File(path) => std::fs::read_to_string(path)
                .map(Cow::Owned)
                .map_err(|e| format!("cannot read {}: {e}", path.display())),
        }
    }
}

impl std::fmt::Display for TrustAnchors {
    /// Names the source in errors without printing the certificates.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Inline(_) => f.write_str("WEFT_PROXY_TRUST_ANCHORS (inline PEM)"),
        }
    }
}

// === impl Workload ===

impl Workload {
    /// Parses `NAMESPACE/KIND/NAME/POD`. KIND and NAME are both set or both
    /// empty (a bare pod); KIND is case-insensitive and kept lower-case.
    pub fn parse(value: &str) -> Result<Self, String> {
        let parts: Vec<&str> = value.trim().split('/').collect();
        let [namespace, kind, name, pod] = parts[..] else {
            return Err(format!(
                "expected NAMESPACE/KIND/NAME/POD (KIND and NAME empty for a bare pod: NS///POD), \
                 found {} part(s)",
                parts.len()
            ));
        };
        check_dns_label("namespace", namespace)?;
        check_dns_subdomain("pod name", pod)?;
        let owner = match (kind, name) {
            ("", "") => None,
            ("", _) => return Err(format!("owner name {name:?} has no kind")),
            (_, "") => return Err(format!("owner kind {kind:?} has no name")),
            (kind, name) => {
                let kind = kind.to_ascii_lowercase();
                let valid = kind.starts_with(|c: char| c.is_ascii_lowercase())
                    && kind.chars().all(|c| c.is_ascii_alphanumeric());
                if !valid {
                    return Err(format!(
                        "owner kind {kind:?} is not a Kubernetes kind (letters and digits)"
                    ));
                }
                check_dns_subdomain("owner name", name)?;
                Some(Owner {
                    kind,
                    name: name.to_string(),
                })
            }
        };
        Ok(Self {
            namespace: namespace.to_string(),
            pod: pod.to_string(),
            owner,
        })
    }

    /// The constant labels for every metric this proxy exports:
    /// `namespace`, `pod`, and `KIND="NAME"` for a kind in [`OWNER_KINDS`]
    /// (else `owner_kind`, `owner_name`).
    pub fn metric_labels(&self) -> Vec<(Cow<'static, str>, Cow<'static, str>)> {
        let mut labels = vec![
            ("namespace".into(), self.namespace.clone().into()),
            ("pod".into(), self.pod.clone().into()),
        ];
        if let Some(owner) = &self.owner {
            match OWNER_KINDS.iter().find(|k| **k == owner.kind) {
                Some(kind) => labels.push((Cow::Borrowed(*kind), owner.name.clone().into())),
                None => {
                    labels.push(("owner_kind".into(), owner.kind.clone().into()));
                    labels.push(("owner_name".into(), owner.name.clone().into()));
                }
            }
        }
        labels
    }
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.owner {
            Some(o) => write!(f, "{}/{}/{}/{}", self.namespace, o.kind, o.name, self.pod),
            None => write!(f, "{}///{}", self.namespace, self.pod),
        }
    }
}

/// A DNS-1123 label (namespaces): lower-case letters, digits and `-`,
/// starting and ending with a letter or digit, at most 63 characters.
fn check_dns_label(what: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{what} is empty"));
    }
    let valid = value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{what} {value:?} is not a DNS label (lower-case letters, digits, '-'; at most 63)"
        ))
    }
}

/// A DNS-1123 subdomain (pod and workload names): dot-separated labels, at
/// most 253 characters.
fn check_dns_subdomain(what: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{what} is empty"));
    }
    let valid = value.len() <= 253
        && value.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{what} {value:?} is not a DNS subdomain (lower-case letters, digits, '-', '.')"
        ))
    }
}

// === impl PortSet ===

impl PortSet {
    /// Parses a comma-separated list of ports and inclusive `lo-hi` ranges.
    pub fn parse(value: &str) -> Result<Self, String> {
        let mut ports = BTreeSet::new();
        for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let port = |s: &str| {
                s.trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("{s:?} is not a port (1-65535)"))
            };
            match item.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (port(lo)?, port(hi)?);
                    if lo > hi {
                        return Err(format!("range {item:?} is reversed"));
                    }
                    ports.extend(lo..=hi);
                }
                None => {
                    ports.insert(port(item)?);
                }
            }
        }
        Ok(Self(ports))
    }

    /// True if `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        self.0.contains(&port)
    }

    /// The ports, in order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.0.iter().copied()
    }
}

// === impl MeshedTargets ===

impl MeshedTargets {
    /// Parses `*` or a comma-separated list of `ip:port` or
    /// `ip:port=identity`.
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.trim() == "*" {
            return Ok(Self::All);
        }
        let mut targets = BTreeMap::new();
        for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (addr, identity) = match item.split_once('=') {
                Some((addr, id)) if !id.trim().is_empty() => (addr, Some(Arc::from(id.trim()))),
                Some(_) => return Err(format!("{item:?} has an empty identity")),
                None => (item, None),
            };
            let addr: SocketAddr = addr
                .trim()
                .parse()
                .map_err(|_| format!("{addr:?} is not ip:port"))?;
            targets.insert(addr, identity);
        }
        Ok(Self::Some(targets))
    }

    /// What is known about `addr`, if it runs a Weft proxy.
    pub fn get(&self, addr: &SocketAddr) -> Option<Meshed> {
        match self {
            Self::None => None,
            Self::All => Some(Meshed { identity: None }),
            Self::Some(map) => map.get(addr).map(|identity| Meshed {
                identity: identity.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_match_the_design() {
        let c = config(&[]).unwrap();
        assert_eq!(c.inbound_addr, "0.0.0.0:4143".parse().unwrap());
        assert_eq!(c.outbound_addr, "127.0.0.1:4140".parse().unwrap());
        assert_eq!(c.admin_addr, "127.0.0.1:4191".parse().unwrap());
        assert_eq!(c.inbound_forward, None);
        assert_eq!(c.cores, 1);
        assert_eq!(c.detect_timeout, Duration::from_secs(10));
        assert_eq!(c.meshed_targets, MeshedTargets::None);
    }

    #[test]
    fn ports_and_ranges() {
        let p = PortSet::parse("25, 3306,4222-4224").unwrap();
        for port in [25, 3306, 4222, 4223, 4224] {
            assert!(p.contains(port), "{port}");
        }
        assert!(!p.contains(4225));
        assert!(PortSet::parse("10-5").is_err());
        assert!(PortSet::parse("0").is_err());
        assert!(PortSet::parse("http").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = config(&[("WEFT_PROXY_OPAQUE_PORTS", "99999")]).unwrap_err();
        assert!(e.to_string().contains("WEFT_PROXY_OPAQUE_PORTS"), "{e}");
        let e = config(&[("WEFT_PROXY_CORES", "0")]).unwrap_err();
        assert!(e.to_string().contains("WEFT_PROXY_CORES"), "{e}");
        let e = config(&[("WEFT_PROXY_INBOUND_ADDR", "nowhere")]).unwrap_err();
        assert!(e.to_string().contains("WEFT_PROXY_INBOUND_ADDR"), "{e}");
    }

    #[test]
    fn meshed_targets() {
        let m = MeshedTargets::parse(
            "127.0.0.1:4143, 10.0.0.1:4143=b.ns.serviceaccount.identity.weft.cluster.local",
        )
        .unwrap();
        let a = m.get(&"127.0.0.1:4143".parse().unwrap());
        assert_eq!(a, Some(Meshed { identity: None }));
        let b = m.get(&"10.0.0.1:4143".parse().unwrap()).unwrap();
        assert_eq!(
            b.identity.as_deref(),
            Some("b.ns.serviceaccount.identity.weft.cluster.local")
        );
        assert_eq!(m.get(&"10.0.0.2:4143".parse().unwrap()), None);
        let all = MeshedTargets::parse("*").unwrap();
        assert!(all.get(&"1.2.3.4:5".parse().unwrap()).is_some());
        assert!(MeshedTargets::parse("host").is_err());
        assert!(MeshedTargets::parse("1.2.3.4:5=").is_err());
    }

    #[test]
    fn identity_is_all_or_nothing() {
        let name = "a.b.serviceaccount.identity.weft.cluster.local";
        let e = config(&[("WEFT_PROXY_IDENTITY_NAME", name)]).unwrap_err();
        assert!(e.to_string().contains("WEFT_PROXY_IDENTITY_ADDR"), "{e}");
        let c = config(&[
            (
                "WEFT_PROXY_IDENTITY_NAME",
                "a.b.serviceaccount.identity.weft.example.org",
            ),
            ("WEFT_PROXY_IDENTITY_ADDR", "127.0.0.1:8080"),
            ("WEFT_PROXY_IDENTITY_TOKEN_FILE", "/t"),
            ("WEFT_PROXY_TRUST_ANCHORS", "/ca.crt"),
        ])
        .unwrap();
        assert_eq!(
            c.identity.unwrap().control_identity,
            "weft-controller.weft.serviceaccount.identity.weft.example.org"
        );
        let e = config(&[("WEFT_PROXY_REQUIRE_IDENTITY_PORTS", "80")]).unwrap_err();
        assert!(e.to_string().contains("requires identity"), "{e}");
    }

    #[test]
    fn workload_parses_owner_and_bare_pods() {
        let w = Workload::parse("shop/deployment/web/web-5d8f-x2x1").unwrap();
        assert_eq!(w.namespace, "shop");
        assert_eq!(w.pod, "web-5d8f-x2x1");
        assert_eq!(
            w.owner,
            Some(Owner {
                kind: "deployment".into(),
                name: "web".into()
            })
        );
        assert_eq!(w.to_string(), "shop/deployment/web/web-5d8f-x2x1");
        let labels: Vec<(String, String)> = w
            .metric_labels()
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        assert_eq!(
            labels,
            [
                ("namespace", "shop"),
                ("pod", "web-5d8f-x2x1"),
                ("deployment", "web")
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        // Kinds are case-insensitive; every known kind is its own label.
        for kind in OWNER_KINDS {
            let upper = kind.to_uppercase();
            let w = Workload::parse(&format!("ns/{upper}/x/p")).unwrap();
            assert_eq!(w.metric_labels()[2].0, *kind);
        }
        let bare = Workload::parse("shop///debug").unwrap();
        assert_eq!(bare.owner, None);
        assert_eq!(bare.metric_labels().len(), 2);
        assert_eq!(bare.to_string(), "shop///debug");

        let c = config(&[("WEFT_PROXY_WORKLOAD", "shop/statefulset/db/db-0")]).unwrap();
        assert_eq!(c.workload.unwrap().owner.unwrap().kind, "statefulset");
        assert_eq!(config(&[]).unwrap().workload, None);
    }

    #[test]
    fn malformed_workloads_name_the_variable_and_the_problem() {
        for (value, why) in [
            ("shop/web-1", "2 part(s)"),
            ("shop/deployment/web/web-1/x", "5 part(s)"),
            ("shop/deployment//web-1", "has no name"),
            ("shop//web/web-1", "has no kind"),
            ("/deployment/web/web-1", "namespace is empty"),
            ("shop/deployment/web/", "pod name is empty"),
            ("Shop/deployment/web/web-1", "not a DNS label"),
            ("shop/deployment/web/web_1", "not a DNS subdomain"),
            ("shop/deploy-ment/web/web-1", "not a Kubernetes kind"),
            ("shop/deployment/we b/web-1", "not a DNS subdomain"),
        ] {
            let e = config(&[("WEFT_PROXY_WORKLOAD", value)]).unwrap_err();
            let e = e.to_string();
            assert!(e.contains("WEFT_PROXY_WORKLOAD"), "{value}: {e}");
            assert!(e.contains(why), "{value}: expected {why:?} in {e}");
        }
    }

    #[test]
    fn trust_anchors_are_a_path_or_inline_pem() {
        assert_eq!(
            TrustAnchors::from_value("/var/run/weft/ca.crt"),
            TrustAnchors::File("/var/run/weft/ca.crt".into())
        );
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        assert_eq!(
            TrustAnchors::from_value(pem),
            TrustAnchors::Inline(pem.into())
        );
        assert!(matches!(
            TrustAnchors::from_value(&format!("\n  {pem}")),
            TrustAnchors::Inline(_)
        ));
        assert_eq!(TrustAnchors::Inline(pem.into()).pem().unwrap(), pem);
        // Errors name the source, never dump the certificates.
        let inline = TrustAnchors::Inline(pem.into()).to_string();
        assert!(inline.contains("WEFT_PROXY_TRUST_ANCHORS") && !inline.contains("MIIB"));
        let e = TrustAnchors::File("/nonexistent/ca.crt".into())
            .pem()
            .unwrap_err();
        assert!(e.contains("/nonexistent/ca.crt"), "{e}");
    }

    #[test]
    fn lifecycle_settings() {
        let c = config(&[]).unwrap();
        assert_eq!(c.wait_before_exit, Duration::ZERO);
        assert!(!c.exit_with_app);
        assert_eq!(
            c.default_inbound_policy,
            weft_policy::DefaultPolicy::AllUnauthenticated
        );
        let c = config(&[
            ("WEFT_PROXY_WAIT_BEFORE_EXIT", "5s"),
            ("WEFT_PROXY_EXIT_WITH_APP", "true"),
            ("WEFT_PROXY_DEFAULT_INBOUND_POLICY", "cluster-authenticated"),
        ])
        .unwrap();
        assert_eq!(c.wait_before_exit, Duration::from_secs(5));
        assert!(c.exit_with_app);
        assert_eq!(
            c.default_inbound_policy,
            weft_policy::DefaultPolicy::ClusterAuthenticated
        );
        for (var, value) in [
            ("WEFT_PROXY_WAIT_BEFORE_EXIT", "soon"),
            ("WEFT_PROXY_EXIT_WITH_APP", "yes"),
            ("WEFT_PROXY_DEFAULT_INBOUND_POLICY", "allow"),
        ] {
            let e = config(&[(var, value)]).unwrap_err().to_string();
            assert!(e.contains(var), "{e}");
        }
        let e = config(&[("WEFT_PROXY_DEFAULT_INBOUND_POLICY", "allow")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("all-unauthenticated, all-authenticated"), "{e}");
    }

    #[test]
    fn inbound_policy_settings() {
        let c = config(&[]).unwrap();
        assert_eq!(
            c.cluster_networks,
            weft_policy::parse_networks(weft_policy::DEFAULT_CLUSTER_NETWORKS).unwrap()
        );
        assert_eq!(c.inbound_ports, PortSet::default());
        assert!(!c.inbound_trust_loopback);
        let c = config(&[
            ("WEFT_PROXY_CLUSTER_NETWORKS", "10.0.0.0/8, fd00::/8"),
            ("WEFT_PROXY_INBOUND_PORTS", "8080,9000-9001"),
            ("WEFT_PROXY_INBOUND_TRUST_LOOPBACK", "TRUE"),
            ("WEFT_PROXY_DEFAULT_INBOUND_POLICY", "deny"),
        ])
        .unwrap();
        assert_eq!(c.cluster_networks.len(), 2);
        assert_eq!(
            c.inbound_ports.iter().collect::<Vec<_>>(),
            [8080, 9000, 9001]
        );
        assert!(c.inbound_trust_loopback);
        assert_eq!(c.default_inbound_policy, weft_policy::DefaultPolicy::Deny);
        for (var, value, why) in [
            ("WEFT_PROXY_CLUSTER_NETWORKS", "10.0.0.0/33", "10.0.0.0/33"),
            ("WEFT_PROXY_CLUSTER_NETWORKS", " , ", "lists no network"),
            ("WEFT_PROXY_INBOUND_PORTS", "http", "not a port"),
            ("WEFT_PROXY_INBOUND_TRUST_LOOPBACK", "yes", "true or false"),
        ] {
            let e = config(&[(var, value)]).unwrap_err().to_string();
            assert!(e.contains(var) && e.contains(why), "{var}={value}: {e}");
        }
    }

    #[test]
    fn await_polls_loopback_for_a_wildcard_admin_addr() {
        let addr = |v: Option<&str>| {
            let v = v.map(str::to_string);
            await_admin_addr(move |_| v.clone()).unwrap()
        };
        assert_eq!(addr(None), "127.0.0.1:4191".parse().unwrap());
        assert_eq!(
            addr(Some("0.0.0.0:4191")),
            "127.0.0.1:4191".parse().unwrap()
        );
        assert_eq!(addr(Some("[::]:4191")), "[::1]:4191".parse().unwrap());
        assert_eq!(addr(Some("10.1.2.3:9")), "10.1.2.3:9".parse().unwrap());
        let e = await_admin_addr(|_| Some("nowhere".into())).unwrap_err();
        assert!(e.to_string().contains("WEFT_PROXY_ADMIN_ADDR"), "{e}");
    }
}
