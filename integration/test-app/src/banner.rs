//! `banner-server` and `banner-client`: a server-speaks-first TCP protocol
//! shaped like SMTP.
//!
//! Protocol detection in a proxy waits for the client's first bytes; on a
//! server-speaks-first port the client waits for the server instead, so a
//! proxy that detects there stalls every connection until its detection
//! timeout. These two make that visible: the client measures how long the
//! banner took to arrive after `connect()` returned.

use crate::signal::Terminate;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{
    AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWriteExt as _, BufReader,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The banner `banner-server` sends by default.
pub const DEFAULT_BANNER: &str = "220 weft-test-app ESMTP ready";

/// A connection that sends nothing for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Lines longer than this end the connection.
pub const MAX_LINE: usize = 8 * 1024;

/// At most this many connections are served at once.
pub const MAX_CONNECTIONS: usize = crate::web::MAX_CONNECTIONS;

/// Serves the banner protocol on `listener` until terminated; open
/// connections are closed then.
pub async fn run_server(
    listener: TcpListener,
    banner: String,
    mut terminate: Terminate,
) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let serving = tokio::spawn(serve(listener, banner, stop.clone()));
    terminate.recv().await;
    stop.cancel();
    serving
        .await
        .map_err(|e| anyhow::anyhow!("banner server failed: {e}"))?;
    Ok(())
}

/// The accept loop: bounded, stops (closing every connection) on `stop`.
pub async fn serve(listener: TcpListener, banner: String, stop: CancellationToken) {
    let banner: Arc<str> = format!("{banner}\r\n").into();
    crate::web::accept_each(listener, stop, move |stream, peer, stop| {
        let banner = banner.clone();
        async move {
            tokio::select! {
                r = converse(stream, &banner) => match r {
                    Ok(()) => tracing::debug!(%peer, "connection closed"),
                    Err(error) => tracing::debug!(%peer, %error, "connection ended"),
                },
                () = stop.cancelled() => {}
            }
        }
    })
    .await;
}

async fn converse(stream: TcpStream, banner: &str) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    write.write_all(banner.as_bytes()).await?;
    let mut read = BufReader::new(read);
    loop {
        let line = match tokio::time::timeout(IDLE_TIMEOUT, read_line(&mut read)).await {
            Ok(line) => line?,
            Err(_) => {
                write.write_all(b"421 idle timeout\r\n").await?;
                return Ok(());
            }
        };
        let Some(line) = line else { return Ok(()) };
        write
            .write_all(format!("250 {line}\r\n").as_bytes())
            .await?;
    }
}

/// Reads one line without its `\r\n`; `None` at end of stream. A line over
/// [`MAX_LINE`] bytes is an error.
async fn read_line<R: AsyncRead + Unpin>(
    read: &mut BufReader<R>,
) -> std::io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = read
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    // Without a newline: either too long, or the last line before the peer
    // closed (which counts).
    if !buf.ends_with(b"\n") && buf.len() > MAX_LINE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "line too long",
        ));
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// Where to connect and how often.
#[derive(Clone, Debug)]
pub struct BannerClientConfig {
    /// `HOST:PORT`; HOST may be a DNS name.
    pub addr: String,
    /// How many connections, one after the other.
    pub count: u32,
    /// Overall timeout of one connection (resolve, connect, banner, reply).
    pub timeout: Duration,
}

/// The line `banner-client` prints.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BannerSummary {
    /// Connections that got the banner and the `250 HELO test` reply.
    pub ok: u32,
    /// Connections that did not.
    pub failed: u32,
    /// The first banner received (`""` if none was).
    pub banner: String,
    /// Median time from `connect()` returning to the banner, in ms.
    pub banner_ms_p50: f64,
    /// Longest such time, in ms.
    pub banner_ms_max: f64,
    /// Why the last failure failed, if any did.
    pub last_error: Option<String>,
}

impl BannerSummary {
    /// Whether all `count` connections succeeded: the exit code.
    pub fn all_ok(&self, count: u32) -> bool {
        self.ok == count && self.failed == 0
    }
}

/// Makes the connections and summarises them; a termination request stops
/// early (so the summary then falls short of `count`).
pub async fn run_client(config: &BannerClientConfig, mut terminate: Terminate) -> BannerSummary {
    let mut summary = BannerSummary::default();
    let mut waits: Vec<Duration> = Vec::new();
    let all = async {
        for i in 0..config.count {
            match tokio::time::timeout(config.timeout, once(&config.addr)).await {
                Ok(Ok((banner, wait))) => {
                    if summary.banner.is_empty() {
                        summary.banner = banner;
                    }
                    waits.push(wait);
                    summary.ok += 1;
                }
                outcome => {
                    let error = match outcome {
                        Ok(Err(e)) => e,
                        _ => format!("timed out after {} ms", config.timeout.as_millis()),
                    };
                    tracing::warn!(connection = i + 1, %error, "banner exchange failed");
                    summary.failed += 1;
                    summary.last_error = Some(error);
                }
            }
        }
    };
    tokio::select! {
        () = all => {}
        () = terminate.recv() => tracing::warn!("terminated before all connections were done"),
    }
    waits.sort();
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    if let Some(max) = waits.last() {
        summary.banner_ms_max = ms(max);
        // Nearest rank: the smallest wait at or above half of them.
        summary.banner_ms_p50 = ms(&waits[waits.len().div_ceil(2) - 1]);
    }
    summary
}

/// One exchange: the banner and how long it took after connecting.
async fn once(addr: &str) -> Result<(String, Duration), String> {
    let addrs: Vec<_> = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| format!("resolving {addr}: {e}"))?
        .collect();
    let mut last = format!("{addr} resolved to no address");
    let mut connected = None;
    for a in &addrs {
        match TcpStream::connect(a).await {
            Ok(s) => {
                connected = Some(s);
                break;
            }
            Err(e) => last = format!("connecting to {a}: {e}"),
        }
    }
    let stream = connected.ok_or(last)?;
    let start = Instant::now();
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let banner = read_line(&mut read)
        .await
        .map_err(|e| format!("reading the banner: {e}"))?
        .ok_or("closed before the banner")?;
    let wait = start.elapsed();
    write
        .write_all(b"HELO test\r\n")
        .await
        .map_err(|e| format!("sending HELO: {e}"))?;
    let reply = read_line(&mut read)
        .await
        .map_err(|e| format!("reading the HELO reply: {e}"))?
        .ok_or("closed before the HELO reply")?;
    if reply != "250 HELO test" {
        return Err(format!("unexpected HELO reply {reply:?}"));
    }
    let _ = write.shutdown().await;
    Ok((banner, wait))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_trimmed_and_bounded() {
        let input: &[u8] = b"one\r\ntwo\nthree";
        let mut r = BufReader::new(input);
        assert_eq!(read_line(&mut r).await.unwrap().as_deref(), Some("one"));
        assert_eq!(read_line(&mut r).await.unwrap().as_deref(), Some("two"));
        assert_eq!(read_line(&mut r).await.unwrap().as_deref(), Some("three"));
        assert_eq!(read_line(&mut r).await.unwrap(), None);

        let long = vec![b'x'; MAX_LINE + 10];
        let mut r = BufReader::new(&long[..]);
        assert!(read_line(&mut r).await.is_err());
    }
}
