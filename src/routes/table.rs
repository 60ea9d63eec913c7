//! The immutable route table that every core reads: built once per change
//! by the watcher, never mutated afterwards, looked up without locks.
//!
//! Matching: among the rows whose path matches, the most specific path wins
//! (exact beats prefix, a longer prefix beats a shorter one); at equal path
//! an exact method beats `ANY`; HEAD falls back to GET. A path that matches
//! only with other methods is a 405 with the allowed methods.

use std::collections::HashMap;
use std::sync::Arc;

use super::key::{Method, MethodMatch, PathPattern, RouteKey};
use super::modules::ModuleRoots;
pub use crate::http::auth::KeyGrant;
use crate::runtimes::descriptor::{Descriptor, Runtime};
use crate::runtimes::static_response::StaticResponse;
use crate::scheduler::admission::ConcurrencyLimit;
use crate::telemetry::stats::{FunctionStats, StatsRegistry};

/// A row as it comes from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRow {
    pub key: String,
    pub value: String,
    pub updated: i64,
}

#[derive(Debug)]
pub struct Route {
    pub key: String,
    pub route_key: RouteKey,
    pub descriptor: Descriptor,
    pub updated: i64,
    pub action: RouteAction,
}

/// What the gateway does for a matched route, prepared at build time.
#[derive(Debug)]
pub enum RouteAction {
    Static(StaticResponse),
    /// Runs in a worker process.
    Function(FunctionTarget),
}

/// What a worker needs to run a route's function.
#[derive(Debug)]
pub struct FunctionTarget {
    pub runtime: Runtime,
    /// The descriptor as stored: the worker parses (and caches) it itself.
    pub descriptor_json: Box<[u8]>,
    pub timeout_ms: u64,
    /// Shared by all cores; carried over from the previous table.
    pub concurrency: Option<Arc<ConcurrencyLimit>>,
    /// What its stats and logs are kept under: the deployed function's
    /// name, or the route key of a hand-written route.
    pub name: Box<str>,
    /// The function's version (0: a route without one).
    pub version: u32,
    /// Set by [`RouteTable::attach_stats`]; the same for every route of
    /// one function version.
    pub stats: Option<Arc<FunctionStats>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRow {
    pub key: String,
    pub reason: String,
}

/// What the store read of the route table: the rows, and the rows whose
/// columns are not what the table's contract says (`k` and `v` UTF-8
/// text, `updated` an integer), which are skipped like any invalid row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredRows {
    pub rows: Vec<RouteRow>,
    pub unreadable: Vec<SkippedRow>,
}

/// Route indices for one path pattern.
#[derive(Debug, Default, Clone)]
struct PathEntry {
    by_method: [Option<u32>; Method::ALL.len()],
    any: Option<u32>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'t> {
    Found(&'t Route),
    /// The path exists for other methods; the value is the `Allow` header.
    MethodNotAllowed(String),
    NotFound,
}

impl PartialEq for Route {
    fn eq(&self, other: &Route) -> bool {
        self.key == other.key && self.updated == other.updated
    }
}
impl Eq for Route {}

#[derive(Debug, Default)]
pub struct RouteTable {
    version: u64,
    /// Hashes of the keys that may call `auth: key` functions (invoke and
    /// admin keys), published with the routes so that a core checks a key
    /// without SQLite.
    invoke_keys: HashMap<String, KeyGrant>,
    routes: Vec<Route>,
    exact: HashMap<String, PathEntry>,
    prefix: HashMap<String, PathEntry>,
    skipped: Vec<SkippedRow>,
}

impl RouteTable {
    /// Builds a table from store rows; a row that does not parse is skipped
    /// with its reason, never an error for the whole table.
    pub fn build(version: u64, rows: Vec<RouteRow>) -> RouteTable {
        RouteTable::build_after(version, rows, None)
    }

    /// A table of what the store read: its rows, and its unreadable rows
    /// among the skipped ones.
    /// `roots`: where modules may live (None: anywhere, for trusted
    /// setups).
    pub fn from_store(
        version: u64,
        stored: StoredRows,
        previous: Option<&RouteTable>,
        roots: Option<&ModuleRoots>,
    ) -> RouteTable {
        let mut table = RouteTable::build_checked(version, stored.rows, previous, roots);
        table.skipped.extend(stored.unreadable);
        table
    }

    /// As [`RouteTable::build`], keeping the concurrency counters of routes
    /// that `previous` already had with the same limit.
    pub fn build_after(
        version: u64,
        rows: Vec<RouteRow>,
        previous: Option<&RouteTable>,
    ) -> RouteTable {
        RouteTable::build_checked(version, rows, previous, None)
    }

    fn build_checked(
        version: u64,
        rows: Vec<RouteRow>,
        previous: Option<&RouteTable>,
        roots: Option<&ModuleRoots>,
    ) -> RouteTable {
        let mut table = RouteTable {
            version,
            ..RouteTable::default()
        };
        for row in rows {
            let parsed = RouteKey::parse(&row.key)
                .map_err(|e| format!("invalid key: {e}"))
                .and_then(|route_key| {
                    Descriptor::parse(&row.value)
                        .map(|descriptor| (route_key, descriptor))
                        .map_err(|e| format!("invalid descriptor: {e}"))
                })
                .and_then(|(route_key, descriptor)| {
                    if let (Some(roots), Some(module)) = (roots, descriptor.module.as_deref()) {
                        roots.check(module)?;
                    }
                    Ok((route_key, descriptor))
                });
            match parsed {
                Ok((route_key, descriptor)) => {
                    let concurrency = descriptor.max_concurrency.map(|limit| {
                        previous
                            .and_then(|p| p.concurrency_of(&row.key))
                            .filter(|existing| existing.limit() == limit)
                            .unwrap_or_else(|| ConcurrencyLimit::new(&row.key, limit))
                    });
                    table.insert(row, route_key, descriptor, concurrency)
                }
                Err(reason) => table.skipped.push(SkippedRow {
                    key: row.key,
                    reason,
                }),
            }
        }
        table
    }

    fn concurrency_of(&self, key: &str) -> Option<Arc<ConcurrencyLimit>> {
        self.routes
            .iter()
            .find(|r| r.key == key)
            .and_then(|r| match &r.action {
                RouteAction::Function(target) => target.concurrency.clone(),
                RouteAction::Static(_) => None,
            })
    }

    fn insert(
        &mut self,
        row: RouteRow,
        route_key: RouteKey,
        descriptor: Descriptor,
        concurrency: Option<Arc<ConcurrencyLimit>>,
    ) {
        let index = u32::try_from(self.routes.len()).expect("fewer than 2^32 routes");
        let entry = match &route_key.pattern {
            PathPattern::Exact(path) => self.exact.entry(path.clone()).or_default(),
            PathPattern::Prefix(path) => self.prefix.entry(path.clone()).or_default(),
        };
        let slot = match route_key.method {
            MethodMatch::Exact(method) => &mut entry.by_method[method.index()],
            MethodMatch::Any => &mut entry.any,
        };
        debug_assert!(
            slot.is_none(),
            "store keys are unique, so are their patterns"
        );
        *slot = Some(index);
        let action = match descriptor.runtime {
            Runtime::Static => RouteAction::Static(StaticResponse::new(&descriptor)),
            runtime => RouteAction::Function(FunctionTarget {
                runtime,
                descriptor_json: row.value.as_bytes().into(),
                timeout_ms: descriptor.timeout_ms,
                concurrency,
                name: descriptor.function.as_deref().unwrap_or(&row.key).into(),
                version: descriptor.version.unwrap_or(0),
                stats: None,
            }),
        };
        self.routes.push(Route {
            key: row.key,
            route_key,
            descriptor,
            updated: row.updated,
            action,
        });
    }

    /// Gives every function route its stats from `registry`.
    pub fn attach_stats(&mut self, registry: &StatsRegistry) {
        for route in &mut self.routes {
            if let RouteAction::Function(target) = &mut route.action {
                target.stats = Some(registry.get_or_create(
                    &target.name,
                    target.version,
                    target.runtime.name(),
                ));
            }
        }
    }

    /// The keys published with this table.
    pub fn set_invoke_keys(&mut self, keys: HashMap<String, KeyGrant>) {
        self.invoke_keys = keys;
    }

    /// The grant of the key whose SHA-256 (hex) is `hash`.
    pub fn invoke_grant(&self, hash: &str) -> Option<&KeyGrant> {
        self.invoke_keys.get(hash)
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    pub fn skipped(&self) -> &[SkippedRow] {
        &self.skipped
    }

    /// `path` is the request path without its query string.
    pub fn lookup(&self, method: &str, path: &str) -> Lookup<'_> {
        let method = Method::parse(method);
        let mut allowed = [false; Method::ALL.len()];
        let mut path_seen = false;

        let exact = self.exact.get(path);
        let prefixes = PrefixCandidates { rest: Some(path) }.filter_map(|p| self.prefix.get(p));
        for entry in exact.into_iter().chain(prefixes) {
            if let Some(index) = entry_match(entry, method) {
                return Lookup::Found(&self.routes[index as usize]);
            }
            path_seen = true;
            for (i, slot) in entry.by_method.iter().enumerate() {
                allowed[i] |= slot.is_some();
            }
        }
        if !path_seen {
            return Lookup::NotFound;
        }
        allowed[Method::Head.index()] |= allowed[Method::Get.index()];
        let mut names: Vec<&str> = Method::ALL
            .iter()
            .filter(|m| allowed[m.index()])
            .map(|m| m.as_str())
            .collect();
        names.sort_unstable();
        Lookup::MethodNotAllowed(names.join(", "))
    }
}

fn entry_match(entry: &PathEntry, method: Option<Method>) -> Option<u32> {
    if let Some(method) = method {
        if let Some(index) = entry.by_method[method.index()] {
            return Some(index);
        }
        if method == Method::Head {
            if let Some(index) = entry.by_method[Method::Get.index()] {
                return Some(index);
            }
        }
    }
    entry.any
}

/// The prefix keys that can match a path, most specific first:
/// `/a/b` → `/a/b`, `/a`, `` (the root prefix `/*`).
struct PrefixCandidates<'p> {
    rest: Option<&'p str>,
}

impl<'p> Iterator for PrefixCandidates<'p> {
    type Item = &'p str;

    fn next(&mut self) -> Option<&'p str> {
        let current = self.rest?;
        self.rest = if current.is_empty() {
            None
        } else {
            Some(current.rfind('/').map_or("", |at| &current[..at]))
        };
        Some(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rows: &[(&str, &str)]) -> RouteTable {
        RouteTable::build(
            1,
            rows.iter()
                .map(|(k, v)| RouteRow {
                    key: k.to_string(),
                    value: v.to_string(),
                    updated: 0,
                })
                .collect(),
        )
    }

    fn found_key<'t>(lookup: Lookup<'t>) -> &'t str {
        match lookup {
            Lookup::Found(route) => &route.key,
            other => panic!("expected a route, got {other:?}"),
        }
    }

    const S: &str = r#"{"runtime":"static"}"#;

    #[test]
    fn exact_beats_prefix_and_longest_prefix_wins() {
        let t = table(&[
            ("GET:/a/*", S),
            ("GET:/a/b/*", S),
            ("GET:/a/b/c", S),
            ("GET:/*", S),
        ]);
        assert_eq!(found_key(t.lookup("GET", "/a/b/c")), "GET:/a/b/c");
        assert_eq!(found_key(t.lookup("GET", "/a/b/c/d")), "GET:/a/b/*");
        assert_eq!(found_key(t.lookup("GET", "/a/b")), "GET:/a/b/*");
        assert_eq!(found_key(t.lookup("GET", "/a/x")), "GET:/a/*");
        assert_eq!(found_key(t.lookup("GET", "/a")), "GET:/a/*");
        assert_eq!(found_key(t.lookup("GET", "/ab")), "GET:/*");
        assert_eq!(found_key(t.lookup("GET", "/")), "GET:/*");
    }

    #[test]
    fn exact_method_beats_any_and_head_falls_back_to_get() {
        let t = table(&[("ANY:/x", S), ("POST:/x", S), ("GET:/y", S)]);
        assert_eq!(found_key(t.lookup("POST", "/x")), "POST:/x");
        assert_eq!(found_key(t.lookup("DELETE", "/x")), "ANY:/x");
        assert_eq!(found_key(t.lookup("BREW", "/x")), "ANY:/x");
        assert_eq!(found_key(t.lookup("HEAD", "/y")), "GET:/y");
    }

    #[test]
    fn other_methods_give_405_with_allow_and_unknown_paths_404() {
        let t = table(&[("GET:/x", S), ("POST:/x", S), ("PUT:/p/*", S)]);
        assert_eq!(
            t.lookup("DELETE", "/x"),
            Lookup::MethodNotAllowed("GET, HEAD, POST".into())
        );
        assert_eq!(
            t.lookup("GET", "/p/q"),
            Lookup::MethodNotAllowed("PUT".into())
        );
        assert_eq!(t.lookup("GET", "/nope"), Lookup::NotFound);
    }

    #[test]
    fn less_specific_route_serves_a_method_the_specific_one_lacks() {
        let t = table(&[("POST:/api/users", S), ("GET:/api/*", S)]);
        assert_eq!(found_key(t.lookup("GET", "/api/users")), "GET:/api/*");
    }

    #[test]
    fn invalid_rows_are_skipped_with_reasons() {
        let t = table(&[
            ("GET:/ok", S),
            ("nokey", S),
            ("GET:/bad-json", "{"),
            ("GET:/_/mine", S),
        ]);
        assert_eq!(t.routes().len(), 1);
        let keys: Vec<&str> = t.skipped().iter().map(|s| s.key.as_str()).collect();
        assert_eq!(keys, ["nokey", "GET:/bad-json", "GET:/_/mine"]);
        assert!(t.skipped().iter().all(|s| !s.reason.is_empty()));
    }
}
