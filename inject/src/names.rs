//! Names of the objects `weft install` creates, and the labels and
//! annotations that mark them.
//!
//! One place for them, because four programs must agree: `weft install`
//! writes them, `weft uninstall` finds objects by [`PART_OF_LABEL`], `weft
//! check` looks each one up, and the injector points every proxy at the
//! Services named here.

/// The control plane's namespace.
pub const NAMESPACE: &str = "weft";

/// On every object `weft install` creates (value [`PART_OF_VALUE`]), so
/// `weft uninstall` and `kubectl get -l` find exactly them.
pub const PART_OF_LABEL: &str = "app.kubernetes.io/part-of";
/// The value of [`PART_OF_LABEL`].
pub const PART_OF_VALUE: &str = "weft";
/// Which part of the control plane an object belongs to (`controller`,
/// `identity`, `injector`, `crds`).
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// On every injected pod (value [`NAMESPACE`]), as Linkerd labels them:
/// how `weft uninstall` and `weft check --proxy` find meshed pods.
pub const CONTROL_PLANE_NS_LABEL: &str = "linkerd.io/control-plane-ns";
/// On the control plane's own pods (value `controller`): the webhook's
/// objectSelector excludes pods that have it, and the injector skips them.
pub const CONTROL_PLANE_COMPONENT_LABEL: &str = "linkerd.io/control-plane-component";
/// A namespace labelled with this and value `disabled` is never sent to
/// the webhook.
pub const ADMISSION_WEBHOOKS_LABEL: &str = "config.linkerd.io/admission-webhooks";

/// The controller's ServiceAccount (its identity is
/// `weft-controller.weft.serviceaccount.identity.weft.TRUST_DOMAIN`).
pub const CONTROLLER_SERVICE_ACCOUNT: &str = "weft-controller";
/// The controller's Deployment.
pub const CONTROLLER_DEPLOYMENT: &str = "weft-controller";
/// The ClusterRole (and its binding) the controller runs with.
pub const CONTROLLER_CLUSTER_ROLE: &str = "weft-controller";
/// The controller's PodDisruptionBudget (`--ha` only).
pub const CONTROLLER_PDB: &str = "weft-controller";

/// Service of the destination API (gRPC, port 8086).
pub const DESTINATION_SERVICE: &str = "weft-dst";
/// Service of the identity API (gRPC, port 8080).
pub const IDENTITY_SERVICE: &str = "weft-identity";
/// Service of the injector webhook (443 → 8443).
pub const INJECTOR_SERVICE: &str = "weft-injector";
/// Service of the admin and metrics API (9990).
pub const ADMIN_SERVICE: &str = "weft-admin";

/// ConfigMap holding the trust anchors (key [`TRUST_ANCHORS_KEY`]).
pub const TRUST_ANCHORS_CONFIG_MAP: &str = "weft-identity-trust-roots";
/// Key of the trust anchors PEM in [`TRUST_ANCHORS_CONFIG_MAP`].
pub const TRUST_ANCHORS_KEY: &str = "ca.crt";
/// Secret holding the issuer certificate and key (keys `issuer.crt`,
/// `issuer.key`, the file names of an identity directory).
pub const ISSUER_SECRET: &str = "weft-identity-issuer";
/// Key of the issuer certificate in [`ISSUER_SECRET`].
pub const ISSUER_CERT_KEY: &str = "issuer.crt";
/// Key of the issuer private key in [`ISSUER_SECRET`].
pub const ISSUER_KEY_KEY: &str = "issuer.key";
/// Secret (type `kubernetes.io/tls`) with the webhook's serving
/// certificate (`tls.crt`, `tls.key`) and its CA (`ca.crt`).
pub const WEBHOOK_SECRET: &str = "weft-injector-tls";
/// The MutatingWebhookConfiguration.
pub const WEBHOOK_CONFIGURATION: &str = "weft-proxy-injector";
/// The webhook's name inside the configuration (must be a DNS name).
pub const WEBHOOK_NAME: &str = "proxy-injector.weft.io";
/// The path the webhook is served on.
pub const WEBHOOK_PATH: &str = "/inject";
/// ConfigMap holding the install values (key [`VALUES_KEY`]), read by the
/// injector and by `weft check`.
pub const CONFIG_MAP: &str = "weft-config";
/// Key of the values YAML in [`CONFIG_MAP`].
pub const VALUES_KEY: &str = "values.yaml";

/// Where the controller container mounts the identity directory (trust
/// anchors from the ConfigMap, issuer from the Secret).
pub const CONTROLLER_IDENTITY_DIR: &str = "/var/run/weft/identity";
/// Where the controller container mounts the webhook's TLS Secret.
pub const CONTROLLER_WEBHOOK_TLS_DIR: &str = "/var/run/weft/webhook";
/// Where the controller container mounts [`CONFIG_MAP`].
pub const CONTROLLER_CONFIG_DIR: &str = "/var/run/weft/config";

/// Pod (or namespace) annotation: `enabled`, `disabled` or `ingress`.
pub const INJECT_ANNOTATION: &str = "linkerd.io/inject";
/// Set on injected pods: the version of the proxy that was injected.
pub const PROXY_VERSION_ANNOTATION: &str = "linkerd.io/proxy-version";
/// Set on injected pods: the identity mode (`default`).
pub const IDENTITY_MODE_ANNOTATION: &str = "linkerd.io/identity-mode";
/// Set on injected pods: which control plane injected them.
pub const CREATED_BY_ANNOTATION: &str = "linkerd.io/created-by";
/// The proxy sidecar's container name.
pub const PROXY_CONTAINER: &str = "weft-proxy";
/// The init container's name.
pub const INIT_CONTAINER: &str = "weft-init";

/// `svc.weft.svc.CLUSTER_DOMAIN:port`: how proxies reach a control-plane
/// Service.
pub fn service_addr(service: &str, cluster_domain: &str, port: u16) -> String {
    format!("{service}.{NAMESPACE}.svc.{cluster_domain}:{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_addresses_are_fully_qualified() {
        assert_eq!(
            service_addr(DESTINATION_SERVICE, "cluster.local", 8086),
            "weft-dst.weft.svc.cluster.local:8086"
        );
    }
}
