//! FastCGI 1.0 client, responder role: how a worker talks to its warm
//! `php-cgi` host.
//!
//! Owns the wire format and nothing else: record framing (8-byte headers,
//! content of at most 65,535 bytes, padding to 8 bytes), name-value pair
//! encoding (1- or 4-byte lengths), and the exchange of one request:
//! BEGIN_REQUEST, PARAMS, STDIN out; STDOUT, STDERR, END_REQUEST back.
//! [`request`] runs one request at a time on a connection (no multiplexing);
//! with `keep_conn` the request carries FCGI_KEEP_CONN, so the application
//! keeps the connection open and the same stream serves the next request.
//! [`get_values`] asks the management question FCGI_GET_VALUES.
//!
//! The stream is the caller's: it connects, sets read/write timeouts (a
//! timeout surfaces as [`FastCgiError::Io`], see [`FastCgiError::is_timeout`])
//! and decides what to do with a host after an error (after any error but
//! [`FastCgiError::Rejected`] the connection is in an unknown state and must
//! be dropped; after [`FastCgiError::StdoutTooLarge`] the host is still
//! writing and should be killed).
//!
//! Never does: panic on anything the peer sends (every length is checked,
//! every malformed record is a [`FastCgiError::Protocol`]); grow a buffer
//! without a bound (stdout is capped by the caller, stderr at
//! [`STDERR_BYTES_MAX`] with the excess dropped, everything else the peer
//! may send at [`RESPONSE_OVERHEAD_BYTES_MAX`]); read past the end of its
//! own request on a kept connection.
//!
//! php-cgi with PHP_FCGI_CHILDREN=0 is one process serving one connection
//! at a time: while a kept connection is open, further connections wait in
//! the listen backlog. A worker keeps exactly one connection per host.
//!
//! The request is written in full before the response is read. A script that
//! prints more than the socket buffer holds without reading a request body
//! larger than the socket buffer therefore blocks both sides until the
//! stream's timeout.

use std::io::{self, ErrorKind, Read, Write};

/// The only protocol version there is.
pub const FCGI_VERSION_1: u8 = 1;
/// Every record starts with a header of this size.
pub const RECORD_HEADER_BYTES: usize = 8;
/// The content length field is 16 bits.
pub const RECORD_CONTENT_BYTES_MAX: usize = 65_535;
/// Records are padded so that header + content + padding is a multiple of
/// this (the spec's recommendation; php-cgi does the same).
pub const RECORD_ALIGN_BYTES: usize = 8;
/// Longest name or value a 4-byte length can encode (31 bits).
pub const NAME_VALUE_LENGTH_MAX: usize = 0x7FFF_FFFF;
/// Longest name or value a 1-byte length can encode.
pub const NAME_VALUE_SHORT_LENGTH_MAX: usize = 127;
/// The encoded params of one request, all records together. A single pair
/// must also fit in one record: php-cgi parses each PARAMS record on its
/// own, so a pair never spans records.
pub const PARAMS_BYTES_MAX: usize = 1024 * 1024;
/// Bytes of FCGI_STDERR kept per request; the excess is read and dropped.
pub const STDERR_BYTES_MAX: usize = 64 * 1024;
/// Bytes the peer may send for one request beyond the stdout it is allowed:
/// record headers, padding, the whole stderr stream (kept or dropped),
/// management records. More is a protocol error.
pub const RESPONSE_OVERHEAD_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Names one [`get_values`] call may ask for.
pub const GET_VALUES_NAMES_MAX: usize = 16;
/// The request is written in writes of at most this many bytes; a small
/// request (params and body together under this) is a single write.
const WRITE_BUFFER_BYTES_MAX: usize = 128 * 1024;
/// Responses are read in reads of at most this many bytes.
const READ_BUFFER_BYTES: usize = 16 * 1024;

const FCGI_BEGIN_REQUEST: u8 = 1;
const FCGI_ABORT_REQUEST: u8 = 2;
const FCGI_END_REQUEST: u8 = 3;
const FCGI_PARAMS: u8 = 4;
const FCGI_STDIN: u8 = 5;
const FCGI_STDOUT: u8 = 6;
const FCGI_STDERR: u8 = 7;
const FCGI_DATA: u8 = 8;
const FCGI_GET_VALUES: u8 = 9;
const FCGI_GET_VALUES_RESULT: u8 = 10;
const FCGI_UNKNOWN_TYPE: u8 = 11;

/// Request id 0 is the connection's management channel.
const FCGI_NULL_REQUEST_ID: u16 = 0;
const FCGI_RESPONDER: u16 = 1;
const FCGI_KEEP_CONN: u8 = 1;
/// Body length of BEGIN_REQUEST and END_REQUEST records.
const FCGI_BEGIN_END_BODY_BYTES: usize = 8;

/// `protocol_status` of an END_REQUEST record.
pub const FCGI_REQUEST_COMPLETE: u8 = 0;
pub const FCGI_CANT_MPX_CONN: u8 = 1;
pub const FCGI_OVERLOADED: u8 = 2;
pub const FCGI_UNKNOWN_ROLE: u8 = 3;

/// What the application answered to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastCgiOutput {
    /// The FCGI_STDOUT stream: for php-cgi, a CGI response (headers, blank
    /// line, body).
    pub stdout: Vec<u8>,
    /// The first [`STDERR_BYTES_MAX`] bytes of the FCGI_STDERR stream.
    pub stderr: Vec<u8>,
    /// `appStatus` of END_REQUEST (php-cgi always sends 0).
    pub app_status: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum FastCgiError {
    /// Reading or writing the stream failed, including its timeouts (see
    /// [`FastCgiError::is_timeout`]) and arguments this client refuses to
    /// encode (kind `InvalidInput`).
    #[error("fastcgi i/o: {0}")]
    Io(#[source] io::Error),
    /// The peer sent something that is not FastCGI 1.0 as this client
    /// speaks it: a wrong version, a record for another request id, an
    /// unexpected record type, a malformed record body.
    #[error("fastcgi protocol: {0}")]
    Protocol(String),
    /// The application's stdout passed the caller's cap; reading stopped.
    #[error("fastcgi stdout exceeds {limit_bytes} bytes")]
    StdoutTooLarge { limit_bytes: usize },
    /// The peer closed the connection before END_REQUEST.
    #[error("fastcgi connection closed before the end of the request")]
    ConnectionClosed,
    /// END_REQUEST with a protocol status other than FCGI_REQUEST_COMPLETE
    /// (1 = can't multiplex, 2 = overloaded, 3 = unknown role).
    #[error("fastcgi request rejected: {}", protocol_status_name(*protocol_status))]
    Rejected { protocol_status: u8 },
}

/// The spec's name of an END_REQUEST `protocol_status`.
fn protocol_status_name(status: u8) -> &'static str {
    match status {
        FCGI_REQUEST_COMPLETE => "FCGI_REQUEST_COMPLETE",
        FCGI_CANT_MPX_CONN => "FCGI_CANT_MPX_CONN",
        FCGI_OVERLOADED => "FCGI_OVERLOADED",
        FCGI_UNKNOWN_ROLE => "FCGI_UNKNOWN_ROLE",
        _ => "unknown protocol status",
    }
}

impl FastCgiError {
    /// True when a read or write timed out (a socket timeout shows as
    /// `WouldBlock` on Linux, `TimedOut` elsewhere).
    pub fn is_timeout(&self) -> bool {
        matches!(self, FastCgiError::Io(error)
            if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
    }
}

/// I/O errors that mean the peer is gone become [`FastCgiError::ConnectionClosed`].
fn io_error(error: io::Error) -> FastCgiError {
    match error.kind() {
        ErrorKind::UnexpectedEof
        | ErrorKind::BrokenPipe
        | ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::WriteZero => FastCgiError::ConnectionClosed,
        _ => FastCgiError::Io(error),
    }
}

fn invalid_input(message: String) -> FastCgiError {
    FastCgiError::Io(io::Error::new(ErrorKind::InvalidInput, message))
}

/// Runs one responder request on `stream` and returns its output once the
/// application sent END_REQUEST for `request_id` (which must not be 0).
///
/// `params` are the CGI variables (SCRIPT_FILENAME, REQUEST_METHOD, ...);
/// `stdin` is the whole request body. With `keep_conn` the application
/// keeps the connection open after the request and the stream can carry the
/// next one; without it the application closes it.
///
/// Stdout past `stdout_bytes_max` stops the request with
/// [`FastCgiError::StdoutTooLarge`]; stderr past [`STDERR_BYTES_MAX`] is
/// dropped.
///
/// On a kept connection give each request a new id (cycle through
/// 1..=65535): records of any other id are a [`FastCgiError::Protocol`]
/// error, so a late answer to an earlier, abandoned request is never taken
/// for this one's.
pub fn request<S: Read + Write>(
    stream: &mut S,
    request_id: u16,
    params: &[(String, String)],
    stdin: &[u8],
    stdout_bytes_max: usize,
    keep_conn: bool,
) -> Result<FastCgiOutput, FastCgiError> {
    if request_id == FCGI_NULL_REQUEST_ID {
        return Err(invalid_input(
            "request id 0 is reserved for management records".to_string(),
        ));
    }
    write_request(stream, request_id, params, stdin, keep_conn)?;
    read_response(stream, request_id, stdout_bytes_max)
}

fn write_request<W: Write>(
    stream: &mut W,
    request_id: u16,
    params: &[(String, String)],
    stdin: &[u8],
    keep_conn: bool,
) -> Result<(), FastCgiError> {
    // Refuse params this client cannot send before writing anything, so a
    // refused request leaves the connection clean.
    let mut params_bytes = 0usize;
    for (name, value) in params {
        let pair_bytes = name_value_pair_bytes(name.len(), value.len());
        if pair_bytes > RECORD_CONTENT_BYTES_MAX {
            return Err(invalid_input(format!(
                "fastcgi param {name:?} encodes to {pair_bytes} bytes, more than one record holds ({RECORD_CONTENT_BYTES_MAX})"
            )));
        }
        params_bytes += pair_bytes;
        if params_bytes > PARAMS_BYTES_MAX {
            return Err(invalid_input(format!(
                "fastcgi params exceed {PARAMS_BYTES_MAX} bytes"
            )));
        }
    }

    let mut writer = RecordWriter::new(stream);
    let mut begin = [0u8; FCGI_BEGIN_END_BODY_BYTES];
    begin[0..2].copy_from_slice(&FCGI_RESPONDER.to_be_bytes());
    begin[2] = if keep_conn { FCGI_KEEP_CONN } else { 0 };
    writer.push(FCGI_BEGIN_REQUEST, request_id, &begin)?;

    let mut content: Vec<u8> = Vec::with_capacity(params_bytes.min(RECORD_CONTENT_BYTES_MAX));
    for (name, value) in params {
        let pair_bytes = name_value_pair_bytes(name.len(), value.len());
        if content.len() + pair_bytes > RECORD_CONTENT_BYTES_MAX {
            writer.push(FCGI_PARAMS, request_id, &content)?;
            content.clear();
        }
        encode_name_value_pair(&mut content, name.as_bytes(), value.as_bytes());
    }
    if !content.is_empty() {
        writer.push(FCGI_PARAMS, request_id, &content)?;
    }
    writer.push(FCGI_PARAMS, request_id, &[])?;

    for chunk in stdin.chunks(RECORD_CONTENT_BYTES_MAX) {
        writer.push(FCGI_STDIN, request_id, chunk)?;
    }
    writer.push(FCGI_STDIN, request_id, &[])?;
    writer.finish()
}

/// Padding that brings `content_bytes` to a multiple of [`RECORD_ALIGN_BYTES`].
fn padding_bytes(content_bytes: usize) -> usize {
    (RECORD_ALIGN_BYTES - content_bytes % RECORD_ALIGN_BYTES) % RECORD_ALIGN_BYTES
}

/// Appends one record (header, content, zero padding) to `out`.
/// `content` must be at most [`RECORD_CONTENT_BYTES_MAX`] bytes.
fn encode_record(out: &mut Vec<u8>, record_type: u8, request_id: u16, content: &[u8]) {
    assert!(content.len() <= RECORD_CONTENT_BYTES_MAX);
    let padding = padding_bytes(content.len());
    let [id_high, id_low] = request_id.to_be_bytes();
    let [length_high, length_low] = (content.len() as u16).to_be_bytes();
    out.extend_from_slice(&[
        FCGI_VERSION_1,
        record_type,
        id_high,
        id_low,
        length_high,
        length_low,
        padding as u8,
        0,
    ]);
    out.extend_from_slice(content);
    out.extend_from_slice(&[0u8; RECORD_ALIGN_BYTES][..padding]);
}

/// Length of one encoded name-value pair.
fn name_value_pair_bytes(name_bytes: usize, value_bytes: usize) -> usize {
    let length_bytes = |n: usize| {
        if n <= NAME_VALUE_SHORT_LENGTH_MAX {
            1
        } else {
            4
        }
    };
    length_bytes(name_bytes) + length_bytes(value_bytes) + name_bytes + value_bytes
}

fn encode_length(out: &mut Vec<u8>, length: usize) {
    assert!(length <= NAME_VALUE_LENGTH_MAX);
    if length <= NAME_VALUE_SHORT_LENGTH_MAX {
        out.push(length as u8);
    } else {
        out.extend_from_slice(&(length as u32 | 0x8000_0000).to_be_bytes());
    }
}

/// Appends one name-value pair. Callers bound both lengths first (a pair
/// never exceeds one record, far below [`NAME_VALUE_LENGTH_MAX`]).
fn encode_name_value_pair(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    encode_length(out, name.len());
    encode_length(out, value.len());
    out.extend_from_slice(name);
    out.extend_from_slice(value);
}

/// One decoded name-value pair: name bytes, value bytes.
type NameValuePair = (Vec<u8>, Vec<u8>);

/// Splits the content of a PARAMS or GET_VALUES(_RESULT) record into its
/// name-value pairs. A length that runs past the content is a protocol
/// error; the number of pairs is bounded by the content's length.
fn decode_name_value_pairs(content: &[u8]) -> Result<Vec<NameValuePair>, FastCgiError> {
    fn length(content: &[u8], at: &mut usize) -> Result<usize, FastCgiError> {
        let first = *content
            .get(*at)
            .ok_or_else(|| FastCgiError::Protocol("name-value length truncated".to_string()))?;
        if first & 0x80 == 0 {
            *at += 1;
            return Ok(usize::from(first));
        }
        let bytes: [u8; 4] = content
            .get(*at..*at + 4)
            .and_then(|slice| slice.try_into().ok())
            .ok_or_else(|| FastCgiError::Protocol("name-value length truncated".to_string()))?;
        *at += 4;
        Ok((u32::from_be_bytes(bytes) & 0x7FFF_FFFF) as usize)
    }

    let mut pairs = Vec::new();
    let mut at = 0usize;
    while at < content.len() {
        let name_bytes = length(content, &mut at)?;
        let value_bytes = length(content, &mut at)?;
        let name_end = at
            .checked_add(name_bytes)
            .filter(|&end| end <= content.len());
        let value_end = name_end
            .and_then(|end| end.checked_add(value_bytes))
            .filter(|&end| end <= content.len());
        let (Some(name_end), Some(value_end)) = (name_end, value_end) else {
            return Err(FastCgiError::Protocol(format!(
                "name-value pair of {name_bytes} + {value_bytes} bytes runs past its record"
            )));
        };
        pairs.push((
            content[at..name_end].to_vec(),
            content[name_end..value_end].to_vec(),
        ));
        at = value_end;
    }
    Ok(pairs)
}

/// Asks the application for management variables (FCGI_MAX_CONNS,
/// FCGI_MAX_REQS, FCGI_MPXS_CONNS) with FCGI_GET_VALUES and returns the
/// pairs of its GET_VALUES_RESULT (names it does not know are left out).
/// php-cgi answers and keeps the connection open for requests, so this
/// works as a readiness probe on the connection a worker then keeps.
pub fn get_values<S: Read + Write>(
    stream: &mut S,
    names: &[&str],
) -> Result<Vec<(String, String)>, FastCgiError> {
    if names.len() > GET_VALUES_NAMES_MAX {
        return Err(invalid_input(format!(
            "at most {GET_VALUES_NAMES_MAX} names per FCGI_GET_VALUES"
        )));
    }
    let mut content = Vec::new();
    for name in names {
        if name_value_pair_bytes(name.len(), 0) + content.len() > RECORD_CONTENT_BYTES_MAX {
            return Err(invalid_input(
                "FCGI_GET_VALUES names exceed one record".to_string(),
            ));
        }
        encode_name_value_pair(&mut content, name.as_bytes(), &[]);
    }
    let mut writer = RecordWriter::new(stream);
    writer.push(FCGI_GET_VALUES, FCGI_NULL_REQUEST_ID, &content)?;
    writer.finish()?;

    let mut reader = RecordReader::new(stream, RESPONSE_OVERHEAD_BYTES_MAX);
    loop {
        let header = reader.read_header()?;
        if header.request_id != FCGI_NULL_REQUEST_ID {
            return Err(FastCgiError::Protocol(format!(
                "record type {} for request id {} in answer to FCGI_GET_VALUES",
                header.record_type, header.request_id
            )));
        }
        match header.record_type {
            FCGI_GET_VALUES_RESULT => {
                let mut content = vec![0u8; header.content_bytes];
                reader.read_exact(&mut content)?;
                reader.skip(header.padding_bytes)?;
                return decode_name_value_pairs(&content).map(|pairs| {
                    pairs
                        .into_iter()
                        .map(|(name, value)| {
                            (
                                String::from_utf8_lossy(&name).into_owned(),
                                String::from_utf8_lossy(&value).into_owned(),
                            )
                        })
                        .collect()
                });
            }
            FCGI_UNKNOWN_TYPE => reader.skip(header.content_bytes + header.padding_bytes)?,
            other => {
                return Err(FastCgiError::Protocol(format!(
                    "management record type {other} in answer to FCGI_GET_VALUES"
                )))
            }
        }
    }
}

fn read_response<R: Read>(
    stream: &mut R,
    request_id: u16,
    stdout_bytes_max: usize,
) -> Result<FastCgiOutput, FastCgiError> {
    let read_bytes_max = stdout_bytes_max.saturating_add(RESPONSE_OVERHEAD_BYTES_MAX);
    let mut reader = RecordReader::new(stream, read_bytes_max);
    let mut stdout: Vec<u8> = Vec::new();
    let mut stderr: Vec<u8> = Vec::new();
    loop {
        let header = reader.read_header()?;
        if header.request_id == FCGI_NULL_REQUEST_ID {
            // Management records (an answer to a question never asked, or
            // UNKNOWN_TYPE) carry nothing for this request: skip them.
            match header.record_type {
                FCGI_GET_VALUES_RESULT | FCGI_UNKNOWN_TYPE => {
                    reader.skip(header.content_bytes + header.padding_bytes)?;
                    continue;
                }
                other => {
                    return Err(FastCgiError::Protocol(format!(
                        "unexpected management record type {other}"
                    )))
                }
            }
        }
        if header.request_id != request_id {
            return Err(FastCgiError::Protocol(format!(
                "record for request id {} while request {request_id} is in flight",
                header.request_id
            )));
        }
        match header.record_type {
            FCGI_STDOUT => {
                if stdout.len() + header.content_bytes > stdout_bytes_max {
                    return Err(FastCgiError::StdoutTooLarge {
                        limit_bytes: stdout_bytes_max,
                    });
                }
                stdout.reserve(header.content_bytes);
                reader.consume(header.content_bytes, |chunk| {
                    stdout.extend_from_slice(chunk);
                })?;
                reader.skip(header.padding_bytes)?;
            }
            FCGI_STDERR => {
                reader.consume(header.content_bytes, |chunk| {
                    let room = STDERR_BYTES_MAX - stderr.len();
                    stderr.extend_from_slice(&chunk[..chunk.len().min(room)]);
                })?;
                reader.skip(header.padding_bytes)?;
            }
            FCGI_END_REQUEST => {
                if header.content_bytes != FCGI_BEGIN_END_BODY_BYTES {
                    return Err(FastCgiError::Protocol(format!(
                        "END_REQUEST body of {} bytes, not {FCGI_BEGIN_END_BODY_BYTES}",
                        header.content_bytes
                    )));
                }
                let mut body = [0u8; FCGI_BEGIN_END_BODY_BYTES];
                reader.read_exact(&mut body)?;
                reader.skip(header.padding_bytes)?;
                let app_status = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                let protocol_status = body[4];
                if protocol_status != FCGI_REQUEST_COMPLETE {
                    return Err(FastCgiError::Rejected { protocol_status });
                }
                if reader.buffered_bytes() > 0 {
                    // One request at a time: nothing may follow END_REQUEST,
                    // and dropping it would desynchronise a kept connection.
                    return Err(FastCgiError::Protocol(format!(
                        "{} bytes after END_REQUEST",
                        reader.buffered_bytes()
                    )));
                }
                return Ok(FastCgiOutput {
                    stdout,
                    stderr,
                    app_status,
                });
            }
            FCGI_BEGIN_REQUEST | FCGI_ABORT_REQUEST | FCGI_PARAMS | FCGI_STDIN | FCGI_DATA
            | FCGI_GET_VALUES => {
                return Err(FastCgiError::Protocol(format!(
                    "record type {} is sent to applications, not by them",
                    header.record_type
                )))
            }
            other => {
                return Err(FastCgiError::Protocol(format!(
                    "unknown record type {other}"
                )))
            }
        }
    }
}

/// Collects records into writes of at most [`WRITE_BUFFER_BYTES_MAX`].
struct RecordWriter<'a, W: Write> {
    stream: &'a mut W,
    buffer: Vec<u8>,
}

impl<'a, W: Write> RecordWriter<'a, W> {
    fn new(stream: &'a mut W) -> Self {
        RecordWriter {
            stream,
            buffer: Vec::new(),
        }
    }

    fn push(
        &mut self,
        record_type: u8,
        request_id: u16,
        content: &[u8],
    ) -> Result<(), FastCgiError> {
        let record_bytes = RECORD_HEADER_BYTES + content.len() + padding_bytes(content.len());
        if self.buffer.len() + record_bytes > WRITE_BUFFER_BYTES_MAX {
            self.flush_buffer()?;
        }
        encode_record(&mut self.buffer, record_type, request_id, content);
        Ok(())
    }

    fn flush_buffer(&mut self) -> Result<(), FastCgiError> {
        if !self.buffer.is_empty() {
            self.stream.write_all(&self.buffer).map_err(io_error)?;
            self.buffer.clear();
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(), FastCgiError> {
        self.flush_buffer()?;
        self.stream.flush().map_err(io_error)
    }
}

struct RecordHeader {
    record_type: u8,
    request_id: u16,
    content_bytes: usize,
    padding_bytes: usize,
}

/// Reads records through a fixed buffer of [`READ_BUFFER_BYTES`] and stops
/// after `read_bytes_max` bytes in all.
struct RecordReader<'a, R: Read> {
    stream: &'a mut R,
    buffer: Vec<u8>,
    start: usize,
    end: usize,
    read_bytes: usize,
    read_bytes_max: usize,
}

impl<'a, R: Read> RecordReader<'a, R> {
    fn new(stream: &'a mut R, read_bytes_max: usize) -> Self {
        RecordReader {
            stream,
            buffer: vec![0u8; READ_BUFFER_BYTES],
            start: 0,
            end: 0,
            read_bytes: 0,
            read_bytes_max,
        }
    }

    fn buffered_bytes(&self) -> usize {
        self.end - self.start
    }

    /// Refills the (empty) buffer with at least one byte.
    fn fill(&mut self) -> Result<(), FastCgiError> {
        debug_assert_eq!(self.start, self.end);
        let read = loop {
            match self.stream.read(&mut self.buffer) {
                Ok(0) => return Err(FastCgiError::ConnectionClosed),
                Ok(read) => break read,
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(error) => return Err(io_error(error)),
            }
        };
        self.read_bytes = self.read_bytes.saturating_add(read);
        if self.read_bytes > self.read_bytes_max {
            return Err(FastCgiError::Protocol(format!(
                "response exceeds {} bytes",
                self.read_bytes_max
            )));
        }
        self.start = 0;
        self.end = read;
        Ok(())
    }

    /// Passes the next `bytes` bytes to `sink`, in one or more slices.
    fn consume(
        &mut self,
        mut bytes: usize,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<(), FastCgiError> {
        while bytes > 0 {
            if self.start == self.end {
                self.fill()?;
            }
            let take = bytes.min(self.end - self.start);
            sink(&self.buffer[self.start..self.start + take]);
            self.start += take;
            bytes -= take;
        }
        Ok(())
    }

    fn skip(&mut self, bytes: usize) -> Result<(), FastCgiError> {
        self.consume(bytes, |_| {})
    }

    fn read_exact(&mut self, out: &mut [u8]) -> Result<(), FastCgiError> {
        let mut filled = 0usize;
        self.consume(out.len(), |chunk| {
            out[filled..filled + chunk.len()].copy_from_slice(chunk);
            filled += chunk.len();
        })
    }

    fn read_header(&mut self) -> Result<RecordHeader, FastCgiError> {
        let mut header = [0u8; RECORD_HEADER_BYTES];
        self.read_exact(&mut header)?;
        if header[0] != FCGI_VERSION_1 {
            return Err(FastCgiError::Protocol(format!(
                "record version {}, not {FCGI_VERSION_1}",
                header[0]
            )));
        }
        Ok(RecordHeader {
            record_type: header[1],
            request_id: u16::from_be_bytes([header[2], header[3]]),
            content_bytes: usize::from(u16::from_be_bytes([header[4], header[5]])),
            padding_bytes: usize::from(header[6]),
        })
    }
}

#[cfg(test)]
mod tests;
