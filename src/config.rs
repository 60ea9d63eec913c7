//! Command-line surface and the limits derived from it.
//!
//! Every bound the gateway enforces is named here with its unit, so that a
//! reader finds all limits in one place.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::control::settings::ControlSettings;
use crate::gateway::request::BodyLimits;
use crate::workers::settings::WorkerSettings;

/// Bounds of the gateway's own flags, checked by [`ServeOptions::validate`].
pub const HEADER_BYTES_MIN: usize = 1024;
/// A request head travels to a worker in one message with the descriptor
/// and the inline body; this bound keeps the sum under the message limit.
pub const HEADER_BYTES_MAX: usize = 64 * 1024;
const _: () = assert!(
    crate::workers::protocol::DISPATCH_HEADER_BYTES
        + crate::runtimes::descriptor::DESCRIPTOR_BYTES_MAX
        + HEADER_BYTES_MAX
        + crate::workers::protocol::INLINE_BODY_BYTES_MAX
        <= crate::workers::protocol::DISPATCH_BYTES_MAX
);
pub const TIMEOUT_MS_MAX: u64 = 24 * 60 * 60 * 1000;
pub const WATCH_INTERVAL_MS_MAX: u64 = 60_000;
/// What the control plane may take beyond a compile to answer.
const CONTROL_ANSWER_SLACK_MS: u64 = 10_000;

#[derive(Debug, Parser)]
#[command(name = "corefn", version, about = "Functions behind HTTP, fast.")]
pub struct Cli {
    /// Without a command, `corefn` serves with the default options.
    #[command(subcommand)]
    pub command: Option<Command>,
}

// Parsed once at start and moved into its user: the size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the routes of the route table over HTTP.
    Serve(ServeOptions),
    /// Create or upgrade a database to this corefn's schema, and say its version.
    Migrate(MigrateArgs),
    /// The client commands: deploy, invoke, list, logs, keys, … (each a
    /// call of a running server's API).
    #[command(flatten)]
    Client(crate::cli::ClientCommand),
    /// A worker process; started by `serve`, not by hand.
    #[command(hide = true)]
    Worker(WorkerArgs),
    /// Compiles and links a wasm or wat file as the workers would; started
    /// by the control plane to check an upload, not by hand.
    #[command(hide = true)]
    CheckWasm(CheckWasmArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CheckWasmArgs {
    pub path: PathBuf,
    /// The workers' compiled-module cache: the module compiled here is
    /// put there, so the first request does not compile it again.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// The database file (created when missing, without demo routes).
    #[arg(long, default_value = "corefn.db")]
    pub db: PathBuf,
}

/// How the supervisor starts a worker: who it is, where its channels are,
/// and the settings every worker shares.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    #[arg(long)]
    pub worker_id: usize,
    /// Channel descriptors, one per core, placed from descriptor 3 on.
    #[arg(long)]
    pub channels: usize,
    #[arg(long)]
    pub parent_pid: i32,
    /// [`WorkerSettings`] as JSON.
    #[arg(long)]
    pub settings: String,
    /// The function-log channel is placed right after the core channels.
    #[arg(long)]
    pub log_channel: bool,
    /// A completion ring per core channel (a sealed memfd) is placed after
    /// those, in the channels' order.
    #[arg(long)]
    pub completion_rings: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ServeOptions {
    /// Address to listen on (one SO_REUSEPORT listener per core).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// A second address that serves only the admin endpoints and the
    /// control API (`/_/…`), to keep them off a public listener.
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,

    /// SQLite route store; created from the embedded init.sql when missing.
    #[arg(long, default_value = "corefn.db")]
    pub db: PathBuf,

    /// Number of cores to run executors on (default: every core this process may use).
    #[arg(long)]
    pub cores: Option<usize>,

    /// Largest request body accepted, in bytes (413 above).
    #[arg(long = "max-body", default_value_t = 8 * 1024 * 1024)]
    pub body_bytes_max: usize,

    /// Largest deploy accepted by the control API, in bytes (413 above).
    #[arg(long = "max-deploy-bytes", default_value_t = 64 * 1024 * 1024)]
    pub deploy_bytes_max: usize,

    /// Largest request header section accepted, in bytes (431 above).
    #[arg(long = "max-header-bytes", default_value_t = 16 * 1024)]
    pub header_bytes_max: usize,

    /// Time a client has to send a complete request head, from connect or
    /// from the first byte of a request.
    #[arg(long, default_value_t = 10_000)]
    pub header_timeout_ms: u64,

    /// Time a client has to send the whole body once the head is complete.
    #[arg(long, default_value_t = 30_000)]
    pub body_timeout_ms: u64,

    /// Time a keep-alive connection may stay idle between requests.
    #[arg(long, default_value_t = 60_000)]
    pub idle_timeout_ms: u64,

    /// Time in-flight requests get to finish after SIGINT/SIGTERM.
    #[arg(long, default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,

    /// Let route rows name code anywhere (absolute paths, `..` out of
    /// --functions-dir), for setups whose every row is trusted. Without it
    /// such a row is skipped and reported.
    #[arg(long)]
    pub trust_module_paths: bool,

    /// How often the watcher asks SQLite whether the route table changed
    /// (one `PRAGMA data_version`, a few microseconds) while the store's
    /// files are changing; it sleeps until they do otherwise.
    #[arg(long, default_value_t = 5)]
    pub watch_interval_ms: u64,

    /// How often a watcher whose store's files are not changing looks
    /// anyway: for a file system whose writes inotify does not report
    /// (lower it there), and a commit readable only after its last write.
    #[arg(long, default_value_t = 250)]
    pub watch_recheck_ms: u64,

    /// Open client connections allowed over all cores (503 and close above).
    #[arg(long = "max-connections", default_value_t = 100_000)]
    pub connections_max: usize,

    /// Access log file; "-" for stdout. Off when absent.
    #[arg(long)]
    pub access_log: Option<PathBuf>,

    /// Access log lines: `clf` (common log format + ttfb/ttlb, request id)
    /// or `json` (one object per line).
    #[arg(long, value_enum, default_value_t = AccessLogFormat::Clf)]
    pub access_log_format: AccessLogFormat,

    /// Function logs: `<dir>/<function>/current.log` (hand-written routes
    /// under `<dir>/_routes/`), one JSON line each, START/END per call.
    #[arg(long, default_value = "corefn-logs")]
    pub logs_dir: PathBuf,

    /// A function's log file is rotated when it would pass this size.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub log_file_bytes_max: u64,

    /// Rotated log files kept per function (besides the current one).
    #[arg(long, default_value_t = 2)]
    pub log_files_kept: usize,

    /// Worker processes for function runtimes (default: one per core; 0: none).
    #[arg(long)]
    pub workers: Option<usize>,

    /// Domains whose subdomains name functions (`NAME.DOMAIN` is served by
    /// function NAME), besides `localhost`. May be given more than once.
    #[arg(long = "host-suffix")]
    pub host_suffixes: Vec<String>,

    /// Everything a worker process needs (threads, metrics, runtimes).
    #[command(flatten)]
    pub worker: WorkerSettings,

    /// The control plane: artifact store, compilers.
    #[command(flatten)]
    pub control: ControlSettings,

    /// EWMA factor for worker metrics: weight of the newest sample (0..=1).
    #[arg(long, default_value_t = 0.3)]
    pub ewma_alpha: f64,

    /// Score weights "cpu,mem,io" (lower score = preferred worker).
    #[arg(long, default_value = "0.5,0.3,0.2")]
    pub score_weights: String,
}

/// Bounds of `--log-file-bytes-max`: room for a few lines, and no more
/// than a disk should give one function.
const LOG_FILE_BYTES_MIN: u64 = 4 * 1024;
const LOG_FILE_BYTES_MAX: u64 = 1 << 40;
const LOG_FILES_KEPT_MAX: usize = 100;

/// How the access log writes a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccessLogFormat {
    Clf,
    Json,
}

/// The limits one core enforces, in the units the hot path uses.
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_bytes_max: usize,
    pub body: BodyLimits,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub shutdown_grace: Duration,
    pub connections_per_core_max: usize,
    /// How long a core waits for the control plane's answer: the longest
    /// compile and then some.
    pub control_timeout_ms: u64,
    /// `--host-suffix` domains (see routes::hosts).
    pub host_suffixes: Vec<String>,
    /// Executors serving: per-core shares (rate limits) divide by it.
    pub core_count: usize,
}

impl ServeOptions {
    /// Rejects out-of-range values with a message naming the flag, once,
    /// before anything starts; nothing downstream clamps.
    pub fn validate(&self) -> Result<(), String> {
        if !(LOG_FILE_BYTES_MIN..=LOG_FILE_BYTES_MAX).contains(&self.log_file_bytes_max) {
            return Err(format!(
                "--log-file-bytes-max {} is outside {LOG_FILE_BYTES_MIN}..={LOG_FILE_BYTES_MAX}",
                self.log_file_bytes_max
            ));
        }
        if !(1..=LOG_FILES_KEPT_MAX).contains(&self.log_files_kept) {
            return Err(format!(
                "--log-files-kept {} is outside 1..={LOG_FILES_KEPT_MAX}",
                self.log_files_kept
            ));
        }
        if !(HEADER_BYTES_MIN..=HEADER_BYTES_MAX).contains(&self.header_bytes_max) {
            return Err(format!(
                "--max-header-bytes {} is outside {HEADER_BYTES_MIN}..={HEADER_BYTES_MAX}",
                self.header_bytes_max
            ));
        }
        for (flag, value) in [
            ("--header-timeout-ms", self.header_timeout_ms),
            ("--body-timeout-ms", self.body_timeout_ms),
            ("--idle-timeout-ms", self.idle_timeout_ms),
        ] {
            if !(1..=TIMEOUT_MS_MAX).contains(&value) {
                return Err(format!("{flag} {value} is outside 1..={TIMEOUT_MS_MAX}"));
            }
        }
        if self.shutdown_grace_ms > TIMEOUT_MS_MAX {
            return Err(format!(
                "--shutdown-grace-ms {} is above {TIMEOUT_MS_MAX}",
                self.shutdown_grace_ms
            ));
        }
        if !(1..=WATCH_INTERVAL_MS_MAX).contains(&self.watch_recheck_ms) {
            return Err(format!(
                "--watch-recheck-ms {} is outside 1..={WATCH_INTERVAL_MS_MAX}",
                self.watch_recheck_ms
            ));
        }
        if !(1..=WATCH_INTERVAL_MS_MAX).contains(&self.watch_interval_ms) {
            return Err(format!(
                "--watch-interval-ms {} is outside 1..={WATCH_INTERVAL_MS_MAX}",
                self.watch_interval_ms
            ));
        }
        if self.connections_max == 0 {
            return Err("--max-connections must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.ewma_alpha) {
            return Err(format!("--ewma-alpha {} is outside 0..=1", self.ewma_alpha));
        }
        crate::scheduler::score::Weights::parse(&self.score_weights)
            .map_err(|e| format!("--score-weights: {e}"))?;
        self.control.validate()?;
        self.worker.validate()
    }
}

impl Limits {
    /// From options that passed [`ServeOptions::validate`].
    pub fn new(options: &ServeOptions, core_count: usize) -> Limits {
        assert!(core_count > 0, "at least one core");
        assert!(options.connections_max > 0, "validated");
        Limits {
            header_bytes_max: options.header_bytes_max,
            body: BodyLimits {
                default_bytes_max: options.body_bytes_max,
                api_bytes_max: options.deploy_bytes_max,
            },
            header_timeout: Duration::from_millis(options.header_timeout_ms),
            body_timeout: Duration::from_millis(options.body_timeout_ms),
            idle_timeout: Duration::from_millis(options.idle_timeout_ms),
            shutdown_grace: Duration::from_millis(options.shutdown_grace_ms),
            connections_per_core_max: options.connections_max.div_ceil(core_count),
            control_timeout_ms: options.control.compile_timeout_ms + CONTROL_ANSWER_SLACK_MS,
            core_count,
            host_suffixes: options
                .host_suffixes
                .iter()
                .map(|s| s.trim_matches('.').to_ascii_lowercase())
                .collect(),
        }
    }
}
