//! Graceful shutdown.
//!
//! One [`Drain`] is shared by every listener and connection task. When it is
//! signalled (SIGTERM or `POST /shutdown`), listeners stop accepting, HTTP
//! connections finish their in-flight requests and close, and the process
//! waits for all connection tasks up to a grace period before exiting.

use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Shutdown signal plus a tracker of the tasks that must finish first.
#[derive(Clone, Debug, Default)]
pub struct Drain {
    signal: CancellationToken,
    tasks: TaskTracker,
}

// === impl Drain ===

impl Drain {
    /// Creates a drain that has not been signalled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts draining. Idempotent.
    pub fn signal(&self) {
        self.signal.cancel();
    }

    /// True once draining has started.
    pub fn is_draining(&self) -> bool {
        self.signal.is_cancelled()
    }

    /// Resolves when draining starts.
    pub async fn signaled(&self) {
        self.signal.cancelled().await
    }

    /// Spawns a task that shutdown waits for (a connection, a listener).
    pub fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(fut)
    }

    /// Waits for every tracked task, at most `grace`. Returns false when the
    /// grace period ran out with tasks still running.
    pub async fn wait(&self, grace: Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(grace, self.tasks.wait()).await.is_ok()
    }

    /// Number of tracked tasks still running (connections, listeners).
    pub fn active(&self) -> usize {
        self.tasks.len()
    }
}
