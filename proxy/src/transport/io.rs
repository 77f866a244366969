//! IO wrappers used on every proxied connection.

use crate::metrics::TcpConnMetrics;
use bytes::{Buf, Bytes};
use pin_project_lite::pin_project;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pin_project! {
    /// Replays bytes already read (during detection) before reading from the
    /// underlying IO again.
    #[derive(Debug)]
    pub struct PrefixedIo<I> {
        prefix: Bytes,
        #[pin]
        io: I,
    }
}

pin_project! {
    /// Counts bytes read and written on a socket into its connection's
    /// metrics, and remembers the error that ended it.
    ///
    /// An accepted connection's labels (its TLS status, the client's
    /// identity) are only known after detection and the handshake, so the
    /// metrics may be attached late: bytes seen before are held and added
    /// when they are.
    #[derive(Debug)]
    pub struct MeteredIo<I> {
        #[pin]
        io: I,
        metrics: Option<TcpConnMetrics>,
        early_read: u64,
        early_written: u64,
    }
}

// === impl PrefixedIo ===

impl<I> PrefixedIo<I> {
    /// Wraps `io` so that `prefix` is read first.
    pub fn new(prefix: Bytes, io: I) -> Self {
        Self { prefix, io }
    }

    /// The bytes not yet replayed.
    pub fn prefix(&self) -> &Bytes {
        &self.prefix
    }

    /// The underlying IO.
    pub fn get_ref(&self) -> &I {
        &self.io
    }

    /// The underlying IO, mutably (bytes already read stay in the prefix).
    pub fn get_mut(&mut self) -> &mut I {
        &mut self.io
    }
}

impl<I: AsyncRead> AsyncRead for PrefixedIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        this.io.poll_read(cx, buf)
    }
}

impl<I: AsyncWrite> AsyncWrite for PrefixedIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

// === impl MeteredIo ===

impl<I> MeteredIo<I> {
    /// Wraps `io`; `metrics` records the close when this is dropped.
    pub fn new(io: I, metrics: TcpConnMetrics) -> Self {
        Self {
            io,
            metrics: Some(metrics),
            early_read: 0,
            early_written: 0,
        }
    }

    /// Wraps `io` before its labels are known; see [`MeteredIo::attach`].
    pub fn unattached(io: I) -> Self {
        Self {
            io,
            metrics: None,
            early_read: 0,
            early_written: 0,
        }
    }

    /// Attaches the connection's metrics (opening it in `tcp_open_total`),
    /// adding the bytes seen so far. Later calls are ignored.
    pub fn attach(&mut self, metrics: impl FnOnce() -> TcpConnMetrics) {
        if self.metrics.is_none() {
            let m = metrics();
            m.read_bytes.inc_by(std::mem::take(&mut self.early_read));
            m.write_bytes
                .inc_by(std::mem::take(&mut self.early_written));
            self.metrics = Some(m);
        }
    }

    /// The underlying IO.
    pub fn get_ref(&self) -> &I {
        &self.io
    }
}

impl<I: AsyncRead> AsyncRead for MeteredIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.io.poll_read(cx, buf);
        match &res {
            Poll::Ready(Ok(())) => {
                let n = (buf.filled().len() - before) as u64;
                match this.metrics {
                    Some(m) => {
                        m.read_bytes.inc_by(n);
                    }
                    None => *this.early_read += n,
                }
            }
            Poll::Ready(Err(e)) => {
                if let Some(m) = this.metrics {
                    m.set_error(e);
                }
            }
            Poll::Pending => {}
        };
        res
    }
}

impl<I: AsyncWrite> MeteredIo<I> {
    fn record(
        metrics: &mut Option<TcpConnMetrics>,
        early: &mut u64,
        res: &Poll<std::io::Result<usize>>,
    ) {
        match (res, metrics) {
            (Poll::Ready(Ok(n)), Some(m)) => {
                m.write_bytes.inc_by(*n as u64);
            }
            (Poll::Ready(Ok(n)), None) => *early += *n as u64,
            (Poll::Ready(Err(e)), Some(m)) => m.set_error(e),
            _ => {}
        }
    }
}

impl<I: AsyncWrite> AsyncWrite for MeteredIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let res = this.io.poll_write(cx, buf);
        Self::record(this.metrics, this.early_written, &res);
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let res = this.io.poll_write_vectored(cx, bufs);
        Self::record(this.metrics, this.early_written, &res);
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

impl hyper_util::client::legacy::connect::Connection for MeteredIo<tokio::net::TcpStream> {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        hyper_util::client::legacy::connect::Connected::new()
    }
}
