//! Listening sockets and the original destination of redirected connections.

use crate::drain::Drain;
use socket2::SockRef;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// An accepted connection and what the kernel told us about it.
#[derive(Debug)]
pub struct Accepted {
    /// The connection itself.
    pub stream: TcpStream,
    /// The remote peer.
    pub client: SocketAddr,
    /// Where the connection was originally headed, when iptables redirected
    /// it to this listener; `None` when it was addressed to us directly.
    pub orig_dst: Option<SocketAddr>,
}

/// Binds a listener, with a message that names the address on failure.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// Accepts connections until the drain is signalled, spawning `handle` for
/// each on the drain's task tracker.
pub async fn serve<H, F>(listener: TcpListener, drain: Drain, handle: H)
where
    H: Fn(Accepted) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    loop {
        let (stream, client) = tokio::select! {
            biased;
            _ = drain.signaled() => return,
            res = listener.accept() => match res {
                Ok(conn) => conn,
                Err(error) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let orig_dst = original_dst(&stream);
        drain.spawn(handle(Accepted {
            stream,
            client,
            orig_dst,
        }));
    }
}

/// The pre-NAT destination of a redirected connection.
///
/// `SO_ORIGINAL_DST` answers for every connection conntrack has seen; for one
/// that was not redirected it names our own listener, which we report as
/// `None`. Without conntrack the call fails, which also means no redirect.
pub fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    let local = stream.local_addr().ok()?;
    let sock = SockRef::from(stream);
    let orig = if local.is_ipv4() {
        sock.original_dst_v4()
    } else {
        sock.original_dst_v6()
    };
    orig.ok()
        .and_then(|a| a.as_socket())
        .filter(|orig| *orig != local)
}

/// Closes a connection with a TCP RST, so the client sees a reset rather
/// than a clean end of stream (which it could mistake for a response).
pub fn reset(stream: &TcpStream) {
    let _ = SockRef::from(stream).set_linger(Some(Duration::ZERO));
}
