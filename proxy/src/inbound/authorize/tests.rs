#![allow(clippy::unwrap_used)]

use super::*;
use crate::http::body::{self, BoxBody};
use crate::http::errors::NewErrors;
use crate::inbound::policy::watch::AuditLog;
use crate::inbound::policy::ServerPolicy;
use http::Response;
use http_body_util::BodyExt;
use linkerd2_proxy_api::http_route::{path_match, HttpRouteMatch, PathMatch};
use linkerd2_proxy_api::inbound as api;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tower::{Layer, Service};
use weft_policy::DefaultPolicy;

const A: &str = "a.shop.serviceaccount.identity.weft.cluster.local";
const B: &str = "b.shop.serviceaccount.identity.weft.cluster.local";

/// `default` over a route `metrics` that admits `a` on `/metrics`.
fn policy(default: DefaultPolicy) -> ServerPolicy {
    let metrics = api::HttpRoute {
        metadata: Some(weft_policy::resource_meta(
            "specs.smi-spec.io",
            "HTTPRouteGroup",
            "shop",
            "metrics",
        )),
        hosts: Vec::new(),
        authorizations: vec![weft_policy::default_authz(
            "a-to-web",
            weft_policy::all_networks(),
            weft_policy::mesh_identities(vec![A.into()], vec![]),
        )],
        rules: vec![api::http_route::Rule {
            matches: vec![HttpRouteMatch {
                path: Some(PathMatch {
                    kind: Some(path_match::Kind::Exact("/metrics".into())),
                }),
                ..Default::default()
            }],
            filters: Vec::new(),
        }],
    };
    let mut s = weft_policy::default_server(default, &[], false, &[]);
    s.protocol = Some(weft_policy::protocol(
        false,
        vec![metrics, weft_policy::default_route()],
    ));
    ServerPolicy::from_proto(s, false).unwrap()
}

struct Fixture {
    registry: Registry,
    tx: watch::Sender<Arc<ServerPolicy>>,
    metrics: AuthzMetrics,
}

impl Fixture {
    fn new(default: DefaultPolicy) -> Self {
        let mut registry = Registry::default();
        let metrics = AuthzMetrics::new(&mut registry);
        let (tx, _) = watch::channel(Arc::new(policy(default)));
        Self {
            registry,
            tx,
            metrics,
        }
    }

    /// The stack of one connection from `tls`: errors over authorize over
    /// an application that echoes the `l5d-client-id` values it got.
    fn stack(
        &self,
        tls: Tls,
    ) -> impl Service<Request<BoxBody>, Response = Response<BoxBody>, Error = std::convert::Infallible>
    {
        let app = tower::service_fn(|req: Request<BoxBody>| async move {
            let ids: Vec<&str> = req
                .headers()
                .get_all(L5D_CLIENT_ID)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect();
            Ok::<_, ProxyError>(Response::new(body::full(ids.join(","))))
        });
        let policy = PortPolicy {
            port: 8080,
            rx: self.tx.subscribe(),
            audit: Arc::new(AuditLog::new()),
        };
        let client = Client {
            addr: "10.0.0.9:40000".parse().unwrap(),
            tls,
        };
        let layer =
            AuthorizeLayer::new(client, policy, "10.0.0.1:8080".into(), self.metrics.clone());
        NewErrors.layer(layer.layer(app))
    }

    fn metrics(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text
    }
}

async fn send<S>(svc: &mut S, req: Request<BoxBody>) -> (u16, http::HeaderMap, String)
where
    S: Service<Request<BoxBody>, Response = Response<BoxBody>, Error = std::convert::Infallible>,
{
    std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
    let rsp = svc.call(req).await.unwrap();
    let status = rsp.status().as_u16();
    let headers = rsp.headers().clone();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

fn get(path: &str) -> Request<BoxBody> {
    Request::get(path).body(body::empty()).unwrap()
}

#[tokio::test]
async fn denied_requests_get_403_with_the_route_and_are_counted() {
    let f = Fixture::new(DefaultPolicy::Deny);
    let mut svc = f.stack(Tls::Client(B.into()));
    let (status, headers, body) = send(&mut svc, get("/metrics")).await;
    assert_eq!(status, 403);
    assert_eq!(
        headers["l5d-proxy-error"],
        "unauthorized request on route metrics"
    );
    assert!(
        body.contains("unauthorized request on route metrics"),
        "{body}"
    );
    let (status, headers, _) = send(&mut svc, get("/other")).await;
    assert_eq!(status, 403);
    assert_eq!(
        headers["l5d-proxy-error"],
        "unauthorized request on route default"
    );

    let mut a = f.stack(Tls::Client(A.into()));
    let (status, _, body) = send(&mut a, get("/metrics")).await;
    assert_eq!((status, body.as_str()), (200, A));

    let text = f.metrics();
    for needle in [
        format!(
            r#"inbound_http_authz_deny_total{{target_addr="10.0.0.1:8080",srv_group="",srv_kind="default",srv_name="deny",route_group="specs.smi-spec.io",route_kind="HTTPRouteGroup",route_name="metrics",tls="true",client_id="{B}"}} 1"#
        ),
        format!(
            r#"inbound_http_authz_deny_total{{target_addr="10.0.0.1:8080",srv_group="",srv_kind="default",srv_name="deny",route_group="",route_kind="default",route_name="default",tls="true",client_id="{B}"}} 1"#
        ),
        format!(
            r#"inbound_http_authz_allow_total{{target_addr="10.0.0.1:8080",srv_group="",srv_kind="default",srv_name="deny",route_group="specs.smi-spec.io",route_kind="HTTPRouteGroup",route_name="metrics",authz_group="",authz_kind="default",authz_name="a-to-web",tls="true",client_id="{A}"}} 1"#
        ),
    ] {
        assert!(text.contains(&needle), "missing {needle} in\n{text}");
    }
}

#[tokio::test]
async fn denied_grpc_gets_permission_denied() {
    let f = Fixture::new(DefaultPolicy::Deny);
    let mut svc = f.stack(Tls::NoIdentity);
    let req = Request::post("/shop.Cart/Add")
        .header("content-type", "application/grpc+proto")
        .body(body::empty())
        .unwrap();
    let (status, headers, _) = send(&mut svc, req).await;
    assert_eq!(status, 200);
    assert_eq!(headers["grpc-status"], "7");
    assert_eq!(
        headers["grpc-message"],
        "unauthorized request on route default"
    );
    assert_eq!(headers["content-type"], "application/grpc");
}

#[tokio::test]
async fn client_ids_are_never_forged() {
    let f = Fixture::new(DefaultPolicy::AllUnauthenticated);
    let forged = || {
        Request::get("/x")
            .header("l5d-client-id", A)
            .header("l5d-client-id", "root")
            .body(body::empty())
            .unwrap()
    };
    // Plaintext: the forged header is removed, none is set.
    let mut plain = f.stack(Tls::NoIdentity);
    let (status, _, body) = send(&mut plain, forged()).await;
    assert_eq!((status, body.as_str()), (200, ""));
    // mTLS: the proven identity replaces whatever was sent.
    let mut b = f.stack(Tls::Client(B.into()));
    let (_, _, body) = send(&mut b, forged()).await;
    assert_eq!(body, B);
    // A forged header never grants access either.
    let f = Fixture::new(DefaultPolicy::Deny);
    let mut plain = f.stack(Tls::NoIdentity);
    let req = Request::get("/metrics")
        .header("l5d-client-id", A)
        .body(body::empty())
        .unwrap();
    assert_eq!(send(&mut plain, req).await.0, 403);
}

#[tokio::test]
async fn audit_admits_and_counts_what_deny_would_refuse() {
    let f = Fixture::new(DefaultPolicy::Audit);
    let mut b = f.stack(Tls::Client(B.into()));
    for _ in 0..3 {
        assert_eq!(send(&mut b, get("/metrics")).await.0, 200);
    }
    let mut a = f.stack(Tls::Client(A.into()));
    assert_eq!(send(&mut a, get("/metrics")).await.0, 200);
    let text = f.metrics();
    for needle in [
        format!(
            r#"route_name="metrics",authz_group="",authz_kind="default",authz_name="audit",tls="true",client_id="{B}"}} 3"#
        ),
        format!(
            r#"route_name="metrics",authz_group="",authz_kind="default",authz_name="a-to-web",tls="true",client_id="{A}"}} 1"#
        ),
    ] {
        assert!(text.contains(&needle), "missing {needle} in\n{text}");
    }
    assert!(!text.contains("inbound_http_authz_deny_total{"), "{text}");
}

#[tokio::test]
async fn every_request_uses_the_current_policy() {
    let f = Fixture::new(DefaultPolicy::AllUnauthenticated);
    let mut svc = f.stack(Tls::Client(B.into()));
    assert_eq!(send(&mut svc, get("/x")).await.0, 200);
    f.tx.send_replace(Arc::new(policy(DefaultPolicy::Deny)));
    assert_eq!(send(&mut svc, get("/x")).await.0, 403);
    f.tx.send_replace(Arc::new(policy(DefaultPolicy::AllAuthenticated)));
    assert_eq!(send(&mut svc, get("/x")).await.0, 200);
}

#[tokio::test]
async fn requests_no_route_matches_get_404() {
    let f = Fixture::new(DefaultPolicy::AllUnauthenticated);
    let mut p = policy(DefaultPolicy::AllUnauthenticated);
    let routes: Vec<_> = std::mem::take(&mut p.routes)
        .into_vec()
        .into_iter()
        .filter(|r| &*r.meta.name != "default")
        .collect();
    p.routes = routes.into();
    f.tx.send_replace(Arc::new(p));
    let mut svc = f.stack(Tls::NoIdentity);
    let (status, headers, _) = send(&mut svc, get("/x")).await;
    assert_eq!(status, 404);
    assert_eq!(headers["l5d-proxy-error"], "no route found for request");
    assert_eq!(
        send(&mut svc, get("/metrics")).await.0,
        200,
        "all-unauthenticated on the server"
    );
}
