//! What a core shares with its connections: limits, the route snapshot,
//! the worker links, the Date line and the stop signal. A connection reads
//! this and nothing else of its core; the accept loop and housekeeping in
//! [`super::core`] own it and are its only writers.

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};

use glommio::sync::Semaphore;

use super::access_log::CoreAccessLog;
use super::request::RequestId;
use crate::clock::{self, DATE_LINE_LEN};
use crate::config::Limits;
use crate::routes::snapshot::CoreSnapshot;
use crate::scheduler::admission::CoreRateLimits;
use crate::telemetry::gateway::GatewayShard;
use crate::telemetry::Telemetry;
use crate::workers::pool::CoreWorkers;
use crate::workers::supervisor::PoolStatus;

pub struct CoreContext {
    pub index: usize,
    pub limits: Limits,
    pub snapshot: CoreSnapshot,
    date_line: Cell<[u8; DATE_LINE_LEN]>,
    date_secs: Cell<u64>,
    stopping: Cell<bool>,
    /// Housekeeping has gone quiet for lack of requests ([`super::core`]):
    /// the next request runs it first.
    dormant: Cell<bool>,
    /// A request or a connection came since housekeeping last looked.
    active: Cell<bool>,
    /// The dozing housekeeping task, woken when the core serves again so
    /// that it resumes its every-5-ms rounds at once.
    housekeeping_waker: Cell<Option<Waker>>,
    /// Never has permits; closed on stop so that waiters wake up.
    stop_signal: Semaphore,
    pub workers: Rc<CoreWorkers>,
    /// The link to the control plane, chosen like a worker's.
    pub control: Rc<CoreWorkers>,
    pub pool_status: Option<Arc<PoolStatus>>,
    pub access_log: Option<CoreAccessLog>,
    /// This core's token buckets of rate-limited routes.
    pub rate_limits: CoreRateLimits,
    /// xorshift64 state for canary splits and request ids.
    random_state: Cell<u64>,
    /// Request ids this core made so far.
    request_ids_made: Cell<u64>,
    /// Stats and gateway counters: this core writes its own shards.
    pub telemetry: Arc<Telemetry>,
}

/// What a core's context is made of, besides its index and limits.
pub struct CoreParts {
    pub snapshot: CoreSnapshot,
    pub workers: Rc<CoreWorkers>,
    pub control: Rc<CoreWorkers>,
    pub pool_status: Option<Arc<PoolStatus>>,
    pub access_log: Option<CoreAccessLog>,
    pub telemetry: Arc<Telemetry>,
}

impl CoreContext {
    pub fn new(index: usize, limits: Limits, parts: CoreParts) -> CoreContext {
        let CoreParts {
            snapshot,
            workers,
            control,
            pool_status,
            access_log,
            telemetry,
        } = parts;
        let now = clock::unix_now_secs();
        let rate_limits = CoreRateLimits::new(limits.core_count);
        CoreContext {
            index,
            limits,
            snapshot,
            date_line: Cell::new(clock::date_line(now)),
            date_secs: Cell::new(now),
            stopping: Cell::new(false),
            dormant: Cell::new(false),
            active: Cell::new(false),
            housekeeping_waker: Cell::new(None),
            stop_signal: Semaphore::new(0),
            workers,
            control,
            pool_status,
            access_log,
            rate_limits,
            random_state: Cell::new(0x9E37_79B9_7F4A_7C15 ^ ((index as u64 + 1) << 32) ^ now),
            request_ids_made: Cell::new(0),
            telemetry,
        }
    }

    pub fn date_line(&self) -> [u8; DATE_LINE_LEN] {
        self.date_line.get()
    }

    /// A uniform number in 0..1 (xorshift64; a canary split needs no more).
    pub fn random_unit(&self) -> f64 {
        (self.next_random() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn next_random(&self) -> u64 {
        let mut x = self.random_state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.random_state.set(x);
        x
    }

    /// A new request id: random, with this core's index and sequence in
    /// its second half so that no two of one gateway repeat.
    pub fn new_request_id(&self) -> RequestId {
        let made = self.request_ids_made.get() + 1;
        self.request_ids_made.set(made);
        RequestId::generated(self.next_random(), (self.index as u64) << 56 | made)
    }

    /// This core's gateway counters.
    pub fn gateway_stats(&self) -> &GatewayShard {
        self.telemetry.gateway.shard(self.index)
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    /// Resolves once the core is stopping.
    pub async fn stopped(&self) {
        if !self.stopping.get() {
            // Err(closed) is the wake-up; the semaphore never has permits.
            let _ = self.stop_signal.acquire(1).await;
        }
    }

    pub(super) fn stop(&self) {
        self.stopping.set(true);
        self.stop_signal.close();
    }

    /// Called before a connection or a request is served: it then sees the
    /// newest route table, worker links and Date line even if the core's
    /// housekeeping had gone quiet.
    pub(super) fn before_serving(&self) {
        self.active.set(true);
        if self.dormant.get() {
            self.dormant.set(false);
            self.snapshot.wake();
            self.workers.scores.wake();
            self.housekeep();
            if let Some(waker) = self.housekeeping_waker.take() {
                waker.wake();
            }
        }
    }

    /// Resolves once the core serves again after [`CoreContext::doze`].
    pub(super) fn woken(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.dormant.get() {
                self.housekeeping_waker.set(Some(cx.waker().clone()));
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
    }

    /// Whether anything was served since the last call.
    pub(super) fn take_activity(&self) -> bool {
        self.active.replace(false)
    }

    /// Housekeeping goes quiet: until [`CoreContext::before_serving`], the
    /// core counts as holding every route table (it adopts the newest
    /// before it serves again).
    pub(super) fn doze(&self) {
        self.dormant.set(true);
        self.snapshot.doze();
        self.workers.scores.doze();
    }

    pub(super) fn is_dormant(&self) -> bool {
        self.dormant.get()
    }

    /// One round of housekeeping: the newest route table, worker links,
    /// worker scores and Date line.
    pub(super) fn housekeep(&self) {
        self.snapshot.refresh();
        self.workers.adopt_new_links();
        self.control.adopt_new_links();
        self.workers.scores.refresh();
        self.refresh_date();
        if let Some(log) = &self.access_log {
            log.flush_if_due();
        }
    }

    pub(super) fn refresh_date(&self) {
        let now = clock::unix_now_secs();
        if now != self.date_secs.get() {
            self.date_secs.set(now);
            self.date_line.set(clock::date_line(now));
        }
    }
}
