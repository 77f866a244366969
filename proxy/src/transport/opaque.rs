//! Opaque TCP forwarding: bytes in, bytes out, nothing interpreted.

use super::connect::connect_endpoint;
use crate::balance::InFlight;
use crate::identity::LocalIdentity;
use crate::metrics::{Direction, TcpMetrics};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// Buffer size per direction; bounded so a slow reader applies
/// backpressure instead of growing memory.
const COPY_BUF: usize = 16 * 1024;

/// Connects to `target` (with mTLS when `tls` says so) and copies bytes
/// both ways until both sides close. Returns the connect error so the
/// caller can reset the client. A balanced endpoint's `in_flight` learns
/// the connect time (or the failure) and counts the connection as load
/// while it is open.
pub async fn forward<I>(
    client: &mut I,
    target: SocketAddr,
    connect_timeout: Duration,
    metrics: &TcpMetrics,
    direction: Direction,
    tls: Option<(&LocalIdentity, &Arc<str>)>,
    in_flight: Option<InFlight>,
) -> Result<(), super::connect::ConnectError>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let connected = connect_endpoint(target, connect_timeout, metrics, direction, tls, true).await;
    let mut server = match connected {
        Ok(server) => server,
        Err(e) => {
            if let Some(in_flight) = in_flight {
                in_flight.failed();
            }
            return Err(e);
        }
    };
    let _open = in_flight.map(InFlight::established);
    match tokio::io::copy_bidirectional_with_sizes(client, &mut server, COPY_BUF, COPY_BUF).await {
        Ok((up, down)) => tracing::debug!(%target, up, down, "opaque connection closed"),
        Err(error) => tracing::debug!(%target, %error, "opaque connection failed"),
    }
    Ok(())
}
