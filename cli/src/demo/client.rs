//! HTTP clients of the demo: apps reaching other services through their
//! own proxy (as an application with `http_proxy` set does), and one-shot
//! requests to admin servers.

use anyhow::Context;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::net::TcpStream;

/// How long one request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Kept-alive connections per client; more concurrent requests open
/// more, and close them after use.
const MAX_IDLE: usize = 8;

/// Largest response body read (a proxy's `/metrics` is far smaller).
const MAX_BODY: usize = 16 << 20;

/// A response: status and body.
pub type Answer = (u16, Bytes);

/// `GET`s through a proxy's outbound listener with absolute-form URIs
/// (`http://books.weft-demo.svc.cluster.local:8080/books/1`), so the
/// proxy routes each request by its authority. Connections are kept alive
/// and reused, at most [`MAX_IDLE`] of them.
pub struct ProxyClient {
    outbound: SocketAddr,
    idle: Mutex<Vec<SendRequest<Empty<Bytes>>>>,
}

// === impl ProxyClient ===

impl ProxyClient {
    /// A client of the proxy whose outbound listener is `outbound`.
    pub fn new(outbound: SocketAddr) -> Self {
        Self {
            outbound,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// `GET uri` through the proxy, within [`REQUEST_TIMEOUT`].
    pub async fn get(&self, uri: &str) -> anyhow::Result<Answer> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.get_inner(uri))
            .await
            .with_context(|| format!("GET {uri} via {} timed out", self.outbound))?
    }

    async fn get_inner(&self, uri: &str) -> anyhow::Result<Answer> {
        if let Some(mut conn) = self.take_idle() {
            // A kept-alive connection may have been closed by the proxy
            // meanwhile; every demo request is a GET, safe to send again
            // on a new connection.
            if let Ok(answer) = send(&mut conn, get(uri, None)?).await {
                self.put_back(conn);
                return Ok(answer);
            }
        }
        let mut conn = connect(self.outbound).await?;
        let answer = send(&mut conn, get(uri, None)?)
            .await
            .with_context(|| format!("GET {uri} via {}", self.outbound))?;
        self.put_back(conn);
        Ok(answer)
    }

    fn take_idle(&self) -> Option<SendRequest<Empty<Bytes>>> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(conn) = idle.pop() {
            if !conn.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    fn put_back(&self, conn: SendRequest<Empty<Bytes>>) {
        if conn.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
        }
    }
}

/// `GET path` on `addr` over a new connection (an admin server's
/// `/ready` or `/metrics`), within `timeout`.
pub async fn fetch(addr: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<Answer> {
    let req = get(path, Some(addr))?;
    let answer = async {
        let mut conn = connect(addr).await?;
        send(&mut conn, req).await
    };
    tokio::time::timeout(timeout, answer)
        .await
        .with_context(|| format!("GET http://{addr}{path} timed out"))?
        .with_context(|| format!("GET http://{addr}{path}"))
}

fn get(uri: &str, host: Option<SocketAddr>) -> anyhow::Result<Request<Empty<Bytes>>> {
    let mut req = Request::get(uri);
    if let Some(host) = host {
        req = req.header(http::header::HOST, host.to_string());
    }
    Ok(req.body(Empty::new())?)
}

async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (conn, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // The driver ends when the connection closes (the sender dropped or
    // the peer closed), so the task never outlives it.
    tokio::spawn(driver);
    Ok(conn)
}

async fn send(
    conn: &mut SendRequest<Empty<Bytes>>,
    req: Request<Empty<Bytes>>,
) -> anyhow::Result<Answer> {
    conn.ready().await?;
    let rsp = conn.send_request(req).await?;
    let status = rsp.status().as_u16();
    let body = Limited::new(rsp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the response body: {e}"))?
        .to_bytes();
    Ok((status, body))
}
