//! Listening sockets: one per core on the same address with SO_REUSEPORT,
//! made here (not with glommio's `TcpListener::bind`) to choose the backlog
//! and to report a bad address as an error instead of a panic.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Pending connections the kernel queues per listener before refusing.
const LISTEN_BACKLOG: i32 = 4096;

pub fn bind_per_core(addr: SocketAddr, core_count: usize) -> io::Result<Vec<OwnedFd>> {
    (0..core_count).map(|_| bind_one(addr)).collect()
}

fn bind_one(addr: SocketAddr) -> io::Result<OwnedFd> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    // socket2 sets close-on-exec on the socket it creates.
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&SockAddr::from(addr))?;
    socket.listen(LISTEN_BACKLOG)?;
    // SAFETY: the descriptor was just released by `socket` and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(socket.into_raw_fd()) })
}
