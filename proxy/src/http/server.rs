//! Serving a detected HTTP connection.
//!
//! Each connection is served by hyper with bounded resources: a header read
//! timeout (slow clients cannot hold a connection open), a cap on HTTP/2
//! streams, HTTP/2 keepalive pings to notice dead peers, and an idle timeout
//! after which a connection with no request in flight is closed. When the
//! proxy drains, the connection finishes its in-flight requests and closes.

use super::body::{self, BoxBody};
use crate::drain::Drain;
use crate::HttpVersion;
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use pin_project_lite::pin_project;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

/// Limits applied to every served connection.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// Close a connection with no request in flight after this long. For
    /// HTTP/1 this is also the time allowed to send a request's headers.
    pub idle_timeout: Duration,
    /// HTTP/2 streams allowed at once per connection.
    pub max_concurrent_streams: u32,
}

/// Tracks requests in flight on one connection, to tell when it is idle.
#[derive(Clone, Debug)]
struct Activity(Arc<ActivityInner>);

#[derive(Debug)]
struct ActivityInner {
    in_flight: AtomicUsize,
    last: Mutex<Instant>,
}

/// Decrements the in-flight count when the response body is done.
#[derive(Debug)]
struct InFlight(Activity);

pin_project! {
    /// A response body holding its connection's in-flight marker.
    pub struct TrackedBody {
        #[pin]
        inner: BoxBody,
        _in_flight: InFlight,
    }
}

/// The per-connection HTTP stack, type-erased so that each side can
/// compose its own layers.
pub type HttpService =
    tower::util::BoxCloneSyncService<Request<BoxBody>, Response<BoxBody>, Infallible>;

/// Serves one HTTP connection with `svc` until the client closes it, it
/// idles out, the proxy drains, or `revoked` resolves (the connection's
/// authorization was withdrawn): the last three close it gracefully,
/// letting requests in flight finish.
pub async fn serve<I>(
    io: I,
    version: HttpVersion,
    svc: HttpService,
    drain: &Drain,
    settings: &ServerSettings,
    revoked: impl Future<Output = ()>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let tracked = {
        let activity = activity.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let in_flight = activity.start();
            // Boxed before the async block: rustc cannot otherwise prove the
            // stack's future `Send` for every lifetime hyper asks about.
            let rsp: Pin<Box<dyn Future<Output = Result<Response<BoxBody>, Infallible>> + Send>> =
                Box::pin(tower::ServiceExt::oneshot(
                    svc.clone(),
                    req.map(body::boxed),
                ));
            async move {
                let rsp = rsp.await?;
                Ok::<_, Infallible>(rsp.map(|inner| TrackedBody {
                    inner,
                    _in_flight: in_flight,
                }))
            }
        })
    };
    let io = TokioIo::new(io);
    match version {
        HttpVersion::Http1 => {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(settings.idle_timeout)
                .keep_alive(true)
                .serve_connection(io, tracked)
                .with_upgrades();
            drive(
                conn,
                |c| c.graceful_shutdown(),
                drain,
                &activity,
                settings.idle_timeout,
                revoked,
            )
            .await
        }
        HttpVersion::Http2 => {
            let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_concurrent_streams(settings.max_concurrent_streams)
                .keep_alive_interval(Duration::from_secs(20))
                .keep_alive_timeout(Duration::from_secs(10))
                .serve_connection(io, tracked);
            drive(
                conn,
                |c| c.graceful_shutdown(),
                drain,
                &activity,
                settings.idle_timeout,
                revoked,
            )
            .await
        }
    }
}

/// Polls the connection, asking it to close gracefully on drain or idle.
async fn drive<C, F>(
    conn: C,
    shutdown: F,
    drain: &Drain,
    activity: &Activity,
    idle_timeout: Duration,
    revoked: impl Future<Output = ()>,
) where
    C: std::future::Future<Output = Result<(), hyper::Error>>,
    F: Fn(Pin<&mut C>),
{
    tokio::pin!(conn);
    tokio::pin!(revoked);
    let mut closing = false;
    loop {
        let idle_at = activity.idle_deadline(idle_timeout);
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(error) = res {
                    tracing::debug!(%error, "HTTP connection closed with error");
                }
                return;
            }
            _ = drain.signaled(), if !closing => {
                shutdown(conn.as_mut());
                closing = true;
            }
            _ = revoked.as_mut(), if !closing => {
                tracing::info!("HTTP connection no longer authorized; closing it");
                shutdown(conn.as_mut());
                closing = true;
            }
            _ = tokio::time::sleep_until(idle_at.unwrap_or_else(Instant::now)), if !closing && idle_at.is_some() => {
                if activity.is_idle(idle_timeout) {
                    tracing::debug!("closing idle HTTP connection");
                    shutdown(conn.as_mut());
                    closing = true;
                }
            }
        }
    }
}

// === impl Activity ===

impl Activity {
    fn new() -> Self {
        Self(Arc::new(ActivityInner {
            in_flight: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        }))
    }

    fn start(&self) -> InFlight {
        self.0.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        InFlight(self.clone())
    }

    fn touch(&self) {
        if let Ok(mut last) = self.0.last.lock() {
            *last = Instant::now();
        }
    }

    /// When the connection will have been idle for `timeout`, or `None`
    /// while requests are in flight.
    fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.0.in_flight.load(Ordering::Acquire) > 0 {
            // Re-check periodically; in-flight requests end without waking us.
            return Some(Instant::now() + timeout);
        }
        self.0.last.lock().ok().map(|last| *last + timeout)
    }

    fn is_idle(&self, timeout: Duration) -> bool {
        self.0.in_flight.load(Ordering::Acquire) == 0
            && self
                .0
                .last
                .lock()
                .map(|last| last.elapsed() >= timeout)
                .unwrap_or(false)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0 .0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.touch();
    }
}

// === impl TrackedBody ===

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = crate::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
