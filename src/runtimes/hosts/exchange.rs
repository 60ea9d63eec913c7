//! One request over the framed protocol (python, node): write the request
//! frame, read the reply frame, within the deadline.

use super::*;

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
    let meta = serde_json::json!({
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
