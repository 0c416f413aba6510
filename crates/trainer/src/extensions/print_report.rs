//! [`PrintReport`]: the log as aligned columns on the terminal.

use std::io::Write;

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::log_report::{LogEntries, LogEntry};
use super::AFTER_LOG;
use crate::extension::{Context, Ending, Extension, Priority};

/// The width of `-1.23457e-05`, the longest `%g` output.
const MIN_COLUMN_WIDTH: usize = 12;

/// Prints chosen columns of the log, Chainer style: a header once, then a
/// row per new log entry. Numbers are printed with 6 significant digits
/// (`%g`), integers in full, a missing value as blanks, and a non-finite
/// mean as `nan`. Columns are as wide as their key and at least 12
/// characters, which fits any `%g` number, so they stay aligned.
///
/// It runs after [`super::LogReport`] on the same iteration, so a row
/// appears as soon as its entry is written. After a resume it prints the
/// restored rows first.
pub struct PrintReport {
    entries: LogEntries,
    columns: Vec<String>,
    out: Box<dyn Write + Send>,
    printed: usize,
    header_printed: bool,
}

impl PrintReport {
    /// Prints `columns` (log keys such as `epoch`, `main/loss`) of `entries` to stdout.
    pub fn new<I, S>(entries: LogEntries, columns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            entries,
            columns: columns.into_iter().map(Into::into).collect(),
            out: Box::new(std::io::stdout()),
            printed: 0,
            header_printed: false,
        }
    }

    /// Prints to `out` instead of stdout (a file, a buffer, or a
    /// [`super::ProgressBar::line_writer`] so rows do not break the bar).
    pub fn to(mut self, out: impl Write + Send + 'static) -> Self {
        self.out = Box::new(out);
        self
    }

    fn widths(&self) -> Vec<usize> {
        self.columns
            .iter()
            .map(|c| c.chars().count().max(MIN_COLUMN_WIDTH))
            .collect()
    }

    /// The header line, without its newline.
    pub fn header(&self) -> String {
        let cells: Vec<String> = self
            .columns
            .iter()
            .zip(self.widths())
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        cells.join("  ").trim_end().to_string()
    }

    /// The row of one entry, without its newline.
    pub fn row(&self, entry: &LogEntry) -> String {
        let cells: Vec<String> = self
            .columns
            .iter()
            .zip(self.widths())
            .map(|(c, w)| format!("{:<w$}", entry.get(c).map(format_value).unwrap_or_default()))
            .collect();
        cells.join("  ").trim_end().to_string()
    }

    fn print_new(&mut self) -> Result<()> {
        let mut text = String::new();
        if !self.header_printed {
            text.push_str(&self.header());
            text.push('\n');
            self.header_printed = true;
        }
        let new = self.entries.since(self.printed);
        self.printed += new.len();
        for entry in &new {
            text.push_str(&self.row(entry));
            text.push('\n');
        }
        if !text.is_empty() {
            self.out
                .write_all(text.as_bytes())
                .and_then(|()| self.out.flush())
                .context("printing the report")?;
        }
        Ok(())
    }
}

impl Extension for PrintReport {
    fn name(&self) -> String {
        "print_report".into()
    }

    fn priority(&self) -> Priority {
        AFTER_LOG
    }

    fn initialize(&mut self, _ctx: &mut Context<'_>) -> Result<()> {
        self.print_new()
    }

    fn call(&mut self, _ctx: &mut Context<'_>) -> Result<()> {
        self.print_new()
    }

    /// Prints the entry a completing LogReport adds at the very end.
    fn finalize(&mut self, _ctx: &mut Context<'_>, _ending: Ending) -> Result<()> {
        self.print_new()
    }
}

fn format_value(value: &Value) -> String {
    match value {
        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
        Value::Number(n) => format_g(n.as_f64().unwrap_or(f64::NAN)),
        // The log stores a non-finite mean as null.
        Value::Null => "nan".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `x` with 6 significant digits, as C's and Python's `%g` print it.
pub(crate) fn format_g(x: f64) -> String {
    const PRECISION: i32 = 6;
    if !x.is_finite() {
        return if x.is_nan() {
            "nan".into()
        } else if x > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    if x == 0.0 {
        return if x.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    // The exponent after rounding to PRECISION digits decides the style.
    let sci = format!("{:.*e}", (PRECISION - 1) as usize, x);
    let (mantissa, exponent) = sci.split_once('e').expect("`e` formatting has an exponent");
    let exponent: i32 = exponent
        .parse()
        .expect("`e` formatting has an integer exponent");
    if (-4..PRECISION).contains(&exponent) {
        let decimals = (PRECISION - 1 - exponent).max(0) as usize;
        strip_zeros(&format!("{x:.decimals$}")).to_string()
    } else {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", strip_zeros(mantissa), exponent.abs())
    }
}

fn strip_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_g_matches_printf() {
        let cases = [
            (1.0, "1"),
            (0.5, "0.5"),
            (1.234567891, "1.23457"),
            (123456.0, "123456"),
            (1234567.0, "1.23457e+06"),
            (0.0001, "0.0001"),
            (0.00001234, "1.234e-05"),
            (-2.5, "-2.5"),
            (999999.5, "1e+06"),
            (0.0, "0"),
            (f64::NAN, "nan"),
        ];
        for (x, want) in cases {
            assert_eq!(format_g(x), want, "{x}");
        }
    }
}
