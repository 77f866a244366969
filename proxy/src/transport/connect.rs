//! Dialing targets.

use crate::identity::LocalIdentity;
use crate::metrics::{Direction, TcpMetrics, Tls};
use crate::transport::io::MeteredIo;
use crate::transport::tls::{self, MaybeTls};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// Why a connection to a target could not be made. Cloneable so that the
/// HTTP client's error chain can hand it back intact.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ConnectError {
    /// The target did not answer in time.
    #[error("connect to {addr} timed out after {timeout:?}")]
    Timeout {
        /// The target.
        addr: SocketAddr,
        /// The configured connect timeout.
        timeout: Duration,
    },
    /// The TLS handshake with a peer proxy failed (wrong identity,
    /// untrusted certificate...).
    #[error("mTLS to {addr} as {identity} failed: {source}")]
    Tls {
        /// The target.
        addr: SocketAddr,
        /// The identity the target had to prove.
        identity: Arc<str>,
        /// The handshake error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The target refused or the network failed.
    #[error("connect to {addr} failed: {source}")]
    Io {
        /// The target.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: Arc<std::io::Error>,
    },
}

/// Opens a metered connection to `addr` within `timeout`, with mTLS when
/// `tls` names this proxy's identity and the identity the target must
/// prove. Both the HTTP clients and opaque forwarding (`opaque`, which
/// announces itself to the peer proxy in the handshake) dial through here.
pub async fn connect_endpoint(
    addr: SocketAddr,
    timeout: Duration,
    metrics: &TcpMetrics,
    direction: Direction,
    tls: Option<(&LocalIdentity, &Arc<str>)>,
    opaque: bool,
) -> Result<MaybeTls<MeteredIo<TcpStream>>, ConnectError> {
    let label = match tls {
        Some((_, server_id)) => Tls::Server(server_id.clone()),
        None => metrics.plaintext(),
    };
    let io = connect(addr, timeout, metrics, direction, label).await?;
    let Some((identity, server_id)) = tls else {
        return Ok(MaybeTls::Plain(io));
    };
    match tokio::time::timeout(timeout, tls::connect(io, identity, server_id, opaque)).await {
        Ok(Ok(stream)) => Ok(MaybeTls::Tls(Box::new(stream))),
        Ok(Err(e)) => Err(ConnectError::Tls {
            addr,
            identity: server_id.clone(),
            source: Arc::new(e),
        }),
        Err(_) => Err(ConnectError::Timeout { addr, timeout }),
    }
}

/// Opens a metered TCP connection to `addr` within `timeout`.
pub async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    metrics: &TcpMetrics,
    direction: Direction,
    tls: Tls,
) -> Result<MeteredIo<TcpStream>, ConnectError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(ConnectError::Timeout { addr, timeout }),
        Ok(Err(source)) => {
            return Err(ConnectError::Io {
                addr,
                source: Arc::new(source),
            })
        }
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    Ok(MeteredIo::new(stream, metrics.open(direction, "dst", tls)))
}
