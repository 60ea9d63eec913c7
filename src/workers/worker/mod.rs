//! The worker process (`corefn worker`, started by the supervisor): receives
//! dispatches from every core, runs the function through the runtimes'
//! one seam ([`crate::runtimes::invoke`]), writes the HTTP response
//! straight to the client socket and reports completion to the core.
//!
//! * this file: process setup (signals, channels, runtimes, threads) and
//!   the worker's shared state;
//! * [`lanes`]: which thread takes which dispatch (an owner per channel,
//!   spares for slow calls);
//! * [`serve`]: a thread's loop, one dispatch from receipt to completion;
//! * [`proc_sample`]: the metrics datagram, sampled from /proc.
//!
//! Threads: `threads` loops; with at least one per channel, thread `c` owns
//! channel `c` and the rest are spares that help a channel whose owner is
//! held by a slow call (seqpacket delivers each message to one reader), so
//! a slow function holds one thread while the others go on ([`lanes`]).
//! The worker never reads from the client socket and never closes it for
//! the gateway: it writes one response and drops its own copy.

mod lanes;
mod proc_sample;
mod serve;

use std::os::fd::AsFd;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{signal, SigHandler, SigSet, Signal};
use thiserror::Error;

use super::completion_ring::CompletionRing;
use super::privileges::{self, PrivilegeError};
use super::settings::WorkerSettings;
use crate::config::WorkerArgs;
use crate::failure::{Failure, FailureKind};
use crate::lru::LruMap;
use crate::runtimes::descriptor::Descriptor;
use crate::runtimes::invoke::{Runtimes, StartError};
use crate::telemetry::logs::LogSender;
use lanes::{Lanes, SPILL_AFTER};

/// Set by SIGUSR1, which the supervisor sends when the gateway starts
/// shutting down: responses written from then on carry `connection: close`.
static DRAINING: AtomicBool = AtomicBool::new(false);

extern "C" fn on_drain_signal(_: libc::c_int) {
    DRAINING.store(true, Ordering::Relaxed);
}

/// The supervisor places core channel `c` at descriptor `FIRST_CHANNEL_FD + c`.
pub const FIRST_CHANNEL_FD: RawFd = 3;
/// Channels a worker accepts: one per core.
const CHANNELS_MAX: usize = 1024;
/// Parsed descriptors kept per worker (keyed by their JSON text).
const DESCRIPTOR_CACHE_MAX: usize = 4096;

#[derive(Debug, Error)]
pub enum WorkerError {
    #[error("worker {0}: the gateway is gone")]
    Orphaned(usize),
    #[error("worker: {0}")]
    Settings(String),
    #[error("worker: cannot set up signals: {0}")]
    Signals(Errno),
    #[error("worker: channel descriptor {0} is not open")]
    Channel(RawFd),
    #[error("worker: {0}")]
    Runtimes(#[from] StartError),
    #[error("worker: cannot start a thread: {0}")]
    Thread(std::io::Error),
    #[error("worker: cannot set up the channels' lanes: {0}")]
    Lanes(std::io::Error),
    #[error("worker: cannot connect to the metrics socket: {0}")]
    Metrics(std::io::Error),
    #[error("worker: {0}")]
    Privileges(#[from] PrivilegeError),
}

/// Who this worker is, from its command line.
#[derive(Debug, Clone, Copy)]
struct Identity {
    worker_id: usize,
    parent_pid: i32,
}

struct Worker {
    identity: Identity,
    settings: WorkerSettings,
    channels: Vec<OwnedFd>,
    /// Channel c's completion ring, when the supervisor gave one (see
    /// [`crate::workers::completion_ring`]).
    rings: Vec<Option<CompletionRing>>,
    /// Where function log lines go (the gateway's log thread).
    logs: Option<LogSender>,
    runtimes: Runtimes,
    lanes: Lanes,
    descriptors: LruMap<Box<[u8]>, CachedDescriptor>,
    in_flight: AtomicU32,
    requests_done: AtomicU64,
}

/// The descriptor the supervisor placed at `fd` for this process, made
/// close-on-exec (functions' children must hold none of them: the gateway
/// tells a dead worker by its channels closing); None if nothing is there.
fn inherited(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: F_GETFD only inspects the descriptor table.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: F_SETFD only changes the descriptor's flags.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: placed there by the supervisor for this process alone, and
    // taken once (each caller names its own descriptor).
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The completion rings placed after the channels and the log channel; a
/// ring that cannot be mapped is said and left out (its completions go
/// over the channel).
fn completion_rings(args: &WorkerArgs) -> Vec<Option<CompletionRing>> {
    if !args.completion_rings {
        return (0..args.channels).map(|_| None).collect();
    }
    let first = FIRST_CHANNEL_FD + args.channels as RawFd + RawFd::from(args.log_channel);
    (0..args.channels)
        .map(|c| {
            let fd = first + c as RawFd;
            let Some(memfd) = inherited(fd) else {
                eprintln!("corefn: worker: no completion ring at descriptor {fd}");
                return None;
            };
            CompletionRing::map(memfd)
                .map_err(|error| eprintln!("corefn: worker: completion ring {c}: {error}"))
                .ok()
        })
        .collect()
}

pub fn run(args: WorkerArgs) -> Result<(), WorkerError> {
    let settings = WorkerSettings::from_json(&args.settings).map_err(WorkerError::Settings)?;
    if args.channels == 0 || args.channels > CHANNELS_MAX {
        return Err(WorkerError::Settings(format!(
            "--channels {} is outside 1..={CHANNELS_MAX}",
            args.channels
        )));
    }
    let identity = Identity {
        worker_id: args.worker_id,
        parent_pid: args.parent_pid,
    };
    // The gateway disables transparent huge pages for its own footprint
    // (main.rs); instance memory does better with them.
    // SAFETY: prctl with PR_SET_THP_DISABLE has no memory effects.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 0, 0, 0, 0) };
    // Die with the gateway even if it is killed with SIGKILL.
    // SAFETY: prctl with PR_SET_PDEATHSIG and a signal number has no memory effects.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // The gateway may have died before prctl took effect.
    if nix::unistd::getppid().as_raw() != identity.parent_pid {
        return Err(WorkerError::Orphaned(identity.worker_id));
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

    let channels = (0..args.channels)
        .map(|c| {
            let fd = FIRST_CHANNEL_FD + c as RawFd;
            let channel = inherited(fd).ok_or(WorkerError::Channel(fd))?;
            // Blocking: an owner waits in recv (spares pass MSG_DONTWAIT).
            // SAFETY: F_SETFL with 0 only clears the status flags (O_NONBLOCK).
            unsafe { libc::fcntl(channel.as_raw_fd(), libc::F_SETFL, 0) };
            Ok(channel)
        })
        .collect::<Result<Vec<_>, WorkerError>>()?;
    let logs = if args.log_channel {
        let fd = FIRST_CHANNEL_FD + args.channels as RawFd;
        Some(LogSender::from_fd(
            inherited(fd).ok_or(WorkerError::Channel(fd))?,
        ))
    } else {
        None
    };
    let rings = completion_rings(&args);

    // Connected now: after the drop below the socket's path may be out of
    // the worker user's reach. The runtimes start after it: their caches,
    // host programs and interpreters are the worker user's.
    let metrics = match &settings.metrics_socket {
        Some(path) => {
            let socket = UnixDatagram::unbound().map_err(WorkerError::Metrics)?;
            socket.connect(path).map_err(WorkerError::Metrics)?;
            Some(socket)
        }
        None => None,
    };
    if let Some(run_as) = privileges::resolve(settings.run_as.as_deref())? {
        privileges::drop_to(run_as)?;
        // A change of credentials clears the parent-death signal.
        // SAFETY: prctl with PR_SET_PDEATHSIG and a signal number has no memory effects.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        if nix::unistd::getppid().as_raw() != identity.parent_pid {
            return Err(WorkerError::Orphaned(identity.worker_id));
        }
        // Said at start rather than as every call's 502.
        let functions = &settings.runtimes.functions_dir;
        let readable = nix::unistd::access(
            functions.as_path(),
            nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::X_OK,
        );
        if let (Err(error), 0) = (readable, identity.worker_id) {
            eprintln!(
                "corefn: the functions directory {} cannot be read by uid {}: {error}; its \
                 functions will answer 502 (put it where that user can read it, or choose \
                 another with --run-as)",
                functions.display(),
                run_as.uid
            );
        }
    }
    let runtimes = Runtimes::start(
        &settings.runtimes,
        settings.threads,
        settings.runtimes.cache_dir.clone(),
    )?;
    let channel_fds: Vec<_> = channels.iter().map(AsFd::as_fd).collect();
    let lanes = Lanes::new(&channel_fds, settings.threads).map_err(WorkerError::Lanes)?;
    drop(channel_fds);
    let worker = Arc::new(Worker {
        identity,
        channels,
        rings,
        lanes,
        logs,
        runtimes,
        descriptors: LruMap::new(DESCRIPTOR_CACHE_MAX),
        in_flight: AtomicU32::new(0),
        requests_done: AtomicU64::new(0),
        settings,
    });
    if let Some(socket) = metrics {
        let reporter = worker.clone();
        thread::Builder::new()
            .name("corefn-worker-metrics".into())
            .spawn(move || reporter.report_metrics(&socket))
            .map_err(WorkerError::Thread)?;
    }
    // Off the request threads, and off the metrics thread (a host start
    // may take seconds): idle hosts are stopped, and pools that lost a
    // host and could not refill right after their request try again.
    let keeper = worker.clone();
    thread::Builder::new()
        .name("corefn-worker-hosts".into())
        .spawn(move || loop {
            thread::sleep(Duration::from_millis(keeper.settings.metrics_interval_ms));
            keeper.runtimes.stop_idle();
            keeper.runtimes.maintain();
        })
        .map_err(WorkerError::Thread)?;
    let mut handles = Vec::with_capacity(worker.settings.threads);
    for index in 0..worker.settings.threads {
        let worker = worker.clone();
        let handle = thread::Builder::new()
            .name(format!("corefn-worker-{index}"))
            .spawn(move || worker.serve_thread(index))
            .map_err(WorkerError::Thread)?;
        handles.push(handle);
    }
    for handle in handles {
        let _ = handle.join();
    }
    Err(WorkerError::Orphaned(identity.worker_id))
}

impl Worker {
    /// The dispatch's descriptor, parsed once per distinct text.
    fn descriptor(&self, json: &[u8]) -> Result<Arc<CachedDescriptor>, Failure> {
        if let Some(descriptor) = self.descriptors.get(json) {
            return Ok(descriptor);
        }
        let invalid = |message: String| Failure::new(FailureKind::Internal, message);
        let text =
            std::str::from_utf8(json).map_err(|_| invalid("descriptor is not UTF-8".into()))?;
        let descriptor = Arc::new(CachedDescriptor {
            descriptor: Descriptor::parse(text).map_err(|e| invalid(e.to_string()))?,
            last_call_long: AtomicBool::new(false),
        });
        self.descriptors.insert(json.into(), descriptor.clone());
        Ok(descriptor)
    }
}

/// A parsed descriptor and what this worker learned of its calls.
struct CachedDescriptor {
    descriptor: Descriptor,
    /// Its last call here ran past [`SPILL_AFTER`].
    last_call_long: AtomicBool,
}

impl CachedDescriptor {
    /// An owner may run its next call without arming its channel for the
    /// spares first ([`lanes`]): it computes on the thread, and its last
    /// call was short.
    fn expected_brief(&self) -> bool {
        self.descriptor.runtime.runs_on_the_calling_thread()
            && !self.last_call_long.load(Ordering::Relaxed)
    }

    fn note_duration(&self, duration: Duration) {
        let long = duration >= SPILL_AFTER;
        if self.last_call_long.load(Ordering::Relaxed) != long {
            self.last_call_long.store(long, Ordering::Relaxed);
        }
    }
}
