//! The certificate judgements of `weft check`, kept apart from the API
//! calls so they can be tested on certificates made on the spot: is a
//! certificate valid now, does it stay valid long enough, does a serving
//! certificate name the webhook's Service and chain to the caBundle the
//! API server uses, and do a pod's trust anchors equal the cluster's.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use weft_identity::{describe_cert, load_trust_anchors, parse_pem_certs, verify_leaf, CertInfo};

/// How long before expiry a certificate earns a `‼`, as in Linkerd.
pub const RENEW_WARNING: Duration = Duration::from_secs(60 * 24 * 60 * 60);

/// What a validity check found for one certificate (or a bundle).
#[derive(Debug, PartialEq, Eq)]
pub struct Validity {
    /// `Err(why)` when some certificate is not valid at the moment.
    pub now: Result<(), String>,
    /// `Err(why)` when some certificate stops being valid within
    /// [`RENEW_WARNING`] (or already has).
    pub soon: Result<(), String>,
}

/// Parses every certificate of `pem`, naming `what` in the error.
pub fn describe_pem(what: &str, pem: &str) -> Result<Vec<CertInfo>, String> {
    let certs = parse_pem_certs(pem).map_err(|e| format!("{what}: {e}"))?;
    certs
        .iter()
        .map(|der| describe_cert(der).map_err(|e| format!("{what}: {e}")))
        .collect()
}

/// Judges the validity period of each of `certs` at `now`; `what` names
/// them in messages ("trust anchor", "issuer certificate").
pub fn validity(what: &str, certs: &[CertInfo], now: SystemTime) -> Validity {
    let mut not_now = Vec::new();
    let mut soon = Vec::new();
    for cert in certs {
        let subject = &cert.subject;
        if now < cert.not_before {
            not_now.push(format!(
                "{what} {subject:?} is not valid before {}",
                rfc3339(cert.not_before)
            ));
        } else if now >= cert.not_after {
            not_now.push(format!(
                "{what} {subject:?} expired on {}",
                rfc3339(cert.not_after)
            ));
        }
        if now >= cert.not_after {
            soon.push(format!(
                "{what} {subject:?} expired on {}",
                rfc3339(cert.not_after)
            ));
        } else if cert.not_after.duration_since(now).unwrap_or_default() < RENEW_WARNING {
            soon.push(format!(
                "{what} {subject:?} will expire on {}",
                rfc3339(cert.not_after)
            ));
        }
    }
    let join = |v: Vec<String>| {
        if v.is_empty() {
            Ok(())
        } else {
            Err(v.join("\n"))
        }
    };
    Validity {
        now: join(not_now),
        soon: join(soon),
    }
}

/// Whether `san` (a certificate's DNS SAN, possibly `*.zone`) covers
/// `name`, as a TLS client matches them (case-insensitive, a wildcard
/// covers exactly one label).
pub fn san_covers(san: &str, name: &str) -> bool {
    let san = san.to_ascii_lowercase();
    let name = name.to_ascii_lowercase();
    match san.strip_prefix("*.") {
        Some(zone) => name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == zone),
        None => san == name,
    }
}

/// `Err(why)` unless the serving certificate (first of `certs`) has a SAN
/// covering `name`: an IP address SAN when `name` is an address (a webhook
/// `url:` such as `https://127.0.0.1:8443`, as TLS clients match it), else
/// a DNS SAN.
pub fn names(certs: &[CertInfo], name: &str) -> Result<(), String> {
    let Some(leaf) = certs.first() else {
        return Err("no certificate".into());
    };
    let covered = match name.parse::<std::net::IpAddr>() {
        Ok(ip) => leaf.ip_sans.contains(&ip),
        Err(_) => leaf.dns_sans.iter().any(|san| san_covers(san, name)),
    };
    if covered {
        Ok(())
    } else {
        let mut sans = leaf.dns_sans.clone();
        sans.extend(leaf.ip_sans.iter().map(|ip| ip.to_string()));
        Err(format!("the certificate is for {sans:?}, not {name:?}"))
    }
}

/// `Err(why)` unless the serving chain in `tls_crt_pem` verifies against
/// the CA certificates of `ca_bundle_pem` for `name`, exactly as the API
/// server's TLS client will check it.
pub fn chains_to_bundle(tls_crt_pem: &str, ca_bundle_pem: &str, name: &str) -> Result<(), String> {
    let roots = load_trust_anchors(ca_bundle_pem).map_err(|e| format!("caBundle: {e}"))?;
    let chain = parse_pem_certs(tls_crt_pem).map_err(|e| format!("serving certificate: {e}"))?;
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or_else(|| "serving certificate: empty".to_owned())?;
    let intermediates: Vec<Vec<u8>> = intermediates.iter().map(|c| c.to_vec()).collect();
    verify_leaf(Arc::new(roots), leaf, &intermediates, name).map_err(|e| e.to_string())
}

/// Whether two PEM bundles hold the same certificates (order and
/// formatting aside).
pub fn same_certificates(a_pem: &str, b_pem: &str) -> Result<bool, String> {
    let set = |pem: &str| -> Result<Vec<Vec<u8>>, String> {
        let mut ders: Vec<Vec<u8>> = parse_pem_certs(pem)
            .map_err(|e| e.to_string())?
            .iter()
            .map(|c| c.to_vec())
            .collect();
        ders.sort();
        ders.dedup();
        Ok(ders)
    };
    Ok(set(a_pem)? == set(b_pem)?)
}

/// `2026-12-01T21:30:00Z`, for messages; the raw seconds if formatting
/// fails (it cannot for certificate dates).
pub fn rfc3339(t: SystemTime) -> String {
    let dt = time::OffsetDateTime::from(t);
    dt.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| format!("{} (unix)", dt.unix_timestamp()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn info(not_before: SystemTime, not_after: SystemTime) -> CertInfo {
        CertInfo {
            subject: "CN=test".into(),
            issuer: "CN=test".into(),
            not_before,
            not_after,
            is_ca: true,
            dns_sans: vec![],
            ip_sans: vec![],
        }
    }

    #[test]
    fn validity_flags_expired_soon_and_future() {
        let now = SystemTime::now();
        let fine = validity("issuer", &[info(now - DAY, now + 365 * DAY)], now);
        assert_eq!(
            fine,
            Validity {
                now: Ok(()),
                soon: Ok(())
            }
        );

        let soon = validity("issuer", &[info(now - DAY, now + 10 * DAY)], now);
        assert_eq!(soon.now, Ok(()));
        assert!(soon.soon.unwrap_err().contains("will expire on"));

        let expired = validity("issuer", &[info(now - 9 * DAY, now - DAY)], now);
        assert!(expired.now.unwrap_err().contains("expired on"));
        assert!(expired.soon.is_err());

        let future = validity("issuer", &[info(now + DAY, now + 400 * DAY)], now);
        assert!(future.now.unwrap_err().contains("not valid before"));
        assert_eq!(future.soon, Ok(()));
    }

    #[test]
    fn an_address_is_matched_against_ip_sans() {
        let now = SystemTime::now();
        let mut leaf = info(now - DAY, now + DAY);
        leaf.dns_sans = vec!["weft-injector.weft.svc".into()];
        leaf.ip_sans = vec!["127.0.0.1".parse().unwrap()];
        assert_eq!(names(std::slice::from_ref(&leaf), "127.0.0.1"), Ok(()));
        assert_eq!(
            names(std::slice::from_ref(&leaf), "weft-injector.weft.svc"),
            Ok(())
        );
        let err = names(&[leaf], "10.0.0.1").unwrap_err();
        assert!(err.contains("\"127.0.0.1\""), "{err}");
    }

    #[test]
    fn wildcards_cover_one_label() {
        assert!(san_covers(
            "weft-injector.weft.svc",
            "WEFT-INJECTOR.weft.svc"
        ));
        assert!(san_covers("*.weft.svc", "weft-injector.weft.svc"));
        assert!(!san_covers("*.svc", "weft-injector.weft.svc"));
        assert!(!san_covers("*.weft.svc", "weft.svc"));
        assert!(!san_covers("weft-injector.weft", "weft-injector.weft.svc"));
    }

    #[test]
    fn generated_anchor_and_issuer_are_judged() {
        let anchor =
            weft_identity::generate_anchor("cluster.local", Duration::from_secs(3600)).unwrap();
        let issuer = weft_identity::generate_issuer(
            &anchor.cert_pem,
            &anchor.key_pem,
            "cluster.local",
            Duration::from_secs(1800),
        )
        .unwrap();
        let certs = describe_pem("issuer", &issuer.cert_pem).unwrap();
        let v = validity("issuer certificate", &certs, SystemTime::now());
        assert_eq!(v.now, Ok(()));
        assert!(v.soon.unwrap_err().contains("will expire on"));

        assert!(same_certificates(&anchor.cert_pem, &format!("\n{}", anchor.cert_pem)).unwrap());
        assert!(!same_certificates(&anchor.cert_pem, &issuer.cert_pem).unwrap());
        assert!(describe_pem("x", "not pem").is_err());
    }
}
