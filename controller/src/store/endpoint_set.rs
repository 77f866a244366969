//! One internal shape for "the endpoints of a Service", whichever object
//! listed them: core/v1 `Endpoints` (the file feed, and API servers
//! without `discovery.k8s.io/v1`) or the `discovery.k8s.io/v1`
//! `EndpointSlice`s labelled with the Service's name.
//!
//! Translation (`destination::endpoints`) reads only [`EndpointSet`], so the
//! two sources cannot drift apart in port mapping, readiness or identity.
//! The conversion keeps what translation needs (ports by name, each
//! address with its readiness and its Pod) and drops the rest (topology,
//! hints, hostnames).

use super::ObjectKey;
use k8s_openapi::api::core::v1::{Endpoints, ObjectReference};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::net::IpAddr;

/// The label an EndpointSlice carries naming its Service (set by the
/// EndpointSlice controller and by the mirroring controller).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A Service's endpoints, merged from every object that lists them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointSet {
    /// Groups of addresses that share one port list (an Endpoints subset,
    /// or one EndpointSlice).
    pub groups: Vec<EndpointGroup>,
}

/// Addresses that expose the same ports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointGroup {
    /// The ports every address of the group listens on.
    pub ports: Vec<EndpointPort>,
    /// The addresses, ready or not.
    pub addresses: Vec<EndpointAddress>,
}

/// One named endpoint port (the name is how a Service port finds it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointPort {
    /// The port's name; empty when unnamed (as Kubernetes compares them).
    pub name: String,
    /// The port number as listed (validated by the translation).
    pub port: i32,
}

/// One endpoint address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointAddress {
    /// Where it is.
    pub ip: IpAddr,
    /// Whether it may receive traffic (`addresses` vs `notReadyAddresses`
    /// in Endpoints, `conditions.ready` in a slice).
    pub ready: bool,
    /// The Pod behind it (its `targetRef`), for identity and labels.
    pub pod: Option<ObjectKey>,
}

// === impl EndpointSet ===

impl EndpointSet {
    /// Converts a core/v1 Endpoints object in `namespace`: one group per
    /// subset, `addresses` ready and `notReadyAddresses` not.
    pub fn from_endpoints(namespace: &str, endpoints: &Endpoints) -> Self {
        let groups = endpoints
            .subsets
            .iter()
            .flatten()
            .map(|subset| {
                let ports = subset
                    .ports
                    .iter()
                    .flatten()
                    .map(|p| EndpointPort {
                        name: p.name.clone().unwrap_or_default(),
                        port: p.port,
                    })
                    .collect();
                let ready = subset.addresses.iter().flatten().map(|a| (a, true));
                let not_ready = subset
                    .not_ready_addresses
                    .iter()
                    .flatten()
                    .map(|a| (a, false));
                let addresses = ready
                    .chain(not_ready)
                    .filter_map(|(a, ready)| {
                        address(namespace, &a.ip, ready, a.target_ref.as_ref())
                    })
                    .collect();
                EndpointGroup { ports, addresses }
            })
            .collect();
        Self { groups }
    }

    /// Merges the `discovery.k8s.io/v1` EndpointSlices of one Service in
    /// `namespace`: one group per slice. FQDN slices are skipped (there is
    /// no IP to connect to), as are ports without a number ("all ports",
    /// which a Service port cannot be mapped to). Of an endpoint's
    /// addresses only the first counts (the API defines no meaning for the
    /// others); `conditions.ready` unset means ready, as the API says.
    pub fn from_slices<'a>(
        namespace: &str,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> Self {
        let groups = slices
            .into_iter()
            .filter(|s| matches!(s.address_type.as_str(), "IPv4" | "IPv6"))
            .map(|slice| {
                let ports = slice
                    .ports
                    .iter()
                    .flatten()
                    .filter_map(|p| {
                        Some(EndpointPort {
                            name: p.name.clone().unwrap_or_default(),
                            port: p.port?,
                        })
                    })
                    .collect();
                let addresses = slice
                    .endpoints
                    .iter()
                    .flatten()
                    .filter_map(|e| {
                        let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                        address(
                            namespace,
                            e.addresses.first()?,
                            ready,
                            e.target_ref.as_ref(),
                        )
                    })
                    .collect();
                EndpointGroup { ports, addresses }
            })
            .collect();
        Self { groups }
    }
}

/// The Service an EndpointSlice in `namespace` belongs to, from its
/// [`SERVICE_NAME_LABEL`]; `None` for slices not managed for a Service.
pub fn slice_service(namespace: &str, slice: &EndpointSlice) -> Option<ObjectKey> {
    let name = slice
        .metadata
        .labels
        .as_ref()?
        .get(SERVICE_NAME_LABEL)
        .filter(|n| !n.is_empty())?;
    Some(ObjectKey::new(namespace, name.clone()))
}

fn address(
    namespace: &str,
    ip: &str,
    ready: bool,
    target: Option<&ObjectReference>,
) -> Option<EndpointAddress> {
    let Ok(ip) = ip.parse::<IpAddr>() else {
        tracing::debug!(
            namespace,
            ip,
            "skipping an endpoint address that is not an IP"
        );
        return None;
    };
    Some(EndpointAddress {
        ip,
        ready,
        pod: target.and_then(|r| pod_ref(namespace, r)),
    })
}

/// The Pod a `targetRef` names (a reference without a kind counts as a
/// Pod, as in hand-written Endpoints; other kinds do not).
fn pod_ref(namespace: &str, r: &ObjectReference) -> Option<ObjectKey> {
    if r.kind.as_deref().is_some_and(|k| k != "Pod") {
        return None;
    }
    let name = r.name.clone().filter(|n| !n.is_empty())?;
    let ns = r
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| namespace.to_owned());
    Some(ObjectKey::new(ns, name))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use k8s_openapi::api::core::v1::{EndpointAddress as CoreAddress, EndpointSubset};
    use k8s_openapi::api::discovery::v1::{
        Endpoint, EndpointConditions, EndpointPort as SlicePort,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(name: &str) -> ObjectReference {
        ObjectReference {
            kind: Some("Pod".into()),
            name: Some(name.into()),
            namespace: Some("shop".into()),
            ..Default::default()
        }
    }

    fn endpoint(ip: &str, ready: Option<bool>, pod_name: Option<&str>) -> Endpoint {
        Endpoint {
            addresses: vec![ip.into()],
            conditions: Some(EndpointConditions {
                ready,
                ..Default::default()
            }),
            target_ref: pod_name.map(pod),
            ..Default::default()
        }
    }

    fn slice(
        name: &str,
        address_type: &str,
        port: Option<i32>,
        eps: Vec<Endpoint>,
    ) -> EndpointSlice {
        EndpointSlice {
            address_type: address_type.into(),
            endpoints: Some(eps),
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("shop".into()),
                labels: Some([(SERVICE_NAME_LABEL.to_owned(), "web".to_owned())].into()),
                ..Default::default()
            },
            ports: Some(vec![SlicePort {
                name: Some("http".into()),
                port,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
        }
    }

    fn ready_ips(set: &EndpointSet) -> Vec<(String, i32, Option<String>)> {
        set.groups
            .iter()
            .flat_map(|g| {
                g.addresses.iter().filter(|a| a.ready).flat_map(move |a| {
                    g.ports.iter().map(move |p| {
                        (
                            a.ip.to_string(),
                            p.port,
                            a.pod.as_ref().map(|k| k.name.clone()),
                        )
                    })
                })
            })
            .collect()
    }

    #[test]
    fn slices_merge_respect_readiness_and_keep_pods() {
        let a = slice(
            "web-abc",
            "IPv4",
            Some(8080),
            vec![
                endpoint("10.1.0.1", Some(true), Some("web-0")),
                endpoint("10.1.0.2", Some(false), Some("web-1")),
                // Unset means ready, as the API defines it.
                endpoint("10.1.0.3", None, None),
            ],
        );
        let b = slice(
            "web-def",
            "IPv4",
            Some(8081),
            vec![endpoint("10.1.0.4", Some(true), Some("web-2"))],
        );
        let fqdn = slice(
            "web-fqdn",
            "FQDN",
            Some(80),
            vec![endpoint("db.example.org", Some(true), None)],
        );
        let no_port = slice(
            "web-any",
            "IPv4",
            None,
            vec![endpoint("10.1.0.5", Some(true), None)],
        );
        let set = EndpointSet::from_slices("shop", [&a, &b, &fqdn, &no_port]);
        assert_eq!(set.groups.len(), 3, "the FQDN slice is skipped: {set:?}");
        assert_eq!(
            ready_ips(&set),
            [
                ("10.1.0.1".into(), 8080, Some("web-0".into())),
                ("10.1.0.3".into(), 8080, None),
                ("10.1.0.4".into(), 8081, Some("web-2".into())),
            ]
        );
        let not_ready: Vec<_> = set.groups[0]
            .addresses
            .iter()
            .filter(|a| !a.ready)
            .collect();
        assert_eq!(not_ready.len(), 1);
        assert_eq!(not_ready[0].ip.to_string(), "10.1.0.2");
        // A port without a number cannot serve a Service port.
        assert!(set.groups[2].ports.is_empty());
        assert_eq!(set.groups[0].ports[0].name, "http");
        assert_eq!(
            slice_service("shop", &a),
            Some(ObjectKey::new("shop", "web"))
        );
    }

    #[test]
    fn endpoints_and_equivalent_slices_convert_alike() {
        let eps = Endpoints {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("shop".into()),
                ..Default::default()
            },
            subsets: Some(vec![EndpointSubset {
                addresses: Some(vec![CoreAddress {
                    ip: "10.1.0.1".into(),
                    target_ref: Some(pod("web-0")),
                    ..Default::default()
                }]),
                not_ready_addresses: Some(vec![CoreAddress {
                    ip: "10.1.0.2".into(),
                    target_ref: Some(pod("web-1")),
                    ..Default::default()
                }]),
                ports: Some(vec![k8s_openapi::api::core::v1::EndpointPort {
                    name: Some("http".into()),
                    port: 8080,
                    ..Default::default()
                }]),
            }]),
        };
        let s = slice(
            "web-abc",
            "IPv4",
            Some(8080),
            vec![
                endpoint("10.1.0.1", Some(true), Some("web-0")),
                endpoint("10.1.0.2", Some(false), Some("web-1")),
            ],
        );
        assert_eq!(
            EndpointSet::from_endpoints("shop", &eps),
            EndpointSet::from_slices("shop", [&s])
        );
    }

    #[test]
    fn unlabelled_slices_belong_to_no_service() {
        let mut s = slice("x", "IPv4", Some(1), vec![]);
        s.metadata.labels = None;
        assert_eq!(slice_service("shop", &s), None);
    }
}
