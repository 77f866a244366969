//! A request body that can be sent again.
//!
//! A retry must send the same bytes the first attempt sent, but request
//! bodies stream: the proxy cannot collect them before forwarding without
//! adding latency (and deadlocking streaming clients that wait for the
//! response). So the first attempt streams the body as usual while a copy
//! of each chunk is kept, up to a cap ([`MAX_REPLAY_BYTES`]). A retry
//! replays the kept chunks and then continues reading the original body
//! where the previous attempt left off. A body larger than the cap stops
//! being kept; such a request is never retried.
//!
//! Only one attempt reads at a time: starting a retry fences the previous
//! attempt's body (it fails if polled again), so an attempt that the
//! upstream abandoned cannot steal chunks from its successor.

use crate::http::BoxBody;
use crate::BoxError;
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// Bodies up to this size are kept for retries (Linkerd's limit).
pub const MAX_REPLAY_BYTES: usize = 64 * 1024;

/// One attempt's view of a replayable request body.
pub struct ReplayBody {
    shared: Arc<Mutex<Shared>>,
    /// Index of the next kept chunk this attempt sends.
    pos: usize,
    /// The attempt number this body belongs to; older ones are fenced.
    generation: u64,
    trailers_sent: bool,
}

/// Starts the next attempt's body; held by the retry loop, never sent.
pub struct ReplayHandle {
    shared: Arc<Mutex<Shared>>,
}

struct Shared {
    /// The original body, until it ends.
    inner: Option<BoxBody>,
    /// Chunks read so far (while under the cap).
    chunks: Vec<Bytes>,
    kept: usize,
    cap: usize,
    trailers: Option<HeaderMap>,
    /// The original body has been read to its end.
    ended: bool,
    /// More than `cap` bytes were read, or reading failed: no replay.
    unreplayable: bool,
    /// The attempt allowed to read.
    generation: u64,
}

/// Why an attempt's body stopped.
#[derive(Debug, thiserror::Error)]
#[error("request body was taken over by a retry")]
struct Fenced;

// === impl ReplayBody ===

impl ReplayBody {
    /// Wraps the first attempt's body. Hands `body` back (send it as it
    /// is, once) when its size hint already says it exceeds `cap`.
    pub fn new(body: BoxBody, cap: usize) -> Result<Self, BoxBody> {
        if body.size_hint().lower() > cap as u64 {
            return Err(body);
        }
        let ended = body.is_end_stream();
        Ok(Self {
            shared: Arc::new(Mutex::new(Shared {
                inner: (!ended).then_some(body),
                chunks: Vec::new(),
                kept: 0,
                cap,
                trailers: None,
                ended,
                unreplayable: false,
                generation: 0,
            })),
            pos: 0,
            generation: 0,
            trailers_sent: false,
        })
    }

    /// The handle that starts later attempts' bodies.
    pub fn handle(&self) -> ReplayHandle {
        ReplayHandle {
            shared: self.shared.clone(),
        }
    }
}

// === impl ReplayHandle ===

impl ReplayHandle {
    /// A body for the next attempt, fencing every earlier one; `None` if
    /// the body cannot be replayed (it outgrew the cap or broke).
    pub fn replay(&self) -> Option<ReplayBody> {
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        if shared.unreplayable {
            return None;
        }
        shared.generation += 1;
        Some(ReplayBody {
            shared: self.shared.clone(),
            pos: 0,
            generation: shared.generation,
            trailers_sent: false,
        })
    }

    /// True while a retry could still replay the body.
    pub fn is_replayable(&self) -> bool {
        !self
            .shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unreplayable
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut shared = this.shared.lock().unwrap_or_else(|p| p.into_inner());
        if shared.generation != this.generation {
            return Poll::Ready(Some(Err(Fenced.into())));
        }
        // Replay what earlier attempts already read.
        if let Some(chunk) = shared.chunks.get(this.pos) {
            this.pos += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
        }
        if shared.ended {
            if !this.trailers_sent {
                this.trailers_sent = true;
                if let Some(t) = shared.trailers.clone() {
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
            }
            return Poll::Ready(None);
        }
        let Some(inner) = shared.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                shared.ended = true;
                shared.inner = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                shared.unreplayable = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(frame))) => {
                let frame = match frame.into_data() {
                    Ok(data) => {
                        if !shared.unreplayable {
                            shared.kept += data.len();
                            if shared.kept > shared.cap {
                                // Too big to keep: free what was kept; this
                                // attempt is the last one.
                                shared.unreplayable = true;
                                shared.chunks = Vec::new();
                            } else {
                                shared.chunks.push(data.clone());
                            }
                        }
                        this.pos = shared.chunks.len();
                        Frame::data(data)
                    }
                    Err(frame) => {
                        if let Some(t) = frame.trailers_ref() {
                            shared.trailers = Some(t.clone());
                            shared.ended = true;
                            shared.inner = None;
                            this.trailers_sent = true;
                        }
                        frame
                    }
                };
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        shared.generation == self.generation
            && shared.ended
            && self.pos >= shared.chunks.len()
            && (self.trailers_sent || shared.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        let shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        match &shared.inner {
            // Still streaming: what is left of the original, plus what
            // this attempt has yet to replay.
            Some(inner) => {
                let replay: u64 = shared.chunks[self.pos.min(shared.chunks.len())..]
                    .iter()
                    .map(|c| c.len() as u64)
                    .sum();
                let inner = inner.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower() + replay);
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper + replay);
                }
                hint
            }
            None => {
                let rest: u64 = shared.chunks[self.pos.min(shared.chunks.len())..]
                    .iter()
                    .map(|c| c.len() as u64)
                    .sum();
                SizeHint::with_exact(rest)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::body;
    use http_body_util::BodyExt;

    fn streaming(chunks: &[&'static str]) -> BoxBody {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        body::boxed(http_body_util::StreamBody::new(futures::stream::iter(
            frames,
        )))
    }

    async fn collect(b: ReplayBody) -> Result<Bytes, BoxError> {
        Ok(b.collect().await?.to_bytes())
    }

    #[tokio::test]
    async fn a_retry_sends_the_same_bytes() {
        let mut first = ReplayBody::new(streaming(&["hello ", "world"]), 1024).unwrap();
        let sent = (&mut first).collect().await.unwrap().to_bytes();
        assert_eq!(sent, "hello world");
        let mut second = first.handle().replay().unwrap();
        assert_eq!(
            (&mut second).collect().await.unwrap().to_bytes(),
            "hello world"
        );
        // A retry of the retry too.
        let third = second.handle().replay().unwrap();
        assert_eq!(collect(third).await.unwrap(), "hello world");
    }

    #[tokio::test]
    async fn a_partly_read_body_is_replayed_then_continued() {
        let mut first = ReplayBody::new(streaming(&["a", "b", "c"]), 1024).unwrap();
        let f = first.frame().await.unwrap().unwrap();
        assert_eq!(f.into_data().unwrap(), "a");
        let second = first.handle().replay().unwrap();
        // The abandoned attempt is fenced.
        assert!(first.frame().await.unwrap().is_err());
        assert_eq!(collect(second).await.unwrap(), "abc");
    }

    #[tokio::test]
    async fn bodies_over_the_cap_pass_intact_and_are_not_replayable() {
        let b = ReplayBody::new(streaming(&["0123", "4567", "89"]), 6).unwrap();
        let probe = b.handle();
        assert!(probe.is_replayable());
        assert_eq!(collect(b).await.unwrap(), "0123456789");
        assert!(!probe.is_replayable());
        assert!(probe.replay().is_none());
        // A known-large body is not wrapped at all.
        assert!(ReplayBody::new(body::full(vec![0u8; 100]), 10).is_err());
    }

    #[tokio::test]
    async fn empty_bodies_and_trailers_replay() {
        let b = ReplayBody::new(body::empty(), 10).unwrap();
        assert!(b.is_end_stream());
        let again = b.handle().replay().unwrap();
        assert!(again.is_end_stream());

        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from_static(b"x"))),
            Ok(Frame::trailers(trailers)),
        ];
        let mut first = ReplayBody::new(
            body::boxed(http_body_util::StreamBody::new(futures::stream::iter(
                frames,
            ))),
            10,
        )
        .unwrap();
        let c = (&mut first).collect().await.unwrap();
        assert_eq!(c.trailers().unwrap()["grpc-status"], "0");
        let second = first.handle().replay().unwrap();
        let c = second.collect().await.unwrap();
        assert_eq!(c.trailers().unwrap()["grpc-status"], "0");
        assert_eq!(c.to_bytes(), "x");
    }
}
