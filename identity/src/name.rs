//! Identity names: `SA.NS.serviceaccount.identity.weft.TRUST_DOMAIN`.
//!
//! A proxy's identity is derived from its Kubernetes ServiceAccount, so the
//! name carries exactly the service account, the namespace and the trust
//! domain. It is used as the certificate's only DNS SAN and as the TLS
//! server name between proxies, so every part must be a DNS label.

use crate::Error;
use std::fmt;

/// The trust domain used when none is configured.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// The fixed middle of every identity name (after `SA.NS.`).
pub const IDENTITY_INFIX: &str = "serviceaccount.identity.weft";

/// The controller's own ServiceAccount and namespace.
pub const CONTROLLER_SERVICE_ACCOUNT: &str = "weft-controller";
/// Namespace of the controller's ServiceAccount.
pub const CONTROLLER_NAMESPACE: &str = "weft";

/// A validated identity name. Compare and print it as a string; the parts
/// are kept so logs and metrics can show them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Name {
    service_account: String,
    namespace: String,
    trust_domain: String,
    full: String,
}

impl Name {
    /// Builds the identity of ServiceAccount `sa` in namespace `ns`,
    /// validating each part (DNS-1123 labels; the trust domain is one or more
    /// labels; the whole name at most 253 characters).
    pub fn new(sa: &str, ns: &str, trust_domain: &str) -> Result<Self, Error> {
        check_label("service account", sa)?;
        check_label("namespace", ns)?;
        check_trust_domain(trust_domain)?;
        let full = format!("{sa}.{ns}.{IDENTITY_INFIX}.{trust_domain}");
        if full.len() > 253 {
            return Err(Error::InvalidName {
                what: "identity",
                value: full,
                reason: "longer than 253 characters".into(),
            });
        }
        Ok(Self {
            service_account: sa.to_owned(),
            namespace: ns.to_owned(),
            trust_domain: trust_domain.to_owned(),
            full,
        })
    }

    /// Parses a full identity name that must belong to `trust_domain`.
    pub fn parse(name: &str, trust_domain: &str) -> Result<Self, Error> {
        let suffix = format!(".{IDENTITY_INFIX}.{trust_domain}");
        let invalid = |reason: String| Error::InvalidName {
            what: "identity",
            value: name.to_owned(),
            reason,
        };
        let head = name
            .strip_suffix(&suffix)
            .ok_or_else(|| invalid(format!("does not end with {suffix:?}")))?;
        let (sa, ns) = head
            .split_once('.')
            .ok_or_else(|| invalid("expected SA.NS before the suffix".into()))?;
        if ns.contains('.') {
            return Err(invalid("expected exactly SA.NS before the suffix".into()));
        }
        Self::new(sa, ns, trust_domain)
    }

    /// The controller's own identity in `trust_domain`.
    pub fn controller(trust_domain: &str) -> Result<Self, Error> {
        Self::new(
            CONTROLLER_SERVICE_ACCOUNT,
            CONTROLLER_NAMESPACE,
            trust_domain,
        )
    }

    /// The full name as a string.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The ServiceAccount part.
    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// The namespace part.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The trust domain part.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.full
    }
}

/// `SA.NS.serviceaccount.identity.weft.TRUST_DOMAIN`, validated.
pub fn identity_name(sa: &str, ns: &str, trust_domain: &str) -> Result<String, Error> {
    Name::new(sa, ns, trust_domain).map(|n| n.full)
}

/// The controller's identity, `weft-controller.weft.serviceaccount.identity.weft.TRUST_DOMAIN`:
/// the name proxies verify on the controller's TLS certificate. Not
/// validated (the trust domain is validated when the controller starts).
pub fn controller_identity(trust_domain: &str) -> String {
    format!("{CONTROLLER_SERVICE_ACCOUNT}.{CONTROLLER_NAMESPACE}.{IDENTITY_INFIX}.{trust_domain}")
}

/// Checks a DNS-1123 label: 1–63 characters of `a-z`, `0-9` and `-`,
/// starting and ending with a letter or digit.
pub fn check_label(what: &'static str, value: &str) -> Result<(), Error> {
    let invalid = |reason: &str| Error::InvalidName {
        what,
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    if value.is_empty() {
        return Err(invalid("empty"));
    }
    if value.len() > 63 {
        return Err(invalid("longer than 63 characters"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(invalid(
            "must contain only lower-case letters, digits and '-'",
        ));
    }
    if value.starts_with('-') || value.ends_with('-') {
        return Err(invalid("must start and end with a letter or digit"));
    }
    Ok(())
}

/// Checks a trust domain: one or more DNS-1123 labels joined by dots.
pub fn check_trust_domain(value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::InvalidName {
            what: "trust domain",
            value: value.to_owned(),
            reason: "empty".into(),
        });
    }
    for label in value.split('.') {
        check_label("trust domain", label).map_err(|e| match e {
            Error::InvalidName { reason, .. } => Error::InvalidName {
                what: "trust domain",
                value: value.to_owned(),
                reason: format!("label {label:?}: {reason}"),
            },
            other => other,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn builds_and_parses() {
        let n = Name::new("web", "emojivoto", DEFAULT_TRUST_DOMAIN).unwrap();
        assert_eq!(
            n.as_str(),
            "web.emojivoto.serviceaccount.identity.weft.cluster.local"
        );
        let p = Name::parse(n.as_str(), "cluster.local").unwrap();
        assert_eq!(p, n);
        assert_eq!(p.service_account(), "web");
        assert_eq!(p.namespace(), "emojivoto");
        assert_eq!(
            controller_identity("example.org"),
            "weft-controller.weft.serviceaccount.identity.weft.example.org"
        );
        assert_eq!(
            Name::controller("example.org").unwrap().as_str(),
            controller_identity("example.org")
        );
    }

    #[test]
    fn rejects_bad_parts() {
        for (sa, ns, td) in [
            ("", "ns", "cluster.local"),
            ("Web", "ns", "cluster.local"),
            ("web", "n_s", "cluster.local"),
            ("-web", "ns", "cluster.local"),
            ("web", "ns-", "cluster.local"),
            ("a.b", "ns", "cluster.local"),
            ("web", "ns", ""),
            ("web", "ns", "cluster..local"),
            ("web", "ns", "cluster.local."),
        ] {
            assert!(Name::new(sa, ns, td).is_err(), "{sa} {ns} {td}");
        }
        let long = "a".repeat(64);
        assert!(Name::new(&long, "ns", "cluster.local").is_err());
        assert!(Name::new(&"a".repeat(63), "ns", &"b.".repeat(100)).is_err());
    }

    #[test]
    fn parse_rejects_other_shapes() {
        let td = "cluster.local";
        assert!(Name::parse("web.ns.serviceaccount.identity.weft.other.domain", td).is_err());
        assert!(Name::parse("web.serviceaccount.identity.weft.cluster.local", td).is_err());
        assert!(Name::parse("a.web.ns.serviceaccount.identity.weft.cluster.local", td).is_err());
        assert!(Name::parse("web.ns.serviceaccount.identity.linkerd.cluster.local", td).is_err());
    }
}
