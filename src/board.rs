//! Publication of immutable values from a control-plane thread to the
//! cores: route tables (from the watcher) and worker scores (from the
//! metrics collector) travel the same way.
//!
//! The publisher puts each new value on a [`Board`] and bumps its version;
//! each core's housekeeping task notices the new version with one atomic
//! load and swaps its [`CoreCopy`]. Readers on the request path clone the
//! core's `Rc` (no atomic read-modify-write) and keep the value they
//! started with until they finish. Nothing here blocks a request.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::sync::lock;

/// A published value knows its version; versions only grow.
pub trait Versioned {
    fn version(&self) -> u64;
}

pub struct Board<T> {
    version: AtomicU64,
    current: Mutex<Arc<T>>,
    /// The version each core's copy holds (stored when it adopts one), so
    /// a thread off the cores can tell when every core serves a value.
    adopted: Mutex<Vec<Arc<AtomicU64>>>,
}

impl<T: Versioned> Board<T> {
    pub fn new(value: T) -> Board<T> {
        Board {
            version: AtomicU64::new(value.version()),
            current: Mutex::new(Arc::new(value)),
            adopted: Mutex::new(Vec::new()),
        }
    }

    /// Called by the one publishing thread.
    pub fn publish(&self, value: T) {
        let version = value.version();
        let mut current = lock(&self.current);
        assert!(version > current.version(), "published versions only grow");
        *current = Arc::new(value);
        self.version.store(version, Ordering::Release);
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn current(&self) -> Arc<T> {
        lock(&self.current).clone()
    }

    /// Whether every core's copy holds `version` or a newer one.
    pub fn adopted_by_every_copy(&self, version: u64) -> bool {
        lock(&self.adopted)
            .iter()
            .all(|held| held.load(Ordering::Acquire) >= version)
    }
}

/// One core's copy; only ever touched by that core's thread.
pub struct CoreCopy<T> {
    board: Arc<Board<T>>,
    // The outer Rc is deliberate: a request clones it without an atomic
    // read-modify-write, which cloning the Arc would cost on every request.
    #[allow(clippy::redundant_allocation)]
    local: RefCell<Rc<Arc<T>>>,
    /// This copy's entry in the board's `adopted`.
    held: Arc<AtomicU64>,
}

impl<T: Versioned> CoreCopy<T> {
    pub fn new(board: Arc<Board<T>>) -> CoreCopy<T> {
        let current = board.current();
        let held = Arc::new(AtomicU64::new(current.version()));
        lock(&board.adopted).push(held.clone());
        let local = RefCell::new(Rc::new(current));
        CoreCopy { board, local, held }
    }

    /// The value a request should use from start to finish.
    #[allow(clippy::redundant_allocation)]
    pub fn get(&self) -> Rc<Arc<T>> {
        self.local.borrow().clone()
    }

    /// Housekeeping gone quiet (see `gateway::core`): this copy counts as
    /// holding every version until [`CoreCopy::wake`], because its core
    /// calls that before it serves anything again.
    pub fn doze(&self) {
        self.held.store(u64::MAX, Ordering::Release);
    }

    /// The end of [`CoreCopy::doze`]: adopt the newest value and say which
    /// one is held.
    pub fn wake(&self) {
        self.refresh();
        self.held
            .store(self.local.borrow().version(), Ordering::Release);
    }

    /// Housekeeping: adopt the board's newest value if it changed. Returns
    /// true when the copy was swapped.
    pub fn refresh(&self) -> bool {
        let local_version = self.local.borrow().version();
        if self.board.version() == local_version {
            return false;
        }
        let newest = self.board.current();
        debug_assert!(newest.version() > local_version, "versions only grow");
        self.held.store(newest.version(), Ordering::Release);
        *self.local.borrow_mut() = Rc::new(newest);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Value(u64);

    impl Versioned for Value {
        fn version(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn a_version_is_adopted_once_every_copy_has_refreshed() {
        let board = Arc::new(Board::new(Value(1)));
        let a = CoreCopy::new(board.clone());
        let b = CoreCopy::new(board.clone());
        assert!(board.adopted_by_every_copy(1));
        board.publish(Value(2));
        assert!(
            !board.adopted_by_every_copy(2),
            "published, not yet taken up"
        );
        assert!(a.refresh());
        assert!(!board.adopted_by_every_copy(2), "one core still serves 1");
        assert!(b.refresh());
        assert!(board.adopted_by_every_copy(2));
        board.publish(Value(3));
        b.doze();
        assert!(
            !board.adopted_by_every_copy(3),
            "a dozing copy vouches only for itself"
        );
        a.doze();
        assert!(board.adopted_by_every_copy(3), "both take it up before use");
        a.wake();
        assert_eq!(a.get().version(), 3, "woken, it holds the newest");
        assert!(board.adopted_by_every_copy(3));
        board.publish(Value(4));
        assert!(
            !board.adopted_by_every_copy(4),
            "an awake copy holds what it holds"
        );
        b.wake();
        assert_eq!(b.get().version(), 4);
    }
}
