//! The registry of host pools (one per function, bounded, least recently
//! used evicted) and the hosts in them: taking an idle host of the current
//! generation, giving it back, discarding it.

use super::*;

/// How a host talks to its worker.
pub(super) enum HostIo {
    /// Python, Node: requests on `requests` (the host's fd 3), responses on
    /// `responses` (its fd 4), both non-blocking on this side.
    Framed { requests: File, responses: File },
    /// PHP: one kept FastCGI connection.
    FastCgi {
        stream: UnixStream,
        next_request_id: u16,
    },
}

impl Host {
    /// An idle host has nothing to say: bytes (or an end) on its reply
    /// channel between requests are a frame nobody asked for, a handler
    /// writing to the channel itself or a host out of step.
    fn spoke_unasked(&self) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let fd = match &self.io {
            HostIo::Framed { responses, .. } => responses.as_fd(),
            HostIo::FastCgi { stream, .. } => stream.as_fd(),
        };
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        // An error here says nothing about the host: the exchange finds out.
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
    }
}

/// A running host. Dropping it kills and reaps it.
pub(super) struct Host {
    pub(super) child: Child,
    pub(super) generation: u64,
    pub(super) io: HostIo,
    /// The module's path as the host sees it (its real path inside the
    /// host's view).
    pub(super) script: PathBuf,
    /// When it last finished a request (or started).
    pub(super) idle_since: Instant,
    /// Where its pid is listed while it lives.
    pub(super) pids: Arc<Mutex<Vec<u32>>>,
    /// The read ends of its stdout and stderr pipes, non-blocking.
    stdout: Option<File>,
    stderr: Option<File>,
}

/// Room in a host's output pipe: what a call prints while the worker
/// waits for its reply (the worker drains the pipe after the reply).
const OUTPUT_PIPE_BYTES: i32 = 1024 * 1024;
/// Bytes read from a pipe per drain at most: a host that prints without
/// end cannot hold its worker thread.
const OUTPUT_DRAIN_BYTES_MAX: usize = 4 * 1024 * 1024;

/// A host's output pipe, made non-blocking and large.
fn output_pipe(pipe: Option<impl Into<OwnedFd>>) -> Option<File> {
    let fd: OwnedFd = pipe?.into();
    if set_nonblocking(fd.as_fd()).is_err() {
        // A blocking read could hang the drain: do without this stream.
        return None;
    }
    // Best effort: the default 64 KiB also works, it only fills sooner.
    let _ = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(OUTPUT_PIPE_BYTES));
    Some(File::from(fd))
}

/// Reads what is in `pipe` now into `stream` (bounded).
fn drain(pipe: &mut Option<File>, stream: &mut Vec<u8>) {
    use std::io::Read;
    let Some(file) = pipe else { return };
    let mut buffer = [0u8; 16 * 1024];
    let mut drained = 0;
    while drained < OUTPUT_DRAIN_BYTES_MAX {
        match file.read(&mut buffer) {
            Ok(0) => {
                *pipe = None;
                return;
            }
            Ok(n) => {
                CallReport::capture(stream, &buffer[..n]);
                drained += n;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

impl Host {
    pub(super) fn new(
        mut child: Child,
        generation: u64,
        io: HostIo,
        script: PathBuf,
        pids: &Arc<Mutex<Vec<u32>>>,
    ) -> Host {
        lock(pids).push(child.id());
        let stdout = output_pipe(child.stdout.take());
        let stderr = output_pipe(child.stderr.take());
        Host {
            child,
            generation,
            io,
            script,
            idle_since: Instant::now(),
            pids: pids.clone(),
            stdout,
            stderr,
        }
    }

    /// Moves what the host printed since the last drain into `report`
    /// (output written while it was idle counts for the next call).
    pub(super) fn drain_output(&mut self, report: &mut CallReport) {
        drain(&mut self.stdout, &mut report.stdout);
        drain(&mut self.stderr, &mut report.stderr);
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
pub(super) struct Pool {
    pub(super) runtime: Runtime,
    pub(super) module: String,
    pub(super) program: PathBuf,
    pub(super) args: Vec<OsString>,
    /// Which of `args` is the module's path (python, node), given as the
    /// host sees it at each start.
    pub(super) module_arg: Option<usize>,
    pub(super) env: Vec<(String, String)>,
    pub(super) cwd: PathBuf,
    pub(super) limits: ChildLimits,
    pub(super) network: bool,
    pub(super) file: WatchedFile,
    pub(super) idle: Mutex<Vec<Host>>,
    /// Hosts alive, idle or busy.
    pub(super) live: AtomicUsize,
    /// The generation that failed to load, how, and when.
    pub(super) failed: Mutex<Option<(u64, HostError, Instant)>>,
    /// Warm hosts kept once called, and hosts at most (per worker).
    pub(super) min_instances: usize,
    pub(super) max_instances: usize,
}

impl ScriptHosts {
    /// The pool of the call's function, made on first use.
    pub(super) fn pool(&self, call: &HostCall<'_>) -> Arc<Pool> {
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
        key.push('\0');
        key.push_str(&call.memory_mb.to_string());
        key.push_str(if call.network { "\0net" } else { "\0" });
        for bound in [call.min_instances, call.max_instances] {
            key.push('\0');
            if let Some(bound) = bound {
                key.push_str(&bound.to_string());
            }
        }
        if let Some(pool) = self.pools.get(&key) {
            return pool;
        }
        let (pool, evicted) = self.pools.get_or_insert(key, Arc::new(self.new_pool(call)));
        if let Some(evicted) = evicted {
            // Busy hosts of that pool finish their request and are
            // dropped with the last Arc.
            lock(&evicted.idle).clear();
        }
        pool
    }

    pub(super) fn new_pool(&self, call: &HostCall<'_>) -> Pool {
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
            module_arg: (call.runtime != Runtime::Php).then_some(1),
            env,
            cwd,
            limits: ChildLimits {
                memory_mb: call.memory_mb,
            },
            network: call.network,
            file: WatchedFile::new(path),
            idle: Mutex::new(Vec::new()),
            live: AtomicUsize::new(0),
            failed: Mutex::new(None),
            max_instances: call
                .max_instances
                .map_or(self.config.hosts_per_function_max, |m| m as usize)
                .min(self.config.hosts_per_function_max),
            min_instances: call
                .min_instances
                .map_or(self.config.min_instances, |m| m as usize)
                .min(self.config.hosts_per_function_max),
        }
    }
}

impl Pool {
    /// How this generation failed to load, if it did in the last
    /// [`LOAD_FAILURE_KEPT_MS`] (a failure may have been the machine's, not
    /// the code's, so it is tried again now and then).
    pub(super) fn load_failure(&self, generation: u64) -> Option<HostError> {
        let failed = lock(&self.failed);
        let (failed_generation, error, at) = failed.as_ref()?;
        let recent = at.elapsed() < Duration::from_millis(LOAD_FAILURE_KEPT_MS);
        (*failed_generation == generation && recent).then(|| error.clone())
    }

    /// An idle host of `generation`; older ones met on the way are stopped.
    pub(super) fn take_idle(&self, generation: u64) -> Option<Host> {
        let mut idle = lock(&self.idle);
        while let Some(host) = idle.pop() {
            if host.generation == generation && !host.spoke_unasked() {
                return Some(host);
            }
            if host.generation == generation {
                eprintln!(
                    "corefn: a {} host (pid {}) wrote to its reply channel between requests; replaced",
                    self.runtime.name(),
                    host.child.id()
                );
            }
            self.live.fetch_sub(1, Ordering::Relaxed);
            drop(host);
        }
        None
    }

    /// Back to the idle list. A host of a generation that has passed
    /// meanwhile is stopped by the next [`Pool::take_idle`], which checks
    /// every host it meets anyway.
    pub(super) fn give_back(&self, mut host: Host) {
        host.idle_since = Instant::now();
        lock(&self.idle).push(host);
    }

    pub(super) fn discard(&self, host: Host, refill_wanted: &AtomicBool) {
        let live = self.live.fetch_sub(1, Ordering::Relaxed);
        debug_assert!(live > 0, "a host was counted when it started");
        drop(host);
        refill_wanted.store(true, Ordering::Relaxed);
    }
}
