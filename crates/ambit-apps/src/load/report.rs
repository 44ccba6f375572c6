//! The load generator's result: the `Report` type, latency percentiles and the table/JSON renderings.

use std::collections::BTreeMap;

use comfy_table::{Cell, CellAlignment, Table, presets};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// What kind of traffic was generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// HTTP/1.1 requests over keep-alive connections.
    Http,
    /// One HTTP/1.1 request (`connection: close`) per new TCP connection.
    HttpNewConnection,
    /// TCP request/response over persistent connections.
    Tcp,
    /// One TCP request/response per new TCP connection.
    TcpNewConnection,
    /// One-way throughput into a sink listener.
    Bulk,
}

impl Mode {
    /// The snake_case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Http => "http",
            Mode::HttpNewConnection => "http_new_connection",
            Mode::Tcp => "tcp",
            Mode::TcpNewConnection => "tcp_new_connection",
            Mode::Bulk => "bulk",
        }
    }
}

/// Latency percentiles in microseconds.
///
/// Percentiles follow HdrHistogram semantics: the highest value equivalent (at
/// the histogram's precision) to the recorded value at that quantile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

/// Summarize a latency histogram (microseconds); all zeros when it is empty.
pub fn summarize(histogram: &Histogram<u64>) -> LatencySummary {
    if histogram.is_empty() {
        return LatencySummary::default();
    }
    LatencySummary {
        p50: histogram.value_at_quantile(0.5),
        p90: histogram.value_at_quantile(0.9),
        p99: histogram.value_at_quantile(0.99),
        p999: histogram.value_at_quantile(0.999),
        max: histogram.max(),
        mean: histogram.mean(),
    }
}

/// Failed requests by cause.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorsByKind {
    /// The TCP connection could not be established.
    pub connect: u64,
    /// The request did not complete within `--timeout`.
    pub timeout: u64,
    /// Read or write failed, or the peer closed the connection early.
    pub io: u64,
    /// The response was malformed (or, in bulk mode, the count did not match).
    pub protocol: u64,
    /// The HTTP status was not 2xx or 3xx (see `errors_by_status`).
    pub status: u64,
}

impl ErrorsByKind {
    pub fn total(&self) -> u64 {
        self.connect + self.timeout + self.io + self.protocol + self.status
    }

    pub(crate) fn add(&mut self, other: &ErrorsByKind) {
        self.connect += other.connect;
        self.timeout += other.timeout;
        self.io += other.io;
        self.protocol += other.protocol;
        self.status += other.status;
    }
}

/// The result of a load run; serialized as the `-o json` output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub mode: Mode,
    /// The URL or `HOST:PORT` that was targeted.
    pub target: String,
    pub connections: usize,
    /// Target request rate in requests/s; `null` for closed-loop runs.
    pub rate: Option<f64>,
    /// Successful requests (in bulk mode: streams whose byte count was confirmed).
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    pub errors_by_kind: ErrorsByKind,
    /// HTTP status errors by status code.
    pub errors_by_status: BTreeMap<u16, u64>,
    /// Measured time (warm-up excluded), in seconds.
    pub duration_s: f64,
    /// Successful requests per second.
    pub requests_per_sec: f64,
    /// Payload bytes received (bulk mode: bytes confirmed by the sink).
    pub bytes: u64,
    pub bytes_per_sec: f64,
    pub latency_us: LatencySummary,
}

impl Report {
    /// The report as one JSON object.
    pub fn to_json(&self) -> String {
        // Serializing this plain struct (string keys, finite or null numbers) cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The report as a human-readable table.
    pub fn to_table(&self) -> Table {
        let mut table = Table::new();
        table.load_style(presets::UTF8_FULL_CONDENSED);
        table.set_header(["metric", "value"]);
        let mut row = |name: &str, value: String| {
            table.add_row([Cell::new(name), Cell::new(value)]);
        };
        row("target", self.target.clone());
        row("mode", self.mode.as_str().to_owned());
        row("connections", self.connections.to_string());
        if let Some(rate) = self.rate {
            row("target rate", format!("{rate} req/s"));
        }
        row("duration", format!("{:.3} s", self.duration_s));
        row("requests (ok)", self.requests.to_string());
        row("errors", self.errors_text());
        row("requests/s", format!("{:.1}", self.requests_per_sec));
        row(
            "throughput",
            format!("{} ({} bytes)", format_bytes_per_sec(self.bytes_per_sec), self.bytes),
        );
        if self.mode != Mode::Bulk {
            let l = &self.latency_us;
            row("latency p50", format_micros(l.p50));
            row("latency p90", format_micros(l.p90));
            row("latency p99", format_micros(l.p99));
            row("latency p99.9", format_micros(l.p999));
            row("latency max", format_micros(l.max));
            row("latency mean", format_micros(l.mean.round() as u64));
        }
        if let Some(column) = table.column_mut(1) {
            column.set_cell_alignment(CellAlignment::Right);
        }
        table
    }

    fn errors_text(&self) -> String {
        if self.errors == 0 {
            return "0".to_owned();
        }
        let k = &self.errors_by_kind;
        let mut parts: Vec<String> = [
            ("connect", k.connect),
            ("timeout", k.timeout),
            ("io", k.io),
            ("protocol", k.protocol),
        ]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{name}={n}"))
        .collect();
        parts.extend(
            self.errors_by_status
                .iter()
                .map(|(status, n)| format!("status {status}={n}")),
        );
        format!("{} ({})", self.errors, parts.join(", "))
    }
}

/// Microseconds as a human duration: `850 µs`, `12.34 ms`, `1.50 s`.
pub fn format_micros(us: u64) -> String {
    if us < 1_000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.2} ms", us as f64 / 1e3)
    } else {
        format!("{:.2} s", us as f64 / 1e6)
    }
}

/// Bytes per second in binary units plus bits per second.
pub fn format_bytes_per_sec(bps: f64) -> String {
    const UNITS: [&str; 5] = ["B/s", "KiB/s", "MiB/s", "GiB/s", "TiB/s"];
    let mut value = bps;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2} {}, {:.3} Gbit/s", UNITS[unit], bps * 8.0 / 1e9)
}

/// Highest latency a histogram records (1 hour, in microseconds); larger values saturate.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

/// A latency histogram as used by the load generator: 1 µs to 1 hour, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // Invariant: the constant bounds satisfy `new_with_bounds` (low >= 1, high >= 2 * low,
    // sigfig <= 5), so creation cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid constant histogram bounds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_distribution() {
        let mut h = new_histogram();
        for v in 1..=100_000u64 {
            h.record(v).unwrap();
        }
        let s = summarize(&h);
        // Within the histogram's precision (3 significant digits).
        let near = |actual: u64, expected: u64| {
            assert!(
                actual.abs_diff(expected) <= expected / 1000,
                "{actual} not within 0.1% of {expected}"
            );
        };
        near(s.p50, 50_000);
        near(s.p90, 90_000);
        near(s.p99, 99_000);
        near(s.p999, 99_900);
        near(s.max, 100_000);
        // Exact HDR values: the highest value of the bucket holding the
        // quantile's sample. Buckets are 32 wide in [32768, 65536) and 64 wide in
        // [65536, 131072).
        assert_eq!(s.p50, 50_015); // bucket [49984, 50015]
        assert_eq!(s.p90, 90_047); // bucket [89984, 90047]
        assert_eq!(s.p99, 99_007); // bucket [98944, 99007]
        assert_eq!(s.p999, 99_903); // bucket [99840, 99903]
        assert_eq!(s.max, 100_031); // bucket [99968, 100031]
        assert!((s.mean - 50_000.5).abs() < 50.0, "mean {}", s.mean);
    }

    #[test]
    fn skewed_distribution() {
        let mut h = new_histogram();
        h.record_n(100, 990).unwrap();
        h.record_n(50_000, 10).unwrap();
        let s = summarize(&h);
        // 100 is below 2048, where buckets are 1 wide: exact.
        assert_eq!(s.p50, 100);
        assert_eq!(s.p90, 100);
        // The 990th of 1000 samples is still 100.
        assert_eq!(s.p99, 100);
        // The 999th sample is 50_000, reported as the top of its bucket [49984, 50015].
        assert_eq!(s.p999, 50_015);
        assert_eq!(s.max, 50_015);
        assert!(h.equivalent(s.p999, 50_000));
    }

    #[test]
    fn empty_histogram_is_zero() {
        assert_eq!(summarize(&new_histogram()), LatencySummary::default());
    }

    #[test]
    fn human_formats() {
        assert_eq!(format_micros(850), "850 µs");
        assert_eq!(format_micros(12_340), "12.34 ms");
        assert_eq!(format_micros(1_500_000), "1.50 s");
        assert!(format_bytes_per_sec(2.0 * 1024.0 * 1024.0).starts_with("2.00 MiB/s"));
    }

    #[test]
    fn json_round_trip() {
        let mut errors_by_status = BTreeMap::new();
        errors_by_status.insert(503, 7);
        let report = Report {
            mode: Mode::HttpNewConnection,
            target: "http://127.0.0.1:1/".to_owned(),
            connections: 2,
            rate: None,
            requests: 10,
            errors: 7,
            errors_by_kind: ErrorsByKind {
                status: 7,
                ..ErrorsByKind::default()
            },
            errors_by_status,
            duration_s: 1.0,
            requests_per_sec: 10.0,
            bytes: 100,
            bytes_per_sec: 100.0,
            latency_us: LatencySummary {
                p50: 1,
                p90: 2,
                p99: 3,
                p999: 4,
                max: 5,
                mean: 1.5,
            },
        };
        let json = report.to_json();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["mode"], "http_new_connection");
        assert_eq!(value["errors_by_kind"]["status"], 7);
        assert_eq!(value["errors_by_status"]["503"], 7);
        assert_eq!(value["latency_us"]["p999"], 4);
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
        let table = report.to_table().to_string();
        assert!(table.contains("status 503=7"), "{table}");
    }
}
