//! HTTP/1 over HTTP/2 between Weft proxies.
//!
//! HTTP/1 needs one connection per in-flight request; between two proxies
//! the outbound side instead sends every HTTP/1 request over one
//! multiplexed HTTP/2 connection, recording the original version in an
//! `l5d-orig-proto` header (Linkerd's name, so a Weft proxy and a Linkerd
//! proxy understand each other). The inbound side removes the header and
//! speaks the original version to the application, and marks its response
//! so the outbound side can restore the response version too.
//!
//! The header is only trusted on HTTP/2 connections; it is stripped from
//! anything an application sends.

use super::headers::L5D_ORIG_PROTO;
use http::{HeaderValue, Request, Response, Version};

/// Outbound: turns an HTTP/1 request into an HTTP/2 one for a meshed peer.
/// Returns the original version, or `None` if the request was not HTTP/1.
pub fn upgrade_request<B>(req: &mut Request<B>) -> Option<Version> {
    let orig = req.version();
    let value = match orig {
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_10 => "HTTP/1.0",
        _ => return None,
    };
    req.headers_mut()
        .insert(L5D_ORIG_PROTO, HeaderValue::from_static(value));
    *req.version_mut() = Version::HTTP_2;
    Some(orig)
}

/// Outbound: restores the version of the response to an upgraded request.
pub fn downgrade_response<B>(rsp: &mut Response<B>, orig: Version) {
    rsp.headers_mut().remove(L5D_ORIG_PROTO);
    *rsp.version_mut() = orig;
}

/// Inbound: restores an upgraded request's original HTTP/1 version.
/// Returns true if the request had been upgraded by a peer proxy.
pub fn downgrade_request<B>(req: &mut Request<B>) -> bool {
    let Some(value) = req.headers_mut().remove(L5D_ORIG_PROTO) else {
        return false;
    };
    if req.version() != Version::HTTP_2 {
        // Only a peer proxy speaking HTTP/2 may set it; ignore it otherwise.
        return false;
    }
    *req.version_mut() = if value.as_bytes().starts_with(b"HTTP/1.0") {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    true
}

/// Inbound: marks the response to a downgraded request for the peer proxy.
pub fn mark_response<B>(rsp: &mut Response<B>) {
    rsp.headers_mut()
        .insert(L5D_ORIG_PROTO, HeaderValue::from_static("HTTP/1.1"));
    *rsp.version_mut() = Version::HTTP_2;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut req = Request::get("http://a/")
            .version(Version::HTTP_10)
            .body(())
            .unwrap();
        assert_eq!(upgrade_request(&mut req), Some(Version::HTTP_10));
        assert_eq!(req.version(), Version::HTTP_2);
        assert!(downgrade_request(&mut req));
        assert_eq!(req.version(), Version::HTTP_10);
        assert!(!req.headers().contains_key(L5D_ORIG_PROTO));

        let mut rsp = Response::new(());
        mark_response(&mut rsp);
        downgrade_response(&mut rsp, Version::HTTP_11);
        assert_eq!(rsp.version(), Version::HTTP_11);
        assert!(!rsp.headers().contains_key(L5D_ORIG_PROTO));
    }

    #[test]
    fn header_from_http1_clients_is_ignored() {
        let mut req = Request::get("/")
            .header("l5d-orig-proto", "HTTP/1.1")
            .body(())
            .unwrap();
        assert!(!downgrade_request(&mut req));
        assert!(!req.headers().contains_key(L5D_ORIG_PROTO));
        let mut req = Request::get("/").version(Version::HTTP_2).body(()).unwrap();
        assert_eq!(upgrade_request(&mut req), None);
    }
}
