//! The watcher thread: polls the store's `data_version` and, when another
//! connection committed, rebuilds the route table and publishes it.
//!
//! It owns the only long-lived SQLite connection of the gateway and never
//! touches a core executor directly.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::modules::ModuleRoots;
use super::snapshot::SnapshotBoard;
use super::store::{PathNow, RouteStore, StoreError};
use super::table::RouteTable;
use crate::telemetry::stats::StatsRegistry;
use crate::telemetry::Telemetry;

/// The first table, built synchronously so the gateway starts with routes,
/// and the store's data version it was read at (hand it to [`spawn`]).
pub fn load_initial(
    store: &RouteStore,
    stats: &StatsRegistry,
    roots: Option<&ModuleRoots>,
) -> Result<(RouteTable, i64), StoreError> {
    // Version first: a commit that lands between the two reads is then
    // seen as a change by the watcher instead of being missed.
    let data_version = store.data_version()?;
    let mut table = RouteTable::from_store(1, store.load_rows()?, None, roots);
    table.set_invoke_keys(store.load_invoke_keys()?);
    table.attach_stats(stats);
    report_skipped(&table);
    Ok((table, data_version))
}

/// `loaded_at` is the data version [`load_initial`] returned.
pub fn spawn(
    store: RouteStore,
    board: Arc<SnapshotBoard>,
    loaded_at: i64,
    interval: Duration,
    telemetry: Arc<Telemetry>,
    roots: Option<ModuleRoots>,
) -> std::io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name("corefn-watcher".into())
        .spawn(move || watch(store, board, loaded_at, interval, &telemetry, roots))
}

fn watch(
    store: RouteStore,
    board: Arc<SnapshotBoard>,
    loaded_at: i64,
    interval: Duration,
    telemetry: &Telemetry,
    roots: Option<ModuleRoots>,
) {
    let mut data_version = Some(loaded_at);
    // What the last published table was built from. A commit to any other
    // table (schedule bookkeeping, the async queue) changes data_version
    // too; a table built from the same rows and keys is not published again.
    let mut built_from = None;
    let mut last_error: Option<String> = None;
    let mut path_was = PathNow::TheOpenedFile;
    loop {
        thread::sleep(interval);
        let path_now = store.path_now();
        if path_now != path_was {
            report_path(&store, path_now, &board);
            telemetry.set_store_replaced(path_now != PathNow::TheOpenedFile);
            path_was = path_now;
        }
        let result = store.data_version().and_then(|version| {
            if Some(version) == data_version {
                return Ok(());
            }
            let rows = store.load_rows()?;
            let keys = store.load_invoke_keys()?;
            let source = (rows, keys);
            if built_from.as_ref() == Some(&source) {
                data_version = Some(version);
                return Ok(());
            }
            let previous = board.current();
            let mut table = RouteTable::from_store(
                board.version() + 1,
                source.0.clone(),
                Some(&previous),
                roots.as_ref(),
            );
            table.set_invoke_keys(source.1.clone());
            table.attach_stats(&telemetry.stats);
            report_skipped(&table);
            board.publish(table);
            built_from = Some(source);
            data_version = Some(version);
            Ok(())
        });
        // Keep serving the last good table; report each distinct failure once.
        match result {
            Ok(()) => {
                telemetry.watcher_read();
                last_error = None
            }
            Err(error) => {
                let text = error.to_string();
                if last_error.as_deref() != Some(text.as_str()) {
                    eprintln!("corefn: route watcher: {text} (keeping the current routes)");
                    last_error = Some(text);
                }
            }
        }
    }
}

/// Said once per change: the routes keep coming from the file corefn
/// opened. (Switching to a new file live needs every connection to the
/// old one closed first, or the new file would be read through the old
/// one's WAL: not done yet.)
fn report_path(store: &RouteStore, now: PathNow, board: &SnapshotBoard) {
    let path = store.path().display();
    let version = board.version();
    match now {
        PathNow::TheOpenedFile => {
            eprintln!("corefn: route store {path} is the file corefn opened again")
        }
        PathNow::AnotherFile => eprintln!(
            "corefn: route store {path} now names another file; still serving route table v{version} \
             from the file corefn opened: restart corefn to serve the new one"
        ),
        PathNow::Nothing => eprintln!(
            "corefn: route store {path} is gone; still serving route table v{version} from the \
             file corefn opened"
        ),
    }
}

fn report_skipped(table: &RouteTable) {
    for row in table.skipped() {
        eprintln!(
            "corefn: route table v{}: skipped row {:?}: {}",
            table.version(),
            row.key,
            row.reason
        );
    }
}
