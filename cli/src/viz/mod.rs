//! `weft stat`, `edges`, `routes` and `top`: the mesh's golden metrics, as
//! `linkerd viz` shows them, read from the controller's metrics API
//! (`weft_metrics_api::api`); and `weft authz`, the inbound policy the
//! controller serves each pod port, from the same API.
//!
//! - [`client`]: reaching the controller, directly or through the
//!   Kubernetes API server.
//! - [`table`] and [`format`]: the one table writer and Linkerd's cell
//!   formats, shared by every view (and the demo's live view).
//! - [`stat`], [`edges`], [`routes`], [`top`], [`authz`]: one module per
//!   command, each with its flags, its `fetch_*` and its `render_*`.
//!
//! The demo calls [`fetch_stat`], [`render_stat`], [`fetch_edges`] and
//! [`render_edges`] with a [`ControllerClient::direct`] client.

pub mod authz;
pub mod client;
pub mod edges;
pub mod format;
pub mod routes;
pub mod stat;
pub mod table;
pub mod top;

use std::io::Write;
use std::time::Duration;

use weft_metrics_api::api::Scope;

// The API other commands (the demo's live view) call; the commands below
// reach the same items through their modules.
#[allow(
    unused_imports,
    reason = "the demo's entry points, used from cli/src/demo"
)]
pub use client::{ControllerArgs, ControllerClient, ControllerError};
#[allow(
    unused_imports,
    reason = "the demo's entry points, used from cli/src/demo"
)]
pub use edges::{fetch_edges, render_edges};
#[allow(
    unused_imports,
    reason = "the demo's entry points, used from cli/src/demo"
)]
pub use routes::{fetch_routes, render_routes};
#[allow(
    unused_imports,
    reason = "the demo's entry points, used from cli/src/demo"
)]
pub use stat::{fetch_stat, render_stat};
pub use table::Table;
#[allow(
    unused_imports,
    reason = "the demo's entry points, used from cli/src/demo"
)]
pub use top::{fetch_top, TopTable};

/// What `-o` asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns.
    #[default]
    Table,
    /// The table with more columns.
    Wide,
    /// The rows as a JSON array, exactly the API's row keys.
    Json,
}

/// A mistake in the command line that clap cannot see (an unknown
/// resource type): `weft` exits 2 for it, as for clap's own errors, and
/// contacts nothing.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// `-t WINDOW`, for the commands that report rates.
#[derive(Clone, Debug, clap::Args)]
pub struct WindowArgs {
    /// How far back rates and latencies look (e.g. 30s, 1m, 10m, 1h).
    #[arg(
        short = 't',
        long,
        value_name = "WINDOW",
        default_value = "1m",
        value_parser = parse_window
    )]
    pub time_window: Duration,
}

/// `-n NS` or `-A`, for the commands that can look everywhere.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ScopeArgs {
    /// Namespace of the resources [default: default].
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Look in every namespace (not with --namespace).
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
}

// === impl ScopeArgs ===

impl ScopeArgs {
    /// The namespace named (or `default`), for `--from`/`--to` defaults.
    pub fn namespace(&self) -> String {
        namespace_or_default(self.namespace.as_deref())
    }

    /// The API's scope.
    pub fn scope(&self) -> Scope {
        if self.all_namespaces {
            Scope::All
        } else {
            Scope::Namespace(self.namespace())
        }
    }
}

/// `-n`'s value, or kubectl's `default`.
fn namespace_or_default(ns: Option<&str>) -> String {
    ns.unwrap_or(weft_metrics_api::api::DEFAULT_NAMESPACE)
        .to_owned()
}

/// A window or interval flag in the workspace's duration syntax (`30s`,
/// `1m`, `1h`), at least a second: the API counts in seconds.
pub fn parse_window(text: &str) -> Result<Duration, String> {
    let d = weft_identity::parse_duration(text).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(1) {
        return Err(format!("{text:?} is shorter than 1s"));
    }
    Ok(d)
}

/// Parses `TYPE`, `TYPE/NAME` or `TYPE NAME`; a mistake is a
/// [`UsageError`].
fn parse_resource(
    kind: &str,
    name: Option<&str>,
) -> anyhow::Result<weft_metrics_api::resource::Resource> {
    weft_metrics_api::resource::Resource::from_args(kind, name)
        .map_err(|e| UsageError(e.to_string()).into())
}

/// Parses a `--from`/`--to` resource; a mistake is a [`UsageError`].
fn parse_peer(
    flag: &str,
    text: Option<&str>,
    namespace: Option<&str>,
    default_ns: &str,
) -> anyhow::Result<Option<weft_metrics_api::api::NamespacedResource>> {
    let Some(text) = text else {
        return Ok(None);
    };
    let resource = weft_metrics_api::resource::Resource::parse(text)
        .map_err(|e| UsageError(format!("--{flag}: {e}")))?;
    Ok(Some(weft_metrics_api::api::NamespacedResource {
        resource,
        namespace: namespace.unwrap_or(default_ns).to_owned(),
    }))
}

/// Prints to stdout; a closed pipe (`weft stat deploy | head -1`) is not
/// an error.
fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Prints `rendered`, except that an empty table's notice goes to stderr,
/// as Linkerd prints `No traffic found.`, so stdout stays empty.
fn print_rows(rendered: &str, empty: bool, output: Output) -> anyhow::Result<()> {
    if empty && output != Output::Json {
        eprint!("{rendered}");
        return Ok(());
    }
    print(rendered)
}

/// The rows as pretty JSON (`[]` when none), with a final newline.
fn json_rows<T: serde::Serialize>(rows: &[T]) -> String {
    // Rows are plain data (strings, numbers, options): serializing cannot
    // fail, and an empty array is the honest fallback.
    let mut out = serde_json::to_string_pretty(rows).unwrap_or_else(|_| "[]".to_owned());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_use_the_workspace_syntax() {
        assert_eq!(parse_window("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_window("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_window("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_window("90"), Ok(Duration::from_secs(90)));
        assert!(parse_window("500ms").unwrap_err().contains("1s"));
        assert!(parse_window("soon").is_err());
    }

    #[test]
    fn resource_mistakes_are_usage_errors() {
        let e = parse_resource("deployz", None).unwrap_err();
        assert!(e.downcast_ref::<UsageError>().is_some());
        assert!(e.to_string().contains("unknown resource type"), "{e}");
        let r = parse_resource("deploy", Some("web")).unwrap();
        assert_eq!(r.to_string(), "deploy/web");
        let e = parse_peer("to", Some("nope/x"), None, "default").unwrap_err();
        assert!(e.to_string().starts_with("--to: "), "{e}");
        let p = parse_peer("to", Some("svc/books"), None, "shop")
            .unwrap()
            .unwrap();
        assert_eq!(p.namespace, "shop");
    }
}
