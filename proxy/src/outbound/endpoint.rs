//! The endpoint layer: one request to one address.
//!
//! The innermost outbound layer. A discovered endpoint's proxy (or an
//! address `WEFT_PROXY_MESHED_TARGETS` names) is *meshed*: HTTP/1 is carried
//! over one multiplexed HTTP/2 connection ([`crate::http::orig_proto`]),
//! with mTLS to the identity it must prove. Anything else gets the request
//! as the application sent it. Connections are pooled per endpoint by
//! [`crate::http::client::Clients`], so building an [`EndpointService`] per
//! request costs nothing but a clone.

use crate::http::client::Endpoint as ClientEndpoint;
use crate::http::errors::ProxyError;
use crate::http::forward::Forward;
use crate::http::{headers, orig_proto, BoxBody};
use crate::HttpVersion;
use http::{Method, Request, Response, Version};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use weft_proxy_stack::NewService;

/// Where one request goes, and how.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The address to connect to.
    pub addr: SocketAddr,
    /// A Weft (or Linkerd) proxy is there: HTTP/1 is upgraded to HTTP/2.
    pub meshed: bool,
    /// The identity the endpoint must prove (mTLS); `None` for plaintext.
    pub identity: Option<Arc<str>>,
}

/// Builds the service for an [`Endpoint`].
#[derive(Clone)]
pub struct NewEndpoint {
    forward: Forward,
}

/// Sends requests to one endpoint.
#[derive(Clone)]
pub struct EndpointService {
    target: Endpoint,
    forward: Forward,
}

/// The future of an outbound layer that had to box its work.
pub type BoxResponse = Pin<Box<dyn Future<Output = Result<Response<BoxBody>, ProxyError>> + Send>>;

// === impl NewEndpoint ===

impl NewEndpoint {
    /// Endpoints reached through `forward`'s pooled clients.
    pub fn new(forward: Forward) -> Self {
        Self { forward }
    }
}

impl NewService<Endpoint> for NewEndpoint {
    type Service = EndpointService;

    fn new_service(&self, target: Endpoint) -> EndpointService {
        EndpointService {
            target,
            forward: self.forward.clone(),
        }
    }
}

// === impl EndpointService ===

impl tower::Service<Request<BoxBody>> for EndpointService {
    type Response = Response<BoxBody>;
    type Error = ProxyError;
    type Future = BoxResponse;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        // The pool dials on demand; a connect failure is the request's.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<BoxBody>) -> BoxResponse {
        let (target, forward) = (self.target.clone(), self.forward.clone());
        Box::pin(async move { send(&forward, req, target).await })
    }
}

/// Sends `req` to `target`: a `CONNECT` tunnel, HTTP/1 upgraded to HTTP/2
/// for a meshed peer, or the request as it is.
async fn send(
    forward: &Forward,
    mut req: Request<BoxBody>,
    target: Endpoint,
) -> Result<Response<BoxBody>, ProxyError> {
    if req.method() == Method::CONNECT {
        return forward.connect_tunnel(target.addr, req).await;
    }
    let http1 = matches!(req.version(), Version::HTTP_10 | Version::HTTP_11);
    if http1 && target.meshed && !headers::is_upgrade(&req) {
        if let Some(orig) = orig_proto::upgrade_request(&mut req) {
            let endpoint = ClientEndpoint {
                addr: target.addr,
                version: HttpVersion::Http2,
                identity: target.identity,
            };
            let mut rsp = forward.http(endpoint, req).await?;
            orig_proto::downgrade_response(&mut rsp, orig);
            return Ok(rsp);
        }
    }
    let version = if http1 {
        HttpVersion::Http1
    } else {
        HttpVersion::Http2
    };
    let endpoint = ClientEndpoint {
        addr: target.addr,
        version,
        identity: target.identity,
    };
    forward.http(endpoint, req).await
}
