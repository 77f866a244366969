//! The authorization layer: may this client send this request?
//!
//! Every inbound HTTP request passes through [`Authorize`] after the
//! connection's TLS (and so the client's identity) is known and before it
//! is forwarded to the application. It is decided against the port's
//! **current** policy (a watch borrow; the policy was compiled when it
//! arrived) by [`decide::http`]: admitted if an authorization of any route
//! the request matches, or of the server, admits the client.
//!
//! - Denied: `403` with `l5d-proxy-error: unauthorized request on route
//!   ROUTE` (gRPC: `grpc-status: 7`, `PERMISSION_DENIED`), made by the
//!   errors layer from [`ProxyError::Unauthorized`]. A request no route
//!   matches gets `404` (Linkerd's `no route found`).
//! - Admitted only by `audit`: forwarded, counted as allowed by `audit`,
//!   and logged (about once a second per port) as one `deny` would refuse.
//! - `inbound_http_authz_allow_total` / `inbound_http_authz_deny_total`.
//!
//! **Identity header.** Any `l5d-client-id` the request carries is
//! removed; a client that proved an mTLS identity gets it set to that
//! identity. The application can trust the header; decisions never read
//! it.

use super::policy::{decide, HttpDecision, PortPolicy};
use crate::http::errors::ProxyError;
use crate::http::headers::L5D_CLIENT_ID;
use crate::metrics::authz::{AuthzLabels, AuthzMetrics};
use crate::metrics::Tls;
use futures::future::{Either, Ready};
use http::{HeaderValue, Request};
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Who is calling, as the connection established it (also set as a
/// request extension for the layers below).
#[derive(Clone, Debug)]
pub struct Client {
    /// The peer's address.
    pub addr: SocketAddr,
    /// The connection's TLS: the client's proven identity when mTLS.
    pub tls: Tls,
}

/// Builds [`Authorize`] services for one connection.
#[derive(Clone, Debug)]
pub struct AuthorizeLayer {
    conn: Arc<Conn>,
}

/// What every request of one connection is decided with.
#[derive(Debug)]
struct Conn {
    client: Client,
    /// `l5d-client-id` for this client, when it proved an identity.
    client_id: Option<HeaderValue>,
    policy: PortPolicy,
    target_addr: Arc<str>,
    metrics: AuthzMetrics,
}

/// Decides per request whether the client may call the application.
#[derive(Clone, Debug)]
pub struct Authorize<S> {
    inner: S,
    conn: Arc<Conn>,
}

// === impl AuthorizeLayer ===

impl AuthorizeLayer {
    /// The layer for a connection from `client` to `target_addr`, decided
    /// against its port's `policy`.
    pub fn new(
        client: Client,
        policy: PortPolicy,
        target_addr: Arc<str>,
        metrics: AuthzMetrics,
    ) -> Self {
        let client_id = match &client.tls {
            Tls::Client(id) => HeaderValue::from_str(id).ok(),
            _ => None,
        };
        Self {
            conn: Arc::new(Conn {
                client,
                client_id,
                policy,
                target_addr,
                metrics,
            }),
        }
    }
}

impl<S> tower::Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Authorize<S> {
        Authorize {
            inner,
            conn: self.conn.clone(),
        }
    }
}

// === impl Conn ===

impl Conn {
    /// Decides `req` against the current policy, counting the decision.
    fn decide<B>(&self, req: &Request<B>) -> Result<(), ProxyError> {
        let policy = self.policy.rx.borrow();
        let head = crate::route::matching::RequestHead {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
        };
        let (ip, tls) = (self.client.addr.ip(), &self.client.tls);
        match decide::http(&policy, ip, tls, &head) {
            HttpDecision::Allow { route, authz } => {
                self.metrics.http_allow(AuthzLabels {
                    target_addr: self.target_addr.clone(),
                    srv: policy.meta.clone(),
                    route: Some(route.meta.clone()),
                    authz: Some(authz.meta.clone()),
                    tls: tls.clone(),
                });
                if authz.meta.is_audit() && self.policy.audit.allow() {
                    tracing::info!(
                        client = %self.client.addr,
                        tls = ?tls,
                        port = self.policy.port,
                        server = %policy.meta,
                        route = %route.meta,
                        method = %req.method(),
                        path = req.uri().path(),
                        "audit: request admitted that would be denied"
                    );
                }
                Ok(())
            }
            HttpDecision::Deny { route } => {
                self.metrics.http_deny(AuthzLabels {
                    target_addr: self.target_addr.clone(),
                    srv: policy.meta.clone(),
                    route: Some(route.meta.clone()),
                    authz: None,
                    tls: tls.clone(),
                });
                tracing::debug!(
                    client = %self.client.addr,
                    tls = ?tls,
                    server = %policy.meta,
                    route = %route.meta,
                    "request refused: no authorization admits the client"
                );
                Err(ProxyError::Unauthorized {
                    route: route.meta.name.clone(),
                })
            }
            HttpDecision::NoRoute => Err(ProxyError::NoRoute),
        }
    }
}

// === impl Authorize ===

impl<S, B> tower::Service<Request<B>> for Authorize<S>
where
    S: tower::Service<Request<B>>,
    S::Error: From<ProxyError>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // A client never speaks for its own identity.
        let headers = req.headers_mut();
        headers.remove(L5D_CLIENT_ID);
        if let Some(id) = &self.conn.client_id {
            headers.insert(L5D_CLIENT_ID, id.clone());
        }
        if let Err(error) = self.conn.decide(&req) {
            return Either::Right(futures::future::ready(Err(error.into())));
        }
        // Nothing below needs the client in the request's extensions, and
        // inserting it would cost three allocations per request.
        Either::Left(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests;
