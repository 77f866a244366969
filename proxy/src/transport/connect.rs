//! Dialing targets.

use crate::metrics::{Direction, TcpMetrics};
use crate::transport::io::MeteredIo;
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

/// Opens a metered connection to `addr` within `timeout`.
pub async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    metrics: &TcpMetrics,
    direction: Direction,
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
    Ok(MeteredIo::new(stream, metrics.open(direction, "dst")))
}
