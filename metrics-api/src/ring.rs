//! A bounded ring of recent scrapes per proxy: what the controller keeps so
//! it can answer "over the last minute" without a Prometheus.
//!
//! # Layout
//!
//! Each target (proxy) holds its series keys in an insertion-ordered set,
//! so a key's position is its column, and one row per scrape: a timestamp
//! and a slice of values indexed by column. A row is as long as the number
//! of columns when it was recorded (columns only ever append between
//! compactions); a value that is NaN, or past the end of its row, means the
//! series was absent from that scrape.
//!
//! Label sets are interned across all targets: replicas of one deployment
//! have identical series labels once their target labels are split off,
//! so a thousand proxies share a few hundred label sets, and every label
//! name and value (`direction`, `inbound`) is one `Arc<str>` for the whole
//! process. Interned values nobody holds any more are dropped on
//! [`Rings::expire`].
//!
//! # Cost (64-bit)
//!
//! - per sample: 8 bytes (one `f64` in its row);
//! - per scrape row: 24 bytes (timestamp and slice pointer) plus one heap
//!   block;
//! - per series per target: about 60 bytes (its key, 32 bytes, in the
//!   set's entry vector with its hash, the set's index table, and the
//!   column's last-seen time);
//! - per distinct label set: 16 + 32 × labels bytes, shared by every series
//!   and target with that set; per distinct string: 16 + its length.
//!
//! Measured (`weft-bench-metrics`, a counting allocator): 1,000 proxies of
//! 307 series each (3 clients, 2 services × 2 endpoints, 3 status codes,
//! 3 routes), 30 scrapes held (5 minutes at 10 s), take 90.5 MiB: about
//! 93 KiB per proxy, 10.3 bytes per stored sample.
//!
//! # Bounds
//!
//! Rows older than [`Limits::retention`] are dropped whenever a target is
//! recorded and on [`Rings::expire`], which also drops targets left with no
//! rows (a proxy that stopped answering ages out). Columns absent from every
//! remaining row are compacted away then, so churned series (a rollout's old
//! `dst_pod`s) do not accumulate. New series beyond
//! [`Limits::max_series_per_target`] and new targets beyond
//! [`Limits::max_targets`] are refused and reported. However fast a target
//! is recorded, it keeps at most [`MAX_SCRAPES_PER_TARGET`] rows. So the
//! store never holds more than `max_targets × max_series_per_target ×
//! min(retention / interval + 1, MAX_SCRAPES_PER_TARGET)` samples.
//!
//! A scrape exactly `retention` old is dropped: ranges are left-open (as
//! Prometheus'), so no window of at most `retention` ending at or after the
//! latest scrape includes it; 5 minutes at 10 s hold 30 scrapes.

use crate::exposition::{Family, Labels, Reduced, SeriesKey};
use indexmap::IndexSet;
use std::collections::btree_map::Entry;
use std::collections::{vec_deque, BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

type FastHash = foldhash::fast::RandomState;

/// The most scrapes one target keeps, whatever the retention and however
/// often it is recorded (an hour at one scrape a second).
pub const MAX_SCRAPES_PER_TARGET: usize = 3600;

/// How much the rings may hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// How long a scrape is kept: the longest window a query can ask for.
    pub retention: Duration,
    /// Distinct series one target may hold; new ones beyond are refused.
    pub max_series_per_target: usize,
    /// Distinct targets; scrapes of new targets beyond are refused.
    pub max_targets: usize,
}

/// What [`Rings::record`] did with a scrape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordOutcome {
    /// The scrape is stored.
    Recorded {
        /// Series stored in this row.
        series: usize,
        /// New series refused by [`Limits::max_series_per_target`].
        refused_series: usize,
    },
    /// A new target, refused by [`Limits::max_targets`].
    TooManyTargets,
    /// The timestamp is not finite or not after the target's last scrape;
    /// nothing was stored (Prometheus rejects out-of-order samples too).
    OutOfOrder,
}

/// The recent scrapes of every target, keyed by `K` (the controller's pod
/// key).
#[derive(Debug)]
pub struct Rings<K> {
    limits: Limits,
    targets: BTreeMap<K, TargetRing>,
    interner: Interner,
}

/// The recent scrapes of one target.
#[derive(Debug)]
pub struct TargetRing {
    target_labels: Labels,
    /// Series keys; a key's index is its column.
    keys: IndexSet<SeriesKey, FastHash>,
    /// Per column, the time of the last row that had a value.
    last_seen: Vec<f64>,
    /// Rows in time order.
    rows: VecDeque<Row>,
}

/// One scrape: its time and a value per column (NaN: absent).
#[derive(Debug)]
struct Row {
    t: f64,
    values: Box<[f64]>,
}

/// The samples of one series within a time range, oldest first, skipping
/// scrapes the series was absent from. Reversible: `next_back` gives the
/// latest sample (a gauge's current value).
#[derive(Clone, Debug)]
pub struct Samples<'a> {
    rows: vec_deque::Iter<'a, Row>,
    column: usize,
}

/// Label sets and strings shared by every target.
#[derive(Debug, Default)]
struct Interner {
    labels: HashSet<Labels, FastHash>,
    strings: HashSet<Arc<str>, FastHash>,
    /// Something was released since the last purge.
    dirty: bool,
}

// === impl Limits ===

impl Default for Limits {
    /// Five minutes (Linkerd's longest dashboard window at 10 s scrapes is
    /// 31 samples), 10,000 series per proxy (a busy proxy has a few
    /// hundred after reduction), 10,000 proxies.
    fn default() -> Self {
        Limits {
            retention: Duration::from_secs(300),
            max_series_per_target: 10_000,
            max_targets: 10_000,
        }
    }
}

// === impl RecordOutcome ===

impl RecordOutcome {
    /// Series refused by the per-target cap (0 unless recorded).
    pub fn refused_series(&self) -> usize {
        match self {
            RecordOutcome::Recorded { refused_series, .. } => *refused_series,
            _ => 0,
        }
    }
}

// === impl Rings ===

impl<K: Ord + Clone> Rings<K> {
    /// Empty rings with these limits.
    pub fn new(limits: Limits) -> Self {
        Rings {
            limits,
            targets: BTreeMap::new(),
            interner: Interner::default(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Stores one scrape of `target` taken at `at_unix_secs`, dropping that
    /// target's rows older than the retention.
    pub fn record(&mut self, target: K, at_unix_secs: f64, reduced: Reduced) -> RecordOutcome {
        let at = at_unix_secs;
        if !at.is_finite() {
            return RecordOutcome::OutOfOrder;
        }
        let targets = self.targets.len();
        let ring = match self.targets.entry(target) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(_) if targets >= self.limits.max_targets => {
                return RecordOutcome::TooManyTargets;
            }
            Entry::Vacant(e) => e.insert(TargetRing {
                target_labels: self.interner.labels(&reduced.target_labels),
                keys: IndexSet::default(),
                last_seen: Vec::new(),
                rows: VecDeque::new(),
            }),
        };
        if ring.last_scrape().is_some_and(|last| at <= last) {
            return RecordOutcome::OutOfOrder;
        }
        if ring.target_labels != reduced.target_labels {
            ring.target_labels = self.interner.labels(&reduced.target_labels);
            self.interner.dirty = true;
        }

        let columns_before = ring.keys.len();
        let mut values = vec![f64::NAN; columns_before];
        let mut refused_series = 0;
        let mut series = 0;
        for sample in reduced.series {
            if sample.value.is_nan() {
                continue;
            }
            let column = match ring.keys.get_index_of(&sample.key) {
                Some(c) => c,
                None if ring.keys.len() >= self.limits.max_series_per_target => {
                    refused_series += 1;
                    continue;
                }
                None => {
                    let key = sample
                        .key
                        .with_labels(self.interner.labels(sample.key.labels()));
                    ring.keys.insert(key);
                    ring.last_seen.push(at);
                    values.push(f64::NAN);
                    values.len() - 1
                }
            };
            if values[column].is_nan() {
                series += 1;
                values[column] = sample.value;
            } else {
                // A hand-built Reduced may repeat a key: sum, as reduce does.
                values[column] += sample.value;
            }
            ring.last_seen[column] = at;
        }
        if ring.keys.len() > columns_before {
            // New series arrive mostly in a target's first scrape: give
            // back the growth slack once they are in.
            ring.keys.shrink_to_fit();
            ring.last_seen.shrink_to_fit();
        }
        ring.rows.push_back(Row {
            t: at,
            values: values.into_boxed_slice(),
        });
        if ring.trim(at - self.limits.retention.as_secs_f64()) {
            self.interner.dirty = true;
        }
        RecordOutcome::Recorded {
            series,
            refused_series,
        }
    }

    /// Drops every row older than the retention at `now_unix`, the targets
    /// left with none, series absent from every remaining row, and interned
    /// labels no longer used.
    pub fn expire(&mut self, now_unix: f64) {
        let oldest = now_unix - self.limits.retention.as_secs_f64();
        let mut released = false;
        self.targets.retain(|_, ring| {
            released |= ring.trim(oldest);
            let keep = !ring.rows.is_empty();
            released |= !keep;
            keep
        });
        if released || self.interner.dirty {
            self.interner.purge();
        }
    }

    /// Forgets a target at once (a pod that was deleted).
    pub fn remove(&mut self, target: &K) -> bool {
        let removed = self.targets.remove(target).is_some();
        self.interner.dirty |= removed;
        removed
    }

    /// One target's ring.
    pub fn get(&self, target: &K) -> Option<&TargetRing> {
        self.targets.get(target)
    }

    /// Every target, in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&K, &TargetRing)> + '_ {
        self.targets.iter()
    }

    /// How many targets are held.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// No targets at all.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// An estimate of the heap bytes held (rows, keys, and the shared
    /// label sets and strings once), from capacities; the allocator's own
    /// overhead per block is not included.
    pub fn approx_bytes(&self) -> usize {
        let targets: usize = self
            .targets
            .values()
            .map(|r| r.approx_bytes() + std::mem::size_of::<K>() + 3 * 8)
            .sum();
        targets + self.interner.approx_bytes()
    }
}

// === impl TargetRing ===

impl TargetRing {
    /// The proxy's constant labels (namespace, pod, owner), from its latest
    /// scrape.
    pub fn target_labels(&self) -> &Labels {
        &self.target_labels
    }

    /// When the latest scrape was taken (Unix seconds).
    pub fn last_scrape(&self) -> Option<f64> {
        self.rows.back().map(|r| r.t)
    }

    /// When the oldest scrape still held was taken.
    pub fn first_scrape(&self) -> Option<f64> {
        self.rows.front().map(|r| r.t)
    }

    /// How many scrapes are held.
    pub fn scrapes(&self) -> usize {
        self.rows.len()
    }

    /// How many distinct series are held.
    pub fn series_count(&self) -> usize {
        self.keys.len()
    }

    /// Every series with its samples in `(start, end]` (left-open, as a
    /// Prometheus range selector `[end - start]` at `end`), in column
    /// order; series with no sample in the range yield an empty iterator.
    pub fn series(
        &self,
        start: f64,
        end: f64,
    ) -> impl Iterator<Item = (&SeriesKey, Samples<'_>)> + '_ {
        let (from, to) = self.row_range(start, end);
        self.keys.iter().enumerate().map(move |(column, key)| {
            (
                key,
                Samples {
                    rows: self.rows.range(from..to),
                    column,
                },
            )
        })
    }

    /// [`TargetRing::series`] of one family only.
    pub fn series_of(
        &self,
        family: Family,
        start: f64,
        end: f64,
    ) -> impl Iterator<Item = (&SeriesKey, Samples<'_>)> + '_ {
        self.series(start, end)
            .filter(move |(key, _)| key.family() == family)
    }

    /// The latest scrape taken in `(start, t)`, if any. For a series whose
    /// first sample in a range is at `t`, this is a scrape of the target
    /// without that series: for counters the proxy creates on first use
    /// (the authorization refusals), a scrape where it still counted 0.
    pub fn scrape_before(&self, t: f64, start: f64) -> Option<f64> {
        let i = self.rows.partition_point(|r| r.t < t);
        let row = self.rows.get(i.checked_sub(1)?)?;
        (row.t > start).then_some(row.t)
    }

    /// The samples of one series in `(start, end]`, if the target has it.
    pub fn get(&self, key: &SeriesKey, start: f64, end: f64) -> Option<Samples<'_>> {
        let column = self.keys.get_index_of(key)?;
        let (from, to) = self.row_range(start, end);
        Some(Samples {
            rows: self.rows.range(from..to),
            column,
        })
    }

    /// An estimate of this target's own heap bytes (not the shared label
    /// sets), from capacities.
    pub fn approx_bytes(&self) -> usize {
        use std::mem::size_of;
        let row_values: usize = self.rows.iter().map(|r| r.values.len() * 8).sum();
        // IndexSet: an entry (hash + key) per capacity slot, and a hash
        // table of indices (8 bytes + 1 control byte per bucket, buckets
        // the next power of two of 8/7 of the capacity).
        let entries = self.keys.capacity() * (size_of::<SeriesKey>() + 8);
        let buckets = (self.keys.capacity() * 8 / 7 + 1).next_power_of_two();
        let table = if self.keys.capacity() == 0 {
            0
        } else {
            buckets * 9 + 16
        };
        size_of::<TargetRing>()
            + entries
            + table
            + self.last_seen.capacity() * 8
            + self.rows.capacity() * size_of::<Row>()
            + row_values
    }

    /// The rows with `start < t <= end`.
    fn row_range(&self, start: f64, end: f64) -> (usize, usize) {
        let from = self.rows.partition_point(|r| r.t <= start);
        let to = self.rows.partition_point(|r| r.t <= end).max(from);
        (from, to)
    }

    /// Drops rows at or before `oldest` (and beyond
    /// [`MAX_SCRAPES_PER_TARGET`]), then compacts away columns with no
    /// value left; says whether anything that may hold interned labels was
    /// released.
    fn trim(&mut self, oldest: f64) -> bool {
        let before = self.rows.len();
        while self.rows.front().is_some_and(|r| r.t <= oldest)
            || self.rows.len() > MAX_SCRAPES_PER_TARGET
        {
            self.rows.pop_front();
        }
        if self.rows.len() == before {
            return false;
        }
        let Some(first) = self.first_scrape() else {
            return true;
        };
        if self.last_seen.iter().all(|&t| t >= first) {
            return false;
        }
        let keep: Vec<bool> = self.last_seen.iter().map(|&t| t >= first).collect();
        for row in &mut self.rows {
            row.values = row
                .values
                .iter()
                .zip(&keep)
                .filter_map(|(v, &k)| k.then_some(*v))
                .collect();
        }
        let mut column = 0;
        self.keys.retain(|_| {
            column += 1;
            keep[column - 1]
        });
        let mut column = 0;
        self.last_seen.retain(|_| {
            column += 1;
            keep[column - 1]
        });
        self.keys.shrink_to_fit();
        self.last_seen.shrink_to_fit();
        true
    }
}

// === impl Samples ===

impl Iterator for Samples<'_> {
    type Item = (f64, f64);

    fn next(&mut self) -> Option<(f64, f64)> {
        for row in self.rows.by_ref() {
            match row.values.get(self.column) {
                Some(&v) if !v.is_nan() => return Some((row.t, v)),
                _ => {}
            }
        }
        None
    }
}

impl DoubleEndedIterator for Samples<'_> {
    fn next_back(&mut self) -> Option<(f64, f64)> {
        while let Some(row) = self.rows.next_back() {
            match row.values.get(self.column) {
                Some(&v) if !v.is_nan() => return Some((row.t, v)),
                _ => {}
            }
        }
        None
    }
}

// === impl Interner ===

impl Interner {
    /// The shared copy of `labels`, made of shared strings.
    fn labels(&mut self, labels: &Labels) -> Labels {
        if let Some(shared) = self.labels.get(labels) {
            return shared.clone();
        }
        let pairs: Vec<(Arc<str>, Arc<str>)> = labels
            .iter()
            .map(|(n, v)| (self.string(n), self.string(v)))
            .collect();
        let shared = Labels(pairs.into());
        self.labels.insert(shared.clone());
        shared
    }

    fn string(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.strings.get(s) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(s);
        self.strings.insert(shared.clone());
        shared
    }

    /// Drops label sets and strings only the interner still holds.
    fn purge(&mut self) {
        self.labels.retain(|l| Arc::strong_count(&l.0) > 1);
        self.strings.retain(|s| Arc::strong_count(s) > 1);
        self.dirty = false;
    }

    fn approx_bytes(&self) -> usize {
        // Arc headers are two words; a set slot is a fat pointer and a
        // control byte.
        let labels: usize = self.labels.iter().map(|l| 16 + l.len() * 32).sum();
        let strings: usize = self.strings.iter().map(|s| 16 + s.len()).sum();
        labels + strings + (self.labels.capacity() + self.strings.capacity()) * 17
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::{reduce, Sample};
    use crate::promql;

    fn key(family: Family, pairs: &[(&str, &str)], le: Option<f64>) -> SeriesKey {
        SeriesKey::new(family, Labels::new(pairs.iter().copied()), le).unwrap()
    }

    fn scrape(pod: &str, series: &[(SeriesKey, f64)]) -> Reduced {
        Reduced {
            target_labels: Labels::new([("namespace", "shop"), ("pod", pod)]),
            series: series
                .iter()
                .map(|(k, v)| Sample {
                    key: k.clone(),
                    value: *v,
                })
                .collect(),
            raw_series: series.len(),
        }
    }

    fn success() -> SeriesKey {
        key(
            Family::ResponseTotal,
            &[("classification", "success"), ("direction", "inbound")],
            None,
        )
    }

    fn failure() -> SeriesKey {
        key(
            Family::ResponseTotal,
            &[("classification", "failure"), ("direction", "inbound")],
            None,
        )
    }

    fn limits(retention_secs: u64, series: usize, targets: usize) -> Limits {
        Limits {
            retention: Duration::from_secs(retention_secs),
            max_series_per_target: series,
            max_targets: targets,
        }
    }

    #[test]
    fn records_and_reads_back_in_time_order() {
        let mut rings = Rings::new(Limits::default());
        for i in 0..7 {
            let t = 1000.0 + 10.0 * i as f64;
            let mut series = vec![(success(), 10.0 * i as f64)];
            // The failure series appears from the third scrape on.
            if i >= 2 {
                series.push((failure(), i as f64));
            }
            let out = rings.record("web-1", t, scrape("web-1", &series));
            assert_eq!(
                out,
                RecordOutcome::Recorded {
                    series: series.len(),
                    refused_series: 0
                }
            );
        }
        let ring = rings.get(&"web-1").unwrap();
        assert_eq!(ring.scrapes(), 7);
        assert_eq!(ring.series_count(), 2);
        assert_eq!(ring.last_scrape(), Some(1060.0));
        assert_eq!(ring.first_scrape(), Some(1000.0));
        assert_eq!(ring.target_labels().get("pod"), Some("web-1"));

        // (1010, 1040]: left-open.
        let s: Vec<_> = ring.get(&success(), 1010.0, 1040.0).unwrap().collect();
        assert_eq!(s, [(1020.0, 20.0), (1030.0, 30.0), (1040.0, 40.0)]);
        // Absent scrapes are skipped.
        let f: Vec<_> = ring.get(&failure(), 990.0, 1030.0).unwrap().collect();
        assert_eq!(f, [(1020.0, 2.0), (1030.0, 3.0)]);
        // The latest sample, for gauges.
        assert_eq!(
            ring.get(&failure(), 0.0, 2000.0).unwrap().next_back(),
            Some((1060.0, 6.0))
        );
        assert_eq!(ring.get(&failure(), 1030.0, 1030.0).unwrap().count(), 0);
        assert!(ring
            .get(&key(Family::TcpOpenConnections, &[], None), 0.0, 1e9)
            .is_none());

        let all: Vec<_> = ring
            .series(1000.0, 1060.0)
            .map(|(k, s)| (k.clone(), s.count()))
            .collect();
        assert_eq!(all, [(success(), 6), (failure(), 5)]);
        assert_eq!(ring.series_of(Family::ResponseTotal, 0.0, 1e9).count(), 2);
        assert_eq!(
            ring.series_of(Family::TcpReadBytesTotal, 0.0, 1e9).count(),
            0
        );

        // What the query engine does: increase over the last minute.
        let samples: Vec<_> = ring.get(&success(), 1000.0, 1060.0).unwrap().collect();
        assert_eq!(promql::increase(&samples, 1000.0, 1060.0), Some(60.0));

        // The failure series first appeared at 1020: the scrape before it.
        assert_eq!(ring.scrape_before(1020.0, 990.0), Some(1010.0));
        assert_eq!(ring.scrape_before(1020.0, 1010.0), None, "left-open");
        assert_eq!(ring.scrape_before(1000.0, 0.0), None, "the first scrape");
    }

    #[test]
    fn out_of_order_scrapes_are_refused() {
        let mut rings = Rings::new(Limits::default());
        let s = [(success(), 1.0)];
        assert!(matches!(
            rings.record(1, 100.0, scrape("a", &s)),
            RecordOutcome::Recorded { .. }
        ));
        assert_eq!(
            rings.record(1, 100.0, scrape("a", &s)),
            RecordOutcome::OutOfOrder
        );
        assert_eq!(
            rings.record(1, 90.0, scrape("a", &s)),
            RecordOutcome::OutOfOrder
        );
        assert_eq!(
            rings.record(1, f64::NAN, scrape("a", &s)),
            RecordOutcome::OutOfOrder
        );
        assert_eq!(
            rings.record(2, f64::INFINITY, scrape("b", &s)),
            RecordOutcome::OutOfOrder
        );
        assert_eq!(rings.len(), 1);
        assert_eq!(rings.get(&1).unwrap().scrapes(), 1);
    }

    #[test]
    fn retention_drops_old_rows_and_silent_targets() {
        let mut rings = Rings::new(limits(60, 100, 100));
        for i in 0..20 {
            let t = 10.0 * i as f64;
            rings.record("busy", t, scrape("busy", &[(success(), t)]));
            if i < 5 {
                rings.record("gone", t, scrape("gone", &[(success(), t)]));
            }
        }
        // Recording trims its own target: 60 s at 10 s is (130, 190].
        let busy = rings.get(&"busy").unwrap();
        assert_eq!(busy.scrapes(), 6);
        assert_eq!(busy.first_scrape(), Some(140.0));
        // The target that stopped keeps its rows until expire.
        assert_eq!(rings.get(&"gone").unwrap().scrapes(), 5);
        rings.expire(190.0);
        assert_eq!(rings.len(), 1);
        assert!(rings.get(&"gone").is_none());
        assert_eq!(rings.get(&"busy").unwrap().scrapes(), 6);
        rings.expire(10_000.0);
        assert!(rings.is_empty());
        assert_eq!(rings.interner.labels.len(), 0);
        assert_eq!(rings.interner.strings.len(), 0);
    }

    #[test]
    fn rows_are_capped_however_fast_a_target_is_recorded() {
        let mut rings = Rings::new(limits(3600 * 24, 10, 10));
        for i in 0..(MAX_SCRAPES_PER_TARGET + 10) {
            rings.record(0, i as f64, scrape("a", &[(success(), i as f64)]));
        }
        let ring = rings.get(&0).unwrap();
        assert_eq!(ring.scrapes(), MAX_SCRAPES_PER_TARGET);
        assert_eq!(ring.first_scrape(), Some(10.0));
    }

    #[test]
    fn series_caps_and_target_caps_refuse_and_count() {
        let mut rings = Rings::new(limits(300, 2, 2));
        let tcp = key(
            Family::TcpOpenConnections,
            &[("direction", "inbound")],
            None,
        );
        let three = [(success(), 1.0), (failure(), 1.0), (tcp.clone(), 3.0)];
        assert_eq!(
            rings.record("a", 10.0, scrape("a", &three)),
            RecordOutcome::Recorded {
                series: 2,
                refused_series: 1
            }
        );
        // Known series keep being recorded; the refused one stays refused.
        let out = rings.record("a", 20.0, scrape("a", &three));
        assert_eq!(out.refused_series(), 1);
        assert!(rings.get(&"a").unwrap().get(&tcp, 0.0, 100.0).is_none());

        assert!(matches!(
            rings.record("b", 10.0, scrape("b", &three)),
            RecordOutcome::Recorded { .. }
        ));
        assert_eq!(
            rings.record("c", 10.0, scrape("c", &three)),
            RecordOutcome::TooManyTargets
        );
        assert_eq!(RecordOutcome::TooManyTargets.refused_series(), 0);
        assert!(rings.remove(&"b"));
        assert!(!rings.remove(&"b"));
        assert!(matches!(
            rings.record("c", 10.0, scrape("c", &three)),
            RecordOutcome::Recorded { .. }
        ));
    }

    #[test]
    fn churned_series_are_compacted_away() {
        let mut rings = Rings::new(limits(30, 5, 10));
        let pod = |n: usize| {
            key(
                Family::ResponseTotal,
                &[
                    ("classification", "success"),
                    ("dst_pod", &format!("books-{n}")),
                ],
                None,
            )
        };
        // Each 10 s the destination pod changes (a rollout); only the last
        // three scrapes (30 s) are kept, so at most four columns live (three
        // pods and the steady series), five while a new pod is added.
        for i in 0..50 {
            let t = 10.0 * i as f64;
            let out = rings.record("web", t, scrape("web", &[(pod(i), 1.0), (success(), t)]));
            assert_eq!(out.refused_series(), 0, "scrape {i}");
            let ring = rings.get(&"web").unwrap();
            assert!(ring.series_count() <= 4, "{}", ring.series_count());
        }
        let ring = rings.get(&"web").unwrap();
        assert_eq!(ring.scrapes(), 3);
        // The steady series survived compaction with all its samples.
        let s: Vec<_> = ring.get(&success(), 0.0, 1e9).unwrap().collect();
        assert_eq!(s, [(470.0, 470.0), (480.0, 480.0), (490.0, 490.0)]);
        let live: Vec<_> = ring
            .series(0.0, 1e9)
            .map(|(k, s)| (k.labels().get("dst_pod").map(String::from), s.count()))
            .collect();
        assert_eq!(
            live,
            [
                (None, 3),
                (Some("books-47".into()), 1),
                (Some("books-48".into()), 1),
                (Some("books-49".into()), 1)
            ]
        );
        // The interner forgets the old pods' names on expire.
        rings.expire(490.0);
        assert!(rings
            .interner
            .strings
            .iter()
            .all(|s| !s.starts_with("books-1")));
        assert!(rings.interner.strings.iter().any(|s| &**s == "books-49"));
    }

    #[test]
    fn labels_are_shared_across_targets() {
        let mut rings = Rings::new(Limits::default());
        let text = |pod: &str| {
            format!(
                "response_total{{namespace=\"shop\",pod=\"{pod}\",deployment=\"web\",direction=\"inbound\",authority=\"web.shop:80\",tls=\"true\",client_id=\"x\",status_code=\"200\",classification=\"success\"}} 1\n# EOF\n"
            )
        };
        for i in 0..10 {
            let pod = format!("web-{i}");
            rings.record(pod.clone(), 10.0, reduce(&text(&pod)).unwrap());
        }
        let keys: Vec<&SeriesKey> = rings
            .iter()
            .map(|(_, r)| r.series(0.0, 20.0).next().unwrap().0)
            .collect();
        assert!(keys.iter().all(|k| k.labels().ptr_eq(keys[0].labels())));
        // One label set for the series, ten for the targets.
        assert_eq!(rings.interner.labels.len(), 11);
        let a = rings.get(&"web-0".to_string()).unwrap().target_labels();
        let b = rings.get(&"web-1".to_string()).unwrap().target_labels();
        assert_eq!(&*a.0[1].1, "shop");
        assert!(Arc::ptr_eq(&a.0[1].1, &b.0[1].1), "\"shop\" is one string");
        assert!(rings.approx_bytes() > 0);
    }

    #[test]
    fn new_columns_leave_older_rows_absent() {
        let mut rings = Rings::new(Limits::default());
        rings.record(0, 10.0, scrape("a", &[(success(), 1.0)]));
        rings.record(0, 20.0, scrape("a", &[(success(), 2.0), (failure(), 5.0)]));
        rings.record(0, 30.0, scrape("a", &[(failure(), 6.0)]));
        let ring = rings.get(&0).unwrap();
        let f: Vec<_> = ring.get(&failure(), 0.0, 100.0).unwrap().collect();
        assert_eq!(f, [(20.0, 5.0), (30.0, 6.0)]);
        let s: Vec<_> = ring.get(&success(), 0.0, 100.0).unwrap().rev().collect();
        assert_eq!(s, [(20.0, 2.0), (10.0, 1.0)]);
        // NaN values are not stored.
        rings.record(0, 40.0, scrape("a", &[(success(), f64::NAN)]));
        let ring = rings.get(&0).unwrap();
        assert_eq!(ring.get(&success(), 30.0, 100.0).unwrap().count(), 0);
    }
}
