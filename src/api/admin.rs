//! Admin endpoints: `GET /_/health`, `GET /_/routes`, `GET /_/workers`,
//! and the web console's files ([`super::console`]).

use std::borrow::Cow;

use serde::Serialize;

use super::console;
use crate::http::error::HttpError;
use crate::routes::key::{MethodMatch, PathPattern};
use crate::routes::table::RouteTable;
use crate::telemetry::{StoreStatus, Telemetry};
use crate::workers::pool::CoreWorkers;
use crate::workers::supervisor::PoolStatus;

/// A rendered admin answer: status, content type, body.
pub struct AdminResponse {
    pub status: u16,
    pub content_type: &'static str,
    /// Headers besides the content type.
    pub headers: &'static [(&'static str, &'static str)],
    pub body: Cow<'static, [u8]>,
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    version: u64,
}

#[derive(Serialize)]
struct RoutesView<'t> {
    version: u64,
    routes: Vec<RouteView<'t>>,
    skipped: Vec<SkippedView<'t>>,
    /// Whether these routes still come from the file at the store's path.
    store: StoreStatus,
}

#[derive(Serialize)]
struct RouteView<'t> {
    key: &'t str,
    method: &'static str,
    path: String,
    runtime: &'static str,
    updated: i64,
}

#[derive(Serialize)]
struct SkippedView<'t> {
    key: &'t str,
    reason: &'t str,
}

/// What the admin endpoints may read on the core that answers.
pub struct AdminContext<'c> {
    pub table: &'c RouteTable,
    pub core_index: usize,
    pub workers: &'c CoreWorkers,
    pub pool_status: Option<&'c PoolStatus>,
    pub telemetry: &'c Telemetry,
}

/// `path` starts with `/_/` (or is `/_`).
pub fn respond(
    method: &str,
    path: &str,
    context: &AdminContext<'_>,
) -> Result<AdminResponse, HttpError> {
    let table = context.table;
    if let Some(asset) = console::asset(path) {
        require_read(method, path)?;
        return Ok(AdminResponse {
            status: 200,
            content_type: asset.content_type,
            headers: &console::HEADERS,
            body: Cow::Borrowed(asset.body),
        });
    }
    let body = match path {
        "/_/workers" => serde_json::to_vec(&workers_view(context)),
        "/_/health" => serde_json::to_vec(&Health {
            status: "ok",
            version: table.version(),
        }),
        "/_/routes" => serde_json::to_vec(&routes_view(table, context.telemetry.store_status())),
        _ => {
            return Err(HttpError::NotFound {
                method: method.into(),
                path: path.into(),
            })
        }
    };
    require_read(method, path)?;
    let mut body = body.unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}").into_bytes());
    body.push(b'\n');
    Ok(AdminResponse {
        status: 200,
        content_type: "application/json",
        headers: &[],
        body: Cow::Owned(body),
    })
}

fn require_read(method: &str, path: &str) -> Result<(), HttpError> {
    if method == "GET" || method == "HEAD" {
        return Ok(());
    }
    Err(HttpError::MethodNotAllowed {
        method: method.into(),
        path: path.into(),
        allow: "GET, HEAD".into(),
    })
}

#[derive(Serialize)]
struct WorkersView {
    /// The core that answered: `in_flight` and `served_by_this_core` are its own.
    core: usize,
    datagrams_received: u64,
    datagrams_rejected: u64,
    workers: Vec<WorkerView>,
}

#[derive(Serialize)]
struct WorkerView {
    id: usize,
    pid: Option<u32>,
    state: &'static str,
    restarts: u64,
    score: Option<f64>,
    last_report_ms_ago: Option<u64>,
    raw: Option<Figures>,
    smoothed: Option<Figures>,
    normalised: Option<Figures>,
    /// Requests this worker finished, as it last reported.
    requests_served: Option<u64>,
    /// Requests of this core in flight on it now.
    in_flight: u32,
    served_by_this_core: u64,
}

#[derive(Serialize)]
struct Figures {
    cpu: f64,
    mem: f64,
    io: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    in_flight: Option<u32>,
}

fn workers_view(context: &AdminContext<'_>) -> WorkersView {
    let scores = context.workers.scores.get();
    let links = context.workers.links();
    let slots = context
        .pool_status
        .map(PoolStatus::snapshot)
        .unwrap_or_default();
    let now = std::time::Instant::now();
    let workers = slots
        .iter()
        .map(|slot| {
            let link = links
                .iter()
                .rev()
                .find(|l| l.worker_id == slot.worker_id && Some(l.pid) == slot.pid);
            let score = slot.pid.and_then(|pid| scores.of(slot.worker_id, pid));
            let state = match (slot.state, link) {
                ("running", Some(link)) if !context.workers.is_fresh(link, &scores, now) => "stale",
                (state, _) => state,
            };
            WorkerView {
                id: slot.worker_id,
                pid: slot.pid,
                state,
                restarts: slot.restarts,
                score: score.map(|s| s.score),
                last_report_ms_ago: score
                    .map(|s| now.saturating_duration_since(s.last_report).as_millis() as u64),
                raw: score.map(|s| Figures {
                    cpu: f64::from(s.raw.cpu_ppm) / 1e6,
                    mem: s.raw.rss_bytes as f64,
                    io: s.raw.io_bytes_per_s as f64,
                    in_flight: Some(s.raw.in_flight),
                }),
                smoothed: score.map(|s| Figures {
                    cpu: s.smoothed.cpu_cores,
                    mem: s.smoothed.rss_bytes,
                    io: s.smoothed.io_bytes_per_s,
                    in_flight: None,
                }),
                normalised: score.map(|s| Figures {
                    cpu: s.normalised.cpu,
                    mem: s.normalised.mem,
                    io: s.normalised.io,
                    in_flight: None,
                }),
                requests_served: score.map(|s| s.raw.requests_done),
                in_flight: link.map_or(0, |l| l.in_flight()),
                served_by_this_core: link.map_or(0, |l| l.served()),
            }
        })
        .collect();
    WorkersView {
        core: context.core_index,
        datagrams_received: scores.datagrams_received,
        datagrams_rejected: scores.datagrams_rejected,
        workers,
    }
}

fn routes_view(table: &RouteTable, store: StoreStatus) -> RoutesView<'_> {
    RoutesView {
        store,
        version: table.version(),
        routes: table
            .routes()
            .iter()
            .map(|route| RouteView {
                key: &route.key,
                method: match route.route_key.method {
                    MethodMatch::Exact(m) => m.as_str(),
                    MethodMatch::Any => "ANY",
                },
                path: match &route.route_key.pattern {
                    PathPattern::Exact(p) => p.clone(),
                    PathPattern::Prefix(p) => format!("{p}/*"),
                },
                runtime: route.descriptor.runtime.name(),
                updated: route.updated,
            })
            .collect(),
        skipped: table
            .skipped()
            .iter()
            .map(|s| SkippedView {
                key: &s.key,
                reason: &s.reason,
            })
            .collect(),
    }
}
