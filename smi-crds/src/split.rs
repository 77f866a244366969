//! SMI `TrafficSplit` (`split.smi-spec.io` v1alpha1–v1alpha4) and [`Split`],
//! the one normalized form the controller turns into `dst_overrides`.
//!
//! The API server does not convert between SMI versions (conversion strategy
//! `None`), so an object written as v1alpha1 with `weight: 900m` may be read
//! back as v1alpha4. Every version therefore deserializes weights through
//! [`Weight`], which accepts integers and quantities alike, while the CRD
//! schema still only admits integers for v1alpha2 and later.

use std::collections::HashMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{FieldError, ValidationErrors};
use crate::quantity::Weight;

/// A backend of a v1alpha2+ TrafficSplit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TrafficSplitBackend {
    /// Name of the backend Service, in the split's namespace.
    pub service: String,
    /// Relative weight (an integer in these versions).
    #[schemars(schema_with = "crate::quantity::integer_weight_schema")]
    pub weight: Weight,
}

/// The version with quantity weights (`"900m"`), as used by early Linkerd.
pub mod v1alpha1 {
    use kube::CustomResource;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    use crate::quantity::Weight;

    /// A backend whose weight is a Kubernetes quantity such as `"900m"`.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    pub struct TrafficSplitBackend {
        /// Name of the backend Service, in the split's namespace.
        pub service: String,
        /// Relative weight as a quantity (`"900m"`, `"1"`) or an integer.
        pub weight: Weight,
    }

    /// Splits traffic for `service` across `backends` by weight.
    #[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    #[kube(
        group = "split.smi-spec.io",
        version = "v1alpha1",
        kind = "TrafficSplit",
        namespaced,
        shortname = "ts",
        derive = "PartialEq",
        doc = "SMI TrafficSplit v1alpha1: weighted split with quantity weights."
    )]
    pub struct TrafficSplitSpec {
        /// The root (apex) service clients address.
        pub service: String,
        /// Services receiving the traffic.
        pub backends: Vec<TrafficSplitBackend>,
    }
}

/// The version with integer weights.
pub mod v1alpha2 {
    use kube::CustomResource;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    pub use super::TrafficSplitBackend;

    /// Splits traffic for `service` across `backends` by integer weight.
    #[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    #[kube(
        group = "split.smi-spec.io",
        version = "v1alpha2",
        kind = "TrafficSplit",
        namespaced,
        shortname = "ts",
        derive = "PartialEq",
        doc = "SMI TrafficSplit v1alpha2: weighted split with integer weights."
    )]
    pub struct TrafficSplitSpec {
        /// The root (apex) service clients address.
        pub service: String,
        /// Services receiving the traffic.
        pub backends: Vec<TrafficSplitBackend>,
    }
}

/// Adds `matches` referencing HTTPRouteGroups for header/path based A/B splits.
pub mod v1alpha3 {
    use kube::CustomResource;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    pub use super::TrafficSplitBackend;

    /// A reference to the route group whose matches gate this split.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    pub struct TrafficSplitMatch {
        /// Kind of the referenced object, `HTTPRouteGroup`.
        pub kind: String,
        /// Name of the referenced object in the split's namespace.
        pub name: String,
    }

    /// Splits traffic matching `matches` for `service` across `backends`.
    #[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    #[kube(
        group = "split.smi-spec.io",
        version = "v1alpha3",
        kind = "TrafficSplit",
        namespaced,
        shortname = "ts",
        derive = "PartialEq",
        doc = "SMI TrafficSplit v1alpha3: integer weights plus route matches."
    )]
    pub struct TrafficSplitSpec {
        /// The root (apex) service clients address.
        pub service: String,
        /// Services receiving the traffic.
        pub backends: Vec<TrafficSplitBackend>,
        /// Only requests matching one of these route groups are split.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub matches: Vec<TrafficSplitMatch>,
    }
}

/// Like v1alpha3, with an optional `apiGroup` on each match reference.
pub mod v1alpha4 {
    use kube::CustomResource;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    pub use super::TrafficSplitBackend;

    /// A typed reference to the route group whose matches gate this split.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct TrafficSplitMatch {
        /// API group of the referenced kind, `specs.smi-spec.io` when set.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub api_group: Option<String>,
        /// Kind of the referenced object, `HTTPRouteGroup`.
        pub kind: String,
        /// Name of the referenced object in the split's namespace.
        pub name: String,
    }

    /// Splits traffic matching `matches` for `service` across `backends`.
    #[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    #[kube(
        group = "split.smi-spec.io",
        version = "v1alpha4",
        kind = "TrafficSplit",
        namespaced,
        shortname = "ts",
        derive = "PartialEq",
        doc = "SMI TrafficSplit v1alpha4: integer weights plus typed route matches."
    )]
    pub struct TrafficSplitSpec {
        /// The root (apex) service clients address.
        pub service: String,
        /// Services receiving the traffic.
        pub backends: Vec<TrafficSplitBackend>,
        /// Only requests matching one of these route groups are split.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub matches: Vec<TrafficSplitMatch>,
    }
}

/// The API group route references must point into when they name one.
pub const ROUTE_GROUP_API_GROUP: &str = "specs.smi-spec.io";

/// A TrafficSplit in whichever version it was written, so callers can hold
/// any of them in one collection.
#[derive(Clone, Debug, PartialEq)]
pub enum AnyTrafficSplit {
    /// `split.smi-spec.io/v1alpha1`.
    V1alpha1(v1alpha1::TrafficSplit),
    /// `split.smi-spec.io/v1alpha2`.
    V1alpha2(v1alpha2::TrafficSplit),
    /// `split.smi-spec.io/v1alpha3`.
    V1alpha3(v1alpha3::TrafficSplit),
    /// `split.smi-spec.io/v1alpha4`.
    V1alpha4(v1alpha4::TrafficSplit),
}

impl AnyTrafficSplit {
    /// Normalizes and validates, whatever the version.
    pub fn to_split(&self) -> Result<Split, ValidationErrors> {
        match self {
            Self::V1alpha1(t) => Split::try_from(t),
            Self::V1alpha2(t) => Split::try_from(t),
            Self::V1alpha3(t) => Split::try_from(t),
            Self::V1alpha4(t) => Split::try_from(t),
        }
    }

    /// The object's metadata, for keys and events.
    pub fn metadata(&self) -> &kube::core::ObjectMeta {
        match self {
            Self::V1alpha1(t) => &t.metadata,
            Self::V1alpha2(t) => &t.metadata,
            Self::V1alpha3(t) => &t.metadata,
            Self::V1alpha4(t) => &t.metadata,
        }
    }
}

/// A reference from a split to the route group that gates it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RouteRef {
    /// API group if the manifest named one (v1alpha4 only).
    pub api_group: Option<String>,
    /// Referenced kind, `HTTPRouteGroup`.
    pub kind: String,
    /// Referenced object name, in the split's namespace.
    pub name: String,
}

/// A backend in normalized form.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SplitBackend {
    /// Backend Service name, in the split's namespace.
    pub service: String,
    /// Relative weight in lowest terms (see [`Split`]).
    pub weight: u32,
}

/// The one internal representation of a TrafficSplit of any version.
///
/// Weights are converted to milli-units (`"900m"` → 900, integer `90` →
/// 90 000) and then divided by their greatest common divisor, so splits
/// that route the same proportions compare equal whatever version or
/// notation they were written in (`900m/100m` == `90/10` == `9/1`).
/// A `Split` only exists for a valid object: construction validates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// Object name.
    pub name: String,
    /// Object namespace, if it had one.
    pub namespace: Option<String>,
    /// The root (apex) service.
    pub service: String,
    /// Backends in manifest order, weights in lowest terms.
    pub backends: Vec<SplitBackend>,
    /// Route groups gating the split; empty means all traffic.
    pub matches: Vec<RouteRef>,
}

impl Split {
    /// Sum of backend weights, the denominator of each backend's share.
    pub fn total_weight(&self) -> u64 {
        self.backends.iter().map(|b| u64::from(b.weight)).sum()
    }

    /// Reports backends or route groups that do not exist, using lookups
    /// supplied by the caller (the controller owns the object store). Paths
    /// use manifest indices, which `Split` preserves.
    pub fn check_references(
        &self,
        service_exists: impl Fn(&str) -> bool,
        route_group_exists: impl Fn(&str) -> bool,
    ) -> Result<(), ValidationErrors> {
        let mut errs = Vec::new();
        if !service_exists(&self.service) {
            errs.push(FieldError::new(
                "spec.service",
                format!("unknown service {:?}", self.service),
            ));
        }
        for (i, b) in self.backends.iter().enumerate() {
            if !service_exists(&b.service) {
                errs.push(FieldError::new(
                    format!("spec.backends[{i}].service"),
                    format!("unknown backend service {:?}", b.service),
                ));
            }
        }
        for (i, m) in self.matches.iter().enumerate() {
            if !route_group_exists(&m.name) {
                errs.push(FieldError::new(
                    format!("spec.matches[{i}].name"),
                    format!("unknown {} {:?}", m.kind, m.name),
                ));
            }
        }
        ValidationErrors::into_result(errs)
    }
}

/// Shared body of every `TryFrom<&TrafficSplit>`: validates and normalizes.
fn normalize(
    meta: &kube::core::ObjectMeta,
    service: &str,
    backends: Vec<(&str, &Weight)>,
    matches: Vec<RouteRef>,
) -> Result<Split, ValidationErrors> {
    let mut errs = Vec::new();
    if service.trim().is_empty() {
        errs.push(FieldError::new("spec.service", "must not be empty"));
    }
    if backends.is_empty() {
        errs.push(FieldError::new(
            "spec.backends",
            "at least one backend is required",
        ));
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut milli: Vec<u64> = Vec::with_capacity(backends.len());
    for (i, (name, weight)) in backends.iter().enumerate() {
        let path = format!("spec.backends[{i}]");
        if name.trim().is_empty() {
            errs.push(FieldError::new(
                format!("{path}.service"),
                "backend name must not be empty",
            ));
        } else if *name == service {
            errs.push(FieldError::new(
                format!("{path}.service"),
                format!("backend {name:?} is the split's own root service (self-reference)"),
            ));
        } else if let Some(first) = seen.insert(name, i) {
            seen.insert(name, first);
            errs.push(FieldError::new(
                format!("{path}.service"),
                format!("duplicate backend {name:?} (also spec.backends[{first}])"),
            ));
        }
        match weight.milli() {
            Err(e) => errs.push(FieldError::new(format!("{path}.weight"), e.to_string())),
            Ok(w) if w < 0 => errs.push(FieldError::new(
                format!("{path}.weight"),
                format!("negative weight {weight}"),
            )),
            Ok(w) => milli.push(w.unsigned_abs()),
        }
    }
    if !backends.is_empty() && milli.len() == backends.len() && milli.iter().all(|w| *w == 0) {
        errs.push(FieldError::new(
            "spec.backends",
            "all backend weights are zero",
        ));
    }
    for (i, m) in matches.iter().enumerate() {
        let path = format!("spec.matches[{i}]");
        if m.kind != "HTTPRouteGroup" {
            errs.push(FieldError::new(
                format!("{path}.kind"),
                format!("unsupported kind {:?} (expected HTTPRouteGroup)", m.kind),
            ));
        }
        if m.name.trim().is_empty() {
            errs.push(FieldError::new(format!("{path}.name"), "must not be empty"));
        }
        if let Some(group) = &m.api_group {
            if group != ROUTE_GROUP_API_GROUP {
                errs.push(FieldError::new(
                    format!("{path}.apiGroup"),
                    format!("unsupported apiGroup {group:?} (expected {ROUTE_GROUP_API_GROUP})"),
                ));
            }
        }
    }
    let reduced = if errs.is_empty() {
        reduce(&milli)
    } else {
        None
    };
    let Some(reduced) = reduced else {
        if errs.is_empty() {
            errs.push(FieldError::new(
                "spec.backends",
                "weights too large to represent (ratio exceeds 2^32)",
            ));
        }
        return Err(ValidationErrors { errors: errs });
    };
    Ok(Split {
        name: meta.name.clone().unwrap_or_default(),
        namespace: meta.namespace.clone(),
        service: service.to_string(),
        backends: backends
            .iter()
            .zip(reduced)
            .map(|((name, _), weight)| SplitBackend {
                service: (*name).to_string(),
                weight,
            })
            .collect(),
        matches,
    })
}

/// Divides weights by their common divisor; `None` if a result exceeds u32.
fn reduce(weights: &[u64]) -> Option<Vec<u32>> {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let g = weights.iter().fold(0, |acc, w| gcd(acc, *w)).max(1);
    weights.iter().map(|w| u32::try_from(w / g).ok()).collect()
}

impl TryFrom<&v1alpha1::TrafficSplit> for Split {
    type Error = ValidationErrors;
    fn try_from(t: &v1alpha1::TrafficSplit) -> Result<Self, Self::Error> {
        let backends = t
            .spec
            .backends
            .iter()
            .map(|b| (b.service.as_str(), &b.weight))
            .collect();
        normalize(&t.metadata, &t.spec.service, backends, Vec::new())
    }
}

impl TryFrom<&v1alpha2::TrafficSplit> for Split {
    type Error = ValidationErrors;
    fn try_from(t: &v1alpha2::TrafficSplit) -> Result<Self, Self::Error> {
        let backends = t
            .spec
            .backends
            .iter()
            .map(|b| (b.service.as_str(), &b.weight))
            .collect();
        normalize(&t.metadata, &t.spec.service, backends, Vec::new())
    }
}

impl TryFrom<&v1alpha3::TrafficSplit> for Split {
    type Error = ValidationErrors;
    fn try_from(t: &v1alpha3::TrafficSplit) -> Result<Self, Self::Error> {
        let backends = t
            .spec
            .backends
            .iter()
            .map(|b| (b.service.as_str(), &b.weight))
            .collect();
        let matches = t
            .spec
            .matches
            .iter()
            .map(|m| RouteRef {
                api_group: None,
                kind: m.kind.clone(),
                name: m.name.clone(),
            })
            .collect();
        normalize(&t.metadata, &t.spec.service, backends, matches)
    }
}

impl TryFrom<&v1alpha4::TrafficSplit> for Split {
    type Error = ValidationErrors;
    fn try_from(t: &v1alpha4::TrafficSplit) -> Result<Self, Self::Error> {
        let backends = t
            .spec
            .backends
            .iter()
            .map(|b| (b.service.as_str(), &b.weight))
            .collect();
        let matches = t
            .spec
            .matches
            .iter()
            .map(|m| RouteRef {
                api_group: m.api_group.clone(),
                kind: m.kind.clone(),
                name: m.name.clone(),
            })
            .collect();
        normalize(&t.metadata, &t.spec.service, backends, matches)
    }
}

macro_rules! per_version_impls {
    ($($v:ident => $variant:ident),*) => {$(
        impl TryFrom<$v::TrafficSplit> for Split {
            type Error = ValidationErrors;
            fn try_from(t: $v::TrafficSplit) -> Result<Self, Self::Error> {
                Split::try_from(&t)
            }
        }

        impl $v::TrafficSplit {
            /// Reports every problem (empty, self-referencing or duplicate
            /// backends, bad or negative weights, all-zero weights, bad
            /// matches) with its field path.
            pub fn validate(&self) -> Result<(), ValidationErrors> {
                Split::try_from(self).map(|_| ())
            }
        }

        impl From<$v::TrafficSplit> for AnyTrafficSplit {
            fn from(t: $v::TrafficSplit) -> Self {
                AnyTrafficSplit::$variant(t)
            }
        }
    )*};
}

per_version_impls!(
    v1alpha1 => V1alpha1,
    v1alpha2 => V1alpha2,
    v1alpha3 => V1alpha3,
    v1alpha4 => V1alpha4
);
