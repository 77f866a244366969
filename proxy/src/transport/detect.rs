//! Protocol detection.
//!
//! The proxy reads (not peeks) the first bytes of a connection and looks
//! for an HTTP/2 connection preface or an HTTP/1 request line. Whatever was
//! read is replayed to the next stage with [`PrefixedIo`], so detection
//! never loses a byte. Detection is bounded in size ([`MAX_DETECT_BYTES`])
//! and time (the configured detect timeout): when it is inconclusive the
//! connection is treated as opaque TCP, so a protocol where the server
//! speaks first merely waits for the timeout — list its port in
//! `WEFT_PROXY_OPAQUE_PORTS` to skip the wait.

use super::io::PrefixedIo;
use crate::HttpVersion;
use bytes::BytesMut;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How much is read before giving up: room for one full TLS record (a
/// ClientHello) or a long HTTP/1 request line.
pub const MAX_DETECT_BYTES: usize = 16 * 1024 + 5;

/// TLS record type of a handshake (a ClientHello starts with it).
const TLS_HANDSHAKE: u8 = 0x16;

/// Longest method token we accept as HTTP/1 (longer → not HTTP).
const MAX_METHOD_LEN: usize = 24;

/// What a connection turned out to speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    /// HTTP/1.x or HTTP/2.
    Http(HttpVersion),
    /// A complete TLS record that starts a handshake (a ClientHello).
    Tls,
    /// Anything else: forwarded byte-for-byte.
    Opaque,
    /// Nothing arrived within the detect timeout; forwarded as opaque.
    Timeout,
}

/// Reads from `io` until the protocol is known, the peer stops sending, or
/// `timeout` passes. Returns the verdict and the IO with the bytes read
/// put back in front.
pub async fn detect<I>(mut io: I, timeout: Duration) -> std::io::Result<(Detected, PrefixedIo<I>)>
where
    I: AsyncRead + Unpin,
{
    let mut buf = BytesMut::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + timeout;
    let verdict = loop {
        if let Some(verdict) = classify(&buf) {
            break verdict;
        }
        if buf.len() >= MAX_DETECT_BYTES {
            break Detected::Opaque;
        }
        match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
            Err(_elapsed) => break Detected::Timeout,
            Ok(Ok(0)) => break Detected::Opaque,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    };
    Ok((verdict, PrefixedIo::new(buf.freeze(), io)))
}

/// Decides from the bytes so far, or `None` when more are needed.
pub fn classify(buf: &[u8]) -> Option<Detected> {
    if buf.is_empty() {
        return None;
    }
    // HTTP/2: the full preface, or a prefix of it that may still complete.
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return (n == H2_PREFACE.len()).then_some(Detected::Http(HttpVersion::Http2));
    }
    // TLS: a handshake record, decided once the whole record is here.
    if buf[0] == TLS_HANDSHAKE {
        if buf.len() < 5 {
            return None;
        }
        if buf[1] != 0x03 {
            return Some(Detected::Opaque);
        }
        let len = u16::from_be_bytes([buf[3], buf[4]]) as usize;
        return (buf.len() >= 5 + len).then_some(Detected::Tls);
    }
    // HTTP/1: `METHOD SP request-target SP HTTP/1.x CRLF`.
    let method_len = buf.iter().take_while(|b| is_tchar(**b)).count();
    if method_len == buf.len() {
        // Still reading the method.
        return (method_len > MAX_METHOD_LEN).then_some(Detected::Opaque);
    }
    if method_len == 0 || method_len > MAX_METHOD_LEN || buf[method_len] != b' ' {
        return Some(Detected::Opaque);
    }
    let Some(eol) = buf.iter().position(|b| *b == b'\n') else {
        // A request line in progress must be printable.
        let printable = buf[method_len..]
            .iter()
            .all(|b| b.is_ascii_graphic() || *b == b' ' || *b == b'\r');
        return (!printable).then_some(Detected::Opaque);
    };
    let line = &buf[..eol];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|b| *b == b' ');
    let (_method, target, version) = (parts.next(), parts.next(), parts.next());
    let http1 = matches!(
        (target, version, parts.next()),
        (Some(t), Some(b"HTTP/1.1" | b"HTTP/1.0"), None) if !t.is_empty()
    );
    Some(if http1 {
        Detected::Http(HttpVersion::Http1)
    } else {
        Detected::Opaque
    })
}

/// RFC 9110 token characters (what a method is made of).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H1: Option<Detected> = Some(Detected::Http(HttpVersion::Http1));
    const H2: Option<Detected> = Some(Detected::Http(HttpVersion::Http2));

    #[test]
    fn http1_request_lines() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), H1);
        assert_eq!(
            classify(b"POST http://a.b:80/x?y HTTP/1.0\r\nHost: a\r\n"),
            H1
        );
        assert_eq!(classify(b"CONNECT a.b:443 HTTP/1.1\r\n"), H1);
        // Incomplete but plausible: wait for more.
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"GET /very/long/pa"), None);
    }

    #[test]
    fn http2_preface() {
        assert_eq!(classify(H2_PREFACE), H2);
        assert_eq!(classify(&H2_PREFACE[..10]), None);
        // "PRI * HTTP/2.0" diverging from the preface is not HTTP/2.
        assert_eq!(
            classify(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"),
            Some(Detected::Opaque)
        );
    }

    #[test]
    fn opaque_protocols() {
        // A TLS record is TLS once complete (not before); a Postgres
        // startup packet, SSH, junk lines are opaque.
        assert_eq!(classify(&[0x16, 0x03, 0x01, 0x00, 0x02]), None);
        assert_eq!(
            classify(&[0x16, 0x03, 0x01, 0x00, 0x02, 1, 2]),
            Some(Detected::Tls)
        );
        assert_eq!(
            classify(&[0x16, 0x01, 0x01, 0x00, 0x02]),
            Some(Detected::Opaque)
        );
        assert_eq!(
            classify(&[0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f]),
            Some(Detected::Opaque)
        );
        assert_eq!(classify(b"SSH-2.0-OpenSSH_9.2\r\n"), Some(Detected::Opaque));
        assert_eq!(classify(b"GET / SPDY/3\r\n"), Some(Detected::Opaque));
        assert_eq!(classify(b"hello world\n"), Some(Detected::Opaque));
        assert_eq!(classify(b"GET /\x01"), Some(Detected::Opaque));
    }

    #[tokio::test(start_paused = true)]
    async fn silence_times_out_as_opaque() {
        let (client, server) = tokio::io::duplex(64);
        let (verdict, io) = detect(server, Duration::from_secs(10)).await.unwrap();
        assert_eq!(verdict, Detected::Timeout);
        assert!(io.prefix().is_empty());
        drop(client);
    }

    #[tokio::test]
    async fn bytes_read_are_replayed() {
        use tokio::io::AsyncWriteExt;
        let (mut client, server) = tokio::io::duplex(64);
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (verdict, mut io) = detect(server, Duration::from_secs(10)).await.unwrap();
        assert_eq!(verdict, Detected::Http(HttpVersion::Http1));
        drop(client);
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    }
}
