//! SMI access control (`access.smi-spec.io` v1alpha3): `TrafficTarget`
//! says which service accounts may send which routes to a destination.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{FieldError, ValidationErrors};

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
    /// Destination port the target applies to (destination only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
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

/// Spec of `access.smi-spec.io/v1alpha3` TrafficTarget.
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

impl TrafficTarget {
    /// Checks subject kinds, names and rule kinds, naming each bad field.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = Vec::new();
        let mut subject = |s: &IdentityBindingSubject, path: &str| {
            if s.kind != "ServiceAccount" {
                errs.push(FieldError::new(
                    format!("{path}.kind"),
                    format!("unsupported kind {:?} (expected ServiceAccount)", s.kind),
                ));
            }
            if s.name.trim().is_empty() {
                errs.push(FieldError::new(format!("{path}.name"), "must not be empty"));
            }
        };
        subject(&self.spec.destination, "spec.destination");
        for (i, s) in self.spec.sources.iter().enumerate() {
            subject(s, &format!("spec.sources[{i}]"));
        }
        for (i, r) in self.spec.rules.iter().enumerate() {
            if r.kind != "HTTPRouteGroup" && r.kind != "TCPRoute" {
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
        }
        ValidationErrors::into_result(errs)
    }
}
