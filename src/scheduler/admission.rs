//! Per-route admission: a route with `max_concurrency` runs at most that
//! many requests at once over all cores; up to as many again wait in a
//! short queue, the rest get 503 at once.
//!
//! The counters are atomics shared by the cores (a function call costs
//! tens of microseconds, one contended increment is noise next to it) and
//! survive route-table rebuilds, so a table swap never doubles a limit.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::http::error::HttpError;

/// How long a request may wait in a route's queue.
pub const QUEUE_WAIT_MAX: Duration = Duration::from_millis(200);
const QUEUE_POLL: Duration = Duration::from_millis(1);

#[derive(Debug)]
pub struct ConcurrencyLimit {
    route: String,
    limit: u32,
    running: AtomicU32,
    waiting: AtomicU32,
}

/// A running slot; released when dropped.
pub struct Permit(Arc<ConcurrencyLimit>);

impl Drop for Permit {
    fn drop(&mut self) {
        let before = self.0.running.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "running count never negative");
    }
}

impl ConcurrencyLimit {
    pub fn new(route: &str, limit: u32) -> Arc<ConcurrencyLimit> {
        assert!(limit > 0, "descriptor validation rejects 0");
        Arc::new(ConcurrencyLimit {
            route: route.to_string(),
            limit,
            running: AtomicU32::new(0),
            waiting: AtomicU32::new(0),
        })
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    pub fn running(&self) -> u32 {
        self.running.load(Ordering::Acquire)
    }

    pub fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        let before = self.running.fetch_add(1, Ordering::AcqRel);
        if before < self.limit {
            Some(Permit(self.clone()))
        } else {
            self.running.fetch_sub(1, Ordering::AcqRel);
            None
        }
    }

    /// A permit now, or after a short wait in the queue, or 503.
    pub async fn acquire(self: &Arc<Self>) -> Result<Permit, HttpError> {
        if let Some(permit) = self.try_acquire() {
            return Ok(permit);
        }
        let full = || HttpError::ConcurrencyLimit {
            route: self.route.clone(),
            limit: self.limit,
        };
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(full());
        }
        let started = Instant::now();
        let result = loop {
            glommio::timer::sleep(QUEUE_POLL).await;
            if let Some(permit) = self.try_acquire() {
                break Ok(permit);
            }
            if started.elapsed() >= QUEUE_WAIT_MAX {
                break Err(full());
            }
        };
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_bounded_and_released_on_drop() {
        let limit = ConcurrencyLimit::new("GET:/f", 2);
        let a = limit.try_acquire().expect("first");
        let _b = limit.try_acquire().expect("second");
        assert!(limit.try_acquire().is_none(), "third is over the limit");
        assert_eq!(limit.running(), 2);
        drop(a);
        assert!(limit.try_acquire().is_some(), "a slot came back");
    }
}
