//! The one epoch ticker thread of an engine: it advances the engine's epoch
//! once per [`TICK`] while calls are in flight, which is what lets
//! epoch-interruption deadlines stop guest code (a thread per call would cost
//! far more than the call itself).
//!
//! Idle for [`IDLE_GRACE`], the thread parks instead of waking a thousand
//! times a second; the first call to start unparks it. It never touches a
//! store and never blocks a call: calls only do an atomic add and, on the
//! 0 → 1 edge, an unpark (a system call only when the ticker really sleeps,
//! so back-to-back calls do not pay for one each).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use wasmtime::EngineWeak;

/// One epoch tick. Deadlines are counted in ticks, so this is also the
/// resolution of a timeout. Each tick is a wake-up of this thread, which
/// cost 70 ms of CPU a second at 1,000 req/s with a 1 ms tick (it keeps
/// ticking for [`IDLE_GRACE`] after each call): 5 ms is a fifth of that,
/// and late enough for a timeout counted in hundreds of milliseconds.
pub(super) const TICK: Duration = Duration::from_millis(5);

/// How long the ticker keeps ticking without calls before it parks.
const IDLE_GRACE: Duration = Duration::from_millis(100);

/// How long the parked ticker sleeps before looking at its flags again even
/// without an unpark (a safety net, not the wake-up path).
const IDLE_RECHECK: Duration = Duration::from_millis(100);

/// After falling this far behind (the process was stopped, the machine
/// suspended) the ticker resumes from now instead of catching up in a burst.
const CATCH_UP_MAX: Duration = Duration::from_millis(100);

struct Shared {
    in_flight: AtomicUsize,
    stop: AtomicBool,
}

pub(super) struct Ticker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    pub(super) fn start(engine: EngineWeak) -> std::io::Result<Ticker> {
        let shared = Arc::new(Shared {
            in_flight: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let thread_shared = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name("corefn-wasm-epoch".into())
            .stack_size(64 * 1024)
            .spawn(move || run(&engine, &thread_shared))?;
        Ok(Ticker {
            shared,
            thread: Some(thread),
        })
    }

    /// Marks a call in flight until the guard is dropped.
    pub(super) fn enter(&self) -> InFlight<'_> {
        if self.shared.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            if let Some(thread) = &self.thread {
                thread.thread().unpark();
            }
        }
        InFlight(&self.shared)
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            // The thread only sleeps and increments: it cannot panic short of
            // a bug, and a panicked ticker has nothing left to clean up.
            let _ = thread.join();
        }
    }
}

pub(super) struct InFlight<'a>(&'a Shared);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let before = self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "in-flight calls never go negative");
    }
}

fn run(engine: &EngineWeak, shared: &Shared) {
    let mut next = Instant::now();
    let mut idle_since: Option<Instant> = None;
    while !shared.stop.load(Ordering::Acquire) {
        if shared.in_flight.load(Ordering::Acquire) == 0 {
            let idle_since = *idle_since.get_or_insert_with(Instant::now);
            if idle_since.elapsed() >= IDLE_GRACE {
                thread::park_timeout(IDLE_RECHECK);
                next = Instant::now();
                continue;
            }
        } else {
            idle_since = None;
        }
        // Ticks are scheduled on a fixed grid so that the epoch tracks wall
        // time in ticks instead of drifting by each sleep's overshoot.
        next += TICK;
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        } else if now - next > CATCH_UP_MAX {
            next = now;
        }
        let Some(engine) = engine.upgrade() else {
            return;
        };
        engine.increment_epoch();
    }
}
