//! Live log tails (`…/logs?follow=1`): the response is chunked NDJSON that
//! goes on until the client leaves. The control thread answers the head
//! and the backlog, then hands the client socket to a thread of its own
//! (bounded by [`crate::telemetry::logs::FOLLOWERS_MAX`]), so that one
//! follower never holds the API. The core is told that the socket was
//! taken and closes only its own descriptor.
//!
//! A follower that reads slowly blocks only its own thread; the log thread
//! drops lines for it (and says so in the stream).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::thread;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{setsockopt, sockopt};

use crate::telemetry::logs::{Follower, LogLine};
use crate::workers::protocol;

/// How often an idle follower looks whether its client has gone.
const IDLE_CHECK: Duration = Duration::from_millis(500);
/// Lines sent in one chunk at most.
const CHUNK_LINES_MAX: usize = 256;
/// The follow connection's send buffer: small, so a client that stops
/// reading is noticed (its lines dropped) after kilobytes, not megabytes.
const FOLLOW_SEND_BUFFER_BYTES: usize = 64 * 1024;

/// Appends `lines` as one HTTP chunk (nothing for none).
pub fn push_chunk(out: &mut Vec<u8>, lines: &[LogLine]) {
    let mut data = Vec::with_capacity(lines.len() * 160);
    for line in lines {
        if let Ok(json) = serde_json::to_vec(line) {
            data.extend_from_slice(&json);
            data.push(b'\n');
        }
    }
    if data.is_empty() {
        return;
    }
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\r\n");
}

/// Streams `follower`'s lines to `client` on a thread of its own.
pub fn spawn(client: OwnedFd, follower: Follower) -> std::io::Result<()> {
    thread::Builder::new()
        .name("corefn-log-follow".into())
        .spawn(move || stream(&client, &follower))
        .map(|_| ())
}

fn stream(client: &OwnedFd, follower: &Follower) {
    let _ = setsockopt(client, sockopt::SndBuf, &FOLLOW_SEND_BUFFER_BYTES);
    let mut out = Vec::new();
    loop {
        let Some(first) = follower.next_timeout(IDLE_CHECK) else {
            if client_gone(client) {
                return;
            }
            continue;
        };
        let mut lines = vec![first];
        while lines.len() < CHUNK_LINES_MAX {
            match follower.next_timeout(Duration::ZERO) {
                Some(line) => lines.push(line),
                None => break,
            }
        }
        out.clear();
        push_chunk(&mut out, &lines);
        if protocol::write_to_client(client.as_fd(), &out).is_err() {
            return;
        }
    }
}

/// The client closed its side (or the connection broke).
fn client_gone(client: &OwnedFd) -> bool {
    let rdhup = PollFlags::from_bits_truncate(libc::POLLRDHUP);
    let mut fds = [PollFd::new(client.as_fd(), rdhup | PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(0) => false,
        Ok(_) => {
            let events = fds[0].revents().unwrap_or(PollFlags::empty());
            if events.intersects(rdhup | PollFlags::POLLHUP | PollFlags::POLLERR) {
                return true;
            }
            // Bytes from a client that only follows: read and ignore them.
            let mut scratch = [0u8; 512];
            // SAFETY: recv into a local buffer on a socket we hold.
            let n = unsafe {
                libc::recv(
                    client.as_raw_fd(),
                    scratch.as_mut_ptr().cast(),
                    scratch.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            n == 0
        }
        Err(_) => true,
    }
}
