//! Results: one [`Record`] per measured case, printed as a table and/or JSON lines.
//!
//! JSON is written by hand (the tool may not add dependencies) and kept flat so that
//! `scripts/chart.py`, `jq` or a spreadsheet read it without a schema.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;

/// A JSON value, just the kinds the records need.
#[derive(Debug, Clone)]
pub enum Value {
    Num(f64),
    Int(u64),
    Str(String),
    Bool(bool),
    Null,
    Nums(Vec<f64>),
}

/// One measured case: its median run's metric, every run's metric, and details.
#[derive(Debug, Clone)]
pub struct Record {
    pub label: String,
    pub route: String,
    pub workload: &'static str,
    /// e.g. `download x1`, `c=64`, `1000 relays`.
    pub case: String,
    pub metric: &'static str,
    pub unit: &'static str,
    /// The median run's value of `metric` (`None`: not measurable, e.g. memory without --pid).
    pub value: Option<f64>,
    pub runs: Vec<f64>,
    /// Human-readable details of the median run, for the table.
    pub details: String,
    /// The server's CPU cost in the median run, for the table (empty without `--pid`).
    pub cpu: String,
    /// Machine-readable details of the median run, for JSON.
    pub fields: Vec<(&'static str, Value)>,
}

impl Record {
    pub fn to_json(&self) -> String {
        let mut out = String::from("{");
        let head = [
            ("label", Value::Str(self.label.clone())),
            ("route", Value::Str(self.route.clone())),
            ("workload", Value::Str(self.workload.into())),
            ("case", Value::Str(self.case.clone())),
            ("metric", Value::Str(self.metric.into())),
            ("unit", Value::Str(self.unit.into())),
            ("value", self.value.map_or(Value::Null, Value::Num)),
            ("runs", Value::Nums(self.runs.clone())),
        ];
        for (i, (key, value)) in head.iter().chain(self.fields.iter()).enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{}:", quote(key));
            write_value(&mut out, value);
        }
        out.push('}');
        out
    }
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Num(x) if x.is_finite() => {
            let _ = write!(out, "{}", round(*x));
        }
        Value::Num(_) | Value::Null => out.push_str("null"),
        Value::Int(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Str(s) => out.push_str(&quote(s)),
        Value::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        Value::Nums(xs) => {
            out.push('[');
            for (i, x) in xs.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, &Value::Num(*x));
            }
            out.push(']');
        }
    }
}

/// Three decimals are plenty for every metric and keep the lines short.
fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Append records to a JSON-lines file (appending lets several runs share one file).
pub fn append_json(path: &Path, records: &[Record]) -> io::Result<()> {
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    for r in records {
        writeln!(file, "{}", r.to_json())?;
    }
    Ok(())
}

pub fn print_table(records: &[Record]) {
    // The CPU column only when some record has one (`--pid` with a workload that reads it).
    let with_cpu = records.iter().any(|r| !r.cpu.is_empty());
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let value = r.value.map_or_else(|| "n/a".to_string(), |v| format!("{} {}", human(v), r.unit));
            let mut row = vec![r.label.clone(), r.workload.to_string(), r.case.clone(), value];
            if with_cpu {
                row.push(if r.cpu.is_empty() { "-".into() } else { r.cpu.clone() });
            }
            row.push(r.details.clone());
            row
        })
        .collect();
    let mut header: Vec<String> =
        ["server", "workload", "case", "result (median)"].into_iter().map(String::from).collect();
    if with_cpu {
        header.push("server CPU".into());
    }
    header.push("details".into());
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |row: &[String]| {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(c, &w)| format!("{c:<w$}")).collect();
        println!("{}", cells.join("  ").trim_end());
    };
    line(&header);
    line(&widths.iter().map(|&w| "-".repeat(w)).collect::<Vec<_>>());
    for row in &rows {
        line(row);
    }
}

/// Four significant digits or so, without exponent noise.
pub fn human(v: f64) -> String {
    match v.abs() {
        x if x >= 1000.0 => format!("{v:.0}"),
        x if x >= 100.0 => format!("{v:.1}"),
        x if x >= 10.0 => format!("{v:.2}"),
        _ => format!("{v:.3}"),
    }
}

/// Index of the median run (the lower one for an even count, so it is a real run).
pub fn median_index(values: &[f64]) -> usize {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    order[(values.len() - 1) / 2]
}

/// The `q` quantile (0..=1) of sorted samples, nearest-rank.
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_flat_and_escaped() {
        let r = Record {
            label: "a\"b".into(),
            route: "direct".into(),
            workload: "connrate",
            case: "c=1".into(),
            metric: "rate",
            unit: "conn/s",
            value: Some(1234.56789),
            runs: vec![1.0, 2.5],
            details: String::new(),
            cpu: String::new(),
            fields: vec![("p99_us", Value::Int(7)), ("ok", Value::Bool(true)), ("x", Value::Null)],
        };
        assert_eq!(
            r.to_json(),
            "{\"label\":\"a\\\"b\",\"route\":\"direct\",\"workload\":\"connrate\",\"case\":\"c=1\",\
             \"metric\":\"rate\",\"unit\":\"conn/s\",\"value\":1234.568,\"runs\":[1,2.5],\
             \"p99_us\":7,\"ok\":true,\"x\":null}"
        );
    }

    #[test]
    fn medians_and_quantiles() {
        assert_eq!(median_index(&[3.0, 1.0, 2.0]), 2);
        assert_eq!(median_index(&[4.0, 1.0, 3.0, 2.0]), 3);
        let s: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&s, 0.5), 50);
        assert_eq!(quantile(&s, 0.99), 99);
        assert_eq!(quantile(&s, 1.0), 100);
    }
}
