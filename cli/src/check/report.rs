//! What a check found, and how results are shown: Linkerd's table (a
//! header per category, `√` / `‼` / `×` per check, an indented error and a
//! `see … for hints` line under each failure), its `short` variant (only
//! warnings and failures) and its JSON document.
//!
//! Results are printed as they arrive in the table modes, so a slow cluster
//! shows progress; JSON is printed once at the end, as one document.

use std::io::Write;

use serde::Serialize;

/// Where hints point: the section of `docs/check.md` that explains a check
/// and how to fix it (each check names its anchor).
pub const HINT_BASE: &str = "docs/check.md#";

/// `-o` of `weft check`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Every check, grouped by category (the default).
    Table,
    /// One JSON document in Linkerd's `linkerd check -o json` shape.
    Json,
    /// Only warnings and failures, then the summary.
    Short,
}

/// The outcome of one check, in Linkerd's JSON vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// `√`
    Success,
    /// `‼`: worth fixing, does not fail the run.
    Warning,
    /// `×`: fails the run (exit 1).
    Error,
}

impl Status {
    /// The symbol Linkerd prints for this outcome.
    pub fn symbol(self) -> &'static str {
        match self {
            Status::Success => "√",
            Status::Warning => "‼",
            Status::Error => "×",
        }
    }
}

/// One check's result, as printed and as serialized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResult {
    /// What was checked, phrased so `√` reads as "yes" ("control plane
    /// Namespace exists").
    pub description: String,
    /// The outcome.
    pub status: Status,
    /// Why it is not a success (absent on success).
    pub error: Option<String>,
    /// The `docs/check.md` anchor explaining the check (shown on failure).
    pub hint_anchor: &'static str,
}

impl CheckResult {
    /// A passing check.
    pub fn success(description: impl Into<String>, hint_anchor: &'static str) -> Self {
        Self {
            description: description.into(),
            status: Status::Success,
            error: None,
            hint_anchor,
        }
    }

    /// A warning with its reason.
    pub fn warning(
        description: impl Into<String>,
        hint_anchor: &'static str,
        why: impl Into<String>,
    ) -> Self {
        Self {
            description: description.into(),
            status: Status::Warning,
            error: Some(why.into()),
            hint_anchor,
        }
    }

    /// A failure with its reason.
    pub fn error(
        description: impl Into<String>,
        hint_anchor: &'static str,
        why: impl Into<String>,
    ) -> Self {
        Self {
            description: description.into(),
            status: Status::Error,
            error: Some(why.into()),
            hint_anchor,
        }
    }

    /// `Ok(())` → success, `Err(why)` → failure.
    pub fn from_result(
        description: impl Into<String>,
        hint_anchor: &'static str,
        result: Result<(), String>,
    ) -> Self {
        match result {
            Ok(()) => Self::success(description, hint_anchor),
            Err(why) => Self::error(description, hint_anchor, why),
        }
    }

    /// The hint as shown: `docs/check.md#anchor`.
    pub fn hint(&self) -> String {
        format!("{HINT_BASE}{}", self.hint_anchor)
    }
}

/// The `-o json` document (Linkerd's `CheckOutput`).
#[derive(Debug, Serialize)]
struct JsonOutput<'a> {
    success: bool,
    categories: Vec<JsonCategory<'a>>,
}

/// One category of the JSON document (Linkerd's `CheckCategory`).
#[derive(Debug, Serialize)]
struct JsonCategory<'a> {
    #[serde(rename = "categoryName")]
    category_name: &'a str,
    checks: Vec<JsonCheck<'a>>,
}

/// One check of the JSON document (Linkerd's `Check`).
#[derive(Debug, Serialize)]
struct JsonCheck<'a> {
    description: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    result: Status,
}

/// Collects results category by category and prints them in the chosen
/// format. Table output goes out as results arrive; JSON at
/// [`finish`](Self::finish).
pub struct Reporter<W: Write> {
    out: W,
    output: Output,
    categories: Vec<(&'static str, Vec<CheckResult>)>,
    /// Category whose header the table modes printed last.
    printed_category: Option<&'static str>,
    /// Whether `-o short` printed its "Weft core checks" header yet.
    short_header_printed: bool,
}

// === impl Reporter ===

impl<W: Write> Reporter<W> {
    /// A reporter writing to `out` (stdout in the CLI, a buffer in tests).
    pub fn new(out: W, output: Output) -> Self {
        Self {
            out,
            output,
            categories: Vec::new(),
            printed_category: None,
            short_header_printed: false,
        }
    }

    /// Records (and in the table modes prints) one result of `category`.
    pub fn record(&mut self, category: &'static str, result: CheckResult) -> std::io::Result<()> {
        match self.output {
            Output::Json => {}
            Output::Table => {
                if self.printed_category.is_none() {
                    self.header()?;
                }
                self.print_result(category, &result)?;
            }
            Output::Short => {
                if result.status != Status::Success {
                    if !self.short_header_printed {
                        self.header()?;
                        self.short_header_printed = true;
                    }
                    self.print_result(category, &result)?;
                }
            }
        }
        match self.categories.last_mut() {
            Some((name, results)) if *name == category => results.push(result),
            _ => self.categories.push((category, vec![result])),
        }
        Ok(())
    }

    /// Whether no check failed (warnings allowed).
    pub fn success(&self) -> bool {
        self.all().all(|r| r.status != Status::Error)
    }

    /// Whether some check warned.
    pub fn warning(&self) -> bool {
        self.all().any(|r| r.status == Status::Warning)
    }

    /// Every result so far, in order.
    pub fn all(&self) -> impl Iterator<Item = &CheckResult> {
        self.categories.iter().flat_map(|(_, rs)| rs.iter())
    }

    /// Prints the summary (table modes) or the whole document (JSON), and
    /// hands the writer back.
    pub fn finish(mut self) -> std::io::Result<W> {
        let success = self.success();
        match self.output {
            Output::Json => {
                let doc = JsonOutput {
                    success,
                    categories: self
                        .categories
                        .iter()
                        .map(|(name, results)| JsonCategory {
                            category_name: name,
                            checks: results
                                .iter()
                                .map(|r| JsonCheck {
                                    description: &r.description,
                                    hint: r.error.as_ref().map(|_| r.hint()),
                                    error: r.error.as_deref(),
                                    result: r.status,
                                })
                                .collect(),
                        })
                        .collect(),
                };
                let text = serde_json::to_string_pretty(&doc).map_err(std::io::Error::other)?;
                writeln!(self.out, "{text}")?;
            }
            Output::Table | Output::Short => {
                // As Linkerd: a blank line after the last category, except
                // in short mode when nothing was printed.
                if self.output == Output::Table || !success || self.warning() {
                    writeln!(self.out)?;
                }
                let symbol = if success {
                    Status::Success.symbol()
                } else {
                    Status::Error.symbol()
                };
                writeln!(self.out, "Status check results are {symbol}")?;
            }
        }
        self.out.flush()?;
        Ok(self.out)
    }

    fn header(&mut self) -> std::io::Result<()> {
        let title = "Weft core checks";
        writeln!(self.out, "{title}")?;
        writeln!(self.out, "{}", "=".repeat(title.chars().count()))?;
        writeln!(self.out)
    }

    fn print_result(
        &mut self,
        category: &'static str,
        result: &CheckResult,
    ) -> std::io::Result<()> {
        if self.printed_category != Some(category) {
            if self.printed_category.is_some() {
                writeln!(self.out)?;
            }
            writeln!(self.out, "{category}")?;
            writeln!(self.out, "{}", "-".repeat(category.chars().count()))?;
            self.printed_category = Some(category);
        }
        writeln!(
            self.out,
            "{} {}",
            result.status.symbol(),
            result.description
        )?;
        if let Some(error) = &result.error {
            for line in error.lines() {
                writeln!(self.out, "    {line}")?;
            }
            writeln!(self.out, "    see {} for hints", result.hint())?;
        }
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(output: Output) -> String {
        let mut r = Reporter::new(Vec::new(), output);
        r.record(
            "kubernetes-api",
            CheckResult::success("can query", "k8s-api"),
        )
        .unwrap();
        r.record(
            "weft-identity",
            CheckResult::warning("issuer is fresh", "issuer-fresh", "expires in 3 days"),
        )
        .unwrap();
        r.record(
            "weft-identity",
            CheckResult::error("issuer is valid", "issuer-valid", "expired"),
        )
        .unwrap();
        String::from_utf8(r.finish().unwrap()).unwrap()
    }

    #[test]
    fn table_groups_by_category_with_hints_and_summary() {
        let text = sample(Output::Table);
        assert_eq!(
            text,
            "Weft core checks\n================\n\n\
             kubernetes-api\n--------------\n√ can query\n\n\
             weft-identity\n-------------\n\
             ‼ issuer is fresh\n    expires in 3 days\n    see docs/check.md#issuer-fresh for hints\n\
             × issuer is valid\n    expired\n    see docs/check.md#issuer-valid for hints\n\n\
             Status check results are ×\n"
        );
    }

    #[test]
    fn short_prints_only_problems() {
        let text = sample(Output::Short);
        assert!(!text.contains("kubernetes-api"), "{text}");
        assert!(text.contains("‼ issuer is fresh"), "{text}");
        assert!(text.ends_with("\nStatus check results are ×\n"), "{text}");

        let mut r = Reporter::new(Vec::new(), Output::Short);
        r.record(
            "kubernetes-api",
            CheckResult::success("can query", "k8s-api"),
        )
        .unwrap();
        let text = String::from_utf8(r.finish().unwrap()).unwrap();
        assert_eq!(text, "Status check results are √\n");
    }

    #[test]
    fn json_has_linkerds_shape() {
        let text = sample(Output::Json);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["success"], false);
        assert_eq!(v["categories"][0]["categoryName"], "kubernetes-api");
        let ok = &v["categories"][0]["checks"][0];
        assert_eq!(ok["result"], "success");
        assert!(ok.get("error").is_none() && ok.get("hint").is_none());
        let bad = &v["categories"][1]["checks"][1];
        assert_eq!(bad["result"], "error");
        assert_eq!(bad["error"], "expired");
        assert_eq!(bad["hint"], "docs/check.md#issuer-valid");
        assert_eq!(v["categories"][1]["checks"][0]["result"], "warning");
    }
}
