//! Backends the proxy forwards to: an HTTP server (HTTP/1 and HTTP/2), a
//! TCP echo server, and a server-speaks-first TCP server.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// An HTTP/1 + HTTP/2 server with a few useful routes:
///
/// - `/` → `200 hello`, with headers describing what arrived
///   (`x-version`, `x-host`, `x-orig-proto`, `x-conn`);
/// - `/status/N` → status N;
/// - `/slow/MS` → waits MS milliseconds, then `200`;
/// - `/bytes/N` → streams N bytes in 64 KiB chunks;
/// - `/echo` → streams the request body back;
/// - `/count` → reads the whole body and answers with its length.
///
/// [`HttpBackend::set_failure_percent`] makes a share of requests fail with
/// `500` (after reading the body, answering `failed after N bytes`), and
/// requests carrying `l5d-retry-attempt` are counted as retries.
#[derive(Debug)]
pub struct HttpBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    state: Arc<State>,
    task: JoinHandle<()>,
}

/// Behaviour shared by a backend's connections.
#[derive(Debug, Default)]
struct State {
    failure_percent: AtomicUsize,
    retries: AtomicUsize,
}

/// A TCP server that echoes every byte; with a banner it speaks first.
#[derive(Debug)]
pub struct TcpServer {
    /// Where it listens.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl HttpBackend {
    /// Starts the server on a free loopback port.
    pub async fn start() -> Self {
        Self::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts the server on `addr` (port 0: a free one).
    pub async fn bind(addr: SocketAddr) -> Self {
        Self::bind_with_delay(addr, Duration::ZERO).await
    }

    /// A loopback server that waits `delay` before answering every
    /// request: a slow replica.
    pub async fn start_with_delay(delay: Duration) -> Self {
        Self::bind_with_delay(SocketAddr::from(([127, 0, 0, 1], 0)), delay).await
    }

    async fn bind_with_delay(addr: SocketAddr, delay: Duration) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind backend");
        let addr = listener.local_addr().expect("backend address");
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let state = Arc::new(State::default());
        let (c, r, st) = (connections.clone(), requests.clone(), state.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let conn_id = c.fetch_add(1, Ordering::SeqCst);
                let (r, st) = (r.clone(), st.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        r.fetch_add(1, Ordering::SeqCst);
                        let st = st.clone();
                        async move {
                            if req.headers().contains_key("l5d-retry-attempt") {
                                st.retries.fetch_add(1, Ordering::SeqCst);
                            }
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            let percent = st.failure_percent.load(Ordering::SeqCst);
                            if percent > 0 && fastrand::usize(..100) < percent {
                                return fail(req).await;
                            }
                            handle(req, conn_id).await
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            connections,
            requests,
            state,
            task,
        }
    }

    /// From now on, fail this share (0–100) of requests with `500`.
    pub fn set_failure_percent(&self, percent: usize) {
        self.state
            .failure_percent
            .store(percent.min(100), Ordering::SeqCst);
    }

    /// Requests received that carried `l5d-retry-attempt` (proxy retries).
    pub fn retries(&self) -> usize {
        self.state.retries.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Requests served so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// An injected failure: reads the body (so its size can be checked),
/// then answers `500 failed after N bytes`.
async fn fail(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let mut body = req.into_body();
    let mut n: u64 = 0;
    while let Some(Ok(f)) = body.frame().await {
        n += f.data_ref().map_or(0, |d| d.len() as u64);
    }
    let mut rsp = Response::new(full(format!("failed after {n} bytes")));
    *rsp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    Ok(rsp)
}

async fn handle(req: Request<Incoming>, conn: usize) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (head, arg) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut rsp = match head {
        "status" => {
            let mut rsp = Response::new(full(format!("status {arg}\n")));
            *rsp.status_mut() = arg
                .parse::<u16>()
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::BAD_REQUEST);
            rsp
        }
        "slow" => {
            tokio::time::sleep(Duration::from_millis(arg.parse().unwrap_or(100))).await;
            Response::new(full("slow\n"))
        }
        "bytes" => {
            let total: u64 = arg.parse().unwrap_or(0);
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let stream = futures::stream::unfold(total, move |left| {
                let chunk = chunk.clone();
                async move {
                    if left == 0 {
                        return None;
                    }
                    let n = left.min(chunk.len() as u64);
                    Some((
                        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(
                            chunk.slice(..n as usize),
                        )),
                        left - n,
                    ))
                }
            });
            Response::new(BodyExt::boxed(StreamBody::new(stream)))
        }
        "echo" => Response::new(req.into_body().map_err(Into::into).boxed()),
        "count" => {
            let mut body = req.into_body();
            let mut n: u64 = 0;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => n += f.data_ref().map_or(0, |d| d.len() as u64),
                    Err(e) => return Ok(Response::new(full(format!("error after {n}: {e}")))),
                }
            }
            Response::new(full(n.to_string()))
        }
        _ => {
            let mut rsp = Response::new(full("hello\n"));
            let h = rsp.headers_mut();
            h.insert(
                "x-version",
                format!("{:?}", req.version())
                    .parse()
                    .expect("header value"),
            );
            let host = req
                .headers()
                .get("host")
                .cloned()
                .or_else(|| req.uri().authority().and_then(|a| a.as_str().parse().ok()));
            if let Some(host) = host {
                h.insert("x-host", host);
            }
            h.insert(
                "x-orig-proto",
                req.headers()
                    .contains_key("l5d-orig-proto")
                    .to_string()
                    .parse()
                    .expect("header value"),
            );
            rsp
        }
    };
    rsp.headers_mut()
        .insert("x-conn", conn.to_string().parse().expect("header value"));
    Ok(rsp)
}

impl TcpServer {
    /// An echo server (client speaks first).
    pub async fn echo() -> Self {
        Self::start(None).await
    }

    /// Writes `banner` as soon as a client connects, then echoes.
    pub async fn server_first(banner: &'static [u8]) -> Self {
        Self::start(Some(banner)).await
    }

    /// An echo server on `addr` (port 0: a free one).
    pub async fn echo_on(addr: SocketAddr) -> Self {
        Self::start_on(addr, None).await
    }

    async fn start(banner: Option<&'static [u8]>) -> Self {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), banner).await
    }

    async fn start_on(addr: SocketAddr, banner: Option<&'static [u8]>) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind tcp server");
        let addr = listener.local_addr().expect("tcp server address");
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    if let Some(banner) = banner {
                        if stream.write_all(banner).await.is_err() {
                            return;
                        }
                    }
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if stream.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        Self { addr, task }
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
