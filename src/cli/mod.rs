//! The client subcommands of `corefn` (`deploy`, `invoke`, `list`, `logs`,
//! `keys`, …): each one is a thin client of the control API of a running
//! corefn, over plain HTTP.
//!
//! Owns: the subcommands' flags, their human output (tables, deploy
//! progress) and the exit codes ([`Exit`]). May call: [`client`] (the one
//! HTTP client), the upload bounds of [`crate::registry::upload`] (to refuse
//! what the server would refuse, before sending it) and [`crate::clock`].
//! Must never open the database or the store itself: every change goes
//! through the API, so the server checks it as it checks any other client.
//!
//! Output: what a script wants (tables, ids, function bodies) goes to
//! stdout; errors, one line each, to stderr. `--json` prints the server's
//! JSON as it came.

pub mod client;
mod deploy;
mod functions;
mod invoke;
mod keys;
mod logs;
mod progress;
mod schedules;
mod table;
mod tools;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use client::{Client, ClientError};

/// The URL a client command talks to when neither `--url` nor
/// `COREFN_URL` says another: `corefn serve`'s default listener.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// What a client command's exit status means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    /// The server answered with an error status (or a function did).
    Refused = 1,
    /// The command line is wrong, or names something that cannot be used
    /// (a missing file, a directory the packager refuses, no load
    /// generator). clap's own usage errors exit with 2 as well.
    Usage = 2,
    /// Nothing answered at the URL.
    Unreachable = 3,
}

/// Which server, with which key, and how to print: every client command
/// takes these.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// The corefn server.
    #[arg(long, env = "COREFN_URL", default_value = DEFAULT_URL)]
    pub url: String,
    /// API key (`Authorization: Bearer`). Default: the admin key file that
    /// `corefn serve` wrote next to --db, when it exists.
    #[arg(long, env = "COREFN_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// A local database: its admin key file (`corefn.db` → `corefn.admin-key`)
    /// is the default key.
    #[arg(long, default_value = "corefn.db")]
    pub db: PathBuf,
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl Target {
    /// The key given, else the admin key file of the local database. A
    /// key file that cannot be read counts as none: the server then says
    /// that a key is needed, which names the way to give one.
    pub fn key(&self) -> Option<String> {
        if let Some(key) = &self.key {
            return Some(key.trim().to_string());
        }
        std::fs::read_to_string(self.db.with_extension("admin-key"))
            .ok()
            .map(|text| text.trim().to_string())
            .filter(|key| !key.is_empty())
    }

    pub fn client(&self) -> Result<Client, ClientError> {
        Client::new(&self.url, self.key())
    }
}

#[derive(Debug, Clone, Args)]
pub struct NameArgs {
    /// The function's name.
    pub name: String,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Clone, Args)]
pub struct TargetOnly {
    #[command(flatten)]
    pub target: Target,
}

/// The client subcommands, flattened into `corefn`'s own.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Deploy a directory (packed as a .tar.gz, with its corefn.json) or a
    /// single file as a function; a new version when it exists.
    Deploy(deploy::DeployArgs),
    /// Call a function and print what it answered.
    Invoke(invoke::InvokeArgs),
    /// Every function: runtime, versions, routes, the last 5 minutes.
    List(TargetOnly),
    /// One function.
    Get(NameArgs),
    /// A function's log lines; `-f` follows them live.
    Logs(logs::LogsArgs),
    /// Delete a function: its routes at once, its versions, stats and logs.
    Delete(NameArgs),
    /// Every version of a function.
    Versions(NameArgs),
    /// Serve the previous version again (or `--to N`).
    Rollback(functions::RollbackArgs),
    /// Send a share of the requests to another version, or stop (`--off`).
    Canary(functions::CanaryArgs),
    /// Calls, errors and latency of a function over a window.
    Stats(functions::StatsArgs),
    /// Call a function on a cron timetable (UTC).
    Schedule(schedules::ScheduleArgs),
    /// Every cron schedule, with its next and last run.
    Schedules(schedules::SchedulesArgs),
    /// Stop a cron schedule.
    Unschedule(schedules::UnscheduleArgs),
    /// API keys: create, list, revoke.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// One asynchronous invocation: its state and, when done, its answer.
    Invocation(invoke::InvocationArgs),
    /// Asynchronous invocations, newest first.
    Invocations(invoke::InvocationsArgs),
    /// Load-test a route with corefn-bench (its arguments follow the target).
    Bench(tools::BenchArgs),
    /// Print a shell completion script.
    Completions(tools::CompletionsArgs),
}

/// Runs one client command and says how it went, one line on stderr when
/// it did not.
pub fn run(command: ClientCommand) -> ExitCode {
    let result = match command {
        ClientCommand::Deploy(args) => deploy::run(&args),
        ClientCommand::Invoke(args) => invoke::run(&args),
        ClientCommand::List(args) => functions::list(&args.target),
        ClientCommand::Get(args) => functions::get(&args),
        ClientCommand::Logs(args) => logs::run(&args),
        ClientCommand::Delete(args) => functions::delete(&args),
        ClientCommand::Versions(args) => functions::versions(&args),
        ClientCommand::Rollback(args) => functions::rollback(&args),
        ClientCommand::Canary(args) => functions::canary(&args),
        ClientCommand::Stats(args) => functions::stats(&args),
        ClientCommand::Schedule(args) => schedules::create(&args),
        ClientCommand::Schedules(args) => schedules::list(&args),
        ClientCommand::Unschedule(args) => schedules::delete(&args),
        ClientCommand::Keys(command) => keys::run(&command),
        ClientCommand::Invocation(args) => invoke::invocation(&args),
        ClientCommand::Invocations(args) => invoke::invocations(&args),
        ClientCommand::Bench(args) => tools::bench(&args),
        ClientCommand::Completions(args) => tools::completions(&args),
    };
    match result {
        Ok(exit) => ExitCode::from(exit as u8),
        Err(error) => {
            eprintln!("corefn: {error}");
            for line in error.details() {
                eprintln!("  {line}");
            }
            ExitCode::from(error.exit() as u8)
        }
    }
}

/// Writes `text` to stdout. A closed stdout (`| head`) is not an error
/// worth a message: the reader has what it wanted.
fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// Prints the server's JSON, one document on one line.
fn out_json(value: &serde_json::Value) {
    out(&format!("{value}\n"));
}

/// A JSON value as a table cell: `-` for null or missing.
fn cell(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "-".into(),
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// A time the API gives as Unix seconds (or already as text), to the second.
fn time_cell(value: &serde_json::Value) -> String {
    match value.as_i64() {
        Some(secs) if secs >= 0 => {
            let text = crate::clock::rfc3339_us(secs as u64 * 1_000_000);
            // `2026-12-02T05:21:07.000000Z` → `2026-12-02T05:21:07Z`
            match text.split_once('.') {
                Some((seconds, _)) => format!("{seconds}Z"),
                None => text,
            }
        }
        _ => cell(value),
    }
}
