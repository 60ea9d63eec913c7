//! What identifies one version of a function's file on disk, and the
//! throttled check that tells a runtime when to load it again.
//!
//! Every runtime that keeps code loaded (compiled wasm, a `dlopen`ed
//! library, a warm language host) asks the same question per request: is the
//! file still the one I loaded? One `stat` per request was 8 % of a worker's
//! time under load, so the answer is reused for [`FILE_CHECK_INTERVAL_MS`].
//! Writing a file in place within the file system's timestamp granularity
//! without changing its size is not noticed: deploy by writing a new file
//! and renaming it over the old one (a new inode).

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::sync::lock;

/// A function's file is looked at (one `stat`) at most this often per
/// process and function; a change on disk is served within this much.
pub const FILE_CHECK_INTERVAL_MS: u64 = 10;

/// Device, inode, size, mtime and ctime of one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileStamp {
    pub fn of(metadata: &fs::Metadata) -> FileStamp {
        FileStamp {
            dev: metadata.dev(),
            ino: metadata.ino(),
            size: metadata.size(),
            mtime_ns: i128::from(metadata.mtime()) * 1_000_000_000
                + i128::from(metadata.mtime_nsec()),
            ctime_ns: i128::from(metadata.ctime()) * 1_000_000_000
                + i128::from(metadata.ctime_nsec()),
        }
    }

    /// The stamp of the file at `path` (symlinks followed).
    pub fn read(path: &Path) -> io::Result<FileStamp> {
        fs::metadata(path).map(|metadata| FileStamp::of(&metadata))
    }
}

/// A file and the version of it last seen, re-checked at most every
/// [`FILE_CHECK_INTERVAL_MS`]. Each change of the stamp bumps a generation
/// number, which is what loaded code is tagged with.
#[derive(Debug)]
pub struct WatchedFile {
    path: PathBuf,
    created: Instant,
    /// When the stamp was last found (0: never, or the file was missing);
    /// stored after `generation`, so a fresh check means a current one.
    checked_ms: AtomicU64,
    /// `state.1`, readable without the lock on the per-request path.
    generation: AtomicU64,
    /// The stamp last seen and its generation; held only to `stat`.
    state: Mutex<(Option<FileStamp>, u64)>,
}

impl WatchedFile {
    /// Nothing is read until the first [`WatchedFile::generation`].
    pub fn new(path: PathBuf) -> WatchedFile {
        WatchedFile {
            path,
            created: Instant::now(),
            checked_ms: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            state: Mutex::new((None, 0)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The generation of the file as it is now: unchanged within
    /// [`FILE_CHECK_INTERVAL_MS`] of the last check, else one `stat`, and a
    /// new generation when the stamp moved. An unreadable file is an error
    /// (and forgets the stamp, so that it counts as new when it is back).
    pub fn generation(&self) -> io::Result<u64> {
        // Offset by one so that 0 means "never checked".
        let now_ms = self.created.elapsed().as_millis() as u64 + 1;
        let checked_ms = self.checked_ms.load(Ordering::Acquire);
        if checked_ms != 0 && now_ms.saturating_sub(checked_ms) < FILE_CHECK_INTERVAL_MS {
            return Ok(self.generation.load(Ordering::Relaxed));
        }
        let mut state = lock(&self.state);
        let stamp = match FileStamp::read(&self.path) {
            Ok(stamp) => stamp,
            Err(error) => {
                state.0 = None;
                self.checked_ms.store(0, Ordering::Relaxed);
                return Err(error);
            }
        };
        if state.0 != Some(stamp) {
            state.0 = Some(stamp);
            state.1 += 1;
            self.generation.store(state.1, Ordering::Relaxed);
        }
        self.checked_ms.store(now_ms, Ordering::Release);
        Ok(state.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_file_is_a_new_generation_and_a_missing_one_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.txt");
        fs::write(&path, "one").expect("write");
        let watched = WatchedFile::new(path.clone());
        let first = watched.generation().expect("exists");
        assert_eq!(watched.generation().expect("exists"), first, "unchanged");
        let next = dir.path().join("f.txt.new");
        fs::write(&next, "two!").expect("write");
        fs::rename(&next, &path).expect("rename");
        std::thread::sleep(std::time::Duration::from_millis(FILE_CHECK_INTERVAL_MS + 5));
        let second = watched.generation().expect("exists");
        assert!(second > first, "a renamed-over file is a new generation");
        fs::remove_file(&path).expect("remove");
        std::thread::sleep(std::time::Duration::from_millis(FILE_CHECK_INTERVAL_MS + 5));
        assert!(watched.generation().is_err(), "a removed file is an error");
    }
}
