//! Proxy failures and the responses that report them.
//!
//! An HTTP client always gets an HTTP answer from the proxy, never a
//! dropped connection: the status says what kind of failure it was and the
//! `l5d-proxy-error` header says why. gRPC clients get a gRPC status
//! (`UNAVAILABLE`, `DEADLINE_EXCEEDED`, ...) in a trailers-only response,
//! because gRPC libraries ignore HTTP statuses.

use super::body::{self, BoxBody};
use super::headers::L5D_PROXY_ERROR;
use crate::transport::connect::ConnectError;
use http::{HeaderValue, Response, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Why the proxy could not deliver a request.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Outbound: no redirect and no authority to route by.
    #[error("request has no authority and the connection was not redirected")]
    NoTarget,
    /// The authority could not be resolved to an address.
    #[error("cannot resolve {authority}: {reason}")]
    Resolve {
        /// The authority as sent.
        authority: String,
        /// Resolver error.
        reason: String,
    },
    /// The target is this proxy itself: forwarding would loop forever.
    #[error("forwarding loop: {0} is this proxy's own listener")]
    Loop(SocketAddr),
    /// The service exists but has no ready endpoints: fail fast rather
    /// than queue.
    #[error("service {0} has no endpoints")]
    NoEndpoints(String),
    /// Every endpoint of the service is ejected for failing (failure
    /// accrual): fail fast rather than send to endpoints known to fail.
    #[error("all {endpoints} endpoints of {service} are failing and ejected")]
    AllFailing {
        /// The service (or split backend) the request was for.
        service: String,
        /// How many endpoints it has.
        endpoints: usize,
    },
    /// The backend has had no ready endpoint for its fail-fast timeout:
    /// requests fail at once until one is ready again.
    #[error(transparent)]
    FailFast(#[from] weft_proxy_stack::FailFast),
    /// The listener has as many requests in flight as it allows: shed
    /// rather than queue without bound.
    #[error("{0}")]
    Overloaded(#[from] weft_proxy_stack::Overloaded),
    /// The route's timeout passed before a response (retries included).
    #[error("route {route:?} timed out after {timeout:?}")]
    RouteTimeout {
        /// The route's name.
        route: Arc<str>,
        /// Its timeout.
        timeout: Duration,
    },
    /// The target could not be reached.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// Inbound: no authorization of the matched route (or of the
    /// server) admits the client (docs/policy.md).
    #[error("unauthorized request on route {route}")]
    Unauthorized {
        /// The best-matching route's name.
        route: Arc<str>,
    },
    /// Inbound: the request matches none of the port's routes (Linkerd's
    /// proxy answers this `404` too).
    #[error("no route found for request")]
    NoRoute,
    /// The client's request body broke off or was malformed (a bad chunk,
    /// a connection closed mid-body): the client's error, not the app's.
    #[error("invalid request body: {reason}")]
    InvalidRequestBody {
        /// What the client connection reported.
        reason: String,
    },
    /// The target accepted the request but failed before responding.
    #[error("upstream {addr} failed: {reason}")]
    Upstream {
        /// The target.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
}

/// When sending failed because the request body, as read from the client's
/// connection, failed: hyper's "error from user's Body stream" whose cause
/// is itself a hyper error (the server side reading the client). Errors of
/// the proxy's own body wrappers are not hyper's, so they stay upstream
/// errors. Returns what the client connection reported.
fn client_body_error(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_user)
        {
            let mut cause = e.source();
            while let Some(c) = cause {
                if c.downcast_ref::<hyper::Error>().is_some() {
                    return Some(c.to_string());
                }
                cause = c.source();
            }
            return None;
        }
        source = e.source();
    }
    None
}

// === impl ProxyError ===

impl ProxyError {
    /// Classifies an error from the pooled HTTP client.
    pub fn from_client(addr: SocketAddr, err: hyper_util::client::legacy::Error) -> Self {
        let mut source = std::error::Error::source(&err);
        while let Some(e) = source {
            if let Some(connect) = e.downcast_ref::<ConnectError>() {
                return connect.clone().into();
            }
            source = e.source();
        }
        if let Some(reason) = client_body_error(&err) {
            return ProxyError::InvalidRequestBody { reason };
        }
        // hyper's errors are layered ("client error (SendRequest)" wrapping
        // "connection closed before message completed"); report them all.
        let mut reason = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            reason.push_str(": ");
            reason.push_str(&cause.to_string());
            source = cause.source();
        }
        ProxyError::Upstream { addr, reason }
    }

    /// The HTTP status reported to the client.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoTarget | ProxyError::InvalidRequestBody { .. } => StatusCode::BAD_REQUEST,
            ProxyError::Unauthorized { .. } => StatusCode::FORBIDDEN,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::Connect(ConnectError::Timeout { .. }) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::RouteTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::NoEndpoints(_)
            | ProxyError::AllFailing { .. }
            | ProxyError::FailFast(_)
            | ProxyError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Resolve { .. }
            | ProxyError::Loop(_)
            | ProxyError::Connect(_)
            | ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    /// The gRPC status code reported to gRPC clients.
    fn grpc_status(&self) -> u16 {
        match self.status() {
            StatusCode::GATEWAY_TIMEOUT => 4, // DEADLINE_EXCEEDED
            StatusCode::BAD_REQUEST => 3,     // INVALID_ARGUMENT
            StatusCode::FORBIDDEN => 7,       // PERMISSION_DENIED
            StatusCode::NOT_FOUND => 12,      // UNIMPLEMENTED
            _ => 14,                          // UNAVAILABLE
        }
    }

    /// Builds the response that reports this error.
    pub fn to_response(&self, grpc: bool) -> Response<BoxBody> {
        let message = self.to_string();
        // Error messages are ASCII we wrote, but addresses and authorities
        // come from clients: fall back rather than fail.
        let header = HeaderValue::from_str(&message)
            .unwrap_or_else(|_| HeaderValue::from_static("proxy error"));
        let mut rsp = if grpc {
            let mut rsp = Response::new(body::empty());
            let h = rsp.headers_mut();
            h.insert("content-type", HeaderValue::from_static("application/grpc"));
            h.insert("grpc-status", HeaderValue::from(self.grpc_status()));
            h.insert("grpc-message", header.clone());
            rsp
        } else {
            let mut rsp = Response::new(body::full(format!("{message}\n")));
            *rsp.status_mut() = self.status();
            rsp.headers_mut()
                .insert("content-type", HeaderValue::from_static("text/plain"));
            rsp
        };
        rsp.headers_mut().insert(L5D_PROXY_ERROR, header);
        rsp
    }
}

/// Layer that answers [`ProxyError`]s with error responses, so the layers
/// above (metrics, the server) only ever see responses.
#[derive(Clone, Copy, Debug, Default)]
pub struct NewErrors;

/// The service produced by [`NewErrors`].
#[derive(Clone, Debug)]
pub struct Errors<S> {
    inner: S,
}

impl<S> tower::Layer<S> for NewErrors {
    type Service = Errors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Errors { inner }
    }
}

impl<S, B> tower::Service<http::Request<B>> for Errors<S>
where
    S: tower::Service<http::Request<B>, Response = Response<BoxBody>, Error = ProxyError>,
    S::Future: Send + 'static,
{
    type Response = Response<BoxBody>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<BoxBody>, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // Our inner services are always ready; an error here would be a bug,
        // reported per request below.
        match self.inner.poll_ready(cx) {
            std::task::Poll::Pending => std::task::Poll::Pending,
            std::task::Poll::Ready(_) => std::task::Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let grpc = super::headers::is_grpc(req.headers());
        let method = req.method().clone();
        let uri = req.uri().clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            Ok(fut.await.unwrap_or_else(|error| {
                if matches!(error, ProxyError::Unauthorized { .. }) {
                    // Policy at work, counted by the authorization metrics:
                    // a flood of refusals must not flood the log.
                    tracing::debug!(%method, %uri, %error, "request refused");
                } else {
                    tracing::info!(%method, %uri, %error, "request failed");
                }
                error.to_response(grpc)
            }))
        })
    }
}
