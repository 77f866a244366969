//! Header rules a proxy must follow.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Version};

/// Set on responses the proxy generated itself, with the reason. The name is
/// Linkerd's so existing tooling recognises proxy-generated errors.
pub const L5D_PROXY_ERROR: HeaderName = HeaderName::from_static("l5d-proxy-error");

/// Carries the original HTTP/1 version across an HTTP/2 hop between proxies
/// (see [`super::orig_proto`]).
pub const L5D_ORIG_PROTO: HeaderName = HeaderName::from_static("l5d-orig-proto");

/// Set by the inbound proxy to the client's verified mTLS identity (and
/// removed when a client sends it): Linkerd's name, so applications that
/// read it keep working.
pub const L5D_CLIENT_ID: HeaderName = HeaderName::from_static("l5d-client-id");

/// Set on retried requests: which attempt this is (`2` for the first
/// retry), so the server can tell a retry from a new request.
pub const L5D_RETRY_ATTEMPT: HeaderName = HeaderName::from_static("l5d-retry-attempt");

/// Removes hop-by-hop headers (RFC 9110 §7.6.1): those named by
/// `Connection`, and the fixed set every proxy must drop. `TE: trailers` is
/// kept, since gRPC requires it end to end.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if name != header::TE {
            headers.remove(&name);
        }
    }
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(&name);
    }
    let te_trailers = headers
        .get_all(header::TE)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    headers.remove(header::TE);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// True for an HTTP/1.1 request asking to switch protocols (WebSocket...).
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.method() != Method::CONNECT
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// True for gRPC messages, which carry errors in `grpc-status`.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// The request's authority: from the URI (HTTP/2, absolute-form HTTP/1) or
/// the `Host` header.
pub fn authority<B>(req: &Request<B>) -> Option<http::uri::Authority> {
    if let Some(a) = req.uri().authority() {
        return Some(a.clone());
    }
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("proxy-connection", "keep-alive".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert(header::TE, "trailers".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept", "te"]);
    }

    #[test]
    fn te_other_than_trailers_is_dropped() {
        let mut h = HeaderMap::new();
        h.insert(header::TE, "gzip".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty());
    }

    #[test]
    fn upgrade_requests() {
        let req = Request::get("/")
            .header("connection", "keep-alive, Upgrade")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        assert!(is_upgrade(&req));
        let req = Request::get("/")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        assert!(!is_upgrade(&req), "Upgrade without Connection: upgrade");
    }

    #[test]
    fn authority_from_uri_or_host() {
        let req = Request::get("http://a.b:81/x").body(()).unwrap();
        assert_eq!(authority(&req).unwrap().as_str(), "a.b:81");
        let req = Request::get("/x").header("host", "c.d").body(()).unwrap();
        assert_eq!(authority(&req).unwrap().as_str(), "c.d");
        let req = Request::get("/x").body(()).unwrap();
        assert!(authority(&req).is_none());
    }
}
