//! When the watcher looks at the store again. It used to ask SQLite every
//! `--watch-interval-ms` (5 ms) whether anything changed: 200 wake-ups a
//! second on an idle gateway, the largest idle cost left. Now one inotify
//! watch on the store's directory tells it when the store's files (the
//! database, its `-wal`, `-journal`, `-shm`) were written, created,
//! removed or renamed, and the watcher polls at its interval only for
//! [`HOT_WINDOW`] after such an event. While nothing happens it sleeps in
//! `poll` on the inotify descriptor, and looks anyway every recheck
//! (`--watch-recheck-ms`, 250 ms).
//!
//! Why the hot window and the recheck: a commit becomes visible to
//! readers after its last `write` to the WAL (SQLite fsyncs, then updates
//! the WAL index in shared memory, which inotify does not see), so the
//! event can come before the change can be read. Polling on for
//! [`HOT_WINDOW`] covers that gap; the recheck covers a gap longer than
//! that and a file system whose writes inotify does not report.
//!
//! Owns its inotify descriptor only; calls nothing of corefn. Never reads
//! the store: what changed is for the watcher to find out.

use std::ffi::{OsStr, OsString};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

/// How long the watcher keeps polling at its interval after a change of
/// the store's files.
pub const HOT_WINDOW: Duration = Duration::from_millis(200);

/// What woke a wait for a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woke {
    /// One of the store's files changed.
    Changed,
    /// Nothing happened before the timeout.
    Quiet,
    /// There is no watch (it could not be made, or the directory itself
    /// went away): the caller polls.
    Unwatched,
}

pub struct StoreEvents {
    /// None: every wait is a sleep of the interval.
    inotify: Option<Inotify>,
    /// Each watched directory and the database's file name there (its
    /// `-wal`, `-journal` and `-shm` are named after it): the path's own, and
    /// where a symbolic link at the path leads (SQLite keeps the `-wal`
    /// next to the file the link names).
    watched: Vec<(WatchDescriptor, OsString)>,
    hot_until: Instant,
    /// How long a quiet wait lasts at most.
    recheck: Duration,
}

impl StoreEvents {
    /// A watch on the directory of `store_path`. When inotify is not to be
    /// had (no directory, the instance limit), says so once and polls.
    /// Starts hot, so the first looks come at the interval.
    pub fn new(store_path: &Path, recheck: Duration) -> StoreEvents {
        let mut places = vec![directory_and_name(store_path)];
        if let Ok(resolved) = store_path.canonicalize() {
            let place = directory_and_name(&resolved);
            if std::fs::canonicalize(&places[0].0).ok().as_deref() != Some(place.0.as_path())
                || place.1 != places[0].1
            {
                places.push(place);
            }
        }
        let mut watched = Vec::with_capacity(places.len());
        let inotify =
            Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).and_then(|inotify| {
                let mask = AddWatchFlags::IN_MODIFY
                    | AddWatchFlags::IN_CLOSE_WRITE
                    | AddWatchFlags::IN_CREATE
                    | AddWatchFlags::IN_DELETE
                    | AddWatchFlags::IN_MOVED_FROM
                    | AddWatchFlags::IN_MOVED_TO
                    | AddWatchFlags::IN_ATTRIB
                    | AddWatchFlags::IN_DELETE_SELF
                    | AddWatchFlags::IN_MOVE_SELF;
                for (directory, name) in places.iter() {
                    watched.push((inotify.add_watch(directory.as_path(), mask)?, name.clone()));
                }
                Ok(inotify)
            });
        let inotify = match inotify {
            Ok(inotify) => Some(inotify),
            Err(error) => {
                eprintln!(
                    "corefn: route watcher: cannot watch {} for changes ({error}); polling it \
                     instead",
                    places[0].0.display()
                );
                None
            }
        };
        StoreEvents {
            inotify,
            watched,
            hot_until: Instant::now() + HOT_WINDOW,
            recheck,
        }
    }

    /// Returns when the watcher should look again: after `interval` while
    /// the store's files changed within [`HOT_WINDOW`] (or always, with
    /// `poll_anyway` or without a watch), else at the next change or after
    /// the recheck time.
    pub fn wait(&mut self, interval: Duration, poll_anyway: bool) {
        if poll_anyway || self.inotify.is_none() || Instant::now() < self.hot_until {
            thread::sleep(interval);
            self.take_events();
            return;
        }
        self.next_change(self.recheck);
    }

    /// Waits at most `timeout` for a change of the store's files.
    pub fn next_change(&mut self, timeout: Duration) -> Woke {
        let deadline = Instant::now() + timeout;
        loop {
            let Some(inotify) = &self.inotify else {
                return Woke::Unwatched;
            };
            let left = deadline.saturating_duration_since(Instant::now());
            // Rounded up: a wait of 0 ms for a deadline still ahead would spin.
            let left_ms = u16::try_from(left.as_micros().div_ceil(1000)).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(left_ms)) {
                Ok(0) if Instant::now() >= deadline => return Woke::Quiet,
                Ok(0) | Err(Errno::EINTR) => continue,
                Ok(_) => {}
                Err(error) => {
                    self.give_up(&format!("cannot wait for changes ({error})"));
                    return Woke::Unwatched;
                }
            }
            match self.take_events() {
                Woke::Quiet if Instant::now() < deadline => continue,
                woke => return woke,
            }
        }
    }

    /// Reads what is queued; a change of the store's files makes the
    /// watcher hot again.
    fn take_events(&mut self) -> Woke {
        let Some(inotify) = &self.inotify else {
            return Woke::Unwatched;
        };
        let mut woke = Woke::Quiet;
        loop {
            let events = match inotify.read_events() {
                Ok(events) => events,
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(error) => {
                    self.give_up(&format!("cannot read changes ({error})"));
                    return Woke::Unwatched;
                }
            };
            for event in events {
                let gone = AddWatchFlags::IN_DELETE_SELF
                    | AddWatchFlags::IN_MOVE_SELF
                    | AddWatchFlags::IN_IGNORED;
                if event.mask.intersects(gone) {
                    self.give_up("the store's directory was moved or removed");
                    return Woke::Unwatched;
                }
                // A full queue lost events: any of them may have been ours.
                let ours = event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW)
                    || self.watched.iter().any(|(wd, file_name)| {
                        *wd == event.wd
                            && event
                                .name
                                .as_ref()
                                .is_some_and(|name| is_store_file(name, file_name))
                    });
                if ours {
                    woke = Woke::Changed;
                }
            }
        }
        if woke == Woke::Changed {
            self.hot_until = Instant::now() + HOT_WINDOW;
        }
        woke
    }

    /// From now on the watcher polls at its interval.
    ///
    /// One directory of two going away (the link's target's, say) ends the
    /// watch too: simpler than keeping half of it, and as correct.
    fn give_up(&mut self, why: &str) {
        eprintln!("corefn: route watcher: {why}; polling the store from now on");
        self.inotify = None;
    }
}

/// The database `file_name` or one of SQLite's files beside it.
fn is_store_file(name: &OsStr, file_name: &OsStr) -> bool {
    let Some(suffix) = name
        .as_encoded_bytes()
        .strip_prefix(file_name.as_encoded_bytes())
    else {
        return false;
    };
    matches!(suffix, b"" | b"-wal" | b"-journal" | b"-shm")
}

/// The directory holding `path` and the file's name in it.
fn directory_and_name(path: &Path) -> (PathBuf, OsString) {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    (
        directory,
        path.file_name().map(OsString::from).unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const RECHECK: Duration = Duration::from_millis(250);

    fn tempdir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("corefn-store-events-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    /// Past the hot window's start, with nothing queued.
    fn quiet(events: &mut StoreEvents) {
        assert_eq!(events.next_change(Duration::from_millis(20)), Woke::Quiet);
    }

    #[test]
    fn a_write_to_the_wal_is_a_change_and_other_files_are_not() {
        let dir = tempdir("wal");
        let db = dir.join("corefn.db");
        fs::write(&db, b"x").expect("db");
        let mut events = StoreEvents::new(&db, RECHECK);
        quiet(&mut events);
        fs::write(dir.join("other.txt"), b"unrelated").expect("other");
        fs::write(dir.join("corefn.dbx"), b"unrelated").expect("other");
        assert_eq!(events.next_change(Duration::from_millis(50)), Woke::Quiet);
        // No timing here: a change must wake the wait long before its
        // timeout, which is far beyond anything a test run waits.
        fs::write(dir.join("corefn.db-wal"), b"frame").expect("wal");
        assert_eq!(events.next_change(Duration::from_secs(30)), Woke::Changed);
        quiet(&mut events);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_renamed_over_the_store_is_a_change() {
        let dir = tempdir("rename");
        let db = dir.join("corefn.db");
        fs::write(&db, b"old").expect("db");
        fs::write(dir.join("new.db"), b"new").expect("new");
        let mut events = StoreEvents::new(&db, RECHECK);
        quiet(&mut events);
        fs::rename(dir.join("new.db"), &db).expect("rename");
        assert_eq!(events.next_change(Duration::from_secs(30)), Woke::Changed);
        fs::remove_file(&db).expect("remove");
        assert_eq!(events.next_change(Duration::from_secs(30)), Woke::Changed);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_store_behind_a_symbolic_link_is_watched_where_it_lives() {
        let dir = tempdir("link");
        let real = dir.join("real");
        fs::create_dir_all(&real).expect("real dir");
        fs::write(real.join("routes.db"), b"x").expect("db");
        let link = dir.join("corefn.db");
        std::os::unix::fs::symlink(real.join("routes.db"), &link).expect("link");
        let mut events = StoreEvents::new(&link, RECHECK);
        quiet(&mut events);
        fs::write(real.join("routes.db-wal"), b"frame").expect("wal");
        assert_eq!(events.next_change(Duration::from_secs(30)), Woke::Changed);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn without_its_directory_the_watcher_polls() {
        let dir = tempdir("gone");
        let db = dir.join("corefn.db");
        let mut events = StoreEvents::new(&db, RECHECK);
        quiet(&mut events);
        fs::remove_dir_all(&dir).expect("remove");
        assert_eq!(events.next_change(Duration::from_secs(30)), Woke::Unwatched);
        // Now every wait is the interval's sleep.
        events.wait(Duration::from_millis(1), false);
        assert_eq!(events.next_change(Duration::from_secs(30)), Woke::Unwatched);
        let missing = StoreEvents::new(&dir.join("nowhere").join("corefn.db"), RECHECK);
        assert!(missing.inotify.is_none());
    }
}
