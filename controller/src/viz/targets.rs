//! Which proxies the metrics API scrapes, read from the object store.
//!
//! A target is a Pod that runs a proxy — a `weft-proxy` container (or
//! native sidecar), or, in a config dir where nothing injects, the
//! `linkerd.io/inject: enabled` annotation — and has not finished. (The
//! control plane's own pods carry the mesh's label but run no proxy.) Its proxy's admin server is at the
//! Pod IP and, in order, the port of the `config.linkerd.io/admin-port`
//! annotation, the container port named `weft-admin` (or Linkerd's
//! `linkerd-admin`), or 4191. In file mode a Pod without `status.podIP` is
//! taken to be on `127.0.0.1`, where a laptop's proxies listen; in cluster
//! mode such a Pod is not scheduled yet and is skipped.

use crate::destination::endpoints::{inject_annotated, owner, service_account};
use crate::store::{ObjectKey, Snapshot};
use k8s_openapi::api::core::v1::Pod;
use std::net::{IpAddr, SocketAddr};
use weft_inject::names;

/// Linkerd's annotation naming the proxy's admin port.
pub const ADMIN_PORT_ANNOTATION: &str = "config.linkerd.io/admin-port";
/// Container port names that mark the proxy's admin port.
pub const ADMIN_PORT_NAMES: [&str; 2] = ["weft-admin", "linkerd-admin"];
/// The proxy's admin port when nothing says otherwise.
pub const DEFAULT_ADMIN_PORT: u16 = 4191;

/// One proxy to scrape, and what the controller knows about its pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The pod (`namespace/name`).
    pub pod: ObjectKey,
    /// Its proxy's admin server.
    pub addr: SocketAddr,
    /// The pod's workload as a metric label and name (`deployment`, `web`).
    pub owner: Option<(&'static str, String)>,
    /// The pod's ServiceAccount, whose identity its proxy holds.
    pub service_account: String,
}

/// Every meshed, unfinished pod with an address; `default_ip` stands in
/// for a missing Pod IP (file mode).
pub fn targets(snapshot: &Snapshot, default_ip: Option<IpAddr>) -> Vec<Target> {
    snapshot
        .pods
        .iter()
        .filter(|(_, pod)| runs_proxy(pod) && !finished(pod))
        .filter_map(|(key, pod)| {
            let ip = pod_ip(pod).or(default_ip)?;
            Some(Target {
                pod: key.clone(),
                addr: SocketAddr::new(ip, admin_port(pod)),
                owner: owner(pod),
                service_account: service_account(pod),
            })
        })
        .collect()
}

/// Whether the pod runs a Weft proxy (see the module docs).
pub fn runs_proxy(pod: &Pod) -> bool {
    let in_spec = pod.spec.as_ref().is_some_and(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .any(|c| c.name == names::PROXY_CONTAINER)
    });
    in_spec || inject_annotated(pod)
}

/// Whether the pod has run to completion (its proxy is gone).
pub fn finished(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed")
}

fn pod_ip(pod: &Pod) -> Option<IpAddr> {
    pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
}

/// The admin port: annotation, then named container port, then 4191.
fn admin_port(pod: &Pod) -> u16 {
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ADMIN_PORT_ANNOTATION))
        .and_then(|v| v.trim().parse::<u16>().ok())
        .filter(|p| *p != 0);
    let named = || {
        pod.spec.as_ref()?.containers.iter().find_map(|c| {
            c.ports.as_ref()?.iter().find_map(|p| {
                let name = p.name.as_deref()?;
                ADMIN_PORT_NAMES
                    .contains(&name)
                    .then(|| u16::try_from(p.container_port).ok())
                    .flatten()
            })
        })
    };
    annotated.or_else(named).unwrap_or(DEFAULT_ADMIN_PORT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Object;
    use std::sync::Arc;

    fn pod(yaml: &str) -> Object {
        Object::Pod(Arc::new(serde_yaml::from_str(yaml).unwrap()))
    }

    #[test]
    fn meshed_pods_are_targets_at_their_admin_port() {
        let snap = Snapshot::from_objects([
            pod(r#"
metadata:
  name: web-5d8f-abcde
  namespace: shop
  labels: {pod-template-hash: 5d8f}
  annotations: {linkerd.io/inject: enabled, config.linkerd.io/admin-port: "24191"}
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-5d8f, uid: u, controller: true}]
spec: {serviceAccountName: web, containers: [{name: app}]}
"#),
            pod(r#"
metadata: {name: db-0, namespace: shop}
spec:
  containers:
  - name: weft-proxy
    ports: [{name: weft-admin, containerPort: 4999}]
status: {podIP: 10.0.0.7, phase: Running}
"#),
            pod(r#"
metadata: {name: weft-controller-1, namespace: weft, labels: {linkerd.io/control-plane-ns: weft}}
spec: {containers: [{name: controller}]}
status: {podIP: 10.0.0.6}
"#),
            pod(r#"
metadata: {name: plain, namespace: shop}
spec: {containers: [{name: app}]}
status: {podIP: 10.0.0.8}
"#),
            pod(r#"
metadata: {name: done, namespace: shop, annotations: {linkerd.io/inject: enabled}}
spec: {containers: [{name: app}]}
status: {podIP: 10.0.0.9, phase: Succeeded}
"#),
        ]);
        let file = targets(&snap, Some(IpAddr::from([127, 0, 0, 1])));
        let addrs: Vec<_> = file
            .iter()
            .map(|t| (t.pod.to_string(), t.addr.to_string()))
            .collect();
        assert_eq!(
            addrs,
            [
                ("shop/db-0".to_owned(), "10.0.0.7:4999".to_owned()),
                (
                    "shop/web-5d8f-abcde".to_owned(),
                    "127.0.0.1:24191".to_owned()
                ),
            ]
        );
        assert_eq!(file[1].owner, Some(("deployment", "web".to_owned())));
        assert_eq!(file[1].service_account, "web");
        // In cluster mode a pod without an IP is not running yet.
        let cluster = targets(&snap, None);
        assert_eq!(cluster.len(), 1);
        assert_eq!(cluster[0].pod.name, "db-0");
    }
}
