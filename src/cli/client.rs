//! The one HTTP client of the CLI: requests to a corefn server, and what
//! went wrong as a typed [`ClientError`] that knows its exit code.
//!
//! Owns: the ureq agent (plain HTTP only, no proxy from the environment:
//! the server is this machine or one on a private network), timeouts,
//! the `Authorization` header and the reading of `{"error": {"code",
//! "message"}}`. May call: nothing else of corefn. Must never print: the
//! subcommands decide what the user sees.

use std::io::Read;
use std::time::Duration;

use serde_json::Value;
use ureq::http;

use super::Exit;

/// Where the control API lives on a server.
pub const API_PREFIX: &str = "/_/api/v1/";
/// How long an ordinary API call may take (reads, rollbacks, keys).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a deploy may take: the server bounds a compile by its
/// `--compile-timeout-ms` (60 s by default) and answers a little after;
/// this leaves room for a server started with a longer one.
pub const DEPLOY_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How long a connection may take to open: loopback or a private network
/// answers in milliseconds, so a long wait means nobody is there.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read into memory (JSON, a log backlog). Function
/// bodies and live logs are streamed, not held.
pub const ANSWER_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// What a client command can fail with, each with its exit code.
#[derive(Debug)]
pub enum ClientError {
    /// No connection to the server.
    Unreachable { url: String, reason: String },
    /// The server answered with an error status.
    Refused {
        status: u16,
        code: String,
        message: String,
        /// Compiler diagnostics of a 422, one entry per line.
        diagnostics: Vec<String>,
    },
    /// The exchange broke after it began, or the answer made no sense.
    Failed(String),
    /// The command line, or something it names, cannot be used.
    Usage(String),
}

impl ClientError {
    pub fn exit(&self) -> Exit {
        match self {
            ClientError::Unreachable { .. } => Exit::Unreachable,
            ClientError::Refused { .. } | ClientError::Failed(_) => Exit::Refused,
            ClientError::Usage(_) => Exit::Usage,
        }
    }

    /// Lines worth showing below the one-line message.
    pub fn details(&self) -> &[String] {
        match self {
            ClientError::Refused { diagnostics, .. } => diagnostics,
            _ => &[],
        }
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Unreachable { url, reason } => write!(
                f,
                "cannot reach corefn at {url} ({reason}); start it with `corefn serve`, \
                 or point --url (or COREFN_URL) at a running one"
            ),
            ClientError::Refused {
                status,
                code,
                message,
                ..
            } => {
                write!(f, "{message} ({status} {code})")?;
                if matches!(status, 401 | 403) {
                    write!(
                        f,
                        "; the key comes from --key, COREFN_KEY or the admin key file \
                         next to --db (corefn.admin-key)"
                    )?;
                }
                Ok(())
            }
            ClientError::Failed(message) | ClientError::Usage(message) => f.write_str(message),
        }
    }
}

/// One request as the subcommands describe it.
pub struct Request<'a> {
    pub method: &'a str,
    /// A path on the server (`/fn/greet`, `/_/api/v1/functions`), with its
    /// query.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Body<'a>>,
    /// None: no bound (a live log tail lasts until interrupted).
    pub timeout: Option<Duration>,
    /// Whether to send the client's key.
    pub with_key: bool,
}

/// What a request sends.
pub enum Body<'a> {
    Bytes(Vec<u8>),
    /// Streamed, with its length known up front (so the request has a
    /// Content-Length): a deploy watches its upload through it.
    Reader(&'a mut dyn Read, u64),
}

impl<'a> Request<'a> {
    pub fn new(method: &'a str, path: String) -> Request<'a> {
        Request {
            method,
            path,
            headers: Vec::new(),
            body: None,
            timeout: Some(CALL_TIMEOUT),
            with_key: true,
        }
    }
}

/// A connection to one corefn server.
pub struct Client {
    agent: ureq::Agent,
    /// `http://host:port`, without a trailing slash.
    base: String,
    key: Option<String>,
}

impl Client {
    pub fn new(url: &str, key: Option<String>) -> Result<Client, ClientError> {
        let base = url.trim_end_matches('/').to_string();
        let uri: http::Uri = base
            .parse()
            .map_err(|e| ClientError::Usage(format!("--url {url:?} is not a URL: {e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(ClientError::Usage(format!(
                    "--url {url}: this corefn speaks plain HTTP only (put a TLS proxy in \
                     front of a remote server and keep the CLI on its private side)"
                )))
            }
            _ => {
                return Err(ClientError::Usage(format!(
                    "--url {url:?} must look like http://127.0.0.1:8080"
                )))
            }
        }
        if uri.host().is_none() || !uri.path().trim_matches('/').is_empty() {
            return Err(ClientError::Usage(format!(
                "--url {url:?} must be a server's address, such as http://127.0.0.1:8080"
            )));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            // Error statuses are answers to show, not transport failures.
            .http_status_as_error(false)
            // A proxy from HTTP_PROXY would take loopback calls elsewhere.
            .proxy(None)
            .max_redirects(0)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .user_agent(concat!("corefn/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Client { agent, base, key })
    }

    /// The server's address, as given (`http://127.0.0.1:8080`).
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }

    /// Sends `request`; any status is an answer. Only failing to connect,
    /// or the exchange breaking, is an error.
    pub fn send(&self, request: Request<'_>) -> Result<http::Response<ureq::Body>, ClientError> {
        let url = format!("{}{}", self.base, request.path);
        let mut builder = http::Request::builder()
            .method(request.method)
            .uri(url.as_str());
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        if request.with_key {
            if let Some(key) = &self.key {
                builder = builder.header("authorization", format!("Bearer {key}"));
            }
        }
        // SendBody's lifetime is invariant: each kind of body runs on its own.
        match request.body {
            None => self.run(builder, ureq::SendBody::none(), request.timeout, &url),
            Some(Body::Bytes(bytes)) => {
                builder = builder.header("content-length", bytes.len().to_string());
                self.run(builder, bytes, request.timeout, &url)
            }
            Some(Body::Reader(reader, len)) => {
                builder = builder.header("content-length", len.to_string());
                self.run(
                    builder,
                    ureq::SendBody::from_reader(reader),
                    request.timeout,
                    &url,
                )
            }
        }
    }

    fn run(
        &self,
        builder: http::request::Builder,
        body: impl ureq::AsSendBody,
        timeout: Option<Duration>,
        url: &str,
    ) -> Result<http::Response<ureq::Body>, ClientError> {
        let http_request = builder
            .body(body)
            .map_err(|e| ClientError::Usage(format!("cannot make a request to {url}: {e}")))?;
        let http_request = self
            .agent
            .configure_request(http_request)
            .timeout_global(timeout)
            .build();
        self.agent
            .run(http_request)
            .map_err(|error| transport_error(&self.base, url, error))
    }

    /// A control-API call: `path` under `/_/api/v1/`, JSON in and out.
    /// An error status becomes [`ClientError::Refused`] with the server's
    /// own message.
    pub fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let mut request = Request::new(method, format!("{API_PREFIX}{path}"));
        if let Some(body) = body {
            request
                .headers
                .push(("content-type".into(), "application/json".into()));
            request.body = Some(Body::Bytes(body.to_string().into_bytes()));
        }
        let response = self.send(request)?;
        json_answer(response)
    }

    /// A control-API read whose answer is not JSON (NDJSON logs): the
    /// body's bytes, or the error the server gave.
    pub fn api_bytes(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let response = self.send(Request::new("GET", format!("{API_PREFIX}{path}")))?;
        let status = response.status().as_u16();
        let bytes = read_all(response)?;
        if (200..300).contains(&status) {
            Ok(bytes)
        } else {
            Err(refusal(status, &bytes))
        }
    }
}

/// The JSON of a 2xx answer, or the refusal of any other.
pub fn json_answer(response: http::Response<ureq::Body>) -> Result<Value, ClientError> {
    let status = response.status().as_u16();
    let bytes = read_all(response)?;
    if !(200..300).contains(&status) {
        return Err(refusal(status, &bytes));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        ClientError::Failed(format!(
            "the server answered {status} with a body that is not JSON ({e}): {}",
            first_line(&bytes)
        ))
    })
}

/// The whole body of `response`, up to [`ANSWER_BYTES_MAX`].
pub fn read_all(response: http::Response<ureq::Body>) -> Result<Vec<u8>, ClientError> {
    response
        .into_body()
        .into_with_config()
        .limit(ANSWER_BYTES_MAX)
        .read_to_vec()
        .map_err(|e| ClientError::Failed(format!("cannot read the answer: {e}")))
}

/// An error answer: the API's `{"error": {"code", "message"}}`, or the
/// first line of a plain one (the gateway's own errors are plain text).
pub fn refusal(status: u16, bytes: &[u8]) -> ClientError {
    let parsed: Option<Value> = serde_json::from_slice(bytes).ok();
    let error = parsed.as_ref().map(|v| &v["error"]);
    let text = |field: &str| {
        error
            .and_then(|e| e[field].as_str())
            .map(str::to_string)
            .filter(|t| !t.is_empty())
    };
    let code = text("code").unwrap_or_else(|| {
        http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("error")
            .to_ascii_lowercase()
            .replace(' ', "_")
    });
    let message = text("message").unwrap_or_else(|| {
        let line = first_line(bytes);
        if line.is_empty() {
            format!("the server answered {status}")
        } else {
            line
        }
    });
    let diagnostics = error
        .and_then(|e| e.get("diagnostics"))
        .map(|d| match d {
            Value::String(text) => text.lines().map(str::to_string).collect(),
            Value::Array(items) => items
                .iter()
                .flat_map(|item| match item {
                    Value::String(text) => text.lines().map(str::to_string).collect::<Vec<_>>(),
                    other => vec![other.to_string()],
                })
                .collect(),
            other => vec![other.to_string()],
        })
        .unwrap_or_default();
    ClientError::Refused {
        status,
        code,
        // One line: a message with newlines would break the one-line rule.
        message: message.replace(['\r', '\n'], " "),
        diagnostics,
    }
}

fn first_line(bytes: &[u8]) -> String {
    const SHOWN_CHARS_MAX: usize = 300;
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .chars()
        .take(SHOWN_CHARS_MAX)
        .collect()
}

/// A ureq failure: before a connection there was nobody to ask
/// (unreachable); after it, the exchange broke.
fn transport_error(base: &str, url: &str, error: ureq::Error) -> ClientError {
    use std::io::ErrorKind;
    let unreachable = |reason: String| ClientError::Unreachable {
        url: base.to_string(),
        reason,
    };
    match error {
        ureq::Error::Io(e)
            if matches!(
                e.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::AddrNotAvailable
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
                    | ErrorKind::TimedOut
            ) =>
        {
            unreachable(e.to_string())
        }
        ureq::Error::HostNotFound => unreachable("host not found".into()),
        ureq::Error::ConnectionFailed => unreachable("connection failed".into()),
        ureq::Error::Timeout(ureq::Timeout::Resolve | ureq::Timeout::Connect) => {
            unreachable(format!("no connection within {CONNECT_TIMEOUT:?}"))
        }
        ureq::Error::Timeout(_) => ClientError::Failed(format!(
            "{url}: no complete answer in time (the server may still be working on it)"
        )),
        ureq::Error::BadUri(e) => ClientError::Usage(format!("{url} is not a usable URL: {e}")),
        other => ClientError::Failed(format!("the request to {url} failed: {other}")),
    }
}

/// `text` as one path segment: names and ids are plain, but what a user
/// types may not be.
pub fn segment(text: &str) -> String {
    percent_encode(text, |b| b.is_ascii_alphanumeric() || b"-._~@".contains(&b))
}

/// `text` as a query value.
pub fn query_value(text: &str) -> String {
    percent_encode(text, |b| b.is_ascii_alphanumeric() || b"-._~:".contains(&b))
}

fn percent_encode(text: &str, keep: impl Fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if keep(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `?a=1&b=2` of the pairs whose value is given; empty for none.
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name}={}", query_value(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}
