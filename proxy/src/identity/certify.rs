//! Obtaining and refreshing this proxy's certificate.
//!
//! The proxy generates a fresh ECDSA P-256 key in memory for every request
//! (the key never touches disk), sends a CSR with its ServiceAccount token
//! (re-read from its file each time, since Kubernetes rotates it) to the
//! controller's identity service, and installs the certificate it gets
//! back. It refreshes at 70% of the certificate's lifetime; failures are
//! retried with exponential backoff (0.5 s doubling to 60 s). While the
//! controller is unreachable the current certificate keeps serving until
//! it expires.
//!
//! The connection to the controller is always TLS, verified against the
//! trust anchors and the controller's identity name, so a token never
//! crosses the network in clear and never reaches an impostor.

use super::LocalIdentity;
use crate::config::IdentityConfig;
use crate::metrics::IdentityMetrics;
use linkerd2_proxy_api::identity::identity_client::IdentityClient;
use linkerd2_proxy_api::identity::CertifyRequest;
use std::time::{Duration, SystemTime};
use tonic::transport::Channel;

/// Share of a certificate's lifetime after which it is refreshed.
const REFRESH_AT: f64 = 0.7;
/// First retry delay after a failure.
const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// Longest retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Limit on one Certify call, connection included.
const CERTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why one certification attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum CertifyError {
    /// The token file could not be read.
    #[error("cannot read token file {path}: {source}")]
    Token {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The key or CSR could not be generated.
    #[error("cannot generate a CSR: {0}")]
    Csr(String),
    /// The controller refused or could not be reached.
    #[error("identity service: {0}")]
    Rpc(#[from] tonic::Status),
    /// The call took too long.
    #[error("identity service did not answer within {0:?}")]
    Timeout(Duration),
    /// The controller's answer is unusable.
    #[error("bad certificate from the identity service: {0}")]
    BadResponse(String),
}

/// Refreshes `identity` forever (spawn it). `metrics` records each attempt
/// and the current certificate's expiry.
pub async fn run(identity: LocalIdentity, config: IdentityConfig, metrics: IdentityMetrics) {
    let channel = crate::control::channel(
        &config.addr,
        &config.control_identity,
        identity.roots().clone(),
        Some(CERTIFY_TIMEOUT),
    );
    let mut client = IdentityClient::new(channel);
    let mut backoff = MIN_BACKOFF;
    loop {
        let wait = match certify_once(&mut client, &identity, &config).await {
            Ok(expiry) => {
                metrics.refreshed(true);
                let unix = expiry
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                metrics
                    .expiration
                    .set(i64::try_from(unix).unwrap_or(i64::MAX));
                backoff = MIN_BACKOFF;
                let left = expiry.duration_since(SystemTime::now()).unwrap_or_default();
                tracing::info!(identity = %identity.name(), valid_for = ?left, "certified");
                left.mul_f64(REFRESH_AT).max(MIN_BACKOFF)
            }
            Err(error) => {
                metrics.refreshed(false);
                tracing::warn!(%error, retry_in = ?backoff, "certificate refresh failed");
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// One Certify round trip; installs the certificate and returns its expiry.
async fn certify_once(
    client: &mut IdentityClient<Channel>,
    identity: &LocalIdentity,
    config: &IdentityConfig,
) -> Result<SystemTime, CertifyError> {
    let token = tokio::fs::read(&config.token_file)
        .await
        .map_err(|source| CertifyError::Token {
            path: config.token_file.display().to_string(),
            source,
        })?;
    let (key, csr) = weft_identity::generate_csr(identity.name())
        .map_err(|e| CertifyError::Csr(e.to_string()))?;
    let req = CertifyRequest {
        identity: identity.name().to_string(),
        token,
        certificate_signing_request: csr,
    };
    let rsp = tokio::time::timeout(CERTIFY_TIMEOUT, client.certify(req))
        .await
        .map_err(|_| CertifyError::Timeout(CERTIFY_TIMEOUT))??
        .into_inner();

    // Check what we were given exactly as a peer would, before using it.
    weft_identity::verify_leaf(
        identity.roots().clone(),
        &rsp.leaf_certificate,
        &rsp.intermediate_certificates,
        identity.name(),
    )
    .map_err(|e| CertifyError::BadResponse(e.to_string()))?;
    let expiry = rsp
        .valid_until
        .and_then(|t| {
            let secs = u64::try_from(t.seconds).ok()?;
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        })
        .ok_or_else(|| CertifyError::BadResponse("no valid_until".into()))?;
    let certified =
        weft_identity::certified_key(&key, &rsp.leaf_certificate, &rsp.intermediate_certificates)
            .map_err(|e| CertifyError::BadResponse(e.to_string()))?;
    identity.set_certificate(certified, expiry);
    Ok(expiry)
}
