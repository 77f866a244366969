//! Kubernetes Events about injection, on the pod's workload, so `kubectl
//! describe deploy web` says why its pods have no proxy (`InjectionSkipped`)
//! or which annotation value was ignored (`InvalidInjectionAnnotation`), as
//! Linkerd's injector does.
//!
//! The same rules as the feed's Warning Events ([`crate::feed::events`]):
//! best-effort, never on the admission's path (a bounded queue to one
//! publishing task, dropped when full), every request bounded, failures
//! logged once at `warn` and then at `debug`. Two differences, which is why
//! this is not that publisher: these Events are `Normal` as well as
//! `Warning`, and deduplication is by time window rather than by
//! `resourceVersion`: a Deployment scaled to 50 replicas gets one
//! `InjectionSkipped` per window, not 50, and a recreated bare pod of the
//! same name gets its Event again once the window has passed.

use crate::feed::events::{publish_each, truncate_note, QUEUE_CAPACITY};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType};
use kube::Client;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// `action` of every injector Event.
pub const ACTION: &str = "Inject";
/// An identical Event (same object, type, reason, note) is published at
/// most once per this window.
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(600);
/// How many recent Events are remembered for deduplication.
pub const DEDUPE_CAPACITY: usize = 4096;

/// Reason of the Event for a pod that was not injected (Linkerd's name).
pub const REASON_SKIPPED: &str = "InjectionSkipped";
/// Reason of the Event for a pod that was injected (Linkerd's name).
pub const REASON_INJECTED: &str = "Injected";
/// Reason of the Warning for a `config.linkerd.io/*` value that was
/// replaced by its default.
pub const REASON_INVALID_ANNOTATION: &str = "InvalidInjectionAnnotation";

/// One Event to publish.
#[derive(Clone, Debug, PartialEq)]
pub struct InjectEvent {
    /// The workload (or bare pod) the Event is about.
    pub regarding: ObjectReference,
    /// `Normal` or `Warning`.
    pub warning: bool,
    /// PascalCase reason, e.g. [`REASON_SKIPPED`].
    pub reason: &'static str,
    /// Human-readable detail, cut to the API server's limit.
    pub note: String,
}

// === impl InjectEvent ===

impl InjectEvent {
    /// An Event with its note cut to the API server's limit.
    pub fn new(
        regarding: ObjectReference,
        warning: bool,
        reason: &'static str,
        note: &str,
    ) -> Self {
        Self {
            regarding,
            warning,
            reason,
            note: truncate_note(note),
        }
    }

    fn fingerprint(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let r = &self.regarding;
        (&r.kind, &r.namespace, &r.name, &r.uid).hash(&mut h);
        (self.warning, self.reason, &self.note).hash(&mut h);
        h.finish()
    }
}

/// Recently published Events, forgotten after [`DEDUPE_WINDOW`] or when
/// more than the capacity are remembered (oldest first).
#[derive(Debug)]
struct Recent {
    capacity: usize,
    window: Duration,
    at: HashMap<u64, Instant>,
    order: VecDeque<(u64, Instant)>,
}

impl Recent {
    fn new(capacity: usize, window: Duration) -> Self {
        Self {
            capacity: capacity.max(1),
            window,
            at: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Records `fp` now; `false` if it was seen within the window.
    fn insert(&mut self, fp: u64, now: Instant) -> bool {
        while let Some(&(old, t)) = self.order.front() {
            if now.duration_since(t) < self.window && self.order.len() < self.capacity {
                break;
            }
            self.order.pop_front();
            if self.at.get(&old) == Some(&t) {
                self.at.remove(&old);
            }
        }
        if self.at.contains_key(&fp) {
            return false;
        }
        self.at.insert(fp, now);
        self.order.push_back((fp, now));
        true
    }

    fn forget(&mut self, fp: u64) {
        self.at.remove(&fp);
    }
}

/// Queues injector Events; cheap to clone, never blocks.
#[derive(Clone, Debug)]
pub struct InjectEvents {
    tx: mpsc::Sender<InjectEvent>,
    recent: Arc<Mutex<Recent>>,
    warned_full: Arc<AtomicBool>,
}

// === impl InjectEvents ===

impl InjectEvents {
    /// Starts the publishing task (events.k8s.io/v1); must run inside a
    /// Tokio runtime.
    pub fn start(client: Client) -> Self {
        let (events, rx) = Self::channel(QUEUE_CAPACITY, DEDUPE_CAPACITY, DEDUPE_WINDOW);
        tokio::spawn(publish(client, rx));
        events
    }

    /// A handle whose Events arrive on the returned receiver (tests read it).
    pub fn channel(
        queue: usize,
        dedupe: usize,
        window: Duration,
    ) -> (Self, mpsc::Receiver<InjectEvent>) {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let events = Self {
            tx,
            recent: Arc::new(Mutex::new(Recent::new(dedupe, window))),
            warned_full: Arc::new(AtomicBool::new(false)),
        };
        (events, rx)
    }

    /// Queues `e` unless the same Event was queued within the window.
    /// Returns whether it was queued.
    pub fn send(&self, e: InjectEvent) -> bool {
        let fp = e.fingerprint();
        let mut recent = lock(&self.recent);
        if !recent.insert(fp, Instant::now()) {
            return false;
        }
        match self.tx.try_send(e) {
            Ok(()) => true,
            Err(error) => {
                recent.forget(fp);
                if !self.warned_full.swap(true, Ordering::Relaxed) {
                    tracing::warn!("injector Event queue full; dropping Events (the log has them)");
                } else {
                    tracing::debug!(%error, "injector Event dropped");
                }
                false
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The publishing task for the injector's Events (the controller's shared
/// loop; deduplication happened in [`InjectEvents::send`]).
async fn publish(client: Client, rx: mpsc::Receiver<InjectEvent>) {
    publish_each(client, rx, "an injector Event", |e| {
        let event = Event {
            type_: if e.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: e.reason.to_owned(),
            note: Some(e.note),
            action: ACTION.to_owned(),
            secondary: None,
        };
        (event, e.regarding)
    })
    .await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ev(name: &str, note: &str) -> InjectEvent {
        InjectEvent::new(
            ObjectReference {
                kind: Some("Deployment".into()),
                namespace: Some("shop".into()),
                name: Some(name.into()),
                ..ObjectReference::default()
            },
            false,
            REASON_SKIPPED,
            note,
        )
    }

    #[tokio::test]
    async fn identical_events_are_sent_once_per_window() {
        let (events, mut rx) = InjectEvents::channel(8, 16, Duration::from_secs(600));
        assert!(events.send(ev("web", "hostNetwork")));
        assert!(!events.send(ev("web", "hostNetwork")));
        assert!(events.send(ev("web", "other reason")));
        assert!(events.send(ev("api", "hostNetwork")));
        let mut got = Vec::new();
        while let Ok(e) = rx.try_recv() {
            got.push(e.regarding.name.unwrap());
        }
        assert_eq!(got, ["web", "web", "api"]);
    }

    #[test]
    fn the_window_and_the_capacity_forget_old_events() {
        let t0 = Instant::now();
        let mut r = Recent::new(2, Duration::from_secs(10));
        assert!(r.insert(1, t0));
        assert!(!r.insert(1, t0 + Duration::from_secs(5)));
        assert!(r.insert(1, t0 + Duration::from_secs(11)), "window passed");
        assert!(r.insert(2, t0 + Duration::from_secs(12)));
        assert!(r.insert(3, t0 + Duration::from_secs(12)));
        assert!(r.order.len() <= 2 && r.at.len() <= 2, "{r:?}");
    }

    #[test]
    fn a_full_queue_drops_without_remembering() {
        let (events, _rx) = InjectEvents::channel(1, 16, Duration::from_secs(600));
        assert!(events.send(ev("a", "x")));
        assert!(!events.send(ev("b", "x")), "queue full");
        drop(_rx);
    }
}
