//! Long waits never stop a core from accepting: while functions sleep past
//! the pool's queue limit, loop until their timeout kills them, slow
//! clients hold half-sent heads open and a worker is stopped with SIGSTOP,
//! every new connection is still answered by the core it lands on, and
//! every waiting request ends with a status. (A dispatch too large for its
//! channel cannot come from a row any more: descriptors are bounded when
//! the row is read, and the worker's answer to a cut one is unit-tested
//! in the protocol.)

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::functions::{FunctionServer, Lang};
use crate::common::*;

/// The load stops by itself after this.
const LOAD_S: Duration = Duration::from_secs(4);
const SLOW_CLIENTS: usize = 6;
const SPIN_CLIENTS: usize = 3;
const SLOW_HEADS: usize = 16;
const PROBES: usize = 120;

/// One request on a fresh connection; a status, or what went wrong.
fn status_of(addr: std::net::SocketAddr, path: &str) -> Result<u16, String> {
    let mut conn = Conn::try_connect(addr).map_err(|e| format!("connect: {e}"))?;
    conn.try_write(
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| format!("write: {e}"))?;
    conn.try_read_response(false).map(|r| r.status)
}

#[test]
fn long_waits_on_the_cores_never_stop_them_answering_new_connections() {
    let _turn = cpu_heavy_test();
    let s = FunctionServer::start_with(Lang::Python, &["--header-timeout-ms", "1000"]);
    let addr = s.addr();
    assert_eq!(get(addr, "/hello").status, 200);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let running = {
        let stop = stop.clone();
        move || !stop.load(Ordering::Acquire) && started.elapsed() < LOAD_S
    };

    // Sleepers past the queue limit (one host answers one at a time) and
    // loops past their timeout: each ends with a status, never a hang.
    let mut waiters = Vec::new();
    for (path, clients) in [("/slow?ms=1500", SLOW_CLIENTS), ("/spin", SPIN_CLIENTS)] {
        for _ in 0..clients {
            let running = running.clone();
            waiters.push(thread::spawn(move || {
                let mut seen: BTreeMap<String, u32> = BTreeMap::new();
                while running() {
                    let key = match status_of(addr, path) {
                        Ok(status) => status.to_string(),
                        Err(error) => error,
                    };
                    *seen.entry(key).or_default() += 1;
                }
                (path, seen)
            }));
        }
    }
    // Heads that never finish: each holds a connection until the header
    // timeout closes it, then comes back.
    let slow_heads = {
        let running = running.clone();
        thread::spawn(move || {
            let mut held = Vec::new();
            while running() {
                held.retain_mut(|conn: &mut Conn| !conn.is_closed_by_peer(Duration::ZERO));
                while held.len() < SLOW_HEADS {
                    match Conn::try_connect(addr) {
                        Ok(mut conn) => {
                            let _ = conn.try_write(b"GET /hello HTTP/1.1\r\nHost:");
                            held.push(conn);
                        }
                        Err(_) => break,
                    }
                }
                thread::sleep(Duration::from_millis(20));
            }
        })
    };
    // A worker stopped for a second in the middle of it.
    let pids = wait_for_workers(s.pid(), 2, Duration::from_secs(5));
    thread::sleep(Duration::from_millis(500));
    // SAFETY: plain kill(2) on a worker process of the server under test.
    unsafe { libc::kill(pids[0] as i32, libc::SIGSTOP) };
    let stopped_at = Instant::now();

    // Meanwhile every new connection is answered by its core.
    let mut cores = BTreeSet::new();
    let mut continued = false;
    for i in 0..PROBES {
        if !continued && stopped_at.elapsed() >= Duration::from_secs(1) {
            // SAFETY: as above.
            unsafe { libc::kill(pids[0] as i32, libc::SIGCONT) };
            continued = true;
        }
        let response = get(addr, "/_/workers");
        assert_eq!(response.status, 200, "probe {i}: {}", response.text());
        cores.insert(response.json()["core"].as_u64().expect("core index"));
        thread::sleep(Duration::from_millis(10));
    }
    if !continued {
        // SAFETY: as above.
        unsafe { libc::kill(pids[0] as i32, libc::SIGCONT) };
    }
    assert_eq!(
        cores,
        BTreeSet::from([0, 1]),
        "both cores answer new connections"
    );

    stop.store(true, Ordering::Release);
    slow_heads.join().expect("slow heads");
    for waiter in waiters {
        let (path, seen) = waiter.join().expect("waiter");
        assert!(!seen.is_empty(), "{path}: no request ended");
        for (outcome, count) in &seen {
            assert!(
                ["200", "502", "503", "504"].contains(&outcome.as_str()),
                "{path}: {count} × {outcome:?} (all: {seen:?})"
            );
        }
    }
    // And the functions serve as before once the waits are over.
    assert!(
        wait_until(Duration::from_secs(10), || get(addr, "/hello").status
            == 200)
        .is_some(),
        "the pool did not serve again"
    );
}

/// The workers stopped with SIGSTOP while a call of theirs runs: past the
/// route's timeout and the core's slack the core itself answers 504 (the
/// worker wrote nothing), on a kept-alive connection the same worker
/// answered before, so the core's count of what the socket carried must
/// include the worker's earlier answer.
#[test]
fn a_stopped_workers_call_gets_a_504_from_the_core_on_a_kept_alive_connection() {
    let s = FunctionServer::start(Lang::Python);
    let pids = wait_for_workers(s.pid(), 2, Duration::from_secs(5));
    let mut conn = Conn::connect(s.addr());
    conn.write(get_req("/hello").as_bytes());
    let first = conn.read_response();
    assert_eq!(first.status, 200, "{}", first.text());
    // The worker writes the answer before it reports the call done: until
    // the core has the report it does not read the next request, and a
    // worker stopped in between would hold /spin behind /hello's own
    // deadline. The stats count a call once the core has its report.
    let reported = wait_until(Duration::from_secs(10), || {
        let stats = get(s.addr(), "/_/api/v1/stats?window=5m").json();
        stats["functions"].as_array().is_some_and(|functions| {
            functions.iter().any(|f| {
                f["function"] == "GET:/hello"
                    && f["count"].as_u64() == Some(1)
                    && f["in_flight"].as_u64() == Some(0)
            })
        })
    });
    assert!(reported.is_some(), "the core never counted the first call");
    let signal_workers = |signal| {
        for pid in &pids {
            // SAFETY: plain kill(2) on a worker process of the server under test.
            unsafe { libc::kill(*pid as i32, signal) };
        }
    };
    signal_workers(libc::SIGSTOP);
    conn.write(get_req("/spin").as_bytes());
    // The answer is due 1.5 s after the call (timeout + the core's slack);
    // a machine busy with every other test once took past the usual 5 s.
    conn.stream()
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    let stuck = conn.try_read_response(false);
    signal_workers(libc::SIGCONT);
    let stuck = stuck.unwrap_or_else(|e| panic!("no answer to the stuck call: {e}"));
    assert_eq!(stuck.status, 504, "{}", stuck.text());
    assert!(stuck.text().contains("did not answer"), "{}", stuck.text());
    assert!(stuck.is_connection_close(), "the core closes after it");
    assert!(
        conn.is_closed_by_peer(Duration::from_secs(5)),
        "nothing of the worker's late answer follows the 504"
    );
    assert!(
        wait_until(Duration::from_secs(10), || get(s.addr(), "/hello").status
            == 200)
        .is_some(),
        "the worker serves again after SIGCONT"
    );
}
