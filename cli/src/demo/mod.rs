//! `weft demo`: the whole mesh on one machine — no cluster, no root.
//!
//! ```text
//!   weft-controller (file mode): identity, discovery, TrafficSplit,
//!   ServiceProfile, and the metrics API on 127.0.0.1:9990
//!
//!   traffic ─► web ─┬─► books ══ TrafficSplit ══╦═ 90 ═► books-v1
//!                   │                           ╚═ 10 ═► books-v2
//!                   └─► authors (fails 5 %)
//! ```
//!
//! Each workload is an in-process app (tasks of this process) behind its
//! own `weft-proxy` child, every hop mTLS with identities from the
//! controller. The demo makes its identity material and a config dir of
//! plain Kubernetes YAML in a temporary directory, starts the controller
//! in file mode, the apps, the proxies and a load generator, prints what
//! runs where, and runs until Ctrl-C/SIGTERM — or, with `--duration`,
//! checks from every client proxy's metrics that traffic flowed with mTLS
//! on every edge and exits 0 only then. Either way it stops every process
//! it started and removes its directory.

mod apps;
mod client;
mod ports;
mod procs;
mod topology;
mod traffic;
mod verify;

use anyhow::{bail, Context};
use ports::{Plan, PodPorts};
use procs::Procs;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::task::JoinHandle;
use topology::{identity, service_url, App, Material, Workload, NAMESPACE, SPLIT, WORKLOADS};

/// How often the controller scrapes the proxies: short, so `weft stat`
/// shows numbers a few seconds after the demo starts.
const SCRAPE_INTERVAL: &str = "2s";

/// How long the controller, then all proxies, may take to be ready.
const CONTROLLER_READY_TIMEOUT: Duration = Duration::from_secs(20);
const PROXIES_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long children get to exit after SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How often an interactive demo checks its children and refreshes the
/// live view.
const REFRESH: Duration = Duration::from_secs(2);

/// The CLI's default `--controller-addr`, where the demo serves the
/// metrics API unless told otherwise.
const DEFAULT_ADMIN: &str = "127.0.0.1:9990";

fn duration(s: &str) -> Result<Duration, String> {
    weft_identity::parse_duration(s).map_err(|e| e.to_string())
}

/// Flags of `weft demo`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Run the whole mesh on this machine: controller, mTLS proxies, demo services, traffic",
    long_about = "Run the whole mesh on this machine, with no cluster and no root: a weft-controller \
in file mode, four demo services (web → books, split 90/10 over books-v1 and books-v2, and authors, \
which fails 5 % of requests), each behind its own weft-proxy with mTLS, and a load generator sending \
to web through its own proxy. Everything listens on 127.0.0.1; its files live in a temporary \
directory that is removed on exit.\n\n\
While it runs, try `weft stat deploy -n weft-demo` and `weft edges deploy -n weft-demo`. Ctrl-C \
stops every process it started.\n\n\
Ports: the controller's admin server (the metrics API) on --controller-admin-addr; everything \
else from --port-base: BASE controller identity, BASE+6 controller destination, then per workload \
(traffic, web, books-v1, books-v2, authors at BASE+10, +20, …): +0 proxy outbound, +1 proxy admin, \
+3 proxy inbound, +8 app.\n\n\
With --duration the demo runs that long, then checks from each client proxy's /metrics that every \
edge (traffic → web, web → books-v1, web → books-v2, web → authors) carried traffic, all of it over \
mTLS to the right identity, prints a verdict per edge and exits 0 only if all passed."
)]
pub struct DemoArgs {
    /// Run this long, check every edge, and exit (0 only if every edge
    /// carried mTLS traffic). Without it the demo runs until Ctrl-C.
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    duration: Option<Duration>,
    /// Requests per second the load generator sends to web.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..=200))]
    rps: u32,
    /// First of the block of ports the demo listens on (see above).
    #[arg(
        long,
        default_value_t = 24000,
        value_parser = clap::value_parser!(u16).range(1024..=i64::from(ports::MAX_BASE)),
        value_name = "PORT"
    )]
    port_base: u16,
    /// The controller's admin server: the metrics API `weft stat` reads
    /// (its default --controller-addr).
    #[arg(long, default_value = DEFAULT_ADMIN, value_name = "ADDR")]
    controller_admin_addr: SocketAddr,
    /// The controller's identity service [default: 127.0.0.1:BASE].
    #[arg(long, value_name = "ADDR")]
    controller_identity_addr: Option<SocketAddr>,
    /// The controller's destination service [default: 127.0.0.1:BASE+6].
    #[arg(long, value_name = "ADDR")]
    controller_destination_addr: Option<SocketAddr>,
    /// The weft-controller binary (default: next to `weft`, then $PATH).
    #[arg(long, env = "WEFT_CONTROLLER_BIN", value_name = "PATH")]
    controller_bin: Option<PathBuf>,
    /// The weft-proxy binary (default: next to `weft`, then $PATH).
    #[arg(long, env = "WEFT_PROXY_BIN", value_name = "PATH")]
    proxy_bin: Option<PathBuf>,
}

/// How a run ended, before clean-up.
enum Outcome {
    /// `--duration` ran out and the edges were checked.
    Checked(verify::Report),
    /// A signal asked the demo to stop.
    Stopped(&'static str),
}

/// Runs `weft demo`.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let plan = Plan::new(
        args.port_base,
        args.controller_admin_addr,
        args.controller_identity_addr,
        args.controller_destination_addr,
    )?;
    let bins = Bins {
        controller: procs::find(
            args.controller_bin.clone(),
            "weft-controller",
            "--controller-bin",
            "WEFT_CONTROLLER_BIN",
        )?,
        proxy: procs::find(
            args.proxy_bin.clone(),
            "weft-proxy",
            "--proxy-bin",
            "WEFT_PROXY_BIN",
        )?,
    };
    let mut stop = Stop::new()?;
    // Every port is checked before anything starts, so a taken one is
    // reported with the flag that moves it and leaves nothing behind.
    let listeners = plan.claim()?;
    let dir = tempfile::Builder::new()
        .prefix("weft-demo-")
        .tempdir()
        .context("creating the demo's temporary directory")?;
    let mut mesh = Mesh {
        plan,
        dir: dir.path().to_owned(),
        procs: Procs::default(),
        apps: Vec::new(),
        traffic: None,
        stats: Arc::default(),
        started: Instant::now(),
    };
    let outcome = tokio::select! {
        r = mesh.run(&args, &bins, listeners) => r,
        name = stop.recv() => Ok(Outcome::Stopped(name)),
    };
    let killed = mesh.shutdown().await;
    let path = dir.path().display().to_string();
    let removed = dir.close();
    if !killed.is_empty() {
        eprintln!(
            "weft demo: killed {} (no exit within {}s of SIGTERM)",
            killed.join(", "),
            STOP_GRACE.as_secs()
        );
    }
    if let Err(e) = &removed {
        eprintln!("weft demo: cannot remove {path}: {e}");
    }
    match outcome? {
        Outcome::Stopped(name) if args.duration.is_none() => {
            println!("\nweft demo: stopped ({name}); every process ended, {path} removed");
            Ok(())
        }
        Outcome::Stopped(name) => bail!("interrupted by {name} before the --duration run ended"),
        Outcome::Checked(report) if report.passed() => {
            println!("weft demo: every edge carried mTLS traffic");
            Ok(())
        }
        Outcome::Checked(report) => bail!(
            "not every edge carried mTLS traffic:\n  {}",
            report.problems().join("\n  ")
        ),
    }
}

/// The binaries the demo runs.
struct Bins {
    controller: PathBuf,
    proxy: PathBuf,
}

/// SIGINT (Ctrl-C), SIGTERM and SIGHUP (terminal closed), each of which
/// stops the demo cleanly.
struct Stop {
    int: Signal,
    term: Signal,
    hup: Signal,
}

// === impl Stop ===

impl Stop {
    fn new() -> anyhow::Result<Self> {
        let on = |kind| signal(kind).context("installing signal handlers");
        Ok(Self {
            int: on(SignalKind::interrupt())?,
            term: on(SignalKind::terminate())?,
            hup: on(SignalKind::hangup())?,
        })
    }

    /// The name of the first signal received.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

/// Everything the demo runs.
struct Mesh {
    plan: Plan,
    dir: PathBuf,
    procs: Procs,
    apps: Vec<JoinHandle<()>>,
    traffic: Option<JoinHandle<()>>,
    stats: Arc<traffic::Stats>,
    started: Instant,
}

// === impl Mesh ===

impl Mesh {
    /// Starts everything, then runs until `--duration` is over (and
    /// checks the edges) or forever (the caller stops it on a signal).
    async fn run(
        &mut self,
        args: &DemoArgs,
        bins: &Bins,
        mut listeners: ports::AppListeners,
    ) -> anyhow::Result<Outcome> {
        let material = topology::write(&self.dir, &self.plan)?;
        let controller_pid = self.procs.spawn(
            "weft-controller",
            controller_command(&bins.controller, &material, &self.plan),
            material.log_dir.join("controller.log"),
            self.plan.admin,
        )?;
        self.procs.wait_ready(CONTROLLER_READY_TIMEOUT).await?;

        // Apps first: a proxy forwards its inbound traffic to its app.
        for ((w, ports), listener) in WORKLOADS.iter().zip(&self.plan.pods).zip(&mut listeners) {
            if let Some(listener) = listener.take() {
                self.apps
                    .extend(apps::spawn(w.app, listener, ports.outbound)?);
            }
        }
        let mut pids = Vec::with_capacity(WORKLOADS.len());
        for ((w, ports), token) in WORKLOADS.iter().zip(&self.plan.pods).zip(&material.tokens) {
            let cmd = proxy_command(&bins.proxy, w, ports, token, &material, &self.plan);
            let log = material.log_dir.join(format!("{}-proxy.log", w.name));
            pids.push(self.procs.spawn(
                &format!("{}'s weft-proxy", w.name),
                cmd,
                log,
                ports.admin,
            )?);
        }
        self.procs.wait_ready(PROXIES_READY_TIMEOUT).await?;

        let banner = self.banner(args, &material, controller_pid, &pids);
        print!("{banner}");
        let traffic_outbound = self.plan.pods[0].outbound;
        self.traffic = Some(traffic::spawn(
            client::ProxyClient::new(traffic_outbound),
            args.rps,
            self.stats.clone(),
        ));
        self.started = Instant::now();

        let Some(length) = args.duration else {
            // On a terminal the screen is redrawn with the live view under
            // the banner, as `watch` does; piped output gets the banner
            // only.
            let live = std::io::stdout().is_terminal();
            let mut refresh = tokio::time::interval(REFRESH);
            loop {
                refresh.tick().await;
                self.procs.check_running()?;
                if !live {
                    continue;
                }
                if let Some(view) = live_view(self.plan.admin).await {
                    print!("\x1b[H\x1b[2J{banner}\n{view}");
                }
            }
        };
        println!(
            "Running for {}, then checking every edge for mTLS traffic.",
            weft_identity::format_duration(length)
        );
        let deadline = tokio::time::Instant::now() + length;
        while tokio::time::Instant::now() < deadline {
            self.procs.check_running()?;
            tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + REFRESH / 4)).await;
        }
        if let Some(t) = self.traffic.take() {
            t.abort();
        }
        self.print_traffic();
        let plan = &self.plan;
        let report = verify::check(&topology::EDGES, |name| {
            WORKLOADS
                .iter()
                .zip(&plan.pods)
                .find(|(w, _)| w.name == name)
                .map(|(_, p)| p.admin)
        })
        .await;
        println!("\nEdges, from each client proxy's /metrics:\n{report}");
        Ok(Outcome::Checked(report))
    }

    /// Stops the load generator, then every child (SIGTERM, SIGKILL after
    /// the grace period), then the apps. Returns what had to be killed.
    async fn shutdown(&mut self) -> Vec<String> {
        if let Some(t) = self.traffic.take() {
            t.abort();
        }
        let killed = self.procs.stop(STOP_GRACE).await;
        for app in self.apps.drain(..) {
            app.abort();
        }
        killed
    }

    /// What runs where: printed once, and atop every live view.
    fn banner(
        &self,
        args: &DemoArgs,
        material: &Material,
        controller_pid: u32,
        pids: &[u32],
    ) -> String {
        let p = &self.plan;
        let mut out = format!(
            "weft demo: the whole mesh on 127.0.0.1, namespace {NAMESPACE} (files in {})\n\n\
             weft-controller  pid {controller_pid}  admin (metrics API) {}  identity {}  destination {}\n\n",
            self.dir.display(),
            p.admin,
            p.identity,
            p.destination,
        );
        let rows: Vec<[String; 6]> = WORKLOADS
            .iter()
            .zip(&p.pods)
            .zip(pids)
            .map(|((w, ports), pid)| {
                let app = match (w.app, ports.app) {
                    (App::Traffic, _) => format!("(sends {} rps)", args.rps),
                    (_, Some(addr)) => addr.to_string(),
                    (_, None) => "-".into(),
                };
                [
                    w.name.to_string(),
                    app,
                    ports.inbound.to_string(),
                    ports.outbound.to_string(),
                    ports.admin.to_string(),
                    pid.to_string(),
                ]
            })
            .collect();
        let header = [
            "WORKLOAD",
            "APP",
            "PROXY INBOUND",
            "PROXY OUTBOUND",
            "PROXY ADMIN",
            "PID",
        ];
        let widths: Vec<usize> = (0..header.len())
            .map(|i| {
                rows.iter()
                    .map(|r| r[i].len())
                    .chain([header[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut line = |cells: Vec<&str>| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            out.push_str(padded.join("  ").trim_end());
            out.push('\n');
        };
        line(header.to_vec());
        for r in &rows {
            line(r.iter().map(String::as_str).collect());
        }
        let split: Vec<String> = SPLIT
            .iter()
            .map(|(leaf, w)| format!("{leaf} {w}"))
            .collect();
        out.push_str(&format!(
            "\ntraffic → web → books (TrafficSplit: {}) and authors (fails 5 %); every hop mTLS\n",
            split.join(", ")
        ));
        if args.duration.is_some() {
            return out;
        }
        let flag = if self.plan.admin.to_string() == DEFAULT_ADMIN {
            String::new()
        } else {
            format!(" --controller-addr {}", self.plan.admin)
        };
        out.push_str(&format!(
            "\nTry, in a second terminal:\n  \
             weft stat deploy -n {NAMESPACE}{flag}\n  \
             weft edges deploy -n {NAMESPACE}{flag}\n  \
             curl -x http://{} {}\n\
             Change the split while it runs: edit {}\n\
             Press Ctrl-C to stop.\n",
            self.plan.pods[0].outbound,
            service_url("web", "/"),
            material.config_dir.join("books-split.yaml").display()
        ));
        out
    }

    fn print_traffic(&self) {
        let s = &self.stats;
        let seconds = self.started.elapsed().as_secs_f64();
        let sent = s.sent.load(Ordering::Relaxed);
        let ok = s.ok.load(Ordering::Relaxed);
        let failed = s.failed.load(Ordering::Relaxed);
        let mut line = format!(
            "traffic: {sent} requests to web in {seconds:.1}s ({:.1}/s): {ok} OK, {failed} failed (authors fails 5 % on purpose)",
            sent as f64 / seconds.max(0.001),
        );
        let cut = sent.saturating_sub(ok + failed);
        if cut > 0 {
            line.push_str(&format!(", {cut} in flight at the end"));
        }
        let skipped = s.skipped.load(Ordering::Relaxed);
        if skipped > 0 {
            line.push_str(&format!(
                ", {skipped} not sent (too many requests were in flight)"
            ));
        }
        println!("{line}");
    }
}

/// `weft-controller` in file mode on the plan's addresses.
fn controller_command(bin: &Path, material: &Material, plan: &Plan) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("--config-dir")
        .arg(&material.config_dir)
        .arg("--identity-dir")
        .arg(&material.identity_dir)
        .args(["--identity-addr", &plan.identity.to_string()])
        .args(["--destination-addr", &plan.destination.to_string()])
        .args(["--admin-addr", &plan.admin.to_string()])
        .args(["--metrics-scrape-interval", SCRAPE_INTERVAL])
        .env(
            "WEFT_CONTROLLER_LOG",
            std::env::var("WEFT_CONTROLLER_LOG").unwrap_or_else(|_| "info".into()),
        );
    cmd
}

/// A workload's `weft-proxy`: its ports, its identity from the
/// controller, discovery from it, its owner labels on every metric.
fn proxy_command(
    bin: &Path,
    w: &Workload,
    ports: &PodPorts,
    token: &Path,
    material: &Material,
    plan: &Plan,
) -> Command {
    let mut cmd = Command::new(bin);
    // The caller's own WEFT_PROXY_* settings (say, MESHED_TARGETS) would
    // change what the demo shows; only the log filter is passed on.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WEFT_PROXY_") {
            cmd.env_remove(key);
        }
    }
    cmd.env(
        "WEFT_PROXY_LOG",
        std::env::var("WEFT_PROXY_LOG").unwrap_or_else(|_| "warn".into()),
    )
    .env("WEFT_PROXY_INBOUND_ADDR", ports.inbound.to_string())
    .env("WEFT_PROXY_OUTBOUND_ADDR", ports.outbound.to_string())
    .env("WEFT_PROXY_ADMIN_ADDR", ports.admin.to_string())
    .env("WEFT_PROXY_IDENTITY_NAME", identity(w.name))
    .env("WEFT_PROXY_IDENTITY_ADDR", plan.identity.to_string())
    .env("WEFT_PROXY_IDENTITY_TOKEN_FILE", token)
    .env("WEFT_PROXY_TRUST_ANCHORS", &material.anchors)
    .env("WEFT_PROXY_DESTINATION_ADDR", plan.destination.to_string())
    .env("WEFT_PROXY_WORKLOAD", w.proxy_workload())
    // The demo stops quickly: nothing in flight needs long.
    .env("WEFT_PROXY_SHUTDOWN_GRACE_PERIOD", "2s");
    if let Some(app) = ports.app {
        cmd.env("WEFT_PROXY_INBOUND_FORWARD", app.to_string());
    }
    cmd
}

// === live view ===

/// The live view under the banner of an interactive demo, redrawn every
/// [`REFRESH`]: `weft stat deploy` and `weft edges deploy` for the demo's
/// namespace, from the controller's metrics API at `controller` (an
/// error from it is shown in their place). `None` leaves the screen as it
/// is.
async fn live_view(controller: SocketAddr) -> Option<String> {
    use crate::viz::{
        fetch_edges, fetch_stat, render_edges, render_stat, ControllerClient, Output,
    };
    use weft_metrics_api::api::{EdgesQuery, Scope, StatQuery, DEFAULT_WINDOW};
    use weft_metrics_api::resource::{Resource, ResourceKind};

    let client = ControllerClient::direct(controller.to_string());
    let deployments = Resource {
        kind: ResourceKind::Deployment,
        name: None,
    };
    let scope = Scope::Namespace(NAMESPACE.to_owned());
    let stat = StatQuery {
        resource: deployments.clone(),
        scope: scope.clone(),
        from: None,
        to: None,
        window: DEFAULT_WINDOW,
    };
    let edges = EdgesQuery {
        resource: deployments,
        scope,
        window: DEFAULT_WINDOW,
    };
    let fetched = async {
        let stat = fetch_stat(&client, &stat).await;
        let edges = fetch_edges(&client, &edges).await;
        (stat, edges)
    };
    let (stat, edges) = match tokio::time::timeout(REFRESH * 2, fetched).await {
        Ok(both) => both,
        Err(_) => {
            return Some(format!(
                "the metrics API at {controller} did not answer within {}s\n",
                (REFRESH * 2).as_secs()
            ))
        }
    };
    let mut out = format!("$ weft stat deploy -n {NAMESPACE}\n");
    match stat {
        Ok(rows) => out.push_str(&render_stat(&rows, Output::Table, false)),
        Err(e) => out.push_str(&format!("{e:#}\n")),
    }
    out.push_str(&format!("\n$ weft edges deploy -n {NAMESPACE}\n"));
    match edges {
        Ok(rows) => out.push_str(&render_edges(&rows, Output::Table)),
        Err(e) => out.push_str(&format!("{e:#}\n")),
    }
    Some(out)
}
