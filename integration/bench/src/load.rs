//! Load generation, the backend, and `/proc` readings.

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Mutex};
use tokio::time::Instant;

/// Longest latency the histogram records (60 s, in microseconds).
const MAX_LATENCY_US: u64 = 60_000_000;

/// What one fixed-rate run measured.
pub struct RunResult {
    /// Corrected latencies, in microseconds.
    pub histogram: Histogram<u64>,
    /// Requests answered with 200.
    pub completed: u64,
    /// Requests that failed or got another status.
    pub errors: u64,
    /// Achieved rate over the measured window.
    pub achieved_rps: f64,
}

impl RunResult {
    /// The latency at quantile `q`, in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.histogram.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Serves `body_len` bytes to every request, reading (and dropping) any
/// request body. Runs in its own process, on one thread.
pub async fn serve_backend(addr: SocketAddr, body_len: usize) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("backend bind {addr}"))?;
    serve(listener, body_len, Arc::default()).await
}

/// What an in-process backend does, changeable while it runs: answer
/// after `delay_ms` (a replica turning slow), fail `failure_percent` of
/// requests with `500`; `requests` counts what arrived.
#[derive(Debug, Default)]
pub struct Faults {
    /// Delay before every answer, in milliseconds.
    pub delay_ms: AtomicU64,
    /// Share of requests (0–100) answered with `500`.
    pub failure_percent: AtomicU64,
    /// Requests received.
    pub requests: AtomicU64,
}

/// The backend loop, behaving as `faults` says.
pub async fn serve(
    listener: TcpListener,
    body_len: usize,
    faults: Arc<Faults>,
) -> anyhow::Result<()> {
    let body = Bytes::from(vec![b'w'; body_len]);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let (body, faults) = (body.clone(), faults.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let body = body.clone();
                faults.requests.fetch_add(1, Ordering::Relaxed);
                let delay = Duration::from_millis(faults.delay_ms.load(Ordering::Relaxed));
                let fail = fastrand::u64(..100) < faults.failure_percent.load(Ordering::Relaxed);
                async move {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let _ = req.into_body().collect().await;
                    let mut rsp = Response::new(Full::new(body));
                    if fail {
                        *rsp.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    Ok::<_, Infallible>(rsp)
                }
            });
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
        });
    }
}

/// Waits until something accepts connections on `addr`.
pub async fn wait_listening(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            anyhow::bail!("nothing listening on {addr} after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// One HTTP/1 connection for sequential requests, replaced when it breaks.
pub struct Client {
    addr: SocketAddr,
    send: tokio::sync::Mutex<SendRequest<Empty<Bytes>>>,
}

impl Client {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        Ok(Self {
            addr,
            send: tokio::sync::Mutex::new(connect(addr).await?),
        })
    }

    /// GETs `uri`; true on `200`. A failed request reconnects.
    pub async fn get(&self, uri: &str) -> bool {
        let mut send = self.send.lock().await;
        let ok = request_once(&mut send, uri).await;
        if !ok {
            if let Ok(fresh) = connect(self.addr).await {
                *send = fresh;
            }
        }
        ok
    }
}

async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(send)
}

/// How the load generator behaves as a client.
#[derive(Clone, Copy, Debug)]
pub struct ClientPolicy {
    /// A request slower than this counts as failed (its connection is
    /// replaced, as a client with a deadline would).
    pub timeout: Option<Duration>,
    /// Attempts per request: above 1 the client itself retries failures
    /// at once (the naive policy retry budgets exist to replace).
    pub attempts: u32,
}

impl Default for ClientPolicy {
    fn default() -> Self {
        Self {
            timeout: None,
            attempts: 1,
        }
    }
}

/// Sends one request (with up to `policy.attempts` tries) and drains the
/// response; true on `200` within the timeout (when given).
async fn request(send: &mut SendRequest<Empty<Bytes>>, uri: &str, policy: ClientPolicy) -> bool {
    let tries = async {
        for _ in 0..policy.attempts.max(1) {
            if request_once(send, uri).await {
                return true;
            }
        }
        false
    };
    match policy.timeout {
        None => tries.await,
        Some(t) => tokio::time::timeout(t, tries).await.unwrap_or(false),
    }
}

async fn request_once(send: &mut SendRequest<Empty<Bytes>>, uri: &str) -> bool {
    if send.ready().await.is_err() {
        return false;
    }
    let Ok(req) = Request::get(uri)
        .header("host", "bench.weft")
        .body(Empty::new())
    else {
        return false;
    };
    match send.send_request(req).await {
        Ok(rsp) => {
            let ok = rsp.status() == 200;
            ok && rsp.into_body().collect().await.is_ok()
        }
        Err(_) => false,
    }
}

/// Open-loop load: `rate` requests per second for `duration` (after one
/// second of warm-up at the same rate), over at most `connections`
/// connections. Latency is measured from when each request is issued on
/// schedule, including any wait for a free connection.
pub async fn open_loop(
    addr: SocketAddr,
    uri: &str,
    rate: u32,
    duration: Duration,
    connections: usize,
) -> anyhow::Result<RunResult> {
    open_loop_with(
        addr,
        uri,
        rate,
        duration,
        connections,
        ClientPolicy::default(),
    )
    .await
}

/// [`open_loop`] where a request slower than `timeout` counts as failed
/// (its connection is replaced, as a client with a deadline would).
pub async fn open_loop_with_timeout(
    addr: SocketAddr,
    uri: &str,
    rate: u32,
    duration: Duration,
    connections: usize,
    timeout: Option<Duration>,
) -> anyhow::Result<RunResult> {
    let policy = ClientPolicy {
        timeout,
        ..ClientPolicy::default()
    };
    open_loop_with(addr, uri, rate, duration, connections, policy).await
}

/// [`open_loop`] with a client `policy` (timeout, client-side retries).
pub async fn open_loop_with(
    addr: SocketAddr,
    uri: &str,
    rate: u32,
    duration: Duration,
    connections: usize,
    policy: ClientPolicy,
) -> anyhow::Result<RunResult> {
    let warmup = rate as u64; // one second's worth
    let measured = rate as u64 * duration.as_secs();
    let total = warmup + measured;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);

    // The schedule: request i is due at start + i * interval. Its latency
    // runs from the moment the dispatcher issues it, so time spent queued
    // behind busy connections counts (no coordinated omission) while the
    // dispatcher's own timer granularity (tokio's timer ticks in 1 ms) does
    // not.
    let (tx, rx) = mpsc::channel::<(u64, Instant)>(total as usize);
    let rx = Arc::new(Mutex::new(rx));
    let errors = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..connections {
        let mut send = connect(addr).await?;
        let (rx, errors, uri) = (rx.clone(), errors.clone(), uri.to_string());
        workers.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3)?;
            loop {
                let next = rx.lock().await.recv().await;
                let Some((i, issued)) = next else { break };
                let ok = request(&mut send, &uri, policy).await;
                if i < warmup {
                    continue;
                }
                if ok {
                    let us = issued.elapsed().as_micros() as u64;
                    hist.record(us.clamp(1, MAX_LATENCY_US))?;
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    // A broken connection is replaced, as a client would.
                    if let Ok(fresh) = connect(addr).await {
                        send = fresh;
                    }
                }
            }
            anyhow::Ok(hist)
        }));
    }

    let start = Instant::now() + Duration::from_millis(50);
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        tx.send((i, Instant::now()))
            .await
            .context("workers stopped")?;
    }
    drop(tx);
    let mut histogram = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3)?;
    for w in workers {
        histogram.add(w.await??)?;
    }
    let window = start.elapsed().as_secs_f64() - 1.0;
    let completed = histogram.len();
    Ok(RunResult {
        achieved_rps: completed as f64 / window.max(0.001),
        histogram,
        completed,
        errors: errors.load(Ordering::Relaxed),
    })
}

/// Closed-loop saturation: each connection sends its next request as soon
/// as the previous one completes. Returns completed requests per second.
pub async fn saturate(
    addr: SocketAddr,
    uri: &str,
    duration: Duration,
    connections: usize,
) -> anyhow::Result<f64> {
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let mut send = connect(addr).await?;
        let uri = uri.to_string();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                if request(&mut send, &uri, ClientPolicy::default()).await {
                    n += 1;
                }
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await?;
    }
    Ok(total as f64 / duration.as_secs_f64())
}

/// CPU time (user + system) used so far by `pid`, in milliseconds.
pub fn cpu_ms(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces) start at ")".
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the full line: 12 and 13 here.
    let ticks: f64 = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    // Linux reports in USER_HZ, which is 100 on every mainstream platform.
    ticks * 10.0
}
