//! The key material `weft install` puts into the cluster: the mesh's trust
//! anchor and issuer (generated, or brought by the user and checked), and
//! the injector webhook's serving certificate.

use std::net::IpAddr;
use std::path::Path;
use std::time::SystemTime;

use anyhow::{bail, Context};
use weft_identity::rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use weft_inject::names;
use weft_inject::Values;

/// The identity service's CA material, as stored in the
/// `weft-identity-trust-roots` ConfigMap and `weft-identity-issuer` Secret.
pub struct IdentityMaterial {
    /// Trust anchor certificate(s), PEM: every proxy verifies peers with it.
    pub trust_anchors_pem: String,
    /// Issuer certificate (and any intermediates), PEM.
    pub issuer_cert_pem: String,
    /// Issuer private key, PEM.
    pub issuer_key_pem: String,
}

impl std::fmt::Debug for IdentityMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentityMaterial(..)")
    }
}

// === impl IdentityMaterial ===

impl IdentityMaterial {
    /// A fresh ECDSA P-256 trust anchor and an issuer signed by it, with the
    /// lifetimes of `identity.trustAnchorLifetime` and
    /// `identity.issuerLifetime`. The anchor's key is dropped here, never
    /// printed: whoever holds it can mint identities for the whole mesh, so
    /// operators who need to rotate the issuer later bring their own anchor.
    pub fn generate(values: &Values) -> anyhow::Result<Self> {
        let td = &values.identity.trust_domain;
        let anchor_lifetime = weft_identity::parse_duration(&values.identity.trust_anchor_lifetime)
            .context("identity.trustAnchorLifetime")?;
        let issuer_lifetime = weft_identity::parse_duration(&values.identity.issuer_lifetime)
            .context("identity.issuerLifetime")?;
        let anchor = weft_identity::generate_anchor(td, anchor_lifetime)
            .context("cannot generate the trust anchor")?;
        let issuer =
            weft_identity::generate_issuer(&anchor.cert_pem, &anchor.key_pem, td, issuer_lifetime)
                .context("cannot generate the issuer")?;
        Ok(Self {
            trust_anchors_pem: anchor.cert_pem,
            issuer_cert_pem: issuer.cert_pem,
            issuer_key_pem: issuer.key_pem,
        })
    }

    /// The user's own material, refused unless the controller could use
    /// it: the issuer must chain to the anchors, be valid now, and match
    /// its key ([`weft_identity::Issuer::from_pem`] checks all three).
    pub fn from_files(anchors: &Path, cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let material = Self {
            trust_anchors_pem: read(anchors, "--identity-trust-anchors-file")?,
            issuer_cert_pem: read(cert, "--identity-issuer-certificate-file")?,
            issuer_key_pem: read(key, "--identity-issuer-key-file")?,
        };
        weft_identity::parse_pem_certs(&material.trust_anchors_pem)
            .with_context(|| format!("--identity-trust-anchors-file {}", anchors.display()))?;
        weft_identity::Issuer::from_pem(
            &material.issuer_cert_pem,
            &material.issuer_key_pem,
            &material.trust_anchors_pem,
        )
        .with_context(|| {
            format!(
                "the issuer {} (key {}) cannot be used with the trust anchors {}",
                cert.display(),
                key.display(),
                anchors.display()
            )
        })?;
        Ok(material)
    }
}

fn read(path: &Path, flag: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("{flag}: cannot read {}", path.display()))
}

/// The injector webhook's serving certificate and the CA that signed it
/// (the MutatingWebhookConfiguration's `caBundle`).
pub struct WebhookTls {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The serving certificate, PEM.
    pub cert_pem: String,
    /// The serving certificate's private key, PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for WebhookTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookTls(..)")
    }
}

// === impl WebhookTls ===

impl WebhookTls {
    /// A fresh CA and a serving certificate for the injector Service's
    /// names (`weft-injector.weft.svc` and its fully qualified form), plus
    /// `external_host` (an IP or DNS name) when the API server calls the
    /// webhook by URL. Both ECDSA P-256, valid for `webhook.certLifetime`.
    ///
    /// The CA's key is dropped after signing: nothing else is ever signed
    /// with it, and a new install simply makes a new pair.
    pub fn generate(values: &Values, external_host: Option<&str>) -> anyhow::Result<Self> {
        let lifetime = weft_identity::parse_duration(&values.webhook.cert_lifetime)
            .context("webhook.certLifetime")?;
        let now = SystemTime::now();
        // Back-dated a little for API servers whose clocks lag ours.
        let not_before = now - std::time::Duration::from_secs(300);
        let Some(not_after) = now.checked_add(lifetime) else {
            bail!(
                "webhook.certLifetime {:?} is too large",
                values.webhook.cert_lifetime
            );
        };

        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .context("cannot generate the webhook CA key")?;
        let mut ca = CertificateParams::default();
        ca.distinguished_name = dn(&format!(
            "{}.{}.ca",
            names::INJECTOR_SERVICE,
            names::NAMESPACE
        ));
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca.not_before = not_before.into();
        ca.not_after = not_after.into();
        let ca_cert = ca
            .self_signed(&ca_key)
            .context("cannot sign the webhook CA")?;

        let service = format!("{}.{}.svc", names::INJECTOR_SERVICE, names::NAMESPACE);
        let mut leaf = CertificateParams::default();
        leaf.distinguished_name = dn(&service);
        leaf.subject_alt_names = vec![
            dns(&service)?,
            dns(&format!("{service}.{}", values.cluster_domain))?,
        ];
        if let Some(host) = external_host {
            let san = match host.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => dns(host)?,
            };
            if !leaf.subject_alt_names.contains(&san) {
                leaf.subject_alt_names.push(san);
            }
        }
        leaf.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf.not_before = not_before.into();
        leaf.not_after = not_after.into();
        leaf.use_authority_key_identifier_extension = true;
        let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .context("cannot generate the webhook key")?;
        let issuer = Issuer::new(ca, ca_key);
        let leaf_cert = leaf
            .signed_by(&leaf_key, &issuer)
            .context("cannot sign the webhook certificate")?;
        Ok(Self {
            ca_pem: ca_cert.pem(),
            cert_pem: leaf_cert.pem(),
            key_pem: leaf_key.serialize_pem(),
        })
    }
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn dns(name: &str) -> anyhow::Result<SanType> {
    Ok(SanType::DnsName(name.to_owned().try_into().with_context(
        || format!("{name:?} is not a valid DNS name for the webhook certificate"),
    )?))
}
