//! One client connection's life: read, parse, answer, repeat.
//!
//! [`serve`] owns the control flow: it decides when to read (and with which
//! deadline), when to flush, and how the connection ends. Pipelined requests
//! are answered in order into one output buffer that is written when no
//! complete request is left to parse (one write for a whole batch).
//!
//! Deadlines: a request head must be complete within `header_timeout` of
//! its first byte (or of accept, for the first request); a body within
//! `body_timeout` of its head; an idle keep-alive connection is closed after
//! `idle_timeout`. On shutdown, idle connections close at once and a request
//! in progress finishes with `connection: close`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Shutdown};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::access_log::LogEntry;
use super::context::CoreContext;
use super::request::{
    parse_head, BodyFraming, HeadParse, ReadBuf, RequestHead, RequestId, VERSION_PIN_HEADER,
};
use crate::api::{admin, console};
use crate::failure::FailureKind;
use crate::http::auth;
use crate::http::chunked::ChunkedDecoder;
use crate::http::encode::{self, ConnectionHeader, HeadLines};
use crate::http::error::HttpError;
use crate::http::rules;
use crate::routes::hosts;
use crate::routes::table::{FunctionTarget, Lookup, Route, RouteAction, RouteTable};
use crate::runtimes::descriptor::{version_path, FunctionAuth};
use crate::scheduler::admission::ConcurrencyLimit;
use crate::telemetry::gateway::ParseError;
use crate::telemetry::stats::{CallOutcome, FunctionStats, Shard, Throttle};
use crate::workers::pool::{CallError, CallRequest, CoreWorkers, Served};
use crate::workers::protocol;

/// Responses buffered before a write is forced even mid-batch.
const OUTPUT_FLUSH_BYTES: usize = 64 * 1024;
/// An output buffer grown past this is given back after the write.
const OUTPUT_KEEP_BYTES_MAX: usize = 256 * 1024;
/// Bytes asked of the kernel per read while receiving a head: room for a
/// typical head or a batch of small pipelined ones. Kept small because an
/// idle keep-alive connection holds its buffer (10,000 of them are a
/// target of PERFORMANCE.md); a larger head makes the buffer grow.
const READ_HEAD_BYTES: usize = 2 * 1024;
/// First capacity of the output buffer; it grows for larger batches.
const OUTPUT_INITIAL_BYTES: usize = 512;
/// Largest single read while receiving a body.
const READ_BODY_BYTES_MAX: usize = 256 * 1024;
/// After an error response the connection keeps reading (and discarding)
/// for this long or this much, so the client sees the response instead of
/// a reset caused by unread data.
const LINGER: Duration = Duration::from_millis(1_000);
const LINGER_BYTES_MAX: usize = 1024 * 1024;

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listening {
    /// `--listen`: routes, admin endpoints and the control API.
    All,
    /// `--admin-listen`: the admin endpoints and the control API only.
    Admin,
}

pub async fn serve(core: &CoreContext, stream: TcpStream, listening: Listening) {
    let peer = stream
        .peer_addr()
        .map(|addr| addr.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    // Small responses must leave at once; Nagle would hold them.
    let _ = stream.set_nodelay(true);
    // A client that stops reading cannot pin the connection forever.
    let _ = stream.set_write_timeout(Some(core.limits.idle_timeout));
    let mut connection = Connection {
        core,
        listening,
        stream,
        peer,
        input: ReadBuf::default(),
        output: Vec::with_capacity(OUTPUT_INITIAL_BYTES),
        chunked_body: Vec::new(),
        log_entries: Vec::new(),
        request_id: core.new_request_id(),
        serving: None,
        socket_bytes: 0,
    };
    core.gateway_stats().connection_opened();
    let next = connection.serve_requests().await;
    if !connection.output.is_empty() && connection.flush().await.is_err() {
        return;
    }
    if next == Next::Linger {
        connection.linger().await;
    }
}

impl Drop for Connection<'_> {
    fn drop(&mut self) {
        self.core.gateway_stats().connection_closed();
    }
}

struct Connection<'c> {
    core: &'c CoreContext,
    listening: Listening,
    stream: TcpStream,
    peer: IpAddr,
    input: ReadBuf,
    output: Vec<u8>,
    /// Decoded chunked body of the current request.
    chunked_body: Vec<u8>,
    /// Responses in `output` waiting for their write, when logging.
    log_entries: Vec<LogEntry>,
    /// The id of the request being answered (before the first head: one
    /// for an error response).
    request_id: RequestId,
    /// The function the current request is for, when the access log
    /// needs it (an `Arc` clone is a shared atomic: not made otherwise).
    serving: Option<Arc<FunctionStats>>,
    /// Bytes written into the client socket by every holder of it so far,
    /// as far as the core knows: its own writes, and what each worker's
    /// completion says it wrote. Set against the kernel's count when a
    /// call is stuck, it tells whether the worker wrote part of an answer.
    socket_bytes: u64,
}

/// What the connection does after a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Read the next request.
    KeepAlive,
    Close,
    /// Close after an error while the client may still be sending: drain
    /// what it sends for a moment so it sees the response, not a reset.
    Linger,
}

impl Next {
    /// After a response to a request that allowed keep-alive or not.
    fn unless(self, keep_alive: bool) -> Next {
        match self {
            Next::KeepAlive if !keep_alive => Next::Close,
            next => next,
        }
    }
}

enum ReadOutcome {
    Data,
    PeerClosed,
    TimedOut,
    Stopped,
    Failed,
}

enum BodyFailure {
    Http(HttpError),
    Connection,
}

impl From<HttpError> for BodyFailure {
    fn from(error: HttpError) -> BodyFailure {
        BodyFailure::Http(error)
    }
}

impl Connection<'_> {
    /// Serves requests until one ends the connection; never returns
    /// [`Next::KeepAlive`].
    async fn serve_requests(&mut self) -> Next {
        let limits = &self.core.limits;
        let mut head_deadline = Some(Instant::now() + limits.header_timeout);
        loop {
            self.core.before_serving();
            let parsed = parse_head(self.input.pending(), limits.header_bytes_max, limits.body);
            let head = match parsed {
                Ok(HeadParse::Complete(head)) => head,
                Ok(HeadParse::Partial) => {
                    if !self.output.is_empty() && self.flush().await.is_err() {
                        return Next::Close;
                    }
                    let idle = self.input.is_empty();
                    if idle && self.core.is_stopping() {
                        return Next::Close;
                    }
                    let deadline = if idle && head_deadline.is_none() {
                        None
                    } else {
                        Some(
                            *head_deadline
                                .get_or_insert_with(|| Instant::now() + limits.header_timeout),
                        )
                    };
                    let outcome = match deadline {
                        None => {
                            self.read_more(limits.idle_timeout, true, READ_HEAD_BYTES)
                                .await
                        }
                        Some(deadline) => self.read_until(deadline, idle, READ_HEAD_BYTES).await,
                    };
                    match outcome {
                        ReadOutcome::Data => continue,
                        ReadOutcome::TimedOut if !idle => {
                            let timeout_ms = limits.header_timeout.as_millis() as u64;
                            self.push_error(&HttpError::RequestTimeout { timeout_ms }, None);
                            return Next::Linger;
                        }
                        ReadOutcome::TimedOut
                        | ReadOutcome::PeerClosed
                        | ReadOutcome::Stopped
                        | ReadOutcome::Failed => return Next::Close,
                    }
                }
                Err(error) => {
                    self.push_error(&error, None);
                    return Next::Linger;
                }
            };
            head_deadline = None;
            self.request_id = head
                .request_id(self.input.pending())
                .and_then(RequestId::from_client)
                .unwrap_or_else(|| self.core.new_request_id());
            // The clock is read per request only when the log or the
            // stats need it (every function call's duration is counted).
            let received_at = Instant::now();

            let request_len = match self.receive_body(&head).await {
                Ok(len) => len,
                Err(BodyFailure::Http(error)) => {
                    self.push_error(&error, Some((&head, received_at)));
                    return Next::Linger;
                }
                Err(BodyFailure::Connection) => return Next::Close,
            };
            let keep_alive = head.keep_alive && !self.core.is_stopping();
            let table = self.core.snapshot.get();
            let decision = self.decide(&head, &table);
            let refusal = decision.route().and_then(|route| {
                self.check_key(&head, route, &table)
                    .err()
                    .or_else(|| {
                        // An async call is admitted when it runs, through
                        // this same path; counting it here would take two.
                        let rate = route.descriptor.rate_limit.filter(|_| !head.invoke_async)?;
                        self.core.rate_limits.admit(&route.key, rate).err()
                    })
                    .map(|error| (route, error))
            });
            let decision = match refusal {
                Some((route, error)) => {
                    if let RouteAction::Function(target) = &route.action {
                        let throttle = matches!(error, HttpError::RateLimited { .. })
                            .then_some(Throttle::RateLimit);
                        let shard = target.stats.as_deref().map(|s| s.shard(self.core.index));
                        self.record_shard(shard, error.status(), received_at, None, throttle);
                    }
                    Decision::Refused(error)
                }
                None => decision,
            };
            if self.core.access_log.is_some() {
                self.serving = decision.route().and_then(|route| match &route.action {
                    RouteAction::Function(target) => target.stats.clone(),
                    RouteAction::Static(_) => None,
                });
            }
            let next = match decision {
                Decision::Function(route, target)
                    if head.invoke_async && self.core.control.has_workers() =>
                {
                    // Queued by the control plane; the call itself comes
                    // back through this listener later.
                    let control = self.core.control.clone();
                    let handover = Handover {
                        to: &control,
                        descriptor: b"{}",
                        timeout_ms: self.core.limits.control_timeout_ms,
                        what: &route.key,
                        name: &target.name,
                        version: target.version,
                        concurrency: None,
                        stats: None,
                        flags: protocol::FLAG_ASYNC_INVOCATION,
                    };
                    self.hand_over(&head, handover, keep_alive, received_at)
                        .await
                }
                Decision::Function(route, target) => {
                    let handover = Handover {
                        to: &self.core.workers,
                        descriptor: &target.descriptor_json,
                        timeout_ms: target.timeout_ms,
                        what: &route.key,
                        name: &target.name,
                        version: target.version,
                        concurrency: target.concurrency.as_ref(),
                        stats: target.stats.as_deref().map(|s| s.shard(self.core.index)),
                        flags: 0,
                    };
                    self.hand_over(&head, handover, keep_alive, received_at)
                        .await
                }
                Decision::Control => {
                    let control = self.core.control.clone();
                    let handover = Handover {
                        to: &control,
                        descriptor: b"{}",
                        timeout_ms: self.core.limits.control_timeout_ms,
                        what: "the control API",
                        name: "",
                        version: 0,
                        concurrency: None,
                        stats: None,
                        flags: 0,
                    };
                    self.hand_over(&head, handover, keep_alive, received_at)
                        .await
                }
                decision => self.respond(&head, decision, &table, keep_alive, received_at),
            };
            self.input.consume(request_len);
            match next.unless(keep_alive) {
                Next::KeepAlive => {}
                ending => return ending,
            }
            if self.output.len() >= OUTPUT_FLUSH_BYTES && self.flush().await.is_err() {
                return Next::Close;
            }
        }
    }

    /// Makes sure the whole body is in the input buffer (Content-Length) or
    /// decoded into `chunked_body` (chunked); returns the request's length
    /// in the input buffer (head + raw body).
    async fn receive_body(&mut self, head: &RequestHead) -> Result<usize, BodyFailure> {
        let limits = &self.core.limits;
        if head.framing == BodyFraming::None {
            return Ok(head.head_len);
        }
        let deadline = Instant::now() + limits.body_timeout;
        let timeout_error = || HttpError::RequestTimeout {
            timeout_ms: limits.body_timeout.as_millis() as u64,
        };
        match head.framing {
            BodyFraming::None => Ok(head.head_len),
            BodyFraming::Length(body_len) => {
                let request_len = head.head_len + body_len;
                if self.input.pending().len() < request_len && head.expect_continue {
                    self.send_continue().await?;
                }
                while self.input.pending().len() < request_len {
                    let missing = request_len - self.input.pending().len();
                    match self
                        .read_until(deadline, false, missing.min(READ_BODY_BYTES_MAX))
                        .await
                    {
                        ReadOutcome::Data => {}
                        ReadOutcome::TimedOut => return Err(timeout_error().into()),
                        _ => return Err(BodyFailure::Connection),
                    }
                }
                Ok(request_len)
            }
            BodyFraming::Chunked => {
                self.chunked_body.clear();
                let mut decoder = ChunkedDecoder::default();
                let mut continue_sent = false;
                loop {
                    let raw = &self.input.pending()[head.head_len..];
                    let used = decoder.decode(
                        raw,
                        &mut self.chunked_body,
                        head.body_bytes_max,
                        limits.header_bytes_max,
                    )?;
                    // Raw chunk bytes are dropped as they are decoded so the
                    // buffer holds the head plus at most one partial line.
                    self.input.cut(head.head_len, used);
                    if decoder.is_done() {
                        return Ok(head.head_len);
                    }
                    if head.expect_continue && !continue_sent {
                        self.send_continue().await?;
                        continue_sent = true;
                    }
                    match self.read_until(deadline, false, READ_BODY_BYTES_MAX).await {
                        ReadOutcome::Data => {}
                        ReadOutcome::TimedOut => return Err(timeout_error().into()),
                        _ => return Err(BodyFailure::Connection),
                    }
                }
            }
        }
    }

    /// Interim response; earlier pipelined responses must go first.
    async fn send_continue(&mut self) -> Result<(), BodyFailure> {
        if !self.output.is_empty() {
            self.flush().await.map_err(|_| BodyFailure::Connection)?;
        }
        self.stream
            .write_all(CONTINUE)
            .await
            .map_err(|_| BodyFailure::Connection)?;
        self.socket_bytes += CONTINUE.len() as u64;
        Ok(())
    }

    /// Where a request goes: decided from the core's snapshot `table`.
    fn decide<'t>(&self, head: &RequestHead, table: &'t RouteTable) -> Decision<'t> {
        let bytes = self.input.pending();
        let method = head.method(bytes);
        let path = head.path(bytes);
        if (path.starts_with(rules::API_PATH_PREFIX) || path == rules::METRICS_PATH)
            && self.core.control.has_workers()
        {
            return Decision::Control;
        }
        if rules::is_reserved_path(path) {
            return Decision::Admin;
        }
        if self.listening == Listening::Admin {
            return Decision::NotFound;
        }
        // NAME.localhost (or NAME.<--host-suffix>): the function's own
        // routes, whatever the path.
        let host_routed;
        let path = match head
            .host(bytes)
            .and_then(|host| hosts::function_of_host(host, &self.core.limits.host_suffixes))
        {
            Some(name) => {
                host_routed = hosts::function_path(name, path);
                host_routed.as_str()
            }
            None => path,
        };
        match table.lookup(method, path) {
            Lookup::Found(route) => {
                let route = match self.version_of(head, route, path, table) {
                    Ok(route) => route,
                    Err(decision) => return decision,
                };
                match &route.action {
                    RouteAction::Function(target) if self.core.workers.has_workers() => {
                        Decision::Function(route, target)
                    }
                    _ => Decision::Route(route),
                }
            }
            Lookup::MethodNotAllowed(allow) => Decision::MethodNotAllowed(allow),
            // A route of its own wins; otherwise the console's deploy page.
            Lookup::NotFound if path == console::UPLOAD_PATH && method == "GET" => Decision::Admin,
            Lookup::NotFound => Decision::NotFound,
        }
    }

    /// A route with `auth: key` needs an invoke key of the published
    /// snapshot that may call its function (one SHA-256 of the key).
    fn check_key(
        &self,
        head: &RequestHead,
        route: &Route,
        table: &RouteTable,
    ) -> Result<(), HttpError> {
        if route.descriptor.auth != Some(FunctionAuth::Key) {
            return Ok(());
        }
        let bytes = self.input.pending();
        let Some(key) = head.authorization(bytes).and_then(auth::bearer) else {
            return Err(HttpError::Unauthorized(
                "this function needs an invoke key: Authorization: Bearer KEY",
            ));
        };
        match table.invoke_grant(&auth::key_hash(key)) {
            Some(grant) if grant.allows(route.descriptor.function.as_deref()) => Ok(()),
            Some(_) => Err(HttpError::Unauthorized(
                "this key may not invoke this function",
            )),
            None => Err(HttpError::Unauthorized("unknown or revoked key")),
        }
    }

    /// A deployed function's route, or the version the request asked for
    /// (`x-corefn-version: N`), or its canary for a weighted share: each
    /// version answers at `/fn/NAME@N` in the same table.
    fn version_of<'t>(
        &self,
        head: &RequestHead,
        route: &'t Route,
        path: &str,
        table: &'t RouteTable,
    ) -> Result<&'t Route, Decision<'t>> {
        let Some(function) = route.descriptor.function.as_deref() else {
            return Ok(route);
        };
        let bytes = self.input.pending();
        let version = match head.version_pin(bytes) {
            Some(pin) => match std::str::from_utf8(pin)
                .ok()
                .and_then(|p| p.parse::<u32>().ok())
            {
                Some(version) => version,
                None => {
                    return Err(Decision::Refused(HttpError::InvalidRequest(format!(
                        "{VERSION_PIN_HEADER} must be a version number"
                    ))))
                }
            },
            None => match route.descriptor.canary {
                Some(canary) if self.core.random_unit() < canary.weight => canary.version,
                _ => return Ok(route),
            },
        };
        // A version's own route (`/fn/NAME@N`) is that version already.
        if route.key.starts_with(&format!("ANY:/fn/{function}@")) {
            return Ok(route);
        }
        let own_prefix = format!("/fn/{function}");
        let rest = match path.strip_prefix(&own_prefix) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
            _ => path,
        };
        let versioned = format!("{}{rest}", version_path(function, version));
        match table.lookup(head.method(bytes), &versioned) {
            Lookup::Found(versioned_route) => Ok(versioned_route),
            _ => Err(Decision::Refused(HttpError::NotFound {
                method: head.method(bytes).into(),
                path: format!("{path} (version {version} of {function})"),
            })),
        }
    }

    /// Hands the request and the client socket to a worker (or the control
    /// plane), which writes the response itself.
    async fn hand_over(
        &mut self,
        head: &RequestHead,
        handover: Handover<'_>,
        keep_alive: bool,
        received_at: Instant,
    ) -> Next {
        let stats = handover.stats;
        let _permit = match handover.concurrency {
            Some(limit) => match limit.acquire().await {
                Ok(permit) => Some(permit),
                Err(error) => {
                    let throttle = Some(Throttle::Concurrency);
                    self.record_shard(stats, error.status(), received_at, None, throttle);
                    return self.push_response_error(head, &error, keep_alive, received_at);
                }
            },
            None => None,
        };
        // Earlier pipelined responses must reach the client first.
        if !self.output.is_empty() && self.flush().await.is_err() {
            return Next::Close;
        }
        let bytes = self.input.pending();
        let body: &[u8] = match head.framing {
            BodyFraming::None => &[],
            BodyFraming::Length(len) => &bytes[head.head_len..head.head_len + len],
            BodyFraming::Chunked => &self.chunked_body,
        };
        let mut flags = handover.flags;
        if keep_alive {
            flags |= protocol::FLAG_KEEP_ALIVE;
        }
        if head.is_head_method(bytes) {
            flags |= protocol::FLAG_HEAD_ONLY;
        }
        if head.version_minor == 0 {
            flags |= protocol::FLAG_HTTP10;
        }
        if let Some(shard) = stats {
            shard.enter();
        }
        let outcome = handover
            .to
            .call(CallRequest {
                flags,
                descriptor: handover.descriptor,
                name: handover.name,
                version: handover.version,
                request_id: self.request_id.as_str(),
                head: &bytes[..head.head_len],
                body,
                client: self.stream.as_raw_fd(),
                timeout: Duration::from_millis(handover.timeout_ms),
            })
            .await;
        if let Some(shard) = stats {
            shard.leave();
        }
        match outcome {
            Ok(Served {
                completion,
                worker_id,
            }) => {
                self.socket_bytes += completion.written_bytes;
                let throttle = match completion.failure {
                    Some(FailureKind::Busy) => Some(Throttle::Busy),
                    _ => None,
                };
                if let Some(shard) = stats {
                    shard.record(&CallOutcome {
                        status: completion.status,
                        duration_us: elapsed_us(received_at),
                        failure: completion.failure,
                        cold_start: completion.cold_start(),
                        throttle,
                    });
                }
                self.core.gateway_stats().response(completion.status);
                if let Some(log) = &self.core.access_log {
                    let now = Instant::now();
                    let entry = self.log_entry(
                        request_line(head, self.input.pending()),
                        completion.status,
                        completion.body_bytes as usize,
                        received_at,
                        Some(worker_id),
                    );
                    log.record(&entry, now, now);
                }
                if completion.connection_broken() {
                    eprintln!(
                        "corefn: core {}: the worker could not write the whole response; closing",
                        self.core.index
                    );
                }
                if completion.connection_broken() || completion.connection_taken() {
                    Next::Close
                } else {
                    Next::KeepAlive
                }
            }
            Err(CallError::NotSent(error)) => {
                let throttle = matches!(error, HttpError::NoWorkerAvailable { .. })
                    .then_some(Throttle::NoWorker);
                let failure = match &error {
                    HttpError::Function(failure) => Some(failure.kind),
                    _ => None,
                };
                self.record_shard(stats, error.status(), received_at, failure, throttle);
                self.push_response_error(head, &error, keep_alive, received_at)
            }
            Err(CallError::WorkerLost) => {
                let error = HttpError::WorkerLost;
                self.record_shard(
                    stats,
                    error.status(),
                    received_at,
                    Some(FailureKind::Crash),
                    None,
                );
                self.push_error(&error, Some((head, received_at)));
                Next::Close
            }
            Err(CallError::Stuck) => {
                let fd = self.stream.as_raw_fd();
                // The worker wrote nothing of an answer: the kernel's count
                // is still what the core knew before the call.
                let untouched = bytes_written(fd) == Some(self.socket_bytes);
                eprintln!(
                    "corefn: core {}: no completion within {} ms (+ slack) for {}; {}",
                    self.core.index,
                    handover.timeout_ms,
                    handover.what,
                    if untouched {
                        "answering 504 and closing"
                    } else {
                        "the worker wrote part of an answer: cutting the connection"
                    }
                );
                self.record_shard(stats, 504, received_at, Some(FailureKind::Timeout), None);
                if untouched {
                    let error = HttpError::WorkerStuck {
                        timeout_ms: handover.timeout_ms,
                    };
                    self.push_error(&error, Some((head, received_at)));
                    let _ = self.flush().await;
                }
                // The worker may still write: shut the socket for every
                // holder of it, not just our descriptor, so nothing of its
                // late answer follows ours.
                // SAFETY: shutdown on a socket we own.
                unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
                Next::Close
            }
        }
    }

    /// Counts one answered call of a function route that has stats.
    fn record_shard(
        &self,
        shard: Option<&Shard>,
        status: u16,
        received_at: Instant,
        failure: Option<FailureKind>,
        throttle: Option<Throttle>,
    ) {
        if let Some(shard) = shard {
            shard.record(&CallOutcome {
                status,
                duration_us: elapsed_us(received_at),
                failure,
                cold_start: false,
                throttle,
            });
        }
    }

    /// Appends the response to `head`, decided from `table`.
    fn respond(
        &mut self,
        head: &RequestHead,
        decision: Decision<'_>,
        table: &RouteTable,
        keep_alive: bool,
        received_at: Instant,
    ) -> Next {
        let bytes = self.input.pending();
        let method = head.method(bytes);
        let path = head.path(bytes);
        let head_only = method == "HEAD";
        let connection = connection_header(head.version_minor, keep_alive);
        let head_lines = self.head_lines();

        let error = match decision {
            Decision::Admin => {
                let context = admin::AdminContext {
                    table,
                    core_index: self.core.index,
                    workers: &self.core.workers,
                    pool_status: self.core.pool_status.as_deref(),
                    telemetry: &self.core.telemetry,
                };
                match admin::respond(method, path, &context) {
                    Ok(answer) => {
                        let mut headers = Vec::with_capacity(1 + answer.headers.len());
                        headers.push(("content-type", answer.content_type));
                        headers.extend_from_slice(answer.headers);
                        let body_bytes = encode::push_response(
                            &mut self.output,
                            answer.status,
                            &headers,
                            &answer.body,
                            head_lines.as_bytes(),
                            connection,
                            head_only,
                        );
                        self.log(head, answer.status, body_bytes, received_at);
                        return Next::KeepAlive;
                    }
                    Err(error) => error,
                }
            }
            Decision::Route(route) => match &route.action {
                RouteAction::Static(response) => {
                    response.write(
                        &mut self.output,
                        head_lines.as_bytes(),
                        connection,
                        head_only,
                    );
                    let body_bytes = if head_only { 0 } else { response.body_len() };
                    self.log(head, response.status(), body_bytes, received_at);
                    return Next::KeepAlive;
                }
                RouteAction::Function(target) => HttpError::RuntimeUnavailable(format!(
                    "runtime {} runs in worker processes, and this gateway has none (--workers 0)",
                    target.runtime.name()
                )),
            },
            Decision::MethodNotAllowed(allow) => HttpError::MethodNotAllowed {
                method: method.into(),
                path: path.into(),
                allow,
            },
            Decision::NotFound => HttpError::NotFound {
                method: method.into(),
                path: path.into(),
            },
            Decision::Refused(error) => error,
            Decision::Function(..) | Decision::Control => {
                unreachable!("functions and the control API are handed over")
            }
        };
        self.push_response_error(head, &error, keep_alive, received_at)
    }

    /// Appends the error response to `head`, closing the connection when
    /// the error says so.
    fn push_response_error(
        &mut self,
        head: &RequestHead,
        error: &HttpError,
        keep_alive: bool,
        received_at: Instant,
    ) -> Next {
        let keeps = keep_alive && !error.closes_connection();
        let head_only = head.is_head_method(self.input.pending());
        let connection = connection_header(head.version_minor, keeps);
        let head_lines = self.head_lines();
        let body_bytes = error.render(
            &mut self.output,
            head_lines.as_bytes(),
            connection,
            head_only,
        );
        self.log(head, error.status(), body_bytes, received_at);
        if error.closes_connection() {
            Next::Close
        } else {
            Next::KeepAlive
        }
    }

    /// The date line and the current request's id line.
    fn head_lines(&self) -> HeadLines {
        HeadLines::new(&self.core.date_line(), self.request_id.as_str())
    }

    /// Counts a response now in `output` and queues its access-log entry.
    fn log(&mut self, head: &RequestHead, status: u16, body_bytes: usize, received_at: Instant) {
        self.core.gateway_stats().response(status);
        if self.core.access_log.is_some() {
            let line = request_line(head, self.input.pending());
            let entry = self.log_entry(line, status, body_bytes, received_at, None);
            self.log_entries.push(entry);
        }
    }

    /// The access-log entry of the current request (only made when there
    /// is an access log).
    fn log_entry(
        &self,
        request_line: String,
        status: u16,
        body_bytes: usize,
        received_at: Instant,
        worker: Option<usize>,
    ) -> LogEntry {
        LogEntry {
            peer: self.peer,
            request_line,
            status,
            body_bytes,
            received_at,
            request_id: self.request_id,
            function: self.serving.clone(),
            worker,
        }
    }

    /// Appends an error response after which the connection closes.
    fn push_error(&mut self, error: &HttpError, head: Option<(&RequestHead, Instant)>) {
        if head.is_none() {
            // Refused before a head: a request of its own, with its own id.
            self.request_id = self.core.new_request_id();
        }
        let head_only = head.is_some_and(|(h, _)| h.is_head_method(self.input.pending()));
        let head_lines = self.head_lines();
        let body_bytes = error.render(
            &mut self.output,
            head_lines.as_bytes(),
            ConnectionHeader::Close,
            head_only,
        );
        let stats = self.core.gateway_stats();
        stats.response(error.status());
        if let Some(reason) = ParseError::of_status(error.status()) {
            stats.parse_error(reason);
        }
        if self.core.access_log.is_some() {
            let bytes = self.input.pending();
            let (request_line, received_at) = match head {
                Some((h, at)) => (request_line(h, bytes), at),
                None => ("-".to_string(), Instant::now()),
            };
            let entry = self.log_entry(request_line, error.status(), body_bytes, received_at, None);
            self.log_entries.push(entry);
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        let first_byte_at = self.core.access_log.as_ref().map(|_| Instant::now());
        let result = self.stream.write_all(&self.output).await;
        if result.is_ok() {
            self.socket_bytes += self.output.len() as u64;
        }
        self.output.clear();
        if self.output.capacity() > OUTPUT_KEEP_BYTES_MAX {
            self.output = Vec::with_capacity(OUTPUT_INITIAL_BYTES);
        }
        if let (Some(log), Some(first_byte_at)) = (&self.core.access_log, first_byte_at) {
            let last_byte_at = Instant::now();
            for entry in self.log_entries.drain(..) {
                log.record(&entry, first_byte_at, last_byte_at);
            }
        }
        result
    }

    async fn read_until(&mut self, deadline: Instant, stoppable: bool, want: usize) -> ReadOutcome {
        match deadline.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => self.read_more(left, stoppable, want).await,
            _ => ReadOutcome::TimedOut,
        }
    }

    /// One read of up to `want` bytes (more if the buffer has room). A
    /// stoppable read also ends when the core starts shutting down.
    async fn read_more(&mut self, timeout: Duration, stoppable: bool, want: usize) -> ReadOutcome {
        self.input.reserve(want);
        if self.stream.set_read_timeout(Some(timeout)).is_err() {
            return ReadOutcome::TimedOut;
        }
        let stream = &mut self.stream;
        let spare = self.input.spare_mut();
        let core = self.core;
        let result = if stoppable {
            future::or(async { Some(stream.read(spare).await) }, async {
                core.stopped().await;
                None
            })
            .await
        } else {
            Some(stream.read(spare).await)
        };
        match result {
            None => ReadOutcome::Stopped,
            Some(Ok(0)) => ReadOutcome::PeerClosed,
            Some(Ok(n)) => {
                self.input.advance(n);
                ReadOutcome::Data
            }
            Some(Err(error)) if error.kind() == io::ErrorKind::TimedOut => ReadOutcome::TimedOut,
            Some(Err(_)) => ReadOutcome::Failed,
        }
    }

    /// Half-closes and drains what the client still sends, bounded in time
    /// and bytes, so the error response is not lost to a reset.
    async fn linger(&mut self) {
        if self.stream.shutdown(Shutdown::Write).await.is_err() {
            return;
        }
        let deadline = Instant::now() + LINGER;
        let mut drained_bytes = 0;
        while drained_bytes < LINGER_BYTES_MAX {
            self.input = ReadBuf::default();
            match self.read_until(deadline, false, READ_HEAD_BYTES).await {
                ReadOutcome::Data => drained_bytes += self.input.pending().len(),
                _ => return,
            }
        }
    }
}

/// What [`Connection::hand_over`] passes a request to.
struct Handover<'a> {
    to: &'a CoreWorkers,
    descriptor: &'a [u8],
    timeout_ms: u64,
    /// What the request went to, for messages.
    what: &'a str,
    /// The function's name (or route key) and version, for its logs.
    name: &'a str,
    version: u32,
    concurrency: Option<&'a Arc<ConcurrencyLimit>>,
    /// This core's shard of the function's stats.
    stats: Option<&'a Shard>,
    /// Dispatch flags besides the ones the request implies.
    flags: u32,
}

fn elapsed_us(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Where [`Connection::decide`] sends a request.
enum Decision<'t> {
    /// The control API, answered by the control-plane thread.
    Control,
    Admin,
    Route(&'t Route),
    Function(&'t Route, &'t FunctionTarget),
    MethodNotAllowed(String),
    NotFound,
    /// Admission said no (a rate limit).
    Refused(HttpError),
}

impl<'t> Decision<'t> {
    fn route(&self) -> Option<&'t Route> {
        match self {
            Decision::Route(route) | Decision::Function(route, _) => Some(route),
            _ => None,
        }
    }
}

fn request_line(head: &RequestHead, bytes: &[u8]) -> String {
    format!(
        "{} {} HTTP/1.{}",
        head.method(bytes),
        head.target(bytes),
        head.version_minor
    )
}

fn connection_header(version_minor: u8, keep_alive: bool) -> ConnectionHeader {
    match (keep_alive, version_minor) {
        (false, _) => ConnectionHeader::Close,
        (true, 0) => ConnectionHeader::KeepAlive,
        (true, _) => ConnectionHeader::Implicit,
    }
}

/// Bytes written into the TCP socket `fd` by every holder of it so far:
/// sent once (retransmissions aside) or still queued. `None` where the
/// kernel does not say (before Linux 4.19, or not TCP).
fn bytes_written(fd: std::os::fd::RawFd) -> Option<u64> {
    // SAFETY: tcp_info is plain old data; getsockopt writes at most `len`
    // bytes into it and says how many it wrote.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    let needed = std::mem::offset_of!(libc::tcp_info, tcpi_bytes_retrans) + 8;
    if rc != 0 || (len as usize) < needed {
        return None;
    }
    Some(
        info.tcpi_bytes_sent
            .saturating_sub(info.tcpi_bytes_retrans)
            .saturating_add(u64::from(info.tcpi_notsent_bytes)),
    )
}
