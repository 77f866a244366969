//! The Prometheus text exposition the proxies serve, parsed and reduced on
//! arrival to the series the metrics API reads.
//!
//! The proxy renders its registry with `prometheus-client`'s OpenMetrics
//! text encoder: `# HELP`/`# TYPE` comments, counters as `<name>_total`,
//! histograms as `_sum`, `_count` and `_bucket{le="…"}`, label values
//! escaped (`\\`, `\"`, `\n`), and a final `# EOF`. Its constant workload
//! labels (`namespace`, `pod`, `deployment`, ...) come first on every line,
//! and `le` sits among them on bucket lines.
//!
//! # Why a parser of our own
//!
//! `prometheus-parse` (0.2.5, the crate for this format) was evaluated and
//! does not fit:
//! - it splits the label block on `,` and `=` and matches it with
//!   `\{[^}]+\}`, so a label value holding `}`, `,` or `=` is cut or
//!   dropped; ServiceProfile route names (`rt_route="GET /books/{id}"`) are
//!   exactly such values, and escaped quotes are not unescaped;
//! - it silently skips lines it cannot parse, so a truncated or garbled
//!   scrape would look like a proxy whose series vanished, and it reports no
//!   line numbers;
//! - it finds a sample's type by its exact name, so OpenMetrics counters
//!   (`# TYPE response counter`, samples `response_total`) come out untyped;
//! - it copies every label name and value into a `HashMap<String, String>`
//!   per sample and re-renders label sets to strings to group buckets, all
//!   for families we then throw away.
//!
//! The grammar the proxy emits is small, so this module parses it strictly
//! in one pass over borrowed text: every line is validated, only the kept
//! families' distinct series allocate, and any error names its line. A
//! series written twice is refused when the two lines are identical
//! (Prometheus refuses the scrape); the same labels in another order would
//! be summed.
//!
//! A busy proxy's scrape (335 KiB, 1,200 lines) is parsed and reduced in
//! about 0.7 ms on the benchmark machine (`weft-bench-metrics`), since a
//! line whose label block repeats the previous one's (a histogram's
//! `_count` and buckets) reuses its parse.
//!
//! # Reduction
//!
//! [`reduce`] keeps only the [`Family`]s the API reads, drops
//! `status_code` and sums series that differ only by it (Linkerd's queries
//! never group by status; this bounds memory by a factor of the number of
//! distinct statuses), splits the proxy's constant labels into
//! [`Reduced::target_labels`], and keeps a bucket's `le` as a number.
//! The authorization refusal counters keep no labels at all: one series per
//! proxy and family, the sum of all their label sets
//! ([`Family::keeps_labels`]).
//!
//! Summing before `increase`/`irate` gives what Prometheus' per-series
//! function then `sum` gives, because the merged series share their scrape
//! times (one scrape yields them all) and reset together (a proxy restart
//! resets them all), with two exceptions, both for a series born inside the
//! window: a status code that first appears there (Prometheus takes a new
//! series' first value as its baseline and misses those responses; in the
//! sum they are an increase), and the extrapolation's zero-point cutoff,
//! computed per series by Prometheus and on the sum here.

use indexmap::IndexMap;
use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

/// The largest exposition [`reduce`] accepts; the scraper bounds bodies to
/// this too.
pub const MAX_EXPOSITION_BYTES: usize = 4 * 1024 * 1024;

/// The proxy's constant labels (its workload, see the proxy's
/// `Workload::metric_labels`): the same on every series of one proxy, so
/// they are kept once per target rather than once per series.
pub const TARGET_LABELS: &[&str] = &[
    "namespace",
    "pod",
    "deployment",
    "statefulset",
    "daemonset",
    "job",
    "cronjob",
    "replicaset",
    "owner_kind",
    "owner_name",
];

/// The label [`reduce`] drops, summing the series it distinguished.
pub const STATUS_CODE_LABEL: &str = "status_code";

/// A histogram bucket's upper bound label.
pub const LE_LABEL: &str = "le";

type FastHash = foldhash::fast::RandomState;

/// Label pairs borrowed from the scrape, values still escaped.
type RawLabels<'a> = Vec<(&'a str, &'a str)>;

/// The metric families the metrics API reads; every other family is
/// skipped while parsing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Family {
    /// `response_total`: responses by `classification` (success rate, RPS).
    ResponseTotal,
    /// `response_latency_ms_bucket`: latency histogram buckets.
    ResponseLatencyMsBucket,
    /// `tcp_open_connections`: a gauge of open connections.
    TcpOpenConnections,
    /// `tcp_read_bytes_total`: bytes read from peers.
    TcpReadBytesTotal,
    /// `tcp_write_bytes_total`: bytes written to peers.
    TcpWriteBytesTotal,
    /// `route_response_total`: per-route responses as the caller saw them.
    RouteResponseTotal,
    /// `route_actual_response_total`: per-route responses of every attempt.
    RouteActualResponseTotal,
    /// `route_response_latency_ms_bucket`: per-route latency buckets.
    RouteResponseLatencyMsBucket,
    /// `inbound_http_authz_deny_total`: requests refused by inbound
    /// authorization (kept without labels, see [`Family::keeps_labels`]).
    InboundHttpAuthzDenyTotal,
    /// `inbound_tcp_authz_deny_total`: connections refused by inbound
    /// authorization (kept without labels).
    InboundTcpAuthzDenyTotal,
}

/// A label set sorted by name, cheap to clone (one shared allocation), so
/// thousands of series and scrapes can hold the same set.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(pub(crate) Arc<[(Arc<str>, Arc<str>)]>);

/// A series' identity after reduction: its family, its labels (without
/// target labels, `status_code` and `le`) and, for buckets, its upper bound.
///
/// `le` is kept as the bits of a non-NaN `f64` (`-0` folded into `0`), so
/// keys hash and compare exactly.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    family: Family,
    le_bits: u64,
    labels: Labels,
}

/// One reduced series and its value in one scrape.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Which series.
    pub key: SeriesKey,
    /// Its value (the sum over the `status_code`s it merged).
    pub value: f64,
}

/// One scrape, reduced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reduced {
    /// The proxy's constant labels (see [`TARGET_LABELS`]), empty for a
    /// proxy that runs outside a pod.
    pub target_labels: Labels,
    /// The kept series, in order of first appearance, each key once.
    pub series: Vec<Sample>,
    /// How many lines of kept families the scrape had before summing (for
    /// logs and benchmarks).
    pub raw_series: usize,
}

/// A scrape that is not a well-formed exposition; the whole scrape is
/// refused so a garbled body never reads as vanished series.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("exposition line {line}: {kind}")]
pub struct ExpositionError {
    /// The 1-based line (0 for the body as a whole).
    pub line: usize,
    /// What was wrong.
    pub kind: ErrorKind,
}

/// What made an exposition malformed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    /// The body is larger than [`MAX_EXPOSITION_BYTES`].
    #[error("body of {0} bytes exceeds the {MAX_EXPOSITION_BYTES}-byte limit")]
    TooLarge(usize),
    /// A sample line does not start with a valid metric name.
    #[error("invalid metric name")]
    InvalidName,
    /// The label block is not `{name="value",...}`.
    #[error("malformed labels: {0}")]
    InvalidLabels(&'static str),
    /// A label name appears twice on one line.
    #[error("duplicate label {0:?}")]
    DuplicateLabel(String),
    /// The value is missing or not a number.
    #[error("invalid value {0:?}")]
    InvalidValue(String),
    /// Something other than a timestamp or an exemplar follows the value.
    #[error("unexpected text after the value: {0:?}")]
    TrailingText(String),
    /// A bucket line without a numeric `le`.
    #[error("bucket without a numeric le label")]
    InvalidLe,
    /// The same series (with all its labels) appears twice.
    #[error("duplicate series")]
    DuplicateSeries,
    /// A line's constant labels differ from the first line's.
    #[error("target labels differ from earlier lines")]
    InconsistentTargetLabels,
    /// Text after `# EOF`.
    #[error("text after # EOF")]
    AfterEof,
    /// No `# EOF`: the body was truncated (or is not OpenMetrics).
    #[error("missing # EOF (truncated body?)")]
    MissingEof,
}

/// Parses one scrape and reduces it (see the module docs).
///
/// Consecutive lines usually share their label block (a histogram's
/// `_count` and buckets, differing only in `le`): a line whose block is
/// byte-for-byte the previous one's, `le`'s value aside, reuses the
/// previous parse, target check and series group, so only its numbers are
/// parsed. Everything else takes the full path.
pub fn reduce(text: &str) -> Result<Reduced, ExpositionError> {
    if text.len() > MAX_EXPOSITION_BYTES {
        return Err(ExpositionError {
            line: 0,
            kind: ErrorKind::TooLarge(text.len()),
        });
    }
    // Series groups (family and labels, `le` aside) with their buckets'
    // sums in order of appearance (one slot for other families).
    let mut groups: IndexMap<GroupKey<'_>, Vec<(u64, f64)>, FastHash> = IndexMap::default();
    let mut seen: HashSet<&str, FastHash> = HashSet::default();
    // The first line's target labels as written, and sorted.
    let mut target: Option<(RawLabels<'_>, RawLabels<'_>)> = None;
    // Buffers reused for every line.
    let mut labels: Vec<(&str, &str)> = Vec::with_capacity(16);
    let mut line_targets: Vec<(&str, &str)> = Vec::with_capacity(8);
    let mut kept: Vec<(&str, &str)> = Vec::with_capacity(16);
    let mut prev: Option<Prev<'_>> = None;
    let mut raw_series = 0;
    let mut eof = false;

    for (index, line) in text.split('\n').enumerate() {
        let lineno = index + 1;
        let err = |kind| ExpositionError { line: lineno, kind };
        if eof {
            if line.is_empty() {
                continue;
            }
            return Err(err(ErrorKind::AfterEof));
        }
        if line.is_empty() {
            continue;
        }
        if line.starts_with('#') {
            eof = line == "# EOF";
            continue;
        }
        let name_end = line
            .bytes()
            .position(|b| NAME_BYTES[usize::from(b)] & METRIC_NAME == 0)
            .unwrap_or(line.len());
        if name_end == 0 || line.as_bytes()[0].is_ascii_digit() {
            return Err(err(ErrorKind::InvalidName));
        }
        let name = &line[..name_end];
        let after_name = &line[name_end..];
        let family = Family::from_name(name);

        let same = prev
            .as_ref()
            .filter(|p| p.family == family)
            .and_then(|p| p.same_block(after_name));
        let (block, le) = match same {
            Some(same) => same,
            None => {
                labels.clear();
                let block_len = if after_name.starts_with('{') {
                    parse_labels(after_name, 1, &mut labels).map_err(err)?
                } else {
                    0
                };
                check_duplicate_labels(&labels).map_err(err)?;
                // Target labels apart; for kept families `le` and the
                // series' own labels. Values stay escaped until the end:
                // escaping is one-to-one, so equal text is an equal value.
                line_targets.clear();
                kept.clear();
                let mut le = None;
                for &(name, raw) in &labels {
                    if is_target_label(name) {
                        line_targets.push((name, raw));
                    } else if let Some(f) = family {
                        if f.is_bucket() && name == LE_LABEL {
                            le = Some(raw);
                        } else if name != STATUS_CODE_LABEL && f.keeps_labels() {
                            kept.push((name, raw));
                        }
                    }
                }
                match &target {
                    None => {
                        let mut sorted = line_targets.clone();
                        sorted.sort_unstable();
                        target = Some((line_targets.clone(), sorted));
                    }
                    // The proxy writes them in one order: compare as written.
                    Some((first, _)) if *first == line_targets => {}
                    Some((_, sorted)) => {
                        line_targets.sort_unstable();
                        if *sorted != line_targets {
                            return Err(err(ErrorKind::InconsistentTargetLabels));
                        }
                    }
                }
                kept.sort_unstable_by(|a, b| a.0.cmp(b.0));
                prev = None;
                (&after_name[..block_len], le)
            }
        };
        let value = parse_value(&after_name[block.len()..]).map_err(err)?;
        let group = prev.as_ref().and_then(|p| p.group);
        let cursor = prev.as_ref().map_or(0, |p| p.cursor);
        let mut next = Prev {
            family,
            block,
            le: le.map(|v| {
                // Where `le`'s value sits in the block (pointer offsets
                // within one line).
                let at = v.as_ptr() as usize - block.as_ptr() as usize;
                (at, at + v.len())
            }),
            group: None,
            cursor: 0,
        };

        if let Some(family) = family {
            raw_series += 1;
            if !seen.insert(&line[..name_end + block.len()]) {
                return Err(err(ErrorKind::DuplicateSeries));
            }
            let le_bits = match le {
                Some(raw) => {
                    le_to_bits(parse_float(&unescape(raw))).ok_or(err(ErrorKind::InvalidLe))?
                }
                None if family.is_bucket() => return Err(err(ErrorKind::InvalidLe)),
                None => NO_LE,
            };
            // NaN is how the ring marks an absent sample; a NaN from the
            // proxy (it never sends one) is treated the same way.
            if !value.is_nan() {
                let (gi, mut cursor) = match group {
                    Some(g) => (g, cursor),
                    None => {
                        let lookup = GroupKeyRef {
                            family,
                            labels: &kept,
                        };
                        let gi = match groups.get_index_of(&lookup) {
                            Some(gi) => gi,
                            None => {
                                let key = GroupKey {
                                    family,
                                    labels: kept.clone(),
                                };
                                groups.insert_full(key, Vec::new()).0
                            }
                        };
                        (gi, 0)
                    }
                };
                if let Some((_, slots)) = groups.get_index_mut(gi) {
                    // Buckets arrive in the same order for every status.
                    if slots.get(cursor).is_none_or(|s| s.0 != le_bits) {
                        cursor = slots
                            .iter()
                            .position(|s| s.0 == le_bits)
                            .unwrap_or_else(|| {
                                slots.push((le_bits, 0.0));
                                slots.len() - 1
                            });
                    }
                    slots[cursor].1 += value;
                }
                next.group = Some(gi);
                next.cursor = cursor + 1;
            }
        }
        prev = Some(next);
    }
    if !eof {
        return Err(ExpositionError {
            line: text.split('\n').count(),
            kind: ErrorKind::MissingEof,
        });
    }

    let mut strings = StringCache::default();
    let target_labels = match target {
        Some((_, sorted)) => Labels(
            sorted
                .iter()
                .map(|&(n, v)| (strings.get(n), strings.get(&unescape(v))))
                .collect(),
        ),
        None => Labels::default(),
    };
    let mut series = Vec::with_capacity(groups.values().map(Vec::len).sum());
    for (key, slots) in groups {
        let labels = Labels(
            key.labels
                .iter()
                .map(|&(n, v)| (strings.get(n), strings.get(&unescape(v))))
                .collect(),
        );
        for (le_bits, value) in slots {
            series.push(Sample {
                key: SeriesKey {
                    family: key.family,
                    le_bits,
                    labels: labels.clone(),
                },
                value,
            });
        }
    }
    Ok(Reduced {
        target_labels,
        series,
        raw_series,
    })
}

/// A series group: family and labels (values escaped), without `le`.
#[derive(PartialEq, Eq, Hash)]
struct GroupKey<'a> {
    family: Family,
    labels: Vec<(&'a str, &'a str)>,
}

/// [`GroupKey`] borrowing a reused buffer, to look groups up without
/// allocating; hashes as `GroupKey` does (a `Vec` hashes as its slice).
#[derive(Hash)]
struct GroupKeyRef<'b, 'a> {
    family: Family,
    labels: &'b [(&'a str, &'a str)],
}

impl<'a> indexmap::Equivalent<GroupKey<'a>> for GroupKeyRef<'_, 'a> {
    fn equivalent(&self, key: &GroupKey<'a>) -> bool {
        self.family == key.family && self.labels == key.labels
    }
}

/// What the previous sample line left for the next one to reuse.
struct Prev<'a> {
    family: Option<Family>,
    /// Its label block, braces included (empty without labels).
    block: &'a str,
    /// The byte span of `le`'s value within `block`.
    le: Option<(usize, usize)>,
    /// Its series group, if it was recorded.
    group: Option<usize>,
    /// The bucket slot after the one it filled.
    cursor: usize,
}

impl<'a> Prev<'a> {
    /// If `after_name` starts with this block (any `le` value allowed),
    /// that block and the new `le` value.
    fn same_block(&self, after_name: &'a str) -> Option<(&'a str, Option<&'a str>)> {
        let followed = |rest: &str| rest.starts_with([' ', '\t']);
        match self.le {
            None => {
                let rest = after_name.strip_prefix(self.block)?;
                followed(rest).then_some((&after_name[..self.block.len()], None))
            }
            Some((start, end)) => {
                let head = after_name.get(..start)?;
                if head != &self.block[..start] {
                    return None;
                }
                let value_len = memchr::memchr2(b'"', b'\\', &after_name.as_bytes()[start..])?;
                let value_end = start + value_len;
                if after_name.as_bytes()[value_end] != b'"' {
                    return None;
                }
                let tail = &self.block[end..];
                let rest = after_name[value_end..].strip_prefix(tail)?;
                followed(rest).then_some((
                    &after_name[..value_end + tail.len()],
                    Some(&after_name[start..value_end]),
                ))
            }
        }
    }
}

/// Parses what follows the label block: ` value [timestamp] [# exemplar]`.
fn parse_value(rest: &str) -> Result<f64, ErrorKind> {
    if !rest.starts_with([' ', '\t']) {
        return Err(if rest.is_empty() {
            ErrorKind::InvalidValue(String::new())
        } else {
            ErrorKind::InvalidName
        });
    }
    let mut tokens = rest.split_ascii_whitespace();
    let value_text = tokens.next().unwrap_or("");
    let value =
        parse_float(value_text).ok_or_else(|| ErrorKind::InvalidValue(value_text.into()))?;
    match tokens.next() {
        None => {}
        Some(t) if t.starts_with('#') => {}
        Some(ts) => {
            if parse_float(ts).is_none() {
                return Err(ErrorKind::TrailingText(ts.into()));
            }
            match tokens.next() {
                None => {}
                Some(t) if t.starts_with('#') => {}
                Some(t) => return Err(ErrorKind::TrailingText(t.into())),
            }
        }
    }
    Ok(value)
}

/// Refuses a line naming one label twice. Names are compared only when a
/// cheap signature (length and last byte) collides, which distinct names
/// on one line rarely do.
fn check_duplicate_labels(labels: &[(&str, &str)]) -> Result<(), ErrorKind> {
    let mut signatures = 0u64;
    for (i, (a, _)) in labels.iter().enumerate() {
        let last = a.as_bytes().last().copied().unwrap_or(0);
        let sig = 1u64 << ((a.len() * 7 + usize::from(last)) % 64);
        if signatures & sig != 0 && labels[..i].iter().any(|(b, _)| a == b) {
            return Err(ErrorKind::DuplicateLabel((*a).into()));
        }
        signatures |= sig;
    }
    Ok(())
}

/// Parses `name="value",...}` from `start`; returns the index after `}`.
fn parse_labels<'a>(
    line: &'a str,
    start: usize,
    labels: &mut Vec<(&'a str, &'a str)>,
) -> Result<usize, ErrorKind> {
    let bytes = line.as_bytes();
    let mut pos = start;
    loop {
        while bytes.get(pos) == Some(&b' ') {
            pos += 1;
        }
        match bytes.get(pos) {
            Some(b'}') => return Ok(pos + 1),
            None => return Err(ErrorKind::InvalidLabels("unterminated label block")),
            _ => {}
        }
        let name_start = pos;
        // Up to `=`, then checked: faster than testing each byte's class
        // on the way.
        pos += memchr::memchr(b'=', &bytes[pos..]).unwrap_or(bytes.len() - pos);
        if !bytes[name_start..pos]
            .iter()
            .all(|&b| NAME_BYTES[usize::from(b)] & LABEL_NAME != 0)
        {
            return Err(ErrorKind::InvalidLabels("invalid label name"));
        }
        if pos == name_start || bytes[name_start].is_ascii_digit() {
            return Err(ErrorKind::InvalidLabels("invalid label name"));
        }
        let name = &line[name_start..pos];
        if bytes.get(pos) != Some(&b'=') || bytes.get(pos + 1) != Some(&b'"') {
            return Err(ErrorKind::InvalidLabels("expected =\" after a label name"));
        }
        pos += 2;
        let value_start = pos;
        loop {
            let Some(at) = memchr::memchr2(b'"', b'\\', &bytes[pos..]) else {
                return Err(ErrorKind::InvalidLabels("unterminated label value"));
            };
            pos += at;
            if bytes[pos] == b'"' {
                break;
            }
            match bytes.get(pos + 1) {
                Some(b'\\' | b'"' | b'n') => pos += 2,
                _ => return Err(ErrorKind::InvalidLabels("invalid escape in label value")),
            }
        }
        labels.push((name, &line[value_start..pos]));
        pos += 1;
        while bytes.get(pos) == Some(&b' ') {
            pos += 1;
        }
        match bytes.get(pos) {
            Some(b',') => pos += 1,
            Some(b'}') => return Ok(pos + 1),
            _ => {
                return Err(ErrorKind::InvalidLabels(
                    "expected , or } after a label value",
                ))
            }
        }
    }
}

/// One of [`TARGET_LABELS`] (a `match`, which compiles to length and byte
/// tests rather than ten string compares).
fn is_target_label(name: &str) -> bool {
    matches!(
        name,
        "namespace"
            | "pod"
            | "deployment"
            | "statefulset"
            | "daemonset"
            | "job"
            | "cronjob"
            | "replicaset"
            | "owner_kind"
            | "owner_name"
    )
}

/// [`NAME_BYTES`] flag: may appear in a metric name (`[a-zA-Z0-9_:]`).
const METRIC_NAME: u8 = 1;
/// [`NAME_BYTES`] flag: may appear in a label name (`[a-zA-Z0-9_]`).
const LABEL_NAME: u8 = 2;

/// Which bytes may appear in names (neither may start with a digit; the
/// callers check that).
static NAME_BYTES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || c == b'_' {
            table[b] = METRIC_NAME | LABEL_NAME;
        } else if c == b':' {
            table[b] = METRIC_NAME;
        }
        b += 1;
    }
    table
};

/// Undoes the exposition's label value escapes (validated by the parser).
fn unescape(raw: &str) -> Cow<'_, str> {
    if !raw.contains('\\') {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A float as Prometheus writes them: decimal or exponent notation,
/// `+Inf`/`-Inf`/`NaN` in any case.
fn parse_float(s: &str) -> Option<f64> {
    s.parse::<f64>().ok()
}

/// The `le_bits` of a series that is not a bucket (a NaN pattern, which no
/// parsed `le` can have).
const NO_LE: u64 = 0x7ff8_dead_beef_0001;

fn le_to_bits(le: Option<f64>) -> Option<u64> {
    let le = le.filter(|v| !v.is_nan())?;
    // -0 and 0 are one bound.
    Some(if le == 0.0 {
        0f64.to_bits()
    } else {
        le.to_bits()
    })
}

/// Shares equal strings within one scrape.
#[derive(Default)]
struct StringCache(HashSet<Arc<str>, FastHash>);

impl StringCache {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.0.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.0.insert(a.clone());
        a
    }
}

// === impl Family ===

impl Family {
    /// Every family, in declaration order.
    pub const ALL: [Family; 10] = [
        Family::ResponseTotal,
        Family::ResponseLatencyMsBucket,
        Family::TcpOpenConnections,
        Family::TcpReadBytesTotal,
        Family::TcpWriteBytesTotal,
        Family::RouteResponseTotal,
        Family::RouteActualResponseTotal,
        Family::RouteResponseLatencyMsBucket,
        Family::InboundHttpAuthzDenyTotal,
        Family::InboundTcpAuthzDenyTotal,
    ];

    /// The sample name as the exposition writes it.
    pub fn name(self) -> &'static str {
        match self {
            Family::ResponseTotal => "response_total",
            Family::ResponseLatencyMsBucket => "response_latency_ms_bucket",
            Family::TcpOpenConnections => "tcp_open_connections",
            Family::TcpReadBytesTotal => "tcp_read_bytes_total",
            Family::TcpWriteBytesTotal => "tcp_write_bytes_total",
            Family::RouteResponseTotal => "route_response_total",
            Family::RouteActualResponseTotal => "route_actual_response_total",
            Family::RouteResponseLatencyMsBucket => "route_response_latency_ms_bucket",
            Family::InboundHttpAuthzDenyTotal => "inbound_http_authz_deny_total",
            Family::InboundTcpAuthzDenyTotal => "inbound_tcp_authz_deny_total",
        }
    }

    /// The family of a sample name, if it is one the API keeps.
    pub fn from_name(name: &str) -> Option<Family> {
        Some(match name {
            "response_total" => Family::ResponseTotal,
            "response_latency_ms_bucket" => Family::ResponseLatencyMsBucket,
            "tcp_open_connections" => Family::TcpOpenConnections,
            "tcp_read_bytes_total" => Family::TcpReadBytesTotal,
            "tcp_write_bytes_total" => Family::TcpWriteBytesTotal,
            "route_response_total" => Family::RouteResponseTotal,
            "route_actual_response_total" => Family::RouteActualResponseTotal,
            "route_response_latency_ms_bucket" => Family::RouteResponseLatencyMsBucket,
            "inbound_http_authz_deny_total" => Family::InboundHttpAuthzDenyTotal,
            "inbound_tcp_authz_deny_total" => Family::InboundTcpAuthzDenyTotal,
            _ => return None,
        })
    }

    /// Histogram buckets (their series carry `le`).
    pub fn is_bucket(self) -> bool {
        matches!(
            self,
            Family::ResponseLatencyMsBucket | Family::RouteResponseLatencyMsBucket
        )
    }

    /// Counters (read with `increase`/`irate`); the rest are gauges.
    pub fn is_counter(self) -> bool {
        self != Family::TcpOpenConnections
    }

    /// Whether the family's series keep their labels. The authorization
    /// counters do not: the API reads only their sum per proxy (`weft stat`'s
    /// `UNAUTHORIZED`), and their `client_id`, `target_addr` and route labels
    /// would otherwise add a series per client and route to every proxy's
    /// ring.
    pub fn keeps_labels(self) -> bool {
        !self.is_authz_deny()
    }

    /// The authorization refusal counters (HTTP requests and TCP
    /// connections), whose sum is a workload's `UNAUTHORIZED`.
    pub fn is_authz_deny(self) -> bool {
        matches!(
            self,
            Family::InboundHttpAuthzDenyTotal | Family::InboundTcpAuthzDenyTotal
        )
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// === impl Labels ===

impl Labels {
    /// A label set from pairs in any order; a repeated name keeps its last
    /// value.
    pub fn new<I, N, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (N, V)>,
        N: Into<Arc<str>>,
        V: Into<Arc<str>>,
    {
        let mut pairs: Vec<(Arc<str>, Arc<str>)> = pairs
            .into_iter()
            .map(|(n, v)| (n.into(), v.into()))
            .collect();
        // Stable, so the last of equal names stays last and wins.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut deduped: Vec<(Arc<str>, Arc<str>)> = Vec::with_capacity(pairs.len());
        for pair in pairs {
            match deduped.last_mut() {
                Some(last) if last.0 == pair.0 => *last = pair,
                _ => deduped.push(pair),
            }
        }
        Labels(deduped.into())
    }

    /// The value of `name`, if the set has it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(n, _)| (**n).cmp(name))
            .ok()
            .map(|i| &*self.0[i].1)
    }

    /// The pairs, sorted by name.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.0.iter().map(|(n, v)| (&**n, &**v))
    }

    /// How many labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// No labels at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether two sets share one allocation (interned), not just content.
    pub fn ptr_eq(&self, other: &Labels) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Labels {
    /// `{name="value",...}`, escaped as the exposition writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (n, v)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{n}=\"")?;
            for c in v.chars() {
                match c {
                    '\\' => f.write_str("\\\\")?,
                    '"' => f.write_str("\\\"")?,
                    '\n' => f.write_str("\\n")?,
                    c => write!(f, "{c}")?,
                }
            }
            f.write_str("\"")?;
        }
        f.write_str("}")
    }
}

// === impl SeriesKey ===

impl SeriesKey {
    /// A key; `le` is required for bucket families and ignored otherwise
    /// (`None` if a bucket's `le` is missing or NaN).
    pub fn new(family: Family, labels: Labels, le: Option<f64>) -> Option<Self> {
        let le_bits = if family.is_bucket() {
            le_to_bits(le)?
        } else {
            NO_LE
        };
        Some(SeriesKey {
            family,
            le_bits,
            labels,
        })
    }

    /// The series' family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// Its labels (no target labels, `status_code` or `le`).
    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    /// A bucket's upper bound (`+Inf` is `f64::INFINITY`); `None` for
    /// other families.
    pub fn le(&self) -> Option<f64> {
        (self.le_bits != NO_LE).then(|| f64::from_bits(self.le_bits))
    }

    /// The same series with other (e.g. interned) labels.
    pub(crate) fn with_labels(&self, labels: Labels) -> Self {
        SeriesKey {
            family: self.family,
            le_bits: self.le_bits,
            labels,
        }
    }
}

impl fmt::Debug for SeriesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.family, self.labels)?;
        if let Some(le) = self.le() {
            write!(f, " le={le}")?;
        }
        Ok(())
    }
}

impl PartialOrd for SeriesKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SeriesKey {
    /// By family, labels, then numeric `le`.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.family
            .cmp(&other.family)
            .then_with(|| self.labels.cmp(&other.labels))
            .then_with(|| match (self.le(), other.le()) {
                (Some(a), Some(b)) => a.total_cmp(&b),
                (a, b) => a.is_some().cmp(&b.is_some()),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the proxy printed for one inbound and one outbound request
    /// (from a real `weft-proxy` with `WEFT_PROXY_WORKLOAD=shop/deployment/web/web-1`),
    /// shortened to four buckets.
    const PROXY: &str = r#"# HELP request Total count of HTTP requests.
# TYPE request counter
request_total{namespace="shop",pod="web-1",deployment="web",direction="inbound",authority="web.shop:80",tls="disabled"} 4
# HELP response Total count of HTTP responses.
# TYPE response counter
response_total{namespace="shop",pod="web-1",deployment="web",direction="inbound",authority="web.shop:80",tls="disabled",status_code="200",classification="success"} 3
response_total{namespace="shop",pod="web-1",deployment="web",direction="inbound",authority="web.shop:80",tls="disabled",status_code="404",classification="success"} 1
response_total{namespace="shop",pod="web-1",deployment="web",direction="inbound",authority="web.shop:80",tls="disabled",status_code="503",classification="failure"} 2
# HELP response_latency_ms Elapsed times.
# TYPE response_latency_ms histogram
response_latency_ms_sum{namespace="shop",pod="web-1",deployment="web",direction="inbound",authority="web.shop:80",tls="disabled",status_code="404"} 15.397487
response_latency_ms_count{namespace="shop",pod="web-1",deployment="web",direction="inbound",authority="web.shop:80",tls="disabled",status_code="404"} 1
response_latency_ms_bucket{namespace="shop",pod="web-1",deployment="web",le="1.0",direction="inbound",authority="web.shop:80",tls="disabled",status_code="404"} 0
response_latency_ms_bucket{namespace="shop",pod="web-1",deployment="web",le="20.0",direction="inbound",authority="web.shop:80",tls="disabled",status_code="404"} 1
response_latency_ms_bucket{namespace="shop",pod="web-1",deployment="web",le="+Inf",direction="inbound",authority="web.shop:80",tls="disabled",status_code="404"} 1
response_latency_ms_sum{namespace="shop",pod="web-1",deployment="web",direction="inbound",authority="web.shop:80",tls="disabled",status_code="200"} 16.807451999999999
response_latency_ms_count{namespace="shop",pod="web-1",deployment="web",direction="inbound",authority="web.shop:80",tls="disabled",status_code="200"} 3
response_latency_ms_bucket{namespace="shop",pod="web-1",deployment="web",le="1.0",direction="inbound",authority="web.shop:80",tls="disabled",status_code="200"} 0
response_latency_ms_bucket{namespace="shop",pod="web-1",deployment="web",le="20.0",direction="inbound",authority="web.shop:80",tls="disabled",status_code="200"} 3
response_latency_ms_bucket{namespace="shop",pod="web-1",deployment="web",le="+Inf",direction="inbound",authority="web.shop:80",tls="disabled",status_code="200"} 3
# HELP tcp_open_connections Number of currently-open connections.
# TYPE tcp_open_connections gauge
tcp_open_connections{namespace="shop",pod="web-1",deployment="web",direction="inbound",peer="src",tls="true",client_id="books.shop.serviceaccount.identity.weft.cluster.local"} 2
# HELP tcp_read_bytes Total count of bytes read from peers.
# TYPE tcp_read_bytes counter
tcp_read_bytes_total{namespace="shop",pod="web-1",deployment="web",direction="inbound",peer="src",tls="true",client_id="books.shop.serviceaccount.identity.weft.cluster.local"} 320
# HELP tcp_write_bytes Total count of bytes written to peers.
# TYPE tcp_write_bytes counter
tcp_write_bytes_total{namespace="shop",pod="web-1",deployment="web",direction="inbound",peer="src",tls="true",client_id="books.shop.serviceaccount.identity.weft.cluster.local"} 24240
# HELP route_response Total count of HTTP responses per route (as the caller saw them).
# TYPE route_response counter
route_response_total{namespace="shop",pod="web-1",deployment="web",direction="outbound",dst="books.shop.svc.cluster.local:8080",rt_route="GET /books/{id}, \"json\"",status_code="200",classification="success"} 7
# HELP identity_cert_expiration_timestamp_seconds Expiry.
# TYPE identity_cert_expiration_timestamp_seconds gauge
# HELP tcp_close Total count of closed connections.
# TYPE tcp_close counter
tcp_close_total{namespace="shop",pod="web-1",deployment="web",direction="inbound",peer="src",tls="disabled",errno=""} 4
identity_cert_expiration_timestamp_seconds{namespace="shop",pod="web-1",deployment="web"} 0
# EOF
"#;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::new(pairs.iter().map(|&(n, v)| (n, v)))
    }

    fn value(r: &Reduced, family: Family, le: Option<f64>, pairs: &[(&str, &str)]) -> Option<f64> {
        let key = SeriesKey::new(family, labels(pairs), le)?;
        r.series.iter().find(|s| s.key == key).map(|s| s.value)
    }

    const INBOUND: &[(&str, &str)] = &[
        ("authority", "web.shop:80"),
        ("direction", "inbound"),
        ("tls", "disabled"),
    ];

    #[test]
    fn reduces_the_proxys_exposition() {
        let r = reduce(PROXY).unwrap();
        assert_eq!(
            r.target_labels,
            labels(&[
                ("namespace", "shop"),
                ("pod", "web-1"),
                ("deployment", "web")
            ])
        );
        assert_eq!(r.target_labels.get("pod"), Some("web-1"));
        assert_eq!(r.target_labels.get("statefulset"), None);

        // 200 and 404 are both successes: summed; 503 stays as the failure.
        let success = [INBOUND, &[("classification", "success")]].concat();
        let failure = [INBOUND, &[("classification", "failure")]].concat();
        assert_eq!(value(&r, Family::ResponseTotal, None, &success), Some(4.0));
        assert_eq!(value(&r, Family::ResponseTotal, None, &failure), Some(2.0));

        // Buckets summed over status codes, le numeric, +Inf infinite.
        let b = |le| value(&r, Family::ResponseLatencyMsBucket, Some(le), INBOUND);
        assert_eq!(b(1.0), Some(0.0));
        assert_eq!(b(20.0), Some(4.0));
        assert_eq!(b(f64::INFINITY), Some(4.0));

        let tcp = [
            (
                "client_id",
                "books.shop.serviceaccount.identity.weft.cluster.local",
            ),
            ("direction", "inbound"),
            ("peer", "src"),
            ("tls", "true"),
        ];
        assert_eq!(value(&r, Family::TcpOpenConnections, None, &tcp), Some(2.0));
        assert_eq!(
            value(&r, Family::TcpReadBytesTotal, None, &tcp),
            Some(320.0)
        );
        assert_eq!(
            value(&r, Family::TcpWriteBytesTotal, None, &tcp),
            Some(24240.0)
        );

        // A route name with braces, a comma and escaped quotes survives.
        let route = [
            ("classification", "success"),
            ("direction", "outbound"),
            ("dst", "books.shop.svc.cluster.local:8080"),
            ("rt_route", "GET /books/{id}, \"json\""),
        ];
        assert_eq!(
            value(&r, Family::RouteResponseTotal, None, &route),
            Some(7.0)
        );

        // request_total, _sum, _count and identity_* are not kept.
        assert_eq!(r.series.len(), 2 + 3 + 3 + 1);
        assert_eq!(r.raw_series, 3 + 6 + 3 + 1);
        assert!(TARGET_LABELS.iter().all(|n| is_target_label(n)));
        for s in &r.series {
            assert!(s.key.labels().get("status_code").is_none());
            assert!(s.key.labels().get("namespace").is_none());
            assert!(s.key.labels().get("le").is_none());
            assert_eq!(s.key.le().is_some(), s.key.family().is_bucket());
            let names: Vec<_> = s.key.labels().iter().map(|(n, _)| n).collect();
            assert!(names.windows(2).all(|w| w[0] < w[1]), "{names:?} sorted");
        }
        // Buckets of one histogram share their label allocation.
        let buckets: Vec<_> = r
            .series
            .iter()
            .filter(|s| s.key.family().is_bucket())
            .collect();
        assert!(buckets[0].key.labels().ptr_eq(buckets[2].key.labels()));
    }

    #[test]
    fn authz_refusals_are_summed_per_proxy_without_labels() {
        let text = r#"# HELP inbound_http_authz_deny Denied HTTP requests.
# TYPE inbound_http_authz_deny counter
inbound_http_authz_deny_total{namespace="shop",pod="web-1",deployment="web",target_addr="127.0.0.1:8080",srv_group="",srv_kind="default",srv_name="deny",route_group="",route_kind="default",route_name="default",tls="true",client_id="a.shop.serviceaccount.identity.weft.cluster.local"} 3
inbound_http_authz_deny_total{namespace="shop",pod="web-1",deployment="web",target_addr="127.0.0.1:8080",srv_group="",srv_kind="default",srv_name="deny",route_group="",route_kind="default",route_name="default",tls="disabled",client_id=""} 2
# HELP inbound_http_authz_allow Allowed HTTP requests.
# TYPE inbound_http_authz_allow counter
inbound_http_authz_allow_total{namespace="shop",pod="web-1",deployment="web",target_addr="127.0.0.1:8080",srv_group="",srv_kind="default",srv_name="deny",route_group="",route_kind="default",route_name="probe",authz_group="",authz_kind="default",authz_name="probe",tls="disabled",client_id=""} 9
# HELP inbound_tcp_authz_deny Denied TCP connections.
# TYPE inbound_tcp_authz_deny counter
inbound_tcp_authz_deny_total{namespace="shop",pod="web-1",deployment="web",target_addr="127.0.0.1:5432",srv_group="",srv_kind="default",srv_name="deny",tls="disabled",client_id=""} 1
# EOF
"#;
        let r = reduce(text).unwrap();
        assert_eq!(r.target_labels.get("deployment"), Some("web"));
        assert_eq!(
            value(&r, Family::InboundHttpAuthzDenyTotal, None, &[]),
            Some(5.0)
        );
        assert_eq!(
            value(&r, Family::InboundTcpAuthzDenyTotal, None, &[]),
            Some(1.0)
        );
        assert_eq!(r.series.len(), 2, "allows are not kept: {:?}", r.series);
        assert!(Family::ALL
            .iter()
            .all(|f| f.keeps_labels() != f.is_authz_deny()));
    }

    #[test]
    fn a_proxy_without_workload_has_no_target_labels() {
        let text =
            "tcp_open_connections{direction=\"inbound\",peer=\"src\",tls=\"disabled\"} 1\n# EOF\n";
        let r = reduce(text).unwrap();
        assert!(r.target_labels.is_empty());
        assert_eq!(r.series.len(), 1);
        // An idle proxy still says who it is.
        let idle = "# TYPE x gauge\nidentity_cert_expiration_timestamp_seconds{namespace=\"a\",pod=\"p\"} 0\n# EOF";
        let r = reduce(idle).unwrap();
        assert_eq!(r.target_labels, labels(&[("namespace", "a"), ("pod", "p")]));
        assert!(r.series.is_empty());
    }

    #[test]
    fn timestamps_exemplars_and_special_values() {
        let text = "\
tcp_read_bytes_total{direction=\"inbound\"} 1e3 1700000000\n\
tcp_write_bytes_total{direction=\"inbound\"} 5 # {trace_id=\"x\"} 1.0\n\
tcp_open_connections{direction=\"inbound\"} +Inf\n\
response_total{classification=\"success\"} NaN\n\
response_latency_ms_bucket{le=\"+inf\"} 2\n\
response_latency_ms_bucket{le=\"-0.0\"} 1\n\
response_latency_ms_bucket{le=\"0\",x=\"\"} 1\n\
# EOF\n";
        let r = reduce(text).unwrap();
        let one = |f, le, pairs: &[(&str, &str)]| value(&r, f, le, pairs);
        let dir = [("direction", "inbound")];
        assert_eq!(one(Family::TcpReadBytesTotal, None, &dir), Some(1000.0));
        assert_eq!(one(Family::TcpWriteBytesTotal, None, &dir), Some(5.0));
        assert_eq!(
            one(Family::TcpOpenConnections, None, &dir),
            Some(f64::INFINITY)
        );
        // NaN is absent.
        assert_eq!(
            one(
                Family::ResponseTotal,
                None,
                &[("classification", "success")]
            ),
            None
        );
        assert_eq!(
            one(Family::ResponseLatencyMsBucket, Some(f64::INFINITY), &[]),
            Some(2.0)
        );
        // -0 and 0 are one bound; an empty label value is a label.
        assert_eq!(
            one(Family::ResponseLatencyMsBucket, Some(0.0), &[]),
            Some(1.0)
        );
        assert_eq!(
            one(Family::ResponseLatencyMsBucket, Some(0.0), &[("x", "")]),
            Some(1.0)
        );
    }

    #[test]
    fn malformed_lines_are_refused_with_their_line_number() {
        let cases: &[(&str, usize, ErrorKind)] = &[
            ("# EOF\nx 1\n", 2, ErrorKind::AfterEof),
            ("x 1\n", 2, ErrorKind::MissingEof),
            ("", 1, ErrorKind::MissingEof),
            (
                "x 1\ntcp_open_connections{a=\"1\"} 2",
                2,
                ErrorKind::MissingEof,
            ),
            ("1x 2\n# EOF\n", 1, ErrorKind::InvalidName),
            (
                "x{a=\"1\"}\n# EOF\n",
                1,
                ErrorKind::InvalidValue(String::new()),
            ),
            (
                "x 1\nx two\n# EOF\n",
                2,
                ErrorKind::InvalidValue("two".into()),
            ),
            ("x 1 2 3\n# EOF\n", 1, ErrorKind::TrailingText("3".into())),
            (
                "x 1 later\n# EOF\n",
                1,
                ErrorKind::TrailingText("later".into()),
            ),
            (
                "x{a=\"1\" 2\n# EOF\n",
                1,
                ErrorKind::InvalidLabels("expected , or } after a label value"),
            ),
            (
                "x{a=\"1} 2\n# EOF\n",
                1,
                ErrorKind::InvalidLabels("unterminated label value"),
            ),
            (
                "x{a=\"\\t\"} 2\n# EOF\n",
                1,
                ErrorKind::InvalidLabels("invalid escape in label value"),
            ),
            (
                "x{a=1} 2\n# EOF\n",
                1,
                ErrorKind::InvalidLabels("expected =\" after a label name"),
            ),
            (
                "x{0a=\"1\"} 2\n# EOF\n",
                1,
                ErrorKind::InvalidLabels("invalid label name"),
            ),
            (
                "x{a=\"1\",a=\"2\"} 2\n# EOF\n",
                1,
                ErrorKind::DuplicateLabel("a".into()),
            ),
            (
                "# c\nresponse_latency_ms_bucket{a=\"1\"} 2\n# EOF\n",
                2,
                ErrorKind::InvalidLe,
            ),
            (
                "response_latency_ms_bucket{le=\"x\"} 2\n# EOF\n",
                1,
                ErrorKind::InvalidLe,
            ),
            (
                "response_latency_ms_bucket{le=\"NaN\"} 2\n# EOF\n",
                1,
                ErrorKind::InvalidLe,
            ),
            (
                "response_total{a=\"1\"} 2\nresponse_total{a=\"1\"} 3\n# EOF\n",
                2,
                ErrorKind::DuplicateSeries,
            ),
            (
                "x{pod=\"a\"} 1\ny{pod=\"b\"} 1\n# EOF\n",
                2,
                ErrorKind::InconsistentTargetLabels,
            ),
            (
                "x{pod=\"a\"} 1\ny 1\n# EOF\n",
                2,
                ErrorKind::InconsistentTargetLabels,
            ),
        ];
        for (text, line, kind) in cases {
            let err = reduce(text).unwrap_err();
            assert_eq!((&err.line, &err.kind), (line, kind), "{text:?} gave {err}");
        }
        let err = reduce("x 1\n# EOF\n# EOF\nzz").unwrap_err();
        assert_eq!(err.to_string(), "exposition line 3: text after # EOF");
    }

    #[test]
    fn bodies_over_the_limit_are_refused() {
        let big = "#".repeat(MAX_EXPOSITION_BYTES + 1);
        assert_eq!(
            reduce(&big).unwrap_err().kind,
            ErrorKind::TooLarge(MAX_EXPOSITION_BYTES + 1)
        );
    }

    #[test]
    fn labels_are_sorted_shared_and_printable() {
        let l = Labels::new([("b", "2"), ("a", "1"), ("b", "3")]);
        assert_eq!(l.iter().collect::<Vec<_>>(), [("a", "1"), ("b", "3")]);
        assert_eq!(l.get("b"), Some("3"));
        assert_eq!(l.get("c"), None);
        assert!(l.clone().ptr_eq(&l));
        let odd = Labels::new([("r", "a\"b\\c\nd")]);
        assert_eq!(odd.to_string(), r#"{r="a\"b\\c\nd"}"#);
        // What Display writes, reduce reads back.
        let text = format!("tcp_open_connections{odd} 1\n# EOF\n");
        let r = reduce(&text).unwrap();
        assert_eq!(r.series[0].key.labels(), &odd);
    }

    #[test]
    fn series_keys_order_and_le() {
        let a = SeriesKey::new(
            Family::ResponseLatencyMsBucket,
            Labels::default(),
            Some(5.0),
        )
        .unwrap();
        let b = SeriesKey::new(
            Family::ResponseLatencyMsBucket,
            Labels::default(),
            Some(10.0),
        )
        .unwrap();
        let inf = SeriesKey::new(
            Family::ResponseLatencyMsBucket,
            Labels::default(),
            Some(f64::INFINITY),
        )
        .unwrap();
        assert!(a < b && b < inf);
        assert_eq!(inf.le(), Some(f64::INFINITY));
        assert!(SeriesKey::new(Family::ResponseLatencyMsBucket, Labels::default(), None).is_none());
        let c = SeriesKey::new(Family::ResponseTotal, Labels::default(), Some(1.0)).unwrap();
        assert_eq!(c.le(), None);
        for f in Family::ALL {
            assert_eq!(Family::from_name(f.name()), Some(f));
        }
        assert_eq!(Family::from_name("request_total"), None);
    }

    #[test]
    fn buckets_merge_across_statuses_in_any_order() {
        let text = "\
# TYPE response_latency_ms histogram\n\
response_latency_ms_sum{direction=\"inbound\",status_code=\"200\"} 3\n\
response_latency_ms_count{direction=\"inbound\",status_code=\"200\"} 2\n\
response_latency_ms_bucket{le=\"1.0\",direction=\"inbound\",status_code=\"200\"} 1\n\
response_latency_ms_bucket{le=\"10.0\",direction=\"inbound\",status_code=\"200\"} 2\n\
response_latency_ms_bucket{le=\"+Inf\",direction=\"inbound\",status_code=\"200\"} 2\n\
response_latency_ms_bucket{le=\"+Inf\",direction=\"inbound\",status_code=\"500\"} 5\n\
response_latency_ms_bucket{le=\"1.0\",direction=\"inbound\",status_code=\"500\"} 3\n\
response_latency_ms_bucket{le=\"5.0\",direction=\"inbound\",status_code=\"500\"} 4\n\
response_latency_ms_bucket{le=\"10.0\",direction=\"inbound\",status_code=\"500\"} NaN\n\
response_latency_ms_bucket{le=\"1\",direction=\"outbound\",status_code=\"500\"} 7\n\
# EOF\n";
        let r = reduce(text).unwrap();
        let inbound = [("direction", "inbound")];
        let b = |le, labels: &[(&str, &str)]| {
            value(&r, Family::ResponseLatencyMsBucket, Some(le), labels)
        };
        assert_eq!(b(1.0, &inbound), Some(4.0));
        assert_eq!(b(5.0, &inbound), Some(4.0));
        assert_eq!(b(10.0, &inbound), Some(2.0));
        assert_eq!(b(f64::INFINITY, &inbound), Some(7.0));
        assert_eq!(b(1.0, &[("direction", "outbound")]), Some(7.0));
        assert_eq!(r.series.len(), 5);
        // The first status's order, then new bounds as they came.
        let les: Vec<_> = r.series.iter().filter_map(|s| s.key.le()).collect();
        assert_eq!(les, [1.0, 10.0, f64::INFINITY, 5.0, 1.0]);
    }

    #[test]
    fn repeated_blocks_are_still_checked() {
        // Two identical bucket lines: the reused parse still sees the
        // duplicate.
        let dup = "response_latency_ms_bucket{le=\"1.0\",a=\"x\"} 1\nresponse_latency_ms_bucket{le=\"1.0\",a=\"x\"} 1\n# EOF\n";
        assert_eq!(
            reduce(dup).unwrap_err(),
            ExpositionError {
                line: 2,
                kind: ErrorKind::DuplicateSeries
            }
        );
        // An le with an escape or a bad number after a good line.
        let esc = "response_latency_ms_bucket{le=\"1.0\",a=\"x\"} 1\nresponse_latency_ms_bucket{le=\"2\\\\\",a=\"x\"} 1\n# EOF\n";
        assert_eq!(
            reduce(esc).unwrap_err(),
            ExpositionError {
                line: 2,
                kind: ErrorKind::InvalidLe
            }
        );
        let bad = "response_latency_ms_bucket{le=\"1.0\",a=\"x\"} 1\nresponse_latency_ms_bucket{le=\"two\",a=\"x\"} 1\n# EOF\n";
        assert_eq!(
            reduce(bad).unwrap_err(),
            ExpositionError {
                line: 2,
                kind: ErrorKind::InvalidLe
            }
        );
        // The same block followed by garbage, or by a bad value.
        let glued = "x{a=\"1\"} 1\nx{a=\"1\"}y 1\n# EOF\n";
        assert_eq!(
            reduce(glued).unwrap_err(),
            ExpositionError {
                line: 2,
                kind: ErrorKind::InvalidName
            }
        );
        let value = "x{a=\"1\"} 1\nx{a=\"1\"} y\n# EOF\n";
        assert_eq!(
            reduce(value).unwrap_err(),
            ExpositionError {
                line: 2,
                kind: ErrorKind::InvalidValue("y".into())
            }
        );
        // Same labels, other family: not merged.
        let two = "tcp_read_bytes_total{a=\"1\"} 1\ntcp_write_bytes_total{a=\"1\"} 2\n# EOF\n";
        let r = reduce(two).unwrap();
        assert_eq!(value_of(&r, Family::TcpReadBytesTotal), Some(1.0));
        assert_eq!(value_of(&r, Family::TcpWriteBytesTotal), Some(2.0));
        // A longer block that starts like the previous one.
        let longer =
            "tcp_read_bytes_total{a=\"1\"} 1\ntcp_read_bytes_total{a=\"1\",b=\"2\"} 2\n# EOF\n";
        assert_eq!(reduce(longer).unwrap().series.len(), 2);
    }

    fn value_of(r: &Reduced, family: Family) -> Option<f64> {
        r.series
            .iter()
            .find(|s| s.key.family() == family)
            .map(|s| s.value)
    }

    /// A tiny deterministic generator (xorshift), so the tests need no
    /// random crate.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    /// The reduction done naively: every line parsed in full, summed by
    /// sorted labels.
    fn reference(text: &str) -> std::collections::BTreeMap<SeriesKey, f64> {
        let mut out = std::collections::BTreeMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let name_end = line.find(['{', ' ']).unwrap();
            let Some(family) = Family::from_name(&line[..name_end]) else {
                continue;
            };
            let mut labels = Vec::new();
            let end = if line[name_end..].starts_with('{') {
                name_end + parse_labels(&line[name_end..], 1, &mut labels).unwrap()
            } else {
                name_end
            };
            let value = parse_value(&line[end..]).unwrap();
            if value.is_nan() {
                continue;
            }
            let mut le = None;
            let mut kept = Vec::new();
            for (n, v) in labels {
                let v = unescape(v).into_owned();
                if family.is_bucket() && n == "le" {
                    le = v.parse::<f64>().ok();
                } else if n != "status_code" && !TARGET_LABELS.contains(&n) {
                    kept.push((n.to_string(), v));
                }
            }
            let key = SeriesKey::new(family, Labels::new(kept), le).unwrap();
            *out.entry(key).or_insert(0.0) += value;
        }
        out
    }

    #[test]
    fn reduce_agrees_with_a_naive_reduction() {
        let names = [
            "direction",
            "authority",
            "tls",
            "client_id",
            "rt_route",
            "dst_pod",
        ];
        let values = [
            "inbound",
            "a b",
            "x\\\"y",
            "GET /{id}, \\\\",
            "p\\nq",
            "",
            "true",
        ];
        let families = [
            ("response_total", false),
            ("response_latency_ms", true),
            ("tcp_read_bytes_total", false),
            ("route_response_latency_ms", true),
            ("request_total", false),
            ("identity_x", false),
        ];
        let bounds = ["1.0", "1", "2.5", "10", "+Inf"];
        for seed in 1..40u64 {
            let mut g = Gen(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut text = String::new();
            let mut written = HashSet::new();
            for _ in 0..60 {
                let (family, histogram) = families[g.next(families.len())];
                let mut labels: Vec<(&str, &str)> = (0..g.next(4))
                    .map(|_| (names[g.next(names.len())], values[g.next(values.len())]))
                    .collect();
                labels.sort_by_key(|l| l.0);
                labels.dedup_by_key(|l| l.0);
                let status = ["200", "404", "503"][g.next(3)];
                // Sometimes in another order: the same series either way.
                if g.next(4) == 0 {
                    labels.reverse();
                }
                let block = |le: Option<&str>| {
                    let mut parts = vec!["namespace=\"ns\"".to_string(), "pod=\"p-1\"".to_string()];
                    if let Some(le) = le {
                        parts.push(format!("le=\"{le}\""));
                    }
                    parts.extend(labels.iter().map(|(n, v)| format!("{n}=\"{v}\"")));
                    parts.push(format!("status_code=\"{status}\""));
                    format!("{{{}}}", parts.join(","))
                };
                let mut lines = Vec::new();
                if histogram {
                    lines.push(format!("{family}_sum{} 1.5", block(None)));
                    lines.push(format!("{family}_count{} 3", block(None)));
                    for le in bounds {
                        let v = if g.next(10) == 0 {
                            "NaN".to_string()
                        } else {
                            g.next(100).to_string()
                        };
                        lines.push(format!("{family}_bucket{} {v}", block(Some(le))));
                    }
                } else {
                    lines.push(format!("{family}{} {}", block(None), g.next(1000)));
                }
                for l in lines {
                    let series = l[..l.rfind(' ').unwrap()].to_string();
                    // Same labels in another order are the same series.
                    let mut canon: Vec<_> = series.split(',').map(String::from).collect();
                    canon.sort();
                    if written.insert(canon) {
                        text.push_str(&l);
                        text.push('\n');
                    }
                }
            }
            text.push_str("# EOF\n");
            let got = reduce(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            let mut sums = std::collections::BTreeMap::new();
            for s in &got.series {
                *sums.entry(s.key.clone()).or_insert(0.0) += s.value;
            }
            assert_eq!(sums.len(), got.series.len(), "each key once");
            let want = reference(&text);
            assert_eq!(sums, want, "seed {seed}:\n{text}");
            assert_eq!(
                got.target_labels,
                labels(&[("namespace", "ns"), ("pod", "p-1")])
            );
        }
    }
}
