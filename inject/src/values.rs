//! The install values: every setting `weft install` takes, in one
//! documented structure (`docs/install.md` lists each key).
//!
//! Operators set them with `-f values.yaml` (any subset, camelCase keys as
//! in Helm charts) and `--set key.path=value`; unknown keys are errors, so
//! a typo never silently becomes a default. The rendered values are stored
//! in the `weft-config` ConfigMap, where the controller's injector reads
//! the proxy settings, so the webhook and `weft inject --manual` agree.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// Why values could not be read or applied.
#[derive(Debug, thiserror::Error)]
pub enum ValuesError {
    /// A values file is not valid YAML or does not fit the structure.
    #[error("{source_name}: {reason}")]
    Parse {
        /// The file (or `--set`) the values came from.
        source_name: String,
        /// What is wrong, with the key path where serde knows it.
        reason: String,
    },
    /// A `--set` argument is not `key.path=value`.
    #[error("--set {arg:?}: expected key.path=value")]
    SetSyntax {
        /// The argument.
        arg: String,
    },
    /// A value is out of range or inconsistent with another.
    #[error("invalid value {key}={value:?}: {reason}")]
    Invalid {
        /// The key path.
        key: &'static str,
        /// The value.
        value: String,
        /// Why.
        reason: String,
    },
}

/// Everything `weft install` can be told (see `docs/install.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Values {
    /// Where the images come from.
    pub image: ImageValues,
    /// The control plane process.
    pub controller: ControllerValues,
    /// The injected sidecar.
    pub proxy: ProxyValues,
    /// Identity (trust domain, certificate lifetimes).
    pub identity: IdentityValues,
    /// The injector webhook.
    pub webhook: WebhookValues,
    /// Kubernetes cluster domain of Service names.
    pub cluster_domain: String,
    /// Pod and Service networks of the cluster (CIDRs, comma-separated):
    /// what `cluster-*` inbound policies count as "the cluster".
    pub cluster_networks: String,
    /// Inbound policy for pods that have none of their own:
    /// `all-unauthenticated`, `all-authenticated`,
    /// `cluster-unauthenticated`, `cluster-authenticated`, `deny`, `audit`.
    pub default_inbound_policy: String,
    /// High availability: replicas, a PodDisruptionBudget, anti-affinity
    /// and a webhook that fails closed (`weft install --ha`).
    pub ha: bool,
}

/// Image registry, tag and pull policy shared by all Weft images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ImageValues {
    /// Registry (and path) prefix, e.g. `localhost/weft`.
    pub registry: String,
    /// Tag of every image (the CLI's version by default).
    pub tag: String,
    /// `IfNotPresent`, `Always` or `Never`.
    pub pull_policy: String,
}

/// The `weft-controller` Deployment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ControllerValues {
    /// Image name under [`ImageValues::registry`].
    pub image: String,
    /// Replicas (`--ha` raises it to at least 3).
    pub replicas: u32,
    /// `WEFT_CONTROLLER_LOG` filter.
    pub log_level: String,
    /// Container resources.
    pub resources: Resources,
    /// Listen ports.
    pub ports: ControllerPorts,
}

/// The controller's listen ports (the Services' target ports).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ControllerPorts {
    /// Destination gRPC API.
    pub destination: u16,
    /// Identity gRPC API.
    pub identity: u16,
    /// Injector webhook (HTTPS).
    pub webhook: u16,
    /// Admin and metrics API.
    pub admin: u16,
}

/// Requests and limits of a container; an empty string means "not set".
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Resources {
    /// CPU request (Kubernetes quantity, e.g. `100m`).
    pub cpu_request: String,
    /// CPU limit.
    pub cpu_limit: String,
    /// Memory request (e.g. `20Mi`).
    pub memory_request: String,
    /// Memory limit.
    pub memory_limit: String,
}

/// The injected `weft-proxy` sidecar and `weft-init` init container.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ProxyValues {
    /// Image name under [`ImageValues::registry`] (the init container runs
    /// the same image: `weft-proxy init`).
    pub image: String,
    /// `WEFT_PROXY_LOG` filter (`config.linkerd.io/proxy-log-level`).
    pub log_level: String,
    /// uid the proxy runs as (never redirected by iptables).
    pub uid: i64,
    /// Inbound listener port.
    pub inbound_port: u16,
    /// Outbound listener port.
    pub outbound_port: u16,
    /// Admin port (`/metrics`, `/ready`, `/live`).
    pub admin_port: u16,
    /// Container resources (`config.linkerd.io/proxy-cpu-request` ...).
    pub resources: Resources,
    /// Ports whose traffic is never inspected, e.g. `25,3306,4222-4224`.
    pub opaque_ports: String,
    /// Inbound ports never redirected to the proxy.
    pub skip_inbound_ports: String,
    /// Outbound ports never redirected to the proxy.
    pub skip_outbound_ports: String,
    /// Outbound subnets never redirected (CIDRs, comma-separated).
    pub skip_subnets: String,
    /// Inbound ports that accept only mTLS.
    pub require_identity_inbound_ports: String,
    /// Hold the app containers until the proxy is ready.
    pub await_ready: bool,
    /// Run the proxy as a native sidecar (an init container with
    /// `restartPolicy: Always`): `auto` (where the API server supports
    /// it, Kubernetes 1.29+), `enabled` (also what `weft inject --manual`
    /// writes without asking a cluster; the webhook on an older API server
    /// still injects a regular container, with a warning, rather than
    /// block the pod) or `disabled`.
    pub native_sidecar: String,
    /// How long the proxy drains on shutdown (duration, e.g. `30s`).
    pub shutdown_grace_period: String,
    /// Seconds the proxy waits after SIGTERM before it starts draining
    /// (`config.alpha.linkerd.io/proxy-wait-before-exit-seconds`).
    pub wait_before_exit_seconds: u64,
}

/// Identity settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct IdentityValues {
    /// Trust domain of identity names.
    pub trust_domain: String,
    /// Lifetime of a generated trust anchor (duration).
    pub trust_anchor_lifetime: String,
    /// Lifetime of a generated issuer certificate.
    pub issuer_lifetime: String,
    /// Lifetime of the proxies' leaf certificates.
    pub leaf_lifetime: String,
}

/// The injector webhook.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WebhookValues {
    /// `Ignore` (pods are created unmodified when the controller is down)
    /// or `Fail`; unset (`""`) means `Ignore`, or `Fail` with `ha`.
    pub failure_policy: String,
    /// Seconds the API server waits for the webhook (1–30).
    pub timeout_seconds: i32,
    /// Call the webhook at this HTTPS URL instead of through its Service
    /// (a controller running outside the cluster); its host is added to
    /// the serving certificate.
    pub external_url: String,
    /// Lifetime of the generated serving certificate.
    pub cert_lifetime: String,
}

// === impl Values ===

impl Default for Values {
    fn default() -> Self {
        Self {
            image: ImageValues::default(),
            controller: ControllerValues::default(),
            proxy: ProxyValues::default(),
            identity: IdentityValues::default(),
            webhook: WebhookValues::default(),
            cluster_domain: "cluster.local".into(),
            cluster_networks: weft_policy::DEFAULT_CLUSTER_NETWORKS.into(),
            default_inbound_policy: weft_policy::DefaultPolicy::default().to_string(),
            ha: false,
        }
    }
}

impl Values {
    /// Layers a values YAML document over `self` (keys it leaves out keep
    /// their current value). `source_name` names the file in errors.
    pub fn merge_yaml(&mut self, source_name: &str, text: &str) -> Result<(), ValuesError> {
        let err = |reason: String| ValuesError::Parse {
            source_name: source_name.to_owned(),
            reason,
        };
        let overlay: Json = serde_yaml::from_str(text).map_err(|e| err(e.to_string()))?;
        if overlay.is_null() {
            return Ok(());
        }
        if !overlay.is_object() {
            return Err(err("expected a mapping of values".into()));
        }
        let mut base = serde_json::to_value(&*self).map_err(|e| err(e.to_string()))?;
        merge_json(&mut base, overlay);
        *self = serde_json::from_value(base).map_err(|e| err(e.to_string()))?;
        Ok(())
    }

    /// Applies one `--set key.path=value`. A string key takes the text as
    /// it is (`image.tag=1.20`); any other key reads it as a YAML scalar
    /// (`true`, `3`), then converts it to the key's type.
    pub fn set(&mut self, arg: &str) -> Result<(), ValuesError> {
        let syntax = || ValuesError::SetSyntax {
            arg: arg.to_owned(),
        };
        let (path, text) = arg.split_once('=').ok_or_else(syntax)?;
        if path.is_empty() || path.split('.').any(str::is_empty) {
            return Err(syntax());
        }
        let err = |reason: String| ValuesError::Parse {
            source_name: format!("--set {arg}"),
            reason,
        };
        let mut base = serde_json::to_value(&*self).map_err(|e| err(e.to_string()))?;
        let current = path.split('.').try_fold(&base, |node, key| node.get(key));
        let mut overlay = match current {
            Some(Json::String(_)) | None => Json::String(text.to_owned()),
            Some(_) => serde_yaml::from_str(text).map_err(|e| err(e.to_string()))?,
        };
        for key in path.rsplit('.') {
            let mut map = serde_json::Map::new();
            map.insert(key.to_owned(), overlay);
            overlay = Json::Object(map);
        }
        merge_json(&mut base, overlay);
        *self = serde_json::from_value(base).map_err(|e| err(e.to_string()))?;
        Ok(())
    }

    /// Checks values that parse but cannot work, and applies `ha`.
    /// Call once after all `-f` and `--set` layers.
    pub fn finish(mut self) -> Result<Self, ValuesError> {
        let invalid = |key: &'static str, value: &str, reason: &str| ValuesError::Invalid {
            key,
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        if self.ha {
            self.controller.replicas = self.controller.replicas.max(3);
        }
        // Unset: fail open, or closed under --ha; an explicit choice wins.
        if self.webhook.failure_policy.is_empty() {
            self.webhook.failure_policy = if self.ha { "Fail" } else { "Ignore" }.into();
        }
        // The names and the networks are weft-policy's, so the install, the
        // injector, the controller and the proxy accept exactly the same.
        let policy = self
            .default_inbound_policy
            .parse::<weft_policy::DefaultPolicy>()
            .map_err(|e| {
                invalid(
                    "defaultInboundPolicy",
                    &self.default_inbound_policy,
                    &e.to_string(),
                )
            })?;
        self.default_inbound_policy = policy.to_string();
        let networks = weft_policy::parse_networks(&self.cluster_networks)
            .map_err(|e| invalid("clusterNetworks", &self.cluster_networks, &e.to_string()))?;
        if networks.is_empty() {
            // `cluster-*` policies would admit no one, and an authorization
            // without networks is not valid on the wire.
            return Err(invalid(
                "clusterNetworks",
                &self.cluster_networks,
                "expected at least one CIDR (e.g. 10.0.0.0/8)",
            ));
        }
        self.cluster_networks = networks
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        if !["Ignore", "Fail"].contains(&self.webhook.failure_policy.as_str()) {
            return Err(invalid(
                "webhook.failurePolicy",
                &self.webhook.failure_policy,
                "expected Ignore or Fail",
            ));
        }
        if !(1..=30).contains(&self.webhook.timeout_seconds) {
            return Err(invalid(
                "webhook.timeoutSeconds",
                &self.webhook.timeout_seconds.to_string(),
                "expected 1 to 30",
            ));
        }
        if !["IfNotPresent", "Always", "Never"].contains(&self.image.pull_policy.as_str()) {
            return Err(invalid(
                "image.pullPolicy",
                &self.image.pull_policy,
                "expected IfNotPresent, Always or Never",
            ));
        }
        if !["auto", "enabled", "disabled"].contains(&self.proxy.native_sidecar.as_str()) {
            return Err(invalid(
                "proxy.nativeSidecar",
                &self.proxy.native_sidecar,
                "expected auto, enabled or disabled",
            ));
        }
        if self.controller.replicas == 0 {
            return Err(invalid("controller.replicas", "0", "at least 1"));
        }
        weft_identity::check_trust_domain(&self.identity.trust_domain).map_err(|e| {
            invalid(
                "identity.trustDomain",
                &self.identity.trust_domain,
                &e.to_string(),
            )
        })?;
        weft_identity::check_trust_domain(&self.cluster_domain)
            .map_err(|e| invalid("clusterDomain", &self.cluster_domain, &e.to_string()))?;
        for (key, value) in [
            (
                "identity.trustAnchorLifetime",
                &self.identity.trust_anchor_lifetime,
            ),
            ("identity.issuerLifetime", &self.identity.issuer_lifetime),
            ("identity.leafLifetime", &self.identity.leaf_lifetime),
            ("webhook.certLifetime", &self.webhook.cert_lifetime),
            (
                "proxy.shutdownGracePeriod",
                &self.proxy.shutdown_grace_period,
            ),
        ] {
            weft_identity::parse_duration(value)
                .map_err(|e| invalid(key, value, &e.to_string()))?;
        }
        Ok(self)
    }

    /// `registry/name:tag` of the controller image.
    pub fn controller_image(&self) -> String {
        self.image_ref(&self.controller.image)
    }

    /// `registry/name:tag` of the proxy (and init) image.
    pub fn proxy_image(&self) -> String {
        self.image_ref(&self.proxy.image)
    }

    fn image_ref(&self, name: &str) -> String {
        let registry = self.image.registry.trim_end_matches('/');
        if registry.is_empty() {
            format!("{name}:{}", self.image.tag)
        } else {
            format!("{registry}/{name}:{}", self.image.tag)
        }
    }

    /// The values as YAML, the form stored in the `weft-config` ConfigMap.
    pub fn to_yaml(&self) -> String {
        // Serializing plain strings, numbers and bools cannot fail.
        serde_yaml::to_string(self).unwrap_or_default()
    }

    /// Reads values stored by [`Values::to_yaml`] (the controller's
    /// `--values` file): defaults, overlaid with the file, checked.
    pub fn from_yaml(source_name: &str, text: &str) -> Result<Self, ValuesError> {
        let mut values = Values::default();
        values.merge_yaml(source_name, text)?;
        values.finish()
    }
}

/// Recursively overlays `overlay` onto `base`: objects merge key by key,
/// anything else replaces.
fn merge_json(base: &mut Json, overlay: Json) {
    match (base, overlay) {
        (Json::Object(base), Json::Object(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(&key) {
                    Some(slot) => merge_json(slot, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (slot, value) => *slot = value,
    }
}

impl Default for ImageValues {
    fn default() -> Self {
        Self {
            registry: "localhost/weft".into(),
            tag: env!("CARGO_PKG_VERSION").into(),
            pull_policy: "IfNotPresent".into(),
        }
    }
}

impl Default for ControllerValues {
    fn default() -> Self {
        Self {
            image: "weft-controller".into(),
            replicas: 1,
            log_level: "info".into(),
            resources: Resources {
                cpu_request: "100m".into(),
                cpu_limit: String::new(),
                memory_request: "50Mi".into(),
                memory_limit: "250Mi".into(),
            },
            ports: ControllerPorts::default(),
        }
    }
}

impl Default for ControllerPorts {
    fn default() -> Self {
        Self {
            destination: 8086,
            identity: 8080,
            webhook: 8443,
            admin: 9990,
        }
    }
}

impl Default for ProxyValues {
    fn default() -> Self {
        Self {
            image: "weft-proxy".into(),
            log_level: "warn,weft_proxy=info".into(),
            uid: 2102,
            inbound_port: 4143,
            outbound_port: 4140,
            admin_port: 4191,
            resources: Resources {
                cpu_request: "100m".into(),
                cpu_limit: String::new(),
                memory_request: "20Mi".into(),
                memory_limit: "250Mi".into(),
            },
            // Linkerd's default opaque ports: server-speaks-first protocols.
            opaque_ports: "25,587,3306,4444,5432,6379,9300,11211".into(),
            skip_inbound_ports: String::new(),
            skip_outbound_ports: String::new(),
            skip_subnets: String::new(),
            require_identity_inbound_ports: String::new(),
            await_ready: true,
            native_sidecar: "auto".into(),
            shutdown_grace_period: "30s".into(),
            wait_before_exit_seconds: 0,
        }
    }
}

impl Default for IdentityValues {
    fn default() -> Self {
        Self {
            trust_domain: weft_identity::DEFAULT_TRUST_DOMAIN.into(),
            trust_anchor_lifetime: "8760h".into(),
            issuer_lifetime: "8760h".into(),
            leaf_lifetime: "24h".into(),
        }
    }
}

impl Default for WebhookValues {
    fn default() -> Self {
        Self {
            failure_policy: String::new(),
            timeout_seconds: 10,
            external_url: String::new(),
            cert_lifetime: "8760h".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_their_own_checks() {
        let v = Values::default().finish().expect("defaults are valid");
        assert_eq!(
            v.proxy_image(),
            format!("localhost/weft/weft-proxy:{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(v.webhook.failure_policy, "Ignore");
    }

    #[test]
    fn set_reaches_nested_keys_with_typed_values() {
        let mut v = Values::default();
        v.set("proxy.uid=3000").expect("number");
        v.set("proxy.awaitReady=false").expect("bool");
        v.set("image.tag=1.2")
            .expect("a number-looking string for a string key");
        v.set("image.registry=").expect("empty string");
        assert_eq!(v.proxy.uid, 3000);
        assert!(!v.proxy.await_ready);
        assert_eq!(v.image.tag, "1.2");
        assert_eq!(v.proxy_image(), "weft-proxy:1.2");
    }

    #[test]
    fn unknown_keys_and_bad_syntax_are_errors() {
        let mut v = Values::default();
        let e = v.set("proxy.uidd=3").expect_err("typo");
        assert!(e.to_string().contains("uidd"), "{e}");
        assert!(matches!(
            v.set("proxy.uid"),
            Err(ValuesError::SetSyntax { .. })
        ));
        assert!(v.set("proxy.uid=banana").is_err());
        let e = v
            .merge_yaml("v.yaml", "proxy: [1]")
            .expect_err("not a mapping");
        assert!(e.to_string().starts_with("v.yaml:"), "{e}");
    }

    #[test]
    fn files_overlay_only_what_they_name() {
        let mut v = Values::default();
        v.merge_yaml("v.yaml", "proxy:\n  logLevel: debug\nha: true\n")
            .expect("valid");
        let v = v.finish().expect("valid");
        assert_eq!(v.proxy.log_level, "debug");
        assert_eq!(v.proxy.uid, 2102);
        assert_eq!(v.controller.replicas, 3);
        assert_eq!(v.webhook.failure_policy, "Fail");
    }

    #[test]
    fn stored_values_round_trip() {
        let v = Values::default().finish().expect("valid");
        assert_eq!(Values::from_yaml("cm", &v.to_yaml()).expect("parses"), v);
    }

    #[test]
    fn policy_names_and_networks_are_weft_policys() {
        let v = Values::default().finish().unwrap();
        assert_eq!(v.cluster_networks, weft_policy::DEFAULT_CLUSTER_NETWORKS);
        assert!(
            v.cluster_networks.ends_with(",fd00::/8"),
            "Linkerd's default"
        );
        let mut v = Values::default();
        v.set("defaultInboundPolicy= deny ").unwrap();
        v.set("clusterNetworks=10.1.2.3, fd00::/8,").unwrap();
        let v = v.finish().unwrap();
        assert_eq!(v.default_inbound_policy, "deny");
        assert_eq!(v.cluster_networks, "10.1.2.3/32,fd00::/8");
        let mut v = Values::default();
        v.set("clusterNetworks=10.0.0.0/8,banana").unwrap();
        let e = v.finish().unwrap_err().to_string();
        assert!(
            e.contains("clusterNetworks") && e.contains("\"banana\""),
            "{e}"
        );
        let mut v = Values::default();
        v.set("defaultInboundPolicy=allow").unwrap();
        let e = v.finish().unwrap_err().to_string();
        assert!(
            e.contains("defaultInboundPolicy") && e.contains("cluster-authenticated"),
            "{e}"
        );
    }

    #[test]
    fn inconsistent_values_are_refused() {
        for set in [
            "defaultInboundPolicy=allow",
            "clusterNetworks=10.0.0.0/33",
            "clusterNetworks=",
            "clusterNetworks=ten",
            "webhook.failurePolicy=Maybe",
            "webhook.timeoutSeconds=31",
            "proxy.nativeSidecar=yes",
            "identity.leafLifetime=soon",
            "controller.replicas=0",
        ] {
            let mut v = Values::default();
            v.set(set).expect("parses");
            assert!(v.finish().is_err(), "{set} should be refused");
        }
    }
}
