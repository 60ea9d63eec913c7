//! Command-line surface and the limits derived from it.
//!
//! Every bound the gateway enforces is named here with its unit, so that a
//! reader finds all limits in one place.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Request header fields accepted per request; more is a 431.
pub const HEADER_COUNT_MAX: usize = 100;

#[derive(Debug, Parser)]
#[command(name = "corefn", version, about = "Functions behind HTTP, fast.")]
pub struct Cli {
    /// Without a command, `corefn` serves with the default options.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the routes of the route table over HTTP.
    Serve(ServeOptions),
    /// A worker process; started by `serve`, not by hand.
    #[command(hide = true)]
    Worker(WorkerArgs),
}

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    #[arg(long)]
    pub worker_id: usize,
    /// Channel descriptors, one per core, placed from descriptor 3 on.
    #[arg(long)]
    pub channels: usize,
    #[arg(long)]
    pub threads: usize,
    #[arg(long)]
    pub parent_pid: i32,
    #[arg(long)]
    pub functions_dir: PathBuf,
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    #[arg(long)]
    pub metrics_socket: Option<PathBuf>,
    #[arg(long, default_value_t = 500)]
    pub metrics_interval_ms: u64,
    #[arg(long)]
    pub logs_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    pub host_min_instances: usize,
    #[arg(long, default_value_t = 60_000)]
    pub host_idle_ms: u64,
    #[arg(long, default_value = "python3")]
    pub python: PathBuf,
    #[arg(long, default_value = "node")]
    pub node: PathBuf,
    #[arg(long, default_value = "php-cgi")]
    pub php_cgi: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct ServeOptions {
    /// Address to listen on (one SO_REUSEPORT listener per core).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// SQLite route store; created from the embedded init.sql when missing.
    #[arg(long, default_value = "corefn.db")]
    pub db: PathBuf,

    /// Number of cores to run executors on (default: every core this process may use).
    #[arg(long)]
    pub cores: Option<usize>,

    /// Largest request body accepted, in bytes (413 above).
    #[arg(long = "max-body", default_value_t = 8 * 1024 * 1024)]
    pub body_bytes_max: usize,

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

    /// How often the watcher asks SQLite whether the route table changed
    /// (one `PRAGMA data_version`, a few microseconds).
    #[arg(long, default_value_t = 5)]
    pub watch_interval_ms: u64,

    /// Open client connections allowed over all cores (503 and close above).
    #[arg(long = "max-connections", default_value_t = 100_000)]
    pub connections_max: usize,

    /// Access log file (common log format + ttfb/ttlb); "-" for stdout. Off when absent.
    #[arg(long)]
    pub access_log: Option<PathBuf>,

    /// Worker processes for function runtimes (default: one per core; 0: none).
    #[arg(long)]
    pub workers: Option<usize>,

    /// Requests one worker process runs at once (one thread each).
    #[arg(long, default_value_t = 4)]
    pub worker_threads: usize,

    /// Directory that descriptor `module` paths are relative to.
    #[arg(long, default_value = "functions")]
    pub functions_dir: PathBuf,

    /// On-disk cache of compiled WebAssembly modules (keyed by content hash).
    #[arg(long, default_value = "corefn-cache")]
    pub cache_dir: PathBuf,

    /// How often each worker sends its metrics datagram.
    #[arg(long, default_value_t = 500)]
    pub metrics_interval_ms: u64,

    /// EWMA factor for worker metrics: weight of the newest sample (0..=1).
    #[arg(long, default_value_t = 0.3)]
    pub ewma_alpha: f64,

    /// Score weights "cpu,mem,io" (lower score = preferred worker).
    #[arg(long, default_value = "0.5,0.3,0.2")]
    pub score_weights: String,

    /// Unix datagram socket the workers send metrics to (default: next to
    /// the database, `<db>.metrics.sock`).
    #[arg(long)]
    pub metrics_socket: Option<PathBuf>,

    /// Per-function log files (`<dir>/<runtime>/<module>.log`): function
    /// stderr, handler output and tracebacks.
    #[arg(long, default_value = "corefn-logs")]
    pub logs_dir: PathBuf,

    /// Warm language hosts (python, node, php) kept per function and
    /// worker once the function has been called.
    #[arg(long, default_value_t = 1)]
    pub host_min_instances: usize,

    /// Warm hosts beyond --host-min-instances are stopped after this long
    /// without a request.
    #[arg(long, default_value_t = 60_000)]
    pub host_idle_ms: u64,

    /// Interpreter of `python` functions (looked up in PATH).
    #[arg(long, default_value = "python3")]
    pub python: PathBuf,

    /// Interpreter of `node` functions (looked up in PATH).
    #[arg(long, default_value = "node")]
    pub node: PathBuf,

    /// FastCGI server of `php` functions (looked up in PATH).
    #[arg(long, default_value = "php-cgi")]
    pub php_cgi: PathBuf,
}

/// The limits one core enforces, in the units the hot path uses.
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_bytes_max: usize,
    pub body_bytes_max: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub shutdown_grace: Duration,
    pub connections_per_core_max: usize,
}

impl Limits {
    pub fn new(options: &ServeOptions, core_count: usize) -> Limits {
        assert!(core_count > 0, "at least one core");
        Limits {
            header_bytes_max: options.header_bytes_max.max(1024),
            body_bytes_max: options.body_bytes_max,
            header_timeout: Duration::from_millis(options.header_timeout_ms.max(1)),
            body_timeout: Duration::from_millis(options.body_timeout_ms.max(1)),
            idle_timeout: Duration::from_millis(options.idle_timeout_ms.max(1)),
            shutdown_grace: Duration::from_millis(options.shutdown_grace_ms),
            connections_per_core_max: options.connections_max.div_ceil(core_count).max(1),
        }
    }
}
