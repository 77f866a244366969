#![allow(clippy::unwrap_used)]

use super::*;
use crate::inbound::policy::watch::AuditLog;
use futures::FutureExt;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use weft_policy::DefaultPolicy;

const A: &str = "a.shop.serviceaccount.identity.weft.cluster.local";

fn policy(default: DefaultPolicy, opaque: bool, probes: &[&str]) -> Arc<ServerPolicy> {
    let probes: Vec<String> = probes.iter().map(|p| p.to_string()).collect();
    let s = weft_policy::default_server(default, &[], opaque, &probes);
    Arc::new(ServerPolicy::from_proto(s, false).unwrap())
}

struct Fixture {
    tx: watch::Sender<Arc<ServerPolicy>>,
    registry: Registry,
    metrics: AuthzMetrics,
}

impl Fixture {
    fn new(initial: Arc<ServerPolicy>) -> Self {
        let mut registry = Registry::default();
        let metrics = AuthzMetrics::new(&mut registry);
        Self {
            tx: watch::channel(initial).0,
            registry,
            metrics,
        }
    }

    fn conn(&self) -> ConnAuthz {
        let policy = PortPolicy {
            port: 5432,
            rx: self.tx.subscribe(),
            audit: Arc::new(AuditLog::new()),
        };
        ConnAuthz::new(
            policy,
            "10.0.0.9:40000".parse().unwrap(),
            "10.0.0.1:5432".into(),
            self.metrics.clone(),
        )
    }

    fn metrics(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text
    }
}

fn until(admitted: Admitted) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    match admitted {
        Admitted::Until(revoked) => revoked,
        Admitted::Refused => panic!("refused"),
        Admitted::Always => panic!("never revocable"),
    }
}

#[tokio::test]
async fn tcp_connections_are_admitted_counted_and_revoked() {
    let f = Fixture::new(policy(DefaultPolicy::AllAuthenticated, true, &[]));
    let mtls = Tls::Client(A.into());
    assert!(matches!(
        f.conn().admit(&Tls::NoIdentity, ConnKind::Tcp),
        Admitted::Refused
    ));
    let mut revoked = until(f.conn().admit(&mtls, ConnKind::Tcp));
    assert!((&mut revoked).now_or_never().is_none());

    // A change that still admits it: the connection stays.
    f.tx.send_replace(policy(DefaultPolicy::AllUnauthenticated, true, &[]));
    tokio::task::yield_now().await;
    assert!((&mut revoked).now_or_never().is_none());
    // One that does not: it is closed, and counted.
    f.tx.send_replace(policy(DefaultPolicy::Deny, true, &[]));
    tokio::time::timeout(std::time::Duration::from_secs(5), revoked)
        .await
        .unwrap();
    let text = f.metrics();
    for needle in [
        r#"inbound_tcp_authz_deny_total{target_addr="10.0.0.1:5432",srv_group="",srv_kind="default",srv_name="all-authenticated",tls="no_identity"} 1"#,
        r#"inbound_tcp_authz_allow_total{target_addr="10.0.0.1:5432",srv_group="",srv_kind="default",srv_name="all-authenticated",authz_group="",authz_kind="default",authz_name="all-authenticated",tls="true",client_id="a.shop.serviceaccount.identity.weft.cluster.local"} 1"#,
        r#"inbound_tcp_authz_terminate_total{target_addr="10.0.0.1:5432",srv_group="",srv_kind="default",srv_name="all-authenticated",authz_group="",authz_kind="default",authz_name="all-authenticated",tls="true",client_id="a.shop.serviceaccount.identity.weft.cluster.local"} 1"#,
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}

#[tokio::test]
async fn http_connections_are_refused_only_when_nothing_could_admit_them() {
    // `deny` with a probe route: plaintext may still probe.
    let f = Fixture::new(policy(DefaultPolicy::Deny, false, &["/ready"]));
    let mut revoked = until(f.conn().admit(&Tls::NoIdentity, ConnKind::Http));
    assert!((&mut revoked).now_or_never().is_none());
    // Without the probe nothing could admit it: closed (gracefully, by
    // the server), not counted as a TCP termination.
    f.tx.send_replace(policy(DefaultPolicy::Deny, false, &[]));
    tokio::time::timeout(std::time::Duration::from_secs(5), revoked)
        .await
        .unwrap();
    assert!(matches!(
        f.conn().admit(&Tls::NoIdentity, ConnKind::Http),
        Admitted::Refused
    ));
    let text = f.metrics();
    assert!(text.contains(r#"inbound_tcp_authz_deny_total{target_addr="10.0.0.1:5432",srv_group="",srv_kind="default",srv_name="deny",tls="no_identity"} 1"#), "{text}");
    assert!(
        !text.contains("inbound_tcp_authz_terminate_total{"),
        "{text}"
    );
    assert!(!text.contains("inbound_tcp_authz_allow_total{"), "{text}");
}

#[tokio::test]
async fn http_on_an_opaque_server_is_checked_as_tcp() {
    let f = Fixture::new(policy(DefaultPolicy::AllAuthenticated, true, &[]));
    assert!(matches!(
        f.conn().admit(&Tls::NoIdentity, ConnKind::Http),
        Admitted::Refused
    ));
    assert!(matches!(
        f.conn().admit(&Tls::Client(A.into()), ConnKind::Http),
        Admitted::Until(_)
    ));
    assert!(f.metrics().contains("inbound_tcp_authz_allow_total{"));
}

#[tokio::test(start_paused = true)]
async fn an_unwatched_port_is_never_revoked() {
    let (tx, rx) = watch::channel(policy(DefaultPolicy::AllUnauthenticated, true, &[]));
    drop(tx);
    let mut registry = Registry::default();
    let conn = PortPolicy {
        port: 1,
        rx,
        audit: Arc::new(AuditLog::new()),
    };
    let mut c = ConnAuthz::new(
        conn,
        "10.0.0.9:1".parse().unwrap(),
        "10.0.0.1:1".into(),
        AuthzMetrics::new(&mut registry),
    );
    let revoked = until(c.admit(&Tls::NoIdentity, ConnKind::Tcp));
    assert!(
        tokio::time::timeout(std::time::Duration::from_secs(3600), revoked)
            .await
            .is_err()
    );
}
