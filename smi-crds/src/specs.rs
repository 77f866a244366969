//! SMI traffic specs (`specs.smi-spec.io`): `HTTPRouteGroup` (v1alpha4,
//! storage, and v1alpha3) and `TCPRoute` (v1alpha4). TrafficSplit `matches`
//! and TrafficTarget `rules` refer to these by name.

use std::borrow::Cow;
use std::collections::BTreeMap;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{FieldError, ValidationErrors};
use crate::profile::compile_anchored;

/// Header name → value regex. SMI manifests write this either as a map or
/// as a list of one-entry maps; both forms are accepted and merged so
/// either style works, and it is written back as a map.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct HttpHeaders(pub BTreeMap<String, String>);

impl<'de> Deserialize<'de> for HttpHeaders {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Map(BTreeMap<String, String>),
            List(Vec<BTreeMap<String, String>>),
        }
        match Form::deserialize(d) {
            Ok(Form::Map(m)) => Ok(Self(m)),
            Ok(Form::List(list)) => Ok(Self(list.into_iter().flatten().collect())),
            Err(_) => Err(serde::de::Error::custom(
                "headers must be a map of name: value-regex, or a list of such maps",
            )),
        }
    }
}

impl JsonSchema for HttpHeaders {
    fn schema_name() -> Cow<'static, str> {
        "HttpHeaders".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // Either a map or a list of maps: only "preserve unknown" can say that
        // in a structural schema; the Rust type checks the shape.
        json_schema!({
            "x-kubernetes-preserve-unknown-fields": true,
            "description": "Header name to value regex, as a map or a list of maps."
        })
    }
}

/// One named HTTP match: all set fields must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpMatch {
    /// Name referenced by TrafficTarget rules.
    pub name: String,
    /// HTTP methods; `*` means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Regular expression for the path (anchored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<String>,
    /// Header name → value regex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<HttpHeaders>,
}

/// Validates the matches of an HTTPRouteGroup (any version).
fn validate_http_matches(matches: &[HttpMatch]) -> Result<(), ValidationErrors> {
    let mut errs = Vec::new();
    let mut names = BTreeMap::new();
    for (i, m) in matches.iter().enumerate() {
        let path = format!("spec.matches[{i}]");
        if m.name.trim().is_empty() {
            errs.push(FieldError::new(format!("{path}.name"), "must not be empty"));
        } else if let Some(first) = names.insert(m.name.as_str(), i) {
            names.insert(m.name.as_str(), first);
            errs.push(FieldError::new(
                format!("{path}.name"),
                format!(
                    "duplicate match name {:?} (also spec.matches[{first}])",
                    m.name
                ),
            ));
        }
        for (j, method) in m.methods.iter().enumerate() {
            let ok = method == "*"
                || (!method.is_empty() && method.chars().all(|c| c.is_ascii_alphabetic()));
            if !ok {
                errs.push(FieldError::new(
                    format!("{path}.methods[{j}]"),
                    format!("{method:?} is not an HTTP method or \"*\""),
                ));
            }
        }
        if let Some(re) = &m.path_regex {
            if let Err(e) = compile_anchored(re) {
                errs.push(FieldError::new(format!("{path}.pathRegex"), e));
            }
        }
        for (name, re) in m.headers.iter().flat_map(|h| h.0.iter()) {
            if let Err(e) = compile_anchored(re) {
                errs.push(FieldError::new(format!("{path}.headers.{name}"), e));
            }
        }
    }
    ValidationErrors::into_result(errs)
}

/// A list of port numbers as the API server should check them (1–65535).
fn port_list_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "description": "Destination ports (1-65535).",
        "items": { "type": "integer", "minimum": 1, "maximum": 65535 }
    })
}

/// The storage version of HTTPRouteGroup, and TCPRoute.
pub mod v1alpha4 {
    use kube::CustomResource;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    use super::HttpMatch;
    use crate::error::{FieldError, ValidationErrors};

    /// Named HTTP matches that TrafficSplits and TrafficTargets refer to.
    #[derive(
        CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
    )]
    #[kube(
        group = "specs.smi-spec.io",
        version = "v1alpha4",
        kind = "HTTPRouteGroup",
        plural = "httproutegroups",
        namespaced,
        shortname = "htr",
        derive = "PartialEq",
        doc = "SMI HTTPRouteGroup: named HTTP request matches."
    )]
    pub struct HTTPRouteGroupSpec {
        /// The named matches.
        #[serde(default)]
        pub matches: Vec<HttpMatch>,
    }

    impl HTTPRouteGroup {
        /// Checks names (non-empty, unique), methods and regexes.
        pub fn validate(&self) -> Result<(), ValidationErrors> {
            super::validate_http_matches(&self.spec.matches)
        }
    }

    /// Ports a TCPRoute applies to; empty means every port.
    #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    pub struct TcpMatch {
        /// Optional name for the match.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub name: Option<String>,
        /// Destination ports (1–65535).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        #[schemars(schema_with = "super::port_list_schema")]
        pub ports: Vec<u16>,
    }

    /// Describes TCP traffic for TrafficTarget rules.
    #[derive(
        CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
    )]
    #[kube(
        group = "specs.smi-spec.io",
        version = "v1alpha4",
        kind = "TCPRoute",
        plural = "tcproutes",
        namespaced,
        derive = "PartialEq",
        doc = "SMI TCPRoute: TCP traffic by port."
    )]
    pub struct TCPRouteSpec {
        /// Which connections the route covers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub matches: Option<TcpMatch>,
    }

    impl TCPRoute {
        /// Checks the ports (1–65535; larger numbers do not decode) and
        /// the match name, naming each bad field.
        pub fn validate(&self) -> Result<(), ValidationErrors> {
            let mut errs = Vec::new();
            if let Some(m) = &self.spec.matches {
                if m.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
                    errs.push(FieldError::new(
                        "spec.matches.name",
                        "must not be empty when set",
                    ));
                }
                for (i, p) in m.ports.iter().enumerate() {
                    if *p == 0 {
                        errs.push(FieldError::new(
                            format!("spec.matches.ports[{i}]"),
                            "must be between 1 and 65535",
                        ));
                    }
                }
            }
            ValidationErrors::into_result(errs)
        }

        /// Whether the route covers `port`: every port when it lists none.
        pub fn selects_port(&self, port: u16) -> bool {
            self.spec
                .matches
                .as_ref()
                .is_none_or(|m| m.ports.is_empty() || m.ports.contains(&port))
        }
    }
}

/// The older served HTTPRouteGroup version; same shape as v1alpha4.
pub mod v1alpha3 {
    use kube::CustomResource;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    use super::HttpMatch;
    use crate::error::ValidationErrors;

    /// Named HTTP matches (v1alpha3).
    #[derive(
        CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
    )]
    #[kube(
        group = "specs.smi-spec.io",
        version = "v1alpha3",
        kind = "HTTPRouteGroup",
        plural = "httproutegroups",
        namespaced,
        shortname = "htr",
        derive = "PartialEq",
        doc = "SMI HTTPRouteGroup v1alpha3: named HTTP request matches."
    )]
    pub struct HTTPRouteGroupSpec {
        /// The named matches.
        #[serde(default)]
        pub matches: Vec<HttpMatch>,
    }

    impl HTTPRouteGroup {
        /// Checks names (non-empty, unique), methods and regexes.
        pub fn validate(&self) -> Result<(), ValidationErrors> {
            super::validate_http_matches(&self.spec.matches)
        }
    }
}

impl From<v1alpha3::HTTPRouteGroup> for v1alpha4::HTTPRouteGroup {
    /// The versions share one shape, so conversion only moves fields.
    fn from(old: v1alpha3::HTTPRouteGroup) -> Self {
        let mut new = v1alpha4::HTTPRouteGroup::new(
            "",
            v1alpha4::HTTPRouteGroupSpec {
                matches: old.spec.matches,
            },
        );
        new.metadata = old.metadata;
        new
    }
}
