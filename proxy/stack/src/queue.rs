//! [`Queue`]: bounded waiting for a backend to become ready, with fail-fast.
//!
//! A balancer is *ready* when one of its endpoints can take a request. When none can (they are
//! all busy, or discovery has found none yet), requests must wait — but not forever, and not
//! in unbounded numbers. Linkerd's answer, reproduced here:
//!
//! - **A bounded queue.** At most [`QueueConfig::capacity`] callers hold a slot while they
//!   wait. Callers beyond that are *pushed back* (their `poll_ready` stays pending without a
//!   slot): the queue itself holds nothing, and what a caller holds while it waits is bounded
//!   by the listener's concurrency limit ([`crate::ConcurrencyLimit`]) and by fail-fast.
//! - **Fail-fast.** If the backend has not been ready for [`QueueConfig::failfast_timeout`],
//!   the queue stops waiting: every waiter, and every new request, fails at once with
//!   [`FailFast`] until the backend is ready again. A client gets a quick error it can retry
//!   elsewhere rather than a request hanging until its own timeout.
//!
//! Unlike [`tower::buffer::Buffer`], there is no worker task and no channel: each clone of the
//! queue polls the inner service itself, so a request to a ready backend costs no task hop and
//! takes no lock.

use futures::future::Either;
use std::{
    fmt,
    future::{self, Future},
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
    task::{Context, Poll},
    time::Duration,
};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{sleep_until, Instant, Sleep},
};
use tokio_util::sync::PollSemaphore;

/// A backend's queue settings (Linkerd's defaults: capacity 100, fail-fast after 3 s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    /// How many callers may wait for readiness holding a slot.
    pub capacity: usize,
    /// How long the backend may stay unready before requests fail fast.
    pub failfast_timeout: Duration,
}

/// The error a queue in fail-fast answers with: its inner service (a balancer) has not been
/// ready for `timeout`.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{target} has had no ready endpoint for {timeout:?} (fail-fast)")]
pub struct FailFast {
    /// The backend that is failing fast, so the error is actionable in a log line.
    pub target: Arc<str>,
    /// How long it had been unready when the queue gave up on it.
    pub timeout: Duration,
}

/// Bounded waiting for readiness, with fail-fast, in front of a service whose `poll_ready` is
/// meaningful (a balancer: ready when an endpoint can take a request). Clones share one queue.
pub struct Queue<S> {
    inner: S,
    shared: Arc<Shared>,
    /// This clone's handle on the shared slots. While the queue is full it holds an acquire
    /// that waits in the semaphore's (fair, FIFO) wait list.
    slots: PollSemaphore,
    /// The slot this clone holds while it waits for readiness.
    permit: Option<OwnedSemaphorePermit>,
    /// Wakes this clone at the fail-fast deadline, whether or not it holds a slot.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Whether this clone has any queue state (slot, pending acquire, sleep) to give up.
    waiting: bool,
    /// Set when `poll_ready` answered "ready" only so that `call` can fail fast.
    failfast: bool,
}

/// What every clone of a [`Queue`] shares.
struct Shared {
    config: QueueConfig,
    target: Arc<str>,
    semaphore: Arc<Semaphore>,
    /// Whether `unready_since` is set: lets a ready backend skip the lock entirely.
    unready: AtomicBool,
    /// When any clone first saw the backend unready, since it was last seen ready. This is the
    /// one clock all clones measure the fail-fast timeout against.
    unready_since: Mutex<Option<Instant>>,
    /// Whether some clone has hit the fail-fast timeout since the backend was last ready.
    failfast: AtomicBool,
}

// === impl QueueConfig ===

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            capacity: 100,
            failfast_timeout: Duration::from_secs(3),
        }
    }
}

// === impl Queue ===

impl<S> Queue<S> {
    /// Puts a queue in front of `inner`; `target` names the backend in [`FailFast`] errors.
    ///
    /// A capacity beyond what a tokio semaphore can count is clamped to its maximum.
    pub fn new(inner: S, config: QueueConfig, target: Arc<str>) -> Self {
        let semaphore = Arc::new(Semaphore::new(config.capacity.min(Semaphore::MAX_PERMITS)));
        Self {
            inner,
            slots: PollSemaphore::new(semaphore.clone()),
            shared: Arc::new(Shared {
                config,
                target,
                semaphore,
                unready: AtomicBool::new(false),
                unready_since: Mutex::new(None),
                failfast: AtomicBool::new(false),
            }),
            permit: None,
            deadline: None,
            waiting: false,
            failfast: false,
        }
    }

    /// True while the queue fails requests fast (tests, diagnostics, metrics).
    pub fn in_failfast(&self) -> bool {
        self.shared.failfast.load(Ordering::Acquire)
    }

    /// Callers currently holding a queue slot while waiting for readiness.
    pub fn queued(&self) -> usize {
        let capacity = self.shared.config.capacity.min(Semaphore::MAX_PERMITS);
        capacity.saturating_sub(self.shared.semaphore.available_permits())
    }

    /// Gives up this clone's place in the queue: its slot, its pending acquire (if the queue
    /// was full) and its deadline timer.
    fn leave_queue(&mut self) {
        if !self.waiting {
            return;
        }
        self.waiting = false;
        self.permit = None;
        self.deadline = None;
        // A pending acquire stays in the semaphore's wait list even when nobody polls it, and
        // a released permit would be handed to it and sit there unused, shrinking the queue.
        // Dropping the `PollSemaphore` drops the acquire, which returns any such permit.
        self.slots = PollSemaphore::new(self.shared.semaphore.clone());
    }

    /// Steps 2–4 of `poll_ready`, run once the inner service has said `Pending`.
    fn poll_unready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // The deadline whose timer has fired during this call, if any.
        let mut fired = None;
        loop {
            let now = Instant::now();
            let since = self.shared.mark_unready(now);
            // `None` if the timeout is too large to represent: then we never fail fast.
            let deadline = since.checked_add(self.shared.config.failfast_timeout);

            // Trusting a fired timer as well as the clock means that this loop cannot spin,
            // even if the timer and `Instant::now()` were ever to disagree about the deadline.
            if deadline.is_some_and(|deadline| now >= deadline || fired == Some(deadline)) {
                self.shared.failfast.store(true, Ordering::Release);
                self.leave_queue();
                self.failfast = true;
                return Poll::Ready(());
            }

            self.waiting = true;
            if self.permit.is_none() {
                // `Pending` means the queue is full: we stay pending without a slot (pushed
                // back) and are woken when one frees up. `Ready(None)` cannot happen, as the
                // semaphore is never closed; it would just leave us waiting without a slot.
                if let Poll::Ready(permit) = self.slots.poll_acquire(cx) {
                    self.permit = permit;
                }
            }

            let Some(deadline) = deadline else {
                return Poll::Pending;
            };
            let sleep = match &mut self.deadline {
                Some(sleep) => {
                    // Another clone may have moved the clock (the backend flapped); and a
                    // fired sleep must be re-armed, or it would stay ready forever.
                    if sleep.deadline() != deadline || sleep.is_elapsed() {
                        sleep.as_mut().reset(deadline);
                    }
                    sleep
                }
                None => self.deadline.insert(Box::pin(sleep_until(deadline))),
            };
            if sleep.as_mut().poll(cx).is_pending() {
                // Woken by the inner service (readiness), the semaphore (a slot), or the
                // deadline, whichever comes first.
                return Poll::Pending;
            }
            fired = Some(deadline);
            // The deadline has passed: go round again, which fails fast unless the backend
            // was seen ready (by another clone) in the meantime and the clock restarted.
        }
    }
}

impl<S, Req> tower::Service<Req> for Queue<S>
where
    S: tower::Service<Req> + Clone,
    S::Error: From<FailFast>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, future::Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        // 1. Is the backend ready? Its `Pending` also registers `cx` for when it becomes so.
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => {
                self.shared.mark_ready();
                self.leave_queue();
                self.failfast = false;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => {
                self.leave_queue();
                self.failfast = false;
                Poll::Ready(Err(error))
            }
            // 2–4. Wait in the queue or, past the deadline, fail fast.
            Poll::Pending => self.poll_unready(cx).map(Ok),
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if std::mem::take(&mut self.failfast) {
            let error = FailFast {
                target: self.shared.target.clone(),
                timeout: self.shared.config.failfast_timeout,
            };
            return Either::Right(future::ready(Err(error.into())));
        }
        // A dispatched request is no longer queued. (`poll_ready` has normally released the
        // slot already; this covers a caller that skipped it.)
        self.leave_queue();
        Either::Left(self.inner.call(req))
    }
}

/// Each clone waits on its own: it starts with no slot, no timer and no pending failure.
impl<S: Clone> Clone for Queue<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            slots: PollSemaphore::new(self.shared.semaphore.clone()),
            permit: None,
            deadline: None,
            waiting: false,
            failfast: false,
        }
    }
}

impl<S> fmt::Debug for Queue<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("target", &self.shared.target)
            .field("config", &self.shared.config)
            .field("queued", &self.queued())
            .field("in_failfast", &self.in_failfast())
            .finish_non_exhaustive()
    }
}

// === impl Shared ===

impl Shared {
    fn lock_since(&self) -> MutexGuard<'_, Option<Instant>> {
        // The guarded value is a plain `Option<Instant>`: a panic cannot leave it torn.
        self.unready_since
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The backend was seen ready: restart the fail-fast clock and leave fail-fast.
    fn mark_ready(&self) {
        // The fast path: a backend that has stayed ready touches one atomic and no lock.
        // (A clone marking the backend unready concurrently may be missed; its mark then stands
        // until the next ready poll, which, for a backend that is ready, comes with the next
        // request.)
        if self.unready.load(Ordering::Acquire) {
            let mut since = self.lock_since();
            *since = None;
            self.unready.store(false, Ordering::Release);
            self.failfast.store(false, Ordering::Release);
        }
    }

    /// The backend was seen unready at `now`: start the fail-fast clock unless it is already
    /// running, and return when it started.
    fn mark_unready(&self, now: Instant) -> Instant {
        let mut since = self.lock_since();
        let since = *since.get_or_insert(now);
        self.unready.store(true, Ordering::Release);
        since
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{
        task::{waker, ArcWake},
        FutureExt,
    };
    use std::{sync::atomic::AtomicUsize, task::Waker};
    use tokio::time::advance;
    use tower::{BoxError, Service};

    const TARGET: &str = "web.default.svc.cluster.local:80";
    const TIMEOUT: Duration = Duration::from_secs(3);

    /// A backend whose readiness the test switches on and off, like a balancer whose endpoints
    /// come and go. It wakes every task that saw it pending when it becomes ready.
    #[derive(Clone)]
    struct Backend(Arc<BackendState>);

    struct BackendState {
        ready: AtomicBool,
        fail: AtomicBool,
        calls: AtomicUsize,
        wakers: Mutex<Vec<Waker>>,
    }

    impl Backend {
        fn new(ready: bool) -> Self {
            Self(Arc::new(BackendState {
                ready: AtomicBool::new(ready),
                fail: AtomicBool::new(false),
                calls: AtomicUsize::new(0),
                wakers: Mutex::new(Vec::new()),
            }))
        }

        fn set_ready(&self, ready: bool) {
            self.0.ready.store(ready, Ordering::SeqCst);
            if ready {
                for waker in self.0.wakers.lock().unwrap().drain(..) {
                    waker.wake();
                }
            }
        }

        fn calls(&self) -> usize {
            self.0.calls.load(Ordering::SeqCst)
        }
    }

    impl Service<&'static str> for Backend {
        type Response = String;
        type Error = BoxError;
        type Future = future::Ready<Result<String, BoxError>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            if self.0.fail.load(Ordering::SeqCst) {
                return Poll::Ready(Err("backend broke".into()));
            }
            if self.0.ready.load(Ordering::SeqCst) {
                return Poll::Ready(Ok(()));
            }
            self.0.wakers.lock().unwrap().push(cx.waker().clone());
            Poll::Pending
        }

        fn call(&mut self, req: &'static str) -> Self::Future {
            assert!(self.0.ready.load(Ordering::SeqCst), "called while unready");
            self.0.calls.fetch_add(1, Ordering::SeqCst);
            future::ready(Ok(format!("{req}: ok")))
        }
    }

    /// Counts how often a caller's task was woken.
    #[derive(Default)]
    struct WakeCount(AtomicUsize);

    impl ArcWake for WakeCount {
        fn wake_by_ref(this: &Arc<Self>) {
            this.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// One caller of the queue (as one connection would be), polled by hand so the test
    /// decides exactly when anything runs.
    struct Caller {
        queue: Queue<Backend>,
        wakes: Arc<WakeCount>,
        waker: Waker,
    }

    impl Caller {
        fn new(queue: &Queue<Backend>) -> Self {
            let wakes = Arc::new(WakeCount::default());
            Self {
                queue: queue.clone(),
                waker: waker(wakes.clone()),
                wakes,
            }
        }

        fn poll_ready(&mut self) -> Poll<Result<(), BoxError>> {
            self.queue.poll_ready(&mut Context::from_waker(&self.waker))
        }

        fn is_ready(&mut self) -> bool {
            match self.poll_ready() {
                Poll::Ready(Ok(())) => true,
                Poll::Ready(Err(error)) => panic!("poll_ready failed: {error}"),
                Poll::Pending => false,
            }
        }

        /// Calls the queue (after the test saw it ready) and resolves the response.
        fn call(&mut self) -> Result<String, BoxError> {
            self.queue
                .call("req")
                .now_or_never()
                .expect("the backend answers at once")
        }

        fn woken(&self) -> usize {
            self.wakes.0.load(Ordering::SeqCst)
        }
    }

    fn queue(backend: &Backend, capacity: usize) -> Queue<Backend> {
        let config = QueueConfig {
            capacity,
            failfast_timeout: TIMEOUT,
        };
        Queue::new(backend.clone(), config, TARGET.into())
    }

    /// Asserts `result` is a fail-fast error naming our target.
    fn assert_failfast(result: Result<String, BoxError>) {
        let error = result.expect_err("should fail fast");
        let failfast = error.downcast_ref::<FailFast>().expect("a FailFast error");
        assert_eq!(&*failfast.target, TARGET);
        assert_eq!(failfast.timeout, TIMEOUT);
        assert!(error.to_string().contains(TARGET), "{error}");
    }

    #[test]
    fn default_config_is_linkerds() {
        let config = QueueConfig::default();
        assert_eq!(config.capacity, 100);
        assert_eq!(config.failfast_timeout, Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_ready_backend_passes_requests_through_without_a_slot() {
        let backend = Backend::new(true);
        let queue = queue(&backend, 2);
        let mut caller = Caller::new(&queue);

        for _ in 0..3 {
            assert!(caller.is_ready());
            assert_eq!(queue.queued(), 0, "no slot taken");
            assert_eq!(caller.call().unwrap(), "req: ok");
        }
        assert_eq!(backend.calls(), 3);
        assert!(!queue.in_failfast());
    }

    #[tokio::test(start_paused = true)]
    async fn callers_wait_for_an_unready_backend_in_a_bounded_queue() {
        let backend = Backend::new(false);
        let queue = queue(&backend, 2);
        let mut callers: Vec<_> = (0..3).map(|_| Caller::new(&queue)).collect();

        for (i, caller) in callers.iter_mut().enumerate() {
            assert!(!caller.is_ready(), "caller {i} should wait");
            assert_eq!(
                queue.queued(),
                (i + 1).min(2),
                "slots are capped at capacity"
            );
        }
        // Polling again does not take a second slot or lose one.
        assert!(!callers[0].is_ready());
        assert_eq!(queue.queued(), 2);
        assert_eq!(backend.calls(), 0);

        // The backend becomes ready: every waiter, with a slot or without, is woken, and each
        // gets through in turn, releasing its slot.
        backend.set_ready(true);
        for (i, caller) in callers.iter_mut().enumerate() {
            assert!(caller.woken() >= 1, "caller {i} should be woken");
            assert!(caller.is_ready(), "caller {i} should be ready");
            assert_eq!(caller.call().unwrap(), "req: ok");
        }
        assert_eq!(backend.calls(), 3);
        assert_eq!(queue.queued(), 0, "nobody is left queued");
        assert!(!queue.in_failfast());
    }

    #[tokio::test(start_paused = true)]
    async fn a_freed_slot_goes_to_the_caller_pushed_back() {
        let backend = Backend::new(false);
        let queue = queue(&backend, 1);
        let mut first = Caller::new(&queue);
        let mut second = Caller::new(&queue);

        assert!(!first.is_ready());
        assert!(!second.is_ready());
        assert_eq!(queue.queued(), 1, "`second` waits without a slot");

        // `first` gives up (its connection closed). The semaphore hands its slot to `second`.
        drop(first);
        assert_eq!(second.woken(), 1);
        assert!(!second.is_ready(), "still waiting for the backend");
        assert_eq!(queue.queued(), 1, "now held by `second`");

        drop(second);
        assert_eq!(queue.queued(), 0, "a dropped caller frees its slot");
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_pushed_back_leaves_no_slot_behind_when_the_backend_is_ready() {
        let backend = Backend::new(false);
        let queue = queue(&backend, 1);
        let mut first = Caller::new(&queue);
        let mut second = Caller::new(&queue);
        assert!(!first.is_ready());
        assert!(!second.is_ready()); // Waiting in the semaphore's wait list.

        backend.set_ready(true);
        // `second` goes first. Then `first` releases its slot, which the semaphore would hand
        // to `second`'s abandoned acquire if `second` had not withdrawn it.
        assert!(second.is_ready());
        assert!(first.is_ready());
        assert_eq!(queue.queued(), 0, "no slot stranded");
        assert_eq!(first.call().unwrap(), "req: ok");
        assert_eq!(second.call().unwrap(), "req: ok");
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_fail_fast_after_exactly_the_timeout() {
        let backend = Backend::new(false);
        let queue = queue(&backend, 1);
        let mut with_slot = Caller::new(&queue);
        let mut without_slot = Caller::new(&queue);
        assert!(!with_slot.is_ready());
        assert!(!without_slot.is_ready());
        assert_eq!(queue.queued(), 1);

        advance(Duration::from_millis(2_900)).await;
        assert_eq!(with_slot.woken(), 0, "nothing happens before the deadline");
        assert_eq!(without_slot.woken(), 0);
        assert!(!with_slot.is_ready());
        assert!(!without_slot.is_ready());
        assert!(!queue.in_failfast());

        advance(Duration::from_millis(100)).await;
        // Both are woken by their own timers, slot or no slot, with nothing else happening.
        assert_eq!(with_slot.woken(), 1);
        assert_eq!(without_slot.woken(), 1);
        assert!(with_slot.is_ready(), "ready, to fail");
        assert!(without_slot.is_ready(), "ready, to fail");
        assert!(queue.in_failfast());
        assert_eq!(queue.queued(), 0, "failing callers hold no slot");
        assert_failfast(with_slot.call());
        assert_failfast(without_slot.call());

        // New requests fail at once, without waiting.
        let mut newcomer = Caller::new(&queue);
        assert!(newcomer.is_ready());
        assert_failfast(newcomer.call());
        // And so do the next requests of the old callers.
        assert!(with_slot.is_ready());
        assert_failfast(with_slot.call());

        assert_eq!(
            backend.calls(),
            0,
            "a failing queue never calls its backend"
        );
        assert!(queue.in_failfast());
    }

    #[tokio::test(start_paused = true)]
    async fn a_ready_backend_ends_failfast() {
        let backend = Backend::new(false);
        let queue = queue(&backend, 10);
        let mut caller = Caller::new(&queue);
        assert!(!caller.is_ready());
        advance(TIMEOUT).await;
        assert!(caller.is_ready());
        assert!(queue.in_failfast());
        assert_failfast(caller.call());

        // Any clone seeing the backend ready ends fail-fast for all of them.
        backend.set_ready(true);
        let mut other = Caller::new(&queue);
        assert!(other.is_ready());
        assert!(!queue.in_failfast());
        assert_eq!(other.call().unwrap(), "req: ok");
        assert!(caller.is_ready());
        assert_eq!(caller.call().unwrap(), "req: ok");

        // The clock starts afresh: unready again, callers wait the full timeout again.
        backend.set_ready(false);
        assert!(!caller.is_ready());
        advance(TIMEOUT - Duration::from_millis(1)).await;
        assert!(!caller.is_ready());
        advance(Duration::from_millis(1)).await;
        assert!(caller.is_ready());
        assert_failfast(caller.call());
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_between_poll_ready_and_call_cancels_the_failure() {
        let backend = Backend::new(false);
        let queue = queue(&backend, 10);
        let mut caller = Caller::new(&queue);
        assert!(!caller.is_ready());
        advance(TIMEOUT).await;
        assert!(caller.is_ready(), "ready, to fail");

        // Polled again before calling (allowed), the backend is now ready: the call goes
        // through instead of failing.
        backend.set_ready(true);
        assert!(caller.is_ready());
        assert_eq!(caller.call().unwrap(), "req: ok");
    }

    #[tokio::test(start_paused = true)]
    async fn a_flapping_backend_restarts_the_clock() {
        let backend = Backend::new(false);
        let queue = queue(&backend, 10);
        let mut flapper = Caller::new(&queue);
        let mut patient = Caller::new(&queue);
        assert!(!flapper.is_ready());
        assert!(!patient.is_ready()); // Its timer is set for 3 s.

        // At 2 s the backend is briefly ready: one request gets through.
        advance(Duration::from_secs(2)).await;
        backend.set_ready(true);
        assert!(flapper.is_ready());
        assert_eq!(flapper.call().unwrap(), "req: ok");
        backend.set_ready(false);
        assert!(!flapper.is_ready()); // Unready again from 2 s: fail-fast is due at 5 s.

        // At 3 s `patient`'s timer fires, but the clock was restarted: it keeps waiting.
        let woken = patient.woken();
        advance(Duration::from_secs(1)).await;
        assert!(patient.woken() > woken, "its old deadline woke it");
        assert!(
            !patient.is_ready(),
            "3 s since the first unready, but only 1 s since the last"
        );
        assert!(!queue.in_failfast());

        advance(Duration::from_millis(1_999)).await;
        assert!(!patient.is_ready());
        assert!(!flapper.is_ready());

        // At 5 s, 3 s after the backend was last ready, both fail fast.
        advance(Duration::from_millis(1)).await;
        assert!(patient.is_ready());
        assert!(flapper.is_ready());
        assert_failfast(patient.call());
        assert_failfast(flapper.call());
        assert_eq!(backend.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn backend_errors_are_returned_as_they_are() {
        let backend = Backend::new(false);
        let queue = queue(&backend, 1);
        let mut caller = Caller::new(&queue);
        assert!(!caller.is_ready());
        assert_eq!(queue.queued(), 1);

        backend.0.fail.store(true, Ordering::SeqCst);
        match caller.poll_ready() {
            Poll::Ready(Err(error)) => assert_eq!(error.to_string(), "backend broke"),
            other => panic!("expected the backend's error, got {other:?}"),
        }
        assert_eq!(queue.queued(), 0, "a failed caller leaves the queue");
    }

    #[tokio::test(start_paused = true)]
    async fn works_as_a_tower_service() {
        use tower::ServiceExt;

        let backend = Backend::new(true);
        let queue = queue(&backend, 1);
        let response = queue.clone().oneshot("hi").await.unwrap();
        assert_eq!(response, "hi: ok");

        // An awaited request fails fast by itself when the timeout passes (the runtime's
        // paused clock jumps to the timer).
        backend.set_ready(false);
        let error = queue.oneshot("hi").await.unwrap_err();
        assert!(error.is::<FailFast>());
    }
}
