//! Publication of route tables from the watcher thread to the cores.
//!
//! The watcher puts each new table on the [`SnapshotBoard`] and bumps its
//! version; each core's housekeeping task notices the new version (one
//! atomic load) and swaps its [`CoreSnapshot`]. Requests clone the core's
//! `Rc` (no atomic read-modify-write) and keep the table they started with
//! until they finish.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::table::RouteTable;

pub struct SnapshotBoard {
    version: AtomicU64,
    current: Mutex<Arc<RouteTable>>,
}

impl SnapshotBoard {
    pub fn new(table: RouteTable) -> SnapshotBoard {
        SnapshotBoard {
            version: AtomicU64::new(table.version()),
            current: Mutex::new(Arc::new(table)),
        }
    }

    /// Called by the watcher only.
    pub fn publish(&self, table: RouteTable) {
        let version = table.version();
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(version > current.version(), "snapshot versions only grow");
        *current = Arc::new(table);
        self.version.store(version, Ordering::Release);
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn current(&self) -> Arc<RouteTable> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// One core's view: only ever touched by that core's thread.
pub struct CoreSnapshot {
    board: Arc<SnapshotBoard>,
    // The outer Rc is deliberate: a request clones it without an atomic
    // read-modify-write, which cloning the Arc would cost on every request.
    #[allow(clippy::redundant_allocation)]
    table: RefCell<Rc<Arc<RouteTable>>>,
}

impl CoreSnapshot {
    pub fn new(board: Arc<SnapshotBoard>) -> CoreSnapshot {
        let table = RefCell::new(Rc::new(board.current()));
        CoreSnapshot { board, table }
    }

    /// The table a request should use from start to finish.
    #[allow(clippy::redundant_allocation)]
    pub fn table(&self) -> Rc<Arc<RouteTable>> {
        self.table.borrow().clone()
    }

    /// Housekeeping: adopt the board's newest table if it changed. Returns
    /// true when the snapshot was swapped.
    pub fn refresh(&self) -> bool {
        let local_version = self.table.borrow().version();
        if self.board.version() == local_version {
            return false;
        }
        let newest = self.board.current();
        debug_assert!(
            newest.version() > local_version,
            "snapshot versions only grow"
        );
        *self.table.borrow_mut() = Rc::new(newest);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::table::RouteRow;

    fn rows(key: &str) -> Vec<RouteRow> {
        vec![RouteRow {
            key: key.into(),
            value: r#"{"runtime":"static"}"#.into(),
            updated: 0,
        }]
    }

    #[test]
    fn core_adopts_new_table_and_old_holders_keep_theirs() {
        let board = Arc::new(SnapshotBoard::new(RouteTable::build(1, rows("GET:/a"))));
        let core = CoreSnapshot::new(board.clone());
        let held = core.table();
        assert!(!core.refresh());
        board.publish(RouteTable::build(2, rows("GET:/b")));
        assert!(core.refresh());
        assert_eq!(core.table().version(), 2);
        assert_eq!(held.version(), 1);
        assert_eq!(held.routes()[0].key, "GET:/a");
    }
}
