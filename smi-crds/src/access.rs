//! SMI access control (`access.smi-spec.io`): `TrafficTarget` says which
//! service accounts may send which traffic to a destination service
//! account.
//!
//! Two served versions, one storage form:
//!
//! - **v1alpha3** (the storage version, [`TrafficTarget`]): rules name
//!   `HTTPRouteGroup`s and `TCPRoute`s (`specs.smi-spec.io/v1alpha4`);
//! - **v1alpha2** ([`v1alpha2::TrafficTarget`]): the same shape, and its
//!   destination may carry a `port` that narrows the target to that one
//!   port. Converted to v1alpha3 by moving fields ([`From`]).
//!
//! The v1alpha3 form keeps the optional destination `port` too, although
//! SMI v1alpha3 dropped it: the CRDs have no conversion webhook, so a
//! v1alpha2 object is read back as v1alpha3 unchanged, and a schema
//! without `port` would prune it and silently widen the target to every
//! port.
//!
//! Validation ([`TrafficTarget::validate`]) names each bad field: subject
//! kinds (`ServiceAccount`), non-empty names and namespaces, rule kinds
//! (`HTTPRouteGroup`, `TCPRoute`), non-empty rule names, a destination
//! port in 1–65535. SMI v1alpha3 calls a TrafficTarget without rules or
//! without sources invalid; Weft accepts it (it governs its destination and
//! admits no one), because refusing it would leave the destination under
//! its default policy, which admits more: failing closed for access.

use kube::CustomResource;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use crate::error::{FieldError, ValidationErrors};

/// The only subject kind SMI defines.
pub const SERVICE_ACCOUNT: &str = "ServiceAccount";
/// Rule kind selecting HTTP requests.
pub const HTTP_ROUTE_GROUP: &str = "HTTPRouteGroup";
/// Rule kind selecting ports.
pub const TCP_ROUTE: &str = "TCPRoute";

/// A workload identity: in practice a ServiceAccount.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IdentityBindingSubject {
    /// Kind of subject, `ServiceAccount`.
    pub kind: String,
    /// Subject name.
    pub name: String,
    /// Subject namespace; defaults to the TrafficTarget's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Destination port the target applies to (destination only; SMI
    /// v1alpha2, kept in v1alpha3 so v1alpha2 objects keep it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "port_schema")]
    pub port: Option<u16>,
}

/// A port number as the API server should check it (1–65535).
fn port_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "integer",
        "minimum": 1,
        "maximum": 65535,
        "nullable": true,
        "description": "Destination port the target applies to (destination only)."
    })
}

/// Which routes of a route resource are allowed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TrafficTargetRule {
    /// `HTTPRouteGroup` or `TCPRoute`.
    pub kind: String,
    /// Name of the route resource.
    pub name: String,
    /// Names of matches within it; empty means all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<String>,
}

/// Spec of `access.smi-spec.io/v1alpha3` TrafficTarget (the storage
/// version).
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "access.smi-spec.io",
    version = "v1alpha3",
    kind = "TrafficTarget",
    namespaced,
    shortname = "tt",
    derive = "PartialEq",
    doc = "SMI TrafficTarget: which identities may reach a destination, on which routes."
)]
pub struct TrafficTargetSpec {
    /// The identity receiving traffic.
    pub destination: IdentityBindingSubject,
    /// Identities allowed to send traffic.
    #[serde(default)]
    pub sources: Vec<IdentityBindingSubject>,
    /// Routes the sources may use.
    #[serde(default)]
    pub rules: Vec<TrafficTargetRule>,
}

/// The storage version under its version's name, for symmetry with
/// [`v1alpha2`].
pub mod v1alpha3 {
    pub use super::{TrafficTarget, TrafficTargetSpec};
}

/// The older served version: the same shape (its destination `port` is
/// the one v1alpha3 no longer documents).
pub mod v1alpha2 {
    use kube::CustomResource;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    use super::{IdentityBindingSubject, TrafficTargetRule};
    use crate::error::ValidationErrors;

    /// Spec of `access.smi-spec.io/v1alpha2` TrafficTarget.
    #[derive(
        CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
    )]
    #[kube(
        group = "access.smi-spec.io",
        version = "v1alpha2",
        kind = "TrafficTarget",
        namespaced,
        shortname = "tt",
        derive = "PartialEq",
        doc = "SMI TrafficTarget v1alpha2: which identities may reach a destination (port), on which routes."
    )]
    pub struct TrafficTargetSpec {
        /// The identity (and optionally port) receiving traffic.
        pub destination: IdentityBindingSubject,
        /// Identities allowed to send traffic.
        #[serde(default)]
        pub sources: Vec<IdentityBindingSubject>,
        /// Routes the sources may use.
        #[serde(default)]
        pub rules: Vec<TrafficTargetRule>,
    }

    impl TrafficTarget {
        /// The storage version's checks ([`super::TrafficTarget::validate`]).
        pub fn validate(&self) -> Result<(), ValidationErrors> {
            super::validate_spec(&self.spec.destination, &self.spec.sources, &self.spec.rules)
        }
    }
}

impl From<v1alpha2::TrafficTarget> for TrafficTarget {
    /// The versions share one shape, so conversion only moves fields.
    fn from(old: v1alpha2::TrafficTarget) -> Self {
        let mut new = TrafficTarget::new(
            "",
            TrafficTargetSpec {
                destination: old.spec.destination,
                sources: old.spec.sources,
                rules: old.spec.rules,
            },
        );
        new.metadata = old.metadata;
        new
    }
}

impl TrafficTarget {
    /// Checks subject kinds, names, namespaces and the destination port,
    /// and rule kinds and names, naming each bad field.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        validate_spec(&self.spec.destination, &self.spec.sources, &self.spec.rules)
    }

    /// The destination's namespace: its own, else the TrafficTarget's
    /// (`default` when that is unset too).
    pub fn destination_namespace(&self) -> &str {
        self.spec
            .destination
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| self.own_namespace())
    }

    /// The TrafficTarget's namespace (`default` when unset).
    pub fn own_namespace(&self) -> &str {
        self.metadata
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or("default")
    }
}

fn validate_spec(
    destination: &IdentityBindingSubject,
    sources: &[IdentityBindingSubject],
    rules: &[TrafficTargetRule],
) -> Result<(), ValidationErrors> {
    let mut errs = Vec::new();
    let mut subject = |s: &IdentityBindingSubject, path: &str| {
        if s.kind != SERVICE_ACCOUNT {
            errs.push(FieldError::new(
                format!("{path}.kind"),
                format!("unsupported kind {:?} (expected ServiceAccount)", s.kind),
            ));
        }
        if s.name.trim().is_empty() {
            errs.push(FieldError::new(format!("{path}.name"), "must not be empty"));
        }
        if s.namespace.as_deref().is_some_and(|n| n.trim().is_empty()) {
            errs.push(FieldError::new(
                format!("{path}.namespace"),
                "must not be empty when set (omit it for the TrafficTarget's namespace)",
            ));
        }
    };
    subject(destination, "spec.destination");
    for (i, s) in sources.iter().enumerate() {
        subject(s, &format!("spec.sources[{i}]"));
    }
    if destination.port == Some(0) {
        errs.push(FieldError::new(
            "spec.destination.port",
            "must be between 1 and 65535",
        ));
    }
    for (i, r) in rules.iter().enumerate() {
        if r.kind != HTTP_ROUTE_GROUP && r.kind != TCP_ROUTE {
            errs.push(FieldError::new(
                format!("spec.rules[{i}].kind"),
                format!(
                    "unsupported kind {:?} (expected HTTPRouteGroup or TCPRoute)",
                    r.kind
                ),
            ));
        }
        if r.name.trim().is_empty() {
            errs.push(FieldError::new(
                format!("spec.rules[{i}].name"),
                "must not be empty",
            ));
        }
        for (j, m) in r.matches.iter().enumerate() {
            if m.trim().is_empty() {
                errs.push(FieldError::new(
                    format!("spec.rules[{i}].matches[{j}]"),
                    "must not be empty",
                ));
            }
        }
    }
    ValidationErrors::into_result(errs)
}
