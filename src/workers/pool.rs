//! The core side of the worker pool: each core's links to the workers, the
//! choice of a worker, the dispatch of a request with its client socket,
//! and the wait for the worker's completion.
//!
//! Runs on a core executor only; never blocks it (sends are non-blocking,
//! completions arrive on a reader task per link).
//!
//! The choice: power of two choices. Two random live links are compared on
//! `score + in_flight / threads_per_worker`, where `score` (0..1) comes from
//! the workers' smoothed metrics (see [`crate::scheduler`]) and `in_flight`
//! is what this core itself has sent and not yet seen complete, so a burst
//! between two datagrams still spreads. A worker whose last datagram is
//! older than three intervals is not chosen until it reports again.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::AsyncReadExt;
use glommio::net::UnixStream;
use nix::errno::Errno;
use nix::sys::socket::{recv, MsgFlags};

use super::completion_ring::{self, RingReader};
use super::protocol::{
    self, Completion, DispatchHeader, DispatchParts, ProtocolError, COMPLETION_BYTES,
    INLINE_BODY_BYTES_MAX,
};
use super::supervisor::{LinkInbox, NewLink};
use crate::failure::{Failure, FailureKind};
use crate::http::error::HttpError;
use crate::scheduler::collector::{CoreScores, WorkerScores};

/// Requests one core keeps in flight on one worker at most; past it the
/// core looks for another worker or waits.
pub const IN_FLIGHT_PER_LINK_MAX: u32 = 64;
/// Cost difference below which two workers count as equally loaded.
const COST_TIE: f64 = 0.05;
/// Missed metrics intervals after which a worker is not chosen.
const STALE_INTERVALS: u32 = 3;
/// How long a request may wait for a worker with room before 503.
const WAIT_FOR_WORKER_MAX: Duration = Duration::from_millis(1_000);
const WAIT_FOR_WORKER_STEP: Duration = Duration::from_millis(1);
/// Retries of a dispatch that met a full channel.
const SEND_RETRIES_MAX: u32 = 1_000;
/// The core stops waiting this long after the function's own timeout (the
/// worker enforces the timeout itself; this only catches a stuck worker).
pub const COMPLETION_SLACK: Duration = Duration::from_millis(1_000);

pub struct WorkerLink {
    pub worker_id: usize,
    pub generation: u64,
    pub pid: u32,
    adopted_at: Instant,
    channel: OwnedFd,
    in_flight: Cell<u32>,
    /// Calls sent on it that no completion (nor the worker's loss, nor
    /// their deadline) has settled yet. While there are none, no
    /// completion can come, so its reader waits instead of looking.
    unanswered: Cell<u32>,
    alive: Cell<bool>,
    served: Cell<u64>,
}

impl WorkerLink {
    pub fn in_flight(&self) -> u32 {
        self.in_flight.get()
    }
    pub fn is_alive(&self) -> bool {
        self.alive.get()
    }
    pub fn served(&self) -> u64 {
        self.served.get()
    }
}

/// What a request sends to a worker.
pub struct CallRequest<'r> {
    pub flags: u32,
    pub descriptor: &'r [u8],
    /// The function's name (or the route key): its logs go there.
    pub name: &'r str,
    pub version: u32,
    pub request_id: &'r str,
    pub head: &'r [u8],
    pub body: &'r [u8],
    pub client: RawFd,
    pub timeout: Duration,
}

/// A call's completion and the worker that answered it.
#[derive(Debug, Clone, Copy)]
pub struct Served {
    pub completion: Completion,
    pub worker_id: usize,
}

#[derive(Debug)]
pub enum CallError {
    /// Nothing reached a worker; the gateway still owns the response.
    NotSent(HttpError),
    /// The worker died with the request; it may have written part of a response.
    WorkerLost,
    /// No completion in time: the worker may still write.
    Stuck,
}

enum Outcome {
    Completed(Completion),
    WorkerLost,
}

struct PendingCall {
    link: Rc<WorkerLink>,
    outcome: Cell<Option<Outcome>>,
    waker: Cell<Option<Waker>>,
    /// Counted out of its link's `unanswered` (once, whichever way).
    settled: Cell<bool>,
}

impl PendingCall {
    fn new(link: Rc<WorkerLink>) -> PendingCall {
        link.unanswered.set(link.unanswered.get() + 1);
        PendingCall {
            link,
            outcome: Cell::new(None),
            waker: Cell::new(None),
            settled: Cell::new(false),
        }
    }

    /// The call needs no completion any more.
    fn settle(&self) {
        if !self.settled.replace(true) {
            let unanswered = self.link.unanswered.get();
            debug_assert!(unanswered > 0, "each call is counted in once");
            self.link.unanswered.set(unanswered.saturating_sub(1));
        }
    }

    fn finish(&self, outcome: Outcome) {
        self.settle();
        self.outcome.set(Some(outcome));
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

struct Wait(Rc<PendingCall>);

impl Future for Wait {
    type Output = Outcome;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        match self.0.outcome.take() {
            Some(outcome) => Poll::Ready(outcome),
            None => {
                self.0.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        }
    }
}

pub struct CoreWorkers {
    core_index: usize,
    pub scores: CoreScores,
    threads_per_worker: u32,
    /// A link whose worker has not reported for this long is skipped.
    stale_after: Duration,
    random_state: Cell<u64>,
    inbox: Arc<LinkInbox>,
    inbox_seen: Cell<u64>,
    links: RefCell<Vec<Rc<WorkerLink>>>,
    pending: RefCell<HashMap<u64, Rc<PendingCall>>>,
    next_call_id: Cell<u64>,
}

impl CoreWorkers {
    pub fn new(
        core_index: usize,
        inbox: Arc<LinkInbox>,
        scores: CoreScores,
        threads_per_worker: u32,
        metrics_interval: Duration,
    ) -> Rc<CoreWorkers> {
        Rc::new(CoreWorkers {
            core_index,
            scores,
            threads_per_worker: threads_per_worker.max(1),
            stale_after: metrics_interval * STALE_INTERVALS,
            random_state: Cell::new(0x9E37_79B9_7F4A_7C15 ^ (core_index as u64 + 1)),
            inbox,
            inbox_seen: Cell::new(0),
            links: RefCell::new(Vec::new()),
            pending: RefCell::new(HashMap::new()),
            next_call_id: Cell::new(1),
        })
    }

    /// Housekeeping: adopt links from (re)started workers; each gets a
    /// reader task for its completions.
    pub fn adopt_new_links(self: &Rc<Self>) {
        let mut seen = self.inbox_seen.get();
        let new_links = self.inbox.take_new(&mut seen);
        self.inbox_seen.set(seen);
        for NewLink {
            worker_id,
            generation,
            pid,
            channel,
            completions,
        } in new_links
        {
            let reader_fd = match channel.try_clone() {
                Ok(fd) => fd,
                Err(error) => {
                    eprintln!(
                        "corefn: core {}: cannot adopt worker {worker_id}: {error}",
                        self.core_index
                    );
                    continue;
                }
            };
            let link = Rc::new(WorkerLink {
                worker_id,
                generation,
                pid,
                adopted_at: Instant::now(),
                channel,
                in_flight: Cell::new(0),
                unanswered: Cell::new(0),
                alive: Cell::new(true),
                served: Cell::new(0),
            });
            {
                let mut links = self.links.borrow_mut();
                // A restarted worker replaces its dead predecessor.
                links.retain(|l| l.worker_id != worker_id || l.is_alive());
                links.push(link.clone());
            }
            let ring = completions.map(RingReader::new);
            glommio::spawn_local(read_completions(self.clone(), link, reader_fd, ring)).detach();
        }
    }

    fn deliver(&self, message: &[u8], link: &WorkerLink) {
        match Completion::decode(message) {
            Ok(completion) => {
                if completion.worker_retiring() {
                    // Its in-flight calls fail when its channel closes.
                    link.alive.set(false);
                }
                if completion.status == protocol::COMPLETION_STATUS_NONE {
                    return;
                }
                debug_assert!(
                    completion.call_id < self.next_call_id.get(),
                    "a completion names a request this core sent"
                );
                // None: the call gave up waiting (stuck) before it came.
                let pending = self.pending.borrow().get(&completion.call_id).cloned();
                if let Some(pending) = pending {
                    if !std::ptr::eq(Rc::as_ptr(&pending.link), link) {
                        debug_assert!(false, "completion from the worker the call went to");
                        eprintln!(
                            "corefn: core {}: worker {} completed request {} that went to another worker; ignored",
                            self.core_index, link.worker_id, completion.call_id
                        );
                        return;
                    }
                    pending.finish(Outcome::Completed(completion));
                }
            }
            Err(error) => eprintln!(
                "corefn: core {}: bad completion from worker {}: {error}",
                self.core_index, link.worker_id
            ),
        }
    }

    pub fn links(&self) -> Vec<Rc<WorkerLink>> {
        self.links.borrow().clone()
    }

    pub fn has_workers(&self) -> bool {
        !self.links.borrow().is_empty()
    }

    /// Power of two choices among the eligible links (see the module doc).
    /// When every live worker is silent (a starved collector, say), silence
    /// says nothing about any one of them: the choice then ignores it.
    fn pick(&self) -> Option<Rc<WorkerLink>> {
        let scores = self.scores.get();
        let now = Instant::now();
        self.pick_among(&scores, |link| self.is_eligible(link, &scores, now))
            .or_else(|| {
                self.pick_among(&scores, |link| {
                    link.is_alive() && link.in_flight() < IN_FLIGHT_PER_LINK_MAX
                })
            })
    }

    fn pick_among(
        &self,
        scores: &WorkerScores,
        eligible_if: impl Fn(&WorkerLink) -> bool,
    ) -> Option<Rc<WorkerLink>> {
        let links = self.links.borrow();
        let mut eligible: [Option<&Rc<WorkerLink>>; 2] = [None, None];
        let mut seen = 0u64;
        // Reservoir-sample two distinct eligible links in one pass.
        for link in links.iter() {
            if !eligible_if(link) {
                continue;
            }
            seen += 1;
            if seen <= 2 {
                eligible[(seen - 1) as usize] = Some(link);
            } else {
                let slot = self.next_random() % seen;
                if slot < 2 {
                    eligible[slot as usize] = Some(link);
                }
            }
        }
        match eligible {
            [Some(a), Some(b)] => {
                let (cost_a, cost_b) = (self.cost(a, scores), self.cost(b, scores));
                // Costs this close are a tie (idle workers differ by noise);
                // ties go either way, so that at low load every worker stays warm.
                let prefer_a = if (cost_a - cost_b).abs() < COST_TIE {
                    self.next_random() & 1 == 0
                } else {
                    cost_a < cost_b
                };
                Some(if prefer_a { a } else { b }.clone())
            }
            [Some(a), None] => Some(a.clone()),
            _ => None,
        }
    }

    fn is_eligible(&self, link: &WorkerLink, scores: &WorkerScores, now: Instant) -> bool {
        link.is_alive()
            && link.in_flight() < IN_FLIGHT_PER_LINK_MAX
            && self.is_fresh(link, scores, now)
    }

    /// Heard from within the stale limit (counting from adoption, so a
    /// worker that just started is not skipped before its first datagram).
    pub fn is_fresh(&self, link: &WorkerLink, scores: &WorkerScores, now: Instant) -> bool {
        let last_heard = scores
            .of(link.worker_id, link.pid)
            .map_or(link.adopted_at, |s| s.last_report.max(link.adopted_at));
        now.saturating_duration_since(last_heard) <= self.stale_after
    }

    fn cost(&self, link: &WorkerLink, scores: &WorkerScores) -> f64 {
        let score = scores.of(link.worker_id, link.pid).map_or(0.0, |s| s.score);
        score + f64::from(link.in_flight()) / f64::from(self.threads_per_worker)
    }

    /// xorshift64: cheap, per core, good enough to break ties and sample.
    fn next_random(&self) -> u64 {
        let mut x = self.random_state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.random_state.set(x);
        x
    }

    /// Sends the request to a worker and waits for its completion.
    pub async fn call(&self, request: CallRequest<'_>) -> Result<Served, CallError> {
        let call_id = self.next_call_id.get();
        self.next_call_id.set(call_id + 1);

        let memfd = if request.body.len() > INLINE_BODY_BYTES_MAX {
            Some(sealed_memfd(request.body).map_err(|e| {
                CallError::NotSent(HttpError::Function(Failure::new(
                    FailureKind::Internal,
                    format_args!("cannot pass the request body to a worker: {e}"),
                )))
            })?)
        } else {
            None
        };
        let mut flags = request.flags;
        if memfd.is_some() {
            flags |= protocol::FLAG_BODY_IN_MEMFD;
        }
        let inline_body = if memfd.is_some() {
            &[][..]
        } else {
            request.body
        };
        let parts = DispatchParts {
            descriptor: request.descriptor,
            name: request.name,
            request_id: request.request_id,
            head: request.head,
            inline_body,
        };
        let header = DispatchHeader::for_parts(
            flags,
            call_id,
            request.version,
            &parts,
            request.body.len() as u64,
        );
        let mut link = self.wait_for_link().await?;
        let mut full_channel_retries = 0;
        loop {
            let sent = protocol::send_dispatch(
                link.channel.as_fd(),
                &header,
                &parts,
                request.client,
                memfd.as_ref().map(|fd| fd.as_raw_fd()),
            );
            match sent {
                Ok(()) => break,
                Err(ProtocolError::Socket(Errno::EAGAIN))
                    if full_channel_retries < SEND_RETRIES_MAX =>
                {
                    full_channel_retries += 1;
                    glommio::timer::sleep(WAIT_FOR_WORKER_STEP).await;
                }
                Err(ProtocolError::Socket(
                    Errno::EPIPE | Errno::ECONNRESET | Errno::ECONNREFUSED,
                )) => {
                    // The worker is gone and its reader has not noticed yet:
                    // nothing was sent, so another worker can take it.
                    self.fail_link(&link);
                    link = self.wait_for_link().await?;
                }
                Err(error) => {
                    return Err(CallError::NotSent(HttpError::Function(Failure::new(
                        FailureKind::Internal,
                        format_args!("cannot reach worker {}: {error}", link.worker_id),
                    ))))
                }
            }
        }
        drop(memfd);

        let pending = Rc::new(PendingCall::new(link.clone()));
        self.pending.borrow_mut().insert(call_id, pending.clone());
        debug_assert!(
            link.in_flight() < IN_FLIGHT_PER_LINK_MAX,
            "the choice only takes links with room"
        );
        link.in_flight.set(link.in_flight() + 1);
        let waited = glommio::timer::timeout(request.timeout + COMPLETION_SLACK, async {
            Ok(Wait(pending).await)
        })
        .await;
        if let Some(pending) = self.pending.borrow_mut().remove(&call_id) {
            // Past its deadline: a completion that comes now is ignored.
            pending.settle();
        }
        let in_flight = link.in_flight();
        debug_assert!(in_flight > 0, "in-flight count never negative");
        link.in_flight.set(in_flight.saturating_sub(1));
        match waited {
            Ok(Outcome::Completed(completion)) => {
                link.served.set(link.served() + 1);
                Ok(Served {
                    completion,
                    worker_id: link.worker_id,
                })
            }
            Ok(Outcome::WorkerLost) => Err(CallError::WorkerLost),
            Err(_) => {
                eprintln!(
                    "corefn: core {}: worker {} (pid {}) did not complete request {call_id} in time",
                    self.core_index, link.worker_id, link.pid
                );
                Err(CallError::Stuck)
            }
        }
    }

    async fn wait_for_link(&self) -> Result<Rc<WorkerLink>, CallError> {
        let started = Instant::now();
        loop {
            if let Some(link) = self.pick() {
                return Ok(link);
            }
            if started.elapsed() >= WAIT_FOR_WORKER_MAX {
                return Err(CallError::NotSent(HttpError::NoWorkerAvailable {
                    waited_ms: WAIT_FOR_WORKER_MAX.as_millis() as u64,
                }));
            }
            glommio::timer::sleep(WAIT_FOR_WORKER_STEP).await;
        }
    }

    fn fail_link(&self, link: &Rc<WorkerLink>) {
        link.alive.set(false);
        let lost: Vec<Rc<PendingCall>> = self
            .pending
            .borrow()
            .values()
            .filter(|p| Rc::ptr_eq(&p.link, link))
            .cloned()
            .collect();
        for pending in lost {
            pending.finish(Outcome::WorkerLost);
        }
    }
}

/// A link's completions until its channel closes, then the link's end:
/// from the ring when the link has one ([`read_ring_completions`]), else
/// from the channel, one message each.
async fn read_completions(
    workers: Rc<CoreWorkers>,
    link: Rc<WorkerLink>,
    reader_fd: OwnedFd,
    ring: Option<RingReader>,
) {
    match ring {
        Some(ring) => read_ring_completions(&workers, &link, reader_fd, &ring).await,
        None => {
            // SAFETY: a connected seqpacket socket we own; glommio only
            // reads it. Each read returns exactly one message.
            let mut stream = unsafe { UnixStream::from_raw_fd(reader_fd.into_raw_fd()) };
            let mut buffer = [0u8; COMPLETION_BYTES * 2];
            while let Ok(n @ 1..) = stream.read(&mut buffer).await {
                workers.deliver(&buffer[..n], &link);
            }
        }
    }
    workers.fail_link(&link);
}

/// A ringed link: completions from the ring while it has any and, while
/// calls on the link are unanswered, for [`completion_ring::CORE_SPIN`]
/// after the last, yielding to the core's other tasks in between; then,
/// the doorbell asked for, from the channel: a completion message (a full
/// ring's, or a notice), or a doorbell that says to look at the ring
/// again. While the ring keeps it busy, the
/// channel is still read every [`completion_ring::CHANNEL_LOOK_EVERY`].
/// Returns once the channel has closed and the ring has been emptied.
async fn read_ring_completions(
    workers: &CoreWorkers,
    link: &WorkerLink,
    reader_fd: OwnedFd,
    ring: &RingReader,
) {
    // Read without waiting, between glommio's reads (never during one):
    // the stream below owns it for as long as this function runs.
    let channel_fd = reader_fd.as_raw_fd();
    // SAFETY: a connected seqpacket socket we own; glommio only reads it.
    // Each read returns exactly one message.
    let mut stream = unsafe { UnixStream::from_raw_fd(reader_fd.into_raw_fd()) };
    let mut buffer = [0u8; COMPLETION_BYTES * 2];
    let on_message = |message: &[u8]| {
        if message != completion_ring::DOORBELL {
            workers.deliver(message, link);
        }
    };
    // What is on the channel now (bounded); false once it has closed.
    let look_at_channel = |buffer: &mut [u8]| {
        for _ in 0..completion_ring::SLOTS {
            match recv(channel_fd, buffer, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => return false,
                Ok(n) => on_message(&buffer[..n]),
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return true,
                Err(_) => return false,
            }
        }
        true
    };
    let take_all = || {
        // Bounded: a worker cannot keep the core here.
        let mut taken = 0;
        while taken < completion_ring::SLOTS {
            let Some(completion) = ring.take() else { break };
            workers.deliver(&completion, link);
            taken += 1;
        }
        taken
    };
    let mut channel_looked_at = Instant::now();
    let mut empty_since: Option<Instant> = None;
    loop {
        if channel_looked_at.elapsed() >= completion_ring::CHANNEL_LOOK_EVERY {
            channel_looked_at = Instant::now();
            if !look_at_channel(&mut buffer) {
                break;
            }
        }
        if take_all() > 0 {
            empty_since = None;
            glommio::executor().yield_task_queue_now().await;
            continue;
        }
        // With no call unanswered, no completion can come: looking on would
        // only burn the core (each light-load call paid the whole spin).
        let since = *empty_since.get_or_insert_with(Instant::now);
        if link.unanswered.get() > 0 && since.elapsed() < completion_ring::CORE_SPIN {
            glommio::executor().yield_task_queue_now().await;
            continue;
        }
        if !ring.wait_begins() {
            ring.awake();
            continue;
        }
        let read = stream.read(&mut buffer).await;
        ring.awake();
        empty_since = None;
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => on_message(&buffer[..n]),
        }
    }
    // What the worker put in the ring before its channel closed counts.
    take_all();
}

/// A memfd holding `body`, sealed so the worker reads exactly what we wrote.
fn sealed_memfd(body: &[u8]) -> std::io::Result<OwnedFd> {
    let memfd = memfd::MemfdOptions::default()
        .close_on_exec(true)
        .allow_sealing(true)
        .create("corefn-body")
        .map_err(std::io::Error::other)?;
    memfd.as_file().write_all(body)?;
    memfd
        .add_seals(&[
            memfd::FileSeal::SealShrink,
            memfd::FileSeal::SealGrow,
            memfd::FileSeal::SealWrite,
            memfd::FileSeal::SealSeal,
        ])
        .map_err(std::io::Error::other)?;
    // The worker reads from the start through its own descriptor.
    Ok(OwnedFd::from(memfd.into_file()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::collector::ScoreBoard;
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

    /// A pool with `n` links whose peers are returned (kept open).
    fn pool_with_links(n: usize, adopted_ago: Duration) -> (Rc<CoreWorkers>, Vec<OwnedFd>) {
        let workers = CoreWorkers::new(
            0,
            Arc::default(),
            CoreScores::new(Arc::new(ScoreBoard::new(WorkerScores::default()))),
            4,
            Duration::from_millis(500),
        );
        let mut peers = Vec::new();
        for worker_id in 0..n {
            let (channel, peer) = socketpair(
                AddressFamily::Unix,
                SockType::SeqPacket,
                None,
                SockFlag::SOCK_CLOEXEC,
            )
            .expect("socketpair");
            peers.push(peer);
            workers.links.borrow_mut().push(Rc::new(WorkerLink {
                worker_id,
                generation: 1,
                pid: 1000 + worker_id as u32,
                adopted_at: Instant::now() - adopted_ago,
                channel,
                in_flight: Cell::new(0),
                unanswered: Cell::new(0),
                alive: Cell::new(true),
                served: Cell::new(0),
            }));
        }
        (workers, peers)
    }

    #[test]
    fn a_call_is_unanswered_until_it_is_settled_once_whichever_way() {
        let (workers, _peers) = pool_with_links(1, Duration::ZERO);
        let link = workers.links()[0].clone();
        let calls: Vec<Rc<PendingCall>> = (1..=3)
            .map(|call_id| {
                let pending = Rc::new(PendingCall::new(link.clone()));
                workers
                    .pending
                    .borrow_mut()
                    .insert(call_id, pending.clone());
                pending
            })
            .collect();
        workers.next_call_id.set(4);
        assert_eq!(link.unanswered.get(), 3);
        let completion = Completion {
            status: 200,
            flags: 0,
            call_id: 1,
            body_bytes: 0,
            duration_us: 0,
            failure: None,
            memory_kb_peak: 0,
            written_bytes: 0,
        };
        workers.deliver(&completion.encode(), &link);
        assert_eq!(link.unanswered.get(), 2, "a completion settles its call");
        calls[0].settle();
        assert_eq!(
            link.unanswered.get(),
            2,
            "its waiter settling it again counts nothing"
        );
        calls[1].settle();
        assert_eq!(
            link.unanswered.get(),
            1,
            "a call past its deadline is settled"
        );
        workers.fail_link(&link);
        assert_eq!(link.unanswered.get(), 0, "a lost worker settles the rest");
        calls[2].settle();
        assert_eq!(link.unanswered.get(), 0);
    }

    #[test]
    fn busier_link_loses_and_ties_spread() {
        let (workers, _peers) = pool_with_links(2, Duration::ZERO);
        workers.links.borrow()[0].in_flight.set(3);
        for _ in 0..100 {
            let picked = workers.pick().expect("a link");
            assert_eq!(picked.worker_id, 1, "the link with less in flight wins");
        }
        workers.links.borrow()[0].in_flight.set(0);
        let mut counts = [0; 2];
        for _ in 0..1000 {
            counts[workers.pick().expect("a link").worker_id] += 1;
        }
        assert!(
            counts[0] > 300 && counts[1] > 300,
            "ties spread: {counts:?}"
        );
    }

    #[test]
    fn silent_and_dead_links_are_not_chosen() {
        // Adopted 2 s ago and never reported: stale with a 500 ms interval;
        // a fresh one next to them is the only choice.
        let (workers, _peers) = pool_with_links(3, Duration::from_secs(2));
        let fresh = workers.links.borrow()[2].clone();
        let fresh = Rc::new(WorkerLink {
            adopted_at: Instant::now(),
            channel: fresh.channel.try_clone().expect("dup"),
            worker_id: 2,
            generation: 1,
            pid: fresh.pid,
            in_flight: Cell::new(0),
            unanswered: Cell::new(0),
            alive: Cell::new(true),
            served: Cell::new(0),
        });
        workers.links.borrow_mut()[2] = fresh;
        for _ in 0..50 {
            assert_eq!(workers.pick().expect("a link").worker_id, 2);
        }
        // All silent: silence no longer decides.
        let (workers, _peers) = pool_with_links(2, Duration::from_secs(2));
        assert!(workers.pick().is_some());
        let (workers, _peers) = pool_with_links(2, Duration::ZERO);
        workers.links.borrow()[0].alive.set(false);
        for _ in 0..50 {
            assert_eq!(workers.pick().expect("a link").worker_id, 1);
        }
    }

    /// `cargo test --release --lib bench_pick_cost -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn bench_pick_cost() {
        for links in [2, 8, 32] {
            let (workers, _peers) = pool_with_links(links, Duration::ZERO);
            let rounds = 1_000_000;
            let started = Instant::now();
            let mut checksum = 0usize;
            for _ in 0..rounds {
                checksum += workers.pick().map_or(0, |l| l.worker_id);
            }
            let ns = started.elapsed().as_nanos() as f64 / f64::from(rounds);
            eprintln!("pick among {links} links: {ns:.1} ns (checksum {checksum})");
        }
    }
}
