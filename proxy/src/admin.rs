//! The admin server: `/metrics`, `/ready`, `/live`, `POST /shutdown` and
//! the live request feed `GET /live-requests` ([`crate::live`]).
//!
//! It listens on loopback by default. `/shutdown` is refused unless the
//! request comes from a loopback address, even when the admin listener is
//! exposed for scraping.
//!
//! A connection that asked for `/live-requests` is closed at the latest
//! [`live::CLOSE_GRACE`] after its subscription ends, even if its client
//! stopped reading, so a subscriber cannot hold a connection (or its place)
//! for longer than it asked.

use crate::drain::Drain;
use crate::http::body::{self, BoxBody};
use crate::identity::LocalIdentity;
use crate::live::{self, Live};
use crate::metrics::Metrics;
use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

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

    fn live(&self) -> &Live {
        self.metrics.http.live()
    }

    /// `GET /live-requests`: subscribes to the live feed and streams it.
    fn live_requests(
        &self,
        query: Option<&str>,
        peer: SocketAddr,
        close_at: &watch::Sender<Option<Instant>>,
    ) -> Response<BoxBody> {
        let params = match live::Params::from_query(query) {
            Ok(params) => params,
            Err(error) => return text(StatusCode::BAD_REQUEST, format!("{error}\n")),
        };
        let feed = match self.live().subscribe(&params) {
            Ok(feed) => feed,
            Err(busy) => {
                tracing::info!(%peer, "live-requests subscriber refused: {busy}");
                return text(StatusCode::SERVICE_UNAVAILABLE, format!("{busy}\n"));
            }
        };
        tracing::info!(
            %peer,
            duration = ?params.duration,
            sample = params.sample,
            max_rps = params.max_rps,
            "live-requests subscriber connected"
        );
        close_at.send_replace(Some(Instant::now() + params.duration + live::CLOSE_GRACE));
        let mut rsp = Response::new(feed.into_body());
        let headers = rsp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-ndjson"),
        );
        headers.insert(header::CONNECTION, http::HeaderValue::from_static("close"));
        headers.insert(
            header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
        rsp
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
                // Set when the connection starts a live feed: when it must
                // be closed at the latest.
                let (close_at, mut close_rx) = watch::channel(None::<Instant>);
                let close_at = Arc::new(close_at);
                let svc = hyper::service::service_fn(move |req| {
                    let (admin, close_at) = (admin.clone(), close_at.clone());
                    async move { Ok::<_, Infallible>(admin.handle(req, peer, &close_at)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), svc);
                tokio::pin!(conn);
                let mut watching = true;
                loop {
                    let deadline = *close_rx.borrow_and_update();
                    tokio::select! {
                        res = conn.as_mut() => {
                            if let Err(error) = res {
                                tracing::debug!(%error, "admin connection failed");
                            }
                            return;
                        }
                        changed = close_rx.changed(), if watching => watching = changed.is_ok(),
                        _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                            tracing::debug!(%peer, "closing a live-requests connection past its duration");
                            return;
                        }
                    }
                }
            });
        }
    }

    fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        close_at: &watch::Sender<Option<Instant>>,
    ) -> Response<BoxBody> {
        let from_loopback = peer.ip().is_loopback();
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
            (&Method::GET, "/live-requests") => {
                self.live_requests(req.uri().query(), peer, close_at)
            }
            (&Method::POST, "/shutdown") if from_loopback => {
                tracing::info!("shutdown requested through the admin server");
                self.drain.signal();
                text(StatusCode::OK, "shutdown\n".into())
            }
            (_, "/shutdown") if req.method() == Method::POST => text(
                StatusCode::FORBIDDEN,
                "shutdown is only allowed from loopback\n".into(),
            ),
            (_, "/metrics" | "/ready" | "/live" | "/shutdown" | "/live-requests") => text(
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
