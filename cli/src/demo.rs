//! `weft demo`: a complete mesh on one machine, no cluster needed.
//!
//! ```text
//! curl ─► client proxy (outbound 127.0.0.1:4140)
//!            ══ HTTP/2 between proxies ══►
//!         server proxy (inbound 127.0.0.1:24143) ─► demo app (127.0.0.1:18080)
//! ```
//!
//! The demo starts a small HTTP app and two `weft-proxy` processes, sends
//! traffic through them, prints what the proxies measured, and keeps
//! running (unless `--once`) so you can send your own requests.

use anyhow::{bail, Context};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};

/// Flags of `weft demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Requests to send through the mesh before reporting.
    #[arg(long, default_value_t = 20)]
    requests: usize,
    /// Exit after the report instead of running until Ctrl-C.
    #[arg(long)]
    once: bool,
    /// The weft-proxy binary (default: next to `weft`, then $PATH).
    #[arg(long, env = "WEFT_PROXY_BIN", value_name = "PATH")]
    proxy_bin: Option<PathBuf>,
    /// Outbound listener of the client-side proxy.
    #[arg(long, default_value = "127.0.0.1:4140")]
    outbound_addr: SocketAddr,
    /// Admin server of the client-side proxy.
    #[arg(long, default_value = "127.0.0.1:4191")]
    admin_addr: SocketAddr,
    /// Inbound listener of the server-side proxy.
    #[arg(long, default_value = "127.0.0.1:24143")]
    server_inbound_addr: SocketAddr,
    /// Admin server of the server-side proxy.
    #[arg(long, default_value = "127.0.0.1:24191")]
    server_admin_addr: SocketAddr,
    /// Where the demo app listens.
    #[arg(long, default_value = "127.0.0.1:18080")]
    app_addr: SocketAddr,
}

/// A child process stopped with SIGTERM (then killed) when dropped.
struct Proc {
    name: &'static str,
    child: Child,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let bin = proxy_bin(args.proxy_bin.as_ref())?;
    let app = TcpListener::bind(args.app_addr)
        .await
        .with_context(|| format!("demo app cannot listen on {}", args.app_addr))?;
    tokio::spawn(serve_app(app));

    // Listener addresses nobody should use: the demo only needs one side of
    // each proxy, but every listener must bind somewhere free.
    let spare = |addr: SocketAddr| SocketAddr::new(addr.ip(), 0);
    let server = spawn_proxy(
        "server proxy",
        &bin,
        &[
            (
                "WEFT_PROXY_INBOUND_ADDR",
                args.server_inbound_addr.to_string(),
            ),
            ("WEFT_PROXY_INBOUND_FORWARD", args.app_addr.to_string()),
            (
                "WEFT_PROXY_OUTBOUND_ADDR",
                spare(args.outbound_addr).to_string(),
            ),
            ("WEFT_PROXY_ADMIN_ADDR", args.server_admin_addr.to_string()),
        ],
    )?;
    let client = spawn_proxy(
        "client proxy",
        &bin,
        &[
            (
                "WEFT_PROXY_INBOUND_ADDR",
                spare(args.server_inbound_addr).to_string(),
            ),
            ("WEFT_PROXY_OUTBOUND_ADDR", args.outbound_addr.to_string()),
            ("WEFT_PROXY_ADMIN_ADDR", args.admin_addr.to_string()),
            (
                "WEFT_PROXY_MESHED_TARGETS",
                args.server_inbound_addr.to_string(),
            ),
        ],
    )?;
    let mut procs = [server, client];
    for (proc, admin) in procs
        .iter_mut()
        .zip([args.server_admin_addr, args.admin_addr])
    {
        wait_ready(proc, admin).await?;
    }

    let target = format!("http://{}/", args.server_inbound_addr);
    let started = Instant::now();
    let mut ok = 0;
    for _ in 0..args.requests {
        let (status, _) = via_proxy(args.outbound_addr, &target).await?;
        ok += usize::from(status == 200);
    }
    let elapsed = started.elapsed();
    println!(
        "sent {} requests: client → client proxy → (HTTP/2) → server proxy → app; {ok} OK in {:.1} ms",
        args.requests,
        elapsed.as_secs_f64() * 1e3
    );
    for (name, admin) in [
        ("client proxy", args.admin_addr),
        ("server proxy", args.server_admin_addr),
    ] {
        let (_, metrics) = get(admin, "/metrics").await?;
        println!("\n{name} metrics (http://{admin}/metrics):");
        for line in metrics.lines().filter(|l| {
            l.starts_with("request_total")
                || l.starts_with("response_total")
                || l.starts_with("tcp_open_total")
        }) {
            println!("  {line}");
        }
    }
    if ok != args.requests {
        bail!(
            "{} of {} demo requests failed",
            args.requests - ok,
            args.requests
        );
    }
    if args.once {
        return Ok(());
    }
    println!(
        "\nThe mesh is running. Try:\n  curl -x http://{} {target}\n  curl http://{}/metrics\nPress Ctrl-C to stop.",
        args.outbound_addr, args.admin_addr
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    println!("stopping");
    Ok(())
}

/// Finds weft-proxy: the flag, then beside this executable, then $PATH.
fn proxy_bin(flag: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p.clone());
    }
    if let Some(sibling) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("weft-proxy")))
        .filter(|p| p.is_file())
    {
        return Ok(sibling);
    }
    Ok(PathBuf::from("weft-proxy"))
}

fn spawn_proxy(name: &'static str, bin: &PathBuf, env: &[(&str, String)]) -> anyhow::Result<Proc> {
    let mut cmd = Command::new(bin);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd.env(
        "WEFT_PROXY_LOG",
        std::env::var("WEFT_PROXY_LOG").unwrap_or_else(|_| "warn".into()),
    );
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().with_context(|| {
        format!(
            "cannot run {} (set --proxy-bin or WEFT_PROXY_BIN)",
            bin.display()
        )
    })?;
    Ok(Proc { name, child })
}

async fn wait_ready(proc: &mut Proc, admin: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = proc.child.try_wait()? {
            let mut stderr = String::new();
            if let Some(mut e) = proc.child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut stderr);
            }
            bail!("{} exited ({status}):\n{stderr}", proc.name);
        }
        if matches!(get(admin, "/ready").await, Ok((200, _))) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} not ready after 10s (admin {admin})", proc.name);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `GET uri` (absolute form) through the proxy at `proxy`.
async fn via_proxy(proxy: SocketAddr, uri: &str) -> anyhow::Result<(u16, String)> {
    send(proxy, Request::get(uri).body(Empty::<Bytes>::new())?).await
}

async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    send(
        addr,
        Request::get(path)
            .header("host", addr.to_string())
            .body(Empty::<Bytes>::new())?,
    )
    .await
}

async fn send(addr: SocketAddr, req: Request<Empty<Bytes>>) -> anyhow::Result<(u16, String)> {
    let fut = async {
        let io = TokioIo::new(TcpStream::connect(addr).await?);
        let (mut tx, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        let rsp = tx.send_request(req).await?;
        let status = rsp.status().as_u16();
        let body = rsp.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .with_context(|| format!("request to {addr} timed out"))?
}

/// The demo app: answers every request with a greeting naming the HTTP
/// version it received (HTTP/1.1, although proxies spoke HTTP/2).
async fn serve_app(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                let body = format!("hello from the weft demo app ({:?})\n", req.version());
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
