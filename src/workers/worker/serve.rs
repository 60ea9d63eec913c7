//! One worker thread's loop and one dispatch's life: receive, decode the
//! request, invoke the runtime, write the response to the client, report
//! the completion to the core.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{EpollEvent, EpollTimeout};
use nix::sys::socket::{send, MsgFlags};

use super::lanes::Role;
use super::{CachedDescriptor, Worker, DRAINING};
use crate::clock;
use crate::failure::{Failure, FailureKind};
use crate::http::encode::HeadLines;
use crate::http::error::HttpError;
use crate::http::rules::{HEADER_COUNT_MAX, REQUEST_ID_HEADER};
use crate::runtimes::cgi::CgiRequest;
use crate::runtimes::descriptor::Descriptor;
use crate::runtimes::invoke::{CallReport, Invocation, Reply};
use crate::runtimes::native::OnExpiry;
use crate::telemetry::logs::{lines_from_output, LineRef, LogLine, Stream};
use crate::workers::completion_ring::{Pushed, DOORBELL};
use crate::workers::protocol::{
    self, Completion, CutDispatch, Dispatch, ProtocolError, Received, RecvMode,
    COMPLETION_COLD_START, COMPLETION_CONNECTION_BROKEN, COMPLETION_STATUS_NONE,
    COMPLETION_WORKER_RETIRING, DISPATCH_BYTES_MAX, FLAG_HTTP10,
};

/// How often an idle thread wakes up to notice that the gateway is gone.
const POLL_TIMEOUT_MS: u16 = 1000;
/// How long the cores get to take in a retiring worker's notice before the
/// client that caused it gets its answer.
const RETIRING_NOTICE_LEAD: Duration = Duration::from_millis(20);

impl Worker {
    /// Thread `index`'s loop (its role is the lanes', see [`super::lanes`]);
    /// returns when every channel is closed (the gateway is gone).
    pub(super) fn serve_thread(&self, index: usize) {
        match self.lanes.role(index) {
            Role::Owner(channel) => self.serve_owned(channel),
            Role::Spare => self.serve_spare(),
        }
    }

    /// An owner: waits in `recv` on its own channel and runs each call.
    fn serve_owned(&self, index: usize) {
        let channel = self.channels[index].as_fd();
        let mut buffer = vec![0u8; DISPATCH_BYTES_MAX];
        loop {
            match protocol::recv_dispatch(channel, &mut buffer, RecvMode::Wait) {
                Ok(Received::Dispatch(dispatch)) => self.serve(channel, dispatch, Some(index)),
                Ok(Received::Cut(cut)) => self.answer_cut(channel, cut, index),
                Err(ProtocolError::Socket(Errno::EINTR)) => {}
                Err(ProtocolError::Closed) => {
                    self.lanes.close(index);
                    return;
                }
                Err(ProtocolError::Socket(error)) => {
                    eprintln!(
                        "corefn: worker {}: cannot receive on channel {index}: {error}",
                        self.identity.worker_id
                    );
                    self.lanes.close(index);
                    return;
                }
                Err(error) => eprintln!(
                    "corefn: worker {}: bad dispatch on channel {index}: {error}",
                    self.identity.worker_id
                ),
            }
        }
    }

    /// A spare: waits on the spares' set (the channels armed now) and takes
    /// one dispatch per wake-up, so that a burst spreads over the spares.
    fn serve_spare(&self) {
        let epoll = self.lanes.spares();
        let mut buffer = vec![0u8; DISPATCH_BYTES_MAX];
        let mut events = [EpollEvent::empty(); 1];
        while !self.lanes.all_closed() {
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
            match protocol::recv_dispatch(channel, &mut buffer, RecvMode::DontWait) {
                Ok(Received::Dispatch(dispatch)) => self.serve(channel, dispatch, None),
                Ok(Received::Cut(cut)) => self.answer_cut(channel, cut, index),
                // Another thread took it.
                Err(ProtocolError::Socket(Errno::EAGAIN)) => {}
                Err(ProtocolError::Closed) => self.lanes.close(index),
                Err(error) => eprintln!(
                    "corefn: worker {}: bad dispatch on channel {index}: {error}",
                    self.identity.worker_id
                ),
            }
        }
    }

    /// One dispatch from its receipt to its completion; `owner`: the
    /// channel whose owner runs it (None: a spare).
    fn serve(&self, channel: BorrowedFd<'_>, dispatch: Dispatch<'_>, owner: Option<usize>) {
        let started = Instant::now();
        let started_unix_us = clock::unix_now_us();
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let header = dispatch.header;
        let descriptor = self.descriptor(dispatch.descriptor);
        let owner_call = owner.map(|index| {
            let expected_brief = descriptor.as_ref().map_or(true, |d| d.expected_brief());
            self.lanes.begin_call(index, expected_brief)
        });
        let mut response = Vec::with_capacity(4 * 1024);
        let mut report = CallReport::default();
        let (status, failure) = self.respond(
            channel,
            &dispatch,
            descriptor.clone(),
            &mut response,
            &mut report,
        );
        // Logged before the client has its answer: a client's next call
        // (to another worker, say) then logs after this one, so a log reads
        // in the order the calls happened.
        self.log_invocation(&Invoked {
            name: dispatch.name,
            version: header.version,
            request_id: dispatch.request_id,
            started_unix_us,
            duration_us: started.elapsed().as_micros() as u64,
            status,
            failure: failure.as_ref(),
            report: &report,
        });
        let written = protocol::write_to_client(dispatch.client.as_fd(), &response);
        // Our copy only: the gateway keeps the connection.
        drop(dispatch.client);
        if let Ok(descriptor) = &descriptor {
            descriptor.note_duration(started.elapsed());
        }
        drop(owner_call);
        let mut flags = 0;
        if written.is_err() {
            flags |= COMPLETION_CONNECTION_BROKEN;
        }
        if report.cold_start {
            flags |= COMPLETION_COLD_START;
        }
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.requests_done.fetch_add(1, Ordering::Relaxed);
        let duration_us = started.elapsed().as_micros() as u64;
        let memory_kb_peak = report.memory_bytes_peak.map_or(0, |bytes| {
            u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
        });
        let completion = Completion {
            status,
            flags,
            call_id: header.call_id,
            body_bytes: protocol::body_bytes_written(&response, *written.as_ref().unwrap_or(&0)),
            duration_us,
            failure: failure.as_ref().map(|f| f.kind),
            memory_kb_peak,
            written_bytes: *written.as_ref().unwrap_or(&0) as u64,
        };
        self.complete(channel, &completion);
        // Off the request's path: the client and the core have their answer.
        self.runtimes.maintain();
    }

    /// Tells the core its call ended (a core that never hears holds the
    /// connection until the call's deadline): through the channel's ring,
    /// with a doorbell only if the core waits for one, or (no ring, or a
    /// full one) over the channel.
    fn complete(&self, channel: BorrowedFd<'_>, completion: &Completion) {
        let encoded = completion.encode();
        let ring = self
            .channels
            .iter()
            .position(|c| c.as_raw_fd() == channel.as_raw_fd())
            .and_then(|index| self.rings[index].as_ref());
        if let Some(ring) = ring {
            match ring.push(&encoded) {
                Pushed::Taken => return,
                Pushed::TakenRingTheDoorbell => {
                    // Unsent only when the channel is full, and then the
                    // core has messages to wake it anyway.
                    let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
                    match send(channel.as_raw_fd(), &DOORBELL, flags) {
                        Ok(_) | Err(Errno::EAGAIN) => {}
                        Err(error) => eprintln!(
                            "corefn: worker {}: cannot ring the core's doorbell: {error}",
                            self.identity.worker_id
                        ),
                    }
                    return;
                }
                Pushed::Full => {}
            }
        }
        if let Err(error) = send(channel.as_raw_fd(), &encoded, MsgFlags::MSG_NOSIGNAL) {
            eprintln!(
                "corefn: worker {}: cannot report completion: {error}",
                self.identity.worker_id
            );
        }
    }

    /// A dispatch that did not arrive whole: its client gets a 502 that
    /// says so and the core its completion, at once.
    fn answer_cut(&self, channel: BorrowedFd<'_>, cut: CutDispatch, index: usize) {
        let failure = cut.failure();
        eprintln!(
            "corefn: worker {}: bad dispatch on channel {index}: {failure}",
            self.identity.worker_id
        );
        let error = HttpError::Function(failure);
        let status = error.status();
        let mut response = Vec::with_capacity(512);
        let connection = cut.header.connection(DRAINING.load(Ordering::Relaxed));
        error.render(
            &mut response,
            response_head_lines("").as_bytes(),
            connection,
            cut.header.head_only(),
        );
        let written = match &cut.client {
            Some(client) => protocol::write_to_client(client.as_fd(), &response),
            None => Ok(0),
        };
        drop(cut.client);
        let completion = Completion {
            status,
            flags: if written.is_err() {
                COMPLETION_CONNECTION_BROKEN
            } else {
                0
            },
            call_id: cut.header.call_id,
            body_bytes: protocol::body_bytes_written(&response, *written.as_ref().unwrap_or(&0)),
            duration_us: 0,
            failure: Some(FailureKind::Internal),
            memory_kb_peak: 0,
            written_bytes: *written.as_ref().unwrap_or(&0) as u64,
        };
        self.complete(channel, &completion);
    }

    /// Renders the whole response for one dispatch; returns its status
    /// and, for a call that failed, how.
    fn respond(
        &self,
        channel: BorrowedFd<'_>,
        dispatch: &Dispatch<'_>,
        descriptor: Result<Arc<CachedDescriptor>, Failure>,
        out: &mut Vec<u8>,
        report: &mut CallReport,
    ) -> (u16, Option<Failure>) {
        let header = &dispatch.header;
        let head_only = header.head_only();
        let result = descriptor.map_err(HttpError::from).and_then(|descriptor| {
            self.run_function(channel, dispatch, &descriptor.descriptor, report)
        });
        // Decided after the run: the gateway may have started draining.
        let connection = header.connection(DRAINING.load(Ordering::Relaxed));
        let head_lines = response_head_lines(dispatch.request_id);
        match result {
            Ok(reply) => {
                reply.response.write_http(
                    &reply.bytes,
                    out,
                    head_lines.as_bytes(),
                    connection,
                    head_only,
                );
                (reply.response.status, None)
            }
            Err(error) => {
                error.render(out, head_lines.as_bytes(), connection, head_only);
                let status = error.status();
                let failure = match error {
                    HttpError::Function(failure) => failure,
                    other => Failure::new(FailureKind::Internal, other),
                };
                (status, Some(failure))
            }
        }
    }

    /// Decodes the dispatch into the runtime's request and invokes it.
    fn run_function(
        &self,
        channel: BorrowedFd<'_>,
        dispatch: &Dispatch<'_>,
        descriptor: &Descriptor,
        report: &mut CallReport,
    ) -> Result<Reply, HttpError> {
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
        // The request id the gateway settled on replaces whatever the
        // client sent under that name.
        let mut header_pairs: Vec<(&str, &[u8])> = request
            .headers
            .iter()
            .filter(|h| !h.name.eq_ignore_ascii_case(REQUEST_ID_HEADER))
            .map(|h| (h.name, h.value))
            .collect();
        if !dispatch.request_id.is_empty() {
            header_pairs.push((REQUEST_ID_HEADER, dispatch.request_id.as_bytes()));
        }
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
        let reply = self.runtimes.invoke(
            &Invocation {
                descriptor,
                request: &cgi_request,
                body,
                on_native_expiry: &on_native_expiry,
            },
            report,
        )?;
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
        let request_id = dispatch.request_id.to_string();
        let started = Instant::now();
        Box::new(move || {
            // Every core stops choosing this worker first, so that requests
            // the client sends after its 504 go to a worker that lives.
            let mut notice = Completion {
                status: COMPLETION_STATUS_NONE,
                flags: COMPLETION_WORKER_RETIRING,
                call_id: header.call_id,
                body_bytes: 0,
                duration_us: 0,
                failure: None,
                memory_kb_peak: 0,
                written_bytes: 0,
            };
            for fd in all_channel_fds.iter().filter(|&&fd| fd != channel_fd) {
                let _ = send(*fd, &notice.encode(), MsgFlags::MSG_NOSIGNAL);
            }
            thread::sleep(RETIRING_NOTICE_LEAD);
            let error = HttpError::Function(Failure::timeout(timeout_ms));
            let mut out = Vec::with_capacity(256);
            let head_lines = response_head_lines(&request_id);
            let head_only = header.head_only();
            error.render(
                &mut out,
                head_lines.as_bytes(),
                header.connection(DRAINING.load(Ordering::Relaxed)),
                head_only,
            );
            // SAFETY: the dispatch owning the descriptor outlives this: its
            // thread is blocked in the native call until the process ends.
            let client = unsafe { BorrowedFd::borrow_raw(client_fd) };
            let written = protocol::write_to_client(client, &out);
            notice.status = error.status();
            notice.failure = Some(FailureKind::Timeout);
            if written.is_err() {
                notice.flags |= COMPLETION_CONNECTION_BROKEN;
            }
            notice.body_bytes = protocol::body_bytes_written(&out, written.unwrap_or(0));
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

/// The date line and the request's id line of a response this worker writes.
fn response_head_lines(request_id: &str) -> HeadLines {
    let date_line = clock::date_line(clock::unix_now_secs());
    HeadLines::new(&date_line, request_id)
}

/// One finished call, for its log lines.
pub(super) struct Invoked<'a> {
    pub name: &'a str,
    pub version: u32,
    pub request_id: &'a str,
    pub started_unix_us: u64,
    pub duration_us: u64,
    pub status: u16,
    pub failure: Option<&'a Failure>,
    pub report: &'a CallReport,
}

impl Worker {
    /// The call's log lines: START, what it printed, END with its report
    /// (Lambda's START / END / REPORT, in two lines). Sent without waiting:
    /// a full log channel drops lines (counted), never delays a call.
    fn log_invocation(&self, invoked: &Invoked<'_>) {
        let Some(logs) = &self.logs else { return };
        let call_lines = self.settings.log_call_lines;
        if !call_lines && invoked.report.stdout.is_empty() && invoked.report.stderr.is_empty() {
            return;
        }
        let ended_unix_us = invoked.started_unix_us + invoked.duration_us;
        let mut output = Vec::new();
        for (stream, bytes) in [
            (Stream::Stdout, &invoked.report.stdout),
            (Stream::Stderr, &invoked.report.stderr),
        ] {
            output.extend(lines_from_output(
                invoked.name,
                invoked.version,
                invoked.request_id,
                stream,
                bytes,
                ended_unix_us,
            ));
        }
        let (start, end) = if call_lines {
            (
                format!(
                    "START RequestId: {} Version: {}",
                    invoked.request_id, invoked.version
                ),
                end_text(invoked),
            )
        } else {
            (String::new(), String::new())
        };
        let system = |ts_unix_us: u64, text| LineRef {
            ts_unix_us,
            function: invoked.name,
            version: invoked.version,
            request_id: invoked.request_id,
            stream: Stream::System,
            text,
        };
        let mut lines = Vec::with_capacity(output.len() + 2);
        if call_lines {
            lines.push(system(invoked.started_unix_us, &start));
        }
        lines.extend(output.iter().map(LogLine::as_ref));
        if call_lines {
            lines.push(system(ended_unix_us, &end));
        }
        logs.send(invoked.name, &lines);
    }
}

/// The END line's text: duration, status, and what the report adds.
fn end_text(invoked: &Invoked<'_>) -> String {
    use std::fmt::Write as _;
    let mut end = String::with_capacity(128);
    // Writing to a String cannot fail.
    let _ = write!(
        end,
        "END RequestId: {} Duration: {:.3} ms Status: {}",
        invoked.request_id,
        invoked.duration_us as f64 / 1000.0,
        invoked.status
    );
    if let Some(failure) = invoked.failure {
        let _ = write!(
            end,
            " Failure: {} ({})",
            failure.kind.name(),
            failure.message
        );
    }
    if let Some(bytes) = invoked.report.memory_bytes_peak {
        let _ = write!(end, " Max Memory: {} KiB", bytes.div_ceil(1024));
    }
    if invoked.report.cold_start {
        end.push_str(" Cold Start");
    }
    end
}
