//! The worker process (`corefn worker`, started by the supervisor): receives
//! dispatches from every core, runs the function in its runtime (wasm,
//! native, exec, or a warm language host), writes the HTTP response
//! straight to the client socket and reports completion to the core.
//!
//! Threads: `threads` identical loops, each polling every core channel and
//! taking whichever dispatch arrives (seqpacket delivers each message to one
//! reader), so a slow function holds one thread while the others go on.
//! The worker never reads from the client socket and never closes it for
//! the gateway: it writes one response and drops its own copy.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::{signal, SigHandler, SigSet, Signal};
use nix::sys::socket::{send, MsgFlags};
use thiserror::Error;

use super::protocol::{
    self, Completion, Dispatch, DispatchHeader, ProtocolError, COMPLETION_CONNECTION_BROKEN,
    COMPLETION_STATUS_NONE, COMPLETION_WORKER_RETIRING, DISPATCH_BYTES_MAX, FLAG_HEAD_ONLY,
    FLAG_HTTP10, FLAG_KEEP_ALIVE,
};
use super::watchdog::Watchdog;
use crate::clock;
use crate::config::HEADER_COUNT_MAX;
use crate::error::HttpError;
use crate::http::ConnectionHeader;
use crate::routes::descriptor::{Descriptor, Runtime};
use crate::runtimes::cgi::{self, CgiRequest};
use crate::runtimes::exec::{self, ExecCall};
use crate::runtimes::hosts::{self, HostCall, HostsConfig, ScriptHosts};
use crate::runtimes::logs::FunctionLogs;
use crate::runtimes::native::{NativeCall, NativeRuntime};
use crate::runtimes::wasm::{WasmCall, WasmConfig, WasmRuntime};
use crate::scheduler::metrics::WorkerSample;
use crate::sync::lock;

/// Set by SIGUSR1, which the supervisor sends when the gateway starts
/// shutting down: responses written from then on carry `connection: close`.
static DRAINING: AtomicBool = AtomicBool::new(false);

extern "C" fn on_drain_signal(_: libc::c_int) {
    DRAINING.store(true, Ordering::Relaxed);
}

/// The supervisor places core channel `c` at descriptor `FIRST_CHANNEL_FD + c`.
pub const FIRST_CHANNEL_FD: RawFd = 3;
/// How long a response write may wait for a client that does not read.
const RESPONSE_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Parsed descriptors kept per worker (keyed by their JSON text).
const DESCRIPTOR_CACHE_MAX: usize = 4096;
/// How often an idle thread wakes up to notice that the gateway is gone.
const POLL_TIMEOUT_MS: u16 = 1000;
/// How long the cores get to take in a retiring worker's notice before the
/// client that caused it gets its answer.
const RETIRING_NOTICE_LEAD: Duration = Duration::from_millis(20);
/// Largest response a function may produce (CGI stdout, host or native
/// body).
const RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub worker_id: usize,
    pub channel_count: usize,
    pub threads: usize,
    pub parent_pid: i32,
    pub functions_dir: PathBuf,
    pub cache_dir: Option<PathBuf>,
    pub metrics_socket: Option<PathBuf>,
    pub metrics_interval: Duration,
    pub logs_dir: Option<PathBuf>,
    pub host_min_instances: usize,
    pub host_idle_ms: u64,
    pub python: PathBuf,
    pub node: PathBuf,
    pub php_cgi: PathBuf,
}

impl From<crate::config::WorkerArgs> for WorkerOptions {
    fn from(args: crate::config::WorkerArgs) -> WorkerOptions {
        WorkerOptions {
            worker_id: args.worker_id,
            channel_count: args.channels,
            threads: args.threads.max(1),
            parent_pid: args.parent_pid,
            functions_dir: args.functions_dir,
            cache_dir: args.cache_dir,
            metrics_socket: args.metrics_socket,
            metrics_interval: Duration::from_millis(args.metrics_interval_ms.max(10)),
            logs_dir: args.logs_dir,
            host_min_instances: args.host_min_instances,
            host_idle_ms: args.host_idle_ms,
            python: args.python,
            node: args.node,
            php_cgi: args.php_cgi,
        }
    }
}

#[derive(Debug, Error)]
pub enum WorkerError {
    #[error("worker {0}: the gateway is gone")]
    Orphaned(usize),
    #[error("worker: cannot set up signals: {0}")]
    Signals(Errno),
    #[error("worker: channel descriptor {0} is not open")]
    Channel(RawFd),
    #[error("worker: cannot start the wasm runtime: {0}")]
    Wasm(String),
    #[error("worker: cannot set up the language hosts: {0}")]
    Hosts(io::Error),
    #[error("worker: cannot start a thread: {0}")]
    Thread(io::Error),
}

struct Worker {
    options: WorkerOptions,
    functions_dir_absolute: PathBuf,
    channels: Vec<OwnedFd>,
    wasm: WasmRuntime,
    native: NativeRuntime,
    hosts: ScriptHosts,
    logs: FunctionLogs,
    watchdog: Watchdog,
    descriptors: Mutex<HashMap<Box<[u8]>, Arc<Descriptor>>>,
    in_flight: AtomicU32,
    requests_done: AtomicU64,
}

pub fn run(options: WorkerOptions) -> Result<(), WorkerError> {
    // The gateway disables transparent huge pages for its own footprint
    // (main.rs); instance memory does better with them.
    // SAFETY: prctl with PR_SET_THP_DISABLE has no memory effects.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 0, 0, 0, 0) };
    // Die with the gateway even if it is killed with SIGKILL.
    // SAFETY: prctl with PR_SET_PDEATHSIG and a signal number has no memory effects.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // The gateway may have died before prctl took effect.
    if nix::unistd::getppid().as_raw() != options.parent_pid {
        return Err(WorkerError::Orphaned(options.worker_id));
    }
    // The gateway blocks SIGINT/SIGTERM and the mask survives exec. SIGTERM
    // stops a worker; SIGINT (a terminal's ^C reaches the whole process
    // group) is ignored so the gateway can drain requests first.
    let mut unblock = SigSet::empty();
    unblock.add(Signal::SIGTERM);
    unblock.add(Signal::SIGINT);
    unblock.thread_unblock().map_err(WorkerError::Signals)?;
    // SAFETY: SIG_IGN installs no handler code; the SIGUSR1 handler only
    // stores to an atomic, which is async-signal-safe.
    unsafe {
        signal(Signal::SIGINT, SigHandler::SigIgn).map_err(WorkerError::Signals)?;
        signal(Signal::SIGUSR1, SigHandler::Handler(on_drain_signal))
            .map_err(WorkerError::Signals)?;
    }

    let channels = (0..options.channel_count)
        .map(|c| {
            let fd = FIRST_CHANNEL_FD + c as RawFd;
            // SAFETY: F_GETFD only inspects the descriptor table.
            if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
                return Err(WorkerError::Channel(fd));
            }
            // Children (exec functions, language hosts) must not hold a
            // channel: the gateway tells a dead worker by its channels closing.
            // SAFETY: F_SETFD only changes the descriptor's flags.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            // SAFETY: the supervisor placed our end of channel c here for us alone.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        })
        .collect::<Result<Vec<_>, _>>()?;

    let wasm = WasmRuntime::new(WasmConfig {
        functions_dir: options.functions_dir.clone(),
        cache_dir: options.cache_dir.clone(),
        instances_max: (options.threads as u32).max(1) + 2,
        memory_mb_max: 512,
        stdout_bytes_max: RESPONSE_BYTES_MAX,
    })
    .map_err(|e| WorkerError::Wasm(e.to_string()))?;
    let logs = FunctionLogs::new(options.logs_dir.clone());
    let work_dir = match &options.cache_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("corefn-worker-{}", std::process::id())),
    };
    let hosts = ScriptHosts::new(HostsConfig {
        functions_dir: options.functions_dir.clone(),
        scripts_dir: work_dir.join("hosts"),
        logs: logs.clone(),
        hosts_per_function_max: options.threads,
        min_instances: options.host_min_instances,
        idle_ms: options.host_idle_ms,
        python: hosts::find_program(&options.python),
        node: hosts::find_program(&options.node),
        php_cgi: hosts::find_program(&options.php_cgi),
        response_bytes_max: RESPONSE_BYTES_MAX,
    })
    .map_err(WorkerError::Hosts)?;

    let functions_dir_absolute = std::path::absolute(&options.functions_dir)
        .unwrap_or_else(|_| options.functions_dir.clone());
    let worker = Arc::new(Worker {
        functions_dir_absolute,
        native: NativeRuntime::new(options.functions_dir.clone(), work_dir.join("native")),
        hosts,
        logs,
        watchdog: Watchdog::default(),
        options,
        channels,
        wasm,
        descriptors: Mutex::new(HashMap::new()),
        in_flight: AtomicU32::new(0),
        requests_done: AtomicU64::new(0),
    });
    if let Some(socket) = worker.options.metrics_socket.clone() {
        let reporter = worker.clone();
        thread::Builder::new()
            .name("corefn-worker-metrics".into())
            .spawn(move || reporter.report_metrics(&socket))
            .map_err(WorkerError::Thread)?;
    }
    let mut handles = Vec::with_capacity(worker.options.threads);
    for index in 0..worker.options.threads.max(1) {
        let worker = worker.clone();
        let handle = thread::Builder::new()
            .name(format!("corefn-worker-{index}"))
            .spawn(move || worker.serve_channels())
            .map_err(WorkerError::Thread)?;
        handles.push(handle);
    }
    for handle in handles {
        let _ = handle.join();
    }
    Err(WorkerError::Orphaned(worker.options.worker_id))
}

impl Worker {
    /// One thread's loop; returns when every channel is closed (the gateway
    /// is gone). Each thread has its own epoll set with every channel added
    /// EPOLLEXCLUSIVE, so a dispatch wakes one idle thread rather than all
    /// of them, and takes one dispatch per wake-up so that a burst spreads
    /// over the threads.
    fn serve_channels(&self) {
        let Ok(epoll) = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC) else {
            eprintln!(
                "corefn: worker {}: cannot create epoll",
                self.options.worker_id
            );
            return;
        };
        for (index, channel) in self.channels.iter().enumerate() {
            let event = EpollEvent::new(
                EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE,
                index as u64,
            );
            if let Err(error) = epoll.add(channel.as_fd(), event) {
                eprintln!(
                    "corefn: worker {}: cannot watch channel {index}: {error}",
                    self.options.worker_id
                );
                return;
            }
        }
        let mut open_channels = self.channels.len();
        let mut buffer = vec![0u8; DISPATCH_BYTES_MAX];
        let mut events = [EpollEvent::empty(); 1];
        while open_channels > 0 {
            let ready = match epoll.wait(&mut events, EpollTimeout::from(POLL_TIMEOUT_MS)) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(_) => return,
            };
            if ready == 0 {
                continue;
            }
            let index = events[0].data() as usize;
            let channel = self.channels[index].as_fd();
            match protocol::recv_dispatch(channel, &mut buffer) {
                Ok(dispatch) => self.serve(channel, dispatch),
                // Another thread took it.
                Err(ProtocolError::Socket(Errno::EAGAIN)) => {}
                Err(ProtocolError::Closed) => {
                    let _ = epoll.delete(channel);
                    open_channels -= 1;
                }
                Err(error) => eprintln!(
                    "corefn: worker {}: bad dispatch on channel {index}: {error}",
                    self.options.worker_id
                ),
            }
        }
    }

    fn serve(&self, channel: BorrowedFd<'_>, dispatch: Dispatch<'_>) {
        let started = Instant::now();
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let header = dispatch.header;
        let mut response = Vec::with_capacity(4 * 1024);
        let status = self.respond(channel, &dispatch, &mut response);
        let written = write_response(dispatch.client.as_fd(), &response);
        // Our copy only: the gateway keeps the connection.
        drop(dispatch.client);
        let mut flags = 0;
        if written.is_err() {
            flags |= COMPLETION_CONNECTION_BROKEN;
        }
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.requests_done.fetch_add(1, Ordering::Relaxed);
        let completion = Completion {
            status,
            flags,
            request_id: header.request_id,
            response_bytes: written.unwrap_or(0) as u64,
            duration_us: started.elapsed().as_micros() as u64,
        };
        if let Err(error) = send(
            channel.as_raw_fd(),
            &completion.encode(),
            MsgFlags::MSG_NOSIGNAL,
        ) {
            eprintln!(
                "corefn: worker {}: cannot report completion: {error}",
                self.options.worker_id
            );
        }
        // Off the request's path: the client and the core have their answer.
        self.hosts.maintain();
    }

    /// Renders the whole response for one dispatch; returns its status.
    fn respond(&self, channel: BorrowedFd<'_>, dispatch: &Dispatch<'_>, out: &mut Vec<u8>) -> u16 {
        let header = &dispatch.header;
        let head_only = header.flags & FLAG_HEAD_ONLY != 0;
        let result = self.run_function(channel, dispatch);
        // Decided after the run: the gateway may have started draining.
        let connection = connection_header(header);
        let date_line = clock::date_line(clock::unix_now_secs());
        match result {
            Ok((stdout, cgi_response)) => {
                cgi_response.write_http(&stdout, out, &date_line, connection, head_only);
                cgi_response.status
            }
            Err(error) => {
                error.render(out, &date_line, connection, head_only);
                error.status()
            }
        }
    }

    fn run_function(
        &self,
        channel: BorrowedFd<'_>,
        dispatch: &Dispatch<'_>,
    ) -> Result<(Vec<u8>, cgi::CgiResponse), HttpError> {
        let descriptor = self.descriptor(dispatch.descriptor)?;
        let body_from_memfd;
        let body: &[u8] = match &dispatch.body_memfd {
            Some(memfd) => {
                body_from_memfd = read_memfd(memfd, dispatch.header.body_len)?;
                &body_from_memfd
            }
            None => dispatch.inline_body,
        };
        let mut headers = [httparse::EMPTY_HEADER; HEADER_COUNT_MAX];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(dispatch.head) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => {
                return Err(HttpError::BadRequest(
                    "request head did not reach the worker intact",
                ))
            }
        }
        let target = request.path.unwrap_or("/");
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let header_pairs: Vec<(&str, &[u8])> =
            request.headers.iter().map(|h| (h.name, h.value)).collect();
        let remote_addr = socket2::SockRef::from(&dispatch.client)
            .peer_addr()
            .ok()
            .and_then(|addr| addr.as_socket())
            .map(|addr| addr.ip());
        let cgi_request = CgiRequest {
            method: request.method.unwrap_or("GET"),
            path,
            query,
            protocol: if dispatch.header.flags & FLAG_HTTP10 != 0 {
                "HTTP/1.0"
            } else {
                "HTTP/1.1"
            },
            headers: &header_pairs,
            body_len: body.len(),
            remote_addr,
            server_port: None,
        };
        // Only the CGI runtimes (wasm, exec) take the request as an
        // environment; the others get it as it is.
        let cgi_env = || cgi::environment(&cgi_request, &descriptor.env);
        let module = descriptor.module.as_deref().unwrap_or_default();
        let timeout_ms = descriptor.timeout_ms;
        let failed = |message: String| HttpError::FunctionFailed(message);
        match descriptor.runtime {
            Runtime::Wasm => {
                let output = self
                    .wasm
                    .call(&WasmCall {
                        module,
                        timeout_ms,
                        memory_mb: descriptor.memory_mb,
                        env: &cgi_env(),
                        stdin: body,
                    })
                    .map_err(|error| function_error(&error, error.is_timeout(), timeout_ms))?;
                self.logs.append(Runtime::Wasm, module, &output.stderr);
                cgi_output(output.stdout)
            }
            Runtime::Exec => {
                let stderr = self
                    .logs
                    .open(Runtime::Exec, module)
                    .map_err(|e| failed(format!("cannot open the function log: {e}")))?;
                // Absolute: the program runs in its own directory.
                let program = self.functions_dir_absolute.join(module);
                let stdout = exec::run(ExecCall {
                    program: &program,
                    module,
                    env: &cgi_env(),
                    stdin: body,
                    timeout_ms,
                    stdout_bytes_max: RESPONSE_BYTES_MAX,
                    stderr: Some(stderr),
                })
                .map_err(|error| function_error(&error, error.is_timeout(), timeout_ms))?;
                cgi_output(stdout)
            }
            Runtime::Native => {
                let deadline = Instant::now() + Duration::from_millis(timeout_ms);
                let watch = self.watchdog.watch(
                    deadline,
                    self.on_native_timeout(channel, dispatch, module, timeout_ms),
                );
                let result = self.native.call(&NativeCall {
                    module,
                    handler: descriptor.handler.as_deref(),
                    request: &cgi_request,
                    body,
                    env: &descriptor.env,
                    body_bytes_max: RESPONSE_BYTES_MAX,
                });
                if !watch.finish() {
                    // The watchdog answered this request and is ending the
                    // process; nothing may be written after it.
                    loop {
                        thread::park();
                    }
                }
                let output = result.map_err(|error| failed(error.to_string()))?;
                Ok((output.body, output.response))
            }
            Runtime::Python | Runtime::Node | Runtime::Php => {
                let output = self
                    .hosts
                    .call(&HostCall {
                        runtime: descriptor.runtime,
                        module,
                        handler: descriptor.handler.as_deref(),
                        descriptor_env: &descriptor.env,
                        request: &cgi_request,
                        body,
                        timeout_ms,
                    })
                    .map_err(|error| {
                        if error.is_unavailable() {
                            HttpError::RuntimeUnavailable(error.to_string())
                        } else {
                            function_error(&error, error.is_timeout(), timeout_ms)
                        }
                    })?;
                Ok((output.bytes, output.response))
            }
            Runtime::Static => Err(failed("static routes are answered by the gateway".into())),
        }
    }

    /// What the watchdog does for a native call past its deadline: answer
    /// 504 on the client socket, report the completion, end the process.
    /// The dispatch (and so both descriptors) stays alive meanwhile: its
    /// thread is stuck in the call.
    fn on_native_timeout(
        &self,
        channel: BorrowedFd<'_>,
        dispatch: &Dispatch<'_>,
        module: &str,
        timeout_ms: u64,
    ) -> Box<dyn FnOnce() + Send> {
        let client_fd = dispatch.client.as_raw_fd();
        let channel_fd = channel.as_raw_fd();
        let all_channel_fds: Vec<RawFd> = self.channels.iter().map(AsRawFd::as_raw_fd).collect();
        let header = dispatch.header;
        let worker_id = self.options.worker_id;
        let module = module.to_string();
        let started = Instant::now();
        Box::new(move || {
            // Every core stops choosing this worker first, so that requests
            // the client sends after its 504 go to a worker that lives.
            let mut notice = Completion {
                status: COMPLETION_STATUS_NONE,
                flags: COMPLETION_WORKER_RETIRING,
                request_id: header.request_id,
                response_bytes: 0,
                duration_us: 0,
            };
            for fd in all_channel_fds.iter().filter(|&&fd| fd != channel_fd) {
                let _ = send(*fd, &notice.encode(), MsgFlags::MSG_NOSIGNAL);
            }
            thread::sleep(RETIRING_NOTICE_LEAD);
            let error = HttpError::FunctionTimeout { timeout_ms };
            let mut out = Vec::with_capacity(256);
            let date_line = clock::date_line(clock::unix_now_secs());
            let head_only = header.flags & FLAG_HEAD_ONLY != 0;
            error.render(&mut out, &date_line, connection_header(&header), head_only);
            // SAFETY: the dispatch owning the descriptor outlives this: its
            // thread is blocked in the native call until the process ends.
            let client = unsafe { BorrowedFd::borrow_raw(client_fd) };
            let written = write_response(client, &out);
            notice.status = error.status();
            if written.is_err() {
                notice.flags |= COMPLETION_CONNECTION_BROKEN;
            }
            notice.response_bytes = written.unwrap_or(0) as u64;
            notice.duration_us = started.elapsed().as_micros() as u64;
            let _ = send(channel_fd, &notice.encode(), MsgFlags::MSG_NOSIGNAL);
            eprintln!(
                "corefn: worker {worker_id}: native function {module:?} ran past its timeout of {timeout_ms} ms; \
                 replacing this worker (native code cannot be interrupted)"
            );
            // SAFETY: ends the process at once, without running destructors
            // that other threads (one stuck in native code) might race.
            unsafe { libc::_exit(70) }
        })
    }

    /// Sends a metrics datagram every interval until the process ends.
    /// Sends that fail (collector gone or busy) are dropped: metrics are
    /// advisory, requests are not.
    fn report_metrics(&self, socket_path: &std::path::Path) {
        let Ok(socket) = std::os::unix::net::UnixDatagram::unbound() else {
            return;
        };
        let _ = socket.set_nonblocking(true);
        let ticks_per_s = procfs_ticks_per_second();
        let mut last = ProcSample::read(&self.hosts.pids());
        let mut last_at = Instant::now();
        loop {
            thread::sleep(self.options.metrics_interval);
            // Off the request threads: stopping a host needs no request.
            self.hosts.stop_idle();
            let now = ProcSample::read(&self.hosts.pids());
            let elapsed_s = last_at.elapsed().as_secs_f64().max(1e-3);
            last_at = Instant::now();
            let cpu_cores =
                now.cpu_ticks.saturating_sub(last.cpu_ticks) as f64 / ticks_per_s / elapsed_s;
            let io_bytes_per_s = now.io_bytes.saturating_sub(last.io_bytes) as f64 / elapsed_s;
            last = now;
            let sample = WorkerSample {
                worker_id: self.options.worker_id as u32,
                pid: std::process::id(),
                unix_time_us: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_micros() as u64)
                    .unwrap_or(0),
                cpu_ppm: (cpu_cores * 1e6).min(f64::from(u32::MAX)) as u32,
                in_flight: self.in_flight.load(Ordering::Relaxed),
                rss_bytes: now.rss_bytes,
                io_bytes_per_s: io_bytes_per_s as u64,
                requests_done: self.requests_done.load(Ordering::Relaxed),
            };
            let _ = socket.send_to(&sample.encode(), socket_path);
        }
    }

    fn descriptor(&self, json: &[u8]) -> Result<Arc<Descriptor>, HttpError> {
        let mut cache = lock(&self.descriptors);
        if let Some(descriptor) = cache.get(json) {
            return Ok(descriptor.clone());
        }
        let text = std::str::from_utf8(json)
            .map_err(|_| HttpError::FunctionFailed("descriptor is not UTF-8".into()))?;
        let descriptor = Arc::new(
            Descriptor::parse(text).map_err(|e| HttpError::FunctionFailed(e.to_string()))?,
        );
        if cache.len() >= DESCRIPTOR_CACHE_MAX {
            cache.clear();
        }
        cache.insert(json.into(), descriptor.clone());
        Ok(descriptor)
    }
}

/// This process's counters from /proc (zeros where a file is unreadable).
#[derive(Debug, Clone, Copy, Default)]
struct ProcSample {
    cpu_ticks: u64,
    rss_bytes: u64,
    io_bytes: u64,
}

impl ProcSample {
    /// This worker and the language hosts it runs: a host's CPU and memory
    /// are the worker's load as far as choosing a worker goes. Exec children
    /// count through `cutime`/`cstime` once reaped.
    fn read(host_pids: &[u32]) -> ProcSample {
        let mut sample = ProcSample::of("/proc/self");
        for pid in host_pids {
            let host = ProcSample::of(&format!("/proc/{pid}"));
            sample.cpu_ticks += host.cpu_ticks;
            sample.rss_bytes += host.rss_bytes;
            sample.io_bytes += host.io_bytes;
        }
        sample
    }

    /// One process's counters; `proc_dir` is `/proc/self` or `/proc/<pid>`.
    fn of(proc_dir: &str) -> ProcSample {
        let cpu_ticks = std::fs::read_to_string(format!("{proc_dir}/stat"))
            .ok()
            .and_then(|stat| {
                // Fields after the parenthesised command name; utime, stime,
                // cutime and cstime are the 14th to 17th fields of the line.
                let rest = stat.rsplit_once(')')?.1;
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let mut ticks = 0u64;
                for index in 11..=14 {
                    ticks += fields.get(index)?.parse::<u64>().ok()?;
                }
                Some(ticks)
            })
            .unwrap_or(0);
        // SAFETY: sysconf has no memory effects.
        let page_bytes = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        let rss_bytes = std::fs::read_to_string(format!("{proc_dir}/statm"))
            .ok()
            .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map_or(0, |pages| pages * page_bytes);
        let io_bytes = std::fs::read_to_string(format!("{proc_dir}/io"))
            .map(|io| {
                io.lines()
                    .filter_map(|line| line.split_once(": "))
                    .filter(|(key, _)| *key == "rchar" || *key == "wchar")
                    .filter_map(|(_, value)| value.trim().parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(0);
        ProcSample {
            cpu_ticks,
            rss_bytes,
            io_bytes,
        }
    }
}

fn procfs_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// A runtime's error as the client sees it: 504 past the deadline, else 502
/// with the runtime's own message.
fn function_error(error: &dyn std::fmt::Display, is_timeout: bool, timeout_ms: u64) -> HttpError {
    if is_timeout {
        HttpError::FunctionTimeout { timeout_ms }
    } else {
        HttpError::FunctionFailed(error.to_string())
    }
}

/// A CGI program's stdout as a response.
fn cgi_output(stdout: Vec<u8>) -> Result<(Vec<u8>, cgi::CgiResponse), HttpError> {
    let response = cgi::parse_response(&stdout)
        .map_err(|error| HttpError::FunctionFailed(format!("invalid CGI output: {error}")))?;
    Ok((stdout, response))
}

fn connection_header(header: &DispatchHeader) -> ConnectionHeader {
    let keep_alive = header.flags & FLAG_KEEP_ALIVE != 0 && !DRAINING.load(Ordering::Relaxed);
    let http10 = header.flags & FLAG_HTTP10 != 0;
    match (keep_alive, http10) {
        (false, _) => ConnectionHeader::Close,
        (true, true) => ConnectionHeader::KeepAlive,
        (true, false) => ConnectionHeader::Implicit,
    }
}

fn read_memfd(memfd: &OwnedFd, body_len: u64) -> Result<Vec<u8>, HttpError> {
    let failed = |e: io::Error| HttpError::FunctionFailed(format!("cannot read request body: {e}"));
    let mut file = File::from(memfd.try_clone().map_err(failed)?);
    // The gateway's write left the shared file offset at the end.
    file.seek(SeekFrom::Start(0)).map_err(failed)?;
    let mut body = Vec::with_capacity(usize::try_from(body_len).unwrap_or(0));
    file.read_to_end(&mut body).map_err(failed)?;
    if body.len() as u64 != body_len {
        return Err(HttpError::FunctionFailed(format!(
            "request body has {} bytes, expected {body_len}",
            body.len()
        )));
    }
    Ok(body)
}

/// Writes all of `bytes` to the client socket, which is non-blocking (it
/// shares its file status with the gateway's copy): waits for POLLOUT on
/// EAGAIN, up to [`RESPONSE_WRITE_TIMEOUT`] in all.
fn write_response(client: BorrowedFd<'_>, bytes: &[u8]) -> io::Result<usize> {
    let deadline = Instant::now() + RESPONSE_WRITE_TIMEOUT;
    let mut written = 0;
    while written < bytes.len() {
        match send(
            client.as_raw_fd(),
            &bytes[written..],
            MsgFlags::MSG_NOSIGNAL,
        ) {
            Ok(n) => written += n,
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                let mut fds = [PollFd::new(client, PollFlags::POLLOUT)];
                let left_ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
                match poll(&mut fds, PollTimeout::from(left_ms)) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(error) => return Err(error.into()),
                }
            }
            Err(error) => return Err(error.into()),
        }
    }
    Ok(written)
}
