//! The per-connection pipeline shared by both sides of the proxy.
//!
//! ```text
//! accept ─► detect ─┬─ TLS for our identity (inbound) ─► mTLS handshake ─► detect again ─┐
//!                   ├─ other TLS ─► passthrough (opaque)                                  │
//!                   ├─ HTTP ─────────────────────────────────────────────► HTTP stack ◄──┤
//!                   └─ opaque / timeout ─────────────────────────────────► opaque TCP ◄──┘
//! ```
//!
//! Inbound, an opaque port is not inspected, but a ClientHello for this
//! proxy's identity arriving within [`OPAQUE_TLS_SNIFF`] is still
//! terminated (a meshed client reaches every port over mTLS), so the
//! client's identity is known there too.
//!
//! Inbound ports listed in `WEFT_PROXY_REQUIRE_IDENTITY_PORTS` accept only
//! the mTLS branch; anything else is reset. An opaque target that cannot be
//! reached is reset too, as a transparent proxy must.
//!
//! Once a connection's TLS (and so its client's identity) and its protocol
//! are known, the side's [`Admission`] decides whether it is served at all
//! (inbound authorization; the outbound side admits everything) and may
//! end it later: an opaque connection is reset, an HTTP one is closed
//! gracefully.

use crate::config::PortSet;
use crate::discovery::{Discovery, Resolution};
use crate::drain::Drain;
use crate::http::server::{self, HttpService, ServerSettings};
use crate::identity::LocalIdentity;
use crate::metrics::{Direction, TcpMetrics, Tls};
use crate::outbound::concrete::ConcreteService;
use crate::transport::detect::{detect, Detected};
use crate::transport::io::{MeteredIo, PrefixedIo};
use crate::transport::listen::{reset, Accepted};
use crate::transport::{opaque, tls};
use bytes::Bytes;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// What a connection turned out to be, for its [`Admission`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnKind {
    /// Served as HTTP: requests are checked one by one later.
    Http,
    /// Forwarded as bytes (opaque port, TLS passthrough, not HTTP).
    Tcp,
}

/// Whether, and for how long, a connection may be served.
pub enum Admitted {
    /// Close it now.
    Refused,
    /// Serve it until it ends.
    Always,
    /// Serve it until this resolves (its authorization was revoked).
    Until(Pin<Box<dyn Future<Output = ()> + Send>>),
}

/// Decides about each connection once its TLS and protocol are known.
pub trait Admission: Send {
    /// The decision for a connection with `tls` of `kind`.
    fn admit(&mut self, tls: &Tls, kind: ConnKind) -> Admitted;
}

/// Admits every connection, forever (the outbound side).
#[derive(Clone, Copy, Debug, Default)]
pub struct AdmitAll;

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
    /// The address to connect to (the original destination).
    pub addr: SocketAddr,
    /// The identity of the proxy there, for mTLS; `None` for plaintext.
    pub identity: Option<Arc<str>>,
    /// Forward as opaque TCP at once, without protocol detection
    /// (discovery says the port is opaque).
    pub opaque: bool,
    /// A target discovery knows: opaque connections are balanced over its
    /// endpoints (each with mTLS to its own identity) instead of going to
    /// `addr`.
    pub balanced: Option<Balanced>,
}

/// The discovered endpoints of an opaque target, and how to pick one.
#[derive(Clone)]
pub struct Balanced {
    /// The authority they were resolved by (`IP:port`).
    pub name: String,
    /// Where the endpoints are looked up again when the connection is
    /// forwarded (a shared, cached watch), so a connection that waited
    /// for detection still gets a current endpoint.
    pub discovery: Discovery,
    /// The backend's stack: its balancer (P2C over peak-EWMA) is shared
    /// with HTTP.
    pub concrete: ConcreteService,
    /// The longest wait for that lookup (the watch normally answers at once).
    pub timeout: Duration,
}

impl std::fmt::Debug for Balanced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balanced")
            .field("name", &self.name)
            .finish()
    }
}

impl Target {
    /// A target reached as it is: `addr`, with mTLS if `identity` is set.
    pub fn direct(addr: SocketAddr, identity: Option<Arc<str>>) -> Self {
        Self {
            addr,
            identity,
            opaque: false,
            balanced: None,
        }
    }
}

type Accepting = PrefixedIo<MeteredIo<TcpStream>>;

/// The longest an inbound connection to an opaque port is watched for a
/// ClientHello for this proxy (meshed clients send one at once).
pub const OPAQUE_TLS_SNIFF: Duration = Duration::from_secs(1);

// === impl Admitted ===

impl Admitted {
    /// Resolves when the connection must end (never for `Always`).
    async fn revoked(self) {
        match self {
            Admitted::Until(revoked) => revoked.await,
            Admitted::Always | Admitted::Refused => std::future::pending().await,
        }
    }
}

// === impl AdmitAll ===

impl Admission for AdmitAll {
    fn admit(&mut self, _: &Tls, _: ConnKind) -> Admitted {
        Admitted::Always
    }
}

// === impl Side ===

impl Side {
    /// The forwarder of this side's HTTP requests, through `clients`.
    pub fn forward(&self, clients: crate::http::client::Clients) -> crate::http::forward::Forward {
        crate::http::forward::Forward::new(
            clients,
            self.drain.clone(),
            self.tcp.clone(),
            self.direction,
            self.connect_timeout,
        )
    }

    /// Handles one accepted connection. `target` is where opaque traffic
    /// goes (`None`: nowhere known); `http` builds the HTTP stack, given
    /// the connection's TLS status, if the connection speaks HTTP;
    /// `admission` decides whether (and until when) it is served.
    pub async fn serve(
        &self,
        accepted: Accepted,
        target: Option<Target>,
        http: impl FnOnce(Tls) -> HttpService,
        admission: impl Admission,
    ) {
        let client = accepted.client;
        let io = MeteredIo::unattached(accepted.stream);
        let opaque = self.is_opaque(target.as_ref());
        // Inbound, a meshed client reaches an opaque port over mTLS too: its
        // ClientHello comes at once, so it is looked for briefly (a client
        // waiting for the server to speak first waits at most that long).
        let sniff_tls = opaque && self.direction == Direction::Inbound && self.identity.is_some();
        let (detected, mut io) = if opaque && !sniff_tls {
            (Detected::Opaque, PrefixedIo::new(Bytes::new(), io))
        } else {
            let timeout = if sniff_tls {
                self.detect_timeout.min(OPAQUE_TLS_SNIFF)
            } else {
                self.detect_timeout
            };
            match detect(io, timeout).await {
                // Opaque ports are never inspected: only TLS counts.
                Ok((Detected::Tls, io)) => (Detected::Tls, io),
                Ok((_, io)) if opaque => (Detected::Opaque, io),
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
                    return self
                        .terminate(io, identity, client, target, http, admission)
                        .await;
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
        // A plaintext client of an unreachable target is reset, as a
        // transparent proxy must.
        self.serve_admitted(
            io,
            detected,
            status,
            client,
            target.as_ref(),
            http,
            admission,
            true,
        )
        .await
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
        admission: impl Admission,
    ) {
        let opaque = self.is_opaque(target.as_ref());
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
        if opaque || tls::is_opaque(&stream) {
            // A peer proxy carrying opaque TCP, or an opaque port: nothing
            // to detect, and the application may be the one to speak first.
            tracing::debug!(%client, tls = ?status, "mTLS accepted (opaque)");
            let opaque = Detected::Opaque;
            return self
                .serve_admitted(
                    stream,
                    opaque,
                    status,
                    client,
                    target.as_ref(),
                    http,
                    admission,
                    false,
                )
                .await;
        }
        let (detected, io) = match detect(stream, self.detect_timeout).await {
            Ok(d) => d,
            Err(error) => {
                tracing::debug!(%client, %error, "mTLS connection failed during protocol detection");
                return;
            }
        };
        tracing::debug!(%client, ?detected, tls = ?status, "mTLS accepted");
        self.serve_admitted(
            io,
            detected,
            status,
            client,
            target.as_ref(),
            http,
            admission,
            false,
        )
        .await
    }

    /// Asks `admission` about a connection whose protocol is known, then
    /// serves it: HTTP through the HTTP stack, anything else as opaque bytes
    /// to the target. A refused connection, or one whose admission is later
    /// revoked, is reset; so is one whose target cannot be reached, when
    /// `reset_unreachable`.
    #[allow(clippy::too_many_arguments)]
    async fn serve_admitted<I>(
        &self,
        mut io: I,
        detected: Detected,
        status: Tls,
        client: SocketAddr,
        target: Option<&Target>,
        http: impl FnOnce(Tls) -> HttpService,
        mut admission: impl Admission,
        reset_unreachable: bool,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static + Socket,
    {
        let kind = match detected {
            Detected::Http(_) => ConnKind::Http,
            _ => ConnKind::Tcp,
        };
        let admitted = admission.admit(&status, kind);
        if matches!(admitted, Admitted::Refused) {
            reset(io.socket());
            return;
        }
        match detected {
            Detected::Http(version) => {
                let svc = http(status);
                server::serve(
                    io,
                    version,
                    svc,
                    &self.drain,
                    &self.server,
                    admitted.revoked(),
                )
                .await
            }
            Detected::Tls | Detected::Opaque | Detected::Timeout => {
                tokio::select! {
                    forwarded = self.forward_opaque(&mut io, client, target) => {
                        if !forwarded && reset_unreachable {
                            reset(io.socket());
                        }
                    }
                    _ = admitted.revoked() => reset(io.socket()),
                }
            }
        }
    }

    /// True if `target`'s bytes are never inspected (discovery says so, or
    /// `WEFT_PROXY_OPAQUE_PORTS` lists its port).
    fn is_opaque(&self, target: Option<&Target>) -> bool {
        target.is_some_and(|t| t.opaque || self.opaque_ports.contains(t.addr.port()))
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
        let mut addr = target.addr;
        let mut identity = target.identity.clone();
        let mut in_flight = None;
        if let Some(balanced) = &target.balanced {
            match balanced
                .discovery
                .resolve(&balanced.name, balanced.timeout)
                .await
            {
                Resolution::Endpoints(_) => match balanced.concrete.pick_opaque() {
                    Ok((picked, id, guard)) => {
                        (addr, identity) = (picked, id);
                        in_flight = Some(guard);
                    }
                    Err(why) => {
                        tracing::info!(%client, service = %balanced.name, %why, "opaque connection has no usable endpoint; resetting client");
                        return false;
                    }
                },
                // No longer known: where the connection was going.
                Resolution::Unknown | Resolution::Pending => {}
            }
        }
        let tls = match (&self.identity, &identity) {
            (Some(local), Some(remote)) => Some((local, remote)),
            _ => None,
        };
        match opaque::forward(
            io,
            addr,
            self.connect_timeout,
            &self.tcp,
            self.direction,
            tls,
            in_flight,
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

/// The socket under an accepted mTLS stream, to reset it.
/// The TCP socket under a connection's layers, so it can be reset.
trait Socket {
    fn socket(&self) -> &TcpStream;
}

impl Socket for MeteredIo<TcpStream> {
    fn socket(&self) -> &TcpStream {
        self.get_ref()
    }
}

impl Socket for tokio_rustls::server::TlsStream<Accepting> {
    fn socket(&self) -> &TcpStream {
        self.get_ref().0.socket()
    }
}

impl<I: Socket> Socket for PrefixedIo<I> {
    fn socket(&self) -> &TcpStream {
        self.get_ref().socket()
    }
}
