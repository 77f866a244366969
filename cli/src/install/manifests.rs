//! The control plane's objects, built as typed k8s-openapi structs (so a
//! misspelt field is a compile error, not a rejected apply) and turned into
//! JSON values for printing.
//!
//! Objects come out in apply order: the namespace and RBAC first, then the
//! configuration the controller mounts, the Deployment and its Services,
//! and the webhook last, so the API server only starts calling the
//! injector once everything it needs has been created.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    WebhookClientConfig,
};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapProjection, ConfigMapVolumeSource, Container,
    ContainerPort, EnvVar, HTTPGetAction, KeyToPath, Namespace, PodAffinityTerm, PodAntiAffinity,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ProjectedVolumeSource,
    ResourceRequirements, SeccompProfile, Secret, SecretProjection, SecretVolumeSource,
    SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec, Volume, VolumeMount,
    VolumeProjection,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use weft_inject::names;
use weft_inject::values::Resources;
use weft_inject::Values;

use super::{IdentityMaterial, WebhookTls};

/// uid (and gid) the controller container runs as: non-root, and distinct
/// from the proxy's (2102) so iptables rules keyed on the proxy uid never
/// match the controller.
pub const CONTROLLER_UID: i64 = 2103;
/// Pod template annotation carrying the SHA-256 of the `weft-config`
/// values: changing a value changes the template, so `kubectl apply` rolls
/// the controller pods (Helm charts' convention, as Linkerd's use it).
pub const CONFIG_CHECKSUM_ANNOTATION: &str = "checksum/config";
/// The controller container's name.
pub const CONTROLLER_CONTAINER: &str = "weft-controller";
/// Port of the injector Service (the API server calls webhooks on 443).
pub const INJECTOR_SERVICE_PORT: i32 = 443;

/// Component label values (`app.kubernetes.io/component`).
const CONTROLLER: &str = "controller";
const IDENTITY: &str = "identity";
const INJECTOR: &str = "injector";

/// Volume names in the controller pod.
const IDENTITY_VOLUME: &str = "identity";
const WEBHOOK_TLS_VOLUME: &str = "webhook-tls";
const CONFIG_VOLUME: &str = "config";

/// `webhook.externalUrl`, checked and split: the URL the API server calls
/// and the host the serving certificate must name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalWebhook {
    /// The URL, with [`names::WEBHOOK_PATH`] appended when it had no path.
    pub url: String,
    /// Its host (an IP address without brackets, or a DNS name).
    pub host: String,
}

/// Reads `webhook.externalUrl` (empty: the webhook is reached through its
/// Service). The API server only calls webhooks over HTTPS, so anything
/// else is refused here rather than by `kubectl apply`.
pub fn external_webhook_url(values: &Values) -> anyhow::Result<Option<ExternalWebhook>> {
    let text = values.webhook.external_url.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let bad =
        |reason: &str| anyhow::anyhow!("invalid value webhook.externalUrl={text:?}: {reason}");
    let uri: http::Uri = text.parse().map_err(|e| bad(&format!("{e}")))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad("expected an https:// URL"));
    }
    let Some(host) = uri.host() else {
        return Err(bad("no host"));
    };
    if uri.query().is_some() {
        return Err(bad("a webhook URL may not have a query"));
    }
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let url = match uri.path() {
        "" | "/" => format!("{}{}", text.trim_end_matches('/'), names::WEBHOOK_PATH),
        _ => text.to_owned(),
    };
    Ok(Some(ExternalWebhook { url, host }))
}

/// Every object of `weft install` (CRDs excepted), in apply order.
pub fn render(
    values: &Values,
    identity: &IdentityMaterial,
    webhook: &WebhookTls,
    external: Option<&ExternalWebhook>,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let config_yaml = values.to_yaml();
    let checksum = sha256_hex(config_yaml.as_bytes());
    let mut out = Vec::new();
    let mut push = |object: serde_json::Result<serde_json::Value>| -> anyhow::Result<()> {
        out.push(object.context("serializing an object")?);
        Ok(())
    };
    push(serde_json::to_value(namespace()))?;
    push(serde_json::to_value(service_account()))?;
    push(serde_json::to_value(cluster_role()))?;
    push(serde_json::to_value(cluster_role_binding()))?;
    push(serde_json::to_value(config_map(
        names::TRUST_ANCHORS_CONFIG_MAP,
        IDENTITY,
        names::TRUST_ANCHORS_KEY,
        &identity.trust_anchors_pem,
    )))?;
    push(serde_json::to_value(secret(
        names::ISSUER_SECRET,
        IDENTITY,
        "Opaque",
        [
            (names::ISSUER_CERT_KEY, &identity.issuer_cert_pem),
            (names::ISSUER_KEY_KEY, &identity.issuer_key_pem),
        ],
    )))?;
    push(serde_json::to_value(secret(
        names::WEBHOOK_SECRET,
        INJECTOR,
        "kubernetes.io/tls",
        [
            ("tls.crt", &webhook.cert_pem),
            ("tls.key", &webhook.key_pem),
            ("ca.crt", &webhook.ca_pem),
        ],
    )))?;
    push(serde_json::to_value(config_map(
        names::CONFIG_MAP,
        CONTROLLER,
        names::VALUES_KEY,
        &config_yaml,
    )))?;
    push(serde_json::to_value(deployment(values, &checksum)?))?;
    let ports = &values.controller.ports;
    for (name, component, port_name, port, target) in [
        (
            names::DESTINATION_SERVICE,
            CONTROLLER,
            "grpc",
            ports.destination,
            ports.destination,
        ),
        (
            names::IDENTITY_SERVICE,
            IDENTITY,
            "grpc",
            ports.identity,
            ports.identity,
        ),
        (
            names::INJECTOR_SERVICE,
            INJECTOR,
            "https",
            INJECTOR_SERVICE_PORT as u16,
            ports.webhook,
        ),
        (
            names::ADMIN_SERVICE,
            CONTROLLER,
            "admin",
            ports.admin,
            ports.admin,
        ),
    ] {
        push(serde_json::to_value(service(
            name, component, port_name, port, target,
        )))?;
    }
    if values.ha {
        push(serde_json::to_value(pod_disruption_budget()))?;
    }
    push(serde_json::to_value(webhook_configuration(
        values, webhook, external,
    )))?;
    Ok(out)
}

/// `app.kubernetes.io/part-of: weft` and the component: how `weft
/// uninstall` and `kubectl get -l app.kubernetes.io/part-of=weft` find
/// every object.
fn labels(component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            names::PART_OF_LABEL.to_owned(),
            names::PART_OF_VALUE.to_owned(),
        ),
        (names::COMPONENT_LABEL.to_owned(), component.to_owned()),
    ])
}

fn meta(name: &str, namespaced: bool, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespaced.then(|| names::NAMESPACE.to_owned()),
        labels: Some(labels(component)),
        ..ObjectMeta::default()
    }
}

/// The labels that select the controller's pods (Deployment, Services,
/// PDB). Kept apart from [`labels`] because a Deployment's selector can
/// never change after creation.
fn controller_selector() -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            names::CONTROL_PLANE_COMPONENT_LABEL.to_owned(),
            CONTROLLER.to_owned(),
        ),
        (
            names::CONTROL_PLANE_NS_LABEL.to_owned(),
            names::NAMESPACE.to_owned(),
        ),
    ])
}

fn namespace() -> Namespace {
    let mut metadata = meta(names::NAMESPACE, false, CONTROLLER);
    // Never inject the control plane, and never even send its pods to the
    // webhook (the webhook's namespaceSelector excludes this label).
    metadata.labels.get_or_insert_with(BTreeMap::new).insert(
        names::ADMISSION_WEBHOOKS_LABEL.to_owned(),
        "disabled".to_owned(),
    );
    metadata.annotations = Some(BTreeMap::from([(
        names::INJECT_ANNOTATION.to_owned(),
        "disabled".to_owned(),
    )]));
    Namespace {
        metadata,
        ..Namespace::default()
    }
}

fn service_account() -> ServiceAccount {
    ServiceAccount {
        metadata: meta(names::CONTROLLER_SERVICE_ACCOUNT, true, CONTROLLER),
        ..ServiceAccount::default()
    }
}

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let strings = |s: &[&str]| s.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(strings(resources)),
        verbs: strings(verbs),
        ..PolicyRule::default()
    }
}

/// Exactly what the controller reads and writes; `docs/install.md` gives
/// the reason for each rule.
fn cluster_role() -> ClusterRole {
    const READ: &[&str] = &["get", "list", "watch"];
    ClusterRole {
        metadata: meta(names::CONTROLLER_CLUSTER_ROLE, false, CONTROLLER),
        rules: Some(vec![
            rule(
                "",
                &[
                    "services",
                    "endpoints",
                    "pods",
                    "serviceaccounts",
                    "namespaces",
                ],
                READ,
            ),
            rule("discovery.k8s.io", &["endpointslices"], READ),
            rule("linkerd.io", &["serviceprofiles"], READ),
            rule("split.smi-spec.io", &["trafficsplits"], READ),
            rule("specs.smi-spec.io", &["httproutegroups", "tcproutes"], READ),
            rule("access.smi-spec.io", &["traffictargets"], READ),
            rule("authentication.k8s.io", &["tokenreviews"], &["create"]),
            rule("", &["events"], &["create", "patch"]),
            rule("events.k8s.io", &["events"], &["create", "patch"]),
            // Owner resolution reads only the middle links: a pod's
            // ReplicaSet (→ Deployment) and Job (→ CronJob); other owners
            // are named by the pod's own ownerReferences.
            rule("apps", &["replicasets"], &["get"]),
            rule("batch", &["jobs"], &["get"]),
        ]),
        ..ClusterRole::default()
    }
}

fn cluster_role_binding() -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: meta(names::CONTROLLER_CLUSTER_ROLE, false, CONTROLLER),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
            kind: "ClusterRole".to_owned(),
            name: names::CONTROLLER_CLUSTER_ROLE.to_owned(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name: names::CONTROLLER_SERVICE_ACCOUNT.to_owned(),
            namespace: Some(names::NAMESPACE.to_owned()),
            ..Subject::default()
        }]),
    }
}

fn config_map(name: &str, component: &str, key: &str, value: &str) -> ConfigMap {
    ConfigMap {
        metadata: meta(name, true, component),
        data: Some(BTreeMap::from([(key.to_owned(), value.to_owned())])),
        ..ConfigMap::default()
    }
}

fn secret<const N: usize>(
    name: &str,
    component: &str,
    type_: &str,
    data: [(&str, &String); N],
) -> Secret {
    Secret {
        metadata: meta(name, true, component),
        type_: Some(type_.to_owned()),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k.to_owned(), ByteString(v.clone().into_bytes())))
                .collect(),
        ),
        ..Secret::default()
    }
}

fn quantity(text: &str) -> Option<Quantity> {
    (!text.is_empty()).then(|| Quantity(text.to_owned()))
}

/// Container resources from values; an empty string leaves that one unset.
pub fn resources(r: &Resources) -> ResourceRequirements {
    let pick = |pairs: [(&str, &str); 2]| {
        let map: BTreeMap<String, Quantity> = pairs
            .into_iter()
            .filter_map(|(k, v)| quantity(v).map(|q| (k.to_owned(), q)))
            .collect();
        (!map.is_empty()).then_some(map)
    };
    ResourceRequirements {
        requests: pick([("cpu", &r.cpu_request), ("memory", &r.memory_request)]),
        limits: pick([("cpu", &r.cpu_limit), ("memory", &r.memory_limit)]),
        ..ResourceRequirements::default()
    }
}

/// The controller's command line (see the brief's install layout: the
/// controller helper parses exactly these flags).
pub fn controller_command(values: &Values) -> Vec<String> {
    let ports = &values.controller.ports;
    let any = |port: u16| format!("0.0.0.0:{port}");
    [
        "weft-controller",
        "--in-cluster",
        "--identity-dir",
        names::CONTROLLER_IDENTITY_DIR,
        "--webhook-tls-dir",
        names::CONTROLLER_WEBHOOK_TLS_DIR,
        "--values",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([
        format!("{}/{}", names::CONTROLLER_CONFIG_DIR, names::VALUES_KEY),
        "--trust-domain".into(),
        values.identity.trust_domain.clone(),
        "--cluster-domain".into(),
        values.cluster_domain.clone(),
        "--identity-leaf-lifetime".into(),
        values.identity.leaf_lifetime.clone(),
        "--destination-addr".into(),
        any(ports.destination),
        "--identity-addr".into(),
        any(ports.identity),
        "--webhook-addr".into(),
        any(ports.webhook),
        "--admin-addr".into(),
        any(ports.admin),
        "--default-inbound-policy".into(),
        values.default_inbound_policy.clone(),
        "--cluster-networks".into(),
        values.cluster_networks.clone(),
    ])
    .collect()
}

fn http_probe(path: &str, initial_delay: Option<i32>) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("admin".to_owned()),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: initial_delay,
        ..Probe::default()
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        ..SeccompProfile::default()
    }
}

fn controller_pod_labels() -> BTreeMap<String, String> {
    let mut pod_labels = labels(CONTROLLER);
    pod_labels.extend(controller_selector());
    pod_labels
}

fn deployment(values: &Values, config_checksum: &str) -> anyhow::Result<Deployment> {
    let ports = &values.controller.ports;
    let port = |name: &str, port: u16| ContainerPort {
        name: Some(name.to_owned()),
        container_port: i32::from(port),
        // Explicit: 1.20's server-side apply keys container ports on
        // (containerPort, protocol) and rejects a missing protocol.
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    };
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    let item = |key: &str| KeyToPath {
        key: key.to_owned(),
        path: key.to_owned(),
        ..KeyToPath::default()
    };
    let replicas =
        i32::try_from(values.controller.replicas).context("controller.replicas is too large")?;
    if ports.webhook == 0 || ports.admin == 0 || ports.destination == 0 || ports.identity == 0 {
        bail!("controller.ports: a port may not be 0");
    }
    let container = Container {
        name: CONTROLLER_CONTAINER.to_owned(),
        image: Some(values.controller_image()),
        image_pull_policy: Some(values.image.pull_policy.clone()),
        command: Some(controller_command(values)),
        env: Some(vec![EnvVar {
            name: "WEFT_CONTROLLER_LOG".to_owned(),
            value: Some(values.controller.log_level.clone()),
            ..EnvVar::default()
        }]),
        ports: Some(vec![
            port("dst-grpc", ports.destination),
            port("identity-grpc", ports.identity),
            port("webhook", ports.webhook),
            port("admin", ports.admin),
        ]),
        liveness_probe: Some(http_probe("/live", Some(10))),
        readiness_probe: Some(http_probe("/ready", None)),
        resources: Some(resources(&values.controller.resources)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(CONTROLLER_UID),
            run_as_group: Some(CONTROLLER_UID),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            seccomp_profile: Some(runtime_default()),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            mount(IDENTITY_VOLUME, names::CONTROLLER_IDENTITY_DIR),
            mount(WEBHOOK_TLS_VOLUME, names::CONTROLLER_WEBHOOK_TLS_DIR),
            mount(CONFIG_VOLUME, names::CONTROLLER_CONFIG_DIR),
        ]),
        ..Container::default()
    };
    let volumes = vec![
        // The identity directory the controller expects (ca.crt,
        // issuer.crt, issuer.key), assembled from a ConfigMap (the anchors
        // are public) and a Secret (the issuer key is not).
        Volume {
            name: IDENTITY_VOLUME.to_owned(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![
                    VolumeProjection {
                        config_map: Some(ConfigMapProjection {
                            name: names::TRUST_ANCHORS_CONFIG_MAP.to_owned(),
                            items: Some(vec![item(names::TRUST_ANCHORS_KEY)]),
                            ..ConfigMapProjection::default()
                        }),
                        ..VolumeProjection::default()
                    },
                    VolumeProjection {
                        secret: Some(SecretProjection {
                            name: names::ISSUER_SECRET.to_owned(),
                            items: Some(vec![
                                item(names::ISSUER_CERT_KEY),
                                item(names::ISSUER_KEY_KEY),
                            ]),
                            ..SecretProjection::default()
                        }),
                        ..VolumeProjection::default()
                    },
                ]),
                ..ProjectedVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: WEBHOOK_TLS_VOLUME.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(names::WEBHOOK_SECRET.to_owned()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: CONFIG_VOLUME.to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: names::CONFIG_MAP.to_owned(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
    ];
    let affinity = values.ha.then(|| Affinity {
        // At most one controller per node, so losing a node loses one
        // replica. Required, as in Linkerd's HA mode: an HA install on
        // fewer than 3 nodes leaves replicas Pending rather than silently
        // co-locating them.
        pod_anti_affinity: Some(PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                label_selector: Some(LabelSelector {
                    match_labels: Some(controller_selector()),
                    ..LabelSelector::default()
                }),
                topology_key: "kubernetes.io/hostname".to_owned(),
                ..PodAffinityTerm::default()
            }]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    });
    let mut metadata = meta(names::CONTROLLER_DEPLOYMENT, true, CONTROLLER);
    metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .extend(controller_selector());
    Ok(Deployment {
        metadata,
        spec: DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(controller_selector()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(controller_pod_labels()),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_CHECKSUM_ANNOTATION.to_owned(),
                        config_checksum.to_owned(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(names::CONTROLLER_SERVICE_ACCOUNT.to_owned()),
                    // --in-cluster authenticates with the pod's token.
                    automount_service_account_token: Some(true),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(CONTROLLER_UID),
                        run_as_group: Some(CONTROLLER_UID),
                        seccomp_profile: Some(runtime_default()),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![container],
                    volumes: Some(volumes),
                    affinity,
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    })
}

fn service(name: &str, component: &str, port_name: &str, port: u16, target: u16) -> Service {
    Service {
        metadata: meta(name, true, component),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(controller_selector()),
            ports: Some(vec![ServicePort {
                name: Some(port_name.to_owned()),
                port: i32::from(port),
                target_port: Some(IntOrString::Int(i32::from(target))),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// `--ha`: voluntary disruptions (node drains) take one controller at a time.
fn pod_disruption_budget() -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(names::CONTROLLER_PDB, true, CONTROLLER),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(controller_selector()),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

fn not_in(key: &str, values: &[&str]) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.to_owned(),
        operator: "NotIn".to_owned(),
        values: Some(values.iter().map(|v| (*v).to_owned()).collect()),
    }
}

fn webhook_configuration(
    values: &Values,
    tls: &WebhookTls,
    external: Option<&ExternalWebhook>,
) -> MutatingWebhookConfiguration {
    let client_config = match external {
        Some(external) => WebhookClientConfig {
            url: Some(external.url.clone()),
            ca_bundle: Some(ByteString(tls.ca_pem.clone().into_bytes())),
            service: None,
        },
        None => WebhookClientConfig {
            url: None,
            ca_bundle: Some(ByteString(tls.ca_pem.clone().into_bytes())),
            service: Some(ServiceReference {
                name: names::INJECTOR_SERVICE.to_owned(),
                namespace: names::NAMESPACE.to_owned(),
                path: Some(names::WEBHOOK_PATH.to_owned()),
                port: Some(INJECTOR_SERVICE_PORT),
            }),
        },
    };
    MutatingWebhookConfiguration {
        metadata: meta(names::WEBHOOK_CONFIGURATION, false, INJECTOR),
        webhooks: Some(vec![MutatingWebhook {
            name: names::WEBHOOK_NAME.to_owned(),
            admission_review_versions: vec!["v1".to_owned(), "v1beta1".to_owned()],
            client_config,
            failure_policy: Some(values.webhook.failure_policy.clone()),
            // `kubernetes.io/metadata.name` is set on every namespace from
            // Kubernetes 1.21; older servers rely on the opt-out label
            // (which `weft` itself carries). Requirements are ANDed, and
            // NotIn matches a namespace that lacks the key.
            namespace_selector: Some(LabelSelector {
                match_expressions: Some(vec![
                    not_in(
                        "kubernetes.io/metadata.name",
                        &[names::NAMESPACE, "kube-system"],
                    ),
                    not_in(names::ADMISSION_WEBHOOKS_LABEL, &["disabled"]),
                ]),
                ..LabelSelector::default()
            }),
            // The control plane's own pods never go through the injector,
            // wherever they run.
            object_selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: names::CONTROL_PLANE_COMPONENT_LABEL.to_owned(),
                    operator: "DoesNotExist".to_owned(),
                    values: None,
                }]),
                ..LabelSelector::default()
            }),
            // Linkerd's choice: injection runs once. Re-invoking after a
            // later webhook would only see an injected pod and skip it.
            reinvocation_policy: Some("Never".to_owned()),
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec![String::new()]),
                api_versions: Some(vec!["v1".to_owned()]),
                operations: Some(vec!["CREATE".to_owned()]),
                resources: Some(vec!["pods".to_owned()]),
                scope: Some("Namespaced".to_owned()),
            }]),
            side_effects: "None".to_owned(),
            timeout_seconds: Some(values.webhook.timeout_seconds),
            ..MutatingWebhook::default()
        }]),
    }
}

/// Lower-case hex SHA-256.
fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values_with_url(url: &str) -> Values {
        let mut v = Values::default();
        v.webhook.external_url = url.to_owned();
        v
    }

    #[test]
    fn external_urls_get_the_inject_path_and_a_bare_host() {
        let e = external_webhook_url(&values_with_url("https://127.0.0.1:9443"))
            .unwrap()
            .unwrap();
        assert_eq!(e.url, "https://127.0.0.1:9443/inject");
        assert_eq!(e.host, "127.0.0.1");
        let e = external_webhook_url(&values_with_url("https://[::1]:9443/hook"))
            .unwrap()
            .unwrap();
        assert_eq!(e.url, "https://[::1]:9443/hook");
        assert_eq!(e.host, "::1");
        assert!(external_webhook_url(&values_with_url("http://x:1")).is_err());
        assert!(external_webhook_url(&Values::default()).unwrap().is_none());
    }

    #[test]
    fn checksums_are_sha256() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
