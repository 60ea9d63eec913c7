//! Request framing: the read buffer, head parsing with httparse, and body
//! decoding (Content-Length and chunked).
//!
//! Pure code over byte slices: no I/O, so every framing rule is unit-tested
//! here and the connection loop only decides when to read and write.

use std::mem::MaybeUninit;
use std::ops::Range;

use crate::http::encode::{self, REQUEST_ID_BYTES_MAX};
use crate::http::error::HttpError;
use crate::http::rules::{API_PATH_PREFIX, HEADER_COUNT_MAX, REQUEST_ID_HEADER};

/// First size of a connection's read buffer.
pub const READ_BUF_INITIAL_BYTES: usize = 2 * 1024;
/// A buffer grown past this (a big body) is given back once it is empty.
const READ_BUF_KEEP_BYTES_MAX: usize = 64 * 1024;

/// A connection's input: bytes `start..end` of `data` are received and not
/// yet consumed. Offsets handed out (request heads) are relative to `start`
/// and stay valid until [`ReadBuf::consume`].
#[derive(Debug)]
pub struct ReadBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl Default for ReadBuf {
    fn default() -> Self {
        ReadBuf {
            data: vec![0; READ_BUF_INITIAL_BYTES],
            start: 0,
            end: 0,
        }
    }
}

impl ReadBuf {
    pub fn pending(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn consume(&mut self, n: usize) {
        assert!(n <= self.end - self.start, "consume past received bytes");
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.data.len() > READ_BUF_KEEP_BYTES_MAX {
                self.data = vec![0; READ_BUF_INITIAL_BYTES];
            }
        }
    }

    /// Makes room for at least `want_bytes` more bytes at the end.
    pub fn reserve(&mut self, want_bytes: usize) {
        if self.data.len() - self.end >= want_bytes {
            return;
        }
        if self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.data.len() - self.end < want_bytes {
            let wanted = self.end + want_bytes;
            self.data.resize(wanted.max(self.data.len() * 2), 0);
        }
    }

    /// Removes `len` bytes that start `at` bytes into the pending data (raw
    /// chunk framing already decoded), keeping what comes before and after.
    pub fn cut(&mut self, at: usize, len: usize) {
        assert!(at + len <= self.end - self.start, "cut past received bytes");
        if len == 0 {
            return;
        }
        let from = self.start + at + len;
        self.data.copy_within(from..self.end, self.start + at);
        self.end -= len;
    }

    pub fn spare_mut(&mut self) -> &mut [u8] {
        &mut self.data[self.end..]
    }

    pub fn advance(&mut self, n: usize) {
        assert!(self.end + n <= self.data.len(), "advance past the buffer");
        self.end += n;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(usize),
    Chunked,
}

/// What the connection needs to know about a parsed request head. Ranges
/// are offsets into the pending bytes the head was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub head_len: usize,
    pub method: Range<usize>,
    /// Request target as sent (origin form, with query).
    pub target: Range<usize>,
    /// Path part of the target, no query.
    pub path: Range<usize>,
    pub version_minor: u8,
    pub framing: BodyFraming,
    pub keep_alive: bool,
    pub expect_continue: bool,
    /// The Host header's value (trimmed), if the request has one.
    pub host: Option<Range<usize>>,
    /// `x-corefn-version`: the version of a deployed function asked for.
    pub version_pin: Option<Range<usize>>,
    /// The Authorization header's value.
    pub authorization: Option<Range<usize>>,
    /// The client's `x-request-id`, valid or not.
    pub request_id: Option<Range<usize>>,
    /// `x-corefn-invocation-type: async`: queue the call, answer 202.
    pub invoke_async: bool,
    /// The body limit of this request's path.
    pub body_bytes_max: usize,
}

/// A request's id: the client's `x-request-id` when valid, else one the
/// gateway made; on the stack, as every request has one.
#[derive(Clone, Copy)]
pub struct RequestId {
    bytes: [u8; REQUEST_ID_BYTES_MAX],
    len: u8,
}

impl RequestId {
    /// The client's id, when [`encode::is_valid_request_id`] keeps it.
    pub fn from_client(value: &[u8]) -> Option<RequestId> {
        if !encode::is_valid_request_id(value) {
            return None;
        }
        let mut id = RequestId {
            bytes: [0; REQUEST_ID_BYTES_MAX],
            len: value.len() as u8,
        };
        id.bytes[..value.len()].copy_from_slice(value);
        Some(id)
    }

    /// 32 lowercase hex digits from two 64-bit numbers (a random one and
    /// a per-core sequence, so that ids of one core never repeat).
    pub fn generated(random: u64, sequence: u64) -> RequestId {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut id = RequestId {
            bytes: [0; REQUEST_ID_BYTES_MAX],
            len: 32,
        };
        for (i, word) in [random, sequence].into_iter().enumerate() {
            for nibble in 0..16 {
                let digit = (word >> (60 - 4 * nibble)) & 0xf;
                id.bytes[i * 16 + nibble] = HEX[digit as usize];
            }
        }
        id
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII from `from_client` (checked) or `generated` (hex).
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

impl RequestHead {
    pub fn method<'b>(&self, bytes: &'b [u8]) -> &'b str {
        text(bytes, &self.method)
    }
    pub fn path<'b>(&self, bytes: &'b [u8]) -> &'b str {
        text(bytes, &self.path)
    }
    pub fn target<'b>(&self, bytes: &'b [u8]) -> &'b str {
        text(bytes, &self.target)
    }
    pub fn is_head_method(&self, bytes: &[u8]) -> bool {
        self.method(bytes) == "HEAD"
    }
    pub fn host<'b>(&self, bytes: &'b [u8]) -> Option<&'b [u8]> {
        self.host.as_ref().map(|range| &bytes[range.clone()])
    }
    pub fn authorization<'b>(&self, bytes: &'b [u8]) -> Option<&'b [u8]> {
        self.authorization
            .as_ref()
            .map(|range| &bytes[range.clone()])
    }
    pub fn request_id<'b>(&self, bytes: &'b [u8]) -> Option<&'b [u8]> {
        self.request_id.as_ref().map(|range| &bytes[range.clone()])
    }

    pub fn version_pin<'b>(&self, bytes: &'b [u8]) -> Option<&'b [u8]> {
        self.version_pin.as_ref().map(|range| &bytes[range.clone()])
    }
}

fn text<'b>(bytes: &'b [u8], range: &Range<usize>) -> &'b str {
    // httparse only accepts token and visible ASCII characters here.
    bytes
        .get(range.clone())
        .and_then(|b| std::str::from_utf8(b).ok())
        .unwrap_or("")
}

pub enum HeadParse {
    Complete(RequestHead),
    Partial,
}

/// The header that asks for an async invocation of a function route.
pub const INVOCATION_TYPE_HEADER: &str = "x-corefn-invocation-type";

/// The header that asks for one version of a deployed function.
pub const VERSION_PIN_HEADER: &str = "x-corefn-version";

/// How large a body may be: deploys to the control API get their own,
/// larger bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    pub default_bytes_max: usize,
    pub api_bytes_max: usize,
}

impl BodyLimits {
    pub fn for_path(&self, path: &str) -> usize {
        if path.starts_with(API_PATH_PREFIX) {
            self.api_bytes_max
        } else {
            self.default_bytes_max
        }
    }
}

/// Parses the request head at the start of `bytes`.
pub fn parse_head(
    bytes: &[u8],
    header_bytes_max: usize,
    body_limits: BodyLimits,
) -> Result<HeadParse, HttpError> {
    // Uninitialised storage: initialising 100 headers per parse costs more
    // than parsing a small request.
    let mut headers = [const { MaybeUninit::<httparse::Header>::uninit() }; HEADER_COUNT_MAX];
    let mut request = httparse::Request::new(&mut []);
    let head_len = match request.parse_with_uninit_headers(bytes, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if bytes.len() > header_bytes_max {
                return Err(HttpError::HeaderTooLarge {
                    limit_bytes: header_bytes_max,
                });
            }
            return Ok(HeadParse::Partial);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError::TooManyHeaders {
                limit: HEADER_COUNT_MAX,
            })
        }
        Err(error) => return Err(HttpError::BadRequest(parse_error_text(error))),
    };
    if head_len > header_bytes_max {
        return Err(HttpError::HeaderTooLarge {
            limit_bytes: header_bytes_max,
        });
    }
    let base = bytes.as_ptr() as usize;
    let range_of = |s: &str| {
        let at = s.as_ptr() as usize - base;
        at..at + s.len()
    };
    let (Some(method), Some(target), Some(version_minor)) =
        (request.method, request.path, request.version)
    else {
        return Err(HttpError::BadRequest("incomplete request line"));
    };
    let method_range = range_of(method);
    let target_range = range_of(target);
    let path_in_target = path_of_target(target)?;
    let path_start = target_range.start + path_in_target.start;
    let path_range = path_start..path_start + path_in_target.len();
    let body_bytes_max = body_limits.for_path(text(bytes, &path_range));

    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut connection_close = false;
    let mut connection_keep_alive = false;
    let mut expect_continue = false;
    let mut host: Option<Range<usize>> = None;
    let mut version_pin: Option<Range<usize>> = None;
    let mut authorization: Option<Range<usize>> = None;
    let mut request_id: Option<Range<usize>> = None;
    let mut invoke_async = false;
    for header in request.headers.iter() {
        let name = header.name;
        let value = trim_ows(header.value);
        if name.eq_ignore_ascii_case("content-length") {
            let length = parse_content_length(value)?;
            if content_length.is_some_and(|seen| seen != length) {
                return Err(HttpError::BadRequest("conflicting Content-Length headers"));
            }
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if !value.eq_ignore_ascii_case(b"chunked") || chunked {
                return Err(HttpError::NotImplemented(format!(
                    "transfer-encoding {:?} is not supported (only chunked)",
                    String::from_utf8_lossy(value)
                )));
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(|&b| b == b',').map(trim_ows) {
                connection_close |= token.eq_ignore_ascii_case(b"close");
                connection_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("expect") {
            if !value.eq_ignore_ascii_case(b"100-continue") {
                return Err(HttpError::ExpectationFailed(
                    String::from_utf8_lossy(value).into_owned(),
                ));
            }
            expect_continue = true;
        } else if name.eq_ignore_ascii_case("host") {
            let at = value.as_ptr() as usize - base;
            host = Some(at..at + value.len());
        } else if name.eq_ignore_ascii_case("authorization") {
            let at = value.as_ptr() as usize - base;
            authorization = Some(at..at + value.len());
        } else if name.eq_ignore_ascii_case(VERSION_PIN_HEADER) {
            let at = value.as_ptr() as usize - base;
            version_pin = Some(at..at + value.len());
        } else if name.eq_ignore_ascii_case(INVOCATION_TYPE_HEADER) {
            // Lambda's names are understood too.
            invoke_async = match value.to_ascii_lowercase().as_slice() {
                b"async" | b"event" => true,
                b"sync" | b"requestresponse" => false,
                _ => {
                    return Err(HttpError::BadRequest(
                        "x-corefn-invocation-type must be async or sync",
                    ))
                }
            };
        } else if name.eq_ignore_ascii_case(REQUEST_ID_HEADER) {
            let at = value.as_ptr() as usize - base;
            request_id = Some(at..at + value.len());
        }
    }
    if version_minor == 1 && host.is_none() {
        return Err(HttpError::BadRequest(
            "HTTP/1.1 request without Host header",
        ));
    }
    let framing = match (chunked, content_length) {
        (true, Some(_)) => {
            return Err(HttpError::BadRequest(
                "both Content-Length and Transfer-Encoding",
            ))
        }
        (true, None) => BodyFraming::Chunked,
        (false, Some(0)) | (false, None) => BodyFraming::None,
        (false, Some(n)) => BodyFraming::Length(n),
    };
    if let BodyFraming::Length(n) = framing {
        if n > body_bytes_max {
            return Err(HttpError::BodyTooLarge {
                limit_bytes: body_bytes_max,
            });
        }
    }
    let keep_alive = if version_minor >= 1 {
        !connection_close
    } else {
        connection_keep_alive && !connection_close
    };
    Ok(HeadParse::Complete(RequestHead {
        head_len,
        method: method_range,
        target: target_range,
        path: path_range,
        version_minor,
        framing,
        keep_alive,
        expect_continue: expect_continue && version_minor >= 1 && framing != BodyFraming::None,
        host,
        version_pin,
        authorization,
        request_id,
        invoke_async,
        body_bytes_max,
    }))
}

fn parse_error_text(error: httparse::Error) -> &'static str {
    match error {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token in request line",
        httparse::Error::Version => "invalid HTTP version",
        httparse::Error::TooManyHeaders => "too many headers",
    }
}

/// The path part (no query) of an origin-form or absolute-form target.
fn path_of_target(target: &str) -> Result<Range<usize>, HttpError> {
    let path_start = if target.starts_with('/') {
        0
    } else if let Some(rest) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        let authority_start = target.len() - rest.len();
        match rest.find('/') {
            Some(at) => authority_start + at,
            None => return Err(HttpError::BadRequest("absolute target without a path")),
        }
    } else {
        return Err(HttpError::BadRequest("request target must be a path"));
    };
    let path_end = target[path_start..]
        .find(['?', '#'])
        .map_or(target.len(), |at| path_start + at);
    Ok(path_start..path_end)
}

fn trim_ows(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |at| at + 1);
    &value[start..end]
}

fn parse_content_length(value: &[u8]) -> Result<usize, HttpError> {
    const BAD: HttpError = HttpError::BadRequest("invalid Content-Length");
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return Err(BAD);
    }
    value.iter().try_fold(0usize, |n, &d| {
        n.checked_mul(10)
            .and_then(|n| n.checked_add(usize::from(d - b'0')))
            .ok_or(BAD)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_HEAD: usize = 16 * 1024;
    const MAX_BODY: usize = 1024;

    fn head(raw: &str) -> Result<RequestHead, HttpError> {
        match parse_head(
            raw.as_bytes(),
            MAX_HEAD,
            BodyLimits {
                default_bytes_max: MAX_BODY,
                api_bytes_max: MAX_BODY,
            },
        )? {
            HeadParse::Complete(head) => Ok(head),
            HeadParse::Partial => panic!("partial: {raw:?}"),
        }
    }

    #[test]
    fn parses_method_path_query_and_keep_alive() {
        let raw = "GET /a/b?x=1 HTTP/1.1\r\nHost: h\r\n\r\nNEXT";
        let h = head(raw).expect("valid");
        assert_eq!(h.method(raw.as_bytes()), "GET");
        assert_eq!(h.path(raw.as_bytes()), "/a/b");
        assert_eq!(h.target(raw.as_bytes()), "/a/b?x=1");
        assert_eq!(h.head_len, raw.len() - 4);
        assert!(h.keep_alive);
        assert_eq!(h.framing, BodyFraming::None);
    }

    #[test]
    fn http10_closes_unless_keep_alive() {
        assert!(!head("GET / HTTP/1.0\r\n\r\n").expect("valid").keep_alive);
        assert!(
            head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
                .expect("valid")
                .keep_alive
        );
        assert!(
            !head("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
                .expect("valid")
                .keep_alive
        );
    }

    #[test]
    fn absolute_form_target_routes_on_its_path() {
        let raw = "GET http://example/x/y?q HTTP/1.1\r\nHost: example\r\n\r\n";
        assert_eq!(head(raw).expect("valid").path(raw.as_bytes()), "/x/y");
    }

    #[test]
    fn framing_errors() {
        assert_eq!(
            head("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: abc\r\n\r\n"),
            Err(HttpError::BadRequest("invalid Content-Length"))
        );
        assert_eq!(
            head("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(HttpError::BadRequest("conflicting Content-Length headers"))
        );
        assert_eq!(
            head("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(HttpError::BadRequest("both Content-Length and Transfer-Encoding"))
        );
        assert!(matches!(
            head("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Err(HttpError::NotImplemented(_))
        ));
        assert_eq!(
            head("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1025\r\n\r\n"),
            Err(HttpError::BodyTooLarge {
                limit_bytes: MAX_BODY
            })
        );
        assert_eq!(
            head("GET / HTTP/1.1\r\n\r\n"),
            Err(HttpError::BadRequest(
                "HTTP/1.1 request without Host header"
            ))
        );
        assert!(matches!(
            head("GET\x01 / HTTP/1.1\r\n\r\n"),
            Err(HttpError::BadRequest(_))
        ));
    }

    #[test]
    fn oversized_head_is_431_even_when_partial() {
        let mut raw = String::from("GET / HTTP/1.1\r\nHost: h\r\nX: ");
        raw.push_str(&"a".repeat(MAX_HEAD));
        assert!(matches!(
            parse_head(
                raw.as_bytes(),
                MAX_HEAD,
                BodyLimits {
                    default_bytes_max: MAX_BODY,
                    api_bytes_max: MAX_BODY
                }
            ),
            Err(HttpError::HeaderTooLarge { .. })
        ));
    }

    #[test]
    fn read_buf_compacts_and_grows() {
        let mut buf = ReadBuf::default();
        buf.reserve(10);
        buf.spare_mut()[..4].copy_from_slice(b"abcd");
        buf.advance(4);
        buf.consume(2);
        buf.reserve(READ_BUF_INITIAL_BYTES);
        assert_eq!(buf.pending(), b"cd");
        assert!(buf.spare_mut().len() >= READ_BUF_INITIAL_BYTES);
        buf.consume(2);
        assert!(buf.is_empty());
    }
}
