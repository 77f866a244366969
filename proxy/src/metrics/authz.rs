//! Authorization metrics with Linkerd's names and labels
//! (`docs/policy.md`, "Metrics"), so its dashboards and queries work:
//!
//! | metric | labels |
//! |---|---|
//! | `inbound_http_authz_allow_total` | `target_addr`, `srv_*`, `route_*`, `authz_*`, `tls`, `client_id` |
//! | `inbound_http_authz_deny_total` | `target_addr`, `srv_*`, `route_*`, `tls`, `client_id` |
//! | `inbound_tcp_authz_allow_total` | `target_addr`, `srv_*`, `authz_*`, `tls`, `client_id` |
//! | `inbound_tcp_authz_deny_total` | `target_addr`, `srv_*`, `tls`, `client_id` |
//! | `inbound_tcp_authz_terminate_total` | `target_addr`, `srv_*`, `authz_*`, `tls`, `client_id` |
//!
//! `srv_*`, `route_*` and `authz_*` are `group`, `kind`, `name` of the
//! policy's metadata ([`Meta`]): shared strings built when the policy was
//! compiled, so counting a decision copies pointers and allocates
//! nothing once the series exists. Server, route and authorization names
//! are bounded by the policy; target addresses and client identities are
//! not, so once [`MAX_AUTHZ_SERIES`] label sets exist new ones are counted
//! under `target_addr="overflow"`, `client_id="overflow"`.

use super::{Tls, OVERFLOW_AUTHORITY};
use crate::inbound::policy::Meta;
use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Distinct label sets over all authorization families before target
/// addresses and client identities are folded into `overflow`.
pub const MAX_AUTHZ_SERIES: usize = 2000;

/// The labels of one authorization decision. Which parts a family
/// exports is fixed by the family (`route` only for HTTP, `authz` only
/// when something admitted).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct AuthzLabels {
    /// The connection's target (`ip:port` of the application).
    pub target_addr: Arc<str>,
    /// The server.
    pub srv: Meta,
    /// The route (HTTP only).
    pub route: Option<Meta>,
    /// The authorization (allow and terminate only).
    pub authz: Option<Meta>,
    /// The connection's TLS (`tls`, `client_id`).
    pub tls: Tls,
}

/// The authorization metric families (cheap to clone: families are
/// shared).
#[derive(Clone, Debug, Default)]
pub struct AuthzMetrics {
    http_allow: Family<AuthzLabels, Counter>,
    http_deny: Family<AuthzLabels, Counter>,
    tcp_allow: Family<AuthzLabels, Counter>,
    tcp_deny: Family<AuthzLabels, Counter>,
    tcp_terminate: Family<AuthzLabels, Counter>,
    series: Arc<AtomicUsize>,
}

// === impl AuthzLabels ===

impl EncodeLabelSet for AuthzLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        [("target_addr", &*self.target_addr)].encode(encoder)?;
        meta_labels(&self.srv, ["srv_group", "srv_kind", "srv_name"]).encode(encoder)?;
        if let Some(route) = &self.route {
            meta_labels(route, ["route_group", "route_kind", "route_name"]).encode(encoder)?;
        }
        if let Some(authz) = &self.authz {
            meta_labels(authz, ["authz_group", "authz_kind", "authz_name"]).encode(encoder)?;
        }
        self.tls.encode(encoder)
    }
}

fn meta_labels<'a>(meta: &'a Meta, names: [&'static str; 3]) -> [(&'static str, &'a str); 3] {
    [
        (names[0], &*meta.group),
        (names[1], &*meta.kind),
        (names[2], &*meta.name),
    ]
}

// === impl AuthzMetrics ===

impl AuthzMetrics {
    /// Registers the families under Linkerd's names.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        for (name, help, family) in [
            (
                "inbound_http_authz_allow",
                "HTTP requests admitted by an authorization",
                &m.http_allow,
            ),
            (
                "inbound_http_authz_deny",
                "HTTP requests refused for lack of an authorization",
                &m.http_deny,
            ),
            (
                "inbound_tcp_authz_allow",
                "Connections admitted by an authorization",
                &m.tcp_allow,
            ),
            (
                "inbound_tcp_authz_deny",
                "Connections refused for lack of an authorization",
                &m.tcp_deny,
            ),
            (
                "inbound_tcp_authz_terminate",
                "Open connections closed because a policy change revoked their authorization",
                &m.tcp_terminate,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        m
    }

    /// Counts an admitted HTTP request.
    pub fn http_allow(&self, labels: AuthzLabels) {
        self.count(&self.http_allow, labels);
    }

    /// Counts a refused HTTP request.
    pub fn http_deny(&self, labels: AuthzLabels) {
        self.count(&self.http_deny, labels);
    }

    /// Counts an admitted connection.
    pub fn tcp_allow(&self, labels: AuthzLabels) {
        self.count(&self.tcp_allow, labels);
    }

    /// Counts a refused connection.
    pub fn tcp_deny(&self, labels: AuthzLabels) {
        self.count(&self.tcp_deny, labels);
    }

    /// Counts an open connection closed by a policy change.
    pub fn tcp_terminate(&self, labels: AuthzLabels) {
        self.count(&self.tcp_terminate, labels);
    }

    /// Increments `family`'s series for `labels`: one lookup when it
    /// exists (the common case), else a new series within the bound.
    fn count(&self, family: &Family<AuthzLabels, Counter>, labels: AuthzLabels) {
        if let Some(counter) = family.get(&labels) {
            counter.inc();
            return;
        }
        let labels = if self.series.fetch_add(1, Ordering::Relaxed) < MAX_AUTHZ_SERIES {
            labels
        } else {
            AuthzLabels {
                target_addr: Arc::from(OVERFLOW_AUTHORITY),
                tls: match labels.tls {
                    Tls::Client(_) => Tls::Client(Arc::from(OVERFLOW_AUTHORITY)),
                    other => other,
                },
                ..labels
            }
        };
        family.get_or_create(&labels).inc();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn labels(target: &str, client: &str) -> AuthzLabels {
        AuthzLabels {
            target_addr: target.into(),
            srv: Meta::default_named("deny"),
            route: Some(Meta {
                group: "specs.smi-spec.io".into(),
                kind: "HTTPRouteGroup".into(),
                name: "web-routes".into(),
            }),
            authz: None,
            tls: Tls::Client(client.into()),
        }
    }

    #[test]
    fn names_and_labels_are_linkerds() {
        let mut registry = Registry::default();
        let m = AuthzMetrics::new(&mut registry);
        m.http_deny(labels(
            "10.0.0.1:8080",
            "a.shop.serviceaccount.identity.weft.cluster.local",
        ));
        m.http_deny(labels(
            "10.0.0.1:8080",
            "a.shop.serviceaccount.identity.weft.cluster.local",
        ));
        m.tcp_allow(AuthzLabels {
            route: None,
            authz: Some(Meta::default_named("audit")),
            tls: Tls::NoIdentity,
            ..labels("10.0.0.1:5432", "")
        });
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for needle in [
            r#"inbound_http_authz_deny_total{target_addr="10.0.0.1:8080",srv_group="",srv_kind="default",srv_name="deny",route_group="specs.smi-spec.io",route_kind="HTTPRouteGroup",route_name="web-routes",tls="true",client_id="a.shop.serviceaccount.identity.weft.cluster.local"} 2"#,
            r#"inbound_tcp_authz_allow_total{target_addr="10.0.0.1:5432",srv_group="",srv_kind="default",srv_name="deny",authz_group="",authz_kind="default",authz_name="audit",tls="no_identity"} 1"#,
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }

    #[test]
    fn series_are_bounded() {
        let mut registry = Registry::default();
        let m = AuthzMetrics::new(&mut registry);
        for i in 0..(MAX_AUTHZ_SERIES + 300) {
            m.http_deny(labels(
                "10.0.0.1:80",
                &format!("c{i}.ns.serviceaccount.identity.weft.x"),
            ));
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let series = text
            .lines()
            .filter(|l| l.starts_with("inbound_http_authz_deny_total{"))
            .count();
        assert_eq!(series, MAX_AUTHZ_SERIES + 1);
        assert!(text.contains(r#"target_addr="overflow""#), "{text}");
        assert!(text.contains(r#"client_id="overflow"} 300"#), "{text}");
    }
}
