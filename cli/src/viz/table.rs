//! The one plain-text table writer of `weft stat`, `edges`, `routes`, `top`
//! and the demo's live view: left-aligned columns at least three spaces
//! apart, as Linkerd's tabwriter output reads, so every view lines up the
//! same way and scripts can split on runs of spaces.

use std::fmt;

use unicode_width::UnicodeWidthStr;

/// Spaces between two columns (Linkerd's tabwriter padding).
pub const COLUMN_GAP: usize = 3;

/// A header and rows of cells, rendered with each column as wide as its
/// widest cell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

// === impl Table ===

impl Table {
    /// A table with these column headers and no rows yet.
    pub fn new<I, S>(headers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row; missing cells print empty, extra cells are dropped so
    /// a row can never widen the table past its headers.
    pub fn push<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut row: Vec<String> = cells
            .into_iter()
            .take(self.headers.len())
            .map(|c| printable(c.into()))
            .collect();
        row.resize(self.headers.len(), String::new());
        self.rows.push(row);
    }

    /// The header line and one line per row, each ending in `\n`, with no
    /// trailing spaces.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.width()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.width());
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let start = out.len();
            for (i, (cell, width)) in line.iter().zip(&widths).enumerate() {
                out.push_str(cell);
                if i + 1 < line.len() {
                    let pad = width - cell.width() + COLUMN_GAP;
                    out.extend(std::iter::repeat_n(' ', pad));
                }
            }
            let end = out[start..].trim_end().len() + start;
            out.truncate(end);
            out.push('\n');
        }
        out
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

/// Cells come from the network (names, request paths): control characters
/// are shown escaped so a request path cannot move the cursor or recolour
/// the operator's terminal.
fn printable(cell: String) -> String {
    if !cell.chars().any(char::is_control) {
        return cell;
    }
    cell.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_left_aligned_three_spaces_apart() {
        let mut t = Table::new(["NAME", "SUCCESS", "RPS"]);
        t.push(["web", "100.00%", "2.0rps"]);
        t.push(["books-v2", "-", "-"]);
        assert_eq!(
            t.render(),
            "NAME       SUCCESS   RPS\n\
             web        100.00%   2.0rps\n\
             books-v2   -         -\n"
        );
    }

    #[test]
    fn widths_count_characters_not_bytes() {
        let mut t = Table::new(["SECURED", "X"]);
        t.push(["√", "a"]);
        t.push(["512µs", "b"]);
        let out = t.render();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[1], "√         a");
        assert_eq!(lines[2], "512µs     b");
    }

    #[test]
    fn rows_are_fitted_to_the_headers_and_escaped() {
        let mut t = Table::new(["A", "B"]);
        t.push(["1"]);
        t.push(["2", "3", "dropped"]);
        t.push(["/\u{1b}[2J", "x"]);
        assert_eq!(
            t.render(),
            "A            B\n1\n2            3\n/\\u{1b}[2J   x\n"
        );
        assert_eq!(t.to_string(), t.render());
    }
}
