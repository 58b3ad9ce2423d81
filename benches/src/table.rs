//! A plain Markdown table, so that results paste straight into BENCHMARKS.md.

use std::fmt;
use std::time::Duration;

/// Rows of cells under a header; numbers are right-aligned.
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: AsRef<str>>(header: &[S]) -> Table {
        Table {
            header: header.iter().map(|h| h.as_ref().to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |f: &mut fmt::Formatter<'_>, cells: &[String]| -> fmt::Result {
            write!(f, "|")?;
            for (i, w) in widths.iter().enumerate() {
                let cell = cells.get(i).map_or("", String::as_str);
                if i == 0 {
                    write!(f, " {cell:<w$} |")?;
                } else {
                    write!(f, " {cell:>w$} |")?;
                }
            }
            writeln!(f)
        };
        line(f, &self.header)?;
        write!(f, "|")?;
        for (i, w) in widths.iter().enumerate() {
            let dashes = "-".repeat((*w).max(3));
            if i == 0 {
                write!(f, " {dashes} |")?;
            } else {
                write!(f, " {}: |", &dashes[1..])?;
            }
        }
        writeln!(f)?;
        for row in &self.rows {
            line(f, row)?;
        }
        Ok(())
    }
}

/// A duration in milliseconds with two decimals: `1.25`.
pub fn millis(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// A fraction as a whole percentage: `0.345` is `35%`.
pub fn percent(fraction: f64) -> String {
    format!("{:.0}%", fraction * 100.0)
}

/// `n` rounded to a whole number with thousands separated: `1,234,567`.
pub fn grouped(n: f64) -> String {
    let digits = format!("{:.0}", n.abs());
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0.0 && digits != "0" {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_separated() {
        for (n, expected) in [
            (0.0, "0"),
            (999.4, "999"),
            (1000.0, "1,000"),
            (1_234_567.6, "1,234,568"),
            (-12_345.0, "-12,345"),
        ] {
            assert_eq!(grouped(n), expected, "{n}");
        }
    }

    #[test]
    fn columns_line_up_and_numbers_align_right() {
        let mut t = Table::new(&["case", "rec/s"]);
        t.row(vec!["a".into(), "1".into()]);
        t.row(vec!["longer".into(), "12345".into()]);
        assert_eq!(
            t.to_string(),
            "| case   | rec/s |\n\
             | ------ | ----: |\n\
             | a      |     1 |\n\
             | longer | 12345 |\n"
        );
    }
}
