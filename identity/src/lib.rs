//! `weft-identity`: the identity primitives shared by `weft-controller`
//! (the CA), the `weft` CLI (making CA material and tokens) and
//! `weft-proxy` (asking for and using certificates). One job: names, CA
//! material, tokens, CSRs, signing, and rustls glue. No networking.
//!
//! # API (what the other crates code against)
//!
//! Names (`SA.NS.serviceaccount.identity.weft.TRUST_DOMAIN`):
//! - `const DEFAULT_TRUST_DOMAIN: &str = "cluster.local"`
//! - `struct Name` — `Name::new(sa, ns, td) -> Result<Name, Error>`,
//!   `Name::parse(full, td) -> Result<Name, Error>`, `Name::controller(td)`,
//!   `.as_str()`, `.service_account()`, `.namespace()`, `.trust_domain()`, `Display`
//! - `fn identity_name(sa: &str, ns: &str, trust_domain: &str) -> Result<String, Error>`
//! - `fn controller_identity(trust_domain: &str) -> String` =
//!   `weft-controller.weft.serviceaccount.identity.weft.TRUST_DOMAIN`
//!
//! Proxy side:
//! - `fn generate_csr(name: &str) -> Result<(Vec<u8> /*key PKCS#8 DER*/, Vec<u8> /*CSR DER*/), Error>`
//!   — ECDSA P-256 key in memory, CSR with CN = name and exactly one DNS SAN = name.
//! - `fn load_trust_anchors(pem: &str) -> Result<rustls::RootCertStore, Error>`
//! - `fn certified_key(key_pkcs8_der: &[u8], leaf_der: &[u8], chain: &[Vec<u8>]) -> Result<Arc<rustls::sign::CertifiedKey>, Error>`
//!   — from `generate_csr`'s key and a `CertifyResponse` (`leaf_certificate`,
//!   `intermediate_certificates`).
//! - `struct RotatingCert` — `new()`, `set(Arc<CertifiedKey>)`, `get()`;
//!   implements rustls `ResolvesServerCert` and `ResolvesClientCert`, so a
//!   refresh swaps the certificate for new handshakes only.
//! - `fn leaf_identity(cert_der: &[u8]) -> Result<String, Error>` — the
//!   peer's identity (its only DNS SAN), for `client_id`/`server_id`.
//! - `fn verify_leaf(roots: Arc<RootCertStore>, leaf_der, chain: &[Vec<u8>], name: &str) -> Result<(), Error>`
//! - `fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider>` (ring)
//!
//! Identity directory (fixed layout, see [`dir`]): `ca.crt`, `ca.key`,
//! `issuer.crt`, `issuer.key`, `token.key`.
//! - `struct IdentityDir` — `new(path)`, `ca_crt()`, `ca_key()`,
//!   `issuer_crt()`, `issuer_key()`, `token_key()` (paths),
//!   `read_trust_anchors_pem() -> Result<String>`, `load_issuer() -> Result<Issuer>`,
//!   `read_issuer_files() -> Result<IssuerFiles>`, `load_issuer_from(&IssuerFiles)`,
//!   `load_token_key() -> Result<TokenKey>`. Errors name the file.
//! - `fn init(dir: &Path, opts: &InitOptions) -> Result<InitOutcome, Error>`
//!   (`weft identity init`; refuses to overwrite unless `opts.force`; keys 0600)
//! - `fn rotate_issuer(dir: &Path, trust_domain: &str, lifetime: Duration) -> Result<SystemTime, Error>`
//! - `fn generate_anchor(td, lifetime) -> Result<CaPem, Error>`,
//!   `fn generate_issuer(anchor_cert_pem, anchor_key_pem, td, lifetime) -> Result<CaPem, Error>`,
//!   `fn write_issuer(&IdentityDir, &CaPem) -> Result<(), Error>`
//!
//! File-mode tokens (`weft1.<payload>.<hmac>`, HMAC-SHA256 with `token.key`):
//! - `struct TokenKey` — `load(path)`, `from_file_text(text)`, `from_bytes(b)`, `generate()`
//! - `fn mint_token(key: &TokenKey, ns: &str, sa: &str, ttl: Duration) -> Result<String, Error>`
//! - `fn mint_token_until(key, ns, sa, expires_at: SystemTime) -> Result<String, Error>`
//! - `fn verify_token(key: &TokenKey, token: &str) -> Result<(String /*ns*/, String /*sa*/), TokenError>`
//!   — `TokenError::{Malformed, BadSignature, Expired}`
//!
//! Signing (controller side):
//! - `struct Issuer` — `Issuer::from_pem(cert_pem, key_pem, anchors_pem)`
//!   (checks CA, key match, validity, chain to the anchor),
//!   `certify(csr_der: &[u8], expected_name: &str, lifetime: Duration, clock_skew: Duration) -> Result<Certified, CertifyError>`,
//!   `not_after()`, `subject()`, `chain()`.
//! - `struct Certified { leaf_der: Vec<u8>, chain: Vec<Vec<u8>>, valid_until: SystemTime }`
//! - `CertifyError::{MalformedCsr, KeyType, SanMismatch, InvalidName, Signing}`
//! - `DEFAULT_LEAF_LIFETIME` (24 h), `DEFAULT_CLOCK_SKEW` (20 s),
//!   `DEFAULT_ANCHOR_LIFETIME` (87600 h), `DEFAULT_ISSUER_LIFETIME` (8760 h)
//!
//! Misc: `parse_duration("24h" | "20s" | "1h30m" | "500ms" | "90")`, `format_duration`,
//! `describe_cert(der) -> CertInfo` (subject, validity, CA flag, DNS and IP SANs).

pub mod ca;
mod csr;
pub mod dir;
mod duration;
mod error;
mod name;
mod tls;
mod token;

pub use ca::{
    describe_cert, generate_anchor, generate_issuer, parse_pem_certs, CaPem, CertInfo, Certified,
    Issuer, DEFAULT_ANCHOR_LIFETIME, DEFAULT_CLOCK_SKEW, DEFAULT_ISSUER_LIFETIME,
    DEFAULT_LEAF_LIFETIME,
};
pub use csr::{csr_for_key, generate_csr, generate_csr_with, GeneratedCsr};
pub use dir::{
    init, rotate_issuer, write_issuer, IdentityDir, InitOptions, InitOutcome, IssuerFiles,
};
pub use duration::{format_duration, parse_duration};
pub use error::{CertifyError, Error, TokenError};
pub use name::{
    check_label, check_trust_domain, controller_identity, identity_name, Name,
    CONTROLLER_NAMESPACE, CONTROLLER_SERVICE_ACCOUNT, DEFAULT_TRUST_DOMAIN, IDENTITY_INFIX,
};
pub use tls::{
    certified_key, crypto_provider, leaf_identity, load_trust_anchors, verify_leaf, RotatingCert,
};
pub use token::{
    mint_token, mint_token_until, verify_token, verify_token_at, TokenClaims, TokenKey,
    TOKEN_PREFIX,
};

/// Re-exported so users can name key algorithms (tests, `generate_csr_with`)
/// without depending on rcgen's version themselves.
pub use rcgen;
