//! `max_concurrency`: a route runs at most that many requests at once (plus
//! a short queue); the rest get 503 naming the limit, and other routes are
//! not affected.

use crate::common::*;
use serde_json::json;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn max_concurrency_turns_excess_requests_away_with_503() {
    let slow = wasm_route(
        "loop.wat",
        json!({"timeout_ms": 1000, "max_concurrency": 1}),
    );
    let hello = wasm_route("hello.wat", json!(null));
    let fixed = static_route("static ok\n");
    let s = WorkerServer::start(
        &[
            ("GET:/slow", &slow),
            ("GET:/hello", &hello),
            ("GET:/static", &fixed),
        ],
        &examples_dir(),
        &[],
    );
    // Compile loop.wat first (the timed part measures admission, not compilation).
    let warm = get(s.addr(), "/slow");
    assert_eq!(warm.status, 504, "warm-up of /slow; body {:?}", warm.text());
    // The worker writes the response before the gateway hears of the
    // completion and frees the slot: give that a moment.
    thread::sleep(Duration::from_millis(200));

    const CLIENTS: usize = 4;
    let start = Arc::new(Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let start = start.clone();
            let addr = s.addr();
            thread::spawn(move || {
                let mut c = Conn::connect(addr);
                start.wait();
                let t0 = Instant::now();
                c.write(get_req("/slow").as_bytes());
                let r = c.read_response();
                (r, t0.elapsed())
            })
        })
        .collect();

    // Meanwhile the gateway serves the other routes.
    thread::sleep(Duration::from_millis(100));
    for i in 0..10 {
        let r = get(s.addr(), "/static");
        assert_eq!(r.status, 200, "static #{i} while /slow is full");
        let r = get(s.addr(), "/hello");
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "Hello from wasm!\n"),
            "hello #{i} while /slow is full"
        );
    }

    let results: Vec<(Response, Duration)> = clients
        .into_iter()
        .map(|c| c.join().expect("client thread (see its panic above)"))
        .collect();
    let mut statuses = Vec::new();
    for (r, took) in &results {
        eprintln!(
            "/slow: {} after {} ms: {:?}",
            r.status,
            took.as_millis(),
            r.text().trim_end()
        );
        statuses.push(r.status);
        match r.status {
            503 => {
                assert!(
                    r.text().contains("max_concurrency") && r.text().contains('1'),
                    "503 body names the limit: {:?}",
                    r.text()
                );
                assert!(
                    *took < Duration::from_millis(700),
                    "a 503 comes at once or after the 200 ms queue wait, not after {took:?}"
                );
            }
            504 => {}
            other => panic!(
                "concurrent /slow: expected 503 or 504, got {other}; body {:?}",
                r.text()
            ),
        }
    }
    let rejected = statuses.iter().filter(|&&st| st == 503).count();
    let timed_out = statuses.iter().filter(|&&st| st == 504).count();
    assert!(
        rejected >= 1,
        "at least one 503 with max_concurrency 1: {statuses:?}"
    );
    assert_eq!(
        timed_out, 1,
        "max_concurrency 1: one request runs to its 504 (a queued one waits at most \
         200 ms, less than the 1000 ms the running one takes): {statuses:?}"
    );

    // The slot is released: a lone request is admitted again.
    let r = get(s.addr(), "/slow");
    assert_eq!(
        r.status,
        504,
        "lone /slow after the burst; body {:?}",
        r.text()
    );
}
