//! The SQLite route store: opens the database file, brings its schema up
//! to date ([`crate::schema`]), puts the demo routes of the embedded
//! `init.sql` into a new one, and reads the `functions` table.
//!
//! Used only by the watcher thread and the startup path, never by a core
//! executor: SQLite calls block.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use thiserror::Error;

use std::collections::HashMap;

use super::table::{KeyGrant, RouteRow};

/// Demo routes, put into a database that had no route table.
pub const INIT_SQL: &str = include_str!("../../init.sql");

/// How long a read waits for a writer that holds the database lock.
const BUSY_TIMEOUT: Duration = Duration::from_millis(2_000);

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot open route store {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot initialise route store {path}: {source}")]
    Init {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot read routes: {0}")]
    Read(#[from] rusqlite::Error),
    #[error("route store {path}: {source}")]
    Schema {
        path: PathBuf,
        source: crate::schema::SchemaError,
    },
}

pub struct RouteStore {
    connection: Connection,
}

impl RouteStore {
    pub fn open(path: &Path) -> Result<RouteStore, StoreError> {
        let open_error = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let connection = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_error)?;
        connection.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
        let mut connection = connection;
        let init_error = |source| StoreError::Init {
            path: path.to_path_buf(),
            source,
        };
        // WAL lets the sqlite3 shell or the API write while the watcher reads.
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(init_error)?;
        let migrated =
            crate::schema::migrate(&mut connection).map_err(|source| StoreError::Schema {
                path: path.to_path_buf(),
                source,
            })?;
        if migrated.created {
            connection.execute_batch(INIT_SQL).map_err(init_error)?;
        }
        Ok(RouteStore { connection })
    }

    /// Changes whenever another connection commits to the database file
    /// (SQLite's `PRAGMA data_version`), so polling it is cheap.
    pub fn data_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .connection
            .query_row("PRAGMA data_version", [], |row| row.get(0))?)
    }

    /// The live keys that may invoke `auth: key` functions, by hash.
    pub fn load_invoke_keys(&self) -> Result<HashMap<String, KeyGrant>, StoreError> {
        let mut statement = self
            .connection
            .prepare_cached("SELECT hash, scopes, functions FROM api_keys WHERE revoked IS NULL")?;
        let rows = statement.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Option<String>>(2)?,
            ))
        })?;
        let mut keys = HashMap::new();
        for row in rows {
            let (hash, scopes, functions) = row?;
            let scopes: Vec<&str> = scopes.split(',').collect();
            if !scopes.iter().any(|s| *s == "invoke" || *s == "admin") {
                continue;
            }
            keys.insert(hash, KeyGrant::from_stored(functions.as_deref()));
        }
        Ok(keys)
    }

    pub fn load_rows(&self) -> Result<Vec<RouteRow>, StoreError> {
        let mut statement = self
            .connection
            .prepare_cached("SELECT k, v, updated FROM functions ORDER BY k")?;
        let rows = statement.query_map([], |row| {
            Ok(RouteRow {
                key: row.get(0)?,
                value: row.get(1)?,
                updated: row.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_store_gets_schema_and_demo_routes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("routes.db");
        let store = RouteStore::open(&path).expect("open");
        let rows = store.load_rows().expect("rows");
        assert!(rows.iter().any(|r| r.key == "GET:/hello"), "{rows:?}");
        drop(store);
        // Reopening keeps what is there and applies nothing twice.
        let again = RouteStore::open(&path).expect("reopen");
        assert_eq!(again.load_rows().expect("rows").len(), rows.len());
    }

    #[test]
    fn data_version_moves_when_another_connection_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("routes.db");
        let store = RouteStore::open(&path).expect("open");
        let before = store.data_version().expect("version");
        let writer = Connection::open(&path).expect("writer");
        writer
            .execute("DELETE FROM functions WHERE k = 'GET:/hello'", [])
            .expect("delete");
        assert_ne!(store.data_version().expect("version"), before);
    }
}
