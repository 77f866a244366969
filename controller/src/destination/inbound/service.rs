//! The gRPC service: `GetPort` and `WatchPort` of
//! `io.linkerd.proxy.inbound.InboundServerPolicies`, served next to
//! `Destination` on the destination port.
//!
//! The workload is Linkerd's JSON form `{"ns":"NS","pod":"POD"}` or its
//! older `NS:POD`; anything else, and a port outside 1–65535, is
//! `InvalidArgument`. A pod the store does not hold is `NotFound`.
//! `WatchPort` sends the current policy at once, then each one that
//! differs from the last sent (a store change that does not alter it
//! sends nothing), and the current one again after [`RESEND_INTERVAL`]
//! without a message, so an idle stream still shows it is alive. If the
//! pod goes away the stream ends with `NotFound`; at shutdown it ends.

use super::{port_policy, InboundSettings, LookupError, PortPolicy};
use crate::destination::{Follower, UpdateStream};
use crate::store::{ObjectKey, Store};
use linkerd2_proxy_api::inbound::inbound_server_policies_server::InboundServerPolicies;
use linkerd2_proxy_api::inbound::{PortSpec, Server};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

/// How long an idle `WatchPort` stream waits before sending the current
/// policy again.
pub const RESEND_INTERVAL: Duration = Duration::from_secs(60);

/// Longest workload string considered (a namespace and a pod name are at
/// most 63 and 253 characters).
const MAX_WORKLOAD: usize = 1024;

/// Why a `PortSpec` was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The workload is neither `{"ns":…,"pod":…}` nor `NS:POD`.
    #[error("invalid workload {workload:?}: {reason} (expected {{\"ns\":\"NS\",\"pod\":\"POD\"}} or NS:POD)")]
    Workload {
        /// The workload as sent (cut to a sane length).
        workload: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Port 0 or above 65535.
    #[error("invalid port {0} (expected 1-65535)")]
    Port(u32),
}

/// The pod and port a `PortSpec` names.
pub fn parse_spec(spec: &PortSpec) -> Result<(ObjectKey, u16), SpecError> {
    let port = u16::try_from(spec.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or(SpecError::Port(spec.port))?;
    Ok((parse_workload(&spec.workload)?, port))
}

/// Parses Linkerd's workload forms.
pub fn parse_workload(workload: &str) -> Result<ObjectKey, SpecError> {
    let err = |reason: &str| SpecError::Workload {
        workload: workload.chars().take(128).collect(),
        reason: reason.to_owned(),
    };
    if workload.len() > MAX_WORKLOAD {
        return Err(err("too long"));
    }
    let w = workload.trim();
    let (ns, pod) = if w.starts_with('{') {
        #[derive(serde::Deserialize)]
        struct Json {
            ns: String,
            pod: Option<String>,
            external_workload: Option<String>,
        }
        let j: Json = serde_json::from_str(w).map_err(|e| err(&e.to_string()))?;
        match (j.pod, j.external_workload) {
            (Some(pod), _) => (j.ns, pod),
            (None, Some(_)) => return Err(err("external workloads are not supported")),
            (None, None) => return Err(err("missing field `pod`")),
        }
    } else {
        let (ns, pod) = w.split_once(':').ok_or_else(|| err("no ':'"))?;
        (ns.to_owned(), pod.to_owned())
    };
    if ns.is_empty() || pod.is_empty() {
        return Err(err("empty namespace or pod name"));
    }
    if ns.contains(['/', ':']) || pod.contains(['/', ':']) {
        return Err(err("names cannot contain '/' or ':'"));
    }
    Ok(ObjectKey::new(ns, pod))
}

/// The inbound policy service.
#[derive(Clone, Debug)]
pub struct InboundPolicyService {
    store: Store,
    settings: Arc<InboundSettings>,
    shutdown: watch::Receiver<bool>,
}

// === impl InboundPolicyService ===

impl InboundPolicyService {
    /// A service answering from `store` with `settings`. Open `WatchPort`
    /// streams end when `shutdown` turns true.
    pub fn new(store: Store, settings: InboundSettings, shutdown: watch::Receiver<bool>) -> Self {
        Self {
            store,
            settings: Arc::new(settings),
            shutdown,
        }
    }

    fn spec(rpc: &str, spec: &PortSpec) -> Result<(ObjectKey, u16), Status> {
        parse_spec(spec).map_err(|error| {
            tracing::debug!(rpc, workload = spec.workload, port = spec.port, %error, "inbound policy refused");
            Status::invalid_argument(error.to_string())
        })
    }
}

/// The answer for a pod the store does not hold.
fn not_found(e: &LookupError) -> Status {
    Status::not_found(format!(
        "{e}: no such pod in the controller's store (is the workload name right, and is the pod created?)"
    ))
}

/// Logs each warning in `next` not already in `sent`.
fn warn_new(pod: &ObjectKey, port: u16, next: &PortPolicy, sent: Option<&PortPolicy>) {
    for w in &next.warnings {
        if sent.is_none_or(|s| !s.warnings.contains(w)) {
            tracing::warn!(pod = %pod, port, "inbound policy: {w}");
        }
    }
}

/// Per-stream state of a `WatchPort`.
struct WatchState {
    pod: ObjectKey,
    port: u16,
    settings: Arc<InboundSettings>,
    follower: Follower,
    sent: Option<PortPolicy>,
    last_sent: Instant,
    done: bool,
}

// === impl WatchState ===

impl WatchState {
    /// The next message: the current policy at first, then each one that
    /// differs, or the same again after [`RESEND_INTERVAL`] of silence;
    /// `NotFound` once the pod is gone, after which (or at shutdown) the
    /// stream ends (`None`).
    async fn next(&mut self) -> Option<Result<Server, Status>> {
        if self.done {
            return None;
        }
        loop {
            let snap = match &self.sent {
                None => self.follower.next().await?,
                Some(sent) => {
                    let resend = self.last_sent + RESEND_INTERVAL;
                    tokio::select! {
                        snap = self.follower.next() => snap?,
                        () = tokio::time::sleep_until(resend) => {
                            self.last_sent = Instant::now();
                            tracing::trace!(pod = %self.pod, port = self.port, "inbound policy resent (idle stream)");
                            return Some(Ok(sent.server.clone()));
                        }
                    }
                }
            };
            let next = match port_policy(&snap, &self.settings, &self.pod, self.port) {
                Ok(next) => next,
                Err(e) => {
                    tracing::debug!(pod = %self.pod, port = self.port, "inbound policy: the pod is gone");
                    self.done = true;
                    return Some(Err(not_found(&e)));
                }
            };
            if self.sent.as_ref() == Some(&next) {
                continue;
            }
            warn_new(&self.pod, self.port, &next, self.sent.as_ref());
            tracing::debug!(
                pod = %self.pod,
                port = self.port,
                version = snap.version,
                server = next.server.labels.get("name").map(String::as_str).unwrap_or_default(),
                authorizations = next.server.authorizations.len(),
                "inbound policy update"
            );
            let out = next.server.clone();
            self.sent = Some(next);
            self.last_sent = Instant::now();
            return Some(Ok(out));
        }
    }
}

#[tonic::async_trait]
impl InboundServerPolicies for InboundPolicyService {
    type WatchPortStream = UpdateStream<Server>;

    async fn get_port(&self, request: Request<PortSpec>) -> Result<Response<Server>, Status> {
        let (pod, port) = Self::spec("GetPort", request.get_ref())?;
        let policy = port_policy(&self.store.snapshot(), &self.settings, &pod, port)
            .map_err(|e| not_found(&e))?;
        warn_new(&pod, port, &policy, None);
        Ok(Response::new(policy.server))
    }

    async fn watch_port(
        &self,
        request: Request<PortSpec>,
    ) -> Result<Response<Self::WatchPortStream>, Status> {
        let (pod, port) = Self::spec("WatchPort", request.get_ref())?;
        // Refuse an unknown pod up front, as a status rather than a stream.
        if let Err(e) = port_policy(&self.store.snapshot(), &self.settings, &pod, port) {
            return Err(not_found(&e));
        }
        tracing::debug!(pod = %pod, port, "WatchPort");
        let state = WatchState {
            pod,
            port,
            settings: self.settings.clone(),
            follower: Follower::new(&self.store, &self.shutdown),
            sent: None,
            last_sent: Instant::now(),
            done: false,
        };
        let stream =
            futures::stream::unfold(state, |mut s| async move { s.next().await.map(|p| (p, s)) });
        Ok(Response::new(Box::pin(stream)))
    }
}
