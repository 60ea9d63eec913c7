//! The control plane's HTTP/1.1 client: one request per connection
//! (`connection: close`), bounded in time and in what is read. Scheduled
//! runs and async invocations reach the gateway's own listener with it, so
//! they take the normal data path; async results reach callback URLs with
//! it. Plain HTTP only: its peers are loopback or allow-listed hosts.
//!
//! Blocking sockets: it runs on control-plane threads only, never on a core.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::http::chunked::ChunkedDecoder;

/// Connecting, and writing the request, must not take longer than this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// What of a response is read; the rest is left unread (the connection is
/// closed after one exchange anyway).
pub const RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;
const RESPONSE_HEADERS_MAX: usize = 128;

/// One request. `headers` are sent as given, after `host` (unless they
/// hold one), and before `content-length` and `connection: close`, which
/// the client writes itself.
pub struct Request<'a> {
    pub method: &'a str,
    /// Origin form: `/path?query`.
    pub target: &'a str,
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
    /// The whole exchange, after connecting.
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoopbackError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("exchange with {addr} failed: {source}")]
    Exchange {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the answer of {addr} is not HTTP/1.x: {reason}")]
    Malformed { addr: SocketAddr, reason: String },
}

/// Sends `request` to `addr` and reads the whole answer.
pub fn send(addr: SocketAddr, request: &Request<'_>) -> Result<Response, LoopbackError> {
    let exchange = |source| LoopbackError::Exchange { addr, source };
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|source| LoopbackError::Connect { addr, source })?;
    stream
        .set_read_timeout(Some(request.timeout))
        .map_err(exchange)?;
    stream
        .set_write_timeout(Some(CONNECT_TIMEOUT))
        .map_err(exchange)?;
    let target = if request.target.is_empty() {
        "/"
    } else {
        request.target
    };
    let mut head = format!("{} {target} HTTP/1.1\r\n", request.method);
    if !request
        .headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        head.push_str(&format!("host: {addr}\r\n"));
    }
    for (name, value) in request.headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        request.body.len()
    ));
    stream.write_all(head.as_bytes()).map_err(exchange)?;
    stream.write_all(request.body).map_err(exchange)?;
    let mut answer = Vec::with_capacity(4096);
    (&mut stream)
        .take(RESPONSE_BYTES_MAX as u64)
        .read_to_end(&mut answer)
        .map_err(exchange)?;
    parse_response(&answer, request.method == "HEAD")
        .map_err(|reason| LoopbackError::Malformed { addr, reason })
}

/// A whole response as read to the end of the connection.
fn parse_response(bytes: &[u8], head_only: bool) -> Result<Response, String> {
    let mut headers = [httparse::EMPTY_HEADER; RESPONSE_HEADERS_MAX];
    let mut parsed = httparse::Response::new(&mut headers);
    let head_len = match parsed.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if bytes.is_empty() => {
            return Err("the connection closed without an answer".into())
        }
        Ok(httparse::Status::Partial) => return Err("the head is cut short".into()),
        Err(error) => return Err(format!("bad head: {error}")),
    };
    let status = parsed.code.ok_or("no status")?;
    let mut chunked = false;
    let mut content_length: Option<usize> = None;
    let mut kept = Vec::with_capacity(parsed.headers.len());
    for header in parsed.headers.iter() {
        let value = String::from_utf8_lossy(header.value).into_owned();
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
            continue;
        }
        if header.name.eq_ignore_ascii_case("content-length") {
            content_length = value.trim().parse().ok();
        }
        kept.push((header.name.to_ascii_lowercase(), value));
    }
    let rest = &bytes[head_len..];
    let body = if head_only || status == 204 || status == 304 {
        Vec::new()
    } else if chunked {
        let mut body = Vec::with_capacity(rest.len());
        ChunkedDecoder::default()
            .decode(rest, &mut body, RESPONSE_BYTES_MAX, 64 * 1024)
            .map_err(|error| format!("bad chunked body: {error}"))?;
        body
    } else {
        let len = content_length.unwrap_or(rest.len()).min(rest.len());
        rest[..len].to_vec()
    };
    Ok(Response {
        status,
        headers: kept,
        body,
    })
}

/// The loopback address that reaches a listener on `listen`.
pub fn loopback_of(listen: SocketAddr) -> SocketAddr {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse_with_length_chunks_or_to_the_end() {
        let plain = parse_response(
            b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-A: b\r\n\r\nokEXTRA",
            false,
        )
        .expect("parses");
        assert_eq!(plain.status, 201);
        assert_eq!(plain.body, b"ok");
        assert!(plain.headers.contains(&("x-a".into(), "b".into())));
        let chunked = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            false,
        )
        .expect("parses");
        assert_eq!(chunked.body, b"abc");
        assert!(chunked
            .headers
            .iter()
            .all(|(name, _)| name != "transfer-encoding"));
        let to_end = parse_response(b"HTTP/1.0 200 OK\r\n\r\nall of it", false).expect("parses");
        assert_eq!(to_end.body, b"all of it");
        let head =
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true).expect("parses");
        assert!(head.body.is_empty());
    }

    #[test]
    fn broken_answers_are_errors() {
        assert!(parse_response(b"", false).is_err());
        assert!(parse_response(b"garbage\r\n\r\n", false).is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nX: y", false).is_err());
    }

    #[test]
    fn unspecified_listeners_are_reached_on_loopback() {
        let any: SocketAddr = "0.0.0.0:8080".parse().expect("addr");
        assert_eq!(loopback_of(any).to_string(), "127.0.0.1:8080");
        let v6: SocketAddr = "[::]:9".parse().expect("addr");
        assert_eq!(loopback_of(v6).to_string(), "[::1]:9");
        let fixed: SocketAddr = "10.0.0.1:80".parse().expect("addr");
        assert_eq!(loopback_of(fixed), fixed);
    }
}
