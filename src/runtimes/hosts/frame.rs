//! The frames between a worker and a Python or Node host
//! (`runtimes/PROTOCOL.md`): `u32 meta_len`, `u32 body_len` (big-endian),
//! a JSON object, raw body bytes.
//!
//! Reads and writes run against a deadline on non-blocking pipes, so a host
//! that stops reading or never answers costs its request's timeout and no
//! more. Lengths are checked against explicit bounds before anything is
//! allocated.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::time::Instant;

use nix::poll::PollFlags;
use serde::Deserialize;
use thiserror::Error;

use crate::runtimes::process::poll_until;

/// Largest meta object either side may send.
pub const META_BYTES_MAX: usize = 1024 * 1024;
/// The frame header: meta length, body length.
const FRAME_HEADER_BYTES: usize = 8;

#[derive(Debug, Error)]
pub enum FrameError {
    #[error("timed out")]
    Timeout,
    #[error("host closed its pipe")]
    Closed,
    #[error("frame meta of {0} bytes is over the limit")]
    MetaTooLarge(usize),
    #[error("response body of {len} bytes is over the limit of {limit_bytes}")]
    BodyTooLarge { len: usize, limit_bytes: usize },
    #[error("frame meta is not the expected JSON: {0}")]
    Meta(String),
    #[error("pipe I/O failed: {0}")]
    Io(#[from] io::Error),
}

/// What a host says: ready, a response, or an error line.
#[derive(Debug, Default, Deserialize)]
pub struct HostMeta {
    /// The id of the request this frame answers (echoed from it).
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    #[serde(default)]
    pub error: Option<String>,
}

/// Writes one frame; the pipe must be non-blocking.
pub fn write_frame(
    pipe: &mut File,
    meta: &[u8],
    body: &[u8],
    deadline: Instant,
) -> Result<(), FrameError> {
    debug_assert!(
        meta.len() <= META_BYTES_MAX,
        "the worker's own meta is small"
    );
    let meta_len = u32::try_from(meta.len()).map_err(|_| FrameError::MetaTooLarge(meta.len()))?;
    let body_len = u32::try_from(body.len()).map_err(|_| FrameError::BodyTooLarge {
        len: body.len(),
        limit_bytes: u32::MAX as usize,
    })?;
    let mut head = Vec::with_capacity(FRAME_HEADER_BYTES + meta.len());
    head.extend_from_slice(&meta_len.to_be_bytes());
    head.extend_from_slice(&body_len.to_be_bytes());
    head.extend_from_slice(meta);
    write_all(pipe, &head, deadline)?;
    write_all(pipe, body, deadline)
}

/// Reads one frame: its meta parsed, and its body (at most
/// `body_bytes_max`).
pub fn read_frame(
    pipe: &mut File,
    body_bytes_max: usize,
    deadline: Instant,
) -> Result<(HostMeta, Vec<u8>), FrameError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    read_exact(pipe, &mut header, deadline)?;
    let meta_len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let body_len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if meta_len > META_BYTES_MAX {
        return Err(FrameError::MetaTooLarge(meta_len));
    }
    if body_len > body_bytes_max {
        return Err(FrameError::BodyTooLarge {
            len: body_len,
            limit_bytes: body_bytes_max,
        });
    }
    let mut meta = vec![0u8; meta_len];
    read_exact(pipe, &mut meta, deadline)?;
    let mut body = vec![0u8; body_len];
    read_exact(pipe, &mut body, deadline)?;
    let meta: HostMeta =
        serde_json::from_slice(&meta).map_err(|e| FrameError::Meta(e.to_string()))?;
    Ok((meta, body))
}

fn write_all(pipe: &mut File, mut bytes: &[u8], deadline: Instant) -> Result<(), FrameError> {
    while !bytes.is_empty() {
        match pipe.write(bytes) {
            Ok(0) => return Err(FrameError::Closed),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait(pipe, PollFlags::POLLOUT, deadline)?
            }
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Err(FrameError::Closed),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn read_exact(pipe: &mut File, mut buffer: &mut [u8], deadline: Instant) -> Result<(), FrameError> {
    while !buffer.is_empty() {
        match pipe.read(buffer) {
            Ok(0) => return Err(FrameError::Closed),
            Ok(n) => buffer = &mut buffer[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait(pipe, PollFlags::POLLIN, deadline)?
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn wait(pipe: &File, events: PollFlags, deadline: Instant) -> Result<(), FrameError> {
    let ready = poll_until(&[(pipe.as_fd(), events)], deadline)?;
    if ready[0].is_empty() {
        return Err(FrameError::Timeout);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtimes::process::set_nonblocking;
    use std::time::Duration;

    fn pipe() -> (File, File) {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        set_nonblocking(read.as_fd()).expect("nonblocking");
        set_nonblocking(write.as_fd()).expect("nonblocking");
        (File::from(read), File::from(write))
    }

    #[test]
    fn frames_round_trip_and_bounds_are_enforced() {
        let (mut read, mut write) = pipe();
        let deadline = Instant::now() + Duration::from_secs(5);
        write_frame(
            &mut write,
            br#"{"status":201,"headers":[["x-a","b"]]}"#,
            b"body",
            deadline,
        )
        .expect("write");
        let (meta, body) = read_frame(&mut read, 1024, deadline).expect("read");
        assert_eq!(meta.status, Some(201));
        assert_eq!(meta.headers, vec![("x-a".to_string(), "b".to_string())]);
        assert_eq!(body, b"body");

        write_frame(&mut write, b"{}", &[0u8; 100], deadline).expect("write");
        assert!(matches!(
            read_frame(&mut read, 10, deadline),
            Err(FrameError::BodyTooLarge { len: 100, .. })
        ));
    }

    #[test]
    fn a_silent_host_times_out_and_a_gone_one_is_closed() {
        let (mut read, write) = pipe();
        let started = Instant::now();
        let deadline = started + Duration::from_millis(50);
        assert!(matches!(
            read_frame(&mut read, 10, deadline),
            Err(FrameError::Timeout)
        ));
        drop(write);
        assert!(matches!(
            read_frame(&mut read, 10, Instant::now() + Duration::from_secs(1)),
            Err(FrameError::Closed)
        ));
    }
}
