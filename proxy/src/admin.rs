//! The admin server: `/metrics`, `/ready`, `/live` and `POST /shutdown`.
//!
//! It listens on loopback by default. `/shutdown` is refused unless the
//! request comes from a loopback address, even when the admin listener is
//! exposed for scraping.

use crate::drain::Drain;
use crate::http::body::{self, BoxBody};
use crate::identity::LocalIdentity;
use crate::metrics::Metrics;
use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// What the admin server reports and controls.
#[derive(Clone)]
pub struct Admin {
    metrics: Metrics,
    drain: Drain,
    ready_message: Arc<str>,
    identity: Option<LocalIdentity>,
}

// === impl Admin ===

impl Admin {
    /// `ready_message` is the body of `/ready`, which says how the proxy
    /// runs (for example that identity is disabled). With `identity`, the
    /// proxy is ready only once it holds a certificate.
    pub fn new(
        metrics: Metrics,
        drain: Drain,
        ready_message: &str,
        identity: Option<LocalIdentity>,
    ) -> Self {
        Self {
            metrics,
            drain,
            ready_message: ready_message.into(),
            identity,
        }
    }

    /// Serves until the process exits. Admin connections are not part of the
    /// drain: `/metrics` stays scrapeable while the proxy shuts down.
    pub async fn serve(self, listener: TcpListener) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(conn) => conn,
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let admin = self.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.handle(req, peer.ip().is_loopback())) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), svc);
                if let Err(error) = conn.await {
                    tracing::debug!(%error, "admin connection failed");
                }
            });
        }
    }

    fn handle(&self, req: Request<Incoming>, from_loopback: bool) -> Response<BoxBody> {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/metrics") => {
                let mut rsp = Response::new(body::full(self.metrics.encode()));
                rsp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    http::HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                rsp
            }
            (&Method::GET, "/ready") => {
                if self.drain.is_draining() {
                    text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into())
                } else if self.identity.as_ref().is_some_and(|id| !id.is_ready()) {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "waiting for a certificate from the identity service\n".into(),
                    )
                } else {
                    text(StatusCode::OK, format!("ready\n{}\n", self.ready_message))
                }
            }
            (&Method::GET, "/live") => text(StatusCode::OK, "live\n".into()),
            (&Method::POST, "/shutdown") if from_loopback => {
                tracing::info!("shutdown requested through the admin server");
                self.drain.signal();
                text(StatusCode::OK, "shutdown\n".into())
            }
            (_, "/shutdown") if req.method() == Method::POST => text(
                StatusCode::FORBIDDEN,
                "shutdown is only allowed from loopback\n".into(),
            ),
            (_, "/metrics" | "/ready" | "/live" | "/shutdown") => text(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed\n".into(),
            ),
            _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
        }
    }
}

fn text(status: StatusCode, msg: String) -> Response<BoxBody> {
    let mut rsp = Response::new(body::full(msg));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    rsp
}
