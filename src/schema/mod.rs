//! The one owner of the database's tables: numbered migrations, applied in
//! order, each in its own transaction, with `PRAGMA user_version` recording
//! the last one applied. Everything that creates or opens a corefn database
//! (the server, `corefn migrate`, the tests, the benchmark scripts) goes
//! through [`migrate`], so there is one schema and one way to reach it.
//!
//! The route table `functions(k, v, updated)` keeps its contract: rows
//! written by hand (the sqlite3 shell) are served as they are. The
//! control-plane tables live beside it and never change its shape; which
//! route rows the registry wrote is kept in `function_routes`, so a hand
//! written row is never touched by a deploy or a delete.
//!
//! [`file`] shares the database file among the gateway's threads, one
//! connection each, so that a replaced file can be switched to.
//!
//! Blocking SQLite calls: never on a core executor.

pub mod file;

use rusqlite::{Connection, TransactionBehavior};
use thiserror::Error;

/// One step of the schema. Never edit a released migration: add one.
pub struct Migration {
    pub version: u32,
    pub summary: &'static str,
    pub sql: &'static str,
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        summary: "route table",
        // IF NOT EXISTS: a database of a release before migrations has
        // this table at user_version 0, and keeps its rows.
        sql: "CREATE TABLE IF NOT EXISTS functions (
                  k       TEXT PRIMARY KEY,
                  v       TEXT NOT NULL,
                  updated INTEGER NOT NULL
              );",
    },
    Migration {
        version: 2,
        summary: "function registry: functions, versions, aliases, settings, routes, keys",
        sql: "CREATE TABLE registry_functions (
                  name    TEXT PRIMARY KEY,
                  runtime TEXT NOT NULL,
                  created INTEGER NOT NULL,
                  updated INTEGER NOT NULL
              );
              CREATE TABLE function_versions (
                  name            TEXT NOT NULL REFERENCES registry_functions(name) ON DELETE CASCADE,
                  version         INTEGER NOT NULL CHECK (version >= 1),
                  artifact_sha256 TEXT NOT NULL,
                  config          TEXT NOT NULL,
                  created         INTEGER NOT NULL,
                  PRIMARY KEY (name, version)
              );
              CREATE INDEX function_versions_artifact ON function_versions(artifact_sha256);
              CREATE TABLE function_aliases (
                  name           TEXT NOT NULL REFERENCES registry_functions(name) ON DELETE CASCADE,
                  alias          TEXT NOT NULL,
                  version        INTEGER NOT NULL,
                  canary_version INTEGER,
                  canary_weight  REAL CHECK (canary_weight IS NULL OR (canary_weight >= 0 AND canary_weight <= 1)),
                  updated        INTEGER NOT NULL,
                  PRIMARY KEY (name, alias)
              );
              CREATE TABLE function_settings (
                  name       TEXT PRIMARY KEY REFERENCES registry_functions(name) ON DELETE CASCADE,
                  rate_rps   REAL,
                  rate_burst INTEGER,
                  auth       TEXT NOT NULL DEFAULT 'public' CHECK (auth IN ('public', 'key')),
                  updated    INTEGER NOT NULL
              );
              CREATE TABLE function_routes (
                  k    TEXT PRIMARY KEY,
                  name TEXT NOT NULL REFERENCES registry_functions(name) ON DELETE CASCADE
              );
              CREATE TABLE api_keys (
                  id        TEXT PRIMARY KEY,
                  hash      TEXT NOT NULL UNIQUE,
                  scopes    TEXT NOT NULL,
                  functions TEXT,
                  created   INTEGER NOT NULL,
                  revoked   INTEGER
              );",
    },
    Migration {
        version: 3,
        summary: "cron schedules",
        // No foreign key: the registry deletes a function's schedules in
        // the transaction that deletes the function (foreign keys are off).
        sql: "CREATE TABLE schedules (
                  id               INTEGER PRIMARY KEY AUTOINCREMENT,
                  function         TEXT NOT NULL,
                  cron             TEXT NOT NULL,
                  overlap          TEXT NOT NULL DEFAULT 'skip' CHECK (overlap IN ('skip', 'allow')),
                  method           TEXT NOT NULL DEFAULT 'POST',
                  path             TEXT NOT NULL DEFAULT '/',
                  body             TEXT NOT NULL DEFAULT '',
                  created          INTEGER NOT NULL,
                  last_run_us      INTEGER,
                  last_status      INTEGER,
                  last_duration_us INTEGER,
                  runs             INTEGER NOT NULL DEFAULT 0,
                  skipped          INTEGER NOT NULL DEFAULT 0
              );
              CREATE INDEX schedules_function ON schedules(function);",
    },
    Migration {
        version: 4,
        summary: "async invocations: the durable queue, results and dead letters",
        sql: "CREATE TABLE invocations (
                  id               TEXT PRIMARY KEY,
                  function         TEXT NOT NULL,
                  method           TEXT NOT NULL,
                  path             TEXT NOT NULL,
                  headers          TEXT NOT NULL,
                  body             BLOB NOT NULL,
                  callback_url     TEXT,
                  state            TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'dead')),
                  attempts         INTEGER NOT NULL DEFAULT 0,
                  max_attempts     INTEGER NOT NULL CHECK (max_attempts >= 1),
                  created_us       INTEGER NOT NULL,
                  updated_us       INTEGER NOT NULL,
                  next_attempt_us  INTEGER NOT NULL,
                  deadline_us      INTEGER NOT NULL,
                  status           INTEGER,
                  result_headers   TEXT,
                  result_body      BLOB,
                  result_truncated INTEGER NOT NULL DEFAULT 0,
                  error            TEXT
              );
              CREATE INDEX invocations_due ON invocations(state, next_attempt_us);
              CREATE INDEX invocations_function ON invocations(function, created_us);",
    },
    Migration {
        version: 5,
        summary: "async invocations: attempts and age per function",
        sql: "ALTER TABLE function_settings ADD COLUMN async_max_attempts INTEGER
                  CHECK (async_max_attempts IS NULL OR async_max_attempts >= 1);
              ALTER TABLE function_settings ADD COLUMN async_max_age_s INTEGER
                  CHECK (async_max_age_s IS NULL OR async_max_age_s >= 1);",
    },
];

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: u32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

#[derive(Debug, Error)]
pub enum SchemaError {
    #[error("database schema version {found} is newer than this corefn understands ({SCHEMA_VERSION}); use a newer corefn")]
    TooNew { found: u32 },
    #[error("schema migration {version} ({summary}) failed: {source}")]
    Migration {
        version: u32,
        summary: &'static str,
        source: rusqlite::Error,
    },
    #[error("cannot read the schema version: {0}")]
    Version(rusqlite::Error),
}

/// What [`migrate`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    /// `user_version` before; 0 for a new database or one from a release
    /// before migrations.
    pub from: u32,
    pub to: u32,
    /// The database had no route table: a new file.
    pub created: bool,
}

/// Brings the database to [`SCHEMA_VERSION`]; a no-op when it is there.
pub fn migrate(connection: &mut Connection) -> Result<Migrated, SchemaError> {
    assert!(
        MIGRATIONS
            .windows(2)
            .all(|w| w[1].version == w[0].version + 1)
            && MIGRATIONS[0].version == 1,
        "migrations are numbered 1, 2, 3, ..."
    );
    let from: u32 = connection
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(SchemaError::Version)?;
    if from > SCHEMA_VERSION {
        return Err(SchemaError::TooNew { found: from });
    }
    let created = !has_table(connection, "functions").map_err(SchemaError::Version)?;
    for migration in MIGRATIONS.iter().filter(|m| m.version > from) {
        let failed = |source| SchemaError::Migration {
            version: migration.version,
            summary: migration.summary,
            source,
        };
        // IMMEDIATE: two processes migrating at once take turns.
        let tx = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(failed)?;
        // Another process may have applied it while we waited.
        let now: u32 = tx
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(failed)?;
        if now >= migration.version {
            continue;
        }
        tx.execute_batch(migration.sql).map_err(failed)?;
        tx.pragma_update(None, "user_version", migration.version)
            .map_err(failed)?;
        tx.commit().map_err(failed)?;
    }
    Ok(Migrated {
        from,
        to: SCHEMA_VERSION,
        created,
    })
}

fn has_table(connection: &Connection, name: &str) -> rusqlite::Result<bool> {
    connection.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |row| row.get::<_, i64>(0).map(|n| n > 0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(connection: &Connection) -> Vec<String> {
        let mut statement = connection
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .expect("prepare");
        let names = statement
            .query_map([], |row| row.get(0))
            .expect("query")
            .collect::<Result<Vec<String>, _>>()
            .expect("names");
        names
    }

    #[test]
    fn a_new_database_gets_every_table_and_the_latest_version() {
        let mut connection = Connection::open_in_memory().expect("open");
        let migrated = migrate(&mut connection).expect("migrate");
        assert_eq!(
            migrated,
            Migrated {
                from: 0,
                to: SCHEMA_VERSION,
                created: true
            }
        );
        let names = tables(&connection);
        for table in [
            "functions",
            "registry_functions",
            "function_versions",
            "api_keys",
        ] {
            assert!(names.iter().any(|n| n == table), "{table} in {names:?}");
        }
        let again = migrate(&mut connection).expect("again");
        assert_eq!(again.from, SCHEMA_VERSION, "nothing applied twice");
    }

    #[test]
    fn a_database_from_before_migrations_keeps_its_routes() {
        let mut connection = Connection::open_in_memory().expect("open");
        connection
            .execute_batch(
                "CREATE TABLE functions(k TEXT PRIMARY KEY, v TEXT NOT NULL, updated INTEGER NOT NULL);
                 INSERT INTO functions VALUES ('GET:/x', '{\"runtime\":\"static\"}', 1);",
            )
            .expect("old schema");
        let migrated = migrate(&mut connection).expect("migrate");
        assert!(!migrated.created);
        assert_eq!(migrated.from, 0);
        let kept: i64 = connection
            .query_row("SELECT count(*) FROM functions", [], |row| row.get(0))
            .expect("count");
        assert_eq!(kept, 1);
        // The hand-written form of the README still works.
        connection
            .execute(
                "INSERT INTO functions VALUES ('GET:/y', '{\"runtime\":\"static\"}', unixepoch())",
                [],
            )
            .expect("three-column insert");
    }

    #[test]
    fn a_newer_database_is_refused() {
        let mut connection = Connection::open_in_memory().expect("open");
        connection
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .expect("version");
        assert!(matches!(
            migrate(&mut connection),
            Err(SchemaError::TooNew { .. })
        ));
    }
}
