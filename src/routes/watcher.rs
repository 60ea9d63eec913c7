//! The watcher thread: polls the store's `data_version` and, when another
//! connection committed, rebuilds the route table and publishes it. It
//! polls at its interval only while the store's files change, and sleeps
//! until they do otherwise ([`super::store_events`]). Each tick it also
//! checks (one stat) that the store's path still names the
//! file it opened: when the file is replaced (`mv new.db corefn.db`),
//! deleted or emptied, every connection of the gateway to the old file is
//! closed ([`SharedStore::close_all`]), the last table keeps serving, and
//! once a valid store is at the path it is opened, migrated and served.
//!
//! Never touches a core executor directly: tables reach the cores through
//! the [`SnapshotBoard`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::modules::ModuleRoots;
use super::snapshot::SnapshotBoard;
use super::store::{PathNow, RouteStore, StoreError};
use super::store_events::StoreEvents;
use super::table::{KeyGrant, RouteTable, StoredRows};
use crate::schema::file::{FileId, SharedStore};
use crate::telemetry::stats::StatsRegistry;
use crate::telemetry::{StoreState, Telemetry};

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

/// What the watcher is handed besides the store it reads.
pub struct WatchParts {
    pub board: Arc<SnapshotBoard>,
    /// The data version [`load_initial`] returned.
    pub loaded_at: i64,
    pub interval: Duration,
    /// How often it looks while the store's files do not change.
    pub recheck: Duration,
    pub telemetry: Arc<Telemetry>,
    pub roots: Option<ModuleRoots>,
    /// Every other thread's connection to the store: closed when the file
    /// at the path is replaced, reopened on the new one.
    pub shared: Arc<SharedStore>,
    /// Run on a new file once it is switched to, before the other threads
    /// reopen it (the gateway makes its admin key there).
    pub on_switch: Box<dyn Fn(&Path) + Send>,
}

/// How long a new file at the path must keep its size and time before
/// it is opened: a copy still being written is not read (or migrated)
/// half done. A rename is complete at once and waits this long.
pub const SETTLE: Duration = Duration::from_millis(20);

pub fn spawn(store: RouteStore, parts: WatchParts) -> std::io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name("corefn-watcher".into())
        .spawn(move || watch(store, parts))
}

/// Where the watcher is with the file at the store's path.
enum Attachment {
    /// Reading the file it opened, which the path still names.
    Attached(Box<Reading>),
    /// The path named another file, none or an emptied one: every
    /// connection to the old file is closed, and the last table serves
    /// until a valid store is at the path and has stopped changing.
    Detached(Waiting),
}

/// What a table is built from: the route rows and the invoke keys.
type Source = (StoredRows, HashMap<String, KeyGrant>);

struct Reading {
    store: RouteStore,
    data_version: Option<i64>,
    /// What the last published table was built from. A commit to any
    /// other table (schedule bookkeeping, the async queue) changes
    /// data_version too; a table built from the same rows and keys is not
    /// published again.
    built_from: Option<Source>,
    last_error: Option<String>,
}

#[derive(Default)]
struct Waiting {
    /// The file at the path as last seen, and since when it looks so.
    seen: Option<(FileStamp, Instant)>,
    /// A file that could not be opened as a store: tried again only once
    /// it changes.
    failed: Option<FileStamp>,
}

/// A file's identity, size and modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    id: FileId,
    len: u64,
    modified_ns: i128,
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let metadata = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            id: (metadata.dev(), metadata.ino()),
            len: metadata.len(),
            modified_ns: i128::from(metadata.mtime()) * 1_000_000_000
                + i128::from(metadata.mtime_nsec()),
        })
    }
}

fn watch(store: RouteStore, parts: WatchParts) {
    let mut attachment = Attachment::Attached(Box::new(Reading {
        store,
        data_version: Some(parts.loaded_at),
        built_from: None,
        last_error: None,
    }));
    let mut events = StoreEvents::new(parts.shared.path(), parts.recheck);
    loop {
        // Without a store the watcher waits for a file to settle: it
        // looks at every interval.
        let detached = matches!(attachment, Attachment::Detached(_));
        events.wait(parts.interval, detached);
        attachment = match attachment {
            Attachment::Attached(mut reading) => match reading.store.path_now() {
                PathNow::TheOpenedFile => {
                    read_changes(&mut reading, &parts);
                    Attachment::Attached(reading)
                }
                now => {
                    detach(reading.store, now, &parts);
                    // The file there now starts to settle at once.
                    let path = parts.shared.path();
                    Attachment::Detached(Waiting {
                        seen: FileStamp::of(path).map(|stamp| (stamp, Instant::now())),
                        failed: None,
                    })
                }
            },
            Attachment::Detached(mut waiting) => match attach(&mut waiting, &parts) {
                Some(reading) => Attachment::Attached(Box::new(reading)),
                None => Attachment::Detached(waiting),
            },
        };
    }
}

/// One tick on the file the path still names: a new table when another
/// connection committed a change of the routes or keys.
fn read_changes(reading: &mut Reading, parts: &WatchParts) {
    let board = &parts.board;
    let result = reading.store.data_version().and_then(|version| {
        if Some(version) == reading.data_version {
            return Ok(());
        }
        let source = (
            reading.store.load_rows()?,
            reading.store.load_invoke_keys()?,
        );
        if reading.built_from.as_ref() != Some(&source) {
            board.publish(next_table(&source, parts));
            reading.built_from = Some(source);
        }
        reading.data_version = Some(version);
        Ok(())
    });
    // Keep serving the last good table; report each distinct failure once.
    match result {
        Ok(()) => {
            parts.telemetry.watcher_read();
            reading.last_error = None
        }
        Err(error) => {
            let text = error.to_string();
            if reading.last_error.as_deref() != Some(text.as_str()) {
                eprintln!("corefn: route watcher: {text} (keeping the current routes)");
                reading.last_error = Some(text);
            }
        }
    }
}

/// The path no longer names the file opened (or it was emptied): every
/// connection to it closes, and its `-wal` and `-shm` go, so that a new
/// file at the path is never read through them.
fn detach(store: RouteStore, now: PathNow, parts: &WatchParts) {
    let path = store.path().to_path_buf();
    let (state, what) = match now {
        PathNow::AnotherFile => (StoreState::Replaced, "now names another file"),
        PathNow::Nothing => (StoreState::Gone, "is gone"),
        PathNow::Emptied => (StoreState::Emptied, "was emptied (0 bytes)"),
        PathNow::TheOpenedFile => unreachable!("detach is for a path that changed"),
    };
    eprintln!(
        "corefn: route store {} {what}; still serving route table v{}; switching once a valid store \
         is there",
        path.display(),
        parts.board.version()
    );
    parts
        .shared
        .close_all(&format!("{} {what}", path.display()));
    if let Err(error) = store.close_for_good() {
        eprintln!(
            "corefn: route store {}: cannot remove the old file's -wal/-shm: {error}",
            path.display()
        );
    }
    parts.telemetry.set_store_state(state, None);
}

/// One tick without a store: a file at the path that has stopped
/// changing is opened (and migrated); its routes are served from then on.
fn attach(waiting: &mut Waiting, parts: &WatchParts) -> Option<Reading> {
    let path = parts.shared.path();
    let stamp = match FileStamp::of(path) {
        None => {
            parts.telemetry.set_store_state(StoreState::Gone, None);
            waiting.seen = None;
            return None;
        }
        Some(stamp) if stamp.len == 0 => {
            parts.telemetry.set_store_state(StoreState::Emptied, None);
            waiting.seen = None;
            return None;
        }
        Some(stamp) => stamp,
    };
    if waiting.failed == Some(stamp) {
        return None;
    }
    match waiting.seen {
        Some((seen, since)) if seen == stamp && since.elapsed() >= SETTLE => {}
        Some((seen, _)) if seen == stamp => return None,
        _ => {
            waiting.seen = Some((stamp, Instant::now()));
            parts.telemetry.set_store_state(StoreState::Replaced, None);
            return None;
        }
    }
    let opened = RouteStore::open(path).and_then(|store| {
        // Before the first read, so the table has the key it makes.
        (parts.on_switch)(path);
        let data_version = store.data_version()?;
        let source = (store.load_rows()?, store.load_invoke_keys()?);
        Ok((store, data_version, source))
    });
    let (store, data_version, source) = match opened {
        Ok(opened) => opened,
        Err(error) => {
            eprintln!(
                "corefn: route store {}: the new file is not usable: {error}; still serving route \
                 table v{}",
                path.display(),
                parts.board.version()
            );
            parts
                .telemetry
                .set_store_state(StoreState::Replaced, Some(error.to_string()));
            waiting.failed = Some(stamp);
            return None;
        }
    };
    let table = next_table(&source, parts);
    eprintln!(
        "corefn: route store {}: switched to the new file: route table v{} ({} routes)",
        path.display(),
        table.version(),
        table.routes().len()
    );
    parts.board.publish(table);
    parts.shared.reopen();
    parts.telemetry.store_switched();
    parts.telemetry.watcher_read();
    Some(Reading {
        store,
        data_version: Some(data_version),
        built_from: Some(source),
        last_error: None,
    })
}

/// The table after the published one, built from the store's rows and keys
/// (each skipped row said on stderr).
fn next_table(source: &Source, parts: &WatchParts) -> RouteTable {
    let previous = parts.board.current();
    let mut table = RouteTable::from_store(
        parts.board.version() + 1,
        source.0.clone(),
        Some(&previous),
        parts.roots.as_ref(),
    );
    table.set_invoke_keys(source.1.clone());
    table.attach_stats(&parts.telemetry.stats);
    report_skipped(&table);
    table
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
