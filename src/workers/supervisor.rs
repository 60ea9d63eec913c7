//! The supervisor thread: starts the worker processes, restarts one that
//! dies (with backoff when it keeps dying), hands every core its end of
//! each worker's channel, and stops them all at shutdown.
//!
//! Workers are started with fork+exec of this same binary (`corefn worker`),
//! not a bare fork: restarts happen while the gateway runs many threads,
//! and after a fork in a threaded process only async-signal-safe calls are
//! allowed until exec; a fresh image also gives wasmtime a clean process.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::unistd::Pid;

use super::completion_ring::CompletionRing;
use super::settings::WorkerSettings;
use super::worker::FIRST_CHANNEL_FD;
use crate::sync::lock;

/// How often the supervisor checks its children when it cannot wait for
/// their exit (no pidfd: a kernel before 5.3).
const SUPERVISE_INTERVAL: Duration = Duration::from_millis(20);
/// How often it looks anyway while every worker runs and nothing wakes it
/// (a worker's exit, a restart falling due, stop or drain do).
const IDLE_RECHECK: Duration = Duration::from_secs(1);
/// Restart delay after a worker that died before serving a request (a
/// crash loop: it dies on start); doubles up to the max.
const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(50);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A worker that lived this long resets its backoff even if it served
/// nothing (an idle gateway).
const HEALTHY_UPTIME: Duration = Duration::from_secs(10);
/// Time workers get to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct PoolSpec {
    pub executable: PathBuf,
    pub worker_count: usize,
    pub core_count: usize,
    /// Handed to every worker whole, as [`WorkerSettings::to_json`] made it.
    pub settings_json: String,
    /// Where workers send function log lines (shared by all of them).
    pub log_channel: Option<Arc<OwnedFd>>,
    /// Whether the worker `(id, pid)` has served a request, as its own
    /// reports say (the gateway answers from the scheduler's scores): a
    /// worker that did is no crash loop, and comes back at once.
    pub has_served: ServedProbe,
}

/// See [`PoolSpec::has_served`].
pub type ServedProbe = Arc<dyn Fn(usize, u32) -> bool + Send + Sync>;

impl PoolSpec {
    pub fn new(
        executable: PathBuf,
        worker_count: usize,
        core_count: usize,
        settings: &WorkerSettings,
        log_channel: Option<Arc<OwnedFd>>,
        has_served: ServedProbe,
    ) -> Result<PoolSpec, String> {
        Ok(PoolSpec {
            executable,
            worker_count,
            core_count,
            settings_json: settings.to_json()?,
            log_channel,
            has_served,
        })
    }
}

/// What the supervisor knows of each worker slot, for `/_/workers`.
#[derive(Debug, Clone, Default)]
pub struct SlotStatus {
    pub worker_id: usize,
    pub pid: Option<u32>,
    pub restarts: u64,
    pub state: &'static str,
}

/// Shared with the cores' admin endpoint (read off the hot path).
#[derive(Debug, Default)]
pub struct PoolStatus {
    slots: Mutex<Vec<SlotStatus>>,
}

impl PoolStatus {
    pub fn snapshot(&self) -> Vec<SlotStatus> {
        lock(&self.slots).clone()
    }

    fn set(&self, slots: &[Slot]) {
        let statuses = slots
            .iter()
            .map(|slot| SlotStatus {
                worker_id: slot.worker_id,
                pid: slot.child.as_ref().map(Child::id),
                restarts: slot.generation.saturating_sub(1),
                state: if slot.child.is_some() {
                    "running"
                } else {
                    "restarting"
                },
            })
            .collect();
        *lock(&self.slots) = statuses;
    }
}

/// A core's end of one worker's channel.
#[derive(Debug)]
pub struct NewLink {
    pub worker_id: usize,
    pub generation: u64,
    pub pid: u32,
    pub channel: OwnedFd,
    /// Where the worker puts its completions first (None: the channel
    /// only, as the control plane does).
    pub completions: Option<CompletionRing>,
}

/// Links waiting for one core to adopt them (from its housekeeping task).
#[derive(Default)]
pub struct LinkInbox {
    version: AtomicU64,
    links: Mutex<Vec<NewLink>>,
}

impl LinkInbox {
    pub fn push(&self, link: NewLink) {
        lock(&self.links).push(link);
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Cheap check first (one atomic load), then the lock only when
    /// something arrived since `seen_version`.
    pub fn take_new(&self, seen_version: &mut u64) -> Vec<NewLink> {
        let version = self.version.load(Ordering::Acquire);
        if version == *seen_version {
            return Vec::new();
        }
        *seen_version = version;
        std::mem::take(&mut *lock(&self.links))
    }
}

pub struct Supervisor {
    pub status: Arc<PoolStatus>,
    stop: Arc<AtomicBool>,
    draining: Arc<AtomicBool>,
    /// Wakes the supervisor's wait when `stop` or `draining` is set.
    wake: Arc<EventFd>,
    thread: JoinHandle<()>,
}

struct Slot {
    worker_id: usize,
    child: Option<Child>,
    /// Readable once `child` has exited (None: the wait polls).
    exited: Option<OwnedFd>,
    generation: u64,
    started_at: Instant,
    next_start_at: Instant,
    backoff: Duration,
}

impl Supervisor {
    /// Starts every worker before returning, so the cores find their links
    /// at their first housekeeping tick.
    pub fn start(spec: PoolSpec, inboxes: Vec<Arc<LinkInbox>>) -> std::io::Result<Supervisor> {
        assert_eq!(inboxes.len(), spec.core_count, "one inbox per core");
        let stop = Arc::new(AtomicBool::new(false));
        let draining = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(EventFd::from_value_and_flags(
            0,
            EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
        )?);
        let thread_wake = wake.clone();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let thread_stop = stop.clone();
        let thread_draining = draining.clone();
        let status = Arc::new(PoolStatus::default());
        let thread_status = status.clone();
        // The supervisor thread forks the workers: PR_SET_PDEATHSIG fires
        // when the *thread* that forked dies, and this thread lives as long
        // as the gateway.
        let thread = thread::Builder::new()
            .name("corefn-supervisor".into())
            .spawn(move || {
                supervise(
                    spec,
                    inboxes,
                    Signals {
                        stop: thread_stop,
                        draining: thread_draining,
                        wake: thread_wake,
                    },
                    thread_status,
                    started_tx,
                )
            })?;
        let _ = started_rx.recv_timeout(Duration::from_secs(10));
        Ok(Supervisor {
            status,
            stop,
            draining,
            wake,
            thread,
        })
    }

    /// The gateway is shutting down: workers are told (SIGUSR1) so that the
    /// responses they still write carry `connection: close`.
    pub fn announce_draining(&self) {
        self.draining.store(true, Ordering::Release);
        let _ = self.wake.write(1);
    }

    /// Stops every worker (SIGTERM, then SIGKILL after a grace) and reaps them.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.wake.write(1);
        if self.thread.join().is_err() {
            eprintln!("corefn: supervisor panicked");
        }
    }
}

/// What the gateway tells the supervisor's thread.
struct Signals {
    stop: Arc<AtomicBool>,
    draining: Arc<AtomicBool>,
    wake: Arc<EventFd>,
}

fn supervise(
    spec: PoolSpec,
    inboxes: Vec<Arc<LinkInbox>>,
    signals: Signals,
    status: Arc<PoolStatus>,
    started: std::sync::mpsc::Sender<()>,
) {
    let Signals {
        stop,
        draining,
        wake,
    } = signals;
    let mut drain_announced = false;
    let now = Instant::now();
    let mut slots: Vec<Slot> = (0..spec.worker_count)
        .map(|worker_id| Slot {
            worker_id,
            child: None,
            exited: None,
            generation: 0,
            started_at: now,
            next_start_at: now,
            backoff: RESTART_BACKOFF_MIN,
        })
        .collect();
    let mut announced = false;
    while !stop.load(Ordering::Acquire) {
        keep_one_starting(&mut slots);
        for slot in &mut slots {
            if let Some(child) = &mut slot.child {
                if let Ok(Some(status)) = child.try_wait() {
                    let uptime = slot.started_at.elapsed();
                    eprintln!(
                        "corefn: worker {} (pid {}) exited after {} ms: {status}",
                        slot.worker_id,
                        child.id(),
                        uptime.as_millis()
                    );
                    let served = (spec.has_served)(slot.worker_id, child.id());
                    slot.child = None;
                    // A reaped child's pidfd stays readable: it must go.
                    slot.exited = None;
                    slot.next_start_at = if served || uptime >= HEALTHY_UPTIME {
                        // Killed or crashed after doing its work: not a
                        // worker that cannot start. Back at once.
                        slot.backoff = RESTART_BACKOFF_MIN;
                        Instant::now()
                    } else {
                        slot.backoff = (slot.backoff * 2).min(RESTART_BACKOFF_MAX);
                        Instant::now() + slot.backoff
                    };
                }
            }
            if slot.child.is_none() && Instant::now() >= slot.next_start_at {
                slot.generation += 1;
                match start_worker(&spec, slot.worker_id, slot.generation, &inboxes) {
                    Ok(child) => {
                        slot.exited = exit_descriptor(&child);
                        slot.child = Some(child);
                        slot.started_at = Instant::now();
                    }
                    Err(error) => {
                        eprintln!("corefn: cannot start worker {}: {error}", slot.worker_id);
                        slot.backoff = (slot.backoff * 2).min(RESTART_BACKOFF_MAX);
                        slot.next_start_at = Instant::now() + slot.backoff;
                    }
                }
            }
        }
        status.set(&slots);
        if !announced {
            announced = true;
            let _ = started.send(());
        }
        if !drain_announced && draining.load(Ordering::Acquire) {
            drain_announced = true;
            for child in slots.iter().filter_map(|slot| slot.child.as_ref()) {
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGUSR1);
            }
        }
        if !stop.load(Ordering::Acquire) {
            wait_for_change(&slots, &wake);
        }
    }
    stop_all(&mut slots);
}

/// A descriptor that becomes readable when `child` exits (a pidfd), or
/// None where the kernel has none.
fn exit_descriptor(child: &Child) -> Option<OwnedFd> {
    // SAFETY: pidfd_open only makes a descriptor (close-on-exec) for a pid.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
    // SAFETY: a descriptor pidfd_open just made for us alone.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sleeps until a worker exits, the gateway stops or drains, a restart
/// falls due, or [`IDLE_RECHECK`] passes; every [`SUPERVISE_INTERVAL`] when
/// a running worker has no exit descriptor.
fn wait_for_change(slots: &[Slot], wake: &EventFd) {
    let now = Instant::now();
    let mut timeout = IDLE_RECHECK;
    for slot in slots {
        let due = match (&slot.child, &slot.exited) {
            (None, _) => slot.next_start_at.saturating_duration_since(now),
            (Some(_), None) => SUPERVISE_INTERVAL,
            (Some(_), Some(_)) => continue,
        };
        timeout = timeout.min(due);
    }
    let mut fds = vec![PollFd::new(wake.as_fd(), PollFlags::POLLIN)];
    fds.extend(
        slots
            .iter()
            .filter(|slot| slot.child.is_some())
            .filter_map(|slot| slot.exited.as_ref())
            .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN)),
    );
    // Rounded up: a 0 ms wait for a start still ahead would spin.
    let timeout_ms = u16::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(u16::MAX);
    // EINTR or an error: the loop looks and waits again.
    let _ = poll(&mut fds, PollTimeout::from(timeout_ms));
    // Non-blocking: EAGAIN when nothing was written.
    let _ = wake.read();
}

/// With no worker alive, the slot due first starts now: the pool never
/// waits out a backoff empty (a crash loop then costs one start of one
/// slot per [`RESTART_BACKOFF_MIN`], and the others keep backing off).
fn keep_one_starting(slots: &mut [Slot]) {
    if slots.iter().any(|slot| slot.child.is_some()) {
        return;
    }
    let now = Instant::now();
    if let Some(first) = slots.iter_mut().min_by_key(|slot| slot.next_start_at) {
        let soonest = now.max(first.started_at + RESTART_BACKOFF_MIN);
        first.next_start_at = first.next_start_at.min(soonest);
    }
}

fn start_worker(
    spec: &PoolSpec,
    worker_id: usize,
    generation: u64,
    inboxes: &[Arc<LinkInbox>],
) -> std::io::Result<Child> {
    let mut gateway_ends = Vec::with_capacity(spec.core_count);
    let mut worker_ends = Vec::with_capacity(spec.core_count);
    let mut rings = Vec::with_capacity(spec.core_count);
    for _ in 0..spec.core_count {
        let (gateway_end, worker_end) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        // The core never blocks on its channel.
        fcntl(&gateway_end, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        gateway_ends.push(gateway_end);
        worker_ends.push(worker_end);
        rings.push(CompletionRing::create().map_err(std::io::Error::other)?);
    }
    let mut worker_raw: Vec<RawFd> = worker_ends.iter().map(|fd| fd.as_raw_fd()).collect();
    // The log channel goes right after the core channels, the rings last.
    if let Some(log) = &spec.log_channel {
        worker_raw.push(log.as_raw_fd());
    }
    worker_raw.extend(
        rings
            .iter()
            .filter_map(|ring| ring.memfd().map(AsRawFd::as_raw_fd)),
    );
    let mut command = Command::new(&spec.executable);
    command
        .arg("worker")
        .arg("--worker-id")
        .arg(worker_id.to_string())
        .arg("--channels")
        .arg(spec.core_count.to_string())
        .arg("--parent-pid")
        .arg(std::process::id().to_string())
        .arg("--settings")
        .arg(&spec.settings_json)
        .stdin(Stdio::null());
    if spec.log_channel.is_some() {
        command.arg("--log-channel");
    }
    command.arg("--completion-rings");
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe system calls (fcntl, dup2, close_range).
    unsafe {
        command.pre_exec(move || place_channels(&worker_raw));
    }
    let child = command.spawn()?;
    drop(worker_ends);
    // The worker has its copies; the gateway keeps the mappings only.
    for ring in &mut rings {
        ring.close_memfd();
    }
    for (core, (channel, ring)) in gateway_ends.into_iter().zip(rings).enumerate() {
        inboxes[core].push(NewLink {
            worker_id,
            generation,
            pid: child.id(),
            channel,
            completions: Some(ring),
        });
    }
    Ok(child)
}

/// In the child: move descriptor `i` of `worker_ends` to
/// `FIRST_CHANNEL_FD + i` (the core channels, then the log channel when
/// there is one, then the completion rings) and close every other
/// inherited descriptor above them (client sockets among them).
fn place_channels(worker_ends: &[RawFd]) -> std::io::Result<()> {
    // Everything inherited but stdio and the channels goes first: the
    // gateway may be near its open-files limit (client sockets), and the
    // copies below need free descriptors.
    close_all_but(worker_ends)?;
    // Parked copies go above every target, so that moving one into place
    // never lands on another that is still parked; the lowest free ones
    // there, so that this fits under any open-files limit that holds the
    // channels at all.
    let parking_floor = FIRST_CHANNEL_FD + worker_ends.len() as RawFd;
    let mut parked = Vec::with_capacity(worker_ends.len());
    for &fd in worker_ends {
        // SAFETY: plain descriptor-table calls on descriptors we own.
        let high = unsafe { libc::fcntl(fd, libc::F_DUPFD, parking_floor) };
        if high < 0 {
            return Err(std::io::Error::last_os_error());
        }
        parked.push(high);
    }
    for (core, &high) in parked.iter().enumerate() {
        let target = FIRST_CHANNEL_FD + core as RawFd;
        // SAFETY: as above; dup2 leaves the new descriptor without CLOEXEC.
        if unsafe { libc::dup2(high, target) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let first_free = FIRST_CHANNEL_FD as libc::c_uint + worker_ends.len() as libc::c_uint;
    // SAFETY: close_range only closes descriptors.
    if unsafe { libc::close_range(first_free, libc::c_uint::MAX, 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Closes every descriptor above stderr that is not in `keep`.
fn close_all_but(keep: &[RawFd]) -> std::io::Result<()> {
    let mut kept: Vec<libc::c_uint> = keep
        .iter()
        .filter(|&&fd| fd > 2)
        .map(|&fd| fd as libc::c_uint)
        .collect();
    kept.sort_unstable();
    let mut from: libc::c_uint = 3;
    for fd in kept.into_iter().chain([libc::c_uint::MAX]) {
        if fd > from {
            let last = if fd == libc::c_uint::MAX { fd } else { fd - 1 };
            // SAFETY: close_range only closes descriptors.
            if unsafe { libc::close_range(from, last, 0) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        from = fd.saturating_add(1);
    }
    Ok(())
}

fn stop_all(slots: &mut [Slot]) {
    for slot in slots.iter() {
        if let Some(child) = &slot.child {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    loop {
        let mut running = 0;
        for slot in slots.iter_mut() {
            if let Some(child) = &mut slot.child {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => slot.child = None,
                    Ok(None) => running += 1,
                }
            }
        }
        if running == 0 {
            return;
        }
        if Instant::now() >= deadline {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    for slot in slots.iter_mut() {
        if let Some(mut child) = slot.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
