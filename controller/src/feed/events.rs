//! Kubernetes Events for mesh objects the controller cannot apply as
//! written, so `kubectl get events` and `kubectl describe trafficsplit`
//! show what the controller log says.
//!
//! Two sources of problems:
//!
//! - **Rejected objects**: the Kubernetes feed ([`super::kube`]) rejects a
//!   ServiceProfile, TrafficSplit or HTTPRouteGroup that fails validation
//!   ([`super::check`]: all-zero or negative weights, a bad regex, …) and
//!   queues a `Warning` Event `Invalid<Kind>` regarding it.
//! - **Unresolvable TrafficSplits** ([`check_splits`]): a valid split whose
//!   root Service or backend Service does not exist, whose backend is the
//!   root Service itself (written as its FQDN, which validation alone
//!   cannot see), or whose `matches` name an HTTPRouteGroup that does not
//!   exist. Found by evaluating every stored split against each store
//!   snapshot ([`split_problems`]) with the rules the translation uses
//!   ([`profile::names_service`], [`policy::rule_matches`]).
//!
//! Publishing is best-effort and never on a watch loop's path: [`Events`]
//! deduplicates and hands each Event to one spawned task through a bounded
//! channel, dropping it when the channel is full; a failed publish is
//! logged (at `warn` the first time, then at `debug` until one succeeds)
//! and not retried. The file feed has no cluster: [`check_splits`] then
//! only logs.

use crate::destination::authority::Target;
use crate::destination::policy::{self, RuleError};
use crate::destination::profile;
use crate::store::{Kind, ObjectKey, Snapshot, Store};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Client;
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use weft_smi_crds::Split;

/// `reportingController` of every Event (Kubernetes requires a qualified
/// name; this is the controller's Deployment name).
pub const REPORTING_CONTROLLER: &str = "weft-controller";
/// Kubernetes refuses an Event whose note is longer than this (bytes).
pub const NOTE_LIMIT: usize = 1024;
/// Events waiting for the publishing task; more are dropped (they are in
/// the log anyway), so a slow or unreachable API server never holds up a
/// watch loop or grows memory.
pub const QUEUE_CAPACITY: usize = 256;
/// How many published Events are remembered for deduplication; the oldest
/// are forgotten first.
pub const DEDUPE_CAPACITY: usize = 4096;
/// Bound on one Event request, so one hung request cannot stall the queue.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a TrafficSplit problem must last before it is reported: the
/// watchers of different kinds deliver one `kubectl apply -f` (a split and
/// its Services) in no fixed order, so a split may briefly precede its
/// backends.
pub const REPORT_AFTER: Duration = Duration::from_secs(2);
/// Minimum spacing of split evaluations: store changes come in bursts
/// (every Pod and Endpoints update is one), and one evaluation per burst
/// is enough.
const COALESCE: Duration = Duration::from_millis(250);

/// `action` of Events about objects the feed rejected.
pub const ACTION_REJECT: &str = "Reject";
/// `action` of Events about TrafficSplits that cannot be fully applied.
pub const ACTION_RESOLVE: &str = "Resolve";

/// One `Warning` Event to publish about one object.
#[derive(Clone, Debug, PartialEq)]
pub struct Warning {
    /// The object the Event is about (`regarding`); with its `uid`, so
    /// `kubectl describe` finds the Event.
    pub regarding: ObjectReference,
    /// Short PascalCase reason, e.g. `InvalidTrafficSplit`.
    pub reason: String,
    /// What the controller was doing: [`ACTION_REJECT`] or
    /// [`ACTION_RESOLVE`].
    pub action: &'static str,
    /// The problem with its field paths, at most [`NOTE_LIMIT`] bytes.
    pub note: String,
}

// === impl Warning ===

impl Warning {
    /// A warning with its note cut to [`NOTE_LIMIT`].
    pub fn new(
        regarding: ObjectReference,
        reason: impl Into<String>,
        action: &'static str,
        note: &str,
    ) -> Self {
        Self {
            regarding,
            reason: reason.into(),
            action,
            note: truncate_note(note),
        }
    }

    /// What deduplication compares: the object (its `uid`, or kind and
    /// name without one), its `resourceVersion`, the reason and the note.
    /// A hash, so remembering thousands costs little memory.
    fn fingerprint(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let r = &self.regarding;
        match &r.uid {
            Some(uid) => uid.hash(&mut h),
            None => (&r.kind, &r.namespace, &r.name).hash(&mut h),
        }
        r.resource_version.hash(&mut h);
        self.reason.hash(&mut h);
        self.note.hash(&mut h);
        h.finish()
    }
}

/// `note` cut to at most [`NOTE_LIMIT`] bytes on a character boundary,
/// ending in `…` when cut, because the API server refuses longer notes.
pub fn truncate_note(note: &str) -> String {
    if note.len() <= NOTE_LIMIT {
        return note.to_owned();
    }
    const MARK: &str = "…";
    let mut end = NOTE_LIMIT - MARK.len();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &note[..end])
}

/// A reference to a namespaced object for an Event's `regarding`.
pub fn reference(
    kind: Kind,
    api_version: &str,
    key: &ObjectKey,
    uid: Option<String>,
    resource_version: Option<String>,
) -> ObjectReference {
    ObjectReference {
        api_version: Some(api_version.to_owned()),
        kind: Some(kind.to_string()),
        name: Some(key.name.clone()),
        namespace: Some(key.namespace.clone()),
        uid,
        resource_version,
        field_path: None,
    }
}

/// Remembers which Events were published, so a relist (every object
/// again, same `resourceVersion`) or an unchanged re-apply does not
/// publish them again. Bounded: past `capacity` the oldest are forgotten
/// (at worst one of those is published once more).
#[derive(Debug)]
pub struct Dedupe {
    capacity: usize,
    seen: HashSet<u64>,
    order: VecDeque<u64>,
}

// === impl Dedupe ===

impl Dedupe {
    /// An empty set remembering at most `capacity` Events.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            seen: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// Whether `w` was already recorded.
    pub fn contains(&self, w: &Warning) -> bool {
        self.seen.contains(&w.fingerprint())
    }

    /// Records `w`; `false` if it was already there.
    pub fn insert(&mut self, w: &Warning) -> bool {
        let fp = w.fingerprint();
        if !self.seen.insert(fp) {
            return false;
        }
        self.order.push_back(fp);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }
}

/// What [`Events::warn`] did with a warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queued {
    /// Handed to the publishing task.
    Sent,
    /// Already published (same object, `resourceVersion`, reason, note).
    Duplicate,
    /// The queue was full (or the task gone): dropped, not remembered.
    Dropped,
}

/// Queues Warning Events for publishing; cheap to clone, never blocks.
#[derive(Clone, Debug)]
pub struct Events {
    tx: mpsc::Sender<Warning>,
    dedupe: Arc<Mutex<Dedupe>>,
    warned_full: Arc<AtomicBool>,
}

// === impl Events ===

impl Events {
    /// Starts the publishing task (events.k8s.io/v1 through kube-rs'
    /// [`Recorder`]) and returns its handle. Must run inside a Tokio
    /// runtime.
    pub fn start(client: Client) -> Self {
        let (events, rx) = Self::channel(QUEUE_CAPACITY, DEDUPE_CAPACITY);
        tokio::spawn(publish(client, rx));
        events
    }

    /// A handle whose warnings arrive on the returned receiver (the
    /// publishing task's input; tests read it directly).
    pub fn channel(queue: usize, dedupe: usize) -> (Self, mpsc::Receiver<Warning>) {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let events = Self {
            tx,
            dedupe: Arc::new(Mutex::new(Dedupe::new(dedupe))),
            warned_full: Arc::new(AtomicBool::new(false)),
        };
        (events, rx)
    }

    /// Queues `w` unless the same Event was already published; drops it
    /// when the queue is full. Never waits.
    pub fn warn(&self, w: Warning) -> Queued {
        let mut dedupe = lock(&self.dedupe);
        if dedupe.contains(&w) {
            return Queued::Duplicate;
        }
        let fresh = w.clone();
        match self.tx.try_send(w) {
            Ok(()) => {
                dedupe.insert(&fresh);
                Queued::Sent
            }
            Err(error) => {
                let first = !self.warned_full.swap(true, Ordering::Relaxed);
                if first {
                    tracing::warn!(
                        reason = %fresh.reason,
                        "Kubernetes Event queue full; dropping Events (the log has every problem)"
                    );
                } else {
                    tracing::debug!(reason = %fresh.reason, %error, "Kubernetes Event dropped");
                }
                Queued::Dropped
            }
        }
    }
}

/// The lock, also after a panic elsewhere (the set stays usable).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The publishing task for the feed's Warnings.
async fn publish(client: Client, rx: mpsc::Receiver<Warning>) {
    publish_each(client, rx, "a Kubernetes Event", |w| {
        let event = Event {
            type_: EventType::Warning,
            reason: w.reason.clone(),
            note: Some(w.note.clone()),
            action: w.action.to_owned(),
            secondary: None,
        };
        (event, w.regarding)
    })
    .await;
}

/// Publishes what arrives on `rx`, one request at a time, each bounded by
/// [`PUBLISH_TIMEOUT`]; shared by every Event source of the controller
/// (the feed's Warnings, the injector's Events). The first failure (after
/// start or after a success) is logged at `warn`, the following ones at
/// `debug`; `what` names one Event in those lines (`"a Kubernetes Event"`).
///
/// A fresh Recorder per Event: a Recorder merges repeated Events by
/// object and reason into one series but keeps the first note, which
/// would hide a different problem; deduplication is the senders'.
pub async fn publish_each<T>(
    client: Client,
    mut rx: mpsc::Receiver<T>,
    what: &'static str,
    to_event: impl Fn(T) -> (Event, ObjectReference),
) {
    let reporter = Reporter::from(REPORTING_CONTROLLER);
    let mut failing = false;
    while let Some(item) = rx.recv().await {
        let recorder = Recorder::new(client.clone(), reporter.clone());
        let (event, regarding) = to_event(item);
        let object = format!(
            "{}/{}/{}",
            regarding.kind.as_deref().unwrap_or_default(),
            regarding.namespace.as_deref().unwrap_or_default(),
            regarding.name.as_deref().unwrap_or_default()
        );
        let reason = event.reason.clone();
        let result = tokio::time::timeout(PUBLISH_TIMEOUT, recorder.publish(&event, &regarding))
            .await
            .map_err(|_| format!("no answer within {PUBLISH_TIMEOUT:?}"))
            .and_then(|r| r.map_err(|e| e.to_string()));
        match result {
            Ok(()) => {
                failing = false;
                tracing::debug!(%reason, %object, "published {what}");
            }
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(
                    %reason,
                    %object,
                    %error,
                    "cannot publish {what} (needs events.k8s.io events create/patch); \
                     the problem is only logged; further failures are logged at debug"
                );
            }
            Err(error) => {
                tracing::debug!(%reason, %object, %error, "cannot publish {what}");
            }
        }
    }
}

/// The `regarding` references of the stored TrafficSplits (their `uid` and
/// the `resourceVersion` of the version in the store), which the store's
/// normalized splits do not carry. Kept by the Kubernetes feed's
/// TrafficSplit watcher.
#[derive(Clone, Debug, Default)]
pub struct Refs(Arc<Mutex<HashMap<ObjectKey, ObjectReference>>>);

// === impl Refs ===

impl Refs {
    /// The reference of the stored object `key`.
    pub fn get(&self, key: &ObjectKey) -> Option<ObjectReference> {
        lock(&self.0).get(key).cloned()
    }

    /// Records the reference of the object just stored under `key`.
    pub fn insert(&self, key: ObjectKey, reference: ObjectReference) {
        lock(&self.0).insert(key, reference);
    }

    /// Forgets a deleted object.
    pub fn remove(&self, key: &ObjectKey) {
        lock(&self.0).remove(key);
    }

    /// Replaces every reference (after a relist).
    pub fn replace(&self, all: HashMap<ObjectKey, ObjectReference>) {
        *lock(&self.0) = all;
    }
}

/// Something wrong with a stored (valid) TrafficSplit that only shows
/// against the other objects.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SplitProblem {
    /// `spec.service` names a Service of the split's namespace that does
    /// not exist.
    #[error("spec.service: unknown Service {service}")]
    ServiceNotFound {
        /// `namespace/name` of the missing Service.
        service: ObjectKey,
    },
    /// `spec.service` is neither a Service name nor the FQDN of a Service
    /// of the split's namespace (another namespace or cluster domain), so
    /// the split applies to no Service.
    #[error(
        "spec.service: {service:?} names no Service of namespace {namespace} \
         (write NAME or NAME.{namespace}.svc.CLUSTER_DOMAIN), so the split applies to nothing"
    )]
    ForeignService {
        /// `spec.service` as written.
        service: String,
        /// The split's namespace.
        namespace: String,
    },
    /// A backend Service that does not exist.
    #[error("spec.backends[{index}].service: unknown Service {service}")]
    BackendNotFound {
        /// Index in `spec.backends`.
        index: usize,
        /// `namespace/name` of the missing Service.
        service: ObjectKey,
    },
    /// A backend that is the root Service itself, under another spelling
    /// (e.g. `spec.service` written as the FQDN): validation only catches
    /// equal names.
    #[error(
        "spec.backends[{index}].service: {backend:?} is the split's own root service \
         {root:?} (self-reference)"
    )]
    SelfReference {
        /// Index in `spec.backends`.
        index: usize,
        /// The backend as written.
        backend: String,
        /// `spec.service` as written.
        root: String,
    },
    /// `matches` that cannot be resolved; the outbound policy leaves the
    /// split out (see [`policy::translate`]).
    #[error("{0}; the split is not applied (its requests follow the profile)")]
    Matches(RuleError),
}

// === impl SplitProblem ===

impl SplitProblem {
    /// The Event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ServiceNotFound { .. } | Self::ForeignService { .. } => {
                "TrafficSplitServiceNotFound"
            }
            Self::BackendNotFound { .. } => "TrafficSplitBackendNotFound",
            Self::SelfReference { .. } => "TrafficSplitSelfReference",
            Self::Matches(RuleError::UnknownRouteGroup { .. }) => "TrafficSplitRouteGroupNotFound",
            Self::Matches(RuleError::NoMatches { .. }) => "TrafficSplitNoMatches",
            Self::Matches(_) => "TrafficSplitInvalidMatch",
        }
    }
}

/// Checks one stored split against `snap`: its root and backend Services
/// exist, no backend is the root, and its `matches` resolve. Pure, and
/// built on the translation's own rules ([`profile::names_service`] for
/// which Service a name means, [`policy::rule_matches`] for `matches`).
pub fn check_split(
    snap: &Snapshot,
    key: &ObjectKey,
    split: &Split,
    cluster_domain: &str,
) -> Vec<SplitProblem> {
    let namespace = &key.namespace;
    let mut problems = Vec::new();
    // The root Service's name: the first label of `spec.service`, if the
    // whole of it names that Service the way the translation matches.
    let root = split
        .service
        .split('.')
        .next()
        .map(|name| Target {
            namespace: namespace.clone(),
            service: name.to_owned(),
            port: 0,
        })
        .filter(|t| {
            let fqn = profile::fully_qualified_name(t, cluster_domain);
            profile::names_service(&split.service, t, &fqn)
        });
    match &root {
        Some(t) => {
            let service = ObjectKey::new(namespace, &t.service);
            if !snap.services.contains_key(&service) {
                problems.push(SplitProblem::ServiceNotFound { service });
            }
        }
        None => problems.push(SplitProblem::ForeignService {
            service: split.service.clone(),
            namespace: namespace.clone(),
        }),
    }
    for (index, b) in split.backends.iter().enumerate() {
        let is_root = root.as_ref().is_some_and(|t| {
            let fqn = profile::fully_qualified_name(t, cluster_domain);
            profile::names_service(&b.service, t, &fqn)
        });
        if is_root {
            problems.push(SplitProblem::SelfReference {
                index,
                backend: b.service.clone(),
                root: split.service.clone(),
            });
            continue;
        }
        let service = ObjectKey::new(namespace, &b.service);
        if !snap.services.contains_key(&service) {
            problems.push(SplitProblem::BackendNotFound { index, service });
        }
    }
    if !split.matches.is_empty() {
        if let Err(error) = policy::rule_matches(snap, key, split) {
            problems.push(SplitProblem::Matches(error));
        }
    }
    problems
}

/// [`check_split`] for every stored split, in key order.
pub fn split_problems(snap: &Snapshot, cluster_domain: &str) -> Vec<(ObjectKey, SplitProblem)> {
    snap.traffic_splits
        .iter()
        .flat_map(|(key, split)| {
            check_split(snap, key, split, cluster_domain)
                .into_iter()
                .map(move |p| (key.clone(), p))
        })
        .collect()
}

/// Which problems are current and which were reported, so each is
/// reported once when it has lasted [`REPORT_AFTER`], and again only if it
/// goes away and comes back. Bounded by the store: problems no longer
/// found are forgotten. A problem is identified by its object and its
/// text (`Display`), so one kind of problem type serves every reconciler.
#[derive(Debug, Default)]
pub struct Tracker {
    active: HashMap<(ObjectKey, String), Active>,
}

#[derive(Clone, Copy, Debug)]
struct Active {
    since: Instant,
    reported: bool,
}

// === impl Tracker ===

impl Tracker {
    /// Takes the problems found at `now`; returns those to report now
    /// (present for at least `grace`, not reported yet) and when the next
    /// pending one will be due.
    pub fn observe<P: std::fmt::Display>(
        &mut self,
        now: Instant,
        grace: Duration,
        found: Vec<(ObjectKey, P)>,
    ) -> (Vec<(ObjectKey, P)>, Option<Instant>) {
        let mut old = std::mem::take(&mut self.active);
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        for (key, problem) in found {
            let id = (key, problem.to_string());
            let mut state = old.remove(&id).unwrap_or(Active {
                since: now,
                reported: false,
            });
            if !state.reported {
                let at = state.since + grace;
                if at <= now {
                    state.reported = true;
                    due.push((id.0.clone(), problem));
                } else {
                    next = Some(next.map_or(at, |n| n.min(at)));
                }
            }
            self.active.insert(id, state);
        }
        (due, next)
    }
}

/// Where [`check_splits`] reports besides the log (cluster mode).
#[derive(Clone, Debug)]
pub struct ClusterSink {
    /// The Event queue.
    pub events: Events,
    /// The stored splits' `regarding` references.
    pub refs: Refs,
}

/// The TrafficSplit reconciler: after `start` resolves (the Kubernetes
/// feed's first sync, so a split is not judged before its Services are
/// listed), evaluates every split on each store change ([`split_problems`])
/// and reports each problem once it has lasted [`REPORT_AFTER`]: a `warn`
/// log, and in cluster mode a `Warning` Event regarding the split. Runs
/// until the store is dropped.
pub async fn check_splits(
    store: Store,
    cluster_domain: String,
    sink: Option<ClusterSink>,
    start: impl Future<Output = ()>,
) {
    reconcile(
        store,
        start,
        |snap| split_problems(snap, &cluster_domain),
        |key, problem| report(key, problem, sink.as_ref()),
    )
    .await;
}

/// A reconciler's loop: after `start`, runs `find` on each store snapshot
/// (at most every [`COALESCE`]) and hands each problem to `report` once it
/// has lasted [`REPORT_AFTER`] ([`Tracker`]). Runs until the store is
/// dropped. Shared by the TrafficSplit and access (`super::access`)
/// reconcilers.
pub async fn reconcile<P: std::fmt::Display>(
    store: Store,
    start: impl Future<Output = ()>,
    find: impl Fn(&Snapshot) -> Vec<(ObjectKey, P)>,
    report: impl Fn(&ObjectKey, &P),
) {
    start.await;
    let mut snapshots = store.subscribe();
    drop(store);
    let mut tracker = Tracker::default();
    loop {
        let snap = snapshots.borrow_and_update().clone();
        let found = find(&snap);
        let (due, next) = tracker.observe(Instant::now(), REPORT_AFTER, found);
        for (key, problem) in due {
            report(&key, &problem);
        }
        let deadline = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = snapshots.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = deadline => {}
        }
        tokio::time::sleep(COALESCE).await;
    }
}

/// Logs one split problem and, in cluster mode, queues its Event.
fn report(key: &ObjectKey, problem: &SplitProblem, sink: Option<&ClusterSink>) {
    let reason = problem.reason();
    tracing::warn!(
        kind = %Kind::TrafficSplit,
        object = %key,
        reason = %reason,
        "TrafficSplit {key}: {problem}"
    );
    let Some(sink) = sink else { return };
    let regarding = sink.refs.get(key).unwrap_or_else(|| {
        let api_version = super::kube::custom_api_versions()
            .into_iter()
            .find(|(k, _)| *k == Kind::TrafficSplit)
            .map(|(_, v)| v)
            .unwrap_or_default();
        reference(Kind::TrafficSplit, &api_version, key, None, None)
    });
    let note = problem.to_string();
    sink.events
        .warn(Warning::new(regarding, reason, ACTION_RESOLVE, &note));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    use crate::destination::testing::snapshot as snap;

    fn warning(uid: &str, rv: &str, note: &str) -> Warning {
        let key = ObjectKey::new("shop", "web-split");
        Warning::new(
            reference(
                Kind::TrafficSplit,
                "split.smi-spec.io/v1alpha4",
                &key,
                Some(uid.into()),
                Some(rv.into()),
            ),
            "InvalidTrafficSplit",
            ACTION_REJECT,
            note,
        )
    }

    #[test]
    fn dedupe_is_by_object_version_and_message_and_bounded() {
        let mut d = Dedupe::new(3);
        assert!(d.insert(&warning("u1", "1", "zero")));
        assert!(!d.insert(&warning("u1", "1", "zero")), "same again");
        assert!(d.insert(&warning("u1", "2", "zero")), "new resourceVersion");
        assert!(d.insert(&warning("u1", "2", "negative")), "new message");
        // A recreated object (new uid) with the same version is another.
        assert!(d.insert(&warning("u2", "2", "negative")));
        assert_eq!((d.seen.len(), d.order.len()), (3, 3));
        // The oldest were forgotten; the newest are still known.
        assert!(!d.contains(&warning("u1", "1", "zero")));
        assert!(d.contains(&warning("u2", "2", "negative")));
    }

    #[tokio::test]
    async fn events_queue_dedupes_and_drops_when_full() {
        let (events, mut rx) = Events::channel(1, 16);
        assert_eq!(events.warn(warning("u", "1", "a")), Queued::Sent);
        assert_eq!(events.warn(warning("u", "1", "a")), Queued::Duplicate);
        // The queue holds one: the next is dropped, and not remembered…
        assert_eq!(events.warn(warning("u", "1", "b")), Queued::Dropped);
        assert_eq!(rx.recv().await.unwrap().note, "a");
        // …so it goes through once there is room.
        assert_eq!(events.warn(warning("u", "1", "b")), Queued::Sent);
        assert_eq!(rx.recv().await.unwrap().note, "b");
        drop(rx);
        assert_eq!(events.warn(warning("u", "1", "c")), Queued::Dropped);
    }

    #[test]
    fn notes_are_cut_to_the_kubernetes_limit_on_a_char_boundary() {
        assert_eq!(truncate_note("short"), "short");
        let exact = "x".repeat(NOTE_LIMIT);
        assert_eq!(truncate_note(&exact), exact);
        let long = "é".repeat(NOTE_LIMIT);
        let cut = truncate_note(&long);
        assert!(cut.len() <= NOTE_LIMIT, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert!(cut.starts_with("éé"));
    }

    const SERVICES: &str = "apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: web-v1, namespace: shop}
spec: {ports: [{port: 80}]}
";

    fn split(name: &str, service: &str, backends: &[&str], matches: &[&str]) -> String {
        let backends: Vec<String> = backends
            .iter()
            .map(|b| format!("{{service: {b}, weight: 1}}"))
            .collect();
        let matches: Vec<String> = matches
            .iter()
            .map(|m| format!("{{kind: HTTPRouteGroup, name: {m}}}"))
            .collect();
        format!(
            "---\napiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\n\
             metadata: {{name: {name}, namespace: shop}}\n\
             spec:\n  service: {service}\n  backends: [{}]\n  matches: [{}]\n",
            backends.join(", "),
            matches.join(", ")
        )
    }

    fn problems(yaml: &str) -> Vec<(String, &'static str, String)> {
        let s = snap(yaml);
        split_problems(&s, "cluster.local")
            .into_iter()
            .map(|(k, p)| (k.name, p.reason(), p.to_string()))
            .collect()
    }

    #[test]
    fn a_split_whose_references_resolve_has_no_problem() {
        let yaml = format!(
            "{SERVICES}{}{}",
            split("ok", "web", &["web-v1"], &[]),
            split("fqdn", "web.shop.svc.cluster.local.", &["web-v1"], &[])
        );
        assert_eq!(problems(&yaml), []);
    }

    #[test]
    fn unknown_backends_and_root_are_found() {
        let yaml = format!(
            "{SERVICES}{}{}",
            split("missing", "web", &["web-v1", "web-v3"], &[]),
            split("no-root", "api", &["web-v1"], &[])
        );
        assert_eq!(
            problems(&yaml),
            [
                (
                    "missing".into(),
                    "TrafficSplitBackendNotFound",
                    "spec.backends[1].service: unknown Service shop/web-v3".into()
                ),
                (
                    "no-root".into(),
                    "TrafficSplitServiceNotFound",
                    "spec.service: unknown Service shop/api".into()
                ),
            ]
        );
    }

    #[test]
    fn a_backend_spelling_the_root_differently_is_a_self_reference() {
        let yaml = format!(
            "{SERVICES}{}{}",
            split(
                "by-fqdn",
                "web.shop.svc.cluster.local",
                &["web", "web-v1"],
                &[]
            ),
            split("backend-fqdn", "web", &["web.shop.svc.cluster.local"], &[])
        );
        let got = problems(&yaml);
        assert_eq!(got.len(), 2, "{got:?}");
        for (name, reason, message) in &got {
            assert_eq!(*reason, "TrafficSplitSelfReference", "{name}: {message}");
            assert!(
                message.starts_with("spec.backends[0].service:"),
                "{message}"
            );
        }
        // Another cluster domain or namespace names no Service here.
        let other = format!(
            "{SERVICES}{}",
            split("elsewhere", "web.other.svc.cluster.local", &["web-v1"], &[])
        );
        let got = problems(&other);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].1, "TrafficSplitServiceNotFound");
        assert!(got[0].2.contains("names no Service"), "{}", got[0].2);
    }

    #[test]
    fn unresolvable_matches_are_found_like_the_policy_finds_them() {
        let group = "---\napiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\n\
                     metadata: {name: canary, namespace: shop}\n\
                     spec:\n  matches:\n  - {name: h, headers: [{x-canary: \"true\"}]}\n";
        let yaml = format!(
            "{SERVICES}{group}{}{}",
            split("ab", "web", &["web-v1"], &["canary"]),
            split("ab-missing", "web", &["web-v1"], &["canary", "nope"])
        );
        let got = problems(&yaml);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, "ab-missing");
        assert_eq!(got[0].1, "TrafficSplitRouteGroupNotFound");
        assert!(
            got[0]
                .2
                .starts_with("spec.matches[1]: unknown HTTPRouteGroup shop/nope"),
            "{}",
            got[0].2
        );
        // The policy leaves exactly that split out.
        let s = snap(&yaml);
        let t = policy::translate(
            &s,
            &Target {
                namespace: "shop".into(),
                service: "web".into(),
                port: 80,
            },
            "cluster.local",
        );
        assert_eq!(t.ignored.len(), 1, "{:?}", t.ignored);
        assert!(t.ignored[0].contains("ab-missing"), "{:?}", t.ignored);
    }

    #[test]
    fn tracker_reports_once_after_the_grace_period() {
        let grace = Duration::from_secs(2);
        let key = ObjectKey::new("shop", "s");
        let found = || {
            vec![(
                key.clone(),
                SplitProblem::BackendNotFound {
                    index: 0,
                    service: ObjectKey::new("shop", "b"),
                },
            )]
        };
        let mut t = Tracker::default();
        let t0 = Instant::now();
        let (due, next) = t.observe(t0, grace, found());
        assert!(due.is_empty());
        assert_eq!(next, Some(t0 + grace));
        let (due, _) = t.observe(t0 + Duration::from_secs(1), grace, found());
        assert!(due.is_empty(), "still within the grace period");
        let (due, next) = t.observe(t0 + grace, grace, found());
        assert_eq!(due.len(), 1);
        assert_eq!(next, None);
        let (due, _) = t.observe(t0 + Duration::from_secs(9), grace, found());
        assert!(due.is_empty(), "reported once");
        // A problem that lasted less than the grace period is never
        // reported; one that goes away and comes back is reported again.
        let (due, _) = t.observe(
            t0 + Duration::from_secs(10),
            grace,
            Vec::<(ObjectKey, SplitProblem)>::new(),
        );
        assert!(due.is_empty());
        let (due, _) = t.observe(t0 + Duration::from_secs(11), grace, found());
        assert!(due.is_empty());
        let (due, _) = t.observe(t0 + Duration::from_secs(13), grace, found());
        assert_eq!(due.len(), 1);
    }
}
