//! mTLS on the wire: recognising a ClientHello, terminating mTLS for this
//! proxy's identity, and originating mTLS to a peer proxy.

use crate::identity::{peer_identity, LocalIdentity};
use rustls::pki_types::ServerName;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The server name (SNI) of the complete ClientHello at the start of
/// `buf`, or `None` when there is no SNI or the hello cannot be parsed.
/// Parsing only: nothing is sent, and the bytes stay in `buf` for the
/// real handshake or for passthrough.
pub fn client_hello_sni(buf: &[u8]) -> Option<String> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rd = buf;
    while !rd.is_empty() {
        match acceptor.read_tls(&mut rd) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => accepted.client_hello().server_name().map(str::to_owned),
        _ => None,
    }
}

/// Terminates mTLS on `io` as `identity`, within `timeout`. Returns the
/// stream and the client's verified identity. (Whether the client
/// announced opaque TCP: [`is_opaque`].)
pub async fn accept<I>(
    io: I,
    identity: &LocalIdentity,
    timeout: Duration,
) -> io::Result<(tokio_rustls::server::TlsStream<I>, Arc<str>)>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(identity.server_config());
    let stream = tokio::time::timeout(timeout, acceptor.accept(io))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
    let client = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(peer_identity)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                "client certificate names no identity",
            )
        })?;
    Ok((stream, client))
}

/// Originates mTLS on `io` as `identity`, requiring the server to prove
/// `server_id`. `opaque`: the connection carries opaque TCP, announced to
/// the peer with [`crate::identity::OPAQUE_ALPN`].
pub async fn connect<I>(
    io: I,
    identity: &LocalIdentity,
    server_id: &str,
    opaque: bool,
) -> io::Result<tokio_rustls::client::TlsStream<I>>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let name = ServerName::try_from(server_id.to_string()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad identity {server_id:?}: {e}"),
        )
    })?;
    let config = if opaque {
        identity.opaque_client_config()
    } else {
        identity.client_config()
    };
    tokio_rustls::TlsConnector::from(config)
        .connect(name, io)
        .await
}

/// True if the client of an accepted mTLS stream negotiated
/// [`crate::identity::OPAQUE_ALPN`]: a peer proxy carrying opaque TCP.
pub fn is_opaque<I>(stream: &tokio_rustls::server::TlsStream<I>) -> bool {
    stream.get_ref().1.alpn_protocol() == Some(crate::identity::OPAQUE_ALPN)
}

/// A connection that may or may not be wrapped in TLS.
#[derive(Debug)]
pub enum MaybeTls<I> {
    /// Plaintext.
    Plain(I),
    /// mTLS originated by this proxy.
    Tls(Box<tokio_rustls::client::TlsStream<I>>),
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncRead for MaybeTls<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_read(cx, buf),
            MaybeTls::Tls(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MaybeTls<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_write(cx, buf),
            MaybeTls::Tls(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(io) => Pin::new(io.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(io) => io.is_write_vectored(),
            MaybeTls::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_flush(cx),
            MaybeTls::Tls(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_shutdown(cx),
            MaybeTls::Tls(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}

impl<I> hyper_util::client::legacy::connect::Connection for MaybeTls<I> {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        hyper_util::client::legacy::connect::Connected::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_from_a_real_client_hello() {
        // Let rustls produce a genuine ClientHello for a name.
        let roots = rustls::RootCertStore::empty();
        let config = rustls::ClientConfig::builder_with_provider(weft_identity::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name =
            ServerName::try_from("web.shop.serviceaccount.identity.weft.cluster.local").unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut hello = Vec::new();
        conn.write_tls(&mut hello).unwrap();
        assert_eq!(
            client_hello_sni(&hello).as_deref(),
            Some("web.shop.serviceaccount.identity.weft.cluster.local")
        );
        assert_eq!(
            client_hello_sni(&hello[..hello.len() / 2]),
            None,
            "incomplete"
        );
        assert_eq!(client_hello_sni(b"GET / HTTP/1.1\r\n"), None);
    }
}
