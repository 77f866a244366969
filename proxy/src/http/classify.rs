//! Response classification: did this response succeed?
//!
//! The default rule is Linkerd's: a 5xx status is a failure; for gRPC the
//! `grpc-status` decides (from the trailers, or from the headers of a
//! trailers-only response); a stream that breaks mid-way is a failure.
//! ServiceProfile response classes will refine this per route.

use http::{HeaderMap, StatusCode};

/// What is known about a response while its body streams.
#[derive(Clone, Copy, Debug)]
pub struct Classifier {
    status: StatusCode,
    grpc: bool,
    grpc_status: Option<u32>,
}

// === impl Classifier ===

impl Classifier {
    /// Starts classifying a response from its head.
    pub fn new(status: StatusCode, headers: &HeaderMap, grpc: bool) -> Self {
        Self {
            status,
            grpc,
            grpc_status: grpc_status(headers),
        }
    }

    /// Notes the trailers, where gRPC carries its status.
    pub fn trailers(&mut self, trailers: &HeaderMap) {
        if let Some(s) = grpc_status(trailers) {
            self.grpc_status = Some(s);
        }
    }

    /// The verdict once the body ended; `errored` when it broke off.
    pub fn success(&self, errored: bool) -> bool {
        if errored {
            return false;
        }
        if self.grpc {
            return self.grpc_status == Some(0);
        }
        !self.status.is_server_error()
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses() {
        let h = HeaderMap::new();
        assert!(Classifier::new(StatusCode::OK, &h, false).success(false));
        assert!(Classifier::new(StatusCode::NOT_FOUND, &h, false).success(false));
        assert!(!Classifier::new(StatusCode::BAD_GATEWAY, &h, false).success(false));
        assert!(!Classifier::new(StatusCode::OK, &h, false).success(true));
    }

    #[test]
    fn grpc_status_from_trailers_or_headers() {
        let mut ok = HeaderMap::new();
        ok.insert("grpc-status", "0".parse().unwrap());
        let mut unavailable = HeaderMap::new();
        unavailable.insert("grpc-status", "14".parse().unwrap());

        let mut c = Classifier::new(StatusCode::OK, &HeaderMap::new(), true);
        c.trailers(&ok);
        assert!(c.success(false));
        let mut c = Classifier::new(StatusCode::OK, &HeaderMap::new(), true);
        c.trailers(&unavailable);
        assert!(!c.success(false));
        assert!(!Classifier::new(StatusCode::OK, &unavailable, true).success(false));
        // A gRPC stream that ends without any status failed.
        assert!(!Classifier::new(StatusCode::OK, &HeaderMap::new(), true).success(false));
    }
}
