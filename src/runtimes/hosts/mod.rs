//! Warm language hosts: `python`, `node` and `php` functions run in
//! long-lived child processes of the worker that load the user's code once
//! and serve many requests, one at a time each.
//!
//! * Python and Node hosts (`runtimes/python/host.py`,
//!   `runtimes/node/host.js`) speak the framed protocol of
//!   `runtimes/PROTOCOL.md` ([`frame`]) on pipes at their fd 3 and 4.
//! * PHP is `php-cgi` in FastCGI mode ([`php`]): the CLI SAPI drops
//!   `header()`, and php-cgi gives `$_SERVER`, `php://input`, `header()` and
//!   `http_response_code()` their real meaning.
//!
//! A pool per function (runtime, module, handler, env) keeps idle hosts;
//! a request takes one or starts one, and gives it back when the host is
//! still sound. A host that runs past the timeout is killed (504), one that
//! dies or breaks the protocol is dropped (502), and the pool is filled
//! back to `min_instances` after the response has gone out. A changed
//! module file is a new generation: hosts of older generations are retired
//! as they come back, so new requests run the new code. A version that
//! fails to load is remembered (for [`LOAD_FAILURE_KEPT_MS`] or until the
//! file changes), so a broken deploy costs a start per worker every few
//! seconds, not one per request. A host's stdout and stderr are pipes that
//! the worker drains after each call into its [`CallReport`]: what a
//! handler prints lands on that invocation's log lines.
//!
//! Files by concern: this one the public surface ([`ScriptHosts`] and its
//! call), [`pool`] the registry of pools and their hosts, [`start`]
//! starting a host for either protocol, [`exchange`] one framed request,
//! [`frame`], [`fastcgi`] and [`php`] the protocols themselves.

mod exchange;
mod fastcgi;
mod frame;
mod php;
mod pool;
mod start;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;

use super::cgi::{self, CgiRequest, CgiResponse};
use super::file_stamp::WatchedFile;
use super::invoke::CallReport;
use super::process::{self, kill_and_reap, set_nonblocking, ChildLimits};
use super::sandbox::{Lifetime, Sandbox, View, ViewRequest};
use crate::failure::{Failure, FailureKind};
use crate::lru::LruMap;
use crate::runtimes::descriptor::Runtime;
use crate::sync::lock;
use exchange::exchange_framed;
use frame::FrameError;
use pool::{Host, HostIo, Pool};
use start::died_detail;

/// The host programs, embedded so that a corefn binary runs them wherever
/// it is started; written out to [`HostsConfig::scripts_dir`].
pub const PYTHON_HOST: &str = include_str!("../../../runtimes/python/host.py");
pub const NODE_HOST: &str = include_str!("../../../runtimes/node/host.js");
pub const PHP_PRELUDE: &str = include_str!("../../../runtimes/php/prelude.php");

/// Function pools per worker; past it, the least recently used pool's idle
/// hosts are stopped.
pub const POOLS_MAX: usize = 256;
/// Time a host started to refill a pool (no request waiting) has to load.
pub const HOST_START_TIMEOUT_MS: u64 = 10_000;
/// How long a version that failed to load is answered with its error
/// without trying to start it again (unless the file changes first).
pub const LOAD_FAILURE_KEPT_MS: u64 = 5_000;
/// Longest error line from a host that reaches a client.
const ERROR_LINE_CHARS_MAX: usize = 300;

#[derive(Debug, Clone)]
pub struct HostsConfig {
    /// Descriptor `module` paths are relative to it.
    pub functions_dir: PathBuf,
    /// Where the embedded host programs are written.
    pub scripts_dir: PathBuf,
    /// Hosts started per function and worker at most (the worker's
    /// threads: each runs one request at a time).
    pub hosts_per_function_max: usize,
    /// Hosts kept warm per function once it has been called.
    pub min_instances: usize,
    /// Hosts beyond `min_instances` are stopped after this long idle.
    pub idle_ms: u64,
    pub python: PathBuf,
    pub node: PathBuf,
    pub php_cgi: PathBuf,
    /// Largest response body a host may send.
    pub response_bytes_max: usize,
}

/// One invocation.
pub struct HostCall<'a> {
    pub runtime: Runtime,
    pub module: &'a str,
    pub handler: Option<&'a str>,
    pub descriptor_env: &'a BTreeMap<String, String>,
    pub request: &'a CgiRequest<'a>,
    pub body: &'a [u8],
    pub timeout_ms: u64,
    /// The descriptor's `memory_mb`: each host's data limit.
    pub memory_mb: u64,
    /// The descriptor's `network`: hosts share the worker's network
    /// instead of having none.
    pub network: bool,
    /// The descriptor's `min_instances` / `max_instances`, if set.
    pub min_instances: Option<u32>,
    pub max_instances: Option<u32>,
}

/// The response bytes and their parsed head (the body is a range of them).
pub struct HostOutput {
    pub bytes: Vec<u8>,
    pub response: CgiResponse,
}

#[derive(Debug, Clone, Error)]
pub enum HostError {
    #[error("runtime {runtime} needs {program:?}, which cannot be started here: {message}")]
    Unavailable {
        runtime: &'static str,
        program: String,
        message: String,
    },
    /// The interpreter is there, but starting it failed for a reason of
    /// its own (out of descriptors or processes, an argument the kernel
    /// refuses): a 502 that says so, not a missing runtime.
    #[error("{runtime} host {program:?} could not be started: {message}")]
    Spawn {
        runtime: &'static str,
        program: String,
        message: String,
    },
    #[error("{runtime} function {module:?} not found")]
    ModuleNotFound {
        runtime: &'static str,
        module: String,
    },
    #[error("{runtime} function {module:?} cannot be loaded: {message}")]
    Load {
        runtime: &'static str,
        module: String,
        message: String,
    },
    #[error("{runtime} handler failed: {message}")]
    Handler {
        runtime: &'static str,
        message: String,
    },
    #[error("{runtime} function did not finish within {timeout_ms} ms")]
    Timeout {
        runtime: &'static str,
        timeout_ms: u64,
    },
    #[error("{runtime} host stopped while running the request ({detail}); see the function log")]
    Died {
        runtime: &'static str,
        detail: String,
    },
    #[error("{runtime} host broke the protocol: {message}")]
    Protocol {
        runtime: &'static str,
        message: String,
    },
    #[error("all {max_instances} {runtime} hosts of this function in this worker are busy (max_instances)")]
    AtMaxInstances {
        runtime: &'static str,
        max_instances: usize,
    },
    #[error("{runtime} function response is invalid: {message}")]
    Response {
        runtime: &'static str,
        message: String,
    },
}

impl From<HostError> for Failure {
    fn from(error: HostError) -> Failure {
        let kind = match &error {
            HostError::Timeout { timeout_ms, .. } => return Failure::timeout(*timeout_ms),
            HostError::Unavailable { .. } => FailureKind::Unavailable,
            HostError::ModuleNotFound { .. } | HostError::Load { .. } => FailureKind::Load,
            HostError::Handler { .. } => FailureKind::HandlerError,
            HostError::Died { .. } => FailureKind::Crash,
            HostError::Spawn { .. } => FailureKind::Internal,
            HostError::Protocol { .. } => FailureKind::Protocol,
            HostError::Response { .. } => FailureKind::Output,
            HostError::AtMaxInstances { .. } => FailureKind::Busy,
        };
        Failure::new(kind, error)
    }
}

impl HostError {
    pub fn is_timeout(&self) -> bool {
        matches!(self, HostError::Timeout { .. })
    }

    /// The host is still fit to serve after this error.
    fn keeps_host(&self) -> bool {
        matches!(self, HostError::Handler { .. } | HostError::Response { .. })
    }
}

pub struct ScriptHosts {
    config: HostsConfig,
    pools: LruMap<String, Pool>,
    /// Set when a host was dropped: the next `maintain` refills pools.
    refill_wanted: AtomicBool,
    /// Makes each php-cgi listening socket's name unique.
    next_socket_id: AtomicU64,
    /// Every live host's pid, for the worker's metrics.
    pids: Arc<Mutex<Vec<u32>>>,
    /// Every host starts inside it; `None` only where seccomp filters
    /// cannot be built (said once at start).
    sandbox: Option<Arc<Sandbox>>,
}

impl ScriptHosts {
    /// Writes the host programs into `scripts_dir` (when their content
    /// differs) and resolves nothing else: an interpreter that is missing
    /// fails the calls of its runtime only.
    pub fn new(mut config: HostsConfig, sandbox: Option<Arc<Sandbox>>) -> io::Result<ScriptHosts> {
        std::fs::create_dir_all(&config.scripts_dir)?;
        // Hosts run in their module's directory: every path they get is
        // absolute.
        config.scripts_dir = std::path::absolute(&config.scripts_dir)?;
        config.functions_dir = std::path::absolute(&config.functions_dir)?;
        for (name, text) in [
            ("host.py", PYTHON_HOST),
            ("host.js", NODE_HOST),
            ("prelude.php", PHP_PRELUDE),
        ] {
            write_if_changed(&config.scripts_dir.join(name), text)?;
        }
        Ok(ScriptHosts {
            config,
            pools: LruMap::new(POOLS_MAX),
            refill_wanted: AtomicBool::new(false),
            next_socket_id: AtomicU64::new(0),
            pids: Arc::new(Mutex::new(Vec::new())),
            sandbox,
        })
    }

    /// The pids of every live host (idle or busy).
    pub fn pids(&self) -> Vec<u32> {
        lock(&self.pids).clone()
    }

    /// Runs the call in a warm host (or a new one: a cold start); what the
    /// host printed meanwhile goes into `report`.
    pub fn call(
        &self,
        call: &HostCall<'_>,
        report: &mut CallReport,
    ) -> Result<HostOutput, HostError> {
        let deadline = Instant::now() + Duration::from_millis(call.timeout_ms.max(1));
        let pool = self.pool(call);
        let runtime = pool.runtime.name();
        let generation = pool.file.generation().map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                HostError::ModuleNotFound {
                    runtime,
                    module: call.module.to_string(),
                }
            } else {
                HostError::Load {
                    runtime,
                    module: call.module.to_string(),
                    message: e.to_string(),
                }
            }
        })?;
        if let Some(error) = pool.load_failure(generation) {
            return Err(error);
        }
        let mut host = match pool.take_idle(generation) {
            Some(host) => host,
            None => match self.start(
                &pool,
                generation,
                deadline,
                call.timeout_ms,
                pool.max_instances,
            ) {
                Ok(host) => {
                    report.cold_start = true;
                    host
                }
                Err(error) => {
                    // A start cut short by the request's deadline (a slow
                    // machine, a slow import) still leaves the pool owing
                    // its warm hosts: the keeper starts them with the
                    // longer start timeout. A module that does not load or
                    // an interpreter that is missing is not retried here.
                    if !matches!(
                        error,
                        HostError::Load { .. }
                            | HostError::Unavailable { .. }
                            | HostError::AtMaxInstances { .. }
                    ) {
                        self.refill_wanted.store(true, Ordering::Relaxed);
                    }
                    return Err(error);
                }
            },
        };
        let result = match &mut host.io {
            HostIo::Framed {
                requests,
                responses,
            } => exchange_framed(
                runtime,
                requests,
                responses,
                call,
                self.config.response_bytes_max,
                deadline,
            ),
            HostIo::FastCgi {
                stream,
                next_request_id,
            } => php::exchange(
                stream,
                next_request_id,
                call,
                &host.script,
                self.config.response_bytes_max,
                deadline,
                report,
            ),
        };
        host.drain_output(report);
        match &result {
            Ok(_) => pool.give_back(host),
            Err(error) if error.keeps_host() => pool.give_back(host),
            Err(error) => {
                let error = died_detail(error.clone(), &mut host);
                pool.discard(host, &self.refill_wanted);
                return Err(error);
            }
        }
        result
    }

    /// Refills pools that lost hosts up to `min_instances`. Runs on a worker
    /// thread after its response went out, so that a replaced host is warm
    /// before the next request, and on the worker's host keeper every
    /// metrics interval, which retries a refill that failed.
    pub fn maintain(&self) {
        if !self.refill_wanted.swap(false, Ordering::Relaxed) {
            return;
        }
        let pools = self.pools.values();
        for pool in pools {
            while pool.live.load(Ordering::Relaxed) < pool.min_instances {
                let Ok(generation) = pool.file.generation() else {
                    break;
                };
                if pool.load_failure(generation).is_some() {
                    break;
                }
                let deadline = Instant::now() + Duration::from_millis(HOST_START_TIMEOUT_MS);
                match self.start(
                    &pool,
                    generation,
                    deadline,
                    HOST_START_TIMEOUT_MS,
                    pool.min_instances,
                ) {
                    Ok(host) => pool.give_back(host),
                    // Another thread's start took the last place.
                    Err(HostError::AtMaxInstances { .. }) => break,
                    Err(error) => {
                        // Said once per failed attempt, and tried again on
                        // the next tick of the worker's host keeper.
                        eprintln!(
                            "corefn: cannot refill the {} pool of {:?}: {error}",
                            pool.runtime.name(),
                            pool.module
                        );
                        if !matches!(error, HostError::Unavailable { .. }) {
                            self.refill_wanted.store(true, Ordering::Relaxed);
                        }
                        break;
                    }
                }
            }
        }
    }

    /// Stops hosts idle for longer than `idle_ms`, keeping `min_instances`
    /// per function: a burst's extra hosts do not hold memory forever. Any
    /// thread may call it (nothing is started here).
    pub fn stop_idle(&self) {
        let idle_for = Duration::from_millis(self.config.idle_ms);
        let pools = self.pools.values();
        for pool in pools {
            let stopped: Vec<Host> = {
                let mut idle = lock(&pool.idle);
                // The most recently used are at the end and stay.
                let keep_at_least = pool
                    .min_instances
                    .saturating_sub(pool.live.load(Ordering::Relaxed).saturating_sub(idle.len()));
                let mut stopped = Vec::new();
                let mut index = 0;
                while index < idle.len() && idle.len() > keep_at_least {
                    if idle[index].idle_since.elapsed() >= idle_for {
                        stopped.push(idle.remove(index));
                    } else {
                        index += 1;
                    }
                }
                stopped
            };
            for host in stopped {
                let live = pool.live.fetch_sub(1, Ordering::Relaxed);
                debug_assert!(live > 0, "a stopped host was counted");
                drop(host);
            }
        }
    }
}

/// A host's error text as one short line for a client.
fn one_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    let mut short: String = line.chars().take(ERROR_LINE_CHARS_MAX).collect();
    if short.is_empty() {
        short.push_str("(no message)");
    }
    short
}

fn write_if_changed(path: &Path, text: &str) -> io::Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    // Written aside and renamed: other workers may be starting hosts.
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, path)
}

/// An interpreter by name: the first in this process's PATH that this
/// process may execute (a worker that dropped root skips one under root's
/// home, such as a version manager's shim), or the name as given.
pub fn find_program(name: &Path) -> PathBuf {
    if name.components().count() > 1 {
        return name.to_path_buf();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate.is_file()
                && nix::unistd::access(candidate.as_path(), nix::unistd::AccessFlags::X_OK).is_ok()
        })
        .unwrap_or_else(|| name.to_path_buf())
}
