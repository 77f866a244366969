//! The controller's own TLS: a certificate for its identity
//! (`weft-controller.weft.serviceaccount.identity.weft.TRUST_DOMAIN`),
//! issued from the issuer in force at start-up and renewed like a proxy's,
//! and a listener that terminates TLS before gRPC.
//!
//! TLS is always on, loopback or not: a ServiceAccount token never crosses
//! a socket in clear, and proxies verify the controller's name against the
//! same trust anchor they use for each other.

use crate::issuer::{humanize, IssuerStore};
use crate::metrics::{unix_seconds, Metrics, ReloadLabels};
use futures::Stream;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use weft_identity::{certified_key, crypto_provider, generate_csr, RotatingCert};

/// Renew when this fraction of the certificate's lifetime has passed.
const REFRESH_AT: f64 = 0.7;
/// Retry delays after a failed renewal: first and maximum.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// Upper bound on a TLS handshake; a client that stalls is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors setting up the controller's TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The controller could not issue itself a certificate.
    #[error("issuing the controller's own certificate for {name}: {reason}")]
    Issue {
        /// The controller identity.
        name: String,
        /// Why.
        reason: String,
    },
    /// The rustls configuration could not be built.
    #[error("building the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// TLS 1.3 server configuration answering with whatever `resolver` holds,
/// offering HTTP/2 by ALPN (gRPC).
pub fn server_config(resolver: Arc<RotatingCert>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// Issues a certificate for `name` from the issuer in force and installs
/// it in `resolver`. Returns its `notAfter` and lifetime.
pub fn issue(
    store: &IssuerStore,
    name: &str,
    lifetime: Duration,
    clock_skew: Duration,
    resolver: &RotatingCert,
    metrics: &Metrics,
) -> Result<(SystemTime, Duration), TlsError> {
    let result = (|| {
        let err = |reason: String| TlsError::Issue {
            name: name.to_owned(),
            reason,
        };
        let (key, csr) = generate_csr(name).map_err(|e| err(e.to_string()))?;
        let issuer = store.current();
        let issued = SystemTime::now();
        let cert = issuer
            .certify(&csr, name, lifetime, clock_skew)
            .map_err(|e| err(e.to_string()))?;
        let ck =
            certified_key(&key, &cert.leaf_der, &cert.chain).map_err(|e| err(e.to_string()))?;
        resolver.set(ck);
        let effective = cert
            .valid_until
            .duration_since(issued)
            .unwrap_or(Duration::ZERO);
        Ok((cert.valid_until, effective))
    })();
    let label = if result.is_ok() { "ok" } else { "error" };
    metrics
        .controller_cert_refresh
        .get_or_create(&ReloadLabels { result: label })
        .inc();
    if let Ok((not_after, _)) = &result {
        metrics.controller_cert_expiry.set(unix_seconds(*not_after));
    }
    result
}

/// Keeps the controller's certificate fresh: renews at 70% of its
/// lifetime, right away when a new issuer is installed (so the served chain
/// follows the issuer), and retries failures with bounded backoff while the
/// current certificate keeps serving.
pub async fn refresh_loop(
    store: IssuerStore,
    name: String,
    lifetime: Duration,
    clock_skew: Duration,
    resolver: Arc<RotatingCert>,
    metrics: Metrics,
    first_lifetime: Duration,
) {
    let mut issuer_changes = store.subscribe();
    issuer_changes.mark_unchanged();
    let mut wait = first_lifetime.mul_f64(REFRESH_AT);
    let mut retry = RETRY_MIN;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            changed = issuer_changes.changed() => {
                if changed.is_err() {
                    return;
                }
                tracing::info!("issuer changed: renewing the controller's certificate");
            }
        }
        match issue(&store, &name, lifetime, clock_skew, &resolver, &metrics) {
            Ok((not_after, effective)) => {
                tracing::info!(
                    identity = %name,
                    not_after = %humanize(not_after),
                    "controller certificate renewed"
                );
                wait = effective.mul_f64(REFRESH_AT);
                retry = RETRY_MIN;
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?retry, "renewing the controller certificate failed");
                wait = retry;
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
}

/// Concurrent gRPC streams one client connection may hold.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 16_384;

/// The settings every gRPC server of the controller shares. The timeout
/// and the per-connection concurrency limit bound the time to a response's
/// headers only, so long-lived streams (`Destination/Get`) are not cut and
/// do not hold a slot; many streams per connection are allowed because a
/// proxy holds three streams (`Get`, `GetProfile`, `OutboundPolicies.Watch`)
/// per service it talks to over one connection: 16,384 streams let one
/// proxy follow about 5,000 services. (At 1,024, a proxy calling more than
/// ~340 services had its next lookups queue forever; `weft-bench
/// propagation` at 1,000 services found it.)
pub fn grpc_server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .timeout(Duration::from_secs(30))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .concurrency_limit_per_connection(32)
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
}

/// Serves `router` (built from [`grpc_server`]) over TLS on `listener`
/// until `shutdown` turns true, then drains in-flight requests. The one
/// place the controller serves TLS gRPC, whatever the service.
pub async fn serve_grpc(
    router: tonic::transport::server::Router,
    listener: TcpListener,
    acceptor: TlsAcceptor,
    what: &'static str,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::debug!(server = what, addr = ?addr, "serving gRPC over TLS");
    router
        .serve_with_incoming_shutdown(incoming(listener, acceptor, what), async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
}

/// Accepts TCP connections on `listener` and completes TLS handshakes in
/// their own tasks (bounded by a timeout), yielding established streams.
/// Stops accepting when the returned stream is dropped. `what` names the
/// server in logs.
pub fn incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    what: &'static str,
) -> impl Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> {
    let (tx, rx) = mpsc::channel::<TlsStream<TcpStream>>(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = tx.closed() => return,
                a = listener.accept() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(c) => c,
                Err(error) => {
                    tracing::warn!(%error, server = what, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(tls).await;
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, server = what, "TLS handshake failed");
                    }
                    Err(_) => {
                        tracing::debug!(%peer, server = what, "TLS handshake timed out");
                    }
                }
            });
        }
    });
    futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|s| (Ok(s), rx)) },
    )
}
