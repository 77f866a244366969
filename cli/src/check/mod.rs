//! `weft check`: is the cluster ready for Weft (`--pre`), is the control
//! plane healthy, and (`--proxy`) are the meshed pods healthy?
//!
//! Modelled on `linkerd check`: the same category names (with `weft-` for
//! `linkerd-`), the same `√` / `‼` / `×` lines with a hint under each
//! problem, the same `Status check results are √` summary, the same
//! `-o json` document, and the same exit status (1 when any check failed,
//! 0 when there were only warnings). Every check is listed in
//! `docs/check.md`, which the hints point to.

mod certs;
mod checks;
mod report;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use crate::kube::KubeArgs;
use report::{Output, Reporter};

/// Long help of `weft check`.
const LONG_ABOUT: &str = "\
Check the Weft installation for potential problems.

Runs the checks of `docs/check.md` category by category and prints one line
per check: √ passed, ‼ warning (worth fixing, does not fail), × failed, with
the reason and a hint under each problem. Exits 1 when any check failed.

  weft check --pre          # before `weft install`: can this cluster take Weft?
  weft check                # after it: is the control plane healthy?
  weft check --proxy -n shop  # also: are the meshed pods in `shop` healthy?";

/// Flags of `weft check`.
#[derive(Debug, clap::Args)]
#[command(about = "Check the Weft installation for potential problems", long_about = LONG_ABOUT)]
pub struct CheckArgs {
    /// Only run the pre-installation checks, to see whether Weft can be
    /// installed.
    #[arg(long, conflicts_with = "proxy")]
    pub pre: bool,
    /// Also check the data plane: every meshed pod's proxy.
    #[arg(long)]
    pub proxy: bool,
    /// Namespace of the data plane checks (`--proxy`); all namespaces when
    /// absent.
    #[arg(short = 'n', long = "namespace", value_name = "NS")]
    pub namespace: Option<String>,
    /// Output format: table, json or short (only problems).
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
    /// How long checks that wait for the cluster (pods becoming ready) keep
    /// retrying before they fail, e.g. 30s, 5m.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_wait)]
    pub wait: Duration,
    #[command(flatten)]
    pub kube: KubeArgs,
}

fn parse_wait(text: &str) -> Result<Duration, String> {
    weft_identity::parse_duration(text).map_err(|e| e.to_string())
}

/// Runs `weft check` and maps the outcome to the exit status: 0 when no
/// check failed, 1 when one did (or the output could not be written).
pub fn main(runtime: &tokio::runtime::Runtime, args: CheckArgs) -> ExitCode {
    let stdout = std::io::stdout().lock();
    let mut reporter = Reporter::new(stdout, args.output);
    let ran = runtime.block_on(checks::run(&args, &mut reporter));
    let success = reporter.success();
    let finished = reporter.finish();
    match (ran, finished) {
        (Ok(()), Ok(mut out)) => {
            let _ = out.flush();
            if success {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("weft: cannot write the check results: {e}");
            ExitCode::FAILURE
        }
    }
}
