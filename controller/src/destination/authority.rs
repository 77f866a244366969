//! Parsing the `path` of a `Get` request into the Service it names.
//!
//! Proxies ask for the authority the application used, so both the fully
//! qualified form (`svc.ns.svc.cluster.local:80`) and the short forms
//! Kubernetes DNS search paths allow (`svc.ns:80`, `svc.ns.svc:80`) must
//! resolve to the same Service. A consequence of the short form: any
//! two-label name (`example.com:443`) reads as Service `example` in
//! namespace `com`, which normally does not exist, so the answer is
//! `NoEndpoints { exists: false }` and the proxy uses the original address.
//!
//! An IP literal with a port (`10.1.2.3:8080`, `[fd00::1]:8080`) is an
//! address authority instead: what it names depends on the store at the
//! time of each answer, a Service whose ClusterIP it is, else the Pod that
//! has that IP (see [`Authority::Addr`]).

use std::net::{IpAddr, SocketAddr};

/// Port assumed when the authority has none (what HTTP clients imply).
const DEFAULT_PORT: u16 = 80;

/// A Service port a proxy asked about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub service: String,
    /// The Service port (not the endpoints' target port).
    pub port: u16,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}:{}", self.service, self.namespace, self.port)
    }
}

/// What a `Get`/`GetProfile` path asks about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Authority {
    /// A Service port by name.
    Service(Target),
    /// An `IP:port`: the Service port whose ClusterIP it is (what a proxy
    /// asks after an iptables redirect of a connection to a Service), else
    /// the Pod with that IP, on that port (an application connecting to a
    /// Pod directly, e.g. a StatefulSet member or a headless Service's
    /// record). Which one is decided per snapshot
    /// ([`super::endpoints::service_at`]).
    Addr(SocketAddr),
}

impl std::fmt::Display for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Authority::Service(t) => t.fmt(f),
            Authority::Addr(addr) => write!(f, "address {addr}"),
        }
    }
}

/// Parses `path` as an `IP:port` authority (IPv6 in brackets; a
/// missing port means 80), else as a Service authority ([`parse`]).
pub fn parse_authority(path: &str, cluster_domain: &str) -> Result<Authority, AuthorityError> {
    if let Ok(addr) = path.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(AuthorityError::Port {
                path: path.to_owned(),
            });
        }
        return Ok(Authority::Addr(addr));
    }
    let bare = path.strip_prefix('[').and_then(|p| p.strip_suffix(']'));
    if let Ok(ip) = bare.unwrap_or(path).parse::<IpAddr>() {
        return Ok(Authority::Addr(SocketAddr::new(ip, DEFAULT_PORT)));
    }
    parse(path, cluster_domain).map(Authority::Service)
}

/// Why a path does not name a Service in this cluster.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    /// The port is not a number in 1..=65535.
    #[error("invalid port in {path:?}")]
    Port {
        /// The requested path.
        path: String,
    },
    /// The host is not `svc.ns[.svc[.CLUSTER_DOMAIN]]`.
    #[error("{path:?} is not a service name in cluster domain {cluster_domain:?} (expected svc.ns[.svc.{cluster_domain}][:port])")]
    NotAService {
        /// The requested path.
        path: String,
        /// The cluster domain in force.
        cluster_domain: String,
    },
}

/// Parses `path` (`host[:port]`) as a Service authority in
/// `cluster_domain`. Case and one trailing dot are ignored.
pub fn parse(path: &str, cluster_domain: &str) -> Result<Target, AuthorityError> {
    let not_a_service = || AuthorityError::NotAService {
        path: path.to_owned(),
        cluster_domain: cluster_domain.to_owned(),
    };
    let (host, port) = match path.rsplit_once(':') {
        Some((host, port)) => {
            let port: u16 = port.parse().map_err(|_| AuthorityError::Port {
                path: path.to_owned(),
            })?;
            if port == 0 {
                return Err(AuthorityError::Port {
                    path: path.to_owned(),
                });
            }
            (host, port)
        }
        None => (path, DEFAULT_PORT),
    };
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let labels: Vec<&str> = host.split('.').collect();
    let (service, namespace, rest) = match labels.as_slice() {
        [svc, ns, rest @ ..] => (*svc, *ns, rest),
        _ => return Err(not_a_service()),
    };
    let domain: Vec<&str> = cluster_domain
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
        .collect();
    let ok = match rest {
        [] | ["svc"] => true,
        ["svc", tail @ ..] => tail
            .iter()
            .map(|l| l.to_ascii_lowercase())
            .eq(domain.iter().map(|l| l.to_ascii_lowercase())),
        _ => false,
    };
    if !ok
        || weft_identity::check_label("service", service).is_err()
        || weft_identity::check_label("namespace", namespace).is_err()
    {
        return Err(not_a_service());
    }
    Ok(Target {
        namespace: namespace.to_owned(),
        service: service.to_owned(),
        port,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn t(ns: &str, svc: &str, port: u16) -> Target {
        Target {
            namespace: ns.into(),
            service: svc.into(),
            port,
        }
    }

    #[test]
    fn accepts_the_service_forms() {
        let cd = "cluster.local";
        assert_eq!(
            parse("web.shop.svc.cluster.local:80", cd).unwrap(),
            t("shop", "web", 80)
        );
        assert_eq!(
            parse("Web.Shop.svc.cluster.local.:8080", cd).unwrap(),
            t("shop", "web", 8080)
        );
        assert_eq!(parse("web.shop:80", cd).unwrap(), t("shop", "web", 80));
        assert_eq!(parse("web.shop.svc:81", cd).unwrap(), t("shop", "web", 81));
        assert_eq!(parse("web.shop", cd).unwrap(), t("shop", "web", 80));
        assert_eq!(
            parse("web.shop.svc.example.org:80", "example.org").unwrap(),
            t("shop", "web", 80)
        );
    }

    #[test]
    fn ip_literals_are_pod_authorities() {
        let cd = "cluster.local";
        let pod = |a: &str| Authority::Addr(a.parse().unwrap());
        assert_eq!(
            parse_authority("10.1.2.3:8080", cd).unwrap(),
            pod("10.1.2.3:8080")
        );
        assert_eq!(parse_authority("10.1.2.3", cd).unwrap(), pod("10.1.2.3:80"));
        assert_eq!(
            parse_authority("[fd00::1]:8080", cd).unwrap(),
            pod("[fd00::1]:8080")
        );
        assert_eq!(
            parse_authority("[fd00::1]", cd).unwrap(),
            pod("[fd00::1]:80")
        );
        assert_eq!(
            parse_authority("web.shop:80", cd).unwrap(),
            Authority::Service(t("shop", "web", 80))
        );
        for bad in ["10.1.2.3:0", "10.1.2.3:http", "10.1.2.3:70000", "10.1.2:80"] {
            assert!(parse_authority(bad, cd).is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_other_names() {
        let cd = "cluster.local";
        for bad in [
            "web:80",
            "web.shop.svc.other.domain:80",
            "www.example.com:443",
            "web.shop:http",
            "web.shop:0",
            "web.shop:70000",
            "10.0.0.1:80",
            "we_b.shop:80",
            "",
        ] {
            assert!(parse(bad, cd).is_err(), "{bad}");
        }
    }
}
