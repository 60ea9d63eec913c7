//! The wire format between a core executor and a worker process, over one
//! Unix seqpacket socket per (core, worker) pair. Defined once here; both
//! sides use these functions.
//!
//! Dispatch (core → worker), little-endian, followed by the descriptor JSON,
//! the log name (function name or route key), the request id, the raw
//! request head and the inline body; SCM_RIGHTS carries the client socket
//! and, for a body over [`INLINE_BODY_BYTES_MAX`], a sealed memfd:
//!
//! ```text
//! 0  u32 magic "CFD2"   4  u32 flags        8  u64 call_id
//! 16 u32 descriptor_len 20 u32 head_len     24 u64 body_len
//! 32 u16 name_len       34 u16 request_id_len 36 u32 version
//! ```
//!
//! `call_id` is the core's own sequence number of the call; the request id
//! is the `x-request-id` the client sees.
//!
//! Completion (worker → core), 48 bytes, no descriptors:
//!
//! ```text
//! 0  u32 magic "CFC3"   4  u16 status       6  u16 flags
//! 8  u64 call_id        16 u64 body_bytes 24 u64 duration_us
//! 32 u8 failure (0: none, else 1 + index in FailureKind::ALL)
//! 33 u8 reserved        34 u16 reserved     36 u32 memory_kb_peak (0: unknown)
//! 40 u64 written_bytes (head and body written to the client)
//! ```

use std::fs::File;
use std::io::{IoSlice, Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recvmsg, send, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use thiserror::Error;

use crate::failure::FailureKind;
use crate::http::encode::ConnectionHeader;
use crate::wire::{put_u16, put_u32, put_u64, u16_at, u32_at, u64_at};

pub const DISPATCH_MAGIC: u32 = u32::from_le_bytes(*b"CFD2");
pub const COMPLETION_MAGIC: u32 = u32::from_le_bytes(*b"CFC3");
pub const DISPATCH_HEADER_BYTES: usize = 40;
pub const COMPLETION_BYTES: usize = 48;
/// Bodies up to this travel inside the dispatch message; larger ones in a
/// sealed memfd, so a message always fits the socket buffer.
pub const INLINE_BODY_BYTES_MAX: usize = 32 * 1024;
/// Largest dispatch message: header, descriptor, head, inline body.
pub const DISPATCH_BYTES_MAX: usize = 128 * 1024;

/// Dispatch flags.
pub const FLAG_KEEP_ALIVE: u32 = 1 << 0;
pub const FLAG_HEAD_ONLY: u32 = 1 << 1;
pub const FLAG_BODY_IN_MEMFD: u32 = 1 << 2;
pub const FLAG_HTTP10: u32 = 1 << 3;
/// To the control plane: queue this function call (the dispatch's name is
/// the function) instead of answering it as an API request.
pub const FLAG_ASYNC_INVOCATION: u32 = 1 << 4;

/// Completion flag: the worker could not write a whole response, so the
/// connection must be closed.
pub const COMPLETION_CONNECTION_BROKEN: u16 = 1 << 0;
/// Completion flag: the worker is about to exit (a native call it cannot
/// stop ran past its deadline); choose it no more. Sent on every channel,
/// with [`COMPLETION_STATUS_NONE`] where no request completes.
pub const COMPLETION_WORKER_RETIRING: u16 = 1 << 1;
/// Completion flag: the call started something new (a language host, a
/// wasm instance template, a native library): a cold start.
pub const COMPLETION_COLD_START: u16 = 1 << 2;
/// Completion flag: whoever answered keeps the client socket (a streamed
/// response, such as a log follow): the core closes its own descriptor
/// without shutting the connection down.
pub const COMPLETION_CONNECTION_TAKEN: u16 = 1 << 3;
/// Status of a completion that completes no request (a notice only).
pub const COMPLETION_STATUS_NONE: u16 = 0;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("message too short ({0} bytes)")]
    Short(usize),
    #[error("unknown message magic {0:#x}")]
    Magic(u32),
    #[error("message lengths do not add up")]
    Lengths,
    #[error("dispatch carries {0} descriptors, expected {1}")]
    Descriptors(usize, usize),
    #[error("socket error: {0}")]
    Socket(Errno),
    #[error("peer closed the channel")]
    Closed,
    #[error("dispatch of {0} bytes is over the {DISPATCH_BYTES_MAX}-byte message limit")]
    TooLarge(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DispatchHeader {
    pub flags: u32,
    pub call_id: u64,
    pub descriptor_len: u32,
    pub head_len: u32,
    pub body_len: u64,
    pub name_len: u16,
    pub request_id_len: u16,
    /// The function's version (0: a route without one).
    pub version: u32,
}

impl DispatchHeader {
    /// The header of a dispatch of `parts` (`body_len`: the whole body,
    /// inline or in a memfd).
    pub fn for_parts(
        flags: u32,
        call_id: u64,
        version: u32,
        parts: &DispatchParts<'_>,
        body_len: u64,
    ) -> DispatchHeader {
        DispatchHeader {
            flags,
            call_id,
            descriptor_len: parts.descriptor.len() as u32,
            head_len: parts.head.len() as u32,
            body_len,
            // Both are bounded by their producers (route keys, request ids).
            name_len: u16::try_from(parts.name.len()).unwrap_or(u16::MAX),
            request_id_len: u16::try_from(parts.request_id.len()).unwrap_or(u16::MAX),
            version,
        }
    }

    pub fn encode(&self) -> [u8; DISPATCH_HEADER_BYTES] {
        let mut bytes = [0u8; DISPATCH_HEADER_BYTES];
        put_u32(&mut bytes, 0, DISPATCH_MAGIC);
        put_u32(&mut bytes, 4, self.flags);
        put_u64(&mut bytes, 8, self.call_id);
        put_u32(&mut bytes, 16, self.descriptor_len);
        put_u32(&mut bytes, 20, self.head_len);
        put_u64(&mut bytes, 24, self.body_len);
        put_u16(&mut bytes, 32, self.name_len);
        put_u16(&mut bytes, 34, self.request_id_len);
        put_u32(&mut bytes, 36, self.version);
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<DispatchHeader, ProtocolError> {
        if bytes.len() < DISPATCH_HEADER_BYTES {
            return Err(ProtocolError::Short(bytes.len()));
        }
        let magic = u32_at(bytes, 0);
        if magic != DISPATCH_MAGIC {
            return Err(ProtocolError::Magic(magic));
        }
        Ok(DispatchHeader {
            flags: u32_at(bytes, 4),
            call_id: u64_at(bytes, 8),
            descriptor_len: u32_at(bytes, 16),
            head_len: u32_at(bytes, 20),
            body_len: u64_at(bytes, 24),
            name_len: u16_at(bytes, 32),
            request_id_len: u16_at(bytes, 34),
            version: u32_at(bytes, 36),
        })
    }

    pub fn body_in_memfd(&self) -> bool {
        self.flags & FLAG_BODY_IN_MEMFD != 0
    }

    pub fn head_only(&self) -> bool {
        self.flags & FLAG_HEAD_ONLY != 0
    }

    /// What the response says about the connection; `draining`: the gateway
    /// is shutting down, so it closes whatever the client asked.
    pub fn connection(&self, draining: bool) -> ConnectionHeader {
        let keep_alive = self.flags & FLAG_KEEP_ALIVE != 0 && !draining;
        match (keep_alive, self.flags & FLAG_HTTP10 != 0) {
            (false, _) => ConnectionHeader::Close,
            (true, true) => ConnectionHeader::KeepAlive,
            (true, false) => ConnectionHeader::Implicit,
        }
    }
}

/// The variable parts of a dispatch, in their order on the wire.
#[derive(Debug, Clone, Copy)]
pub struct DispatchParts<'p> {
    pub descriptor: &'p [u8],
    pub name: &'p str,
    pub request_id: &'p str,
    pub head: &'p [u8],
    pub inline_body: &'p [u8],
}

/// A received dispatch: its parts are ranges of the receive buffer.
#[derive(Debug)]
pub struct Dispatch<'m> {
    pub header: DispatchHeader,
    pub descriptor: &'m [u8],
    /// The function's name, or the route key of a hand-written route.
    pub name: &'m str,
    pub request_id: &'m str,
    pub head: &'m [u8],
    /// Empty when the body is in the memfd.
    pub inline_body: &'m [u8],
    pub client: OwnedFd,
    pub body_memfd: Option<OwnedFd>,
}

/// What came in on a channel: a whole dispatch, or one whose header
/// decoded but whose parts did not (cut short, wrong lengths, the wrong
/// descriptors). A cut one still names its call, so the receiver answers
/// its client 502 and completes it at once instead of leaving both to the
/// call's timeout.
#[derive(Debug)]
pub enum Received<'m> {
    Dispatch(Dispatch<'m>),
    Cut(CutDispatch),
}

#[derive(Debug)]
pub struct CutDispatch {
    pub header: DispatchHeader,
    /// The client's socket, when it came with the message.
    pub client: Option<OwnedFd>,
    pub reason: ProtocolError,
}

impl CutDispatch {
    /// The answer its client gets.
    pub fn failure(&self) -> crate::failure::Failure {
        crate::failure::Failure::new(
            FailureKind::Internal,
            format_args!(
                "the request did not reach the worker intact: {}",
                self.reason
            ),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    pub status: u16,
    pub flags: u16,
    pub call_id: u64,
    pub body_bytes: u64,
    pub duration_us: u64,
    pub failure: Option<FailureKind>,
    /// Peak memory of the call where the runtime knows it (wasm linear
    /// memory); 0 otherwise.
    pub memory_kb_peak: u32,
    /// Every byte the worker wrote to the client for this call (head and
    /// body): the core keeps count of what the socket carried, so that it
    /// can tell a worker that wrote nothing from one cut mid-answer
    /// without a syscall per call.
    pub written_bytes: u64,
}

impl Completion {
    pub fn encode(&self) -> [u8; COMPLETION_BYTES] {
        let mut bytes = [0u8; COMPLETION_BYTES];
        put_u32(&mut bytes, 0, COMPLETION_MAGIC);
        put_u16(&mut bytes, 4, self.status);
        put_u16(&mut bytes, 6, self.flags);
        put_u64(&mut bytes, 8, self.call_id);
        put_u64(&mut bytes, 16, self.body_bytes);
        put_u64(&mut bytes, 24, self.duration_us);
        bytes[32] = self.failure.map_or(0, |kind| kind.index() as u8 + 1);
        put_u32(&mut bytes, 36, self.memory_kb_peak);
        put_u64(&mut bytes, 40, self.written_bytes);
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<Completion, ProtocolError> {
        if bytes.len() < COMPLETION_BYTES {
            return Err(ProtocolError::Short(bytes.len()));
        }
        let magic = u32_at(bytes, 0);
        if magic != COMPLETION_MAGIC {
            return Err(ProtocolError::Magic(magic));
        }
        Ok(Completion {
            status: u16_at(bytes, 4),
            flags: u16_at(bytes, 6),
            call_id: u64_at(bytes, 8),
            body_bytes: u64_at(bytes, 16),
            duration_us: u64_at(bytes, 24),
            failure: match bytes[32] {
                0 => None,
                n => Some(
                    *FailureKind::ALL
                        .get(usize::from(n) - 1)
                        .ok_or(ProtocolError::Lengths)?,
                ),
            },
            memory_kb_peak: u32_at(bytes, 36),
            written_bytes: u64_at(bytes, 40),
        })
    }

    pub fn connection_broken(&self) -> bool {
        self.flags & COMPLETION_CONNECTION_BROKEN != 0
    }

    pub fn worker_retiring(&self) -> bool {
        self.flags & COMPLETION_WORKER_RETIRING != 0
    }

    pub fn cold_start(&self) -> bool {
        self.flags & COMPLETION_COLD_START != 0
    }

    pub fn connection_taken(&self) -> bool {
        self.flags & COMPLETION_CONNECTION_TAKEN != 0
    }
}

/// Sends one dispatch without blocking (`EAGAIN` comes back as
/// `ProtocolError::Socket(Errno::EAGAIN)` for the caller to retry).
pub fn send_dispatch(
    channel: BorrowedFd<'_>,
    header: &DispatchHeader,
    parts: &DispatchParts<'_>,
    client: RawFd,
    body_memfd: Option<RawFd>,
) -> Result<(), ProtocolError> {
    let DispatchParts {
        descriptor,
        name,
        request_id,
        head,
        inline_body,
    } = *parts;
    assert_eq!(
        header.descriptor_len as usize,
        descriptor.len(),
        "header matches parts"
    );
    assert_eq!(header.head_len as usize, head.len(), "header matches parts");
    assert_eq!(header.name_len as usize, name.len(), "header matches parts");
    assert_eq!(
        header.request_id_len as usize,
        request_id.len(),
        "header matches parts"
    );
    assert!(
        header.body_in_memfd() == body_memfd.is_some()
            && (header.body_in_memfd() || header.body_len == inline_body.len() as u64),
        "the body travels inline or in the memfd, as the header says"
    );
    let total = DISPATCH_HEADER_BYTES
        + descriptor.len()
        + name.len()
        + request_id.len()
        + head.len()
        + inline_body.len();
    // The receiver's buffer is DISPATCH_BYTES_MAX: a longer message would
    // arrive cut short.
    if total > DISPATCH_BYTES_MAX {
        return Err(ProtocolError::TooLarge(total));
    }
    let encoded = header.encode();
    let parts = [
        IoSlice::new(&encoded),
        IoSlice::new(descriptor),
        IoSlice::new(name.as_bytes()),
        IoSlice::new(request_id.as_bytes()),
        IoSlice::new(head),
        IoSlice::new(inline_body),
    ];
    let with_memfd;
    let just_client;
    let fds: &[RawFd] = match body_memfd {
        Some(memfd) => {
            with_memfd = [client, memfd];
            &with_memfd
        }
        None => {
            just_client = [client];
            &just_client
        }
    };
    let rights = [ControlMessage::ScmRights(fds)];
    sendmsg::<()>(
        channel.as_raw_fd(),
        &parts,
        &rights,
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(ProtocolError::Socket)?;
    Ok(())
}

/// Whether a receive waits for a message (on a blocking channel end) or
/// returns `EAGAIN` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvMode {
    Wait,
    DontWait,
}

/// Receives one dispatch into `buffer`; with [`RecvMode::DontWait`],
/// `EAGAIN` when there is none (another reader took it). Received
/// descriptors are close-on-exec.
pub fn recv_dispatch<'m>(
    channel: BorrowedFd<'_>,
    buffer: &'m mut [u8],
    mode: RecvMode,
) -> Result<Received<'m>, ProtocolError> {
    let mut control = nix::cmsg_space!([RawFd; 2]);
    let wait_flag = match mode {
        RecvMode::Wait => MsgFlags::empty(),
        RecvMode::DontWait => MsgFlags::MSG_DONTWAIT,
    };
    let (len, truncated, fds) = {
        let mut iov = [std::io::IoSliceMut::new(buffer)];
        let message = recvmsg::<()>(
            channel.as_raw_fd(),
            &mut iov,
            Some(&mut control),
            MsgFlags::MSG_CMSG_CLOEXEC | wait_flag,
        )
        .map_err(ProtocolError::Socket)?;
        let mut fds: Vec<OwnedFd> = Vec::with_capacity(2);
        for cmsg in message.cmsgs().map_err(ProtocolError::Socket)? {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                // SAFETY: the kernel just installed these descriptors for us.
                fds.extend(
                    received
                        .into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        let truncated = message
            .flags
            .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
        (message.bytes, truncated, fds)
    };
    if len == 0 {
        return Err(ProtocolError::Closed);
    }
    let bytes = &buffer[..len];
    let header = DispatchHeader::decode(bytes)?;
    let cut = |reason: ProtocolError, fds: Vec<OwnedFd>| {
        Ok(Received::Cut(CutDispatch {
            header,
            client: fds.into_iter().next(),
            reason,
        }))
    };
    if truncated {
        return cut(ProtocolError::TooLarge(len), fds);
    }
    let expected_fds = if header.body_in_memfd() { 2 } else { 1 };
    if fds.len() != expected_fds {
        return cut(ProtocolError::Descriptors(fds.len(), expected_fds), fds);
    }
    let descriptor_end = DISPATCH_HEADER_BYTES + header.descriptor_len as usize;
    let name_end = descriptor_end + usize::from(header.name_len);
    let request_id_end = name_end + usize::from(header.request_id_len);
    let head_end = request_id_end + header.head_len as usize;
    let inline_len = if header.body_in_memfd() {
        0
    } else {
        match usize::try_from(header.body_len) {
            Ok(n) => n,
            Err(_) => return cut(ProtocolError::Lengths, fds),
        }
    };
    if head_end + inline_len != len {
        return cut(ProtocolError::Lengths, fds);
    }
    let text = |range: std::ops::Range<usize>| std::str::from_utf8(&bytes[range]).ok();
    let (Some(name), Some(request_id)) = (
        text(descriptor_end..name_end),
        text(name_end..request_id_end),
    ) else {
        return cut(ProtocolError::Lengths, fds);
    };
    let mut fds = fds.into_iter();
    let (Some(client), body_memfd) = (fds.next(), fds.next()) else {
        return Err(ProtocolError::Descriptors(0, expected_fds));
    };
    Ok(Received::Dispatch(Dispatch {
        header,
        descriptor: &bytes[DISPATCH_HEADER_BYTES..descriptor_end],
        name,
        request_id,
        head: &bytes[request_id_end..head_end],
        inline_body: &bytes[head_end..],
        client,
        body_memfd,
    }))
}

/// How much of a response's body went out when `written` bytes of
/// `response` (head first) did.
pub fn body_bytes_written(response: &[u8], written: usize) -> u64 {
    let head_bytes = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |at| at + 4);
    written.saturating_sub(head_bytes) as u64
}

/// How long a response write may wait for a client that does not read.
pub const RESPONSE_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads a dispatch's body from its sealed memfd.
pub fn read_body_memfd(memfd: &OwnedFd, body_len: u64) -> std::io::Result<Vec<u8>> {
    let mut file = File::from(memfd.try_clone()?);
    // The gateway's write left the shared file offset at the end.
    file.seek(SeekFrom::Start(0))?;
    let mut body = Vec::with_capacity(usize::try_from(body_len).unwrap_or(0));
    file.read_to_end(&mut body)?;
    if body.len() as u64 != body_len {
        return Err(std::io::Error::other(format!(
            "request body has {} bytes, expected {body_len}",
            body.len()
        )));
    }
    Ok(body)
}

/// Writes all of `bytes` to the client socket, which is non-blocking (it
/// shares its file status with the gateway's copy): waits for POLLOUT on
/// EAGAIN, up to [`RESPONSE_WRITE_TIMEOUT`] in all. Used by whoever
/// answers a dispatch (a worker, the control plane).
pub fn write_to_client(client: BorrowedFd<'_>, bytes: &[u8]) -> std::io::Result<usize> {
    let deadline = Instant::now() + RESPONSE_WRITE_TIMEOUT;
    let mut written = 0;
    while written < bytes.len() {
        match send(
            client.as_raw_fd(),
            &bytes[written..],
            MsgFlags::MSG_NOSIGNAL,
        ) {
            Ok(n) => written += n,
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(std::io::ErrorKind::TimedOut.into());
                }
                let mut fds = [PollFd::new(client, PollFlags::POLLOUT)];
                let left_ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
                match poll(&mut fds, PollTimeout::from(left_ms)) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(error) => return Err(error.into()),
                }
            }
            Err(error) => return Err(error.into()),
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    use std::os::fd::AsFd;

    fn greet_parts() -> DispatchParts<'static> {
        DispatchParts {
            descriptor: b"{}",
            name: "greet",
            request_id: "req-1",
            head: b"HEAD!",
            inline_body: b"abc",
        }
    }

    /// A connected pair of Unix sockets of `kind`.
    fn pair(kind: SockType) -> (OwnedFd, OwnedFd) {
        socketpair(AddressFamily::Unix, kind, None, SockFlag::SOCK_CLOEXEC).expect("socketpair")
    }

    #[test]
    fn completion_round_trips() {
        let completion = Completion {
            status: 504,
            flags: COMPLETION_CONNECTION_BROKEN,
            call_id: 7,
            body_bytes: 123,
            duration_us: 456,
            failure: None,
            memory_kb_peak: 0,
            written_bytes: 180,
        };
        assert_eq!(Completion::decode(&completion.encode()), Ok(completion));
        for kind in FailureKind::ALL {
            let failed = Completion {
                failure: Some(kind),
                memory_kb_peak: 640,
                flags: COMPLETION_COLD_START,
                ..completion
            };
            let decoded = Completion::decode(&failed.encode()).expect("decodes");
            assert_eq!(decoded, failed);
            assert!(decoded.cold_start() && !decoded.connection_taken());
        }
        assert_eq!(
            Completion::decode(&[0u8; COMPLETION_BYTES]),
            Err(ProtocolError::Magic(0))
        );
    }

    #[test]
    fn dispatch_carries_parts_and_descriptors_over_seqpacket() {
        let (core_end, worker_end) = pair(SockType::SeqPacket);
        let (client, _client_peer) = pair(SockType::Stream);
        let parts = greet_parts();
        let header = DispatchHeader::for_parts(FLAG_KEEP_ALIVE, 42, 3, &parts, 3);
        send_dispatch(core_end.as_fd(), &header, &parts, client.as_raw_fd(), None).expect("send");
        let mut buffer = vec![0u8; DISPATCH_BYTES_MAX];
        let Ok(Received::Dispatch(dispatch)) =
            recv_dispatch(worker_end.as_fd(), &mut buffer, RecvMode::DontWait)
        else {
            panic!("a whole dispatch");
        };
        assert_eq!(dispatch.header, header);
        assert_eq!(dispatch.descriptor, b"{}");
        assert_eq!((dispatch.name, dispatch.request_id), ("greet", "req-1"));
        assert_eq!(dispatch.header.version, 3);
        assert_eq!(dispatch.head, b"HEAD!");
        assert_eq!(dispatch.inline_body, b"abc");
        assert!(dispatch.body_memfd.is_none());
        assert_ne!(dispatch.client.as_raw_fd(), client.as_raw_fd());
    }

    #[test]
    fn a_dispatch_whose_parts_do_not_add_up_is_cut_with_its_call_and_client() {
        let (core_end, worker_end) = pair(SockType::SeqPacket);
        let (client, _peer) = pair(SockType::Stream);
        let parts = greet_parts();
        // The header promises a longer head than the message carries.
        let mut header = DispatchHeader::for_parts(FLAG_KEEP_ALIVE, 42, 3, &parts, 3);
        let mut buffer = vec![0u8; DISPATCH_BYTES_MAX];
        header.head_len += 100;
        let mut lying = header.encode().to_vec();
        lying.extend_from_slice(b"{}greetreq-1HEAD!abc");
        let fds = [client.as_raw_fd()];
        let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
        nix::sys::socket::sendmsg::<()>(
            core_end.as_raw_fd(),
            &[std::io::IoSlice::new(&lying)],
            &cmsg,
            MsgFlags::empty(),
            None,
        )
        .expect("send the lying dispatch");
        match recv_dispatch(worker_end.as_fd(), &mut buffer, RecvMode::DontWait) {
            Ok(Received::Cut(cut)) => {
                assert_eq!(cut.header.call_id, 42);
                assert_eq!(cut.reason, ProtocolError::Lengths);
                assert!(
                    cut.client.is_some(),
                    "the client comes with it, to be answered"
                );
                assert!(cut
                    .failure()
                    .to_string()
                    .contains("did not reach the worker intact"));
            }
            other => panic!("a cut dispatch, got {other:?}"),
        }
    }

    #[test]
    fn closed_channel_is_reported() {
        let (core_end, worker_end) = pair(SockType::SeqPacket);
        drop(core_end);
        let mut buffer = vec![0u8; 64];
        assert!(matches!(
            recv_dispatch(worker_end.as_fd(), &mut buffer, RecvMode::DontWait),
            Err(ProtocolError::Closed)
        ));
    }
}
