//! Resource kinds and names as operators type them: `deploy`, `deploy/web`,
//! `svc/books`, `ns/shop`, `po/web-5d8f-x2x9z`, with the aliases kubectl and
//! Linkerd accept (`deployment`, `deployments`, `deploy`, ...).
//!
//! One parser for the CLI (which reports a typo before asking anyone) and the
//! controller (which must not trust its callers), so both accept exactly the
//! same words.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The kinds of resource the metrics API groups traffic by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceKind {
    /// Every workload in a namespace.
    Namespace,
    /// An apps/v1 Deployment (its pods, through their ReplicaSets).
    Deployment,
    /// An apps/v1 StatefulSet.
    StatefulSet,
    /// An apps/v1 DaemonSet.
    DaemonSet,
    /// A batch/v1 Job.
    Job,
    /// One pod.
    Pod,
    /// A Service, as its clients address it (outbound traffic to it).
    Service,
    /// An authority (`host:port`) as servers received it.
    Authority,
    /// An SMI TrafficSplit: traffic to its apex, per leaf.
    TrafficSplit,
}

/// Every kind, in the order `weft stat` lists them.
pub const ALL_KINDS: [ResourceKind; 9] = [
    ResourceKind::Namespace,
    ResourceKind::Deployment,
    ResourceKind::StatefulSet,
    ResourceKind::DaemonSet,
    ResourceKind::Job,
    ResourceKind::Pod,
    ResourceKind::Service,
    ResourceKind::Authority,
    ResourceKind::TrafficSplit,
];

/// A word that names no resource kind.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    /// The kind is not one the metrics API knows.
    #[error(
        "unknown resource type {0:?}; use one of: namespace (ns), deployment (deploy), \
         statefulset (sts), daemonset (ds), job, pod (po), service (svc), authority (au), \
         trafficsplit (ts)"
    )]
    UnknownKind(String),
    /// `kind/` with nothing after the slash, or more than one slash.
    #[error("malformed resource {0:?}: expected TYPE or TYPE/NAME")]
    Malformed(String),
}

// === impl ResourceKind ===

impl ResourceKind {
    /// The canonical lowercase name (`deployment`), used in JSON and URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Namespace => "namespace",
            ResourceKind::Deployment => "deployment",
            ResourceKind::StatefulSet => "statefulset",
            ResourceKind::DaemonSet => "daemonset",
            ResourceKind::Job => "job",
            ResourceKind::Pod => "pod",
            ResourceKind::Service => "service",
            ResourceKind::Authority => "authority",
            ResourceKind::TrafficSplit => "trafficsplit",
        }
    }

    /// The short name operators type and tables print (`deploy/web`).
    pub fn short(self) -> &'static str {
        match self {
            ResourceKind::Namespace => "ns",
            ResourceKind::Deployment => "deploy",
            ResourceKind::StatefulSet => "sts",
            ResourceKind::DaemonSet => "ds",
            ResourceKind::Job => "job",
            ResourceKind::Pod => "po",
            ResourceKind::Service => "svc",
            ResourceKind::Authority => "au",
            ResourceKind::TrafficSplit => "ts",
        }
    }

    /// The proxy metric label naming a workload of this kind
    /// (`deployment`, `pod`, `namespace`, ...): the proxy's own label on
    /// inbound series and, with a `dst_` prefix, the destination's label on
    /// outbound series. `None` for kinds that are not workloads.
    pub fn workload_label(self) -> Option<&'static str> {
        match self {
            ResourceKind::Namespace => Some("namespace"),
            ResourceKind::Deployment => Some("deployment"),
            ResourceKind::StatefulSet => Some("statefulset"),
            ResourceKind::DaemonSet => Some("daemonset"),
            ResourceKind::Job => Some("job"),
            ResourceKind::Pod => Some("pod"),
            ResourceKind::Service => Some("service"),
            ResourceKind::Authority | ResourceKind::TrafficSplit => None,
        }
    }

    /// Kinds whose resources are sets of pods (workloads, namespaces,
    /// pods): what `weft authz` can show.
    pub fn has_pods(self) -> bool {
        !matches!(
            self,
            ResourceKind::Service | ResourceKind::Authority | ResourceKind::TrafficSplit
        )
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ResourceKind {
    type Err = ResourceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let kind = match s.to_ascii_lowercase().as_str() {
            "ns" | "namespace" | "namespaces" => ResourceKind::Namespace,
            "deploy" | "deployment" | "deployments" | "deploys" => ResourceKind::Deployment,
            "sts" | "statefulset" | "statefulsets" => ResourceKind::StatefulSet,
            "ds" | "daemonset" | "daemonsets" => ResourceKind::DaemonSet,
            "job" | "jobs" => ResourceKind::Job,
            "po" | "pod" | "pods" => ResourceKind::Pod,
            "svc" | "service" | "services" => ResourceKind::Service,
            "au" | "authority" | "authorities" => ResourceKind::Authority,
            "ts" | "trafficsplit" | "trafficsplits" => ResourceKind::TrafficSplit,
            _ => return Err(ResourceError::UnknownKind(s.to_owned())),
        };
        Ok(kind)
    }
}

/// A kind and, optionally, one name: `deploy` (all deployments) or
/// `deploy/web`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Resource {
    /// What kind of resource.
    pub kind: ResourceKind,
    /// One resource of that kind; `None` means all of them.
    pub name: Option<String>,
}

// === impl Resource ===

impl Resource {
    /// Parses `TYPE` or `TYPE/NAME`.
    pub fn parse(text: &str) -> Result<Self, ResourceError> {
        match text.split_once('/') {
            None => Ok(Self {
                kind: text.parse()?,
                name: None,
            }),
            Some((kind, name)) if !name.is_empty() && !name.contains('/') => Ok(Self {
                kind: kind.parse()?,
                name: Some(name.to_owned()),
            }),
            Some(_) => Err(ResourceError::Malformed(text.to_owned())),
        }
    }

    /// Parses `TYPE` and an optional separate `NAME` argument, as
    /// `weft stat deploy web` is typed; `TYPE/NAME` in the first argument
    /// works too, but not both at once.
    pub fn from_args(kind: &str, name: Option<&str>) -> Result<Self, ResourceError> {
        let mut resource = Self::parse(kind)?;
        if let Some(name) = name {
            if resource.name.is_some() || name.is_empty() || name.contains('/') {
                return Err(ResourceError::Malformed(format!("{kind} {name}")));
            }
            resource.name = Some(name.to_owned());
        }
        Ok(resource)
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{}/{name}", self.kind.short()),
            None => f.write_str(self.kind.short()),
        }
    }
}

impl FromStr for Resource {
    type Err = ResourceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_name_the_same_kind() {
        for word in ["deploy", "deployment", "deployments", "DEPLOY"] {
            assert_eq!(word.parse::<ResourceKind>(), Ok(ResourceKind::Deployment));
        }
        for kind in ALL_KINDS {
            assert_eq!(kind.as_str().parse::<ResourceKind>(), Ok(kind));
            assert_eq!(kind.short().parse::<ResourceKind>(), Ok(kind));
        }
    }

    #[test]
    fn resources_parse_with_or_without_a_name() {
        let r = Resource::parse("svc/books").unwrap();
        assert_eq!(r.kind, ResourceKind::Service);
        assert_eq!(r.name.as_deref(), Some("books"));
        assert_eq!(r.to_string(), "svc/books");
        assert_eq!(Resource::parse("ns").unwrap().name, None);
        let r = Resource::from_args("deploy", Some("web")).unwrap();
        assert_eq!(r.to_string(), "deploy/web");
    }

    #[test]
    fn bad_resources_are_refused_with_the_word() {
        let e = Resource::parse("deployz/web").unwrap_err();
        assert!(e.to_string().contains("\"deployz\""), "{e}");
        assert!(matches!(
            Resource::parse("deploy/"),
            Err(ResourceError::Malformed(_))
        ));
        assert!(matches!(
            Resource::parse("deploy/a/b"),
            Err(ResourceError::Malformed(_))
        ));
        assert!(Resource::from_args("deploy/web", Some("web")).is_err());
    }
}
