//! Minimal HTTP clients over fresh connections, so a test controls exactly
//! which connection carries which request.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends one request over a new HTTP/1.1 connection to `addr`. The URI is
/// written as given, so an absolute URI makes this a proxy request.
pub async fn send_h1<B>(addr: SocketAddr, req: Request<B>) -> anyhow::Result<Response<Incoming>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let io = TokioIo::new(TcpStream::connect(addr).await?);
    let (mut send, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(conn.with_upgrades());
    Ok(send.send_request(req).await?)
}

/// Sends one request over a new HTTP/2 (prior knowledge) connection.
pub async fn send_h2<B>(addr: SocketAddr, req: Request<B>) -> anyhow::Result<Response<Incoming>>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let io = TokioIo::new(TcpStream::connect(addr).await?);
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
    tokio::spawn(conn);
    Ok(send.send_request(req).await?)
}

/// `GET path` on `addr` over HTTP/1.1; returns the status and body.
pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let req = Request::get(path)
        .header("host", addr.to_string())
        .body(Full::new(Bytes::new()))?;
    let rsp = tokio::time::timeout(Duration::from_secs(5), send_h1(addr, req)).await??;
    let status = rsp.status().as_u16();
    let body = rsp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// `GET uri` through a proxy: sent over a new HTTP/1.1 connection to its
/// outbound listener `outbound` with `uri` absolute (proxy-form, as an
/// `http_proxy` client sends it), so the proxy routes by `uri` alone.
/// Returns the status and the whole body, so the connection is done with
/// when it returns.
pub async fn get_through(outbound: SocketAddr, uri: &str) -> anyhow::Result<(u16, String)> {
    let req = Request::get(uri).body(Empty::<Bytes>::new())?;
    let rsp = send_h1(outbound, req).await?;
    let status = rsp.status().as_u16();
    Ok((status, body_string(rsp).await?))
}

/// Collects a response body as a string.
pub async fn body_string(rsp: Response<Incoming>) -> anyhow::Result<String> {
    let body = rsp.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Writes `bytes` on a new connection and reads until the peer closes or
/// `timeout` passes. Returns what was read, or the error that ended it.
pub async fn raw(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(bytes).await?;
    let mut out = Vec::new();
    match tokio::time::timeout(timeout, stream.read_to_end(&mut out)).await {
        Ok(Ok(_)) | Err(_) => Ok(out),
        Ok(Err(e)) => Err(e),
    }
}
