//! File-mode tokens: how a proxy proves its ServiceAccount without a
//! Kubernetes API server.
//!
//! Format: `weft1.<payload>.<mac>` where `<payload>` is base64url (no
//! padding) of the JSON `{"ns":..,"sa":..,"iat":..,"exp":..}` (seconds since
//! the Unix epoch) and `<mac>` is base64url of HMAC-SHA256 over
//! `weft1.<payload>` with the 32-byte key in the identity directory's
//! `token.key`. Whoever holds `token.key` can mint tokens for any identity,
//! so it is as sensitive as the issuer key.

use crate::{name, Error, TokenError};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The prefix that marks (and versions) a Weft file-mode token.
pub const TOKEN_PREFIX: &str = "weft1";

/// Length in bytes of a generated token key.
pub const TOKEN_KEY_LEN: usize = 32;

/// The secret that signs and verifies file-mode tokens.
pub struct TokenKey {
    key: hmac::Key,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// A key from raw secret bytes (at least 32 of them).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() < TOKEN_KEY_LEN {
            return Err(Error::Invalid {
                what: "token key",
                reason: format!("{} bytes, at least {TOKEN_KEY_LEN} required", bytes.len()),
            });
        }
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        })
    }

    /// Parses the text of a `token.key` file (standard base64 of the key).
    pub fn from_file_text(text: &str) -> Result<Self, Error> {
        let bytes = STANDARD.decode(text.trim()).map_err(|e| Error::Invalid {
            what: "token key",
            reason: format!("not base64: {e}"),
        })?;
        Self::from_bytes(&bytes)
    }

    /// Reads a `token.key` file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        Self::from_file_text(&text).map_err(|e| Error::bad_file(path, e))
    }

    /// Generates a fresh random key and returns it with the text to store
    /// in `token.key`.
    pub fn generate() -> Result<(Self, String), Error> {
        let mut bytes = [0u8; TOKEN_KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| Error::Generate {
                what: "token key",
                reason: "the system random generator failed".into(),
            })?;
        let text = format!("{}\n", STANDARD.encode(bytes));
        Ok((Self::from_bytes(&bytes)?, text))
    }
}

#[derive(Serialize, Deserialize)]
struct Payload {
    ns: String,
    sa: String,
    iat: u64,
    exp: u64,
}

/// Who a verified token speaks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenClaims {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Kubernetes ServiceAccount.
    pub service_account: String,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at: u64,
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Mints a token for ServiceAccount `sa` in namespace `ns`, valid for `ttl`.
pub fn mint_token(key: &TokenKey, ns: &str, sa: &str, ttl: Duration) -> Result<String, Error> {
    let now = SystemTime::now();
    let exp = now.checked_add(ttl).ok_or(Error::Duration {
        value: format!("{ttl:?}"),
        reason: "too large",
    })?;
    mint_token_until(key, ns, sa, exp)
}

/// Mints a token that expires at `expires_at` (may be in the past: tests
/// use that to get an expired token).
pub fn mint_token_until(
    key: &TokenKey,
    ns: &str,
    sa: &str,
    expires_at: SystemTime,
) -> Result<String, Error> {
    name::check_label("namespace", ns)?;
    name::check_label("service account", sa)?;
    let payload = Payload {
        ns: ns.to_owned(),
        sa: sa.to_owned(),
        iat: unix_secs(SystemTime::now()),
        exp: unix_secs(expires_at),
    };
    let json = serde_json::to_vec(&payload).map_err(|e| Error::Generate {
        what: "token",
        reason: e.to_string(),
    })?;
    let signed = format!("{TOKEN_PREFIX}.{}", URL_SAFE_NO_PAD.encode(json));
    let mac = hmac::sign(&key.key, signed.as_bytes());
    Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref())))
}

/// Verifies a token and returns `(namespace, service_account)`.
pub fn verify_token(key: &TokenKey, token: &str) -> Result<(String, String), TokenError> {
    verify_token_at(key, token, SystemTime::now()).map(|c| (c.namespace, c.service_account))
}

/// Verifies a token as of `now`; returns all its claims. The signature is
/// checked before anything in the payload is trusted.
pub fn verify_token_at(
    key: &TokenKey,
    token: &str,
    now: SystemTime,
) -> Result<TokenClaims, TokenError> {
    let malformed = |s: &str| TokenError::Malformed(s.to_owned());
    let token = token.trim();
    let (signed, mac_b64) = token
        .rsplit_once('.')
        .ok_or_else(|| malformed("expected weft1.<payload>.<signature>"))?;
    let (prefix, payload_b64) = signed
        .split_once('.')
        .ok_or_else(|| malformed("expected weft1.<payload>.<signature>"))?;
    if prefix != TOKEN_PREFIX {
        return Err(malformed("not a Weft file-mode token (no weft1. prefix)"));
    }
    let mac = URL_SAFE_NO_PAD
        .decode(mac_b64)
        .map_err(|_| malformed("signature is not base64url"))?;
    hmac::verify(&key.key, signed.as_bytes(), &mac).map_err(|_| TokenError::BadSignature)?;
    let json = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|_| malformed("payload is not base64url"))?;
    let payload: Payload = serde_json::from_slice(&json)
        .map_err(|e| TokenError::Malformed(format!("payload: {e}")))?;
    if name::check_label("namespace", &payload.ns).is_err()
        || name::check_label("service account", &payload.sa).is_err()
    {
        return Err(malformed("namespace or service account is not a DNS label"));
    }
    if unix_secs(now) >= payload.exp {
        return Err(TokenError::Expired {
            expired_at: payload.exp,
        });
    }
    Ok(TokenClaims {
        namespace: payload.ns,
        service_account: payload.sa,
        expires_at: payload.exp,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key() -> TokenKey {
        TokenKey::generate().unwrap().0
    }

    #[test]
    fn round_trip() {
        let k = key();
        let t = mint_token(&k, "emojivoto", "web", Duration::from_secs(3600)).unwrap();
        assert!(t.starts_with("weft1."));
        assert_eq!(
            verify_token(&k, &t).unwrap(),
            ("emojivoto".to_owned(), "web".to_owned())
        );
        // Surrounding whitespace (a token file with a newline) is fine.
        assert!(verify_token(&k, &format!("{t}\n")).is_ok());
    }

    #[test]
    fn expiry() {
        let k = key();
        let t = mint_token(&k, "ns", "sa", Duration::from_secs(60)).unwrap();
        let later = SystemTime::now() + Duration::from_secs(61);
        assert!(matches!(
            verify_token_at(&k, &t, later),
            Err(TokenError::Expired { .. })
        ));
        let past =
            mint_token_until(&k, "ns", "sa", SystemTime::now() - Duration::from_secs(5)).unwrap();
        assert!(matches!(
            verify_token(&k, &past),
            Err(TokenError::Expired { .. })
        ));
    }

    #[test]
    fn tamper_and_wrong_key() {
        let k = key();
        let t = mint_token(&k, "ns", "a", Duration::from_secs(60)).unwrap();
        assert_eq!(verify_token(&key(), &t), Err(TokenError::BadSignature));
        // Swap the payload for one naming another service account.
        let other = mint_token(&key(), "ns", "b", Duration::from_secs(60)).unwrap();
        let parts: Vec<&str> = t.split('.').collect();
        let other_parts: Vec<&str> = other.split('.').collect();
        let forged = format!("weft1.{}.{}", other_parts[1], parts[2]);
        assert_eq!(verify_token(&k, &forged), Err(TokenError::BadSignature));
        for bad in ["", "abc", "weft1.x", "jwt.a.b", "weft1.a.!!!"] {
            assert!(
                matches!(verify_token(&k, bad), Err(TokenError::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn key_file_text() {
        let (k, text) = TokenKey::generate().unwrap();
        let k2 = TokenKey::from_file_text(&text).unwrap();
        let t = mint_token(&k, "ns", "sa", Duration::from_secs(60)).unwrap();
        assert!(verify_token(&k2, &t).is_ok());
        assert!(TokenKey::from_file_text("c2hvcnQ=").is_err());
        assert!(TokenKey::from_file_text("not base64 !").is_err());
    }
}
