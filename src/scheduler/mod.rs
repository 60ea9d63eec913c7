//! Scheduling: which requests may run now ([`admission`]: per-route
//! `max_concurrency` with a short queue). The choice of a worker lives with
//! the core's links in [`crate::workers::pool`].

pub mod admission;
