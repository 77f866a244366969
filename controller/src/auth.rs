//! Who is asking: turning a `CertifyRequest.token` into a ServiceAccount.
//!
//! In cluster mode the Kubernetes API decides (TokenReview: audience
//! `identity.l5d.io` first, then the API server's default audience, for
//! proxies that mount the default ServiceAccount token). In file mode the
//! token must be one minted by `weft identity token` with this identity
//! directory's `token.key`.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::PostParams;
use kube::Api;
use std::time::Duration;
use weft_identity::{verify_token, TokenError, TokenKey};

/// The audience proxies request for their identity token (as in Linkerd).
pub const TOKEN_AUDIENCE: &str = "identity.l5d.io";

/// Upper bound on one TokenReview round trip.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// The ServiceAccount a token speaks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    /// Namespace.
    pub namespace: String,
    /// ServiceAccount name.
    pub service_account: String,
}

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token is not valid: the caller is not authenticated.
    #[error("{0}")]
    Unauthenticated(String),
    /// The token is valid but does not name a ServiceAccount.
    #[error("{0}")]
    NotServiceAccount(String),
    /// The authority could not be asked (API server down, timeout, RBAC).
    #[error("{0}")]
    Unavailable(String),
}

/// How tokens are checked.
pub enum Authenticator {
    /// File mode: HMAC tokens signed with the identity directory's key.
    File(TokenKey),
    /// Cluster mode: Kubernetes TokenReview.
    Kube(kube::Client),
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(_) => f.write_str("Authenticator::File"),
            Self::Kube(_) => f.write_str("Authenticator::Kube"),
        }
    }
}

impl Authenticator {
    /// `file` or `kubernetes`, for logs.
    pub fn mode(&self) -> &'static str {
        match self {
            Self::File(_) => "file",
            Self::Kube(_) => "kubernetes",
        }
    }

    /// Checks `token` and returns the ServiceAccount it speaks for.
    pub async fn authenticate(&self, token: &str) -> Result<Subject, AuthError> {
        if token.trim().is_empty() {
            return Err(AuthError::Unauthenticated("empty token".into()));
        }
        match self {
            Self::File(key) => match verify_token(key, token) {
                Ok((namespace, service_account)) => Ok(Subject {
                    namespace,
                    service_account,
                }),
                Err(
                    e @ (TokenError::Malformed(_)
                    | TokenError::BadSignature
                    | TokenError::Expired { .. }),
                ) => Err(AuthError::Unauthenticated(e.to_string())),
            },
            Self::Kube(client) => review(client, token.trim()).await,
        }
    }
}

async fn review(client: &kube::Client, token: &str) -> Result<Subject, AuthError> {
    let api: Api<TokenReview> = Api::all(client.clone());
    let first = create(&api, token, Some(vec![TOKEN_AUDIENCE.to_owned()])).await?;
    let status = match first.status.as_ref() {
        Some(s) if s.authenticated == Some(true) => first.status,
        _ => {
            let second = create(&api, token, None).await?;
            match second.status {
                Some(s) if s.authenticated == Some(true) => Some(s),
                other => {
                    let why = other
                        .and_then(|s| s.error)
                        .filter(|e| !e.is_empty())
                        .or_else(|| first.status.and_then(|s| s.error))
                        .unwrap_or_else(|| "not authenticated".into());
                    return Err(AuthError::Unauthenticated(format!(
                        "TokenReview rejected the token: {why}"
                    )));
                }
            }
        }
    };
    let username = status
        .and_then(|s| s.user)
        .and_then(|u| u.username)
        .unwrap_or_default();
    parse_service_account(&username).ok_or_else(|| {
        AuthError::NotServiceAccount(format!(
            "token belongs to {username:?}, not a ServiceAccount (system:serviceaccount:NS:SA)"
        ))
    })
}

async fn create(
    api: &Api<TokenReview>,
    token: &str,
    audiences: Option<Vec<String>>,
) -> Result<TokenReview, AuthError> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: token.to_owned(),
            audiences,
        },
        ..TokenReview::default()
    };
    match tokio::time::timeout(REVIEW_TIMEOUT, api.create(&PostParams::default(), &review)).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(AuthError::Unavailable(format!("TokenReview failed: {e}"))),
        Err(_) => Err(AuthError::Unavailable(format!(
            "TokenReview timed out after {REVIEW_TIMEOUT:?}"
        ))),
    }
}

/// `system:serviceaccount:NS:SA` → (NS, SA).
fn parse_service_account(username: &str) -> Option<Subject> {
    let rest = username.strip_prefix("system:serviceaccount:")?;
    let (ns, sa) = rest.split_once(':')?;
    if ns.is_empty() || sa.is_empty() || sa.contains(':') {
        return None;
    }
    Some(Subject {
        namespace: ns.to_owned(),
        service_account: sa.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn service_account_usernames() {
        assert_eq!(
            parse_service_account("system:serviceaccount:emojivoto:web").unwrap(),
            Subject {
                namespace: "emojivoto".into(),
                service_account: "web".into()
            }
        );
        for bad in [
            "admin",
            "system:serviceaccount:ns",
            "system:serviceaccount::sa",
            "system:serviceaccount:ns:",
            "system:node:x",
        ] {
            assert!(parse_service_account(bad).is_none(), "{bad}");
        }
    }
}
