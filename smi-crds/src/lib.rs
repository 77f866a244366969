//! Typed custom resources shared by `weft-controller` and the `weft` CLI:
//! ServiceProfile and the SMI TrafficSplit, TrafficTarget, HTTPRouteGroup
//! and TCPRoute kinds.
//!
//! Keeping one definition of each resource means the CLI and the controller
//! can never disagree about a field. Besides the kube-derived types this
//! crate offers validation with field paths ([`ValidationErrors`]), one
//! normalized TrafficSplit form ([`Split`]), a multi-document YAML loader
//! ([`parse_documents`]) and the generated CRDs ([`crds`], [`crds_yaml`]).

pub mod access;
pub mod crd;
pub mod documents;
pub mod duration;
pub mod error;
pub mod profile;
pub mod quantity;
pub mod specs;
pub mod split;

pub use crd::{crds, crds_yaml, CrdError};
pub use documents::{
    parse_documents, parse_documents_with_positions, split_yaml_documents, AnyObject, Document,
    ParseError, YamlDocument,
};
pub use duration::{parse_duration, DurationError};
pub use error::{FieldError, ValidationErrors};
pub use profile::{ServiceProfile, ServiceProfileSpec};
pub use quantity::{parse_quantity_milli, QuantityError, Weight};
pub use split::{AnyTrafficSplit, RouteRef, Split, SplitBackend};

#[cfg(test)]
mod crd_tests;
#[cfg(test)]
mod tests;
