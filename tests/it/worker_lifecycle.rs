//! The worker processes' life: a worker killed under load is restarted and
//! its requests end (502 or a closed connection, never a hang); SIGTERM to
//! the gateway stops and reaps every worker; SIGKILL of the gateway takes
//! the workers with it (parent-death signal).
//!
//! This test process makes itself a child subreaper, so a worker orphaned
//! by its gateway is reparented to us instead of init: a worker the gateway
//! failed to stop or to reap then stays visible (alive, or a zombie whose
//! parent is this process) and the tests can tell. The flag is the whole
//! process's, so it holds for every test of the binary from the first of
//! these on: there the workers and hosts of any gateway killed at the end of
//! a test end as zombies of this process rather than being reaped by init.
//! No test minds: every process check skips zombies or looks only at its
//! own gateway's children.

use crate::common::*;
use serde_json::json;
use std::sync::{Arc, Barrier, Once};
use std::thread;
use std::time::{Duration, Instant};

fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: prctl with PR_SET_CHILD_SUBREAPER only sets a process flag.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(
            rc,
            0,
            "prctl(PR_SET_CHILD_SUBREAPER): {}",
            std::io::Error::last_os_error()
        );
    });
}

/// Reaps `pid` if it is a zombie child of this process (an orphaned worker
/// reparented to us); true if it was reaped.
fn reap_if_ours(pid: u32) -> bool {
    let mut status = 0;
    // SAFETY: waitpid on one pid with WNOHANG; it only reaps that child.
    let rc = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
    rc == pid as libc::pid_t
}

fn server() -> WorkerServer {
    become_subreaper();
    let hello = wasm_route("hello.wat", json!(null));
    let spin = wasm_route("loop.wat", json!({"timeout_ms": 3000}));
    let spin_1s = wasm_route("loop.wat", json!({"timeout_ms": 1000}));
    let fixed = static_route("static ok\n");
    WorkerServer::start(
        &[
            ("GET:/hello", &hello),
            ("GET:/spin", &spin),
            ("GET:/spin-1s", &spin_1s),
            ("GET:/static", &fixed),
        ],
        &examples_dir(),
        &[],
    )
}

fn assert_hello(r: &Response, what: &str) {
    assert_eq!(r.status, 200, "{what}: status; body {:?}", r.text());
    assert_eq!(r.text(), "Hello from wasm!\n", "{what}: body");
}

#[derive(Debug, Default, Clone, Copy)]
struct Outcomes {
    ok: u64,
    bad_gateway: u64,
    closed: u64,
    reconnects: u64,
}

/// Sends hello requests on keep-alive connections until `deadline`, reconnecting
/// when the server closes; panics on anything but 200, 502 or a close.
fn hammer(addr: std::net::SocketAddr, deadline: Instant) -> Outcomes {
    let mut out = Outcomes::default();
    let mut conn: Option<Conn> = None;
    while Instant::now() < deadline {
        let c = match &mut conn {
            Some(c) => c,
            None => {
                out.reconnects += 1;
                conn.insert(Conn::try_connect(addr).expect("connect to the gateway under load"))
            }
        };
        let t0 = Instant::now();
        if c.try_write(get_req("/hello").as_bytes()).is_err() {
            // The server closed this connection after its last response.
            out.closed += 1;
            conn = None;
            continue;
        }
        match c.try_read_response(false) {
            Ok(r) if r.status == 200 => {
                assert_eq!(r.text(), "Hello from wasm!\n", "200 body under load");
                out.ok += 1;
                if r.is_connection_close() {
                    conn = None;
                }
            }
            Ok(r) if r.status == 502 => {
                out.bad_gateway += 1;
                if r.is_connection_close() {
                    conn = None;
                }
            }
            Ok(r) => panic!(
                "unexpected status {} under load; body {:?}",
                r.status,
                r.text()
            ),
            Err(e) => {
                assert!(
                    !e.contains("timed out"),
                    "a request hung for {:?} (no response, no close): {e}",
                    t0.elapsed()
                );
                out.closed += 1;
                conn = None;
            }
        }
    }
    out
}

/// `threads` clients running [`hammer`] until `deadline`, all started
/// before this returns.
fn start_hammers(
    addr: std::net::SocketAddr,
    threads: usize,
    deadline: Instant,
) -> Vec<thread::JoinHandle<Outcomes>> {
    let start = Arc::new(Barrier::new(threads + 1));
    let clients = (0..threads)
        .map(|_| {
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                hammer(addr, deadline)
            })
        })
        .collect();
    start.wait();
    clients
}

/// What every client saw, summed.
fn join_hammers(clients: Vec<thread::JoinHandle<Outcomes>>) -> Outcomes {
    let mut total = Outcomes::default();
    for client in clients {
        let o = client.join().expect("client thread (see its panic above)");
        total.ok += o.ok;
        total.bad_gateway += o.bad_gateway;
        total.closed += o.closed;
        total.reconnects += o.reconnects;
    }
    total
}

#[test]
fn killed_worker_under_load_is_restarted_and_no_request_hangs() {
    let _cpu = cpu_heavy_test();
    let s = server();
    let before = wait_for_workers(s.pid(), 2, Duration::from_secs(5));
    assert_hello(&get(s.addr(), "/hello"), "hello before the load");

    const THREADS: usize = 4;
    let deadline = Instant::now() + Duration::from_secs(3);
    let clients = start_hammers(s.addr(), THREADS, deadline);
    thread::sleep(Duration::from_millis(1000));
    let victim = before[0];
    // SAFETY: kill(2) on a worker pid read from /proc a moment ago.
    let rc = unsafe { libc::kill(victim as libc::pid_t, libc::SIGKILL) };
    assert_eq!(rc, 0, "kill -9 worker {victim}");

    // A new worker replaces the killed one (watched while the load goes on).
    let mut now = Vec::new();
    let replaced = wait_until(Duration::from_secs(5), || {
        now = worker_pids(s.pid());
        now.len() == 2 && !now.contains(&victim)
    });

    let total = join_hammers(clients);
    eprintln!(
        "kill -9 of worker {victim} under load ({THREADS} clients, 3 s): {} x 200, {} x 502, \
         {} closed by the server, {} connections opened",
        total.ok, total.bad_gateway, total.closed, total.reconnects
    );
    assert!(total.ok > 0, "requests succeeded under load: {total:?}");
    let replaced = replaced.unwrap_or_else(|| {
        panic!(
            "the killed worker {victim} should be replaced within 5 s \
             (workers before {before:?}, now {now:?})"
        )
    });
    eprintln!(
        "workers before {before:?}, after {now:?}; replacement seen {} ms after the kill",
        replaced.as_millis()
    );
    assert!(
        now.contains(&before[1]),
        "the other worker {} is untouched: {now:?}",
        before[1]
    );
    assert!(
        !child_processes(s.pid()).iter().any(|&(_, st)| st == 'Z'),
        "the gateway reaped the killed worker: {:?}",
        child_processes(s.pid())
    );
    assert!(
        s.stderr_lines()
            .iter()
            .any(|l| l.contains(&format!("pid {victim}")) && l.contains("exited")),
        "the supervisor reports the worker's exit: {:?}",
        s.stderr_lines()
    );

    // Afterwards every request succeeds, on new and on kept-alive connections.
    let mut c = Conn::connect(s.addr());
    for i in 0..20 {
        c.write(get_req("/hello").as_bytes());
        assert_hello(
            &c.read_response(),
            &format!("keep-alive hello #{i} after restart"),
        );
        assert_hello(
            &get(s.addr(), "/hello"),
            &format!("hello #{i} after restart"),
        );
    }
}

#[test]
fn request_in_flight_on_a_killed_worker_ends_at_once_not_at_its_timeout() {
    let s = server();
    let workers = wait_for_workers(s.pid(), 2, Duration::from_secs(5));
    // Kill while a request spins (loop.wat, 3000 ms timeout).
    let mut c = Conn::connect(s.addr());
    c.write(get_req("/spin").as_bytes());
    thread::sleep(Duration::from_millis(500));
    // Whichever worker runs it: kill both.
    for &pid in &workers {
        // SAFETY: kill(2) on worker pids of our own gateway.
        let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        assert_eq!(rc, 0, "kill -9 worker {pid}");
    }
    let killed_at = Instant::now();
    let outcome = c.try_read_response(false);
    let took = killed_at.elapsed();
    eprintln!(
        "in-flight /spin (timeout 3000 ms) after kill -9 of its worker: {} after {} ms",
        match &outcome {
            Ok(r) => format!("{} {:?}", r.status, r.text().trim_end()),
            Err(e) => format!("no response ({e})"),
        },
        took.as_millis()
    );
    match &outcome {
        Ok(r) => assert_eq!(
            r.status,
            502,
            "in-flight request on a killed worker; body {:?}",
            r.text()
        ),
        Err(e) => assert!(
            !e.contains("timed out"),
            "in-flight request on a killed worker hung: {e}"
        ),
    }
    assert!(
        took < Duration::from_millis(1500),
        "the request ends soon after its worker dies, not at its 3000 ms timeout: {took:?}"
    );
    // Both workers come back and serve.
    let mut now = Vec::new();
    let back = wait_until(Duration::from_secs(5), || {
        now = worker_pids(s.pid());
        now.len() == 2 && now.iter().all(|pid| !workers.contains(pid))
    });
    assert!(
        back.is_some(),
        "two new workers within 5 s (killed {workers:?}, now {now:?})"
    );
    let ok = wait_until(Duration::from_secs(5), || {
        try_get(s.addr(), "/hello").is_ok_and(|r| r.status == 200)
    });
    assert!(
        ok.is_some(),
        "hello is served again after both workers restarted"
    );
    assert_hello(&get(s.addr(), "/hello"), "hello after the restarts");
}

#[test]
fn sigterm_stops_and_reaps_every_worker_and_exits_zero() {
    let mut s = server();
    let workers = wait_for_workers(s.pid(), 2, Duration::from_secs(5));
    assert_hello(&get(s.addr(), "/hello"), "hello before SIGTERM");

    let t0 = Instant::now();
    s.signal(libc::SIGTERM);
    let status = s
        .wait_exit(Duration::from_secs(10))
        .expect("gateway exits within 10 s of SIGTERM");
    eprintln!(
        "gateway exited {} ms after SIGTERM: {status}",
        t0.elapsed().as_millis()
    );
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");

    let mut left = Vec::new();
    let gone = wait_until(Duration::from_secs(5), || {
        left = workers
            .iter()
            .filter_map(|&pid| proc_state(pid).map(|st| (pid, st)))
            .collect();
        left.is_empty()
    });
    if gone.is_none() {
        // Orphans were reparented to this process (subreaper): clean up.
        for &(pid, _) in &left {
            // SAFETY: kill(2) on a leftover worker of our own gateway.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            thread::sleep(Duration::from_millis(50));
            reap_if_ours(pid);
        }
        panic!(
            "workers {workers:?} still exist 5 s after the gateway exited \
             ((pid, (state, parent))): {left:?}; state Z means the gateway did not reap them"
        );
    }
    eprintln!(
        "workers {workers:?} gone {} ms after SIGTERM",
        t0.elapsed().as_millis()
    );
}

#[test]
fn sigterm_lets_a_function_in_flight_finish_before_the_workers_stop() {
    let mut s = server();
    let workers = wait_for_workers(s.pid(), 2, Duration::from_secs(5));
    let mut c = Conn::connect(s.addr());
    let t0 = Instant::now();
    c.write(get_req("/spin-1s").as_bytes());
    thread::sleep(Duration::from_millis(300));
    s.signal(libc::SIGTERM);
    let r = c.read_response();
    eprintln!(
        "function in flight at SIGTERM: {} {:?} after {} ms",
        r.status,
        r.text().trim_end(),
        t0.elapsed().as_millis()
    );
    assert_eq!(
        r.status,
        504,
        "the spinning function runs to its 1000 ms timeout during the drain; body {:?}",
        r.text()
    );
    // Checked last, so that the drain and the workers' stop are checked too.
    let close_header = r.is_connection_close();
    assert!(
        c.is_closed_by_peer(Duration::from_secs(3)),
        "the connection is closed after the drained response"
    );
    let status = s
        .wait_exit(Duration::from_secs(10))
        .expect("gateway exits within 10 s of SIGTERM");
    assert_eq!(status.code(), Some(0), "exit status after the drain");
    let gone = wait_until(Duration::from_secs(5), || {
        workers.iter().all(|&pid| proc_state(pid).is_none())
    });
    if gone.is_none() {
        for &pid in &workers {
            // SAFETY: kill(2) on a leftover worker of our own gateway.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            thread::sleep(Duration::from_millis(50));
            reap_if_ours(pid);
        }
        panic!("workers {workers:?} still exist 5 s after the gateway exited");
    }
    assert!(
        close_header,
        "a response in flight at shutdown carries connection: close (README); headers {:?}",
        r.headers
    );
}

#[test]
fn sigkill_of_the_gateway_takes_the_workers_with_it() {
    let mut s = server();
    let workers = wait_for_workers(s.pid(), 2, Duration::from_secs(5));
    assert_hello(&get(s.addr(), "/hello"), "hello before SIGKILL");

    let t0 = Instant::now();
    s.signal(libc::SIGKILL);
    s.wait_exit(Duration::from_secs(5))
        .expect("gateway dies at once on SIGKILL");

    // A worker that died is reparented to us (subreaper) as a zombie: that
    // counts as exited, and we reap it.
    let mut states = Vec::new();
    let exited = wait_until(Duration::from_secs(5), || {
        states = workers.iter().map(|&pid| (pid, proc_state(pid))).collect();
        states.iter().all(|(pid, st)| match st {
            None => true,
            Some(('Z', _)) => {
                reap_if_ours(*pid);
                true
            }
            Some(_) => false,
        })
    });
    if exited.is_none() {
        for &pid in &workers {
            // SAFETY: kill(2) on a leftover worker of our own gateway.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            thread::sleep(Duration::from_millis(50));
            reap_if_ours(pid);
        }
        panic!(
            "workers should exit by themselves within 5 s of the gateway's SIGKILL; \
             (pid, (state, parent)): {states:?}"
        );
    }
    eprintln!(
        "workers {workers:?} exited {} ms after the gateway's SIGKILL",
        t0.elapsed().as_millis()
    );
    for &pid in &workers {
        reap_if_ours(pid);
    }
}

/// A kill storm: a worker killed every 500 ms for 8 s under load. Killed
/// workers had served requests, so each comes back at once and the pool is
/// never empty for long: clients see only 200, 502 (a request in flight on
/// a killed worker) or a closed connection — never a 503 from an empty
/// pool — and the pool is full again after the storm.
#[test]
fn a_kill_storm_under_load_never_empties_the_pool() {
    let _cpu = cpu_heavy_test();
    let s = server();
    wait_for_workers(s.pid(), 2, Duration::from_secs(5));
    assert_hello(&get(s.addr(), "/hello"), "hello before the storm");

    const THREADS: usize = 4;
    const STORM: Duration = Duration::from_secs(8);
    const KILL_EVERY: Duration = Duration::from_millis(500);
    let deadline = Instant::now() + STORM + Duration::from_millis(500);
    let clients = start_hammers(s.addr(), THREADS, deadline);
    let storm_end = Instant::now() + STORM;
    let mut kills = 0u32;
    let mut pick = 0usize;
    while Instant::now() < storm_end {
        thread::sleep(KILL_EVERY);
        let pids = worker_pids(s.pid());
        if pids.is_empty() {
            continue;
        }
        // Not strictly alternating: every third pick repeats a slot.
        pick = pick.wrapping_add(if kills % 3 == 2 { 0 } else { 1 });
        let victim = pids[pick % pids.len()];
        // SAFETY: kill(2) on a worker pid of our gateway read just now.
        if unsafe { libc::kill(victim as libc::pid_t, libc::SIGKILL) } == 0 {
            kills += 1;
        }
    }
    let ended = Instant::now();
    let full = wait_until(Duration::from_secs(10), || worker_pids(s.pid()).len() == 2);
    let total = join_hammers(clients);
    eprintln!(
        "kill storm: {kills} kills in {STORM:?} under {THREADS} clients: {} x 200, {} x 502, \
         {} closed, {} connections; pool full {:?} after the storm",
        total.ok,
        total.bad_gateway,
        total.closed,
        total.reconnects,
        full.map(|_| ended.elapsed())
    );
    assert!(kills >= 10, "the storm killed workers: {kills}");
    assert!(
        total.ok > 0,
        "requests succeeded during the storm: {total:?}"
    );
    assert!(full.is_some(), "the pool is full again after the storm");
    for i in 0..20 {
        assert_hello(
            &get(s.addr(), "/hello"),
            &format!("hello #{i} after the storm"),
        );
    }
}
