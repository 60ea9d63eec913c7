//! The deadline of native calls, which nothing can interrupt: a call that
//! is still running at its deadline gets its timeout answered by this
//! thread, and then the worker process ends so that the supervisor starts
//! a fresh one (the stuck thread cannot be stopped any other way).
//!
//! One thread per worker, started with the first watched call. Whoever
//! moves a call's state out of `RUNNING` first owns its answer: the worker
//! thread when the call returns in time, the watchdog when it does not, so
//! a client never gets two responses.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::Instant;

use crate::sync::lock;

const RUNNING: u8 = 0;
const FINISHED: u8 = 1;
const EXPIRED: u8 = 2;

/// What the watchdog runs for a call past its deadline; it must not
/// return (it answers the client, then ends the process).
pub type OnExpiry = Box<dyn FnOnce() + Send>;

struct Watched {
    id: u64,
    deadline: Instant,
    state: Arc<AtomicU8>,
    on_expiry: OnExpiry,
}

#[derive(Default)]
struct Shared {
    calls: Mutex<(u64, Vec<Watched>)>,
    changed: Condvar,
}

#[derive(Default)]
pub struct Watchdog {
    shared: Arc<Shared>,
    thread: OnceLock<()>,
}

/// One watched call; [`Watch::finish`] it when it returns.
pub struct Watch<'a> {
    watchdog: &'a Watchdog,
    id: u64,
    state: Arc<AtomicU8>,
}

impl Watchdog {
    pub fn watch(&self, deadline: Instant, on_expiry: OnExpiry) -> Watch<'_> {
        self.thread.get_or_init(|| {
            let shared = self.shared.clone();
            let started = thread::Builder::new()
                .name("corefn-watchdog".into())
                .spawn(move || run(&shared));
            if let Err(error) = started {
                // Calls still run; only their deadline goes unenforced.
                eprintln!("corefn: cannot start the native call watchdog: {error}");
            }
        });
        let state = Arc::new(AtomicU8::new(RUNNING));
        let mut calls = lock(&self.shared.calls);
        calls.0 += 1;
        let id = calls.0;
        calls.1.push(Watched {
            id,
            deadline,
            state: state.clone(),
            on_expiry,
        });
        drop(calls);
        self.shared.changed.notify_one();
        Watch {
            watchdog: self,
            id,
            state,
        }
    }
}

impl Watch<'_> {
    /// True when the call returned in time and its answer is the caller's
    /// to give; false when the watchdog already answered (the process is
    /// ending).
    pub fn finish(self) -> bool {
        let won = self
            .state
            .compare_exchange(RUNNING, FINISHED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if won {
            lock(&self.watchdog.shared.calls)
                .1
                .retain(|watched| watched.id != self.id);
        }
        won
    }
}

fn run(shared: &Shared) {
    let mut calls = lock(&shared.calls);
    loop {
        let now = Instant::now();
        if let Some(at) = calls.1.iter().position(|w| w.deadline <= now) {
            let watched = calls.1.swap_remove(at);
            let expired = watched
                .state
                .compare_exchange(RUNNING, EXPIRED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
            if expired {
                drop(calls);
                (watched.on_expiry)();
                calls = lock(&shared.calls);
            }
            continue;
        }
        let next = calls.1.iter().map(|w| w.deadline).min();
        calls = match next {
            Some(deadline) => {
                let wait = deadline.saturating_duration_since(now);
                shared
                    .changed
                    .wait_timeout(calls, wait)
                    .map(|(guard, _)| guard)
                    .unwrap_or_else(|p| p.into_inner().0)
            }
            None => shared
                .changed
                .wait(calls)
                .unwrap_or_else(|p| p.into_inner()),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_call_past_its_deadline_is_answered_by_the_watchdog_only() {
        let watchdog = Watchdog::default();
        let (sender, expired) = mpsc::channel();
        let watch = watchdog.watch(
            Instant::now() + Duration::from_millis(20),
            Box::new(move || {
                let _ = sender.send(());
            }),
        );
        expired
            .recv_timeout(Duration::from_secs(5))
            .expect("the watchdog fired");
        assert!(!watch.finish(), "the late call must not answer again");
    }

    #[test]
    fn a_call_in_time_is_never_expired() {
        let watchdog = Watchdog::default();
        let (sender, expired) = mpsc::channel::<()>();
        let watch = watchdog.watch(
            Instant::now() + Duration::from_millis(50),
            Box::new(move || {
                let _ = sender.send(());
            }),
        );
        assert!(watch.finish(), "returned before the deadline");
        assert!(expired.recv_timeout(Duration::from_millis(150)).is_err());
    }
}
