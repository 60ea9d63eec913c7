//! Which worker thread takes which dispatch: one owner thread per core
//! channel, plus spare threads that help a channel only while its owner is
//! held by a slow call.
//!
//! Why: a dispatch that finds a thread asleep costs a wake-up and two
//! context switches, more than a short call itself (PERFORMANCE.md, "The
//! hop's floor"). Every thread waiting on every channel made most dispatches
//! wake a sleeping thread; an owner that blocks in `recv` on its own channel
//! is usually still running when the next dispatch comes (the floor's
//! design). Spares keep what the shared design gave: a slow call (a language
//! host, an exec process, a sleeping native call) does not hold the calls
//! queued behind it on its channel.
//!
//! * An owner runs every call it receives itself. Before a call that will
//!   wait rather than compute (a language host's or an exec call: the
//!   thread waits on another process) or whose function's last call ran
//!   past [`SPILL_AFTER`], it *arms* its channel: adds it to the spares'
//!   epoll set (EPOLLEXCLUSIVE, so a dispatch wakes one spare), and disarms
//!   it when the call ends. A brief call (wasm, native) costs no system
//!   call here.
//! * A call expected brief that runs long (a first call compiling its
//!   module, a native call that sleeps) is caught by the watcher thread,
//!   which arms the channel once the call has run [`SPILL_AFTER`]; the
//!   watcher wakes only while calls run (when the first is due, at least
//!   once per [`SPILL_AFTER`]) and parks when the worker idles.
//! * With no more threads than channels there are no owners: every thread
//!   is a spare and every channel stays armed (the shared design), because
//!   an owner without a spare would let a slow call hold its channel.
//!
//! Owns the spares' epoll set and each owner's call state; never receives
//! or runs a dispatch itself (that is [`super::serve`]).

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

/// How long a call expected brief may hold its channel alone; a call this
/// long makes its function's next call arm the channel at once.
pub const SPILL_AFTER: Duration = Duration::from_millis(10);
/// How long the watcher keeps ticking after the last call ended.
const IDLE_GRACE: Duration = Duration::from_millis(100);
/// How long the parked watcher sleeps before it looks again without an
/// unpark (a safety net, not the wake-up path).
const IDLE_RECHECK: Duration = Duration::from_millis(500);

/// One owner's call, seen by the watcher.
struct OwnerState {
    /// Microseconds since `Shared::created` at which the running call
    /// started, plus one; 0 while the owner waits.
    call_started_us: AtomicU64,
    /// The channel is in the spares' set.
    armed: AtomicBool,
}

struct Shared {
    spares: Epoll,
    /// The channels, in channel order (the worker owns them and outlives
    /// the lanes).
    channel_fds: Vec<RawFd>,
    owners: Vec<OwnerState>,
    /// Owners in a call now.
    busy: AtomicUsize,
    /// Per channel: its peer (the core) closed it.
    closed: Vec<AtomicBool>,
    open_channels: AtomicUsize,
    stop: AtomicBool,
    created: Instant,
}

/// The lanes of one worker: built once, shared by its threads.
pub struct Lanes {
    shared: Arc<Shared>,
    watcher: Option<JoinHandle<()>>,
}

/// What a thread does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Receives from this channel alone and runs what it receives.
    Owner(usize),
    /// Waits on the spares' set.
    Spare,
}

impl Lanes {
    /// Lanes for `channels` (in channel order) and `threads` threads.
    pub fn new(channels: &[BorrowedFd<'_>], threads: usize) -> std::io::Result<Lanes> {
        let spares = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(std::io::Error::from)?;
        let owned = threads > channels.len();
        let owners = if owned { channels.len() } else { 0 };
        let shared = Arc::new(Shared {
            spares,
            channel_fds: channels.iter().map(AsRawFd::as_raw_fd).collect(),
            owners: (0..owners)
                .map(|_| OwnerState {
                    call_started_us: AtomicU64::new(0),
                    armed: AtomicBool::new(false),
                })
                .collect(),
            busy: AtomicUsize::new(0),
            closed: (0..channels.len())
                .map(|_| AtomicBool::new(false))
                .collect(),
            open_channels: AtomicUsize::new(channels.len()),
            stop: AtomicBool::new(false),
            created: Instant::now(),
        });
        if !owned {
            for (index, channel) in channels.iter().enumerate() {
                shared
                    .spares
                    .add(channel, spare_event(index))
                    .map_err(std::io::Error::from)?;
            }
        }
        let watcher = if owners > 0 {
            let thread_shared = Arc::clone(&shared);
            Some(
                thread::Builder::new()
                    .name("corefn-worker-lanes".into())
                    .stack_size(64 * 1024)
                    .spawn(move || watch(&thread_shared))?,
            )
        } else {
            None
        };
        Ok(Lanes { shared, watcher })
    }

    /// The role of thread `index` of `threads`.
    pub fn role(&self, index: usize) -> Role {
        if index < self.shared.owners.len() {
            Role::Owner(index)
        } else {
            Role::Spare
        }
    }

    /// The spares' epoll set (channel index in each event's data).
    pub fn spares(&self) -> &Epoll {
        &self.shared.spares
    }

    /// Channel `index` is closed (the gateway is gone): no thread waits on
    /// it again. Said by whichever thread saw it first.
    pub fn close(&self, index: usize) {
        if self.shared.closed[index].swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = self.shared.spares.delete(self.shared.channel(index));
        self.shared.open_channels.fetch_sub(1, Ordering::AcqRel);
    }

    /// Every channel is closed: the spares stop.
    pub fn all_closed(&self) -> bool {
        self.shared.open_channels.load(Ordering::Acquire) == 0
    }

    /// Marks owner `channel`'s call as started until the guard drops; arms
    /// the channel now unless the call is `expected_brief`.
    pub fn begin_call(&self, channel: usize, expected_brief: bool) -> OwnerCall<'_> {
        let shared = &*self.shared;
        let state = &shared.owners[channel];
        debug_assert_eq!(
            state.call_started_us.load(Ordering::Relaxed),
            0,
            "an owner runs one call at a time"
        );
        state
            .call_started_us
            .store(shared.now_us() + 1, Ordering::Release);
        let was_idle = shared.busy.fetch_add(1, Ordering::AcqRel) == 0;
        if was_idle {
            if let Some(watcher) = &self.watcher {
                watcher.thread().unpark();
            }
        }
        if !expected_brief && self.watcher.is_some() {
            arm(shared, channel);
        }
        OwnerCall {
            lanes: self,
            channel,
        }
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(watcher) = self.watcher.take() {
            watcher.thread().unpark();
            let _ = watcher.join();
        }
    }
}

/// An owner's running call; ending it disarms the channel if it was armed.
pub struct OwnerCall<'l> {
    lanes: &'l Lanes,
    channel: usize,
}

impl Drop for OwnerCall<'_> {
    fn drop(&mut self) {
        let shared = &*self.lanes.shared;
        let state = &shared.owners[self.channel];
        state.call_started_us.store(0, Ordering::Release);
        shared.busy.fetch_sub(1, Ordering::AcqRel);
        if state.armed.swap(false, Ordering::AcqRel) {
            match shared.spares.delete(shared.channel(self.channel)) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(error) => eprintln!("corefn: worker: cannot disarm channel: {error}"),
            }
        }
    }
}

impl Shared {
    fn channel(&self, index: usize) -> BorrowedFd<'_> {
        // SAFETY: the worker owns its channels and outlives its lanes.
        unsafe { BorrowedFd::borrow_raw(self.channel_fds[index]) }
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.created.elapsed().as_micros()).unwrap_or(u64::MAX - 1)
    }
}

fn spare_event(index: usize) -> EpollEvent {
    EpollEvent::new(
        EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE,
        index as u64,
    )
}

/// Puts owner `channel`'s channel into the spares' set (once per call).
fn arm(shared: &Shared, channel: usize) {
    if shared.owners[channel].armed.swap(true, Ordering::AcqRel) {
        return;
    }
    match shared
        .spares
        .add(shared.channel(channel), spare_event(channel))
    {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(error) => {
            shared.owners[channel].armed.store(false, Ordering::Release);
            eprintln!(
                "corefn: worker: cannot arm channel {channel} for the spare threads: {error}"
            );
        }
    }
}

/// The watcher: arms the channel of an owner whose call has run past
/// [`SPILL_AFTER`]; parks when no owner has been busy for [`IDLE_GRACE`].
///
/// While owners are busy it sleeps until the first running call is due, or
/// for [`SPILL_AFTER`] when none is: a call that starts meanwhile is due
/// after the watcher wakes, so it is armed on time without waking the
/// watcher itself (it woke every half of [`SPILL_AFTER`] before, about once
/// per call at 1,000 calls a second).
fn watch(shared: &Shared) {
    let spill_after_us = SPILL_AFTER.as_micros() as u64;
    let mut last_busy = Instant::now();
    while !shared.stop.load(Ordering::Acquire) {
        if shared.busy.load(Ordering::Acquire) > 0 {
            last_busy = Instant::now();
        } else if last_busy.elapsed() >= IDLE_GRACE {
            // Woken by a call's start (or the recheck): the next round sees
            // `busy` and ticks; an idle recheck parks again at once.
            thread::park_timeout(IDLE_RECHECK);
            continue;
        }
        let now_us = shared.now_us();
        let mut wake_at_us = now_us + spill_after_us;
        for (channel, state) in shared.owners.iter().enumerate() {
            let started = state.call_started_us.load(Ordering::Acquire);
            if started == 0 || state.armed.load(Ordering::Acquire) {
                continue;
            }
            let due_us = (started - 1).saturating_add(spill_after_us);
            if due_us <= now_us {
                arm(shared, channel);
            } else {
                wake_at_us = wake_at_us.min(due_us);
            }
        }
        thread::sleep(Duration::from_micros(wake_at_us - now_us));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::epoll::EpollTimeout;
    use nix::sys::socket::{send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
    use std::os::fd::{AsFd, OwnedFd};

    /// (worker end, core end) of a channel with one message waiting.
    fn channel_with_a_message() -> (OwnedFd, OwnedFd) {
        let (worker_end, core_end) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .expect("socketpair");
        send(core_end.as_raw_fd(), b"dispatch", MsgFlags::empty()).expect("send");
        (worker_end, core_end)
    }

    /// Channels the spares would be woken for within `timeout_ms`.
    fn spares_ready(lanes: &Lanes, timeout_ms: u16) -> usize {
        let mut events = [EpollEvent::empty(); 4];
        lanes
            .spares()
            .wait(&mut events, EpollTimeout::from(timeout_ms))
            .expect("epoll_wait")
    }

    #[test]
    fn a_call_not_expected_brief_arms_its_channel_until_it_ends() {
        let (worker_end, _core_end) = channel_with_a_message();
        let lanes = Lanes::new(&[worker_end.as_fd()], 2).expect("lanes");
        assert_eq!(lanes.role(0), Role::Owner(0));
        assert_eq!(lanes.role(1), Role::Spare);
        assert_eq!(
            spares_ready(&lanes, 0),
            0,
            "a waiting owner's channel is its own"
        );
        let call = lanes.begin_call(0, false);
        assert_eq!(spares_ready(&lanes, 0), 1, "armed for the call");
        drop(call);
        assert_eq!(spares_ready(&lanes, 0), 0, "disarmed when it ends");
        let brief = lanes.begin_call(0, true);
        assert_eq!(
            spares_ready(&lanes, 0),
            0,
            "a call expected brief is not armed at once"
        );
        drop(brief);
    }

    #[test]
    fn a_brief_call_that_runs_long_is_armed_by_the_watcher() {
        let (worker_end, _core_end) = channel_with_a_message();
        let lanes = Lanes::new(&[worker_end.as_fd()], 2).expect("lanes");
        let call = lanes.begin_call(0, true);
        assert_eq!(
            spares_ready(&lanes, 5_000),
            1,
            "the watcher arms a call past {SPILL_AFTER:?}"
        );
        drop(call);
        assert_eq!(spares_ready(&lanes, 0), 0);
    }

    #[test]
    fn with_no_more_threads_than_channels_every_thread_is_a_spare_of_every_channel() {
        let (first, _first_core) = channel_with_a_message();
        let (second, _second_core) = channel_with_a_message();
        let lanes = Lanes::new(&[first.as_fd(), second.as_fd()], 2).expect("lanes");
        assert_eq!(lanes.role(0), Role::Spare);
        assert_eq!(lanes.role(1), Role::Spare);
        assert_eq!(spares_ready(&lanes, 0), 2);
        lanes.close(1);
        assert_eq!(
            spares_ready(&lanes, 0),
            1,
            "a closed channel leaves the set"
        );
        assert!(!lanes.all_closed());
        lanes.close(1);
        lanes.close(0);
        assert!(lanes.all_closed(), "closing twice counts once");
    }
}
