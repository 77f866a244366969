//! The per-connection pipeline shared by both sides of the proxy.
//!
//! ```text
//! accept ─► detect ─┬─ TLS for our identity (inbound) ─► mTLS handshake ─► detect again ─┐
//!                   ├─ other TLS ─► passthrough (opaque)                                  │
//!                   ├─ HTTP ─────────────────────────────────────────────► HTTP stack ◄──┤
//!                   └─ opaque / timeout ─────────────────────────────────► opaque TCP ◄──┘
//! ```
//!
//! Inbound ports listed in `WEFT_PROXY_REQUIRE_IDENTITY_PORTS` accept only
//! the mTLS branch; anything else is reset. An opaque target that cannot be
//! reached is reset too, as a transparent proxy must.

use crate::config::PortSet;
use crate::drain::Drain;
use crate::http::server::{self, HttpService, ServerSettings};
use crate::identity::LocalIdentity;
use crate::metrics::{Direction, TcpMetrics, Tls};
use crate::transport::detect::{detect, Detected};
use crate::transport::io::{MeteredIo, PrefixedIo};
use crate::transport::listen::{reset, Accepted};
use crate::transport::{opaque, tls};
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

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
    /// Limit on protocol detection (and on the inbound TLS handshake).
    pub detect_timeout: Duration,
    /// TCP connect timeout for opaque forwarding.
    pub connect_timeout: Duration,
    /// Limits on served HTTP connections.
    pub server: ServerSettings,
    /// This proxy's identity, when mTLS is configured.
    pub identity: Option<LocalIdentity>,
    /// Inbound destination ports that require a verified client identity.
    pub require_identity_ports: PortSet,
}

/// Where a connection's opaque bytes go, and what its peer must prove.
#[derive(Clone, Debug)]
pub struct Target {
    /// The address to connect to.
    pub addr: SocketAddr,
    /// The identity of the proxy there, for mTLS; `None` for plaintext.
    pub identity: Option<Arc<str>>,
}

type Accepting = PrefixedIo<MeteredIo<TcpStream>>;

// === impl Side ===

impl Side {
    /// Handles one accepted connection. `target` is where opaque traffic
    /// goes (`None`: nowhere known); `http` builds the HTTP stack, given
    /// the connection's TLS status, if the connection speaks HTTP.
    pub async fn serve(
        &self,
        accepted: Accepted,
        target: Option<Target>,
        http: impl FnOnce(Tls) -> HttpService,
    ) {
        let client = accepted.client;
        let io = MeteredIo::unattached(accepted.stream);
        let skip_detect = target
            .as_ref()
            .is_some_and(|t| self.opaque_ports.contains(t.addr.port()));
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

        if detected == Detected::Tls && self.direction == Direction::Inbound {
            if let Some(identity) = self.identity.as_ref() {
                let sni = tls::client_hello_sni(io.prefix());
                if sni.as_deref() == Some(&**identity.name()) {
                    return self.terminate(io, identity, client, target, http).await;
                }
            }
        }

        let status = match detected {
            Detected::Tls => Tls::Passthru,
            _ => self.tcp.plaintext(),
        };
        if self.refuses_unauthenticated(target.as_ref()) {
            io.get_mut()
                .attach(|| self.tcp.open(self.direction, "src", status.clone()));
            tracing::info!(%client, ?target, "connection without a client identity to a port that requires one; resetting");
            reset(io.get_ref().get_ref());
            return;
        }
        io.get_mut()
            .attach(|| self.tcp.open(self.direction, "src", status.clone()));
        match detected {
            Detected::Http(version) => {
                server::serve(io, version, http(status), &self.drain, &self.server).await
            }
            Detected::Tls | Detected::Opaque | Detected::Timeout => {
                if !self.forward_opaque(&mut io, client, target.as_ref()).await {
                    reset(io.get_ref().get_ref());
                }
            }
        }
    }

    /// Inbound mTLS for our identity: handshake, then detect what runs
    /// inside and serve it.
    async fn terminate(
        &self,
        io: Accepting,
        identity: &LocalIdentity,
        client: SocketAddr,
        target: Option<Target>,
        http: impl FnOnce(Tls) -> HttpService,
    ) {
        let (mut stream, client_id) = match tls::accept(io, identity, self.detect_timeout).await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::info!(%client, %error, "mTLS handshake failed");
                return;
            }
        };
        let status = Tls::Client(client_id);
        stream
            .get_mut()
            .0
            .get_mut()
            .attach(|| self.tcp.open(self.direction, "src", status.clone()));
        let (detected, mut io) = match detect(stream, self.detect_timeout).await {
            Ok(d) => d,
            Err(error) => {
                tracing::debug!(%client, %error, "mTLS connection failed during protocol detection");
                return;
            }
        };
        tracing::debug!(%client, ?detected, tls = ?status, "mTLS accepted");
        match detected {
            Detected::Http(version) => {
                server::serve(io, version, http(status), &self.drain, &self.server).await
            }
            _ => {
                self.forward_opaque(&mut io, client, target.as_ref()).await;
            }
        }
    }

    fn refuses_unauthenticated(&self, target: Option<&Target>) -> bool {
        self.direction == Direction::Inbound
            && target.is_some_and(|t| self.require_identity_ports.contains(t.addr.port()))
    }

    /// Copies opaque bytes to the target; false when it could not be
    /// reached (the caller resets the client if it can).
    async fn forward_opaque<I>(
        &self,
        io: &mut I,
        client: SocketAddr,
        target: Option<&Target>,
    ) -> bool
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        let Some(target) = target else {
            tracing::info!(%client, "non-HTTP connection with no original destination; closing");
            return false;
        };
        let tls = match (&self.identity, &target.identity) {
            (Some(local), Some(remote)) => Some((local, remote)),
            _ => None,
        };
        match opaque::forward(
            io,
            target.addr,
            self.connect_timeout,
            &self.tcp,
            self.direction,
            tls,
        )
        .await
        {
            Ok(()) => true,
            Err(error) => {
                tracing::info!(%client, %error, "opaque connection failed; resetting client");
                false
            }
        }
    }
}
