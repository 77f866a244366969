//! [`NewCache`]: build each target's service once and reuse it.
//!
//! A proxy sees the same few targets over and over (an outbound service, an inbound port), and
//! building a stack for one can be expensive: it may start a balancer or a discovery watch. The
//! cache keeps the built service per target and hands out clones, so a known target costs one
//! mutex lock and one hash lookup.
//!
//! Two things keep the cache from growing without bound:
//!
//! - **Idle eviction.** An entry not used for [`CacheConfig::idle`] is dropped (and with it,
//!   whatever the service owns). There is no background task: `new_service` sweeps lazily, at
//!   most once per `idle / 4` (and at least a second apart), so the sweep's cost is spread over
//!   many requests and never paid per request.
//! - **Capacity.** There are never more than [`CacheConfig::capacity`] entries. A new target that
//!   finds the cache full still gets a working service, freshly built and *not* cached, so a flood
//!   of distinct targets degrades to "build per request" instead of exhausting memory.

use crate::NewService;
use std::{
    collections::HashMap,
    hash::Hash,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};
use tokio::time::Instant;

/// How many services a cache holds and how long an unused one lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// An entry not used for this long is evicted.
    pub idle: Duration,
    /// The most entries the cache ever holds.
    pub capacity: usize,
}

/// Caches the services `inner` builds, one per target (`K`), so a request to a known target
/// does no construction on the hot path. Clones share the cache.
pub struct NewCache<K, N: NewService<K>> {
    shared: Arc<Shared<K, N>>,
}

/// What all clones of a [`NewCache`] share.
struct Shared<K, N: NewService<K>> {
    inner: N,
    config: CacheConfig,
    state: Mutex<State<K, N::Service>>,
}

/// The mutable part of the cache, behind one mutex.
struct State<K, S> {
    entries: HashMap<K, Entry<S>>,
    /// When the last sweep ran (or the cache was created), to space sweeps out.
    last_sweep: Instant,
    /// No entry was used earlier than this: a lower bound on every entry's `last_used`, kept
    /// so a full cache can tell cheaply whether a sweep could possibly free anything. Hits move
    /// entries' `last_used` forward without touching it, which keeps it a valid lower bound.
    oldest_use: Option<Instant>,
    /// When we last logged that the cache is full, so the log is rate-limited too.
    last_full_log: Option<Instant>,
}

/// One cached service and when it was last handed out.
struct Entry<S> {
    service: S,
    last_used: Instant,
}

// === impl CacheConfig ===

impl CacheConfig {
    /// How often the cache may sweep: a quarter of the idle timeout, but at least a second, so
    /// an entry outlives `idle` by at most a quarter (if nothing hits it) and a short `idle`
    /// cannot turn sweeping into per-request work.
    fn sweep_period(&self) -> Duration {
        (self.idle / 4).max(Duration::from_secs(1))
    }
}

// === impl NewCache ===

impl<K, N> NewCache<K, N>
where
    K: Eq + Hash + Clone,
    N: NewService<K>,
    N::Service: Clone,
{
    /// Wraps `inner` in an empty cache.
    pub fn new(inner: N, config: CacheConfig) -> Self {
        let state = State {
            entries: HashMap::new(),
            last_sweep: Instant::now(),
            oldest_use: None,
            last_full_log: None,
        };
        Self {
            shared: Arc::new(Shared {
                inner,
                config,
                state: Mutex::new(state),
            }),
        }
    }

    /// Entries currently cached (tests, diagnostics).
    ///
    /// Entries that have been idle for too long count as gone even if no sweep has dropped
    /// them yet: they will never be handed out again.
    pub fn len(&self) -> usize {
        let now = Instant::now();
        let idle = self.shared.config.idle;
        self.shared
            .lock()
            .entries
            .values()
            .filter(|entry| !entry.is_idle(now, idle))
            .count()
    }

    /// True when no entry is cached (see [`NewCache::len`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K, N> NewService<K> for NewCache<K, N>
where
    K: Eq + Hash + Clone,
    N: NewService<K>,
    N::Service: Clone,
{
    type Service = N::Service;

    fn new_service(&self, key: K) -> N::Service {
        let config = &self.shared.config;
        let now = Instant::now();

        // The hot path: one lock, one lookup, one clone.
        {
            let mut state = self.shared.lock();
            if now.saturating_duration_since(state.last_sweep) >= config.sweep_period() {
                state.sweep(now, config.idle);
            }
            if let Some(entry) = state.entries.get_mut(&key) {
                if !entry.is_idle(now, config.idle) {
                    entry.last_used = now;
                    return entry.service.clone();
                }
                // Idle for too long but not swept yet: it is as good as evicted, so rebuild.
                // `insert` below replaces it in place.
            }
        }

        // A miss. Build without holding the lock, so a slow build doesn't stall requests to
        // other targets and `inner` may itself use this cache. Two racing misses for one target
        // both build; `insert` keeps the first and the second's build is dropped.
        let service = self.shared.inner.new_service(key.clone());
        self.shared.lock().insert(key, service, now, config)
    }
}

impl<K, N: NewService<K>> Clone for NewCache<K, N> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

// === impl Shared ===

impl<K, N: NewService<K>> Shared<K, N> {
    fn lock(&self) -> MutexGuard<'_, State<K, N::Service>> {
        // A panic while holding the lock cannot leave the map half-updated in a way that
        // matters (at worst an entry is missing or stale), so keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

// === impl State ===

impl<K: Eq + Hash, S: Clone> State<K, S> {
    /// Caches a freshly built `service` for `key` if there is room, and returns the service to
    /// use for this request.
    fn insert(&mut self, key: K, service: S, now: Instant, config: &CacheConfig) -> S {
        if let Some(entry) = self.entries.get_mut(&key) {
            if entry.is_idle(now, config.idle) {
                // We are replacing an idle entry: ours is the fresh one.
                entry.service = service;
            }
            // Otherwise a racing miss got here first; share its service and drop ours, so
            // the target keeps a single service.
            entry.last_used = now;
            return entry.service.clone();
        }

        if self.entries.len() >= config.capacity && self.may_have_idle(now, config.idle) {
            self.sweep(now, config.idle);
        }
        if self.entries.len() >= config.capacity {
            let period = config.sweep_period();
            let log_due = self
                .last_full_log
                .is_none_or(|logged| now.saturating_duration_since(logged) >= period);
            if log_due {
                self.last_full_log = Some(now);
                tracing::debug!(
                    capacity = config.capacity,
                    "Service cache is full; serving a new target without caching it"
                );
            }
            return service;
        }

        self.entries.insert(
            key,
            Entry {
                service: service.clone(),
                last_used: now,
            },
        );
        self.oldest_use = Some(self.oldest_use.map_or(now, |oldest| oldest.min(now)));
        service
    }

    /// Whether any entry could be idle by now. Cheap (no iteration) and never wrong in the
    /// unsafe direction: false means no sweep could free anything.
    fn may_have_idle(&self, now: Instant, idle: Duration) -> bool {
        self.oldest_use
            .is_some_and(|oldest| now.saturating_duration_since(oldest) >= idle)
    }

    /// Drops every idle entry, and recomputes `oldest_use` from the survivors.
    fn sweep(&mut self, now: Instant, idle: Duration) {
        self.entries.retain(|_, entry| !entry.is_idle(now, idle));
        self.oldest_use = self.entries.values().map(|entry| entry.last_used).min();
        self.last_sweep = now;
    }
}

// === impl Entry ===

impl<S> Entry<S> {
    fn is_idle(&self, now: Instant, idle: Duration) -> bool {
        // Subtracting (rather than adding `idle` to `last_used`) cannot overflow, so even
        // `Duration::MAX` ("never evict") is fine.
        now.saturating_duration_since(self.last_used) >= idle
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::time::advance;

    /// A built service: which target it is for and which build produced it.
    #[derive(Clone, Debug, PartialEq, Eq)]
    struct Built {
        target: &'static str,
        build: usize,
        /// Lets a test see whether the cache still holds this service.
        alive: Arc<()>,
    }

    /// A `NewService` that numbers its builds, so tests can see when the cache built.
    fn counting() -> (Arc<AtomicUsize>, impl Fn(&'static str) -> Built) {
        let builds = Arc::new(AtomicUsize::new(0));
        let new_service = {
            let builds = builds.clone();
            move |target| Built {
                target,
                build: builds.fetch_add(1, Ordering::SeqCst) + 1,
                alive: Arc::new(()),
            }
        };
        (builds, new_service)
    }

    const IDLE: Duration = Duration::from_secs(60);

    fn config(capacity: usize) -> CacheConfig {
        CacheConfig {
            idle: IDLE,
            capacity,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hit_returns_the_cached_service() {
        let (builds, inner) = counting();
        let cache = NewCache::new(inner, config(10));

        let first = cache.new_service("web");
        let again = cache.new_service("web");
        assert_eq!(first, again);
        assert_eq!(first.build, 1);
        assert_eq!(builds.load(Ordering::SeqCst), 1, "built once");

        let other = cache.new_service("db");
        assert_eq!(other.target, "db");
        assert_eq!(builds.load(Ordering::SeqCst), 2, "each target builds once");
        assert_eq!(cache.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn clones_share_the_cache() {
        let (builds, inner) = counting();
        let cache = NewCache::new(inner, config(10));
        let clone = cache.clone();

        let first = cache.new_service("web");
        assert_eq!(clone.new_service("web"), first);
        assert_eq!(builds.load(Ordering::SeqCst), 1);
        assert_eq!(clone.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_entries_are_evicted_after_idle_but_not_before() {
        let (builds, inner) = counting();
        let cache = NewCache::new(inner, config(10));
        let first = cache.new_service("web");

        advance(IDLE - Duration::from_millis(1)).await;
        assert_eq!(cache.len(), 1, "not idle yet");
        // Look without using it: a hit would refresh the entry.
        advance(Duration::from_millis(1)).await;
        assert!(cache.is_empty(), "idle for exactly `idle`: evicted");

        let rebuilt = cache.new_service("web");
        assert_eq!(rebuilt.build, 2, "an evicted target is built afresh");
        assert_ne!(rebuilt, first);
        assert_eq!(builds.load(Ordering::SeqCst), 2);
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn just_before_idle_the_cached_service_is_still_returned() {
        let (builds, inner) = counting();
        let cache = NewCache::new(inner, config(10));
        let first = cache.new_service("web");

        advance(IDLE - Duration::from_millis(1)).await;
        assert_eq!(cache.new_service("web"), first);
        assert_eq!(builds.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn use_keeps_an_entry_alive() {
        let (builds, inner) = counting();
        let cache = NewCache::new(inner, config(10));
        let first = cache.new_service("web");

        // Used every 40 s for four minutes: never idle for 60 s, so never rebuilt, even though
        // far more than `idle` has passed since it was built.
        for _ in 0..6 {
            advance(Duration::from_secs(40)).await;
            assert_eq!(cache.new_service("web"), first);
        }
        assert_eq!(builds.load(Ordering::SeqCst), 1);

        // Then left alone, it goes.
        advance(IDLE).await;
        assert!(cache.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_sweep_drops_idle_services() {
        let (_builds, inner) = counting();
        let cache = NewCache::new(inner, config(10));
        let web = cache.new_service("web");
        assert_eq!(Arc::strong_count(&web.alive), 2, "ours and the cache's");

        // A request for another target after `idle` sweeps, dropping the cache's copy of
        // `web` (and whatever it owns) without anyone asking for `web` again.
        advance(IDLE).await;
        cache.new_service("db");
        assert_eq!(Arc::strong_count(&web.alive), 1, "the cache let go of it");
    }

    #[tokio::test(start_paused = true)]
    async fn sweeps_are_spaced_out() {
        let (_builds, inner) = counting();
        let cache = NewCache::new(
            inner,
            CacheConfig {
                idle: Duration::from_secs(8),
                capacity: 10,
            },
        );
        let web = cache.new_service("web");

        // `web` turns idle at 8 s. The sweep period is max(8 s / 4, 1 s) = 2 s, and the first
        // sweep runs on the first request at least 2 s after creation.
        advance(Duration::from_secs(7)).await;
        cache.new_service("db"); // Sweeps at 7 s: `web` is not idle yet.
        assert_eq!(Arc::strong_count(&web.alive), 2);

        advance(Duration::from_secs(1)).await;
        cache.new_service("db"); // 8 s: `web` is idle, but the last sweep was 1 s ago.
        assert_eq!(
            Arc::strong_count(&web.alive),
            2,
            "no sweep within the period"
        );
        assert_eq!(cache.len(), 1, "yet it is no longer counted");

        advance(Duration::from_secs(1)).await;
        cache.new_service("db"); // 9 s: 2 s since the last sweep.
        assert_eq!(Arc::strong_count(&web.alive), 1, "swept");
    }

    #[tokio::test(start_paused = true)]
    async fn capacity_is_never_exceeded_and_extra_targets_still_work() {
        let (builds, inner) = counting();
        let cache = NewCache::new(inner, config(2));
        cache.new_service("a");
        cache.new_service("b");
        assert_eq!(cache.len(), 2);

        // A third target gets a working service, built for it, but it is not cached.
        let c = cache.new_service("c");
        assert_eq!(c.target, "c");
        assert_eq!(cache.len(), 2, "nothing grows");
        assert_eq!(Arc::strong_count(&c.alive), 1, "only the caller holds it");

        // So each request for it builds again...
        assert_eq!(cache.new_service("c").build, builds.load(Ordering::SeqCst));
        assert_eq!(builds.load(Ordering::SeqCst), 4);
        // ...while the cached targets still hit.
        assert_eq!(cache.new_service("a").build, 1);
        assert_eq!(cache.new_service("b").build, 2);
        assert_eq!(builds.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn eviction_frees_room() {
        let (_builds, inner) = counting();
        let cache = NewCache::new(inner, config(2));
        cache.new_service("a");
        advance(Duration::from_secs(30)).await;
        cache.new_service("b");

        // At 60 s, `a` is idle and `b` is not. A new target finds the cache full, sweeps `a`
        // out and takes its place.
        advance(Duration::from_secs(30)).await;
        let c = cache.new_service("c");
        assert_eq!(Arc::strong_count(&c.alive), 2, "cached");
        assert_eq!(cache.len(), 2);

        // `b` and `c` are both live: a fourth target is served uncached.
        let d = cache.new_service("d");
        assert_eq!(Arc::strong_count(&d.alive), 1, "not cached");
        assert_eq!(cache.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_cache_frees_room_as_soon_as_an_entry_is_idle() {
        let (_builds, inner) = counting();
        let cache = NewCache::new(inner, config(1));
        let a = cache.new_service("a");

        // A request just before `a` turns idle sweeps on the period, finds nothing to evict,
        // and serves `b` uncached.
        advance(IDLE - Duration::from_millis(1)).await;
        assert_eq!(Arc::strong_count(&cache.new_service("b").alive), 1);

        // One millisecond later `a` is idle. The periodic sweep is not due again for 15 s,
        // but a full cache sweeps anyway when an entry may have turned idle.
        advance(Duration::from_millis(1)).await;
        let b = cache.new_service("b");
        assert_eq!(Arc::strong_count(&b.alive), 2, "`b` took `a`'s place");
        assert_eq!(Arc::strong_count(&a.alive), 1, "`a` was dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_capacity_cache_never_caches() {
        let (builds, inner) = counting();
        let cache = NewCache::new(inner, config(0));
        assert_eq!(cache.new_service("a").build, 1);
        assert_eq!(cache.new_service("a").build, 2);
        assert_eq!(builds.load(Ordering::SeqCst), 2);
        assert!(cache.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_unrepresentable_idle_timeout_never_evicts() {
        let (builds, inner) = counting();
        let cache = NewCache::new(
            inner,
            CacheConfig {
                idle: Duration::MAX,
                capacity: 1,
            },
        );
        cache.new_service("a");
        advance(Duration::from_secs(365 * 24 * 3600)).await;
        assert_eq!(cache.new_service("a").build, 1);
        assert_eq!(builds.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_poisoned_lock_is_recovered() {
        let (builds, inner) = counting();
        let cache = NewCache::new(inner, config(10));
        cache.new_service("a");

        let poisoner = cache.clone();
        let panicked = std::thread::spawn(move || {
            let _guard = poisoner.shared.lock();
            panic!("poison the cache's lock");
        })
        .join();
        assert!(panicked.is_err());
        assert!(cache.shared.state.is_poisoned());

        assert_eq!(
            cache.new_service("a").build,
            1,
            "still serving from the cache"
        );
        assert_eq!(builds.load(Ordering::SeqCst), 1);
    }
}
