//! The report of a run: what was asked, what was measured, and how it is
//! shown (the table on stdout) and saved (JSON, read back by `plot`).
//!
//! Pure formatting over `Stats` and CPU samples; owns the JSON schema
//! (`REPORT_FORMAT_VERSION`) and never touches the network.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::args::{Config, Mode};
use crate::histogram::{LatencySummary, PercentilePoint};
use crate::load::{Counts, Stats};

/// Bumped when a field changes meaning or disappears.
pub const REPORT_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteReport {
    pub method: String,
    pub path: String,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuReport {
    pub pid: u32,
    /// Processes counted at the end of the window (the server and its children).
    pub processes: u32,
    pub cpu_us: u64,
    pub cpu_us_per_request: f64,
}

/// Status classes of the responses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    #[serde(rename = "2xx")]
    pub s2xx: u64,
    #[serde(rename = "3xx")]
    pub s3xx: u64,
    #[serde(rename = "4xx")]
    pub s4xx: u64,
    #[serde(rename = "5xx")]
    pub s5xx: u64,
}

/// Requests that got no response, by why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReport {
    pub connect: u64,
    pub write: u64,
    pub read: u64,
    pub timeout: u64,
    pub total: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub format_version: u32,
    pub target: String,
    /// `closed` or `open`.
    pub mode: String,
    /// Total intended rate in open-loop mode.
    pub rate_rps: Option<f64>,
    pub connections: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub timeout_ms: u64,
    pub routes: Vec<RouteReport>,
    /// Requests sent in the measured window: responses plus errors.
    pub requests: u64,
    pub responses: u64,
    pub throughput_rps: f64,
    pub status: StatusReport,
    pub errors: ErrorReport,
    pub reconnects: u64,
    /// Open loop: requests due before the window ended but never sent (the
    /// connections were behind schedule). Not part of `requests`.
    pub unsent: u64,
    pub server_cpu: Option<CpuReport>,
    /// The load generator's own CPU per request, for scale.
    pub client_cpu_us_per_request: Option<f64>,
    pub latency_us: LatencySummary,
    pub percentiles: Vec<PercentilePoint>,
}

/// CPU time measured over the window.
pub struct CpuWindow {
    pub server: Option<(u32, u32, u64)>,
    pub client_cpu_us: Option<u64>,
}

fn per_request(cpu_us: u64, requests: u64) -> f64 {
    if requests == 0 {
        0.0
    } else {
        cpu_us as f64 / requests as f64
    }
}

impl Report {
    pub fn new(config: &Config, stats: &Stats, cpu: &CpuWindow) -> Report {
        let c: &Counts = &stats.counts;
        let duration_s = config.duration.as_secs_f64();
        let responses = c.status_2xx + c.status_3xx + c.status_4xx + c.status_5xx;
        debug_assert_eq!(responses + c.errors(), c.requests);
        let (mode, rate_rps) = match config.mode {
            Mode::Closed => ("closed", None),
            Mode::Open { rate_rps } => ("open", Some(rate_rps)),
        };
        Report {
            format_version: REPORT_FORMAT_VERSION,
            target: format!("http://{}{}", config.target.host, config.target.path),
            mode: mode.to_string(),
            rate_rps,
            connections: config.connections,
            warmup_s: config.warmup.as_secs_f64(),
            duration_s,
            timeout_ms: config.timeout.as_millis() as u64,
            routes: config
                .routes
                .iter()
                .map(|r| RouteReport {
                    method: r.method.clone(),
                    path: r.path.clone(),
                    weight: r.weight,
                })
                .collect(),
            requests: c.requests,
            responses,
            throughput_rps: c.requests as f64 / duration_s,
            status: StatusReport {
                s2xx: c.status_2xx,
                s3xx: c.status_3xx,
                s4xx: c.status_4xx,
                s5xx: c.status_5xx,
            },
            errors: ErrorReport {
                connect: c.errors_connect,
                write: c.errors_write,
                read: c.errors_read,
                timeout: c.errors_timeout,
                total: c.errors(),
            },
            reconnects: c.reconnects,
            unsent: c.unsent,
            server_cpu: cpu.server.map(|(pid, processes, cpu_us)| CpuReport {
                pid,
                processes,
                cpu_us,
                cpu_us_per_request: per_request(cpu_us, c.requests),
            }),
            client_cpu_us_per_request: cpu.client_cpu_us.map(|us| per_request(us, c.requests)),
            latency_us: stats.latency.summary(),
            percentiles: stats.latency.percentiles(),
        }
    }

    /// The human table printed on stdout.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let mode = match self.rate_rps {
            Some(r) => format!(
                "open loop at {} req/s (latency from intended send time)",
                group(r.round() as u64)
            ),
            None => "closed loop".to_string(),
        };
        let _ = writeln!(t, "{} — {mode}", self.target);
        let _ = writeln!(
            t,
            "{} connections, {} s measured after {} s warm-up, timeout {} ms",
            self.connections, self.duration_s, self.warmup_s, self.timeout_ms
        );
        let routes: Vec<String> = self
            .routes
            .iter()
            .map(|r| format!("{} {} ×{}", r.method, r.path, r.weight))
            .collect();
        let _ = writeln!(t, "routes: {}\n", routes.join(", "));
        let row = |t: &mut String, name: &str, value: String| {
            let _ = writeln!(t, "  {name:<28} {value:>12}");
        };
        row(&mut t, "requests", group(self.requests));
        row(&mut t, "throughput req/s", group_f1(self.throughput_rps));
        match &self.server_cpu {
            Some(c) => row(
                &mut t,
                &format!("server CPU µs/req ({} procs)", c.processes),
                format!("{:.2}", c.cpu_us_per_request),
            ),
            None => row(&mut t, "server CPU µs/req", "(no --server-pid)".to_string()),
        }
        if let Some(c) = self.client_cpu_us_per_request {
            row(&mut t, "client CPU µs/req", format!("{c:.2}"));
        }
        let l = &self.latency_us;
        let ms = |us: u64| format!("{:.3}", us as f64 / 1000.0);
        row(&mut t, "latency p50 ms", ms(l.p50_us));
        row(&mut t, "latency p90 ms", ms(l.p90_us));
        row(&mut t, "latency p99 ms", ms(l.p99_us));
        row(&mut t, "latency p99.9 ms", ms(l.p999_us));
        row(&mut t, "latency p99.99 ms", ms(l.p9999_us));
        row(&mut t, "latency max ms", ms(l.max_us));
        row(&mut t, "status 2xx", group(self.status.s2xx));
        row(&mut t, "status 3xx", group(self.status.s3xx));
        row(&mut t, "status 4xx", group(self.status.s4xx));
        row(&mut t, "status 5xx", group(self.status.s5xx));
        let e = &self.errors;
        row(&mut t, "errors connect", group(e.connect));
        row(&mut t, "errors write", group(e.write));
        row(&mut t, "errors read", group(e.read));
        row(&mut t, "errors timeout", group(e.timeout));
        row(&mut t, "reconnects (close)", group(self.reconnects));
        if self.rate_rps.is_some() {
            row(&mut t, "unsent (behind schedule)", group(self.unsent));
        }
        t
    }
}

/// `1234567` → `1,234,567`.
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// `86796.44` → `86,796.4`.
fn group_f1(v: f64) -> String {
    let tenths = (v.max(0.0) * 10.0).round() as u64;
    format!("{}.{}", group(tenths / 10), tenths % 10)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::RunArgs;
    use clap::Parser;

    fn sample_report() -> Report {
        let config = RunArgs::parse_from([
            "corefn-bench",
            "http://127.0.0.1:9/",
            "--route",
            "GET /hello 3",
            "--route",
            "GET /missing",
            "--rate",
            "500",
            "-d",
            "2",
        ])
        .into_config()
        .unwrap();
        let mut stats = Stats::default();
        for v in 1..=1000 {
            stats.latency.record_us(v);
        }
        stats.counts = Counts {
            requests: 1003,
            status_2xx: 900,
            status_4xx: 100,
            errors_timeout: 2,
            errors_connect: 1,
            ..Counts::default()
        };
        let cpu = CpuWindow {
            server: Some((42, 3, 20_060)),
            client_cpu_us: Some(10_030),
        };
        Report::new(&config, &stats, &cpu)
    }

    #[test]
    fn json_report_round_trips_with_its_documented_fields() {
        let r = sample_report();
        let json = serde_json::to_string_pretty(&r).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["format_version"], 1);
        assert_eq!(v["mode"], "open");
        assert_eq!(v["rate_rps"], 500.0);
        assert_eq!(v["requests"], 1003);
        assert_eq!(v["responses"], 1000);
        assert_eq!(v["throughput_rps"], 501.5);
        assert_eq!(v["status"]["2xx"], 900);
        assert_eq!(v["status"]["4xx"], 100);
        assert_eq!(v["errors"]["timeout"], 2);
        assert_eq!(v["errors"]["total"], 3);
        assert_eq!(v["unsent"], 0);
        assert_eq!(v["server_cpu"]["cpu_us_per_request"], 20.0);
        assert_eq!(v["client_cpu_us_per_request"], 10.0);
        assert_eq!(v["routes"][0]["path"], "/hello");
        assert_eq!(v["routes"][0]["weight"], 3);
        assert!(v["latency_us"]["p99_us"].as_u64().unwrap() >= 989);
        assert_eq!(
            v["percentiles"].as_array().unwrap().last().unwrap()["quantile"],
            1.0
        );
        // Read back by `plot`; floats may move in their last bit.
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back.percentiles.len(), r.percentiles.len());
        assert_eq!(back.status, r.status);
        assert_eq!(back.latency_us.p99_us, r.latency_us.p99_us);
    }

    #[test]
    fn table_shows_every_headline_figure() {
        let t = sample_report().table();
        for needle in ["open loop at 500 req/s", "GET /hello ×3, GET /missing ×1"] {
            assert!(t.contains(needle), "{needle:?} missing from\n{t}");
        }
        for (name, value) in [
            ("requests", "1,003"),
            ("server CPU µs/req (3 procs)", "20.00"),
            ("client CPU µs/req", "10.00"),
            ("latency p99.99 ms", "1.000"),
            ("status 4xx", "100"),
            ("errors timeout", "2"),
            ("unsent (behind schedule)", "0"),
        ] {
            let line = t
                .lines()
                .find(|l| l.trim_start().starts_with(name))
                .unwrap_or_else(|| panic!("no {name:?} row in\n{t}"));
            assert!(line.ends_with(value), "{line:?}");
            assert_eq!(line.chars().count(), 43, "{line:?} misaligned");
        }
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1234567), "1,234,567");
        assert_eq!(group_f1(86796.44), "86,796.4");
        assert_eq!(group_f1(0.0), "0.0");
    }
}
