//! Go-style duration strings (`"300ms"`, `"1m30s"`), the format Linkerd uses
//! for route timeouts and retry-budget TTLs.

use std::time::Duration;

/// Why a duration string was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The string was empty.
    #[error("empty duration")]
    Empty,
    /// A leading `-`: negative timeouts and TTLs make no sense.
    #[error("negative duration {0:?} is not allowed")]
    Negative(String),
    /// The string does not follow `<number><unit>` repeated.
    #[error("invalid duration {input:?}: {reason} (expected e.g. \"300ms\", \"1m30s\"; units ns, us, ms, s, m, h)")]
    Invalid {
        /// The rejected input.
        input: String,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// The duration does not fit in a `std::time::Duration`.
    #[error("duration {0:?} is out of range")]
    Overflow(String),
}

/// Parses a Go `time.ParseDuration` string so manifests written for Linkerd
/// keep working. A bare `"0"` is accepted; negative values are rejected.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let s = match s.strip_prefix('+') {
        Some(rest) => rest,
        None => s,
    };
    if s.starts_with('-') {
        return Err(DurationError::Negative(input.to_string()));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let invalid = |reason| DurationError::Invalid {
        input: input.to_string(),
        reason,
    };
    let overflow = || DurationError::Overflow(input.to_string());
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total_nanos: u128 = 0;
    while i < bytes.len() {
        // Number: digits with an optional fraction.
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        let number = &s[start..i];
        if number.is_empty() || number == "." {
            return Err(invalid("missing number"));
        }
        let (int_part, frac_part) = match number.split_once('.') {
            Some((a, b)) => (a, b),
            None => (number, ""),
        };
        if frac_part.contains('.') {
            return Err(invalid("more than one decimal point"));
        }
        // Unit: letters up to the next digit.
        let ustart = i;
        while i < bytes.len() && !(bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        let unit_nanos: u128 = match &s[ustart..i] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(invalid("missing unit")),
            _ => return Err(invalid("unknown unit")),
        };
        let int_val: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| overflow())?
        };
        let mut nanos = int_val.checked_mul(unit_nanos).ok_or_else(overflow)?;
        // Fraction: accumulate digit by digit, truncating below 1ns like Go.
        let mut scale = unit_nanos;
        for d in frac_part.bytes() {
            scale /= 10;
            if scale == 0 {
                break;
            }
            nanos += u128::from(d - b'0') * scale;
        }
        total_nanos = total_nanos.checked_add(nanos).ok_or_else(overflow)?;
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000).map_err(|_| overflow())?;
    // The remainder is below 1e9 so it always fits in u32.
    let sub = u32::try_from(total_nanos % 1_000_000_000).map_err(|_| overflow())?;
    Ok(Duration::new(secs, sub))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse_duration("300ms").unwrap(), Duration::from_millis(300));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration(".5s").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects_bad_durations() {
        for bad in ["", "10", "ms", "-1s", "1x", "1.2.3s", "1 s", "s10"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(matches!(
            parse_duration("-5s"),
            Err(DurationError::Negative(_))
        ));
    }
}
