//! The one epoch ticker thread of an engine: it advances the engine's epoch
//! when an in-flight call's deadline has come, which is what lets
//! epoch-interruption deadlines stop guest code (a thread per call would
//! cost far more than the call itself).
//!
//! Every store's epoch deadline is one increment ahead, and its callback
//! checks the call's own deadline against the clock ([`super::host`]): an
//! increment stops exactly the calls that are due and lets the others run
//! on. So the thread need not tick: each call writes its deadline into a
//! slot, and the thread sleeps until the earliest one (or [`RECHECK`]),
//! saying when it will wake. A call due before that unparks it; calls of
//! one function share a timeout, so a later call is rarely due earlier and
//! a call costs two atomic stores and a load, no system call. A ticker that
//! ticked every 5 ms while calls ran woke about once per call at 1,000
//! calls a second (PERFORMANCE.md, "Timers that sleep until they are due").
//!
//! A call still running past its deadline (in a host call, where epochs are
//! not checked) is ticked for every [`TICK`] until it ends, and so is any
//! call that found no free slot (more calls at once than [`SLOTS`]).
//!
//! Never touches a store and never blocks a call.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use wasmtime::EngineWeak;

/// How often calls past their deadline (or without a slot) see the epoch
/// advance, until they end.
const TICK: Duration = Duration::from_millis(5);

/// The longest the thread sleeps without a deadline due: the bound on how
/// late it notices a stop that did not unpark it, and all it wakes for
/// while idle.
const RECHECK: Duration = Duration::from_secs(1);

/// Calls whose deadlines the thread sleeps on; more at once are ticked
/// every [`TICK`]. A worker runs one call per thread, at most 256 threads.
const SLOTS: usize = 256;

struct Shared {
    /// Per slot: microseconds since `origin` of its call's deadline, plus
    /// one; 0 when free.
    deadlines: Box<[AtomicU64]>,
    /// Calls in flight that found no free slot.
    unslotted: AtomicUsize,
    /// When the thread will wake next, in the slots' units (without the
    /// plus one).
    wakes_at_us: AtomicU64,
    /// Epoch increments so far (the tests watch it).
    increments: AtomicU64,
    stop: AtomicBool,
    origin: Instant,
    recheck: Duration,
}

pub(super) struct Ticker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    pub(super) fn start(engine: EngineWeak) -> std::io::Result<Ticker> {
        Ticker::start_with(engine, RECHECK)
    }

    fn start_with(engine: EngineWeak, recheck: Duration) -> std::io::Result<Ticker> {
        let shared = Arc::new(Shared {
            deadlines: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            unslotted: AtomicUsize::new(0),
            wakes_at_us: AtomicU64::new(0),
            increments: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            origin: Instant::now(),
            recheck,
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

    /// Marks a call due at `deadline` in flight until the guard is dropped.
    pub(super) fn enter(&self, deadline: Instant) -> InFlight<'_> {
        let shared = &*self.shared;
        let deadline_us = shared.us_of(deadline);
        let slot = shared.deadlines.iter().position(|slot| {
            slot.load(Ordering::Relaxed) == 0
                && slot
                    .compare_exchange(0, deadline_us + 1, Ordering::SeqCst, Ordering::Relaxed)
                    .is_ok()
        });
        // SeqCst with the thread's store of `wakes_at_us` and its look at
        // the slots: either it sees this deadline, or this sees when it
        // wakes (see `run`).
        let unpark = match slot {
            Some(_) => deadline_us < shared.wakes_at_us.load(Ordering::SeqCst),
            None => {
                shared.unslotted.fetch_add(1, Ordering::SeqCst);
                true
            }
        };
        if unpark {
            if let Some(thread) = &self.thread {
                thread.thread().unpark();
            }
        }
        InFlight { shared, slot }
    }

    #[cfg(test)]
    fn increments(&self) -> u64 {
        self.shared.increments.load(Ordering::Acquire)
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

pub(super) struct InFlight<'a> {
    shared: &'a Shared,
    slot: Option<usize>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        match self.slot {
            Some(slot) => self.shared.deadlines[slot].store(0, Ordering::Release),
            None => {
                let before = self.shared.unslotted.fetch_sub(1, Ordering::AcqRel);
                debug_assert!(before > 0, "unslotted calls never go negative");
            }
        }
    }
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.us_of(Instant::now())
    }

    fn us_of(&self, at: Instant) -> u64 {
        let us = at.saturating_duration_since(self.origin).as_micros();
        // Leaves room for a slot's plus one.
        u64::try_from(us).unwrap_or(u64::MAX).min(u64::MAX - 1)
    }

    /// (a slotted call is past its deadline at `now_us`, the earliest
    /// deadline still to come).
    fn look(&self, now_us: u64) -> (bool, u64) {
        let mut overdue = false;
        let mut earliest_us = u64::MAX;
        for slot in self.deadlines.iter() {
            let deadline_us = match slot.load(Ordering::SeqCst) {
                0 => continue,
                stored => stored - 1,
            };
            if deadline_us <= now_us {
                overdue = true;
            } else {
                earliest_us = earliest_us.min(deadline_us);
            }
        }
        (overdue, earliest_us)
    }
}

fn run(engine: &EngineWeak, shared: &Shared) {
    let tick_us = TICK.as_micros() as u64;
    let recheck_us = shared.recheck.as_micros() as u64;
    while !shared.stop.load(Ordering::Acquire) {
        let now_us = shared.now_us();
        let (overdue, earliest_us) = shared.look(now_us);
        let ticking = overdue || shared.unslotted.load(Ordering::SeqCst) > 0;
        if ticking {
            let Some(engine) = engine.upgrade() else {
                return;
            };
            engine.increment_epoch();
            shared.increments.fetch_add(1, Ordering::AcqRel);
        }
        let mut wakes_at_us = earliest_us.min(now_us.saturating_add(recheck_us));
        if ticking {
            wakes_at_us = wakes_at_us.min(now_us + tick_us);
        }
        shared.wakes_at_us.store(wakes_at_us, Ordering::SeqCst);
        // A call that came between the look and that store may have read
        // the wake-up before it and not unparked: look once more.
        let (_, earliest_us) = shared.look(now_us);
        if earliest_us < wakes_at_us {
            continue;
        }
        let sleep_us = wakes_at_us.saturating_sub(shared.now_us());
        if sleep_us > 0 {
            thread::park_timeout(Duration::from_micros(sleep_us));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::{Config, Engine};

    fn engine() -> Engine {
        let mut config = Config::new();
        config.epoch_interruption(true);
        Engine::new(&config).expect("engine")
    }

    /// Waits (bounded) until the ticker has incremented `at_least` times.
    fn wait_for_increments(ticker: &Ticker, at_least: u64) -> bool {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if ticker.increments() >= at_least {
                return true;
            }
            thread::sleep(Duration::from_millis(1));
        }
        false
    }

    #[test]
    fn a_call_due_before_the_ticker_wakes_unparks_it() {
        let engine = engine();
        // Without the unpark it would wake only after an hour.
        let ticker = Ticker::start_with(engine.weak(), Duration::from_secs(3600)).expect("ticker");
        thread::sleep(Duration::from_millis(20));
        let _call = ticker.enter(Instant::now() + Duration::from_millis(20));
        assert!(
            wait_for_increments(&ticker, 1),
            "the epoch advanced once the call was due"
        );
    }

    #[test]
    fn a_call_far_from_its_deadline_does_not_advance_the_epoch() {
        let engine = engine();
        let ticker = Ticker::start_with(engine.weak(), Duration::from_millis(2)).expect("ticker");
        let call = ticker.enter(Instant::now() + Duration::from_secs(3600));
        thread::sleep(Duration::from_millis(50));
        assert_eq!(ticker.increments(), 0, "woken by its recheck, nothing due");
        drop(call);
    }

    #[test]
    fn a_call_past_its_deadline_is_ticked_until_it_ends() {
        let engine = engine();
        let ticker = Ticker::start(engine.weak()).expect("ticker");
        let call = ticker.enter(Instant::now());
        assert!(
            wait_for_increments(&ticker, 3),
            "still in flight past its deadline: ticked again and again"
        );
        drop(call);
    }

    #[test]
    fn a_call_without_a_free_slot_is_ticked() {
        let engine = engine();
        let ticker = Ticker::start(engine.weak()).expect("ticker");
        let far = Instant::now() + Duration::from_secs(3600);
        let slotted: Vec<_> = (0..SLOTS).map(|_| ticker.enter(far)).collect();
        assert!(slotted.iter().all(|call| call.slot.is_some()));
        let unslotted = ticker.enter(far);
        assert_eq!(unslotted.slot, None);
        assert!(
            wait_for_increments(&ticker, 2),
            "a call the thread cannot see is ticked every {TICK:?}"
        );
        drop(unslotted);
        drop(slotted);
        let freed = ticker.enter(far);
        assert_eq!(freed.slot, Some(0), "ended calls free their slots");
    }
}
