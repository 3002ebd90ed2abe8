//! The Prometheus text exposition format (version 0.0.4), written by hand: families with
//! `# HELP` and `# TYPE`, samples with escaped labels, and histograms binned from an
//! HdrHistogram.

use hdrhistogram::Histogram;
use std::fmt::Write;

/// A metric family's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// One page of metrics. Every sample carries the page's common labels (e.g. `run`) first.
/// A family's samples must follow its [`Page::family`] line, all together: the format wants
/// them contiguous.
pub struct Page {
    out: String,
    common: String,
}

impl Page {
    /// `common`: labels put on every sample, e.g. `[("run", "nightly-7")]`.
    pub fn new(common: &[(&str, &str)]) -> Page {
        let mut c = String::new();
        write_labels(&mut c, common);
        Page {
            out: String::with_capacity(16 * 1024),
            common: c,
        }
    }

    /// Starts a family: its help line and type. `name` is the full metric name (counters end
    /// in `_total`, as the conventions ask; the caller chooses).
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        self.open_labels(labels);
        self.out.push(' ');
        write_value(&mut self.out, value);
        self.out.push('\n');
    }

    /// A family of one sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A histogram's samples (`_bucket` per bound and `+Inf`, `_sum`, `_count`) from an
    /// HdrHistogram whose values are in units of `1/per_second` s (microseconds: 1e6).
    /// `bounds` in seconds, ascending. A recorded value goes to the first bound at or above
    /// the highest value its HdrHistogram bucket stands for (0.1 % wide at 3 digits), so a
    /// bucket count is never short of the values truly at or below its bound by more than
    /// that rounding.
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        h: &Histogram<u64>,
        per_second: f64,
        bounds: &[f64],
    ) {
        let mut counts = vec![0u64; bounds.len()];
        let mut sum = 0.0;
        for v in h.iter_recorded() {
            let n = v.count_at_value();
            let secs = v.value_iterated_to() as f64 / per_second;
            sum += h.median_equivalent(v.value_iterated_to()) as f64 / per_second * n as f64;
            if let Some(i) = bounds.iter().position(|b| secs <= *b) {
                counts[i] += n;
            }
        }
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        let mut le = String::new();
        for (b, n) in bounds.iter().zip(&counts) {
            cumulative += n;
            le.clear();
            write_value(&mut le, *b);
            let mut l: Vec<(&str, &str)> = labels.to_vec();
            l.push(("le", &le));
            self.sample(&bucket, &l, cumulative as f64);
        }
        let mut l: Vec<(&str, &str)> = labels.to_vec();
        l.push(("le", "+Inf"));
        self.sample(&bucket, &l, h.len() as f64);
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, h.len() as f64);
    }

    pub fn finish(self) -> String {
        self.out
    }

    fn open_labels(&mut self, labels: &[(&str, &str)]) {
        if self.common.is_empty() && labels.is_empty() {
            return;
        }
        self.out.push('{');
        self.out.push_str(&self.common);
        if !self.common.is_empty() && !labels.is_empty() {
            self.out.push(',');
        }
        write_labels(&mut self.out, labels);
        self.out.push('}');
    }
}

fn write_labels(out: &mut String, labels: &[(&str, &str)]) {
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Integers without a fraction (counters read better), the format's spellings of the
/// non-finite values.
fn write_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

/// A metric or label name made valid (`[a-zA-Z_:][a-zA-Z0-9_:]*`): anything else becomes `_`.
pub fn sanitize_name(s: &str) -> String {
    let mut n: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if n.starts_with(|c: char| c.is_ascii_digit()) || n.is_empty() {
        n.insert(0, '_');
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_carry_the_common_labels_escaped() {
        let mut p = Page::new(&[("run", "a\"b\\c\nd")]);
        p.family("x_total", Kind::Counter, "Things.\nMore");
        p.sample("x_total", &[("method", "INVITE"), ("code", "200")], 3.0);
        p.single("y", Kind::Gauge, "Y.", 0.25);
        let page = p.finish();
        assert_eq!(
            page,
            "# HELP x_total Things.\\nMore\n# TYPE x_total counter\n\
             x_total{run=\"a\\\"b\\\\c\\nd\",method=\"INVITE\",code=\"200\"} 3\n\
             # HELP y Y.\n# TYPE y gauge\ny{run=\"a\\\"b\\\\c\\nd\"} 0.25\n"
        );
        let mut p = Page::new(&[]);
        p.single("z", Kind::Gauge, "Z.", f64::NAN);
        assert!(p.finish().ends_with("\nz NaN\n"));
    }

    #[test]
    fn a_histogram_bins_cumulatively_with_inf_sum_and_count() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for us in [300, 800, 900, 1_500, 40_000, 40_000_000] {
            h.record(us).unwrap();
        }
        let mut p = Page::new(&[]);
        p.family("d_seconds", Kind::Histogram, "D.");
        p.histogram("d_seconds", &[], &h, 1e6, &[0.001, 0.01, 0.1, 32.0]);
        let page = p.finish();
        let lines: Vec<&str> = page.lines().skip(2).collect();
        assert_eq!(
            lines[..5],
            [
                "d_seconds_bucket{le=\"0.001\"} 3",
                "d_seconds_bucket{le=\"0.01\"} 4",
                "d_seconds_bucket{le=\"0.1\"} 5",
                "d_seconds_bucket{le=\"32\"} 5",
                "d_seconds_bucket{le=\"+Inf\"} 6",
            ]
        );
        let sum: f64 = lines[5]
            .strip_prefix("d_seconds_sum ")
            .unwrap()
            .parse()
            .unwrap();
        assert!((sum - 40.0435).abs() < 40.0435 * 0.001, "{sum}");
        assert_eq!(lines[6], "d_seconds_count 6");
    }

    #[test]
    fn names_are_made_valid() {
        assert_eq!(sanitize_name("mon_cpu-pcscf"), "mon_cpu_pcscf");
        assert_eq!(sanitize_name("9x"), "_9x");
    }
}
