//! The inbound side: connections from other workloads to this one.
//!
//! The target is fixed per connection: the original destination of a
//! redirected connection, else `WEFT_PROXY_INBOUND_FORWARD`. HTTP/2 requests
//! that a peer proxy upgraded from HTTP/1 are restored to HTTP/1 for the
//! application.

use crate::conn::{Side, Target};
use crate::http::client::{Clients, Endpoint};
use crate::http::errors::{NewErrors, ProxyError};
use crate::http::forward::Forward;
use crate::http::metrics::NewMetrics;
use crate::http::server::HttpService;
use crate::http::{orig_proto, BoxBody};
use crate::metrics::HttpMetrics;
use crate::transport::listen::{reset, Accepted};
use crate::HttpVersion;
use http::{Request, Response, Version};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The inbound side of the proxy.
#[derive(Clone)]
pub struct Inbound {
    side: Side,
    forward_to: Option<SocketAddr>,
    http_metrics: HttpMetrics,
    forward: Forward,
}

/// Sends each request of one inbound connection to the application.
#[derive(Clone)]
pub struct ToApp {
    target: SocketAddr,
    forward: Forward,
}

// === impl Inbound ===

impl Inbound {
    /// Builds the inbound side.
    pub fn new(
        side: Side,
        forward_to: Option<SocketAddr>,
        http_metrics: HttpMetrics,
        clients: Clients,
    ) -> Self {
        let forward = Forward::new(
            clients,
            side.drain.clone(),
            side.tcp.clone(),
            side.direction,
            side.connect_timeout,
        );
        Self {
            side,
            forward_to,
            http_metrics,
            forward,
        }
    }

    /// Handles one accepted inbound connection.
    pub async fn serve(self, accepted: Accepted) {
        let Some(target) = accepted.orig_dst.or(self.forward_to) else {
            tracing::warn!(
                client = %accepted.client,
                "inbound connection was not redirected and WEFT_PROXY_INBOUND_FORWARD is unset; closing"
            );
            reset(&accepted.stream);
            return;
        };
        let to_app = ToApp {
            target,
            forward: self.forward.clone(),
        };
        let (http_metrics, direction) = (self.http_metrics.clone(), self.side.direction);
        let (opaque_target, client) = (Target::direct(target, None), accepted.client);
        self.side
            .serve(accepted, Some(opaque_target), move |tls| {
                let metrics = NewMetrics::new(http_metrics, direction, tls).with_client(client);
                HttpService::new(
                    tower::ServiceBuilder::new()
                        .layer(metrics)
                        .layer(NewErrors)
                        .service(to_app),
                )
            })
            .await
    }
}

// === impl ToApp ===

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
