//! Worker processes: the supervisor that forks and restarts them, the
//! wire protocol between a core and a worker, the core-side dispatch, the
//! worker's own main loop, and the watchdog of its native calls.

pub mod pool;
pub mod protocol;
pub mod supervisor;
mod watchdog;
pub mod worker;
