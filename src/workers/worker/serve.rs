//! One worker thread's loop and one dispatch's life: receive, decode the
//! request, invoke the runtime, write the response to the client, report
//! the completion to the core.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{send, MsgFlags};

use super::{Worker, DRAINING};
use crate::clock;
use crate::failure::{Failure, FailureKind};
use crate::http::error::HttpError;
use crate::http::rules::HEADER_COUNT_MAX;
use crate::runtimes::cgi::CgiRequest;
use crate::runtimes::invoke::{Invocation, Reply};
use crate::runtimes::native::OnExpiry;
use crate::workers::protocol::{
    self, Completion, Dispatch, ProtocolError, COMPLETION_CONNECTION_BROKEN,
    COMPLETION_STATUS_NONE, COMPLETION_WORKER_RETIRING, DISPATCH_BYTES_MAX, FLAG_HTTP10,
};

/// How often an idle thread wakes up to notice that the gateway is gone.
const POLL_TIMEOUT_MS: u16 = 1000;
/// How long the cores get to take in a retiring worker's notice before the
/// client that caused it gets its answer.
const RETIRING_NOTICE_LEAD: Duration = Duration::from_millis(20);

impl Worker {
    /// One thread's loop; returns when every channel is closed (the gateway
    /// is gone). Each thread has its own epoll set with every channel added
    /// EPOLLEXCLUSIVE, so a dispatch wakes one idle thread rather than all
    /// of them, and takes one dispatch per wake-up so that a burst spreads
    /// over the threads.
    pub(super) fn serve_channels(&self) {
        let Ok(epoll) = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC) else {
            eprintln!(
                "corefn: worker {}: cannot create epoll",
                self.identity.worker_id
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
                    self.identity.worker_id
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
                    self.identity.worker_id
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
        let written = protocol::write_to_client(dispatch.client.as_fd(), &response);
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
                self.identity.worker_id
            );
        }
        // Off the request's path: the client and the core have their answer.
        self.runtimes.maintain();
    }

    /// Renders the whole response for one dispatch; returns its status.
    fn respond(&self, channel: BorrowedFd<'_>, dispatch: &Dispatch<'_>, out: &mut Vec<u8>) -> u16 {
        let header = &dispatch.header;
        let head_only = header.head_only();
        let result = self.run_function(channel, dispatch);
        // Decided after the run: the gateway may have started draining.
        let connection = header.connection(DRAINING.load(Ordering::Relaxed));
        let date_line = clock::date_line(clock::unix_now_secs());
        match result {
            Ok(reply) => {
                reply
                    .response
                    .write_http(&reply.bytes, out, &date_line, connection, head_only);
                reply.response.status
            }
            Err(error) => {
                error.render(out, &date_line, connection, head_only);
                error.status()
            }
        }
    }

    /// Decodes the dispatch into the runtime's request and invokes it.
    fn run_function(
        &self,
        channel: BorrowedFd<'_>,
        dispatch: &Dispatch<'_>,
    ) -> Result<Reply, HttpError> {
        let descriptor = self.descriptor(dispatch.descriptor)?;
        let body_from_memfd;
        let body: &[u8] = match &dispatch.body_memfd {
            Some(memfd) => {
                body_from_memfd = protocol::read_body_memfd(memfd, dispatch.header.body_len)
                    .map_err(|e| {
                        Failure::new(
                            FailureKind::Internal,
                            format_args!("cannot read request body: {e}"),
                        )
                    })?;
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
        let module = descriptor.module.as_deref().unwrap_or_default();
        let on_native_expiry =
            || self.on_native_timeout(channel, dispatch, module, descriptor.timeout_ms);
        let reply = self.runtimes.invoke(&Invocation {
            descriptor: &descriptor,
            request: &cgi_request,
            body,
            on_native_expiry: &on_native_expiry,
        })?;
        Ok(reply)
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
    ) -> OnExpiry {
        let client_fd = dispatch.client.as_raw_fd();
        let channel_fd = channel.as_raw_fd();
        let all_channel_fds: Vec<RawFd> = self.channels.iter().map(AsRawFd::as_raw_fd).collect();
        let header = dispatch.header;
        let worker_id = self.identity.worker_id;
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
            let error = HttpError::Function(Failure::timeout(timeout_ms));
            let mut out = Vec::with_capacity(256);
            let date_line = clock::date_line(clock::unix_now_secs());
            let head_only = header.head_only();
            error.render(
                &mut out,
                &date_line,
                header.connection(DRAINING.load(Ordering::Relaxed)),
                head_only,
            );
            // SAFETY: the dispatch owning the descriptor outlives this: its
            // thread is blocked in the native call until the process ends.
            let client = unsafe { BorrowedFd::borrow_raw(client_fd) };
            let written = protocol::write_to_client(client, &out);
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
}
