//! The inbound side: connections from other workloads to this one.
//!
//! ```text
//! accept ─► port policy ─► detect ─► TLS (our identity: mTLS, the client's identity) ─► detect
//!   ─► admission (may this client connect to this port?) ─┬─ HTTP ─► server
//!                                                          │   ─► metrics ─► errors ─► concurrency limit
//!                                                          │   ─► authorize (this request?) ─► to the application
//!                                                          └─ opaque ─► to the application
//! ```
//!
//! The transport stages are [`crate::conn`]'s; [`Inbound::http_stack`]
//! composes the HTTP layers, the one place to read them. The target is
//! fixed per connection: the original destination of a redirected
//! connection, else `WEFT_PROXY_INBOUND_FORWARD`; its port's policy
//! ([`policy`], `docs/policy.md`) decides who may connect
//! ([`admission`]) and send what ([`authorize`]).

pub mod admission;
pub mod authorize;
pub mod policy;
pub mod to_app;

use self::admission::ConnAuthz;
use self::authorize::{AuthorizeLayer, Client};
use self::policy::{PortPolicies, PortPolicy};
use self::to_app::ToApp;
use crate::conn::{Side, Target};
use crate::http::client::Clients;
use crate::http::errors::NewErrors;
use crate::http::metrics::NewMetrics;
use crate::http::server::HttpService;
use crate::metrics::authz::AuthzMetrics;
use crate::metrics::{HttpMetrics, Tls};
use crate::transport::listen::{reset, Accepted};
use std::net::SocketAddr;
use std::sync::Arc;
use weft_proxy_stack::{ConcurrencyLimit, Limit, Stack};

/// The inbound side of the proxy.
#[derive(Clone)]
pub struct Inbound {
    side: Side,
    forward_to: Option<SocketAddr>,
    http_metrics: HttpMetrics,
    forward: crate::http::forward::Forward,
    limit: Limit,
    policies: PortPolicies,
    authz_metrics: AuthzMetrics,
}

/// How the inbound side is built, besides the shared [`Side`].
pub struct InboundSettings {
    /// `WEFT_PROXY_INBOUND_FORWARD`.
    pub forward_to: Option<SocketAddr>,
    /// `WEFT_PROXY_INBOUND_MAX_IN_FLIGHT`.
    pub max_in_flight: usize,
    /// Every port's policy.
    pub policies: PortPolicies,
}

// === impl Inbound ===

impl Inbound {
    /// Builds the inbound side.
    pub fn new(
        side: Side,
        settings: InboundSettings,
        (http_metrics, authz_metrics): (HttpMetrics, AuthzMetrics),
        clients: Clients,
    ) -> Self {
        let forward = side.forward(clients);
        Self {
            side,
            forward_to: settings.forward_to,
            http_metrics,
            forward,
            limit: Limit::new(settings.max_in_flight),
            policies: settings.policies,
            authz_metrics,
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
        // A port seen for the first time waits (≤ 1 s) for its policy.
        let policy = self.policies.port(target.port()).await;
        let target_addr: Arc<str> = target.to_string().into();
        let admission = ConnAuthz::new(
            policy.clone(),
            client,
            target_addr.clone(),
            self.authz_metrics.clone(),
        );
        let this = self.clone();
        self.side
            .serve(
                accepted,
                Some(opaque_target),
                move |tls| this.http_stack(target, client, tls, policy, target_addr),
                admission,
            )
            .await
    }

    /// The HTTP stack of one connection from `client`, outermost last.
    fn http_stack(
        &self,
        target: SocketAddr,
        client: SocketAddr,
        tls: Tls,
        policy: PortPolicy,
        target_addr: Arc<str>,
    ) -> HttpService {
        let metrics = NewMetrics::new(self.http_metrics.clone(), self.side.direction, tls.clone())
            .with_client(client);
        let authorize = AuthorizeLayer::new(
            Client { addr: client, tls },
            policy,
            target_addr,
            self.authz_metrics.clone(),
        );
        let stack = Stack::new(ToApp::new(target, self.forward.clone()))
            .push(authorize)
            .push(ConcurrencyLimit::layer(self.limit.clone()))
            .push(NewErrors)
            .push(metrics)
            .into_inner();
        HttpService::new(stack)
    }
}
