//! corefn: a Function-as-a-Service runtime for one Linux host.
//!
//! The data plane follows the path of a request, top down; each module may
//! use the ones below it and never the ones above:
//!
//! * [`gateway`]: pinned per-core glommio executors that accept TCP, parse
//!   HTTP with httparse and write responses (keep-alive, pipelining,
//!   limits, timeouts, graceful shutdown).
//! * [`routes`]: the SQLite route store, the watcher thread that notices
//!   changes, and the immutable route tables published to every core.
//! * [`scheduler`]: per-route admission, the workers' metrics datagrams,
//!   their EWMA scores and the collector that publishes them.
//! * [`workers`]: the supervised worker processes, the core ↔ worker wire
//!   protocol and the core-side choice and dispatch.
//! * [`runtimes`]: what answers a matched route: the descriptor, `static`
//!   in the gateway; wasm, native, exec and the warm language hosts behind
//!   one seam ([`runtimes::invoke`]) in the worker processes.
//!
//! The control plane: [`control`], the thread that answers the API under
//! `/_/api/v1/` and `/metrics` (handed over by the cores like a function
//! call), and the cron thread that fires schedules through the gateway;
//! [`registry`], functions, versions, artifacts, code checks, keys and
//! schedules;
//! [`schema`], the one owner of the database's tables; [`api`], the
//! admin reads under `/_/` that each core answers from its snapshots, and
//! the web console's embedded files (a client of the API, like the CLI);
//! [`config`], the command line and the limits derived from it; [`cli`],
//! the client subcommands (`deploy`, `invoke`, `logs`, `keys`, …), each a
//! thin client of the API over HTTP that never opens the database itself.
//!
//! Shared below both: [`telemetry`] (per-function stats in per-core
//! shards, the gateway's counters, the Prometheus text, function logs),
//! [`http`] (HTTP rules, response encoding, and the one
//! place where errors become statuses), [`failure`] (how a call failed:
//! kind and message), [`wire`] (fixed binary layouts),
//! [`board`] (publication of immutable values, such as route tables and
//! worker scores, from control-plane threads to the cores), [`clock`] (date
//! formats), [`sync`] (poison-tolerant locks) and [`lru`] (bounded caches).
#![deny(unsafe_op_in_unsafe_fn)]

pub mod api;
pub mod board;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod failure;
pub mod gateway;
pub mod http;
pub mod lru;
pub mod registry;
pub mod routes;
pub mod runtimes;
pub mod scheduler;
pub mod schema;
pub mod sync;
pub mod telemetry;
pub mod wire;
pub mod workers;
