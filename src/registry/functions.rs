//! Functions, their immutable versions and the `live` alias, and the route
//! rows that serve them. Every change is one SQLite transaction that also
//! rewrites the function's rows in the route table, so the watcher
//! publishes a function's new state whole: no request sees half a deploy.
//!
//! A deployed function answers on `ANY:/fn/NAME/*` (which includes
//! `/fn/NAME` itself) and on its explicit routes. Which route rows belong
//! to which function is kept in `function_routes`; a row written by hand
//! is never touched, and a deploy that would claim one is a conflict.
//!
//! Blocking: runs on the control-plane thread only.

use std::collections::{BTreeMap, HashSet};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};

use super::artifacts::{Artifact, ArtifactStore};
use super::RegistryError;
use crate::http::rules::is_function_name;
use crate::routes::key::RouteKey;
use crate::runtimes::descriptor::{
    version_path, Canary, Descriptor, FunctionAuth, RateLimit, Runtime,
};

/// Explicit routes one function may claim.
pub const ROUTES_PER_FUNCTION_MAX: usize = 32;
/// The alias the routes serve.
pub const LIVE_ALIAS: &str = "live";

/// A function's configuration: what a version fixes besides its code.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The version's own rate limit; the function's settings (changed live
    /// with `PUT .../NAME/settings`) take precedence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// `key`: callers need an invoke key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<FunctionAuth>,
    /// Warm hosts per worker (python, node, php).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_instances: Option<u32>,
    /// Hosts per worker at most (python, node, php).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<u32>,
    /// Python, node, php, exec: the function's processes may use the
    /// network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<bool>,
}

/// What a version is: code, entry point, routes and configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionSpec {
    pub runtime: Runtime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
    #[serde(default)]
    pub routes: Vec<String>,
    #[serde(default)]
    pub config: FunctionConfig,
    /// For code that is a directory (an archive's files): the file the
    /// runtime runs, relative to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionInfo {
    pub version: u32,
    pub artifact_sha256: String,
    pub runtime: Runtime,
    pub handler: Option<String>,
    pub routes: Vec<String>,
    pub config: FunctionConfig,
    pub entry: Option<String>,
    pub created: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionInfo {
    pub name: String,
    pub runtime: Runtime,
    /// The version the `live` alias serves.
    pub live_version: u32,
    /// A share of the requests for another version.
    pub canary: Option<Canary>,
    pub latest_version: u32,
    /// Every route key that serves it.
    pub routes: Vec<String>,
    pub url_path: String,
    pub created: i64,
    pub updated: i64,
}

/// The live rate limit set on `name` by its settings, if any.
pub fn rate_limit_setting(
    connection: &Connection,
    name: &str,
) -> Result<Option<RateLimit>, RegistryError> {
    let stored: Option<(f64, Option<u32>)> = connection
        .query_row(
            "SELECT rate_rps, rate_burst FROM function_settings WHERE name = ?1 AND rate_rps IS NOT NULL",
            [name],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    Ok(stored.map(|(rps, burst)| RateLimit { rps, burst }))
}

/// A name by [`is_function_name`], or the error that states the rule.
pub fn check_name(name: &str) -> Result<(), RegistryError> {
    if is_function_name(name) {
        Ok(())
    } else {
        Err(RegistryError::InvalidName(name.chars().take(80).collect()))
    }
}

/// The route key every function has.
fn own_prefix_key(name: &str) -> String {
    format!("ANY:/fn/{name}/*")
}

/// The descriptor a version is served with (`rate_limit`: the function's
/// live setting, over the version's own).
fn descriptor_json(
    spec: &VersionSpec,
    artifact: &Artifact,
    rate_limit: Option<RateLimit>,
    function: Option<(&str, u32)>,
    canary: Option<Canary>,
) -> Result<String, RegistryError> {
    let mut descriptor = serde_json::Map::new();
    if let Some((function, version)) = function {
        descriptor.insert("function".into(), function.into());
        descriptor.insert("version".into(), version.into());
    }
    if let Some(canary) = canary {
        descriptor.insert("canary".into(), serde_json::to_value(canary)?);
    }
    descriptor.insert("runtime".into(), serde_json::to_value(spec.runtime)?);
    let module = match &spec.entry {
        Some(entry) => artifact.path.join(entry),
        None => artifact.path.clone(),
    };
    descriptor.insert(
        "module".into(),
        module.to_string_lossy().into_owned().into(),
    );
    if let Some(handler) = &spec.handler {
        descriptor.insert("handler".into(), handler.clone().into());
    }
    let config = &spec.config;
    if let Some(timeout_ms) = config.timeout_ms {
        descriptor.insert("timeout_ms".into(), timeout_ms.into());
    }
    if let Some(memory_mb) = config.memory_mb {
        descriptor.insert("memory_mb".into(), memory_mb.into());
    }
    if let Some(max_concurrency) = config.max_concurrency {
        descriptor.insert("max_concurrency".into(), max_concurrency.into());
    }
    if !config.env.is_empty() {
        descriptor.insert("env".into(), serde_json::to_value(&config.env)?);
    }
    if let Some(auth) = config.auth {
        descriptor.insert("auth".into(), serde_json::to_value(auth)?);
    }
    if let Some(min) = config.min_instances {
        descriptor.insert("min_instances".into(), min.into());
    }
    if let Some(max) = config.max_instances {
        descriptor.insert("max_instances".into(), max.into());
    }
    if let Some(network) = config.network {
        descriptor.insert("network".into(), network.into());
    }
    if let Some(rate_limit) = rate_limit.or(config.rate_limit) {
        descriptor.insert("rate_limit".into(), serde_json::to_value(rate_limit)?);
    }
    let json = serde_json::Value::Object(descriptor).to_string();
    // The watcher would skip a row that does not parse; refuse it here,
    // with the reason, instead of deploying something that never serves.
    Descriptor::parse(&json).map_err(|e| RegistryError::Invalid(e.to_string()))?;
    Ok(json)
}

/// Checks a spec before anything is stored.
pub fn check_spec(spec: &VersionSpec) -> Result<(), RegistryError> {
    if spec.runtime == Runtime::Static {
        return Err(RegistryError::Invalid(
            "static routes are rows of the route table, not functions".into(),
        ));
    }
    if spec.routes.len() > ROUTES_PER_FUNCTION_MAX {
        return Err(RegistryError::Invalid(format!(
            "at most {ROUTES_PER_FUNCTION_MAX} routes per function"
        )));
    }
    for route in &spec.routes {
        RouteKey::parse(route)
            .map_err(|e| RegistryError::Invalid(format!("route {route:?}: {e}")))?;
    }
    // The configuration as the route table will check it, before any
    // compile is paid for.
    let probe = Artifact {
        sha256: String::new(),
        extension: "bin",
        path: "/probe".into(),
        bytes: 0,
    };
    descriptor_json(spec, &probe, None, None, None).map(|_| ())
}

pub struct Registry<'a> {
    pub connection: &'a mut Connection,
    pub store: &'a ArtifactStore,
}

impl Registry<'_> {
    /// Stores a new version of `name` (creating the function at version 1)
    /// and points `live` at it; returns the version.
    pub fn deploy(
        &mut self,
        name: &str,
        spec: &VersionSpec,
        artifact: &Artifact,
        now: i64,
    ) -> Result<u32, RegistryError> {
        check_name(name)?;
        check_spec(spec)?;
        descriptor_json(spec, artifact, None, Some((name, 1)), None)?;
        let tx = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existing: Option<String> = tx
            .query_row(
                "SELECT runtime FROM registry_functions WHERE name = ?1",
                [name],
                |row| row.get(0),
            )
            .optional()?;
        match existing {
            None => {
                tx.execute(
                    "INSERT INTO registry_functions (name, runtime, created, updated) VALUES (?1, ?2, ?3, ?3)",
                    params![name, spec.runtime.name(), now],
                )?;
            }
            Some(_) => {
                tx.execute(
                    "UPDATE registry_functions SET runtime = ?2, updated = ?3 WHERE name = ?1",
                    params![name, spec.runtime.name(), now],
                )?;
            }
        }
        let version: u32 = tx.query_row(
            "SELECT coalesce(max(version), 0) + 1 FROM function_versions WHERE name = ?1",
            [name],
            |row| row.get(0),
        )?;
        let config = serde_json::to_string(&StoredConfig::of(spec, artifact.extension))?;
        tx.execute(
            "INSERT INTO function_versions (name, version, artifact_sha256, config, created) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![name, version, artifact.sha256, config, now],
        )?;
        // Every version answers at /fn/NAME@N (what x-corefn-version and a
        // canary reach); the row never changes, like the version.
        let version_key = format!("ANY:{}/*", version_path(name, version));
        let version_descriptor =
            descriptor_json(spec, artifact, None, Some((name, version)), None)?;
        tx.execute(
            "INSERT INTO functions (k, v, updated) VALUES (?1, ?2, ?3)",
            params![version_key, version_descriptor, now],
        )?;
        tx.execute(
            "INSERT INTO function_routes (k, name) VALUES (?1, ?2)",
            params![version_key, name],
        )?;
        set_live(&tx, self.store, name, version, None, now)?;
        tx.commit()?;
        Ok(version)
    }

    /// Points `live` at `version` (default: the one before the current).
    pub fn rollback(
        &mut self,
        name: &str,
        version: Option<u32>,
        now: i64,
    ) -> Result<u32, RegistryError> {
        let tx = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let live = live_version(&tx, name)?;
        let target = match version {
            Some(v) => v,
            None => tx
                .query_row(
                    "SELECT max(version) FROM function_versions WHERE name = ?1 AND version < ?2",
                    params![name, live],
                    |row| row.get::<_, Option<u32>>(0),
                )?
                .ok_or_else(|| {
                    RegistryError::Invalid(format!(
                        "function {name} has no version before {live} to roll back to"
                    ))
                })?,
        };
        set_live(&tx, self.store, name, target, None, now)?;
        tx.execute(
            "UPDATE registry_functions SET updated = ?2 WHERE name = ?1",
            params![name, now],
        )?;
        tx.commit()?;
        Ok(target)
    }

    /// Removes the function, its routes at once, and the artifacts no
    /// version refers to any more.
    pub fn delete(&mut self, name: &str) -> Result<usize, RegistryError> {
        let tx = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        live_version(&tx, name)?;
        tx.execute(
            "DELETE FROM functions WHERE k IN (SELECT k FROM function_routes WHERE name = ?1)",
            [name],
        )?;
        tx.execute("DELETE FROM function_routes WHERE name = ?1", [name])?;
        tx.execute("DELETE FROM function_aliases WHERE name = ?1", [name])?;
        tx.execute("DELETE FROM function_settings WHERE name = ?1", [name])?;
        tx.execute("DELETE FROM function_versions WHERE name = ?1", [name])?;
        tx.execute("DELETE FROM schedules WHERE function = ?1", [name])?;
        tx.execute("DELETE FROM registry_functions WHERE name = ?1", [name])?;
        tx.commit()?;
        let referenced = referenced_artifacts(self.connection)?;
        Ok(self.store.collect(&referenced)?)
    }

    /// Sets (or with `None` clears) the function's live rate limit and
    /// rewrites its route rows at once; no new version.
    pub fn set_rate_limit(
        &mut self,
        name: &str,
        rate_limit: Option<RateLimit>,
        now: i64,
    ) -> Result<(), RegistryError> {
        if let Some(rate) = &rate_limit {
            let probe = serde_json::json!({"runtime": "static", "rate_limit": rate}).to_string();
            Descriptor::parse(&probe).map_err(|e| RegistryError::Invalid(e.to_string()))?;
        }
        let tx = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let live = live_version(&tx, name)?;
        tx.execute(
            "INSERT INTO function_settings (name, rate_rps, rate_burst, updated) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO UPDATE SET rate_rps = excluded.rate_rps, rate_burst = excluded.rate_burst, updated = excluded.updated",
            params![name, rate_limit.map(|r| r.rps), rate_limit.and_then(|r| r.burst), now],
        )?;
        let canary = live_canary(&tx, name)?;
        set_live(&tx, self.store, name, live, canary, now)?;
        tx.commit()?;
        Ok(())
    }

    /// Points `live` at `version`, with a share of the requests for the
    /// `canary` version (None: no canary); one transaction.
    pub fn set_alias(
        &mut self,
        name: &str,
        version: u32,
        canary: Option<Canary>,
        now: i64,
    ) -> Result<(), RegistryError> {
        let tx = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        live_version(&tx, name)?;
        if let Some(canary) = &canary {
            let exists: Option<u32> = tx
                .query_row(
                    "SELECT version FROM function_versions WHERE name = ?1 AND version = ?2",
                    params![name, canary.version],
                    |row| row.get(0),
                )
                .optional()?;
            if exists.is_none() {
                return Err(RegistryError::VersionNotFound {
                    name: name.to_string(),
                    version: canary.version,
                });
            }
        }
        set_live(&tx, self.store, name, version, canary, now)?;
        tx.commit()?;
        Ok(())
    }

    pub fn get(&self, name: &str) -> Result<FunctionInfo, RegistryError> {
        let row = self
            .connection
            .query_row(
                "SELECT name, runtime, created, updated FROM registry_functions WHERE name = ?1",
                [name],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                        row.get::<_, i64>(3)?,
                    ))
                },
            )
            .optional()?
            .ok_or_else(|| RegistryError::NotFound(name.to_string()))?;
        self.info(row)
    }

    pub fn list(&self) -> Result<Vec<FunctionInfo>, RegistryError> {
        let mut statement = self.connection.prepare(
            "SELECT name, runtime, created, updated FROM registry_functions ORDER BY name",
        )?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, i64>(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(|row| self.info(row)).collect()
    }

    pub fn versions(&self, name: &str) -> Result<Vec<VersionInfo>, RegistryError> {
        live_version(self.connection, name)?;
        let mut statement = self.connection.prepare(
            "SELECT version, artifact_sha256, config, created FROM function_versions WHERE name = ?1 ORDER BY version",
        )?;
        let rows = statement
            .query_map([name], |row| {
                Ok((
                    row.get::<_, u32>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, i64>(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(version, artifact_sha256, config, created)| {
                let stored: StoredConfig = serde_json::from_str(&config)?;
                Ok(VersionInfo {
                    version,
                    artifact_sha256,
                    runtime: stored.spec.runtime,
                    handler: stored.spec.handler,
                    routes: stored.spec.routes,
                    config: stored.spec.config,
                    entry: stored.spec.entry,
                    created,
                })
            })
            .collect()
    }

    fn info(
        &self,
        (name, runtime, created, updated): (String, String, i64, i64),
    ) -> Result<FunctionInfo, RegistryError> {
        let runtime: Runtime = serde_json::from_value(runtime.into())?;
        let live_version = live_version(self.connection, &name)?;
        let latest_version: u32 = self.connection.query_row(
            "SELECT max(version) FROM function_versions WHERE name = ?1",
            [&name],
            |row| row.get(0),
        )?;
        let mut statement = self
            .connection
            .prepare("SELECT k FROM function_routes WHERE name = ?1 ORDER BY k")?;
        let routes = statement
            .query_map([&name], |row| row.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        let canary = live_canary(self.connection, &name)?;
        Ok(FunctionInfo {
            canary,
            url_path: format!("/fn/{name}"),
            name,
            runtime,
            live_version,
            latest_version,
            routes,
            created,
            updated,
        })
    }
}

/// What `function_versions.config` holds: the spec and the artifact's
/// extension (the file name the runtime reads it by).
#[derive(Debug, Serialize, Deserialize)]
struct StoredConfig {
    #[serde(flatten)]
    spec: VersionSpec,
    extension: String,
}

impl StoredConfig {
    fn of(spec: &VersionSpec, extension: &str) -> StoredConfig {
        StoredConfig {
            spec: spec.clone(),
            extension: extension.to_string(),
        }
    }
}

fn live_version(connection: &Connection, name: &str) -> Result<u32, RegistryError> {
    connection
        .query_row(
            "SELECT version FROM function_aliases WHERE name = ?1 AND alias = ?2",
            params![name, LIVE_ALIAS],
            |row| row.get(0),
        )
        .optional()?
        .ok_or_else(|| RegistryError::NotFound(name.to_string()))
}

/// Points `live` at `version` and rewrites the function's route rows to
/// serve it, inside the caller's transaction.
/// The canary of the `live` alias, if it has one.
fn live_canary(connection: &Connection, name: &str) -> Result<Option<Canary>, RegistryError> {
    let row: Option<(Option<u32>, Option<f64>)> = connection
        .query_row(
            "SELECT canary_version, canary_weight FROM function_aliases WHERE name = ?1 AND alias = ?2",
            params![name, LIVE_ALIAS],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    Ok(match row {
        Some((Some(version), Some(weight))) => Some(Canary { version, weight }),
        _ => None,
    })
}

fn set_live(
    tx: &rusqlite::Transaction<'_>,
    store: &ArtifactStore,
    name: &str,
    version: u32,
    canary: Option<Canary>,
    now: i64,
) -> Result<(), RegistryError> {
    let (sha256, config): (String, String) = tx
        .query_row(
            "SELECT artifact_sha256, config FROM function_versions WHERE name = ?1 AND version = ?2",
            params![name, version],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?
        .ok_or_else(|| RegistryError::VersionNotFound {
            name: name.to_string(),
            version,
        })?;
    let stored: StoredConfig = serde_json::from_str(&config)?;
    let extension = super::artifacts::extension(&stored.extension).ok_or_else(|| {
        RegistryError::Invalid(format!("unknown artifact type {:?}", stored.extension))
    })?;
    let artifact = Artifact {
        path: store.path_of(&sha256, extension),
        sha256,
        extension,
        bytes: 0,
    };
    let settings_rate = rate_limit_setting(tx, name)?;
    let descriptor = descriptor_json(
        &stored.spec,
        &artifact,
        settings_rate,
        Some((name, version)),
        canary,
    )?;
    let mut keys: Vec<String> = vec![own_prefix_key(name)];
    keys.extend(stored.spec.routes.iter().cloned());
    let unique: HashSet<&String> = keys.iter().collect();
    if unique.len() != keys.len() {
        return Err(RegistryError::Invalid("a route is listed twice".into()));
    }
    // Rows of other owners (another function, or written by hand) are not ours to take.
    for key in &keys {
        let owner: Option<Option<String>> = tx
            .query_row(
                "SELECT r.name FROM functions f LEFT JOIN function_routes r ON r.k = f.k WHERE f.k = ?1",
                [key],
                |row| row.get(0),
            )
            .optional()?;
        match owner {
            Some(Some(owner)) if owner == name => {}
            Some(Some(owner)) => {
                return Err(RegistryError::Conflict(format!(
                    "route {key} belongs to function {owner}"
                )))
            }
            Some(None) => {
                return Err(RegistryError::Conflict(format!(
                    "route {key} is a row of the route table that no function owns"
                )))
            }
            None => {}
        }
    }
    // The live rows only: the per-version rows stay as they are.
    let version_rows = format!("ANY:/fn/{name}@%");
    tx.execute(
        "DELETE FROM functions WHERE k IN (SELECT k FROM function_routes WHERE name = ?1 AND k NOT LIKE ?2)",
        params![name, version_rows],
    )?;
    tx.execute(
        "DELETE FROM function_routes WHERE name = ?1 AND k NOT LIKE ?2",
        params![name, version_rows],
    )?;
    for key in &keys {
        tx.execute(
            "INSERT INTO functions (k, v, updated) VALUES (?1, ?2, ?3)",
            params![key, descriptor, now],
        )?;
        tx.execute(
            "INSERT INTO function_routes (k, name) VALUES (?1, ?2)",
            params![key, name],
        )?;
    }
    tx.execute(
        "INSERT INTO function_aliases (name, alias, version, canary_version, canary_weight, updated) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (name, alias) DO UPDATE SET version = excluded.version, canary_version = excluded.canary_version,
             canary_weight = excluded.canary_weight, updated = excluded.updated",
        params![name, LIVE_ALIAS, version, canary.map(|c| c.version), canary.map(|c| c.weight), now],
    )?;
    Ok(())
}

fn referenced_artifacts(connection: &Connection) -> Result<HashSet<String>, RegistryError> {
    let mut statement =
        connection.prepare("SELECT DISTINCT artifact_sha256 FROM function_versions")?;
    let hashes = statement
        .query_map([], |row| row.get::<_, String>(0))?
        .collect::<Result<HashSet<_>, _>>()?;
    Ok(hashes)
}
