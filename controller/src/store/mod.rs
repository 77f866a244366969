//! One in-memory store of the Kubernetes objects the control plane reads.
//!
//! Every feed (the file feed, the kube-rs watcher feed) writes here and
//! every service (destination today) reads from here, so translation never
//! depends on where the objects came from. The store publishes immutable
//! [`Snapshot`]s through a `tokio::sync::watch` channel: a reader takes a
//! consistent view without locks, and a watcher wakes within milliseconds
//! of a change (intermediate snapshots may be skipped, never reordered).
//!
//! Besides the core kinds it holds the mesh's policy objects: ServiceProfiles
//! (v1alpha1 already converted to v1alpha2 by `weft-smi-crds`),
//! TrafficSplits in their normalized [`Split`] form (so the version a split
//! was written in never matters downstream), HTTPRouteGroups, TCPRoutes and
//! TrafficTargets (v1alpha2 converted to v1alpha3), and the Namespaces
//! (whose annotations carry defaults for their pods). Only objects that
//! passed validation are stored: a feed keeps the previous valid version of
//! an object instead of storing an invalid one.
//!
//! Derived indexes are kept up to date on every change, so readers never
//! scan: each Service's [`EndpointSet`] (from its Endpoints object, or
//! merged from its EndpointSlices; see [`endpoint_set`]), the Pods by IP
//! and the Services by ClusterIP (both for `IP:port` authorities), and the
//! TrafficTargets by destination ServiceAccount (for inbound policy).

pub mod endpoint_set;

pub use endpoint_set::EndpointSet;

use k8s_openapi::api::core::v1::{Endpoints, Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::watch;
use weft_smi_crds::access::TrafficTarget;
use weft_smi_crds::specs::v1alpha4::{HTTPRouteGroup, TCPRoute};
use weft_smi_crds::{ServiceProfile, Split};

/// Identifies a namespaced object of one kind: `(namespace, name)`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// The namespace (`default` when the object names none).
    pub namespace: String,
    /// The object's name.
    pub name: String,
}

impl ObjectKey {
    /// A key from its parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of a cluster-scoped object (a Namespace): no namespace.
    pub fn cluster(name: impl Into<String>) -> Self {
        Self::new("", name)
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The kinds the store holds; feeds use it to delete or relist one kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// core/v1 Service.
    Service,
    /// core/v1 Endpoints.
    Endpoints,
    /// discovery.k8s.io/v1 EndpointSlice (the Kubernetes feed, where served).
    EndpointSlice,
    /// core/v1 Pod.
    Pod,
    /// core/v1 ServiceAccount.
    ServiceAccount,
    /// linkerd.io ServiceProfile.
    ServiceProfile,
    /// split.smi-spec.io TrafficSplit (any version).
    TrafficSplit,
    /// specs.smi-spec.io HTTPRouteGroup.
    HttpRouteGroup,
    /// specs.smi-spec.io TCPRoute.
    TcpRoute,
    /// access.smi-spec.io TrafficTarget (any version).
    TrafficTarget,
    /// core/v1 Namespace (cluster-scoped: keyed with an empty namespace).
    Namespace,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Service => "Service",
            Kind::Endpoints => "Endpoints",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Pod => "Pod",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::ServiceProfile => "ServiceProfile",
            Kind::TrafficSplit => "TrafficSplit",
            Kind::HttpRouteGroup => "HTTPRouteGroup",
            Kind::TcpRoute => "TCPRoute",
            Kind::TrafficTarget => "TrafficTarget",
            Kind::Namespace => "Namespace",
        })
    }
}

/// One object of a kind the store holds, as a feed delivers it. Shared
/// (`Arc`) so rebuilding a snapshot never copies object contents.
#[derive(Clone, Debug)]
pub enum Object {
    /// A Service.
    Service(Arc<Service>),
    /// An Endpoints object.
    Endpoints(Arc<Endpoints>),
    /// An EndpointSlice (keyed by its own name, not its Service's).
    EndpointSlice(Arc<EndpointSlice>),
    /// A Pod.
    Pod(Arc<Pod>),
    /// A ServiceAccount.
    ServiceAccount(Arc<ServiceAccount>),
    /// A validated ServiceProfile (storage version).
    ServiceProfile(Arc<ServiceProfile>),
    /// A validated TrafficSplit, normalized (weights in lowest terms).
    TrafficSplit(Arc<Split>),
    /// A validated HTTPRouteGroup (storage version).
    HttpRouteGroup(Arc<HTTPRouteGroup>),
    /// A validated TCPRoute.
    TcpRoute(Arc<TCPRoute>),
    /// A validated TrafficTarget (storage version).
    TrafficTarget(Arc<TrafficTarget>),
    /// A Namespace.
    Namespace(Arc<Namespace>),
}

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::Service(_) => Kind::Service,
            Object::Endpoints(_) => Kind::Endpoints,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::Pod(_) => Kind::Pod,
            Object::ServiceAccount(_) => Kind::ServiceAccount,
            Object::ServiceProfile(_) => Kind::ServiceProfile,
            Object::TrafficSplit(_) => Kind::TrafficSplit,
            Object::HttpRouteGroup(_) => Kind::HttpRouteGroup,
            Object::TcpRoute(_) => Kind::TcpRoute,
            Object::TrafficTarget(_) => Kind::TrafficTarget,
            Object::Namespace(_) => Kind::Namespace,
        }
    }

    /// The object's `(namespace, name)`; `None` when it has no name (such
    /// an object cannot be looked up, so feeds skip it). A Namespace's key
    /// has an empty namespace ([`ObjectKey::cluster`]).
    pub fn key(&self) -> Option<ObjectKey> {
        if let Object::Namespace(o) = self {
            return o
                .metadata
                .name
                .as_deref()
                .filter(|n| !n.is_empty())
                .map(ObjectKey::cluster);
        }
        let (namespace, name) = match self {
            Object::Service(o) => (&o.metadata.namespace, &o.metadata.name),
            Object::Endpoints(o) => (&o.metadata.namespace, &o.metadata.name),
            Object::EndpointSlice(o) => (&o.metadata.namespace, &o.metadata.name),
            Object::Pod(o) => (&o.metadata.namespace, &o.metadata.name),
            Object::ServiceAccount(o) => (&o.metadata.namespace, &o.metadata.name),
            Object::ServiceProfile(o) => (&o.metadata.namespace, &o.metadata.name),
            Object::TrafficSplit(o) => (&o.namespace, &Some(o.name.clone())),
            Object::HttpRouteGroup(o) => (&o.metadata.namespace, &o.metadata.name),
            Object::TcpRoute(o) => (&o.metadata.namespace, &o.metadata.name),
            Object::TrafficTarget(o) => (&o.metadata.namespace, &o.metadata.name),
            Object::Namespace(o) => (&None, &o.metadata.name),
        };
        let name = name.clone().filter(|n| !n.is_empty())?;
        let namespace = namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_owned());
        Some(ObjectKey { namespace, name })
    }
}

/// An immutable view of every object in the store at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Incremented on every change; lets watchers log what they saw.
    pub version: u64,
    /// Services by key.
    pub services: BTreeMap<ObjectKey, Arc<Service>>,
    /// Endpoints by key (same key as their Service).
    pub endpoints: BTreeMap<ObjectKey, Arc<Endpoints>>,
    /// EndpointSlices by their own key.
    pub endpoint_slices: BTreeMap<ObjectKey, Arc<EndpointSlice>>,
    /// Pods by key.
    pub pods: BTreeMap<ObjectKey, Arc<Pod>>,
    /// ServiceAccounts by key.
    pub service_accounts: BTreeMap<ObjectKey, Arc<ServiceAccount>>,
    /// ServiceProfiles by key (Linkerd names them `svc.ns.svc.CLUSTER_DOMAIN`).
    pub service_profiles: BTreeMap<ObjectKey, Arc<ServiceProfile>>,
    /// TrafficSplits by key, normalized.
    pub traffic_splits: BTreeMap<ObjectKey, Arc<Split>>,
    /// HTTPRouteGroups by key.
    pub http_route_groups: BTreeMap<ObjectKey, Arc<HTTPRouteGroup>>,
    /// TCPRoutes by key.
    pub tcp_routes: BTreeMap<ObjectKey, Arc<TCPRoute>>,
    /// TrafficTargets by key (storage version).
    pub traffic_targets: BTreeMap<ObjectKey, Arc<TrafficTarget>>,
    /// Namespaces by name.
    pub namespaces: BTreeMap<String, Arc<Namespace>>,
    /// Derived: each Service's endpoints in the one shape translation reads.
    endpoint_sets: BTreeMap<ObjectKey, Arc<EndpointSet>>,
    /// Derived: the names of each Service's EndpointSlices.
    slices_by_service: BTreeMap<ObjectKey, BTreeSet<String>>,
    /// Derived: Pods by IP (running or pending, not host-network).
    pods_by_ip: BTreeMap<IpAddr, BTreeSet<ObjectKey>>,
    /// Derived: Services by ClusterIP (`spec.clusterIPs`/`clusterIP`;
    /// headless Services have none).
    services_by_cluster_ip: BTreeMap<IpAddr, BTreeSet<ObjectKey>>,
    /// Derived: TrafficTargets (names) by destination `(namespace,
    /// ServiceAccount)`; only those that live in their destination's
    /// namespace (the others govern nothing).
    targets_by_destination: BTreeMap<ObjectKey, BTreeSet<String>>,
}

impl Snapshot {
    /// A snapshot holding `objects`. A later object with the same kind and
    /// key replaces an earlier one; unnamed objects are skipped.
    pub fn from_objects(objects: impl IntoIterator<Item = Object>) -> Self {
        let mut s = Self::default();
        for o in objects {
            s.insert(o);
        }
        s
    }

    /// Inserts (or replaces) one object; returns whether it had a key.
    fn insert(&mut self, object: Object) -> bool {
        let Some(key) = object.key() else {
            return false;
        };
        match object {
            Object::Service(o) => {
                let ips = cluster_ips(&o);
                if let Some(old) = self.services.insert(key.clone(), o) {
                    self.unindex_service(&key, &old);
                }
                for ip in ips {
                    self.services_by_cluster_ip
                        .entry(ip)
                        .or_default()
                        .insert(key.clone());
                }
            }
            Object::Endpoints(o) => {
                self.endpoints.insert(key.clone(), o);
                self.refresh_endpoints(&key);
            }
            Object::EndpointSlice(o) => {
                let old = self
                    .endpoint_slices
                    .insert(key.clone(), o.clone())
                    .and_then(|s| endpoint_set::slice_service(&key.namespace, &s));
                let new = endpoint_set::slice_service(&key.namespace, &o);
                if let Some(old) = old.filter(|s| Some(s) != new.as_ref()) {
                    self.unindex_slice(&old, &key.name);
                }
                if let Some(service) = new {
                    self.slices_by_service
                        .entry(service.clone())
                        .or_default()
                        .insert(key.name.clone());
                    self.refresh_endpoints(&service);
                }
            }
            Object::Pod(o) => {
                let ips = pod_ips(&o);
                if let Some(old) = self.pods.insert(key.clone(), o) {
                    self.unindex_pod(&key, &old);
                }
                for ip in ips {
                    self.pods_by_ip.entry(ip).or_default().insert(key.clone());
                }
            }
            Object::ServiceAccount(o) => {
                self.service_accounts.insert(key, o);
            }
            Object::ServiceProfile(o) => {
                self.service_profiles.insert(key, o);
            }
            Object::TrafficSplit(o) => {
                self.traffic_splits.insert(key, o);
            }
            Object::HttpRouteGroup(o) => {
                self.http_route_groups.insert(key, o);
            }
            Object::TcpRoute(o) => {
                self.tcp_routes.insert(key, o);
            }
            Object::TrafficTarget(o) => {
                let dest = destination(&o);
                if let Some(old) = self.traffic_targets.insert(key.clone(), o) {
                    self.unindex_target(&key, &old);
                }
                if let Some(dest) = dest {
                    self.targets_by_destination
                        .entry(dest)
                        .or_default()
                        .insert(key.name);
                }
            }
            Object::Namespace(o) => {
                self.namespaces.insert(key.name, o);
            }
        }
        true
    }

    /// Removes one object; returns whether it was there.
    fn remove(&mut self, kind: Kind, key: &ObjectKey) -> bool {
        match kind {
            Kind::Service => match self.services.remove(key) {
                Some(svc) => {
                    self.unindex_service(key, &svc);
                    true
                }
                None => false,
            },
            Kind::Endpoints => {
                let found = self.endpoints.remove(key).is_some();
                self.refresh_endpoints(key);
                found
            }
            Kind::EndpointSlice => match self.endpoint_slices.remove(key) {
                Some(slice) => {
                    if let Some(service) = endpoint_set::slice_service(&key.namespace, &slice) {
                        self.unindex_slice(&service, &key.name);
                    }
                    true
                }
                None => false,
            },
            Kind::Pod => match self.pods.remove(key) {
                Some(pod) => {
                    self.unindex_pod(key, &pod);
                    true
                }
                None => false,
            },
            Kind::ServiceAccount => self.service_accounts.remove(key).is_some(),
            Kind::ServiceProfile => self.service_profiles.remove(key).is_some(),
            Kind::TrafficSplit => self.traffic_splits.remove(key).is_some(),
            Kind::HttpRouteGroup => self.http_route_groups.remove(key).is_some(),
            Kind::TcpRoute => self.tcp_routes.remove(key).is_some(),
            Kind::TrafficTarget => match self.traffic_targets.remove(key) {
                Some(tt) => {
                    self.unindex_target(key, &tt);
                    true
                }
                None => false,
            },
            Kind::Namespace => self.namespaces.remove(&key.name).is_some(),
        }
    }

    /// Removes every object of `kind` (before a relist of that kind).
    fn clear(&mut self, kind: Kind) {
        match kind {
            Kind::Service => {
                self.services.clear();
                self.services_by_cluster_ip.clear();
            }
            Kind::Endpoints => {
                let services: Vec<ObjectKey> =
                    std::mem::take(&mut self.endpoints).into_keys().collect();
                for service in services {
                    self.refresh_endpoints(&service);
                }
            }
            Kind::EndpointSlice => {
                self.endpoint_slices.clear();
                let services: Vec<ObjectKey> = std::mem::take(&mut self.slices_by_service)
                    .into_keys()
                    .collect();
                for service in services {
                    self.refresh_endpoints(&service);
                }
            }
            Kind::Pod => {
                self.pods.clear();
                self.pods_by_ip.clear();
            }
            Kind::ServiceAccount => self.service_accounts.clear(),
            Kind::ServiceProfile => self.service_profiles.clear(),
            Kind::TrafficSplit => self.traffic_splits.clear(),
            Kind::HttpRouteGroup => self.http_route_groups.clear(),
            Kind::TcpRoute => self.tcp_routes.clear(),
            Kind::TrafficTarget => {
                self.traffic_targets.clear();
                self.targets_by_destination.clear();
            }
            Kind::Namespace => self.namespaces.clear(),
        }
    }

    /// The stored object of `kind` and `key`, if any: a watcher feed's
    /// "previous valid version" when a new version fails validation.
    pub fn get(&self, kind: Kind, key: &ObjectKey) -> Option<Object> {
        match kind {
            Kind::Service => self.services.get(key).cloned().map(Object::Service),
            Kind::Endpoints => self.endpoints.get(key).cloned().map(Object::Endpoints),
            Kind::EndpointSlice => self
                .endpoint_slices
                .get(key)
                .cloned()
                .map(Object::EndpointSlice),
            Kind::Pod => self.pods.get(key).cloned().map(Object::Pod),
            Kind::ServiceAccount => self
                .service_accounts
                .get(key)
                .cloned()
                .map(Object::ServiceAccount),
            Kind::ServiceProfile => self
                .service_profiles
                .get(key)
                .cloned()
                .map(Object::ServiceProfile),
            Kind::TrafficSplit => self
                .traffic_splits
                .get(key)
                .cloned()
                .map(Object::TrafficSplit),
            Kind::HttpRouteGroup => self
                .http_route_groups
                .get(key)
                .cloned()
                .map(Object::HttpRouteGroup),
            Kind::TcpRoute => self.tcp_routes.get(key).cloned().map(Object::TcpRoute),
            Kind::TrafficTarget => self
                .traffic_targets
                .get(key)
                .cloned()
                .map(Object::TrafficTarget),
            Kind::Namespace => self
                .namespaces
                .get(&key.name)
                .cloned()
                .map(Object::Namespace),
        }
    }

    /// The TrafficTargets whose destination is ServiceAccount
    /// `service_account` of `namespace` and that live in that namespace
    /// (one in another namespace governs nothing), in name order.
    pub fn targets_of(
        &self,
        namespace: &str,
        service_account: &str,
    ) -> impl Iterator<Item = (ObjectKey, &Arc<TrafficTarget>)> + '_ {
        let namespace = namespace.to_owned();
        self.targets_by_destination
            .get(&ObjectKey::new(&namespace, service_account))
            .into_iter()
            .flatten()
            .filter_map(move |name| {
                let key = ObjectKey::new(&namespace, name);
                let tt = self.traffic_targets.get(&key)?;
                Some((key, tt))
            })
    }

    /// The endpoints of Service `service`, from its EndpointSlices when it
    /// has any, else from its Endpoints object; `None` without either.
    pub fn endpoint_set(&self, service: &ObjectKey) -> Option<&Arc<EndpointSet>> {
        self.endpoint_sets.get(service)
    }

    /// The Pods whose IP is `ip` (running or pending ones; host-network
    /// Pods share their node's IP and are left out). Normally at most one.
    pub fn pods_with_ip(&self, ip: IpAddr) -> impl Iterator<Item = (&ObjectKey, &Arc<Pod>)> {
        self.pods_by_ip
            .get(&ip)
            .into_iter()
            .flatten()
            .filter_map(|k| self.pods.get_key_value(k))
    }

    /// The Services whose ClusterIP is `ip` (normally at most one: the API
    /// server allocates each ClusterIP once; a file feed may repeat one).
    pub fn services_with_cluster_ip(&self, ip: IpAddr) -> impl Iterator<Item = &ObjectKey> {
        self.services_by_cluster_ip.get(&ip).into_iter().flatten()
    }

    /// Recomputes the [`EndpointSet`] of `service` from the objects that
    /// list its endpoints: its slices win over an Endpoints object (only
    /// one source is fed at a time; the rule just makes the result
    /// defined).
    fn refresh_endpoints(&mut self, service: &ObjectKey) {
        let slices = self
            .slices_by_service
            .get(service)
            .filter(|names| !names.is_empty());
        let set = match (slices, self.endpoints.get(service)) {
            (Some(names), _) => EndpointSet::from_slices(
                &service.namespace,
                names.iter().filter_map(|n| {
                    self.endpoint_slices
                        .get(&ObjectKey::new(&service.namespace, n))
                        .map(|s| &**s)
                }),
            ),
            (None, Some(eps)) => EndpointSet::from_endpoints(&service.namespace, eps),
            (None, None) => {
                self.endpoint_sets.remove(service);
                return;
            }
        };
        self.endpoint_sets.insert(service.clone(), Arc::new(set));
    }

    fn unindex_slice(&mut self, service: &ObjectKey, name: &str) {
        if let Some(names) = self.slices_by_service.get_mut(service) {
            names.remove(name);
            if names.is_empty() {
                self.slices_by_service.remove(service);
            }
        }
        self.refresh_endpoints(service);
    }

    fn unindex_service(&mut self, key: &ObjectKey, svc: &Service) {
        for ip in cluster_ips(svc) {
            if let Some(keys) = self.services_by_cluster_ip.get_mut(&ip) {
                keys.remove(key);
                if keys.is_empty() {
                    self.services_by_cluster_ip.remove(&ip);
                }
            }
        }
    }

    fn unindex_target(&mut self, key: &ObjectKey, tt: &TrafficTarget) {
        if let Some(dest) = destination(tt) {
            if let Some(names) = self.targets_by_destination.get_mut(&dest) {
                names.remove(&key.name);
                if names.is_empty() {
                    self.targets_by_destination.remove(&dest);
                }
            }
        }
    }

    fn unindex_pod(&mut self, key: &ObjectKey, pod: &Pod) {
        for ip in pod_ips(pod) {
            if let Some(keys) = self.pods_by_ip.get_mut(&ip) {
                keys.remove(key);
                if keys.is_empty() {
                    self.pods_by_ip.remove(&ip);
                }
            }
        }
    }

    /// How many objects of each kind: `(services, services with endpoints,
    /// pods, service accounts)`.
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        (
            self.services.len(),
            self.endpoint_sets.len(),
            self.pods.len(),
            self.service_accounts.len(),
        )
    }

    /// How many policy objects: `(service profiles, traffic splits, HTTP route groups)`.
    pub fn policy_counts(&self) -> (usize, usize, usize) {
        (
            self.service_profiles.len(),
            self.traffic_splits.len(),
            self.http_route_groups.len(),
        )
    }

    /// How many access objects: `(traffic targets, TCP routes, namespaces)`.
    pub fn access_counts(&self) -> (usize, usize, usize) {
        (
            self.traffic_targets.len(),
            self.tcp_routes.len(),
            self.namespaces.len(),
        )
    }
}

/// The `(namespace, ServiceAccount)` a TrafficTarget governs; `None` when
/// its destination is in another namespace than its own (ignored: see
/// docs/policy.md).
fn destination(tt: &TrafficTarget) -> Option<ObjectKey> {
    let own = tt.own_namespace();
    (tt.destination_namespace() == own).then(|| ObjectKey::new(own, &tt.spec.destination.name))
}

/// The IPs a Pod answers on for `IP:port` authorities: `status.podIPs`
/// (and `podIP`), unless the Pod uses the host network (its IP is the
/// node's, shared by many Pods) or has finished (its IP may be reused).
fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    if pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
    {
        return Vec::new();
    }
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return Vec::new();
    }
    let mut ips: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.as_str())
        .chain(status.pod_ip.as_deref())
        .filter_map(|ip| ip.parse().ok())
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

/// A Service's ClusterIPs: `spec.clusterIPs` (dual-stack) and
/// `spec.clusterIP`; `None` (headless) and empty values are no address.
fn cluster_ips(svc: &Service) -> Vec<IpAddr> {
    let Some(spec) = svc.spec.as_ref() else {
        return Vec::new();
    };
    let mut ips: Vec<IpAddr> = spec
        .cluster_ips
        .iter()
        .flatten()
        .map(String::as_str)
        .chain(spec.cluster_ip.as_deref())
        .filter_map(|ip| ip.parse().ok())
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

/// The shared store: cheap to clone, every clone sees the same objects.
#[derive(Clone, Debug)]
pub struct Store {
    tx: Arc<watch::Sender<Arc<Snapshot>>>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        let (tx, _) = watch::channel(Arc::new(Snapshot::default()));
        Self { tx: Arc::new(tx) }
    }

    /// The current objects.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.tx.borrow().clone()
    }

    /// A receiver that is notified whenever the contents change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    /// Replaces every object at once (the file feed after a reload, or a
    /// watcher feed after a full relist): readers never see a half-applied
    /// reload.
    pub fn replace_all(&self, objects: impl IntoIterator<Item = Object>) {
        let mut next = Snapshot::from_objects(objects);
        self.tx.send_modify(|cur| {
            next.version = cur.version + 1;
            *cur = Arc::new(next);
        });
    }

    /// Replaces every object of one kind at once (a watcher's relist:
    /// objects it no longer lists are gone), leaving the other kinds
    /// alone, so each kind's watcher can resync on its own. Objects of
    /// other kinds in `objects` are ignored.
    pub fn replace_kind(&self, kind: Kind, objects: impl IntoIterator<Item = Object>) {
        self.tx.send_modify(|cur| {
            let snap = Arc::make_mut(cur);
            snap.clear(kind);
            for o in objects.into_iter().filter(|o| o.kind() == kind) {
                snap.insert(o);
            }
            snap.version += 1;
        });
    }

    /// Inserts or replaces one object (a watcher's `Apply` event).
    pub fn upsert(&self, object: Object) {
        self.tx.send_if_modified(|cur| {
            let snap = Arc::make_mut(cur);
            let changed = snap.insert(object);
            if changed {
                snap.version += 1;
            }
            changed
        });
    }

    /// Removes one object (a watcher's `Delete` event).
    pub fn remove(&self, kind: Kind, key: &ObjectKey) {
        self.tx.send_if_modified(|cur| {
            if !Self::contains(cur, kind, key) {
                return false;
            }
            let snap = Arc::make_mut(cur);
            snap.remove(kind, key);
            snap.version += 1;
            true
        });
    }

    fn contains(s: &Snapshot, kind: Kind, key: &ObjectKey) -> bool {
        match kind {
            Kind::Service => s.services.contains_key(key),
            Kind::Endpoints => s.endpoints.contains_key(key),
            Kind::EndpointSlice => s.endpoint_slices.contains_key(key),
            Kind::Pod => s.pods.contains_key(key),
            Kind::ServiceAccount => s.service_accounts.contains_key(key),
            Kind::ServiceProfile => s.service_profiles.contains_key(key),
            Kind::TrafficSplit => s.traffic_splits.contains_key(key),
            Kind::HttpRouteGroup => s.http_route_groups.contains_key(key),
            Kind::TcpRoute => s.tcp_routes.contains_key(key),
            Kind::TrafficTarget => s.traffic_targets.contains_key(key),
            Kind::Namespace => s.namespaces.contains_key(&key.name),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn svc(ns: Option<&str>, name: &str) -> Object {
        Object::Service(Arc::new(Service {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: ns.map(str::to_owned),
                ..Default::default()
            },
            ..Default::default()
        }))
    }

    #[tokio::test]
    async fn watchers_see_replace_upsert_and_remove() {
        let store = Store::new();
        let mut rx = store.subscribe();
        store.replace_all([svc(Some("shop"), "web"), svc(None, "api")]);
        rx.changed().await.unwrap();
        let s = rx.borrow_and_update().clone();
        assert_eq!(s.version, 1);
        assert!(s.services.contains_key(&ObjectKey::new("shop", "web")));
        assert!(s.services.contains_key(&ObjectKey::new("default", "api")));

        store.upsert(svc(Some("shop"), "db"));
        rx.changed().await.unwrap();
        assert_eq!(rx.borrow_and_update().services.len(), 3);

        store.remove(Kind::Service, &ObjectKey::new("shop", "nope"));
        assert!(!rx.has_changed().unwrap());
        store.remove(Kind::Service, &ObjectKey::new("shop", "db"));
        rx.changed().await.unwrap();
        assert_eq!(rx.borrow_and_update().services.len(), 2);
        // The first snapshot a reader took is unchanged.
        assert_eq!(s.services.len(), 2);
        assert_eq!(s.version, 1);
    }

    #[test]
    fn replace_kind_relists_one_kind_only() {
        let store = Store::new();
        let sa = Object::ServiceAccount(Arc::new(ServiceAccount {
            metadata: ObjectMeta {
                name: Some("web".to_owned()),
                namespace: Some("shop".to_owned()),
                ..Default::default()
            },
            ..Default::default()
        }));
        store.replace_all([svc(Some("shop"), "web"), svc(Some("shop"), "old"), sa]);
        store.replace_kind(
            Kind::Service,
            [svc(Some("shop"), "new"), svc(Some("shop"), "web")],
        );
        let snap = store.snapshot();
        let names: Vec<_> = snap.services.keys().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["new", "web"]);
        assert_eq!(snap.service_accounts.len(), 1);
        assert!(snap
            .get(Kind::ServiceAccount, &ObjectKey::new("shop", "web"))
            .is_some());
        assert!(snap
            .get(Kind::Service, &ObjectKey::new("shop", "old"))
            .is_none());
    }

    fn svc_ip(name: &str, spec: serde_json::Value) -> Object {
        let s: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "shop"},
            "spec": spec,
        }))
        .unwrap();
        Object::Service(Arc::new(s))
    }

    #[test]
    fn services_are_indexed_by_cluster_ip() {
        let store = Store::new();
        let web = ObjectKey::new("shop", "web");
        let at = |snap: &Snapshot, ip: &str| -> Vec<String> {
            snap.services_with_cluster_ip(ip.parse().unwrap())
                .map(ObjectKey::to_string)
                .collect()
        };
        store.replace_all([
            svc_ip(
                "web",
                serde_json::json!({"clusterIP": "10.96.0.10",
                                   "clusterIPs": ["10.96.0.10", "fd00::10"]}),
            ),
            svc_ip("headless", serde_json::json!({"clusterIP": "None"})),
        ]);
        let snap = store.snapshot();
        assert_eq!(at(&snap, "10.96.0.10"), ["shop/web"]);
        assert_eq!(at(&snap, "fd00::10"), ["shop/web"]);
        assert_eq!(snap.services_by_cluster_ip.len(), 2);
        // A new version with another IP moves the index; removal clears it.
        store.upsert(svc_ip(
            "web",
            serde_json::json!({"clusterIP": "10.96.0.11"}),
        ));
        let snap = store.snapshot();
        assert!(at(&snap, "10.96.0.10").is_empty());
        assert_eq!(at(&snap, "10.96.0.11"), ["shop/web"]);
        store.remove(Kind::Service, &web);
        assert!(store.snapshot().services_by_cluster_ip.is_empty());
        store.upsert(svc_ip(
            "web",
            serde_json::json!({"clusterIP": "10.96.0.12"}),
        ));
        store.replace_kind(Kind::Service, []);
        assert!(store.snapshot().services_by_cluster_ip.is_empty());
    }

    fn slice(name: &str, service: &str, ip: &str) -> Object {
        let s: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "shop",
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
            "ports": [{"name": "http", "port": 8080}]
        }))
        .unwrap();
        Object::EndpointSlice(Arc::new(s))
    }

    fn ips(snap: &Snapshot, service: &str) -> Vec<String> {
        snap.endpoint_set(&ObjectKey::new("shop", service))
            .map(|set| {
                set.groups
                    .iter()
                    .flat_map(|g| g.addresses.iter().map(|a| a.ip.to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn slices_are_merged_per_service_and_follow_every_change() {
        let store = Store::new();
        store.replace_kind(
            Kind::EndpointSlice,
            [
                slice("web-a", "web", "10.1.0.1"),
                slice("web-b", "web", "10.1.0.2"),
                slice("api-a", "api", "10.1.0.9"),
            ],
        );
        assert_eq!(ips(&store.snapshot(), "web"), ["10.1.0.1", "10.1.0.2"]);
        // A slice changes Service (relabelled): it leaves the old one.
        store.upsert(slice("web-b", "api", "10.1.0.3"));
        let snap = store.snapshot();
        assert_eq!(ips(&snap, "web"), ["10.1.0.1"]);
        assert_eq!(ips(&snap, "api"), ["10.1.0.9", "10.1.0.3"]);
        store.remove(Kind::EndpointSlice, &ObjectKey::new("shop", "web-a"));
        assert!(store
            .snapshot()
            .endpoint_set(&ObjectKey::new("shop", "web"))
            .is_none());
        // A relist drops what it no longer lists.
        store.replace_kind(Kind::EndpointSlice, [slice("web-c", "web", "10.1.0.4")]);
        let snap = store.snapshot();
        assert_eq!(ips(&snap, "web"), ["10.1.0.4"]);
        assert!(snap.endpoint_set(&ObjectKey::new("shop", "api")).is_none());
        assert_eq!(snap.counts().1, 1);
    }

    fn pod(name: &str, ip: Option<&str>, phase: &str, host_network: bool) -> Object {
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"containers": [], "hostNetwork": host_network},
            "status": {"phase": phase, "podIP": ip, "podIPs": ip.map(|ip| vec![serde_json::json!({"ip": ip})])}
        }))
        .unwrap();
        Object::Pod(Arc::new(p))
    }

    #[test]
    fn pods_are_indexed_by_ip() {
        let store = Store::new();
        store.replace_all([
            pod("a", Some("10.1.0.1"), "Running", false),
            pod("done", Some("10.1.0.1"), "Succeeded", false),
            pod("host", Some("10.1.0.2"), "Running", true),
            pod("new", None, "Pending", false),
        ]);
        let names = |s: &Snapshot, ip: &str| -> Vec<String> {
            s.pods_with_ip(ip.parse().unwrap())
                .map(|(k, _)| k.name.clone())
                .collect()
        };
        let snap = store.snapshot();
        assert_eq!(names(&snap, "10.1.0.1"), ["a"]);
        assert!(names(&snap, "10.1.0.2").is_empty());
        // The pod gets an IP, another one loses its own.
        store.upsert(pod("new", Some("10.1.0.3"), "Running", false));
        store.upsert(pod("a", Some("10.1.0.4"), "Running", false));
        let snap = store.snapshot();
        assert_eq!(names(&snap, "10.1.0.3"), ["new"]);
        assert!(names(&snap, "10.1.0.1").is_empty());
        assert_eq!(names(&snap, "10.1.0.4"), ["a"]);
        store.remove(Kind::Pod, &ObjectKey::new("shop", "a"));
        assert!(names(&store.snapshot(), "10.1.0.4").is_empty());
        store.replace_kind(Kind::Pod, []);
        assert!(names(&store.snapshot(), "10.1.0.3").is_empty());
    }

    fn tt(name: &str, dest: &str, dest_ns: Option<&str>) -> Object {
        let t: TrafficTarget = serde_json::from_value(serde_json::json!({
            "apiVersion": "access.smi-spec.io/v1alpha3",
            "kind": "TrafficTarget",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"destination": {"kind": "ServiceAccount", "name": dest, "namespace": dest_ns}}
        }))
        .unwrap();
        Object::TrafficTarget(Arc::new(t))
    }

    #[test]
    fn traffic_targets_are_indexed_by_their_own_namespace_destination() {
        let store = Store::new();
        let names = |sa: &str| -> Vec<String> {
            store
                .snapshot()
                .targets_of("shop", sa)
                .map(|(k, _)| k.name)
                .collect()
        };
        store.replace_all([
            tt("a", "web", None),
            tt("b", "web", Some("shop")),
            tt("foreign", "web", Some("bank")),
        ]);
        assert_eq!(names("web"), ["a", "b"]);
        assert!(store.snapshot().targets_of("bank", "web").next().is_none());
        // A target changes destination: it leaves the old one.
        store.upsert(tt("b", "api", None));
        assert_eq!(names("web"), ["a"]);
        assert_eq!(names("api"), ["b"]);
        store.remove(Kind::TrafficTarget, &ObjectKey::new("shop", "a"));
        assert!(names("web").is_empty());
        store.replace_kind(Kind::TrafficTarget, [tt("c", "web", None)]);
        assert_eq!(names("web"), ["c"]);
        assert!(names("api").is_empty());
        assert_eq!(store.snapshot().access_counts(), (1, 0, 0));
    }

    #[test]
    fn namespaces_are_keyed_by_name_alone() {
        let store = Store::new();
        let ns: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "shop"}})).unwrap();
        let o = Object::Namespace(Arc::new(ns));
        assert_eq!(o.key(), Some(ObjectKey::cluster("shop")));
        store.upsert(o);
        assert!(store.snapshot().namespaces.contains_key("shop"));
        assert!(store
            .snapshot()
            .get(Kind::Namespace, &ObjectKey::cluster("shop"))
            .is_some());
        store.remove(Kind::Namespace, &ObjectKey::cluster("shop"));
        assert!(store.snapshot().namespaces.is_empty());
    }
}
