//! Linkerd's `ServiceProfile` (`linkerd.io` v1alpha2, storage, and v1alpha1):
//! per-route conditions, response classes, timeouts, retry budgets and
//! destination overrides. The proxy's route stack is driven by these types.

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use std::time::Duration;

use crate::duration::parse_duration;
use crate::error::{FieldError, ValidationErrors};
use crate::quantity::Weight;

pub use v1alpha2::{ServiceProfile, ServiceProfileSpec};

/// One named route: requests matching `condition` are counted, classified,
/// timed out and retried according to this entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteSpec {
    /// Route name, used as the `rt_route` metric label.
    pub name: String,
    /// Which requests belong to this route.
    pub condition: RequestMatch,
    /// How responses on this route are classified; default: 5xx is a failure.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_classes: Vec<ResponseClass>,
    /// Whether failed requests on this route may be retried (within the budget).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_retryable: bool,
    /// Per-request timeout as a Go duration string such as `"300ms"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

impl RouteSpec {
    /// The parsed timeout, if one is set and valid; run [`ServiceProfileSpec::validate`]
    /// first to learn why an invalid one was ignored.
    pub fn timeout_duration(&self) -> Option<Duration> {
        self.timeout.as_deref().and_then(|t| parse_duration(t).ok())
    }
}

/// A request predicate. Fields set together must all hold; `all`, `any` and
/// `not` compose predicates the way Linkerd's do.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestMatch {
    /// HTTP method, e.g. `GET`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Regular expression the whole request path must match (anchored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<String>,
    /// Matches when every sub-predicate matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "nested_object_list")]
    pub all: Option<Vec<RequestMatch>>,
    /// Matches when at least one sub-predicate matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "nested_object_list")]
    pub any: Option<Vec<RequestMatch>>,
    /// Matches when the sub-predicate does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "nested_object")]
    pub not: Option<Box<RequestMatch>>,
}

/// A response classification rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResponseClass {
    /// Which responses this class covers.
    pub condition: ResponseMatch,
    /// Whether matching responses count as failures (and may be retried).
    #[serde(default)]
    pub is_failure: bool,
}

/// A response predicate, composable like [`RequestMatch`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResponseMatch {
    /// Inclusive HTTP status range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusRange>,
    /// Matches when every sub-predicate matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "nested_object_list")]
    pub all: Option<Vec<ResponseMatch>>,
    /// Matches when at least one sub-predicate matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "nested_object_list")]
    pub any: Option<Vec<ResponseMatch>>,
    /// Matches when the sub-predicate does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "nested_object")]
    pub not: Option<Box<ResponseMatch>>,
}

/// Inclusive range of HTTP status codes; a missing bound is open.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StatusRange {
    /// Lowest status included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u32>,
    /// Highest status included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
}

/// Caps retries to a fraction of original requests so retries can never
/// snowball into a retry storm.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryBudget {
    /// Retries allowed per original request, e.g. `0.2` for 20 %.
    pub retry_ratio: f32,
    /// Retries always allowed per second regardless of the ratio.
    pub min_retries_per_second: u32,
    /// How long deposited retry tokens stay valid (Go duration, e.g. `"10s"`).
    /// Optional here only so a missing value is reported by validation with
    /// its field path; a valid profile always has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

impl Default for RetryBudget {
    /// Linkerd's default budget: 20 % extra load, 10 retries/s floor, 10 s TTL.
    fn default() -> Self {
        Self {
            retry_ratio: 0.2,
            min_retries_per_second: 10,
            ttl: Some("10s".to_string()),
        }
    }
}

impl RetryBudget {
    /// The parsed TTL, if present and valid.
    pub fn ttl_duration(&self) -> Option<Duration> {
        self.ttl.as_deref().and_then(|t| parse_duration(t).ok())
    }
}

/// An alternate destination with a relative weight; TrafficSplits are
/// served to proxies as these.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WeightedDst {
    /// Destination authority, e.g. `web-v2.default.svc.cluster.local:80`.
    pub authority: String,
    /// Relative weight: an integer or a quantity like `"900m"`.
    pub weight: Weight,
}

/// Schema for a recursive predicate: Kubernetes structural schemas cannot
/// use `$ref`, so nested predicates are free-form objects (validated here).
fn nested_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// List form of [`nested_object`].
fn nested_object_list(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": { "type": "object", "x-kubernetes-preserve-unknown-fields": true }
    })
}

/// The storage version.
pub mod v1alpha2 {
    use kube::CustomResource;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    use super::{RetryBudget, RouteSpec, WeightedDst};

    /// Spec of `linkerd.io/v1alpha2` ServiceProfile: routes, retry budget,
    /// traffic-split overrides and opaque ports for one service.
    #[derive(
        CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema,
    )]
    #[kube(
        group = "linkerd.io",
        version = "v1alpha2",
        kind = "ServiceProfile",
        namespaced,
        shortname = "sp",
        derive = "PartialEq",
        doc = "Per-route policy for one service (routes, retries, timeouts, overrides)."
    )]
    #[serde(rename_all = "camelCase")]
    pub struct ServiceProfileSpec {
        /// Routes, first match wins.
        #[serde(default)]
        pub routes: Vec<RouteSpec>,
        /// Retry budget shared by the service's retryable routes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub retry_budget: Option<RetryBudget>,
        /// Weighted alternate destinations (filled from TrafficSplits).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub dst_overrides: Vec<WeightedDst>,
        /// Ports (`"3306"` or ranges `"4000-4100"`) that skip protocol detection.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub opaque_ports: Vec<String>,
    }
}

/// The older served version; same shape, but `routes` is required.
pub mod v1alpha1 {
    use kube::CustomResource;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    use super::{RetryBudget, RouteSpec, WeightedDst};

    /// Spec of `linkerd.io/v1alpha1` ServiceProfile, kept so older
    /// manifests still apply.
    #[derive(
        CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema,
    )]
    #[kube(
        group = "linkerd.io",
        version = "v1alpha1",
        kind = "ServiceProfile",
        namespaced,
        shortname = "sp",
        derive = "PartialEq",
        doc = "Per-route policy for one service (older served version)."
    )]
    #[serde(rename_all = "camelCase")]
    pub struct ServiceProfileSpec {
        /// Routes, first match wins.
        pub routes: Vec<RouteSpec>,
        /// Retry budget shared by the service's retryable routes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub retry_budget: Option<RetryBudget>,
        /// Weighted alternate destinations.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub dst_overrides: Vec<WeightedDst>,
        /// Ports that skip protocol detection.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub opaque_ports: Vec<String>,
    }
}

impl From<v1alpha1::ServiceProfile> for v1alpha2::ServiceProfile {
    /// The versions share one shape, so conversion only moves fields.
    fn from(old: v1alpha1::ServiceProfile) -> Self {
        let spec = v1alpha2::ServiceProfileSpec {
            routes: old.spec.routes,
            retry_budget: old.spec.retry_budget,
            dst_overrides: old.spec.dst_overrides,
            opaque_ports: old.spec.opaque_ports,
        };
        let mut new = v1alpha2::ServiceProfile::new("", spec);
        new.metadata = old.metadata;
        new
    }
}

impl v1alpha2::ServiceProfile {
    /// Validates the spec; see [`ServiceProfileSpec::validate`].
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        self.spec.validate()
    }
}

impl ServiceProfileSpec {
    /// Checks everything the proxy would otherwise trip over at runtime and
    /// returns every problem with its field path, e.g.
    /// `spec.routes[2].condition.pathRegex`. The controller keeps the last
    /// valid profile when this fails.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = Vec::new();
        for (i, route) in self.routes.iter().enumerate() {
            let path = format!("spec.routes[{i}]");
            if route.name.trim().is_empty() {
                errs.push(FieldError::new(
                    format!("{path}.name"),
                    "route name must not be empty",
                ));
            }
            validate_request_match(&route.condition, &format!("{path}.condition"), &mut errs);
            for (j, class) in route.response_classes.iter().enumerate() {
                validate_response_match(
                    &class.condition,
                    &format!("{path}.responseClasses[{j}].condition"),
                    &mut errs,
                );
            }
            if let Some(t) = &route.timeout {
                if let Err(e) = parse_duration(t) {
                    errs.push(FieldError::new(format!("{path}.timeout"), e.to_string()));
                }
            }
        }
        if let Some(budget) = &self.retry_budget {
            let path = "spec.retryBudget";
            if !budget.retry_ratio.is_finite() || budget.retry_ratio < 0.0 {
                errs.push(FieldError::new(
                    format!("{path}.retryRatio"),
                    format!("must be a finite number >= 0, got {}", budget.retry_ratio),
                ));
            }
            match &budget.ttl {
                None => errs.push(FieldError::new(
                    format!("{path}.ttl"),
                    "missing: a retry budget needs a ttl such as \"10s\"",
                )),
                Some(ttl) => match parse_duration(ttl) {
                    Err(e) => errs.push(FieldError::new(format!("{path}.ttl"), e.to_string())),
                    Ok(d) if d.is_zero() => errs.push(FieldError::new(
                        format!("{path}.ttl"),
                        "must be greater than zero",
                    )),
                    Ok(_) => {}
                },
            }
        }
        for (k, dst) in self.dst_overrides.iter().enumerate() {
            let path = format!("spec.dstOverrides[{k}]");
            if dst.authority.trim().is_empty() {
                errs.push(FieldError::new(
                    format!("{path}.authority"),
                    "must not be empty",
                ));
            }
            match dst.weight.milli() {
                Err(e) => errs.push(FieldError::new(format!("{path}.weight"), e.to_string())),
                Ok(w) if w < 0 => errs.push(FieldError::new(
                    format!("{path}.weight"),
                    format!("negative weight {}", dst.weight),
                )),
                Ok(_) => {}
            }
        }
        for (k, port) in self.opaque_ports.iter().enumerate() {
            if let Err(msg) = parse_port_range(port) {
                errs.push(FieldError::new(format!("spec.opaquePorts[{k}]"), msg));
            }
        }
        ValidationErrors::into_result(errs)
    }
}

/// Parses `"3306"` or `"4000-4100"` into an inclusive port range; used for
/// `opaquePorts` so the proxy never sees a malformed entry.
pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let port = |p: &str| -> Result<u16, String> {
        match p.trim().parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("invalid port {p:?} (expected 1-65535)")),
            Ok(n) => Ok(n),
        }
    };
    match s.split_once('-') {
        None => port(s).map(|p| (p, p)),
        Some((a, b)) => {
            let (lo, hi) = (port(a)?, port(b)?);
            if lo > hi {
                Err(format!("port range {s:?} has start above end"))
            } else {
                Ok((lo, hi))
            }
        }
    }
}

/// Methods whose lower-case spelling is almost certainly a typo: HTTP
/// methods are case-sensitive, so `get` would never match a `GET` request.
const STANDARD_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

fn validate_request_match(m: &RequestMatch, path: &str, errs: &mut Vec<FieldError>) {
    if m.method.is_none()
        && m.path_regex.is_none()
        && m.all.is_none()
        && m.any.is_none()
        && m.not.is_none()
    {
        errs.push(FieldError::new(
            path,
            "condition is missing or empty: set at least one of method, pathRegex, all, any, not",
        ));
    }
    if let Some(method) = &m.method {
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        let upper = method.to_ascii_uppercase();
        if method.is_empty() || !method.chars().all(token) {
            errs.push(FieldError::new(
                format!("{path}.method"),
                format!("{method:?} is not a valid HTTP method"),
            ));
        } else if upper != *method && STANDARD_METHODS.contains(&upper.as_str()) {
            errs.push(FieldError::new(
                format!("{path}.method"),
                format!(
                    "{method:?} would never match: HTTP methods are case-sensitive (use {upper:?})"
                ),
            ));
        }
    }
    if let Some(re) = &m.path_regex {
        if let Err(e) = compile_anchored(re) {
            errs.push(FieldError::new(format!("{path}.pathRegex"), e));
        }
    }
    check_lists_not_empty(&m.all, &m.any, path, errs);
    for (field, list) in [("all", &m.all), ("any", &m.any)] {
        for (i, sub) in list.iter().flatten().enumerate() {
            validate_request_match(sub, &format!("{path}.{field}[{i}]"), errs);
        }
    }
    if let Some(sub) = &m.not {
        validate_request_match(sub, &format!("{path}.not"), errs);
    }
}

fn validate_response_match(m: &ResponseMatch, path: &str, errs: &mut Vec<FieldError>) {
    if m.status.is_none() && m.all.is_none() && m.any.is_none() && m.not.is_none() {
        errs.push(FieldError::new(
            path,
            "condition is missing or empty: set at least one of status, all, any, not",
        ));
    }
    if let Some(status) = &m.status {
        if status.min.is_none() && status.max.is_none() {
            errs.push(FieldError::new(
                format!("{path}.status"),
                "status range is empty: set min, max or both (min: 404, max: 404 for one code)",
            ));
        }
        for (field, v) in [("min", status.min), ("max", status.max)] {
            if let Some(v) = v {
                if !(100..=599).contains(&v) {
                    errs.push(FieldError::new(
                        format!("{path}.status.{field}"),
                        format!("{v} is not an HTTP status (100-599)"),
                    ));
                }
            }
        }
        if let (Some(min), Some(max)) = (status.min, status.max) {
            if min > max {
                errs.push(FieldError::new(
                    format!("{path}.status"),
                    format!("min {min} is greater than max {max}"),
                ));
            }
        }
    }
    check_lists_not_empty(&m.all, &m.any, path, errs);
    for (field, list) in [("all", &m.all), ("any", &m.any)] {
        for (i, sub) in list.iter().flatten().enumerate() {
            validate_response_match(sub, &format!("{path}.{field}[{i}]"), errs);
        }
    }
    if let Some(sub) = &m.not {
        validate_response_match(sub, &format!("{path}.not"), errs);
    }
}

/// An empty `all` matches everything and an empty `any` matches nothing:
/// either way the list is almost certainly a mistake, so it is rejected
/// like an empty condition (write `pathRegex: ".*"` for a catch-all).
fn check_lists_not_empty<T>(
    all: &Option<Vec<T>>,
    any: &Option<Vec<T>>,
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    if all.as_ref().is_some_and(Vec::is_empty) {
        errs.push(FieldError::new(
            format!("{path}.all"),
            "empty list: `all: []` would match everything; list at least one condition",
        ));
    }
    if any.as_ref().is_some_and(Vec::is_empty) {
        errs.push(FieldError::new(
            format!("{path}.any"),
            "empty list: `any: []` would never match; list at least one condition",
        ));
    }
}

/// Compiles a `pathRegex` the way the proxy applies it: anchored at both ends.
/// Shared so validation and matching can never disagree.
///
/// The expression is first compiled on its own: wrapped as `^(?:re)$`, an
/// unbalanced input such as `a)|(b` would otherwise compile into
/// `^(?:a)|(b)$`, which is only half anchored.
pub fn compile_anchored(re: &str) -> Result<regex::Regex, String> {
    let invalid = |e: regex::Error| {
        // regex's Display draws a multi-line caret diagram; keep the verdict.
        let text = e.to_string();
        let last = text.lines().last().unwrap_or("").trim();
        let reason = last.strip_prefix("error: ").unwrap_or(last).to_string();
        format!("invalid regex {re:?}: {reason}")
    };
    regex::Regex::new(re).map_err(invalid)?;
    regex::Regex::new(&format!("^(?:{re})$")).map_err(invalid)
}
