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
//! seconds, not one per request. Handler stdout/stderr go to the function's
//! log file ([`super::logs`]).

mod fastcgi;
mod frame;
mod php;

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use thiserror::Error;

use super::cgi::{self, CgiRequest, CgiResponse};
use super::file_stamp::WatchedFile;
use super::logs::FunctionLogs;
use super::process::{self, kill_and_reap, set_nonblocking};
use crate::routes::descriptor::Runtime;
use crate::sync::{lock, read, write};
use frame::FrameError;

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
    pub logs: FunctionLogs,
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
    #[error("{runtime} function response is invalid: {message}")]
    Response {
        runtime: &'static str,
        message: String,
    },
}

impl HostError {
    pub fn is_timeout(&self) -> bool {
        matches!(self, HostError::Timeout { .. })
    }

    /// The runtime cannot run on this machine (its interpreter is missing).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, HostError::Unavailable { .. })
    }

    /// The host is still fit to serve after this error.
    fn keeps_host(&self) -> bool {
        matches!(self, HostError::Handler { .. } | HostError::Response { .. })
    }
}

/// How a host talks to its worker.
enum HostIo {
    /// Python, Node: requests on `requests` (the host's fd 3), responses on
    /// `responses` (its fd 4), both non-blocking on this side.
    Framed { requests: File, responses: File },
    /// PHP: one kept FastCGI connection.
    FastCgi {
        stream: UnixStream,
        next_request_id: u16,
    },
}

/// A running host. Dropping it kills and reaps it.
struct Host {
    child: Child,
    generation: u64,
    io: HostIo,
    /// When it last finished a request (or started).
    idle_since: Instant,
    /// Where its pid is listed while it lives.
    pids: Arc<Mutex<Vec<u32>>>,
}

impl Host {
    fn new(child: Child, generation: u64, io: HostIo, pids: &Arc<Mutex<Vec<u32>>>) -> Host {
        lock(pids).push(child.id());
        Host {
            child,
            generation,
            io,
            idle_since: Instant::now(),
            pids: pids.clone(),
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
        let pid = self.child.id();
        lock(&self.pids).retain(|&p| p != pid);
    }
}

/// What starting a host of one function takes.
struct Pool {
    runtime: Runtime,
    module: String,
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
    file: WatchedFile,
    idle: Mutex<Vec<Host>>,
    /// Hosts alive, idle or busy.
    live: AtomicUsize,
    /// The generation that failed to load, how, and when.
    failed: Mutex<Option<(u64, HostError, Instant)>>,
    last_used_ms: AtomicU64,
}

pub struct ScriptHosts {
    config: HostsConfig,
    pools: RwLock<HashMap<String, Arc<Pool>>>,
    /// Set when a host was dropped: the next `maintain` refills pools.
    refill_wanted: AtomicBool,
    started: Instant,
    /// Makes each php-cgi listening socket's name unique.
    next_socket_id: AtomicU64,
    /// Every live host's pid, for the worker's metrics.
    pids: Arc<Mutex<Vec<u32>>>,
}

impl ScriptHosts {
    /// Writes the host programs into `scripts_dir` (when their content
    /// differs) and resolves nothing else: an interpreter that is missing
    /// fails the calls of its runtime only.
    pub fn new(mut config: HostsConfig) -> io::Result<ScriptHosts> {
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
            pools: RwLock::new(HashMap::new()),
            refill_wanted: AtomicBool::new(false),
            started: Instant::now(),
            next_socket_id: AtomicU64::new(0),
            pids: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// The pids of every live host (idle or busy).
    pub fn pids(&self) -> Vec<u32> {
        lock(&self.pids).clone()
    }

    pub fn call(&self, call: &HostCall<'_>) -> Result<HostOutput, HostError> {
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
            None => self.start(&pool, generation, deadline, call.timeout_ms)?,
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
                pool.file.path(),
                self.config.response_bytes_max,
                deadline,
                &self.config.logs,
            ),
        };
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
    /// before the next request (and lives as long as the thread).
    pub fn maintain(&self) {
        if !self.refill_wanted.swap(false, Ordering::Relaxed) {
            return;
        }
        let pools: Vec<Arc<Pool>> = read(&self.pools).values().cloned().collect();
        for pool in pools {
            while pool.live.load(Ordering::Relaxed) < self.config.min_instances {
                let Ok(generation) = pool.file.generation() else {
                    break;
                };
                if pool.load_failure(generation).is_some() {
                    break;
                }
                let deadline = Instant::now() + Duration::from_millis(HOST_START_TIMEOUT_MS);
                match self.start(&pool, generation, deadline, HOST_START_TIMEOUT_MS) {
                    Ok(host) => pool.give_back(host),
                    Err(_) => break,
                }
            }
        }
    }

    /// Stops hosts idle for longer than `idle_ms`, keeping `min_instances`
    /// per function: a burst's extra hosts do not hold memory forever. Any
    /// thread may call it (nothing is started here).
    pub fn stop_idle(&self) {
        let idle_for = Duration::from_millis(self.config.idle_ms);
        let pools: Vec<Arc<Pool>> = read(&self.pools).values().cloned().collect();
        for pool in pools {
            let stopped: Vec<Host> = {
                let mut idle = lock(&pool.idle);
                // The most recently used are at the end and stay.
                let keep_at_least = self
                    .config
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

    /// The pool of the call's function, made on first use.
    fn pool(&self, call: &HostCall<'_>) -> Arc<Pool> {
        let handler = call.handler.unwrap_or("");
        let mut key = String::with_capacity(64);
        key.push_str(call.runtime.name());
        for part in [call.module, handler] {
            key.push('\0');
            key.push_str(part);
        }
        for (name, value) in call.descriptor_env {
            key.push('\0');
            key.push_str(name);
            key.push('=');
            key.push_str(value);
        }
        let now_ms = self.started.elapsed().as_millis() as u64;
        if let Some(pool) = read(&self.pools).get(&key) {
            pool.last_used_ms.store(now_ms, Ordering::Relaxed);
            return pool.clone();
        }
        let pool = Arc::new(self.new_pool(call));
        pool.last_used_ms.store(now_ms, Ordering::Relaxed);
        let mut pools = write(&self.pools);
        if pools.len() >= POOLS_MAX && !pools.contains_key(&key) {
            let oldest = pools
                .iter()
                .min_by_key(|(_, p)| p.last_used_ms.load(Ordering::Relaxed))
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest.and_then(|k| pools.remove(&k)) {
                // Busy hosts of that pool finish their request and are
                // dropped with the last Arc.
                lock(&oldest.idle).clear();
            }
        }
        pools.entry(key).or_insert(pool).clone()
    }

    fn new_pool(&self, call: &HostCall<'_>) -> Pool {
        let path = self.config.functions_dir.join(call.module);
        let path = std::path::absolute(&path).unwrap_or(path);
        let cwd = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        let scripts = &self.config.scripts_dir;
        let mut env: Vec<(String, String)> = call
            .descriptor_env
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        // Python and Node: `<interpreter> <host program> <module> <handler>`.
        let framed = |interpreter: &Path, host: &str, handler_default: &str| {
            let handler = call.handler.unwrap_or(handler_default);
            (
                interpreter.to_path_buf(),
                vec![
                    scripts.join(host).into_os_string(),
                    path.clone().into_os_string(),
                    handler.into(),
                ],
            )
        };
        let (program, args) = match call.runtime {
            Runtime::Python => {
                env.push(("PYTHONUNBUFFERED".into(), "1".into()));
                framed(&self.config.python, "host.py", "handle")
            }
            Runtime::Node => framed(&self.config.node, "host.js", "handler"),
            _ => {
                env.extend(php::host_env());
                (
                    self.config.php_cgi.clone(),
                    php::host_args(&scripts.join("prelude.php")),
                )
            }
        };
        Pool {
            runtime: call.runtime,
            module: call.module.to_string(),
            program,
            args,
            env,
            cwd,
            file: WatchedFile::new(path),
            idle: Mutex::new(Vec::new()),
            live: AtomicUsize::new(0),
            failed: Mutex::new(None),
            last_used_ms: AtomicU64::new(0),
        }
    }

    /// Starts a host of the pool's function and waits until it is ready.
    fn start(
        &self,
        pool: &Pool,
        generation: u64,
        deadline: Instant,
        timeout_ms: u64,
    ) -> Result<Host, HostError> {
        let result = if pool.runtime == Runtime::Php {
            self.start_php(pool, generation, deadline)
        } else {
            self.start_framed(pool, generation, deadline, timeout_ms)
        };
        match result {
            Ok(host) => {
                let live = pool.live.fetch_add(1, Ordering::Relaxed) + 1;
                // Each worker thread holds one host at a time and takes an
                // idle one before it starts another.
                debug_assert!(
                    live <= self
                        .config
                        .hosts_per_function_max
                        .max(self.config.min_instances),
                    "{live} hosts of one function in one worker"
                );
                Ok(host)
            }
            Err(error) => {
                if matches!(error, HostError::Load { .. }) {
                    eprintln!("corefn: {error}");
                    *lock(&pool.failed) = Some((generation, error.clone(), Instant::now()));
                }
                Err(error)
            }
        }
    }

    fn spawn(&self, pool: &Pool, command: &mut std::process::Command) -> Result<Child, HostError> {
        let log = self
            .config
            .logs
            .open(pool.runtime, &pool.module)
            .map_err(|e| HostError::Died {
                runtime: pool.runtime.name(),
                detail: format!("cannot open the function log: {e}"),
            })?;
        let log_copy = log.try_clone().map_err(|e| HostError::Died {
            runtime: pool.runtime.name(),
            detail: format!("cannot open the function log: {e}"),
        })?;
        command
            .stdout(Stdio::from(log_copy))
            .stderr(Stdio::from(log));
        command.spawn().map_err(|e| HostError::Unavailable {
            runtime: pool.runtime.name(),
            program: pool.program.display().to_string(),
            message: e.to_string(),
        })
    }

    fn start_framed(
        &self,
        pool: &Pool,
        generation: u64,
        deadline: Instant,
        timeout_ms: u64,
    ) -> Result<Host, HostError> {
        let runtime = pool.runtime.name();
        let died = |detail: String| HostError::Died { runtime, detail };
        let pipe = || {
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| died(format!("pipe: {e}")))
        };
        let (requests_read, requests_write) = pipe()?;
        let (responses_read, responses_write) = pipe()?;
        let mut command = process::command(&pool.program, &pool.env, Some(&pool.cwd));
        process::die_with_worker(&mut command);
        command.args(&pool.args).stdin(Stdio::null());
        let (host_in, host_out) = (requests_read.as_raw_fd(), responses_write.as_raw_fd());
        // SAFETY: runs between fork and exec; fcntl, dup2 and close are
        // async-signal-safe and nothing is allocated.
        unsafe {
            command.pre_exec(move || place_host_fds(host_in, host_out));
        }
        let child = self.spawn(pool, &mut command)?;
        drop((requests_read, responses_write));
        let requests = File::from(requests_write);
        let mut responses = File::from(responses_read);
        set_nonblocking(requests.as_fd()).map_err(|e| died(e.to_string()))?;
        set_nonblocking(responses.as_fd()).map_err(|e| died(e.to_string()))?;
        let ready = frame::read_frame(&mut responses, 0, deadline);
        // Made before looking at the answer: dropping it stops the child.
        let mut host = Host::new(
            child,
            generation,
            HostIo::Framed {
                requests,
                responses,
            },
            &self.pids,
        );
        match ready {
            Ok((meta, _)) if meta.ready => Ok(host),
            Ok((meta, _)) => Err(HostError::Load {
                runtime,
                module: pool.module.clone(),
                message: one_line(
                    meta.error
                        .as_deref()
                        .unwrap_or("the host did not say ready"),
                ),
            }),
            Err(FrameError::Timeout) => Err(HostError::Timeout {
                runtime,
                timeout_ms,
            }),
            Err(FrameError::Closed) => Err(HostError::Load {
                runtime,
                module: pool.module.clone(),
                message: format!(
                    "the host exited before it was ready ({}); see the function log",
                    exit_detail(&mut host.child)
                ),
            }),
            Err(error) => Err(HostError::Protocol {
                runtime,
                message: error.to_string(),
            }),
        }
    }

    fn start_php(
        &self,
        pool: &Pool,
        generation: u64,
        deadline: Instant,
    ) -> Result<Host, HostError> {
        let id = self.next_socket_id.fetch_add(1, Ordering::Relaxed);
        let (listener, address) = php::listen(id).map_err(|e| HostError::Died {
            runtime: "php",
            detail: format!("cannot make the FastCGI socket: {e}"),
        })?;
        let mut command = process::command(&pool.program, &pool.env, Some(&pool.cwd));
        process::die_with_worker(&mut command);
        command
            .args(&pool.args)
            .stdin(Stdio::from(OwnedFd::from(listener)));
        let child = self.spawn(pool, &mut command)?;
        // The listener's backlog takes the connection before php-cgi is up;
        // FCGI_GET_VALUES tells when it serves.
        let stream = UnixStream::connect_addr(&address).map_err(|e| HostError::Died {
            runtime: "php",
            detail: format!("cannot connect to php-cgi: {e}"),
        })?;
        let mut host = Host::new(
            child,
            generation,
            HostIo::FastCgi {
                stream,
                next_request_id: 1,
            },
            &self.pids,
        );
        if let HostIo::FastCgi { stream, .. } = &mut host.io {
            php::wait_ready(stream, deadline).map_err(|error| match error {
                HostError::Died { detail, .. } => HostError::Load {
                    runtime: "php",
                    module: pool.module.clone(),
                    message: format!(
                        "{detail} ({}); see the function log",
                        exit_detail(&mut host.child)
                    ),
                },
                other => other,
            })?;
        }
        Ok(host)
    }
}

impl Pool {
    /// How this generation failed to load, if it did in the last
    /// [`LOAD_FAILURE_KEPT_MS`] (a failure may have been the machine's, not
    /// the code's, so it is tried again now and then).
    fn load_failure(&self, generation: u64) -> Option<HostError> {
        let failed = lock(&self.failed);
        let (failed_generation, error, at) = failed.as_ref()?;
        let recent = at.elapsed() < Duration::from_millis(LOAD_FAILURE_KEPT_MS);
        (*failed_generation == generation && recent).then(|| error.clone())
    }

    /// An idle host of `generation`; older ones met on the way are stopped.
    fn take_idle(&self, generation: u64) -> Option<Host> {
        let mut idle = lock(&self.idle);
        while let Some(host) = idle.pop() {
            if host.generation == generation {
                return Some(host);
            }
            self.live.fetch_sub(1, Ordering::Relaxed);
            drop(host);
        }
        None
    }

    /// Back to the idle list. A host of a generation that has passed
    /// meanwhile is stopped by the next [`Pool::take_idle`], which checks
    /// every host it meets anyway.
    fn give_back(&self, mut host: Host) {
        host.idle_since = Instant::now();
        lock(&self.idle).push(host);
    }

    fn discard(&self, host: Host, refill_wanted: &AtomicBool) {
        let live = self.live.fetch_sub(1, Ordering::Relaxed);
        debug_assert!(live > 0, "a host was counted when it started");
        drop(host);
        refill_wanted.store(true, Ordering::Relaxed);
    }
}

/// Sends the request frame and reads the response frame.
fn exchange_framed(
    runtime: &'static str,
    requests: &mut File,
    responses: &mut File,
    call: &HostCall<'_>,
    response_bytes_max: usize,
    deadline: Instant,
) -> Result<HostOutput, HostError> {
    let frame_error = |error: FrameError| match error {
        FrameError::Timeout => HostError::Timeout {
            runtime,
            timeout_ms: call.timeout_ms,
        },
        FrameError::Closed => HostError::Died {
            runtime,
            detail: "it closed its pipe".into(),
        },
        other => HostError::Protocol {
            runtime,
            message: other.to_string(),
        },
    };
    let request = call.request;
    let headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.to_ascii_lowercase(),
                String::from_utf8_lossy(value).into_owned(),
            )
        })
        .collect();
    let meta = serde_json::json!({
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "headers": headers,
        "remote_addr": request.remote_addr.map(|a| a.to_string()),
    });
    let meta = serde_json::to_vec(&meta).map_err(|e| HostError::Protocol {
        runtime,
        message: e.to_string(),
    })?;
    frame::write_frame(requests, &meta, call.body, deadline).map_err(frame_error)?;
    let (meta, body) =
        frame::read_frame(responses, response_bytes_max, deadline).map_err(frame_error)?;
    if let Some(error) = meta.error {
        return Err(HostError::Handler {
            runtime,
            message: one_line(&error),
        });
    }
    let response = cgi::response_from_parts(
        meta.status.unwrap_or(200),
        meta.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        body.len(),
    )
    .map_err(|e| HostError::Response {
        runtime,
        message: e.to_string(),
    })?;
    Ok(HostOutput {
        bytes: body,
        response,
    })
}

/// Moves the host's pipe ends to fd 3 and 4 (through fds ≥ 10, so that
/// neither can overwrite the other on the way).
fn place_host_fds(requests: i32, responses: i32) -> io::Result<()> {
    // SAFETY: plain descriptor calls in the child between fork and exec.
    unsafe {
        let a = libc::fcntl(requests, libc::F_DUPFD, 10);
        let b = libc::fcntl(responses, libc::F_DUPFD, 10);
        if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
            return Err(io::Error::last_os_error());
        }
        libc::close(a);
        libc::close(b);
    }
    Ok(())
}

/// A dead host's exit status in the error, when the error is that it died.
fn died_detail(error: HostError, host: &mut Host) -> HostError {
    match error {
        HostError::Died { runtime, detail } => {
            // Give the kernel a moment to finish the exit we saw coming.
            let status = exit_detail(&mut host.child);
            HostError::Died {
                runtime,
                detail: format!("{detail}; {status}"),
            }
        }
        other => other,
    }
}

/// "exited with status 1" / "killed by signal 9" / "still running".
fn exit_detail(child: &mut Child) -> String {
    use std::os::unix::process::ExitStatusExt;
    for _ in 0..50 {
        if let Ok(Some(status)) = child.try_wait() {
            return match (status.code(), status.signal()) {
                (Some(code), _) => format!("exited with status {code}"),
                (None, Some(signal)) => format!("killed by signal {signal}"),
                _ => "exited".into(),
            };
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    "still running".into()
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

/// An interpreter by name, looked up in this process's PATH, or as given.
pub fn find_program(name: &Path) -> PathBuf {
    if name.components().count() > 1 {
        return name.to_path_buf();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| name.to_path_buf())
}
