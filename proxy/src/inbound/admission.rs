//! Connection-level authorization: may this client connect to this port
//! at all, and for how long?
//!
//! Decided once the connection's TLS (and so the client's identity) and
//! its protocol are known ([`crate::conn::Admission`]):
//!
//! - TCP (opaque ports, TLS passthrough, not HTTP): a server-level
//!   authorization must admit the client, else the connection is reset.
//!   `inbound_tcp_authz_allow_total` / `inbound_tcp_authz_deny_total`.
//!   While it is open, every change of the port's policy checks it again;
//!   once nothing admits it, it is reset
//!   (`inbound_tcp_authz_terminate_total`).
//! - HTTP: refused at once (counted in `inbound_tcp_authz_deny_total`)
//!   only if no authorization of the port could admit the client; each
//!   request is then checked by [`super::authorize`]. A policy change
//!   after which no authorization could admit it any more closes the
//!   connection gracefully.

use super::policy::{decide, PortPolicy, ServerPolicy};
use crate::conn::{Admission, Admitted, ConnKind};
use crate::metrics::authz::{AuthzLabels, AuthzMetrics};
use crate::metrics::Tls;
use std::net::SocketAddr;
use std::sync::Arc;

/// The connection-level check of one inbound connection.
pub struct ConnAuthz {
    policy: PortPolicy,
    client: SocketAddr,
    target_addr: Arc<str>,
    metrics: AuthzMetrics,
}

// === impl ConnAuthz ===

impl ConnAuthz {
    /// Checks a connection from `client` to `target_addr` against its
    /// port's `policy`.
    pub fn new(
        policy: PortPolicy,
        client: SocketAddr,
        target_addr: Arc<str>,
        metrics: AuthzMetrics,
    ) -> Self {
        Self {
            policy,
            client,
            target_addr,
            metrics,
        }
    }

    fn labels(
        &self,
        policy: &ServerPolicy,
        authz: Option<&super::policy::Authz>,
        tls: &Tls,
    ) -> AuthzLabels {
        AuthzLabels {
            target_addr: self.target_addr.clone(),
            srv: policy.meta.clone(),
            route: None,
            authz: authz.map(|a| a.meta.clone()),
            tls: tls.clone(),
        }
    }

    /// The TCP decision, counted and logged.
    fn tcp(&mut self, tls: &Tls) -> Admitted {
        let policy = self.policy.rx.borrow_and_update().clone();
        let ip = self.client.ip();
        let Some(authz) = decide::tcp(&policy, ip, tls) else {
            self.metrics.tcp_deny(self.labels(&policy, None, tls));
            tracing::info!(
                client = %self.client,
                port = self.policy.port,
                tls = ?tls,
                server = %policy.meta,
                "connection refused: no authorization admits the client"
            );
            return Admitted::Refused;
        };
        let labels = self.labels(&policy, Some(authz), tls);
        self.metrics.tcp_allow(labels.clone());
        if authz.meta.is_audit() && self.policy.audit.allow() {
            tracing::info!(
                client = %self.client,
                port = self.policy.port,
                tls = ?tls,
                server = %policy.meta,
                "audit: connection admitted that would be denied"
            );
        }
        let (mut rx, metrics, client, port) = (
            self.policy.rx.clone(),
            self.metrics.clone(),
            self.client,
            self.policy.port,
        );
        let tls = tls.clone();
        Admitted::Until(Box::pin(async move {
            loop {
                if rx.changed().await.is_err() {
                    // No more updates (an unwatched port): never revoked.
                    return std::future::pending().await;
                }
                let policy = rx.borrow_and_update().clone();
                if decide::tcp(&policy, ip, &tls).is_none() {
                    metrics.tcp_terminate(labels);
                    tracing::info!(
                        %client,
                        port,
                        tls = ?tls,
                        server = %policy.meta,
                        "connection no longer authorized; closing it"
                    );
                    return;
                }
            }
        }))
    }

    /// The HTTP connection's check.
    fn http(&mut self, tls: &Tls) -> Admitted {
        let policy = self.policy.rx.borrow_and_update().clone();
        let ip = self.client.ip();
        if !decide::http_connection(&policy, ip, tls) {
            self.metrics.tcp_deny(self.labels(&policy, None, tls));
            tracing::info!(
                client = %self.client,
                port = self.policy.port,
                tls = ?tls,
                server = %policy.meta,
                "HTTP connection refused: no authorization could admit the client"
            );
            return Admitted::Refused;
        }
        let mut rx = self.policy.rx.clone();
        let tls = tls.clone();
        Admitted::Until(Box::pin(async move {
            loop {
                if rx.changed().await.is_err() {
                    return std::future::pending().await;
                }
                let policy = rx.borrow_and_update().clone();
                if !decide::http_connection(&policy, ip, &tls) {
                    return;
                }
            }
        }))
    }
}

impl Admission for ConnAuthz {
    fn admit(&mut self, tls: &Tls, kind: ConnKind) -> Admitted {
        let opaque = self.policy.rx.borrow().is_opaque();
        match kind {
            ConnKind::Tcp => self.tcp(tls),
            // An HTTP connection to a port the policy calls opaque is
            // checked as TCP (and revoked like one).
            ConnKind::Http if opaque => self.tcp(tls),
            ConnKind::Http => self.http(tls),
        }
    }
}

#[cfg(test)]
mod tests;
