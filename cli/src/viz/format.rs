//! Cells as Linkerd's `viz` commands print them: `100.00%`, `2.0rps`,
//! `12ms`, `1234.5B/s`, `-` where there was no traffic, and `top`'s
//! latencies rounded like Go durations (`512µs`, `3ms`, `2s`).

/// What a cell shows when the controller had no number (`null` in JSON).
pub const NONE: &str = "-";

/// A success fraction (`0.0..=1.0`) as a percentage with two decimals.
pub fn success(fraction: Option<f64>) -> String {
    finite(fraction).map_or_else(none, |f| format!("{:.2}%", f * 100.0))
}

/// Requests per second with one decimal.
pub fn rps(rate: Option<f64>) -> String {
    finite(rate).map_or_else(none, |r| format!("{r:.1}rps"))
}

/// A latency quantile in whole milliseconds.
pub fn latency_ms(ms: Option<u64>) -> String {
    ms.map_or_else(none, |ms| format!("{ms}ms"))
}

/// A plain count (open connections).
pub fn count(n: Option<u64>) -> String {
    n.map_or_else(none, |n| n.to_string())
}

/// Bytes per second with one decimal, as `linkerd viz stat -o wide`
/// prints them (`%.1fB/s`, no unit scaling).
pub fn byte_rate(rate: Option<f64>) -> String {
    finite(rate).map_or_else(none, |r| format!("{r:.1}B/s"))
}

/// Text that may be missing or empty.
pub fn text(value: Option<&str>) -> String {
    match value {
        Some(v) if !v.is_empty() => v.to_owned(),
        _ => none(),
    }
}

/// A latency in (fractional) milliseconds as `linkerd top` shows it: under
/// a millisecond rounded to microseconds, under a second to milliseconds,
/// else to seconds, spelled like Go's `time.Duration` (`1m5s`).
pub fn duration_ms(ms: f64) -> String {
    if !ms.is_finite() || ms < 0.0 {
        return none();
    }
    let nanos = ms * 1e6;
    // Rounding may carry into the next unit (999.6µs is 1ms), as in Go.
    if nanos < 1e6 {
        let us = (nanos / 1e3).round();
        if us == 0.0 {
            return "0s".to_owned();
        }
        if us < 1e3 {
            return format!("{}µs", us as u64);
        }
    }
    if nanos < 1e9 {
        let ms = (nanos / 1e6).round();
        if ms < 1e3 {
            return format!("{}ms", ms as u64);
        }
    }
    // Saturates far beyond any real latency.
    let secs = (nanos / 1e9).round() as u64;
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

fn finite(x: Option<f64>) -> Option<f64> {
    x.filter(|x| x.is_finite())
}

fn none() -> String {
    NONE.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cells_match_linkerd() {
        assert_eq!(success(Some(1.0)), "100.00%");
        assert_eq!(success(Some(0.96154)), "96.15%");
        assert_eq!(success(Some(0.0)), "0.00%");
        assert_eq!(rps(Some(2.0)), "2.0rps");
        assert_eq!(rps(Some(0.0166)), "0.0rps");
        assert_eq!(rps(Some(12.35)), "12.3rps");
        assert_eq!(latency_ms(Some(12)), "12ms");
        assert_eq!(count(Some(3)), "3");
        assert_eq!(byte_rate(Some(1234.56)), "1234.6B/s");
        assert_eq!(byte_rate(Some(0.0)), "0.0B/s");
    }

    #[test]
    fn missing_numbers_are_dashes() {
        assert_eq!(success(None), "-");
        assert_eq!(success(Some(f64::NAN)), "-");
        assert_eq!(rps(Some(f64::INFINITY)), "-");
        assert_eq!(latency_ms(None), "-");
        assert_eq!(count(None), "-");
        assert_eq!(byte_rate(None), "-");
        assert_eq!(text(None), "-");
        assert_eq!(text(Some("")), "-");
        assert_eq!(text(Some("1/2")), "1/2");
    }

    #[test]
    fn top_latencies_round_like_go_durations() {
        assert_eq!(duration_ms(0.0), "0s");
        assert_eq!(duration_ms(0.0004), "0s");
        assert_eq!(duration_ms(0.512), "512µs");
        assert_eq!(duration_ms(0.9996), "1ms");
        assert_eq!(duration_ms(1.0), "1ms");
        assert_eq!(duration_ms(12.4), "12ms");
        assert_eq!(duration_ms(999.7), "1s");
        assert_eq!(duration_ms(2_400.0), "2s");
        assert_eq!(duration_ms(65_000.0), "1m5s");
        assert_eq!(duration_ms(3_600_000.0), "1h0m0s");
        assert_eq!(duration_ms(-1.0), "-");
        assert_eq!(duration_ms(f64::NAN), "-");
    }
}
