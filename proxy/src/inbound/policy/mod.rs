//! Inbound policy: what each inbound port admits (`docs/policy.md`).
//!
//! - [`watch`]: one `InboundServerPolicies.WatchPort` stream per port,
//!   published on a watch channel; the default policy until the
//!   controller answers, the last policy while it is away.
//! - [`model`]: the controller's `Server` message converted (and
//!   validated) once per update into a [`ServerPolicy`], regexes compiled.
//! - which HTTP routes a request is on, and how well: the matcher the
//!   outbound policy uses too ([`crate::route::matching`]).
//! - [`decide`]: the decisions themselves, pure functions of a policy,
//!   the client and the request.
//!
//! The connection-level checks ([`super::admission`]) and the per-request
//! layer ([`super::authorize`]) read the policy from here.

pub mod decide;
pub mod model;
pub mod watch;

pub use self::decide::HttpDecision;
pub use self::model::{Authn, Authz, HttpRoute, Meta, Protocol, ServerPolicy};
pub use self::watch::{PortPolicies, PortPolicy, Settings};
