//! Route tables reach the cores through the shared publication mechanism
//! ([`crate::board`]): the watcher publishes on a [`SnapshotBoard`], each
//! core reads its [`CoreSnapshot`].

use super::table::RouteTable;
use crate::board::{Board, CoreCopy, Versioned};

pub type SnapshotBoard = Board<RouteTable>;
pub type CoreSnapshot = CoreCopy<RouteTable>;

impl Versioned for RouteTable {
    fn version(&self) -> u64 {
        RouteTable::version(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::table::RouteRow;
    use std::sync::Arc;

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
        let held = core.get();
        assert!(!core.refresh());
        board.publish(RouteTable::build(2, rows("GET:/b")));
        assert!(core.refresh());
        assert_eq!(core.get().version(), 2);
        assert_eq!(held.version(), 1);
        assert_eq!(held.routes()[0].key, "GET:/a");
    }
}
