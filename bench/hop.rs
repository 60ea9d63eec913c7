//! `corefn-hop`: the floor of corefn's function path, for the benchmark.
//!
//! It does only the hop, the way corefn does it, and nothing else: pinned
//! glommio executors (one per core, one `SO_REUSEPORT` listener each) read
//! and parse each request head with httparse, pass the client's socket to a
//! second process over a per-core `SOCK_SEQPACKET` channel (`SCM_RIGHTS`,
//! with the call's id), and wait for its completion message before they
//! read the connection's next request; the second process (a real one,
//! forked and exec'd) has one thread per channel that receives the socket,
//! writes a fixed `200 OK` itself and sends the completion back. No routing,
//! no descriptor, no runtime, no metrics.
//!
//! corefn's wasm path is stated as a fraction of this in PERFORMANCE.md
//! (`scripts/bench-hop.py`): what is left between the two is corefn's own
//! work, the rest is what the architecture costs on this machine.

#[path = "pinned.rs"]
mod pinned;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::pin::Pin;
use std::process::{Command, ExitCode};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use clap::Parser;
use futures_lite::io::AsyncReadExt;
use glommio::net::{TcpListener, TcpStream, UnixStream};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use pinned::run_pinned;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The one response the second process writes.
const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 14\r\n\r\nHello, world!\n";
/// Per-connection read buffer; a head that does not fit ends the connection.
const BUF_SIZE: usize = 16 * 1024;
/// Headers parsed per request at most.
const HEADERS_MAX: usize = 64;
/// Where the second process finds its channels: fd 3, 4, ...
const FIRST_CHANNEL_FD: RawFd = 3;
/// A dispatch or a completion: the call's id.
const MESSAGE_BYTES: usize = 8;

#[derive(Parser, Debug)]
#[command(name = "corefn-hop", version, about)]
struct Args {
    /// Address to listen on (one SO_REUSEPORT listener per core).
    #[arg(long, default_value = "127.0.0.1:8082")]
    listen: SocketAddr,

    /// Number of cores to use, one pinned executor each (default: all cores).
    #[arg(long)]
    cores: Option<usize>,

    /// Run as the second process with this many channels (internal).
    #[arg(long, hide = true)]
    worker_channels: Option<usize>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.worker_channels {
        Some(channels) => run_worker(channels),
        None => run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("corefn-hop: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let cpus = pinned::select_cpus(args.cores)?;
    // One channel per core: the core's end stays here, the other goes to
    // the second process at fd 3 + core.
    let mut core_ends = Vec::with_capacity(cpus.len());
    let mut worker_ends = Vec::with_capacity(cpus.len());
    for _ in &cpus {
        let (core, worker) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| format!("socketpair: {e}"))?;
        core_ends.push(core);
        worker_ends.push(worker);
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut command = Command::new(exe);
    command.arg("--worker-channels").arg(cpus.len().to_string());
    let raw: Vec<RawFd> = worker_ends.iter().map(AsRawFd::as_raw_fd).collect();
    // SAFETY: between fork and exec: fcntl and dup2 only, nothing allocated
    // (the fd list was made before the fork).
    unsafe {
        command.pre_exec(move || {
            // Out of the way first, so that no dup2 overwrites a source.
            let mut moved = [0 as RawFd; 64];
            for (i, &fd) in raw.iter().enumerate().take(moved.len()) {
                moved[i] = libc::fcntl(fd, libc::F_DUPFD, 100);
                if moved[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, &fd) in moved.iter().enumerate().take(raw.len()) {
                if libc::dup2(fd, FIRST_CHANNEL_FD + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut worker = command
        .spawn()
        .map_err(|e| format!("cannot start the second process: {e}"))?;
    drop(worker_ends);

    let mut channels = core_ends.into_iter();
    let served = run_pinned("corefn-hop", &cpus, args.listen, |_| {
        let channel = channels.next();
        move |listener, cpu| async move {
            match channel {
                Some(channel) => serve(listener, cpu, channel).await,
                None => Err(format!("no channel for cpu {cpu}")),
            }
        }
    });
    let _ = worker.kill();
    let _ = worker.wait();
    served
}

/// Calls of one core waiting for their completion, by id.
#[derive(Default)]
struct Pending {
    next_id: Cell<u64>,
    calls: RefCell<HashMap<u64, Rc<Slot>>>,
}

#[derive(Default)]
struct Slot {
    done: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

/// Resolves once the slot's completion has come.
struct Completed(Rc<Slot>);

impl Future for Completed {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.done.get() {
            return Poll::Ready(());
        }
        self.0.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}

async fn serve(listener: TcpListener, cpu: usize, channel: OwnedFd) -> Result<(), String> {
    let pending = Rc::new(Pending::default());
    let sender = channel
        .try_clone()
        .map_err(|e| format!("cannot clone the channel: {e}"))?;
    let sender = Rc::new(sender);
    // SAFETY: a connected seqpacket socket we own; glommio only reads it,
    // each read returns one message.
    let mut completions = unsafe { UnixStream::from_raw_fd(channel.into_raw_fd()) };
    let reader = pending.clone();
    glommio::spawn_local(async move {
        let mut message = [0u8; MESSAGE_BYTES * 2];
        while let Ok(n) = completions.read(&mut message).await {
            if n != MESSAGE_BYTES {
                break;
            }
            let mut id = [0u8; MESSAGE_BYTES];
            id.copy_from_slice(&message[..MESSAGE_BYTES]);
            if let Some(slot) = reader.calls.borrow_mut().remove(&u64::from_le_bytes(id)) {
                slot.done.set(true);
                if let Some(waker) = slot.waker.take() {
                    waker.wake();
                }
            }
        }
    })
    .detach();

    loop {
        match listener.accept().await {
            Ok(stream) => {
                let pending = pending.clone();
                let sender = sender.clone();
                glommio::spawn_local(async move {
                    let _ = handle_connection(stream, &pending, &sender).await;
                })
                .detach();
            }
            Err(e) => {
                eprintln!("corefn-hop: accept failed on cpu {cpu}: {e}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Each request head in turn: parsed, handed over with the socket, and
/// the next read only once its completion is in.
async fn handle_connection(
    mut stream: TcpStream,
    pending: &Pending,
    channel: &OwnedFd,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; BUF_SIZE].into_boxed_slice();
    let mut filled = 0usize;
    loop {
        let head_len = loop {
            let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
            let mut request = httparse::Request::new(&mut headers);
            match request.parse(&buf[..filled]) {
                Ok(httparse::Status::Complete(n)) => break n,
                Ok(httparse::Status::Partial) if filled < buf.len() => {}
                _ => return Ok(()),
            }
            let n = stream.read(&mut buf[filled..]).await?;
            if n == 0 {
                return Ok(());
            }
            filled += n;
        };
        let id = pending.next_id.get();
        pending.next_id.set(id + 1);
        let slot = Rc::new(Slot::default());
        pending.calls.borrow_mut().insert(id, slot.clone());
        let fds = [stream.as_raw_fd()];
        let message = id.to_le_bytes();
        loop {
            let sent = sendmsg::<()>(
                channel.as_raw_fd(),
                &[IoSlice::new(&message)],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::MSG_DONTWAIT,
                None,
            );
            match sent {
                Ok(_) => break,
                Err(nix::errno::Errno::EAGAIN) => {
                    glommio::timer::sleep(Duration::from_micros(50)).await
                }
                Err(e) => return Err(e.into()),
            }
        }
        Completed(slot).await;
        buf.copy_within(head_len..filled, 0);
        filled -= head_len;
    }
}

/// The second process: a thread per channel, each receiving a socket,
/// writing [`RESPONSE`] to it and sending the completion.
fn run_worker(channels: usize) -> Result<(), String> {
    let threads: Vec<_> = (0..channels)
        .map(|i| {
            // SAFETY: the first process placed channel i at this fd for us.
            let channel = unsafe { OwnedFd::from_raw_fd(FIRST_CHANNEL_FD + i as RawFd) };
            std::thread::spawn(move || serve_channel(channel))
        })
        .collect();
    for thread in threads {
        thread
            .join()
            .map_err(|_| "a channel thread panicked".to_string())??;
    }
    Ok(())
}

fn serve_channel(channel: OwnedFd) -> Result<(), String> {
    let mut message = [0u8; MESSAGE_BYTES];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    loop {
        let mut iov = [std::io::IoSliceMut::new(&mut message)];
        let received = recvmsg::<()>(
            channel.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| format!("recvmsg: {e}"))?;
        if received.bytes == 0 {
            return Ok(());
        }
        let mut client = None;
        for cmsg in received.cmsgs().map_err(|e| format!("cmsgs: {e}"))? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                client = fds.first().map(|&fd| {
                    // SAFETY: SCM_RIGHTS made this descriptor for us alone.
                    unsafe { OwnedFd::from_raw_fd(fd) }
                });
            }
        }
        if let Some(client) = client {
            write_all(&client, RESPONSE);
        }
        sendmsg::<()>(
            channel.as_raw_fd(),
            &[IoSlice::new(&message)],
            &[],
            MsgFlags::empty(),
            None,
        )
        .map_err(|e| format!("sendmsg: {e}"))?;
    }
}

/// Writes `bytes` to a (non-blocking) socket, waiting with poll when full;
/// a socket that fails is given up (the client went away).
fn write_all(fd: &OwnedFd, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: a write from a live buffer to a descriptor we hold.
        let n = unsafe { libc::write(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
        if n > 0 {
            bytes = &bytes[n as usize..];
            continue;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) => {
                let mut poll = libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one pollfd on the stack.
                unsafe { libc::poll(&mut poll, 1, 1000) };
            }
            Some(libc::EINTR) => {}
            _ => return,
        }
    }
}
