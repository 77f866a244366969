//! HTTP plumbing shared by the modes: a bounded HTTP/1.1 + h2c server loop
//! with graceful stop, a pooled client, and small response helpers.

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt as _, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// At most this many connections are served at once; further clients wait
/// in the listen backlog instead of growing memory.
pub const MAX_CONNECTIONS: usize = 1024;

/// A client must send a request's headers within this time, including the
/// next request on an idle keep-alive connection (hyper closes it then).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long in-flight requests may take to finish once the server stops.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// Bodies read by the clients are cut off at this size.
pub const MAX_BODY: usize = 1 << 20;

/// The body type every handler answers with.
pub type Body = Full<Bytes>;

/// Serves HTTP/1.1 and h2c (prior knowledge) on `listener` until `stop`
/// is cancelled, then stops accepting, lets in-flight requests finish (at
/// most [`STOP_GRACE`]) and returns.
///
/// `handler` gets each request and the TCP peer of its connection.
pub async fn serve<H, F>(listener: TcpListener, handler: H, stop: CancellationToken)
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    accept_each(listener, stop, move |stream, peer, stop| {
        let handler = handler.clone();
        async move {
            let _ = stream.set_nodelay(true);
            let svc = hyper::service::service_fn(move |req| {
                let rsp = handler(req, peer);
                async move { Ok::<_, Infallible>(rsp.await) }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(true);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(256)
                .keep_alive_interval(Duration::from_secs(20))
                .keep_alive_timeout(Duration::from_secs(10));
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    match tokio::time::timeout(STOP_GRACE, conn.as_mut()).await {
                        Ok(r) => r,
                        Err(_) => {
                            tracing::debug!(%peer, "connection still busy after the stop grace");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        }
    })
    .await;
}

/// The accept loop every server mode shares: at most [`MAX_CONNECTIONS`]
/// connections at once (further clients wait in the listen backlog), a
/// short back-off when accepting fails (EMFILE and friends) instead of
/// spinning, and on `stop`: no more accepts, then wait for the connections'
/// tasks (each gets `stop` too, to wind down).
pub async fn accept_each<H, F>(listener: TcpListener, stop: CancellationToken, handle: H)
where
    H: Fn(TcpStream, SocketAddr, CancellationToken) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let tracker = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => break,
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let conn = handle(stream, peer, stop.clone());
        tracker.spawn(async move {
            let _permit = permit;
            conn.await;
        });
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut rsp = Response::new(Full::new(Bytes::from(value.to_string())));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    rsp
}

/// A plain-text response.
pub fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut rsp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *rsp.status_mut() = status;
    rsp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    rsp
}

/// The pooled HTTP/1.1 client used for upstream calls and load.
pub type Client = hyper_util::client::legacy::Client<HttpConnector, Empty<Bytes>>;

/// A client that keeps connections alive (as real apps do, which matters
/// for how a mesh balances them) and connects with a bounded timeout.
pub fn client(connect_timeout: Duration) -> Client {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .build(connector)
}

/// Does one GET with an overall `timeout` (headers and body), returning the
/// status and the body (at most [`MAX_BODY`]); errors are readable strings
/// with their causes, ready for logs and `recent_errors`.
pub async fn get(
    client: &Client,
    uri: &Uri,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), String> {
    let exchange = async {
        let rsp = client.get(uri.clone()).await.map_err(|e| error_chain(&e))?;
        let status = rsp.status();
        let body = Limited::new(rsp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e}"))?
            .to_bytes();
        Ok((status, body))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {} ms", timeout.as_millis())),
    }
}

/// An error and all its sources, `outer: inner: ...` (hyper's own messages
/// such as "client error (Connect)" say little without them).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        source = e.source();
    }
    out
}

/// Parses a URL for the client modes; only `http://` is served by the
/// plain connector, so anything else is refused up front.
pub fn parse_url(url: &str) -> anyhow::Result<Uri> {
    let uri: Uri = url
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid URL {url:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http") if uri.authority().is_some() => Ok(uri),
        _ => anyhow::bail!("invalid URL {url:?}: expected http://HOST[:PORT]/PATH"),
    }
}
