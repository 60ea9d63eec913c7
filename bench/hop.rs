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
//! `--mode` tries two of the cheaper hops issue 16 lists, on the floor
//! first, before anyone builds them into corefn: `fd-once` passes a
//! connection's socket with its first call only and names it by id after
//! (the second process closes its copy when told the connection ended);
//! `ring` does that and puts every call into a per-core ring in shared
//! memory (a memfd both map), waking the second process's thread with a
//! futex only when it sleeps (after `--spin-us` of looking);
//! `completion-ring` keeps `socket`'s calls and puts the completions into a
//! second ring, read by the core between its other tasks for
//! `--core-spin-us` after the last one and then woken by a doorbell message
//! on the channel, which the thread sends only while the core waits for
//! it; `rings` is `ring` with that completion ring.
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
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
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
/// A completion: the call's id.
const MESSAGE_BYTES: usize = 8;
/// A dispatch: kind, call id, connection id.
const DISPATCH_BYTES: usize = 24;
/// Dispatch kinds.
const CALL: u64 = 0;
/// A call whose client socket comes with it (`socket` mode: every call;
/// `fd-once`: a connection's first; `ring`: on the socket, its ring entry
/// says to take it).
const CALL_WITH_SOCKET: u64 = 1;
/// The connection ended: the second process closes its copy.
const FORGET: u64 = 2;
/// Calls a ring holds at most (more wait for room).
const RING_SLOTS: usize = 1024;

#[derive(Parser, Debug)]
#[command(name = "corefn-hop", version, about)]
struct Args {
    /// Address to listen on (one SO_REUSEPORT listener per core).
    #[arg(long, default_value = "127.0.0.1:8082")]
    listen: SocketAddr,

    /// Number of cores to use, one pinned executor each (default: all cores).
    #[arg(long)]
    cores: Option<usize>,

    /// How a call reaches the second process: `socket` (corefn's way
    /// today: a seqpacket message with the client's socket per call),
    /// `fd-once` (the socket passed with a connection's first call only,
    /// referred to by id afterwards, forgotten when the connection ends), or
    /// `ring` (fd-once, and each call through a ring in shared memory, with
    /// a futex wake only when the second process's thread sleeps).
    #[arg(long, value_enum, default_value_t = Mode::Socket)]
    mode: Mode,

    /// How long a ring-mode thread of the second process spins on an
    /// empty ring before it sleeps on the futex.
    #[arg(long, default_value_t = 0)]
    spin_us: u64,

    /// `rings` mode: how long a core keeps looking at an empty completion
    /// ring (between its other tasks) before it waits for a doorbell.
    #[arg(long, default_value_t = 20)]
    core_spin_us: u64,

    /// Run as the second process with this many channels (internal).
    #[arg(long, hide = true)]
    worker_channels: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    Socket,
    FdOnce,
    Ring,
    /// `ring`, and the completions through a second ring: the thread
    /// rings the core's doorbell (a message on the channel) only when the
    /// core waits for one.
    Rings,
    /// `socket` for the calls, the completions through a ring as in
    /// `rings`.
    CompletionRing,
}

impl Mode {
    fn has_rings(self) -> bool {
        matches!(self, Mode::Ring | Mode::Rings | Mode::CompletionRing)
    }

    fn completes_through_a_ring(self) -> bool {
        matches!(self, Mode::Rings | Mode::CompletionRing)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.worker_channels {
        Some(channels) => run_worker(channels, args.mode, Duration::from_micros(args.spin_us)),
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
    // Ring mode: one shared ring per core, at fd 3 + cores + core there.
    let mut rings = Vec::new();
    if args.mode.has_rings() {
        for _ in &cpus {
            rings.push(SharedRing::create()?);
        }
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut command = Command::new(exe);
    command
        .arg("--worker-channels")
        .arg(cpus.len().to_string())
        .arg("--mode")
        .arg(mode_name(args.mode))
        .arg("--spin-us")
        .arg(args.spin_us.to_string())
        .arg("--core-spin-us")
        .arg(args.core_spin_us.to_string());
    let raw: Vec<RawFd> = worker_ends
        .iter()
        .map(AsRawFd::as_raw_fd)
        .chain(rings.iter().map(|ring| ring.memfd.as_raw_fd()))
        .collect();
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
    let mut rings = rings.into_iter();
    let mode = args.mode;
    let core_spin = Duration::from_micros(args.core_spin_us);
    let served = run_pinned("corefn-hop", &cpus, args.listen, |_| {
        let channel = channels.next();
        let ring = rings.next();
        move |listener, cpu| async move {
            match channel {
                Some(channel) => serve(listener, cpu, channel, mode, ring, core_spin).await,
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

impl Pending {
    fn complete(&self, id: u64) {
        if let Some(slot) = self.calls.borrow_mut().remove(&id) {
            slot.done.set(true);
            if let Some(waker) = slot.waker.take() {
                waker.wake();
            }
        }
    }
}

/// `rings` mode, a core's completions: taken from the ring while there
/// are any and for `spin` after the last (yielding to the core's other
/// tasks in between), then, with the doorbell asked for, from the ring
/// once a doorbell message comes.
async fn take_ring_completions(
    rings: &SharedRing,
    mut doorbell: UnixStream,
    pending: &Pending,
    spin: Duration,
) {
    let ring = &rings.rings().completion;
    let take = || {
        let mut taken = 0;
        while let Some([call, _, _]) = ring.pop() {
            pending.complete(call);
            taken += 1;
        }
        taken
    };
    let mut message = [0u8; MESSAGE_BYTES * 2];
    let mut empty_since: Option<std::time::Instant> = None;
    loop {
        if take() > 0 {
            empty_since = None;
            glommio::executor().yield_task_queue_now().await;
            continue;
        }
        let since = *empty_since.get_or_insert_with(std::time::Instant::now);
        if since.elapsed() < spin {
            glommio::executor().yield_task_queue_now().await;
            continue;
        }
        ring.sleeping.store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if take() > 0 {
            ring.sleeping.store(0, Ordering::SeqCst);
            empty_since = None;
            continue;
        }
        // A doorbell left over from a wait that ended by itself only
        // makes one more look.
        match doorbell.read(&mut message).await {
            Ok(n) if n > 0 => empty_since = None,
            _ => return,
        }
    }
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

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Socket => "socket",
        Mode::FdOnce => "fd-once",
        Mode::Ring => "ring",
        Mode::Rings => "rings",
        Mode::CompletionRing => "completion-ring",
    }
}

/// A core's way to its channel's thread in the second process.
struct Link {
    channel: OwnedFd,
    mode: Mode,
    ring: Option<SharedRing>,
    next_connection: Cell<u64>,
}

async fn serve(
    listener: TcpListener,
    cpu: usize,
    channel: OwnedFd,
    mode: Mode,
    ring: Option<SharedRing>,
    core_spin: Duration,
) -> Result<(), String> {
    let pending = Rc::new(Pending::default());
    let sender = channel
        .try_clone()
        .map_err(|e| format!("cannot clone the channel: {e}"))?;
    let link = Rc::new(Link {
        channel: sender,
        mode,
        ring,
        next_connection: Cell::new(1),
    });
    // SAFETY: a connected seqpacket socket we own; glommio only reads it,
    // each read returns one message.
    let mut completions = unsafe { UnixStream::from_raw_fd(channel.into_raw_fd()) };
    let reader = pending.clone();
    if mode.completes_through_a_ring() {
        let rings = link.ring.as_ref().map(SharedRing::share);
        glommio::spawn_local(async move {
            if let Some(rings) = rings {
                take_ring_completions(&rings, completions, &reader, core_spin).await;
            }
        })
        .detach();
    } else {
        glommio::spawn_local(async move {
            let mut message = [0u8; MESSAGE_BYTES * 2];
            while let Ok(n) = completions.read(&mut message).await {
                if n != MESSAGE_BYTES {
                    break;
                }
                let mut id = [0u8; MESSAGE_BYTES];
                id.copy_from_slice(&message[..MESSAGE_BYTES]);
                reader.complete(u64::from_le_bytes(id));
            }
        })
        .detach();
    }

    loop {
        match listener.accept().await {
            Ok(stream) => {
                let pending = pending.clone();
                let link = link.clone();
                glommio::spawn_local(async move {
                    // 0: the socket mode's "this call's socket alone".
                    let connection = match link.mode {
                        Mode::Socket | Mode::CompletionRing => 0,
                        Mode::FdOnce | Mode::Ring | Mode::Rings => link.next_connection.get(),
                    };
                    link.next_connection.set(connection + 1);
                    let mut attached = false;
                    let _ =
                        handle_connection(stream, &pending, &link, connection, &mut attached).await;
                    if attached {
                        let _ = link.send(FORGET, 0, connection, None).await;
                    }
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
    link: &Link,
    connection: u64,
    attached: &mut bool,
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
        let socket = match link.mode {
            Mode::Socket | Mode::CompletionRing => Some(stream.as_raw_fd()),
            Mode::FdOnce | Mode::Ring | Mode::Rings if !*attached => Some(stream.as_raw_fd()),
            Mode::FdOnce | Mode::Ring | Mode::Rings => None,
        };
        let kind = if socket.is_some() {
            CALL_WITH_SOCKET
        } else {
            CALL
        };
        link.send(kind, id, connection, socket).await?;
        if !matches!(link.mode, Mode::Socket | Mode::CompletionRing) {
            *attached = true;
        }
        Completed(slot).await;
        buf.copy_within(head_len..filled, 0);
        filled -= head_len;
    }
}

impl Link {
    /// One dispatch, over the channel (with the client's socket, when
    /// given) or, in ring mode, through the ring.
    async fn send(
        &self,
        kind: u64,
        call: u64,
        connection: u64,
        socket: Option<RawFd>,
    ) -> std::io::Result<()> {
        let mut message = [0u8; DISPATCH_BYTES];
        message[..8].copy_from_slice(&kind.to_le_bytes());
        message[8..16].copy_from_slice(&call.to_le_bytes());
        message[16..].copy_from_slice(&connection.to_le_bytes());
        if let (Some(ring), Mode::Ring | Mode::Rings) = (&self.ring, self.mode) {
            // The socket first: the ring's entry tells the thread to take it.
            if let Some(fd) = socket {
                self.send_message(&message, Some(fd)).await?;
            }
            let dispatch = &ring.rings().dispatch;
            loop {
                match dispatch.push([kind, call, connection]) {
                    Pushed::Full => glommio::timer::sleep(Duration::from_micros(50)).await,
                    Pushed::ConsumerSleeps => {
                        futex(&dispatch.sleeping, libc::FUTEX_WAKE, 1);
                        return Ok(());
                    }
                    Pushed::ConsumerAwake => return Ok(()),
                }
            }
        }
        self.send_message(&message, socket).await
    }

    async fn send_message(&self, message: &[u8], socket: Option<RawFd>) -> std::io::Result<()> {
        let fds: Vec<RawFd> = socket.into_iter().collect();
        let rights = [ControlMessage::ScmRights(&fds)];
        let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
        loop {
            let sent = sendmsg::<()>(
                self.channel.as_raw_fd(),
                &[IoSlice::new(message)],
                cmsgs,
                MsgFlags::MSG_DONTWAIT,
                None,
            );
            match sent {
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EAGAIN) => {
                    glommio::timer::sleep(Duration::from_micros(50)).await
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// A single-producer single-consumer ring of three-word entries in a
/// memfd both processes map. Dispatches: the core pushes, its channel's
/// thread pops and, when it found the ring empty, sleeps on the futex word
/// `sleeping` (the core wakes it only then). Completions (`rings` mode):
/// the thread pushes, the core pops and, when it waits, sets `sleeping`
/// for a doorbell.
#[repr(C)]
struct Ring {
    /// Entries pushed (the producer writes it).
    head: AtomicU64,
    _head_line: [u8; 56],
    /// Entries taken (the consumer writes it).
    tail: AtomicU64,
    _tail_line: [u8; 56],
    /// 1 while the consumer sleeps or is about to.
    sleeping: AtomicU32,
    _sleeping_line: [u8; 60],
    slots: [[AtomicU64; 3]; RING_SLOTS],
}

/// What a push found.
enum Pushed {
    Full,
    /// The consumer is looking (or will look) by itself.
    ConsumerAwake,
    /// The consumer sleeps: the producer must wake it.
    ConsumerSleeps,
}

impl Ring {
    fn push(&self, entry: [u64; 3]) -> Pushed {
        let head = self.head.load(Ordering::Relaxed);
        if head - self.tail.load(Ordering::Acquire) >= RING_SLOTS as u64 {
            return Pushed::Full;
        }
        let slot = &self.slots[head as usize % RING_SLOTS];
        for (word, value) in slot.iter().zip(entry) {
            word.store(value, Ordering::Relaxed);
        }
        self.head.store(head + 1, Ordering::Release);
        // Against the consumer's "sleeping, then look once more": one of
        // the two sees the other's store.
        fence(Ordering::SeqCst);
        // A load first: the line is written only when the consumer sleeps.
        if self.sleeping.load(Ordering::SeqCst) == 1 && self.sleeping.swap(0, Ordering::SeqCst) == 1
        {
            return Pushed::ConsumerSleeps;
        }
        Pushed::ConsumerAwake
    }

    fn pop(&self) -> Option<[u64; 3]> {
        let tail = self.tail.load(Ordering::Relaxed);
        if tail == self.head.load(Ordering::Acquire) {
            return None;
        }
        let slot = &self.slots[tail as usize % RING_SLOTS];
        let entry = [
            slot[0].load(Ordering::Relaxed),
            slot[1].load(Ordering::Relaxed),
            slot[2].load(Ordering::Relaxed),
        ];
        self.tail.store(tail + 1, Ordering::Release);
        Some(entry)
    }

    /// The next entry: spins up to `spin`, then sleeps until the core
    /// pushes.
    fn pop_wait(&self, spin: Duration) -> [u64; 3] {
        let spin_until = std::time::Instant::now() + spin;
        loop {
            if let Some(entry) = self.pop() {
                return entry;
            }
            if std::time::Instant::now() < spin_until {
                std::hint::spin_loop();
                continue;
            }
            self.sleeping.store(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if let Some(entry) = self.pop() {
                self.sleeping.store(0, Ordering::Relaxed);
                return entry;
            }
            // Returns at once if the core already cleared the word.
            futex(&self.sleeping, libc::FUTEX_WAIT, 1);
        }
    }
}

fn futex(word: &AtomicU32, op: libc::c_int, value: u32) {
    // SAFETY: a futex call on a live, aligned u32 of a shared mapping (not
    // FUTEX_PRIVATE: the waker is another process); no timeout.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            op,
            value,
            std::ptr::null::<libc::timespec>(),
        );
    }
}

/// A core's two rings.
#[repr(C)]
struct Rings {
    dispatch: Ring,
    completion: Ring,
}

/// A core's [`Rings`] in a memfd, mapped here.
struct SharedRing {
    memfd: Rc<OwnedFd>,
    map: *mut Rings,
}

impl SharedRing {
    fn create() -> Result<SharedRing, String> {
        // SAFETY: a fresh memfd, owned at once.
        let fd = unsafe { libc::memfd_create(c"corefn-hop-ring".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: just made, ours alone.
        let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sizing our own memfd.
        if unsafe { libc::ftruncate(fd, std::mem::size_of::<Rings>() as libc::off_t) } < 0 {
            return Err(format!("ftruncate: {}", std::io::Error::last_os_error()));
        }
        SharedRing::map(memfd)
    }

    fn map(memfd: OwnedFd) -> Result<SharedRing, String> {
        // SAFETY: a shared mapping of the memfd's whole size; zeroed pages
        // are valid empty Rings (atomics of 0).
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                std::mem::size_of::<Rings>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                memfd.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        Ok(SharedRing {
            memfd: Rc::new(memfd),
            map: map.cast(),
        })
    }

    fn rings(&self) -> &Rings {
        // SAFETY: mapped for the life of the process (never unmapped), only
        // ever accessed through atomics.
        unsafe { &*self.map }
    }

    /// The same mapping, for another task of the same core.
    fn share(&self) -> SharedRing {
        SharedRing {
            memfd: self.memfd.clone(),
            map: self.map,
        }
    }
}

// SAFETY: the mapping is only touched through atomics, and the Rc is
// moved to its core's thread once, before any clone of it is made.
unsafe impl Send for SharedRing {}

/// The second process: a thread per channel, each receiving a socket,
/// writing [`RESPONSE`] to it and sending the completion.
fn run_worker(channels: usize, mode: Mode, spin: Duration) -> Result<(), String> {
    let threads: Vec<_> = (0..channels)
        .map(|i| {
            // SAFETY: the first process placed channel i at this fd for us.
            let channel = unsafe { OwnedFd::from_raw_fd(FIRST_CHANNEL_FD + i as RawFd) };
            let ring = match mode {
                Mode::Ring | Mode::Rings | Mode::CompletionRing => {
                    let fd = FIRST_CHANNEL_FD + (channels + i) as RawFd;
                    // SAFETY: and ring i at this one.
                    Some(SharedRing::map(unsafe { OwnedFd::from_raw_fd(fd) }))
                }
                _ => None,
            };
            std::thread::spawn(move || match ring {
                Some(ring) if mode == Mode::CompletionRing => serve_channel(channel, Some(ring?)),
                Some(ring) => serve_ring(channel, ring?, spin, mode == Mode::Rings),
                None => serve_channel(channel, None),
            })
        })
        .collect();
    for thread in threads {
        thread
            .join()
            .map_err(|_| "a channel thread panicked".to_string())??;
    }
    Ok(())
}

/// Calls from the channel; with `completions`, the completions into its
/// ring (`completion-ring` mode: every call brings its socket).
fn serve_channel(channel: OwnedFd, completions: Option<SharedRing>) -> Result<(), String> {
    let mut sockets: HashMap<u64, OwnedFd> = HashMap::new();
    loop {
        let Some((entry, socket)) = receive(&channel)? else {
            return Ok(());
        };
        let [kind, call, connection] = entry;
        if let Some(rings) = &completions {
            if let Some(client) = socket {
                write_all(&client, RESPONSE);
            }
            complete_through_ring(&channel, &rings.rings().completion, call)?;
            continue;
        }
        if let Some(socket) = socket {
            sockets.insert(connection, socket);
        }
        answer(&channel, &mut sockets, kind, call, connection)?;
    }
}

/// A completion into the ring, and the core's doorbell rung when it waits.
fn complete_through_ring(channel: &OwnedFd, ring: &Ring, call: u64) -> Result<(), String> {
    loop {
        match ring.push([call, 0, 0]) {
            Pushed::Full => std::thread::sleep(Duration::from_micros(10)),
            Pushed::ConsumerAwake => return Ok(()),
            Pushed::ConsumerSleeps => {
                sendmsg::<()>(
                    channel.as_raw_fd(),
                    &[IoSlice::new(&[1u8])],
                    &[],
                    MsgFlags::empty(),
                    None,
                )
                .map_err(|e| format!("sendmsg: {e}"))?;
                return Ok(());
            }
        }
    }
}

/// Ring modes: entries from the ring, sockets from the channel; with
/// `completion_ring`, completions into the other ring (and a doorbell on
/// the channel when the core waits for one).
fn serve_ring(
    channel: OwnedFd,
    ring: SharedRing,
    spin: Duration,
    completion_ring: bool,
) -> Result<(), String> {
    let mut sockets: HashMap<u64, OwnedFd> = HashMap::new();
    let rings = ring.rings();
    loop {
        let [kind, call, connection] = rings.dispatch.pop_wait(spin);
        if kind == CALL_WITH_SOCKET {
            let Some((_, Some(socket))) = receive(&channel)? else {
                return Err("a call with a socket came without it".into());
            };
            sockets.insert(connection, socket);
        }
        if !completion_ring {
            answer(&channel, &mut sockets, kind, call, connection)?;
            continue;
        }
        if kind == FORGET {
            sockets.remove(&connection);
            continue;
        }
        if let Some(client) = sockets.get(&connection) {
            write_all(client, RESPONSE);
        }
        complete_through_ring(&channel, &rings.completion, call)?;
    }
}

/// A dispatch's words (kind, call, connection) and the socket it carries.
type Message = ([u64; 3], Option<OwnedFd>);

/// One dispatch message; None at the end.
fn receive(channel: &OwnedFd) -> Result<Option<Message>, String> {
    let mut message = [0u8; DISPATCH_BYTES];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [std::io::IoSliceMut::new(&mut message)];
    let received = recvmsg::<()>(
        channel.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| format!("recvmsg: {e}"))?;
    if received.bytes == 0 {
        return Ok(None);
    }
    let mut socket = None;
    for cmsg in received.cmsgs().map_err(|e| format!("cmsgs: {e}"))? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            socket = fds.first().map(|&fd| {
                // SAFETY: SCM_RIGHTS made this descriptor for us alone.
                unsafe { OwnedFd::from_raw_fd(fd) }
            });
        }
    }
    let word = |i: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&message[i * 8..i * 8 + 8]);
        u64::from_le_bytes(bytes)
    };
    Ok(Some(([word(0), word(1), word(2)], socket)))
}

/// Answers a call (or forgets a connection); a call's completion goes
/// back over the channel.
fn answer(
    channel: &OwnedFd,
    sockets: &mut HashMap<u64, OwnedFd>,
    kind: u64,
    call: u64,
    connection: u64,
) -> Result<(), String> {
    if kind == FORGET {
        sockets.remove(&connection);
        return Ok(());
    }
    if let Some(client) = sockets.get(&connection) {
        write_all(client, RESPONSE);
    }
    // `socket` mode: the socket is this call's alone.
    if kind == CALL_WITH_SOCKET && connection == 0 {
        sockets.remove(&connection);
    }
    sendmsg::<()>(
        channel.as_raw_fd(),
        &[IoSlice::new(&call.to_le_bytes())],
        &[],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| format!("sendmsg: {e}"))?;
    Ok(())
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
