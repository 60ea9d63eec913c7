//! The control plane's flags, declared by their owner and flattened into
//! `corefn serve`'s.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

pub const COMPILE_TIMEOUT_MS_MAX: u64 = 10 * 60 * 1000;

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ControlSettings {
    /// Content-addressed store of deployed code.
    #[arg(long, default_value = "corefn-store")]
    pub store_dir: PathBuf,

    /// A check or compile of uploaded code past this is stopped (422).
    #[arg(long, default_value_t = 60_000)]
    pub compile_timeout_ms: u64,

    /// C/C++ to wasm32-wasi compiler.
    #[arg(long, default_value = "clang")]
    pub clang: PathBuf,

    /// C compiler of `native` uploads.
    #[arg(long, default_value = "cc")]
    pub cc: PathBuf,

    /// PHP syntax checker of `php` uploads (php-cgi -l works too).
    #[arg(long, default_value = "php-cgi")]
    pub php_lint: PathBuf,

    /// Where the admin key created on first start is written (default:
    /// next to the database, `<db>.admin-key`).
    #[arg(long)]
    pub admin_key_file: Option<PathBuf>,

    /// At start, run a schedule once whose tick fell while corefn was
    /// down (missed ticks are never replayed one by one).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub schedule_catch_up: bool,

    /// Async invocations pending (queued or running) at most; a request
    /// over it gets 503 and is not stored.
    #[arg(long, default_value_t = 100_000)]
    pub async_queue_max: u64,

    /// Threads that run async invocations (and deliver their callbacks)
    /// at once; each function's own concurrency limits still apply.
    #[arg(long, default_value_t = 16)]
    pub async_runners: usize,

    /// A host that `x-callback-url` may name besides loopback ones;
    /// repeatable.
    #[arg(long = "callback-allow-host", value_name = "HOST")]
    pub callback_allow_host: Vec<String>,

    /// The gateway's listener as a loopback client reaches it (set by
    /// serve): scheduled runs and async attempts are sent there.
    #[arg(skip)]
    pub gateway: Option<std::net::SocketAddr>,

    /// The workers' compiled-module cache (set by serve from --cache-dir):
    /// a checked upload is compiled into it.
    #[arg(skip)]
    pub wasm_cache_dir: Option<PathBuf>,
}

impl ControlSettings {
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=COMPILE_TIMEOUT_MS_MAX).contains(&self.compile_timeout_ms) {
            return Err(format!(
                "--compile-timeout-ms {} is outside 1..={COMPILE_TIMEOUT_MS_MAX}",
                self.compile_timeout_ms
            ));
        }
        super::invocations::validate(self.async_queue_max, self.async_runners)
    }

    pub fn compile_timeout(&self) -> Duration {
        Duration::from_millis(self.compile_timeout_ms)
    }
}
