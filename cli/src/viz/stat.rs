//! `weft stat`: success rate, request rate, latency quantiles and TCP
//! connections per resource, as `linkerd viz stat` prints them.

use weft_metrics_api::api::{StatQuery, StatResponse, StatRow, STAT_PATH};
use weft_metrics_api::resource::ResourceKind;

use super::client::{ControllerArgs, ControllerClient, REACHING_HELP, REQUEST_TIMEOUT};
use super::{
    format, json_rows, parse_peer, parse_resource, print_rows, Output, ScopeArgs, Table, WindowArgs,
};

/// What a table without rows says, as Linkerd says it.
pub const NO_TRAFFIC: &str = "No traffic found.";

/// Long help of `weft stat`.
const LONG_ABOUT: &str = "\
Display traffic stats about one or many resources.

RESOURCE is TYPE, TYPE/NAME or TYPE NAME. Types: namespace (ns), deployment
(deploy), statefulset (sts), daemonset (ds), job, pod (po), service (svc),
authority (au), trafficsplit (ts). Resources with no traffic in the window
still get a row, with `-` for what was not measured. Wide output adds byte
rates and, for workloads, UNAUTHORIZED: the requests and connections their
proxies refused by inbound authorization in the window.

  weft stat deploy -n shop                  # every deployment in shop
  weft stat deploy/web                      # one deployment
  weft stat deploy -A                       # every namespace
  weft stat deploy --to svc/books           # only their calls to books
  weft stat svc --from deploy/web           # services web calls
  weft stat ts/books-split -t 5m -o wide    # a traffic split, per leaf";

/// Flags of `weft stat`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Display traffic stats about one or many resources",
    long_about = LONG_ABOUT,
    after_help = REACHING_HELP
)]
pub struct StatArgs {
    /// The resource type, or TYPE/NAME.
    #[arg(value_name = "RESOURCE")]
    resource: String,
    /// One resource's name (`weft stat deploy web`).
    #[arg(value_name = "NAME")]
    name: Option<String>,
    #[command(flatten)]
    scope: ScopeArgs,
    /// Only outbound traffic from this resource (TYPE/NAME).
    #[arg(long, value_name = "RESOURCE", conflicts_with = "to")]
    from: Option<String>,
    /// Namespace of --from [default: --namespace].
    #[arg(
        long,
        value_name = "NS",
        requires = "from",
        conflicts_with = "to_namespace"
    )]
    from_namespace: Option<String>,
    /// Only outbound traffic to this resource (TYPE/NAME).
    #[arg(long, value_name = "RESOURCE")]
    to: Option<String>,
    /// Namespace of --to [default: --namespace].
    #[arg(long, value_name = "NS", requires = "to")]
    to_namespace: Option<String>,
    #[command(flatten)]
    window: WindowArgs,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(flatten)]
    controller: ControllerArgs,
}

/// Runs `weft stat`.
pub async fn run(args: StatArgs) -> anyhow::Result<()> {
    let query = args.query()?;
    let client = args.controller.connect().await?;
    let rows = fetch_stat(&client, &query).await?;
    let rendered = render_stat(&rows, args.output, args.scope.all_namespaces);
    print_rows(&rendered, rows.is_empty(), args.output)
}

impl StatArgs {
    /// The API query, or a usage error before anything is contacted.
    fn query(&self) -> anyhow::Result<StatQuery> {
        let ns = self.scope.namespace();
        Ok(StatQuery {
            resource: parse_resource(&self.resource, self.name.as_deref())?,
            scope: self.scope.scope(),
            from: parse_peer(
                "from",
                self.from.as_deref(),
                self.from_namespace.as_deref(),
                &ns,
            )?,
            to: parse_peer("to", self.to.as_deref(), self.to_namespace.as_deref(), &ns)?,
            window: self.window.time_window,
        })
    }
}

/// Asks the controller for `q`'s rows.
pub async fn fetch_stat(client: &ControllerClient, q: &StatQuery) -> anyhow::Result<Vec<StatRow>> {
    let rsp: StatResponse = client
        .get(STAT_PATH, &q.to_query(), REQUEST_TIMEOUT)
        .await?;
    Ok(rsp.rows)
}

/// The rows as `weft stat` prints them: one table per kind (a blank line
/// between), `NAMESPACE` first when `all_namespaces`, or a JSON array.
/// No rows gives [`NO_TRAFFIC`] (or `[]`).
pub fn render_stat(rows: &[StatRow], output: Output, all_namespaces: bool) -> String {
    if output == Output::Json {
        return json_rows(rows);
    }
    if rows.is_empty() {
        return format!("{NO_TRAFFIC}\n");
    }
    let groups = by_kind(rows);
    let prefix = groups.len() > 1;
    let tables: Vec<String> = groups
        .iter()
        .map(|(kind, rows)| {
            stat_table(kind, rows, output == Output::Wide, all_namespaces, prefix).render()
        })
        .collect();
    tables.join("\n")
}

/// Rows grouped by kind, in order of first appearance.
fn by_kind(rows: &[StatRow]) -> Vec<(&str, Vec<&StatRow>)> {
    let mut groups: Vec<(&str, Vec<&StatRow>)> = Vec::new();
    for row in rows {
        match groups.iter_mut().find(|(k, _)| *k == row.kind) {
            Some((_, g)) => g.push(row),
            None => groups.push((&row.kind, vec![row])),
        }
    }
    groups
}

fn stat_table(
    kind: &str,
    rows: &[&StatRow],
    wide: bool,
    all_namespaces: bool,
    prefix: bool,
) -> Table {
    let parsed = kind.parse::<ResourceKind>().ok();
    let split = parsed == Some(ResourceKind::TrafficSplit);
    let authority = parsed == Some(ResourceKind::Authority);
    // Linkerd shows byte rates for workloads only.
    let bytes = wide && !split && !authority;
    // Refusals are counted by a workload's own proxies (docs/policy.md).
    let unauthorized = wide && parsed.is_some_and(ResourceKind::has_pods);
    let mut headers: Vec<&str> = Vec::new();
    if all_namespaces {
        headers.push("NAMESPACE");
    }
    headers.push("NAME");
    if split {
        headers.extend(["APEX", "LEAF", "WEIGHT"]);
    } else {
        headers.push("MESHED");
    }
    headers.extend([
        "SUCCESS",
        "RPS",
        "LATENCY_P50",
        "LATENCY_P95",
        "LATENCY_P99",
    ]);
    if !split {
        headers.push("TCP_CONN");
    }
    if bytes {
        headers.extend(["READ_BYTES/SEC", "WRITE_BYTES/SEC"]);
    }
    if unauthorized {
        headers.push("UNAUTHORIZED");
    }
    let mut table = Table::new(headers);
    for row in rows {
        let mut cells: Vec<String> = Vec::new();
        if all_namespaces {
            cells.push(row.namespace.clone());
        }
        cells.push(match parsed {
            Some(k) if prefix => format!("{}/{}", k.short(), row.name),
            _ => row.name.clone(),
        });
        if split {
            cells.push(format::text(row.apex.as_deref()));
            cells.push(format::text(row.leaf.as_deref()));
            cells.push(format::text(row.weight.as_deref()));
        } else {
            cells.push(format::text(row.meshed.as_deref()));
        }
        cells.extend([
            format::success(row.success),
            format::rps(row.rps),
            format::latency_ms(row.latency_ms_p50),
            format::latency_ms(row.latency_ms_p95),
            format::latency_ms(row.latency_ms_p99),
        ]);
        if authority {
            // Authorities are not connections' ends: always `-`, as Linkerd.
            cells.push(format::NONE.to_owned());
        } else if !split {
            cells.push(format::count(row.tcp_open_connections));
        }
        if bytes {
            cells.push(format::byte_rate(row.tcp_read_bytes_rate));
            cells.push(format::byte_rate(row.tcp_write_bytes_rate));
        }
        if unauthorized {
            cells.push(format::count(row.unauthorized));
        }
        table.push(cells);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ns: &str, kind: &str, name: &str) -> StatRow {
        StatRow {
            namespace: ns.into(),
            kind: kind.into(),
            name: name.into(),
            meshed: Some("1/1".into()),
            success: Some(1.0),
            rps: Some(2.0),
            latency_ms_p50: Some(3),
            latency_ms_p95: Some(9),
            latency_ms_p99: Some(10),
            tcp_open_connections: Some(1),
            tcp_read_bytes_rate: Some(1200.25),
            tcp_write_bytes_rate: Some(30.0),
            unauthorized: Some(7),
            ..StatRow::default()
        }
    }

    #[test]
    fn wide_workloads_count_unauthorized_last() {
        let mut idle = row("a", "deployment", "idle");
        idle.unauthorized = None;
        let out = render_stat(&[row("a", "deployment", "web"), idle], Output::Wide, false);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].ends_with("WRITE_BYTES/SEC   UNAUTHORIZED"),
            "{out}"
        );
        assert!(lines[1].ends_with("30.0B/s           7"), "{out}");
        assert!(lines[2].ends_with("   -"), "{out}");
        let narrow = render_stat(&[row("a", "deployment", "web")], Output::Table, false);
        assert!(!narrow.contains("UNAUTHORIZED"), "{narrow}");
        let svc = render_stat(&[row("a", "service", "books")], Output::Wide, false);
        assert!(!svc.contains("UNAUTHORIZED"), "{svc}");
    }

    #[test]
    fn mixed_kinds_get_a_table_each_with_prefixed_names() {
        let rows = [row("a", "deployment", "web"), row("a", "pod", "web-1")];
        let out = render_stat(&rows, Output::Table, false);
        let tables: Vec<&str> = out.split("\n\n").collect();
        assert_eq!(tables.len(), 2, "{out}");
        assert!(tables[0].contains("deploy/web"), "{out}");
        assert!(tables[1].contains("po/web-1"), "{out}");
    }

    #[test]
    fn authorities_have_no_meshed_count_nor_connections() {
        let mut au = row("a", "authority", "books.a.svc:80");
        au.meshed = None;
        let out = render_stat(&[au], Output::Wide, false);
        assert_eq!(
            out.lines().collect::<Vec<_>>(),
            [
                "NAME             MESHED   SUCCESS   RPS      LATENCY_P50   LATENCY_P95   LATENCY_P99   TCP_CONN",
                "books.a.svc:80   -        100.00%   2.0rps   3ms           9ms           10ms          -",
            ]
        );
    }

    #[test]
    fn no_rows_say_so() {
        assert_eq!(render_stat(&[], Output::Table, true), "No traffic found.\n");
        assert_eq!(render_stat(&[], Output::Json, true), "[]\n");
    }
}
