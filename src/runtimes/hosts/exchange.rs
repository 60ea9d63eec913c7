//! One request over the framed protocol (python, node): write the request
//! frame, read the reply frame, within the deadline. Each request carries
//! an id its reply must echo.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;

use super::*;

/// A request id no handler can guess ahead: a counter through SipHash
/// keyed at random per worker, so a frame one request's handler forges
/// cannot be taken for the reply to a later one.
fn call_id() -> String {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:016x}", KEYS.get_or_init(RandomState::new).hash_one(n))
}

/// Sends the request frame and reads the response frame.
pub(super) fn exchange_framed(
    runtime: &'static str,
    requests: &mut File,
    responses: &mut File,
    call: &HostCall<'_>,
    response_bytes_max: usize,
    deadline: Instant,
) -> Result<HostOutput, HostError> {
    let frame_error = |error: FrameError| match error {
        FrameError::Timeout => HostError::Timeout {
            runtime,
            timeout_ms: call.timeout_ms,
        },
        FrameError::Closed => HostError::Died {
            runtime,
            detail: "it closed its pipe".into(),
        },
        other => HostError::Protocol {
            runtime,
            message: other.to_string(),
        },
    };
    let request = call.request;
    let headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.to_ascii_lowercase(),
                String::from_utf8_lossy(value).into_owned(),
            )
        })
        .collect();
    let id = call_id();
    let meta = serde_json::json!({
        "id": id,
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "headers": headers,
        "remote_addr": request.remote_addr.map(|a| a.to_string()),
    });
    let meta = serde_json::to_vec(&meta).map_err(|e| HostError::Protocol {
        runtime,
        message: e.to_string(),
    })?;
    frame::write_frame(requests, &meta, call.body, deadline).map_err(frame_error)?;
    let (meta, body) =
        frame::read_frame(responses, response_bytes_max, deadline).map_err(frame_error)?;
    // A frame the handler wrote to the reply pipe itself, or a reply of
    // an earlier request: the host is out of step, and is replaced (a
    // protocol error) before anything of it reaches a client.
    if meta.id.as_deref() != Some(id.as_str()) {
        return Err(HostError::Protocol {
            runtime,
            message: format!(
                "the reply carries id {:?}, not this request's: the host is out of step",
                meta.id.as_deref().unwrap_or("(none)")
            ),
        });
    }
    if let Some(error) = meta.error {
        return Err(HostError::Handler {
            runtime,
            message: one_line(&error),
        });
    }
    let response = cgi::response_from_parts(
        meta.status.unwrap_or(200),
        meta.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        body.len(),
    )
    .map_err(|e| HostError::Response {
        runtime,
        message: e.to_string(),
    })?;
    Ok(HostOutput {
        bytes: body,
        response,
    })
}
