//! Errors of the identity primitives.
//!
//! Three families, because their callers react differently: [`Error`] for
//! files, names and key material (an operator fixes them), [`TokenError`]
//! for tokens (a caller gets `Unauthenticated`), and [`CertifyError`] for
//! certificate requests (a caller gets `InvalidArgument`, or the CA itself
//! is at fault).

use std::path::PathBuf;

/// Failures reading, writing or interpreting identity material.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An identity name, service account, namespace or trust domain is not
    /// made of valid DNS-1123 labels.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        /// Which part was invalid ("service account", "trust domain", ...).
        what: &'static str,
        /// The offending value.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file exists and `--force` was not given.
    #[error("{} already exists (use --force to overwrite)", path.display())]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// A file's content is not what it should be (bad PEM, wrong key type,
    /// certificate that is not a CA, issuer not signed by the anchor...).
    #[error("{}: {reason}", path.display())]
    BadFile {
        /// The file at fault (or the identity directory when it is the
        /// combination of files that is wrong).
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Certificate or key material given in memory is invalid.
    #[error("{what}: {reason}")]
    Invalid {
        /// What was being interpreted.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Generating keys or certificates failed.
    #[error("generating {what}: {reason}")]
    Generate {
        /// What was being generated.
        what: &'static str,
        /// The underlying error.
        reason: String,
    },
    /// A duration flag could not be parsed.
    #[error("invalid duration {value:?}: {reason}")]
    Duration {
        /// The text given.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },
}

impl Error {
    /// Builds a closure turning an `io::Error` into [`Error::Io`] for `path`.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }

    /// A [`Error::BadFile`] for `path`.
    pub(crate) fn bad_file(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        Self::BadFile {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}

/// Why a file-mode token was refused. Every variant means the caller is not
/// authenticated; they are distinct so logs say why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token is not in the expected format at all.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The token is well-formed but its signature does not match this
    /// controller's `token.key` (forged, tampered, or minted for another
    /// identity directory).
    #[error("token signature does not match the token key")]
    BadSignature,
    /// The token was valid but has expired.
    #[error("token expired at {expired_at} (unix seconds)")]
    Expired {
        /// Expiry time in seconds since the Unix epoch.
        expired_at: u64,
    },
}

/// Why a certificate signing request was refused (or could not be served).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertifyError {
    /// The CSR is not valid DER, or its self-signature does not verify.
    #[error("malformed CSR: {0}")]
    MalformedCsr(String),
    /// The CSR's public key is not ECDSA P-256.
    #[error("CSR key must be ECDSA P-256, got {0}")]
    KeyType(String),
    /// The CSR does not carry exactly one DNS SAN equal to the identity.
    #[error("CSR must carry exactly one DNS SAN {expected:?}, it has {found:?}")]
    SanMismatch {
        /// The identity the caller is entitled to.
        expected: String,
        /// The subject alternative names found in the CSR.
        found: Vec<String>,
    },
    /// The requested identity is not a valid name.
    #[error("invalid identity: {0}")]
    InvalidName(String),
    /// Signing failed: a fault of the CA, not of the request.
    #[error("signing failed: {0}")]
    Signing(String),
}
