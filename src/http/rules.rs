//! The rules of HTTP that several parts of corefn enforce (the descriptor,
//! the CGI response parser, native and host responses, the gateway), each
//! written once so that they cannot drift apart; among them the function
//! name rule, since names are parts of URLs (`/fn/NAME`, `NAME.localhost`)
//! and of log paths.

use std::ops::RangeInclusive;

/// Statuses a function or a static route may answer with. 1xx belongs to
/// the gateway (100 Continue), and HTTP knows nothing above 599.
pub const RESPONSE_STATUS_RANGE: RangeInclusive<u16> = 200..=599;

/// Request header fields accepted per request; more is a 431. The worker
/// parses the head the gateway accepted with the same bound.
pub const HEADER_COUNT_MAX: usize = 100;

/// Paths under this prefix (and `/_` itself) are the gateway's own admin
/// and control endpoints; no route may claim them.
pub const RESERVED_PATH_PREFIX: &str = "/_/";

/// The control API, inside the reserved prefix: handed to the control
/// plane instead of answered by the core.
pub const API_PATH_PREFIX: &str = "/_/api/v1/";

/// Response headers the gateway writes or that describe the gateway's
/// connection rather than a response: Content-Length and Date are set by
/// the gateway, x-request-id is the request's, the rest are hop-by-hop. A
/// descriptor may not set them; a function that prints them has them
/// dropped.
pub const GATEWAY_OWNED_HEADERS: [&str; 9] = [
    "content-length",
    "date",
    REQUEST_ID_HEADER,
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "proxy-connection",
    "trailer",
];

/// Prometheus' usual scrape path, answered by the control plane (reserved
/// like `/_/`: a route there is never served).
pub const METRICS_PATH: &str = "/metrics";

/// The request id header: the client's when valid, else the gateway's.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest function name.
pub const FUNCTION_NAME_BYTES_MAX: usize = 63;

/// `[a-z0-9][a-z0-9-]{0,62}`: a function's name, as routes, host names
/// and the registry all know it.
pub fn is_function_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= FUNCTION_NAME_BYTES_MAX
        && bytes[0] != b'-'
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// RFC 9110 `tchar`.
pub fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 9110 `token`: one or more `tchar`.
pub fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().all(|&b| is_token_byte(b))
}

/// Whether `name` (any case) is one of [`GATEWAY_OWNED_HEADERS`].
pub fn is_gateway_owned_header(name: &str) -> bool {
    GATEWAY_OWNED_HEADERS
        .iter()
        .any(|owned| name.eq_ignore_ascii_case(owned))
}

/// Whether `path` belongs to the gateway (see [`RESERVED_PATH_PREFIX`]).
pub fn is_reserved_path(path: &str) -> bool {
    path == "/_" || path == METRICS_PATH || path.starts_with(RESERVED_PATH_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_reserved_names() {
        assert!(is_token(b"X-Request-Id"));
        assert!(!is_token(b""));
        assert!(!is_token(b"a b"));
        assert!(!is_token(b"a:b"));
        assert!(is_gateway_owned_header("Content-Length"));
        assert!(is_gateway_owned_header("upgrade"));
        assert!(!is_gateway_owned_header("content-type"));
        assert!(is_reserved_path("/_"));
        assert!(is_reserved_path("/metrics"));
        assert!(!is_reserved_path("/metrics/x"));
        assert!(is_reserved_path("/_/routes"));
        assert!(!is_reserved_path("/_x"));
        assert!(RESPONSE_STATUS_RANGE.contains(&599));
        assert!(!RESPONSE_STATUS_RANGE.contains(&199));
    }
}
