#![allow(clippy::unwrap_used)]
//! The CA end to end, in process: `init` material, signing rules, and the
//! rustls glue over a real loopback TCP handshake.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use weft_identity::rcgen::{self, KeyPair};
use weft_identity::*;

fn init_dir() -> (tempfile::TempDir, IdentityDir) {
    let tmp = tempfile::tempdir().unwrap();
    init(tmp.path(), &InitOptions::default()).unwrap();
    let dir = IdentityDir::new(tmp.path());
    (tmp, dir)
}

#[test]
fn init_writes_valid_material() {
    let (_tmp, dir) = init_dir();
    for (path, mode) in [
        (dir.ca_crt(), 0o644),
        (dir.ca_key(), 0o600),
        (dir.issuer_crt(), 0o644),
        (dir.issuer_key(), 0o600),
        (dir.token_key(), 0o600),
    ] {
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(
            meta.permissions().mode() & 0o777,
            mode,
            "{}",
            path.display()
        );
    }
    let anchor_pem = dir.read_trust_anchors_pem().unwrap();
    let anchor = describe_cert(&parse_pem_certs(&anchor_pem).unwrap()[0]).unwrap();
    assert!(anchor.is_ca);
    assert_eq!(anchor.subject, "CN=root.weft.cluster.local");
    let ten_years = SystemTime::now() + Duration::from_secs(87_600 * 3600);
    let diff = ten_years
        .duration_since(anchor.not_after)
        .unwrap_or_else(|e| e.duration());
    assert!(diff < Duration::from_secs(60), "anchor lifetime");

    let issuer_pem = std::fs::read_to_string(dir.issuer_crt()).unwrap();
    let issuer_der = &parse_pem_certs(&issuer_pem).unwrap()[0];
    let info = describe_cert(issuer_der).unwrap();
    assert!(info.is_ca);
    assert_eq!(info.subject, "CN=identity.weft.cluster.local");
    assert_eq!(info.issuer, anchor.subject);
    // pathlen 0, signed by the anchor (checked again by load_issuer).
    let (_, x) = x509_parser::parse_x509_certificate(issuer_der).unwrap();
    let bc = x.basic_constraints().unwrap().unwrap().value;
    assert_eq!(bc.path_len_constraint, Some(0));
    let anchor_ders = parse_pem_certs(&anchor_pem).unwrap();
    let (_, a) = x509_parser::parse_x509_certificate(&anchor_ders[0]).unwrap();
    x.verify_signature(Some(a.public_key())).unwrap();
    let issuer = dir.load_issuer().unwrap();
    assert_eq!(issuer.subject(), "CN=identity.weft.cluster.local");
    dir.load_token_key().unwrap();
}

#[test]
fn init_refuses_to_overwrite_without_force() {
    let (tmp, dir) = init_dir();
    let before = std::fs::read(dir.issuer_key()).unwrap();
    let err = init(tmp.path(), &InitOptions::default()).unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    assert_eq!(std::fs::read(dir.issuer_key()).unwrap(), before);
    let opts = InitOptions {
        force: true,
        ..InitOptions::default()
    };
    init(tmp.path(), &opts).unwrap();
    assert_ne!(std::fs::read(dir.issuer_key()).unwrap(), before);
    dir.load_issuer().unwrap();
}

#[test]
fn bring_your_own_anchor_and_rotation() {
    let anchor = generate_anchor("example.org", Duration::from_secs(3600 * 24 * 30)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let opts = InitOptions {
        trust_domain: "example.org".into(),
        anchor: Some((anchor.cert_pem.clone(), anchor.key_pem.clone())),
        ..InitOptions::default()
    };
    let out = init(tmp.path(), &opts).unwrap();
    // The issuer's default year is capped at the anchor's 30 days.
    assert!(out.issuer_not_after <= anchor.not_after);
    let dir = IdentityDir::new(tmp.path());
    assert_eq!(dir.read_trust_anchors_pem().unwrap(), anchor.cert_pem);
    let first = dir.load_issuer().unwrap();
    let first_der = first.chain()[0].clone();
    rotate_issuer(tmp.path(), "example.org", Duration::from_secs(3600)).unwrap();
    let second = dir.load_issuer().unwrap();
    assert_ne!(second.chain()[0], first_der);
    let nf = second
        .not_after()
        .duration_since(SystemTime::now())
        .unwrap();
    assert!(nf <= Duration::from_secs(3600) && nf > Duration::from_secs(3500));
}

#[test]
fn issuer_checks_refuse_bad_material() {
    let (_tmp, dir) = init_dir();
    let files = dir.read_issuer_files().unwrap();
    // Another anchor's issuer does not chain to this anchor.
    let other = generate_anchor("cluster.local", Duration::from_secs(3600)).unwrap();
    let foreign = generate_issuer(
        &other.cert_pem,
        &other.key_pem,
        "cluster.local",
        Duration::from_secs(3600),
    )
    .unwrap();
    let err = Issuer::from_pem(&foreign.cert_pem, &foreign.key_pem, &files.anchors_pem)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not chain to the trust anchor"), "{err}");
    // A key that does not belong to the certificate.
    let err = Issuer::from_pem(&files.cert_pem, &foreign.key_pem, &files.anchors_pem)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not match"), "{err}");
    // Not PEM at all; the error names the file.
    std::fs::write(dir.issuer_crt(), "garbage").unwrap();
    let err = dir.load_issuer().unwrap_err().to_string();
    assert!(err.contains("issuer.crt"), "{err}");
    // Missing file.
    std::fs::remove_file(dir.issuer_key()).unwrap();
    let err = dir.load_issuer().unwrap_err().to_string();
    assert!(err.contains("issuer.key"), "{err}");
}

#[test]
fn certify_happy_path() {
    let (_tmp, dir) = init_dir();
    let issuer = dir.load_issuer().unwrap();
    let name = identity_name("web", "emojivoto", DEFAULT_TRUST_DOMAIN).unwrap();
    let (key, csr) = generate_csr(&name).unwrap();
    let before = SystemTime::now();
    let cert = issuer
        .certify(&csr, &name, DEFAULT_LEAF_LIFETIME, DEFAULT_CLOCK_SKEW)
        .unwrap();
    let info = describe_cert(&cert.leaf_der).unwrap();
    assert!(!info.is_ca);
    assert_eq!(info.dns_sans, vec![name.clone()]);
    assert_eq!(leaf_identity(&cert.leaf_der).unwrap(), name);
    let life = info.not_after.duration_since(info.not_before).unwrap();
    assert!(
        life >= Duration::from_secs(24 * 3600 + 19) && life <= Duration::from_secs(24 * 3600 + 21),
        "{life:?}"
    );
    assert!(info.not_before <= before - Duration::from_secs(19));
    assert_eq!(cert.valid_until, info.not_after);
    assert_eq!(cert.chain.len(), 1);
    let roots = Arc::new(load_trust_anchors(&dir.read_trust_anchors_pem().unwrap()).unwrap());
    verify_leaf(roots.clone(), &cert.leaf_der, &cert.chain, &name).unwrap();
    assert!(verify_leaf(roots, &cert.leaf_der, &cert.chain, "other.name").is_err());
    certified_key(&key, &cert.leaf_der, &cert.chain).unwrap();
    // The key must match the leaf.
    let (other_key, _) = generate_csr(&name).unwrap();
    assert!(certified_key(&other_key, &cert.leaf_der, &cert.chain).is_err());
    // EKUs: serverAuth + clientAuth.
    let (_, x) = x509_parser::parse_x509_certificate(&cert.leaf_der).unwrap();
    let eku = x.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
}

#[test]
fn certify_refusals() {
    let (_tmp, dir) = init_dir();
    let issuer = dir.load_issuer().unwrap();
    let name = identity_name("a", "ns", DEFAULT_TRUST_DOMAIN).unwrap();
    let other = identity_name("b", "ns", DEFAULT_TRUST_DOMAIN).unwrap();
    let certify = |csr: &[u8], name: &str| {
        issuer.certify(csr, name, DEFAULT_LEAF_LIFETIME, DEFAULT_CLOCK_SKEW)
    };

    // CSR for b, caller entitled to a.
    let (_, csr_b) = generate_csr(&other).unwrap();
    assert!(matches!(
        certify(&csr_b, &name),
        Err(CertifyError::SanMismatch { .. })
    ));
    // Two SANs.
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let two = csr_for_key(&key, &[&name, &other]).unwrap();
    match certify(&two, &name) {
        Err(CertifyError::SanMismatch { found, .. }) => assert_eq!(found.len(), 2),
        other => panic!("{other:?}"),
    }
    // No SAN.
    let none = csr_for_key(&key, &[]).unwrap();
    assert!(matches!(
        certify(&none, &name),
        Err(CertifyError::SanMismatch { .. })
    ));
    // P-384 and Ed25519 keys.
    for alg in [&rcgen::PKCS_ECDSA_P384_SHA384, &rcgen::PKCS_ED25519] {
        let g = generate_csr_with(&name, alg).unwrap();
        assert!(
            matches!(certify(&g.csr_der, &name), Err(CertifyError::KeyType(_))),
            "{alg:?}"
        );
    }
    // Garbage and a corrupted signature.
    assert!(matches!(
        certify(b"not a csr", &name),
        Err(CertifyError::MalformedCsr(_))
    ));
    let (_, mut csr) = generate_csr(&name).unwrap();
    let last = csr.len() - 1;
    csr[last] ^= 0x01;
    assert!(matches!(
        certify(&csr, &name),
        Err(CertifyError::MalformedCsr(_))
    ));
}

#[test]
fn leaf_lifetime_is_capped_by_the_issuer() {
    let (tmp, dir) = init_dir();
    rotate_issuer(tmp.path(), DEFAULT_TRUST_DOMAIN, Duration::from_secs(600)).unwrap();
    let issuer = dir.load_issuer().unwrap();
    let name = identity_name("web", "ns", DEFAULT_TRUST_DOMAIN).unwrap();
    let (_, csr) = generate_csr(&name).unwrap();
    let cert = issuer
        .certify(&csr, &name, DEFAULT_LEAF_LIFETIME, DEFAULT_CLOCK_SKEW)
        .unwrap();
    assert!(cert.valid_until <= issuer.not_after());
}

/// A real mTLS handshake over loopback TCP with two leaves from the CA,
/// using the crate's rustls glue, and a swap of the server certificate.
#[test]
fn mutual_tls_over_loopback_with_rotation() {
    let (_tmp, dir) = init_dir();
    let issuer = dir.load_issuer().unwrap();
    let roots = Arc::new(load_trust_anchors(&dir.read_trust_anchors_pem().unwrap()).unwrap());
    let leaf = |sa: &str| {
        let name = identity_name(sa, "ns", DEFAULT_TRUST_DOMAIN).unwrap();
        let (key, csr) = generate_csr(&name).unwrap();
        let c = issuer
            .certify(&csr, &name, DEFAULT_LEAF_LIFETIME, DEFAULT_CLOCK_SKEW)
            .unwrap();
        (name, certified_key(&key, &c.leaf_der, &c.chain).unwrap())
    };
    let (server_name, server_key) = leaf("server");
    let (_client_name, client_key) = leaf("client");

    let server_cert = Arc::new(RotatingCert::new());
    server_cert.set(server_key);
    let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        crypto_provider(),
    )
    .build()
    .unwrap();
    let server_cfg = Arc::new(
        rustls::ServerConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_client_cert_verifier(client_verifier)
            .with_cert_resolver(server_cert.clone()),
    );
    let client_cert = Arc::new(RotatingCert::new());
    client_cert.set(client_key);
    let mut client_cfg = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_cert_resolver(client_cert);
    // A resumed session would report the first certificate again.
    client_cfg.resumption = rustls::client::Resumption::disabled();
    let client_cfg = Arc::new(client_cfg);

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let mut peers = Vec::new();
        for _ in 0..2 {
            let (tcp, _) = listener.accept().unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let conn = rustls::ServerConnection::new(server_cfg.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).unwrap();
            let peer = tls.conn.peer_certificates().unwrap()[0].to_vec();
            peers.push(leaf_identity(&peer).unwrap());
            tls.write_all(b"pong").unwrap();
            tls.flush().unwrap();
        }
        peers
    });
    let mut seen_servers = Vec::new();
    for round in 0..2 {
        if round == 1 {
            // Rotate the server's certificate between connections.
            server_cert.set(leaf("server").1);
        }
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let sni = rustls::pki_types::ServerName::try_from(server_name.clone()).unwrap();
        let conn = rustls::ClientConnection::new(client_cfg.clone(), sni).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        tls.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pong");
        seen_servers.push(tls.conn.peer_certificates().unwrap()[0].to_vec());
    }
    let peers = server.join().unwrap();
    assert_eq!(
        peers,
        vec![identity_name("client", "ns", DEFAULT_TRUST_DOMAIN).unwrap(); 2]
    );
    assert!(seen_servers[0] != seen_servers[1], "rotation took effect");
}
