//! The authorization layer: may this client call this server?
//!
//! Every inbound HTTP request passes through [`Authorize`] after the
//! connection's TLS (and so the client's identity) is known and before it
//! is forwarded to the application. Today it admits everything (the
//! listener-level `WEFT_PROXY_REQUIRE_IDENTITY_PORTS` check happens on
//! accept); inbound policies (SMI TrafficTarget, Linkerd's
//! `InboundServerPolicies`) plug in here, deciding per request from the
//! [`Client`] it carries.

use crate::metrics::Tls;
use http::Request;
use std::net::SocketAddr;
use std::task::{Context, Poll};

/// Who is calling, as the connection established it.
#[derive(Clone, Debug)]
pub struct Client {
    /// The peer's address.
    pub addr: SocketAddr,
    /// The connection's TLS: the client's proven identity when mTLS.
    pub tls: Tls,
}

/// Builds [`Authorize`] services for one connection's client.
#[derive(Clone, Debug)]
pub struct AuthorizeLayer {
    client: Client,
}

/// Decides per request whether the client may call the application.
#[derive(Clone, Debug)]
pub struct Authorize<S> {
    inner: S,
    client: Client,
}

// === impl AuthorizeLayer ===

impl AuthorizeLayer {
    /// The layer for a connection from `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl<S> tower::Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Authorize<S> {
        Authorize {
            inner,
            client: self.client.clone(),
        }
    }
}

// === impl Authorize ===

impl<S, B> tower::Service<Request<B>> for Authorize<S>
where
    S: tower::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        // Admit everything (for now); record who called, so the layers
        // below (and the policy that will decide here) can see it.
        req.extensions_mut().insert(self.client.clone());
        self.inner.call(req)
    }
}
