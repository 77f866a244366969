//! The Kubernetes feed: kube-rs watchers fill the store from a real API
//! server (`--kubeconfig`), so cluster mode answers `Get`/`GetProfile`
//! through the same translation as the file feed.
//!
//! One watcher per kind, across all namespaces: core/v1 Service, Pod,
//! ServiceAccount and Namespace, the Services' endpoints, and the CRDs
//! ServiceProfile (`linkerd.io/v1alpha2`), TrafficSplit
//! (`split.smi-spec.io/v1alpha4`, the storage version `install/crds.yaml`
//! defines), HTTPRouteGroup and TCPRoute (`specs.smi-spec.io/v1alpha4`)
//! and TrafficTarget (`access.smi-spec.io/v1alpha3`; objects written as
//! v1alpha2 are served as v1alpha3 unchanged, their destination `port`
//! included).
//!
//! Endpoints come from `discovery.k8s.io/v1` EndpointSlices when the API
//! server serves them (Kubernetes 1.21+; asked once at start through API
//! discovery, see [`EndpointsSource::detect`]), else from core/v1
//! Endpoints (1.20 and older serve only `v1beta1` slices). Slices matter
//! for Services with more than 1,000 endpoints, where Endpoints objects are
//! truncated. The store turns either into the same shape
//! ([`EndpointSet`](crate::store::EndpointSet)), merging a Service's
//! slices, so translation does not know which one was read.
//!
//! Each watcher is independent: a kind whose CRD is not installed (404)
//! is logged once and retried with kube's backoff while the other kinds
//! keep flowing. Reconnects and relists are kube-runtime's; a relist
//! replaces that kind's objects in the store in one step. Errors are
//! logged at warn and never stop the controller.
//!
//! Custom resources are watched as `DynamicObject`s and decoded one by
//! one, so a single malformed object cannot break its kind's list. They
//! then go through [`check`](super::check), the file feed's validation:
//! an invalid object is logged with its field paths and its previous
//! valid version stays in the store. TrafficSplit objects written in an
//! older version are served as v1alpha4 unchanged (the CRD has no
//! conversion webhook), which `weft-smi-crds` accepts: weights may still
//! be quantities such as `900m`.
//!
//! A rejected object is also reported as a `Warning` Kubernetes Event
//! regarding it (`Invalid<Kind>`), a TrafficSplit reconciler checks the
//! stored splits' references (unknown Services or HTTPRouteGroups,
//! self-references) after every change (see [`super::events`]), and an
//! access reconciler the TrafficTargets' and the default-policy
//! annotations' (see [`super::access`]). Events are queued, never awaited,
//! so they cannot slow a watch loop.

use super::events::{self, ClusterSink, Events, Refs, Warning};
use super::{check, key_of, Checked};
use crate::store::{Kind, Object, ObjectKey, Store};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Endpoints, Namespace, ObjectReference, Pod, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use weft_smi_crds::access::TrafficTarget;
use weft_smi_crds::specs::v1alpha4::{HTTPRouteGroup, TCPRoute};
use weft_smi_crds::split::v1alpha4::TrafficSplit;
use weft_smi_crds::{AnyObject, AnyTrafficSplit, ServiceProfile};

/// How long the API server keeps one watch request open before the
/// watcher re-watches from the last resource version. Short enough that a
/// silently dead connection is noticed (see [`READ_TIMEOUT`]).
pub const WATCH_TIMEOUT_SECS: u32 = 60;
/// The read timeout the feed's client needs: longer than
/// [`WATCH_TIMEOUT_SECS`], since a quiet watch sends nothing until then.
pub const READ_TIMEOUT: Duration = Duration::from_secs(WATCH_TIMEOUT_SECS as u64 + 15);

/// Why one watched custom object could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The object does not decode as its typed form (the CRD schema
    /// should prevent this; a hand-edited or old object may not).
    #[error("cannot decode as {api_version} {kind}: {source}")]
    Decode {
        /// The version it was decoded as.
        api_version: String,
        /// The kind.
        kind: Kind,
        /// The serde error.
        source: serde_json::Error,
    },
    /// The object decoded but failed validation (field paths inside).
    #[error("{0}")]
    Invalid(weft_smi_crds::ValidationErrors),
    /// Decoded to a kind the store does not hold (cannot happen for the
    /// watched kinds; kept so nothing panics if it ever does).
    #[error("decoded to {0}, which the store does not hold")]
    Unstored(String),
}

/// Turns a watched object into what the store holds.
type Convert<K> = fn(K) -> Result<Object, ObjectError>;

/// How long start-up waits for the API discovery answer that picks the
/// [`EndpointsSource`].
const DETECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Which objects list the Services' endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointsSource {
    /// `discovery.k8s.io/v1` EndpointSlice (preferred where served).
    EndpointSlices,
    /// core/v1 Endpoints (served by every API server).
    Endpoints,
}

// === impl EndpointsSource ===

impl std::fmt::Display for EndpointsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EndpointsSource::EndpointSlices => "discovery.k8s.io/v1 EndpointSlice",
            EndpointsSource::Endpoints => "v1 Endpoints",
        })
    }
}

impl EndpointsSource {
    /// Asks the API server (API discovery, `GET /apis/discovery.k8s.io/v1`)
    /// whether it serves `endpointslices` in `discovery.k8s.io/v1`. Any
    /// other answer (404 on 1.20, an error, no answer within
    /// [`DETECT_TIMEOUT`]) means core/v1 Endpoints, which every server
    /// serves: a wrong guess costs the 1,000-endpoint limit, never
    /// discovery itself. Decided once: an API server upgrade takes a
    /// controller restart to switch.
    pub async fn detect(client: &Client) -> Self {
        let group = EndpointSlice::api_version(&());
        let answer =
            tokio::time::timeout(DETECT_TIMEOUT, client.list_api_group_resources(&group)).await;
        match answer {
            Ok(Ok(list)) if list.resources.iter().any(|r| r.name == "endpointslices") => {
                EndpointsSource::EndpointSlices
            }
            Ok(Ok(_)) => {
                tracing::info!(%group, "the API server serves no endpointslices in this group version");
                EndpointsSource::Endpoints
            }
            Ok(Err(kube::Error::Api(status))) if status.code == 404 => {
                tracing::info!(%group, "the API server does not serve this group version");
                EndpointsSource::Endpoints
            }
            Ok(Err(error)) => {
                tracing::warn!(%group, %error, "API discovery failed; reading core/v1 Endpoints");
                EndpointsSource::Endpoints
            }
            Err(_) => {
                tracing::warn!(%group, timeout = ?DETECT_TIMEOUT, "API discovery did not answer; reading core/v1 Endpoints");
                EndpointsSource::Endpoints
            }
        }
    }
}

/// The started watchers; lets start-up wait for their first list.
#[derive(Debug)]
pub struct KubeFeed {
    first: Vec<(Kind, oneshot::Receiver<()>)>,
    /// Start the TrafficSplit and access reconcilers once start-up has
    /// waited for the first lists (or dropped the feed), so no object is
    /// judged against a half-listed store.
    synced: Vec<oneshot::Sender<()>>,
}

/// Where one watcher reports besides the store.
#[derive(Clone, Debug, Default)]
struct Report {
    /// Events about rejected objects (the custom kinds).
    events: Option<Events>,
    /// `regarding` references of the stored objects (TrafficSplits only).
    refs: Option<Refs>,
}

// === impl KubeFeed ===

impl KubeFeed {
    /// Picks the endpoints source ([`EndpointsSource::detect`]) and spawns
    /// one watcher per kind, writing to `store`, plus the Event publisher,
    /// the TrafficSplit reconciler ([`events::check_splits`], judging
    /// names in `cluster_domain`) and the access reconciler
    /// ([`super::access::check_access`], naming identities in
    /// `trust_domain`). Must run inside a Tokio runtime; the tasks live as
    /// long as the process.
    pub async fn start(
        client: &Client,
        store: &Store,
        cluster_domain: &str,
        trust_domain: &str,
    ) -> Self {
        let source = EndpointsSource::detect(client).await;
        Self::start_with(client, store, source, cluster_domain, trust_domain)
    }

    /// Like [`start`](Self::start) with the endpoints source given.
    pub fn start_with(
        client: &Client,
        store: &Store,
        source: EndpointsSource,
        cluster_domain: &str,
        trust_domain: &str,
    ) -> Self {
        let events = Events::start(client.clone());
        let refs = Refs::default();
        let custom = Report {
            events: Some(events.clone()),
            refs: None,
        };
        let splits = Report {
            events: Some(events.clone()),
            refs: Some(refs.clone()),
        };
        let (synced, start_checks) = oneshot::channel::<()>();
        let (access_synced, start_access) = oneshot::channel::<()>();
        tokio::spawn(super::access::check_access(
            store.clone(),
            trust_domain.to_owned(),
            Some(events.clone()),
            async move {
                let _ = start_access.await;
            },
        ));
        tokio::spawn(events::check_splits(
            store.clone(),
            cluster_domain.to_owned(),
            Some(ClusterSink { events, refs }),
            async move {
                let _ = start_checks.await;
            },
        ));
        let mut first = Vec::new();
        let mut spawn = |kind: Kind, rx| first.push((kind, rx));
        spawn(
            Kind::Service,
            spawn_watch(
                Api::<Service>::all(client.clone()),
                Kind::Service,
                store,
                Report::default(),
                |o| Ok(Object::Service(Arc::new(o))),
            ),
        );
        match source {
            EndpointsSource::EndpointSlices => spawn(
                Kind::EndpointSlice,
                spawn_watch(
                    Api::<EndpointSlice>::all(client.clone()),
                    Kind::EndpointSlice,
                    store,
                    Report::default(),
                    |o| Ok(Object::EndpointSlice(Arc::new(o))),
                ),
            ),
            EndpointsSource::Endpoints => spawn(
                Kind::Endpoints,
                spawn_watch(
                    Api::<Endpoints>::all(client.clone()),
                    Kind::Endpoints,
                    store,
                    Report::default(),
                    |o| Ok(Object::Endpoints(Arc::new(o))),
                ),
            ),
        }
        spawn(
            Kind::Pod,
            spawn_watch(
                Api::<Pod>::all(client.clone()),
                Kind::Pod,
                store,
                Report::default(),
                |o| Ok(Object::Pod(Arc::new(o))),
            ),
        );
        spawn(
            Kind::ServiceAccount,
            spawn_watch(
                Api::<ServiceAccount>::all(client.clone()),
                Kind::ServiceAccount,
                store,
                Report::default(),
                |o| Ok(Object::ServiceAccount(Arc::new(o))),
            ),
        );
        spawn(
            Kind::Namespace,
            spawn_watch(
                Api::<Namespace>::all(client.clone()),
                Kind::Namespace,
                store,
                Report::default(),
                |o| Ok(Object::Namespace(Arc::new(o))),
            ),
        );
        spawn(
            Kind::ServiceProfile,
            spawn_custom::<ServiceProfile>(
                client,
                Kind::ServiceProfile,
                store,
                custom.clone(),
                |o| {
                    checked(
                        decode::<ServiceProfile>(o, Kind::ServiceProfile)
                            .map(|sp| AnyObject::ServiceProfile(Box::new(sp)))?,
                    )
                },
            ),
        );
        spawn(
            Kind::TrafficSplit,
            spawn_custom::<TrafficSplit>(client, Kind::TrafficSplit, store, splits, |o| {
                checked(
                    decode::<TrafficSplit>(o, Kind::TrafficSplit).map(|ts| {
                        AnyObject::TrafficSplit(Box::new(AnyTrafficSplit::V1alpha4(ts)))
                    })?,
                )
            }),
        );
        spawn(
            Kind::HttpRouteGroup,
            spawn_custom::<HTTPRouteGroup>(
                client,
                Kind::HttpRouteGroup,
                store,
                custom.clone(),
                |o| {
                    checked(
                        decode::<HTTPRouteGroup>(o, Kind::HttpRouteGroup)
                            .map(|rg| AnyObject::HttpRouteGroup(Box::new(rg)))?,
                    )
                },
            ),
        );
        spawn(
            Kind::TcpRoute,
            spawn_custom::<TCPRoute>(client, Kind::TcpRoute, store, custom.clone(), |o| {
                checked(
                    decode::<TCPRoute>(o, Kind::TcpRoute)
                        .map(|r| AnyObject::TcpRoute(Box::new(r)))?,
                )
            }),
        );
        spawn(
            Kind::TrafficTarget,
            spawn_custom::<TrafficTarget>(client, Kind::TrafficTarget, store, custom, |o| {
                checked(
                    decode::<TrafficTarget>(o, Kind::TrafficTarget)
                        .map(|tt| AnyObject::TrafficTarget(Box::new(tt)))?,
                )
            }),
        );
        let custom: Vec<String> = custom_api_versions()
            .iter()
            .map(|(kind, api_version)| format!("{api_version} {kind}"))
            .collect();
        tracing::info!(endpoints = %source, "kubernetes feed: endpoints from {source}");
        tracing::info!(
            core = %format!("v1 Service, Pod, ServiceAccount, Namespace, {source}"),
            custom = %custom.join(", "),
            "kubernetes feed: watching all namespaces"
        );
        Self {
            first,
            synced: vec![synced, access_synced],
        }
    }

    /// Waits until every watcher has finished its first list or reported
    /// its first error (a missing CRD counts), at most `timeout`, so the
    /// first `Get` after start-up sees the cluster instead of an empty
    /// store. Returns the kinds that were not ready in time.
    /// Then starts the TrafficSplit and access reconcilers.
    pub async fn wait_first_sync(self, timeout: Duration) -> Vec<Kind> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut late = Vec::new();
        for (kind, rx) in self.first {
            if tokio::time::timeout_at(deadline, rx).await.is_err() {
                late.push(kind);
            }
        }
        for synced in self.synced {
            let _ = synced.send(());
        }
        late
    }
}

/// The custom kinds the controller watches, with their API group/version
/// (from the typed kinds, so they cannot disagree with `weft-smi-crds`).
pub fn custom_api_versions() -> [(Kind, String); 5] {
    [
        (
            Kind::ServiceProfile,
            ServiceProfile::api_version(&()).into_owned(),
        ),
        (
            Kind::TrafficSplit,
            TrafficSplit::api_version(&()).into_owned(),
        ),
        (
            Kind::HttpRouteGroup,
            HTTPRouteGroup::api_version(&()).into_owned(),
        ),
        (Kind::TcpRoute, TCPRoute::api_version(&()).into_owned()),
        (
            Kind::TrafficTarget,
            TrafficTarget::api_version(&()).into_owned(),
        ),
    ]
}

/// The `apiVersion` of a kind as the feed watches it (for Events'
/// `regarding`).
fn api_version(kind: Kind) -> String {
    match kind {
        Kind::Service | Kind::Endpoints | Kind::Pod | Kind::ServiceAccount | Kind::Namespace => {
            "v1".to_owned()
        }
        Kind::EndpointSlice => EndpointSlice::api_version(&()).into_owned(),
        custom => custom_api_versions()
            .into_iter()
            .find(|(k, _)| *k == custom)
            .map(|(_, v)| v)
            .unwrap_or_default(),
    }
}

fn spawn_custom<T: Resource<DynamicType = ()>>(
    client: &Client,
    kind: Kind,
    store: &Store,
    report: Report,
    convert: Convert<DynamicObject>,
) -> oneshot::Receiver<()> {
    let ar = ApiResource::erase::<T>(&());
    spawn_watch(
        Api::<DynamicObject>::all_with(client.clone(), &ar),
        kind,
        store,
        report,
        convert,
    )
}

fn spawn_watch<K>(
    api: Api<K>,
    kind: Kind,
    store: &Store,
    report: Report,
    convert: Convert<K>,
) -> oneshot::Receiver<()>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    tokio::spawn(watch(api, kind, store.clone(), report, convert, tx));
    rx
}

/// Decodes a watched custom object as `T`. List items may lack
/// `apiVersion`/`kind`; they are filled in from `T` first.
fn decode<T>(o: DynamicObject, kind: Kind) -> Result<T, ObjectError>
where
    T: Resource<DynamicType = ()> + DeserializeOwned,
{
    let api_version = T::api_version(&()).into_owned();
    let err = |source| ObjectError::Decode {
        api_version: api_version.clone(),
        kind,
        source,
    };
    let mut value = serde_json::to_value(o).map_err(err)?;
    if let Some(map) = value.as_object_mut() {
        map.entry("apiVersion")
            .or_insert_with(|| api_version.clone().into());
        map.entry("kind")
            .or_insert_with(|| T::kind(&()).into_owned().into());
    }
    serde_json::from_value(value).map_err(err)
}

/// Runs the shared validation ([`check`]) on a decoded custom object.
fn checked(object: AnyObject) -> Result<Object, ObjectError> {
    match check(object) {
        Checked::Valid(o) => Ok(o),
        Checked::Invalid { errors, .. } => Err(ObjectError::Invalid(errors)),
        Checked::Unstored(o) => Err(ObjectError::Unstored(o.kind().to_owned())),
    }
}

/// The store key of a watched object: `(namespace, name)`, or for a
/// cluster-scoped kind (Namespace) the name alone ([`ObjectKey::cluster`]).
fn key<K: Resource>(kind: Kind, o: &K) -> Option<ObjectKey> {
    let meta = o.meta();
    if kind == Kind::Namespace {
        return meta
            .name
            .as_deref()
            .filter(|n| !n.is_empty())
            .map(ObjectKey::cluster);
    }
    key_of(meta.namespace.as_deref(), meta.name.as_deref())
}

/// Whether a watcher error means the API does not serve the kind (its
/// CRD is not installed). The API server answers an unknown resource with
/// a plain-text `404 page not found`, which kube reports as a 404 whose
/// reason is "Failed to parse error data", so the code decides.
fn not_served(error: &watcher::Error) -> bool {
    let status = match error {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s,
        watcher::Error::WatchError(s) => s,
        _ => return false,
    };
    status.code == 404 || status.is_not_found()
}

/// The note ending of an Event about a rejected object.
const REJECTED: &str = "rejected by weft-controller; the object's previous valid version (if any) \
                        stays in force";

/// Converts one watched object, with its `regarding` reference when the
/// watcher reports Events or keeps references. An object that cannot be
/// stored is logged with its field paths and, with Events, queued as a
/// `Warning` Event `Invalid<Kind>` (deduplicated by object,
/// `resourceVersion` and message, so a relist publishes nothing new); the
/// result is then its previous valid version from the store (if any),
/// which the caller keeps.
fn accept<K: Resource>(
    kind: Kind,
    store: &Store,
    report: &Report,
    mut o: K,
    convert: Convert<K>,
) -> Result<(Object, Option<ObjectReference>), Option<Object>> {
    let Some(key) = key(kind, &o) else {
        tracing::debug!(%kind, "skipping an object without metadata.name");
        return Err(None);
    };
    // Nothing reads managedFields; not keeping them saves memory.
    o.meta_mut().managed_fields = None;
    let reference = (report.events.is_some() || report.refs.is_some()).then(|| {
        let meta = o.meta();
        events::reference(
            kind,
            &api_version(kind),
            &key,
            meta.uid.clone(),
            meta.resource_version.clone(),
        )
    });
    match convert(o) {
        Ok(object) => Ok((object, reference)),
        Err(error) => {
            let previous = store.snapshot().get(kind, &key);
            tracing::warn!(
                %kind,
                object = %key,
                errors = %error,
                kept_previous = previous.is_some(),
                "invalid object rejected; its previous valid version (if any) stays in force"
            );
            let reportable = !matches!(error, ObjectError::Unstored(_));
            if let (Some(events), Some(regarding), true) = (&report.events, reference, reportable) {
                events.warn(Warning::new(
                    regarding,
                    format!("Invalid{kind}"),
                    events::ACTION_REJECT,
                    &format!("{error}; {REJECTED}"),
                ));
            }
            Err(previous)
        }
    }
}

/// One kind's watch loop: feeds events into the store until the process
/// ends. `first` fires after the first complete list or the first error.
async fn watch<K>(
    api: Api<K>,
    kind: Kind,
    store: Store,
    report: Report,
    convert: Convert<K>,
    first: oneshot::Sender<()>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let mut first = Some(first);
    let mut missing = false;
    let mut relist: Option<Vec<Object>> = None;
    // With `report.refs`: the references of the objects being relisted.
    let mut relist_refs: HashMap<ObjectKey, ObjectReference> = HashMap::new();
    let mut stream = watcher::watcher(api, watcher::Config::default().timeout(WATCH_TIMEOUT_SECS))
        .default_backoff()
        .boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => {
                relist = Some(Vec::new());
                relist_refs.clear();
            }
            Ok(Event::InitApply(o)) => {
                let object_key = key(kind, &o);
                let accepted = accept(kind, &store, &report, o, convert);
                let Some(buf) = relist.as_mut() else {
                    continue;
                };
                match accepted {
                    Ok((object, reference)) => {
                        if let (Some(_), Some(k), Some(r)) = (&report.refs, object_key, reference) {
                            relist_refs.insert(k, r);
                        }
                        buf.push(object);
                    }
                    // Rejected: the stored version stays, with its reference.
                    Err(Some(previous)) => {
                        if let (Some(refs), Some(k)) = (&report.refs, object_key) {
                            if let Some(r) = refs.get(&k) {
                                relist_refs.insert(k, r);
                            }
                        }
                        buf.push(previous);
                    }
                    Err(None) => {}
                }
            }
            Ok(Event::InitDone) => {
                let objects = relist.take().unwrap_or_default();
                let count = objects.len();
                if let Some(refs) = &report.refs {
                    refs.replace(std::mem::take(&mut relist_refs));
                }
                store.replace_kind(kind, objects);
                if std::mem::take(&mut missing) {
                    tracing::info!(%kind, "kind is served now; watching it");
                }
                tracing::info!(%kind, objects = count, "kubernetes feed: listed");
                if let Some(tx) = first.take() {
                    let _ = tx.send(());
                }
            }
            Ok(Event::Apply(o)) => {
                let object_key = key(kind, &o);
                if let Ok((object, reference)) = accept(kind, &store, &report, o, convert) {
                    // The reference first: the reconciler reads it for
                    // what the store then holds.
                    if let (Some(refs), Some(k), Some(r)) = (&report.refs, object_key, reference) {
                        refs.insert(k, r);
                    }
                    store.upsert(object);
                }
            }
            Ok(Event::Delete(o)) => {
                if let Some(key) = key(kind, &o) {
                    store.remove(kind, &key);
                    if let Some(refs) = &report.refs {
                        refs.remove(&key);
                    }
                }
            }
            Err(error) if not_served(&error) => {
                if !missing {
                    missing = true;
                    tracing::warn!(
                        %kind,
                        %error,
                        "the API server does not serve this kind (CRD not installed?); \
                         the other kinds are unaffected, retrying with backoff"
                    );
                } else {
                    tracing::debug!(%kind, %error, "kind still not served");
                }
                if let Some(tx) = first.take() {
                    let _ = tx.send(());
                }
            }
            Err(error) => {
                tracing::warn!(%kind, %error, "watch failed; keeping the stored objects and retrying with backoff");
                if let Some(tx) = first.take() {
                    let _ = tx.send(());
                }
            }
        }
    }
    tracing::error!(%kind, "kubernetes watch ended; this kind is no longer updated");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The versions watched must be the storage versions of the CRDs we
    /// install: without a conversion webhook the API server serves every
    /// object as-is under any served version, and the storage version is
    /// the one whose schema the objects were last validated against.
    #[test]
    fn watches_the_storage_versions_of_the_installed_crds() {
        let text = include_str!("../../../install/crds.yaml");
        let crds: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(text)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .filter(|v: &serde_json::Value| !v.is_null())
            .collect();
        for (kind, api_version) in custom_api_versions() {
            let kind = kind.to_string();
            let crd = crds
                .iter()
                .find(|c| c["spec"]["names"]["kind"] == kind.as_str())
                .unwrap_or_else(|| panic!("{kind} not in install/crds.yaml"));
            let group = crd["spec"]["group"].as_str().unwrap();
            let storage = crd["spec"]["versions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["storage"] == true)
                .unwrap();
            let want = format!("{group}/{}", storage["name"].as_str().unwrap());
            assert_eq!(api_version, want, "{kind}");
        }
    }

    /// A one-request-at-a-time HTTP server answering every request with
    /// `status` and `body`, standing in for API discovery.
    async fn discovery_server(status: &'static str, body: &'static str) -> Client {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            }
        });
        let url: http::Uri = format!("http://{addr}").parse().unwrap();
        Client::try_from(kube::Config::new(url)).unwrap()
    }

    #[tokio::test]
    async fn endpoint_slices_are_used_only_where_served() {
        let served = discovery_server(
            "200 OK",
            r#"{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"discovery.k8s.io/v1",
                "resources":[{"name":"endpointslices","singularName":"endpointslice",
                "namespaced":true,"kind":"EndpointSlice","verbs":["list","watch"]}]}"#,
        )
        .await;
        assert_eq!(
            EndpointsSource::detect(&served).await,
            EndpointsSource::EndpointSlices
        );
        let not_served = discovery_server(
            "404 Not Found",
            r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#,
        )
        .await;
        assert_eq!(
            EndpointsSource::detect(&not_served).await,
            EndpointsSource::Endpoints
        );
        let other = discovery_server(
            "200 OK",
            r#"{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"discovery.k8s.io/v1","resources":[]}"#,
        )
        .await;
        assert_eq!(
            EndpointsSource::detect(&other).await,
            EndpointsSource::Endpoints
        );
        let broken = discovery_server("500 Internal Server Error", "oops").await;
        assert_eq!(
            EndpointsSource::detect(&broken).await,
            EndpointsSource::Endpoints
        );
    }

    fn split_object(uid: &str, rv: &str, weights: [i64; 2]) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "split.smi-spec.io/v1alpha4",
            "kind": "TrafficSplit",
            "metadata": {"name": "s", "namespace": "shop", "uid": uid, "resourceVersion": rv},
            "spec": {"service": "web", "backends": [
                {"service": "web-v1", "weight": weights[0]},
                {"service": "web-v2", "weight": weights[1]}
            ]}
        }))
        .unwrap()
    }

    fn convert_split(o: DynamicObject) -> Result<Object, ObjectError> {
        checked(
            decode::<TrafficSplit>(o, Kind::TrafficSplit)
                .map(|ts| AnyObject::TrafficSplit(Box::new(AnyTrafficSplit::V1alpha4(ts))))?,
        )
    }

    /// A relist delivers every object again with the same resourceVersion:
    /// a rejected one is reported once; a rejected update is reported again.
    #[tokio::test]
    async fn rejected_objects_are_reported_once_per_version_and_message() {
        let store = Store::new();
        let (events, mut rx) = Events::channel(8, 8);
        let report = Report {
            events: Some(events),
            refs: Some(Refs::default()),
        };
        let bad = || split_object("uid-1", "7", [0, 0]);
        for _ in 0..3 {
            let r = accept(Kind::TrafficSplit, &store, &report, bad(), convert_split);
            assert!(matches!(r, Err(None)), "{r:?}");
        }
        let w = rx.try_recv().unwrap();
        assert!(rx.try_recv().is_err(), "the same version is reported once");
        assert_eq!(w.reason, "InvalidTrafficSplit");
        assert_eq!(w.action, events::ACTION_REJECT);
        let r = &w.regarding;
        assert_eq!(r.kind.as_deref(), Some("TrafficSplit"));
        assert_eq!(r.api_version.as_deref(), Some("split.smi-spec.io/v1alpha4"));
        assert_eq!(
            (r.namespace.as_deref(), r.name.as_deref()),
            (Some("shop"), Some("s"))
        );
        assert_eq!(
            (r.uid.as_deref(), r.resource_version.as_deref()),
            (Some("uid-1"), Some("7"))
        );
        assert!(
            w.note
                .contains("spec.backends: all backend weights are zero"),
            "{}",
            w.note
        );
        assert!(w.note.contains("rejected by weft-controller"), "{}", w.note);
        // Another rejected version is another Event.
        let _ = accept(
            Kind::TrafficSplit,
            &store,
            &report,
            split_object("uid-1", "8", [-1, 1]),
            convert_split,
        );
        assert!(rx.try_recv().unwrap().note.contains("negative weight"));
        // A valid object is accepted with its reference, and no Event.
        let (object, reference) = accept(
            Kind::TrafficSplit,
            &store,
            &report,
            split_object("uid-1", "9", [1, 1]),
            convert_split,
        )
        .unwrap();
        assert_eq!(object.kind(), Kind::TrafficSplit);
        assert_eq!(reference.unwrap().resource_version.as_deref(), Some("9"));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn custom_objects_go_through_the_shared_validation() {
        let ts: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "split.smi-spec.io/v1alpha4",
            "kind": "TrafficSplit",
            "metadata": {"name": "s", "namespace": "shop"},
            "spec": {"service": "web", "backends": [
                {"service": "web-v1", "weight": "900m"},
                {"service": "web-v2", "weight": 0}
            ]}
        }))
        .unwrap();
        let ok = checked(AnyObject::TrafficSplit(Box::new(
            AnyTrafficSplit::V1alpha4(
                decode::<TrafficSplit>(ts.clone(), Kind::TrafficSplit).unwrap(),
            ),
        )))
        .unwrap();
        let Object::TrafficSplit(split) = ok else {
            panic!("{ok:?}")
        };
        assert_eq!(split.backends[0].weight, 1);

        let mut bad = ts;
        bad.data["spec"]["backends"][0]["weight"] = serde_json::json!(0);
        let err = checked(AnyObject::TrafficSplit(Box::new(
            AnyTrafficSplit::V1alpha4(decode::<TrafficSplit>(bad, Kind::TrafficSplit).unwrap()),
        )))
        .unwrap_err();
        assert!(err.to_string().contains("zero"), "{err}");
    }
}
