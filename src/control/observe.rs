//! The read side of telemetry for the control API: stats over a window as
//! JSON, and the view `/metrics` renders (function stats, gateway
//! counters, the workers' gauges from the scheduler and the supervisor,
//! the route table's version).
//!
//! Runs on the control thread; reads shards and boards, never writes them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::clock;
use crate::failure::FailureKind;
use crate::routes::snapshot::SnapshotBoard;
use crate::scheduler::collector::ScoreBoard;
use crate::telemetry::logs::LogService;
use crate::telemetry::metrics::{MetricsView, WorkerGauges};
use crate::telemetry::stats::{FunctionStats, Throttle, Totals, WINDOW_MAX};
use crate::telemetry::{StoreState, Telemetry};
use crate::workers::supervisor::PoolStatus;

/// The points of a latency curve (`?series=1`).
const CURVE_QUANTILES: [f64; 11] = [
    0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1.0,
];

/// The window a stats read covers when it names none.
pub const WINDOW_DEFAULT: Duration = Duration::from_secs(5 * 60);

/// What the control plane reads to answer stats and metrics.
#[derive(Clone)]
pub struct Observed {
    pub telemetry: Arc<Telemetry>,
    pub routes: Arc<SnapshotBoard>,
    pub scores: Arc<ScoreBoard>,
    pub pool: Option<Arc<PoolStatus>>,
    pub logs: Arc<LogService>,
}

/// `30s`, `1m`, `5m`, `1h`: a window of at most [`WINDOW_MAX`].
pub fn parse_window(text: &str) -> Result<Duration, String> {
    clock::parse_duration(text)
        .filter(|window| !window.is_zero() && *window <= WINDOW_MAX)
        .ok_or_else(|| format!("window {text:?} must be like 30s, 1m, 5m or 1h (at most 1h)"))
}

impl Observed {
    /// The stats of every version of `name` over `window`, summed, with a
    /// line per version; `None` when nothing of that name has stats. With
    /// `chart`, also what a chart of it draws: `series`, the calls step by
    /// step (all versions summed; `t_ms` is when a step ended, Unix
    /// milliseconds), and `percentiles`, the latency curve of the window.
    pub fn function_stats(
        &self,
        name: &str,
        window: Duration,
        label: &str,
        chart: bool,
    ) -> Option<Value> {
        let versions = self.telemetry.stats.of(name);
        if versions.is_empty() {
            return None;
        }
        Some(self.summary(name, &versions, window, label, chart))
    }

    /// `series` and `percentiles` of `versions` (see [`Self::function_stats`]),
    /// `whole` being their totals over the window.
    fn chart(
        &self,
        versions: &[Arc<FunctionStats>],
        window: Duration,
        now: Instant,
        whole: &Totals,
    ) -> (Value, Value) {
        let now_ms = clock::unix_now_us() / 1000;
        // Versions are sampled on the same ticks: steps that end together
        // are one step of the function.
        let mut steps: BTreeMap<Instant, (f64, Totals)> = BTreeMap::new();
        for stats in versions {
            for step in self.telemetry.stats.series(stats, window, now) {
                let entry = steps.entry(step.until).or_default();
                entry.0 = entry.0.max(step.seconds);
                entry.1.merge(&step.totals);
            }
        }
        let series: Vec<Value> = steps
            .iter()
            .map(|(until, (seconds, totals))| {
                let ago_ms = now.saturating_duration_since(*until).as_millis();
                json!({
                    "t_ms": now_ms.saturating_sub(u64::try_from(ago_ms).unwrap_or(u64::MAX)),
                    "seconds": (seconds * 1000.0).round() / 1000.0,
                    "count": totals.count(),
                    "errors": totals.errors(),
                    "p50_us": totals.quantile_us(0.5),
                    "p99_us": totals.quantile_us(0.99),
                })
            })
            .collect();
        let percentiles: Vec<Value> = CURVE_QUANTILES
            .iter()
            .map(|&q| json!({ "q": q, "us": whole.quantile_us(q) }))
            .collect();
        (Value::Array(series), Value::Array(percentiles))
    }

    /// Calls, error rate and p99 of `name` over the last 5 minutes, for
    /// the function list; `None` when it has no stats yet.
    pub fn recent_summary(&self, name: &str) -> Option<Value> {
        let full = self.function_stats(name, WINDOW_DEFAULT, "5m", false)?;
        Some(json!({
            "count": full["count"],
            "rps": full["rps"],
            "error_rate": full["error_rate"],
            "p99_us": full["latency_us"]["p99"],
        }))
    }

    /// Every function (and hand-written route) with stats.
    pub fn all_stats(&self, window: Duration, label: &str) -> Value {
        let all = self.telemetry.stats.all();
        let mut functions = Vec::new();
        let mut start = 0;
        while start < all.len() {
            let name = &all[start].name;
            let end = start + all[start..].iter().take_while(|s| &s.name == name).count();
            functions.push(self.summary(name, &all[start..end], window, label, false));
            start = end;
        }
        json!({ "window": label, "functions": functions })
    }

    fn summary(
        &self,
        name: &str,
        versions: &[Arc<FunctionStats>],
        window: Duration,
        label: &str,
        chart: bool,
    ) -> Value {
        let now = Instant::now();
        let mut sum = Totals::default();
        let mut seconds: f64 = 0.0;
        let mut per_version = Vec::with_capacity(versions.len());
        for stats in versions {
            let windowed = self.telemetry.stats.window(stats, window, now);
            seconds = seconds.max(windowed.seconds);
            per_version.push(json!({
                "version": stats.version,
                "count": windowed.totals.count(),
                "errors": windowed.totals.errors(),
            }));
            sum.merge(&windowed.totals);
        }
        let mut value = totals_json(&sum, seconds);
        if let Value::Object(map) = &mut value {
            map.insert("function".into(), name.into());
            map.insert("runtime".into(), versions[0].runtime.into());
            map.insert("window".into(), label.into());
            map.insert("versions".into(), Value::Array(per_version));
            if chart {
                let (series, percentiles) = self.chart(versions, window, now, &sum);
                map.insert("series".into(), series);
                map.insert("percentiles".into(), percentiles);
            }
        }
        value
    }

    /// What `/metrics` shows now.
    pub fn metrics_view(&self) -> MetricsView {
        let table = self.routes.current();
        let scores = self.scores.current();
        let slots = self.pool.as_ref().map(|p| p.snapshot()).unwrap_or_default();
        let workers = slots
            .iter()
            .map(|slot| {
                let score = slot.pid.and_then(|pid| scores.of(slot.worker_id, pid));
                WorkerGauges {
                    worker_id: slot.worker_id,
                    cpu_cores: score.map_or(0.0, |s| s.smoothed.cpu_cores),
                    rss_bytes: score.map_or(0, |s| s.raw.rss_bytes),
                    io_bytes_per_second: score.map_or(0.0, |s| s.raw.io_bytes_per_s as f64),
                    score: score.map_or(0.0, |s| s.score),
                    restarts: slot.restarts,
                    up: slot.pid.is_some() && score.is_some(),
                }
            })
            .collect();
        let store = self.telemetry.store_status();
        MetricsView {
            functions: self.telemetry.stats.all(),
            gateway: self.telemetry.gateway.totals(),
            workers,
            route_table_version: table.version(),
            route_table_skipped_rows: table.skipped().len(),
            route_store_replaced: store.state != StoreState::Open,
            route_store_switches: store.switches,
            route_table_routes: table.routes().len(),
            watcher_lag_seconds: self.telemetry.watcher_lag_seconds(),
            log_lines_written: self.logs.lines_written(),
            log_lines_dropped: self.logs.dropped_lines() + self.logs.lines_rejected(),
        }
    }
}

/// A window's totals as the stats API shows them.
fn totals_json(totals: &Totals, seconds: f64) -> Value {
    let count = totals.count();
    let per_second = |n: u64| {
        if seconds > 0.0 {
            n as f64 / seconds
        } else {
            0.0
        }
    };
    let failures: serde_json::Map<String, Value> = FailureKind::ALL
        .iter()
        .map(|kind| {
            (
                kind.name().to_string(),
                totals.failures[kind.index()].into(),
            )
        })
        .collect();
    let throttled: serde_json::Map<String, Value> = Throttle::ALL
        .iter()
        .map(|t| (t.name().to_string(), totals.throttles[t.index()].into()))
        .collect();
    json!({
        "window_seconds": (seconds * 1000.0).round() / 1000.0,
        "count": count,
        "rps": per_second(count),
        "error_rate": if count > 0 { totals.errors() as f64 / count as f64 } else { 0.0 },
        "status": {
            "1xx": totals.status_classes[0],
            "2xx": totals.status_classes[1],
            "3xx": totals.status_classes[2],
            "4xx": totals.status_classes[3],
            "5xx": totals.status_classes[4],
        },
        "failures": failures,
        "throttled": throttled,
        "cold_starts": totals.cold_starts,
        "in_flight": totals.in_flight,
        "latency_us": {
            "p50": totals.quantile_us(0.5),
            "p90": totals.quantile_us(0.9),
            "p99": totals.quantile_us(0.99),
            "p999": totals.quantile_us(0.999),
            "max": totals.max_us(),
            "mean": totals.duration_us_sum.checked_div(count).unwrap_or(0),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_within_an_hour() {
        assert_eq!(parse_window("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_window("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_window("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_window("30s"), Ok(Duration::from_secs(30)));
        for bad in ["", "m", "0m", "2h", "5x", "-1m", "99999999999999999999h"] {
            assert!(parse_window(bad).is_err(), "{bad}");
        }
    }
}
