//! HTTP/1.1 response encoding shared by everything that writes responses
//! (the gateway's cores and the worker processes): status lines, reason
//! phrases, the headers the gateway owns and complete small responses.
//!
//! Pure functions over byte buffers: no I/O, no allocation beyond the
//! caller's output buffer.

use crate::clock::DATE_LINE_LEN;
use crate::http::rules::REQUEST_ID_HEADER;

/// How the response tells the client what happens to the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionHeader {
    /// HTTP/1.1 keep-alive: nothing to say.
    Implicit,
    /// An HTTP/1.0 client asked for keep-alive.
    KeepAlive,
    Close,
}

impl ConnectionHeader {
    pub fn line(self) -> &'static [u8] {
        match self {
            ConnectionHeader::Implicit => b"",
            ConnectionHeader::KeepAlive => b"connection: keep-alive\r\n",
            ConnectionHeader::Close => b"connection: close\r\n",
        }
    }
}

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => match status / 100 {
            2 => "Success",
            3 => "Redirection",
            4 => "Client Error",
            _ => "Server Error",
        },
    }
}

/// Appends `HTTP/1.1 <status> <reason>\r\n`.
pub fn push_status_line(out: &mut Vec<u8>, status: u16) {
    debug_assert!((100..=999).contains(&status));
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, status as usize);
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
}

pub fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

pub fn push_content_length(out: &mut Vec<u8>, length: usize) {
    out.extend_from_slice(b"content-length: ");
    push_decimal(out, length);
    out.extend_from_slice(b"\r\n");
}

/// Appends the headers the gateway owns (`head_lines`: the date line and,
/// for a request, its `x-request-id` line, see [`HeadLines`]; then
/// connection) and the blank line that ends the head.
pub fn push_head_end(out: &mut Vec<u8>, head_lines: &[u8], connection: ConnectionHeader) {
    out.extend_from_slice(head_lines);
    out.extend_from_slice(connection.line());
    out.extend_from_slice(b"\r\n");
}

/// Longest request id the gateway passes on (a longer one from a client
/// is replaced).
pub const REQUEST_ID_BYTES_MAX: usize = 128;
const HEAD_LINES_BYTES_MAX: usize =
    DATE_LINE_LEN + REQUEST_ID_HEADER.len() + 2 + REQUEST_ID_BYTES_MAX + 2;

/// The date line and the request id line of one response, on the stack.
pub struct HeadLines {
    bytes: [u8; HEAD_LINES_BYTES_MAX],
    len: usize,
}

impl HeadLines {
    /// Without a valid `request_id` ([`is_valid_request_id`]) just the
    /// date line.
    pub fn new(date_line: &[u8; DATE_LINE_LEN], request_id: &str) -> HeadLines {
        let mut lines = HeadLines {
            bytes: [0; HEAD_LINES_BYTES_MAX],
            len: 0,
        };
        let id = request_id.as_bytes();
        let parts: &[&[u8]] = if is_valid_request_id(id) {
            &[
                &date_line[..],
                REQUEST_ID_HEADER.as_bytes(),
                b": ",
                id,
                b"\r\n",
            ]
        } else {
            &[&date_line[..]]
        };
        for part in parts {
            lines.bytes[lines.len..lines.len + part.len()].copy_from_slice(part);
            lines.len += part.len();
        }
        lines
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// A client's `x-request-id` is kept when it is 1..=128 bytes of letters,
/// digits and `-_.:/+=@`: nothing that could break a header or a log line.
pub fn is_valid_request_id(id: &[u8]) -> bool {
    (1..=REQUEST_ID_BYTES_MAX).contains(&id.len())
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(&b))
}

/// A complete response with a small body (errors, admin answers); returns
/// the body bytes written (0 for a HEAD request).
pub fn push_response(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
    head_lines: &[u8],
    connection: ConnectionHeader,
    head_only: bool,
) -> usize {
    push_status_line(out, status);
    for (name, value) in headers {
        push_header(out, name, value);
    }
    push_content_length(out, body.len());
    push_head_end(out, head_lines, connection);
    if head_only {
        return 0;
    }
    out.extend_from_slice(body);
    body.len()
}

pub fn push_decimal(out: &mut Vec<u8>, mut value: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::date_line;

    #[test]
    fn response_is_well_formed() {
        let mut out = Vec::new();
        push_response(
            &mut out,
            404,
            &[("content-type", "text/plain")],
            b"nope\n",
            &date_line(0),
            ConnectionHeader::Close,
            false,
        );
        let text = String::from_utf8(out).expect("ascii");
        assert_eq!(
            text,
            "HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\
             date: Thu, 01 Jan 1970 00:00:00 GMT\r\nconnection: close\r\n\r\nnope\n"
        );
    }

    #[test]
    fn head_only_omits_body_but_keeps_length() {
        let mut out = Vec::new();
        push_response(
            &mut out,
            200,
            &[],
            b"abc",
            &date_line(0),
            ConnectionHeader::Implicit,
            true,
        );
        assert!(out.ends_with(b"content-length: 3\r\ndate: Thu, 01 Jan 1970 00:00:00 GMT\r\n\r\n"));
    }

    #[test]
    fn decimal_formatting() {
        let mut out = Vec::new();
        push_decimal(&mut out, 0);
        out.push(b' ');
        push_decimal(&mut out, 18_446_744_073_709_551_615);
        assert_eq!(out, b"0 18446744073709551615");
    }
}
