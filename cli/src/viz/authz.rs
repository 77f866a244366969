//! `weft authz`: which inbound policy applies to each port of a workload's
//! pods and which sources it admits, as the controller serves it to their
//! proxies (`GET /api/v1/authz`, see `docs/policy.md`).
//!
//! One row per pod, port, route and authorization, in the controller's
//! order: the server's own authorizations first (ROUTE `*`), then each
//! route's. Rows are never merged across pods, so what a line says is what
//! that pod's proxy enforces, even mid-rollout when pods disagree.

use weft_metrics_api::api::{
    AuthzPortRow, AuthzQuery, AuthzResponse, AuthzRule, PolicyRef, AUTHN_ANY_MESHED,
    AUTHN_IDENTITIES, AUTHZ_PATH,
};

use super::client::{ControllerArgs, ControllerClient, REACHING_HELP, REQUEST_TIMEOUT};
use super::{
    json_rows, namespace_or_default, parse_resource, print_rows, Output, Table, UsageError,
};

/// What a table without rows says.
pub const NO_PORTS: &str = "No ports found (the pods declare no TCP containerPort).";

/// The AUTHORIZATION cell of a server no authorization of its own admits.
pub const DENIED: &str = "(none: denied)";

/// Networks that mean "from anywhere" (IPv4 and IPv6): not printed.
const ALL_NETWORKS: [&str; 2] = ["0.0.0.0/0", "::/0"];

/// Long help of `weft authz`.
const LONG_ABOUT: &str = "\
Display the inbound authorization policy of a workload's pods.

For each TCP container port of each pod of RESOURCE (TYPE/NAME, TYPE NAME or
TYPE for all of a kind: namespace (ns), deployment (deploy), statefulset
(sts), daemonset (ds), job, pod (po)), one row per route and authorization
the controller serves to the pod's proxy:

  SERVER         the server in force: default/POLICY (the pod's default
                 inbound policy) or serviceaccount/SA (SMI TrafficTargets)
  ROUTE          `*` for the server's own authorizations (any connection or
                 request), else the HTTP route (probe, an HTTPRouteGroup)
  AUTHORIZATION  default/POLICY, default/probe, traffictarget/NAME, or
                 (none: denied) when the server itself admits no one: only
                 what a route admits gets through
  SOURCES        unauthenticated (anyone), any meshed identity, or the mTLS
                 identities admitted, with `from NETWORKS` unless anywhere

The pod's own loopback is always admitted and is not listed. Wide output
adds the protocol and each route's matches. What the controller could not
apply (a TrafficTarget naming a missing route group, ...) is printed as a
warning after the table.

  weft authz -n shop deploy/web
  weft authz -n shop po web-5d8f-x2x9z -o wide
  weft authz -n shop deploy -o json";

/// Flags of `weft authz`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Display the inbound authorization policy of a workload's pods",
    long_about = LONG_ABOUT,
    after_help = REACHING_HELP
)]
pub struct AuthzArgs {
    /// The resource type, or TYPE/NAME.
    #[arg(value_name = "RESOURCE")]
    resource: String,
    /// One resource's name (`weft authz deploy web`).
    #[arg(value_name = "NAME")]
    name: Option<String>,
    /// Namespace of the resource [default: default].
    #[arg(short = 'n', long, value_name = "NS")]
    namespace: Option<String>,
    /// Output format (wide adds PROTOCOL and MATCHES).
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(flatten)]
    controller: ControllerArgs,
}

/// Runs `weft authz`.
pub async fn run(args: AuthzArgs) -> anyhow::Result<()> {
    let resource = parse_resource(&args.resource, args.name.as_deref())?;
    if !resource.kind.has_pods() {
        return Err(UsageError(format!(
            "{} has no pods of its own; use a workload: namespace (ns), deployment (deploy), \
             statefulset (sts), daemonset (ds), job or pod (po)",
            resource.kind
        ))
        .into());
    }
    let query = AuthzQuery {
        resource,
        namespace: namespace_or_default(args.namespace.as_deref()),
    };
    let client = args.controller.connect().await?;
    let rows = fetch_authz(&client, &query).await?;
    let rendered = render_authz(&rows, args.output);
    print_rows(&rendered, rows.is_empty(), args.output)?;
    if args.output != Output::Json {
        for w in warnings(&rows) {
            eprintln!("warning: {w}");
        }
    }
    Ok(())
}

/// Asks the controller for `q`'s ports.
pub async fn fetch_authz(
    client: &ControllerClient,
    q: &AuthzQuery,
) -> anyhow::Result<Vec<AuthzPortRow>> {
    let rsp: AuthzResponse = client
        .get(AUTHZ_PATH, &q.to_query(), REQUEST_TIMEOUT)
        .await?;
    Ok(rsp.rows)
}

/// The ports as `weft authz` prints them: `POD PORT SERVER ROUTE
/// AUTHORIZATION SOURCES` (wide: `PROTOCOL` after `SERVER`, `MATCHES` after
/// `ROUTE`), or the rows as JSON. No rows gives [`NO_PORTS`] (or `[]`).
pub fn render_authz(rows: &[AuthzPortRow], output: Output) -> String {
    if output == Output::Json {
        return json_rows(rows);
    }
    if rows.is_empty() {
        return format!("{NO_PORTS}\n");
    }
    let wide = output == Output::Wide;
    let mut headers = vec!["POD", "PORT", "SERVER"];
    if wide {
        headers.push("PROTOCOL");
    }
    headers.push("ROUTE");
    if wide {
        headers.push("MATCHES");
    }
    headers.extend(["AUTHORIZATION", "SOURCES"]);
    let mut table = Table::new(headers);
    for row in rows {
        for rule in &row.rules {
            let mut cells = vec![
                row.pod.clone(),
                row.port.to_string(),
                reference(&row.server),
            ];
            if wide {
                cells.push(row.protocol.clone());
            }
            cells.push(rule.route.clone());
            if wide {
                cells.push(if rule.matches.is_empty() {
                    super::format::NONE.to_owned()
                } else {
                    rule.matches.join(", ")
                });
            }
            cells.push(
                rule.authorization
                    .as_ref()
                    .map_or_else(|| DENIED.to_owned(), reference),
            );
            cells.push(sources(rule));
            table.push(cells);
        }
    }
    table.render()
}

/// Every port's warnings, each naming its pod and port.
pub fn warnings(rows: &[AuthzPortRow]) -> Vec<String> {
    rows.iter()
        .flat_map(|r| {
            r.warnings
                .iter()
                .map(move |w| format!("{}/{} port {}: {w}", r.namespace, r.pod, r.port))
        })
        .collect()
}

/// `kind/name` (`default/deny`, `serviceaccount/web`).
fn reference(r: &PolicyRef) -> String {
    if r.kind.is_empty() {
        return super::format::text(Some(&r.name));
    }
    format!("{}/{}", r.kind, r.name)
}

/// Who an authorization admits, and from where when not from anywhere.
fn sources(rule: &AuthzRule) -> String {
    if rule.authorization.is_none() {
        return super::format::NONE.to_owned();
    }
    let who = if rule.authentication == AUTHN_IDENTITIES {
        let ids: Vec<&str> = rule
            .identities
            .iter()
            .chain(&rule.suffixes)
            .map(String::as_str)
            .collect();
        if ids.is_empty() {
            "no identity".to_owned()
        } else {
            ids.join(",")
        }
    } else if rule.authentication.is_empty() {
        AUTHN_ANY_MESHED.to_owned()
    } else {
        rule.authentication.clone()
    };
    let anywhere = rule.networks.len() == ALL_NETWORKS.len()
        && ALL_NETWORKS
            .iter()
            .all(|n| rule.networks.iter().any(|r| r == n));
    if anywhere {
        who
    } else {
        format!("{who} from {}", rule.networks.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_metrics_api::api::AUTHN_UNAUTHENTICATED;

    fn policy(kind: &str, name: &str) -> PolicyRef {
        PolicyRef {
            group: String::new(),
            kind: kind.into(),
            name: name.into(),
        }
    }

    fn rows() -> Vec<AuthzPortRow> {
        let anywhere = vec!["0.0.0.0/0".to_owned(), "::/0".to_owned()];
        vec![AuthzPortRow {
            namespace: "shop".into(),
            pod: "web-0".into(),
            port: 8080,
            server: policy("serviceaccount", "web"),
            protocol: "detect".into(),
            rules: vec![
                AuthzRule {
                    route: "*".into(),
                    ..AuthzRule::default()
                },
                AuthzRule {
                    route: "probe".into(),
                    matches: vec!["GET /ready".into(), "GET /live".into()],
                    authorization: Some(policy("default", "probe")),
                    networks: anywhere.clone(),
                    authentication: AUTHN_UNAUTHENTICATED.into(),
                    ..AuthzRule::default()
                },
                AuthzRule {
                    route: "web-routes".into(),
                    matches: vec!["GET /metrics".into()],
                    authorization: Some(policy("traffictarget", "scrape")),
                    networks: vec!["10.0.0.0/8".into()],
                    authentication: AUTHN_IDENTITIES.into(),
                    identities: vec!["prom.mon.serviceaccount.identity.weft.cluster.local".into()],
                    ..AuthzRule::default()
                },
            ],
            warnings: vec!["route group web-extra not found".into()],
        }]
    }

    #[test]
    fn one_line_per_rule_with_denied_servers_said_so() {
        assert_eq!(
            render_authz(&rows(), Output::Table)
                .lines()
                .collect::<Vec<_>>(),
            [
                "POD     PORT   SERVER               ROUTE        AUTHORIZATION          SOURCES",
                "web-0   8080   serviceaccount/web   *            (none: denied)         -",
                "web-0   8080   serviceaccount/web   probe        default/probe          unauthenticated",
                "web-0   8080   serviceaccount/web   web-routes   traffictarget/scrape   prom.mon.serviceaccount.identity.weft.cluster.local from 10.0.0.0/8",
            ]
        );
        let wide = render_authz(&rows(), Output::Wide);
        let lines: Vec<&str> = wide.lines().collect();
        assert!(
            lines[0]
                .starts_with("POD     PORT   SERVER               PROTOCOL   ROUTE        MATCHES"),
            "{wide}"
        );
        assert!(
            lines[2].contains("detect     probe        GET /ready, GET /live"),
            "{wide}"
        );
        assert_eq!(
            warnings(&rows()),
            ["shop/web-0 port 8080: route group web-extra not found"]
        );
        assert_eq!(render_authz(&[], Output::Table), format!("{NO_PORTS}\n"));
        assert_eq!(render_authz(&[], Output::Json), "[]\n");
    }
}
