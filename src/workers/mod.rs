//! Worker processes: the supervisor that forks and restarts them, the
//! wire protocol between a core and a worker, the core-side dispatch, and
//! the worker's own main loop.

pub mod pool;
pub mod protocol;
pub mod supervisor;
pub mod worker;
