//! The access log: one line per request in the common log format plus time
//! to first byte and time to last byte.
//!
//! Each core formats lines into its own buffer and hands full buffers to one
//! writer thread over a bounded channel; the executor never blocks on the
//! file. When the writer falls behind, lines are dropped and counted rather
//! than stalling requests.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::request::RequestId;
use crate::clock;
use crate::config::AccessLogFormat;
use crate::telemetry::stats::FunctionStats;

/// Buffers in flight to the writer thread at most.
const CHANNEL_BUFFERS_MAX: usize = 256;
/// A core hands its buffer over once it holds this much.
const CORE_BUFFER_BYTES_FLUSH: usize = 32 * 1024;
/// ... or once it is this old.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// What cores send to the writer thread.
pub enum LogMessage {
    Lines(Vec<u8>),
    /// Everything sent before this is written; the thread ends. Explicit,
    /// because glommio may keep a finished executor's tasks (and their
    /// senders) alive, so the channel alone never closes.
    Finish,
}

pub struct AccessLogWriter {
    sender: SyncSender<LogMessage>,
    thread: JoinHandle<()>,
}

impl AccessLogWriter {
    /// `-` writes to stdout; anything else is a file opened for appending.
    pub fn start(path: &Path) -> io::Result<AccessLogWriter> {
        let sink: Box<dyn Write + Send> = if path == Path::new("-") {
            Box::new(io::stdout())
        } else {
            Box::new(OpenOptions::new().create(true).append(true).open(path)?)
        };
        let (sender, receiver) = mpsc::sync_channel(CHANNEL_BUFFERS_MAX);
        let thread = thread::Builder::new()
            .name("corefn-access-log".into())
            .spawn(move || write_all(receiver, sink))?;
        Ok(AccessLogWriter { sender, thread })
    }

    pub fn sender(&self) -> SyncSender<LogMessage> {
        self.sender.clone()
    }

    /// Waits until every buffer handed over so far is written.
    pub fn finish(self) {
        // Blocking send: the writer drains the queue, so this cannot wait long.
        let _ = self.sender.send(LogMessage::Finish);
        if self.thread.join().is_err() {
            eprintln!("corefn: access log writer panicked");
        }
    }
}

fn write_all(receiver: Receiver<LogMessage>, mut sink: Box<dyn Write + Send>) {
    let mut failed = false;
    for message in receiver {
        let LogMessage::Lines(chunk) = message else {
            return;
        };
        let result = sink.write_all(&chunk).and_then(|()| sink.flush());
        if let Err(error) = result {
            if !failed {
                eprintln!("corefn: access log: {error}");
            }
            failed = true;
        }
    }
}

/// What the log needs from one request.
pub struct LogEntry {
    pub peer: IpAddr,
    pub request_line: String,
    pub status: u16,
    pub body_bytes: usize,
    pub received_at: Instant,
    pub request_id: RequestId,
    /// The function (name and version) a function route's request went to.
    pub function: Option<Arc<FunctionStats>>,
    /// The worker that answered it.
    pub worker: Option<usize>,
}

/// One core's side of the log.
pub struct CoreAccessLog {
    format: AccessLogFormat,
    sender: SyncSender<LogMessage>,
    buffer: RefCell<Vec<u8>>,
    last_flush: Cell<Instant>,
    lines_dropped: Cell<u64>,
}

impl CoreAccessLog {
    pub fn new(sender: SyncSender<LogMessage>, format: AccessLogFormat) -> CoreAccessLog {
        CoreAccessLog {
            format,
            sender,
            buffer: RefCell::new(Vec::with_capacity(CORE_BUFFER_BYTES_FLUSH)),
            last_flush: Cell::new(Instant::now()),
            lines_dropped: Cell::new(0),
        }
    }

    /// `first_byte_at`/`last_byte_at`: when the write that carried the
    /// response started and when it completed.
    pub fn record(&self, entry: &LogEntry, first_byte_at: Instant, last_byte_at: Instant) {
        let ttfb_us = first_byte_at
            .saturating_duration_since(entry.received_at)
            .as_micros();
        let ttlb_us = last_byte_at
            .saturating_duration_since(entry.received_at)
            .as_micros();
        let mut line = String::with_capacity(200);
        match self.format {
            AccessLogFormat::Clf => {
                // Writing into a String cannot fail.
                let _ = writeln!(
                    line,
                    "{} - - [{}] \"{}\" {} {} ttfb_us={} ttlb_us={} request_id={}",
                    entry.peer,
                    clock::clf_timestamp(clock::unix_now_secs()),
                    entry.request_line.escape_default(),
                    entry.status,
                    entry.body_bytes,
                    ttfb_us,
                    ttlb_us,
                    entry.request_id.as_str(),
                );
            }
            AccessLogFormat::Json => {
                let value = serde_json::json!({
                    "ts": clock::rfc3339_us(clock::unix_now_us()),
                    "peer": entry.peer.to_string(),
                    "request": entry.request_line,
                    "request_id": entry.request_id.as_str(),
                    "status": entry.status,
                    "bytes": entry.body_bytes,
                    "ttfb_us": ttfb_us as u64,
                    "ttlb_us": ttlb_us as u64,
                    "function": entry.function.as_ref().map(|f| f.name.as_str()),
                    "version": entry.function.as_ref().map(|f| f.version),
                    "worker": entry.worker,
                });
                let _ = writeln!(line, "{value}");
            }
        }
        let full = {
            let mut buffer = self.buffer.borrow_mut();
            buffer.extend_from_slice(line.as_bytes());
            buffer.len() >= CORE_BUFFER_BYTES_FLUSH
        };
        if full {
            self.flush();
        }
    }

    pub fn flush_if_due(&self) {
        if self.last_flush.get().elapsed() >= FLUSH_INTERVAL {
            self.flush();
        }
    }

    pub fn flush(&self) {
        self.last_flush.set(Instant::now());
        let chunk = {
            let mut buffer = self.buffer.borrow_mut();
            if buffer.is_empty() {
                return;
            }
            std::mem::replace(&mut *buffer, Vec::with_capacity(CORE_BUFFER_BYTES_FLUSH))
        };
        match self.sender.try_send(LogMessage::Lines(chunk)) {
            Ok(()) => {}
            Err(TrySendError::Full(message)) | Err(TrySendError::Disconnected(message)) => {
                let LogMessage::Lines(chunk) = message else {
                    return;
                };
                let lines = chunk.iter().filter(|&&b| b == b'\n').count() as u64;
                let dropped = self.lines_dropped.get() + lines;
                self.lines_dropped.set(dropped);
                eprintln!("corefn: access log is behind; {dropped} lines dropped so far");
            }
        }
    }
}
