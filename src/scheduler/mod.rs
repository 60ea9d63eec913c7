//! Scheduling: which requests may run now and where.
//!
//! * [`admission`]: per-route `max_concurrency` with a short queue.
//! * [`metrics`]: the datagram each worker sends every interval.
//! * [`score`]: EWMA smoothing, normalisation and the weighted score.
//! * [`collector`]: the thread that turns datagrams into published scores.
//!
//! The choice itself (power of two choices on score plus in-flight) is made
//! by each core in `workers::pool`, from its own copy of the scores.

pub mod admission;
pub mod collector;
pub mod metrics;
pub mod score;
