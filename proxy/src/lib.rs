//! `weft-proxy`: the Weft sidecar.
//!
//! The proxy sits beside an application and handles every TCP connection the
//! application makes (outbound) or receives (inbound). Each accepted
//! connection flows through the same stages:
//!
//! 1. [`transport`]: accept, learn the original destination, detect the
//!    protocol (HTTP/1, HTTP/2, or opaque TCP), meter bytes.
//! 2. [`http`]: for HTTP, serve the connection with hyper and forward each
//!    request through a tower stack (metrics, error responses, protocol
//!    upgrade between proxies, pooled clients).
//! 3. [`inbound`] / [`outbound`]: each side composes its HTTP stack from
//!    tower layers in one place ([`weft_proxy_stack`] holds the generic
//!    pieces: per-target caches, queues with fail-fast, load shedding).
//!    Outbound requests go logical target → route → concrete backend
//!    ([`balance`]: P2C over peak-EWMA) → endpoint; inbound ones go through
//!    authorization to the application. `docs/architecture.md` draws both.
//!
//! [`admin`] serves `/metrics`, `/ready`, `/live`, `/shutdown` and the
//! [`live`] request feed (`/live-requests`), and [`drain`] coordinates
//! graceful shutdown. [`exit_with_app`] ends the
//! proxy when a Job's application has exited, and [`await_ready`] is the
//! `weft-proxy await` start-up hook.

pub mod admin;
pub mod app;
pub mod await_ready;
pub mod balance;
pub mod config;
pub mod conn;
pub mod control;
pub mod discovery;
pub mod drain;
pub mod exit_with_app;
pub mod http;
pub mod identity;
pub mod inbound;
pub mod init;
pub mod live;
pub mod metrics;
pub mod outbound;
pub mod route;
pub mod transport;

/// Boxed error used where several error types meet (bodies, tower stacks).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The HTTP version a connection speaks, as detected on accept or chosen for
/// a client connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HttpVersion {
    /// HTTP/1.0 or HTTP/1.1.
    Http1,
    /// HTTP/2 (prior knowledge; gRPC rides on this).
    Http2,
}
