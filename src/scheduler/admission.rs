//! Per-route admission: a route with `max_concurrency` runs at most that
//! many requests at once over all cores; up to as many again wait in a
//! short queue, the rest get 503 at once. A route with a `rate_limit`
//! takes a token per request from a bucket of each core's own
//! ([`CoreRateLimits`], the rate split evenly over the cores, no atomics);
//! without a token, 429 and `Retry-After`.
//!
//! The counters are atomics shared by the cores (a function call costs
//! tens of microseconds, one contended increment is noise next to it) and
//! survive route-table rebuilds, so a table swap never doubles a limit.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::cell::RefCell;
use std::collections::HashMap;

use crate::http::error::HttpError;
use crate::runtimes::descriptor::RateLimit;

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

/// One core's token bucket of one route.
#[derive(Debug, Clone, Copy)]
struct TokenBucket {
    rate: RateLimit,
    tokens_per_s: f64,
    capacity: f64,
    tokens: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    fn new(rate: RateLimit, cores: usize, now: Instant) -> TokenBucket {
        let cores = cores.max(1) as f64;
        let capacity = (f64::from(rate.burst_or_default()) / cores).max(1.0);
        TokenBucket {
            rate,
            tokens_per_s: rate.rps / cores,
            capacity,
            tokens: capacity,
            refilled_at: now,
        }
    }

    /// Ok with a token, or how long until the next one.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed_s = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed_s * self.tokens_per_s).min(self.capacity);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            debug_assert!(self.tokens >= 0.0, "a bucket never goes below empty");
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.tokens_per_s,
            ))
        }
    }
}

/// Routes' buckets kept by one core; a changed limit starts a new bucket.
#[derive(Debug)]
pub struct CoreRateLimits {
    cores: usize,
    buckets: RefCell<HashMap<Box<str>, TokenBucket>>,
}

/// Buckets one core keeps at most; more routes than that with limits
/// start over (full buckets) rather than grow the map.
const BUCKETS_PER_CORE_MAX: usize = 65_536;

impl CoreRateLimits {
    pub fn new(cores: usize) -> CoreRateLimits {
        CoreRateLimits {
            cores,
            buckets: RefCell::new(HashMap::new()),
        }
    }

    /// A token of `route`'s bucket, or the error to answer.
    pub fn admit(&self, route: &str, rate: RateLimit) -> Result<(), HttpError> {
        let now = Instant::now();
        let mut buckets = self.buckets.borrow_mut();
        if buckets.len() >= BUCKETS_PER_CORE_MAX && !buckets.contains_key(route) {
            buckets.clear();
        }
        let bucket = buckets
            .entry(route.into())
            .or_insert_with(|| TokenBucket::new(rate, self.cores, now));
        if bucket.rate != rate {
            *bucket = TokenBucket::new(rate, self.cores, now);
        }
        bucket.take(now).map_err(|wait| HttpError::RateLimited {
            route: route.to_string(),
            rps: rate.rps,
            retry_after: wait.as_secs_f64().ceil().max(1.0).to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_gives_its_burst_then_its_rate() {
        let rate = RateLimit {
            rps: 10.0,
            burst: Some(4),
        };
        let now = Instant::now();
        let mut bucket = TokenBucket::new(rate, 2, now);
        assert!(bucket.take(now).is_ok());
        assert!(bucket.take(now).is_ok(), "burst 4 over 2 cores: 2 here");
        let wait = bucket.take(now).expect_err("empty");
        assert!(
            wait <= Duration::from_millis(200),
            "5 tokens/s here: {wait:?}"
        );
        assert!(bucket.take(now + Duration::from_millis(200)).is_ok());
        assert!(bucket.take(now + Duration::from_millis(200)).is_err());
    }

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
