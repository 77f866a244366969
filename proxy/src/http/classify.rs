//! Response classification: did this response succeed?
//!
//! The default rule is Linkerd's: a 5xx status is a failure; for gRPC the
//! `grpc-status` decides (from the trailers, or from the headers of a
//! trailers-only response); a stream that breaks mid-way is a failure.
//! A ServiceProfile route's response classes replace the 5xx rule for
//! HTTP responses on that route.

use crate::route::condition::ResponseClasses;
use http::{HeaderMap, StatusCode};
use std::sync::Arc;

/// What is known about a response while its body streams.
#[derive(Clone, Debug)]
pub struct Classifier {
    status: StatusCode,
    grpc: bool,
    grpc_status: Option<u32>,
    classes: Option<Arc<ResponseClasses>>,
}

// === impl Classifier ===

impl Classifier {
    /// Starts classifying a response from its head.
    pub fn new(status: StatusCode, headers: &HeaderMap, grpc: bool) -> Self {
        Self {
            status,
            grpc,
            grpc_status: grpc_status(headers),
            classes: None,
        }
    }

    /// Classifies HTTP statuses by a route's response classes.
    pub fn with_classes(mut self, classes: Arc<ResponseClasses>) -> Self {
        self.classes = Some(classes);
        self
    }

    /// The verdict from the response head alone, for deciding on a retry
    /// before the body is read: `Some(false)` for a failure, `None` when
    /// only the trailers can tell (a gRPC response without `grpc-status`
    /// in its headers).
    pub fn success_at_headers(&self) -> Option<bool> {
        if self.grpc {
            return self.grpc_status.map(|s| s == 0);
        }
        Some(self.success(false))
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
        match &self.classes {
            Some(classes) => !classes.is_failure(self.status),
            None => !self.status.is_server_error(),
        }
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
