//! The per-connection pipeline shared by both sides of the proxy.
//!
//! meter → (skip detection for opaque ports) → detect → serve HTTP with the
//! side's stack, or forward opaque TCP to the target (resetting the client
//! when the target cannot be reached, as a transparent proxy must).

use crate::config::PortSet;
use crate::drain::Drain;
use crate::http::server::{self, HttpService, ServerSettings};
use crate::metrics::{Direction, TcpMetrics};
use crate::transport::detect::{detect, Detected};
use crate::transport::io::{MeteredIo, PrefixedIo};
use crate::transport::listen::{reset, Accepted};
use crate::transport::opaque;
use bytes::Bytes;
use std::net::SocketAddr;
use std::time::Duration;

/// What both sides need to handle a connection.
#[derive(Clone)]
pub struct Side {
    /// Which side this is (metric labels, logs).
    pub direction: Direction,
    /// Transport metrics.
    pub tcp: TcpMetrics,
    /// Shutdown coordination.
    pub drain: Drain,
    /// Ports whose traffic is never inspected.
    pub opaque_ports: PortSet,
    /// Limit on protocol detection.
    pub detect_timeout: Duration,
    /// TCP connect timeout for opaque forwarding.
    pub connect_timeout: Duration,
    /// Limits on served HTTP connections.
    pub server: ServerSettings,
}

// === impl Side ===

impl Side {
    /// Handles one accepted connection. `target` is where opaque traffic
    /// goes (`None`: nowhere known); `http` builds the HTTP stack if the
    /// connection turns out to speak HTTP.
    pub async fn serve(
        &self,
        accepted: Accepted,
        target: Option<SocketAddr>,
        http: impl FnOnce() -> HttpService,
    ) {
        let client = accepted.client;
        let io = MeteredIo::new(accepted.stream, self.tcp.open(self.direction, "src"));
        let skip_detect = target.is_some_and(|t| self.opaque_ports.contains(t.port()));
        let (detected, mut io) = if skip_detect {
            (Detected::Opaque, PrefixedIo::new(Bytes::new(), io))
        } else {
            match detect(io, self.detect_timeout).await {
                Ok(detected) => detected,
                Err(error) => {
                    tracing::debug!(%client, %error, "connection failed during protocol detection");
                    return;
                }
            }
        };
        tracing::debug!(%client, ?target, ?detected, direction = self.direction.as_str(), "accepted");
        match detected {
            Detected::Http(version) => {
                server::serve(io, version, http(), &self.drain, &self.server).await
            }
            Detected::Opaque | Detected::Timeout => {
                let Some(target) = target else {
                    tracing::info!(%client, "non-HTTP connection with no original destination; closing");
                    reset(io.get_ref().get_ref());
                    return;
                };
                if let Err(error) = opaque::forward(
                    &mut io,
                    target,
                    self.connect_timeout,
                    &self.tcp,
                    self.direction,
                )
                .await
                {
                    tracing::info!(%client, %error, "opaque connection failed; resetting client");
                    reset(io.get_ref().get_ref());
                }
            }
        }
    }
}
