//! The metrics layer: `request_total`, `response_latency_ms` and
//! `response_total` for every request, including those the proxy answers
//! itself. The same responses feed the live request feed
//! ([`crate::live`]) while someone watches it.

use super::body::BoxBody;
use super::classify::Classifier;
use super::headers;
use crate::live;
use crate::metrics::route::RouteLabels;
use crate::metrics::{Direction, DstLabels, HttpMetrics, RequestLabels, RouteMetrics, Tls};
use crate::route::condition::ResponseClasses;
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// Wraps a service with HTTP metrics.
///
/// Requests are labelled with the connection's TLS status, unless the
/// response carries a [`Tls`] extension (outbound: the status of the
/// endpoint it was sent to), so `request_total` is counted when the
/// response (or the proxy's error response) is known.
#[derive(Clone)]
pub struct NewMetrics {
    metrics: HttpMetrics,
    direction: Direction,
    tls: Tls,
    client: Option<SocketAddr>,
}

/// The service produced by [`NewMetrics`].
#[derive(Clone)]
pub struct Metered<S> {
    inner: S,
    metrics: HttpMetrics,
    direction: Direction,
    tls: Tls,
    client: Option<SocketAddr>,
}

pin_project! {
    /// A response body that records `response_total` when it ends (or is
    /// dropped), so gRPC trailers and mid-stream failures are classified.
    pub struct RecordBody {
        #[pin]
        inner: BoxBody,
        recording: Option<Recording>,
    }

    impl PinnedDrop for RecordBody {
        fn drop(this: Pin<&mut Self>) {
            if let Some(r) = this.project().recording.take() {
                r.finish(false);
            }
        }
    }
}

struct Recording {
    metrics: HttpMetrics,
    labels: RequestLabels,
    status: u16,
    classifier: Classifier,
    route: Option<RouteRecord>,
    /// Set only while someone watches the live feed.
    live: Option<Box<live::Event>>,
}

/// A response extension set by the outbound route stack: the response
/// also counts toward these route metrics, classified by the route's
/// response classes (which then also classify `response_total`).
#[derive(Clone)]
pub struct RouteRecord {
    /// Where route metrics go.
    pub metrics: RouteMetrics,
    /// The route's labels.
    pub labels: RouteLabels,
    /// The route's response classes.
    pub classes: Arc<ResponseClasses>,
    /// True if the response came from upstream (the last attempt), so it
    /// also counts in `route_actual_response_total`; false for responses
    /// the proxy made (timeouts, no endpoints).
    pub actual: bool,
}

// === impl NewMetrics ===

impl NewMetrics {
    /// Metrics for one connection on one side of the proxy.
    pub fn new(metrics: HttpMetrics, direction: Direction, tls: Tls) -> Self {
        Self {
            metrics,
            direction,
            tls,
            client: None,
        }
    }

    /// The connection's peer, reported as `client_addr` by the live feed.
    pub fn with_client(self, client: SocketAddr) -> Self {
        Self {
            client: Some(client),
            ..self
        }
    }
}

impl<S> tower::Layer<S> for NewMetrics {
    type Service = Metered<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Metered {
            inner,
            metrics: self.metrics.clone(),
            direction: self.direction,
            tls: self.tls.clone(),
            client: self.client,
        }
    }
}

// === impl Metered ===

impl<S, B> tower::Service<Request<B>> for Metered<S>
where
    S: tower::Service<Request<B>, Response = Response<BoxBody>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<BoxBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<BoxBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let authority = headers::authority(&req);
        let grpc = headers::is_grpc(req.headers());
        let mut live =
            self.metrics
                .live()
                .start(&req, self.direction, authority.as_ref(), self.client);
        let (metrics, direction, conn_tls) =
            (self.metrics.clone(), self.direction, self.tls.clone());
        let start = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut rsp = fut.await?;
            let tls = rsp.extensions().get::<Tls>().cloned().unwrap_or(conn_tls);
            let authority = authority.as_ref().map_or("", |a| a.as_str());
            let dst = rsp
                .extensions()
                .get::<DstLabels>()
                .cloned()
                .unwrap_or_default();
            let labels = metrics.request_labels(direction, authority, tls, dst);
            metrics.request(&labels);
            let status = rsp.status();
            let elapsed_ms = start.elapsed().as_secs_f64() * 1e3;
            metrics.latency(&labels, status.as_u16(), elapsed_ms);
            if let Some(event) = live.as_deref_mut() {
                event.responded(&labels.tls, &labels.dst, status.as_u16(), elapsed_ms);
            }
            let mut classifier = Classifier::new(
                status,
                rsp.headers(),
                grpc || headers::is_grpc(rsp.headers()),
            );
            let route = rsp.extensions_mut().remove::<RouteRecord>();
            if let Some(r) = &route {
                r.metrics.request(&r.labels, false);
                r.metrics
                    .latency(&r.labels, status.as_u16(), elapsed_ms, false);
                classifier = classifier.with_classes(r.classes.clone());
            }
            let recording = Recording {
                metrics,
                labels,
                status: status.as_u16(),
                classifier,
                route,
                live,
            };
            Ok(rsp.map(|inner| {
                super::body::boxed(RecordBody {
                    inner,
                    recording: Some(recording),
                })
            }))
        })
    }
}

// === impl Recording ===

impl Recording {
    fn finish(self, errored: bool) {
        let success = self.classifier.success(errored);
        self.metrics.response(&self.labels, self.status, success);
        if let Some(event) = self.live {
            self.metrics.live().publish(event, success);
        }
        if let Some(r) = self.route {
            r.metrics.response(&r.labels, self.status, success, false);
            if r.actual {
                r.metrics.response(&r.labels, self.status, success, true);
            }
        }
    }
}

// === impl RecordBody ===

impl Body for RecordBody {
    type Data = Bytes;
    type Error = crate::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let res = futures::ready!(this.inner.poll_frame(cx));
        match &res {
            Some(Ok(frame)) => {
                if let (Some(trailers), Some(r)) = (frame.trailers_ref(), this.recording.as_mut()) {
                    r.classifier.trailers(trailers);
                }
            }
            Some(Err(_)) => {
                if let Some(r) = this.recording.take() {
                    r.finish(true);
                }
            }
            None => {
                if let Some(r) = this.recording.take() {
                    r.finish(false);
                }
            }
        }
        Poll::Ready(res)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
