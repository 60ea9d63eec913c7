//! The integration tests of corefn, as one test binary: each test starts the
//! real `corefn` binary on a loopback port with a real SQLite file, real
//! worker processes and real interpreters, and talks HTTP/1.x to it over
//! TCP. `common` is the harness; there is one module per capability:
//!
//! * HTTP gateway: `routing`, `keep_alive`, `pipelining`, `request_bodies`,
//!   `error_statuses`, `slowloris` (header, body and idle timeouts),
//!   `shutdown`, `access_log`, `admin` (endpoints under `/_/`),
//!   `long_waits` (cores keep answering new connections whatever waits).
//! * Routes in SQLite: `live_routes` (changes served while running),
//!   `invalid_rows`, `store_replaced` (the file renamed over, deleted and
//!   recreated, truncated, or not a store, while requests run).
//! * Worker pool and wasm functions: `wasm_functions`, `function_errors`,
//!   `function_deploy`, `function_concurrency` (`max_concurrency`),
//!   `worker_lifecycle`, `scheduling` (metrics-driven dispatch).
//! * The other runtimes: `native_functions`, `exec_functions`,
//!   `python_functions`, `node_functions`, `php_functions` (each runs the
//!   shared contract of `common::functions` and its own tests),
//!   `demo_functions` (the embedded demo routes), `host_contracts` (the
//!   language hosts' own test suites).
//! * Start-up: `startup_checks` (flags checked once, rows a runtime cannot
//!   serve).
//! * Control plane: `control_api` (deploys, versions, rollback, delete,
//!   keys and scopes, the schema and its migration), `schedules` (cron),
//!   `invocations` (async calls: retries, dead letters, callbacks, a
//!   SIGKILL survived).
//! * Tools: `bench_smoke` (corefn-bench against corefn), `cli` (the client
//!   subcommands of the binary: output, `--json`, exit codes, progress on
//!   a terminal).
//! * Web console: `console` (the pages in a real headless Chromium over
//!   WebDriver: deploy, list, invoke, live log, rollback, canary, compile
//!   error, workers, the key; a screenshot of each page; no console error).
//! * Observability: `prometheus` (a real Prometheus scrapes `/metrics`;
//!   `promtool` lints it), `grafana_dashboard` (deploy/grafana/corefn.json
//!   queries only metrics corefn exposes), `function_logs` (START/END per
//!   call, live follow, rotation, slow followers, deleted functions),
//!   `stats_api` (per-function stats exact over both cores, every failure
//!   kind under its name), `request_ids` (`x-request-id` kept or made,
//!   seen by the function, on its log lines).
//!
//! The tests run as threads of this one process, any of them at the same
//! time as any other: each server gets its own port (never one handed out
//! before), directory, database and process markers; process checks look
//! only at their own server's processes; and the few tests that load the
//! CPUs on purpose take turns (`common::cpu_heavy_test`). `worker_lifecycle`
//! makes the process a child subreaper, for every test after it (see there).

mod common;

mod access_log;
mod admin;
mod bench_smoke;
mod cli;
mod console;
mod control_api;
mod demo_functions;
mod descriptors;
mod error_statuses;
mod exec_functions;
mod function_concurrency;
mod function_deploy;
mod function_errors;
mod function_logs;
mod grafana_dashboard;
mod host_contracts;
mod invalid_rows;
mod invocations;
mod keep_alive;
mod live_routes;
mod long_waits;
mod native_functions;
mod node_functions;
mod php_functions;
mod pipelining;
mod prometheus;
mod python_functions;
mod request_bodies;
mod request_ids;
mod routing;
mod schedules;
mod scheduling;
mod shutdown;
mod slowloris;
mod startup_checks;
mod stats_api;
mod store_replaced;
mod wasm_functions;
mod worker_lifecycle;
