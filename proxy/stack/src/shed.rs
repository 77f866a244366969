//! [`ConcurrencyLimit`]: load shedding at a listener.
//!
//! A proxy that accepts more work than it can do gets slower for everyone: latency grows until
//! clients time out, and the work done for them is wasted. Shedding keeps the proxy useful
//! under overload: a listener admits at most [`Limit::max`] requests at a time, and a request
//! beyond that fails *at once* with [`Overloaded`] (which the HTTP layer can turn into a 503),
//! so the client can retry elsewhere while the requests already admitted finish at full speed.
//!
//! This is deliberately not [`tower::limit::ConcurrencyLimit`], which makes callers *wait* for a
//! slot: waiting is the queue's job, in front of a backend; at the listener it would only hide
//! the overload.

use futures::future::Either;
use pin_project_lite::pin_project;
use std::{
    future::{self, Future},
    pin::Pin,
    sync::atomic::{AtomicUsize, Ordering},
    sync::Arc,
    task::{ready, Context, Poll},
};
use tower::Layer;

/// A listener's limit on requests in flight, shared by all its connections.
///
/// Clones share the count: make one per listener and hand a clone to each connection's stack.
#[derive(Clone, Debug)]
pub struct Limit {
    // A bare counter, not a semaphore: nothing ever waits for a slot, so
    // taking and freeing one is a compare-and-swap and a decrement, with no
    // waiter list to lock.
    in_flight: Arc<AtomicUsize>,
    max: usize,
}

/// One admitted request's slot in a [`Limit`], freed when dropped.
#[derive(Debug)]
struct Slot(Arc<AtomicUsize>);

/// The error a request over the limit gets at once (load shedding, not queueing).
#[derive(Clone, Debug, thiserror::Error)]
#[error("proxy is overloaded: {max} requests in flight")]
pub struct Overloaded {
    /// The limit that was reached.
    pub max: usize,
}

/// Admits a request only if the listener has a free slot; otherwise fails it at once with
/// `Overloaded`. The slot is held until the response future resolves.
#[derive(Clone, Debug)]
pub struct ConcurrencyLimit<S> {
    inner: S,
    limit: Limit,
}

/// Wraps services in a [`ConcurrencyLimit`] sharing one [`Limit`], for [`crate::Stack::push`].
#[derive(Clone, Debug)]
pub struct ConcurrencyLimitLayer {
    limit: Limit,
}

pin_project! {
    /// An admitted request's response: holds its slot until the inner future completes (or is
    /// dropped, when the client goes away).
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        permit: Option<Slot>,
    }
}

// === impl Limit ===

impl Limit {
    /// A limit of `max` requests in flight.
    pub fn new(max: usize) -> Self {
        Self {
            in_flight: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// The most requests admitted at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Requests admitted and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Takes a slot if one is free.
    fn try_acquire(&self) -> Option<Slot> {
        let mut current = self.in_flight.load(Ordering::Relaxed);
        loop {
            if current >= self.max {
                return None;
            }
            match self.in_flight.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(Slot(self.in_flight.clone())),
                Err(actual) => current = actual,
            }
        }
    }
}

// === impl Slot ===

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

// === impl ConcurrencyLimit ===

impl<S> ConcurrencyLimit<S> {
    /// Limits `inner` to the slots of `limit`, shared with every other user of that limit.
    pub fn new(inner: S, limit: Limit) -> Self {
        Self { inner, limit }
    }
}

impl ConcurrencyLimit<()> {
    /// A layer that limits every service it wraps to the one shared `limit`.
    pub fn layer(limit: Limit) -> ConcurrencyLimitLayer {
        ConcurrencyLimitLayer { limit }
    }
}

impl<S, Req> tower::Service<Req> for ConcurrencyLimit<S>
where
    S: tower::Service<Req>,
    S::Error: From<Overloaded>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<ResponseFuture<S::Future>, future::Ready<Result<S::Response, S::Error>>>;

    /// Readiness is the inner service's: the limit is checked in `call`, so that a request over
    /// it fails instead of waiting.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.limit.try_acquire() {
            Some(permit) => Either::Left(ResponseFuture {
                inner: self.inner.call(req),
                permit: Some(permit),
            }),
            // No slot. The inner service was readied but is not called, which tower allows.
            None => {
                let error = Overloaded {
                    max: self.limit.max,
                };
                Either::Right(future::ready(Err(error.into())))
            }
        }
    }
}

// === impl ConcurrencyLimitLayer ===

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;

    fn layer(&self, inner: S) -> ConcurrencyLimit<S> {
        ConcurrencyLimit::new(inner, self.limit.clone())
    }
}

// === impl ResponseFuture ===

impl<F: Future> Future for ResponseFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let output = ready!(this.inner.poll(cx));
        // Free the slot as soon as the response is ready, not when the future is dropped.
        this.permit.take();
        Poll::Ready(output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Stack;
    use futures::{future::BoxFuture, FutureExt};
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    };
    use tokio::sync::oneshot;
    use tower::{BoxError, Service, ServiceExt};

    /// A service whose responses arrive when the test sends them, so requests stay in flight
    /// for as long as the test wants. Counts its calls.
    #[derive(Clone, Default)]
    struct Slow {
        calls: Arc<AtomicUsize>,
        answers: Arc<Mutex<Vec<oneshot::Sender<&'static str>>>>,
    }

    impl Slow {
        /// Answers the oldest request still waiting (skipping any whose caller went away).
        fn answer(&self, response: &'static str) {
            let mut answers = self.answers.lock().unwrap();
            answers.retain(|tx| !tx.is_closed());
            answers.remove(0).send(response).unwrap();
        }
    }

    impl Service<()> for Slow {
        type Response = &'static str;
        type Error = BoxError;
        type Future = BoxFuture<'static, Result<&'static str, BoxError>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, (): ()) -> Self::Future {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let (tx, rx) = oneshot::channel();
            self.answers.lock().unwrap().push(tx);
            Box::pin(async move { Ok(rx.await?) })
        }
    }

    /// Readies `svc` and calls it (a `ConcurrencyLimit` over `Slow` is always ready).
    fn call<S: Service<(), Error = BoxError>>(svc: &mut S) -> S::Future {
        assert!(svc.ready().now_or_never().is_some(), "ready at once");
        svc.call(())
    }

    fn assert_overloaded(result: Option<Result<&'static str, BoxError>>, max: usize) {
        let error = result.expect("fails at once").expect_err("overloaded");
        let overloaded = error
            .downcast_ref::<Overloaded>()
            .expect("an Overloaded error");
        assert_eq!(overloaded.max, max);
        assert_eq!(
            error.to_string(),
            format!("proxy is overloaded: {max} requests in flight")
        );
    }

    #[tokio::test]
    async fn a_request_over_the_limit_fails_at_once() {
        let inner = Slow::default();
        let limit = Limit::new(2);
        let mut svc = ConcurrencyLimit::new(inner.clone(), limit.clone());

        let first = call(&mut svc);
        assert_eq!(limit.in_flight(), 1);
        let second = call(&mut svc);
        assert_eq!(limit.in_flight(), 2);

        assert_overloaded(call(&mut svc).now_or_never(), 2);
        assert_eq!(
            inner.calls.load(Ordering::SeqCst),
            2,
            "the shed request never ran"
        );
        assert_eq!(limit.in_flight(), 2, "a shed request takes no slot");

        inner.answer("one");
        inner.answer("two");
        assert_eq!(first.await.unwrap(), "one");
        assert_eq!(second.await.unwrap(), "two");
        assert_eq!(limit.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_finished_response_frees_its_slot() {
        let inner = Slow::default();
        let limit = Limit::new(1);
        let mut svc = ConcurrencyLimit::new(inner.clone(), limit.clone());

        let mut pending = call(&mut svc);
        assert!((&mut pending).now_or_never().is_none(), "not answered yet");
        assert_eq!(
            limit.in_flight(),
            1,
            "an unfinished response holds its slot"
        );

        inner.answer("done");
        // The slot is freed when the future completes, even though it is not dropped yet.
        assert_eq!((&mut pending).now_or_never().unwrap().unwrap(), "done");
        assert_eq!(limit.in_flight(), 0);

        let next = call(&mut svc);
        assert_eq!(limit.in_flight(), 1, "the slot was reused");
        inner.answer("again");
        assert_eq!(next.await.unwrap(), "again");
        drop(pending);
    }

    #[tokio::test]
    async fn a_dropped_response_frees_its_slot() {
        let inner = Slow::default();
        let limit = Limit::new(1);
        let mut svc = ConcurrencyLimit::new(inner.clone(), limit.clone());

        let abandoned = call(&mut svc);
        assert_overloaded(call(&mut svc).now_or_never(), 1);
        drop(abandoned); // The client went away.
        assert_eq!(limit.in_flight(), 0);

        let next = call(&mut svc);
        inner.answer("served");
        assert_eq!(next.await.unwrap(), "served");
    }

    #[tokio::test]
    async fn connections_share_their_listeners_limit() {
        let inner = Slow::default();
        let limit = Limit::new(2);
        // Two connections of one listener: one built with the layer, one a clone.
        let mut conn_a = Stack::new(inner.clone())
            .push(ConcurrencyLimit::layer(limit.clone()))
            .into_inner();
        let mut conn_b = conn_a.clone();
        let mut conn_c = ConcurrencyLimit::new(inner.clone(), limit.clone());

        let a = call(&mut conn_a);
        let b = call(&mut conn_b);
        assert_eq!(limit.in_flight(), 2);
        assert_overloaded(call(&mut conn_c).now_or_never(), 2);
        assert_overloaded(call(&mut conn_a).now_or_never(), 2);

        inner.answer("a");
        assert_eq!(a.await.unwrap(), "a");
        assert_eq!(limit.in_flight(), 1);
        let c = call(&mut conn_c);
        assert_eq!(limit.in_flight(), 2);

        inner.answer("b");
        inner.answer("c");
        assert_eq!(b.await.unwrap(), "b");
        assert_eq!(c.await.unwrap(), "c");
        assert_eq!(limit.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_zero_limit_sheds_everything() {
        let inner = Slow::default();
        let limit = Limit::new(0);
        let mut svc = ConcurrencyLimit::new(inner.clone(), limit.clone());
        assert_overloaded(call(&mut svc).now_or_never(), 0);
        assert_eq!(inner.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn an_enormous_limit_admits_and_counts() {
        let limit = Limit::new(usize::MAX);
        assert_eq!(limit.max(), usize::MAX);
        let mut svc = ConcurrencyLimit::new(Slow::default(), limit.clone());
        let pending = call(&mut svc);
        assert_eq!(limit.in_flight(), 1);
        drop(pending);
        assert_eq!(limit.in_flight(), 0);
    }
}
