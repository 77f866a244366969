//! `weft routes`: per-route golden metrics from ServiceProfiles, as
//! `linkerd viz routes` prints them.

use weft_metrics_api::api::{RouteRow, RoutesQuery, RoutesResponse, ROUTES_PATH};
use weft_metrics_api::resource::ResourceKind;

use super::client::{ControllerArgs, ControllerClient, REACHING_HELP, REQUEST_TIMEOUT};
use super::{
    format, json_rows, namespace_or_default, parse_peer, parse_resource, print_rows, Output, Table,
    WindowArgs,
};

/// What a table without rows says.
pub const NO_ROUTES: &str = "No routes found.";

/// Long help of `weft routes`.
const LONG_ABOUT: &str = "\
Display route stats.

Only traffic to a service with a ServiceProfile is shown; requests that no
route matched are counted under [DEFAULT]. RESOURCE is a service (its
clients' view), an authority, or a workload with --to (its calls to that
service). The wide output splits success and rate into EFFECTIVE (as the
caller saw them, after retries) and ACTUAL (every attempt).

  weft routes svc/books -n shop                       # books's routes
  weft routes deploy/web -n shop --to svc/books -o wide  # web's calls to books";

/// Flags of `weft routes`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Display route stats",
    long_about = LONG_ABOUT,
    after_help = REACHING_HELP
)]
pub struct RoutesArgs {
    /// The resource type, or TYPE/NAME.
    #[arg(value_name = "RESOURCE")]
    resource: String,
    /// One resource's name.
    #[arg(value_name = "NAME")]
    name: Option<String>,
    /// Namespace of the resource [default: default].
    #[arg(short = 'n', long, value_name = "NS")]
    namespace: Option<String>,
    /// Only the routes of this service, as the resource calls it.
    #[arg(long, value_name = "RESOURCE")]
    to: Option<String>,
    /// Namespace of --to [default: --namespace].
    #[arg(long, value_name = "NS", requires = "to")]
    to_namespace: Option<String>,
    #[command(flatten)]
    window: WindowArgs,
    /// Output format (wide splits effective and actual success and rate).
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(flatten)]
    controller: ControllerArgs,
}

/// Runs `weft routes`.
pub async fn run(args: RoutesArgs) -> anyhow::Result<()> {
    let ns = namespace_or_default(args.namespace.as_deref());
    let query = RoutesQuery {
        resource: parse_resource(&args.resource, args.name.as_deref())?,
        to: parse_peer("to", args.to.as_deref(), args.to_namespace.as_deref(), &ns)?,
        namespace: ns,
        window: args.window.time_window,
    };
    // Linkerd's column says AUTHORITY when authorities were asked for.
    let dst = query.to.as_ref().map_or(&query.resource, |to| &to.resource);
    let authorities = dst.kind == ResourceKind::Authority;
    let client = args.controller.connect().await?;
    let rows = fetch_routes(&client, &query).await?;
    let rendered = render_routes(&rows, args.output, authorities);
    print_rows(&rendered, rows.is_empty(), args.output)
}

/// Asks the controller for `q`'s routes.
pub async fn fetch_routes(
    client: &ControllerClient,
    q: &RoutesQuery,
) -> anyhow::Result<Vec<RouteRow>> {
    let rsp: RoutesResponse = client
        .get(ROUTES_PATH, &q.to_query(), REQUEST_TIMEOUT)
        .await?;
    Ok(rsp.rows)
}

/// The routes as `weft routes` prints them, in the controller's order
/// (`[DEFAULT]` last): `ROUTE SERVICE SUCCESS RPS LATENCY_P50 LATENCY_P95
/// LATENCY_P99`, wide with `EFFECTIVE_*` and `ACTUAL_*` instead of
/// `SUCCESS RPS`. `SERVICE` is the authority's first label, unless
/// `authorities` asks for the whole authority (`AUTHORITY`).
pub fn render_routes(rows: &[RouteRow], output: Output, authorities: bool) -> String {
    if output == Output::Json {
        return json_rows(rows);
    }
    if rows.is_empty() {
        return format!("{NO_ROUTES}\n");
    }
    let wide = output == Output::Wide;
    let mut headers = vec!["ROUTE", if authorities { "AUTHORITY" } else { "SERVICE" }];
    if wide {
        headers.extend([
            "EFFECTIVE_SUCCESS",
            "EFFECTIVE_RPS",
            "ACTUAL_SUCCESS",
            "ACTUAL_RPS",
        ]);
    } else {
        headers.extend(["SUCCESS", "RPS"]);
    }
    headers.extend(["LATENCY_P50", "LATENCY_P95", "LATENCY_P99"]);
    let mut table = Table::new(headers);
    for row in rows {
        let dst = if authorities {
            row.authority.clone()
        } else {
            service_name(&row.authority).to_owned()
        };
        let mut cells = vec![row.route.clone(), format::text(Some(&dst))];
        if wide {
            cells.extend([
                format::success(row.effective_success.or(row.success)),
                format::rps(row.effective_rps.or(row.rps)),
                format::success(row.actual_success),
                format::rps(row.actual_rps),
            ]);
        } else {
            cells.extend([format::success(row.success), format::rps(row.rps)]);
        }
        cells.extend([
            format::latency_ms(row.latency_ms_p50),
            format::latency_ms(row.latency_ms_p95),
            format::latency_ms(row.latency_ms_p99),
        ]);
        table.push(cells);
    }
    table.render()
}

/// `books.shop.svc.cluster.local:8080` → `books`.
fn service_name(authority: &str) -> &str {
    let host = authority.split(':').next().unwrap_or(authority);
    host.split('.').next().unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_are_the_authoritys_first_label() {
        assert_eq!(service_name("books.shop.svc.cluster.local:8080"), "books");
        assert_eq!(service_name("books:80"), "books");
        assert_eq!(service_name("books"), "books");
    }

    #[test]
    fn routes_without_traffic_print_dashes() {
        let rows = [RouteRow {
            route: "GET /books".into(),
            authority: "books.shop.svc.cluster.local:8080".into(),
            ..RouteRow::default()
        }];
        assert_eq!(
            render_routes(&rows, Output::Table, false),
            "ROUTE        SERVICE   SUCCESS   RPS   LATENCY_P50   LATENCY_P95   LATENCY_P99\n\
             GET /books   books     -         -     -             -             -\n"
        );
        let out = render_routes(&rows, Output::Table, true);
        assert!(out.starts_with("ROUTE        AUTHORITY"), "{out}");
        assert!(out.contains("books.shop.svc.cluster.local:8080"), "{out}");
    }
}
