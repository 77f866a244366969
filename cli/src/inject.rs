//! `weft inject` and `weft uninject`: the webhook's mutation applied to
//! manifests, as `linkerd inject` / `linkerd uninject` do.
//!
//! Objects stay `serde_json::Value`s so every field this tool does not
//! touch (including ones newer than k8s-openapi knows) comes out exactly as
//! it came in. Only a pod template's metadata and spec are read into
//! k8s-openapi types for [`weft_inject::Injector`]; afterwards just the
//! fields that changed are written back, element by element, so an
//! unchanged container keeps its original JSON.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use weft_inject::{names, uninject, Injector, Outcome, Owner, PodContext, Skip, Values};

use crate::kube::KubeArgs;

const INJECT_ABOUT: &str = "Add the Weft proxy to Kubernetes manifests";
const INJECT_LONG: &str = "\
Add the Weft proxy to the pod templates of Kubernetes manifests (Pod, Deployment, StatefulSet, \
DaemonSet, ReplicaSet, Job, CronJob and List), read from FILE or `-` (stdin), multi-document \
YAML or JSON; the result goes to stdout in the same format and a report to stderr.

By default only the annotation `linkerd.io/inject: enabled` is added: the injector webhook adds \
the proxy when the pods are created. With --manual the whole sidecar is written, exactly as the \
webhook would write it, from the install values (-f/--set, as for `weft install`) and the trust \
anchors (--identity-trust-anchors-file, else the cluster's ConfigMap \
weft/weft-identity-trust-roots).

Example: kubectl get deploy -o yaml | weft inject - | kubectl apply -f -";

const UNINJECT_LONG: &str = "\
Remove what `weft inject` (or the injector webhook) added to Kubernetes manifests, read from FILE \
or `-`: the proxy and init containers, their volumes, annotations and labels, or (for manifests \
that were only annotated) the `linkerd.io/inject` annotation.

Example: kubectl get deploy -o yaml | weft uninject - | kubectl apply -f -";

/// `weft inject`.
#[derive(Debug, clap::Args)]
#[command(about = INJECT_ABOUT, long_about = INJECT_LONG)]
pub struct InjectArgs {
    /// Manifest file, or `-` for stdin.
    #[arg(value_name = "FILE")]
    file: String,
    /// Write the full sidecar instead of the inject annotation.
    #[arg(long)]
    manual: bool,
    /// A values file (as for `weft install`); repeatable, later files win.
    #[arg(short = 'f', long = "values", value_name = "FILE", requires = "manual")]
    values: Vec<PathBuf>,
    /// Set one value, e.g. `--set proxy.logLevel=debug`; repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE", requires = "manual")]
    set: Vec<String>,
    /// PEM file of the trust anchors the proxies get (default: read from
    /// the cluster's ConfigMap weft/weft-identity-trust-roots).
    #[arg(long, value_name = "PEM", requires = "manual")]
    identity_trust_anchors_file: Option<PathBuf>,
    #[command(flatten)]
    kube: KubeArgs,
}

/// `weft uninject`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Remove the Weft proxy from Kubernetes manifests",
    long_about = UNINJECT_LONG
)]
pub struct UninjectArgs {
    /// Manifest file, or `-` for stdin.
    #[arg(value_name = "FILE")]
    file: String,
}

/// What to do to each pod template.
enum Op {
    /// Add `linkerd.io/inject: enabled`; the injector checks the config
    /// annotations (with default values) to warn now rather than later.
    Annotate(Injector),
    /// The full sidecar.
    Manual(Injector),
    Uninject,
}

/// Runs `weft inject`.
pub async fn run_inject(args: InjectArgs) -> anyhow::Result<()> {
    let input = read_input(&args.file)?;
    let op = if args.manual {
        Op::Manual(manual_injector(&args).await?)
    } else {
        let values = Values::default().finish()?;
        Op::Annotate(Injector::new(values, String::new(), false))
    };
    transform(&input, &op)
}

/// Runs `weft uninject`.
pub fn run_uninject(args: &UninjectArgs) -> anyhow::Result<()> {
    let input = read_input(&args.file)?;
    transform(&input, &Op::Uninject)
}

/// Values, trust anchors and native-sidecar support for `--manual`.
async fn manual_injector(args: &InjectArgs) -> anyhow::Result<Injector> {
    let values = crate::install::load_values(
        &args.values,
        &args.set,
        &crate::install::Shorthands::default(),
    )?;
    let mut client = None;
    let anchors = match &args.identity_trust_anchors_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?,
        None => {
            let c = args.kube.client().await.context(
                "cannot reach the cluster for its trust anchors; pass --identity-trust-anchors-file PEM",
            )?;
            let anchors = cluster_trust_anchors(&c).await?;
            client = Some(c);
            anchors
        }
    };
    if !anchors.contains("-----BEGIN CERTIFICATE-----") {
        anyhow::bail!("the trust anchors are not PEM certificates");
    }
    let native = match values.proxy.native_sidecar.as_str() {
        "auto" => native_sidecar_supported(client, &args.kube).await,
        other => {
            eprintln!("native sidecars {other} (proxy.nativeSidecar)");
            other == "enabled"
        }
    };
    Ok(Injector::new(values, anchors, native))
}

async fn cluster_trust_anchors(client: &kube::Client) -> anyhow::Result<String> {
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), names::NAMESPACE);
    let what = format!(
        "ConfigMap {}/{}",
        names::NAMESPACE,
        names::TRUST_ANCHORS_CONFIG_MAP
    );
    let cm = api
        .get(names::TRUST_ANCHORS_CONFIG_MAP)
        .await
        .with_context(|| {
            format!(
                "cannot read {what} (is Weft installed?); pass --identity-trust-anchors-file PEM"
            )
        })?;
    cm.data
        .and_then(|mut d| d.remove(names::TRUST_ANCHORS_KEY))
        .with_context(|| format!("{what} has no key {}", names::TRUST_ANCHORS_KEY))
}

/// Native sidecars (init containers with `restartPolicy: Always`) run on
/// Kubernetes 1.29+. Without a cluster to ask, they are off: a proxy as a
/// regular container works everywhere. Says which on stderr.
async fn native_sidecar_supported(client: Option<kube::Client>, kube: &KubeArgs) -> bool {
    let client = match client {
        Some(c) => Ok(c),
        None => kube.client().await,
    };
    let version = match client {
        Ok(c) => c.apiserver_version().await.map_err(anyhow::Error::from),
        Err(e) => Err(e),
    };
    match version {
        Ok(info) => {
            let supported =
                weft_inject::mutate::native_sidecars_supported(&info.major, &info.minor);
            eprintln!(
                "cluster runs Kubernetes {}.{}: native sidecars {}",
                info.major,
                info.minor,
                if supported { "on" } else { "off (needs 1.29+)" }
            );
            supported
        }
        Err(e) => {
            eprintln!("cannot ask the cluster for its version ({e:#}): native sidecars off");
            false
        }
    }
}

fn read_input(file: &str) -> anyhow::Result<String> {
    if file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read stdin")?;
        Ok(text)
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))
    }
}

// === documents ===

/// One object of the input, with where it starts (for error messages).
struct Document {
    index: usize,
    line: usize,
    object: Value,
}

/// Transforms every document, then prints all of them: an error in any
/// document prints nothing on stdout.
fn transform(input: &str, op: &Op) -> anyhow::Result<()> {
    let json = input.trim_start().starts_with(['{', '[']);
    let mut docs = if json {
        json_documents(input)?
    } else {
        yaml_documents(input)?
    };
    let mut report = Vec::new();
    for doc in &mut docs {
        let at = format!("document {} (line {})", doc.index, doc.line);
        object(&mut doc.object, op, &mut report).map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
    }
    let mut out = String::new();
    for (i, doc) in docs.iter().enumerate() {
        if json {
            out.push_str(&serde_json::to_string_pretty(&doc.object).context("rendering JSON")?);
            out.push('\n');
        } else {
            if i > 0 {
                out.push_str("---\n");
            }
            out.push_str(&serde_yaml::to_string(&doc.object).context("rendering YAML")?);
        }
    }
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing to stdout")?;
    for line in report {
        eprintln!("{line}");
    }
    Ok(())
}

/// JSON input: one or more concatenated objects.
fn json_documents(input: &str) -> anyhow::Result<Vec<Document>> {
    let mut docs = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(input).into_iter::<Value>();
    let mut index = 0;
    loop {
        let offset = stream.byte_offset();
        let Some(next) = stream.next() else { break };
        index += 1;
        // The document starts at its first non-blank character.
        let start = offset + (input[offset..].len() - input[offset..].trim_start().len());
        let line = input[..start].matches('\n').count() + 1;
        match next {
            Ok(object) => docs.push(Document {
                index,
                line,
                object,
            }),
            Err(e) => anyhow::bail!(
                "document {index} (line {}, column {}): invalid JSON: {}",
                e.line(),
                e.column(),
                strip_location(&e.to_string())
            ),
        }
    }
    Ok(docs)
}

/// YAML input: `---`-separated documents, split by the same code as the
/// controller's file feed, so line numbers agree everywhere.
fn yaml_documents(input: &str) -> anyhow::Result<Vec<Document>> {
    let mut docs = Vec::new();
    let mut index = 0;
    for chunk in weft_smi_crds::split_yaml_documents(input) {
        let Some(line) = chunk.content_line() else {
            continue;
        };
        let first_line = chunk.first_line;
        index += 1;
        let object: Value = serde_yaml::from_str(&chunk.text()).map_err(|e| {
            let (l, c) = e
                .location()
                .map_or((line, 0), |loc| (loc.line() + first_line - 1, loc.column()));
            anyhow::anyhow!(
                "document {index} (line {l}, column {c}): invalid YAML: {}",
                strip_location(&e.to_string())
            )
        })?;
        if object.is_null() {
            continue;
        }
        docs.push(Document {
            index,
            line,
            object,
        });
    }
    Ok(docs)
}

/// serde's messages end in "at line L column C" relative to the document;
/// the caller reports the position in the whole input instead.
fn strip_location(message: &str) -> &str {
    message.find(" at line ").map_or(message, |i| &message[..i])
}

// === objects ===

/// Transforms one object (recursing into Lists), adding report lines.
fn object(obj: &mut Value, op: &Op, report: &mut Vec<String>) -> Result<(), String> {
    let map = obj
        .as_object_mut()
        .ok_or("a Kubernetes object must be a mapping with apiVersion and kind")?;
    let kind = map
        .get("kind")
        .and_then(Value::as_str)
        .ok_or("missing kind")?
        .to_owned();
    if !map.get("apiVersion").is_some_and(Value::is_string) {
        return Err(format!("{kind}: missing apiVersion"));
    }
    if kind == "List" {
        let items = map
            .get_mut("items")
            .and_then(Value::as_array_mut)
            .ok_or("List without items")?;
        for (i, item) in items.iter_mut().enumerate() {
            object(item, op, report).map_err(|e| format!("items[{i}]: {e}"))?;
        }
        return Ok(());
    }
    let metadata = map.get("metadata");
    let text = |key: &str| {
        metadata
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let name = match text("name") {
        n if n.is_empty() => text("generateName"),
        n => n,
    };
    let namespace = text("namespace");
    let kind_lc = kind.to_lowercase();
    let who = format!("{kind_lc} {name:?}");
    let path: &[&str] = match kind.as_str() {
        "Pod" => &[],
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => &["spec", "template"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template"],
        _ => {
            report.push(format!(
                "{who} left unchanged: kind {kind} has no pod template"
            ));
            return Ok(());
        }
    };
    let mut template: &mut Value = obj;
    for (depth, key) in path.iter().enumerate() {
        template = template
            .get_mut(*key)
            .ok_or_else(|| format!("{who}: no {}", path[..=depth].join(".")))?;
    }
    let owner = (kind != "Pod").then(|| Owner {
        kind: kind_lc.clone(),
        name: name.clone(),
    });
    let ctx = PodContext {
        namespace,
        // A manifest has no namespace to consult: its pods are meant to be
        // injected unless they say otherwise.
        namespace_annotations: BTreeMap::from([(
            names::INJECT_ANNOTATION.to_owned(),
            "enabled".to_owned(),
        )]),
        owner,
    };
    let prefix = if path.is_empty() {
        String::new()
    } else {
        format!("{}.", path.join("."))
    };
    pod_template(template, &prefix, &who, &ctx, op, report)
}

/// Mutates one pod (template) object: `{metadata, spec}`.
fn pod_template(
    template: &mut Value,
    prefix: &str,
    who: &str,
    ctx: &PodContext,
    op: &Op,
    report: &mut Vec<String>,
) -> Result<(), String> {
    let t = template
        .as_object_mut()
        .ok_or_else(|| format!("{who}: {prefix} is not a mapping"))?;
    let meta0: ObjectMeta = typed(t.get("metadata"), &format!("{who}: {prefix}metadata"))?;
    let spec0: PodSpec = match t.get("spec") {
        Some(_) => typed(t.get("spec"), &format!("{who}: {prefix}spec"))?,
        None => return Err(format!("{who}: no {prefix}spec")),
    };
    let (mut meta, mut spec) = (meta0.clone(), spec0.clone());
    match op {
        Op::Uninject => {
            if uninject(&mut meta, &mut spec) {
                report.push(format!("{who} uninjected"));
            } else {
                report.push(format!("{who} left unchanged: not injected"));
            }
        }
        Op::Annotate(injector) => match weft_inject::skip_reason(&meta, &spec, ctx) {
            Some(skip) => report.push(skipped(who, &skip)),
            None => {
                meta.annotations
                    .get_or_insert_with(BTreeMap::new)
                    .entry(names::INJECT_ANNOTATION.to_owned())
                    .or_insert_with(|| "enabled".to_owned());
                report.push(format!("{who} injected"));
                warn(who, &injector.config(&meta, ctx).1, report);
            }
        },
        Op::Manual(injector) => match injector.inject(&mut meta, &mut spec, ctx) {
            Outcome::Skipped(skip) => report.push(skipped(who, &skip)),
            Outcome::Injected { warnings } => {
                report.push(format!("{who} injected"));
                warn(who, &warnings, report);
            }
        },
    }
    write_meta(t, &meta0, &meta)?;
    let spec_map = t
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| format!("{who}: {prefix}spec is not a mapping"))?;
    write_spec(spec_map, &spec0, &spec)
}

fn skipped(who: &str, skip: &Skip) -> String {
    format!("{who} skipped: {}", skip.reason())
}

fn warn(who: &str, warnings: &[weft_inject::AnnotationWarning], report: &mut Vec<String>) {
    for w in warnings {
        report.push(format!(
            "{who}: warning: {}: {:?} ignored: {}",
            w.annotation, w.value, w.reason
        ));
    }
}

fn typed<T: DeserializeOwned + Default>(value: Option<&Value>, what: &str) -> Result<T, String> {
    match value {
        None | Some(Value::Null) => Ok(T::default()),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| format!("{what}: {e}")),
    }
}

fn to_value<T: Serialize>(t: &T) -> Result<Value, String> {
    serde_json::to_value(t).map_err(|e| format!("cannot render: {e}"))
}

/// Writes the annotations and labels back if they changed.
fn write_meta(
    t: &mut Map<String, Value>,
    before: &ObjectMeta,
    after: &ObjectMeta,
) -> Result<(), String> {
    let fields = [
        ("annotations", &before.annotations, &after.annotations),
        ("labels", &before.labels, &after.labels),
    ];
    if fields.iter().all(|(_, b, a)| b == a) {
        return Ok(());
    }
    let had_metadata = t.contains_key("metadata");
    let metadata = t
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if metadata.is_null() {
        *metadata = Value::Object(Map::new());
    }
    let m = metadata
        .as_object_mut()
        .ok_or("metadata is not a mapping")?;
    for (key, b, a) in fields {
        if b == a {
            continue;
        }
        match a {
            Some(map) if !map.is_empty() => {
                m.insert(key.to_owned(), to_value(map)?);
            }
            _ => {
                m.remove(key);
            }
        }
    }
    if !had_metadata && m.is_empty() {
        t.remove("metadata");
    }
    Ok(())
}

/// Writes the containers, init containers, volumes and
/// `shareProcessNamespace` back if they changed.
fn write_spec(s: &mut Map<String, Value>, before: &PodSpec, after: &PodSpec) -> Result<(), String> {
    write_list::<Container>(
        s,
        "containers",
        Some(&before.containers),
        Some(&after.containers),
    )?;
    write_list::<Container>(
        s,
        "initContainers",
        before.init_containers.as_ref(),
        after.init_containers.as_ref(),
    )?;
    write_list::<Volume>(
        s,
        "volumes",
        before.volumes.as_ref(),
        after.volumes.as_ref(),
    )?;
    if before.share_process_namespace != after.share_process_namespace {
        match after.share_process_namespace {
            Some(v) => s.insert("shareProcessNamespace".into(), Value::Bool(v)),
            None => s.remove("shareProcessNamespace"),
        };
    }
    Ok(())
}

/// Rebuilds list `key` from `after`, reusing the original JSON of every
/// element that is unchanged (so its unknown fields survive).
fn write_list<T: Serialize + DeserializeOwned + PartialEq>(
    s: &mut Map<String, Value>,
    key: &str,
    before: Option<&Vec<T>>,
    after: Option<&Vec<T>>,
) -> Result<(), String> {
    let empty = Vec::new();
    let (before, after) = (before.unwrap_or(&empty), after.unwrap_or(&empty));
    if before == after {
        return Ok(());
    }
    if after.is_empty() {
        s.remove(key);
        return Ok(());
    }
    let mut originals: Vec<Option<(T, Value)>> = match s.get(key).and_then(Value::as_array) {
        Some(items) => items
            .iter()
            .map(|v| {
                serde_json::from_value::<T>(v.clone())
                    .ok()
                    .map(|t| (t, v.clone()))
            })
            .collect(),
        None => Vec::new(),
    };
    let mut out = Vec::with_capacity(after.len());
    for item in after {
        let reused = originals
            .iter_mut()
            .find(|o| o.as_ref().is_some_and(|(t, _)| t == item))
            .and_then(Option::take);
        out.push(match reused {
            Some((_, original)) => original,
            None => to_value(item)?,
        });
    }
    s.insert(key.to_owned(), Value::Array(out));
    Ok(())
}
