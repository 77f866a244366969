//! Transport: everything below HTTP.
//!
//! - [`listen`]: bind, accept, and learn where a redirected connection was
//!   originally headed (`SO_ORIGINAL_DST`).
//! - [`detect`]: read the first bytes to tell HTTP/1, HTTP/2 and opaque TCP
//!   apart, then hand those bytes back via [`io::PrefixedIo`].
//! - [`io`]: IO wrappers that meter bytes and replay a detected prefix.
//! - [`connect`]: dial a target with a timeout and metrics.
//! - [`opaque`]: forward a connection byte-for-byte.

pub mod connect;
pub mod detect;
pub mod io;
pub mod listen;
pub mod opaque;
pub mod tls;
