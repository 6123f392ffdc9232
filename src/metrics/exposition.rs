//! The Prometheus text exposition format (version 0.0.4), written by hand: families with
//! `# HELP` and `# TYPE`, samples with escaped label values, histograms as `_bucket`
//! (cumulative, `le` in ms), `_sum` and `_count`.

use std::fmt::Write;

use super::histogram::{BUCKET_BOUNDS_US, HistogramSnapshot};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Accumulates one scrape's text. Callers write each family's samples together, right
/// after its [`Exposition::family`] line (the format requires families to be contiguous).
#[derive(Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        self.labels(labels, None);
        let _ = writeln!(self.text, " {}", format_value(value));
    }

    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], snapshot: &HistogramSnapshot) {
        for (bound_us, count) in BUCKET_BOUNDS_US.iter().zip(snapshot.cumulative) {
            let bound = format_value(*bound_us as f64 / 1000.0);
            let _ = write!(self.text, "{name}_bucket");
            self.labels(labels, Some(&bound));
            let _ = writeln!(self.text, " {count}");
        }
        let _ = write!(self.text, "{name}_bucket");
        self.labels(labels, Some("+Inf"));
        let _ = writeln!(self.text, " {}", snapshot.count);
        let _ = write!(self.text, "{name}_sum");
        self.labels(labels, None);
        let _ = writeln!(self.text, " {}", format_value(snapshot.sum_ms));
        let _ = write!(self.text, "{name}_count");
        self.labels(labels, None);
        let _ = writeln!(self.text, " {}", snapshot.count);
    }

    pub fn finish(self) -> String {
        self.text
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.text.push('{');
        let all = labels.iter().copied().chain(le.map(|le| ("le", le)));
        for (index, (name, value)) in all.enumerate() {
            if index > 0 {
                self.text.push(',');
            }
            self.text.push_str(name);
            self.text.push_str("=\"");
            escape_into(&mut self.text, value);
            self.text.push('"');
        }
        self.text.push('}');
    }
}

/// Label values escape backslash, double quote and line feed.
fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Integers without a fraction (counters read as integers), others as Rust prints them.
fn format_value(value: f64) -> String {
    if value.is_infinite() {
        return if value > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::histogram::Histogram;

    #[test]
    fn families_and_samples_follow_the_text_format() {
        let mut out = Exposition::default();
        out.family("kafka_x_total", Kind::Counter, "Things.");
        out.sample("kafka_x_total", &[("topic", "a\"b\\c\nd")], 3.0);
        out.sample("kafka_x_total", &[], 2.5);
        let text = out.finish();
        assert_eq!(
            text,
            "# HELP kafka_x_total Things.\n# TYPE kafka_x_total counter\n\
             kafka_x_total{topic=\"a\\\"b\\\\c\\nd\"} 3\nkafka_x_total 2.5\n"
        );
    }

    #[test]
    fn a_histogram_has_cumulative_buckets_sum_and_count() {
        let histogram = Histogram::default();
        histogram.record(std::time::Duration::from_micros(400));
        histogram.record(std::time::Duration::from_secs(20));
        let mut out = Exposition::default();
        out.histogram("h", &[("request", "Produce")], &histogram.snapshot());
        let text = out.finish();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "h_bucket{request=\"Produce\",le=\"0.1\"} 0");
        assert_eq!(lines[2], "h_bucket{request=\"Produce\",le=\"0.5\"} 1");
        assert!(lines.contains(&"h_bucket{request=\"Produce\",le=\"10000\"} 1"));
        assert!(lines.contains(&"h_bucket{request=\"Produce\",le=\"+Inf\"} 2"));
        assert!(lines.contains(&"h_sum{request=\"Produce\"} 20000.4"));
        assert_eq!(lines.last(), Some(&"h_count{request=\"Produce\"} 2"));
        assert_eq!(lines.len(), BUCKET_BOUNDS_US.len() + 3);
    }
}
