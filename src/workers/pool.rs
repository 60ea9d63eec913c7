//! The core side of the worker pool: each core's links to the workers, the
//! choice of a worker, the dispatch of a request with its client socket,
//! and the wait for the worker's completion.
//!
//! Runs on a core executor only; never blocks it (sends are non-blocking,
//! completions arrive on a reader task per link). The choice today is the
//! link with the fewest requests in flight from this core.

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

use super::protocol::{
    self, Completion, DispatchHeader, ProtocolError, COMPLETION_BYTES, INLINE_BODY_BYTES_MAX,
};
use super::supervisor::{LinkInbox, NewLink};
use crate::error::HttpError;

/// Requests one core keeps in flight on one worker at most; past it the
/// core looks for another worker or waits.
pub const IN_FLIGHT_PER_LINK_MAX: u32 = 64;
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
    channel: OwnedFd,
    in_flight: Cell<u32>,
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
    pub head: &'r [u8],
    pub body: &'r [u8],
    pub client: RawFd,
    pub timeout: Duration,
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
}

impl PendingCall {
    fn finish(&self, outcome: Outcome) {
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
    inbox: Arc<LinkInbox>,
    inbox_seen: Cell<u64>,
    links: RefCell<Vec<Rc<WorkerLink>>>,
    pending: RefCell<HashMap<u64, Rc<PendingCall>>>,
    next_request_id: Cell<u64>,
    pick_start: Cell<usize>,
}

impl CoreWorkers {
    pub fn new(core_index: usize, inbox: Arc<LinkInbox>) -> Rc<CoreWorkers> {
        Rc::new(CoreWorkers {
            core_index,
            inbox,
            inbox_seen: Cell::new(0),
            links: RefCell::new(Vec::new()),
            pending: RefCell::new(HashMap::new()),
            next_request_id: Cell::new(1),
            pick_start: Cell::new(core_index),
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
                channel,
                in_flight: Cell::new(0),
                alive: Cell::new(true),
                served: Cell::new(0),
            });
            {
                let mut links = self.links.borrow_mut();
                // A restarted worker replaces its dead predecessor.
                links.retain(|l| l.worker_id != worker_id || l.is_alive());
                links.push(link.clone());
            }
            glommio::spawn_local(read_completions(self.clone(), link, reader_fd)).detach();
        }
    }

    pub fn links(&self) -> Vec<Rc<WorkerLink>> {
        self.links.borrow().clone()
    }

    pub fn has_workers(&self) -> bool {
        !self.links.borrow().is_empty()
    }

    /// The live link with the fewest requests in flight from this core;
    /// ties go round-robin, so that at low load every worker stays warm.
    fn pick(&self) -> Option<Rc<WorkerLink>> {
        let links = self.links.borrow();
        let count = links.len();
        let start = self.pick_start.get();
        self.pick_start.set(start.wrapping_add(1));
        (0..count)
            .map(|i| &links[(start + i) % count])
            .filter(|l| l.is_alive() && l.in_flight() < IN_FLIGHT_PER_LINK_MAX)
            .min_by_key(|l| l.in_flight())
            .cloned()
    }

    /// Sends the request to a worker and waits for its completion.
    pub async fn call(&self, request: CallRequest<'_>) -> Result<Completion, CallError> {
        let request_id = self.next_request_id.get();
        self.next_request_id.set(request_id + 1);

        let memfd = if request.body.len() > INLINE_BODY_BYTES_MAX {
            Some(sealed_memfd(request.body).map_err(|e| {
                CallError::NotSent(HttpError::FunctionFailed(format!(
                    "cannot pass the request body to a worker: {e}"
                )))
            })?)
        } else {
            None
        };
        let mut flags = request.flags;
        if memfd.is_some() {
            flags |= protocol::FLAG_BODY_IN_MEMFD;
        }
        let header = DispatchHeader {
            flags,
            request_id,
            descriptor_len: request.descriptor.len() as u32,
            head_len: request.head.len() as u32,
            body_len: request.body.len() as u64,
        };
        let inline_body = if memfd.is_some() {
            &[][..]
        } else {
            request.body
        };
        let mut link = self.wait_for_link().await?;
        let mut full_channel_retries = 0;
        loop {
            let sent = protocol::send_dispatch(
                link.channel.as_fd(),
                &header,
                request.descriptor,
                request.head,
                inline_body,
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
                    return Err(CallError::NotSent(HttpError::FunctionFailed(format!(
                        "cannot reach worker {}: {error}",
                        link.worker_id
                    ))))
                }
            }
        }
        drop(memfd);

        let pending = Rc::new(PendingCall {
            link: link.clone(),
            outcome: Cell::new(None),
            waker: Cell::new(None),
        });
        self.pending
            .borrow_mut()
            .insert(request_id, pending.clone());
        link.in_flight.set(link.in_flight() + 1);
        let waited = glommio::timer::timeout(request.timeout + COMPLETION_SLACK, async {
            Ok(Wait(pending).await)
        })
        .await;
        self.pending.borrow_mut().remove(&request_id);
        let in_flight = link.in_flight();
        debug_assert!(in_flight > 0, "in-flight count never negative");
        link.in_flight.set(in_flight.saturating_sub(1));
        match waited {
            Ok(Outcome::Completed(completion)) => {
                link.served.set(link.served() + 1);
                Ok(completion)
            }
            Ok(Outcome::WorkerLost) => Err(CallError::WorkerLost),
            Err(_) => Err(CallError::Stuck),
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

async fn read_completions(workers: Rc<CoreWorkers>, link: Rc<WorkerLink>, reader_fd: OwnedFd) {
    // SAFETY: a connected seqpacket socket we own; glommio only reads it.
    // Each read returns exactly one message.
    let mut stream = unsafe { UnixStream::from_raw_fd(reader_fd.into_raw_fd()) };
    let mut buffer = [0u8; COMPLETION_BYTES * 2];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => match Completion::decode(&buffer[..n]) {
                Ok(completion) => {
                    let pending = workers
                        .pending
                        .borrow()
                        .get(&completion.request_id)
                        .cloned();
                    if let Some(pending) = pending {
                        pending.finish(Outcome::Completed(completion));
                    }
                }
                Err(error) => eprintln!(
                    "corefn: core {}: bad completion from worker {}: {error}",
                    workers.core_index, link.worker_id
                ),
            },
        }
    }
    workers.fail_link(&link);
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
