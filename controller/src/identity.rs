//! `io.linkerd.proxy.identity.Identity/Certify`: the CA's front door.
//!
//! A proxy sends its token, the identity it wants and a CSR. The identity
//! is derived from the token alone; the request must ask for exactly that
//! identity and the CSR must carry exactly that one DNS SAN and an ECDSA
//! P-256 key. Every refusal maps to one gRPC status and one log line that
//! says why:
//!
//! | status | when |
//! |---|---|
//! | `InvalidArgument` | identity not a valid name in this trust domain, empty/malformed CSR, CSR SAN ≠ identity, key not P-256 |
//! | `Unauthenticated` | token missing, malformed, forged, expired, or rejected by TokenReview |
//! | `FailedPrecondition` | token valid but not for this identity (SA `a` asking for `b`), or not a ServiceAccount |
//! | `Unavailable` | TokenReview could not be done (API unreachable, timeout, RBAC), or the issuer has expired |

use crate::auth::{AuthError, Authenticator};
use crate::issuer::IssuerStore;
use crate::metrics::Metrics;
use linkerd2_proxy_api::identity::identity_server::Identity;
use linkerd2_proxy_api::identity::{CertifyRequest, CertifyResponse};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};
use tonic::{Code, Request, Response, Status};
use weft_identity::{CertifyError, Name};

/// The identity service.
pub struct IdentityService {
    trust_domain: String,
    issuer: IssuerStore,
    auth: Arc<Authenticator>,
    leaf_lifetime: Duration,
    clock_skew: Duration,
    metrics: Metrics,
}

/// A refusal: the status to return and why.
struct Reject {
    code: Code,
    reason: String,
}

impl Reject {
    fn new(code: Code, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

/// The `result` label for a status code.
fn result_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::InvalidArgument => "invalid_argument",
        Code::Unauthenticated => "unauthenticated",
        Code::FailedPrecondition => "failed_precondition",
        Code::Unavailable => "unavailable",
        _ => "internal",
    }
}

impl IdentityService {
    /// A service issuing leaves valid for `leaf_lifetime` (back-dated by
    /// `clock_skew`) for identities in `trust_domain`.
    pub fn new(
        trust_domain: String,
        issuer: IssuerStore,
        auth: Arc<Authenticator>,
        leaf_lifetime: Duration,
        clock_skew: Duration,
        metrics: Metrics,
    ) -> Self {
        Self {
            trust_domain,
            issuer,
            auth,
            leaf_lifetime,
            clock_skew,
            metrics,
        }
    }

    async fn handle(&self, req: &CertifyRequest) -> Result<CertifyResponse, Reject> {
        let requested = Name::parse(&req.identity, &self.trust_domain)
            .map_err(|e| Reject::new(Code::InvalidArgument, e.to_string()))?;
        if req.certificate_signing_request.is_empty() {
            return Err(Reject::new(Code::InvalidArgument, "empty CSR"));
        }
        let token = std::str::from_utf8(&req.token)
            .map_err(|_| Reject::new(Code::Unauthenticated, "token is not UTF-8"))?;
        let subject = self.auth.authenticate(token).await.map_err(|e| match e {
            AuthError::Unauthenticated(m) => Reject::new(Code::Unauthenticated, m),
            AuthError::NotServiceAccount(m) => Reject::new(Code::FailedPrecondition, m),
            AuthError::Unavailable(m) => Reject::new(Code::Unavailable, m),
        })?;
        let entitled = Name::new(
            &subject.service_account,
            &subject.namespace,
            &self.trust_domain,
        )
        .map_err(|e| {
            Reject::new(
                Code::FailedPrecondition,
                format!("the token's ServiceAccount cannot form an identity: {e}"),
            )
        })?;
        if entitled != requested {
            return Err(Reject::new(
                Code::FailedPrecondition,
                format!(
                    "token is for {}/{} ({entitled}), not for the requested identity",
                    subject.namespace, subject.service_account
                ),
            ));
        }
        let issuer = self.issuer.current();
        let certified = issuer
            .certify(
                &req.certificate_signing_request,
                requested.as_str(),
                self.leaf_lifetime,
                self.clock_skew,
            )
            .map_err(|e| match e {
                CertifyError::Signing(_) => Reject::new(Code::Unavailable, e.to_string()),
                CertifyError::MalformedCsr(_)
                | CertifyError::KeyType(_)
                | CertifyError::SanMismatch { .. }
                | CertifyError::InvalidName(_) => Reject::new(Code::InvalidArgument, e.to_string()),
            })?;
        let valid_until = certified
            .valid_until
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Ok(CertifyResponse {
            leaf_certificate: certified.leaf_der,
            intermediate_certificates: certified.chain,
            valid_until: Some(prost_types::Timestamp {
                seconds: valid_until,
                nanos: 0,
            }),
        })
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn certify(
        &self,
        request: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "unknown".into());
        let req = request.into_inner();
        match self.handle(&req).await {
            Ok(rsp) => {
                self.metrics.certify_result(result_label(Code::Ok));
                tracing::info!(
                    identity = %req.identity,
                    %peer,
                    valid_until = rsp.valid_until.as_ref().map_or(0, |t| t.seconds),
                    "certified"
                );
                Ok(Response::new(rsp))
            }
            Err(rej) => {
                self.metrics.certify_result(result_label(rej.code));
                tracing::warn!(
                    identity = %req.identity,
                    %peer,
                    code = ?rej.code,
                    reason = %rej.reason,
                    "certify refused"
                );
                Err(Status::new(rej.code, rej.reason))
            }
        }
    }
}
