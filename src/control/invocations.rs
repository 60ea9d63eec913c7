//! Async invocations, the control plane's side of the durable queue in
//! `registry::invocations`:
//!
//! * the **intake** thread takes requests the API thread accepted, commits
//!   them in groups (one transaction, one fsync under `synchronous = FULL`,
//!   for whatever arrived while the previous commit was on disk) and only
//!   then answers each client `202`; over `--async-queue-max` pending it
//!   answers `503` and stores nothing;
//! * the **dispatcher** thread claims due invocations for free runners,
//!   records the runners' outcomes in one transaction per round, and hands
//!   finished invocations with an `x-callback-url` to a runner for delivery;
//! * **runner** threads call the gateway's own listener over loopback
//!   ([`super::loopback`]), so routing, admission, concurrency limits,
//!   timeouts, stats and logs apply to an attempt as to any call.
//!
//! Delivery is at least once: an attempt cut by a stop is run again after
//! the next start, and an attempt carries `x-corefn-invocation-id` and
//! `x-corefn-attempt` so a function can tell a repeat. Only this module's
//! threads write the queue; none of them runs on a core.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior};
use serde_json::{json, Value};

use super::loopback::{self, LoopbackError};
use crate::clock;
use crate::http::error::{ApiError, ApiErrorKind};
use crate::registry::invocations::{
    self, Claimed, NewInvocation, Next, Outcome, QueuedRequest, State,
};
use crate::registry::keys;
use crate::registry::RegistryError;
use crate::routes::snapshot::SnapshotBoard;
use crate::routes::table::{Lookup, RouteTable};
use crate::schema::file::{Connected, SharedStore, StoreHandle};
use crate::workers::protocol::DispatchHeader;

/// Accepted requests waiting for the intake thread; past this the API
/// thread waits, and with it the cores' hand-overs (backpressure).
const INTAKE_BACKLOG_MAX: usize = 4096;
/// Invocations committed together at most.
const INTAKE_BATCH_MAX: usize = 512;
/// How often the dispatcher looks for retries that came due; new
/// invocations wake it at once.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// One attempt's bound after connecting; the function's own timeout (a
/// 504) normally ends it much sooner.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// A callback is tried this many times, waiting `CALLBACK_RETRY_DELAY`
/// times the attempt number between tries.
const CALLBACK_ATTEMPTS: u32 = 3;
const CALLBACK_RETRY_DELAY: Duration = Duration::from_secs(1);
const CALLBACK_TIMEOUT: Duration = Duration::from_secs(30);
pub const RUNNERS_MAX: usize = 1024;
pub const QUEUE_MAX_MAX: u64 = 100_000_000;

/// Headers of the original request that an attempt does not repeat: the
/// connection's own, the caller's secret (never stored), and the ones the
/// queue sets itself.
const HEADERS_NOT_FORWARDED: &[&str] = &[
    "authorization",
    "connection",
    "content-length",
    "expect",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "x-callback-url",
    "x-corefn-attempt",
    "x-corefn-invocation-id",
    "x-corefn-invocation-type",
    "x-request-id",
];

/// Where and how the queue's threads run.
pub struct AsyncSettings {
    pub store: Arc<SharedStore>,
    /// The gateway's listener, as a loopback client reaches it.
    pub gateway: SocketAddr,
    pub queue_max: u64,
    pub runners: usize,
    pub callback_hosts: Vec<String>,
    /// The published route table: an attempt waits (briefly) for the
    /// function to be served by it.
    pub routes: Arc<SnapshotBoard>,
}

/// How long an attempt waits for its function to be published (the
/// watcher polls every few milliseconds; a deploy and a call queued right
/// after it may arrive before the table has it).
const PUBLISH_WAIT: Duration = Duration::from_secs(1);
const PUBLISH_POLL: Duration = Duration::from_millis(5);

/// A request the API accepted for the queue, with what answering it takes.
pub struct Accepted {
    pub invocation: NewInvocation,
    pub client: OwnedFd,
    /// Which core's channel the dispatch came on (its completion goes back
    /// there).
    pub channel: usize,
    pub header: DispatchHeader,
    pub request_id: String,
    pub started: Instant,
}

/// The API thread's handle on the intake thread.
#[derive(Clone)]
pub struct Intake {
    tx: SyncSender<Accepted>,
}

impl Intake {
    /// Hands `accepted` to the intake thread, which answers its client;
    /// back when that thread is gone.
    pub fn offer(&self, accepted: Accepted) -> Result<(), Box<Accepted>> {
        self.tx.send(accepted).map_err(|error| Box::new(error.0))
    }
}

/// What the dispatcher hears about.
enum Event {
    /// New invocations were committed.
    Wake,
    Attempted(Box<Attempted>),
    CallbackDone,
}

struct Attempted {
    claimed: Claimed,
    answer: Result<loopback::Response, String>,
}

enum Job {
    Attempt(Claimed),
    Callback(Callback),
}

/// A result to POST to a callback URL.
struct Callback {
    url: String,
    id: String,
    state: State,
    status: u16,
    content_type: Option<String>,
    body: Vec<u8>,
}

/// Starts the queue's threads. `channels` are the control plane's ends of
/// the cores' links (duplicates: the intake thread reports completions on
/// them as the API thread does). Queued-but-running rows of an earlier run
/// are queued again before anything is claimed.
pub fn start(settings: AsyncSettings, channels: Vec<OwnedFd>) -> std::io::Result<Intake> {
    assert!(settings.runners >= 1, "the queue has at least one runner");
    // Accepted means on disk: the fsync happens before the 202.
    let intake_db = settings
        .store
        .handle(|connection| {
            connection.busy_timeout(Duration::from_secs(5))?;
            connection.pragma_update(None, "synchronous", "FULL")
        })
        .map_err(std::io::Error::other)?;
    // Outcomes and claims may be lost to a power cut without losing an
    // invocation: the row stays `running` and is queued again at start.
    let dispatch_db = settings
        .store
        .handle(|connection| {
            connection.busy_timeout(Duration::from_secs(5))?;
            connection.pragma_update(None, "synchronous", "NORMAL")
        })
        .map_err(std::io::Error::other)?;
    let queued = {
        let connection = dispatch_db.connect().map_err(std::io::Error::other)?;
        take_up_queue(&connection).map_err(std::io::Error::other)?
    };
    let pending = Arc::new(AtomicU64::new(queued));

    let (events_tx, events_rx) = mpsc::channel::<Event>();
    let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
    let jobs_rx = Arc::new(Mutex::new(jobs_rx));
    for _ in 0..settings.runners {
        let jobs = jobs_rx.clone();
        let events = events_tx.clone();
        let gateway = settings.gateway;
        let callback_hosts = settings.callback_hosts.clone();
        let routes = settings.routes.clone();
        thread::Builder::new()
            .name("corefn-async-run".into())
            .spawn(move || run_jobs(&jobs, &events, gateway, &callback_hosts, &routes))?;
    }
    let dispatcher = Dispatcher {
        store: dispatch_db,
        unavailable: None,
        jobs: jobs_tx,
        pending: pending.clone(),
        runners: settings.runners,
        busy: 0,
        random: seed(),
    };
    thread::Builder::new()
        .name("corefn-async".into())
        .spawn(move || dispatcher.run(&events_rx))?;

    let (tx, rx) = mpsc::sync_channel::<Accepted>(INTAKE_BACKLOG_MAX);
    let queue_max = settings.queue_max;
    thread::Builder::new()
        .name("corefn-intake".into())
        .spawn(move || intake(&intake_db, &rx, &channels, &pending, queue_max, &events_tx))?;
    Ok(Intake { tx })
}

/// What a store holds for the queue when corefn starts on it (or switches
/// to it): rows a stop cut while running are queued again; returns how
/// many are pending.
fn take_up_queue(connection: &Connection) -> Result<u64, RegistryError> {
    let requeued = invocations::requeue_running(connection, clock::unix_now_us())?;
    if requeued > 0 {
        eprintln!("corefn: async: {requeued} invocations cut by the last stop are queued again");
    }
    invocations::pending(connection)
}

/// The intake loop: a batch is what arrived while the last commit ran.
fn intake(
    store: &StoreHandle,
    rx: &Receiver<Accepted>,
    channels: &[OwnedFd],
    pending: &AtomicU64,
    queue_max: u64,
    wake: &Sender<Event>,
) {
    let mut last_error: Option<String> = None;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < INTAKE_BATCH_MAX {
            match rx.try_recv() {
                Ok(accepted) => batch.push(accepted),
                Err(_) => break,
            }
        }
        let room = queue_max.saturating_sub(pending.load(Ordering::Acquire));
        let fits = batch.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let refused = batch.split_off(fits);
        let stored = if batch.is_empty() {
            Ok(())
        } else {
            store
                .connect()
                .map_err(|error| error.to_string())
                .and_then(|mut connection| {
                    invocations::enqueue(
                        &mut connection,
                        batch.iter().map(|a| &a.invocation),
                        clock::unix_now_us(),
                    )
                    .map_err(|error| error.to_string())
                })
        };
        match stored {
            Ok(()) => {
                last_error = None;
                pending.fetch_add(batch.len() as u64, Ordering::AcqRel);
                for accepted in &batch {
                    let id = &accepted.invocation.id;
                    let status_url =
                        format!("{}invocations/{id}", crate::http::rules::API_PATH_PREFIX);
                    let body = json!({
                        "id": id,
                        "function": accepted.invocation.request.function,
                        "state": "queued",
                        "status_url": status_url,
                    });
                    let location = [("location", status_url.as_str())];
                    answer(channels, accepted, 202, &body, &location);
                }
                if !batch.is_empty() {
                    let _ = wake.send(Event::Wake);
                }
            }
            Err(error) => {
                // Said once per kind: a store being switched refuses
                // every batch until it is back.
                if last_error.as_ref() != Some(&error) {
                    eprintln!(
                        "corefn: async: cannot queue {} invocations: {error}",
                        batch.len()
                    );
                    last_error = Some(error.clone());
                }
                let refusal = ApiError::new(
                    ApiErrorKind::Unavailable,
                    format_args!("cannot queue the invocation: {error}"),
                );
                for accepted in &batch {
                    answer(
                        channels,
                        accepted,
                        refusal.status(),
                        &refusal.to_json(),
                        &[],
                    );
                }
            }
        }
        if !refused.is_empty() {
            let full = ApiError::new(
                ApiErrorKind::Unavailable,
                format_args!(
                    "the async queue is full ({queue_max} invocations pending, \
                     --async-queue-max): try again later"
                ),
            );
            for accepted in &refused {
                answer(
                    channels,
                    accepted,
                    full.status(),
                    &full.to_json(),
                    &[("retry-after", "1")],
                );
            }
        }
    }
}

/// Writes the answer to the accepted request's client and reports the
/// completion on its core's channel.
fn answer(
    channels: &[OwnedFd],
    accepted: &Accepted,
    status: u16,
    body: &Value,
    headers: &[(&str, &str)],
) {
    let bytes = super::api::json_response(
        &accepted.header,
        &accepted.request_id,
        status,
        body,
        headers,
    );
    if let Some(channel) = channels.get(accepted.channel) {
        super::reply(
            channel.as_fd(),
            accepted.client.as_fd(),
            &accepted.header,
            status,
            &bytes,
            accepted.started,
        );
    }
}

/// The dispatcher's state: runners it has work out with, and its own
/// connection.
struct Dispatcher {
    store: StoreHandle,
    /// Why the store was last unavailable (said once until it is back).
    unavailable: Option<String>,
    jobs: Sender<Job>,
    pending: Arc<AtomicU64>,
    runners: usize,
    busy: usize,
    random: u64,
}

impl Dispatcher {
    fn run(mut self, events: &Receiver<Event>) {
        loop {
            let mut attempted = Vec::new();
            match events.recv_timeout(POLL_INTERVAL) {
                Ok(event) => self.take(event, &mut attempted),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            while let Ok(event) = events.try_recv() {
                self.take(event, &mut attempted);
            }
            if !attempted.is_empty() {
                self.record(attempted);
            }
            self.claim();
        }
    }

    /// A runner is free again after an attempt (kept in `attempted` for
    /// this round's record) or a callback.
    fn take(&mut self, event: Event, attempted: &mut Vec<Attempted>) {
        match event {
            Event::Wake => {}
            Event::Attempted(done) => {
                self.busy = self.busy.saturating_sub(1);
                attempted.push(*done);
            }
            Event::CallbackDone => self.busy = self.busy.saturating_sub(1),
        }
    }

    /// One transaction for the round's outcomes; finished invocations
    /// with a callback URL go to a runner for delivery.
    fn record(&mut self, attempted: Vec<Attempted>) {
        let now_us = clock::unix_now_us();
        let mut callbacks = Vec::new();
        let mut finished = 0u64;
        // The rows stay `running` while the store is away: the next start
        // (or switch) queues them again.
        let Some(mut connection) = connect(&self.store, &self.pending, &mut self.unavailable)
        else {
            return;
        };
        let recorded = (|| -> Result<(), RegistryError> {
            let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for done in &attempted {
                let (status, headers_json, body, error) = match &done.answer {
                    Ok(response) => (
                        response.status,
                        headers_json(&response.headers),
                        response.body.as_slice(),
                        None,
                    ),
                    Err(error) => (0, "[]".to_string(), &[][..], Some(error.as_str())),
                };
                let outcome = Outcome {
                    status,
                    headers_json: &headers_json,
                    body,
                    error,
                };
                self.random = next_random(self.random);
                match invocations::finish(&tx, &done.claimed.id, &outcome, now_us, self.random) {
                    Ok(Next::Done(state)) => {
                        finished += 1;
                        if let Some(url) = &done.claimed.request.callback_url {
                            let content_type = done.answer.as_ref().ok().and_then(|r| {
                                r.headers
                                    .iter()
                                    .find(|(name, _)| name == "content-type")
                                    .map(|(_, value)| value.clone())
                            });
                            callbacks.push(Callback {
                                url: url.clone(),
                                id: done.claimed.id.clone(),
                                state,
                                status,
                                content_type,
                                body: body[..body.len().min(invocations::RESULT_BODY_BYTES_MAX)]
                                    .to_vec(),
                            });
                        }
                    }
                    Ok(Next::RetryAt { .. }) => {}
                    // A row deleted under the queue: nothing is left to do.
                    Err(RegistryError::Invalid(message)) => {
                        eprintln!("corefn: async: {message}");
                        finished += 1;
                    }
                    Err(error) => return Err(error),
                }
            }
            tx.commit()?;
            Ok(())
        })();
        match recorded {
            Ok(()) => {
                self.pending.fetch_sub(
                    finished.min(self.pending.load(Ordering::Acquire)),
                    Ordering::AcqRel,
                );
                for callback in callbacks {
                    if self.jobs.send(Job::Callback(callback)).is_ok() {
                        self.busy += 1;
                    }
                }
            }
            // The rows stay `running`: the next start queues them again
            // (at least once), so nothing is lost, only delayed.
            Err(error) => eprintln!(
                "corefn: async: cannot record {} outcomes: {error}",
                attempted.len()
            ),
        }
    }

    /// Claims due invocations for the free runners.
    fn claim(&mut self) {
        let free = self.runners.saturating_sub(self.busy);
        if free == 0 {
            return;
        }
        let now_us = clock::unix_now_us();
        let Some(mut connection) = connect(&self.store, &self.pending, &mut self.unavailable)
        else {
            return;
        };
        match invocations::next_due_us(&connection) {
            Ok(Some(due_us)) if due_us <= now_us => {}
            Ok(_) => return,
            Err(error) => {
                eprintln!("corefn: async: cannot read the queue: {error}");
                return;
            }
        }
        match invocations::claim_due(&mut connection, now_us, free) {
            Ok(claimed) => {
                for claimed in claimed {
                    if self.jobs.send(Job::Attempt(claimed)).is_ok() {
                        self.busy += 1;
                    }
                }
            }
            Err(error) => eprintln!("corefn: async: cannot claim invocations: {error}"),
        }
    }
}

/// The dispatcher's connection; `None` while the store is unavailable
/// (said once). A file switched to has its queue taken up as at start.
fn connect<'s>(
    store: &'s StoreHandle,
    pending: &AtomicU64,
    unavailable: &mut Option<String>,
) -> Option<Connected<'s>> {
    match store.connect() {
        Ok(connection) => {
            *unavailable = None;
            if connection.switched {
                match take_up_queue(&connection) {
                    Ok(queued) => pending.store(queued, Ordering::Release),
                    Err(error) => {
                        eprintln!("corefn: async: cannot read the new store's queue: {error}")
                    }
                }
            }
            Some(connection)
        }
        Err(error) => {
            let text = error.to_string();
            if unavailable.as_ref() != Some(&text) {
                eprintln!("corefn: async: {text}; queued invocations wait for it");
                *unavailable = Some(text);
            }
            None
        }
    }
}

fn run_jobs(
    jobs: &Mutex<Receiver<Job>>,
    events: &Sender<Event>,
    gateway: SocketAddr,
    callback_hosts: &[String],
    routes: &SnapshotBoard,
) {
    let mut unpublished = Unpublished::default();
    loop {
        let job = {
            let receiver = jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            receiver.recv()
        };
        let event = match job {
            Ok(Job::Attempt(claimed)) => {
                unpublished.wait_for(routes, &claimed.request);
                let answer = attempt(gateway, &claimed).map_err(|e| e.to_string());
                Event::Attempted(Box::new(Attempted { claimed, answer }))
            }
            Ok(Job::Callback(callback)) => {
                deliver(&callback, callback_hosts);
                Event::CallbackDone
            }
            Err(_) => return,
        };
        if events.send(event).is_err() {
            return;
        }
    }
}

/// Functions a runner waited for in vain, with the table version it
/// gave up at: a deleted function's queued calls cost one wait per table
/// version, not one per call.
#[derive(Default)]
struct Unpublished {
    given_up_at: HashMap<String, u64>,
}

impl Unpublished {
    /// Returns once the published table routes `request` (or after
    /// [`PUBLISH_WAIT`]); the attempt then goes ahead either way.
    fn wait_for(&mut self, routes: &SnapshotBoard, request: &QueuedRequest) {
        let path = request.path.split('?').next().unwrap_or("/");
        // Published, and taken up by every core (each adopts a new table
        // at its next housekeeping tick).
        let routed = |table: &RouteTable| {
            !matches!(table.lookup(&request.method, path), Lookup::NotFound)
                && routes.adopted_by_every_copy(table.version())
        };
        let table = routes.current();
        if routed(&table) {
            self.given_up_at.remove(&request.function);
            return;
        }
        if self.given_up_at.get(&request.function) == Some(&table.version()) {
            return;
        }
        let deadline = Instant::now() + PUBLISH_WAIT;
        loop {
            thread::sleep(PUBLISH_POLL);
            let table = routes.current();
            if routed(&table) {
                self.given_up_at.remove(&request.function);
                return;
            }
            if Instant::now() >= deadline {
                self.given_up_at
                    .insert(request.function.clone(), table.version());
                return;
            }
        }
    }
}

/// One attempt through the gateway.
fn attempt(gateway: SocketAddr, claimed: &Claimed) -> Result<loopback::Response, LoopbackError> {
    let request = &claimed.request;
    let mut headers: Vec<(String, String)> =
        serde_json::from_str(&request.headers_json).unwrap_or_default();
    headers.push((
        "x-request-id".into(),
        format!("{}-{}", claimed.id, claimed.attempt),
    ));
    headers.push(("x-corefn-invocation-id".into(), claimed.id.clone()));
    headers.push(("x-corefn-attempt".into(), claimed.attempt.to_string()));
    loopback::send(
        gateway,
        &loopback::Request {
            method: &request.method,
            target: &request.path,
            headers: &headers,
            body: &request.body,
            timeout: ATTEMPT_TIMEOUT,
        },
    )
}

/// POSTs a finished invocation's result to its callback URL, retrying a
/// refused connection or a 5xx a few times.
fn deliver(callback: &Callback, allowed_hosts: &[String]) {
    let target = match CallbackUrl::parse(&callback.url, allowed_hosts) {
        Ok(target) => target,
        Err(error) => {
            eprintln!("corefn: async: callback of {}: {error}", callback.id);
            return;
        }
    };
    let mut headers = vec![
        ("host".to_string(), target.host_header.clone()),
        ("user-agent".to_string(), "corefn-async".to_string()),
        ("x-corefn-invocation-id".to_string(), callback.id.clone()),
        (
            "x-corefn-function-status".to_string(),
            callback.status.to_string(),
        ),
        (
            "x-corefn-invocation-state".to_string(),
            callback.state.name().to_string(),
        ),
    ];
    if let Some(content_type) = &callback.content_type {
        headers.push(("content-type".into(), content_type.clone()));
    }
    for attempt in 1..=CALLBACK_ATTEMPTS {
        let outcome = target.resolve().and_then(|addr| {
            loopback::send(
                addr,
                &loopback::Request {
                    method: "POST",
                    target: &target.path,
                    headers: &headers,
                    body: &callback.body,
                    timeout: CALLBACK_TIMEOUT,
                },
            )
            .map_err(|e| e.to_string())
        });
        match outcome {
            Ok(response) if response.status < 500 => return,
            Ok(response) => eprintln!(
                "corefn: async: callback of {} to {}: status {} (try {attempt} of {CALLBACK_ATTEMPTS})",
                callback.id, callback.url, response.status
            ),
            Err(error) => eprintln!(
                "corefn: async: callback of {} to {}: {error} (try {attempt} of {CALLBACK_ATTEMPTS})",
                callback.id, callback.url
            ),
        }
        if attempt < CALLBACK_ATTEMPTS {
            thread::sleep(CALLBACK_RETRY_DELAY * attempt);
        }
    }
}

/// An `x-callback-url`: plain `http://`, to a loopback address or a host
/// of `--callback-allow-host`, so a caller cannot make corefn send
/// requests into the network on its behalf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackUrl {
    host: String,
    port: u16,
    host_header: String,
    path: String,
}

impl CallbackUrl {
    pub fn parse(url: &str, allowed_hosts: &[String]) -> Result<CallbackUrl, String> {
        if url.len() > 2048 || url.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err("x-callback-url must be one URL of at most 2048 visible characters".into());
        }
        let rest = url
            .strip_prefix("http://")
            .ok_or("x-callback-url must be an http:// URL")?;
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err("x-callback-url may not carry credentials".into());
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or("x-callback-url: bad IPv6 host")?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        let port = match port {
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or("x-callback-url: bad port")?,
            None => 80,
        };
        let host = host.to_ascii_lowercase();
        if host.is_empty() {
            return Err("x-callback-url has no host".into());
        }
        let loopback =
            host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if !loopback && !allowed_hosts.iter().any(|h| h.eq_ignore_ascii_case(&host)) {
            return Err(format!(
                "x-callback-url host {host} is not loopback nor allowed (--callback-allow-host)"
            ));
        }
        Ok(CallbackUrl {
            host_header: authority.to_string(),
            host,
            port,
            path: path.to_string(),
        })
    }

    fn resolve(&self) -> Result<SocketAddr, String> {
        let host = if self.host == "localhost" {
            "127.0.0.1"
        } else {
            &self.host
        };
        (host, self.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", self.host))?
            .next()
            .ok_or_else(|| format!("{} has no address", self.host))
    }
}

/// The headers of a request, as the queue stores them.
pub fn forwarded_headers(headers: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|h| {
            !HEADERS_NOT_FORWARDED
                .iter()
                .any(|skip| h.name.eq_ignore_ascii_case(skip))
        })
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}

/// `[[name, value], ...]`.
pub fn headers_json(headers: &[(String, String)]) -> String {
    let pairs: Vec<[&str; 2]> = headers
        .iter()
        .filter(|(name, _)| name != "connection" && name != "transfer-encoding")
        .map(|(name, value)| [name.as_str(), value.as_str()])
        .collect();
    serde_json::to_string(&pairs).unwrap_or_else(|_| "[]".into())
}

/// New invocation ids: 32 hex digits, the time in µs (so ids sort by
/// when they were made) and 64 bits of a generator seeded by the OS,
/// which does not repeat within its period.
pub struct IdMaker {
    random: u64,
}

impl IdMaker {
    pub fn new() -> IdMaker {
        IdMaker { random: seed() }
    }

    pub fn next_id(&mut self) -> String {
        self.random = next_random(self.random);
        format!("{:016x}{:016x}", clock::unix_now_us(), self.random)
    }
}

impl Default for IdMaker {
    fn default() -> IdMaker {
        IdMaker::new()
    }
}

fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    match keys::os_random(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes) | 1,
        Err(_) => clock::unix_now_us() | 1,
    }
}

/// xorshift64: jitter and id bits, not secrets.
fn next_random(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// The queue's flags, checked once at start.
pub fn validate(queue_max: u64, runners: usize) -> Result<(), String> {
    if !(1..=QUEUE_MAX_MAX).contains(&queue_max) {
        return Err(format!(
            "--async-queue-max {queue_max} is outside 1..={QUEUE_MAX_MAX}"
        ));
    }
    if !(1..=RUNNERS_MAX).contains(&runners) {
        return Err(format!(
            "--async-runners {runners} is outside 1..={RUNNERS_MAX}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_urls_must_be_loopback_or_allowed() {
        let allowed = vec!["hooks.internal".to_string()];
        let url = CallbackUrl::parse("http://127.0.0.1:9000/done?x=1", &allowed).expect("ok");
        assert_eq!((url.port, url.path.as_str()), (9000, "/done?x=1"));
        assert!(CallbackUrl::parse("http://[::1]:80/", &allowed).is_ok());
        assert!(CallbackUrl::parse("http://localhost", &allowed).is_ok());
        assert!(CallbackUrl::parse("http://HOOKS.internal:8080/a", &allowed).is_ok());
        for bad in [
            "https://127.0.0.1/",
            "http://example.com/",
            "http://10.0.0.1/",
            "http://user@127.0.0.1/",
            "http://127.0.0.1:0/",
            "http://127.0.0.1:99999/",
            "http:///x",
            "http://127.0.0.1/a b",
            "ftp://127.0.0.1/",
        ] {
            assert!(CallbackUrl::parse(bad, &allowed).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_and_connection_headers_are_not_stored() {
        let headers = [
            httparse::Header {
                name: "Authorization",
                value: b"Bearer secret",
            },
            httparse::Header {
                name: "Content-Type",
                value: b"application/json",
            },
            httparse::Header {
                name: "X-Callback-Url",
                value: b"http://127.0.0.1/",
            },
            httparse::Header {
                name: "Host",
                value: b"greet.localhost",
            },
        ];
        assert_eq!(
            forwarded_headers(&headers),
            vec![
                ("content-type".to_string(), "application/json".to_string()),
                ("host".to_string(), "greet.localhost".to_string()),
            ]
        );
    }

    #[test]
    fn ids_do_not_repeat() {
        let mut ids = IdMaker::new();
        let made: std::collections::HashSet<String> = (0..10_000).map(|_| ids.next_id()).collect();
        assert_eq!(made.len(), 10_000);
        assert!(made.iter().all(|id| id.len() == 32));
    }
}
