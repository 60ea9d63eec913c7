//! Admin endpoints: `GET /_/health` and `GET /_/routes`.

use serde::Serialize;

use crate::error::HttpError;
use crate::routes::key::{MethodMatch, PathPattern};
use crate::routes::table::RouteTable;

/// A rendered admin answer: status, content type, body.
pub struct AdminResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
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

/// `path` starts with `/_/` (or is `/_`).
pub fn respond(method: &str, path: &str, table: &RouteTable) -> Result<AdminResponse, HttpError> {
    let body = match path {
        "/_/health" => serde_json::to_vec(&Health {
            status: "ok",
            version: table.version(),
        }),
        "/_/routes" => serde_json::to_vec(&routes_view(table)),
        _ => {
            return Err(HttpError::NotFound {
                method: method.into(),
                path: path.into(),
            })
        }
    };
    if method != "GET" && method != "HEAD" {
        return Err(HttpError::MethodNotAllowed {
            method: method.into(),
            path: path.into(),
            allow: "GET, HEAD".into(),
        });
    }
    let mut body = body.unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}").into_bytes());
    body.push(b'\n');
    Ok(AdminResponse {
        status: 200,
        content_type: "application/json",
        body,
    })
}

fn routes_view(table: &RouteTable) -> RoutesView<'_> {
    RoutesView {
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
