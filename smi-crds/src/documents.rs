//! Multi-document YAML loading for the controller's `--config-dir` feed and
//! the CLI: typed objects for the kinds this crate knows, raw JSON for the
//! rest, and errors that point at a document and a line.

use kube::core::ObjectMeta;
use serde::de::DeserializeOwned;

use crate::access::{self, TrafficTarget};
use crate::error::ValidationErrors;
use crate::profile::{self, ServiceProfile};
use crate::specs;
use crate::split::{self, AnyTrafficSplit};

/// One object from a YAML stream. Older served versions of ServiceProfile,
/// HTTPRouteGroup and TrafficTarget are converted to the storage version
/// (same shape); TrafficSplit keeps its version because weights mean
/// different things.
#[derive(Clone, Debug, PartialEq)]
pub enum AnyObject {
    /// `linkerd.io` ServiceProfile (v1alpha1 converted to v1alpha2).
    ServiceProfile(Box<ServiceProfile>),
    /// `split.smi-spec.io` TrafficSplit, any version.
    TrafficSplit(Box<AnyTrafficSplit>),
    /// `specs.smi-spec.io` HTTPRouteGroup (v1alpha3 converted to v1alpha4).
    HttpRouteGroup(Box<specs::v1alpha4::HTTPRouteGroup>),
    /// `specs.smi-spec.io/v1alpha4` TCPRoute.
    TcpRoute(Box<specs::v1alpha4::TCPRoute>),
    /// `access.smi-spec.io` TrafficTarget (v1alpha2 converted to v1alpha3).
    TrafficTarget(Box<TrafficTarget>),
    /// Any other kind (Service, Endpoints, Pod, …, or an unknown version of
    /// a known kind), left for the caller to decode from `object`.
    Other {
        /// The document's `apiVersion`.
        api_version: String,
        /// The document's `kind`.
        kind: String,
        /// The whole document as JSON, ready for `serde_json::from_value`.
        object: serde_json::Value,
    },
}

impl AnyObject {
    /// The object's `kind`, for logs and store keys.
    pub fn kind(&self) -> &str {
        match self {
            Self::ServiceProfile(_) => "ServiceProfile",
            Self::TrafficSplit(_) => "TrafficSplit",
            Self::HttpRouteGroup(_) => "HTTPRouteGroup",
            Self::TcpRoute(_) => "TCPRoute",
            Self::TrafficTarget(_) => "TrafficTarget",
            Self::Other { kind, .. } => kind,
        }
    }

    /// Metadata of typed objects (`None` for [`AnyObject::Other`]; read
    /// `object["metadata"]` there).
    pub fn metadata(&self) -> Option<&ObjectMeta> {
        match self {
            Self::ServiceProfile(o) => Some(&o.metadata),
            Self::TrafficSplit(o) => Some(o.metadata()),
            Self::HttpRouteGroup(o) => Some(&o.metadata),
            Self::TcpRoute(o) => Some(&o.metadata),
            Self::TrafficTarget(o) => Some(&o.metadata),
            Self::Other { .. } => None,
        }
    }

    /// Runs the kind's validation so a feed can reject a bad object while
    /// keeping the last good one. `Other` always passes.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        match self {
            Self::ServiceProfile(o) => o.validate(),
            Self::TrafficSplit(o) => o.to_split().map(|_| ()),
            Self::HttpRouteGroup(o) => o.validate(),
            Self::TrafficTarget(o) => o.validate(),
            Self::TcpRoute(o) => o.validate(),
            Self::Other { .. } => Ok(()),
        }
    }
}

/// An object together with where it came from, so later problems (e.g.
/// validation) can still be reported against the file position.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// 1-based number of the document in the stream (empty documents skipped).
    pub index: usize,
    /// 1-based line where the document starts.
    pub line: usize,
    /// The decoded object.
    pub object: AnyObject,
}

/// A document that could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("document {document} (line {line}, column {column}): {message}")]
pub struct ParseError {
    /// 1-based document number, counted like [`Document::index`].
    pub document: usize,
    /// 1-based line of the error in the whole input.
    pub line: usize,
    /// 1-based column, or 0 when unknown.
    pub column: usize,
    /// `kind` of the document if it could be read.
    pub kind: Option<String>,
    /// What went wrong.
    pub message: String,
}

/// Parses a multi-document YAML stream (`---` separated). Stops at the
/// first bad document so a feed can keep its last good state.
pub fn parse_documents(yaml: &str) -> Result<Vec<AnyObject>, ParseError> {
    Ok(parse_documents_with_positions(yaml)?
        .into_iter()
        .map(|d| d.object)
        .collect())
}

/// Like [`parse_documents`], keeping each document's number and start line.
pub fn parse_documents_with_positions(yaml: &str) -> Result<Vec<Document>, ParseError> {
    let mut docs = Vec::new();
    let mut index = 0;
    for chunk in split_yaml_documents(yaml) {
        let Some(line) = chunk.content_line() else {
            continue;
        };
        index += 1;
        if let Some(object) = parse_chunk(&chunk, index, line)? {
            docs.push(Document {
                index,
                line,
                object,
            });
        }
    }
    Ok(docs)
}

/// The text of one document of a multi-document YAML stream and the line
/// it starts on, so every reader of such streams (the file feed, `weft
/// inject`) reports the same line numbers.
pub struct YamlDocument<'a> {
    /// 1-based line of the document's first line in the whole stream.
    pub first_line: usize,
    lines: Vec<&'a str>,
}

impl YamlDocument<'_> {
    /// The document's text (its `---` marker line included).
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// First line with content: where the document "is" for a reader;
    /// `None` for a document of only comments and markers.
    pub fn content_line(&self) -> Option<usize> {
        self.lines
            .iter()
            .position(|l| {
                let t = l.trim();
                !(t.is_empty() || t.starts_with('#') || t == "---" || t == "...")
            })
            .map(|i| self.first_line + i)
    }
}

/// A `---` at column 0 starts a new document (YAML forbids it inside
/// content), so splitting on it keeps exact line numbers for every document.
pub fn split_yaml_documents(yaml: &str) -> Vec<YamlDocument<'_>> {
    let mut chunks = Vec::new();
    let mut current = YamlDocument {
        first_line: 1,
        lines: Vec::new(),
    };
    for (i, line) in yaml.lines().enumerate() {
        let is_marker =
            line.starts_with("---") && line[3..].chars().next().is_none_or(char::is_whitespace);
        if is_marker && !current.lines.is_empty() {
            chunks.push(std::mem::replace(
                &mut current,
                YamlDocument {
                    first_line: i + 1,
                    lines: Vec::new(),
                },
            ));
        }
        current.lines.push(line);
    }
    chunks.push(current);
    chunks
}

fn parse_chunk(
    chunk: &YamlDocument<'_>,
    index: usize,
    start: usize,
) -> Result<Option<AnyObject>, ParseError> {
    let text = chunk.text();
    let offset = chunk.first_line - 1;
    let err_at = |line: usize, column: usize, kind: Option<&str>, message: String| ParseError {
        document: index,
        line,
        column,
        kind: kind.map(str::to_string),
        message,
    };
    let yaml_err = |e: serde_yaml::Error, kind: Option<&str>| {
        let (line, column) = match e.location() {
            Some(loc) => (loc.line() + offset, loc.column()),
            None => (start, 0),
        };
        err_at(line, column, kind, strip_location(&e.to_string()))
    };

    let value: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| yaml_err(e, None))?;
    if value.is_null() {
        return Ok(None);
    }
    let Some(map) = value.as_mapping() else {
        return Err(err_at(
            start,
            0,
            None,
            "a Kubernetes object must be a mapping with apiVersion and kind".to_string(),
        ));
    };
    let field = |name: &str| map.get(name).and_then(serde_yaml::Value::as_str);
    let (Some(api_version), Some(kind)) = (field("apiVersion"), field("kind")) else {
        return Err(err_at(
            start,
            0,
            field("kind"),
            "missing apiVersion or kind".to_string(),
        ));
    };

    fn typed<T: DeserializeOwned>(text: &str) -> Result<T, serde_yaml::Error> {
        serde_yaml::from_str(text)
    }
    let k = Some(kind);
    let object = match (api_version, kind) {
        ("linkerd.io/v1alpha2", "ServiceProfile") => {
            AnyObject::ServiceProfile(Box::new(typed(&text).map_err(|e| yaml_err(e, k))?))
        }
        ("linkerd.io/v1alpha1", "ServiceProfile") => {
            let old: profile::v1alpha1::ServiceProfile =
                typed(&text).map_err(|e| yaml_err(e, k))?;
            AnyObject::ServiceProfile(Box::new(old.into()))
        }
        ("split.smi-spec.io/v1alpha1", "TrafficSplit") => AnyObject::TrafficSplit(Box::new(
            typed::<split::v1alpha1::TrafficSplit>(&text)
                .map_err(|e| yaml_err(e, k))?
                .into(),
        )),
        ("split.smi-spec.io/v1alpha2", "TrafficSplit") => AnyObject::TrafficSplit(Box::new(
            typed::<split::v1alpha2::TrafficSplit>(&text)
                .map_err(|e| yaml_err(e, k))?
                .into(),
        )),
        ("split.smi-spec.io/v1alpha3", "TrafficSplit") => AnyObject::TrafficSplit(Box::new(
            typed::<split::v1alpha3::TrafficSplit>(&text)
                .map_err(|e| yaml_err(e, k))?
                .into(),
        )),
        ("split.smi-spec.io/v1alpha4", "TrafficSplit") => AnyObject::TrafficSplit(Box::new(
            typed::<split::v1alpha4::TrafficSplit>(&text)
                .map_err(|e| yaml_err(e, k))?
                .into(),
        )),
        ("specs.smi-spec.io/v1alpha4", "HTTPRouteGroup") => {
            AnyObject::HttpRouteGroup(Box::new(typed(&text).map_err(|e| yaml_err(e, k))?))
        }
        ("specs.smi-spec.io/v1alpha3", "HTTPRouteGroup") => {
            let old: specs::v1alpha3::HTTPRouteGroup = typed(&text).map_err(|e| yaml_err(e, k))?;
            AnyObject::HttpRouteGroup(Box::new(old.into()))
        }
        ("specs.smi-spec.io/v1alpha4", "TCPRoute") => {
            AnyObject::TcpRoute(Box::new(typed(&text).map_err(|e| yaml_err(e, k))?))
        }
        ("access.smi-spec.io/v1alpha3", "TrafficTarget") => {
            AnyObject::TrafficTarget(Box::new(typed(&text).map_err(|e| yaml_err(e, k))?))
        }
        ("access.smi-spec.io/v1alpha2", "TrafficTarget") => {
            let old: access::v1alpha2::TrafficTarget = typed(&text).map_err(|e| yaml_err(e, k))?;
            AnyObject::TrafficTarget(Box::new(old.into()))
        }
        _ => {
            let object = serde_json::to_value(&value).map_err(|e| {
                err_at(
                    start,
                    0,
                    k,
                    format!("cannot represent document as JSON: {e}"),
                )
            })?;
            AnyObject::Other {
                api_version: api_version.to_string(),
                kind: kind.to_string(),
                object,
            }
        }
    };
    Ok(Some(object))
}

/// serde_yaml appends "at line L column C" relative to the document; the
/// error carries absolute positions instead, so drop the relative ones.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(pos) if msg[pos..].contains(" column ") => msg[..pos].to_string(),
        _ => msg.to_string(),
    }
}
