//! Feeds fill the [`Store`](crate::store::Store) with Kubernetes objects.
//!
//! Two feeds, one store: the file feed (`--config-dir`, [`files`]) and the
//! Kubernetes feed (`--kubeconfig`, [`kube`]: kube-rs watchers). Both decode
//! the mesh's own kinds with `weft-smi-crds` and pass them through
//! [`check`], so an object the file feed rejects is rejected by the
//! Kubernetes feed too, with the same field paths, and neither ever stores
//! an invalid object. In cluster mode, rejected objects and TrafficSplits
//! whose references do not resolve are also reported as Kubernetes Events
//! ([`events`]), as are TrafficTargets and default-policy annotations the
//! inbound policy cannot fully apply ([`access`]).

pub mod access;
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
    /// decoded by the caller).
    Unstored(AnyObject),
}

/// Validates one ServiceProfile, TrafficSplit, HTTPRouteGroup, TCPRoute or
/// TrafficTarget exactly as every feed must: all but TrafficSplit by their
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
        AnyObject::TcpRoute(r) => match r.validate() {
            Ok(()) => Checked::Valid(Object::TcpRoute(Arc::new(*r))),
            Err(errors) => Checked::Invalid {
                kind: Kind::TcpRoute,
                key: key_of(r.metadata.namespace.as_deref(), r.metadata.name.as_deref()),
                errors,
            },
        },
        AnyObject::TrafficTarget(tt) => match tt.validate() {
            Ok(()) => Checked::Valid(Object::TrafficTarget(Arc::new(*tt))),
            Err(errors) => Checked::Invalid {
                kind: Kind::TrafficTarget,
                key: key_of(
                    tt.metadata.namespace.as_deref(),
                    tt.metadata.name.as_deref(),
                ),
                errors,
            },
        },
        other @ AnyObject::Other { .. } => Checked::Unstored(other),
    }
}

/// `(namespace, name)` as the store keys it (`default` namespace when
/// none is set); `None` without a name.
pub fn key_of(namespace: Option<&str>, name: Option<&str>) -> Option<ObjectKey> {
    let name = name.filter(|n| !n.is_empty())?;
    let namespace = namespace.filter(|n| !n.is_empty()).unwrap_or("default");
    Some(ObjectKey::new(namespace, name))
}
