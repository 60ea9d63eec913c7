//! Per-call host state (the `T` of `Store<T>`): the WASI context with the
//! call's pipes and environment, the memory limiter, and the wall-clock
//! deadline behind epoch interruption.
//!
//! A `Host` lives exactly as long as one call's store and is touched by one
//! thread. It records *why* execution stopped (deadline passed, memory limit
//! hit) in plain flags, so that the caller can tell a timeout or a memory
//! bomb from any other trap without parsing error messages.

use std::time::{Duration, Instant};

use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;

pub(super) struct Host {
    pub(super) wasi: WasiP1Ctx,
    pub(super) limiter: CallLimiter,
    deadline: Instant,
    timed_out: bool,
    /// Taken just before the WASI context, whose monotonic clock counts
    /// from its creation.
    wasi_clock_origin: Instant,
}

impl Host {
    pub(super) fn new(
        wasi: WasiP1Ctx,
        wasi_clock_origin: Instant,
        memory_bytes_max: usize,
        deadline: Instant,
    ) -> Host {
        Host {
            wasi,
            limiter: CallLimiter::new(memory_bytes_max),
            deadline,
            timed_out: false,
            wasi_clock_origin,
        }
    }

    pub(super) fn time_left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    pub(super) fn set_timed_out(&mut self) {
        self.timed_out = true;
    }

    /// The guest's monotonic clock (`clock_time_get(MONOTONIC)`), give or
    /// take the microseconds between the origin and the context's creation.
    pub(super) fn wasi_clock_now(&self) -> Duration {
        self.wasi_clock_origin.elapsed()
    }

    pub(super) fn timed_out(&self) -> bool {
        self.timed_out
    }

    pub(super) fn memory_limit_hit(&self) -> bool {
        self.limiter.memory_limit_hit
    }

    /// The largest linear memory the call had (creation counts as growth).
    pub(super) fn memory_bytes_peak(&self) -> usize {
        self.limiter.memory_bytes_peak
    }

    /// Runs at each epoch increment while the call runs. The ticker
    /// increments when *some* call of the engine is due, so the deadline is
    /// checked against the clock: not this one's yet, execution continues
    /// until the next increment.
    pub(super) fn on_epoch_deadline(&mut self) -> UpdateDeadline {
        if Instant::now() >= self.deadline {
            self.timed_out = true;
            return UpdateDeadline::Interrupt;
        }
        UpdateDeadline::Continue(1)
    }
}

/// wasmtime's `StoreLimits` (memory capped at the call's `memory_mb`, growth
/// failure is a trap) plus a flag saying that it was the cap that stopped a
/// growth.
pub(super) struct CallLimiter {
    limits: StoreLimits,
    memory_bytes_max: usize,
    memory_limit_hit: bool,
    memory_bytes_peak: usize,
}

impl CallLimiter {
    fn new(memory_bytes_max: usize) -> CallLimiter {
        CallLimiter {
            limits: StoreLimitsBuilder::new()
                .memory_size(memory_bytes_max)
                .trap_on_grow_failure(true)
                .build(),
            memory_bytes_max,
            memory_limit_hit: false,
            memory_bytes_peak: 0,
        }
    }
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes_max {
            self.memory_limit_hit = true;
        } else {
            self.memory_bytes_peak = self.memory_bytes_peak.max(desired);
        }
        self.limits.memory_growing(current, desired, maximum)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        // The allocator refused a growth the cap allowed (its slot is full
        // or the OS is out of memory): to the function it is the same limit.
        self.memory_limit_hit = true;
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_flags_growth_past_the_cap_only() {
        let mut limiter = CallLimiter::new(1 << 20);
        assert!(limiter.memory_growing(0, 1 << 20, None).expect("allowed"));
        assert!(!limiter.memory_limit_hit);
        assert!(limiter.memory_growing(1 << 20, 2 << 20, None).is_err());
        assert!(limiter.memory_limit_hit);
    }
}
