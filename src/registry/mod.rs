//! The function registry: functions and their immutable versions, the
//! `live` alias, the content-addressed artifact store, code checks and
//! compiles on upload, and API keys. Control plane only: everything here
//! blocks (SQLite, files, compilers) and runs on the control-plane thread,
//! never on a core. Changes reach the cores only through the route table
//! and the watcher, like a change made with the sqlite3 shell.
//!
//! * [`functions`]: deploy, versions, rollback, delete, and the route rows.
//! * [`artifacts`]: the store directory.
//! * [`code`]: what an upload is (by runtime, file name and content) and
//!   the check or compile that turns it into an artifact.
//! * [`invocations`]: the durable queue of async invocations: enqueue in
//!   batches, claim, retry with backoff and jitter, dead letters.
//! * [`keys`]: key generation, hashing and scopes.
//! * [`schedules`]: cron schedules: timetables parsed and checked, stored,
//!   and what their runs did (fired by `control::cron`).
//! * [`upload`]: multipart bodies and archives parsed into bytes in memory,
//!   and an archive's entry point by convention.

pub mod artifacts;
pub mod code;
pub mod functions;
pub mod invocations;
pub mod keys;
pub mod schedules;
pub mod upload;

use thiserror::Error;

/// What the registry refuses, or fails at; the control API gives each its
/// status in one place (`http::error::ApiError`).
#[derive(Debug, Error)]
pub enum RegistryError {
    #[error("invalid function name {0:?}: names are 1 to 63 characters of a-z, 0-9 and '-', starting with a letter or digit")]
    InvalidName(String),
    #[error("{0}")]
    Invalid(String),
    #[error("no function named {0:?}")]
    NotFound(String),
    #[error("no schedule {0}")]
    ScheduleNotFound(i64),
    #[error("function {name:?} has no version {version}")]
    VersionNotFound { name: String, version: u32 },
    #[error("{0}")]
    Conflict(String),
    #[error("the code does not compile")]
    Compile { diagnostics: Vec<String> },
    #[error("storage failed: {0}")]
    Store(#[from] std::io::Error),
    #[error("database failed: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("stored data is not valid: {0}")]
    Json(#[from] serde_json::Error),
}
