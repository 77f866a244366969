//! The load generator: the `traffic` workload's app. It sends a steady,
//! bounded rate of requests to `web` through its own proxy, so every
//! edge of the mesh carries traffic without anyone curling.

use super::client::ProxyClient;
use super::topology::service_url;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

/// Requests in flight at once; a tick that finds them all busy is
/// skipped (counted), so a stuck mesh never piles up requests.
const MAX_IN_FLIGHT: usize = 32;

/// Every `LIST_EVERY`-th request lists the books (`GET /books`, the
/// profile's non-retryable route); the others ask for one book.
const LIST_EVERY: u64 = 10;

/// What the generator has done so far.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests sent.
    pub sent: AtomicU64,
    /// Answered 2xx.
    pub ok: AtomicU64,
    /// Answered otherwise, or not at all.
    pub failed: AtomicU64,
    /// Ticks skipped because [`MAX_IN_FLIGHT`] requests were pending.
    pub skipped: AtomicU64,
}

/// Sends `rps` requests a second through the proxy whose outbound
/// listener `client` uses, until the task is aborted (which also aborts
/// the requests in flight).
pub fn spawn(client: ProxyClient, rps: u32, stats: Arc<Stats>) -> JoinHandle<()> {
    tokio::spawn(run(Arc::new(client), rps, stats))
}

async fn run(client: Arc<ProxyClient>, rps: u32, stats: Arc<Stats>) {
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut requests = JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rps.max(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        while requests.try_join_next().is_some() {}
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            stats.skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let path = if n % LIST_EVERY == LIST_EVERY - 1 {
            "/books"
        } else {
            "/"
        };
        n += 1;
        let (client, stats) = (client.clone(), stats.clone());
        requests.spawn(async move {
            let _permit = permit;
            stats.sent.fetch_add(1, Ordering::Relaxed);
            match client.get(&service_url("web", path)).await {
                Ok((status, _)) if (200..300).contains(&status) => {
                    stats.ok.fetch_add(1, Ordering::Relaxed)
                }
                _ => stats.failed.fetch_add(1, Ordering::Relaxed),
            };
        });
    }
}
