#![allow(clippy::unwrap_used)]
//! The identity service in file mode, end to end: the real
//! `weft-controller` binary, real TLS over loopback, a tonic client from
//! `linkerd2-proxy-api`, tokens minted with the identity directory's key.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use support::{certify, client, controller_name, identity_dir, metric, Controller};
use tonic::Code;
use weft_identity::rcgen::{self, KeyPair};
use weft_identity::{
    csr_for_key, describe_cert, generate_csr, generate_csr_with, identity_name, load_trust_anchors,
    mint_token, mint_token_until, verify_leaf, IdentityDir, DEFAULT_TRUST_DOMAIN,
};

const TD: &str = DEFAULT_TRUST_DOMAIN;

fn token(dir: &IdentityDir, ns: &str, sa: &str) -> String {
    mint_token(
        &dir.load_token_key().unwrap(),
        ns,
        sa,
        Duration::from_secs(3600),
    )
    .unwrap()
}

#[tokio::test]
async fn certify_happy_path_over_tls() {
    let tmp = identity_dir();
    let dir = IdentityDir::new(tmp.path());
    let ctl = Controller::start(tmp.path(), &[]).await.unwrap();
    let anchor = dir.read_trust_anchors_pem().unwrap();
    let mut c = client(ctl.identity, &anchor, &controller_name())
        .await
        .unwrap();

    let name = identity_name("web", "emojivoto", TD).unwrap();
    let (_key, csr) = generate_csr(&name).unwrap();
    let asked = SystemTime::now();
    let rsp = certify(&mut c, &name, &token(&dir, "emojivoto", "web"), csr)
        .await
        .unwrap();

    let roots = Arc::new(load_trust_anchors(&anchor).unwrap());
    verify_leaf(
        roots,
        &rsp.leaf_certificate,
        &rsp.intermediate_certificates,
        &name,
    )
    .unwrap();
    let info = describe_cert(&rsp.leaf_certificate).unwrap();
    assert_eq!(info.dns_sans, vec![name.clone()]);
    assert!(!info.is_ca);
    let lifetime = info.not_after.duration_since(asked).unwrap();
    assert!(
        lifetime > Duration::from_secs(24 * 3600 - 60)
            && lifetime <= Duration::from_secs(24 * 3600 + 1),
        "{lifetime:?}"
    );
    let skew = asked.duration_since(info.not_before).unwrap();
    assert!(
        skew >= Duration::from_secs(19) && skew <= Duration::from_secs(22),
        "{skew:?}"
    );
    let valid_until = rsp.valid_until.unwrap();
    assert_eq!(
        valid_until.seconds,
        info.not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    );
    // The chain is the issuer in the directory.
    let issuer_der =
        weft_identity::parse_pem_certs(&std::fs::read_to_string(dir.issuer_crt()).unwrap())
            .unwrap();
    assert_eq!(rsp.intermediate_certificates, vec![issuer_der[0].to_vec()]);

    let m = ctl.metrics().await;
    assert_eq!(
        metric(&m, "identity_certify_total", &["result=\"ok\""]),
        1.0,
        "{m}"
    );
    assert!(ctl.log().contains("certified"));
}

#[tokio::test]
async fn token_for_a_cannot_get_identity_b() {
    let tmp = identity_dir();
    let dir = IdentityDir::new(tmp.path());
    let ctl = Controller::start(tmp.path(), &[]).await.unwrap();
    let anchor = dir.read_trust_anchors_pem().unwrap();
    let mut c = client(ctl.identity, &anchor, &controller_name())
        .await
        .unwrap();
    let b = identity_name("b", "ns", TD).unwrap();
    let (_, csr) = generate_csr(&b).unwrap();
    let err = certify(&mut c, &b, &token(&dir, "ns", "a"), csr)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("not for the requested identity"),
        "{err:?}"
    );
    // Same SA, other namespace: also refused.
    let (_, csr) = generate_csr(&b).unwrap();
    let err = certify(&mut c, &b, &token(&dir, "other", "b"), csr)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    // A token for a asking for a, with a CSR for b: the CSR is refused.
    let a = identity_name("a", "ns", TD).unwrap();
    let (_, csr_b) = generate_csr(&b).unwrap();
    let err = certify(&mut c, &a, &token(&dir, "ns", "a"), csr_b)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    ctl.wait_for_log("certify refused", Duration::from_secs(5))
        .await
        .unwrap();
    let log = ctl.log();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("certify refused"))
        .collect();
    assert_eq!(refusals.len(), 3, "{log}");
    assert!(refusals[0].contains("reason="), "{log}");
    let m = ctl.metrics().await;
    assert_eq!(
        metric(&m, "identity_certify_total", &["failed_precondition"]),
        2.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "identity_certify_total", &["invalid_argument"]),
        1.0
    );
}

#[tokio::test]
async fn malformed_requests_are_invalid_arguments() {
    let tmp = identity_dir();
    let dir = IdentityDir::new(tmp.path());
    let ctl = Controller::start(tmp.path(), &[]).await.unwrap();
    let anchor = dir.read_trust_anchors_pem().unwrap();
    let mut c = client(ctl.identity, &anchor, &controller_name())
        .await
        .unwrap();
    let name = identity_name("web", "ns", TD).unwrap();
    let other = identity_name("api", "ns", TD).unwrap();
    let tok = token(&dir, "ns", "web");

    // Two SANs.
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let two = csr_for_key(&key, &[&name, &other]).unwrap();
    let err = certify(&mut c, &name, &tok, two).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("exactly one DNS SAN"), "{err:?}");

    // Not P-256.
    for alg in [&rcgen::PKCS_ECDSA_P384_SHA384, &rcgen::PKCS_ED25519] {
        let g = generate_csr_with(&name, alg).unwrap();
        let err = certify(&mut c, &name, &tok, g.csr_der).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("P-256"), "{err:?}");
    }

    // Garbage CSR, empty CSR, identity outside the trust domain.
    let err = certify(&mut c, &name, &tok, b"garbage".to_vec())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = certify(&mut c, &name, &tok, Vec::new()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let foreign = identity_name("web", "ns", "example.org").unwrap();
    let (_, csr) = generate_csr(&foreign).unwrap();
    let err = certify(&mut c, &foreign, &tok, csr).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
}

#[tokio::test]
async fn bad_tokens_are_unauthenticated() {
    let tmp = identity_dir();
    let dir = IdentityDir::new(tmp.path());
    let ctl = Controller::start(tmp.path(), &[]).await.unwrap();
    let anchor = dir.read_trust_anchors_pem().unwrap();
    let mut c = client(ctl.identity, &anchor, &controller_name())
        .await
        .unwrap();
    let name = identity_name("web", "ns", TD).unwrap();
    let key = dir.load_token_key().unwrap();

    let expired = mint_token_until(
        &key,
        "ns",
        "web",
        SystemTime::now() - Duration::from_secs(1),
    )
    .unwrap();
    let other_dir = identity_dir();
    let forged = token(&IdentityDir::new(other_dir.path()), "ns", "web");
    let good = token(&dir, "ns", "web");
    let mut tampered = good.clone().into_bytes();
    let i = good.find('.').unwrap() + 3;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();

    for (what, tok, needle) in [
        ("expired", expired.as_str(), "expired"),
        ("other key", forged.as_str(), "signature"),
        ("tampered", tampered.as_str(), "signature"),
        ("empty", "", "empty token"),
        ("a JWT", "eyJhbGciOi.eyJzdWIiOi.c2ln", "malformed"),
    ] {
        let (_, csr) = generate_csr(&name).unwrap();
        let err = certify(&mut c, &name, tok, csr).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{what}: {err:?}");
        assert!(err.message().contains(needle), "{what}: {err:?}");
    }
    let m = ctl.metrics().await;
    assert_eq!(
        metric(&m, "identity_certify_total", &["unauthenticated"]),
        5.0,
        "{m}"
    );
}

#[tokio::test]
async fn clients_verify_the_controller_identity() {
    let tmp = identity_dir();
    let dir = IdentityDir::new(tmp.path());
    let ctl = Controller::start(tmp.path(), &[]).await.unwrap();
    let anchor = dir.read_trust_anchors_pem().unwrap();

    // Expecting another name: the handshake fails.
    let wrong = identity_name("web", "ns", TD).unwrap();
    let err = client(ctl.identity, &anchor, &wrong).await;
    assert!(err.is_err(), "connected while expecting {wrong}");
    // Trusting another anchor: the handshake fails.
    let other = identity_dir();
    let other_anchor = IdentityDir::new(other.path())
        .read_trust_anchors_pem()
        .unwrap();
    assert!(client(ctl.identity, &other_anchor, &controller_name())
        .await
        .is_err());
    // Plaintext gRPC is not served.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", ctl.identity))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await;
    if let Ok(channel) = plain {
        let mut c = linkerd2_proxy_api::identity::identity_client::IdentityClient::new(channel);
        let (_, csr) = generate_csr(&wrong).unwrap();
        assert!(certify(&mut c, &wrong, &token(&dir, "ns", "web"), csr)
            .await
            .is_err());
    }
    // The right name and anchor work.
    client(ctl.identity, &anchor, &controller_name())
        .await
        .unwrap();
}

#[tokio::test]
async fn leaf_lifetime_and_skew_flags() {
    let tmp = identity_dir();
    let dir = IdentityDir::new(tmp.path());
    let ctl = Controller::start(
        tmp.path(),
        &[
            "--identity-leaf-lifetime",
            "1h",
            "--identity-clock-skew",
            "1m",
        ],
    )
    .await
    .unwrap();
    let anchor = dir.read_trust_anchors_pem().unwrap();
    let mut c = client(ctl.identity, &anchor, &controller_name())
        .await
        .unwrap();
    let name = identity_name("web", "ns", TD).unwrap();
    let (_, csr) = generate_csr(&name).unwrap();
    let rsp = certify(&mut c, &name, &token(&dir, "ns", "web"), csr)
        .await
        .unwrap();
    let info = describe_cert(&rsp.leaf_certificate).unwrap();
    let total = info.not_after.duration_since(info.not_before).unwrap();
    assert!(
        total >= Duration::from_secs(3600 + 59) && total <= Duration::from_secs(3600 + 61),
        "{total:?}"
    );
}

/// Replacing the issuer files with a new issuer from the same anchor takes
/// effect without a restart; a broken replacement is refused and the
/// issuer in force stays.
#[tokio::test]
async fn issuer_hot_reload() {
    let tmp = identity_dir();
    let dir = IdentityDir::new(tmp.path());
    let ctl = Controller::start(tmp.path(), &["--identity-reload-interval", "200ms"])
        .await
        .unwrap();
    let anchor = dir.read_trust_anchors_pem().unwrap();
    let roots = Arc::new(load_trust_anchors(&anchor).unwrap());
    let mut c = client(ctl.identity, &anchor, &controller_name())
        .await
        .unwrap();
    let name = identity_name("web", "ns", TD).unwrap();
    let tok = token(&dir, "ns", "web");
    let old_issuer = std::fs::read_to_string(dir.issuer_crt()).unwrap();
    let old_der = weft_identity::parse_pem_certs(&old_issuer).unwrap()[0].to_vec();

    // A broken issuer.crt is refused; the old issuer keeps signing.
    std::fs::write(dir.issuer_crt(), "not a certificate\n").unwrap();
    ctl.wait_for_log("not usable", Duration::from_secs(10))
        .await
        .unwrap();
    let (_, csr) = generate_csr(&name).unwrap();
    let rsp = certify(&mut c, &name, &tok, csr).await.unwrap();
    assert_eq!(rsp.intermediate_certificates, vec![old_der.clone()]);

    // A new issuer from the same anchor takes over.
    let new_not_after =
        weft_identity::rotate_issuer(tmp.path(), TD, Duration::from_secs(48 * 3600)).unwrap();
    let new_issuer = std::fs::read_to_string(dir.issuer_crt()).unwrap();
    let new_der = weft_identity::parse_pem_certs(&new_issuer).unwrap()[0].to_vec();
    assert_ne!(new_der, old_der);
    let deadline = Instant::now() + Duration::from_secs(10);
    let rsp = loop {
        let (_, csr) = generate_csr(&name).unwrap();
        let rsp = certify(&mut c, &name, &tok, csr).await.unwrap();
        if rsp.intermediate_certificates == vec![new_der.clone()] {
            break rsp;
        }
        assert!(
            Instant::now() < deadline,
            "new issuer not used:\n{}",
            ctl.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    verify_leaf(
        roots,
        &rsp.leaf_certificate,
        &rsp.intermediate_certificates,
        &name,
    )
    .unwrap();
    let info = describe_cert(&rsp.leaf_certificate).unwrap();
    assert_eq!(info.issuer, "CN=identity.weft.cluster.local");
    assert!(info.not_after <= new_not_after);

    // The controller renewed its own certificate from the new issuer, and
    // clients still connect.
    ctl.wait_for_log("controller certificate renewed", Duration::from_secs(10))
        .await
        .unwrap();
    client(ctl.identity, &anchor, &controller_name())
        .await
        .unwrap();
    let m = ctl.metrics().await;
    assert_eq!(
        metric(&m, "identity_issuer_reload_total", &["result=\"ok\""]),
        1.0,
        "{m}"
    );
    assert!(
        metric(&m, "identity_issuer_reload_total", &["result=\"error\""]) >= 1.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "identity_controller_cert_refresh_total",
            &["result=\"ok\""]
        ),
        2.0,
        "{m}"
    );
}

#[tokio::test]
async fn graceful_shutdown_and_start_up_errors() {
    let tmp = identity_dir();
    let dir = IdentityDir::new(tmp.path());
    let mut ctl = Controller::start(tmp.path(), &[]).await.unwrap();
    let (code, _) = support::http_get(ctl.admin, "/live").await.unwrap();
    assert_eq!(code, 200);
    // An idle, established client connection must not hold up shutdown.
    let anchor = dir.read_trust_anchors_pem().unwrap();
    let mut c = client(ctl.identity, &anchor, &controller_name())
        .await
        .unwrap();
    let name = identity_name("web", "ns", TD).unwrap();
    let (_, csr) = generate_csr(&name).unwrap();
    certify(&mut c, &name, &token(&dir, "ns", "web"), csr)
        .await
        .unwrap();
    let started = Instant::now();
    ctl.terminate();
    let status = ctl.wait_exit(Duration::from_secs(15)).await.unwrap();
    assert!(status.success(), "{status}:\n{}", ctl.log());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(ctl.log().contains("shutting down"));

    // Missing issuer key: exit 1, and the error names the file.
    let broken = identity_dir();
    std::fs::remove_file(IdentityDir::new(broken.path()).issuer_key()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft-controller"))
        .args(["--identity-dir", broken.path().to_str().unwrap()])
        .args([
            "--identity-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("issuer.key"), "{stderr}");

    // No --identity-dir, or a bad flag: usage, exit 2.
    for args in [
        &[][..],
        &[
            "--identity-dir",
            "/nonexistent",
            "--identity-leaf-lifetime",
            "soon",
        ],
        &[
            "--identity-dir",
            "/nonexistent",
            "--trust-domain",
            "Bad_Domain",
        ],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft-controller"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}
