//! CGI/1.1 (RFC 3875) for the runtimes that speak it (`wasm`, `exec`, `php`
//! through FastCGI): the request described as environment variables, and the
//! function's stdout parsed as a CGI response and rendered as HTTP/1.1. The
//! runtimes that return status, headers and body apart (`native`, `python`,
//! `node`) go through the same header rules ([`response_from_parts`]).
//!
//! Pure functions over borrowed bytes: no I/O, no global state. Everything a
//! function prints is untrusted input; a malformed response is a typed
//! [`CgiError`] (its message reaches the client in a 502 body), never a panic,
//! and nothing a function prints can break the framing of the HTTP response.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::Range;

use thiserror::Error;

use crate::http::encode::{self, ConnectionHeader};
use crate::http::rules::{self, RESPONSE_STATUS_RANGE};

/// The largest CGI header section a function may print, blank line included.
pub const HEADER_BYTES_MAX: usize = 16 * 1024;

/// Content type of a non-empty body whose function did not name one
/// (RFC 3875 §6.3.1 makes Content-Type mandatory for a document response).
pub const CONTENT_TYPE_DEFAULT: &str = "text/plain; charset=utf-8";

/// The request as a CGI runtime sees it. Header names and values are the
/// request's own; the body itself travels separately (stdin).
#[derive(Debug, Clone, Copy)]
pub struct CgiRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub protocol: &'a str,
    pub headers: &'a [(&'a str, &'a [u8])],
    /// Length of the (de-chunked) body the function gets on stdin.
    pub body_len: usize,
    pub remote_addr: Option<IpAddr>,
    /// Port the request arrived on; used when Host names none.
    pub server_port: Option<u16>,
}

/// The environment of a CGI function: the descriptor's `env` first, then the
/// CGI meta-variables. On a clash the CGI variable wins and the descriptor
/// entry is left out, so every name appears exactly once (a guest's `getenv`
/// usually returns the first match).
///
/// * `SERVER_NAME` and `SERVER_PORT` come from Host; without a port there,
///   the port the request arrived on (else 80); without Host, `localhost`.
/// * `CONTENT_LENGTH` is set when there is a body or the request announced
///   one (Content-Length or Transfer-Encoding); it is the de-chunked length.
/// * `HTTP_<NAME>` for every request header but Content-Type and
///   Content-Length (which have their own variables): name uppercased, `-`
///   becomes `_`; repeated headers are joined with `, ` (`; ` for Cookie).
/// * Headers whose name has characters other than letters, digits and `-`
///   are left out: `X_Forwarded_For` would otherwise pass for
///   `X-Forwarded-For` (Apache and nginx do the same).
/// * `Proxy` is left out: as `HTTP_PROXY` it would set the proxy of HTTP
///   clients inside the function ("httpoxy", CVE-2016-5385).
/// * Values are decoded as UTF-8 lossily; a value with NUL is left out (it
///   cannot be represented in an environment).
pub fn environment(
    request: &CgiRequest,
    descriptor_env: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let mut cgi: Vec<(String, String)> = Vec::with_capacity(16 + request.headers.len());
    let mut set = |name: &str, value: String| cgi.push((name.to_string(), value));

    set("GATEWAY_INTERFACE", "CGI/1.1".into());
    set("SERVER_SOFTWARE", "corefn".into());
    set("SERVER_PROTOCOL", request.protocol.into());
    set("REQUEST_METHOD", request.method.into());
    set("SCRIPT_NAME", String::new());
    set("PATH_INFO", request.path.into());
    set("QUERY_STRING", request.query.into());
    let mut uri = String::with_capacity(request.path.len() + 1 + request.query.len());
    uri.push_str(request.path);
    if !request.query.is_empty() {
        uri.push('?');
        uri.push_str(request.query);
    }
    set("REQUEST_URI", uri);

    let had_body_header = request.headers.iter().any(|(name, _)| {
        name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
    });
    if request.body_len > 0 || had_body_header {
        set("CONTENT_LENGTH", request.body_len.to_string());
    }
    if let Some(value) = header_value(request.headers, "content-type") {
        set("CONTENT_TYPE", value);
    }
    if let Some(addr) = request.remote_addr {
        set("REMOTE_ADDR", addr.to_string());
    }
    let host = header_value(request.headers, "host").unwrap_or_default();
    let (server_name, host_port) = split_host(&host);
    let server_name = if server_name.is_empty() {
        "localhost"
    } else {
        server_name
    };
    set("SERVER_NAME", server_name.into());
    let server_port = match (host_port, request.server_port) {
        (Some(port), _) => port.to_string(),
        (None, Some(port)) => port.to_string(),
        (None, None) => "80".to_string(),
    };
    set("SERVER_PORT", server_port);

    let fixed = cgi.len();
    for (name, value) in request.headers {
        let Some(env_name) = http_variable_name(name) else {
            continue;
        };
        if value.contains(&0) {
            continue;
        }
        let value = String::from_utf8_lossy(value);
        match cgi[fixed..].iter_mut().find(|(n, _)| *n == env_name) {
            Some((_, joined)) => {
                joined.push_str(if env_name == "HTTP_COOKIE" {
                    "; "
                } else {
                    ", "
                });
                joined.push_str(&value);
            }
            None => cgi.push((env_name, value.into_owned())),
        }
    }

    let mut env = Vec::with_capacity(descriptor_env.len() + cgi.len());
    for (name, value) in descriptor_env {
        if !cgi.iter().any(|(n, _)| n == name) {
            env.push((name.clone(), value.clone()));
        }
    }
    env.extend(cgi);
    env
}

/// `HTTP_<NAME>` for a header that gets one, `None` for the headers that have
/// their own variable or are left out.
fn http_variable_name(name: &str) -> Option<String> {
    if name.is_empty()
        || name.eq_ignore_ascii_case("content-type")
        || name.eq_ignore_ascii_case("content-length")
        || name.eq_ignore_ascii_case("proxy")
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return None;
    }
    let mut env_name = String::with_capacity(5 + name.len());
    env_name.push_str("HTTP_");
    env_name.extend(name.chars().map(|c| match c {
        '-' => '_',
        c => c.to_ascii_uppercase(),
    }));
    Some(env_name)
}

/// The first value of a header, lossily decoded; `None` when absent or when
/// it holds a NUL.
fn header_value(headers: &[(&str, &[u8])], wanted: &str) -> Option<String> {
    headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
        .filter(|(_, value)| !value.contains(&0))
        .map(|(_, value)| String::from_utf8_lossy(value).trim().to_string())
}

/// `example.com:8080` → (`example.com`, 8080); `[::1]:80` → (`[::1]`, 80).
/// A port that does not parse is ignored.
fn split_host(host: &str) -> (&str, Option<u16>) {
    let split_at = if host.starts_with('[') {
        host.find(']')
            .and_then(|end| host[end + 1..].starts_with(':').then_some(end + 1))
    } else {
        host.rfind(':')
    };
    match split_at {
        Some(at) => (&host[..at], host[at + 1..].parse().ok()),
        None => (host, None),
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CgiError {
    #[error(
        "function output has no CGI header section: expected header lines \
         (e.g. \"Content-Type: text/plain\"), a blank line, then the body"
    )]
    NoHeaderEnd,
    #[error("function output has a CGI header section larger than {limit_bytes} bytes")]
    HeaderTooLarge { limit_bytes: usize },
    #[error("function output line {line} is not a CGI header (\"Name: value\"): {text:?}")]
    InvalidHeaderLine { line: usize, text: String },
    #[error(
        "function output header {name:?} has a value with control characters or invalid UTF-8"
    )]
    InvalidHeaderValue { name: String },
    #[error("function output has an invalid Status {value:?} (expected a code in {lo}..={hi})", lo = RESPONSE_STATUS_RANGE.start(), hi = RESPONSE_STATUS_RANGE.end())]
    InvalidStatus { value: String },
    #[error("function output has more than one Status header")]
    DuplicateStatus,
    #[error(
        "function output says Content-Length {declared:?} but its body is {actual_bytes} bytes"
    )]
    ContentLengthMismatch {
        declared: String,
        actual_bytes: usize,
    },
}

/// A parsed CGI response. The body is not copied: it is a range of the
/// function's stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgiResponse {
    pub status: u16,
    /// The function's headers in its order and spelling, without Status and
    /// the gateway-owned ones, plus `content-type` when it was defaulted.
    pub headers: Vec<(String, String)>,
    pub body: Range<usize>,
}

/// Parses a function's stdout as a CGI response (RFC 3875 §6): header lines
/// ended by LF or CRLF, a blank line, the body.
///
/// * `Status: 201 Created` or `Status: 404` sets the status (200..=599; the
///   reason phrase is the gateway's own); without it, `Location` means 302
///   and anything else 200. A `Location` that is a local path is not
///   followed internally as RFC 3875 §6.2.2 allows: the client gets the 302.
/// * Headers the gateway owns (Content-Length, Date, Transfer-Encoding,
///   Connection and the other hop-by-hop ones) are dropped: the body is
///   framed by its real length and that cannot be contradicted. A
///   Content-Length that disagrees with the body is an error all the same
///   ([`CgiError::ContentLengthMismatch`]): the function is wrong about
///   what it sent, and a client that trusted it would misread the stream.
/// * A non-empty body without Content-Type gets [`CONTENT_TYPE_DEFAULT`].
/// * 204 and 304 responses carry no body: whatever followed is dropped.
/// * Output without a blank line in its first [`HEADER_BYTES_MAX`] bytes has
///   no header section: [`CgiError::NoHeaderEnd`], or
///   [`CgiError::HeaderTooLarge`] when it is longer than that.
pub fn parse_response(stdout: &[u8]) -> Result<CgiResponse, CgiError> {
    let mut section = HeaderSection::default();
    let body_start = header_end(stdout)?;
    for (index, line) in stdout[..body_start].split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let (name, value) = split_header_line(line).ok_or_else(|| CgiError::InvalidHeaderLine {
            line: index + 1,
            text: snippet(line),
        })?;
        section.add(name, value)?;
    }
    section.finish(body_start..stdout.len())
}

/// The same response rules as [`parse_response`] for a runtime that hands
/// over status, headers and body separately (the language hosts, native
/// libraries): header names must be tokens, values text; gateway-owned
/// headers are dropped; a body gets a default content type. The body is
/// `0..body_len` of the caller's buffer.
pub fn response_from_parts<'h>(
    status: u16,
    headers: impl IntoIterator<Item = (&'h str, &'h str)>,
    body_len: usize,
) -> Result<CgiResponse, CgiError> {
    if !RESPONSE_STATUS_RANGE.contains(&status) {
        return Err(CgiError::InvalidStatus {
            value: status.to_string(),
        });
    }
    let mut section = HeaderSection {
        status: Some(status),
        ..HeaderSection::default()
    };
    for (line, (name, value)) in headers.into_iter().enumerate() {
        if !rules::is_token(name.as_bytes()) {
            return Err(CgiError::InvalidHeaderLine {
                line: line + 1,
                text: snippet(name.as_bytes()),
            });
        }
        section.add(name, value.trim().as_bytes())?;
    }
    section.finish(0..body_len)
}

/// Headers collected under the CGI rules, shared by both ways of building a
/// [`CgiResponse`].
#[derive(Default)]
struct HeaderSection {
    status: Option<u16>,
    has_location: bool,
    has_content_type: bool,
    /// The function's own Content-Length, checked against the body.
    declared_length: Option<String>,
    headers: Vec<(String, String)>,
}

impl HeaderSection {
    fn add(&mut self, name: &str, value: &[u8]) -> Result<(), CgiError> {
        let value = header_text(value).ok_or_else(|| CgiError::InvalidHeaderValue {
            name: name.to_string(),
        })?;
        if name.eq_ignore_ascii_case("status") {
            if self.status.is_some() {
                return Err(CgiError::DuplicateStatus);
            }
            self.status = Some(parse_status(value)?);
        } else if name.eq_ignore_ascii_case("content-length") {
            self.declared_length = Some(value.to_string());
        } else if !rules::is_gateway_owned_header(name) {
            self.has_location |= name.eq_ignore_ascii_case("location");
            self.has_content_type |= name.eq_ignore_ascii_case("content-type");
            self.headers.push((name.to_string(), value.to_string()));
        }
        Ok(())
    }

    fn finish(mut self, body: Range<usize>) -> Result<CgiResponse, CgiError> {
        let status = self
            .status
            .unwrap_or(if self.has_location { 302 } else { 200 });
        let body = if status == 204 || status == 304 {
            // No body goes out, and a 304's length is the entity's.
            self.declared_length = None;
            body.start..body.start
        } else {
            body
        };
        if let Some(declared) = self.declared_length.take() {
            if declared.trim().parse::<usize>().ok() != Some(body.len()) {
                return Err(CgiError::ContentLengthMismatch {
                    declared,
                    actual_bytes: body.len(),
                });
            }
        }
        if !self.has_content_type && !body.is_empty() {
            self.headers
                .push(("content-type".to_string(), CONTENT_TYPE_DEFAULT.to_string()));
        }
        Ok(CgiResponse {
            status,
            headers: self.headers,
            body,
        })
    }
}

/// Where the body starts: after the first empty line (LF or CRLF). Only the
/// first [`HEADER_BYTES_MAX`] bytes can hold the header section, so a large
/// output without one is not scanned to its end.
fn header_end(stdout: &[u8]) -> Result<usize, CgiError> {
    let window = &stdout[..stdout.len().min(HEADER_BYTES_MAX)];
    let mut at = 0;
    while let Some(line_len) = window[at..].iter().position(|&b| b == b'\n') {
        let line = &window[at..at + line_len];
        at += line_len + 1;
        if line.is_empty() || line == b"\r" {
            return Ok(at);
        }
    }
    Err(if stdout.len() > HEADER_BYTES_MAX {
        CgiError::HeaderTooLarge {
            limit_bytes: HEADER_BYTES_MAX,
        }
    } else {
        CgiError::NoHeaderEnd
    })
}

/// `Name: value` → (name, value with surrounding blanks trimmed); `None` when
/// the name is not an HTTP token (which also rejects obsolete line folding).
fn split_header_line(line: &[u8]) -> Option<(&str, &[u8])> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = &line[..colon];
    if !rules::is_token(name) {
        return None;
    }
    let name = std::str::from_utf8(name).ok()?;
    Some((name, line[colon + 1..].trim_ascii()))
}

/// A field value as text: UTF-8 without control characters (tab allowed).
fn header_text(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?;
    value
        .chars()
        .all(|c| c == '\t' || !c.is_control())
        .then_some(value)
}

/// `201 Created`, `404` → the code.
fn parse_status(value: &str) -> Result<u16, CgiError> {
    let invalid = || CgiError::InvalidStatus {
        value: value.chars().take(40).collect(),
    };
    let code = value.split([' ', '\t']).next().unwrap_or("");
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let code: u16 = code.parse().map_err(|_| invalid())?;
    if !RESPONSE_STATUS_RANGE.contains(&code) {
        return Err(invalid());
    }
    Ok(code)
}

/// The start of an offending line, for an error message.
fn snippet(line: &[u8]) -> String {
    const SNIPPET_CHARS_MAX: usize = 60;
    String::from_utf8_lossy(line)
        .chars()
        .take(SNIPPET_CHARS_MAX)
        .collect()
}

impl CgiResponse {
    /// Appends the HTTP/1.1 response: status line, the function's headers,
    /// content-length (except for 204 and 304), date and connection, then
    /// the body unless `head_only`.
    pub fn write_http(
        &self,
        stdout: &[u8],
        out: &mut Vec<u8>,
        head_lines: &[u8],
        connection: ConnectionHeader,
        head_only: bool,
    ) {
        debug_assert!(self.body.end <= stdout.len(), "body range is within stdout");
        let body = stdout.get(self.body.clone()).unwrap_or_default();
        encode::push_status_line(out, self.status);
        for (name, value) in &self.headers {
            encode::push_header(out, name, value);
        }
        if self.status != 204 && self.status != 304 {
            encode::push_content_length(out, body.len());
        }
        encode::push_head_end(out, head_lines, connection);
        if !head_only {
            out.extend_from_slice(body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::date_line;

    #[test]
    fn parts_follow_the_cgi_header_rules() {
        let response = response_from_parts(
            201,
            [
                ("X-A", "b"),
                ("Content-Length", "5"),
                ("connection", "close"),
            ],
            5,
        )
        .expect("valid parts");
        assert_eq!(response.status, 201);
        assert_eq!(
            response.headers,
            vec![
                ("X-A".to_string(), "b".to_string()),
                ("content-type".to_string(), CONTENT_TYPE_DEFAULT.to_string()),
            ],
            "gateway-owned headers dropped, content type defaulted"
        );
        assert_eq!(response.body, 0..5);
        assert_eq!(
            response_from_parts(204, [], 5).expect("204").body,
            0..0,
            "204 carries no body"
        );
        assert!(matches!(
            response_from_parts(99, [], 0),
            Err(CgiError::InvalidStatus { .. })
        ));
        assert!(matches!(
            response_from_parts(200, [("bad name", "x")], 0),
            Err(CgiError::InvalidHeaderLine { .. })
        ));
        assert!(matches!(
            response_from_parts(200, [("x", "a\r\nb")], 0),
            Err(CgiError::InvalidHeaderValue { .. })
        ));
    }

    fn request<'a>(headers: &'a [(&'a str, &'a [u8])]) -> CgiRequest<'a> {
        CgiRequest {
            method: "POST",
            path: "/api/hello",
            query: "a=1&b=2",
            protocol: "HTTP/1.1",
            headers,
            body_len: 5,
            remote_addr: Some("127.0.0.1".parse().expect("ip")),
            server_port: Some(8080),
        }
    }

    fn get<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
        env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn environment_describes_the_request() {
        let headers: &[(&str, &[u8])] = &[
            ("Host", b"example.com:9000"),
            ("Content-Type", b"application/json"),
            ("Content-Length", b"5"),
            ("X-Request-Id", b"abc"),
            ("Accept", b"text/html"),
            ("accept", b"application/json"),
        ];
        let env = environment(&request(headers), &BTreeMap::new());
        let expect = [
            ("GATEWAY_INTERFACE", "CGI/1.1"),
            ("SERVER_SOFTWARE", "corefn"),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("REQUEST_METHOD", "POST"),
            ("SCRIPT_NAME", ""),
            ("PATH_INFO", "/api/hello"),
            ("QUERY_STRING", "a=1&b=2"),
            ("REQUEST_URI", "/api/hello?a=1&b=2"),
            ("CONTENT_LENGTH", "5"),
            ("CONTENT_TYPE", "application/json"),
            ("REMOTE_ADDR", "127.0.0.1"),
            ("SERVER_NAME", "example.com"),
            ("SERVER_PORT", "9000"),
            ("HTTP_HOST", "example.com:9000"),
            ("HTTP_X_REQUEST_ID", "abc"),
            ("HTTP_ACCEPT", "text/html, application/json"),
        ];
        for (name, value) in expect {
            assert_eq!(get(&env, name), Some(value), "{name} in {env:?}");
        }
        assert_eq!(get(&env, "HTTP_CONTENT_TYPE"), None);
        assert_eq!(get(&env, "HTTP_CONTENT_LENGTH"), None);
        assert_eq!(env.len(), expect.len(), "{env:?}");
    }

    #[test]
    fn descriptor_env_comes_first_and_loses_clashes() {
        let descriptor_env = BTreeMap::from([
            ("GREETING".to_string(), "hi".to_string()),
            ("REQUEST_METHOD".to_string(), "FAKE".to_string()),
        ]);
        let env = environment(&request(&[]), &descriptor_env);
        assert_eq!(env[0], ("GREETING".to_string(), "hi".to_string()));
        assert_eq!(get(&env, "REQUEST_METHOD"), Some("POST"));
        assert_eq!(env.iter().filter(|(n, _)| n == "REQUEST_METHOD").count(), 1);
    }

    #[test]
    fn environment_without_body_host_or_query() {
        let mut req = request(&[]);
        req.body_len = 0;
        req.query = "";
        req.remote_addr = None;
        req.method = "GET";
        let env = environment(&req, &BTreeMap::new());
        assert_eq!(get(&env, "CONTENT_LENGTH"), None);
        assert_eq!(get(&env, "CONTENT_TYPE"), None);
        assert_eq!(get(&env, "REMOTE_ADDR"), None);
        assert_eq!(get(&env, "REQUEST_URI"), Some("/api/hello"));
        assert_eq!(get(&env, "QUERY_STRING"), Some(""));
        assert_eq!(get(&env, "SERVER_NAME"), Some("localhost"));
        assert_eq!(get(&env, "SERVER_PORT"), Some("8080"));
    }

    #[test]
    fn empty_body_with_content_length_header_sets_content_length() {
        let headers: &[(&str, &[u8])] = &[("Content-Length", b"0")];
        let mut req = request(headers);
        req.body_len = 0;
        let env = environment(&req, &BTreeMap::new());
        assert_eq!(get(&env, "CONTENT_LENGTH"), Some("0"));
    }

    #[test]
    fn unsafe_or_unrepresentable_headers_are_left_out() {
        let headers: &[(&str, &[u8])] = &[
            ("X_Forwarded_For", b"evil"),
            ("Proxy", b"http://evil:3128"),
            ("X-Nul", b"a\0b"),
            ("X-Latin", b"caf\xe9"),
            ("Cookie", b"a=1"),
            ("Cookie", b"b=2"),
        ];
        let env = environment(&request(headers), &BTreeMap::new());
        assert_eq!(get(&env, "HTTP_X_FORWARDED_FOR"), None);
        assert_eq!(get(&env, "HTTP_PROXY"), None);
        assert_eq!(get(&env, "HTTP_X_NUL"), None);
        assert_eq!(get(&env, "HTTP_X_LATIN"), Some("caf\u{fffd}"));
        assert_eq!(get(&env, "HTTP_COOKIE"), Some("a=1; b=2"));
    }

    #[test]
    fn host_forms() {
        assert_eq!(split_host("example.com"), ("example.com", None));
        assert_eq!(split_host("example.com:81"), ("example.com", Some(81)));
        assert_eq!(split_host("[::1]:8080"), ("[::1]", Some(8080)));
        assert_eq!(split_host("[::1]"), ("[::1]", None));
        assert_eq!(split_host("example.com:x"), ("example.com", None));
        assert_eq!(split_host(""), ("", None));
    }

    #[test]
    fn plain_response_defaults_to_200() {
        let out = b"Content-Type: text/plain\n\nhello\n";
        let response = parse_response(out).expect("valid");
        assert_eq!(response.status, 200);
        assert_eq!(
            response.headers,
            vec![("Content-Type".to_string(), "text/plain".to_string())]
        );
        assert_eq!(&out[response.body], b"hello\n");
    }

    #[test]
    fn status_with_and_without_reason_and_crlf_lines() {
        let out =
            b"Status: 201 Created\r\nX-Custom:  yes \r\nContent-Type: text/plain\r\n\r\ncreated\n";
        let response = parse_response(out).expect("valid");
        assert_eq!(response.status, 201);
        assert_eq!(response.headers[0], ("X-Custom".into(), "yes".into()));
        assert_eq!(&out[response.body], b"created\n");

        let response = parse_response(b"Status: 404\n\n").expect("valid");
        assert_eq!(response.status, 404);
        assert!(
            response.headers.is_empty(),
            "empty body gets no default type"
        );
    }

    #[test]
    fn location_without_status_is_a_redirect() {
        let response = parse_response(b"Location: /elsewhere\n\n").expect("valid");
        assert_eq!(response.status, 302);
        let response = parse_response(b"Status: 301\nLocation: /x\n\n").expect("valid");
        assert_eq!(response.status, 301);
    }

    #[test]
    fn missing_content_type_is_defaulted_for_a_body() {
        let out = b"X-A: 1\n\nbody";
        let response = parse_response(out).expect("valid");
        assert_eq!(
            response.headers.last(),
            Some(&("content-type".to_string(), CONTENT_TYPE_DEFAULT.to_string()))
        );
    }

    #[test]
    fn gateway_owned_headers_are_dropped() {
        let out = b"Content-Length: 2\nDate: yesterday\nTransfer-Encoding: chunked\n\
                    Connection: close\nContent-Type: text/plain\n\nok";
        let response = parse_response(out).expect("valid");
        assert_eq!(
            response.headers,
            vec![("Content-Type".to_string(), "text/plain".to_string())]
        );
        assert_eq!(&out[response.body], b"ok");
    }

    #[test]
    fn a_content_length_that_disagrees_with_the_body_is_an_error() {
        assert_eq!(
            parse_response(b"Content-Length: 999\n\nok"),
            Err(CgiError::ContentLengthMismatch {
                declared: "999".into(),
                actual_bytes: 2
            })
        );
        assert!(parse_response(b"Content-Length: 2x\n\nok").is_err());
        assert!(response_from_parts(200, [("content-length", "3")], 2).is_err());
        assert!(response_from_parts(200, [("content-length", "2")], 2).is_ok());
        // A 304 sends no body; its length is the entity's.
        assert!(parse_response(b"Status: 304\nContent-Length: 999\n\n").is_ok());
    }

    #[test]
    fn output_without_header_section_is_rejected() {
        assert_eq!(parse_response(b""), Err(CgiError::NoHeaderEnd));
        assert_eq!(
            parse_response(b"Content-Type: text/plain\n"),
            Err(CgiError::NoHeaderEnd)
        );
        assert_eq!(
            parse_response(b"just some text"),
            Err(CgiError::NoHeaderEnd)
        );
        assert!(matches!(
            parse_response(b"Hello world\n\nbody"),
            Err(CgiError::InvalidHeaderLine { line: 1, .. })
        ));
    }

    #[test]
    fn malformed_headers_are_rejected() {
        assert!(matches!(
            parse_response(b"Bad Name: x\n\n"),
            Err(CgiError::InvalidHeaderLine { .. })
        ));
        assert!(matches!(
            parse_response(b": x\n\n"),
            Err(CgiError::InvalidHeaderLine { .. })
        ));
        assert!(matches!(
            parse_response(b"X-A: 1\n folded\n\n"),
            Err(CgiError::InvalidHeaderLine { line: 2, .. })
        ));
        assert_eq!(
            parse_response(b"X-A: a\rb\n\n"),
            Err(CgiError::InvalidHeaderValue { name: "X-A".into() })
        );
        assert_eq!(
            parse_response(b"X-A: a\0b\n\n"),
            Err(CgiError::InvalidHeaderValue { name: "X-A".into() })
        );
        assert_eq!(
            parse_response(b"X-A: \xff\n\n"),
            Err(CgiError::InvalidHeaderValue { name: "X-A".into() })
        );
    }

    #[test]
    fn status_must_be_a_final_code() {
        for bad in ["99", "100 Continue", "199", "600", "20x", "2000", "", "OK"] {
            let out = format!("Status: {bad}\n\n");
            assert!(
                matches!(
                    parse_response(out.as_bytes()),
                    Err(CgiError::InvalidStatus { .. })
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_response(b"Status: 200\nStatus: 201\n\n"),
            Err(CgiError::DuplicateStatus)
        );
    }

    #[test]
    fn header_section_is_bounded() {
        let mut out = Vec::new();
        while out.len() <= HEADER_BYTES_MAX {
            out.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\n");
        }
        out.extend_from_slice(b"\nbody");
        assert_eq!(
            parse_response(&out),
            Err(CgiError::HeaderTooLarge {
                limit_bytes: HEADER_BYTES_MAX
            })
        );
        let endless = vec![b'x'; HEADER_BYTES_MAX + 1];
        assert_eq!(
            parse_response(&endless),
            Err(CgiError::HeaderTooLarge {
                limit_bytes: HEADER_BYTES_MAX
            })
        );
    }

    #[test]
    fn body_may_hold_anything() {
        let out = b"Content-Type: application/octet-stream\n\n\0\r\n\n\xff";
        let response = parse_response(out).expect("valid");
        assert_eq!(&out[response.body], b"\0\r\n\n\xff");
    }

    #[test]
    fn writes_http_response() {
        let out_cgi = b"Status: 201 Created\nX-Custom: yes\nContent-Type: text/plain\n\ncreated\n";
        let response = parse_response(out_cgi).expect("valid");
        let mut out = Vec::new();
        response.write_http(
            out_cgi,
            &mut out,
            &date_line(0),
            ConnectionHeader::Implicit,
            false,
        );
        assert_eq!(
            String::from_utf8(out).expect("ascii"),
            "HTTP/1.1 201 Created\r\nX-Custom: yes\r\nContent-Type: text/plain\r\n\
             content-length: 8\r\ndate: Thu, 01 Jan 1970 00:00:00 GMT\r\n\r\ncreated\n"
        );
    }

    #[test]
    fn writes_head_and_bodiless_statuses() {
        let cgi_out = b"Content-Type: text/plain\n\nhello";
        let response = parse_response(cgi_out).expect("valid");
        let mut out = Vec::new();
        response.write_http(
            cgi_out,
            &mut out,
            &date_line(0),
            ConnectionHeader::Close,
            true,
        );
        let text = String::from_utf8(out).expect("ascii");
        assert!(text.contains("content-length: 5\r\n"), "{text}");
        assert!(text.ends_with("connection: close\r\n\r\n"), "{text}");

        let cgi_out = b"Status: 204\nContent-Type: text/plain\n\nignored";
        let response = parse_response(cgi_out).expect("valid");
        assert!(response.body.is_empty());
        let mut out = Vec::new();
        response.write_http(
            cgi_out,
            &mut out,
            &date_line(0),
            ConnectionHeader::Implicit,
            false,
        );
        let text = String::from_utf8(out).expect("ascii");
        assert!(text.starts_with("HTTP/1.1 204 No Content\r\n"), "{text}");
        assert!(!text.contains("content-length"), "{text}");
        assert!(text.ends_with("\r\n\r\n"), "{text}");
    }
}
