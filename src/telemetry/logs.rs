//! Function logs: the records of what functions wrote (stdout, stderr) and
//! what corefn said about their calls (system lines), one NDJSON line each.
//!
//! Worker processes hold a [`LogSender`]: it packs lines into datagrams of
//! at most [`DATAGRAM_BYTES_MAX`] (the log name on the first line, then one
//! JSON line each) and sends them without waiting over a Unix `SOCK_DGRAM`
//! socketpair. In the gateway, [`LogService`] owns the other end and one
//! thread, `corefn-logs`, that receives the datagrams, appends them to
//! `<dir>/<name>/current.log` (rotated by size, [`LogConfig`]) and hands
//! them to live [`Follower`]s; the control plane reads the files back with
//! [`LogService::read`].
//!
//! It depends on the clock (timestamps), the function-name rule of the
//! descriptor and the poison-tolerant locks; nothing else of corefn.
//!
//! It must never block a worker or a core: a sender that meets a full
//! socket drops the datagram and counts its lines, and the thread drops
//! lines for a follower whose queue is full (and later says how many).
//! The thread is the single writer of the log files: nothing else opens
//! them for writing, so rotation needs no lock between processes.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::{
    getsockopt, recv, send, setsockopt, shutdown, socketpair, sockopt, AddressFamily, MsgFlags,
    Shutdown, SockFlag, SockType,
};
use nix::sys::time::TimeVal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::clock;
use crate::http::rules::is_function_name;
use crate::sync::lock;

/// The largest datagram a sender makes (and the receive buffer's size).
pub const DATAGRAM_BYTES_MAX: usize = 64 * 1024;
/// Lines [`lines_from_output`] makes of one call's output, before the one
/// system line that counts the rest.
pub const OUTPUT_LINES_MAX: usize = 1000;
/// Live followers at once, over all logs.
pub const FOLLOWERS_MAX: usize = 64;
/// Lines waiting for one follower; more are dropped and counted.
pub const FOLLOWER_QUEUE_LINES_MAX: usize = 1024;
/// Log files the thread keeps open; the least recently written is closed
/// to make room.
pub const OPEN_FILES_MAX: usize = 128;
/// [`LogQuery::tail`] when none is given, and its cap.
pub const TAIL_LINES_DEFAULT: usize = 100;
pub const TAIL_LINES_MAX: usize = 10_000;
/// Rotated files kept at most ([`LogConfig::files_kept`]).
pub const FILES_KEPT_MAX: usize = 64;
/// Defaults of [`LogConfig::new`].
pub const FILE_BYTES_MAX_DEFAULT: u64 = 8 * 1024 * 1024;
pub const FILES_KEPT_DEFAULT: usize = 2;

/// The longest log name a datagram carries (route keys are short).
const LOG_NAME_BYTES_MAX: usize = 512;
/// The sanitized part of a route key's directory name, before its hash.
const ROUTE_DIR_NAME_BYTES_MAX: usize = 100;
/// Text of one line made by [`lines_from_output`] (the sender cuts again
/// to fit a datagram); bounds what one huge line costs before sending.
const OUTPUT_LINE_TEXT_BYTES_MAX: usize = DATAGRAM_BYTES_MAX;
/// Longest line [`LogService::read`] parses: what the thread writes is
/// re-encoded from lines of one datagram, so it is never near this.
const FILE_LINE_BYTES_MAX: usize = 2 * DATAGRAM_BYTES_MAX;
/// What a line cut to fit a datagram ends with.
const TRUNCATED_SUFFIX: &str = " …[truncated]";
/// Asked for the sockets' buffers; the kernel caps it (net.core.*mem_max)
/// and a refusal is ignored. A Unix datagram in flight counts against the
/// sender's buffer; net.unix.max_dgram_qlen does not apply to a connected
/// pair (each end is the other's peer), so the buffer alone bounds it.
const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// How long the thread waits in `recv` before it looks at the stop flag.
const STOP_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// After a batch the thread sleeps before it waits again, so that a busy
/// gateway pays one wake-up per nap instead of one per call: between these
/// two, as long as lines coming at the last batch's rate fill at most
/// [`NAP_BUFFER_SHARE`] of the senders' socket buffer ([`next_nap`]). The
/// longest is how much later a line reaches files and followers at most;
/// at 8 ms a burst of 40,000 calls a second from a standing start still
/// fits a default (208 KiB, doubled) buffer.
const BATCH_NAP_MIN: Duration = Duration::from_millis(2);
const BATCH_NAP_MAX: Duration = Duration::from_millis(8);
/// The part of the senders' buffer one nap's lines may fill.
const NAP_BUFFER_SHARE: u64 = 4;
/// What a queued datagram costs the sender's buffer beyond its bytes (the
/// kernel's accounting of its buffer, about this much for a small one).
const DATAGRAM_OVERHEAD_BYTES: u64 = 1024;
/// Datagrams taken per batch at most (then written, then the nap).
const DRAIN_DATAGRAMS_MAX: usize = 4096;
/// A log's lines taken but not written are written once they pass this.
const UNWRITTEN_BYTES_MAX: usize = 256 * 1024;
/// Datagrams the thread still takes once it is told to stop.
const STOP_DRAIN_DATAGRAMS_MAX: usize = 1024;
/// Pause after an unexpected receive error, so that one cannot spin.
const RECEIVE_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// The thread says at most this often that it cannot write a log.
const ERROR_REPORT_INTERVAL: Duration = Duration::from_secs(10);
/// A send interrupted by a signal is tried again this many times.
const SEND_ATTEMPTS_MAX: usize = 3;

const CURRENT_FILE: &str = "current.log";
/// Where the logs of names that are not function names (hand-written
/// route keys) go; `_` is not allowed in a function name, so no function
/// can collide with it.
const ROUTES_DIR: &str = "_routes";

/// Which output a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
    /// Said by corefn, not by the function.
    System,
}

/// One log line, as the files store it:
/// `{"ts":"2026-12-02T05:21:07.123456Z","function":"greet","version":3,
/// "request_id":"abc","stream":"stdout","text":"..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    #[serde(rename = "ts", with = "ts_rfc3339")]
    pub ts_unix_us: u64,
    pub function: String,
    /// 0 for routes without a version.
    #[serde(default)]
    pub version: u32,
    #[serde(default)]
    pub request_id: String,
    pub stream: Stream,
    /// Without its trailing newline.
    pub text: String,
}

/// A [`LogLine`] that borrows its strings: what a worker sends, so that a
/// call's START and END lines cost no copies of its name and request id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineRef<'a> {
    pub ts_unix_us: u64,
    pub function: &'a str,
    pub version: u32,
    pub request_id: &'a str,
    pub stream: Stream,
    pub text: &'a str,
}

impl LogLine {
    pub fn as_ref(&self) -> LineRef<'_> {
        LineRef {
            ts_unix_us: self.ts_unix_us,
            function: &self.function,
            version: self.version,
            request_id: &self.request_id,
            stream: self.stream,
            text: &self.text,
        }
    }
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::System => "system",
        }
    }
}

impl LineRef<'_> {
    /// The line as serde encodes a [`LogLine`] (the same bytes: a test
    /// holds them equal), written straight into `out`: a worker encodes two
    /// per call, and the derived encoder's time string and the owned copies
    /// it needs were most of what a call's lines cost before the send.
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"ts\":\"");
        clock::write_rfc3339_us(self.ts_unix_us, out);
        out.extend_from_slice(b"\",\"function\":");
        push_json_string(self.function, out);
        out.extend_from_slice(b",\"version\":");
        // Writing to a Vec cannot fail.
        let _ = write!(out, "{}", self.version);
        out.extend_from_slice(b",\"request_id\":");
        push_json_string(self.request_id, out);
        out.extend_from_slice(b",\"stream\":\"");
        out.extend_from_slice(self.stream.name().as_bytes());
        out.extend_from_slice(b"\",\"text\":");
        push_json_string(self.text, out);
        out.push(b'}');
    }
}

/// `text` as a JSON string, escaped as serde_json escapes it.
fn push_json_string(text: &str, out: &mut Vec<u8>) {
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// `ts` as RFC 3339 UTC with microseconds.
mod ts_rfc3339 {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::clock;

    pub fn serialize<S: Serializer>(unix_us: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&clock::rfc3339_us(*unix_us))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        clock::parse_rfc3339_us(&text)
            .ok_or_else(|| D::Error::custom(format!("not an RFC 3339 time: {text:?}")))
    }
}

#[derive(Debug, Error)]
pub enum LogError {
    #[error("too many log followers: at most {max} at once")]
    TooManyFollowers { max: usize },
    #[error("cannot read log file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
}

/// Splits one call's captured output into lines: at `\n`, a final partial
/// line counting as a line, invalid UTF-8 replaced. At most
/// [`OUTPUT_LINES_MAX`] lines, then one system line that counts the rest;
/// a line's text is cut at [`OUTPUT_LINE_TEXT_BYTES_MAX`] bytes.
pub fn lines_from_output(
    function: &str,
    version: u32,
    request_id: &str,
    stream: Stream,
    bytes: &[u8],
    ts_unix_us: u64,
) -> Vec<LogLine> {
    if bytes.is_empty() {
        return Vec::new();
    }
    let line = |stream: Stream, text: String| LogLine {
        ts_unix_us,
        function: function.to_owned(),
        version,
        request_id: request_id.to_owned(),
        stream,
        text,
    };
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let mut pieces = body.split(|&b| b == b'\n');
    let mut lines: Vec<LogLine> = pieces
        .by_ref()
        .take(OUTPUT_LINES_MAX)
        .map(|piece| line(stream, output_text(piece)))
        .collect();
    let more = pieces.count();
    if more > 0 {
        lines.push(line(
            Stream::System,
            format!("…{more} more lines not logged"),
        ));
    }
    lines
}

fn output_text(piece: &[u8]) -> String {
    if piece.len() <= OUTPUT_LINE_TEXT_BYTES_MAX {
        return String::from_utf8_lossy(piece).into_owned();
    }
    // A character cut in two becomes one replacement character.
    let mut text = String::from_utf8_lossy(&piece[..OUTPUT_LINE_TEXT_BYTES_MAX]).into_owned();
    text.push_str(TRUNCATED_SUFFIX);
    text
}

/// The bytes serde_json writes for `c` inside a string.
fn json_escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        '\0'..='\u{1f}' => 6,
        _ => c.len_utf8(),
    }
}

/// The worker's side: sends lines to the gateway's [`LogService`] and never
/// waits. Clones share the socket and the drop counter.
#[derive(Debug, Clone)]
pub struct LogSender {
    socket: Arc<OwnedFd>,
    dropped_lines: Arc<AtomicU64>,
}

impl LogSender {
    /// `fd`: the worker end [`LogService::start`] returned. Sends use
    /// `MSG_DONTWAIT`, so it need not be non-blocking itself.
    pub fn from_fd(fd: OwnedFd) -> LogSender {
        LogSender {
            socket: Arc::new(fd),
            dropped_lines: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Sends `lines` to the log `name` (a function name or a route key),
    /// as few datagrams as fit. A line too long for one datagram has its
    /// text cut; lines that cannot be sent (the gateway is behind, or gone)
    /// are counted in [`LogSender::dropped_lines`].
    pub fn send(&self, name: &str, lines: &[LineRef<'_>]) {
        if lines.is_empty() {
            return;
        }
        let header = datagram_header(name);
        let line_bytes_max = DATAGRAM_BYTES_MAX - header.len();
        let mut datagram =
            Vec::with_capacity(DATAGRAM_BYTES_MAX.min(header.len() + 256 * lines.len()));
        datagram.extend_from_slice(&header);
        let mut datagram_lines = 0u64;
        let mut encoded = Vec::with_capacity(256);
        for line in lines {
            if !encode_fitting(line, line_bytes_max, &mut encoded) {
                self.dropped_lines.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if datagram.len() + encoded.len() > DATAGRAM_BYTES_MAX {
                self.send_datagram(&datagram, datagram_lines);
                datagram.truncate(header.len());
                datagram_lines = 0;
            }
            datagram.extend_from_slice(&encoded);
            datagram_lines += 1;
        }
        if datagram_lines > 0 {
            self.send_datagram(&datagram, datagram_lines);
        }
    }

    /// Lines this sender (and its clones) could not send.
    pub fn dropped_lines(&self) -> u64 {
        self.dropped_lines.load(Ordering::Relaxed)
    }

    fn send_datagram(&self, datagram: &[u8], lines: u64) {
        debug_assert!(datagram.len() <= DATAGRAM_BYTES_MAX);
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        for _ in 0..SEND_ATTEMPTS_MAX {
            match send(self.socket.as_raw_fd(), datagram, flags) {
                Ok(_) => return,
                Err(Errno::EINTR) => continue,
                // EAGAIN/ENOBUFS: the gateway is behind; anything else: it
                // is gone. Either way the worker goes on without its logs.
                Err(_) => break,
            }
        }
        self.dropped_lines.fetch_add(lines, Ordering::Relaxed);
    }
}

/// The log name and its newline; a name cannot hold a newline (it would
/// end the header) nor be longer than [`LOG_NAME_BYTES_MAX`].
fn datagram_header(name: &str) -> Vec<u8> {
    let mut cut = name.len().min(LOG_NAME_BYTES_MAX);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut header: Vec<u8> = name[..cut]
        .bytes()
        .map(|b| if b == b'\n' { b'_' } else { b })
        .collect();
    header.push(b'\n');
    header
}

/// `line` as one JSON line (newline included) of at most `bytes_max`
/// bytes into `out`, its text cut if needed; false if even an empty text
/// would not fit.
fn encode_fitting(line: &LineRef<'_>, bytes_max: usize, out: &mut Vec<u8>) -> bool {
    let encode = |line: &LineRef<'_>, out: &mut Vec<u8>| {
        out.clear();
        line.encode(out);
        out.push(b'\n');
    };
    encode(line, out);
    if out.len() <= bytes_max {
        return true;
    }
    // The line without its text, then as much text as fits with the
    // suffix, counting each character as JSON encodes it.
    encode(&LineRef { text: "", ..*line }, out);
    let Some(mut room) = bytes_max.checked_sub(out.len() + TRUNCATED_SUFFIX.len()) else {
        return false;
    };
    let mut cut = 0;
    for (at, c) in line.text.char_indices() {
        let cost = json_escaped_len(c);
        if cost > room {
            break;
        }
        room -= cost;
        cut = at + c.len_utf8();
    }
    let mut cut_text = String::with_capacity(cut + TRUNCATED_SUFFIX.len());
    cut_text.push_str(&line.text[..cut]);
    cut_text.push_str(TRUNCATED_SUFFIX);
    encode(
        &LineRef {
            text: &cut_text,
            ..*line
        },
        out,
    );
    debug_assert!(
        out.len() <= bytes_max,
        "json_escaped_len agrees with serde_json"
    );
    out.len() <= bytes_max
}

/// Where the logs go and how much of them is kept.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub dir: PathBuf,
    /// `current.log` is rotated before a write would take it past this
    /// (a single longer line still goes in, alone).
    pub file_bytes_max: u64,
    /// Rotated files kept (`1.log` the newest), at most [`FILES_KEPT_MAX`].
    pub files_kept: usize,
}

impl LogConfig {
    pub fn new(dir: PathBuf) -> LogConfig {
        LogConfig {
            dir,
            file_bytes_max: FILE_BYTES_MAX_DEFAULT,
            files_kept: FILES_KEPT_DEFAULT,
        }
    }
}

/// What [`LogService::read`] returns.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// The last lines that match: [`TAIL_LINES_DEFAULT`] if `None`, at most
    /// [`TAIL_LINES_MAX`].
    pub tail: Option<usize>,
    /// Only lines at or after this time.
    pub since_unix_us: Option<u64>,
    /// Only the lines of this request.
    pub request_id: Option<String>,
}

/// The gateway's side: the receiving thread, the files and the followers.
pub struct LogService {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// What the service's handle and its thread share.
struct Shared {
    config: LogConfig,
    socket: OwnedFd,
    stop: AtomicBool,
    /// The open files; readers take it too, to open a log's files as one
    /// consistent set (no rotation in between).
    files: Mutex<OpenFiles>,
    followers: Arc<Mutex<FollowerTable>>,
    lines_written: AtomicU64,
    follower_dropped_lines: AtomicU64,
    lines_rejected: AtomicU64,
}

impl LogService {
    /// Makes the socketpair and starts the `corefn-logs` thread. Returns
    /// the worker end, for the caller to hand to worker processes (it is
    /// close-on-exec and non-blocking; all workers may share it).
    pub fn start(config: LogConfig) -> io::Result<(Arc<LogService>, OwnedFd)> {
        if config.file_bytes_max == 0 || config.files_kept > FILES_KEPT_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "log files need file_bytes_max > 0 and files_kept <= {FILES_KEPT_MAX} \
                     (got {} and {})",
                    config.file_bytes_max, config.files_kept
                ),
            ));
        }
        fs::create_dir_all(&config.dir)?;
        let (gateway_end, worker_end) = socketpair(
            AddressFamily::Unix,
            SockType::Datagram,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        // Room for bursts; the kernel caps what it grants, and less only
        // means earlier drops.
        let _ = setsockopt(&gateway_end, sockopt::RcvBuf, &SOCKET_BUFFER_BYTES);
        let _ = setsockopt(&worker_end, sockopt::SndBuf, &SOCKET_BUFFER_BYTES);
        let poll_secs = STOP_POLL_INTERVAL.as_secs() as libc::time_t;
        setsockopt(
            &gateway_end,
            sockopt::ReceiveTimeout,
            &TimeVal::new(poll_secs, 0),
        )?;
        fcntl(&worker_end, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        // What the kernel granted bounds the thread's naps.
        let sender_buffer_bytes = getsockopt(&worker_end, sockopt::SndBuf)
            .map(|bytes| bytes as u64)
            .unwrap_or(0);
        let shared = Arc::new(Shared {
            files: Mutex::new(OpenFiles::new(config.clone())),
            config,
            socket: gateway_end,
            stop: AtomicBool::new(false),
            followers: Arc::new(Mutex::new(FollowerTable::default())),
            lines_written: AtomicU64::new(0),
            follower_dropped_lines: AtomicU64::new(0),
            lines_rejected: AtomicU64::new(0),
        });
        let thread_shared = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name("corefn-logs".into())
            .spawn(move || receive_all(&thread_shared, sender_buffer_bytes))?;
        let service = LogService {
            shared,
            thread: Mutex::new(Some(thread)),
        };
        Ok((Arc::new(service), worker_end))
    }

    /// The directory of the log `name`: `<dir>/<name>` for a function
    /// name, `<dir>/_routes/<sanitized>-<hash>` for anything else.
    pub fn log_dir_of(&self, name: &str) -> PathBuf {
        log_dir(&self.shared.config.dir, name)
    }

    /// The lines received for `name` from now on, until the follower is
    /// dropped.
    pub fn follow(&self, name: &str) -> Result<Follower, LogError> {
        let mut table = lock(&self.shared.followers);
        if table.count >= FOLLOWERS_MAX {
            return Err(LogError::TooManyFollowers { max: FOLLOWERS_MAX });
        }
        table.next_id += 1;
        let id = table.next_id;
        let queue = Arc::new(FollowerQueue::default());
        table
            .by_name
            .entry(name.to_owned())
            .or_default()
            .push((id, Arc::clone(&queue)));
        table.count += 1;
        Ok(Follower {
            id,
            name: name.to_owned(),
            queue,
            table: Arc::clone(&self.shared.followers),
        })
    }

    /// Followers registered now.
    pub fn follower_count(&self) -> usize {
        lock(&self.shared.followers).count
    }

    /// The stored lines of `name` that match `query`, oldest first. A log
    /// never written is empty; unreadable lines are skipped.
    pub fn read(&self, name: &str, query: &LogQuery) -> Result<Vec<LogLine>, LogError> {
        let tail = query.tail.unwrap_or(TAIL_LINES_DEFAULT).min(TAIL_LINES_MAX);
        if tail == 0 {
            return Ok(Vec::new());
        }
        let files = self.open_for_reading(&self.log_dir_of(name))?;
        let mut kept: VecDeque<LogLine> = VecDeque::with_capacity(tail.min(1024));
        for (path, file) in files {
            let mut reader = BufReader::new(file);
            let mut bytes = Vec::new();
            loop {
                let read = read_line_bounded(&mut reader, &mut bytes, FILE_LINE_BYTES_MAX)
                    .map_err(|source| LogError::Read {
                        path: path.clone(),
                        source,
                    })?;
                match read {
                    LineRead::End => break,
                    LineRead::TooLong => continue,
                    LineRead::Line => {}
                }
                let Ok(line) = serde_json::from_slice::<LogLine>(&bytes) else {
                    continue;
                };
                if !query.matches(&line) {
                    continue;
                }
                if kept.len() == tail {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
        }
        Ok(kept.into())
    }

    /// The existing files of a log, oldest first, opened together under
    /// the writer's lock: a rotation cannot happen between two of them.
    fn open_for_reading(&self, dir: &Path) -> Result<Vec<(PathBuf, File)>, LogError> {
        let kept = self.shared.config.files_kept;
        let paths = (1..=kept)
            .rev()
            .map(|index| rotated_path(dir, index))
            .chain(std::iter::once(dir.join(CURRENT_FILE)));
        let mut writer = lock(&self.shared.files);
        // What the thread has taken is in the files before they are read.
        writer.write_all_unwritten();
        let mut files = Vec::with_capacity(kept + 1);
        for path in paths {
            match File::open(&path) {
                Ok(file) => files.push((path, file)),
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(LogError::Read { path, source }),
            }
        }
        Ok(files)
    }

    /// Closes the log of `name` and removes its files (a deleted
    /// function). Lines still in flight may start a new log.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        let mut files = lock(&self.shared.files);
        if let Some(mut log) = files.open.remove(name) {
            log.unwritten.clear();
        }
        match fs::remove_dir_all(self.log_dir_of(name)) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            result => result,
        }
    }

    /// Lines dropped because a follower read too slowly.
    pub fn dropped_lines(&self) -> u64 {
        self.shared.follower_dropped_lines.load(Ordering::Relaxed)
    }

    /// Lines appended to log files.
    pub fn lines_written(&self) -> u64 {
        self.shared.lines_written.load(Ordering::Relaxed)
    }

    /// Lines received that were not valid log lines (or came without a
    /// log name).
    pub fn lines_rejected(&self) -> u64 {
        self.shared.lines_rejected.load(Ordering::Relaxed)
    }

    /// Ends the thread once it has written what is already queued; later
    /// sends fail (and count as dropped at the sender).
    pub fn stop(&self) {
        self.shared.signal_stop();
        let thread = lock(&self.thread).take();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                eprintln!("corefn: the log thread panicked");
            }
        }
    }
}

impl Drop for LogService {
    fn drop(&mut self) {
        self.shared.signal_stop();
    }
}

impl Shared {
    fn signal_stop(&self) {
        self.stop.store(true, Ordering::Release);
        // Wakes a waiting `recv` now rather than at its timeout; queued
        // datagrams can still be read.
        let _ = shutdown(self.socket.as_raw_fd(), Shutdown::Read);
    }

    /// One datagram: the log name, then lines. Written first, then handed
    /// to followers.
    fn take_datagram(&self, datagram: &[u8], errors: &mut ErrorReport) {
        let (name, body) = match datagram.iter().position(|&b| b == b'\n') {
            Some(end) => (&datagram[..end], &datagram[end + 1..]),
            None => (datagram, &datagram[datagram.len()..]),
        };
        let raw_lines = body.split(|&b| b == b'\n').filter(|raw| !raw.is_empty());
        let name = match std::str::from_utf8(name) {
            Ok(name) if !name.is_empty() && name.len() <= LOG_NAME_BYTES_MAX => name,
            _ => {
                let count = raw_lines.count() as u64;
                self.lines_rejected
                    .fetch_add(count.max(1), Ordering::Relaxed);
                return;
            }
        };
        // Lines are parsed only for followers: the workers encoded them
        // (a reader skips a line that does not parse), so the file gets
        // them as they came, checked for shape alone.
        let followed = lock(&self.followers).by_name.contains_key(name);
        let mut lines = Vec::new();
        let mut valid: Vec<&[u8]> = Vec::new();
        for raw in raw_lines {
            let shaped = raw.first() == Some(&b'{')
                && raw.last() == Some(&b'}')
                && std::str::from_utf8(raw).is_ok();
            if !shaped {
                self.lines_rejected.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if followed {
                match serde_json::from_slice::<LogLine>(raw) {
                    Ok(line) => lines.push(line),
                    Err(_) => {
                        self.lines_rejected.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                }
            }
            valid.push(raw);
        }
        if valid.is_empty() {
            return;
        }
        let written = lock(&self.files).append(name, &valid);
        match written {
            Ok(()) => {
                self.lines_written
                    .fetch_add(valid.len() as u64, Ordering::Relaxed);
            }
            Err(error) => errors.report(format_args!("cannot write the log of {name:?}: {error}")),
        }
        if lines.is_empty() {
            return;
        }
        let table = lock(&self.followers);
        if let Some(followers) = table.by_name.get(name) {
            for (_, queue) in followers {
                let dropped = queue.push_all(&lines);
                self.follower_dropped_lines
                    .fetch_add(dropped, Ordering::Relaxed);
            }
        }
    }
}

/// The `corefn-logs` thread: receives until told to stop, then takes what
/// is still queued (bounded) and ends. `sender_buffer_bytes`: the worker
/// end's send buffer, which lines wait in (0: unknown).
fn receive_all(shared: &Shared, sender_buffer_bytes: u64) {
    let mut buffer = vec![0u8; DATAGRAM_BYTES_MAX];
    let mut errors = ErrorReport::default();
    let mut nap = BATCH_NAP_MIN;
    let mut last_batch_at = Instant::now();
    loop {
        let stopping = shared.stop.load(Ordering::Acquire);
        if stopping {
            // What is still queued (bounded), then the end.
            drain(shared, &mut buffer, &mut errors, STOP_DRAIN_DATAGRAMS_MAX);
            lock(&shared.files).write_all_unwritten();
            return;
        }
        // Waits for the first datagram (or the receive timeout, to look at
        // the stop flag again).
        let mut batch_bytes = match recv(shared.socket.as_raw_fd(), &mut buffer, MsgFlags::empty())
        {
            Ok(0) => continue,
            Ok(len) => {
                shared.take_datagram(&buffer[..len], &mut errors);
                len as u64 + DATAGRAM_OVERHEAD_BYTES
            }
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => continue,
            Err(error) => {
                errors.report(format_args!("cannot receive log lines: {error}"));
                thread::sleep(RECEIVE_ERROR_PAUSE);
                continue;
            }
        };
        // Then everything that came meanwhile, one write for all of it, and
        // a nap: under load the thread wakes once per nap, not once per
        // call (a wake-up costs more than the lines).
        batch_bytes += drain(shared, &mut buffer, &mut errors, DRAIN_DATAGRAMS_MAX);
        lock(&shared.files).write_all_unwritten();
        let now = Instant::now();
        nap = next_nap(nap, batch_bytes, now - last_batch_at, sender_buffer_bytes);
        last_batch_at = now;
        thread::sleep(nap);
    }
}

/// The nap after a batch of `batch_bytes` (datagrams with their
/// [`DATAGRAM_OVERHEAD_BYTES`]) that came over `interval`: the longest in
/// [`BATCH_NAP_MIN`]..=[`BATCH_NAP_MAX`] during which lines at that rate
/// fill at most [`NAP_BUFFER_SHARE`] of `sender_buffer_bytes`, and at most
/// twice the `previous` one, so that the nap lengthens over a few batches
/// of light load but shortens at the first heavy one.
fn next_nap(
    previous: Duration,
    batch_bytes: u64,
    interval: Duration,
    sender_buffer_bytes: u64,
) -> Duration {
    let interval_us = u64::try_from(interval.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    let room_bytes = sender_buffer_bytes / NAP_BUFFER_SHARE;
    // room / (batch / interval), in integers; a zero batch fits any nap.
    let fits_us = (u128::from(room_bytes) * u128::from(interval_us))
        .checked_div(u128::from(batch_bytes))
        .unwrap_or(u128::MAX);
    let fits = Duration::from_micros(u64::try_from(fits_us).unwrap_or(u64::MAX));
    fits.min(previous.saturating_mul(2))
        .clamp(BATCH_NAP_MIN, BATCH_NAP_MAX)
}

/// Takes the datagrams queued now, at most `max`; returns their bytes (each
/// with its [`DATAGRAM_OVERHEAD_BYTES`]).
fn drain(shared: &Shared, buffer: &mut [u8], errors: &mut ErrorReport, max: usize) -> u64 {
    let mut taken_bytes = 0;
    for _ in 0..max {
        match recv(shared.socket.as_raw_fd(), buffer, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => break,
            Ok(len) => {
                shared.take_datagram(&buffer[..len], errors);
                taken_bytes += len as u64 + DATAGRAM_OVERHEAD_BYTES;
            }
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => break,
            Err(error) => {
                errors.report(format_args!("cannot receive log lines: {error}"));
                break;
            }
        }
    }
    taken_bytes
}

/// Says a failure on stderr at most once per [`ERROR_REPORT_INTERVAL`],
/// with how many were not said.
#[derive(Default)]
struct ErrorReport {
    last_at: Option<Instant>,
    unsaid: u64,
}

impl ErrorReport {
    fn report(&mut self, what: std::fmt::Arguments<'_>) {
        let due = self
            .last_at
            .is_none_or(|at| at.elapsed() >= ERROR_REPORT_INTERVAL);
        if !due {
            self.unsaid += 1;
            return;
        }
        if self.unsaid > 0 {
            eprintln!(
                "corefn: logs: {what} ({} more errors not shown)",
                self.unsaid
            );
        } else {
            eprintln!("corefn: logs: {what}");
        }
        self.last_at = Some(Instant::now());
        self.unsaid = 0;
    }
}

/// A log being appended to.
struct OpenLog {
    file: File,
    dir: PathBuf,
    /// The size of `current.log` with `unwritten`: this thread is its only
    /// writer.
    bytes: u64,
    /// Lines taken but not yet written: written when the socket has nothing
    /// more for the moment, when this passes [`UNWRITTEN_BYTES_MAX`], or
    /// before a read, a rotation or a close (one write for a burst).
    unwritten: Vec<u8>,
    last_used: u64,
}

impl Drop for OpenLog {
    fn drop(&mut self) {
        let _ = self.file.write_all(&self.unwritten);
    }
}

/// The files the thread keeps open, at most [`OPEN_FILES_MAX`].
struct OpenFiles {
    config: LogConfig,
    open: HashMap<String, OpenLog>,
    uses: u64,
}

impl OpenFiles {
    fn new(config: LogConfig) -> OpenFiles {
        OpenFiles {
            config,
            open: HashMap::new(),
            uses: 0,
        }
    }

    /// Appends `lines` to the log `name`, rotating before a line would
    /// take `current.log` past its cap. A failed log is closed, to be
    /// opened afresh next time.
    fn append(&mut self, name: &str, lines: &[&[u8]]) -> io::Result<()> {
        let result = self.append_open(name, lines);
        if result.is_err() {
            self.open.remove(name);
        }
        result
    }

    fn append_open(&mut self, name: &str, lines: &[&[u8]]) -> io::Result<()> {
        let file_bytes_max = self.config.file_bytes_max;
        let files_kept = self.config.files_kept;
        let log = self.get_or_open(name)?;
        for line in lines {
            let line_bytes = line.len() as u64 + 1;
            if log.bytes > 0 && log.bytes + line_bytes > file_bytes_max {
                write_unwritten(log)?;
                rotate(&log.dir, files_kept)?;
                log.file = open_append(&log.dir.join(CURRENT_FILE))?;
                log.bytes = 0;
            }
            log.unwritten.extend_from_slice(line);
            log.unwritten.push(b'\n');
            log.bytes += line_bytes;
        }
        if log.unwritten.len() >= UNWRITTEN_BYTES_MAX {
            write_unwritten(log)?;
        }
        Ok(())
    }

    /// Writes what every open log has taken (the socket is empty for now).
    fn write_all_unwritten(&mut self) {
        let mut failed = Vec::new();
        for (name, log) in self.open.iter_mut() {
            if write_unwritten(log).is_err() {
                failed.push(name.clone());
            }
        }
        // A failed log is opened afresh next time (its lines are lost).
        for name in failed {
            if let Some(mut log) = self.open.remove(&name) {
                log.unwritten.clear();
            }
        }
    }

    fn get_or_open(&mut self, name: &str) -> io::Result<&mut OpenLog> {
        self.uses += 1;
        let uses = self.uses;
        if !self.open.contains_key(name) {
            if self.open.len() >= OPEN_FILES_MAX {
                self.close_least_recent();
            }
            let dir = log_dir(&self.config.dir, name);
            let file = open_append(&dir.join(CURRENT_FILE))?;
            let bytes = file.metadata()?.len();
            let log = OpenLog {
                file,
                dir,
                bytes,
                unwritten: Vec::new(),
                last_used: uses,
            };
            self.open.insert(name.to_owned(), log);
        }
        let log = self
            .open
            .get_mut(name)
            .ok_or_else(|| io::Error::other("a log opened a moment ago is not open"))?;
        log.last_used = uses;
        Ok(log)
    }

    fn close_least_recent(&mut self) {
        let oldest = self
            .open
            .iter()
            .min_by_key(|(_, log)| log.last_used)
            .map(|(name, _)| name.clone());
        if let Some(name) = oldest {
            self.open.remove(&name);
        }
    }
}

fn write_unwritten(log: &mut OpenLog) -> io::Result<()> {
    if log.unwritten.is_empty() {
        return Ok(());
    }
    let result = log.file.write_all(&log.unwritten);
    log.unwritten.clear();
    result
}

/// `current.log` → `1.log` → `2.log` …, the oldest beyond `files_kept`
/// replaced.
fn rotate(dir: &Path, files_kept: usize) -> io::Result<()> {
    let current = dir.join(CURRENT_FILE);
    if files_kept == 0 {
        return ignore_missing(fs::remove_file(current));
    }
    for index in (1..files_kept).rev() {
        ignore_missing(fs::rename(
            rotated_path(dir, index),
            rotated_path(dir, index + 1),
        ))?;
    }
    ignore_missing(fs::rename(current, rotated_path(dir, 1)))
}

fn rotated_path(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("{index}.log"))
}

fn ignore_missing(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        result => result,
    }
}

/// Opens for appending; the directories are made only when missing.
fn open_append(path: &Path) -> io::Result<File> {
    let open = || OpenOptions::new().create(true).append(true).open(path);
    match open() {
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            open()
        }
        result => result,
    }
}

fn log_dir(root: &Path, name: &str) -> PathBuf {
    if is_function_name(name) {
        root.join(name)
    } else {
        root.join(ROUTES_DIR).join(route_dir_name(name))
    }
}

/// `GET:/hello/*` → `GET__hello__-1a2b3c4d`: only `[A-Za-z0-9._-]`, no
/// leading dot, at most [`ROUTE_DIR_NAME_BYTES_MAX`] bytes, then a hash of
/// the whole name so that two keys that sanitize alike do not share a log
/// (and the result is never `.`, `..` or empty).
fn route_dir_name(name: &str) -> String {
    let mut dir: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(ROUTE_DIR_NAME_BYTES_MAX)
        .collect();
    if dir.starts_with('.') {
        dir.replace_range(..1, "_");
    }
    let digest = Sha256::digest(name.as_bytes());
    dir.push('-');
    for byte in &digest[..4] {
        dir.push_str(&format!("{byte:02x}"));
    }
    dir
}

enum LineRead {
    Line,
    /// Longer than the bound: skipped up to its newline.
    TooLong,
    End,
}

/// The next line (without its newline) into `line`, reading at most
/// `bytes_max` of it into memory.
fn read_line_bounded(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
    bytes_max: usize,
) -> io::Result<LineRead> {
    line.clear();
    let mut too_long = false;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(match (too_long, line.is_empty()) {
                (true, _) => LineRead::TooLong,
                (false, true) => LineRead::End,
                (false, false) => LineRead::Line,
            });
        }
        let (chunk, consumed, ended) = match available.iter().position(|&b| b == b'\n') {
            Some(end) => (&available[..end], end + 1, true),
            None => (available, available.len(), false),
        };
        if !too_long && line.len() + chunk.len() <= bytes_max {
            line.extend_from_slice(chunk);
        } else {
            too_long = true;
            line.clear();
        }
        reader.consume(consumed);
        if ended {
            return Ok(if too_long {
                LineRead::TooLong
            } else {
                LineRead::Line
            });
        }
    }
}

impl LogQuery {
    fn matches(&self, line: &LogLine) -> bool {
        self.since_unix_us
            .is_none_or(|since| line.ts_unix_us >= since)
            && self
                .request_id
                .as_deref()
                .is_none_or(|id| line.request_id == id)
    }
}

/// The registered followers, by log name.
#[derive(Default)]
struct FollowerTable {
    by_name: HashMap<String, Vec<(u64, Arc<FollowerQueue>)>>,
    count: usize,
    next_id: u64,
}

#[derive(Default)]
struct FollowerQueue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

#[derive(Default)]
struct QueueState {
    lines: VecDeque<LogLine>,
    /// Lines dropped since the last notice, and whose they were.
    dropped: u64,
    dropped_function: String,
    dropped_version: u32,
}

impl QueueState {
    /// The system line that says how many lines were dropped; resets the
    /// count.
    fn take_notice(&mut self) -> LogLine {
        let line = LogLine {
            ts_unix_us: clock::unix_now_us(),
            function: std::mem::take(&mut self.dropped_function),
            version: self.dropped_version,
            request_id: String::new(),
            stream: Stream::System,
            text: format!(
                "corefn: {} log lines dropped: this follower read too slowly",
                self.dropped
            ),
        };
        self.dropped = 0;
        line
    }
}

impl FollowerQueue {
    /// Queues what fits, never waiting for the reader; returns how many
    /// lines were dropped. A notice of earlier drops goes first, once there
    /// is room for it.
    fn push_all(&self, lines: &[LogLine]) -> u64 {
        let mut state = lock(&self.state);
        let mut dropped = 0;
        let mut queued = false;
        for line in lines {
            if state.dropped > 0 && state.lines.len() < FOLLOWER_QUEUE_LINES_MAX {
                let notice = state.take_notice();
                state.lines.push_back(notice);
                queued = true;
            }
            if state.lines.len() < FOLLOWER_QUEUE_LINES_MAX {
                state.lines.push_back(line.clone());
                queued = true;
            } else {
                state.dropped += 1;
                state.dropped_function.clone_from(&line.function);
                state.dropped_version = line.version;
                dropped += 1;
            }
        }
        debug_assert!(state.lines.len() <= FOLLOWER_QUEUE_LINES_MAX);
        drop(state);
        if queued {
            self.ready.notify_one();
        }
        dropped
    }
}

/// A live view of one log: the lines received after [`LogService::follow`]
/// registered it. Dropping it unregisters it.
pub struct Follower {
    id: u64,
    name: String,
    queue: Arc<FollowerQueue>,
    table: Arc<Mutex<FollowerTable>>,
}

impl Follower {
    /// The next line, waiting at most `timeout`; `None` if none came.
    pub fn next_timeout(&self, timeout: Duration) -> Option<LogLine> {
        let deadline = Instant::now() + timeout;
        let mut state = lock(&self.queue.state);
        loop {
            if let Some(line) = state.lines.pop_front() {
                return Some(line);
            }
            // Everything queued before the drops is read: the notice's
            // place in the stream.
            if state.dropped > 0 {
                return Some(state.take_notice());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            state = self
                .queue
                .ready
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let mut table = lock(&self.table);
        let Some(followers) = table.by_name.get_mut(&self.name) else {
            debug_assert!(false, "a follower is registered until dropped");
            return;
        };
        let before = followers.len();
        followers.retain(|(id, _)| *id != self.id);
        let removed = before - followers.len();
        if followers.is_empty() {
            table.by_name.remove(&self.name);
        }
        debug_assert_eq!(removed, 1, "a follower is registered once");
        table.count -= removed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT_MAX: Duration = Duration::from_secs(10);

    fn send_lines(sender: &LogSender, name: &str, lines: &[LogLine]) {
        let lines: Vec<LineRef<'_>> = lines.iter().map(LogLine::as_ref).collect();
        sender.send(name, &lines);
    }

    #[test]
    fn a_line_is_encoded_as_serde_encodes_it() {
        let texts = [
            "",
            "plain",
            "quote \" backslash \\ slash /",
            "tab\tnewline\ncarriage\rbell\u{7}nul\u{0}del\u{7f}",
            "é ☃ 𝄞 and \u{2028}",
        ];
        for (at, text) in texts.iter().enumerate() {
            for stream in [Stream::Stdout, Stream::Stderr, Stream::System] {
                let line = LogLine {
                    ts_unix_us: 1_764_000_000_123_456 + at as u64 * 86_400_000_001,
                    function: format!("fn-{at}"),
                    version: at as u32 * 1_000_003,
                    request_id: format!("req\"{at}"),
                    stream,
                    text: text.to_string(),
                };
                let mut encoded = Vec::new();
                line.as_ref().encode(&mut encoded);
                assert_eq!(
                    String::from_utf8_lossy(&encoded),
                    serde_json::to_string(&line).expect("serde encodes"),
                );
                let parsed: LogLine = serde_json::from_slice(&encoded).expect("parses");
                assert_eq!(parsed, line);
            }
        }
    }

    #[test]
    fn naps_lengthen_under_light_load_and_shorten_at_the_first_heavy_batch() {
        let ms = Duration::from_millis;
        let buffer_bytes = 4 * 1024 * 1024;
        // One small datagram a millisecond: the nap doubles up to the most.
        let light = |previous| next_nap(previous, 1_200, ms(2), buffer_bytes);
        assert_eq!(light(BATCH_NAP_MIN), ms(4));
        assert_eq!(light(ms(4)), BATCH_NAP_MAX);
        assert_eq!(light(BATCH_NAP_MAX), BATCH_NAP_MAX);
        // A quarter of the buffer in 2 ms: the shortest nap at once.
        let heavy = next_nap(BATCH_NAP_MAX, buffer_bytes / 4, ms(2), buffer_bytes);
        assert_eq!(heavy, BATCH_NAP_MIN);
        // In between: as long as the rate leaves room for (a quarter).
        let middle = next_nap(BATCH_NAP_MAX, buffer_bytes / 20, ms(1), buffer_bytes);
        assert_eq!(middle, ms(5));
        assert_eq!(next_nap(ms(6), 0, ms(8), buffer_bytes), BATCH_NAP_MAX);
        assert_eq!(
            next_nap(BATCH_NAP_MAX, 1_200, ms(8), 0),
            BATCH_NAP_MIN,
            "an unknown buffer gets the shortest nap"
        );
    }

    fn start(dir: &Path, file_bytes_max: u64, files_kept: usize) -> (Arc<LogService>, LogSender) {
        let config = LogConfig {
            dir: dir.to_path_buf(),
            file_bytes_max,
            files_kept,
        };
        let (service, worker_end) = LogService::start(config).expect("start the log service");
        (service, LogSender::from_fd(worker_end))
    }

    fn line(request_id: &str, ts_unix_us: u64, text: &str) -> LogLine {
        LogLine {
            ts_unix_us,
            function: "greet".into(),
            version: 3,
            request_id: request_id.into(),
            stream: Stream::Stdout,
            text: text.into(),
        }
    }

    fn numbered(count: usize, from: usize) -> Vec<LogLine> {
        (from..from + count)
            .map(|n| {
                line(
                    &format!("r{n}"),
                    1_000_000 + n as u64,
                    &format!("line {n:05}"),
                )
            })
            .collect()
    }

    /// Waits until the thread has written `lines` lines in all.
    fn wait_written(service: &LogService, lines: u64) {
        let deadline = Instant::now() + WAIT_MAX;
        while service.lines_written() < lines {
            assert!(
                Instant::now() < deadline,
                "{} of {lines} lines written",
                service.lines_written()
            );
            thread::sleep(Duration::from_millis(2));
        }
    }

    fn all(tail: usize) -> LogQuery {
        LogQuery {
            tail: Some(tail),
            ..LogQuery::default()
        }
    }

    #[test]
    fn sent_lines_are_read_back_in_order_with_every_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (service, sender) = start(dir.path(), FILE_BYTES_MAX_DEFAULT, 2);
        let lines = vec![
            line("abc", 1_796_188_867_123_456, "hello"),
            LogLine {
                stream: Stream::Stderr,
                text: "ünïcode \"quoted\"\ttab".into(),
                ..line("abc", 1_796_188_867_123_457, "")
            },
            LogLine {
                stream: Stream::System,
                version: 0,
                ..line("def", 1_796_188_867_200_000, "done")
            },
        ];
        send_lines(&sender, "greet", &lines);
        wait_written(&service, 3);
        assert_eq!(
            service.read("greet", &LogQuery::default()).expect("read"),
            lines
        );
        assert_eq!(sender.dropped_lines(), 0);

        let file = fs::read_to_string(dir.path().join("greet").join(CURRENT_FILE)).expect("log");
        let first = file.lines().next().expect("a line");
        assert_eq!(
            first,
            r#"{"ts":"2026-12-02T05:21:07.123456Z","function":"greet","version":3,"request_id":"abc","stream":"stdout","text":"hello"}"#
        );
        let parsed: LogLine = serde_json::from_str(first).expect("parse");
        assert_eq!(parsed.ts_unix_us, 1_796_188_867_123_456);
        service.stop();
    }

    #[test]
    fn files_rotate_at_their_cap_and_keep_files_kept_old_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cap = 2048;
        let (service, sender) = start(dir.path(), cap, 2);
        let lines = numbered(200, 0);
        let line_bytes = serde_json::to_vec(&lines[0]).expect("encode").len() as u64 + 1;
        for chunk in lines.chunks(20) {
            send_lines(&sender, "greet", chunk);
        }
        wait_written(&service, 200);

        let log_dir = service.log_dir_of("greet");
        let current = fs::metadata(log_dir.join(CURRENT_FILE))
            .expect("current")
            .len();
        assert!(current <= cap, "current.log holds {current} bytes");
        let mut names: Vec<String> = fs::read_dir(&log_dir)
            .expect("dir")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        assert_eq!(names, ["1.log", "2.log", "current.log"]);
        for index in 1..=2 {
            let bytes = fs::metadata(rotated_path(&log_dir, index))
                .expect("old")
                .len();
            assert!(
                bytes <= cap && bytes + line_bytes > cap,
                "{index}.log: {bytes}"
            );
        }

        let read = service.read("greet", &all(TAIL_LINES_MAX)).expect("read");
        assert!(read.len() < 200, "the oldest lines are gone");
        let first = 200 - read.len();
        assert_eq!(read, lines[first..], "what is left, in order");
        service.stop();
    }

    #[test]
    fn followers_get_lines_in_order_from_when_they_registered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (service, sender) = start(dir.path(), FILE_BYTES_MAX_DEFAULT, 2);
        send_lines(&sender, "greet", &numbered(5, 0));
        wait_written(&service, 5);
        let follower = service.follow("greet").expect("follow");
        let other = service.follow("other").expect("follow another log");
        let lines = numbered(50, 5);
        for chunk in lines.chunks(7) {
            send_lines(&sender, "greet", chunk);
        }
        for expected in &lines {
            assert_eq!(follower.next_timeout(WAIT_MAX).as_ref(), Some(expected));
        }
        assert_eq!(follower.next_timeout(Duration::from_millis(20)), None);
        assert_eq!(other.next_timeout(Duration::from_millis(20)), None);
        service.stop();
    }

    #[test]
    fn a_slow_follower_loses_lines_and_is_told_how_many() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (service, sender) = start(dir.path(), FILE_BYTES_MAX_DEFAULT, 2);
        let follower = service.follow("greet").expect("follow");
        let extra = 76;
        let total = FOLLOWER_QUEUE_LINES_MAX + extra;
        for (n, chunk) in numbered(total, 0).chunks(100).enumerate() {
            send_lines(&sender, "greet", chunk);
            wait_written(&service, (n * 100 + chunk.len()) as u64);
        }
        assert_eq!(
            sender.dropped_lines(),
            0,
            "the sender never waits for a follower"
        );
        assert_eq!(service.dropped_lines(), extra as u64);

        let mut stdout_lines = 0;
        let notice = loop {
            let line = follower.next_timeout(WAIT_MAX).expect("a line");
            if line.stream == Stream::System {
                break line;
            }
            stdout_lines += 1;
        };
        assert_eq!(stdout_lines, FOLLOWER_QUEUE_LINES_MAX);
        assert_eq!(
            notice.text,
            format!("corefn: {extra} log lines dropped: this follower read too slowly")
        );
        assert_eq!((notice.function.as_str(), notice.version), ("greet", 3));
        assert_eq!(notice.request_id, "");

        // Caught up: new lines come through again.
        let later = numbered(1, total);
        send_lines(&sender, "greet", &later);
        assert_eq!(follower.next_timeout(WAIT_MAX), Some(later[0].clone()));
        assert_eq!(service.follower_count(), 1);
        drop(follower);
        assert_eq!(service.follower_count(), 0);
        service.stop();
    }

    #[test]
    fn followers_are_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (service, _sender) = start(dir.path(), FILE_BYTES_MAX_DEFAULT, 2);
        let followers: Vec<Follower> = (0..FOLLOWERS_MAX)
            .map(|n| service.follow(&format!("f{n}")).expect("follow"))
            .collect();
        assert!(matches!(
            service.follow("greet"),
            Err(LogError::TooManyFollowers { max: FOLLOWERS_MAX })
        ));
        drop(followers);
        assert_eq!(service.follower_count(), 0);
        assert!(service.follow("greet").is_ok());
        service.stop();
    }

    #[test]
    fn reads_filter_by_request_time_and_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (service, sender) = start(dir.path(), FILE_BYTES_MAX_DEFAULT, 2);
        let lines: Vec<LogLine> = (0..300u64)
            .map(|n| {
                line(
                    if n % 3 == 0 { "three" } else { "other" },
                    1_000 + n,
                    &n.to_string(),
                )
            })
            .collect();
        send_lines(&sender, "greet", &lines);
        // A line that is not JSON is skipped on reading.
        let current = service.log_dir_of("greet").join(CURRENT_FILE);
        wait_written(&service, 300);
        OpenOptions::new()
            .append(true)
            .open(&current)
            .and_then(|mut file| file.write_all(b"not json\n"))
            .expect("append junk");

        let texts = |query: LogQuery| -> Vec<String> {
            let read = service.read("greet", &query).expect("read");
            read.into_iter().map(|line| line.text).collect()
        };
        let default = texts(LogQuery::default());
        assert_eq!(default.len(), TAIL_LINES_DEFAULT);
        assert_eq!(default[0], "200");
        assert_eq!(texts(all(2)), ["298", "299"]);
        assert!(texts(all(0)).is_empty());
        assert_eq!(texts(all(usize::MAX)).len(), 300, "the cap is above 300");

        let of_request = texts(LogQuery {
            tail: Some(1000),
            request_id: Some("three".into()),
            ..LogQuery::default()
        });
        assert_eq!(of_request.len(), 100);
        assert_eq!(of_request[..2], ["0", "3"]);

        let since = texts(LogQuery {
            tail: Some(1000),
            since_unix_us: Some(1_295),
            ..LogQuery::default()
        });
        assert_eq!(since, ["295", "296", "297", "298", "299"]);

        let both = texts(LogQuery {
            tail: Some(1),
            since_unix_us: Some(1_100),
            request_id: Some("three".into()),
        });
        assert_eq!(both, ["297"]);
        assert!(service
            .read("nobody", &LogQuery::default())
            .expect("read")
            .is_empty());
        service.stop();
    }

    #[test]
    fn route_keys_get_sanitized_directories_under_routes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (service, sender) = start(dir.path(), FILE_BYTES_MAX_DEFAULT, 2);
        let root = dir.path();
        assert_eq!(service.log_dir_of("greet"), root.join("greet"));

        let route = service.log_dir_of("GET:/hello/*");
        assert_eq!(route.parent(), Some(root.join(ROUTES_DIR).as_path()));
        let route_name = route
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert!(route_name.starts_with("GET__hello__-"), "{route_name}");
        assert_ne!(
            route,
            service.log_dir_of("GET:/hello/?"),
            "the hash tells keys apart"
        );

        let long = "x".repeat(1000);
        for name in ["..", ".", "../../etc", "a/../../b", "", "/", &long, "Greet"] {
            let path = service.log_dir_of(name);
            let last = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            assert_eq!(
                path.parent(),
                Some(root.join(ROUTES_DIR).as_path()),
                "{name:?}"
            );
            assert!(
                last != "." && last != ".." && !last.starts_with('.'),
                "{last}"
            );
            assert!(last.len() <= ROUTE_DIR_NAME_BYTES_MAX + 9, "{last}");
            assert!(last
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')));
        }

        let lines = numbered(2, 0);
        send_lines(&sender, "../../escape", &lines);
        send_lines(&sender, "GET:/hello/*", &lines);
        wait_written(&service, 4);
        assert_eq!(
            service
                .read("GET:/hello/*", &LogQuery::default())
                .expect("read"),
            lines
        );
        assert_eq!(
            service
                .read("../../escape", &LogQuery::default())
                .expect("read"),
            lines
        );
        assert!(service
            .log_dir_of("../../escape")
            .join(CURRENT_FILE)
            .is_file());
        assert!(!root.join("..").join("escape").exists());
        service.stop();
    }

    #[test]
    fn remove_deletes_the_log_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (service, sender) = start(dir.path(), FILE_BYTES_MAX_DEFAULT, 2);
        send_lines(&sender, "greet", &numbered(3, 0));
        wait_written(&service, 3);
        let log_dir = service.log_dir_of("greet");
        assert!(log_dir.is_dir());
        service.remove("greet").expect("remove");
        assert!(!log_dir.exists());
        assert!(service
            .read("greet", &LogQuery::default())
            .expect("read")
            .is_empty());
        service.remove("greet").expect("a missing log is fine");

        // A later line starts a fresh log (the open file was closed).
        send_lines(&sender, "greet", &numbered(1, 10));
        wait_written(&service, 4);
        assert_eq!(
            service
                .read("greet", &LogQuery::default())
                .expect("read")
                .len(),
            1
        );
        service.stop();
    }

    #[test]
    fn a_line_too_long_for_a_datagram_is_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (service, sender) = start(dir.path(), FILE_BYTES_MAX_DEFAULT, 2);
        // Multi-byte characters and quotes (escaped as two bytes).
        let text = "é\"".repeat(DATAGRAM_BYTES_MAX);
        let lines = vec![line("big", 1, &text), line("small", 2, "after")];
        send_lines(&sender, "greet", &lines);
        wait_written(&service, 2);
        let read = service.read("greet", &LogQuery::default()).expect("read");
        assert_eq!(read.len(), 2);
        assert!(read[0].text.ends_with(TRUNCATED_SUFFIX));
        assert!(text.starts_with(read[0].text.trim_end_matches(TRUNCATED_SUFFIX)));
        assert!(read[0].text.len() < DATAGRAM_BYTES_MAX);
        assert_eq!(read[1], lines[1]);
        assert_eq!(sender.dropped_lines(), 0);
        service.stop();
    }

    #[test]
    fn escaped_lengths_agree_with_serde_json() {
        let chars = (0u32..0x100).chain([0x7ff, 0x800, 0xffff, 0x10000, 0x10ffff]);
        for c in chars.filter_map(char::from_u32) {
            let encoded = serde_json::to_string(&c.to_string()).expect("encode");
            assert_eq!(json_escaped_len(c), encoded.len() - 2, "{c:?}");
        }
        let mut encoded = Vec::new();
        let text = "\u{1}\n".repeat(DATAGRAM_BYTES_MAX);
        assert!(encode_fitting(
            &line("r", 1, &text).as_ref(),
            1000,
            &mut encoded
        ));
        assert!(
            encoded.len() <= 1000 && encoded.len() > 1000 - 6,
            "{}",
            encoded.len()
        );
    }

    #[test]
    fn many_lines_span_datagrams() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (service, sender) = start(dir.path(), FILE_BYTES_MAX_DEFAULT, 2);
        let text = "y".repeat(1000);
        let lines: Vec<LogLine> = (0..150u64).map(|n| line("r", n, &text)).collect();
        send_lines(&sender, "greet", &lines);
        wait_written(&service, 150);
        assert_eq!(service.read("greet", &all(1000)).expect("read"), lines);
        service.stop();
    }

    #[test]
    fn a_sender_never_blocks_when_nobody_reads() {
        let (_reader, writer) = socketpair(
            AddressFamily::Unix,
            SockType::Datagram,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .expect("socketpair");
        let sender = LogSender::from_fd(writer);
        let lines = numbered(10, 0);
        for _ in 0..1000 {
            send_lines(&sender, "greet", &lines);
        }
        assert!(sender.dropped_lines() > 0, "a full socket drops lines");
        assert_eq!(
            sender.dropped_lines() % 10,
            0,
            "whole datagrams are dropped"
        );
    }

    #[test]
    fn a_sender_whose_gateway_is_gone_counts_drops() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (service, sender) = start(dir.path(), FILE_BYTES_MAX_DEFAULT, 2);
        service.stop();
        drop(service);
        send_lines(&sender, "greet", &numbered(3, 0));
        assert_eq!(sender.dropped_lines(), 3);
    }

    #[test]
    fn junk_datagrams_are_rejected_and_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (service, worker_end) =
            LogService::start(LogConfig::new(dir.path().to_path_buf())).expect("start");
        let raw = |bytes: &[u8]| {
            send(worker_end.as_raw_fd(), bytes, MsgFlags::MSG_DONTWAIT).expect("send");
        };
        raw(b"\n{\"x\":1}\n");
        raw(b"greet\nnot json\n");
        let sender = LogSender::from_fd(worker_end);
        send_lines(&sender, "greet", &numbered(1, 0));
        wait_written(&service, 1);
        assert_eq!(service.lines_rejected(), 2);
        assert_eq!(
            service
                .read("greet", &LogQuery::default())
                .expect("read")
                .len(),
            1
        );
        service.stop();
    }

    #[test]
    fn output_splits_into_lines() {
        let split = |bytes: &[u8]| -> Vec<String> {
            lines_from_output("greet", 3, "r", Stream::Stderr, bytes, 7)
                .into_iter()
                .map(|line| line.text)
                .collect()
        };
        assert!(split(b"").is_empty());
        assert_eq!(split(b"a\n"), ["a"]);
        assert_eq!(split(b"a\nb"), ["a", "b"], "a final partial line counts");
        assert_eq!(split(b"\n"), [""]);
        assert_eq!(split(b"a\n\nb\n"), ["a", "", "b"]);
        assert_eq!(split(b"bad \xff utf-8"), ["bad \u{fffd} utf-8"]);

        let lines = lines_from_output("greet", 3, "r", Stream::Stderr, b"x\n", 7);
        assert_eq!(
            lines,
            [line("r", 7, "x")].map(|l| LogLine {
                stream: Stream::Stderr,
                ..l
            })
        );

        let long = vec![b'z'; OUTPUT_LINE_TEXT_BYTES_MAX + 10];
        let cut = split(&long);
        assert_eq!(cut.len(), 1);
        assert!(cut[0].ends_with(TRUNCATED_SUFFIX));
        assert_eq!(
            cut[0].len(),
            OUTPUT_LINE_TEXT_BYTES_MAX + TRUNCATED_SUFFIX.len()
        );
    }

    #[test]
    fn output_lines_are_capped() {
        let output = "l\n".repeat(OUTPUT_LINES_MAX + 25);
        let lines = lines_from_output("greet", 3, "r", Stream::Stdout, output.as_bytes(), 7);
        assert_eq!(lines.len(), OUTPUT_LINES_MAX + 1);
        assert!(lines[..OUTPUT_LINES_MAX]
            .iter()
            .all(|line| line.stream == Stream::Stdout && line.text == "l"));
        let last = &lines[OUTPUT_LINES_MAX];
        assert_eq!(last.stream, Stream::System);
        assert_eq!(last.text, "…25 more lines not logged");
        assert_eq!(
            (last.function.as_str(), last.request_id.as_str()),
            ("greet", "r")
        );

        let exactly = "l\n".repeat(OUTPUT_LINES_MAX);
        let lines = lines_from_output("greet", 3, "r", Stream::Stdout, exactly.as_bytes(), 7);
        assert_eq!(
            lines.len(),
            OUTPUT_LINES_MAX,
            "no notice when nothing is left out"
        );
    }

    #[test]
    fn stop_ends_the_thread_promptly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (service, _sender) = start(dir.path(), FILE_BYTES_MAX_DEFAULT, 2);
        let started = Instant::now();
        service.stop();
        assert!(started.elapsed() < STOP_POLL_INTERVAL * 3);
    }
}
