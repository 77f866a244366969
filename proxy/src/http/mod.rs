//! HTTP proxying.
//!
//! A detected HTTP connection is served by [`server`], which hands each
//! request to a tower stack assembled by the inbound or outbound side:
//!
//! ```text
//! server ─► metrics ─► errors ─► orig_proto ─► forward ─► client pool ─► target
//! ```
//!
//! - [`metrics`] counts requests, response latency and classified responses.
//! - [`errors`] turns proxy failures into HTTP responses (`502`, `504`, ...)
//!   carrying an `l5d-proxy-error` header.
//! - [`orig_proto`] carries HTTP/1 over a multiplexed HTTP/2 connection
//!   between two Weft proxies, and restores it on the other side.
//! - [`forward`] sends a request to its endpoint, including `Upgrade`
//!   (WebSocket) and `CONNECT` tunnels.
//! - [`client`] keeps a pool of connections per endpoint.

pub mod body;
pub mod classify;
pub mod client;
pub mod errors;
pub mod forward;
pub mod headers;
pub mod metrics;
pub mod orig_proto;
pub mod server;

pub use self::body::BoxBody;
