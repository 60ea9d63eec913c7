//! `GET /metrics`: the Prometheus text exposition format (version 0.0.4)
//! of the function stats, the gateway's counters and the workers' gauges.
//!
//! A small writer rather than a metrics crate: the numbers already live in
//! [`super::stats`] and [`super::gateway`] (single-writer shards the cores
//! own), so rendering is reading them and formatting text; a registry of
//! its own would mean a second copy on the request path. The output is
//! checked by a real Prometheus in the integration tests.
//!
//! Pure: takes a [`MetricsView`] that the caller filled, returns text.
//! Never called on a core.

use std::fmt::Write as _;
use std::sync::Arc;

use super::gateway::{GatewayTotals, ParseError};
use super::stats::{FunctionStats, Throttle, Totals};
use crate::failure::FailureKind;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds of `corefn_function_duration_seconds`, in seconds.
const DURATION_BUCKETS_SECONDS: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];
const STATUS_CLASS_LABELS: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// One worker's gauges, as the scheduler and the supervisor see it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerGauges {
    pub worker_id: usize,
    /// Smoothed CPU use in cores.
    pub cpu_cores: f64,
    pub rss_bytes: u64,
    pub io_bytes_per_second: f64,
    /// The scheduler's score, 0 (idle) ..= 1.
    pub score: f64,
    pub restarts: u64,
    pub up: bool,
}

/// Everything `/metrics` shows, read by the caller.
#[derive(Debug, Default)]
pub struct MetricsView {
    pub functions: Vec<Arc<FunctionStats>>,
    pub gateway: GatewayTotals,
    pub workers: Vec<WorkerGauges>,
    pub route_table_version: u64,
    pub route_table_routes: usize,
    /// Rows of the store the table left out (invalid, or code from where
    /// none may come): each is also under `skipped` in `/_/routes`.
    pub route_table_skipped_rows: usize,
    /// The routes do not come from a usable file at the store's path.
    pub route_store_replaced: bool,
    /// Times the watcher switched to a new file at the store's path.
    pub route_store_switches: u64,
    /// Seconds since the route watcher last read the store.
    pub watcher_lag_seconds: f64,
    pub log_lines_written: u64,
    pub log_lines_dropped: u64,
}

/// A metric family being written: its header once, then samples.
struct Family<'o> {
    out: &'o mut String,
    name: &'static str,
}

impl Family<'_> {
    fn sample(&mut self, suffix: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(self.name);
        self.out.push_str(suffix);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (name, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(name);
                self.out.push_str("=\"");
                escape_label_value(self.out, value);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        push_value(self.out, value);
        self.out.push('\n');
    }
}

fn family<'o>(out: &'o mut String, name: &'static str, kind: &str, help: &str) -> Family<'o> {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    Family { out, name }
}

/// Label values escape backslash, double quote and line feed.
fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn push_value(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        let _ = write!(out, "{}", value as i64);
    } else {
        let _ = write!(out, "{value}");
    }
}

/// Totals per function name (versions summed), in name order.
fn by_function(functions: &[Arc<FunctionStats>]) -> Vec<(&str, &'static str, Totals)> {
    let mut out: Vec<(&str, &'static str, Totals)> = Vec::new();
    for stats in functions {
        let totals = stats.totals();
        match out.last_mut() {
            Some((name, _, sum)) if *name == stats.name => sum.merge(&totals),
            _ => out.push((&stats.name, stats.runtime, totals)),
        }
    }
    out
}

pub fn render(view: &MetricsView) -> String {
    let mut out = String::with_capacity(4096 + view.functions.len() * 4096);
    let per_version: Vec<(&FunctionStats, Totals)> = view
        .functions
        .iter()
        .map(|s| (s.as_ref(), s.totals()))
        .collect();
    let per_function = by_function(&view.functions);

    let mut f = family(
        &mut out,
        "corefn_function_invocations_total",
        "counter",
        "Calls of a function answered, by version and status class.",
    );
    for (stats, totals) in &per_version {
        let version = stats.version.to_string();
        for (class, label) in STATUS_CLASS_LABELS.iter().enumerate().skip(1) {
            f.sample(
                "",
                &[
                    ("function", &stats.name),
                    ("version", &version),
                    ("code", label),
                ],
                totals.status_classes[class] as f64,
            );
        }
    }

    let mut f = family(
        &mut out,
        "corefn_function_duration_seconds",
        "histogram",
        "Time from a request's head to its answer, for calls of a function.",
    );
    for (name, _, totals) in &per_function {
        for bound in DURATION_BUCKETS_SECONDS {
            let bound_us = (bound * 1e6).round() as u64;
            let le = format!("{bound}");
            f.sample(
                "_bucket",
                &[("function", name), ("le", &le)],
                totals.count_below_us(bound_us + 1) as f64,
            );
        }
        let count = totals.count() as f64;
        f.sample("_bucket", &[("function", name), ("le", "+Inf")], count);
        f.sample(
            "_sum",
            &[("function", name)],
            totals.duration_us_sum as f64 / 1e6,
        );
        f.sample("_count", &[("function", name)], count);
    }

    let mut f = family(
        &mut out,
        "corefn_function_in_flight",
        "gauge",
        "Calls of a function handed to a worker and not yet answered.",
    );
    for (name, _, totals) in &per_function {
        f.sample("", &[("function", name)], totals.in_flight as f64);
    }

    let mut f = family(
        &mut out,
        "corefn_function_cold_starts_total",
        "counter",
        "Calls that started a language host, loaded a wasm module or a native library.",
    );
    for (name, runtime, totals) in &per_function {
        f.sample(
            "",
            &[("function", name), ("runtime", runtime)],
            totals.cold_starts as f64,
        );
    }

    let mut f = family(
        &mut out,
        "corefn_function_throttled_total",
        "counter",
        "Calls turned away: rate limit (429), concurrency, busy instances, no worker (503).",
    );
    for (name, _, totals) in &per_function {
        for throttle in Throttle::ALL {
            f.sample(
                "",
                &[("function", name), ("reason", throttle.name())],
                totals.throttles[throttle.index()] as f64,
            );
        }
    }

    let mut f = family(
        &mut out,
        "corefn_function_failures_total",
        "counter",
        "Calls that failed, by how.",
    );
    for (name, _, totals) in &per_function {
        for kind in FailureKind::ALL {
            f.sample(
                "",
                &[("function", name), ("kind", kind.name())],
                totals.failures[kind.index()] as f64,
            );
        }
    }

    render_workers(&mut out, &view.workers);
    render_gateway(&mut out, view);
    out
}

fn render_workers(out: &mut String, workers: &[WorkerGauges]) {
    type Gauge = (&'static str, &'static str, fn(&WorkerGauges) -> f64);
    let gauges: [Gauge; 5] = [
        (
            "corefn_worker_cpu_cores",
            "Smoothed CPU use of a worker process and its children, in cores.",
            |w| w.cpu_cores,
        ),
        (
            "corefn_worker_rss_bytes",
            "Resident memory of a worker process and its children.",
            |w| w.rss_bytes as f64,
        ),
        (
            "corefn_worker_io_bytes_per_second",
            "Smoothed disk I/O of a worker process and its children.",
            |w| w.io_bytes_per_second,
        ),
        (
            "corefn_worker_score",
            "The scheduler's load score of a worker (0 idle, 1 saturated).",
            |w| w.score,
        ),
        (
            "corefn_worker_up",
            "1 while the worker process runs and reports.",
            |w| f64::from(u8::from(w.up)),
        ),
    ];
    for (name, help, value) in gauges {
        let mut f = family(out, name, "gauge", help);
        for worker in workers {
            let id = worker.worker_id.to_string();
            f.sample("", &[("worker", &id)], value(worker));
        }
    }
    let mut f = family(
        out,
        "corefn_worker_restarts_total",
        "counter",
        "Times a worker process was started again after it ended.",
    );
    for worker in workers {
        let id = worker.worker_id.to_string();
        f.sample("", &[("worker", &id)], worker.restarts as f64);
    }
}

fn render_gateway(out: &mut String, view: &MetricsView) {
    let gateway = &view.gateway;
    // Families of one unlabelled sample each: (name, type, help, value).
    let scalars: [(&'static str, &str, &str, f64); 10] = [
        (
            "corefn_gateway_open_connections",
            "gauge",
            "Client connections open now.",
            gateway.connections_open as f64,
        ),
        (
            "corefn_gateway_connections_total",
            "counter",
            "Client connections accepted.",
            gateway.connections_accepted as f64,
        ),
        (
            "corefn_route_table_version",
            "gauge",
            "Version of the route table the cores serve.",
            view.route_table_version as f64,
        ),
        (
            "corefn_route_table_routes",
            "gauge",
            "Routes in the table the cores serve.",
            view.route_table_routes as f64,
        ),
        (
            "corefn_route_table_skipped_rows",
            "gauge",
            "Rows of the route store the served table left out (see /_/routes).",
            view.route_table_skipped_rows as f64,
        ),
        (
            "corefn_route_store_replaced",
            "gauge",
            "1 while the route store's path names no usable store (another file not switched to yet, none, or an emptied one): the last table keeps serving.",
            if view.route_store_replaced { 1.0 } else { 0.0 },
        ),
        (
            "corefn_route_store_switches_total",
            "counter",
            "Times the route watcher switched to a new file at the store's path.",
            view.route_store_switches as f64,
        ),
        (
            "corefn_route_watcher_lag_seconds",
            "gauge",
            "Seconds since the route watcher last read the store.",
            view.watcher_lag_seconds,
        ),
        (
            "corefn_log_lines_written_total",
            "counter",
            "Function log lines written to files.",
            view.log_lines_written as f64,
        ),
        (
            "corefn_log_lines_dropped_total",
            "counter",
            "Function log lines dropped: a worker's channel was full or a follower read too slowly.",
            view.log_lines_dropped as f64,
        ),
    ];
    for (name, kind, help, value) in scalars {
        family(out, name, kind, help).sample("", &[], value);
    }
    let mut f = family(
        out,
        "corefn_gateway_requests_total",
        "counter",
        "Responses sent, by status class (every route, admin read and API call).",
    );
    for (class, label) in STATUS_CLASS_LABELS.iter().enumerate() {
        f.sample("", &[("code", label)], gateway.responses[class] as f64);
    }
    let mut f = family(
        out,
        "corefn_gateway_parse_errors_total",
        "counter",
        "Requests refused before routing, by reason.",
    );
    for reason in ParseError::ALL {
        f.sample(
            "",
            &[("reason", reason.name())],
            gateway.parse_errors[reason.index()] as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::stats::{CallOutcome, StatsRegistry};

    #[test]
    fn families_have_help_type_and_escaped_labels() {
        let registry = StatsRegistry::new(2);
        let a = registry.get_or_create("greet", 1, "wasm");
        let b = registry.get_or_create("greet", 2, "wasm");
        let odd = registry.get_or_create("GET:/say \"hi\"\\", 0, "exec");
        let ok = |us| CallOutcome {
            status: 200,
            duration_us: us,
            failure: None,
            cold_start: false,
            throttle: None,
        };
        a.shard(0).record(&ok(500));
        b.shard(1).record(&ok(1_500));
        b.shard(1).record(&CallOutcome {
            status: 502,
            failure: Some(FailureKind::Trap),
            ..ok(2_000_000)
        });
        odd.shard(0).record(&ok(1));
        let text = render(&MetricsView {
            functions: registry.all(),
            workers: vec![WorkerGauges {
                worker_id: 0,
                cpu_cores: 0.25,
                rss_bytes: 1 << 20,
                io_bytes_per_second: 0.0,
                score: 0.1,
                restarts: 2,
                up: true,
            }],
            route_table_version: 7,
            ..MetricsView::default()
        });
        assert!(text.contains(
            "corefn_function_invocations_total{function=\"greet\",version=\"2\",code=\"5xx\"} 1\n"
        ));
        assert!(text.contains(
            "corefn_function_duration_seconds_bucket{function=\"greet\",le=\"0.001\"} 1\n"
        ));
        assert!(text.contains(
            "corefn_function_duration_seconds_bucket{function=\"greet\",le=\"+Inf\"} 3\n"
        ));
        assert!(text.contains("corefn_function_duration_seconds_count{function=\"greet\"} 3\n"));
        assert!(
            text.contains("corefn_function_failures_total{function=\"greet\",kind=\"trap\"} 1\n")
        );
        assert!(text.contains("function=\"GET:/say \\\"hi\\\"\\\\\""));
        assert!(text.contains("corefn_worker_restarts_total{worker=\"0\"} 2\n"));
        assert!(text.contains("corefn_worker_cpu_cores{worker=\"0\"} 0.25\n"));
        assert!(text.contains("corefn_route_table_version 7\n"));
        // Every sample line belongs to a family declared above it.
        let mut declared = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap_or("").to_string());
            } else if !line.starts_with('#') {
                let name: String = line
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    declared.iter().any(|d| name.starts_with(d.as_str())),
                    "{line}"
                );
            }
        }
        // Declared once each.
        let mut unique = declared.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), declared.len());
    }
}
