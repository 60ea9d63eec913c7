//! The SQLite route store: opens the database file, brings its schema up
//! to date ([`crate::schema`]), puts the demo routes of the embedded
//! `init.sql` into a new one, and reads the `functions` table.
//!
//! Used only by the watcher thread and the startup path, never by a core
//! executor: SQLite calls block.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use thiserror::Error;

use std::collections::HashMap;

use crate::schema::file::{close_without_checkpoint, file_id, FileId, Sidecars};

use super::table::{KeyGrant, RouteRow, SkippedRow, StoredRows};

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
    /// A 0-byte file is no store: SQLite would take it for a new one and
    /// the demo routes would quietly replace whatever it was meant to hold.
    #[error("route store {path} is empty (0 bytes), not a database: restore it, or remove it to start with the demo routes")]
    Empty { path: PathBuf },
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
    path: PathBuf,
    /// The file opened: a rename or delete at the path leaves this
    /// connection on it.
    identity: Option<FileId>,
    /// Its `-wal` and `-shm`, to be removed once it is closed for good.
    sidecars: Sidecars,
}

/// What the store's path names now, against the file corefn opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathNow {
    TheOpenedFile,
    AnotherFile,
    Nothing,
    /// The file corefn opened, truncated to 0 bytes.
    Emptied,
}

impl RouteStore {
    pub fn open(path: &Path) -> Result<RouteStore, StoreError> {
        let open_error = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        // The demo routes go only into a store this call creates.
        let existed = match std::fs::metadata(path) {
            Ok(metadata) if metadata.len() == 0 => {
                return Err(StoreError::Empty {
                    path: path.to_path_buf(),
                })
            }
            Ok(_) => true,
            Err(_) => false,
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
        if migrated.created && !existed {
            connection.execute_batch(INIT_SQL).map_err(init_error)?;
        }
        let identity = file_id(path);
        Ok(RouteStore {
            connection,
            path: path.to_path_buf(),
            identity,
            sidecars: Sidecars::of(path),
        })
    }

    /// Closes the connection for good (no checkpoint: see
    /// [`close_without_checkpoint`]) and removes the file's `-wal` and
    /// `-shm` if they are still beside the path, once every other
    /// connection of the process is closed too. Returns how many went.
    pub fn close_for_good(self) -> std::io::Result<usize> {
        let RouteStore {
            connection,
            path,
            sidecars,
            ..
        } = self;
        close_without_checkpoint(connection);
        sidecars.remove_stale(&path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the path still names the file this store reads (one
    /// stat).
    pub fn path_now(&mut self) -> PathNow {
        use std::os::unix::fs::MetadataExt;
        let Ok(metadata) = std::fs::metadata(&self.path) else {
            return PathNow::Nothing;
        };
        if self
            .identity
            .is_some_and(|opened| opened != (metadata.dev(), metadata.ino()))
        {
            return PathNow::AnotherFile;
        }
        if metadata.len() == 0 {
            return PathNow::Emptied;
        }
        // SQLite makes them at the first read of a WAL database; known
        // from the open on in practice.
        if !self.sidecars.known() {
            self.sidecars = Sidecars::of(&self.path);
        }
        PathNow::TheOpenedFile
    }

    /// Changes whenever another connection commits to the database file
    /// (SQLite's `PRAGMA data_version`), so polling it is cheap: the
    /// statement is prepared once (parsing it was most of an idle
    /// gateway's watcher time).
    pub fn data_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .connection
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |row| row.get(0))?)
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

    /// Every row of the route table. A row whose columns have the wrong
    /// type or are not UTF-8 is kept aside with the reason, never an error
    /// for the whole table (it would freeze every later change).
    pub fn load_rows(&self) -> Result<StoredRows, StoreError> {
        let mut statement = self
            .connection
            .prepare_cached("SELECT k, v, updated FROM functions ORDER BY k")?;
        let mut rows = statement.query([])?;
        let mut stored = StoredRows::default();
        while let Some(row) = rows.next()? {
            match read_row(row.get_ref(0)?, row.get_ref(1)?, row.get_ref(2)?) {
                Ok(row) => stored.rows.push(row),
                Err(skipped) => stored.unreadable.push(skipped),
            }
        }
        Ok(stored)
    }
}

/// One row as the table's contract types it.
fn read_row(
    key: ValueRef<'_>,
    value: ValueRef<'_>,
    updated: ValueRef<'_>,
) -> Result<RouteRow, SkippedRow> {
    // Made only for a row that is skipped: valid rows are the many.
    let skip = |reason: String| SkippedRow {
        key: match key {
            ValueRef::Text(bytes) | ValueRef::Blob(bytes) => {
                String::from_utf8_lossy(bytes).into_owned()
            }
            ValueRef::Integer(n) => n.to_string(),
            ValueRef::Real(x) => x.to_string(),
            ValueRef::Null => "NULL".to_string(),
        },
        reason,
    };
    let text = |column: &str, cell: ValueRef<'_>| match cell {
        ValueRef::Text(bytes) => std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|_| skip(format!("{column} is not valid UTF-8"))),
        other => Err(skip(format!("{column} is {}, not TEXT", type_name(other)))),
    };
    let key = text("k", key)?;
    let value = text("v", value)?;
    let updated = match updated {
        ValueRef::Integer(n) => n,
        other => {
            return Err(skip(format!(
                "updated is {}, not an INTEGER",
                type_name(other)
            )))
        }
    };
    Ok(RouteRow {
        key,
        value,
        updated,
    })
}

fn type_name(cell: ValueRef<'_>) -> &'static str {
    match cell {
        ValueRef::Null => "NULL",
        ValueRef::Integer(_) => "an INTEGER",
        ValueRef::Real(_) => "a REAL",
        ValueRef::Text(_) => "TEXT",
        ValueRef::Blob(_) => "a BLOB",
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
        let rows = store.load_rows().expect("rows").rows;
        assert!(rows.iter().any(|r| r.key == "GET:/hello"), "{rows:?}");
        drop(store);
        // Reopening keeps what is there and applies nothing twice.
        let again = RouteStore::open(&path).expect("reopen");
        assert_eq!(again.load_rows().expect("rows").rows.len(), rows.len());
    }

    #[test]
    fn rows_of_the_wrong_type_or_not_utf8_are_set_aside_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("routes.db");
        let store = RouteStore::open(&path).expect("open");
        let writer = Connection::open(&path).expect("writer");
        writer
            .execute_batch(
                "DELETE FROM functions;
                 INSERT INTO functions VALUES ('GET:/ok', '{\"runtime\":\"static\"}', 1);
                 INSERT INTO functions VALUES ('GET:/blob', x'7b7d', 1);
                 INSERT INTO functions VALUES (CAST(x'474554ff' AS TEXT), '{}', 1);
                 INSERT INTO functions VALUES ('GET:/bad-v', CAST(x'ff' AS TEXT), 1);
                 INSERT INTO functions VALUES ('GET:/when', '{}', 'yesterday');",
            )
            .expect("rows");
        let stored = store
            .load_rows()
            .expect("a table with bad rows still loads");
        let keys: Vec<&str> = stored.rows.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["GET:/ok"]);
        let mut reasons: Vec<(String, String)> = stored
            .unreadable
            .into_iter()
            .map(|s| (s.key, s.reason))
            .collect();
        reasons.sort();
        assert_eq!(
            reasons,
            [
                ("GET:/bad-v".to_string(), "v is not valid UTF-8".to_string()),
                ("GET:/blob".to_string(), "v is a BLOB, not TEXT".to_string()),
                (
                    "GET:/when".to_string(),
                    "updated is TEXT, not an INTEGER".to_string()
                ),
                (
                    "GET\u{fffd}".to_string(),
                    "k is not valid UTF-8".to_string()
                ),
            ]
        );
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
