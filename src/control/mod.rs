//! The control plane: one thread that answers the API under `/_/api/v1/`.
//! A core hands such a request over exactly as it hands a function call
//! to a worker (the dispatch protocol over a seqpacket channel per core,
//! with the client socket), so the core never waits for SQLite, a file or
//! a compiler; this thread writes the response to the client itself and
//! reports completion, and the core goes on with the connection.
//!
//! Changes reach the data plane only through the route table: the thread
//! commits, the watcher publishes, like a change made with the sqlite3
//! shell. Requests are served one at a time (compiles are bounded in
//! number by that, and in time by `--compile-timeout-ms`).
//!
//! * [`api`]: routing, auth and the JSON of each endpoint.
//! * [`observe`]: stats windows and the `/metrics` view, read from the
//!   cores' telemetry shards and the scheduler's boards.
//! * [`cron`]: the thread that fires cron schedules through the gateway.
//! * [`invocations`]: the async queue's intake (group commit), dispatcher
//!   and runners.
//! * [`loopback`]: the HTTP client those two call the gateway with.
//! * [`settings`]: the control plane's flags.

pub mod api;
pub mod cron;
mod follow;
pub mod invocations;
pub mod loopback;
pub mod observe;
pub mod settings;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};

use crate::http::error::{ApiError, ApiErrorKind};
use crate::registry::artifacts::ArtifactStore;
use crate::schema::file::SharedStore;
use crate::workers::protocol::{
    self, Completion, DispatchHeader, ProtocolError, Received, COMPLETION_CONNECTION_BROKEN,
    COMPLETION_CONNECTION_TAKEN, DISPATCH_BYTES_MAX,
};
use crate::workers::supervisor::{LinkInbox, NewLink};
use settings::ControlSettings;

/// The id the control plane's link carries on every core.
pub const CONTROL_LINK_ID: usize = 0;

/// Starts the control thread with one channel to each core (handed over
/// through the cores' `inboxes`, as worker links are).
pub fn start(
    db: &Arc<SharedStore>,
    settings: &ControlSettings,
    inboxes: &[Arc<LinkInbox>],
    observed: observe::Observed,
) -> std::io::Result<JoinHandle<()>> {
    let mut channels = Vec::with_capacity(inboxes.len());
    for inbox in inboxes {
        let (core_end, control_end) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        fcntl(&core_end, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        inbox.push(NewLink {
            worker_id: CONTROL_LINK_ID,
            generation: 1,
            pid: std::process::id(),
            channel: core_end,
            // One call at a time: nothing for a ring to save.
            completions: None,
        });
        channels.push(control_end);
    }
    let store = ArtifactStore::open(&settings.store_dir)?;
    let routes = observed.routes.clone();
    let mut state = api::ControlState::open(db, store, settings, observed)?;
    let intake_channels = channels
        .iter()
        .map(|c| c.try_clone())
        .collect::<std::io::Result<Vec<_>>>()?;
    let intake = invocations::start(
        invocations::AsyncSettings {
            store: db.clone(),
            gateway: settings.gateway.ok_or_else(|| {
                std::io::Error::other("the control plane needs the gateway's address")
            })?,
            queue_max: settings.async_queue_max,
            runners: settings.async_runners,
            callback_hosts: settings.callback_allow_host.clone(),
            routes,
        },
        intake_channels,
    )?;
    thread::Builder::new()
        .name("corefn-control".into())
        .spawn(move || serve(&channels, &mut state, &intake))
}

/// Writes `response` to the client of a dispatch and reports its
/// completion on `channel`: the end of every dispatch the control plane
/// answers (streams keep the socket and say so in `flags`).
fn reply(
    channel: BorrowedFd<'_>,
    client: BorrowedFd<'_>,
    header: &DispatchHeader,
    status: u16,
    response: &[u8],
    started: Instant,
) {
    let written = protocol::write_to_client(client, response);
    let flags = if written.is_err() {
        COMPLETION_CONNECTION_BROKEN
    } else {
        0
    };
    report(
        channel,
        header,
        status,
        flags,
        response,
        written.unwrap_or(0),
        started,
    );
}

fn report(
    channel: BorrowedFd<'_>,
    header: &DispatchHeader,
    status: u16,
    flags: u16,
    response: &[u8],
    written: usize,
    started: Instant,
) {
    let completion = Completion {
        status,
        flags,
        call_id: header.call_id,
        body_bytes: protocol::body_bytes_written(response, written),
        duration_us: started.elapsed().as_micros() as u64,
        failure: None,
        memory_kb_peak: 0,
        written_bytes: written as u64,
    };
    if let Err(error) = send(
        channel.as_raw_fd(),
        &completion.encode(),
        MsgFlags::MSG_NOSIGNAL,
    ) {
        eprintln!("corefn: control plane: cannot report completion: {error}");
    }
}

/// Serves dispatches until every core's channel has closed.
fn serve(channels: &[OwnedFd], state: &mut api::ControlState, intake: &invocations::Intake) {
    let Ok(epoll) = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC) else {
        eprintln!("corefn: control plane: cannot create epoll");
        return;
    };
    for (index, channel) in channels.iter().enumerate() {
        if let Err(error) = epoll.add(
            channel.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, index as u64),
        ) {
            eprintln!("corefn: control plane: cannot watch channel {index}: {error}");
            return;
        }
    }
    let mut open = channels.len();
    let mut buffer = vec![0u8; DISPATCH_BYTES_MAX];
    let mut events = [EpollEvent::empty(); 4];
    while open > 0 {
        let ready = match epoll.wait(&mut events, EpollTimeout::NONE) {
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(_) => return,
        };
        for event in &events[..ready] {
            let index = event.data() as usize;
            let channel = channels[index].as_fd();
            match protocol::recv_dispatch(channel, &mut buffer, protocol::RecvMode::DontWait) {
                Ok(Received::Cut(cut)) => {
                    let failure = cut.failure();
                    eprintln!("corefn: control plane: bad dispatch on channel {index}: {failure}");
                    let error = ApiError::new(ApiErrorKind::Internal, &failure);
                    let status = error.status();
                    let bytes = api::json_response(&cut.header, "", status, &error.to_json(), &[]);
                    match &cut.client {
                        Some(client) => reply(
                            channel,
                            client.as_fd(),
                            &cut.header,
                            status,
                            &bytes,
                            Instant::now(),
                        ),
                        // No socket to answer: the core still gets its
                        // completion (and closes the connection).
                        None => report(
                            channel,
                            &cut.header,
                            status,
                            COMPLETION_CONNECTION_BROKEN,
                            &bytes,
                            0,
                            Instant::now(),
                        ),
                    }
                }
                Ok(Received::Dispatch(dispatch)) => {
                    let started = Instant::now();
                    let mut response = state.respond(&dispatch);
                    let header = dispatch.header;
                    if let Some(invocation) = response.enqueue.take() {
                        // The intake thread answers once the row is on disk.
                        let accepted = invocations::Accepted {
                            invocation,
                            client: dispatch.client,
                            channel: index,
                            header,
                            request_id: dispatch.request_id.to_string(),
                            started,
                        };
                        if let Err(accepted) = intake.offer(accepted) {
                            let gone = ApiError::new(
                                ApiErrorKind::Unavailable,
                                "the async queue is not running",
                            );
                            let bytes = api::json_response(
                                &header,
                                &accepted.request_id,
                                gone.status(),
                                &gone.to_json(),
                                &[],
                            );
                            reply(
                                channel,
                                accepted.client.as_fd(),
                                &header,
                                gone.status(),
                                &bytes,
                                started,
                            );
                        }
                        continue;
                    }
                    let written =
                        protocol::write_to_client(dispatch.client.as_fd(), &response.bytes);
                    let mut flags = 0;
                    if written.is_err() {
                        flags |= COMPLETION_CONNECTION_BROKEN;
                    } else if let Some(follower) = response.follower {
                        match dispatch
                            .client
                            .try_clone()
                            .and_then(|client| follow::spawn(client, follower))
                        {
                            Ok(()) => flags |= COMPLETION_CONNECTION_TAKEN,
                            Err(error) => {
                                eprintln!("corefn: control plane: cannot follow a log: {error}");
                                flags |= COMPLETION_CONNECTION_BROKEN;
                            }
                        }
                    }
                    drop(dispatch.client);
                    report(
                        channel,
                        &header,
                        response.status,
                        flags,
                        &response.bytes,
                        written.unwrap_or(0),
                        started,
                    );
                }
                Err(ProtocolError::Socket(Errno::EAGAIN)) => {}
                Err(ProtocolError::Closed) => {
                    let _ = epoll.delete(channel);
                    open -= 1;
                }
                Err(error) => {
                    eprintln!("corefn: control plane: bad dispatch on channel {index}: {error}")
                }
            }
        }
    }
}
