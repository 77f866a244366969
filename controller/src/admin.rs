//! The admin server: `GET /ready`, `/live`, `/metrics` and, when the
//! controller reads objects, the metrics API under `/api/v1/`
//! ([`crate::viz`]).
//!
//! `/ready` is what Kubernetes (and tests) wait on: 200 once the identity
//! service is listening with its own certificate, 503 before that and
//! while shutting down. `/live` is 200 while the process runs.

use crate::metrics::Metrics;
use crate::viz::Viz;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Whether the controller is ready to serve.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the controller ready (or not).
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    /// Whether it is ready.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// How long an admin connection may stay open: longer than the longest
/// `top` collection.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Admin connections served at once; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 256;

/// Serves the admin endpoints on `listener` until the process exits.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    ready: Readiness,
    viz: Option<Arc<Viz>>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(error) => {
                tracing::warn!(%error, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        let ready = ready.clone();
        let viz = viz.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let metrics = metrics.clone();
                let ready = ready.clone();
                let viz = viz.clone();
                async move {
                    if let (Some(viz), &Method::GET) = (&viz, req.method()) {
                        let path = req.uri().path();
                        if let Some(rsp) = viz.handle(path, req.uri().query().unwrap_or("")).await {
                            return Ok::<_, Infallible>(rsp);
                        }
                    }
                    Ok::<_, Infallible>(handle(&req, &metrics, &ready, viz.is_some()))
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc);
            match tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(%error, "admin connection failed"),
                Err(_) => tracing::debug!("admin connection closed after {CONNECTION_LIFETIME:?}"),
            }
        });
    }
}

fn handle(
    req: &Request<Incoming>,
    metrics: &Metrics,
    ready: &Readiness,
    viz: bool,
) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            let mut rsp = Response::new(Full::new(Bytes::from(metrics.encode())));
            rsp.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            rsp
        }
        (&Method::GET, "/ready") => {
            if ready.get() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        (&Method::GET, "/live") => text(StatusCode::OK, "live\n"),
        (_, "/metrics" | "/ready" | "/live") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        (_, path) if path.starts_with("/api/v1/") => {
            if viz {
                text(StatusCode::NOT_FOUND, "no such metrics API endpoint\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the metrics API runs with --config-dir, --kubeconfig or --in-cluster\n",
                )
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, msg: &'static str) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(Bytes::from_static(msg.as_bytes())));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    rsp
}
