//! The objects inject adds: `weft-init`, `weft-proxy` and their volumes.
//!
//! Everything is built from [`Values`] and a resolved [`ProxyConfig`] in a
//! fixed order, so the same input always gives the same pod.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction,
    HTTPGetAction, Lifecycle, LifecycleHandler, ObjectFieldSelector, PodSpec, Probe,
    ProjectedVolumeSource, ResourceRequirements, SecurityContext, ServiceAccountTokenProjection,
    Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config::ProxyConfig;
use super::{
    Owner, EXIT_WITH_APP_ENV, IDENTITY_TOKEN_AUDIENCE, IDENTITY_TOKEN_DIR,
    IDENTITY_TOKEN_EXPIRATION_SECONDS, IDENTITY_TOKEN_FILE, IDENTITY_TOKEN_VOLUME,
    XTABLES_LOCK_VOLUME,
};
use crate::names;
use crate::values::Values;

/// Everything the containers are built from.
pub(super) struct Build<'a> {
    pub values: &'a Values,
    pub cfg: &'a ProxyConfig,
    pub trust_anchors_pem: &'a str,
    pub owner: Option<&'a Owner>,
    pub exit_with_app: bool,
    /// The app containers' TCP ports (`WEFT_PROXY_INBOUND_PORTS`), sorted.
    pub inbound_ports: Vec<u16>,
}

impl Build<'_> {
    /// `weft-init`: installs the iptables redirect, then exits. Root with
    /// NET_ADMIN and NET_RAW only (iptables needs them), nothing else.
    pub fn init_container(&self) -> Container {
        let p = &self.values.proxy;
        let mut skip_inbound = p.admin_port.to_string();
        if !self.cfg.skip_inbound_ports.is_empty() {
            skip_inbound = format!("{skip_inbound},{}", self.cfg.skip_inbound_ports);
        }
        let mut command: Vec<String> = vec![
            "weft-proxy".into(),
            "init".into(),
            "--inbound-port".into(),
            p.inbound_port.to_string(),
            "--outbound-port".into(),
            p.outbound_port.to_string(),
            "--proxy-uid".into(),
            p.uid.to_string(),
            "--skip-inbound-ports".into(),
            skip_inbound,
        ];
        if !self.cfg.skip_outbound_ports.is_empty() {
            command.extend([
                "--skip-outbound-ports".into(),
                self.cfg.skip_outbound_ports.clone(),
            ]);
        }
        if !self.cfg.skip_subnets.is_empty() {
            command.extend(["--skip-subnets".into(), self.cfg.skip_subnets.clone()]);
        }
        Container {
            name: names::INIT_CONTAINER.into(),
            image: Some(self.values.proxy_image()),
            image_pull_policy: Some(self.values.image.pull_policy.clone()),
            command: Some(command),
            resources: self.resources(),
            security_context: Some(SecurityContext {
                run_as_user: Some(0),
                run_as_non_root: Some(false),
                allow_privilege_escalation: Some(false),
                read_only_root_filesystem: Some(true),
                privileged: Some(false),
                capabilities: Some(Capabilities {
                    add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
                    drop: Some(vec!["ALL".into()]),
                }),
                ..SecurityContext::default()
            }),
            volume_mounts: Some(vec![VolumeMount {
                name: XTABLES_LOCK_VOLUME.into(),
                mount_path: "/run".into(),
                ..VolumeMount::default()
            }]),
            ..Container::default()
        }
    }

    /// `weft-proxy`: the sidecar, as a regular container or (native) as an
    /// init container with `restartPolicy: Always`.
    pub fn proxy_container(&self) -> Container {
        let p = &self.values.proxy;
        let admin = IntOrString::Int(i32::from(p.admin_port));
        let http_get = |path: &str| HTTPGetAction {
            path: Some(path.into()),
            port: admin.clone(),
            ..HTTPGetAction::default()
        };
        let native = self.cfg.native_sidecar;
        Container {
            name: names::PROXY_CONTAINER.into(),
            image: Some(self.values.proxy_image()),
            image_pull_policy: Some(self.values.image.pull_policy.clone()),
            command: Some(vec!["weft-proxy".into()]),
            env: Some(self.env()),
            ports: Some(vec![
                ContainerPort {
                    name: Some("weft-proxy".into()),
                    container_port: i32::from(p.inbound_port),
                    ..ContainerPort::default()
                },
                ContainerPort {
                    name: Some("weft-admin".into()),
                    container_port: i32::from(p.admin_port),
                    ..ContainerPort::default()
                },
            ]),
            readiness_probe: Some(Probe {
                http_get: Some(http_get("/ready")),
                initial_delay_seconds: Some(2),
                timeout_seconds: Some(1),
                ..Probe::default()
            }),
            liveness_probe: Some(Probe {
                http_get: Some(http_get("/live")),
                initial_delay_seconds: Some(10),
                timeout_seconds: Some(1),
                ..Probe::default()
            }),
            // A native sidecar holds back the containers after it until its
            // startupProbe passes: that is proxy-await for sidecars.
            startup_probe: (native && self.cfg.await_ready).then(|| Probe {
                http_get: Some(http_get("/ready")),
                period_seconds: Some(1),
                timeout_seconds: Some(1),
                failure_threshold: Some(120),
                ..Probe::default()
            }),
            // A regular container's postStart hook blocks the next
            // container's start until it returns: the proxy comes first and
            // its hook waits for /ready.
            lifecycle: (!native && self.cfg.await_ready).then(|| Lifecycle {
                post_start: Some(LifecycleHandler {
                    exec: Some(ExecAction {
                        command: Some(vec!["weft-proxy".into(), "await".into()]),
                    }),
                    ..LifecycleHandler::default()
                }),
                ..Lifecycle::default()
            }),
            restart_policy: native.then(|| "Always".into()),
            resources: self.resources(),
            security_context: Some(SecurityContext {
                run_as_user: Some(p.uid),
                run_as_non_root: Some(true),
                allow_privilege_escalation: Some(false),
                read_only_root_filesystem: Some(true),
                capabilities: Some(Capabilities {
                    add: None,
                    drop: Some(vec!["ALL".into()]),
                }),
                ..SecurityContext::default()
            }),
            volume_mounts: Some(vec![VolumeMount {
                name: IDENTITY_TOKEN_VOLUME.into(),
                mount_path: IDENTITY_TOKEN_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            }]),
            ..Container::default()
        }
    }

    /// The proxy's environment (see `../shared/design.md`): the pod's
    /// names from the downward API first, because later values refer to
    /// them with `$(VAR)`.
    fn env(&self) -> Vec<EnvVar> {
        let v = self.values;
        let p = &v.proxy;
        let cd = &v.cluster_domain;
        let td = &v.identity.trust_domain;
        let field = |name: &str, path: &str| EnvVar {
            name: name.into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: path.into(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        };
        let value = |name: &str, value: String| EnvVar {
            name: name.into(),
            value: Some(value),
            ..EnvVar::default()
        };
        let (kind, name) = self.owner.map_or((String::new(), String::new()), |o| {
            (o.kind.to_lowercase(), o.name.clone())
        });
        let mut env = vec![
            field("_WEFT_POD_NS", "metadata.namespace"),
            field("_WEFT_POD_NAME", "metadata.name"),
            field("_WEFT_POD_SA", "spec.serviceAccountName"),
            value("WEFT_PROXY_LOG", self.cfg.log_level.clone()),
            value(
                "WEFT_PROXY_INBOUND_ADDR",
                format!("0.0.0.0:{}", p.inbound_port),
            ),
            value(
                "WEFT_PROXY_OUTBOUND_ADDR",
                format!("127.0.0.1:{}", p.outbound_port),
            ),
            value("WEFT_PROXY_ADMIN_ADDR", format!("0.0.0.0:{}", p.admin_port)),
            value(
                "WEFT_PROXY_DESTINATION_ADDR",
                names::service_addr(
                    names::DESTINATION_SERVICE,
                    cd,
                    v.controller.ports.destination,
                ),
            ),
            value(
                "WEFT_PROXY_IDENTITY_ADDR",
                names::service_addr(names::IDENTITY_SERVICE, cd, v.controller.ports.identity),
            ),
            value(
                "WEFT_PROXY_IDENTITY_NAME",
                format!(
                    "$(_WEFT_POD_SA).$(_WEFT_POD_NS).serviceaccount.identity.{}.{td}",
                    names::NAMESPACE
                ),
            ),
            value(
                "WEFT_PROXY_IDENTITY_TOKEN_FILE",
                format!("{IDENTITY_TOKEN_DIR}/{IDENTITY_TOKEN_FILE}"),
            ),
            value(
                "WEFT_PROXY_TRUST_ANCHORS",
                self.trust_anchors_pem.to_owned(),
            ),
            value(
                "WEFT_PROXY_CONTROL_IDENTITY",
                format!(
                    "{}.{}.serviceaccount.identity.{}.{td}",
                    names::CONTROLLER_SERVICE_ACCOUNT,
                    names::NAMESPACE,
                    names::NAMESPACE
                ),
            ),
            value(
                "WEFT_PROXY_WORKLOAD",
                format!("$(_WEFT_POD_NS)/{kind}/{name}/$(_WEFT_POD_NAME)"),
            ),
            value("WEFT_PROXY_OPAQUE_PORTS", self.cfg.opaque_ports.clone()),
            value(
                "WEFT_PROXY_REQUIRE_IDENTITY_PORTS",
                self.cfg.require_identity_ports.clone(),
            ),
            value(
                "WEFT_PROXY_DEFAULT_INBOUND_POLICY",
                self.cfg.default_inbound_policy.to_string(),
            ),
            value("WEFT_PROXY_CLUSTER_NETWORKS", v.cluster_networks.clone()),
            // A pod's loopback is its own: its connections are always
            // admitted (docs/policy.md, "What is always reachable").
            value("WEFT_PROXY_INBOUND_TRUST_LOOPBACK", "true".into()),
            value(
                "WEFT_PROXY_SHUTDOWN_GRACE_PERIOD",
                self.cfg.shutdown_grace_period.clone(),
            ),
            value(
                "WEFT_PROXY_WAIT_BEFORE_EXIT",
                format!("{}s", self.cfg.wait_before_exit_seconds),
            ),
        ];
        // The proxy watches these ports' policies from start-up, so the
        // first connection does not wait for the controller.
        if !self.inbound_ports.is_empty() {
            let ports: Vec<String> = self.inbound_ports.iter().map(u16::to_string).collect();
            env.push(value("WEFT_PROXY_INBOUND_PORTS", ports.join(",")));
        }
        if self.exit_with_app {
            env.push(value(EXIT_WITH_APP_ENV, "true".into()));
        }
        env
    }

    /// Requests and limits from the resolved config; unset ones are left out.
    fn resources(&self) -> Option<ResourceRequirements> {
        let pick = |cpu: &str, memory: &str| {
            let mut map = BTreeMap::new();
            if !cpu.is_empty() {
                map.insert("cpu".to_owned(), Quantity(cpu.to_owned()));
            }
            if !memory.is_empty() {
                map.insert("memory".to_owned(), Quantity(memory.to_owned()));
            }
            (!map.is_empty()).then_some(map)
        };
        let requests = pick(&self.cfg.cpu_request, &self.cfg.memory_request);
        let limits = pick(&self.cfg.cpu_limit, &self.cfg.memory_limit);
        (requests.is_some() || limits.is_some()).then(|| ResourceRequirements {
            requests,
            limits,
            ..ResourceRequirements::default()
        })
    }
}

/// The TCP `containerPort`s of the app containers and the app's native
/// sidecars (init containers with `restartPolicy: Always`, which serve
/// for the pod's whole life), `protocol` unset being TCP, sorted and
/// deduplicated: the ports the proxy receives inbound connections for
/// (`WEFT_PROXY_INBOUND_PORTS`), and the ports `weft authz` shows, so both
/// agree. Never the proxy's own (its admin port is not an inbound port).
pub fn inbound_ports(spec: &PodSpec) -> Vec<u16> {
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    let mut ports: Vec<u16> = spec
        .containers
        .iter()
        .chain(sidecars)
        .filter(|c| c.name != names::PROXY_CONTAINER)
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.protocol.as_deref().is_none_or(|proto| proto == "TCP"))
        .filter_map(|p| u16::try_from(p.container_port).ok())
        .filter(|p| *p != 0)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The emptyDir behind `weft-init`'s `/run`.
pub(super) fn xtables_lock_volume() -> Volume {
    Volume {
        name: XTABLES_LOCK_VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

/// The projected ServiceAccount token the proxy trades for its certificate.
pub(super) fn identity_token_volume() -> Volume {
    Volume {
        name: IDENTITY_TOKEN_VOLUME.into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(IDENTITY_TOKEN_AUDIENCE.into()),
                    expiration_seconds: Some(IDENTITY_TOKEN_EXPIRATION_SECONDS),
                    path: IDENTITY_TOKEN_FILE.into(),
                    ..ServiceAccountTokenProjection::default()
                }),
                ..VolumeProjection::default()
            }]),
            ..ProjectedVolumeSource::default()
        }),
        ..Volume::default()
    }
}
