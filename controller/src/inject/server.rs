//! The webhook's HTTPS server: `POST /inject` over HTTP/1.1 and TLS, with
//! the serving certificate from `--webhook-tls-dir`.
//!
//! The certificate comes from a mounted Secret (`tls.crt`, `tls.key`).
//! The kubelet replaces such files by swapping a symlink, which file
//! watchers miss, so the files' *contents* are polled ([`RELOAD_INTERVAL`]):
//! a changed pair that parses and matches is swapped into the resolver
//! (new handshakes use it, open connections are untouched); a bad pair is
//! logged once and the certificate in force stays — the same rule as the
//! issuer's reload ([`crate::issuer`]).
//!
//! The API server is the only client, but the port is reachable from the
//! pod network, so the listener is bounded like the others: a TLS
//! handshake timeout, a header read timeout, a body size and read-time
//! limit, and a cap on concurrent connections. On SIGTERM it stops
//! accepting, lets each connection finish its request and closes it.

use super::admission::Admission;
use super::cluster::Lookup;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use weft_identity::{crypto_provider, RotatingCert};

/// How often `tls.crt` and `tls.key` are re-read.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(10);
/// Largest AdmissionReview accepted (a Pod is at most ~1.5 MiB in etcd).
pub const MAX_BODY: usize = 4 * 1024 * 1024;
/// Connections served at once; more wait in the kernel's accept queue.
pub const MAX_CONNECTIONS: usize = 256;
/// Bound on a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on reading a request's headers (and on an idle keep-alive
/// connection's next request).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on reading a request's body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the serving certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The files do not hold a usable certificate and key.
    #[error("{}: {reason}", dir.display())]
    Invalid {
        /// The directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The two files' bytes, compared to notice a change.
#[derive(Clone, PartialEq, Eq)]
struct CertFiles {
    cert: Vec<u8>,
    key: Vec<u8>,
}

fn read_files(dir: &Path) -> Result<CertFiles, CertError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|source| CertError::Read { path, source })
    };
    Ok(CertFiles {
        cert: read("tls.crt")?,
        key: read("tls.key")?,
    })
}

fn certified(dir: &Path, files: &CertFiles) -> Result<Arc<CertifiedKey>, CertError> {
    let invalid = |reason: String| CertError::Invalid {
        dir: dir.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&files.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("tls.crt: {e}")))?;
    if certs.is_empty() {
        return Err(invalid("tls.crt holds no certificate".into()));
    }
    let key =
        PrivateKeyDer::from_pem_slice(&files.key).map_err(|e| invalid(format!("tls.key: {e}")))?;
    CertifiedKey::from_der(certs, key, &crypto_provider())
        .map(Arc::new)
        .map_err(|e| invalid(format!("tls.key does not fit tls.crt: {e}")))
}

/// The serving certificate, loaded now (start-up fails if it is not
/// usable), and the task that keeps it current.
pub fn load_cert(
    dir: PathBuf,
) -> Result<(Arc<RotatingCert>, impl std::future::Future<Output = ()>), CertError> {
    let files = read_files(&dir)?;
    let resolver = Arc::new(RotatingCert::new());
    resolver.set(certified(&dir, &files)?);
    let task = reload_loop(dir, files, resolver.clone());
    Ok((resolver, task))
}

async fn reload_loop(dir: PathBuf, mut last: CertFiles, resolver: Arc<RotatingCert>) {
    let mut ticker = tokio::time::interval(RELOAD_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut last_error: Option<String> = None;
    loop {
        ticker.tick().await;
        let result = read_files(&dir).and_then(|files| {
            if files == last {
                return Ok(None);
            }
            let key = certified(&dir, &files)?;
            Ok(Some((files, key)))
        });
        match result {
            Ok(None) => {}
            Ok(Some((files, key))) => {
                resolver.set(key);
                last = files;
                last_error = None;
                tracing::info!(dir = %dir.display(), "webhook serving certificate reloaded");
            }
            Err(error) => {
                // Once per distinct problem: a half-written pair is retried
                // on the next poll anyway.
                let text = error.to_string();
                if last_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!(%error, "webhook certificate files changed but are not usable; keeping the certificate in force");
                    last_error = Some(text);
                }
            }
        }
    }
}

/// TLS (1.2 and 1.3) offering HTTP/1.1, answering with `resolver`'s
/// certificate.
pub fn acceptor(resolver: Arc<RotatingCert>) -> Result<TlsAcceptor, rustls::Error> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// Serves the webhook on `listener` until `stop` turns true, then lets
/// open connections finish their request (the caller bounds the wait).
pub async fn serve<L: Lookup>(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    admission: Arc<Admission<L>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), std::io::Error> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let accepted = tokio::select! {
            () = stopped(&mut stop) => break,
            accepted = async {
                let permit = slots.clone().acquire_owned().await;
                (permit, listener.accept().await)
            } => accepted,
        };
        let (permit, (tcp, peer)) = match accepted {
            (Ok(p), Ok(c)) => (p, c),
            (_, Err(error)) => {
                tracing::warn!(%error, "webhook accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            (Err(_), _) => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let admission = admission.clone();
        let mut stop = stop.clone();
        conns.spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "webhook TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "webhook TLS handshake timed out");
                    return;
                }
            };
            let svc = hyper::service::service_fn(move |req| {
                let admission = admission.clone();
                async move { Ok::<_, Infallible>(handle(req, &admission).await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let conn = builder.serve_connection(TokioIo::new(tls), svc);
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "webhook connection ended with an error");
            }
        });
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
    Ok(())
}

/// Resolves once `stop` is true (or its sender is gone), holding no
/// borrow of the channel afterwards.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn handle<L: Lookup>(
    req: Request<Incoming>,
    admission: &Admission<L>,
) -> Response<Full<Bytes>> {
    if req.uri().path() != weft_inject::names::WEBHOOK_PATH {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if req.method() != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "POST an AdmissionReview\n");
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        admission.metrics.error("decode");
        return text(StatusCode::PAYLOAD_TOO_LARGE, "AdmissionReview too large\n");
    }
    let body = Limited::new(req.into_body(), MAX_BODY);
    let body = match tokio::time::timeout(BODY_READ_TIMEOUT, body.collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(error)) => {
            admission.metrics.error("decode");
            tracing::warn!(%error, "cannot read an AdmissionReview body");
            return text(StatusCode::BAD_REQUEST, "cannot read the request body\n");
        }
        Err(_) => {
            admission.metrics.error("decode");
            return text(
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time\n",
            );
        }
    };
    match admission.review(&body).await {
        Ok(review) => {
            let mut rsp = Response::new(Full::new(Bytes::from(review.to_string())));
            rsp.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            rsp
        }
        Err(error) => {
            tracing::warn!(%error, "refusing a request that is not an AdmissionReview");
            text(StatusCode::BAD_REQUEST, &format!("{error}\n"))
        }
    }
}

fn text(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(Bytes::from(msg.to_owned())));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    rsp
}
