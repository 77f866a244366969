//! A tiny mutating admission webhook served by the test itself: HTTPS on
//! 127.0.0.1 with a certificate from the test's own CA. Every Pod it sees
//! gets the annotation [`ANNOTATION`]`: "true"` through a JSONPatch.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use weft_kube_harness::TestCa;

/// The annotation the webhook adds.
pub const ANNOTATION: &str = "smoke.weft.io/mutated";

/// A running webhook server; call [`WebhookServer::shutdown`] to stop it.
pub struct WebhookServer {
    pub port: u16,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl WebhookServer {
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Starts the webhook on a free 127.0.0.1 port, counting calls in `calls`.
pub async fn serve(ca: &TestCa, calls: Arc<AtomicUsize>) -> Result<WebhookServer> {
    let leaf = ca.issue_server(&["127.0.0.1"])?;
    let certs = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("parse webhook cert")?;
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).context("parse key")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let (stop, mut stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = &mut stopped => return,
                a = listener.accept() => a,
            };
            let Ok((tcp, _)) = accepted else { return };
            let acceptor = acceptor.clone();
            let calls = calls.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req| handle(req, calls.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Ok(WebhookServer { port, stop, task })
}

async fn handle(
    req: Request<Incoming>,
    calls: Arc<AtomicUsize>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, body: Vec<u8>| {
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        Ok(resp)
    };
    if req.uri().path() != "/mutate" {
        return reply(StatusCode::NOT_FOUND, b"{}".to_vec());
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(StatusCode::BAD_REQUEST, b"{}".to_vec()),
    };
    let Ok(review) = serde_json::from_slice::<Value>(&body) else {
        return reply(StatusCode::BAD_REQUEST, b"{}".to_vec());
    };
    calls.fetch_add(1, Ordering::SeqCst);
    let request = &review["request"];
    let has_annotations = request["object"]["metadata"]["annotations"].is_object();
    let escaped = ANNOTATION.replace('~', "~0").replace('/', "~1");
    let patch = if has_annotations {
        json!([{ "op": "add", "path": format!("/metadata/annotations/{escaped}"), "value": "true" }])
    } else {
        json!([{ "op": "add", "path": "/metadata/annotations", "value": { ANNOTATION: "true" } }])
    };
    let patch = base64::engine::general_purpose::STANDARD.encode(patch.to_string());
    let response = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {
            "uid": request["uid"],
            "allowed": true,
            "patchType": "JSONPatch",
            "patch": patch,
        }
    });
    reply(StatusCode::OK, response.to_string().into_bytes())
}
