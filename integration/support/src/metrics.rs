//! Reading Prometheus text.

/// Sums the samples of `name` whose labels include every `(key, value)` in
/// `labels`. Returns 0 when none match, like a Prometheus `sum()`.
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(parse_line)
        .filter(|(n, ls, _)| {
            *n == name
                && labels
                    .iter()
                    .all(|(k, v)| ls.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

/// One sample: metric name, labels, value.
type Sample<'a> = (&'a str, Vec<(&'a str, &'a str)>, f64);

/// Splits `name{k="v",...} value` into its parts.
fn parse_line(line: &str) -> Option<Sample<'_>> {
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let Some((name, rest)) = head.split_once('{') else {
        return Some((head, Vec::new(), value));
    };
    let body = rest.strip_suffix('}')?;
    let mut labels = Vec::new();
    let mut s = body;
    while !s.is_empty() {
        let (k, after) = s.split_once("=\"")?;
        let end = after.find('"')?;
        labels.push((k.trim_start_matches(','), &after[..end]));
        s = &after[end + 1..];
        s = s.strip_prefix(',').unwrap_or(s);
    }
    Some((name, labels, value))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sums_matching_series() {
        let text =
            "# TYPE x counter\nx_total{a=\"1\",b=\"2\"} 3\nx_total{a=\"1\",b=\"3\"} 4\ny 5\n";
        assert_eq!(super::sum(text, "x_total", &[("a", "1")]), 7.0);
        assert_eq!(super::sum(text, "x_total", &[("b", "3")]), 4.0);
        assert_eq!(super::sum(text, "y", &[]), 5.0);
        assert_eq!(super::sum(text, "z", &[]), 0.0);
    }
}
