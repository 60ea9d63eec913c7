//! The database file as the gateway's threads share it. Every thread that
//! reads or writes the store (the control API, the async intake and
//! dispatcher, the cron thread) has its own connection, kept in a slot of
//! the [`SharedStore`] rather than by the thread, so that the route watcher
//! can close all of them when the file at the path is replaced, emptied or
//! deleted. It must: a connection left open on the old file keeps that
//! file's `-wal` and `-shm` beside the path, and a new file opened next to
//! them is read, and checkpointed, through the old file's log.
//!
//! Owns the slots, whether the store may be used now, and the identity of
//! the sidecar files an opened database made. Calls only SQLite and the
//! file system; never runs on a core executor (SQLite calls block).

use std::ffi::OsString;
use std::ops::{Deref, DerefMut};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::config::DbConfig;
use rusqlite::Connection;
use thiserror::Error;

use crate::sync::lock;

/// A file as the file system names it: (device, inode).
pub type FileId = (u64, u64);

pub fn file_id(path: &Path) -> Option<FileId> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// What a thread does to each connection it opens (busy timeout, sync
/// level), at start and again after a switch.
pub type Setup = fn(&Connection) -> rusqlite::Result<()>;

#[derive(Debug, Error)]
pub enum StoreUnavailable {
    /// The watcher closed every connection: the path names no usable
    /// store now.
    #[error("the route store is unavailable: {0}")]
    Closed(String),
    #[error("cannot open the route store {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

pub struct SharedStore {
    path: PathBuf,
    state: Mutex<State>,
    slots: Mutex<Vec<Arc<Mutex<Slot>>>>,
}

struct State {
    /// Grows with every switch to a new file; a slot opened under an
    /// earlier one is reopened.
    generation: u64,
    /// Why the store may not be used now (`None`: it may).
    closed: Option<String>,
}

struct Slot {
    connection: Option<Connection>,
    generation: u64,
}

impl SharedStore {
    pub fn new(path: &Path) -> Arc<SharedStore> {
        Arc::new(SharedStore {
            path: path.to_path_buf(),
            state: Mutex::new(State {
                generation: 1,
                closed: None,
            }),
            slots: Mutex::new(Vec::new()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A thread's own connection, opened now so that a start fails at once
    /// when the file cannot be opened.
    pub fn handle(self: &Arc<Self>, setup: Setup) -> Result<StoreHandle, StoreUnavailable> {
        let slot = Arc::new(Mutex::new(Slot {
            connection: None,
            generation: lock(&self.state).generation,
        }));
        lock(&self.slots).push(slot.clone());
        let handle = StoreHandle {
            shared: self.clone(),
            slot,
            setup,
        };
        handle.connect()?;
        Ok(handle)
    }

    /// Closes every thread's connection and refuses new ones until
    /// [`SharedStore::reopen`]. Waits for a connection in use to be put
    /// back. No connection checkpoints as it closes: the file at the path
    /// may be a new one, or the old one emptied on purpose, and the old
    /// log must not be written into it.
    pub fn close_all(&self, reason: &str) {
        lock(&self.state).closed = Some(reason.to_string());
        let slots = lock(&self.slots).clone();
        for slot in slots {
            if let Some(connection) = lock(&slot).connection.take() {
                close_without_checkpoint(connection);
            }
        }
    }

    /// The path names a usable store again; each thread opens it at its
    /// next use.
    pub fn reopen(&self) {
        let mut state = lock(&self.state);
        state.generation += 1;
        state.closed = None;
    }
}

/// Drops `connection` without the checkpoint SQLite runs when the last
/// connection to a file closes (see [`SharedStore::close_all`]).
pub fn close_without_checkpoint(connection: Connection) {
    // A connection that refuses the setting still closes; its checkpoint
    // fails anyway when the file it has open was renamed or unlinked.
    let _ = connection.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true);
    drop(connection);
}

/// One thread's way to the store.
pub struct StoreHandle {
    shared: Arc<SharedStore>,
    slot: Arc<Mutex<Slot>>,
    setup: Setup,
}

/// A connection in use; the watcher's switch waits until it is dropped.
pub struct Connected<'h> {
    slot: MutexGuard<'h, Slot>,
    /// This connection is the first one to a file the watcher switched to
    /// since this thread last used the store: state kept from the old
    /// file (a count, a cache) must be read again.
    pub switched: bool,
}

impl StoreHandle {
    pub fn connect(&self) -> Result<Connected<'_>, StoreUnavailable> {
        let mut slot = lock(&self.slot);
        let generation = {
            let state = lock(&self.shared.state);
            if let Some(reason) = &state.closed {
                return Err(StoreUnavailable::Closed(reason.clone()));
            }
            state.generation
        };
        // The switch takes this slot's lock before it drops the
        // connection, so a connection opened here after the state was read
        // is closed with the others.
        let switched = slot.generation != generation;
        if switched || slot.connection.is_none() {
            slot.connection = None;
            let open_error = |source| StoreUnavailable::Open {
                path: self.shared.path.clone(),
                source,
            };
            let connection = Connection::open(&self.shared.path).map_err(open_error)?;
            (self.setup)(&connection).map_err(open_error)?;
            slot.connection = Some(connection);
            slot.generation = generation;
        }
        Ok(Connected { slot, switched })
    }
}

impl Deref for Connected<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.slot
            .connection
            .as_ref()
            .expect("a connected slot holds its connection")
    }
}

impl DerefMut for Connected<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.slot
            .connection
            .as_mut()
            .expect("a connected slot holds its connection")
    }
}

/// The write-ahead log and shared-memory index SQLite keeps beside a
/// database in WAL mode, as they were while it was open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sidecars {
    wal: Option<FileId>,
    shm: Option<FileId>,
}

impl Sidecars {
    pub fn of(db: &Path) -> Sidecars {
        Sidecars {
            wal: file_id(&sidecar_path(db, "-wal")),
            shm: file_id(&sidecar_path(db, "-shm")),
        }
    }

    pub fn known(&self) -> bool {
        self.wal.is_some() && self.shm.is_some()
    }

    /// Removes those still beside `db` that are the ones recorded: they
    /// belong to a file that is gone from the path (or was emptied), and a
    /// new file would otherwise be read through them. A sidecar that is
    /// another file now belongs to someone else and stays. Returns how
    /// many were removed.
    pub fn remove_stale(&self, db: &Path) -> std::io::Result<usize> {
        let mut removed = 0;
        for (suffix, recorded) in [("-wal", self.wal), ("-shm", self.shm)] {
            let path = sidecar_path(db, suffix);
            if recorded.is_some() && file_id(&path) == recorded {
                std::fs::remove_file(&path)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// `db` with `suffix` (`-wal`, `-shm`) appended to its file name, where
/// SQLite keeps that sidecar.
pub fn sidecar_path(db: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(db.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(connection: &Connection) -> rusqlite::Result<()> {
        connection.pragma_update(None, "journal_mode", "WAL")
    }

    fn count(handle: &StoreHandle) -> i64 {
        let connection = handle.connect().expect("connect");
        connection
            .query_row("SELECT count(*) FROM t", [], |row| row.get(0))
            .expect("count")
    }

    /// The hazard this module exists for, and its way out: after a rename
    /// over the path, the old file's log is left beside it; closing every
    /// connection and removing the recorded sidecars lets the new file be
    /// read as it is.
    #[test]
    fn a_switch_reads_the_new_file_and_not_through_the_old_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("store.db");
        let first = Connection::open(&db).expect("open");
        setup(&first).expect("wal");
        first
            .execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2);")
            .expect("old rows");
        let shared = SharedStore::new(&db);
        let handle = shared.handle(|_| Ok(())).expect("handle");
        assert_eq!(count(&handle), 2);
        let sidecars = Sidecars::of(&db);
        assert!(sidecars.known(), "{sidecars:?}");

        let new = dir.path().join("new.db");
        let writer = Connection::open(&new).expect("new");
        setup(&writer).expect("wal");
        writer
            .execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (7);")
            .expect("new rows");
        drop(writer);
        std::fs::rename(&new, &db).expect("mv");

        shared.close_all("replaced");
        assert!(matches!(
            handle.connect(),
            Err(StoreUnavailable::Closed(reason)) if reason == "replaced"
        ));
        close_without_checkpoint(first);
        assert_eq!(sidecars.remove_stale(&db).expect("remove"), 2);
        shared.reopen();
        let connected = handle.connect().expect("reconnect");
        assert!(connected.switched);
        drop(connected);
        assert_eq!(count(&handle), 1);
        assert!(!handle.connect().expect("again").switched);
    }

    /// A sidecar that is not the recorded file (the new store's own log)
    /// is never removed.
    #[test]
    fn a_sidecar_of_another_file_stays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("store.db");
        let recorded = Sidecars {
            wal: Some((1, 1)),
            shm: Some((1, 2)),
        };
        std::fs::write(sidecar_path(&db, "-wal"), b"").expect("wal");
        assert_eq!(recorded.remove_stale(&db).expect("remove"), 0);
        assert!(sidecar_path(&db, "-wal").exists());
    }
}
