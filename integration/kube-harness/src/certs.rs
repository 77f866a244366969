//! Throwaway X.509 material for the control plane and for tests.
//!
//! Every control plane gets its own CA, so parallel tests never trust each
//! other's servers. Tests that serve TLS themselves (an admission webhook, a
//! controller's API) make a [`TestCa`] of their own the same way.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

use crate::error::Result;

/// A certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct IssuedCert {
    /// The leaf certificate (PEM, one `CERTIFICATE` block).
    pub cert_pem: String,
    /// Its private key (PEM, PKCS#8 ECDSA P-256).
    pub key_pem: String,
}

/// A self-signed CA that issues server and client certificates, so tests can
/// stand up TLS endpoints the API server (or a client) verifies for real.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    key_pem: String,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    /// Makes a new CA whose subject is `common_name`.
    pub fn new(common_name: &str) -> Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn(common_name, None);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let key_pem = key.serialize_pem();
        let issuer = CertifiedIssuer::self_signed(params, key)?;
        Ok(Self { issuer, key_pem })
    }

    /// The CA certificate (PEM), for trust stores and webhook `caBundle`s.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA private key (PEM); kube-controller-manager signs CSRs with it.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Issues a TLS server certificate for `sans` (IP addresses or DNS names,
    /// e.g. `["127.0.0.1", "localhost"]`).
    pub fn issue_server(&self, sans: &[&str]) -> Result<IssuedCert> {
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let cn = sans.first().cloned().unwrap_or_else(|| "server".to_owned());
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name = dn(&cn, None);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// Issues a TLS client certificate. Kubernetes reads the user name from
    /// the common name and the group from the organization, so
    /// `issue_client("admin", Some("system:masters"))` is a cluster admin.
    pub fn issue_client(&self, common_name: &str, group: Option<&str>) -> Result<IssuedCert> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn(common_name, group);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    fn issue(&self, params: CertificateParams) -> Result<IssuedCert> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A ServiceAccount token signing key pair (ECDSA P-256, PEM).
pub(crate) struct SigningKey {
    pub(crate) private_pem: String,
    pub(crate) public_pem: String,
}

impl SigningKey {
    pub(crate) fn generate() -> Result<Self> {
        let key = KeyPair::generate()?;
        Ok(Self {
            private_pem: key.serialize_pem(),
            public_pem: key.public_key_pem(),
        })
    }
}

fn dn(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn.push(DnType::CommonName, common_name);
    dn
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_pem_material() {
        let ca = TestCa::new("test-ca").expect("ca");
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let server = ca
            .issue_server(&["127.0.0.1", "localhost"])
            .expect("server");
        assert!(server.cert_pem.contains("BEGIN CERTIFICATE"));
        assert!(server.key_pem.contains("PRIVATE KEY"));
        let client = ca
            .issue_client("admin", Some("system:masters"))
            .expect("client");
        assert!(client.cert_pem.contains("BEGIN CERTIFICATE"));
    }
}
