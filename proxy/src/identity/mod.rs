//! This proxy's mTLS identity.
//!
//! [`LocalIdentity`] holds the current certificate and key and hands out
//! rustls configurations that always present the *current* certificate:
//! the configurations are built once and resolve the certificate on every
//! handshake, so rotation never rebuilds them and never disturbs
//! established connections. [`certify`] obtains and refreshes the
//! certificate from the controller's identity service.
//!
//! Everything is TLS 1.3 only, and every peer certificate must chain to the
//! configured trust anchors: inbound requires a client certificate, and
//! outbound verifies that the server's certificate names exactly the
//! identity discovery (or configuration) said it should have.

pub mod certify;

use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::watch;
use weft_identity::RotatingCert;

/// Why the identity could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The trust anchors are unusable.
    #[error("trust anchors: {0}")]
    TrustAnchors(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// The ALPN protocol a Weft proxy offers when it carries **opaque TCP**
/// over mTLS to a peer proxy: the peer's inbound, seeing it negotiated,
/// forwards the decrypted bytes to the application at once instead of
/// detecting the protocol inside (which would wait the detect timeout for
/// a protocol where the server speaks first). Connections without ALPN
/// (HTTP between proxies) are detected as before.
pub const OPAQUE_ALPN: &[u8] = b"weft.io/opaque";

/// This proxy's identity: its name, trust anchors and current certificate.
#[derive(Clone, Debug)]
pub struct LocalIdentity {
    name: Arc<str>,
    cert: Arc<RotatingCert>,
    expiry: Arc<watch::Sender<Option<SystemTime>>>,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    opaque_client: Arc<ClientConfig>,
    roots: Arc<RootCertStore>,
}

/// The identity (only DNS SAN) in a peer's end-entity certificate.
pub fn peer_identity(cert: &CertificateDer<'_>) -> Option<Arc<str>> {
    weft_identity::leaf_identity(cert).ok().map(Arc::from)
}

// === impl LocalIdentity ===

impl LocalIdentity {
    /// An identity named `name` trusting `roots`, with no certificate yet.
    pub fn new(name: &str, roots: RootCertStore) -> Result<Self, IdentityError> {
        let roots = Arc::new(roots);
        let cert = Arc::new(RotatingCert::new());
        let provider = weft_identity::crypto_provider();
        let versions = [&rustls::version::TLS13];
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .map_err(|e| IdentityError::TrustAnchors(e.to_string()))?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(cert.clone());
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)?
            .with_root_certificates(roots.clone())
            .with_client_cert_resolver(cert.clone());
        // No session resumption: a resumed TLS 1.3 session skips certificate
        // verification, so an expired or no-longer-trusted peer would be let
        // back in. Connections are pooled, so full handshakes are rare.
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        client.resumption = rustls::client::Resumption::disabled();
        // A client offering ALPN must find one in common or the handshake
        // fails (RFC 7301), so the common HTTP ones are accepted too: only
        // `weft.io/opaque` changes what the inbound does after TLS.
        server.alpn_protocols = vec![OPAQUE_ALPN.to_vec(), b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut opaque_client = client.clone();
        opaque_client.alpn_protocols = vec![OPAQUE_ALPN.to_vec()];
        Ok(Self {
            name: Arc::from(name),
            cert,
            expiry: Arc::new(watch::channel(None).0),
            server: Arc::new(server),
            client: Arc::new(client),
            opaque_client: Arc::new(opaque_client),
            roots,
        })
    }

    /// This proxy's identity name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The trust anchors.
    pub fn roots(&self) -> &Arc<RootCertStore> {
        &self.roots
    }

    /// Server configuration for terminating inbound mTLS.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// Client configuration for outbound mTLS (presents our certificate).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client.clone()
    }

    /// Client configuration for opaque TCP over mTLS: the same, offering
    /// [`OPAQUE_ALPN`].
    pub fn opaque_client_config(&self) -> Arc<ClientConfig> {
        self.opaque_client.clone()
    }

    /// Installs a new certificate. New handshakes use it at once;
    /// established connections are untouched.
    pub fn set_certificate(&self, key: Arc<CertifiedKey>, expiry: SystemTime) {
        self.cert.set(key);
        self.expiry.send_replace(Some(expiry));
    }

    /// True once a certificate has been installed.
    pub fn is_ready(&self) -> bool {
        self.expiry.borrow().is_some()
    }

    /// Expiry of the current certificate, if any.
    pub fn expiry(&self) -> Option<SystemTime> {
        *self.expiry.borrow()
    }
}
