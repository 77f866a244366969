//! `increase`, `rate`, `irate` and `histogram_quantile` as Prometheus
//! computes them for float samples and classic histograms, so the
//! controller's numbers agree with a Prometheus running Linkerd's `viz`
//! queries against the same proxies.
//!
//! The rules follow Prometheus' `promql/functions.go` (`extrapolatedRate`,
//! `instantValue`) and `promql/quantile.go` (`BucketQuantile`); the tests
//! include examples from its `promqltest` data. Where Prometheus answers
//! `NaN` or no sample at all, these return `None`.
//!
//! Samples are `(unix seconds, value)` pairs in time order. Prometheus
//! selects a range `[W]` evaluated at `t` as the samples in `(t - W, t]`
//! (left-open); [`crate::ring::TargetRing::series`] selects the same way.

/// Relative differences between adjacent buckets below this are taken as
/// float noise and flattened (Prometheus' `smallDeltaTolerance`).
const SMALL_DELTA_TOLERANCE: f64 = 1e-12;

/// `increase(counter[W])` over the samples of one series inside
/// `(range_start, range_end]`: the counter's growth, corrected for resets
/// and extrapolated towards the range's edges.
///
/// `None` with fewer than two samples (Prometheus returns nothing).
pub fn increase(samples: &[(f64, f64)], range_start: f64, range_end: f64) -> Option<f64> {
    extrapolated_rate(samples, range_start, range_end, false)
}

/// `rate(counter[W])`: [`increase`] per second of the range.
pub fn rate(samples: &[(f64, f64)], range_start: f64, range_end: f64) -> Option<f64> {
    extrapolated_rate(samples, range_start, range_end, true)
}

/// Prometheus' `extrapolatedRate` for a counter of float samples.
fn extrapolated_rate(
    samples: &[(f64, f64)],
    range_start: f64,
    range_end: f64,
    is_rate: bool,
) -> Option<f64> {
    let range = range_end - range_start;
    if samples.len() < 2 || range.is_nan() || range <= 0.0 {
        return None;
    }
    let (first_t, first_v) = samples[0];
    let (last_t, last_v) = samples[samples.len() - 1];

    // A drop means the counter restarted from zero: what it had counted
    // before the drop is added back.
    let mut result = last_v - first_v;
    for pair in samples.windows(2) {
        if pair[1].1 < pair[0].1 {
            result += pair[0].1;
        }
    }

    let mut duration_to_start = first_t - range_start;
    let mut duration_to_end = range_end - last_t;
    let sampled_interval = last_t - first_t;
    let average_interval = sampled_interval / (samples.len() - 1) as f64;
    // A sample within 110% of the average interval from an edge means the
    // series covers the whole range: extrapolate to the edge. Otherwise it
    // started or ended inside: extrapolate by half an interval only.
    let threshold = average_interval * 1.1;
    if duration_to_start >= threshold {
        duration_to_start = average_interval / 2.0;
    }
    // A counter cannot go below zero: never extrapolate further back than
    // the point where the line through the samples reaches zero.
    let mut duration_to_zero = duration_to_start;
    if result > 0.0 && first_v >= 0.0 {
        duration_to_zero = sampled_interval * (first_v / result);
    }
    if duration_to_zero < duration_to_start {
        duration_to_start = duration_to_zero;
    }
    if duration_to_end >= threshold {
        duration_to_end = average_interval / 2.0;
    }

    let mut factor = 1.0;
    if sampled_interval != 0.0 {
        factor = (sampled_interval + duration_to_start + duration_to_end) / sampled_interval;
    }
    if is_rate {
        factor /= range;
    }
    let value = result * factor;
    (!value.is_nan()).then_some(value)
}

/// `irate(counter[W])`: the per-second rate between the last two samples
/// (after a reset, the last value counts as the whole increase).
///
/// `None` with fewer than two samples or two at the same instant.
pub fn irate(samples: &[(f64, f64)]) -> Option<f64> {
    let [(t0, v0), (t1, v1)] = *samples.last_chunk::<2>()?;
    let interval = t1 - t0;
    if interval == 0.0 {
        return None;
    }
    let delta = if v1 < v0 { v1 } else { v1 - v0 };
    let value = delta / interval;
    (!value.is_nan()).then_some(value)
}

/// `histogram_quantile(q, buckets)` for one classic histogram given as
/// `(le, count)` pairs in any order (typically the summed `irate` of each
/// bucket): Prometheus' `BucketQuantile`.
///
/// Linear interpolation within the bucket holding the rank, a lower bound
/// of 0 for the first bucket when its upper bound is positive, the highest
/// finite bound when the rank falls into `+Inf`; counts that decrease with
/// `le` are raised to the envelope first. `q < 0` is `-Inf` and `q > 1` is
/// `+Inf`. `None` (Prometheus: `NaN`) without buckets, for a NaN `q`,
/// without a `+Inf` bucket, with fewer than two distinct bounds, or with no
/// observations.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    if buckets.is_empty() || q.is_nan() {
        return None;
    }
    if q < 0.0 {
        return Some(f64::NEG_INFINITY);
    }
    if q > 1.0 {
        return Some(f64::INFINITY);
    }
    let mut buckets = buckets.to_vec();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.last().map(|b| b.0) != Some(f64::INFINITY) {
        return None;
    }
    coalesce(&mut buckets);
    ensure_monotonic(&mut buckets);
    let n = buckets.len();
    if n < 2 {
        return None;
    }
    let observations = buckets[n - 1].1;
    if observations == 0.0 {
        return None;
    }
    let mut rank = q * observations;
    // The first bucket (the +Inf one excluded) whose count reaches the rank;
    // written as `!(c >= rank)` to treat NaN counts as Go's sort.Search does.
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    let b = buckets[..n - 1].partition_point(|&(_, count)| !(count >= rank));
    let quantile = if b == n - 1 {
        buckets[n - 2].0
    } else if b == 0 && buckets[0].0 <= 0.0 {
        buckets[0].0
    } else {
        let bucket_end = buckets[b].0;
        let mut bucket_start = 0.0;
        let mut count = buckets[b].1;
        if b > 0 {
            bucket_start = buckets[b - 1].0;
            count -= buckets[b - 1].1;
            rank -= buckets[b - 1].1;
        }
        bucket_start + (bucket_end - bucket_start) * (rank / count)
    };
    (!quantile.is_nan()).then_some(quantile)
}

/// Merges buckets with the same upper bound (`0.2` and `2e-1`), summing
/// their counts; `buckets` is sorted.
fn coalesce(buckets: &mut Vec<(f64, f64)>) {
    buckets.dedup_by(|next, kept| {
        if next.0 == kept.0 {
            kept.1 += next.1;
            true
        } else {
            false
        }
    });
}

/// Flattens float noise between adjacent counts and removes decreases, so
/// counts never fall as `le` grows (Prometheus'
/// `ensureMonotonicAndIgnoreSmallDeltas`).
fn ensure_monotonic(buckets: &mut [(f64, f64)]) {
    let Some(&(_, mut prev)) = buckets.first() else {
        return;
    };
    for bucket in &mut buckets[1..] {
        let curr = bucket.1;
        if curr == prev {
            continue;
        }
        if almost_equal(prev, curr, SMALL_DELTA_TOLERANCE) || curr < prev {
            // Ignored: `prev` stays.
            bucket.1 = prev;
            continue;
        }
        prev = curr;
    }
}

/// Prometheus' `almost.Equal`: a relative comparison, absolute near zero.
fn almost_equal(a: f64, b: f64, epsilon: f64) -> bool {
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < f64::MIN_POSITIVE {
        return diff < epsilon * f64::MIN_POSITIVE;
    }
    diff / abs_sum.min(f64::MAX) < epsilon
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: f64 = 60.0;

    /// Prometheus' `load 5m` notation `start+step x n` (n+1 samples from 0).
    fn series(start: f64, step: f64, n: usize, interval: f64) -> Vec<(f64, f64)> {
        (0..=n)
            .map(|i| (i as f64 * interval, start + step * i as f64))
            .collect()
    }

    /// The samples a `[range]` selector at `at` sees: `(at - range, at]`.
    fn select(samples: &[(f64, f64)], at: f64, range: f64) -> Vec<(f64, f64)> {
        samples
            .iter()
            .copied()
            .filter(|&(t, _)| t > at - range && t <= at)
            .collect()
    }

    fn increase_at(samples: &[(f64, f64)], at: f64, range: f64) -> Option<f64> {
        increase(&select(samples, at, range), at - range, at)
    }

    fn rate_at(samples: &[(f64, f64)], at: f64, range: f64) -> Option<f64> {
        rate(&select(samples, at, range), at - range, at)
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() <= 1e-9 * b.abs().max(1.0))
    }

    #[test]
    fn increase_matches_prometheus_functions_test() {
        // functions.test, "Tests for increase()".
        let foo = series(0.0, 10.0, 10, 5.0 * M);
        let mut bar = series(0.0, 18.0, 5, 5.0 * M);
        bar.extend(
            series(0.0, 18.0, 5, 5.0 * M)
                .iter()
                .map(|&(t, v)| (t + 30.0 * M, v)),
        );
        let dings = series(10.0, 10.0, 10, 5.0 * M);
        let bumms = series(1.0, 10.0, 10, 5.0 * M);

        assert!(close(increase_at(&foo, 50.0 * M, 50.0 * M), 100.0));
        assert!(close(increase_at(&bar, 50.0 * M, 50.0 * M), 160.0));
        assert!(close(increase_at(&dings, 50.0 * M, 50.0 * M), 100.0));
        assert!(close(increase_at(&bumms, 50.0 * M, 50.0 * M), 100.0));

        // The zero-point cutoff: "dings" may extrapolate half an interval
        // back, "bumms" only the 30 s to its zero point.
        assert!(close(increase_at(&foo, 50.0 * M, 100.0 * M), 100.0));
        assert!(close(increase_at(&bar, 50.0 * M, 100.0 * M), 162.0));
        assert!(close(increase_at(&dings, 50.0 * M, 100.0 * M), 105.0));
        assert!(close(increase_at(&bumms, 50.0 * M, 100.0 * M), 101.0));
    }

    #[test]
    fn counter_resets_add_back_what_was_counted() {
        // functions.test: 0 1 2 3 2 3 4 is read as 0 1 2 3 (0 1) 2 3 4.
        let s: Vec<_> = [0.0, 1.0, 2.0, 3.0, 2.0, 3.0, 4.0]
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as f64 * 5.0 * M, v))
            .collect();
        assert!(close(increase_at(&s, 30.0 * M, 30.0 * M), 7.0));

        // testcounter_reset_middle_total 0+27x4 0+27x5.
        let mut middle = series(0.0, 27.0, 4, 5.0 * M);
        middle.extend(
            series(0.0, 27.0, 5, 5.0 * M)
                .iter()
                .map(|&(t, v)| (t + 25.0 * M, v)),
        );
        assert!(close(rate_at(&middle, 50.0 * M, 50.0 * M), 0.08));

        // testcounter_reset_end_total 0+10x9 0 10: a [5m] range holds one
        // sample (left-open), a [6m] one a reset to 0.
        let mut end = series(0.0, 10.0, 9, 5.0 * M);
        end.extend([(50.0 * M, 0.0), (55.0 * M, 10.0)]);
        assert_eq!(rate_at(&end, 50.0 * M, 5.0 * M), None);
        assert!(close(rate_at(&end, 50.0 * M, 6.0 * M), 0.0));
    }

    #[test]
    fn rate_is_per_second_of_the_range() {
        let window = series(0.0, 80.0, 10, 5.0 * M);
        assert!(close(
            rate_at(&window, 50.0 * M, 50.0 * M),
            0.26666666666666666
        ));
        // "offset 5m" is the same range 5 minutes earlier.
        let a = series(0.0, 10.0, 10, 5.0 * M);
        let b = series(0.0, 20.0, 10, 5.0 * M);
        assert!(close(rate_at(&a, 45.0 * M, 10.0 * M), 0.03333333333333333));
        assert!(close(rate_at(&b, 45.0 * M, 10.0 * M), 0.06666666666666667));
    }

    #[test]
    fn zero_cutoff_of_left_extrapolation() {
        // functions.test, testcounter_zero_cutoff_total (load 4m).
        for (start, at_10m, at_50m) in [
            (0.0, 0.5, 0.6),
            (60.0, 0.55, 0.6),
            (120.0, 0.6, 0.6),
            (180.0, 0.6, 0.6),
            (240.0, 0.6, 0.6),
            (300.0, 0.6, 0.6),
        ] {
            let s = series(start, 240.0, 10, 4.0 * M);
            assert!(close(rate_at(&s, 10.0 * M, 20.0 * M), at_10m), "{start}");
            assert!(close(rate_at(&s, 50.0 * M, 20.0 * M), at_50m), "{start}");
        }
    }

    #[test]
    fn increase_over_scrapes_every_ten_seconds() {
        // The controller's case: 10 s scrapes, a 1 m window ending 4 s
        // after the last scrape, 1 request per second.
        // Samples at 10..=60 s with values 10..=60; window (4, 64].
        let s: Vec<_> = (1..=6)
            .map(|i| (i as f64 * 10.0, i as f64 * 10.0))
            .collect();
        // 50 counted; 6 s to the start and 4 s to the end are both under
        // 11 s, but the zero point (10 s back) is further: extrapolate
        // 50 * (50 + 6 + 4) / 50 = 60.
        assert!(close(increase(&s, 4.0, 64.0), 60.0));
        assert!(close(rate(&s, 4.0, 64.0), 1.0));
        // A series that starts at 0 inside the window cannot extrapolate
        // past its zero point: (30..=60) with values 0, 10, 20, 30.
        let young: Vec<_> = (3..=6)
            .map(|i| (i as f64 * 10.0, (i - 3) as f64 * 10.0))
            .collect();
        // 30 over 30 s, no time before zero, 4 s after: 30 * 34 / 30 = 34.
        assert!(close(increase(&young, 4.0, 64.0), 34.0));
        // A gap at the end longer than 1.1 intervals: half an interval.
        let stopped = &s[..3]; // 10, 20, 30 s; window (4, 64]
                               // 20 counted over 20 s; start 6 s (< 11), zero point 10 s back (>6):
                               // 6; end 34 s (>= 11): 5 s. 20 * (20 + 6 + 5) / 20 = 31.
        assert!(close(increase(stopped, 4.0, 64.0), 31.0));
        assert_eq!(increase(&s[..1], 4.0, 64.0), None);
        assert_eq!(increase(&[], 4.0, 64.0), None);
        assert_eq!(increase(&s, 64.0, 64.0), None);
    }

    #[test]
    fn irate_uses_the_last_two_samples() {
        // functions.test, "Tests for irate()".
        let foo = series(0.0, 10.0, 10, 5.0 * M);
        let mut bar = series(0.0, 10.0, 5, 5.0 * M);
        bar.extend(
            series(0.0, 10.0, 5, 5.0 * M)
                .iter()
                .map(|&(t, v)| (t + 30.0 * M, v)),
        );
        let at = |s: &[(f64, f64)], t: f64| irate(&select(s, t, 50.0 * M));
        assert!(close(at(&foo, 50.0 * M), 0.03333333333333333));
        assert!(close(at(&bar, 50.0 * M), 0.03333333333333333));
        // At 30m bar has just reset to 0: the last value (0) is the increase.
        assert!(close(at(&foo, 30.0 * M), 0.03333333333333333));
        assert!(close(at(&bar, 30.0 * M), 0.0));
        // After a reset to a positive value, that value counts.
        assert!(close(irate(&[(0.0, 100.0), (10.0, 5.0)]), 0.5));
        assert_eq!(irate(&[(10.0, 1.0)]), None);
        assert_eq!(irate(&[(10.0, 1.0), (10.0, 2.0)]), None);
    }

    /// histograms.test `testhistogram` at 50m (0+5x10 etc.): one
    /// histogram with a first bound > 0, one with negative bounds.
    fn positive() -> Vec<(f64, f64)> {
        vec![
            (0.1, 50.0),
            (0.2, 70.0),
            (1.0, 110.0),
            (f64::INFINITY, 120.0),
        ]
    }
    fn negative() -> Vec<(f64, f64)> {
        vec![
            (-0.2, 10.0),
            (-0.1, 20.0),
            (0.3, 20.0),
            (f64::INFINITY, 30.0),
        ]
    }

    #[test]
    fn quantiles_match_prometheus_histograms_test() {
        let q = |q, b: &[(f64, f64)]| histogram_quantile(q, b);
        for (phi, pos, neg) in [
            (0.0, 0.0, -0.2),
            (0.2, 0.048, -0.2),
            (0.5, 0.15, -0.15),
            (0.8, 0.72, 0.3),
            (1.0, 1.0, 0.3),
        ] {
            assert!(close(q(phi, &positive()), pos), "q={phi}");
            assert!(close(q(phi, &negative()), neg), "q={phi}");
        }
        assert_eq!(q(-0.1, &positive()), Some(f64::NEG_INFINITY));
        assert_eq!(q(1.01, &negative()), Some(f64::INFINITY));
        assert_eq!(q(f64::NAN, &positive()), None);

        // testhistogram3 (a bucket at 0, nothing in +Inf).
        let pos3 = [
            (0.0, 0.0),
            (0.1, 50.0),
            (0.2, 70.0),
            (1.0, 110.0),
            (f64::INFINITY, 110.0),
        ];
        let neg3 = [
            (-0.25, 0.0),
            (-0.2, 10.0),
            (-0.1, 20.0),
            (0.3, 20.0),
            (f64::INFINITY, 20.0),
        ];
        for (phi, pos, neg) in [
            (0.0, 0.0, -0.25),
            (0.25, 0.055, -0.225),
            (0.5, 0.125, -0.2),
            (0.75, 0.45, -0.15),
            (1.0, 1.0, -0.1),
        ] {
            assert!(close(q(phi, &pos3), pos), "q={phi}");
            assert!(close(q(phi, &neg3), neg), "q={phi}");
        }

        // testhistogram2: q(1/6), q(1/2), q(5/6) in the middle of buckets.
        let two = [
            (0.0, 0.0),
            (2.0, 1.0),
            (4.0, 2.0),
            (6.0, 3.0),
            (f64::INFINITY, 3.0),
        ];
        assert!(close(q(1.0 / 6.0, &two), 1.0));
        assert!(close(q(0.5, &two), 3.0));
        assert!(close(q(5.0 / 6.0, &two), 5.0));
    }

    #[test]
    fn quantile_of_summed_rates() {
        // sum(rate(request_duration_seconds_bucket[10m])) by (le): the sum
        // of the four instances' per-5m steps, scaled alike.
        let summed = [
            (0.1, 10.0 / 300.0),
            (0.2, 19.0 / 300.0),
            (f64::INFINITY, 25.0 / 300.0),
        ];
        assert!(close(histogram_quantile(0.3, &summed), 0.075));
        assert!(close(histogram_quantile(0.5, &summed), 0.1277777777777778));
        // Order does not matter.
        let mut shuffled = summed;
        shuffled.reverse();
        assert!(close(
            histogram_quantile(0.5, &shuffled),
            0.1277777777777778
        ));
    }

    #[test]
    fn non_monotonic_and_duplicate_buckets_are_fixed() {
        // histograms.test nonmonotonic_bucket at 50m.
        let b = [
            (0.1, 20.0),
            (1.0, 10.0),
            (10.0, 50.0),
            (100.0, 40.0),
            (1000.0, 90.0),
            (f64::INFINITY, 80.0),
        ];
        assert!(close(histogram_quantile(0.01, &b), 0.0045));
        assert!(close(histogram_quantile(0.5, &b), 8.5));
        assert!(close(histogram_quantile(0.99, &b), 979.75));

        // mixed_bucket: 0.2 written three ways is one bound.
        let mixed = [
            (0.1, 1.0),
            (0.2, 1.0),
            (0.2, 1.0),
            (0.2, 1.0),
            (f64::INFINITY, 4.0),
        ];
        assert!(close(histogram_quantile(0.5, &mixed), 0.15));
        assert!(close(histogram_quantile(0.75, &mixed), 0.2));
        assert!(close(histogram_quantile(1.0, &mixed), 0.2));
        // Two +Inf buckets coalesce into one: fewer than two bounds.
        assert_eq!(
            histogram_quantile(0.5, &[(f64::INFINITY, 0.0), (f64::INFINITY, 0.0)]),
            None
        );
        // Float noise between buckets is flattened, not interpolated.
        let noisy = [
            (1.0, 10.0),
            (2.0, 10.0 * (1.0 + 1e-14)),
            (f64::INFINITY, 20.0),
        ];
        assert!(close(histogram_quantile(0.5, &noisy), 1.0));
    }

    #[test]
    fn quantile_edge_cases() {
        let lat = [(5.0, 0.0), (10.0, 8.0), (20.0, 10.0), (f64::INFINITY, 10.0)];
        // Rank 5 of 10 in (5, 10] holding 8: 5 + 5 * 5/8.
        assert!(close(histogram_quantile(0.5, &lat), 8.125));
        // Rank 9.9 in (10, 20] holding 2: 10 + 10 * 1.9/2.
        assert!(close(histogram_quantile(0.99, &lat), 19.5));
        // A rank in +Inf gives the highest finite bound.
        let slow = [(5.0, 1.0), (10.0, 2.0), (f64::INFINITY, 10.0)];
        assert_eq!(histogram_quantile(0.5, &slow), Some(10.0));
        // No observations, no +Inf, nothing at all: no answer.
        let idle = [(5.0, 0.0), (10.0, 0.0), (f64::INFINITY, 0.0)];
        assert_eq!(histogram_quantile(0.5, &idle), None);
        assert_eq!(histogram_quantile(0.5, &[(5.0, 1.0), (10.0, 2.0)]), None);
        assert_eq!(histogram_quantile(0.5, &[]), None);
        assert_eq!(histogram_quantile(2.0, &[]), None);
        assert_eq!(histogram_quantile(0.5, &[(f64::INFINITY, 3.0)]), None);
        // The first bucket interpolates from 0 when its bound is positive.
        let fast = [(1.0, 4.0), (2.0, 4.0), (f64::INFINITY, 4.0)];
        assert!(close(histogram_quantile(0.5, &fast), 0.5));
    }

    #[test]
    fn almost_equal_is_relative() {
        assert!(almost_equal(1.0, 1.0 + 1e-13, 1e-12));
        assert!(!almost_equal(1.0, 1.0 + 1e-11, 1e-12));
        assert!(almost_equal(0.0, 0.0, 1e-12));
        assert!(!almost_equal(0.0, 1e-300, 1e-12));
        assert!(almost_equal(f64::NAN, f64::NAN, 1e-12));
    }
}
