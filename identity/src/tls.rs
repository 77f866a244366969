//! rustls glue: trust stores from the anchor PEM, a certified key from a
//! `Certify` answer, a resolver whose certificate can be swapped while
//! connections keep running, and chain verification.

use crate::ca::{describe_cert, parse_pem_certs};
use crate::Error;
use rustls::client::danger::ServerCertVerifier;
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, SignatureScheme};
use std::sync::{Arc, RwLock};

/// The crypto provider every Weft TLS config uses (ring), named explicitly
/// so a process never depends on a process-wide default.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A root store holding every certificate of the trust anchor PEM
/// (`ca.crt` / `WEFT_PROXY_TRUST_ANCHORS`).
pub fn load_trust_anchors(pem: &str) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for cert in parse_pem_certs(pem)? {
        roots.add(cert).map_err(|e| Error::Invalid {
            what: "trust anchor",
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// A rustls certified key from a PKCS#8 private key (as made by
/// [`generate_csr`](crate::generate_csr)), the leaf and its intermediates
/// (as returned by `Certify`). Fails if the key does not match the leaf.
pub fn certified_key(
    key_pkcs8_der: &[u8],
    leaf_der: &[u8],
    chain: &[Vec<u8>],
) -> Result<Arc<CertifiedKey>, Error> {
    let mut certs = Vec::with_capacity(1 + chain.len());
    certs.push(CertificateDer::from(leaf_der.to_vec()));
    certs.extend(chain.iter().map(|c| CertificateDer::from(c.clone())));
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8_der.to_vec()));
    CertifiedKey::from_der(certs, key, &crypto_provider())
        .map(Arc::new)
        .map_err(|e| Error::Invalid {
            what: "certified key",
            reason: e.to_string(),
        })
}

/// The identity a leaf certificate names: its only DNS SAN. Used to label
/// a peer (`client_id` / `server_id`).
pub fn leaf_identity(cert_der: &[u8]) -> Result<String, Error> {
    let info = describe_cert(cert_der)?;
    match info.dns_sans.as_slice() {
        [one] => Ok(one.clone()),
        other => Err(Error::Invalid {
            what: "leaf certificate",
            reason: format!("expected exactly one DNS SAN, found {other:?}"),
        }),
    }
}

/// Verifies that `leaf_der` (with `chain`) chains to `roots`, is valid now,
/// allows serverAuth and names `name`, exactly as a TLS client would.
pub fn verify_leaf(
    roots: Arc<RootCertStore>,
    leaf_der: &[u8],
    chain: &[Vec<u8>],
    name: &str,
) -> Result<(), Error> {
    let invalid = |reason: String| Error::Invalid {
        what: "certificate chain",
        reason,
    };
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, crypto_provider())
        .build()
        .map_err(|e| invalid(e.to_string()))?;
    let server_name =
        ServerName::try_from(name.to_owned()).map_err(|e| invalid(format!("{name:?}: {e}")))?;
    let intermediates: Vec<CertificateDer<'_>> = chain
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    verifier
        .verify_server_cert(
            &CertificateDer::from(leaf_der),
            &intermediates,
            &server_name,
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
        .map_err(|e| invalid(e.to_string()))
}

/// A certificate that can be replaced at any time: hand it to a rustls
/// `ServerConfig` (`with_cert_resolver`) or `ClientConfig`
/// (`with_client_cert_resolver`); new handshakes use the newest
/// certificate, established connections are untouched.
#[derive(Debug, Default)]
pub struct RotatingCert {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl RotatingCert {
    /// An empty resolver: handshakes fail (server) or go without a client
    /// certificate (client) until [`set`](Self::set) is called.
    pub fn new() -> Self {
        Self::default()
    }

    /// Installs a new certificate for subsequent handshakes.
    pub fn set(&self, key: Arc<CertifiedKey>) {
        let mut guard = match self.current.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = Some(key);
    }

    /// The certificate in use, if any.
    pub fn get(&self) -> Option<Arc<CertifiedKey>> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl ResolvesServerCert for RotatingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.get()
    }
}

impl ResolvesClientCert for RotatingCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.get()
    }

    fn has_certs(&self) -> bool {
        self.get().is_some()
    }
}
