//! `weft-bench-allocs`: heap allocations per proxied request, counted
//! rather than estimated.
//!
//! The proxy runs **in this process** (`weft_proxy::app::run` on its own
//! thread and runtime, as the `weft-proxy` binary starts it) so that a
//! counting global allocator sees its allocations. It is a discovering
//! client proxy: identity and the destination service come from a real
//! `weft-controller` child process (not counted) whose config dir holds
//! Service `api` in namespace `bench` with three endpoints, in-process
//! HTTP backends that answer every request with `200` and a 1 KiB body.
//!
//! Each path is a closed loop of `--requests` GETs over one keep-alive
//! HTTP/1.1 connection, measured after the path has answered `200` once
//! and after `--warmup` requests on that connection:
//!
//! - `direct`: client → backend (the baseline: the client's and the
//!   backend's own allocations);
//! - `inbound`: client → proxy inbound (`WEFT_PROXY_INBOUND_FORWARD`) →
//!   backend;
//! - `outbound-passthrough`: client → proxy outbound with authority
//!   `127.0.0.1:PORT` of a backend, an address the controller does not
//!   know;
//! - `outbound-discovered`: client → proxy outbound with authority
//!   `api.bench.svc.cluster.local`, resolved and balanced over the three
//!   endpoints.
//!
//! Everything in the process is counted (client, backends, proxy and the
//! proxy's background tasks), so a path's figures minus `direct`'s are
//! what the proxy adds per request. A path whose requests did not reach
//! the backends it should (backend 0, or the balanced ones) fails
//! the run. No tracing subscriber is installed, so the proxy logs nothing
//! (`WEFT_PROXY_LOG` is read by the `weft-proxy` binary, not the library).
//! Wall times include the counting allocator's bookkeeping and are an
//! aside, not a latency figure.

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use clap::Parser;
use http::header::{HeaderValue, HOST};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use stats_alloc::{Region, Stats, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use weft_test_support::controller::{identity, ControllerProcess};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Backends behind Service `api` (backend 0 also serves the inbound and
/// passthrough paths).
const BACKENDS: usize = 3;

/// The discovered path's authority.
const SERVICE: &str = "api.bench.svc.cluster.local";

/// How long the proxy may take to become ready, and a path to answer 200.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Flags of `weft-bench-allocs`.
#[derive(Debug, Parser)]
#[command(
    name = "weft-bench-allocs",
    about = "Heap allocations per request through an in-process weft-proxy, against a direct baseline"
)]
struct Args {
    /// Measured requests per path.
    #[arg(long, default_value_t = 20_000)]
    requests: u64,
    /// Requests sent on the measured connection before measuring.
    #[arg(long, default_value_t = 1_000)]
    warmup: u64,
    /// Paths to measure (`direct`, the baseline, is always measured first).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,inbound,outbound-passthrough,outbound-discovered"
    )]
    paths: Vec<PathKind>,
    /// Response body size in bytes.
    #[arg(long, default_value_t = 1024)]
    body: usize,
    /// The proxy's worker threads (`WEFT_PROXY_CORES`).
    #[arg(long, default_value_t = 1)]
    proxy_cores: usize,
    /// The weft-controller binary (default: beside this one).
    #[arg(long, value_name = "PATH")]
    controller_bin: Option<PathBuf>,
    /// Also write the figures as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// Where the client's requests go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
enum PathKind {
    /// client → backend.
    Direct,
    /// client → proxy inbound → backend.
    Inbound,
    /// client → proxy outbound (an address the controller does not know) → backend.
    OutboundPassthrough,
    /// client → proxy outbound (`api.bench.svc.cluster.local`) → balanced backends.
    OutboundDiscovered,
}

/// One path's counts over the measured loop.
#[derive(Debug, serde::Serialize)]
struct PathFigures {
    path: PathKind,
    requests: u64,
    allocations: usize,
    deallocations: usize,
    reallocations: usize,
    bytes_allocated: usize,
    bytes_deallocated: usize,
    /// Requests each backend received during the loop.
    backend_requests: Vec<u64>,
    wall_us_per_request: f64,
}

/// The figures, printed and optionally written as JSON.
#[derive(Debug, serde::Serialize)]
struct Figures {
    requests: u64,
    warmup: u64,
    body_bytes: usize,
    proxy_cores: usize,
    paths: Vec<PathFigures>,
    /// Allocations per second in the whole process with no traffic, after
    /// the paths (the proxy's timers and control-plane streams); `None`
    /// without a proxy.
    idle_allocations_per_sec: Option<f64>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let result = run(&args).and_then(|figures| {
        println!("{}", markdown(&figures));
        if let Some(path) = &args.json {
            std::fs::write(path, serde_json::to_string_pretty(&figures)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft-bench-allocs: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Starts the backends (and, for proxied paths, the controller and the
/// proxy), then measures every path in turn.
fn run(args: &Args) -> anyhow::Result<Figures> {
    ensure!(args.requests > 0, "need --requests ≥ 1");
    ensure!(
        (1..=64).contains(&args.proxy_cores),
        "--proxy-cores must be 1..=64"
    );
    let mut paths = vec![PathKind::Direct];
    for p in &args.paths {
        if !paths.contains(p) {
            paths.push(*p);
        }
    }
    let backends = Backends::start(args.body)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the client's runtime")?;
    runtime.block_on(measure_all(args, &paths, &backends))
}

/// The in-process backends: their addresses and request counters.
struct Backends {
    addrs: Vec<SocketAddr>,
    requests: Vec<Arc<AtomicU64>>,
}

impl Backends {
    /// Binds `BACKENDS` loopback listeners and serves them on their own
    /// thread and single-threaded runtime.
    fn start(body_len: usize) -> anyhow::Result<Self> {
        let mut listeners = Vec::new();
        let mut addrs = Vec::new();
        let mut requests = Vec::new();
        for _ in 0..BACKENDS {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            listener.set_nonblocking(true)?;
            addrs.push(listener.local_addr()?);
            listeners.push(listener);
            requests.push(Arc::new(AtomicU64::new(0)));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the backends' runtime")?;
        let counters = requests.clone();
        std::thread::Builder::new()
            .name("backends".into())
            .spawn(move || {
                let body = Bytes::from(vec![b'w'; body_len]);
                let result = runtime.block_on(async move {
                    let mut tasks = tokio::task::JoinSet::new();
                    for (listener, counter) in listeners.into_iter().zip(counters) {
                        let listener = tokio::net::TcpListener::from_std(listener)?;
                        tasks.spawn(serve(listener, body.clone(), counter));
                    }
                    match tasks.join_next().await {
                        Some(Ok(result)) => result,
                        Some(Err(e)) => Err(e.into()),
                        None => Ok(()),
                    }
                });
                if let Err(e) = result {
                    eprintln!("weft-bench-allocs: backend stopped: {e:#}");
                }
            })
            .context("starting the backends' thread")?;
        Ok(Self { addrs, requests })
    }

    /// Requests each backend has received so far.
    fn counts(&self) -> Vec<u64> {
        self.requests
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }
}

/// Answers every request on `listener` with `200` and `body`, after
/// reading the request body, as `weft-bench`'s backend does.
async fn serve(
    listener: tokio::net::TcpListener,
    body: Bytes,
    requests: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let (body, requests) = (body.clone(), requests.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let body = body.clone();
                requests.fetch_add(1, Ordering::Relaxed);
                async move {
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(Response::new(Full::new(body)))
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// The in-process proxy's listeners.
struct Proxy {
    inbound: SocketAddr,
    outbound: SocketAddr,
    thread: std::thread::JoinHandle<()>,
}

/// Starts the controller and the proxy if any path needs them, measures
/// each path, then the idle process.
async fn measure_all(
    args: &Args,
    paths: &[PathKind],
    backends: &Backends,
) -> anyhow::Result<Figures> {
    // The controller (and its config dir) live until the end: dropping
    // them stops it.
    let (controller, proxy) = if paths.iter().any(|p| *p != PathKind::Direct) {
        let dir = tempfile::tempdir()?;
        write_service(dir.path(), &backends.addrs)?;
        let bin = match &args.controller_bin {
            Some(p) => p.clone(),
            None => std::env::current_exe()?.with_file_name("weft-controller"),
        };
        let ctl = ControllerProcess::start_with_config(&bin, "24h", dir.path())
            .await
            .context("starting weft-controller")?;
        let proxy = start_proxy(&ctl, backends.addrs[0], args.proxy_cores).await?;
        (Some((ctl, dir)), Some(proxy))
    } else {
        (None, None)
    };

    let mut figures = Vec::new();
    for &path in paths {
        let (connect, uri, host) = match (path, &proxy) {
            (PathKind::Direct, _) => (backends.addrs[0], "/".to_string(), "bench.weft".into()),
            (PathKind::Inbound, Some(p)) => (p.inbound, "/".to_string(), "bench.weft".into()),
            (PathKind::OutboundPassthrough, Some(p)) => {
                let authority = backends.addrs[0].to_string();
                (p.outbound, format!("http://{authority}/"), authority)
            }
            (PathKind::OutboundDiscovered, Some(p)) => (
                p.outbound,
                format!("http://{SERVICE}/"),
                SERVICE.to_string(),
            ),
            (_, None) => bail!("{path:?} needs the proxy"),
        };
        let f = measure(args, path, connect, &uri, &host, backends, proxy.as_ref()).await?;
        eprintln!(
            "{path:?}: {:.2} allocs/req, {:.0} bytes/req, {:.1} µs/req, backends {:?}",
            f.allocations as f64 / f.requests as f64,
            f.bytes_allocated as f64 / f.requests as f64,
            f.wall_us_per_request,
            f.backend_requests
        );
        figures.push(f);
    }

    let idle_allocations_per_sec = match &proxy {
        None => None,
        Some(_) => {
            let idle = Duration::from_secs(1);
            let region = Region::new(GLOBAL);
            tokio::time::sleep(idle).await;
            Some(region.change().allocations as f64 / idle.as_secs_f64())
        }
    };
    drop(controller);
    Ok(Figures {
        requests: args.requests,
        warmup: args.warmup,
        body_bytes: args.body,
        proxy_cores: args.proxy_cores,
        paths: figures,
        idle_allocations_per_sec,
    })
}

/// Writes Service `api` in namespace `bench` with `backends` as its
/// endpoints (`api.yaml` in the controller's config dir).
fn write_service(dir: &std::path::Path, backends: &[SocketAddr]) -> anyhow::Result<()> {
    let mut yaml = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: bench}\nspec:\n  ports: [{name: http, port: 80, targetPort: 8080}]\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: api, namespace: bench}\nsubsets:\n",
    );
    for addr in backends {
        yaml.push_str(&format!(
            "- addresses: [{{ip: {}}}]\n  ports: [{{name: http, port: {}}}]\n",
            addr.ip(),
            addr.port()
        ));
    }
    std::fs::write(dir.join("api.yaml"), yaml).context("writing the controller's config")
}

/// Starts the proxy in-process as a discovering client proxy with identity
/// `bench/client` (the settings `ControllerProcess::client_proxy` gives a
/// `weft-proxy` process), forwarding inbound to `forward`; waits until its
/// `/ready` answers 200.
async fn start_proxy(
    ctl: &ControllerProcess,
    forward: SocketAddr,
    cores: usize,
) -> anyhow::Result<Proxy> {
    let inbound = weft_test_support::free_addr();
    let outbound = weft_test_support::free_addr();
    let admin = weft_test_support::free_addr();
    let env: HashMap<&str, String> = [
        ("WEFT_PROXY_INBOUND_ADDR", inbound.to_string()),
        ("WEFT_PROXY_OUTBOUND_ADDR", outbound.to_string()),
        ("WEFT_PROXY_ADMIN_ADDR", admin.to_string()),
        ("WEFT_PROXY_INBOUND_FORWARD", forward.to_string()),
        ("WEFT_PROXY_CORES", cores.to_string()),
        ("WEFT_PROXY_IDENTITY_NAME", identity("bench", "client")),
        ("WEFT_PROXY_IDENTITY_ADDR", ctl.identity_addr.to_string()),
        (
            "WEFT_PROXY_IDENTITY_TOKEN_FILE",
            ctl.token("bench", "client")?.display().to_string(),
        ),
        (
            "WEFT_PROXY_TRUST_ANCHORS",
            ctl.anchors().display().to_string(),
        ),
        (
            "WEFT_PROXY_DESTINATION_ADDR",
            ctl.destination_addr.to_string(),
        ),
    ]
    .into_iter()
    .collect();
    let config = weft_proxy::config::Config::from_lookup(|k| env.get(k).cloned())
        .context("the proxy's configuration")?;
    // As the weft-proxy binary builds its runtime.
    let runtime = if config.cores == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.cores)
            .enable_all()
            .build()
    }
    .context("starting the proxy's runtime")?;
    let thread = std::thread::Builder::new()
        .name("weft-proxy".into())
        .spawn(move || {
            if let Err(e) = runtime.block_on(weft_proxy::app::run(config)) {
                eprintln!("weft-bench-allocs: weft-proxy stopped: {e}");
            }
        })
        .context("starting the proxy's thread")?;
    let proxy = Proxy {
        inbound,
        outbound,
        thread,
    };
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        ensure!(!proxy.thread.is_finished(), "weft-proxy exited at start-up");
        if let Ok((200, _)) = weft_test_support::client::get(admin, "/ready").await {
            return Ok(proxy);
        }
        ensure!(
            Instant::now() < deadline,
            "weft-proxy not ready after {READY_TIMEOUT:?}:\n{}",
            ctl.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One HTTP/1.1 keep-alive connection sending the same GET.
struct Client {
    send: SendRequest<Empty<Bytes>>,
    uri: Uri,
    host: HeaderValue,
}

impl Client {
    /// Connects to `addr`; every request will be `GET uri` with `host`.
    async fn connect(addr: SocketAddr, uri: &Uri, host: &HeaderValue) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Self {
            send,
            uri: uri.clone(),
            host: host.clone(),
        })
    }

    /// Sends the GET and reads the whole response; its status and body
    /// length.
    async fn get(&mut self) -> anyhow::Result<(StatusCode, usize)> {
        self.send.ready().await?;
        let mut req = Request::new(Empty::new());
        *req.uri_mut() = self.uri.clone();
        req.headers_mut().insert(HOST, self.host.clone());
        let rsp = self.send.send_request(req).await?;
        let status = rsp.status();
        let mut body = rsp.into_body();
        let mut len = 0;
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame?.data_ref() {
                len += data.len();
            }
        }
        Ok((status, len))
    }

    /// Sends the GET; an error unless it is answered `200` with `body`
    /// bytes.
    async fn get_ok(&mut self, body: usize) -> anyhow::Result<()> {
        match self.get().await? {
            (StatusCode::OK, len) if len == body => Ok(()),
            (status, len) => bail!("answered {status} with {len} bytes"),
        }
    }
}

/// Waits until `path` answers 200 (reconnecting as needed), warms its
/// connection up, then counts the allocations of `args.requests` requests.
async fn measure(
    args: &Args,
    path: PathKind,
    connect: SocketAddr,
    uri: &str,
    host: &str,
    backends: &Backends,
    proxy: Option<&Proxy>,
) -> anyhow::Result<PathFigures> {
    let uri: Uri = uri.parse()?;
    let host = HeaderValue::from_str(host)?;
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut client = loop {
        if proxy.is_some_and(|p| p.thread.is_finished()) {
            bail!("weft-proxy stopped");
        }
        let attempt = async {
            let mut c = Client::connect(connect, &uri, &host).await?;
            c.get_ok(args.body).await?;
            anyhow::Ok(c)
        };
        match attempt.await {
            Ok(c) => break c,
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!(
                    "{path:?} not answering 200 after {READY_TIMEOUT:?}"
                )))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    for i in 0..args.warmup {
        client
            .get_ok(args.body)
            .await
            .with_context(|| format!("{path:?}: warm-up request {i}"))?;
    }

    let before = backends.counts();
    let region = Region::new(GLOBAL);
    let start = Instant::now();
    for i in 0..args.requests {
        client
            .get_ok(args.body)
            .await
            .with_context(|| format!("{path:?}: request {i}"))?;
    }
    let elapsed = start.elapsed();
    let stats: Stats = region.change();
    let backend_requests: Vec<u64> = backends
        .counts()
        .iter()
        .zip(before)
        .map(|(after, before)| after - before)
        .collect();
    check_routing(path, args.requests, &backend_requests)?;
    Ok(PathFigures {
        path,
        requests: args.requests,
        allocations: stats.allocations,
        deallocations: stats.deallocations,
        reallocations: stats.reallocations,
        bytes_allocated: stats.bytes_allocated,
        bytes_deallocated: stats.bytes_deallocated,
        backend_requests,
        wall_us_per_request: elapsed.as_secs_f64() * 1e6 / args.requests as f64,
    })
}

/// Fails unless the measured requests went where `path` sends them: all
/// to backend 0, or to the balanced backends when discovered. Not every
/// backend need get some: P2C over peak-EWMA rightly avoids one whose
/// first answers were slow for as long as its estimate takes to decay
/// (10 s), longer than a measured run.
fn check_routing(path: PathKind, requests: u64, received: &[u64]) -> anyhow::Result<()> {
    let total: u64 = received.iter().sum();
    let ok = total == requests
        && match path {
            PathKind::OutboundDiscovered => true,
            _ => received.first() == Some(&requests),
        };
    ensure!(
        ok,
        "{path:?}: {requests} requests reached the backends as {received:?}"
    );
    Ok(())
}

/// The figures as markdown tables.
fn markdown(f: &Figures) -> String {
    let per = |n: usize, p: &PathFigures| n as f64 / p.requests as f64;
    let direct = f.paths.iter().find(|p| p.path == PathKind::Direct);
    let name = |p: &PathFigures| match p.path {
        PathKind::Direct => "direct (baseline)",
        PathKind::Inbound => "inbound",
        PathKind::OutboundPassthrough => "outbound-passthrough",
        PathKind::OutboundDiscovered => "outbound-discovered",
    };
    let mut out = format!(
        "### Heap allocations per request: {} requests per path after {} warm-up, one HTTP/1.1 connection, {} B responses\n\n\
         | path | allocs/req | bytes/req | allocs/req over direct | bytes/req over direct |\n\
         |---|---:|---:|---:|---:|\n",
        f.requests, f.warmup, f.body_bytes
    );
    for p in &f.paths {
        let (allocs, bytes) = (per(p.allocations, p), per(p.bytes_allocated, p));
        let over = match direct {
            Some(d) if p.path != PathKind::Direct => format!(
                "{:+.2} | {:+.0}",
                allocs - per(d.allocations, d),
                bytes - per(d.bytes_allocated, d)
            ),
            _ => "– | –".to_string(),
        };
        out.push_str(&format!(
            "| {} | {allocs:.2} | {bytes:.0} | {over} |\n",
            name(p)
        ));
    }
    out.push_str(
        "\n| path | deallocs/req | reallocs/req | wall µs/req (aside, counting allocator included) |\n\
         |---|---:|---:|---:|\n",
    );
    for p in &f.paths {
        out.push_str(&format!(
            "| {} | {:.2} | {:.2} | {:.1} |\n",
            name(p),
            per(p.deallocations, p),
            per(p.reallocations, p),
            p.wall_us_per_request
        ));
    }
    if let Some(idle) = f.idle_allocations_per_sec {
        out.push_str(&format!(
            "\nIdle process (proxy timers, control-plane streams): {idle:.0} allocations/s.\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_direct_path_alone_needs_no_proxy() {
        let args = Args::parse_from([
            "weft-bench-allocs",
            "--paths",
            "direct",
            "--requests",
            "200",
            "--warmup",
            "20",
        ]);
        let f = run(&args).unwrap();
        assert_eq!(f.paths.len(), 1);
        let d = &f.paths[0];
        assert_eq!(d.backend_requests, vec![200, 0, 0]);
        assert!(d.allocations >= 200 && d.bytes_allocated > 0, "{d:?}");
        assert!(f.idle_allocations_per_sec.is_none());
        let table = markdown(&f);
        assert!(table.contains("| direct (baseline) | "), "{table}");
        assert!(table.contains("| – | – |"), "{table}");
    }

    #[test]
    fn misrouted_requests_fail_the_path() {
        assert!(check_routing(PathKind::Inbound, 10, &[10, 0, 0]).is_ok());
        assert!(check_routing(PathKind::Inbound, 10, &[9, 1, 0]).is_err());
        assert!(check_routing(PathKind::OutboundDiscovered, 9, &[3, 3, 3]).is_ok());
        // P2C may rightly leave a backend out; losing requests never is right.
        assert!(check_routing(PathKind::OutboundDiscovered, 9, &[9, 0, 0]).is_ok());
        assert!(check_routing(PathKind::OutboundDiscovered, 9, &[3, 3, 2]).is_err());
        assert!(check_routing(PathKind::Direct, 10, &[10, 0, 1]).is_err());
    }
}
