//! The innermost inbound layer: forward a request to the application.
//!
//! HTTP/2 requests that a peer proxy upgraded from HTTP/1 are restored to
//! HTTP/1 first ([`crate::http::orig_proto`]), and their responses marked so
//! the peer restores them too.

use crate::http::client::Endpoint;
use crate::http::errors::ProxyError;
use crate::http::forward::Forward;
use crate::http::{orig_proto, BoxBody};
use crate::HttpVersion;
use http::{Request, Response, Version};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Sends each request of one inbound connection to the application.
#[derive(Clone)]
pub struct ToApp {
    target: SocketAddr,
    forward: Forward,
}

// === impl ToApp ===

impl ToApp {
    /// Forwards to the application at `target` through `forward`.
    pub fn new(target: SocketAddr, forward: Forward) -> Self {
        Self { target, forward }
    }
}

impl tower::Service<Request<BoxBody>> for ToApp {
    type Response = Response<BoxBody>;
    type Error = ProxyError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<BoxBody>, ProxyError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<BoxBody>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let downgraded = orig_proto::downgrade_request(&mut req);
            let version = match req.version() {
                Version::HTTP_2 => HttpVersion::Http2,
                _ => HttpVersion::Http1,
            };
            let endpoint = Endpoint {
                addr: this.target,
                version,
                identity: None,
            };
            let mut rsp = this.forward.http(endpoint, req).await?;
            if downgraded {
                orig_proto::mark_response(&mut rsp);
            }
            Ok(rsp)
        })
    }
}
