//! The settings of the runtimes in a worker process, declared by their
//! owner and flattened into the worker's settings (and so into `corefn
//! serve`'s flags). A runtime reads its settings from here and nowhere
//! else.

use std::path::PathBuf;

use clap::Args;
use serde::{Deserialize, Serialize};

/// Shortest `--host-idle-ms`: the idle check runs on the metrics tick.
pub const HOST_IDLE_MS_MIN: u64 = 100;

#[derive(Debug, Clone, PartialEq, Eq, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSettings {
    /// Directory that descriptor `module` paths are relative to.
    #[arg(long, default_value = "functions")]
    pub functions_dir: PathBuf,

    /// On-disk cache of compiled WebAssembly modules (keyed by content hash).
    #[arg(long, default_value = "corefn-cache")]
    pub cache_dir: PathBuf,

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

impl RuntimeSettings {
    /// Rejects what the runtimes cannot run with, naming the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.host_idle_ms < HOST_IDLE_MS_MIN {
            return Err(format!(
                "--host-idle-ms {} is below {HOST_IDLE_MS_MIN}",
                self.host_idle_ms
            ));
        }
        for (flag, path) in [
            ("--functions-dir", &self.functions_dir),
            ("--cache-dir", &self.cache_dir),
            ("--python", &self.python),
            ("--node", &self.node),
            ("--php-cgi", &self.php_cgi),
        ] {
            if path.as_os_str().is_empty() {
                return Err(format!("{flag} is empty"));
            }
        }
        Ok(())
    }
}
