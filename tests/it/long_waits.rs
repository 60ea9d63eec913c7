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
