//! Worker processes: the supervisor that forks and restarts them, the
//! wire protocol between a core and a worker, the core-side dispatch and
//! the worker process itself.
//!
//! * [`settings`]: the one settings type of a worker process, set on
//!   `corefn serve` and handed to every worker whole.
//! * [`supervisor`]: fork+exec, restart with backoff, channels to every core.
//! * [`pool`]: the core side: links, choice, dispatch, completions.
//! * [`protocol`]: the dispatch/completion wire format, SCM_RIGHTS.
//! * [`completion_ring`]: completions through shared memory, the channel
//!   woken only while a core waits.
//! * [`privileges`]: who the workers run as when corefn is root.
//! * [`worker`]: the worker process: receive, run through
//!   [`crate::runtimes::invoke`], write the response, report.
//!
//! Runs below the gateway and the scheduler; uses the runtimes and never
//! the routes (a worker gets the descriptor's text in each dispatch).

pub mod completion_ring;
pub mod pool;
pub mod privileges;
pub mod protocol;
pub mod settings;
pub mod supervisor;
pub mod worker;
