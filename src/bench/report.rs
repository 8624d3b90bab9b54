//! What a run found: named values printed as an aligned table or as one JSON object.
//!
//! Implements: the output of every mode, field names with their unit (`latency_p99_us`), JSON
//! per RFC 8259 (strings escaped per §7, numbers per §6).
//!
//! Does not: decide whether a run passed beyond the `failed` flag a mode sets.

use std::fmt::Write as _;

use super::histogram::Histogram;

/// One reported value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A count.
    Count(u64),
    /// A measured quantity (rates, seconds).
    Real(f64),
    /// Text (URLs, transport names).
    Text(String),
}

/// The result of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The mode: `echo`, `fanout`, `idle` or `connect`.
    pub mode: &'static str,
    /// Named values in the order they are printed.
    pub fields: Vec<(&'static str, Value)>,
    /// Why the run failed (e.g. missing messages); the command then exits non-zero.
    pub failure: Option<String>,
}

impl Report {
    /// An empty report of `mode`.
    pub fn new(mode: &'static str) -> Report {
        Report { mode, fields: Vec::new(), failure: None }
    }

    /// Adds a count.
    pub fn count(&mut self, name: &'static str, value: u64) {
        self.fields.push((name, Value::Count(value)));
    }

    /// Adds a measured quantity.
    pub fn real(&mut self, name: &'static str, value: f64) {
        self.fields.push((name, Value::Real(value)));
    }

    /// Adds text.
    pub fn text(&mut self, name: &'static str, value: impl Into<String>) {
        self.fields.push((name, Value::Text(value.into())));
    }

    /// Adds `latency_p50_us`, `latency_p99_us` and `latency_max_us`.
    pub fn latency(&mut self, histogram: &Histogram) {
        self.count("latency_p50_us", histogram.percentile_us(50.0));
        self.count("latency_p99_us", histogram.percentile_us(99.0));
        self.count("latency_max_us", histogram.max_us());
    }

    /// The value named `name`, if reported.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Two aligned columns, one field per line, the failure last.
    pub fn to_table(&self) -> String {
        let width = self.fields.iter().map(|(n, _)| n.len()).max().unwrap_or(0).max(4);
        let mut out = format!("{:width$}  {}\n", "mode", self.mode);
        for (name, value) in &self.fields {
            let shown = match value {
                Value::Count(n) => n.to_string(),
                Value::Real(x) => format!("{x:.3}"),
                Value::Text(s) => s.clone(),
            };
            let _ = writeln!(out, "{name:width$}  {shown}");
        }
        if let Some(failure) = &self.failure {
            let _ = writeln!(out, "{:width$}  {failure}", "FAILED");
        }
        out
    }

    /// One JSON object on one line: `mode`, every field, `ok` and, on failure, `failure`.
    pub fn to_json(&self) -> String {
        let mut out = format!("{{\"mode\":{}", json_string(self.mode));
        for (name, value) in &self.fields {
            let shown = match value {
                Value::Count(n) => n.to_string(),
                // RFC 8259 §6: NaN and infinities are not JSON numbers.
                Value::Real(x) if x.is_finite() => format!("{x:.3}"),
                Value::Real(_) => "null".to_string(),
                Value::Text(s) => json_string(s),
            };
            let _ = write!(out, ",{}:{shown}", json_string(name));
        }
        let _ = write!(out, ",\"ok\":{}", self.failure.is_none());
        if let Some(failure) = &self.failure {
            let _ = write!(out, ",\"failure\":{}", json_string(failure));
        }
        out.push('}');
        out
    }
}

/// A JSON string (RFC 8259 §7): quotes, backslashes and control characters escaped.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8259_7_report_json_is_one_escaped_object() {
        let mut report = Report::new("fanout");
        report.count("missing", 0);
        report.real("deliveries_per_s", 1234.5);
        report.real("nothing", f64::NAN);
        report.text("url", "http://a/\"b\"\n");
        assert_eq!(
            report.to_json(),
            "{\"mode\":\"fanout\",\"missing\":0,\"deliveries_per_s\":1234.500,\"nothing\":null,\
             \"url\":\"http://a/\\\"b\\\"\\u000a\",\"ok\":true}"
        );
        report.failure = Some("3 missing".into());
        assert!(report.to_json().ends_with(",\"ok\":false,\"failure\":\"3 missing\"}"));
        assert!(report.to_table().contains("FAILED"));
        assert_eq!(report.get("missing"), Some(&Value::Count(0)));
    }
}
