//! `io.linkerd.proxy.inbound.InboundServerPolicies`: the inbound policy of
//! a pod port, as docs/policy.md ("On the wire") specifies it.
//!
//! [`port_policy`] is the whole translation, pure over one store
//! [`Snapshot`]; the gRPC service ([`service`]) and `weft authz` (through
//! the metrics API) call it.
//!
//! - A pod no TrafficTarget governs gets the default server of its default
//!   policy (pod annotation > namespace annotation > the install's
//!   `--default-inbound-policy`; an annotation that does not parse means
//!   `deny`), built by `weft-policy`.
//! - A pod some TrafficTarget governs (one in the pod's namespace whose
//!   destination is the pod's ServiceAccount; see [`targets`]) gets a
//!   server labelled `access.smi-spec.io`/`serviceaccount`/SA: a
//!   server-level authorization per TrafficTarget with only TCPRoute rules
//!   that selects the port, one HTTP route per HTTPRouteGroup rule of a
//!   TrafficTarget that selects the port, and the `audit` authorization
//!   last when the pod's default policy is `audit`.
//! - `protocol` is `Opaque` on the pod's opaque ports, else `Detect` with
//!   the `probe` route (the kubelet's `httpGet` paths on the port), the SMI
//!   routes and the catch-all `default` route.
//!
//! What cannot be applied (a missing route resource or match, a source
//! that names no identity, a bad annotation) narrows access and is listed
//! in [`PortPolicy::warnings`]; the feeds' reconciler (`feed::access`)
//! reports the same problems as logs and Kubernetes Events.

pub mod pod;
pub mod service;
pub mod targets;
#[cfg(test)]
mod tests;

use crate::store::{ObjectKey, Snapshot};
use linkerd2_proxy_api::inbound::Server;
use weft_policy::DefaultPolicy;

pub use service::InboundPolicyService;

/// Install-wide inputs of inbound policy.
#[derive(Clone, Debug)]
pub struct InboundSettings {
    /// The install's `--default-inbound-policy`.
    pub default_policy: weft_policy::DefaultPolicy,
    /// The install's `--cluster-networks` (what `cluster-*` policies admit).
    pub cluster_networks: Vec<ipnet::IpNet>,
    /// The mesh's trust domain (source identities are
    /// `SA.NS.serviceaccount.identity.weft.TRUST_DOMAIN`).
    pub trust_domain: String,
}

/// One port's server and what could not be applied.
#[derive(Clone, Debug, PartialEq)]
pub struct PortPolicy {
    /// What the proxy receives.
    pub server: Server,
    /// Human-readable notes about what could not be applied and why (each
    /// narrowed access).
    pub warnings: Vec<String>,
}

/// Why a lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The pod is not in the store.
    #[error("unknown pod {0}")]
    UnknownPod(crate::store::ObjectKey),
}

/// The inbound policy of `pod`'s `port` in `snapshot`.
pub fn port_policy(
    snapshot: &Snapshot,
    settings: &InboundSettings,
    pod: &ObjectKey,
    port: u16,
) -> Result<PortPolicy, LookupError> {
    let p = snapshot
        .pods
        .get(pod)
        .ok_or_else(|| LookupError::UnknownPod(pod.clone()))?;
    let namespace = snapshot.namespaces.get(&pod.namespace).map(|n| &**n);
    let mut warnings = Vec::new();
    let (policy, bad) = pod::default_policy(pod, p, namespace, settings.default_policy);
    warnings.extend(bad.map(|b| b.to_string()));
    let opaque = pod::is_opaque(p, namespace, port);
    let probes = pod::probe_paths(p, port);
    let sa = pod::service_account(p);
    let nets = &settings.cluster_networks;

    let mut governed = false;
    let mut authorizations = Vec::new();
    let mut smi_routes = Vec::new();
    for (key, tt) in snapshot.targets_of(&pod.namespace, sa) {
        governed = true;
        let resolved = targets::resolve(snapshot, &key, tt, &settings.trust_domain);
        warnings.extend(
            resolved
                .problems
                .iter()
                .map(|p| format!("TrafficTarget {key}: {p}")),
        );
        let c = resolved.contribution(port);
        if opaque && !c.routes.is_empty() {
            warnings.push(format!(
                "TrafficTarget {key}: port {port} is opaque, so its HTTPRouteGroup rules cannot apply there"
            ));
        }
        authorizations.extend(c.authorizations);
        smi_routes.extend(c.routes);
    }
    if !governed {
        return Ok(PortPolicy {
            server: weft_policy::default_server(policy, nets, opaque, &probes),
            warnings,
        });
    }
    if policy == DefaultPolicy::Audit {
        authorizations.extend(weft_policy::default_authorizations(policy, nets));
    }
    let routes = weft_policy::probe_route(&probes)
        .into_iter()
        .chain(smi_routes)
        .chain(std::iter::once(weft_policy::default_route()))
        .collect();
    Ok(PortPolicy {
        server: Server {
            protocol: Some(weft_policy::protocol(opaque, routes)),
            server_ips: Vec::new(),
            authorizations,
            labels: weft_policy::labels(targets::ACCESS_GROUP, targets::SERVER_KIND, sa),
        },
        warnings,
    })
}
