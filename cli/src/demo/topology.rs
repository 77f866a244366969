//! The demo mesh as a cluster would describe it: its workloads, the
//! identity material they get certificates from, and the config dir of
//! plain Kubernetes YAML the controller serves discovery, the TrafficSplit
//! and the ServiceProfile from (see `docs/destination.md`, the file feed).
//!
//! ```text
//! traffic ─► web ─┬─► books ══ TrafficSplit ══╦═ 90 ═► books-v1
//!                 │                           ╚═ 10 ═► books-v2
//!                 └─► authors (fails 1 request in 20)
//! ```
//!
//! Every workload is one Deployment-owned Pod on `127.0.0.1` with its own
//! ServiceAccount (so its own mTLS identity) and its own `weft-proxy`;
//! the Endpoints name each pod's proxy inbound listener, as on a laptop
//! without iptables.

use super::ports::Plan;
use anyhow::Context;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The namespace of every demo object.
pub const NAMESPACE: &str = "weft-demo";

/// The port every demo Service exposes (`web.weft-demo.svc.cluster.local:8080`).
pub const SERVICE_PORT: u16 = 8080;

/// How long the demo's file-mode tokens are valid: far beyond any run.
const TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// What runs behind a workload's proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum App {
    /// The load generator: sends to `web`, serves nothing.
    Traffic,
    /// The front end: asks `books` for a book, then `authors` for its
    /// author.
    Web,
    /// One version of the books service (a TrafficSplit leaf).
    Books {
        /// `v1` or `v2`, shown in its answers.
        version: &'static str,
        /// Extra time each answer takes, so the versions differ in
        /// `weft stat`.
        delay: Duration,
    },
    /// The authors service, failing one request in 20 with a 500.
    Authors,
}

// === impl App ===

impl App {
    /// Whether it listens (all but the load generator).
    pub fn serves(self) -> bool {
        self != Self::Traffic
    }
}

/// One workload: a Deployment with one Pod.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    /// The Deployment's name, also its ServiceAccount (its identity).
    pub name: &'static str,
    /// The `app` label of its Pod (`books` for both versions).
    pub label: &'static str,
    /// What it runs.
    pub app: App,
    /// The Services whose Endpoints hold this Pod.
    pub services: &'static [&'static str],
}

/// Every workload, in the order of their ports and of the printed table.
pub const WORKLOADS: [Workload; 5] = [
    Workload {
        name: "traffic",
        label: "traffic",
        app: App::Traffic,
        services: &[],
    },
    Workload {
        name: "web",
        label: "web",
        app: App::Web,
        services: &["web"],
    },
    Workload {
        name: "books-v1",
        label: "books",
        app: App::Books {
            version: "v1",
            delay: Duration::ZERO,
        },
        services: &["books", "books-v1"],
    },
    Workload {
        name: "books-v2",
        label: "books",
        app: App::Books {
            version: "v2",
            delay: Duration::from_millis(15),
        },
        services: &["books", "books-v2"],
    },
    Workload {
        name: "authors",
        label: "authors",
        app: App::Authors,
        services: &["authors"],
    },
];

/// The Services, in file order.
const SERVICES: [&str; 5] = ["web", "books", "books-v1", "books-v2", "authors"];

/// The TrafficSplit of `books`: leaf Service and weight. 10 % of ~15
/// requests a second reaches `books-v2` about 30 times in 20 s, so the
/// edge is seen in every `--duration 20s` run.
pub const SPLIT: [(&str, u32); 2] = [("books-v1", 90), ("books-v2", 10)];

/// The edges `--duration` checks: client workload → server workload.
pub const EDGES: [(&str, &str); 4] = [
    ("traffic", "web"),
    ("web", "books-v1"),
    ("web", "books-v2"),
    ("web", "authors"),
];

/// `http://SERVICE.weft-demo.svc.cluster.local:8080PATH`: what apps ask
/// their proxy for.
pub fn service_url(service: &str, path: &str) -> String {
    format!("http://{service}.{NAMESPACE}.svc.cluster.local:{SERVICE_PORT}{path}")
}

/// The identity a workload's certificate names.
pub fn identity(workload: &str) -> String {
    format!(
        "{workload}.{NAMESPACE}.{}.{}",
        weft_identity::IDENTITY_INFIX,
        weft_identity::DEFAULT_TRUST_DOMAIN
    )
}

// === impl Workload ===

impl Workload {
    /// The `pod-template-hash` of its ReplicaSet: stable per name, in the
    /// alphabet Kubernetes uses for them.
    pub fn template_hash(&self) -> String {
        short_name(self.name, 10)
    }

    /// `NAME-HASH-SUFFIX`, as a Deployment's pods are named.
    pub fn pod_name(&self) -> String {
        let suffix = short_name(&format!("{}/pod", self.name), 5);
        format!("{}-{}-{suffix}", self.name, self.template_hash())
    }

    /// `WEFT_PROXY_WORKLOAD` of its proxy, so its metrics carry
    /// `namespace`, `pod` and `deployment`.
    pub fn proxy_workload(&self) -> String {
        format!("{NAMESPACE}/deployment/{}/{}", self.name, self.pod_name())
    }
}

/// `len` characters of Kubernetes' name alphabet (no vowels, no look-alike
/// digits), derived from `seed` with FNV-1a so every run names pods alike.
fn short_name(seed: &str, len: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (0..len)
        .map(|_| {
            let c = ALPHABET[(h % ALPHABET.len() as u64) as usize] as char;
            h /= ALPHABET.len() as u64;
            h = h.wrapping_mul(0x0100_0000_01b3) ^ 0x9e37_79b9;
            c
        })
        .collect()
}

/// The files the demo made in its directory.
#[derive(Clone, Debug)]
pub struct Material {
    /// `weft identity init` output, the controller's `--identity-dir`.
    pub identity_dir: PathBuf,
    /// The trust anchors every proxy verifies peers against.
    pub anchors: PathBuf,
    /// Each workload's file-mode token, in [`WORKLOADS`] order.
    pub tokens: Vec<PathBuf>,
    /// The controller's `--config-dir`.
    pub config_dir: PathBuf,
    /// Where the child processes log.
    pub log_dir: PathBuf,
}

/// Writes the identity material, one token per ServiceAccount and the
/// config dir under `dir`.
pub fn write(dir: &Path, plan: &Plan) -> anyhow::Result<Material> {
    let identity_dir = dir.join("identity");
    weft_identity::init(&identity_dir, &weft_identity::InitOptions::default())
        .context("making the demo's identity material")?;
    let id = weft_identity::IdentityDir::new(&identity_dir);
    let key = id.load_token_key()?;

    let token_dir = dir.join("tokens");
    std::fs::create_dir(&token_dir).with_context(|| format!("creating {}", token_dir.display()))?;
    let mut tokens = Vec::with_capacity(WORKLOADS.len());
    for w in &WORKLOADS {
        let token = weft_identity::mint_token(&key, NAMESPACE, w.name, TOKEN_TTL)?;
        let path = token_dir.join(format!("{}.token", w.name));
        write_private(&path, &token)?;
        tokens.push(path);
    }

    let config_dir = dir.join("config");
    std::fs::create_dir(&config_dir)
        .with_context(|| format!("creating {}", config_dir.display()))?;
    for (name, text) in config_files(plan) {
        let path = config_dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }

    let log_dir = dir.join("logs");
    std::fs::create_dir(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    Ok(Material {
        anchors: id.ca_crt(),
        identity_dir,
        tokens,
        config_dir,
        log_dir,
    })
}

/// Writes a secret (mode 0600).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(f, "{text}").with_context(|| format!("writing {}", path.display()))
}

/// The config dir: file name and contents, as `kubectl apply` would take
/// them.
pub fn config_files(plan: &Plan) -> Vec<(&'static str, String)> {
    vec![
        ("workloads.yaml", workloads_yaml(plan)),
        ("services.yaml", services_yaml(plan)),
        ("books-split.yaml", split_yaml()),
        ("books-profile.yaml", profile_yaml()),
    ]
}

/// The namespace, one ServiceAccount and one Pod per workload.
fn workloads_yaml(plan: &Plan) -> String {
    let mut out = format!(
        "# The weft demo's workloads: one Deployment-owned Pod each, meshed, on 127.0.0.1.\n\
apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NAMESPACE}\n  annotations:\n    linkerd.io/inject: enabled\n"
    );
    for (w, ports) in WORKLOADS.iter().zip(&plan.pods) {
        let hash = w.template_hash();
        let container_port = ports
            .app
            .map(|a| {
                format!(
                    "    ports:\n    - {{name: http, containerPort: {}}}\n",
                    a.port()
                )
            })
            .unwrap_or_default();
        let version = match w.app {
            App::Books { version, .. } => format!("\n    version: {version}"),
            _ => String::new(),
        };
        let _ = write!(
            out,
            "---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {name}
  namespace: {NAMESPACE}
---
apiVersion: v1
kind: Pod
metadata:
  name: {pod}
  namespace: {NAMESPACE}
  labels:
    app: {label}{version}
    pod-template-hash: {hash}
  annotations:
    linkerd.io/inject: enabled
    config.linkerd.io/admin-port: \"{admin}\"
  ownerReferences:
  - apiVersion: apps/v1
    kind: ReplicaSet
    name: {name}-{hash}
    uid: {NAMESPACE}-{name}-{hash}
    controller: true
spec:
  serviceAccountName: {name}
  containers:
  - name: {name}
    image: weft-demo/{label}
{container_port}status:
  phase: Running
  podIP: 127.0.0.1
  podIPs:
  - ip: 127.0.0.1
",
            name = w.name,
            pod = w.pod_name(),
            label = w.label,
            admin = ports.admin.port(),
        );
    }
    out
}

/// A Service per backend and its Endpoints: each Pod's proxy inbound
/// listener, with `targetRef` naming the Pod.
fn services_yaml(plan: &Plan) -> String {
    let mut out = String::from(
        "# The weft demo's Services. Each Endpoints address is a pod's proxy inbound listener.\n",
    );
    for (i, service) in SERVICES.iter().enumerate() {
        let selector = WORKLOADS
            .iter()
            .find(|w| w.services.contains(service))
            .map(|w| match (w.app, service.strip_prefix("books-")) {
                (App::Books { .. }, Some(version)) => {
                    format!("{{app: {}, version: {version}}}", w.label)
                }
                _ => format!("{{app: {}}}", w.label),
            })
            .unwrap_or_default();
        if i > 0 {
            out.push_str("---\n");
        }
        let _ = write!(
            out,
            "apiVersion: v1
kind: Service
metadata:
  name: {service}
  namespace: {NAMESPACE}
spec:
  selector: {selector}
  ports:
  - name: http
    port: {SERVICE_PORT}
    targetPort: http
---
apiVersion: v1
kind: Endpoints
metadata:
  name: {service}
  namespace: {NAMESPACE}
subsets:
"
        );
        for (w, ports) in WORKLOADS.iter().zip(&plan.pods) {
            if !w.services.contains(service) {
                continue;
            }
            let _ = write!(
                out,
                "- addresses:
  - ip: 127.0.0.1
    targetRef: {{kind: Pod, name: {pod}, namespace: {NAMESPACE}}}
  ports:
  - name: http
    port: {inbound}   # {name}'s proxy inbound
",
                pod = w.pod_name(),
                name = w.name,
                inbound = ports.inbound.port(),
            );
        }
    }
    out
}

/// `books` split 90/10 over its two versions.
fn split_yaml() -> String {
    let mut out = format!(
        "# Edit the weights: the controller reloads this file and proxies follow within a second.
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata:
  name: books-split
  namespace: {NAMESPACE}
spec:
  service: books
  backends:
"
    );
    for (leaf, weight) in SPLIT {
        let _ = writeln!(out, "  - service: {leaf}\n    weight: {weight}");
    }
    out
}

/// Routes of `books`: a retryable `GET /books/{id}`, a non-retryable
/// list, and a retry budget.
fn profile_yaml() -> String {
    format!(
        "apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata:
  name: books.{NAMESPACE}.svc.cluster.local
  namespace: {NAMESPACE}
spec:
  routes:
  - name: 'GET /books/{{id}}'
    condition:
      method: GET
      pathRegex: '/books/[^/]+'
    responseClasses:
    - condition:
        status: {{min: 500, max: 599}}
      isFailure: true
    isRetryable: true
    timeout: 1s
  - name: GET /books
    condition:
      method: GET
      pathRegex: /books
    timeout: 2s
  retryBudget:
    retryRatio: 0.2
    minRetriesPerSecond: 10
    ttl: 10s
"
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
    use weft_smi_crds::documents::{parse_documents, AnyObject};

    fn plan() -> Plan {
        Plan::new(24000, "127.0.0.1:9990".parse().unwrap(), None, None).unwrap()
    }

    /// Every document decodes as its kind (with the loader the
    /// controller's file feed uses) and passes validation.
    fn objects() -> Vec<AnyObject> {
        let mut all = Vec::new();
        for (name, text) in config_files(&plan()) {
            let docs = parse_documents(&text).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
            for d in docs {
                d.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
                all.push(d);
            }
        }
        all
    }

    fn typed<T: serde::de::DeserializeOwned>(objects: &[AnyObject], kind: &str) -> Vec<T> {
        objects
            .iter()
            .filter_map(|o| match o {
                AnyObject::Other {
                    kind: k, object, ..
                } if k == kind => Some(serde_json::from_value(object.clone()).unwrap()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn pods_are_meshed_deployment_pods_with_their_admin_port() {
        let objects = objects();
        let pods: Vec<Pod> = typed(&objects, "Pod");
        assert_eq!(pods.len(), WORKLOADS.len());
        for (pod, (w, ports)) in pods.iter().zip(WORKLOADS.iter().zip(&plan().pods)) {
            let meta = &pod.metadata;
            assert_eq!(meta.name.as_deref(), Some(w.pod_name().as_str()));
            let annotations = meta.annotations.as_ref().unwrap();
            assert_eq!(annotations["linkerd.io/inject"], "enabled");
            assert_eq!(
                annotations["config.linkerd.io/admin-port"],
                ports.admin.port().to_string()
            );
            let owner = &meta.owner_references.as_ref().unwrap()[0];
            let hash = &meta.labels.as_ref().unwrap()["pod-template-hash"];
            assert_eq!(owner.name, format!("{}-{hash}", w.name));
            assert_eq!(owner.controller, Some(true));
            assert_eq!(
                pod.spec.as_ref().unwrap().service_account_name.as_deref(),
                Some(w.name)
            );
            let status = pod.status.as_ref().unwrap();
            assert_eq!(status.pod_ip.as_deref(), Some("127.0.0.1"));
        }
    }

    #[test]
    fn endpoints_name_each_pods_proxy_inbound() {
        let objects = objects();
        let services: Vec<Service> = typed(&objects, "Service");
        let endpoints: Vec<Endpoints> = typed(&objects, "Endpoints");
        assert_eq!(services.len(), SERVICES.len());
        let plan = plan();
        for eps in &endpoints {
            let name = eps.metadata.name.as_deref().unwrap();
            let backing: Vec<_> = WORKLOADS
                .iter()
                .zip(&plan.pods)
                .filter(|(w, _)| w.services.contains(&name))
                .collect();
            let subsets = eps.subsets.as_ref().unwrap();
            assert_eq!(subsets.len(), backing.len(), "{name}");
            for (subset, (w, ports)) in subsets.iter().zip(backing) {
                let addr = &subset.addresses.as_ref().unwrap()[0];
                assert_eq!(addr.ip, "127.0.0.1");
                let target = addr.target_ref.as_ref().unwrap();
                assert_eq!(target.name.as_deref(), Some(w.pod_name().as_str()));
                assert_eq!(
                    subset.ports.as_ref().unwrap()[0].port,
                    i32::from(ports.inbound.port())
                );
            }
        }
    }

    #[test]
    fn books_is_split_and_profiled() {
        let objects = objects();
        let split = objects
            .iter()
            .find_map(|o| match o {
                AnyObject::TrafficSplit(s) => Some(s.to_split().unwrap()),
                _ => None,
            })
            .unwrap();
        assert_eq!(split.service, "books");
        let leaves: Vec<_> = split.backends.iter().map(|b| b.service.as_str()).collect();
        assert_eq!(leaves, ["books-v1", "books-v2"]);
        let profile = objects
            .iter()
            .find_map(|o| match o {
                AnyObject::ServiceProfile(p) => Some(p.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            profile.metadata.name.as_deref(),
            Some("books.weft-demo.svc.cluster.local")
        );
        let routes = &profile.spec.routes;
        assert_eq!(routes.len(), 2);
        assert!(routes[0].is_retryable);
        assert!(!routes[1].is_retryable);
        assert!(profile.spec.retry_budget.is_some());
    }

    #[test]
    fn pod_names_look_like_a_deployments() {
        let web = &WORKLOADS[1];
        let hash = web.template_hash();
        assert_eq!(hash.len(), 10);
        let pod = web.pod_name();
        assert!(pod.starts_with(&format!("web-{hash}-")), "{pod}");
        assert_eq!(
            web.proxy_workload(),
            format!("weft-demo/deployment/web/{pod}")
        );
        assert_ne!(WORKLOADS[2].template_hash(), WORKLOADS[3].template_hash());
        assert_eq!(
            identity("web"),
            "web.weft-demo.serviceaccount.identity.weft.cluster.local"
        );
    }
}
