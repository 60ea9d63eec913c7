//! The load: pacing, one connection's request loop, and the run that starts
//! one thread per connection.
//!
//! Owns the measurement rules. A request belongs to the measured window when
//! it is sent inside it. In closed-loop mode a request is due when it is
//! sent; in open-loop mode it is due at its slot in the connection's fixed
//! schedule, and its latency is counted from then (wrk2's correction for
//! coordinated omission: a server that stalls is charged for every request
//! that should have gone out during the stall). The request loop (`drive`)
//! works on a `Link`, so the same code runs over TCP and, in tests, against a
//! simulated server in virtual time. Uses std threads and blocking sockets
//! only: the generator shares nothing with the server's runtime.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::args::{Config, Mode, RouteRequest};
use crate::histogram::LatencyHistogram;

/// Pause after a failed connect before the next attempt, so a closed port is
/// reported as errors instead of a busy loop.
const CONNECT_RETRY_MS: u64 = 10;
/// Largest response head; a bigger one is a read error.
const RESPONSE_HEAD_BYTES_MAX: usize = 64 * 1024;
/// Most header fields in one response.
const RESPONSE_HEADERS_MAX: usize = 100;
/// Read buffer of one connection.
const READ_BUF_BYTES: usize = 64 * 1024;
/// Stack of a connection thread: the loop holds little besides its buffer
/// (on the heap) and the histogram (on the heap).
const THREAD_STACK_BYTES: usize = 256 * 1024;
/// Longest the weighted route sequence may get (sum of the weights).
const MIX_LEN_MAX: usize = 64 * 1000;

/// Why a request got no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Connect,
    Write,
    Read,
    Timeout,
}

/// What one request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Response { status: u16 },
    Error(ErrorKind),
}

/// Counts of one connection, or of the run once merged.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Requests sent in the measured window (each got a response or an error).
    pub requests: u64,
    pub status_2xx: u64,
    pub status_3xx: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    pub errors_connect: u64,
    pub errors_write: u64,
    pub errors_read: u64,
    pub errors_timeout: u64,
    /// Connections reopened after the server asked to close (not errors).
    pub reconnects: u64,
    /// Open loop: requests due before the window ended that were never sent
    /// (the connection was behind schedule then).
    pub unsent: u64,
}

impl Counts {
    pub fn errors(&self) -> u64 {
        self.errors_connect + self.errors_write + self.errors_read + self.errors_timeout
    }

    fn add(&mut self, o: &Counts) {
        self.requests += o.requests;
        self.status_2xx += o.status_2xx;
        self.status_3xx += o.status_3xx;
        self.status_4xx += o.status_4xx;
        self.status_5xx += o.status_5xx;
        self.errors_connect += o.errors_connect;
        self.errors_write += o.errors_write;
        self.errors_read += o.errors_read;
        self.errors_timeout += o.errors_timeout;
        self.reconnects += o.reconnects;
        self.unsent += o.unsent;
    }

    fn count(&mut self, outcome: Outcome) {
        self.requests += 1;
        match outcome {
            Outcome::Response { status } => match status {
                200..=299 => self.status_2xx += 1,
                300..=399 => self.status_3xx += 1,
                400..=499 => self.status_4xx += 1,
                _ => self.status_5xx += 1,
            },
            Outcome::Error(ErrorKind::Connect) => self.errors_connect += 1,
            Outcome::Error(ErrorKind::Write) => self.errors_write += 1,
            Outcome::Error(ErrorKind::Read) => self.errors_read += 1,
            Outcome::Error(ErrorKind::Timeout) => self.errors_timeout += 1,
        }
    }
}

/// Measured results of one connection, or of the run once merged.
#[derive(Default)]
pub struct Stats {
    pub counts: Counts,
    /// Latencies of the responses (errors have none), in microseconds.
    pub latency: LatencyHistogram,
}

impl Stats {
    pub fn merge(&mut self, o: &Stats) {
        self.counts.add(&o.counts);
        self.latency.merge(&o.latency);
    }
}

/// Live totals over all connections, warm-up included, for the progress line.
#[derive(Default)]
pub struct Progress {
    pub completed: AtomicU64,
    pub errors: AtomicU64,
}

/// The measured window, in nanoseconds since the run started.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start_ns: u64,
    pub end_ns: u64,
}

/// When each request of one connection is due.
#[derive(Debug, Clone)]
pub enum Pacer {
    /// Due when sent.
    Closed,
    /// Due at `offset_ns + k × interval_ns` for the k-th request.
    Open {
        offset_ns: f64,
        interval_ns: f64,
        next: u64,
    },
}

impl Pacer {
    /// The pacer of connection `index` of `connections`: in open-loop mode
    /// the rate is split evenly and the schedules are staggered so the
    /// connections do not send in bursts.
    pub fn for_connection(mode: Mode, index: usize, connections: usize) -> Pacer {
        match mode {
            Mode::Closed => Pacer::Closed,
            Mode::Open { rate_rps } => {
                let interval_ns = 1e9 * connections as f64 / rate_rps;
                Pacer::Open {
                    offset_ns: interval_ns * index as f64 / connections as f64,
                    interval_ns,
                    next: 0,
                }
            }
        }
    }

    /// When the next request is due, given the time now.
    pub fn due_ns(&self, now_ns: u64) -> u64 {
        match self {
            Pacer::Closed => now_ns,
            Pacer::Open {
                offset_ns,
                interval_ns,
                next,
            } => (offset_ns + interval_ns * *next as f64) as u64,
        }
    }

    /// Requests due in `[from_ns, to_ns)` from the next one on: what a
    /// connection that stops now leaves unsent (none in closed loop).
    pub fn due_between(&self, from_ns: u64, to_ns: u64) -> u64 {
        match *self {
            Pacer::Closed => 0,
            Pacer::Open {
                offset_ns,
                interval_ns,
                next,
            } => {
                let due = |k: u64| (offset_ns + interval_ns * k as f64) as u64;
                // The first k due at or after `t`: estimated, then corrected
                // against `due` itself so it agrees with the schedule exactly.
                let first_at = |t: u64| {
                    let mut k = ((t as f64 - offset_ns) / interval_ns).ceil().max(0.0) as u64;
                    while k > 0 && due(k - 1) >= t {
                        k -= 1;
                    }
                    while due(k) < t {
                        k += 1;
                    }
                    k
                };
                let lo = first_at(from_ns).max(next);
                first_at(to_ns).saturating_sub(lo)
            }
        }
    }

    /// Moves on to the next request.
    pub fn advance(&mut self) {
        if let Pacer::Open { next, .. } = self {
            *next += 1;
        }
    }
}

/// Latency of a request: from when it was due (not when it went out) to
/// its response.
pub fn latency_us(due_ns: u64, done_ns: u64) -> u64 {
    debug_assert!(done_ns >= due_ns, "a response cannot precede its request");
    done_ns.saturating_sub(due_ns) / 1000
}

/// The order in which a connection cycles through weighted routes: smooth
/// weighted round-robin, so weights 3:1 give A A B A, not A A A B, and every
/// cycle holds each route exactly `weight` times.
pub fn mix_sequence(weights: &[u32]) -> Vec<usize> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    assert!(
        total > 0 && total as usize <= MIX_LEN_MAX,
        "weights are validated"
    );
    let mut current = vec![0i64; weights.len()];
    let mut seq = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, &w) in current.iter_mut().zip(weights) {
            *c += i64::from(w);
        }
        let (best, _) = current
            .iter()
            .enumerate()
            .max_by_key(|&(i, &c)| (c, std::cmp::Reverse(i)))
            .expect("at least one route");
        current[best] -= total;
        seq.push(best);
    }
    seq
}

/// What the request loop needs from a connection and a clock.
pub trait Link {
    /// Nanoseconds since the run started.
    fn now_ns(&mut self) -> u64;
    /// Returns at `t_ns` (or at once if that is past).
    fn wait_until_ns(&mut self, t_ns: u64);
    /// Sends route `route`'s request and reads its response.
    fn exchange(&mut self, route: usize) -> Outcome;
}

/// One connection's life: pace, send, read, record, until the next request
/// would be due after the window or the window is over. A connection still
/// behind schedule at the end does not catch up (that could outlast the
/// window by any amount): its remaining due requests are counted as unsent.
/// `first_route` staggers connections over the mix.
pub fn drive<L: Link>(
    link: &mut L,
    pacer: &mut Pacer,
    window: Window,
    mix: &[usize],
    first_route: usize,
    progress: &Progress,
) -> Stats {
    let mut stats = Stats::default();
    let mut n = first_route;
    loop {
        let now_ns = link.now_ns();
        let due_ns = pacer.due_ns(now_ns);
        if due_ns >= window.end_ns || now_ns >= window.end_ns {
            stats.counts.unsent = pacer.due_between(0, window.end_ns);
            break;
        }
        let sent_ns = if due_ns > now_ns {
            link.wait_until_ns(due_ns);
            due_ns
        } else {
            now_ns
        };
        let route = mix[n % mix.len()];
        n += 1;
        let outcome = link.exchange(route);
        let done_ns = link.now_ns();
        pacer.advance();
        progress.completed.fetch_add(1, Ordering::Relaxed);
        if let Outcome::Error(_) = outcome {
            progress.errors.fetch_add(1, Ordering::Relaxed);
        }
        if sent_ns >= window.start_ns {
            stats.counts.count(outcome);
            if let Outcome::Response { .. } = outcome {
                stats.latency.record_us(latency_us(due_ns, done_ns));
            }
        }
    }
    stats
}

/// A keep-alive TCP connection that reopens itself when needed.
struct TcpLink<'a> {
    addr: SocketAddr,
    timeout: Duration,
    routes: &'a [RouteRequest],
    run_start: Instant,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    /// Unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    reconnects: u64,
}

/// A failed read or write, already classified.
type IoResult<T> = Result<T, ErrorKind>;

fn classify(e: &io::Error, otherwise: ErrorKind) -> ErrorKind {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ErrorKind::Timeout,
        _ => otherwise,
    }
}

/// The framing of a parsed response head.
struct Head {
    status: u16,
    head_bytes: usize,
    content_length: Option<u64>,
    chunked: bool,
    close: bool,
}

/// Parses a response head at the start of `data`; `Ok(None)` when more
/// bytes are needed.
fn parse_head(data: &[u8]) -> IoResult<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; RESPONSE_HEADERS_MAX];
    let mut resp = httparse::Response::new(&mut headers);
    let head_bytes = match resp.parse(data) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(ErrorKind::Read),
    };
    let status = resp.code.ok_or(ErrorKind::Read)?;
    let mut content_length = None;
    let mut chunked = false;
    // HTTP/1.0 closes unless it says keep-alive; 1.1 keeps unless it says close.
    let mut close = resp.version == Some(0);
    for h in resp.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| ErrorKind::Read)?
            .trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            content_length = Some(value.parse::<u64>().map_err(|_| ErrorKind::Read)?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().ends_with("chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',') {
                let token = token.trim();
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    close = false;
                }
            }
        }
    }
    Ok(Some(Head {
        status,
        head_bytes,
        content_length,
        chunked,
        close,
    }))
}

impl<'a> TcpLink<'a> {
    fn new(
        addr: SocketAddr,
        timeout: Duration,
        routes: &'a [RouteRequest],
        run_start: Instant,
    ) -> Self {
        TcpLink {
            addr,
            timeout,
            routes,
            run_start,
            stream: None,
            buf: vec![0; READ_BUF_BYTES],
            start: 0,
            end: 0,
            reconnects: 0,
        }
    }

    fn connect(&mut self) -> IoResult<()> {
        let stream = TcpStream::connect_timeout(&self.addr, self.timeout)
            // A refused or timed-out connect is a connect error either way.
            .map_err(|_| ErrorKind::Connect)?;
        let setup = stream
            .set_nodelay(true)
            .and_then(|_| stream.set_read_timeout(Some(self.timeout)))
            .and_then(|_| stream.set_write_timeout(Some(self.timeout)));
        setup.map_err(|_| ErrorKind::Connect)?;
        self.stream = Some(stream);
        self.start = 0;
        self.end = 0;
        Ok(())
    }

    /// Reads more bytes into the buffer, compacting it first; EOF is an error.
    fn fill(&mut self) -> IoResult<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            return Err(ErrorKind::Read);
        }
        let stream = self.stream.as_mut().expect("connected");
        match stream.read(&mut self.buf[self.end..]) {
            Ok(0) => Err(ErrorKind::Read),
            Ok(n) => {
                self.end += n;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(classify(&e, ErrorKind::Read)),
        }
    }

    /// Discards `n` body bytes.
    fn skip(&mut self, mut n: u64) -> IoResult<()> {
        loop {
            let buffered = (self.end - self.start) as u64;
            let take = buffered.min(n);
            self.start += take as usize;
            n -= take;
            if n == 0 {
                return Ok(());
            }
            self.start = 0;
            self.end = 0;
            self.fill()?;
        }
    }

    /// Reads one CRLF-terminated line's length (without the CRLF) and
    /// consumes it.
    fn line(&mut self) -> IoResult<usize> {
        loop {
            let data = &self.buf[self.start..self.end];
            if let Some(i) = data.windows(2).position(|w| w == b"\r\n") {
                self.start += i + 2;
                return Ok(i);
            }
            self.fill()?;
        }
    }

    fn skip_chunked(&mut self) -> IoResult<()> {
        loop {
            let size = loop {
                match httparse::parse_chunk_size(&self.buf[self.start..self.end]) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        self.start += used;
                        break size;
                    }
                    Ok(httparse::Status::Partial) => self.fill()?,
                    Err(_) => return Err(ErrorKind::Read),
                }
            };
            if size == 0 {
                // Trailers, then the empty line.
                while self.line()? > 0 {}
                return Ok(());
            }
            self.skip(size)?;
            if self.line()? != 0 {
                return Err(ErrorKind::Read);
            }
        }
    }

    fn read_to_eof(&mut self) -> IoResult<()> {
        loop {
            self.start = 0;
            self.end = 0;
            match self.fill() {
                Ok(()) => {}
                Err(ErrorKind::Read) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads one final response; returns its status and whether the
    /// connection must be closed after it.
    fn read_response(&mut self, has_body: bool) -> IoResult<(u16, bool)> {
        loop {
            let head = loop {
                if let Some(head) = parse_head(&self.buf[self.start..self.end])? {
                    break head;
                }
                if self.end - self.start >= RESPONSE_HEAD_BYTES_MAX {
                    return Err(ErrorKind::Read);
                }
                self.fill()?;
            };
            self.start += head.head_bytes;
            if (100..200).contains(&head.status) {
                continue; // interim response; the final one follows
            }
            let no_body = !has_body || head.status == 204 || head.status == 304;
            let mut close = head.close;
            if no_body {
            } else if head.chunked {
                self.skip_chunked()?;
            } else if let Some(n) = head.content_length {
                self.skip(n)?;
            } else {
                self.read_to_eof()?;
                close = true;
            }
            return Ok((head.status, close));
        }
    }
}

impl Link for TcpLink<'_> {
    fn now_ns(&mut self) -> u64 {
        self.run_start.elapsed().as_nanos() as u64
    }

    fn wait_until_ns(&mut self, t_ns: u64) {
        let now_ns = self.now_ns();
        if t_ns > now_ns {
            thread::sleep(Duration::from_nanos(t_ns - now_ns));
        }
    }

    fn exchange(&mut self, route: usize) -> Outcome {
        if self.stream.is_none() {
            if let Err(kind) = self.connect() {
                thread::sleep(Duration::from_millis(CONNECT_RETRY_MS));
                return Outcome::Error(kind);
            }
        }
        let request = &self.routes[route];
        let stream = self.stream.as_mut().expect("connected");
        if let Err(e) = stream.write_all(&request.bytes) {
            self.stream = None;
            return Outcome::Error(classify(&e, ErrorKind::Write));
        }
        match self.read_response(request.response_has_body) {
            Ok((status, close)) => {
                if close {
                    self.stream = None;
                    self.reconnects += 1;
                }
                Outcome::Response { status }
            }
            Err(kind) => {
                self.stream = None;
                Outcome::Error(kind)
            }
        }
    }
}

/// Runs one connection over TCP.
fn run_connection(
    index: usize,
    config: &Config,
    mix: &[usize],
    window: Window,
    run_start: Instant,
    progress: &Progress,
) -> Stats {
    let mut link = TcpLink::new(
        config.target.addr,
        config.timeout,
        &config.routes,
        run_start,
    );
    let mut pacer = Pacer::for_connection(config.mode, index, config.connections);
    let mut stats = drive(&mut link, &mut pacer, window, mix, index, progress);
    stats.counts.reconnects = link.reconnects;
    stats
}

/// A running load: the connection threads and their shared progress.
pub struct Load {
    pub run_start: Instant,
    pub window: Window,
    pub progress: Arc<Progress>,
    threads: Vec<thread::JoinHandle<Stats>>,
}

impl Load {
    /// Starts every connection thread; the run's clock starts now.
    pub fn start(config: Arc<Config>) -> io::Result<Load> {
        let weights: Vec<u32> = config.routes.iter().map(|r| r.weight).collect();
        let mix: Arc<[usize]> = mix_sequence(&weights).into();
        let warmup_ns = config.warmup.as_nanos() as u64;
        let window = Window {
            start_ns: warmup_ns,
            end_ns: warmup_ns + config.duration.as_nanos() as u64,
        };
        let progress = Arc::new(Progress::default());
        let run_start = Instant::now();
        let mut threads = Vec::with_capacity(config.connections);
        for index in 0..config.connections {
            let (config, mix, progress) = (config.clone(), mix.clone(), progress.clone());
            let handle = thread::Builder::new()
                .name(format!("conn-{index}"))
                .stack_size(THREAD_STACK_BYTES)
                .spawn(move || {
                    run_connection(index, &config, &mix, window, run_start, &progress)
                })?;
            threads.push(handle);
        }
        Ok(Load {
            run_start,
            window,
            progress,
            threads,
        })
    }

    /// Waits for every connection (each ends within one timeout of the
    /// window's end) and merges their results.
    pub fn join(self) -> Stats {
        let mut total = Stats::default();
        for t in self.threads {
            let stats = t.join().expect("connection threads do not panic");
            total.merge(&stats);
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;

    /// A server in virtual time: answers in `service_ns`, except that
    /// nothing is answered during `stall` (requests sent then are answered
    /// when it ends).
    struct SimServer {
        now_ns: u64,
        service_ns: u64,
        stall: (u64, u64),
    }

    impl Link for SimServer {
        fn now_ns(&mut self) -> u64 {
            self.now_ns
        }
        fn wait_until_ns(&mut self, t_ns: u64) {
            self.now_ns = self.now_ns.max(t_ns);
        }
        fn exchange(&mut self, _route: usize) -> Outcome {
            let (from, to) = self.stall;
            if (from..to).contains(&self.now_ns) {
                self.now_ns = to;
            }
            self.now_ns += self.service_ns;
            Outcome::Response { status: 200 }
        }
    }

    fn simulate(mode: Mode, stall: (u64, u64)) -> Stats {
        let mut server = SimServer {
            now_ns: 0,
            service_ns: 100_000,
            stall,
        };
        let mut pacer = Pacer::for_connection(mode, 0, 1);
        let window = Window {
            start_ns: 0,
            end_ns: 10 * S,
        };
        drive(
            &mut server,
            &mut pacer,
            window,
            &[0],
            0,
            &Progress::default(),
        )
    }

    #[test]
    fn a_stall_shows_in_open_loop_percentiles_but_hides_in_closed_loop() {
        let stall = (5 * S, 6 * S);
        let closed = simulate(Mode::Closed, stall).latency.summary();
        let open = simulate(Mode::Open { rate_rps: 1000.0 }, stall)
            .latency
            .summary();
        // Closed loop: one slow request among ~90,000; p99 is the service time.
        assert!(closed.count > 80_000);
        assert!(closed.p99_us < 1_000, "closed p99 {} µs", closed.p99_us);
        assert!(closed.max_us >= 990_000);
        // Open loop: every request due during the stall waited for its end,
        // so ~10 % of requests are late by up to 1 s and p99 is ~0.9 s.
        assert_eq!(open.count, 10_000, "every scheduled request is counted");
        assert!(open.p99_us > 800_000, "open p99 {} µs", open.p99_us);
        assert!(open.p50_us < 1_000, "open p50 {} µs", open.p50_us);
        assert!(open.p99_us > 100 * closed.p99_us);
    }

    #[test]
    fn open_loop_on_a_healthy_server_measures_the_service_time() {
        let s = simulate(Mode::Open { rate_rps: 1000.0 }, (0, 0))
            .latency
            .summary();
        assert_eq!(s.count, 10_000);
        assert!(s.max_us <= 101, "max {} µs", s.max_us);
    }

    #[test]
    fn requests_sent_in_the_warmup_are_not_measured() {
        let mut server = SimServer {
            now_ns: 0,
            service_ns: MS,
            stall: (0, 0),
        };
        let mut pacer = Pacer::for_connection(Mode::Open { rate_rps: 100.0 }, 0, 1);
        let window = Window {
            start_ns: S,
            end_ns: 2 * S,
        };
        let progress = Progress::default();
        let stats = drive(&mut server, &mut pacer, window, &[0], 0, &progress);
        assert_eq!(stats.counts.requests, 100);
        assert_eq!(stats.latency.count(), 100);
        assert_eq!(progress.completed.load(Ordering::Relaxed), 200);
    }

    #[test]
    fn an_overloaded_open_loop_ends_with_the_window_and_counts_unsent_requests() {
        // 1000 req/s scheduled, 500 req/s served: half the requests due
        // never go out, and the run does not overrun the window to send them.
        let mut server = SimServer {
            now_ns: 0,
            service_ns: 2 * MS,
            stall: (0, 0),
        };
        let mut pacer = Pacer::for_connection(Mode::Open { rate_rps: 1000.0 }, 0, 1);
        let window = Window {
            start_ns: 0,
            end_ns: 10 * S,
        };
        let stats = drive(
            &mut server,
            &mut pacer,
            window,
            &[0],
            0,
            &Progress::default(),
        );
        assert!(server.now_ns <= window.end_ns + 2 * MS);
        assert_eq!(stats.counts.requests, 5_000);
        assert_eq!(stats.counts.unsent, 5_000);
        // The last requests sent were due ~5 s before they went out.
        assert!(stats.latency.summary().max_us > 4_900_000);
    }

    #[test]
    fn an_overloaded_open_loop_measures_what_was_sent_in_the_window() {
        // Behind schedule since the warm-up: the window still counts every
        // request it sent (throughput = what the server did), each late by
        // the backlog.
        let mut server = SimServer {
            now_ns: 0,
            service_ns: 2 * MS,
            stall: (0, 0),
        };
        let mut pacer = Pacer::for_connection(Mode::Open { rate_rps: 1000.0 }, 0, 1);
        let window = Window {
            start_ns: S,
            end_ns: 2 * S,
        };
        let stats = drive(
            &mut server,
            &mut pacer,
            window,
            &[0],
            0,
            &Progress::default(),
        );
        assert_eq!(stats.counts.requests, 500);
        assert_eq!(stats.counts.unsent, 1000);
        assert!(stats.latency.summary().p50_us > 500_000);
    }

    #[test]
    fn open_loop_splits_the_rate_and_staggers_connections() {
        let a = Pacer::for_connection(Mode::Open { rate_rps: 1000.0 }, 0, 4);
        let mut b = Pacer::for_connection(Mode::Open { rate_rps: 1000.0 }, 1, 4);
        assert_eq!(a.due_ns(0), 0);
        assert_eq!(b.due_ns(0), MS);
        b.advance();
        assert_eq!(b.due_ns(0), 5 * MS);
        assert_eq!(Pacer::Closed.due_ns(42), 42);
    }

    #[test]
    fn unsent_requests_are_counted_from_the_schedule() {
        let mut p = Pacer::for_connection(Mode::Open { rate_rps: 1000.0 }, 0, 1);
        assert_eq!(p.due_between(0, S), 1000);
        assert_eq!(p.due_between(S / 2, S), 500);
        for _ in 0..700 {
            p.advance();
        }
        assert_eq!(p.due_between(S / 2, S), 300);
        assert_eq!(p.due_between(0, 0), 0);
        assert_eq!(Pacer::Closed.due_between(0, S), 0);
    }

    #[test]
    fn latency_counts_from_the_due_time() {
        assert_eq!(latency_us(1_000_000, 3_500_000), 2_500);
    }

    #[test]
    fn weighted_mix_interleaves_routes_in_proportion() {
        assert_eq!(mix_sequence(&[3, 1]), [0, 0, 1, 0]);
        let seq = mix_sequence(&[5, 2, 1]);
        assert_eq!(seq.len(), 8);
        assert_eq!(seq.iter().filter(|&&r| r == 1).count(), 2);
        assert_eq!(mix_sequence(&[1]), [0]);
    }

    #[test]
    fn outcomes_are_counted_by_class_and_kind() {
        let mut c = Counts::default();
        for status in [200, 204, 301, 404, 405, 500, 503] {
            c.count(Outcome::Response { status });
        }
        c.count(Outcome::Error(ErrorKind::Connect));
        c.count(Outcome::Error(ErrorKind::Timeout));
        assert_eq!(
            (c.status_2xx, c.status_3xx, c.status_4xx, c.status_5xx),
            (2, 1, 2, 2)
        );
        assert_eq!(c.errors(), 2);
        assert_eq!(c.requests, 9);
    }

    #[test]
    fn response_heads_give_status_framing_and_close() {
        let h = parse_head(b"HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\n\r\nbody")
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.status, h.content_length, h.chunked, h.close),
            (404, Some(10), false, false)
        );
        assert_eq!(h.head_bytes, 46);
        let h = parse_head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(h.chunked && h.close);
        let h = parse_head(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap();
        assert!(h.close);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-")
            .unwrap()
            .is_none());
        assert_eq!(parse_head(b"garbage\r\n\r\n").err(), Some(ErrorKind::Read));
    }
}
