//! Translation from stored Kubernetes objects to the destination API's
//! endpoint updates. Pure functions over a [`Snapshot`], shared by every
//! feed, so the file feed and the Kubernetes feed answer alike.
//!
//! Endpoints come from the store's [`EndpointSet`](crate::store::EndpointSet)
//! of a Service, one shape whether the feed read core/v1 Endpoints or
//! `discovery.k8s.io/v1` EndpointSlices. An `IP:port` authority resolves
//! to the Service whose ClusterIP it is, else to the one Pod with that IP
//! (see [`resolve`]).

use super::authority::{Authority, Target};
use crate::store::endpoint_set::EndpointPort;
use crate::store::{ObjectKey, Snapshot};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use linkerd2_proxy_api::destination::{
    protocol_hint, tls_identity, update, AddrSet, DestinationProfile, NoEndpoints, ProtocolHint,
    RetryBudget, TlsIdentity, Update, WeightedAddr, WeightedAddrSet,
};
use linkerd2_proxy_api::net::TcpAddress;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use weft_inject::names;

/// Weight of every endpoint (Linkerd's default; balancing is by load).
pub const DEFAULT_WEIGHT: u32 = 10_000;
/// The Pod annotation listing its opaque ports, as Linkerd reads it.
const OPAQUE_PORTS_ANNOTATION: &str = "config.linkerd.io/opaque-ports";

/// One ready endpoint of a Service port, with what the proxy needs to
/// reach it and label its metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Where to connect.
    pub addr: SocketAddr,
    /// Metric labels (`namespace`, `service`, `pod`, `serviceaccount`, owner).
    pub labels: BTreeMap<String, String>,
    /// The identity to require over mTLS, for meshed pods.
    pub identity: Option<String>,
    /// Whether the endpoint is a meshed proxy that speaks HTTP/2.
    pub h2: bool,
}

/// What an authority resolves to in one snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolution {
    /// Whether the Service (or, for an `IP:port` authority, the Pod) exists.
    pub exists: bool,
    /// Labels of the whole set, sent with every `Add`: `namespace` and
    /// `service` for a Service, `namespace` for a Pod.
    pub labels: BTreeMap<String, String>,
    /// Its ready endpoints by address.
    pub endpoints: BTreeMap<SocketAddr, Endpoint>,
}

/// Resolves `authority` in `snap`: a Service port to its ready endpoints
/// ([`resolve_service`]), a Service's `clusterIP:port` the same way, any
/// other `IP:port` to the Pod with that IP ([`resolve_pod`]).
pub fn resolve(snap: &Snapshot, authority: &Authority, trust_domain: &str) -> Resolution {
    match authority {
        Authority::Service(target) => resolve_service(snap, target, trust_domain),
        Authority::Addr(addr) => match service_at(snap, *addr) {
            Some(target) => resolve_service(snap, &target, trust_domain),
            None => resolve_pod(snap, *addr, trust_domain),
        },
    }
}

/// The Service port `addr` names when its IP is exactly one Service's
/// ClusterIP (the port is the Service port, mapped to target ports as
/// for a name); `None` when no Service has that ClusterIP (a Pod IP, an
/// address outside the cluster) or, in a hand-written file feed, several
/// do (an ambiguous address is left to the proxy rather than guessed).
pub fn service_at(snap: &Snapshot, addr: SocketAddr) -> Option<Target> {
    let mut keys = snap.services_with_cluster_ip(addr.ip());
    let key = keys.next()?;
    if let Some(other) = keys.next() {
        tracing::debug!(%addr, first = %key, %other, "several services have this ClusterIP; not resolving it");
        return None;
    }
    Some(Target {
        namespace: key.namespace.clone(),
        service: key.name.clone(),
        port: addr.port(),
    })
}

/// Resolves `target` in `snap`: the Service's ready endpoints on the port
/// the Service port maps to, as Kubernetes maps it (by port name, else by
/// a numeric `targetPort` or the name a named one gives; a port the Service does not declare is used as
/// is, like Linkerd does).
pub fn resolve_service(snap: &Snapshot, target: &Target, trust_domain: &str) -> Resolution {
    let key = ObjectKey::new(&target.namespace, &target.service);
    let Some(svc) = snap.services.get(&key) else {
        return Resolution::default();
    };
    let labels: BTreeMap<String, String> = [
        ("namespace".to_owned(), target.namespace.clone()),
        ("service".to_owned(), target.service.clone()),
    ]
    .into();
    let mut out = Resolution {
        exists: true,
        labels,
        endpoints: BTreeMap::new(),
    };
    let Some(set) = snap.endpoint_set(&key) else {
        return out;
    };
    for group in &set.groups {
        let Some(port) = endpoint_port(svc, target.port, &group.ports) else {
            continue;
        };
        for a in group.addresses.iter().filter(|a| a.ready) {
            let addr = SocketAddr::new(a.ip, port);
            let ep = endpoint(snap, &out.labels, addr, a.pod.clone(), trust_domain);
            out.endpoints.insert(addr, ep);
        }
    }
    out
}

/// Resolves a Pod `IP:port` authority: when exactly one known (running or
/// pending, not host-network) Pod has that IP, that Pod on that port, with
/// its identity and labels as if it stood behind a Service; otherwise
/// nothing (`exists: false`), so the proxy uses the address as it is.
pub fn resolve_pod(snap: &Snapshot, addr: SocketAddr, trust_domain: &str) -> Resolution {
    let Some((key, _)) = pod_at(snap, addr.ip()) else {
        return Resolution::default();
    };
    let labels: BTreeMap<String, String> = [("namespace".to_owned(), key.namespace.clone())].into();
    let ep = endpoint(snap, &labels, addr, Some(key.clone()), trust_domain);
    Resolution {
        exists: true,
        labels,
        endpoints: [(addr, ep)].into(),
    }
}

/// The `GetProfile` answer for a Pod `IP:port` authority: the Pod as the
/// profile's `endpoint` (so a proxy can connect with its identity without a
/// `Get`), `opaque_protocol` from the Pod's `config.linkerd.io/opaque-ports`,
/// Linkerd's default retry budget, no routes. An unknown IP gets the same
/// without `endpoint`: the proxy uses the address as it is.
pub fn pod_profile(snap: &Snapshot, addr: SocketAddr, trust_domain: &str) -> DestinationProfile {
    let resolved = resolve_pod(snap, addr, trust_domain);
    let opaque = pod_at(snap, addr.ip()).is_some_and(|(_, pod)| pod_opaque(pod, addr.port()));
    let budget = weft_smi_crds::profile::RetryBudget::default();
    DestinationProfile {
        endpoint: resolved.endpoints.values().next().map(weighted),
        opaque_protocol: opaque,
        retry_budget: Some(RetryBudget {
            retry_ratio: budget.retry_ratio,
            min_retries_per_second: budget.min_retries_per_second,
            ttl: budget
                .ttl_duration()
                .and_then(|d| prost_types::Duration::try_from(d).ok()),
        }),
        ..Default::default()
    }
}

/// Whether `pod`'s `config.linkerd.io/opaque-ports` lists `port`.
fn pod_opaque(pod: &Pod, port: u16) -> bool {
    opaque_ports(&pod.metadata).is_some_and(|list| lists_port(list, port))
}

/// The `config.linkerd.io/opaque-ports` annotation of an object, if set.
pub(crate) fn opaque_ports(meta: &ObjectMeta) -> Option<&str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(OPAQUE_PORTS_ANNOTATION))
        .map(String::as_str)
}

/// Whether an opaque-ports list (`3306,8000-8100`) contains `port`;
/// entries that do not parse are skipped.
pub(crate) fn lists_port(list: &str, port: u16) -> bool {
    list.split(',')
        .filter_map(|p| weft_smi_crds::profile::parse_port_range(p.trim()).ok())
        .any(|(lo, hi)| (lo..=hi).contains(&port))
}

/// Whether a ready endpoint of `target` is a Pod whose
/// `config.linkerd.io/opaque-ports` lists the endpoint port the Service
/// port maps to (Linkerd marks a Service port opaque when its Pods'
/// target port is).
pub fn endpoints_opaque(snap: &Snapshot, target: &Target) -> bool {
    let key = ObjectKey::new(&target.namespace, &target.service);
    let (Some(svc), Some(set)) = (snap.services.get(&key), snap.endpoint_set(&key)) else {
        return false;
    };
    set.groups.iter().any(|group| {
        let Some(port) = endpoint_port(svc, target.port, &group.ports) else {
            return false;
        };
        group
            .addresses
            .iter()
            .filter(|a| a.ready)
            .filter_map(|a| snap.pods.get(a.pod.as_ref()?))
            .any(|pod| pod_opaque(pod, port))
    })
}

/// The one Pod with IP `ip`; `None` when there is none or several (an
/// ambiguous IP is better left to the proxy's original address than
/// guessed).
fn pod_at(snap: &Snapshot, ip: IpAddr) -> Option<(&ObjectKey, &Arc<Pod>)> {
    let pods: Vec<_> = snap.pods_with_ip(ip).collect();
    match pods.as_slice() {
        [one] => Some(*one),
        [] => None,
        many => {
            let names: Vec<String> = many.iter().map(|(k, _)| k.to_string()).collect();
            tracing::debug!(%ip, pods = %names.join(","), "several pods have this IP; not resolving it");
            None
        }
    }
}

/// The endpoint port for Service port `port`.
fn endpoint_port(svc: &Service, port: u16, ports: &[EndpointPort]) -> Option<u16> {
    let as_u16 = |p: i32| u16::try_from(p).ok().filter(|p| *p != 0);
    let declared = svc
        .spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .find(|p| p.port == i32::from(port));
    let Some(sp) = declared else {
        return Some(port);
    };
    let name = sp.name.as_deref().unwrap_or_default();
    if let Some(ep) = ports.iter().find(|ep| ep.name == name) {
        return as_u16(ep.port);
    }
    match &sp.target_port {
        Some(IntOrString::Int(n)) => {
            if let Some(ep) = ports.iter().find(|ep| ep.port == *n) {
                return as_u16(ep.port);
            }
        }
        // Kubernetes names Endpoints ports after the Service port (matched
        // above); a hand-written file may name them after the container
        // port a named `targetPort` refers to.
        Some(IntOrString::String(target)) => {
            if let Some(ep) = ports.iter().find(|ep| ep.name == *target) {
                return as_u16(ep.port);
            }
        }
        None => {}
    }
    match ports {
        [only] if name.is_empty() => as_u16(only.port),
        _ => None,
    }
}

/// One endpoint: `base` labels plus, when it is a known Pod, the Pod's
/// (`pod`, `serviceaccount`, owner) and, when meshed, its identity and
/// the HTTP/2 hint.
fn endpoint(
    snap: &Snapshot,
    base: &BTreeMap<String, String>,
    addr: SocketAddr,
    pod_key: Option<ObjectKey>,
    trust_domain: &str,
) -> Endpoint {
    let mut labels = base.clone();
    let mut identity = None;
    let mut h2 = false;
    if let Some(key) = pod_key {
        labels.insert("pod".to_owned(), key.name.clone());
        if let Some(pod) = snap.pods.get(&key) {
            let sa = service_account(pod);
            labels.insert("serviceaccount".to_owned(), sa.clone());
            if let Some((k, v)) = owner(pod) {
                labels.insert(k.to_owned(), v);
            }
            if is_meshed(pod) {
                match weft_identity::identity_name(&sa, &key.namespace, trust_domain) {
                    Ok(name) => {
                        identity = Some(name);
                        h2 = true;
                    }
                    Err(error) => tracing::warn!(
                        pod = %key,
                        %error,
                        "meshed pod has no valid identity; serving it without TLS"
                    ),
                }
            }
        }
    }
    Endpoint {
        addr,
        labels,
        identity,
        h2,
    }
}

/// Whether the pod runs a Weft proxy: the injector marked it (the
/// `linkerd.io/control-plane-ns` label, what Linkerd's destination reads
/// too), it has the `weft-proxy` container, or it says so itself with
/// `linkerd.io/inject: enabled` (hand-written pods of the file feed, whose
/// proxy runs beside them rather than as a container).
pub fn is_meshed(pod: &Pod) -> bool {
    let labelled = pod
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(names::CONTROL_PLANE_NS_LABEL));
    let has_proxy = pod.spec.as_ref().is_some_and(|s| {
        s.containers
            .iter()
            .any(|c| c.name == names::PROXY_CONTAINER)
    });
    labelled || has_proxy || inject_annotated(pod)
}

/// Whether the pod asks for a proxy (`linkerd.io/inject: enabled`): in a
/// config dir, where nothing injects, that is what makes a pod meshed.
pub fn inject_annotated(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(names::INJECT_ANNOTATION))
        .is_some_and(|v| v == "enabled")
}

/// The pod's ServiceAccount (`default` when it names none, as Kubernetes
/// assigns).
pub fn service_account(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone().or(s.service_account.clone()))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".to_owned())
}

/// The pod's owning workload as a metric label (`deployment`, `statefulset`,
/// `daemonset`, `job`, `replicaset`), derived from its controller owner
/// reference; a ReplicaSet named `NAME-HASH` with the pod's
/// `pod-template-hash` label is a Deployment's.
pub fn owner(pod: &Pod) -> Option<(&'static str, String)> {
    let owner = pod
        .metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))?;
    let label = match owner.kind.as_str() {
        "ReplicaSet" => {
            let hash = pod.metadata.labels.as_ref()?.get("pod-template-hash");
            if let Some(deploy) = hash.and_then(|h| owner.name.strip_suffix(&format!("-{h}"))) {
                return Some(("deployment", deploy.to_owned()));
            }
            "replicaset"
        }
        "StatefulSet" => "statefulset",
        "DaemonSet" => "daemonset",
        "Job" => "job",
        _ => return None,
    };
    Some((label, owner.name.clone()))
}

fn weighted(ep: &Endpoint) -> WeightedAddr {
    WeightedAddr {
        addr: Some(TcpAddress::from(ep.addr)),
        weight: DEFAULT_WEIGHT,
        metric_labels: ep
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        tls_identity: ep.identity.as_ref().map(|name| TlsIdentity {
            strategy: Some(tls_identity::Strategy::DnsLikeIdentity(
                tls_identity::DnsLikeIdentity { name: name.clone() },
            )),
            server_name: None,
        }),
        protocol_hint: ep.h2.then_some(ProtocolHint {
            protocol: Some(protocol_hint::Protocol::H2(protocol_hint::H2 {})),
            opaque_transport: None,
        }),
        ..Default::default()
    }
}

/// The updates that take a client from `prev` (`None`: nothing sent yet)
/// to `next`, in the order a balancer should apply them: new and changed
/// endpoints first (so capacity never dips during a rollout), then
/// removals, then `NoEndpoints` when nothing is left (or when the
/// Service's existence changed while empty). An `Add` for an address the
/// client has replaces its metadata, as Linkerd's proxy expects.
pub fn diff(prev: Option<&Resolution>, next: &Resolution) -> Vec<Update> {
    let mut out = Vec::new();
    let added: Vec<WeightedAddr> = next
        .endpoints
        .values()
        .filter(|ep| prev.and_then(|p| p.endpoints.get(&ep.addr)) != Some(*ep))
        .map(weighted)
        .collect();
    if !added.is_empty() {
        let set_labels: HashMap<String, String> = next
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.push(Update {
            update: Some(update::Update::Add(WeightedAddrSet {
                addrs: added,
                metric_labels: set_labels,
            })),
        });
    }
    let removed: Vec<TcpAddress> = prev
        .iter()
        .flat_map(|p| p.endpoints.keys())
        .filter(|a| !next.endpoints.contains_key(a))
        .map(|a| TcpAddress::from(*a))
        .collect();
    if !removed.is_empty() {
        out.push(Update {
            update: Some(update::Update::Remove(AddrSet { addrs: removed })),
        });
    }
    if next.endpoints.is_empty() {
        let announce = match prev {
            None => true,
            Some(p) => !p.endpoints.is_empty() || p.exists != next.exists,
        };
        if announce {
            out.push(Update {
                update: Some(update::Update::NoEndpoints(NoEndpoints {
                    exists: next.exists,
                })),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::feed::files::parse_documents;

    const YAML: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: admin, port: 9000}
---
apiVersion: v1
kind: Endpoints
metadata: {name: web, namespace: shop}
subsets:
- addresses:
  - ip: 127.0.0.1
    targetRef: {kind: Pod, name: web-1}
  - ip: 127.0.0.2
    targetRef: {kind: Pod, name: web-2}
  notReadyAddresses:
  - ip: 127.0.0.9
  ports:
  - {name: http, port: 24143}
  - {name: admin, port: 29000}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  namespace: shop
  annotations: {linkerd.io/inject: enabled}
  labels: {pod-template-hash: abc12}
  ownerReferences:
  - {apiVersion: apps/v1, kind: ReplicaSet, name: web-abc12, uid: u, controller: true}
spec:
  serviceAccountName: web
  containers: [{name: app}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-2, namespace: shop}
spec:
  containers: [{name: app}]
";

    fn snap() -> Snapshot {
        Snapshot::from_objects(
            parse_documents(std::path::Path::new("t.yaml"), YAML)
                .unwrap()
                .objects,
        )
    }

    fn target(port: u16) -> Target {
        Target {
            namespace: "shop".into(),
            service: "web".into(),
            port,
        }
    }

    #[test]
    fn resolves_ports_identities_and_labels() {
        let r = resolve_service(&snap(), &target(80), "cluster.local");
        assert!(r.exists);
        let addrs: Vec<String> = r.endpoints.keys().map(|a| a.to_string()).collect();
        assert_eq!(addrs, ["127.0.0.1:24143", "127.0.0.2:24143"]);
        let meshed = &r.endpoints.values().next().unwrap();
        assert_eq!(
            meshed.identity.as_deref(),
            Some("web.shop.serviceaccount.identity.weft.cluster.local")
        );
        assert!(meshed.h2);
        assert_eq!(meshed.labels["deployment"], "web");
        assert_eq!(meshed.labels["serviceaccount"], "web");
        let plain = r.endpoints.values().nth(1).unwrap();
        assert_eq!(plain.identity, None);
        assert!(!plain.h2);
        assert_eq!(plain.labels["serviceaccount"], "default");

        let admin = resolve_service(&snap(), &target(9000), "cluster.local");
        assert_eq!(admin.endpoints.keys().next().unwrap().port(), 29000);
        let missing = resolve_service(
            &snap(),
            &Target {
                service: "nope".into(),
                ..target(80)
            },
            "cluster.local",
        );
        assert_eq!(missing, Resolution::default());
    }

    #[test]
    fn diffs_add_remove_and_no_endpoints() {
        let full = resolve_service(&snap(), &target(80), "cluster.local");
        let first = diff(None, &full);
        assert_eq!(first.len(), 1);
        assert!(diff(Some(&full), &full).is_empty());
        let mut one = full.clone();
        let gone = *one.endpoints.keys().nth(1).unwrap();
        one.endpoints.remove(&gone);
        let d = diff(Some(&full), &one);
        assert!(
            matches!(&d[..], [Update { update: Some(update::Update::Remove(s)) }] if s.addrs == vec![TcpAddress::from(gone)])
        );
        let empty = Resolution {
            exists: true,
            endpoints: BTreeMap::new(),
            ..full.clone()
        };
        let d = diff(Some(&one), &empty);
        assert!(matches!(
            &d[..],
            [
                Update {
                    update: Some(update::Update::Remove(_))
                },
                Update {
                    update: Some(update::Update::NoEndpoints(NoEndpoints { exists: true }))
                }
            ]
        ));
        let d = diff(Some(&empty), &Resolution::default());
        assert!(matches!(
            &d[..],
            [Update {
                update: Some(update::Update::NoEndpoints(NoEndpoints { exists: false }))
            }]
        ));
    }

    #[test]
    fn resolves_pod_ip_authorities() {
        let pods = format!(
            "{YAML}---
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  namespace: shop
  annotations: {{linkerd.io/inject: enabled, config.linkerd.io/opaque-ports: '3306'}}
  labels: {{pod-template-hash: abc12}}
  ownerReferences:
  - {{apiVersion: apps/v1, kind: ReplicaSet, name: web-abc12, uid: u, controller: true}}
spec:
  serviceAccountName: web
  containers: [{{name: app}}]
status: {{phase: Running, podIP: 10.1.2.3}}
---
apiVersion: v1
kind: Pod
metadata: {{name: twin-a, namespace: shop}}
spec: {{containers: [{{name: app}}]}}
status: {{phase: Running, podIP: 10.1.2.9}}
---
apiVersion: v1
kind: Pod
metadata: {{name: twin-b, namespace: other}}
spec: {{containers: [{{name: app}}]}}
status: {{phase: Running, podIPs: [{{ip: 10.1.2.9}}]}}
"
        );
        let snap = Snapshot::from_objects(
            parse_documents(std::path::Path::new("t.yaml"), &pods)
                .unwrap()
                .objects,
        );
        let addr: SocketAddr = "10.1.2.3:8080".parse().unwrap();
        let r = resolve(&snap, &Authority::Addr(addr), "cluster.local");
        assert!(r.exists);
        assert_eq!(
            r.labels,
            [("namespace".to_owned(), "shop".to_owned())].into()
        );
        let ep = &r.endpoints[&addr];
        assert_eq!(
            ep.identity.as_deref(),
            Some("web.shop.serviceaccount.identity.weft.cluster.local")
        );
        assert!(ep.h2);
        assert_eq!(ep.labels["pod"], "web-1");
        assert_eq!(ep.labels["deployment"], "web");
        assert!(!ep.labels.contains_key("service"));
        let d = diff(None, &r);
        assert!(
            matches!(&d[..], [Update { update: Some(update::Update::Add(set)) }]
                if set.addrs.len() == 1 && set.metric_labels["namespace"] == "shop"),
            "{d:?}"
        );

        let p = pod_profile(&snap, addr, "cluster.local");
        assert_eq!(p.endpoint, Some(weighted(ep)));
        assert!(!p.opaque_protocol);
        assert!(p.fully_qualified_name.is_empty());
        assert_eq!(p.retry_budget.as_ref().unwrap().min_retries_per_second, 10);
        assert!(
            pod_profile(&snap, "10.1.2.3:3306".parse().unwrap(), "cluster.local").opaque_protocol
        );

        // Unknown and ambiguous IPs resolve to nothing.
        for ip in ["10.1.2.4:8080", "10.1.2.9:8080"] {
            let addr: SocketAddr = ip.parse().unwrap();
            assert_eq!(
                resolve_pod(&snap, addr, "cluster.local"),
                Resolution::default(),
                "{ip}"
            );
            assert_eq!(
                pod_profile(&snap, addr, "cluster.local").endpoint,
                None,
                "{ip}"
            );
        }
        assert!(matches!(
            &diff(None, &Resolution::default())[..],
            [Update {
                update: Some(update::Update::NoEndpoints(NoEndpoints { exists: false }))
            }]
        ));
    }
}
