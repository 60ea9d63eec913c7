//! One core's executor: its accept loop and its housekeeping task.
//! Everything here runs on the core's own thread; the only shared state it
//! reads is the route board and the process-wide stop flag. Connections get
//! the core's [`CoreContext`] and never see the accept loop's own state
//! (the open-connection count).

use std::cell::Cell;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::os::unix::io::FromRawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use futures_lite::AsyncWriteExt;
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::Gate;

use super::connection::{self, Listening};
use super::context::CoreContext;
use super::Shared;
use crate::clock::DATE_LINE_LEN;
use crate::http::encode::ConnectionHeader;
use crate::http::error::HttpError;

/// How often housekeeping runs while the core serves: the bound on how
/// late a core sees a new route table, a new second for the Date header,
/// or the stop flag.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(5);
/// Rounds without a request or a connection after which housekeeping goes
/// quiet: an idle gateway's cores woke 200 times a second each for it, a
/// few percent of a CPU with nothing to serve (PERFORMANCE.md).
const QUIET_ROUNDS_BEFORE_DOZING: u32 = 40;
/// How often a dozing core looks at the stop flag. The route table, links
/// and Date line it catches up on before it serves again
/// ([`CoreContext::before_serving`]).
const DOZING_INTERVAL: Duration = Duration::from_millis(100);
/// Pause after a failed accept (EMFILE and friends) before trying again.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(10);

/// The core's main future: serve until the process-wide stop flag is set,
/// then drain connections for at most the shutdown grace.
pub async fn run(
    core: Rc<CoreContext>,
    shared: Arc<Shared>,
    listener_fd: OwnedFd,
    admin_listener_fd: Option<OwnedFd>,
) {
    glommio::spawn_local(housekeeping(core.clone(), shared)).detach();
    let connections = Rc::new(Gate::new());
    let open = Rc::new(Cell::new(0usize));
    let admin = admin_listener_fd.map(|fd| {
        let (core, connections, open) = (core.clone(), connections.clone(), open.clone());
        glommio::spawn_local(async move {
            accept_on(&core, fd, Listening::Admin, &connections, &open).await;
        })
    });
    accept_on(&core, listener_fd, Listening::All, &connections, &open).await;
    if let Some(admin) = admin {
        admin.await;
    }

    let grace = core.limits.shutdown_grace;
    let drained = glommio::timer::timeout(grace, async {
        let _ = connections.close().await;
        Ok(())
    })
    .await;
    if drained.is_err() {
        eprintln!(
            "corefn: core {}: {} connections still open after the {} ms shutdown grace",
            core.index,
            open.get(),
            grace.as_millis()
        );
    }
    if let Some(log) = &core.access_log {
        log.flush();
    }
}

/// Accepts on `listener_fd` until the core stops, then stops listening.
async fn accept_on(
    core: &Rc<CoreContext>,
    listener_fd: OwnedFd,
    listening: Listening,
    connections: &Gate,
    open: &Rc<Cell<usize>>,
) {
    let listener_raw = listener_fd.as_raw_fd();
    // SAFETY: the descriptor is a bound, listening TCP socket owned by us.
    let listener = unsafe { TcpListener::from_raw_fd(listener_fd.into_raw_fd()) };
    accept_until_stopped(core, &listener, listening, connections, open).await;
    // Refuse new connections at once. Dropping alone is not enough: an
    // accept still queued in io_uring holds the socket open until the ring
    // is torn down, and the kernel goes on completing handshakes meanwhile.
    // shutdown() on a listening socket stops it listening right away.
    // SAFETY: `listener` still owns `listener_raw`.
    unsafe { libc::shutdown(listener_raw, libc::SHUT_RDWR) };
    drop(listener);
}

/// Accepts until the core stops; `open` counts the connections this core
/// serves (on every listener), within `connections_per_core_max`.
async fn accept_until_stopped(
    core: &Rc<CoreContext>,
    listener: &TcpListener,
    listening: Listening,
    connections: &Gate,
    open: &Rc<Cell<usize>>,
) {
    let mut last_error_report: Option<Instant> = None;
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            core.stopped().await;
            None
        })
        .await;
        let stream = match accepted {
            None => return,
            Some(Ok(stream)) => stream,
            Some(Err(error)) => {
                // Out of descriptors or memory: report at most once a second, back off.
                if last_error_report.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                    eprintln!("corefn: core {}: accept failed: {error}", core.index);
                    last_error_report = Some(Instant::now());
                }
                glommio::timer::sleep(ACCEPT_RETRY_DELAY).await;
                continue;
            }
        };
        debug_assert!(
            open.get() <= core.limits.connections_per_core_max,
            "open connections within the per-core limit"
        );
        if open.get() >= core.limits.connections_per_core_max {
            core.before_serving();
            let limit = core.limits.connections_per_core_max;
            let date_line = core.date_line();
            glommio::spawn_local(turn_away(stream, limit, date_line)).detach();
            continue;
        }
        core.before_serving();
        open.set(open.get() + 1);
        let connection_core = core.clone();
        let connection_open = open.clone();
        let spawned = connections.spawn(async move {
            connection::serve(&connection_core, stream, listening).await;
            let count = connection_open.get();
            debug_assert!(count > 0, "open connection count never negative");
            connection_open.set(count - 1);
        });
        match spawned {
            Ok(task) => task.detach(),
            Err(_) => return, // gate closed: we are stopping
        };
    }
}

/// Over the connection limit: say so and close, without reading.
async fn turn_away(mut stream: TcpStream, limit: usize, date_line: [u8; DATE_LINE_LEN]) {
    let mut out = Vec::with_capacity(256);
    HttpError::Overloaded { limit }.render(&mut out, &date_line, ConnectionHeader::Close, false);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = stream.write_all(&out).await;
}

async fn housekeeping(core: Rc<CoreContext>, shared: Arc<Shared>) {
    let mut quiet_rounds = 0u32;
    loop {
        if shared.stop_requested.load(Ordering::Acquire) && !core.is_stopping() {
            core.stop();
        }
        if core.is_dormant() {
            future::or(glommio::timer::sleep(DOZING_INTERVAL), core.woken()).await;
            continue;
        }
        core.housekeep();
        quiet_rounds = if core.take_activity() {
            0
        } else {
            quiet_rounds + 1
        };
        if quiet_rounds >= QUIET_ROUNDS_BEFORE_DOZING && !core.is_stopping() {
            core.doze();
            quiet_rounds = 0;
            continue;
        }
        glommio::timer::sleep(HOUSEKEEPING_INTERVAL).await;
    }
}
