//! `server`: the HTTP workload of the end-to-end tests.
//!
//! `GET /` says which pod and version answered and whom it saw as the TCP
//! peer (through a mesh that is the local proxy), optionally after calling
//! an upstream itself (a two-hop chain), so tests can tell traffic splits,
//! rollouts and load balancing apart. `/ready` turns 503 while the server
//! drains after SIGTERM, as a well-behaved app does during a rollout.

use crate::signal::Terminate;
use crate::web::{self, Body, Client};
use http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long one upstream call may take before `/` answers 502.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

/// What the server reports and calls.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// `pod` in the answers.
    pub pod: String,
    /// `version` in the answers.
    pub version: String,
    /// Called once per `GET /`; its JSON answer is embedded as `upstream`.
    pub upstream: Option<Uri>,
    /// How long to keep serving (not ready) after the first SIGTERM.
    pub drain: Duration,
}

struct State {
    config: ServerConfig,
    ready: AtomicBool,
    client: Client,
}

/// Serves on `listener` until terminated: on the first request to
/// terminate, `/ready` answers 503 for `drain`, then the server stops
/// accepting, finishes in-flight requests and returns. A second request
/// skips the rest of the drain.
pub async fn run(
    listener: TcpListener,
    config: ServerConfig,
    mut terminate: Terminate,
) -> anyhow::Result<()> {
    let drain = config.drain;
    let state = Arc::new(State {
        config,
        ready: AtomicBool::new(true),
        client: web::client(UPSTREAM_TIMEOUT),
    });
    let stop = CancellationToken::new();
    let handler = {
        let state = state.clone();
        move |req: Request<Incoming>, peer: SocketAddr| {
            let state = state.clone();
            async move { handle(&state, &req, peer).await }
        }
    };
    let serving = tokio::spawn(web::serve(listener, handler, stop.clone()));

    terminate.recv().await;
    state.ready.store(false, Ordering::SeqCst);
    tracing::info!(
        drain_secs = drain.as_secs_f64(),
        "draining: /ready now answers 503"
    );
    tokio::select! {
        () = tokio::time::sleep(drain) => {}
        () = terminate.recv() => tracing::info!("terminated again: skipping the rest of the drain"),
    }
    tracing::info!("stopping: no new connections, finishing in-flight requests");
    stop.cancel();
    serving
        .await
        .map_err(|e| anyhow::anyhow!("server task failed: {e}"))?;
    tracing::info!("stopped");
    Ok(())
}

async fn handle(state: &State, req: &Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    if req.method() != Method::GET {
        return web::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match req.uri().path() {
        "/" => root(state, peer).await,
        "/healthz" => web::text(StatusCode::OK, "ok"),
        "/ready" => {
            if state.ready.load(Ordering::SeqCst) {
                web::text(StatusCode::OK, "ready")
            } else {
                web::text(StatusCode::SERVICE_UNAVAILABLE, "draining")
            }
        }
        _ => web::text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

async fn root(state: &State, peer: SocketAddr) -> Response<Body> {
    let upstream = match &state.config.upstream {
        None => Value::Null,
        Some(uri) => match call_upstream(&state.client, uri).await {
            Ok(v) => v,
            Err(error) => {
                tracing::warn!(%uri, %error, "upstream call failed");
                return web::json(
                    StatusCode::BAD_GATEWAY,
                    &json!({ "error": format!("upstream {uri}: {error}") }),
                );
            }
        },
    };
    web::json(
        StatusCode::OK,
        &json!({
            "pod": state.config.pod,
            "version": state.config.version,
            "peer": peer.to_string(),
            "upstream": upstream,
        }),
    )
}

async fn call_upstream(client: &Client, uri: &Uri) -> Result<Value, String> {
    let (status, body) = web::get(client, uri, UPSTREAM_TIMEOUT).await?;
    if !status.is_success() {
        return Err(format!("answered {status}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("answered non-JSON: {e}"))
}

/// The pod's name for answers: `$POD_NAME` (the downward API), else the
/// hostname (which Kubernetes sets to the pod name anyway).
pub fn pod_name() -> String {
    if let Ok(name) = std::env::var("POD_NAME") {
        if !name.is_empty() {
            return name;
        }
    }
    if let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let name = name.trim();
        if !name.is_empty() {
            return name.to_owned();
        }
    }
    std::env::var("HOSTNAME").unwrap_or_default()
}
