//! Feeds fill the [`Store`](crate::store::Store) with Kubernetes objects.
//!
//! Two feeds, one store: the file feed (`--config-dir`, [`files`]) and the
//! Kubernetes feed (`--kubeconfig`, [`kube`]: kube-rs watchers). Both decode
//! the mesh's own kinds with `weft-smi-crds` and pass them through
//! [`check`], so an object the file feed rejects is rejected by the
//! Kubernetes feed too, with the same field paths, and neither ever stores
//! an invalid object. In cluster mode, rejected objects and TrafficSplits
//! whose references do not resolve are also reported as Kubernetes Events
//! ([`events`]).

pub mod events;
pub mod files;
pub mod kube;

use crate::store::{Kind, Object, ObjectKey};
use std::sync::Arc;
use weft_smi_crds::{AnyObject, ValidationErrors};

/// What [`check`] made of one decoded object.
#[derive(Debug)]
pub enum Checked {
    /// A valid object of a kind the store holds, ready to store
    /// (TrafficSplits already normalized).
    Valid(Object),
    /// A policy object that failed its kind's validation: the feed keeps
    /// its previous valid version instead.
    Invalid {
        /// The object's kind.
        kind: Kind,
        /// Its `(namespace, name)`; `None` without `metadata.name`.
        key: Option<ObjectKey>,
        /// Every problem, with its field path.
        errors: ValidationErrors,
    },
    /// Not a policy kind the store holds: core kinds ([`AnyObject::Other`],
    /// decoded by the caller) and TCPRoute/TrafficTarget (not stored).
    Unstored(AnyObject),
}

/// Validates one ServiceProfile, TrafficSplit or HTTPRouteGroup exactly as
/// every feed must: ServiceProfile and HTTPRouteGroup by their
/// `validate()`, TrafficSplits by normalizing them to a
/// [`Split`](weft_smi_crds::Split) (which validates). One function, so the
/// feeds cannot drift apart on what "valid" means.
pub fn check(object: AnyObject) -> Checked {
    match object {
        AnyObject::ServiceProfile(sp) => match sp.validate() {
            Ok(()) => Checked::Valid(Object::ServiceProfile(Arc::new(*sp))),
            Err(errors) => Checked::Invalid {
                kind: Kind::ServiceProfile,
                key: key_of(
                    sp.metadata.namespace.as_deref(),
                    sp.metadata.name.as_deref(),
                ),
                errors,
            },
        },
        AnyObject::TrafficSplit(ts) => match ts.to_split() {
            Ok(split) => Checked::Valid(Object::TrafficSplit(Arc::new(split))),
            Err(errors) => {
                let meta = ts.metadata();
                Checked::Invalid {
                    kind: Kind::TrafficSplit,
                    key: key_of(meta.namespace.as_deref(), meta.name.as_deref()),
                    errors,
                }
            }
        },
        AnyObject::HttpRouteGroup(rg) => match rg.validate() {
            Ok(()) => Checked::Valid(Object::HttpRouteGroup(Arc::new(*rg))),
            Err(errors) => Checked::Invalid {
                kind: Kind::HttpRouteGroup,
                key: key_of(
                    rg.metadata.namespace.as_deref(),
                    rg.metadata.name.as_deref(),
                ),
                errors,
            },
        },
        other => Checked::Unstored(other),
    }
}

/// `(namespace, name)` as the store keys it (`default` namespace when
/// none is set); `None` without a name.
pub fn key_of(namespace: Option<&str>, name: Option<&str>) -> Option<ObjectKey> {
    let name = name.filter(|n| !n.is_empty())?;
    let namespace = namespace.filter(|n| !n.is_empty()).unwrap_or("default");
    Some(ObjectKey::new(namespace, name))
}
