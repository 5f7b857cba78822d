//! The Prometheus text exposition format, version 0.0.4, written by hand: a metric family is
//! a `# HELP` line, a `# TYPE` line and its samples, one per line.
//!
//! ```text
//! # HELP socksloop_relay_bytes_total Payload bytes delivered ...
//! # TYPE socksloop_relay_bytes_total counter
//! socksloop_relay_bytes_total{direction="up"} 1024
//! ```
//!
//! Escaping follows the format's rules: in label values a backslash, a double quote and a
//! line feed become `\\`, `\"` and `\n`; in help text a backslash and a line feed do. Values
//! are integers when they are counts, and floats otherwise, written as Rust's shortest
//! round-trip form (never an exponent, so every parser reads it) with `+Inf`, `-Inf` and
//! `NaN` spelled the format's way. Metric and label names are checked in debug builds only:
//! they are constants of this crate.

use std::fmt::Write as _;

/// A metric family's type (the `# TYPE` line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A sample's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(u64),
    Float(f64),
}

impl From<u64> for Value {
    fn from(n: u64) -> Value {
        Value::Int(n)
    }
}

impl From<f64> for Value {
    fn from(x: f64) -> Value {
        Value::Float(x)
    }
}

/// A text exposition being written.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition { out: String::with_capacity(16 * 1024) }
    }

    /// The text written so far.
    pub fn finish(self) -> String {
        self.out
    }

    /// Start a metric family: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        debug_assert!(is_metric_name(name), "metric name {name:?}");
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        for c in help.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                c => self.out.push(c),
            }
        }
        let _ = writeln!(self.out, "\n# TYPE {name} {}", kind.as_str());
    }

    /// One sample: `name{label="value",...} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Into<Value>) {
        debug_assert!(is_metric_name(name), "metric name {name:?}");
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                debug_assert!(is_label_name(label), "label name {label:?}");
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(label);
                self.out.push_str("=\"");
                push_label_value(&mut self.out, value);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        match value.into() {
            Value::Int(n) => {
                let _ = write!(self.out, "{n}");
            }
            Value::Float(x) => push_float(&mut self.out, x),
        }
        self.out.push('\n');
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl Into<Value>) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A whole histogram family: `counts[i]` observations fell in bucket `i` (not cumulative:
    /// at most `bounds[i]` and above the bound before it), the last count above every bound;
    /// `sum` is the sum of the observations. Writes the cumulative `_bucket` series (`le`
    /// ending in `+Inf`), `_sum` and `_count`.
    pub fn histogram(&mut self, name: &str, help: &str, bounds: &[f64], counts: &[u64], sum: f64) {
        debug_assert_eq!(counts.len(), bounds.len() + 1, "one count per bucket and one above");
        self.family(name, Kind::Histogram, help);
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0u64;
        let mut le = String::new();
        for (i, count) in counts.iter().enumerate() {
            cumulative += count;
            le.clear();
            match bounds.get(i) {
                Some(&bound) => push_float(&mut le, bound),
                None => le.push_str("+Inf"),
            }
            self.sample(&bucket, &[("le", &le)], cumulative);
        }
        self.sample(&format!("{name}_sum"), &[], sum);
        self.sample(&format!("{name}_count"), &[], cumulative);
    }
}

fn push_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn push_float(out: &mut String, x: f64) {
    if x.is_nan() {
        out.push_str("NaN");
    } else if x == f64::INFINITY {
        out.push_str("+Inf");
    } else if x == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        // Rust's Display for f64 is the shortest form that reads back exactly, without an
        // exponent: 0.005, 1e-7 as 0.0000001, 2.5, 10.
        let _ = write!(out, "{x}");
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
fn is_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__` (reserved).
fn is_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    !name.starts_with("__")
        && bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_samples() {
        let mut e = Exposition::new();
        e.family("socksloop_requests_total", Kind::Counter, "Requests answered.");
        e.sample("socksloop_requests_total", &[("command", "connect"), ("reply", "succeeded")], 3u64);
        e.sample("socksloop_requests_total", &[("command", "bind"), ("reply", "ttl_expired")], 0u64);
        e.single("socksloop_connections_active", Kind::Gauge, "Open now.", 2u64);
        e.single("process_cpu_seconds_total", Kind::Counter, "CPU.", 0.25);
        assert_eq!(
            e.finish(),
            "# HELP socksloop_requests_total Requests answered.\n\
             # TYPE socksloop_requests_total counter\n\
             socksloop_requests_total{command=\"connect\",reply=\"succeeded\"} 3\n\
             socksloop_requests_total{command=\"bind\",reply=\"ttl_expired\"} 0\n\
             # HELP socksloop_connections_active Open now.\n\
             # TYPE socksloop_connections_active gauge\n\
             socksloop_connections_active 2\n\
             # HELP process_cpu_seconds_total CPU.\n\
             # TYPE process_cpu_seconds_total counter\n\
             process_cpu_seconds_total 0.25\n"
        );
    }

    #[test]
    fn escaping() {
        let mut e = Exposition::new();
        e.family("m", Kind::Gauge, "a \\ back\nslash and \"quotes\"");
        e.sample("m", &[("path", "C:\\dir\n\"x\"")], 1u64);
        assert_eq!(
            e.finish(),
            "# HELP m a \\\\ back\\nslash and \"quotes\"\n# TYPE m gauge\nm{path=\"C:\\\\dir\\n\\\"x\\\"\"} 1\n"
        );
    }

    #[test]
    fn floats() {
        let cases = [
            (0.005, "0.005"),
            (10.0, "10"),
            (1e-7, "0.0000001"),
            (1_700_000_000.5, "1700000000.5"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ];
        for (x, text) in cases {
            let mut out = String::new();
            push_float(&mut out, x);
            assert_eq!(out, text);
            if x.is_finite() {
                assert_eq!(out.parse::<f64>().unwrap(), x, "reads back");
            }
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut e = Exposition::new();
        e.histogram("h_seconds", "Latency.", &[0.1, 1.0], &[2, 0, 1], 5.25);
        assert_eq!(
            e.finish(),
            "# HELP h_seconds Latency.\n# TYPE h_seconds histogram\n\
             h_seconds_bucket{le=\"0.1\"} 2\n\
             h_seconds_bucket{le=\"1\"} 2\n\
             h_seconds_bucket{le=\"+Inf\"} 3\n\
             h_seconds_sum 5.25\n\
             h_seconds_count 3\n"
        );
    }

    #[test]
    fn names() {
        assert!(
            is_metric_name("socksloop_relay_bytes_total") && is_metric_name("a:b") && is_metric_name("_x")
        );
        assert!(!is_metric_name("") && !is_metric_name("1x") && !is_metric_name("a-b"));
        assert!(is_label_name("le") && is_label_name("_x"));
        assert!(!is_label_name("__name__") && !is_label_name("a:b") && !is_label_name(""));
    }
}
