//! `weft edges`: which workloads talk to which, and whether over mTLS, as
//! `linkerd viz edges` prints them.

use weft_metrics_api::api::{EdgeRow, EdgesQuery, EdgesResponse, DEFAULT_WINDOW, EDGES_PATH};
use weft_metrics_api::resource::ResourceKind;

use super::client::{ControllerArgs, ControllerClient, REACHING_HELP, REQUEST_TIMEOUT};
use super::{format, json_rows, parse_resource, print_rows, Output, ScopeArgs, Table, UsageError};

/// What a table without rows says, as Linkerd says it.
pub const NO_EDGES: &str = "No edges found.";

/// What `SECURED` shows for mutually authenticated traffic.
pub const SECURED: &str = "√";

/// Long help of `weft edges`.
const LONG_ABOUT: &str = "\
Display connections between resources, and Weft proxy identities.

RESOURCE is the type at both ends: deployment (deploy), statefulset (sts),
daemonset (ds), job or pod (po); TYPE/NAME keeps only the edges that touch
that one. SECURED is √ for mutually authenticated TLS, else the reason it
was not (e.g. `not meshed`).

  weft edges deploy -n shop     # edges that start or end in shop
  weft edges po -A -o wide      # every namespace, with the identities";

/// Flags of `weft edges`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Display connections between resources, and Weft proxy identities",
    long_about = LONG_ABOUT,
    after_help = REACHING_HELP
)]
pub struct EdgesArgs {
    /// The resource type at both ends, or TYPE/NAME.
    #[arg(value_name = "RESOURCE")]
    resource: String,
    /// One resource's name.
    #[arg(value_name = "NAME")]
    name: Option<String>,
    #[command(flatten)]
    scope: ScopeArgs,
    /// Output format (wide adds CLIENT_ID and SERVER_ID).
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(flatten)]
    controller: ControllerArgs,
}

/// Runs `weft edges`.
pub async fn run(args: EdgesArgs) -> anyhow::Result<()> {
    let resource = parse_resource(&args.resource, args.name.as_deref())?;
    if !matches!(
        resource.kind,
        ResourceKind::Deployment
            | ResourceKind::StatefulSet
            | ResourceKind::DaemonSet
            | ResourceKind::Job
            | ResourceKind::Pod
    ) {
        return Err(UsageError(format!(
            "edges are between workloads, not {}s; use deploy, sts, ds, job or po",
            resource.kind
        ))
        .into());
    }
    let query = EdgesQuery {
        resource,
        scope: args.scope.scope(),
        window: DEFAULT_WINDOW,
    };
    let client = args.controller.connect().await?;
    let rows = fetch_edges(&client, &query).await?;
    print_rows(
        &render_edges(&rows, args.output),
        rows.is_empty(),
        args.output,
    )
}

/// Asks the controller for `q`'s edges.
pub async fn fetch_edges(
    client: &ControllerClient,
    q: &EdgesQuery,
) -> anyhow::Result<Vec<EdgeRow>> {
    let rsp: EdgesResponse = client
        .get(EDGES_PATH, &q.to_query(), REQUEST_TIMEOUT)
        .await?;
    Ok(rsp.rows)
}

/// The edges as `weft edges` prints them: `SRC DST SRC_NS DST_NS
/// [CLIENT_ID SERVER_ID] SECURED`, or a JSON array of the rows as given.
/// No rows gives [`NO_EDGES`] (or `[]`).
pub fn render_edges(rows: &[EdgeRow], output: Output) -> String {
    if output == Output::Json {
        return json_rows(rows);
    }
    if rows.is_empty() {
        return format!("{NO_EDGES}\n");
    }
    let wide = output == Output::Wide;
    let mut headers = vec!["SRC", "DST", "SRC_NS", "DST_NS"];
    if wide {
        headers.extend(["CLIENT_ID", "SERVER_ID"]);
    }
    headers.push("SECURED");
    let mut table = Table::new(headers);
    for row in rows {
        let mut cells = vec![
            row.src.clone(),
            row.dst.clone(),
            row.src_namespace.clone(),
            row.dst_namespace.clone(),
        ];
        if wide {
            cells.push(short_identity(&row.client_id));
            cells.push(short_identity(&row.server_id));
        }
        cells.push(if row.secured {
            SECURED.to_owned()
        } else {
            format::text(Some(&row.no_tls_reason))
        });
        table.push(cells);
    }
    table.render()
}

/// `web.shop.serviceaccount.identity.weft.cluster.local` as Linkerd's
/// table shows it: service account and namespace, `web.shop`.
fn short_identity(id: &str) -> String {
    let mut labels = id.split('.');
    match (labels.next(), labels.next()) {
        (Some(sa), Some(ns)) if !sa.is_empty() => format!("{sa}.{ns}"),
        _ => format::text(Some(id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_shorten_to_account_and_namespace() {
        assert_eq!(
            short_identity("web.shop.serviceaccount.identity.weft.cluster.local"),
            "web.shop"
        );
        assert_eq!(short_identity(""), "-");
        assert_eq!(short_identity("odd"), "odd");
    }

    #[test]
    fn unsecured_edges_without_a_reason_show_a_dash() {
        let row = EdgeRow {
            src: "a".into(),
            dst: "b".into(),
            ..EdgeRow::default()
        };
        let out = render_edges(&[row], Output::Table);
        assert!(out.lines().nth(1).unwrap().ends_with('-'), "{out}");
        assert_eq!(render_edges(&[], Output::Table), "No edges found.\n");
    }
}
