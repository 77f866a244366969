//! `weft-controller`: the single control-plane process of the Weft mesh.
//!
//! Today it runs the identity service (the mesh's CA,
//! `io.linkerd.proxy.identity.Identity/Certify`, over TLS with the
//! controller's own certificate), the destination service
//! (`io.linkerd.proxy.destination.Destination/Get` and `GetProfile`, over
//! the same TLS, fed from `--config-dir` or, with `--kubeconfig` or
//! `--in-cluster`, from Kubernetes watchers), the proxy injector (a
//! mutating admission webhook on `--webhook-addr`, in cluster mode with
//! `--webhook-tls-dir`: it adds `weft-init` and `weft-proxy` to pods that ask
//! for them) and the admin server (`/ready`, `/live`, `/metrics`). The
//! metrics API joins it later. See `docs/identity.md`,
//! `docs/destination.md` and `docs/injection.md`.

mod admin;
mod auth;
mod destination;
mod feed;
mod identity;
mod inject;
mod issuer;
mod metrics;
mod store;
mod tls;
mod viz;

use clap::{CommandFactory, Parser};
use kube::config::{KubeConfigOptions, Kubeconfig};
use linkerd2_proxy_api::destination::destination_server::DestinationServer;
use linkerd2_proxy_api::identity::identity_server::IdentityServer;
use linkerd2_proxy_api::inbound::inbound_server_policies_server::InboundServerPoliciesServer;
use linkerd2_proxy_api::outbound::outbound_policies_server::OutboundPoliciesServer;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use weft_identity::{IdentityDir, RotatingCert};

/// How long in-flight requests get to finish after SIGTERM/SIGINT.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Largest accepted gRPC message (a CSR and a token are a few KiB).
const MAX_MESSAGE: usize = 64 * 1024;

fn duration(s: &str) -> Result<Duration, String> {
    weft_identity::parse_duration(s).map_err(|e| e.to_string())
}

fn default_inbound_policy(s: &str) -> Result<weft_policy::DefaultPolicy, String> {
    s.parse()
        .map_err(|e: weft_policy::UnknownPolicy| e.to_string())
}

/// `--cluster-networks`: one flag value holding a comma-separated list.
#[derive(Clone, Debug)]
struct ClusterNetworks(Vec<ipnet::IpNet>);

fn cluster_networks(s: &str) -> Result<ClusterNetworks, String> {
    match weft_policy::parse_networks(s) {
        Ok(nets) if nets.is_empty() => Err("at least one network is needed".to_owned()),
        Ok(nets) => Ok(ClusterNetworks(nets)),
        Err(e) => Err(e.to_string()),
    }
}

fn trust_domain(s: &str) -> Result<String, String> {
    weft_identity::check_trust_domain(s)
        .map(|()| s.to_owned())
        .map_err(|e| e.to_string())
}

/// Command-line interface of `weft-controller` (see `docs/identity.md`).
#[derive(Debug, Parser)]
#[command(name = "weft-controller", version, about)]
#[command(group(clap::ArgGroup::new("cluster").args(["kubeconfig", "in_cluster"])))]
struct Args {
    /// Read Kubernetes-style YAML from this directory (the embedded
    /// default; file-mode tokens).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["kubeconfig", "in_cluster"])]
    config_dir: Option<PathBuf>,
    /// Use the Kubernetes API server of this kubeconfig (cluster mode:
    /// watchers feed the destination service, tokens are checked with
    /// TokenReview).
    #[arg(long, value_name = "PATH", conflicts_with = "in_cluster")]
    kubeconfig: Option<PathBuf>,
    /// Cluster mode from inside a pod: the API server from
    /// KUBERNETES_SERVICE_HOST/PORT, the pod's ServiceAccount token and CA
    /// from /var/run/secrets/kubernetes.io/serviceaccount. With none of
    /// --config-dir, --kubeconfig and --in-cluster only the identity
    /// service runs (file-mode tokens): in-cluster mode is never guessed
    /// from the environment.
    #[arg(long)]
    in_cluster: bool,
    /// Directory holding ca.crt, issuer.crt, issuer.key (and token.key in
    /// file mode), as written by `weft identity init`.
    #[arg(long, value_name = "DIR")]
    identity_dir: Option<PathBuf>,
    /// Trust domain used in identity names.
    #[arg(long, default_value = weft_identity::DEFAULT_TRUST_DOMAIN, value_parser = trust_domain)]
    trust_domain: String,
    /// Cluster domain of Service names (`svc.ns.svc.CLUSTER_DOMAIN`).
    #[arg(long, default_value = "cluster.local", value_parser = trust_domain)]
    cluster_domain: String,
    /// Listen address of the destination service (gRPC over TLS; served
    /// with --config-dir, --kubeconfig or --in-cluster).
    #[arg(long, default_value = "0.0.0.0:8086")]
    destination_addr: SocketAddr,
    /// Inbound policy of pods that no TrafficTarget governs and whose
    /// `config.linkerd.io/default-inbound-policy` annotation (theirs or
    /// their namespace's) is unset: all-unauthenticated, all-authenticated,
    /// cluster-unauthenticated, cluster-authenticated, deny or audit (see
    /// docs/policy.md).
    #[arg(long, default_value = "all-unauthenticated", value_parser = default_inbound_policy, value_name = "POLICY")]
    default_inbound_policy: weft_policy::DefaultPolicy,
    /// The networks the cluster-* default policies admit, comma-separated
    /// CIDRs.
    #[arg(long, default_value = weft_policy::DEFAULT_CLUSTER_NETWORKS, value_parser = cluster_networks, value_name = "CIDRS")]
    cluster_networks: ClusterNetworks,
    /// How often --config-dir is checked for changed files.
    #[arg(long, default_value = "1s", value_parser = duration, value_name = "DURATION")]
    config_poll_interval: Duration,
    /// Listen address of the identity service (gRPC over TLS).
    #[arg(long, default_value = "0.0.0.0:8080")]
    identity_addr: SocketAddr,
    /// Listen address of the proxy injector webhook (HTTPS; served with
    /// --webhook-tls-dir).
    #[arg(long, default_value = "0.0.0.0:8443")]
    webhook_addr: SocketAddr,
    /// Directory holding the injector webhook's serving certificate and key
    /// (tls.crt, tls.key: the mounted weft-injector-tls Secret), re-read
    /// when they change. Turns the proxy injector on; needs --kubeconfig or
    /// --in-cluster.
    #[arg(long, value_name = "DIR", requires = "cluster")]
    webhook_tls_dir: Option<PathBuf>,
    /// Install values (YAML, as `weft install` stores them in the
    /// weft-config ConfigMap) the injector builds proxies from, re-read when
    /// the file changes; the defaults when not given.
    #[arg(long, value_name = "FILE")]
    values: Option<PathBuf>,
    /// Listen address of the admin server (/ready, /live, /metrics).
    #[arg(long, default_value = "0.0.0.0:9990")]
    admin_addr: SocketAddr,
    /// How often the metrics API scrapes each proxy's /metrics (served with
    /// --config-dir, --kubeconfig or --in-cluster). Windows must be at
    /// least two intervals long.
    #[arg(long, default_value = "10s", value_parser = duration, value_name = "DURATION")]
    metrics_scrape_interval: Duration,
    /// Bound on one scrape, connect included (at most the interval).
    #[arg(long, default_value = "5s", value_parser = duration, value_name = "DURATION")]
    metrics_scrape_timeout: Duration,
    /// Scrapes in flight at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    metrics_scrape_concurrency: u16,
    /// How long samples are kept: the longest window a query may ask for.
    #[arg(long, default_value = "5m", value_parser = duration, value_name = "DURATION")]
    metrics_retention: Duration,
    /// Proxies the metrics API keeps samples of; more are not scraped.
    #[arg(long, default_value_t = 10_000)]
    metrics_max_proxies: usize,
    /// Series kept per proxy (after reduction); more are dropped and logged.
    #[arg(long, default_value_t = 10_000)]
    metrics_max_series_per_proxy: usize,
    /// Lifetime of the certificates the identity service issues.
    #[arg(long, default_value = "24h", value_parser = duration, value_name = "DURATION")]
    identity_leaf_lifetime: Duration,
    /// How far back issued certificates' notBefore is set, for clients
    /// whose clocks lag.
    #[arg(long, default_value = "20s", value_parser = duration, value_name = "DURATION")]
    identity_clock_skew: Duration,
    /// How often the identity directory is checked for a new issuer.
    #[arg(long, default_value = "2s", value_parser = duration, value_name = "DURATION")]
    identity_reload_interval: Duration,
}

/// Why the controller could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error(transparent)]
    Identity(#[from] weft_identity::Error),
    #[error("kubeconfig {}: {reason}", path.display())]
    Kube { path: PathBuf, reason: String },
    #[error("--in-cluster: {reason} (outside a pod, use --kubeconfig PATH or --config-dir DIR)")]
    InCluster { reason: String },
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Feed(#[from] feed::files::FeedError),
    #[error("proxy injector: {0}")]
    Inject(#[from] inject::InjectError),
    #[error("{what} failed: {reason}")]
    Serve { what: &'static str, reason: String },
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEFT_CONTROLLER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let Some(identity_dir) = args.identity_dir.clone() else {
        Args::command()
            .error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "--identity-dir DIR is required: the controller's TLS certificate and the identity \
                 service come from it (create DIR with `weft identity init --out DIR`)",
            )
            .exit();
    };
    if args.metrics_scrape_interval < Duration::from_millis(100)
        || args.metrics_retention < args.metrics_scrape_interval.saturating_mul(2)
    {
        Args::command()
            .error(
                clap::error::ErrorKind::ValueValidation,
                "--metrics-scrape-interval must be at least 100ms and --metrics-retention at least \
                 two scrape intervals (rates need two samples)",
            )
            .exit();
    }
    if args.identity_leaf_lifetime < Duration::from_secs(1) {
        Args::command()
            .error(
                clap::error::ErrorKind::ValueValidation,
                "--identity-leaf-lifetime must be at least 1s",
            )
            .exit();
    }
    // kube-rs builds its TLS from the process-wide provider; pick ring so
    // the choice is never ambiguous. An error means one is installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            tracing::error!(%error, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, identity_dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "weft-controller failed");
            eprintln!("weft-controller: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Where cluster mode finds its API server.
enum KubeSource<'a> {
    /// `--kubeconfig PATH`.
    Kubeconfig(&'a Path),
    /// `--in-cluster`: the pod's environment and ServiceAccount.
    InCluster,
}

impl Args {
    /// The API server to use, if any: `--kubeconfig` or `--in-cluster`.
    fn kube_source(&self) -> Option<KubeSource<'_>> {
        match (&self.kubeconfig, self.in_cluster) {
            (Some(path), _) => Some(KubeSource::Kubeconfig(path)),
            (None, true) => Some(KubeSource::InCluster),
            (None, false) => None,
        }
    }
}

/// A client for the API server of `source`. Each read must finish within
/// `read_timeout`: short for TokenReview, longer than the server-side
/// watch timeout for the feed's watchers.
async fn kube_client(
    source: &KubeSource<'_>,
    read_timeout: Duration,
) -> Result<kube::Client, StartError> {
    let err = |reason: String| match source {
        KubeSource::Kubeconfig(path) => StartError::Kube {
            path: path.to_path_buf(),
            reason,
        },
        KubeSource::InCluster => StartError::InCluster { reason },
    };
    let mut cfg = match source {
        KubeSource::Kubeconfig(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| err(e.to_string()))?
        }
        KubeSource::InCluster => {
            if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
                return Err(err(
                    "KUBERNETES_SERVICE_HOST is not set, so this is not a Kubernetes pod".into(),
                ));
            }
            kube::Config::incluster().map_err(|e| err(e.to_string()))?
        }
    };
    cfg.connect_timeout = Some(Duration::from_secs(5));
    cfg.read_timeout = Some(read_timeout);
    cfg.write_timeout = Some(Duration::from_secs(10));
    kube::Client::try_from(cfg).map_err(|e| err(e.to_string()))
}

async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, what, source })
}

async fn run(args: Args, identity_dir: PathBuf) -> Result<(), StartError> {
    let metrics = metrics::Metrics::new();
    let ready = admin::Readiness::default();
    let dir = IdentityDir::new(identity_dir);

    let (store, reload) =
        issuer::start(dir.clone(), args.identity_reload_interval, metrics.clone())?;
    let (auth, kube) = match args.kube_source() {
        Some(source) => (
            auth::Authenticator::Kube(kube_client(&source, Duration::from_secs(10)).await?),
            Some(kube_client(&source, feed::kube::READ_TIMEOUT).await?),
        ),
        None => {
            if args.config_dir.is_none() && std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
                tracing::warn!(
                    "running in a Kubernetes pod without --in-cluster: only the identity service \
                     runs, with file-mode tokens; pass --in-cluster to use this cluster"
                );
            }
            (auth::Authenticator::File(dir.load_token_key()?), None)
        }
    };

    let controller_name = weft_identity::controller_identity(&args.trust_domain);
    let resolver = Arc::new(RotatingCert::new());
    let (not_after, first_lifetime) = tls::issue(
        &store,
        &controller_name,
        args.identity_leaf_lifetime,
        args.identity_clock_skew,
        &resolver,
        &metrics,
    )?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(resolver.clone())?);

    let identity_listener = bind(args.identity_addr, "identity").await?;
    let admin_listener = bind(args.admin_addr, "admin").await?;
    let identity_addr = identity_listener.local_addr().unwrap_or(args.identity_addr);
    let admin_addr = admin_listener.local_addr().unwrap_or(args.admin_addr);
    let objects = start_feed(&args, kube.as_ref()).await?;
    let viz = objects.as_ref().map(|store| {
        Arc::new(viz::Viz::new(
            viz::Settings {
                interval: args.metrics_scrape_interval,
                timeout: args
                    .metrics_scrape_timeout
                    .min(args.metrics_scrape_interval),
                concurrency: usize::from(args.metrics_scrape_concurrency),
                limits: weft_metrics_api::ring::Limits {
                    retention: args.metrics_retention,
                    max_series_per_target: args.metrics_max_series_per_proxy,
                    max_targets: args.metrics_max_proxies,
                },
                // A config dir's pods run on this machine.
                default_ip: args
                    .config_dir
                    .is_some()
                    .then_some(std::net::IpAddr::from([127, 0, 0, 1])),
                trust_domain: args.trust_domain.clone(),
                cluster_domain: args.cluster_domain.clone(),
                inbound: inbound_settings(&args),
            },
            store.clone(),
        ))
    });
    let destination_listener = match objects {
        Some(_) => Some(bind(args.destination_addr, "destination").await?),
        None => None,
    };
    let webhook = start_injector(&args, &dir, &metrics).await?;

    tokio::spawn(reload);
    tokio::spawn(tls::refresh_loop(
        store.clone(),
        controller_name.clone(),
        args.identity_leaf_lifetime,
        args.identity_clock_skew,
        resolver,
        metrics.clone(),
        first_lifetime,
    ));
    tokio::spawn(admin::serve(
        admin_listener,
        metrics.clone(),
        ready.clone(),
        viz.clone(),
    ));
    let mut webhook_addr = None;

    let mode = auth.mode();
    let service = identity::IdentityService::new(
        args.trust_domain.clone(),
        store,
        Arc::new(auth),
        args.identity_leaf_lifetime,
        args.identity_clock_skew,
        metrics,
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    if let Some(viz) = &viz {
        tokio::spawn(viz::scrape::run(viz.clone(), stop_rx.clone()));
    }
    let mut servers = JoinSet::new();
    if let Some(w) = webhook {
        webhook_addr = Some(w.listener.local_addr().unwrap_or(args.webhook_addr));
        tokio::spawn(w.cert_reload);
        tokio::spawn(w.config_reload);
        servers.spawn(named(
            "webhook server",
            inject::server::serve(w.listener, w.acceptor, w.admission, stop_rx.clone()),
        ));
    }
    let router = tls::grpc_server()
        .add_service(IdentityServer::new(service).max_decoding_message_size(MAX_MESSAGE));
    servers.spawn(named(
        "identity server",
        tls::serve_grpc(
            router,
            identity_listener,
            acceptor.clone(),
            "identity",
            stop_rx.clone(),
        ),
    ));
    let mut destination_addr = None;
    if let (Some(objects), Some(listener)) = (objects, destination_listener) {
        destination_addr = Some(listener.local_addr().unwrap_or(args.destination_addr));
        let policies = destination::policy::OutboundPolicyService::new(
            objects.clone(),
            &args.cluster_domain,
            stop_rx.clone(),
        );
        let inbound = destination::inbound::InboundPolicyService::new(
            objects.clone(),
            inbound_settings(&args),
            stop_rx.clone(),
        );
        let service = destination::DestinationService::new(
            objects,
            &args.trust_domain,
            &args.cluster_domain,
            stop_rx.clone(),
        );
        let router = tls::grpc_server()
            .add_service(DestinationServer::new(service).max_decoding_message_size(MAX_MESSAGE))
            .add_service(
                OutboundPoliciesServer::new(policies).max_decoding_message_size(MAX_MESSAGE),
            )
            .add_service(
                InboundServerPoliciesServer::new(inbound).max_decoding_message_size(MAX_MESSAGE),
            );
        servers.spawn(named(
            "destination server",
            tls::serve_grpc(router, listener, acceptor, "destination", stop_rx),
        ));
    }
    ready.set(true);
    tracing::info!(
        identity = %identity_addr,
        destination = %destination_addr.map_or_else(|| "disabled".to_owned(), |a| a.to_string()),
        injector = %webhook_addr.map_or_else(|| "disabled".to_owned(), |a| a.to_string()),
        admin = %admin_addr,
        tokens = mode,
        controller_identity = %controller_name,
        cert_not_after = %issuer::humanize(not_after),
        leaf_lifetime = %weft_identity::format_duration(args.identity_leaf_lifetime),
        "controller ready (TLS)"
    );

    tokio::select! {
        Some(res) = servers.join_next() => {
            ready.set(false);
            return match res {
                Ok((what, Ok(()))) => Err(StartError::Serve { what, reason: "stopped unexpectedly".into() }),
                Ok((what, Err(e))) => Err(StartError::Serve { what, reason: e.to_string() }),
                Err(e) => Err(StartError::Serve { what: "server task", reason: e.to_string() }),
            };
        }
        signal = shutdown_signal() => {
            tracing::info!(signal, "shutting down");
        }
    }
    ready.set(false);
    let _ = stop_tx.send(true);
    let drain = async {
        while let Some(res) = servers.join_next().await {
            match res {
                Ok((_, Ok(()))) => {}
                Ok((what, Err(e))) => tracing::warn!(error = %e, "{what} stopped with an error"),
                Err(e) => tracing::warn!(error = %e, "server task failed"),
            }
        }
    };
    match tokio::time::timeout(SHUTDOWN_GRACE, drain).await {
        Ok(()) => tracing::info!("stopped"),
        Err(_) => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "connections still open after the grace period; exiting")
        }
    }
    Ok(())
}

/// The install-wide inputs of inbound policy, from the flags.
fn inbound_settings(args: &Args) -> destination::inbound::InboundSettings {
    destination::inbound::InboundSettings {
        default_policy: args.default_inbound_policy,
        cluster_networks: args.cluster_networks.0.clone(),
        trust_domain: args.trust_domain.clone(),
    }
}

/// Tags a server's result with its name, for the log line when it stops.
async fn named<F, E>(what: &'static str, fut: F) -> (&'static str, Result<(), String>)
where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    (what, fut.await.map_err(|e| e.to_string()))
}

/// The proxy injector, ready to serve: its listener, TLS and admission
/// state, and the tasks that reload its certificate and settings.
struct Webhook<C, R> {
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    admission: Arc<inject::admission::Admission<inject::cluster::KubeLookup>>,
    cert_reload: C,
    config_reload: R,
}

/// Read timeout of the injector's API client: lookups must fit in the
/// webhook call's own timeout (10 s).
const INJECTOR_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Sets up the proxy injector when `--webhook-tls-dir` is given (clap made
/// sure cluster mode is on): loads the serving certificate, the values and
/// the trust anchors (start-up fails on any of them being unusable), reads
/// the API server version for native sidecars and binds `--webhook-addr`.
async fn start_injector(
    args: &Args,
    dir: &IdentityDir,
    metrics: &metrics::Metrics,
) -> Result<
    Option<Webhook<impl std::future::Future<Output = ()>, impl std::future::Future<Output = ()>>>,
    StartError,
> {
    let (Some(tls_dir), Some(source)) = (&args.webhook_tls_dir, args.kube_source()) else {
        tracing::info!(
            "proxy injector off: start with --webhook-tls-dir DIR and --kubeconfig PATH or --in-cluster to serve it"
        );
        return Ok(None);
    };
    let (resolver, cert_reload) =
        inject::server::load_cert(tls_dir.clone()).map_err(inject::InjectError::from)?;
    let acceptor = inject::server::acceptor(resolver).map_err(inject::InjectError::from)?;
    let client = kube_client(&source, INJECTOR_READ_TIMEOUT).await?;
    let native = inject::detect_native_sidecars(&client).await;
    let config = inject::Config {
        values_file: args.values.clone(),
        identity_dir: dir.clone(),
        trust_domain: args.trust_domain.clone(),
        cluster_domain: args.cluster_domain.clone(),
    };
    let (injector, config_reload) = inject::load_injector(config, native)?;
    let listener = bind(args.webhook_addr, "webhook").await?;
    let admission = Arc::new(inject::admission::Admission {
        injector,
        lookup: inject::cluster::KubeLookup::new(client.clone()),
        metrics: metrics.inject.clone(),
        events: Some(inject::events::InjectEvents::start(client)),
    });
    Ok(Some(Webhook {
        listener,
        acceptor,
        admission,
        cert_reload,
        config_reload,
    }))
}

/// How long start-up waits for the Kubernetes feed's first lists before
/// serving anyway (the watchers keep trying; streams update when they land).
const KUBE_FIRST_SYNC: Duration = Duration::from_secs(20);

/// Starts the object feed the destination service reads: the Kubernetes
/// feed with `--kubeconfig` (watchers; waits, bounded, for their first
/// lists), the file feed with `--config-dir` (loaded once before
/// returning), so the first `Get` already sees the objects. `None`:
/// neither was given, destination disabled (and why is logged).
async fn start_feed(
    args: &Args,
    kube: Option<&kube::Client>,
) -> Result<Option<store::Store>, StartError> {
    if let Some(client) = kube {
        let objects = store::Store::new();
        let feed =
            feed::kube::KubeFeed::start(client, &objects, &args.cluster_domain, &args.trust_domain)
                .await;
        let late = feed.wait_first_sync(KUBE_FIRST_SYNC).await;
        let snap = objects.snapshot();
        let (services, endpoints, pods, service_accounts) = snap.counts();
        let (service_profiles, traffic_splits, http_route_groups) = snap.policy_counts();
        if late.is_empty() {
            tracing::info!(
                services,
                endpoints,
                pods,
                service_accounts,
                service_profiles,
                traffic_splits,
                http_route_groups,
                "kubernetes feed started"
            );
        } else {
            let late: Vec<String> = late.iter().map(ToString::to_string).collect();
            tracing::warn!(
                late = %late.join(","),
                waited = ?KUBE_FIRST_SYNC,
                "kubernetes feed started before every kind was listed; serving what is known"
            );
        }
        return Ok(Some(objects));
    }
    let Some(dir) = args.config_dir.clone() else {
        tracing::info!(
            "destination service disabled: start with --config-dir DIR, --kubeconfig PATH or --in-cluster to serve endpoints and profiles"
        );
        return Ok(None);
    };
    let objects = store::Store::new();
    let mut feed = feed::files::FileFeed::new(dir.clone(), objects.clone())?;
    let feed = tokio::task::spawn_blocking(move || {
        let report = feed.poll();
        (feed, report)
    })
    .await;
    let (feed, report) = feed.map_err(|e| StartError::Serve {
        what: "initial config dir load",
        reason: e.to_string(),
    })?;
    tracing::info!(
        dir = %dir.display(),
        files = report.loaded + report.failed,
        rejected_files = report.failed,
        rejected_objects = report.rejected,
        poll_interval = ?args.config_poll_interval,
        "file feed started"
    );
    tokio::spawn(feed.run(args.config_poll_interval));
    // No cluster to publish Events to: TrafficSplit reference problems
    // (unknown Services or route groups, self-references) are only logged.
    tokio::spawn(feed::events::check_splits(
        objects.clone(),
        args.cluster_domain.clone(),
        None,
        async {},
    ));
    // Likewise TrafficTargets and default-policy annotations the inbound
    // policy cannot fully apply.
    tokio::spawn(feed::access::check_access(
        objects.clone(),
        args.trust_domain.clone(),
        None,
        async {},
    ));
    Ok(Some(objects))
}

/// Resolves with the name of the first SIGTERM or SIGINT.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            tracing::warn!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
