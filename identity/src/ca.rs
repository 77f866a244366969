//! The certificate authority: trust anchor and issuer generation, loading
//! an issuer, and signing proxies' CSRs.

use crate::{CertifyError, Error};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

/// Default leaf certificate lifetime.
pub const DEFAULT_LEAF_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Default allowance for clocks that run behind the CA's: leaves are valid
/// from this long before they were issued.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(20);
/// Default trust anchor lifetime (10 years).
pub const DEFAULT_ANCHOR_LIFETIME: Duration = Duration::from_secs(87_600 * 3600);
/// Default issuer lifetime (1 year).
pub const DEFAULT_ISSUER_LIFETIME: Duration = Duration::from_secs(8_760 * 3600);
/// CA certificates are back-dated this much, for nodes whose clocks lag.
const CA_BACKDATE: Duration = Duration::from_secs(3600);

/// OID of `id-ecPublicKey`.
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
/// OID of the P-256 curve (`prime256v1`).
const OID_P256: &str = "1.2.840.10045.3.1.7";

/// A signed leaf certificate and what a proxy needs with it.
#[derive(Clone, Debug)]
pub struct Certified {
    /// The leaf certificate, DER.
    pub leaf_der: Vec<u8>,
    /// Intermediate certificates (DER) from the leaf's issuer towards the
    /// trust anchor, anchor excluded. Sent in `CertifyResponse` and in TLS.
    pub chain: Vec<Vec<u8>>,
    /// The leaf's `notAfter`.
    pub valid_until: SystemTime,
}

/// What [`describe_cert`] reports about a certificate.
#[derive(Clone, Debug)]
pub struct CertInfo {
    /// Subject distinguished name, as text.
    pub subject: String,
    /// Issuer distinguished name, as text.
    pub issuer: String,
    /// `notBefore`.
    pub not_before: SystemTime,
    /// `notAfter`.
    pub not_after: SystemTime,
    /// Whether basicConstraints says CA.
    pub is_ca: bool,
    /// DNS subject alternative names.
    pub dns_sans: Vec<String>,
    /// IP address subject alternative names (a webhook called by
    /// `https://127.0.0.1:PORT` is checked against these, not DNS names).
    pub ip_sans: Vec<std::net::IpAddr>,
}

/// Reads the facts operators and tests care about from a DER certificate.
pub fn describe_cert(der: &[u8]) -> Result<CertInfo, Error> {
    let cert = parse_cert(der, "certificate")?;
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_before: to_system_time(cert.validity().not_before.timestamp()),
        not_after: to_system_time(cert.validity().not_after.timestamp()),
        is_ca: cert.is_ca(),
        dns_sans: cert_dns_sans(&cert),
        ip_sans: cert_ip_sans(&cert),
    })
}

fn parse_cert<'a>(der: &'a [u8], what: &'static str) -> Result<X509Certificate<'a>, Error> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(Error::Invalid {
            what,
            reason: "trailing bytes after the certificate".into(),
        }),
        Err(e) => Err(Error::Invalid {
            what,
            reason: format!("not an X.509 certificate: {e}"),
        }),
    }
}

fn cert_dns_sans(cert: &X509Certificate<'_>) -> Vec<String> {
    let mut out = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for n in &san.general_names {
                if let GeneralName::DNSName(d) = n {
                    out.push((*d).to_owned());
                }
            }
        }
    }
    out
}

fn cert_ip_sans(cert: &X509Certificate<'_>) -> Vec<std::net::IpAddr> {
    let mut out = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for n in &san.general_names {
                if let GeneralName::IPAddress(bytes) = n {
                    // 4 bytes for IPv4, 16 for IPv6; anything else is malformed
                    // and names no address.
                    if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                        out.push(std::net::IpAddr::from(v4));
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                        out.push(std::net::IpAddr::from(v6));
                    }
                }
            }
        }
    }
    out
}

fn to_system_time(unix: i64) -> SystemTime {
    if unix >= 0 {
        UNIX_EPOCH + Duration::from_secs(unix.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(unix.unsigned_abs())
    }
}

/// Parses every `CERTIFICATE` block of a PEM text (at least one).
pub fn parse_pem_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Invalid {
            what: "PEM certificates",
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(Error::Invalid {
            what: "PEM certificates",
            reason: "no CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
}

fn random_serial() -> Result<SerialNumber, Error> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Generate {
            what: "serial number",
            reason: "the system random generator failed".into(),
        })?;
    // Positive, and without a leading zero byte that DER would strip.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// PEM text of a freshly generated CA certificate and its key.
#[derive(Clone)]
pub struct CaPem {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key (PKCS#8), PEM.
    pub key_pem: String,
    /// The certificate's `notAfter`.
    pub not_after: SystemTime,
}

impl std::fmt::Debug for CaPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaPem")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

fn ca_params(
    cn: String,
    path_len: Option<u8>,
    lifetime: Duration,
) -> Result<CertificateParams, Error> {
    let now = SystemTime::now();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = (now - CA_BACKDATE).into();
    params.not_after = now
        .checked_add(lifetime)
        .ok_or(Error::Duration {
            value: format!("{lifetime:?}"),
            reason: "too large",
        })?
        .into();
    params.serial_number = Some(random_serial()?);
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn gen_err(what: &'static str) -> impl Fn(rcgen::Error) -> Error {
    move |e| Error::Generate {
        what,
        reason: e.to_string(),
    }
}

/// Generates a self-signed ECDSA P-256 trust anchor, CN `root.weft.TRUST_DOMAIN`.
pub fn generate_anchor(trust_domain: &str, lifetime: Duration) -> Result<CaPem, Error> {
    crate::name::check_trust_domain(trust_domain)?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(gen_err("trust anchor key"))?;
    let mut params = ca_params(format!("root.weft.{trust_domain}"), None, lifetime)?;
    params.use_authority_key_identifier_extension = false;
    let not_after = SystemTime::from(params.not_after);
    let cert = params
        .self_signed(&key)
        .map_err(gen_err("trust anchor certificate"))?;
    Ok(CaPem {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after,
    })
}

/// Generates an ECDSA P-256 issuer CA (pathlen 0, CN
/// `identity.weft.TRUST_DOMAIN`) signed by the anchor given as PEM.
pub fn generate_issuer(
    anchor_cert_pem: &str,
    anchor_key_pem: &str,
    trust_domain: &str,
    lifetime: Duration,
) -> Result<CaPem, Error> {
    crate::name::check_trust_domain(trust_domain)?;
    let anchor_key = KeyPair::from_pem(anchor_key_pem).map_err(|e| Error::Invalid {
        what: "trust anchor key",
        reason: e.to_string(),
    })?;
    let anchor_der =
        parse_pem_certs(anchor_cert_pem)?
            .into_iter()
            .next()
            .ok_or(Error::Invalid {
                what: "trust anchor certificate",
                reason: "empty".into(),
            })?;
    let anchor_cert = parse_cert(&anchor_der, "trust anchor certificate")?;
    if anchor_cert.public_key().raw != anchor_key.subject_public_key_info().as_slice() {
        return Err(Error::Invalid {
            what: "trust anchor key",
            reason: "does not match the trust anchor certificate".into(),
        });
    }
    let anchor_not_after = to_system_time(anchor_cert.validity().not_after.timestamp());
    let anchor =
        rcgen::Issuer::from_ca_cert_der(&anchor_der, anchor_key).map_err(|e| Error::Invalid {
            what: "trust anchor certificate",
            reason: e.to_string(),
        })?;
    let key =
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err("issuer key"))?;
    let mut params = ca_params(format!("identity.weft.{trust_domain}"), Some(0), lifetime)?;
    // An issuer outliving its anchor would only produce unverifiable leaves.
    if SystemTime::from(params.not_after) > anchor_not_after {
        params.not_after = anchor_not_after.into();
    }
    let not_after = SystemTime::from(params.not_after);
    let cert = params
        .signed_by(&key, &anchor)
        .map_err(gen_err("issuer certificate"))?;
    Ok(CaPem {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after,
    })
}

/// A loaded issuer: the CA that signs proxies' leaf certificates.
pub struct Issuer {
    signer: rcgen::Issuer<'static, KeyPair>,
    chain: Vec<Vec<u8>>,
    subject: String,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("subject", &self.subject)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// Loads an issuer from PEM text and checks it: `cert_pem` starts with
    /// the issuer's CA certificate (optionally followed by intermediates up
    /// to, not including, the anchor), `key_pem` is its private key, and the
    /// chain must verify to one of the certificates in `anchors_pem` and be
    /// currently valid.
    pub fn from_pem(cert_pem: &str, key_pem: &str, anchors_pem: &str) -> Result<Self, Error> {
        Self::from_pem_at(cert_pem, key_pem, anchors_pem, SystemTime::now())
    }

    fn from_pem_at(
        cert_pem: &str,
        key_pem: &str,
        anchors_pem: &str,
        now: SystemTime,
    ) -> Result<Self, Error> {
        let invalid = |reason: String| Error::Invalid {
            what: "issuer",
            reason,
        };
        let certs = parse_pem_certs(cert_pem)?;
        let anchors = parse_pem_certs(anchors_pem)?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| invalid(format!("issuer key: {e}")))?;
        let parsed = certs
            .iter()
            .map(|c| parse_cert(c, "issuer certificate"))
            .collect::<Result<Vec<_>, _>>()?;
        let parsed_anchors = anchors
            .iter()
            .map(|c| parse_cert(c, "trust anchor certificate"))
            .collect::<Result<Vec<_>, _>>()?;
        let issuer = parsed
            .first()
            .ok_or_else(|| invalid("no issuer certificate".into()))?;
        if !issuer.is_ca() {
            return Err(invalid(
                "the issuer certificate is not a CA (basicConstraints cA=false)".into(),
            ));
        }
        if issuer.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(invalid(
                "the issuer key does not match the issuer certificate".into(),
            ));
        }
        for (i, c) in parsed.iter().enumerate() {
            let not_before = to_system_time(c.validity().not_before.timestamp());
            let not_after = to_system_time(c.validity().not_after.timestamp());
            if now < not_before {
                return Err(invalid(format!(
                    "certificate {i} ({}) is not valid before {}",
                    c.subject(),
                    c.validity().not_before
                )));
            }
            if now >= not_after {
                return Err(invalid(format!(
                    "certificate {i} ({}) expired at {}",
                    c.subject(),
                    c.validity().not_after
                )));
            }
        }
        // Each certificate is signed by the next; the last by an anchor.
        for pair in parsed.windows(2) {
            pair[0]
                .verify_signature(Some(pair[1].public_key()))
                .map_err(|e| {
                    invalid(format!(
                        "{} is not signed by {}: {e}",
                        pair[0].subject(),
                        pair[1].subject()
                    ))
                })?;
        }
        let top = parsed.last().unwrap_or(issuer);
        let anchored = parsed_anchors.iter().any(|a| {
            a.subject() == top.issuer() && top.verify_signature(Some(a.public_key())).is_ok()
        });
        if !anchored {
            return Err(invalid(format!(
                "{} (issued by {}) does not chain to the trust anchor",
                top.subject(),
                top.issuer()
            )));
        }
        let subject = issuer.subject().to_string();
        let not_before = to_system_time(issuer.validity().not_before.timestamp());
        let not_after = parsed
            .iter()
            .map(|c| to_system_time(c.validity().not_after.timestamp()))
            .min()
            .unwrap_or(now);
        let signer = rcgen::Issuer::from_ca_cert_der(&certs[0], key)
            .map_err(|e| invalid(format!("issuer certificate: {e}")))?;
        Ok(Self {
            signer,
            chain: certs.iter().map(|c| c.to_vec()).collect(),
            subject,
            not_before,
            not_after,
        })
    }

    /// The issuer's subject, for logs.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The issuer certificate's `notBefore`.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// The earliest `notAfter` of the issuer chain: no leaf outlives it.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The issuer certificate (DER) followed by any intermediates.
    pub fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// Signs `csr_der` for `expected_name`: the CSR must parse, carry a
    /// valid self-signature, an ECDSA P-256 key and exactly one DNS SAN
    /// equal to `expected_name`. The leaf is valid from `now - clock_skew`
    /// to `now + lifetime` (capped at the issuer's expiry), is not a CA, and
    /// has serverAuth + clientAuth EKUs and the name as CN and DNS SAN.
    pub fn certify(
        &self,
        csr_der: &[u8],
        expected_name: &str,
        lifetime: Duration,
        clock_skew: Duration,
    ) -> Result<Certified, CertifyError> {
        self.certify_at(
            csr_der,
            expected_name,
            lifetime,
            clock_skew,
            SystemTime::now(),
        )
    }

    /// [`certify`](Self::certify) as of `now`.
    pub fn certify_at(
        &self,
        csr_der: &[u8],
        expected_name: &str,
        lifetime: Duration,
        clock_skew: Duration,
        now: SystemTime,
    ) -> Result<Certified, CertifyError> {
        let public_key = check_csr(csr_der, expected_name)?;
        let not_after = now
            .checked_add(lifetime)
            .unwrap_or(self.not_after)
            .min(self.not_after);
        if not_after <= now {
            return Err(CertifyError::Signing(format!(
                "the issuer {} has expired",
                self.subject
            )));
        }
        let sign_err = |e: rcgen::Error| CertifyError::Signing(e.to_string());
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, expected_name);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::DnsName(
            expected_name
                .to_owned()
                .try_into()
                .map_err(|e: rcgen::Error| CertifyError::InvalidName(e.to_string()))?,
        )];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = now.checked_sub(clock_skew).unwrap_or(now).into();
        params.not_after = not_after.into();
        params.serial_number =
            Some(random_serial().map_err(|e| CertifyError::Signing(e.to_string()))?);
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&public_key, &self.signer)
            .map_err(sign_err)?;
        // Whole seconds, as encoded in the certificate.
        let valid_until = to_system_time(time::OffsetDateTime::from(not_after).unix_timestamp());
        Ok(Certified {
            leaf_der: cert.der().to_vec(),
            chain: self.chain.clone(),
            valid_until,
        })
    }
}

/// Validates a CSR for `expected_name` and returns its public key.
fn check_csr(
    csr_der: &[u8],
    expected_name: &str,
) -> Result<rcgen::SubjectPublicKeyInfo, CertifyError> {
    let csr = match X509CertificationRequest::from_der(csr_der) {
        Ok(([], csr)) => csr,
        Ok(_) => {
            return Err(CertifyError::MalformedCsr(
                "trailing bytes after the CSR".into(),
            ))
        }
        Err(e) => return Err(CertifyError::MalformedCsr(e.to_string())),
    };
    let spki = &csr.certification_request_info.subject_pki;
    let alg = spki.algorithm.algorithm.to_id_string();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    if alg != OID_EC_PUBLIC_KEY || curve.as_deref() != Some(OID_P256) {
        let found = match (alg.as_str(), curve) {
            (OID_EC_PUBLIC_KEY, Some(c)) => format!("EC key on curve {c}"),
            ("1.2.840.113549.1.1.1", _) => "RSA".to_owned(),
            ("1.3.101.112", _) => "Ed25519".to_owned(),
            (other, _) => format!("key algorithm {other}"),
        };
        return Err(CertifyError::KeyType(found));
    }
    csr.verify_signature()
        .map_err(|e| CertifyError::MalformedCsr(format!("self-signature does not verify: {e}")))?;
    let mut sans = Vec::new();
    if let Some(exts) = csr.requested_extensions() {
        for ext in exts {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for n in &san.general_names {
                    sans.push(match n {
                        GeneralName::DNSName(d) => (*d).to_owned(),
                        other => format!("{other}"),
                    });
                }
            }
        }
    }
    if sans.len() != 1 || sans[0] != expected_name {
        return Err(CertifyError::SanMismatch {
            expected: expected_name.to_owned(),
            found: sans,
        });
    }
    let public_key = rcgen::SubjectPublicKeyInfo::from_der(spki.raw)
        .map_err(|e| CertifyError::KeyType(e.to_string()))?;
    if public_key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
        return Err(CertifyError::KeyType("not P-256".into()));
    }
    Ok(public_key)
}
