#![allow(clippy::unwrap_used)]
//! The identity service in cluster mode: real ServiceAccount tokens from a
//! real kube-apiserver (the project's test control plane), checked by the
//! controller with TokenReview.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::{certify, client, controller_name, identity_dir, metric, Controller};
use tonic::Code;
use weft_identity::{
    describe_cert, generate_csr, identity_name, load_trust_anchors, verify_leaf, IdentityDir,
    DEFAULT_TRUST_DOMAIN,
};
use weft_kube_harness::TestControlPlane;

const NS: &str = "identity-test";

#[tokio::test]
async fn certify_with_service_account_tokens_and_token_review() {
    let plane = tokio::time::timeout(Duration::from_secs(240), TestControlPlane::start())
        .await
        .expect("control plane start timed out")
        .unwrap();
    plane.create_namespace(NS).await.unwrap();
    plane
        .apply_yaml(&format!(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: web\n  namespace: {NS}\n\
             ---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: api\n  namespace: {NS}\n"
        ))
        .await
        .unwrap();
    plane.wait_for_service_account(NS, "web").await.unwrap();
    plane.wait_for_service_account(NS, "api").await.unwrap();

    // Cluster mode needs no token.key: remove it to prove it is not used.
    let tmp = identity_dir();
    let dir = IdentityDir::new(tmp.path());
    std::fs::remove_file(dir.token_key()).unwrap();
    let kubeconfig = plane.kubeconfig_path().to_str().unwrap().to_owned();
    let ctl = Controller::start(tmp.path(), &["--kubeconfig", &kubeconfig])
        .await
        .unwrap();
    let anchor = dir.read_trust_anchors_pem().unwrap();
    let mut c = client(ctl.identity, &anchor, &controller_name())
        .await
        .unwrap();
    let web = identity_name("web", NS, DEFAULT_TRUST_DOMAIN).unwrap();

    // A projected token for audience identity.l5d.io.
    let token = plane
        .request_token(NS, "web", &["identity.l5d.io"], None)
        .await
        .unwrap();
    let (_, csr) = generate_csr(&web).unwrap();
    let rsp = certify(&mut c, &web, &token, csr).await.unwrap();
    let roots = Arc::new(load_trust_anchors(&anchor).unwrap());
    verify_leaf(
        roots,
        &rsp.leaf_certificate,
        &rsp.intermediate_certificates,
        &web,
    )
    .unwrap();
    assert_eq!(
        describe_cert(&rsp.leaf_certificate).unwrap().dns_sans,
        vec![web.clone()]
    );

    // A token for the API server's default audience works through the
    // fallback review without audiences.
    let default_aud = plane
        .request_token(
            NS,
            "web",
            &[weft_kube_harness::SERVICE_ACCOUNT_ISSUER],
            None,
        )
        .await
        .unwrap();
    let (_, csr) = generate_csr(&web).unwrap();
    certify(&mut c, &web, &default_aud, csr).await.unwrap();

    // web's token cannot get api's identity.
    let api = identity_name("api", NS, DEFAULT_TRUST_DOMAIN).unwrap();
    let (_, csr) = generate_csr(&api).unwrap();
    let err = certify(&mut c, &api, &token, csr).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    // Tokens the API server rejects: another audience, garbage.
    let other_aud = plane
        .request_token(NS, "web", &["not-weft"], None)
        .await
        .unwrap();
    for bad in [other_aud.as_str(), "garbage-token"] {
        let (_, csr) = generate_csr(&web).unwrap();
        let err = certify(&mut c, &web, bad, csr).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    }

    let m = ctl.metrics().await;
    assert_eq!(
        metric(&m, "identity_certify_total", &["result=\"ok\""]),
        2.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "identity_certify_total", &["unauthenticated"]),
        2.0,
        "{m}"
    );

    // With the API server gone, TokenReview cannot be done: Unavailable.
    drop(plane);
    let (_, csr) = generate_csr(&web).unwrap();
    let err = tokio::time::timeout(Duration::from_secs(30), certify(&mut c, &web, &token, csr))
        .await
        .expect("Certify hung with the API server down")
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(ctl.log().contains("TokenReview"), "{}", ctl.log());
}
