//! `weft top`: the busiest paths of live requests, kept as a running table
//! across refreshes and redrawn in place, as `linkerd viz top` shows them.
//!
//! Each refresh is one `GET /api/v1/top` that collects for `--interval`;
//! its rows (already grouped by source, destination, method and path) are
//! merged into the running table: counts summed, best the minimum, worst
//! the maximum, last the latest, success weighted by count.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::pin::pin;
use std::time::Duration;

use weft_metrics_api::api::{TopQuery, TopResponse, TopRow, MAX_TOP_DURATION, TOP_PATH};
use weft_metrics_api::resource::ResourceKind;

use super::client::{ControllerArgs, ControllerClient, REACHING_HELP, REQUEST_TIMEOUT};
use super::stat::NO_TRAFFIC;
use super::{format, parse_resource, print, ScopeArgs, Table, UsageError};

/// The most rows the running table keeps: the least busy go first, so a
/// scan of random paths cannot grow it without bound.
pub const MAX_ROWS: usize = 1_000;

/// Clear the screen and move home, before each redraw.
const CLEAR: &str = "\x1b[H\x1b[2J";
/// Switch to the alternate screen and hide the cursor.
const ENTER_SCREEN: &str = "\x1b[?1049h\x1b[?25l";
/// Show the cursor and return to the normal screen.
const LEAVE_SCREEN: &str = "\x1b[?25h\x1b[?1049l";

/// Long help of `weft top`.
const LONG_ABOUT: &str = "\
Display sorted information about live traffic.

RESOURCE (TYPE, TYPE/NAME or TYPE NAME) names whose proxies to listen to:
namespace (ns), deployment (deploy), statefulset (sts), daemonset (ds), job
or pod (po). Requests are grouped by source, destination, method and path,
busiest first, and the table keeps growing across refreshes until Ctrl-C.
On a terminal it is redrawn in place; --once collects one interval and
prints a plain table, for scripts.

  weft top deploy/web -n shop
  weft top deploy -A --interval 5s
  weft top deploy/web --once";

/// Flags of `weft top`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Display sorted information about live traffic",
    long_about = LONG_ABOUT,
    after_help = REACHING_HELP
)]
pub struct TopArgs {
    /// The resource type, or TYPE/NAME.
    #[arg(value_name = "RESOURCE")]
    resource: String,
    /// One resource's name.
    #[arg(value_name = "NAME")]
    name: Option<String>,
    #[command(flatten)]
    scope: ScopeArgs,
    /// Collect once, print a plain table and exit.
    #[arg(long)]
    once: bool,
    /// How long each refresh collects (1s to 30s).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "2s",
        value_parser = parse_interval
    )]
    interval: Duration,
    #[command(flatten)]
    controller: ControllerArgs,
}

/// A refresh interval: a window the API accepts for `top`.
fn parse_interval(text: &str) -> Result<Duration, String> {
    let d = super::parse_window(text)?;
    if d > MAX_TOP_DURATION {
        return Err(format!(
            "{text:?} is longer than {}s",
            MAX_TOP_DURATION.as_secs()
        ));
    }
    Ok(d)
}

/// Runs `weft top`.
pub async fn run(args: TopArgs) -> anyhow::Result<()> {
    let resource = parse_resource(&args.resource, args.name.as_deref())?;
    if matches!(
        resource.kind,
        ResourceKind::Service | ResourceKind::Authority | ResourceKind::TrafficSplit
    ) {
        return Err(UsageError(format!(
            "top listens to workloads' proxies, not {}s; use ns, deploy, sts, ds, job or po",
            resource.kind
        ))
        .into());
    }
    let query = TopQuery {
        resource,
        scope: args.scope.scope(),
        duration: args.interval,
    };
    let client = args.controller.connect().await?;
    if args.once {
        let mut table = TopTable::default();
        table.merge(&fetch_top(&client, &query).await?.rows);
        if table.is_empty() {
            eprintln!("{NO_TRAFFIC}");
            return Ok(());
        }
        return print(&table.render());
    }
    live(&client, &query).await
}

/// Asks the controller to collect live requests for `q.duration`.
pub async fn fetch_top(client: &ControllerClient, q: &TopQuery) -> anyhow::Result<TopResponse> {
    let timeout = REQUEST_TIMEOUT + q.duration;
    Ok(client.get(TOP_PATH, &q.to_query(), timeout).await?)
}

/// Refreshes until Ctrl-C (or SIGTERM), redrawing in place on a terminal
/// and appending plain tables otherwise.
async fn live(client: &ControllerClient, query: &TopQuery) -> anyhow::Result<()> {
    let tty = std::io::stdout().is_terminal();
    let screen = tty.then(Screen::enter).transpose()?;
    let mut stop = pin!(shutdown());
    let mut table = TopTable::default();
    let title = format!(
        "weft top {} ({}), every {}s; Ctrl-C to quit",
        query.resource,
        match &query.scope {
            weft_metrics_api::api::Scope::All => "all namespaces".to_owned(),
            weft_metrics_api::api::Scope::Namespace(ns) => format!("namespace {ns}"),
        },
        query.duration.as_secs()
    );
    let mut first = true;
    loop {
        let fetched = tokio::select! {
            () = &mut stop => break,
            r = fetch_top(client, query) => r,
        };
        let status = match fetched {
            Ok(rsp) => {
                table.merge(&rsp.rows);
                format!(
                    "{} requests from {} proxies ({} events dropped)",
                    table.requests(),
                    rsp.proxies,
                    rsp.dropped
                )
            }
            // A controller that cannot answer the first time will not:
            // fail as the other commands do. Later, keep the table and retry.
            Err(e) if first => return Err(e),
            Err(e) => format!("refresh failed: {e:#}; retrying"),
        };
        let failed = status.starts_with("refresh failed");
        first = false;
        let body = if table.is_empty() {
            "(no requests yet)\n".to_owned()
        } else {
            table.render()
        };
        let frame = if tty {
            format!("{CLEAR}{title}\n{status}\n\n{body}")
        } else {
            format!("{status}\n{body}\n")
        };
        print(&frame)?;
        if failed {
            // Do not spin on a controller that fails at once.
            tokio::select! {
                () = &mut stop => break,
                () = tokio::time::sleep(query.duration) => {}
            }
        }
    }
    drop(screen);
    if tty && !table.is_empty() {
        // Leave the last table on the normal screen, as a record.
        print(&table.render())?;
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// The alternate screen, left (cursor shown again) when dropped, whatever
/// ends the loop.
struct Screen;

impl Screen {
    fn enter() -> anyhow::Result<Self> {
        print(ENTER_SCREEN)?;
        Ok(Self)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = print(LEAVE_SCREEN);
    }
}

/// Requests grouped by source, destination, method and path.
type Key = (String, String, String, String);

/// The running table of `weft top` (and of the demo's live view): rows
/// merged across refreshes, at most [`MAX_ROWS`].
#[derive(Clone, Debug, Default)]
pub struct TopTable {
    rows: HashMap<Key, TopRow>,
}

// === impl TopTable ===

impl TopTable {
    /// Merges one refresh's rows.
    pub fn merge(&mut self, rows: &[TopRow]) {
        for new in rows {
            let key = (
                new.source.clone(),
                new.destination.clone(),
                new.method.clone(),
                new.path.clone(),
            );
            match self.rows.get_mut(&key) {
                None => {
                    self.rows.insert(key, new.clone());
                }
                Some(row) => {
                    let total = row.count + new.count;
                    if total > 0 {
                        row.success = (row.success * row.count as f64
                            + new.success * new.count as f64)
                            / total as f64;
                    }
                    row.count = total;
                    row.best_ms = row.best_ms.min(new.best_ms);
                    row.worst_ms = row.worst_ms.max(new.worst_ms);
                    row.last_ms = new.last_ms;
                }
            }
        }
        if self.rows.len() > MAX_ROWS {
            let mut quiet: Vec<(u64, Key)> = self
                .rows
                .iter()
                .map(|(k, r)| (r.count, k.clone()))
                .collect();
            quiet.sort();
            for (_, key) in quiet.into_iter().take(self.rows.len() - MAX_ROWS) {
                self.rows.remove(&key);
            }
        }
    }

    /// Whether nothing was seen yet.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Requests counted over every row.
    pub fn requests(&self) -> u64 {
        self.rows.values().map(|r| r.count).sum()
    }

    /// The rows, busiest first (ties in key order, so output is stable).
    fn sorted(&self) -> Vec<&TopRow> {
        let mut rows: Vec<&TopRow> = self.rows.values().collect();
        rows.sort_by(|a, b| {
            b.count.cmp(&a.count).then_with(|| {
                (&a.source, &a.destination, &a.method, &a.path).cmp(&(
                    &b.source,
                    &b.destination,
                    &b.method,
                    &b.path,
                ))
            })
        });
        rows
    }

    /// `Source Destination Method Path Count Best Worst Last Success`.
    pub fn render(&self) -> String {
        let mut table = Table::new([
            "Source",
            "Destination",
            "Method",
            "Path",
            "Count",
            "Best",
            "Worst",
            "Last",
            "Success",
        ]);
        for row in self.sorted() {
            table.push([
                row.source.clone(),
                row.destination.clone(),
                row.method.clone(),
                row.path.clone(),
                row.count.to_string(),
                format::duration_ms(row.best_ms),
                format::duration_ms(row.worst_ms),
                format::duration_ms(row.last_ms),
                format::success(Some(row.success)),
            ]);
        }
        table.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(path: &str, count: u64, best: f64, worst: f64, last: f64, success: f64) -> TopRow {
        TopRow {
            source: "deploy/web".into(),
            destination: "deploy/books".into(),
            method: "GET".into(),
            path: path.into(),
            count,
            best_ms: best,
            worst_ms: worst,
            last_ms: last,
            success,
        }
    }

    #[test]
    fn refreshes_merge_into_a_running_table() {
        let mut t = TopTable::default();
        t.merge(&[
            row("/a", 2, 1.0, 5.0, 2.0, 1.0),
            row("/b", 1, 3.0, 3.0, 3.0, 0.0),
        ]);
        t.merge(&[
            row("/a", 2, 0.5, 9.0, 4.0, 0.5),
            row("/b", 3, 1.0, 1.0, 1.0, 1.0),
        ]);
        let rows = t.sorted();
        let a = rows.iter().find(|r| r.path == "/a").unwrap();
        assert_eq!(a.count, 4);
        assert_eq!((a.best_ms, a.worst_ms, a.last_ms), (0.5, 9.0, 4.0));
        assert!((a.success - 0.75).abs() < 1e-9);
        assert_eq!(t.requests(), 8);
        let out = t.render();
        assert_eq!(
            out,
            "Source       Destination    Method   Path   Count   Best    Worst   Last   Success\n\
             deploy/web   deploy/books   GET      /a     4       500µs   9ms     4ms    75.00%\n\
             deploy/web   deploy/books   GET      /b     4       1ms     3ms     1ms    75.00%\n"
        );
    }

    #[test]
    fn the_table_is_bounded_dropping_the_quietest() {
        let mut t = TopTable::default();
        let many: Vec<TopRow> = (0..MAX_ROWS + 50)
            .map(|i| {
                row(
                    &format!("/{i}"),
                    if i == 0 { 1 } else { 5 },
                    1.0,
                    1.0,
                    1.0,
                    1.0,
                )
            })
            .collect();
        t.merge(&many);
        assert_eq!(t.rows.len(), MAX_ROWS);
        assert!(!t.sorted().iter().any(|r| r.path == "/0"));
    }

    #[test]
    fn intervals_are_bounded() {
        assert_eq!(parse_interval("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_interval("31s").is_err());
        assert!(parse_interval("100ms").is_err());
    }
}
