//! Which settings a pod's proxy gets: `config.linkerd.io/*` on the pod,
//! else on its namespace, else the install values.
//!
//! A malformed value never blocks a pod: it is skipped (the next source
//! applies, down to the install value) and reported as an
//! [`AnnotationWarning`], which the webhook turns into a Warning Event and
//! `weft inject` prints. The one exception is
//! `config.linkerd.io/default-inbound-policy`, which fails closed: a value
//! that names no policy is `deny` (see `docs/policy.md`).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use weft_policy::DefaultPolicy;

use super::{AnnotationWarning, PodContext};
use crate::values::Values;

/// Inbound ports iptables leaves alone (`p,lo-hi`); the admin port is always added.
pub const SKIP_INBOUND_PORTS: &str = "config.linkerd.io/skip-inbound-ports";
/// Outbound ports iptables leaves alone.
pub const SKIP_OUTBOUND_PORTS: &str = "config.linkerd.io/skip-outbound-ports";
/// Outbound destination CIDRs iptables leaves alone.
pub const SKIP_SUBNETS: &str = "config.linkerd.io/skip-subnets";
/// Ports proxied as opaque TCP (no protocol detection).
pub const OPAQUE_PORTS: &str = "config.linkerd.io/opaque-ports";
/// `WEFT_PROXY_LOG`.
pub const PROXY_LOG_LEVEL: &str = "config.linkerd.io/proxy-log-level";
/// The proxy container's CPU request.
pub const PROXY_CPU_REQUEST: &str = "config.linkerd.io/proxy-cpu-request";
/// The proxy container's CPU limit.
pub const PROXY_CPU_LIMIT: &str = "config.linkerd.io/proxy-cpu-limit";
/// The proxy container's memory request.
pub const PROXY_MEMORY_REQUEST: &str = "config.linkerd.io/proxy-memory-request";
/// The proxy container's memory limit.
pub const PROXY_MEMORY_LIMIT: &str = "config.linkerd.io/proxy-memory-limit";
/// `enabled`/`disabled`: hold the app until the proxy is ready.
pub const PROXY_AWAIT: &str = "config.linkerd.io/proxy-await";
/// The pod's default inbound policy (an unknown name is `deny`).
pub const DEFAULT_INBOUND_POLICY: &str = weft_policy::DEFAULT_POLICY_ANNOTATION;
/// Inbound ports that accept only mTLS.
pub const REQUIRE_IDENTITY_PORTS: &str = "config.linkerd.io/proxy-require-identity-inbound-ports";
/// How long the proxy drains after SIGTERM.
pub const SHUTDOWN_GRACE_PERIOD: &str = "config.linkerd.io/shutdown-grace-period";
/// Seconds the proxy keeps serving after SIGTERM before draining.
pub const WAIT_BEFORE_EXIT_SECONDS: &str = "config.alpha.linkerd.io/proxy-wait-before-exit-seconds";
/// `true`/`false`: run the proxy as a native sidecar.
pub const ENABLE_NATIVE_SIDECAR: &str = "config.alpha.linkerd.io/proxy-enable-native-sidecar";

/// Every configuration annotation the injector reads, in the order their
/// warnings are reported.
pub const CONFIG_ANNOTATIONS: &[&str] = &[
    SKIP_INBOUND_PORTS,
    SKIP_OUTBOUND_PORTS,
    SKIP_SUBNETS,
    OPAQUE_PORTS,
    PROXY_LOG_LEVEL,
    PROXY_CPU_REQUEST,
    PROXY_CPU_LIMIT,
    PROXY_MEMORY_REQUEST,
    PROXY_MEMORY_LIMIT,
    PROXY_AWAIT,
    DEFAULT_INBOUND_POLICY,
    REQUIRE_IDENTITY_PORTS,
    SHUTDOWN_GRACE_PERIOD,
    WAIT_BEFORE_EXIT_SECONDS,
    ENABLE_NATIVE_SIDECAR,
];

/// The settings of one pod's proxy, every value already checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Extra inbound ports not redirected (the admin port comes on top).
    pub skip_inbound_ports: String,
    /// Outbound ports not redirected.
    pub skip_outbound_ports: String,
    /// Outbound CIDRs not redirected.
    pub skip_subnets: String,
    /// `WEFT_PROXY_OPAQUE_PORTS`.
    pub opaque_ports: String,
    /// `WEFT_PROXY_REQUIRE_IDENTITY_PORTS`.
    pub require_identity_ports: String,
    /// `WEFT_PROXY_LOG`.
    pub log_level: String,
    /// CPU request, `""` for none.
    pub cpu_request: String,
    /// CPU limit, `""` for none.
    pub cpu_limit: String,
    /// Memory request, `""` for none.
    pub memory_request: String,
    /// Memory limit, `""` for none.
    pub memory_limit: String,
    /// Hold the app until the proxy is ready.
    pub await_ready: bool,
    /// `WEFT_PROXY_DEFAULT_INBOUND_POLICY`.
    pub default_inbound_policy: DefaultPolicy,
    /// `WEFT_PROXY_SHUTDOWN_GRACE_PERIOD` (normalized duration).
    pub shutdown_grace_period: String,
    /// `WEFT_PROXY_WAIT_BEFORE_EXIT`, in seconds.
    pub wait_before_exit_seconds: u64,
    /// The proxy is an init container with `restartPolicy: Always`.
    pub native_sidecar: bool,
}

/// Looks annotations up on the pod, then the namespace, collecting
/// warnings for values that do not parse.
struct Lookup<'a> {
    pod: Option<&'a BTreeMap<String, String>>,
    namespace: &'a BTreeMap<String, String>,
    warnings: Vec<AnnotationWarning>,
}

impl Lookup<'_> {
    /// The first well-formed value of `key` (pod, then namespace), else
    /// `default`. Each malformed value on the way is one warning.
    fn get<T: Debug>(
        &mut self,
        key: &str,
        default: T,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> T {
        let sources = [self.pod.and_then(|p| p.get(key)), self.namespace.get(key)];
        let mut refused = Vec::new();
        let mut found = None;
        for value in sources.into_iter().flatten() {
            match parse(value) {
                Ok(v) => {
                    found = Some(v);
                    break;
                }
                Err(reason) => refused.push((value.clone(), reason)),
            }
        }
        let value = found.unwrap_or(default);
        for (text, reason) in refused {
            self.warnings.push(AnnotationWarning {
                annotation: key.to_owned(),
                value: text,
                reason: format!("{reason}; using {value:?}"),
            });
        }
        value
    }

    /// The default inbound policy: the first value present (pod, then
    /// namespace) decides, as the controller decides it. A value that
    /// names no policy is `deny`, with a warning, rather than the next
    /// source's: a typo must not open a workload that asked to be closed
    /// (`docs/policy.md`, fail closed).
    fn inbound_policy(&mut self, install: DefaultPolicy) -> DefaultPolicy {
        let key = DEFAULT_INBOUND_POLICY;
        let value = self
            .pod
            .and_then(|p| p.get(key))
            .or_else(|| self.namespace.get(key));
        let Some(value) = value else {
            return install;
        };
        match value.parse::<DefaultPolicy>() {
            Ok(policy) => policy,
            Err(e) => {
                self.warnings.push(AnnotationWarning {
                    annotation: key.to_owned(),
                    value: value.clone(),
                    reason: format!("{e}; treated as {:?}", DefaultPolicy::Deny.as_str()),
                });
                DefaultPolicy::Deny
            }
        }
    }
}

/// Resolves every setting for the pod `meta` in `ctx`.
pub(super) fn resolve(
    values: &Values,
    native_sidecar_supported: bool,
    meta: &ObjectMeta,
    ctx: &PodContext,
) -> (ProxyConfig, Vec<AnnotationWarning>) {
    let p = &values.proxy;
    let mut l = Lookup {
        pod: meta.annotations.as_ref(),
        namespace: &ctx.namespace_annotations,
        warnings: Vec::new(),
    };
    let skip_inbound_ports = l.get(SKIP_INBOUND_PORTS, p.skip_inbound_ports.clone(), port_list);
    let skip_outbound_ports = l.get(
        SKIP_OUTBOUND_PORTS,
        p.skip_outbound_ports.clone(),
        port_list,
    );
    let skip_subnets = l.get(SKIP_SUBNETS, p.skip_subnets.clone(), subnet_list);
    let opaque_ports = l.get(OPAQUE_PORTS, p.opaque_ports.clone(), port_list);
    let log_level = l.get(PROXY_LOG_LEVEL, p.log_level.clone(), log_filter);
    let cpu_request = l.get(PROXY_CPU_REQUEST, p.resources.cpu_request.clone(), quantity);
    let cpu_limit = l.get(PROXY_CPU_LIMIT, p.resources.cpu_limit.clone(), quantity);
    let memory_request = l.get(
        PROXY_MEMORY_REQUEST,
        p.resources.memory_request.clone(),
        quantity,
    );
    let memory_limit = l.get(
        PROXY_MEMORY_LIMIT,
        p.resources.memory_limit.clone(),
        quantity,
    );
    let await_ready = l.get(PROXY_AWAIT, p.await_ready, enabled_disabled);
    // `Values::finish` checked the install's; should it not parse, the
    // closed policy is the safe reading.
    let install_policy = values
        .default_inbound_policy
        .parse()
        .unwrap_or(DefaultPolicy::Deny);
    let default_inbound_policy = l.inbound_policy(install_policy);
    let require_identity_ports = l.get(
        REQUIRE_IDENTITY_PORTS,
        p.require_identity_inbound_ports.clone(),
        port_list,
    );
    let shutdown_grace_period = l.get(
        SHUTDOWN_GRACE_PERIOD,
        p.shutdown_grace_period.clone(),
        duration,
    );
    let wait_before_exit_seconds = l.get(
        WAIT_BEFORE_EXIT_SECONDS,
        p.wait_before_exit_seconds,
        seconds,
    );
    let native_default = match p.native_sidecar.as_str() {
        "enabled" => true,
        "disabled" => false,
        _ => native_sidecar_supported,
    };
    let mut native_sidecar = l.get(ENABLE_NATIVE_SIDECAR, native_default, true_false);
    // An API server older than 1.29 refuses probes on init containers, so
    // asking for a native sidecar there would block the pod: the proxy
    // runs as a regular container instead, with a warning.
    if native_sidecar && !native_sidecar_supported {
        native_sidecar = false;
        l.warnings.push(AnnotationWarning {
            annotation: ENABLE_NATIVE_SIDECAR.to_owned(),
            value: "true".into(),
            reason: "native sidecars need Kubernetes 1.29 or later; running the proxy as a \
                     regular container"
                .into(),
        });
    }

    let mut cfg = ProxyConfig {
        skip_inbound_ports,
        skip_outbound_ports,
        skip_subnets,
        opaque_ports,
        require_identity_ports,
        log_level,
        cpu_request,
        cpu_limit,
        memory_request,
        memory_limit,
        await_ready,
        default_inbound_policy,
        shutdown_grace_period,
        wait_before_exit_seconds,
        native_sidecar,
    };
    // A request above its limit is refused by the API server, which would
    // block the pod: the request gives way (it becomes the limit).
    for (key, request, limit) in [
        (PROXY_CPU_REQUEST, &mut cfg.cpu_request, &cfg.cpu_limit),
        (
            PROXY_MEMORY_REQUEST,
            &mut cfg.memory_request,
            &cfg.memory_limit,
        ),
    ] {
        if let (Ok(r), Ok(lim)) = (milli(request), milli(limit)) {
            if r > lim {
                l.warnings.push(AnnotationWarning {
                    annotation: key.to_owned(),
                    value: request.clone(),
                    reason: format!("the request is above the limit {limit:?}; using {limit:?}"),
                });
                request.clone_from(limit);
            }
        }
    }
    (cfg, l.warnings)
}

fn milli(q: &str) -> Result<i64, ()> {
    if q.is_empty() {
        return Err(());
    }
    weft_smi_crds::parse_quantity_milli(q).map_err(|_| ())
}

/// `p,lo-hi,...` with ports 1-65535, normalized (no spaces).
pub(super) fn port_list(text: &str) -> Result<String, String> {
    let mut items = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
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
                    return Err(format!("port range {item:?} is reversed"));
                }
                items.push(format!("{lo}-{hi}"));
            }
            None => items.push(port(item)?.to_string()),
        }
    }
    Ok(items.join(","))
}

/// Comma-separated CIDRs (`10.0.0.0/8,fd00::/8`), normalized.
pub(super) fn subnet_list(text: &str) -> Result<String, String> {
    let mut items = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = || format!("{item:?} is not a CIDR (e.g. 10.0.0.0/8)");
        let (ip, prefix) = item.split_once('/').ok_or_else(bad)?;
        let ip: IpAddr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(bad());
        }
        items.push(format!("{ip}/{prefix}"));
    }
    Ok(items.join(","))
}

fn log_filter(text: &str) -> Result<String, String> {
    let t = text.trim();
    if t.is_empty() || t.chars().any(char::is_whitespace) {
        return Err("not a log filter (e.g. warn,weft_proxy=debug)".into());
    }
    Ok(t.to_owned())
}

/// A non-negative Kubernetes quantity (`100m`, `1`, `64Mi`).
fn quantity(text: &str) -> Result<String, String> {
    let t = text.trim();
    match weft_smi_crds::parse_quantity_milli(t) {
        Ok(v) if v < 0 => Err("not a Kubernetes quantity: negative".into()),
        Ok(_) if t.starts_with('+') => Err("not a Kubernetes quantity: explicit sign".into()),
        Ok(_) => Ok(t.to_owned()),
        Err(e) => Err(format!("not a Kubernetes quantity: {e}")),
    }
}

fn enabled_disabled(text: &str) -> Result<bool, String> {
    match text.trim() {
        "enabled" | "true" => Ok(true),
        "disabled" | "false" => Ok(false),
        _ => Err("expected enabled or disabled".into()),
    }
}

fn true_false(text: &str) -> Result<bool, String> {
    match text.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

fn duration(text: &str) -> Result<String, String> {
    weft_identity::parse_duration(text.trim())
        .map(weft_identity::format_duration)
        .map_err(|e| e.to_string())
}

fn seconds(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<u64>()
        .map_err(|_| "expected a whole number of seconds".to_owned())
}
