//! The proxy's side of certification: a fresh key and a CSR naming it.

use crate::Error;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

/// A private key and the CSR made with it.
#[derive(Clone)]
pub struct GeneratedCsr {
    /// The private key, PKCS#8 DER. Keep it in memory only.
    pub key_pkcs8_der: Vec<u8>,
    /// The certificate signing request, DER, to send in `CertifyRequest`.
    pub csr_der: Vec<u8>,
}

impl std::fmt::Debug for GeneratedCsr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedCsr")
            .field("csr_der", &self.csr_der.len())
            .finish_non_exhaustive()
    }
}

/// Generates an ECDSA P-256 key in memory and a CSR whose subject CN and
/// only DNS SAN are `name`. Returns `(key PKCS#8 DER, CSR DER)`.
pub fn generate_csr(name: &str) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let g = generate_csr_with(name, &rcgen::PKCS_ECDSA_P256_SHA256)?;
    Ok((g.key_pkcs8_der, g.csr_der))
}

/// Like [`generate_csr`] with another key algorithm. Exists so tests can
/// check that the CA refuses anything but P-256.
pub fn generate_csr_with(
    name: &str,
    alg: &'static rcgen::SignatureAlgorithm,
) -> Result<GeneratedCsr, Error> {
    let gen = |reason: rcgen::Error| Error::Generate {
        what: "certificate signing request",
        reason: reason.to_string(),
    };
    let key = KeyPair::generate_for(alg).map_err(gen)?;
    csr_for_key(&key, &[name]).map(|csr_der| GeneratedCsr {
        key_pkcs8_der: key.serialize_der(),
        csr_der,
    })
}

/// A CSR signed by `key` with these DNS SANs (the first is also the CN).
/// Public for tests that need malformed requests (two SANs, none).
pub fn csr_for_key(key: &KeyPair, dns_sans: &[&str]) -> Result<Vec<u8>, Error> {
    let gen = |reason: rcgen::Error| Error::Generate {
        what: "certificate signing request",
        reason: reason.to_string(),
    };
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if let Some(first) = dns_sans.first() {
        dn.push(DnType::CommonName, *first);
    }
    params.distinguished_name = dn;
    params.subject_alt_names = dns_sans
        .iter()
        .map(|s| {
            (*s).to_owned()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|e: rcgen::Error| gen(e))
        })
        .collect::<Result<_, _>>()?;
    let csr = params.serialize_request(key).map_err(gen)?;
    Ok(csr.der().to_vec())
}
