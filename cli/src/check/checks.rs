//! The checks themselves, category by category, in the order `linkerd
//! check` runs its own: the Kubernetes API and version first (nothing else
//! can run without them), then either the pre-installation checks
//! (`--pre`) or the control plane's objects, identity and webhook TLS, and
//! with `--proxy` the data plane.
//!
//! Each check reads what it needs from the API and turns it into one
//! [`CheckResult`]; what later checks reuse (the trust anchors, the
//! webhook configuration) is kept in [`Context`]. Checks that wait for the
//! cluster to converge (pods becoming ready) retry until `--wait` runs out.

use std::future::Future;
use std::io::Write;
use std::time::{Instant, SystemTime};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use weft_inject::names;

use super::certs;
use super::report::{CheckResult, Reporter};
use super::CheckArgs;

/// The oldest Kubernetes minor version (1.x) Weft is tested on; older ones
/// get a warning.
const MIN_KUBERNETES_MINOR: u32 = 20;

/// How often a waiting check asks again. Linkerd waits 5 s between tries;
/// 2 s keeps `weft check` right after `kubectl apply` snappy.
const RETRY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// The proxy's environment variable holding the trust anchors (inline PEM
/// in injected pods); see `docs/injection.md`.
const TRUST_ANCHORS_ENV: &str = "WEFT_PROXY_TRUST_ANCHORS";

/// Pods named in one message at most, so a large mesh gets a readable line.
const MAX_LISTED: usize = 10;

const KUBERNETES_API: &str = "kubernetes-api";
const KUBERNETES_VERSION: &str = "kubernetes-version";
const PRE_KUBERNETES_SETUP: &str = "pre-kubernetes-setup";
const WEFT_EXISTENCE: &str = "weft-existence";
const WEFT_IDENTITY: &str = "weft-identity";
const WEFT_WEBHOOKS: &str = "weft-webhooks-and-apisvc-tls";
const WEFT_DATA_PLANE: &str = "weft-data-plane";

/// What one run of the checks knows, shared by the categories.
struct Context {
    client: Client,
    /// When waiting checks stop retrying.
    deadline: Instant,
    /// The trust anchors PEM from the ConfigMap, once read.
    anchors_pem: Option<String>,
    /// The issuer certificate and key PEM from the Secret, once read.
    issuer: Option<(String, String)>,
    /// The webhook configuration, once found.
    webhook_config: Option<MutatingWebhookConfiguration>,
}

/// Runs every check `args` asks for, recording each in `rep`. An error is
/// only ever a failure to write the output.
pub async fn run<W: Write>(args: &CheckArgs, rep: &mut Reporter<W>) -> std::io::Result<()> {
    let deadline = Instant::now() + args.wait;

    // === kubernetes-api ===
    // Without a client nothing else can run: stop here, as Linkerd does.
    let client = match args.kube.client().await {
        Ok(client) => {
            rep.record(
                KUBERNETES_API,
                CheckResult::success("can initialize the client", "k8s-api"),
            )?;
            client
        }
        Err(e) => {
            return rep.record(
                KUBERNETES_API,
                CheckResult::error("can initialize the client", "k8s-api", chain_text(&e)),
            );
        }
    };
    let version = match client.apiserver_version().await {
        Ok(info) => {
            rep.record(
                KUBERNETES_API,
                CheckResult::success("can query the Kubernetes API", "k8s-api"),
            )?;
            info
        }
        Err(e) => {
            return rep.record(
                KUBERNETES_API,
                CheckResult::error("can query the Kubernetes API", "k8s-api", api_error(&e)),
            );
        }
    };

    // === kubernetes-version ===
    rep.record(
        KUBERNETES_VERSION,
        check_version(&version.major, &version.minor, &version.git_version),
    )?;

    let mut ctx = Context {
        client,
        deadline,
        anchors_pem: None,
        issuer: None,
        webhook_config: None,
    };
    if args.pre {
        return pre_install(&ctx, rep).await;
    }
    existence(&mut ctx, rep).await?;
    identity(&mut ctx, rep).await?;
    webhook_tls(&ctx, rep).await?;
    if args.proxy {
        data_plane(&ctx, args.namespace.as_deref(), rep).await?;
    }
    Ok(())
}

/// `major`/`minor` as the API's `/version` reports them (`minor` may carry
/// a `+`, as on managed clusters).
fn check_version(major: &str, minor: &str, git_version: &str) -> CheckResult {
    const DESC: &str = "is running the minimum Kubernetes API version";
    let number = |s: &str| -> Option<u32> {
        s.trim_end_matches(|c: char| !c.is_ascii_digit())
            .parse()
            .ok()
    };
    match (number(major), number(minor)) {
        (Some(1), Some(m)) if m < MIN_KUBERNETES_MINOR => CheckResult::warning(
            DESC,
            "k8s-version",
            format!(
                "Kubernetes {git_version} is older than 1.{MIN_KUBERNETES_MINOR}, \
                 the oldest version Weft is tested on"
            ),
        ),
        (Some(_), Some(_)) => CheckResult::success(DESC, "k8s-version"),
        _ => CheckResult::warning(
            DESC,
            "k8s-version",
            format!("cannot read the API server's version {major:?}.{minor:?} ({git_version})"),
        ),
    }
}

// === pre-kubernetes-setup ===

/// `--pre`: the control plane namespace is free and the user may create
/// every kind of object `weft install` prints.
async fn pre_install<W: Write>(ctx: &Context, rep: &mut Reporter<W>) -> std::io::Result<()> {
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let free = match namespaces.get_opt(names::NAMESPACE).await {
        Ok(None) => Ok(()),
        Ok(Some(_)) => Err(format!(
            "The {:?} namespace already exists",
            names::NAMESPACE
        )),
        Err(e) => Err(api_error(&e)),
    };
    rep.record(
        PRE_KUBERNETES_SETUP,
        CheckResult::from_result(
            "control plane namespace does not already exist",
            "pre-ns",
            free,
        ),
    )?;

    // (what, API group, resource, namespaced)
    let kinds: &[(&str, &str, &str, bool)] = &[
        ("Namespaces", "", "namespaces", false),
        (
            "ClusterRoles",
            "rbac.authorization.k8s.io",
            "clusterroles",
            false,
        ),
        (
            "ClusterRoleBindings",
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
            false,
        ),
        (
            "CustomResourceDefinitions",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            false,
        ),
        (
            "MutatingWebhookConfigurations",
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
            false,
        ),
        ("ServiceAccounts", "", "serviceaccounts", true),
        ("Services", "", "services", true),
        ("Deployments", "apps", "deployments", true),
        ("ConfigMaps", "", "configmaps", true),
        ("Secrets", "", "secrets", true),
    ];
    for (what, group, resource, namespaced) in kinds {
        let ns = namespaced.then_some(names::NAMESPACE);
        let allowed = can(&ctx.client, "create", group, resource, ns).await;
        rep.record(
            PRE_KUBERNETES_SETUP,
            CheckResult::from_result(format!("can create {what}"), "pre-k8s-access", allowed),
        )?;
    }
    Ok(())
}

/// Asks the API server whether the current user may `verb` `resource`
/// (a SelfSubjectAccessReview: no object is created).
async fn can(
    client: &Client,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
) -> Result<(), String> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some(group.to_owned()),
                resource: Some(resource.to_owned()),
                verb: Some(verb.to_owned()),
                namespace: namespace.map(str::to_owned),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let answer = api
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| format!("cannot ask the API server: {}", api_error(&e)))?;
    let status = answer.status.unwrap_or_default();
    if status.allowed {
        return Ok(());
    }
    let place = namespace
        .map(|ns| format!(" in namespace {ns:?}"))
        .unwrap_or_default();
    let why = match status.reason.as_deref() {
        Some(r) if !r.is_empty() => format!(": {r}"),
        _ => String::new(),
    };
    Err(format!(
        "not allowed to {verb} {resource}{place}{why}; weft install needs cluster-admin rights"
    ))
}

// === weft-existence ===

async fn existence<W: Write>(ctx: &mut Context, rep: &mut Reporter<W>) -> std::io::Result<()> {
    let client = ctx.client.clone();
    let ns = names::NAMESPACE;

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let found = exists(&namespaces, ns, "Namespace").await;
    rep.record(
        WEFT_EXISTENCE,
        CheckResult::from_result("control plane Namespace exists", "weft-ns", found),
    )?;

    let (present, missing) = crds_check(&client).await;
    rep.record(
        WEFT_EXISTENCE,
        CheckResult::from_result(
            "control plane CustomResourceDefinitions exist",
            "weft-crds",
            missing,
        ),
    )?;
    rep.record(
        WEFT_EXISTENCE,
        CheckResult::from_result(
            "control plane CustomResourceDefinitions are established and served",
            "weft-crds",
            crds_served(&present),
        ),
    )?;

    let roles: Api<ClusterRole> = Api::all(client.clone());
    let found = exists(&roles, names::CONTROLLER_CLUSTER_ROLE, "ClusterRole").await;
    rep.record(
        WEFT_EXISTENCE,
        CheckResult::from_result("control plane ClusterRoles exist", "weft-rbac", found),
    )?;
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    let found = binding_check(&bindings).await;
    rep.record(
        WEFT_EXISTENCE,
        CheckResult::from_result(
            "control plane ClusterRoleBindings exist",
            "weft-rbac",
            found,
        ),
    )?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let found = exists(
        &accounts,
        names::CONTROLLER_SERVICE_ACCOUNT,
        "ServiceAccount",
    )
    .await;
    rep.record(
        WEFT_EXISTENCE,
        CheckResult::from_result("control plane ServiceAccounts exist", "weft-sa", found),
    )?;

    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let config = config_check(&config_maps).await;
    rep.record(
        WEFT_EXISTENCE,
        CheckResult::from_result(
            format!("'{}' config map exists", names::CONFIG_MAP),
            "weft-config",
            config,
        ),
    )?;

    let webhooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let found = match webhooks.get_opt(names::WEBHOOK_CONFIGURATION).await {
        Ok(Some(mwc)) => {
            let has_hook = mwc
                .webhooks
                .iter()
                .flatten()
                .any(|w| w.name == names::WEBHOOK_NAME);
            let result = if has_hook {
                Ok(())
            } else {
                Err(format!(
                    "MutatingWebhookConfiguration {:?} has no webhook {:?}",
                    names::WEBHOOK_CONFIGURATION,
                    names::WEBHOOK_NAME
                ))
            };
            ctx.webhook_config = Some(mwc);
            result
        }
        Ok(None) => Err(format!(
            "MutatingWebhookConfiguration {:?} not found",
            names::WEBHOOK_CONFIGURATION
        )),
        Err(e) => Err(api_error(&e)),
    };
    rep.record(
        WEFT_EXISTENCE,
        CheckResult::from_result(
            "control plane MutatingWebhookConfigurations exist",
            "weft-webhook-config",
            found,
        ),
    )?;

    // Waiting only makes sense once the Deployment exists: without it no
    // pod will ever come, so fail at once instead of after `--wait`.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let ready = match exists(&deployments, names::CONTROLLER_DEPLOYMENT, "Deployment").await {
        Ok(()) => retrying(ctx.deadline, || controller_pods_ready(&client)).await,
        Err(why) => Err(why),
    };
    rep.record(
        WEFT_EXISTENCE,
        CheckResult::from_result("control plane pods are ready", "weft-pods-ready", ready),
    )
}

/// `Ok` when object `name` exists.
async fn exists<K>(api: &Api<K>, name: &str, kind: &str) -> Result<(), String>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    match api.get_opt(name).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(format!("{kind} {name:?} not found")),
        Err(e) => Err(api_error(&e)),
    }
}

/// Looks up every CRD of `install/crds.yaml`: the ones found (with the
/// versions `weft install --crds` serves) and an error naming the missing.
async fn crds_check(
    client: &Client,
) -> (
    Vec<(CustomResourceDefinition, Vec<String>)>,
    Result<(), String>,
) {
    let wanted = match weft_smi_crds::crds() {
        Ok(crds) => crds,
        Err(e) => return (Vec::new(), Err(format!("cannot build the CRD list: {e}"))),
    };
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut present = Vec::new();
    let mut missing = Vec::new();
    let mut errors = Vec::new();
    for crd in wanted {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let versions: Vec<String> = crd
            .spec
            .versions
            .iter()
            .filter(|v| v.served)
            .map(|v| v.name.clone())
            .collect();
        match api.get_opt(&name).await {
            Ok(Some(live)) => present.push((live, versions)),
            Ok(None) => missing.push(name),
            Err(e) => errors.push(format!("{name}: {}", api_error(&e))),
        }
    }
    let result = if !errors.is_empty() {
        Err(errors.join("\n"))
    } else if !missing.is_empty() {
        Err(format!(
            "missing CustomResourceDefinitions: {}",
            missing.join(", ")
        ))
    } else {
        Ok(())
    };
    (present, result)
}

/// Every CRD found is Established and serves the versions Weft installs.
fn crds_served(present: &[(CustomResourceDefinition, Vec<String>)]) -> Result<(), String> {
    let mut problems = Vec::new();
    for (live, versions) in present {
        let name = live.metadata.name.as_deref().unwrap_or_default();
        let established = live
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if !established {
            problems.push(format!("{name} is not Established"));
        }
        for version in versions {
            let served = live
                .spec
                .versions
                .iter()
                .any(|v| &v.name == version && v.served);
            if !served {
                problems.push(format!("{name} does not serve version {version}"));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// The ClusterRoleBinding exists and grants the ClusterRole to the
/// controller's ServiceAccount.
async fn binding_check(api: &Api<ClusterRoleBinding>) -> Result<(), String> {
    let name = names::CONTROLLER_CLUSTER_ROLE;
    let binding = match api.get_opt(name).await {
        Ok(Some(b)) => b,
        Ok(None) => return Err(format!("ClusterRoleBinding {name:?} not found")),
        Err(e) => return Err(api_error(&e)),
    };
    if binding.role_ref.kind != "ClusterRole" || binding.role_ref.name != name {
        return Err(format!(
            "ClusterRoleBinding {name:?} refers to {} {:?}, not ClusterRole {name:?}",
            binding.role_ref.kind, binding.role_ref.name
        ));
    }
    let bound = binding.subjects.iter().flatten().any(|s| {
        s.kind == "ServiceAccount"
            && s.name == names::CONTROLLER_SERVICE_ACCOUNT
            && s.namespace.as_deref() == Some(names::NAMESPACE)
    });
    if bound {
        Ok(())
    } else {
        Err(format!(
            "ClusterRoleBinding {name:?} does not bind ServiceAccount {}/{}",
            names::NAMESPACE,
            names::CONTROLLER_SERVICE_ACCOUNT
        ))
    }
}

/// The values ConfigMap exists and holds values the controller can read.
async fn config_check(api: &Api<ConfigMap>) -> Result<(), String> {
    let name = names::CONFIG_MAP;
    let cm = match api.get_opt(name).await {
        Ok(Some(cm)) => cm,
        Ok(None) => return Err(format!("ConfigMap {}/{name} not found", names::NAMESPACE)),
        Err(e) => return Err(api_error(&e)),
    };
    let Some(text) = cm.data.as_ref().and_then(|d| d.get(names::VALUES_KEY)) else {
        return Err(format!(
            "ConfigMap {}/{name} has no key {:?}",
            names::NAMESPACE,
            names::VALUES_KEY
        ));
    };
    weft_inject::Values::from_yaml(&format!("ConfigMap {}/{name}", names::NAMESPACE), text)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// At least one controller pod is Ready.
async fn controller_pods_ready(client: &Client) -> Result<(), String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), names::NAMESPACE);
    let selector = format!("{}=controller", names::CONTROL_PLANE_COMPONENT_LABEL);
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| api_error(&e))?;
    if list.items.is_empty() {
        return Err(format!(
            "No running pods for {:?}",
            names::CONTROLLER_DEPLOYMENT
        ));
    }
    if list.items.iter().any(pod_ready) {
        return Ok(());
    }
    let not_ready: Vec<String> = list
        .items
        .iter()
        .take(MAX_LISTED)
        .map(|p| {
            format!(
                "pod {} is not ready (phase {})",
                p.metadata.name.as_deref().unwrap_or("?"),
                pod_phase(p)
            )
        })
        .collect();
    Err(not_ready.join("\n"))
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn pod_phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Unknown")
}

// === weft-identity ===

async fn identity<W: Write>(ctx: &mut Context, rep: &mut Reporter<W>) -> std::io::Result<()> {
    let material = read_identity(&ctx.client).await;
    let (anchors_pem, issuer_crt, issuer_key) = match material {
        Ok(m) => m,
        Err(why) => {
            // Nothing to judge without the certificates: as in Linkerd,
            // the rest of the category depends on this one.
            return rep.record(
                WEFT_IDENTITY,
                CheckResult::error("certificate config is valid", "weft-identity-config", why),
            );
        }
    };
    let parsed = certs::describe_pem("trust anchors", &anchors_pem).and_then(|anchors| {
        certs::describe_pem("issuer certificate", &issuer_crt).map(|issuer| (anchors, issuer))
    });
    let (anchors, issuer) = match parsed {
        Ok(p) => p,
        Err(why) => {
            return rep.record(
                WEFT_IDENTITY,
                CheckResult::error("certificate config is valid", "weft-identity-config", why),
            );
        }
    };
    rep.record(
        WEFT_IDENTITY,
        CheckResult::success("certificate config is valid", "weft-identity-config"),
    )?;

    let now = SystemTime::now();
    let anchor_validity = certs::validity("trust anchor", &anchors, now);
    rep.record(
        WEFT_IDENTITY,
        CheckResult::from_result(
            "trust anchors are within their validity period",
            "weft-identity-anchors",
            anchor_validity.now,
        ),
    )?;
    rep.record(
        WEFT_IDENTITY,
        soon_result(
            "trust anchors are valid for at least 60 days",
            "weft-identity-anchors",
            anchor_validity.soon,
        ),
    )?;
    // Only the issuer's own certificate (the first): intermediates, if
    // any, are covered by "issued by the trust anchor".
    let issuer_validity = certs::validity("issuer certificate", &issuer[..1], now);
    rep.record(
        WEFT_IDENTITY,
        CheckResult::from_result(
            "issuer cert is within its validity period",
            "weft-identity-issuer",
            issuer_validity.now,
        ),
    )?;
    rep.record(
        WEFT_IDENTITY,
        soon_result(
            "issuer cert is valid for at least 60 days",
            "weft-identity-issuer",
            issuer_validity.soon,
        ),
    )?;
    let signed = weft_identity::Issuer::from_pem(&issuer_crt, &issuer_key, &anchors_pem)
        .map(|_| ())
        .map_err(|e| e.to_string());
    rep.record(
        WEFT_IDENTITY,
        CheckResult::from_result(
            "issuer cert is issued by the trust anchor",
            "weft-identity-issuer-signed",
            signed,
        ),
    )?;
    ctx.anchors_pem = Some(anchors_pem);
    ctx.issuer = Some((issuer_crt, issuer_key));
    Ok(())
}

/// A "valid for at least 60 days" result: a warning, never a failure (the
/// validity-period check fails the run when it is already too late).
fn soon_result(desc: &str, anchor: &'static str, soon: Result<(), String>) -> CheckResult {
    match soon {
        Ok(()) => CheckResult::success(desc, anchor),
        Err(why) => CheckResult::warning(desc, anchor, why),
    }
}

/// The trust anchors PEM and the issuer's certificate and key PEM.
async fn read_identity(client: &Client) -> Result<(String, String, String), String> {
    let ns = names::NAMESPACE;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let cm_name = names::TRUST_ANCHORS_CONFIG_MAP;
    let anchors = match config_maps.get_opt(cm_name).await {
        Ok(Some(cm)) => cm
            .data
            .and_then(|mut d| d.remove(names::TRUST_ANCHORS_KEY))
            .ok_or_else(|| {
                format!(
                    "ConfigMap {ns}/{cm_name} has no key {:?}",
                    names::TRUST_ANCHORS_KEY
                )
            })?,
        Ok(None) => return Err(format!("ConfigMap {ns}/{cm_name} not found")),
        Err(e) => return Err(api_error(&e)),
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret_name = names::ISSUER_SECRET;
    let secret = match secrets.get_opt(secret_name).await {
        Ok(Some(s)) => s,
        Ok(None) => return Err(format!("Secret {ns}/{secret_name} not found")),
        Err(e) => return Err(api_error(&e)),
    };
    let crt = secret_text(&secret, names::ISSUER_CERT_KEY)?;
    let key = secret_text(&secret, names::ISSUER_KEY_KEY)?;
    Ok((anchors, crt, key))
}

/// A Secret's key as UTF-8 text (`data`, or `stringData` as written by
/// hand).
fn secret_text(secret: &Secret, key: &str) -> Result<String, String> {
    let name = secret.metadata.name.as_deref().unwrap_or("?");
    let ns = secret.metadata.namespace.as_deref().unwrap_or("?");
    if let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return String::from_utf8(bytes.0.clone())
            .map_err(|_| format!("Secret {ns}/{name} key {key:?} is not text (PEM expected)"));
    }
    if let Some(text) = secret.string_data.as_ref().and_then(|d| d.get(key)) {
        return Ok(text.clone());
    }
    Err(format!("Secret {ns}/{name} has no key {key:?}"))
}

// === weft-webhooks-and-apisvc-tls ===

async fn webhook_tls<W: Write>(ctx: &Context, rep: &mut Reporter<W>) -> std::io::Result<()> {
    const VALID: &str = "proxy-injector webhook has valid cert";
    const FRESH: &str = "proxy-injector cert is valid for at least 60 days";
    const BUNDLE: &str = "proxy-injector caBundle matches the serving cert";

    let (host, bundle) = webhook_target(ctx.webhook_config.as_ref());
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), names::NAMESPACE);
    let tls_crt = match secrets.get_opt(names::WEBHOOK_SECRET).await {
        Ok(Some(secret)) => secret_text(&secret, "tls.crt"),
        Ok(None) => Err(format!(
            "Secret {}/{} not found",
            names::NAMESPACE,
            names::WEBHOOK_SECRET
        )),
        Err(e) => Err(api_error(&e)),
    };
    let parsed = tls_crt.and_then(|pem| {
        certs::describe_pem("webhook serving certificate", &pem).map(|infos| (pem, infos))
    });
    let (tls_crt, infos) = match parsed {
        Ok(p) => p,
        Err(why) => {
            return rep.record(
                WEFT_WEBHOOKS,
                CheckResult::error(VALID, "weft-webhook-cert", why),
            )
        }
    };
    let validity = certs::validity(
        "webhook serving certificate",
        &infos[..1],
        SystemTime::now(),
    );
    let valid = validity.now.and_then(|()| certs::names(&infos, &host));
    rep.record(
        WEFT_WEBHOOKS,
        CheckResult::from_result(VALID, "weft-webhook-cert", valid),
    )?;
    rep.record(
        WEFT_WEBHOOKS,
        soon_result(FRESH, "weft-webhook-cert", validity.soon),
    )?;

    let matches = match bundle {
        Err(why) => Err(why),
        Ok(bundle) => certs::chains_to_bundle(&tls_crt, &bundle, &host).map_err(|why| {
            format!(
                "the caBundle of MutatingWebhookConfiguration {:?} does not verify the \
                 certificate in Secret {}/{}: {why}\n\
                 the API server cannot call the injector, so pods are created without proxies",
                names::WEBHOOK_CONFIGURATION,
                names::NAMESPACE,
                names::WEBHOOK_SECRET
            )
        }),
    };
    rep.record(
        WEFT_WEBHOOKS,
        CheckResult::from_result(BUNDLE, "weft-webhook-ca-bundle", matches),
    )
}

/// The host name the API server will check the serving certificate for
/// (the Service's `NAME.NS.svc`, or the host of `url:`) and the webhook's
/// caBundle PEM.
fn webhook_target(mwc: Option<&MutatingWebhookConfiguration>) -> (String, Result<String, String>) {
    let default_host = format!("{}.{}.svc", names::INJECTOR_SERVICE, names::NAMESPACE);
    let Some(mwc) = mwc else {
        return (
            default_host,
            Err(format!(
                "MutatingWebhookConfiguration {:?} not found",
                names::WEBHOOK_CONFIGURATION
            )),
        );
    };
    let Some(hook) = mwc
        .webhooks
        .iter()
        .flatten()
        .find(|w| w.name == names::WEBHOOK_NAME)
    else {
        return (
            default_host,
            Err(format!("webhook {:?} not found", names::WEBHOOK_NAME)),
        );
    };
    let cc = &hook.client_config;
    let host = if let Some(svc) = &cc.service {
        format!("{}.{}.svc", svc.name, svc.namespace)
    } else if let Some(url) = &cc.url {
        url.parse::<http::Uri>()
            .ok()
            .and_then(|u| u.host().map(|h| h.trim_matches(['[', ']']).to_owned()))
            .unwrap_or(default_host)
    } else {
        default_host
    };
    let bundle = match &cc.ca_bundle {
        Some(b) if !b.0.is_empty() => String::from_utf8(b.0.clone())
            .map_err(|_| "the webhook's caBundle is not PEM text".to_owned()),
        _ => Err(format!(
            "webhook {:?} has no caBundle: the API server cannot verify the injector",
            names::WEBHOOK_NAME
        )),
    };
    (host, bundle)
}

// === weft-data-plane ===

async fn data_plane<W: Write>(
    ctx: &Context,
    namespace: Option<&str>,
    rep: &mut Reporter<W>,
) -> std::io::Result<()> {
    let mut namespace_found = true;
    if let Some(ns) = namespace {
        let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
        let found = exists(&namespaces, ns, "Namespace").await;
        namespace_found = found.is_ok();
        rep.record(
            WEFT_DATA_PLANE,
            CheckResult::from_result("data plane namespace exists", "weft-data-plane-ns", found),
        )?;
    }
    let client = ctx.client.clone();
    let once = || async {
        let pods = meshed_pods(&client, namespace).await?;
        proxies_ready(&pods, namespace)
    };
    // Pods may still be coming up after `kubectl apply`: wait for them,
    // unless their namespace does not even exist.
    let ready = if namespace_found {
        retrying(ctx.deadline, once).await
    } else {
        once().await
    };
    rep.record(
        WEFT_DATA_PLANE,
        CheckResult::from_result(
            "data plane proxies are ready",
            "weft-data-plane-ready",
            ready,
        ),
    )?;

    let anchors = match (&ctx.anchors_pem, meshed_pods(&client, namespace).await) {
        (None, _) => {
            Err("the cluster's trust anchors could not be read (see weft-identity)".into())
        }
        (_, Err(why)) => Err(why),
        (Some(current), Ok(pods)) => {
            let issuer = ctx.issuer.as_ref();
            proxies_trust(&pods, current, issuer)
        }
    };
    let result = match anchors {
        Ok(Anchors::Same) => CheckResult::success(
            "data plane proxies certificate match CA",
            "weft-data-plane-anchors",
        ),
        Ok(Anchors::Differ(why)) => CheckResult::warning(
            "data plane proxies certificate match CA",
            "weft-data-plane-anchors",
            why,
        ),
        Err(why) => CheckResult::error(
            "data plane proxies certificate match CA",
            "weft-data-plane-anchors",
            why,
        ),
    };
    rep.record(WEFT_DATA_PLANE, result)
}

/// Running meshed pods: labelled as injected by this control plane, not
/// the control plane itself, not finished.
async fn meshed_pods(client: &Client, namespace: Option<&str>) -> Result<Vec<Pod>, String> {
    let api: Api<Pod> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let selector = format!(
        "{}={},!{}",
        names::CONTROL_PLANE_NS_LABEL,
        names::NAMESPACE,
        names::CONTROL_PLANE_COMPONENT_LABEL
    );
    let list = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| api_error(&e))?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| !matches!(pod_phase(p), "Succeeded" | "Failed"))
        .collect())
}

fn pod_name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("?"),
        pod.metadata.name.as_deref().unwrap_or("?")
    )
}

/// Every pod has a `weft-proxy` container (a regular one or a native
/// sidecar) whose status says ready.
fn proxies_ready(pods: &[Pod], namespace: Option<&str>) -> Result<(), String> {
    if pods.is_empty() {
        let place = namespace
            .map(|ns| format!(" in the {ns:?} namespace"))
            .unwrap_or_default();
        return Err(format!(
            "No {:?} containers found{place}",
            names::PROXY_CONTAINER
        ));
    }
    let mut problems = Vec::new();
    for pod in pods {
        if proxy_container(pod).is_none() {
            problems.push(format!(
                "pod {} has no {:?} container",
                pod_name(pod),
                names::PROXY_CONTAINER
            ));
            continue;
        }
        let status = pod.status.as_ref();
        let ready = status
            .and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .flatten()
            .chain(
                status
                    .and_then(|s| s.init_container_statuses.as_ref())
                    .into_iter()
                    .flatten(),
            )
            .any(|c| c.name == names::PROXY_CONTAINER && c.ready);
        if !ready {
            problems.push(format!(
                "pod {} (phase {}): container {:?} is not ready",
                pod_name(pod),
                pod_phase(pod),
                names::PROXY_CONTAINER
            ));
        }
    }
    listed(problems)
}

/// The pod's proxy container: a regular container, or an init container
/// (the native sidecar).
fn proxy_container(pod: &Pod) -> Option<&Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == names::PROXY_CONTAINER)
}

/// How the pods' trust anchors compare with the cluster's.
enum Anchors {
    /// Every pod has exactly the current anchors.
    Same,
    /// Some pods have other anchors that still verify the current issuer
    /// (e.g. half-way through a rotation): a warning.
    Differ(String),
}

/// `Err` names pods whose anchors cannot verify the current issuer: their
/// proxies reject every peer's certificate.
fn proxies_trust(
    pods: &[Pod],
    current: &str,
    issuer: Option<&(String, String)>,
) -> Result<Anchors, String> {
    let mut stale = Vec::new();
    let mut different = Vec::new();
    for pod in pods {
        let Some(container) = proxy_container(pod) else {
            continue;
        };
        let env = container
            .env
            .iter()
            .flatten()
            .find(|e| e.name == TRUST_ANCHORS_ENV);
        let Some(pem) = env.and_then(|e| e.value.as_deref()) else {
            stale.push(format!(
                "pod {}: the {:?} container has no inline {TRUST_ANCHORS_ENV}",
                pod_name(pod),
                names::PROXY_CONTAINER
            ));
            continue;
        };
        match certs::same_certificates(pem, current) {
            Ok(true) => {}
            Ok(false) => {
                let still_trusted = issuer.is_some_and(|(crt, key)| {
                    weft_identity::Issuer::from_pem(crt, key, pem).is_ok()
                });
                let line = format!(
                    "pod {} was injected with other trust anchors than ConfigMap {}/{}",
                    pod_name(pod),
                    names::NAMESPACE,
                    names::TRUST_ANCHORS_CONFIG_MAP
                );
                if still_trusted {
                    different.push(line);
                } else {
                    stale.push(line);
                }
            }
            Err(why) => stale.push(format!("pod {}: {TRUST_ANCHORS_ENV}: {why}", pod_name(pod))),
        }
    }
    listed(stale)?;
    match listed(different) {
        Ok(()) => Ok(Anchors::Same),
        Err(why) => Ok(Anchors::Differ(why)),
    }
}

// === helpers ===

/// `Ok` when `problems` is empty, else one line per problem (at most
/// [`MAX_LISTED`], then a count).
fn listed(problems: Vec<String>) -> Result<(), String> {
    if problems.is_empty() {
        return Ok(());
    }
    let more = problems.len().saturating_sub(MAX_LISTED);
    let mut text = problems
        .into_iter()
        .take(MAX_LISTED)
        .collect::<Vec<_>>()
        .join("\n");
    if more > 0 {
        text.push_str(&format!("\n... and {more} more"));
    }
    Err(text)
}

/// Runs `check` until it passes or `deadline` is near, waiting
/// [`RETRY_INTERVAL`] between tries; each new reason for waiting is
/// printed once to stderr (no spinner, so logs stay readable). At most
/// `wait / RETRY_INTERVAL + 1` tries.
async fn retrying<F, Fut>(deadline: Instant, mut check: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut last: Option<String> = None;
    loop {
        let why = match check().await {
            Ok(()) => return Ok(()),
            Err(why) => why,
        };
        if Instant::now() + RETRY_INTERVAL > deadline {
            return Err(why);
        }
        if last.as_ref() != Some(&why) {
            let first = why.lines().next().unwrap_or_default();
            eprintln!("waiting for check to complete: {first}");
            last = Some(why);
        }
        tokio::time::sleep(RETRY_INTERVAL).await;
    }
}

/// An error and its causes on one line, each cause once (kube's errors
/// already repeat their source in their message).
fn chain_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for part in e.chain().map(|c| c.to_string()) {
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// The API server's own message for API errors (`namespaces "x" is
/// forbidden: …`), else the client's error chain.
fn api_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::report::Status;

    #[test]
    fn versions_below_the_minimum_warn() {
        assert_eq!(check_version("1", "20", "v1.20.2").status, Status::Success);
        assert_eq!(
            check_version("1", "31+", "v1.31.0-gke").status,
            Status::Success
        );
        let old = check_version("1", "19", "v1.19.3");
        assert_eq!(old.status, Status::Warning);
        assert!(old.error.unwrap().contains("older than 1.20"));
        assert_eq!(check_version("", "", "").status, Status::Warning);
    }

    #[test]
    fn long_lists_are_cut() {
        assert_eq!(listed(vec![]), Ok(()));
        let many: Vec<String> = (0..13).map(|i| format!("p{i}")).collect();
        let text = listed(many).unwrap_err();
        assert_eq!(text.lines().count(), MAX_LISTED + 1);
        assert!(text.ends_with("... and 3 more"));
    }

    #[tokio::test]
    async fn retrying_stops_at_the_deadline() {
        let mut calls = 0;
        let result = retrying(Instant::now(), || {
            calls += 1;
            async { Err::<(), _>("not yet".to_owned()) }
        })
        .await;
        assert_eq!(result, Err("not yet".into()));
        assert_eq!(calls, 1);
    }
}
