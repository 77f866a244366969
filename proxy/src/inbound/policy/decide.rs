//! Authorization decisions: pure functions of a [`ServerPolicy`], the
//! client (address and TLS) and, for HTTP, the request.
//!
//! - An [`Authz`] admits a client whose address is in one of its networks
//!   (and in none of that network's exceptions) and who proves what its
//!   [`Authn`] asks: nothing, a mesh TLS connection, or one of the listed
//!   identities / identity suffixes. The identity is the one the client's
//!   certificate proved to this proxy; headers never count.
//! - A TCP connection (opaque port, TLS passthrough, not HTTP) is
//!   admitted by a server-level authorization ([`tcp`]).
//! - An HTTP connection is refused at once only when no authorization of
//!   the port, server- or route-level, could admit its client
//!   ([`http_connection`]); each request is then admitted if an
//!   authorization of any route it matches, or of the server, admits the
//!   client ([`http`]).
//!
//! The `audit` authorization is consulted last everywhere: a client it
//! alone admits is one `deny` would refuse, which the caller logs.

use super::model::{Authn, Authz, HttpRoute, Network, ServerPolicy};
use crate::metrics::Tls;
use crate::route::matching::{request_host, RequestHead, Score};
use std::net::IpAddr;

/// The outcome of an HTTP request's check.
#[derive(Clone, Copy, Debug)]
pub enum HttpDecision<'p> {
    /// Admitted on `route` by `authz` (`authz.meta.is_audit()`: only
    /// because of `audit`).
    Allow {
        /// The best-matching route that admits the request.
        route: &'p HttpRoute,
        /// The authorization that admitted it.
        authz: &'p Authz,
    },
    /// Refused; `route` is the best-matching route.
    Deny {
        /// The route the request matched best.
        route: &'p HttpRoute,
    },
    /// The request matches none of the server's routes.
    NoRoute,
}

// === impl Authz ===

impl Authz {
    /// True if this authorization admits a client at `ip` with `tls`.
    pub fn admits(&self, ip: IpAddr, tls: &Tls) -> bool {
        self.networks.iter().any(|n| n.contains(ip)) && self.authn.admits(tls)
    }
}

// === impl Network ===

impl Network {
    /// True if `ip` is in the network and in none of its exceptions.
    /// IPv4-mapped IPv6 addresses count as the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.net.contains(&ip) && !self.except.iter().any(|e| e.contains(&ip))
    }
}

// === impl Authn ===

impl Authn {
    /// True if a connection with `tls` proves what this asks.
    pub fn admits(&self, tls: &Tls) -> bool {
        match self {
            Authn::Unauthenticated => true,
            Authn::MeshTls => matches!(tls, Tls::Client(_)),
            Authn::Identities { names, suffixes } => match tls {
                Tls::Client(id) => names.contains(&**id) || suffixes.iter().any(|s| s.contains(id)),
                _ => false,
            },
        }
    }
}

/// The server-level authorization that admits a TCP connection from
/// `ip` with `tls`, or `None` (the connection is closed).
pub fn tcp<'p>(policy: &'p ServerPolicy, ip: IpAddr, tls: &Tls) -> Option<&'p Authz> {
    first_admitting(policy.authorizations.iter(), ip, tls)
}

/// True if an HTTP connection from `ip` with `tls` may be served: on an
/// opaque (or TLS) server as for TCP, otherwise if any authorization of
/// the port, server- or route-level, could admit some request of it.
pub fn http_connection(policy: &ServerPolicy, ip: IpAddr, tls: &Tls) -> bool {
    if policy.is_opaque() {
        return tcp(policy, ip, tls).is_some();
    }
    policy
        .authorizations
        .iter()
        .chain(policy.routes.iter().flat_map(|r| r.authorizations.iter()))
        .any(|a| a.admits(ip, tls))
}

/// Checks one HTTP request (see the module docs). Reports the
/// best-matching route that admits it and the authorization that did
/// (its own before the server's), or for a refusal the best-matching
/// route.
pub fn http<'p>(
    policy: &'p ServerPolicy,
    ip: IpAddr,
    tls: &Tls,
    req: &RequestHead<'_>,
) -> HttpDecision<'p> {
    let host = request_host(req.uri, req.headers);
    // The server's own decision does not depend on the route: made once,
    // and only if a route needs it.
    let mut server: Option<Option<&'p Authz>> = None;
    let mut best: Option<(Score, &'p HttpRoute)> = None;
    let mut allowed: Option<(Score, &'p HttpRoute, &'p Authz)> = None;
    for route in policy.routes.iter() {
        let Some(score) = route.score(req, host) else {
            continue;
        };
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, route));
        }
        if allowed.is_some_and(|(s, _, _)| s >= score) {
            continue;
        }
        let own = route
            .authorizations
            .iter()
            .find(|a| !a.meta.is_audit() && a.admits(ip, tls));
        let permit = own.or_else(|| {
            *server.get_or_insert_with(|| {
                policy
                    .authorizations
                    .iter()
                    .find(|a| !a.meta.is_audit() && a.admits(ip, tls))
            })
        });
        if let Some(authz) = permit {
            allowed = Some((score, route, authz));
        }
    }
    if let Some((_, route, authz)) = allowed {
        return HttpDecision::Allow { route, authz };
    }
    let Some((_, route)) = best else {
        return HttpDecision::NoRoute;
    };
    let audit = route
        .authorizations
        .iter()
        .chain(policy.authorizations.iter())
        .find(|a| a.meta.is_audit() && a.admits(ip, tls));
    match audit {
        Some(authz) => HttpDecision::Allow { route, authz },
        None => HttpDecision::Deny { route },
    }
}

/// The first of `authzs` admitting the client, `audit` only if nothing
/// else does.
fn first_admitting<'p>(
    authzs: impl Iterator<Item = &'p Authz> + Clone,
    ip: IpAddr,
    tls: &Tls,
) -> Option<&'p Authz> {
    authzs
        .clone()
        .find(|a| !a.meta.is_audit() && a.admits(ip, tls))
        .or_else(|| {
            authzs
                .into_iter()
                .find(|a| a.meta.is_audit() && a.admits(ip, tls))
        })
}

#[cfg(test)]
mod tests;
