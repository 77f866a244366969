//! `io.linkerd.proxy.destination.Destination`: service discovery for the
//! proxies.
//!
//! `Get` streams a Service port's endpoints: one initial update, then
//! `Add`/`Remove` diffs whenever the [`Store`] changes. Each stream watches
//! the store's snapshot channel directly, so a change reaches every
//! subscriber within milliseconds and no per-stream task is left behind
//! when a client goes away.
//!
//! Unknown Services are answered with `NoEndpoints { exists: false }` and
//! the stream stays open (so a Service created later is picked up), as
//! Linkerd's destination controller does; Linkerd's proxy treats that as
//! "no such service" and our proxy falls back to the original address.
//! A path that cannot name a Service in this cluster (another domain, a
//! bad port) is refused with `InvalidArgument`, also as Linkerd does.
//! An `IP:port` path names the Service whose ClusterIP it is (answered
//! exactly as the Service's name), else the Pod with that IP
//! ([`endpoints::service_at`], [`endpoints::resolve_pod`],
//! [`endpoints::pod_profile`]).
//!
//! `GetProfile` accepts the same authorities and streams the Service's
//! `DestinationProfile` (routes and retry budget from its ServiceProfile,
//! `dst_overrides` from its TrafficSplit; see [`profile`]): the current
//! profile first, then a new one whenever a store change alters it. A
//! Service without either gets Linkerd's default profile (no routes, no
//! overrides, default retry budget), so proxies never wait for one.
//!
//! TrafficSplits gated by `matches` are served by a second gRPC service on
//! the same port, `io.linkerd.proxy.outbound.OutboundPolicies` (see
//! [`policy`]).

pub mod authority;
pub mod endpoints;
pub mod inbound;
pub mod policy;
pub mod profile;
#[cfg(test)]
pub(crate) mod testing;

use crate::store::{Snapshot, Store};
use authority::Authority;
use endpoints::Resolution;
use futures::Stream;
use linkerd2_proxy_api::destination::destination_server::Destination;
use linkerd2_proxy_api::destination::{DestinationProfile, GetDestination, Update};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

/// A stream of updates for one `Get` (or profiles for `GetProfile`).
pub type UpdateStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// One stream's view of the store: the current snapshot first, then each
/// new one as the store changes, until shutdown. Shared by every streaming
/// RPC (`Get`, `GetProfile`, `OutboundPolicies.Watch`), which only differ
/// in what they compute from a snapshot.
pub(crate) struct Follower {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    shutdown: watch::Receiver<bool>,
    started: bool,
}

// === impl Follower ===

impl Follower {
    /// Follows `store` until `shutdown` turns true.
    pub(crate) fn new(store: &Store, shutdown: &watch::Receiver<bool>) -> Self {
        Self {
            snapshots: store.subscribe(),
            shutdown: shutdown.clone(),
            started: false,
        }
    }

    /// The current snapshot on the first call, then the next changed one;
    /// `None` once shutdown begins or the store is gone.
    pub(crate) async fn next(&mut self) -> Option<Arc<Snapshot>> {
        if *self.shutdown.borrow() {
            return None;
        }
        if self.started {
            tokio::select! {
                changed = self.snapshots.changed() => changed.ok()?,
                _ = self.shutdown.changed() => return None,
            }
        }
        self.started = true;
        Some(self.snapshots.borrow_and_update().clone())
    }
}

/// The destination service.
#[derive(Clone, Debug)]
pub struct DestinationService {
    store: Store,
    trust_domain: Arc<str>,
    cluster_domain: Arc<str>,
    shutdown: watch::Receiver<bool>,
}

impl DestinationService {
    /// A service answering from `store`. Identities are in `trust_domain`;
    /// authorities are Services in `cluster_domain`. Open streams end when
    /// `shutdown` turns true, so graceful shutdown does not wait on them.
    pub fn new(
        store: Store,
        trust_domain: &str,
        cluster_domain: &str,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            store,
            trust_domain: trust_domain.into(),
            cluster_domain: cluster_domain.into(),
            shutdown,
        }
    }
}

/// Per-stream state of a `Get`.
struct GetState {
    target: Authority,
    trust_domain: Arc<str>,
    follower: Follower,
    sent: Option<Resolution>,
    pending: VecDeque<Update>,
}

impl GetState {
    /// Computes the updates from what was sent to `snap`.
    fn advance(&mut self, snap: &Snapshot) {
        let next = endpoints::resolve(snap, &self.target, &self.trust_domain);
        let updates = endpoints::diff(self.sent.as_ref(), &next);
        if !updates.is_empty() {
            tracing::debug!(
                target_service = %self.target,
                version = snap.version,
                endpoints = next.endpoints.len(),
                exists = next.exists,
                updates = updates.len(),
                "destination update"
            );
        }
        self.pending.extend(updates);
        self.sent = Some(next);
    }

    /// The next update to send, waiting for store changes as needed;
    /// `None` ends the stream (shutdown, or the store is gone).
    async fn next(&mut self) -> Option<Update> {
        loop {
            if let Some(u) = self.pending.pop_front() {
                return Some(u);
            }
            let snap = self.follower.next().await?;
            self.advance(&snap);
        }
    }
}

/// Per-stream state of a `GetProfile`.
struct ProfileState {
    target: Authority,
    cluster_domain: Arc<str>,
    trust_domain: Arc<str>,
    follower: Follower,
    sent: Option<profile::Translation>,
}

impl ProfileState {
    /// The next profile to send: the current one at first, then each one
    /// that differs from what was sent; `None` ends the stream.
    async fn next(&mut self) -> Option<DestinationProfile> {
        loop {
            let snap = self.follower.next().await?;
            let next = match &self.target {
                Authority::Service(t) => profile::translate(&snap, t, &self.cluster_domain),
                Authority::Addr(addr) => match endpoints::service_at(&snap, *addr) {
                    Some(t) => profile::translate(&snap, &t, &self.cluster_domain),
                    None => profile::Translation {
                        profile: endpoints::pod_profile(&snap, *addr, &self.trust_domain),
                        ignored: Vec::new(),
                    },
                },
            };
            if self.sent.as_ref() == Some(&next) {
                continue;
            }
            for note in next
                .ignored
                .iter()
                .filter(|n| self.sent.as_ref().is_none_or(|s| !s.ignored.contains(n)))
            {
                tracing::warn!(target_service = %self.target, "profile: ignoring {note}");
            }
            tracing::debug!(
                target_service = %self.target,
                version = snap.version,
                routes = next.profile.routes.len(),
                dst_overrides = next.profile.dst_overrides.len(),
                opaque = next.profile.opaque_protocol,
                "profile update"
            );
            let out = next.profile.clone();
            self.sent = Some(next);
            return Some(out);
        }
    }
}

#[tonic::async_trait]
impl Destination for DestinationService {
    type GetStream = UpdateStream<Update>;
    type GetProfileStream = UpdateStream<DestinationProfile>;

    async fn get(
        &self,
        request: Request<GetDestination>,
    ) -> Result<Response<Self::GetStream>, Status> {
        let req = request.into_inner();
        let target =
            authority::parse_authority(&req.path, &self.cluster_domain).map_err(|error| {
                tracing::debug!(path = req.path, %error, "Get refused");
                Status::invalid_argument(error.to_string())
            })?;
        tracing::debug!(path = req.path, target_service = %target, "Get");
        let state = GetState {
            target,
            trust_domain: self.trust_domain.clone(),
            follower: Follower::new(&self.store, &self.shutdown),
            sent: None,
            pending: VecDeque::new(),
        };
        let stream =
            futures::stream::unfold(
                state,
                |mut s| async move { s.next().await.map(|u| (Ok(u), s)) },
            );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_profile(
        &self,
        request: Request<GetDestination>,
    ) -> Result<Response<Self::GetProfileStream>, Status> {
        let req = request.into_inner();
        let target =
            authority::parse_authority(&req.path, &self.cluster_domain).map_err(|error| {
                tracing::debug!(path = req.path, %error, "GetProfile refused");
                Status::invalid_argument(error.to_string())
            })?;
        tracing::debug!(path = req.path, target_service = %target, "GetProfile");
        let state = ProfileState {
            target,
            cluster_domain: self.cluster_domain.clone(),
            trust_domain: self.trust_domain.clone(),
            follower: Follower::new(&self.store, &self.shutdown),
            sent: None,
        };
        let stream =
            futures::stream::unfold(
                state,
                |mut s| async move { s.next().await.map(|p| (Ok(p), s)) },
            );
        Ok(Response::new(Box::pin(stream)))
    }
}
