//! The inbound side: connections from other workloads to this one.
//!
//! ```text
//! accept ─► detect ─► TLS (our identity: mTLS, the client's identity) ─► detect ─┬─ HTTP ─► server
//!                                                                                 │   ─► metrics ─► errors ─► concurrency limit
//!                                                                                 │   ─► authorize ─► to the application
//!                                                                                 └─ opaque ─► to the application
//! ```
//!
//! The transport stages are [`crate::conn`]'s; [`Inbound::http_stack`]
//! composes the HTTP layers, the one place to read them. The target is
//! fixed per connection: the original destination of a redirected
//! connection, else `WEFT_PROXY_INBOUND_FORWARD`.

pub mod authorize;
pub mod to_app;

use self::authorize::{AuthorizeLayer, Client};
use self::to_app::ToApp;
use crate::conn::{Side, Target};
use crate::http::client::Clients;
use crate::http::errors::NewErrors;
use crate::http::metrics::NewMetrics;
use crate::http::server::HttpService;
use crate::metrics::{HttpMetrics, Tls};
use crate::transport::listen::{reset, Accepted};
use std::net::SocketAddr;
use weft_proxy_stack::{ConcurrencyLimit, Limit, Stack};

/// The inbound side of the proxy.
#[derive(Clone)]
pub struct Inbound {
    side: Side,
    forward_to: Option<SocketAddr>,
    http_metrics: HttpMetrics,
    forward: crate::http::forward::Forward,
    limit: Limit,
}

// === impl Inbound ===

impl Inbound {
    /// Builds the inbound side.
    pub fn new(
        side: Side,
        forward_to: Option<SocketAddr>,
        http_metrics: HttpMetrics,
        clients: Clients,
        max_in_flight: usize,
    ) -> Self {
        let forward = side.forward(clients);
        Self {
            side,
            forward_to,
            http_metrics,
            forward,
            limit: Limit::new(max_in_flight),
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
        let (opaque_target, client) = (Target::direct(target, None), accepted.client);
        let this = self.clone();
        self.side
            .serve(accepted, Some(opaque_target), move |tls| {
                this.http_stack(target, client, tls)
            })
            .await
    }

    /// The HTTP stack of one connection from `client`, outermost last.
    fn http_stack(&self, target: SocketAddr, client: SocketAddr, tls: Tls) -> HttpService {
        let metrics = NewMetrics::new(self.http_metrics.clone(), self.side.direction, tls.clone())
            .with_client(client);
        let stack = Stack::new(ToApp::new(target, self.forward.clone()))
            .push(AuthorizeLayer::new(Client { addr: client, tls }))
            .push(ConcurrencyLimit::layer(self.limit.clone()))
            .push(NewErrors)
            .push(metrics)
            .into_inner();
        HttpService::new(stack)
    }
}
