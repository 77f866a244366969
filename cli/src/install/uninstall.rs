//! `weft uninstall`: every object `weft install` created, found in the
//! cluster by its `app.kubernetes.io/part-of=weft` label and printed as
//! minimal references for `kubectl delete -f -`.
//!
//! It prints rather than deletes, like `linkerd uninstall`, so the operator
//! sees (and can keep) what goes. While meshed pods exist it refuses:
//! deleting the control plane under them would leave proxies with no
//! identity or destination service.

use std::fmt::Debug;

use anyhow::Context;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::ListParams;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use weft_inject::names;

use super::{format_objects, Format};
use crate::kube::KubeArgs;

/// Flags of `weft uninstall`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Print every object `weft install` created, for `kubectl delete -f -`",
    long_about = "Print every object `weft install` created (found by the label \
app.kubernetes.io/part-of=weft, CRDs included), for `kubectl delete -f -`:\n  \
weft uninstall | kubectl delete -f -\n\n\
Refuses (exit 1, listing them) while meshed pods exist outside the weft namespace: uninject \
them first, or pass --force."
)]
pub struct UninstallArgs {
    #[command(flatten)]
    kube: KubeArgs,
    /// Output format: multi-document YAML, or one JSON `v1` List.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Yaml)]
    output: Format,
    /// Print the objects even while meshed pods exist.
    #[arg(long)]
    force: bool,
}

/// Runs `weft uninstall`.
pub async fn run(args: UninstallArgs) -> anyhow::Result<()> {
    let client = args.kube.client().await?;
    if !args.force {
        let meshed = meshed_pods(&client).await?;
        if !meshed.is_empty() {
            anyhow::bail!(
                "{} meshed pod(s) still run with a Weft proxy:\n  {}\n\
                 remove their proxies first (remove the {} annotation and restart them, or \
                 `weft uninject`), or pass --force to uninstall anyway",
                meshed.len(),
                meshed.join("\n  "),
                names::INJECT_ANNOTATION,
            );
        }
    }
    let objects = installed_objects(&client).await?;
    if objects.is_empty() {
        eprintln!(
            "weft: no object labelled {}={} found; nothing to uninstall",
            names::PART_OF_LABEL,
            names::PART_OF_VALUE
        );
    }
    let text = format_objects(&objects, args.output)?;
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing to stdout")
}

/// `namespace/name` of every pod injected by this control plane (labelled
/// `linkerd.io/control-plane-ns=weft`) outside the control plane's own
/// namespace.
pub async fn meshed_pods(client: &Client) -> anyhow::Result<Vec<String>> {
    let selector = format!("{}={}", names::CONTROL_PLANE_NS_LABEL, names::NAMESPACE);
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().labels(&selector))
        .await
        .context("cannot list meshed pods")?;
    let mut out: Vec<String> = pods
        .items
        .iter()
        .filter(|p| p.namespace().as_deref() != Some(names::NAMESPACE))
        .map(|p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()))
        .collect();
    out.sort();
    Ok(out)
}

/// Minimal references (apiVersion, kind, name, namespace) of every object
/// carrying the install label, in delete order: the webhook first (so pod
/// creation never waits on an injector that is going away), then RBAC, the
/// namespace's contents, the namespace, and the CRDs last.
pub async fn installed_objects(client: &Client) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    let ns = names::NAMESPACE;
    out.extend(list(Api::<MutatingWebhookConfiguration>::all(client.clone())).await?);
    out.extend(list(Api::<ClusterRoleBinding>::all(client.clone())).await?);
    out.extend(list(Api::<ClusterRole>::all(client.clone())).await?);
    out.extend(list(Api::<PodDisruptionBudget>::namespaced(client.clone(), ns)).await?);
    out.extend(list(Api::<Service>::namespaced(client.clone(), ns)).await?);
    out.extend(list(Api::<Deployment>::namespaced(client.clone(), ns)).await?);
    out.extend(list(Api::<ConfigMap>::namespaced(client.clone(), ns)).await?);
    out.extend(list(Api::<Secret>::namespaced(client.clone(), ns)).await?);
    out.extend(list(Api::<ServiceAccount>::namespaced(client.clone(), ns)).await?);
    out.extend(list(Api::<Namespace>::all(client.clone())).await?);
    out.extend(list(Api::<CustomResourceDefinition>::all(client.clone())).await?);
    Ok(out)
}

/// The labelled objects of one kind, sorted by name. A kind the server
/// does not serve (404: e.g. `policy/v1` PodDisruptionBudgets before
/// Kubernetes 1.21) has none to delete.
async fn list<K>(api: Api<K>) -> anyhow::Result<Vec<serde_json::Value>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let selector = format!("{}={}", names::PART_OF_LABEL, names::PART_OF_VALUE);
    let list = match api
        .list_metadata(&ListParams::default().labels(&selector))
        .await
    {
        Ok(list) => list,
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(Vec::new()),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot list {} {}", K::api_version(&()), K::kind(&())))
        }
    };
    let mut refs: Vec<(Option<String>, String)> = list
        .items
        .into_iter()
        .map(|o| (o.metadata.namespace, o.metadata.name.unwrap_or_default()))
        .collect();
    refs.sort();
    Ok(refs
        .into_iter()
        .map(|(namespace, name)| {
            let mut metadata = serde_json::json!({ "name": name });
            if let Some(namespace) = namespace {
                metadata["namespace"] = namespace.into();
            }
            serde_json::json!({
                "apiVersion": K::api_version(&()),
                "kind": K::kind(&()),
                "metadata": metadata,
            })
        })
        .collect())
}
