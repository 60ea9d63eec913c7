//! Every error a client can see, and the one place where an error becomes an
//! HTTP status (README.md, "HTTP behaviour and errors").
//!
//! Modules return these typed errors; the gateway and the workers render
//! them, through [`HttpError::status`] and [`HttpError::closes_connection`]
//! and nowhere else.

use thiserror::Error;

use super::encode::{self, ConnectionHeader};

use crate::failure::{Failure, FailureKind};

#[derive(Debug, Error, PartialEq)]
pub enum HttpError {
    #[error("malformed request: {0}")]
    BadRequest(&'static str),
    /// A request that is well formed but asks for something invalid; the
    /// connection stays open.
    #[error("bad request: {0}")]
    InvalidRequest(String),
    #[error("request header section is larger than {limit_bytes} bytes")]
    HeaderTooLarge { limit_bytes: usize },
    #[error("more than {limit} request header fields")]
    TooManyHeaders { limit: usize },
    #[error("request body is larger than {limit_bytes} bytes")]
    BodyTooLarge { limit_bytes: usize },
    #[error("no route for {method} {path}")]
    NotFound { method: String, path: String },
    #[error("method {method} is not allowed for {path} (allowed: {allow})")]
    MethodNotAllowed {
        method: String,
        path: String,
        allow: String,
    },
    #[error("request was not received completely within {timeout_ms} ms")]
    RequestTimeout { timeout_ms: u64 },
    #[error("expectation {0:?} is not supported")]
    ExpectationFailed(String),
    #[error("{0}")]
    NotImplemented(String),
    /// The route's runtime cannot run here: no worker processes
    /// (`--workers 0`), or its interpreter is missing.
    #[error("{0}")]
    RuntimeUnavailable(String),
    #[error("server is at its limit of {limit} open connections")]
    Overloaded { limit: usize },
    /// A function call that produced no response; its kind decides the
    /// status (504 for a timeout, 501 for a missing interpreter, else 502).
    #[error("{0}")]
    Function(Failure),
    #[error("the worker running this request stopped before answering")]
    WorkerLost,
    /// The worker neither answered nor reported its own timeout within the
    /// route's timeout and the core's slack (stopped, or wedged); it wrote
    /// nothing to the client, so the core answers.
    #[error("the worker did not answer within {timeout_ms} ms (+ slack)")]
    WorkerStuck { timeout_ms: u64 },
    #[error("no worker could take the request within {waited_ms} ms")]
    NoWorkerAvailable { waited_ms: u64 },
    #[error("route {route} is at its max_concurrency of {limit}")]
    ConcurrencyLimit { route: String, limit: u32 },
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("route {route} is over its rate limit of {rps} requests per second")]
    RateLimited {
        route: String,
        rps: f64,
        /// Seconds until a request may succeed, as the header says it.
        retry_after: String,
    },
}

impl From<Failure> for HttpError {
    fn from(failure: Failure) -> HttpError {
        HttpError::Function(failure)
    }
}

impl HttpError {
    pub fn status(&self) -> u16 {
        match self {
            HttpError::BadRequest(_) | HttpError::InvalidRequest(_) => 400,
            HttpError::NotFound { .. } => 404,
            HttpError::MethodNotAllowed { .. } => 405,
            HttpError::RequestTimeout { .. } => 408,
            HttpError::BodyTooLarge { .. } => 413,
            HttpError::ExpectationFailed(_) => 417,
            HttpError::HeaderTooLarge { .. } | HttpError::TooManyHeaders { .. } => 431,
            HttpError::NotImplemented(_) | HttpError::RuntimeUnavailable(_) => 501,
            HttpError::Overloaded { .. }
            | HttpError::NoWorkerAvailable { .. }
            | HttpError::ConcurrencyLimit { .. } => 503,
            HttpError::RateLimited { .. } => 429,
            HttpError::Unauthorized(_) => 401,
            HttpError::Function(failure) => match failure.kind {
                FailureKind::Timeout => 504,
                FailureKind::Unavailable => 501,
                FailureKind::Busy => 503,
                _ => 502,
            },
            HttpError::WorkerLost => 502,
            HttpError::WorkerStuck { .. } => 504,
        }
    }

    /// Errors after which the request framing can no longer be trusted (or
    /// the client is being turned away): the connection is closed after the
    /// response.
    pub fn closes_connection(&self) -> bool {
        !matches!(
            self,
            HttpError::NotFound { .. }
                | HttpError::MethodNotAllowed { .. }
                | HttpError::RuntimeUnavailable(_)
                | HttpError::Function(_)
                | HttpError::NoWorkerAvailable { .. }
                | HttpError::ConcurrencyLimit { .. }
                | HttpError::RateLimited { .. }
                | HttpError::InvalidRequest(_)
                | HttpError::Unauthorized(_)
        )
    }

    /// Appends the complete error response: status, the error's own header
    /// if it has one, and a one-line plain-text body saying what went wrong.
    /// Returns the body bytes written.
    pub fn render(
        &self,
        out: &mut Vec<u8>,
        head_lines: &[u8],
        connection: ConnectionHeader,
        head_only: bool,
    ) -> usize {
        let status = self.status();
        let body = format!("{status} {}: {self}\n", encode::reason_phrase(status));
        let content_type = ("content-type", "text/plain; charset=utf-8");
        let headers = [content_type, self.extra_header().unwrap_or(("", ""))];
        let header_count = if self.extra_header().is_some() { 2 } else { 1 };
        encode::push_response(
            out,
            status,
            &headers[..header_count],
            body.as_bytes(),
            head_lines,
            connection,
            head_only,
        )
    }

    /// A header that belongs to this error's response, if any.
    pub fn extra_header(&self) -> Option<(&'static str, &str)> {
        match self {
            HttpError::MethodNotAllowed { allow, .. } => Some(("allow", allow.as_str())),
            HttpError::RateLimited { retry_after, .. } => {
                Some(("retry-after", retry_after.as_str()))
            }
            HttpError::Unauthorized(_) => Some(("www-authenticate", "Bearer")),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_keeps_connection_but_framing_errors_close_it() {
        let not_found = HttpError::NotFound {
            method: "GET".into(),
            path: "/x".into(),
        };
        assert_eq!(not_found.status(), 404);
        assert!(!not_found.closes_connection());
        let bad = HttpError::BadRequest("bad chunk size");
        assert_eq!(bad.status(), 400);
        assert!(bad.closes_connection());
        assert_eq!(HttpError::HeaderTooLarge { limit_bytes: 1 }.status(), 431);
    }

    #[test]
    fn a_failure_kind_decides_its_status_and_keeps_the_connection() {
        for (kind, status) in [
            (FailureKind::Timeout, 504),
            (FailureKind::Unavailable, 501),
            (FailureKind::Trap, 502),
            (FailureKind::Load, 502),
        ] {
            let error = HttpError::Function(Failure::new(kind, "x"));
            assert_eq!(error.status(), status, "{kind:?}");
            assert!(!error.closes_connection(), "{kind:?}");
        }
    }
}

/// What a control-API request failed with; its status and its JSON code
/// are decided here and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiErrorKind {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    Unprocessable,
    Internal,
    /// A bounded resource is taken (log followers): try later.
    Unavailable,
}

/// A control-API error: `{"error": {"code", "message", ...details}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub kind: ApiErrorKind,
    pub message: String,
    /// More fields of the error object (a compiler's diagnostics).
    pub details: Option<(&'static str, serde_json::Value)>,
}

impl ApiError {
    pub fn new(kind: ApiErrorKind, message: impl std::fmt::Display) -> ApiError {
        ApiError {
            kind,
            message: message.to_string(),
            details: None,
        }
    }

    pub fn status(&self) -> u16 {
        match self.kind {
            ApiErrorKind::BadRequest => 400,
            ApiErrorKind::Unauthorized => 401,
            ApiErrorKind::Forbidden => 403,
            ApiErrorKind::NotFound => 404,
            ApiErrorKind::MethodNotAllowed => 405,
            ApiErrorKind::Conflict => 409,
            ApiErrorKind::PayloadTooLarge => 413,
            ApiErrorKind::Unprocessable => 422,
            ApiErrorKind::Internal => 500,
            ApiErrorKind::Unavailable => 503,
        }
    }

    pub fn code(&self) -> &'static str {
        match self.kind {
            ApiErrorKind::BadRequest => "bad_request",
            ApiErrorKind::Unauthorized => "unauthorized",
            ApiErrorKind::Forbidden => "forbidden",
            ApiErrorKind::NotFound => "not_found",
            ApiErrorKind::MethodNotAllowed => "method_not_allowed",
            ApiErrorKind::Conflict => "conflict",
            ApiErrorKind::PayloadTooLarge => "payload_too_large",
            ApiErrorKind::Unprocessable => "compile_failed",
            ApiErrorKind::Internal => "internal",
            ApiErrorKind::Unavailable => "unavailable",
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        let mut error = serde_json::Map::new();
        error.insert("code".into(), self.code().into());
        error.insert("message".into(), self.message.clone().into());
        if let Some((name, value)) = &self.details {
            error.insert((*name).into(), value.clone());
        }
        serde_json::json!({ "error": error })
    }
}
