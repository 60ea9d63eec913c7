//! corefn: a Function-as-a-Service runtime for one Linux host.
//!
//! The modules follow the path of a request, top down:
//!
//! * [`gateway`]: pinned per-core glommio executors that accept TCP, parse HTTP
//!   with httparse and write responses (keep-alive, pipelining, limits,
//!   timeouts, graceful shutdown).
//! * [`routes`]: the SQLite route store, the watcher thread that notices
//!   changes, and the immutable route tables published to every core.
//! * [`runtimes`]: what answers a matched route: `static` in the gateway,
//!   wasm, native, exec and the warm language hosts in worker processes.
//! * [`api`]: the control plane reachable over HTTP under the reserved `/_/`
//!   prefix.
//! * [`error`]: every error a client can see, and the one place where errors
//!   become HTTP statuses.
//!
//! [`board`] carries immutable values (route tables, worker scores) from
//! control-plane threads to the cores.
//!
//! [`config`] holds the command-line surface and its limits, [`http`] the
//! response encoding, [`clock`] the date formats, [`sync`] the
//! poison-tolerant locks.

pub mod api;
pub mod board;
pub mod clock;
pub mod config;
pub mod error;
pub mod gateway;
pub mod http;
pub mod routes;
pub mod runtimes;
pub mod scheduler;
pub mod sync;
pub mod workers;
