//! What the injector asks the API server about a pod: its namespace's
//! annotations and the workload that owns it.
//!
//! A pod's `ownerReferences` name its direct controller, which for the
//! common workloads is an intermediate object: a Deployment's pods belong
//! to a ReplicaSet, a CronJob's to a Job. Proxies label their metrics (and
//! `weft stat deploy` groups) by the workload an operator wrote, so the
//! injector follows one more step: ReplicaSet → its Deployment, Job → its
//! CronJob. Anything else is reported as its own kind, lower-cased
//! (`statefulset/db`, `daemonset/agent`), and a pod without an owner has
//! none.
//!
//! Both lookups are cached briefly and boundedly ([`TtlCache`]): a rollout
//! creates many pods of one ReplicaSet within seconds, and each would
//! otherwise cost the API server two extra GETs.

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Api, Client};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use weft_inject::Owner;

/// How long a namespace's annotations are reused. Short, so annotating a
/// namespace takes effect for pods created a moment later.
pub const NAMESPACE_TTL: Duration = Duration::from_secs(2);
/// How long a ReplicaSet's or Job's owner is reused (owners do not change
/// in practice).
pub const OWNER_TTL: Duration = Duration::from_secs(60);
/// Entries each cache holds at most.
pub const CACHE_CAPACITY: usize = 1024;
/// Bound on one lookup: the API server gives the whole webhook call
/// `timeoutSeconds` (10 s by default), and the injector must answer in time.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(4);

/// A pod's workload: how its metrics label it, and where its Events go.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedOwner {
    /// Kind (lower-case) and name for [`weft_inject::PodContext::owner`].
    pub owner: Owner,
    /// The workload object itself, with its uid, for Events.
    pub reference: ObjectReference,
}

/// The cluster reads the injector needs; a trait so the admission logic is
/// tested without an API server.
pub trait Lookup: Send + Sync + 'static {
    /// The annotations of namespace `name` (empty when it has none).
    fn namespace_annotations(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<BTreeMap<String, String>, String>> + Send;

    /// The workload owning a pod of `namespace` with `meta`'s
    /// `ownerReferences`, or `None` for a bare pod.
    fn owner(
        &self,
        namespace: &str,
        meta: &ObjectMeta,
    ) -> impl Future<Output = Result<Option<ResolvedOwner>, String>> + Send;
}

/// [`Lookup`] through the Kubernetes API (namespaces get; replicasets and
/// jobs get).
#[derive(Clone)]
pub struct KubeLookup {
    client: Client,
    namespaces: Arc<TtlCache<String, BTreeMap<String, String>>>,
    owners: Arc<TtlCache<(String, String, String), Option<OwnerReference>>>,
}

// === impl KubeLookup ===

impl KubeLookup {
    /// Lookups through `client`, with empty caches.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            namespaces: Arc::new(TtlCache::new(CACHE_CAPACITY, NAMESPACE_TTL)),
            owners: Arc::new(TtlCache::new(CACHE_CAPACITY, OWNER_TTL)),
        }
    }

    /// The controlling owner of `kind` `namespace/name` (a ReplicaSet or
    /// Job), cached.
    async fn owner_of(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<OwnerReference>, String> {
        let key = (kind.to_owned(), namespace.to_owned(), name.to_owned());
        if let Some(hit) = self.owners.get(&key) {
            return Ok(hit);
        }
        let meta = match kind {
            "ReplicaSet" => {
                let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), namespace);
                bounded(api.get(name)).await?.metadata
            }
            _ => {
                let api: Api<Job> = Api::namespaced(self.client.clone(), namespace);
                bounded(api.get(name)).await?.metadata
            }
        };
        let owner = controller_of(&meta).cloned();
        self.owners.insert(key, owner.clone());
        Ok(owner)
    }
}

impl Lookup for KubeLookup {
    async fn namespace_annotations(&self, name: &str) -> Result<BTreeMap<String, String>, String> {
        if let Some(hit) = self.namespaces.get(&name.to_owned()) {
            return Ok(hit);
        }
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns = bounded(api.get(name)).await?;
        let annotations = ns.metadata.annotations.unwrap_or_default();
        self.namespaces.insert(name.to_owned(), annotations.clone());
        Ok(annotations)
    }

    async fn owner(
        &self,
        namespace: &str,
        meta: &ObjectMeta,
    ) -> Result<Option<ResolvedOwner>, String> {
        let Some(direct) = controller_of(meta) else {
            return Ok(None);
        };
        // One step up for the two kinds that are usually intermediates.
        let parent_kind = match (direct.kind.as_str(), direct.api_version.as_str()) {
            ("ReplicaSet", "apps/v1") => Some("Deployment"),
            ("Job", "batch/v1") => Some("CronJob"),
            _ => None,
        };
        if let Some(parent_kind) = parent_kind {
            let parent = self
                .owner_of(&direct.kind, namespace, &direct.name)
                .await
                .map_err(|e| format!("{} {namespace}/{}: {e}", direct.kind, direct.name))?;
            if let Some(parent) = parent.filter(|p| p.kind == parent_kind) {
                return Ok(Some(resolved(namespace, &parent)));
            }
        }
        Ok(Some(resolved(namespace, direct)))
    }
}

/// The owner reference with `controller: true`, else the first one.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    let refs = meta.owner_references.as_deref().unwrap_or_default();
    refs.iter()
        .find(|r| r.controller == Some(true))
        .or_else(|| refs.first())
}

/// The owner as the injector reports it.
pub fn resolved(namespace: &str, r: &OwnerReference) -> ResolvedOwner {
    ResolvedOwner {
        owner: Owner {
            kind: r.kind.to_lowercase(),
            name: r.name.clone(),
        },
        reference: ObjectReference {
            api_version: Some(r.api_version.clone()),
            kind: Some(r.kind.clone()),
            name: Some(r.name.clone()),
            namespace: Some(namespace.to_owned()),
            uid: Some(r.uid.clone()),
            resource_version: None,
            field_path: None,
        },
    }
}

async fn bounded<T>(fut: impl Future<Output = Result<T, kube::Error>>) -> Result<T, String> {
    match tokio::time::timeout(LOOKUP_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {LOOKUP_TIMEOUT:?}")),
    }
}

/// A small map whose entries expire after `ttl`, holding at most
/// `capacity` of them (the oldest go first). A lock, not a lock-free
/// structure: every operation is a few map accesses.
#[derive(Debug)]
pub struct TtlCache<K, V> {
    capacity: usize,
    ttl: Duration,
    inner: Mutex<Entries<K, V>>,
}

/// The values with their insertion time, and keys in insertion order.
#[derive(Debug)]
struct Entries<K, V> {
    map: HashMap<K, (Instant, V)>,
    order: VecDeque<(K, Instant)>,
}

// === impl TtlCache ===

impl<K: Clone + Eq + Hash, V: Clone> TtlCache<K, V> {
    /// An empty cache.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            capacity: capacity.max(1),
            ttl,
            inner: Mutex::new(Entries {
                map: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }

    /// The value of `key` if it was inserted less than `ttl` ago.
    pub fn get(&self, key: &K) -> Option<V> {
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (at, v) = guard.map.get(key)?;
        (at.elapsed() < self.ttl).then(|| v.clone())
    }

    /// Stores `value` for `key` now, evicting expired and excess entries.
    pub fn insert(&self, key: K, value: V) {
        let now = Instant::now();
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Entries { map, order } = &mut *guard;
        while let Some((old, at)) = order.front() {
            if now.duration_since(*at) < self.ttl && order.len() < self.capacity {
                break;
            }
            if map.get(old).is_some_and(|(t, _)| t == at) {
                map.remove(old);
            }
            order.pop_front();
        }
        map.insert(key.clone(), (now, value));
        order.push_back((key, now));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn owner_ref(kind: &str, name: &str, controller: Option<bool>) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            controller,
            block_owner_deletion: None,
        }
    }

    #[test]
    fn the_controlling_owner_wins() {
        let meta = ObjectMeta {
            owner_references: Some(vec![
                owner_ref("ConfigMap", "x", None),
                owner_ref("StatefulSet", "db", Some(true)),
            ]),
            ..ObjectMeta::default()
        };
        let r = resolved("shop", controller_of(&meta).unwrap());
        assert_eq!(r.owner.kind, "statefulset");
        assert_eq!(r.owner.name, "db");
        assert_eq!(r.reference.uid.as_deref(), Some("uid-db"));
        assert_eq!(r.reference.namespace.as_deref(), Some("shop"));
        assert!(controller_of(&ObjectMeta::default()).is_none());
    }

    #[tokio::test]
    async fn cache_entries_expire_and_are_bounded() {
        let c = TtlCache::new(2, Duration::from_millis(50));
        c.insert("a", 1);
        assert_eq!(c.get(&"a"), Some(1));
        c.insert("b", 2);
        c.insert("c", 3);
        assert_eq!(c.get(&"a"), None, "evicted past capacity");
        assert_eq!(c.get(&"c"), Some(3));
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(c.get(&"c"), None, "expired");
        let guard = c.inner.lock().unwrap();
        assert!(guard.map.len() <= 2 && guard.order.len() <= 2);
    }
}
