//! Go-style durations for flags (`24h`, `20s`, `1h30m`, `87600h`, `500ms`),
//! so Weft's flags read like Linkerd's.

use crate::Error;
use std::time::Duration;

/// Parses one or more `<integer><unit>` terms, unit one of `ms`, `s`, `m`,
/// `h`, `d`. A bare number means seconds (as in the proxy's settings).
pub fn parse_duration(text: &str) -> Result<Duration, Error> {
    let err = |reason: &'static str| Error::Duration {
        value: text.to_owned(),
        reason,
    };
    let s = text.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| err("number too large"));
    }
    if s.is_empty() {
        return Err(err("empty"));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err("expected a number, e.g. 24h, 20s, 1h30m"));
        }
        let (num, tail) = rest.split_at(digits);
        let n: u64 = num.parse().map_err(|_| err("number too large"))?;
        let unit_len = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, tail) = tail.split_at(unit_len);
        let millis_per = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(err("missing unit after a number (ms, s, m, h or d)")),
            _ => return Err(err("unknown unit (use ms, s, m, h or d)")),
        };
        let ms = n
            .checked_mul(millis_per)
            .ok_or_else(|| err("duration too large"))?;
        total = total
            .checked_add(Duration::from_millis(ms))
            .ok_or_else(|| err("duration too large"))?;
        rest = tail;
    }
    Ok(total)
}

/// Formats a duration the way [`parse_duration`] reads it, for messages
/// (`24h`, `1h30m`, `20s`, `1500ms`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, size) in [("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(
            parse_duration("24h").unwrap(),
            Duration::from_secs(24 * 3600)
        );
        assert_eq!(parse_duration("20s").unwrap(), Duration::from_secs(20));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("87600h").unwrap(),
            Duration::from_secs(87600 * 3600)
        );
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        for bad in [
            "",
            "h",
            "1h30",
            "10x",
            "1.5h",
            "-1h",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats() {
        assert_eq!(format_duration(Duration::from_secs(86400)), "24h");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
