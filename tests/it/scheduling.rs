//! Metrics-driven scheduling: workers report metrics datagrams, the gateway
//! smooths and scores them, and dispatch avoids busy and silent workers.

use std::os::unix::net::UnixDatagram;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

fn workers_json(s: &Server) -> serde_json::Value {
    // Polled in loops: pace them, so the polling itself does not starve the
    // workers' metrics threads on a busy 2-core machine.
    thread::sleep(Duration::from_millis(50));
    let r = get(s.addr(), "/_/workers");
    assert_eq!(r.status, 200, "/_/workers: {}", r.text());
    r.json()
}

fn worker_field(json: &serde_json::Value, id: u64, field: &str) -> serde_json::Value {
    json["workers"]
        .as_array()
        .expect("workers array")
        .iter()
        .find(|w| w["id"].as_u64() == Some(id))
        .unwrap_or_else(|| panic!("worker {id} in {json}"))[field]
        .clone()
}

/// GET /spin on a thread of its own; joins to the response status.
fn spin_in_background(addr: std::net::SocketAddr) -> thread::JoinHandle<u16> {
    thread::spawn(move || {
        let mut c = Conn::connect(addr);
        c.stream()
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        c.write(get_req("/spin").as_bytes());
        c.read_response().status
    })
}

fn served(json: &serde_json::Value, id: u64) -> u64 {
    worker_field(json, id, "requests_served")
        .as_u64()
        .unwrap_or(0)
}

fn metrics_socket(s: &Server) -> std::path::PathBuf {
    s.db_path().with_extension("metrics.sock")
}

#[test]
fn workers_endpoint_reports_every_worker_with_raw_and_smoothed_figures() {
    let s = WorkerServer::start(
        &[(
            "GET:/hello",
            &wasm_route("hello.wat", serde_json::json!({})),
        )],
        &examples_dir(),
        &["--metrics-interval-ms", "100"],
    );
    for _ in 0..10 {
        assert_eq!(get(s.addr(), "/hello").status, 200);
    }
    let reported = wait_until(Duration::from_secs(15), || {
        let json = workers_json(&s);
        let both_reported = (0..2).all(|id| worker_field(&json, id, "score").is_number());
        both_reported && served(&json, 0) + served(&json, 1) >= 10
    });
    assert!(
        reported.is_some(),
        "served counts never reached 10: {}",
        workers_json(&s)
    );
    let json = workers_json(&s);
    for id in 0..2 {
        assert_eq!(worker_field(&json, id, "state"), "running", "{json}");
        assert!(worker_field(&json, id, "pid").as_u64().is_some(), "{json}");
        assert!(
            worker_field(&json, id, "score").as_f64().is_some(),
            "{json}"
        );
        assert!(
            worker_field(&json, id, "raw")["mem"]
                .as_f64()
                .unwrap_or(0.0)
                > 0.0,
            "{json}"
        );
        assert!(
            worker_field(&json, id, "smoothed")["cpu"].is_number(),
            "{json}"
        );
        assert_eq!(worker_field(&json, id, "restarts"), 0, "{json}");
    }
}

#[test]
fn short_requests_avoid_a_worker_kept_busy_by_a_cpu_heavy_function() {
    let _cpu = cpu_heavy_test();
    let s = WorkerServer::start(
        &[
            (
                "GET:/hello",
                &wasm_route("hello.wat", serde_json::json!({})),
            ),
            (
                "GET:/spin",
                &wasm_route("loop.wat", serde_json::json!({"timeout_ms": 8000})),
            ),
        ],
        &examples_dir(),
        &["--worker-threads", "2"],
    );
    let addr = s.addr();
    // One spinning request keeps one worker's CPU busy for 6 s.
    let spinner = spin_in_background(addr);
    // Let the EWMA see it: a few 500 ms intervals. The busy worker is the
    // one that reports the spin in flight (a worker's first report can also
    // show a burst of start-up CPU, so CPU alone does not say which).
    let mut busy_id = None;
    let busy = wait_until(Duration::from_secs(6), || {
        let json = workers_json(&s);
        busy_id = (0..2).find(|&id| {
            let raw_in_flight = worker_field(&json, id, "raw")["in_flight"]
                .as_u64()
                .unwrap_or(0);
            let cpu = worker_field(&json, id, "smoothed")["cpu"]
                .as_f64()
                .unwrap_or(0.0);
            raw_in_flight >= 1 && cpu > 0.5
        });
        busy_id.is_some()
    });
    assert!(
        busy.is_some(),
        "no worker looked busy: {}",
        workers_json(&s)
    );
    let busy_id = busy_id.expect("found above");
    let before = workers_json(&s);
    let idle_id = 1 - busy_id;

    let started = Instant::now();
    let sent = 50;
    for _ in 0..sent {
        let r = get(addr, "/hello");
        assert_eq!(r.status, 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the spin must outlast the stream"
    );
    // Wait for both workers' next datagrams so the counts are current.
    let mut after = workers_json(&s);
    let settled = wait_until(Duration::from_secs(3), || {
        after = workers_json(&s);
        served(&after, 0) + served(&after, 1) >= served(&before, 0) + served(&before, 1) + sent
    });
    assert!(
        settled.is_some(),
        "counts did not settle: before {before} after {after}"
    );
    let to_idle = served(&after, idle_id) - served(&before, idle_id);
    let to_busy = served(&after, busy_id) - served(&before, busy_id);
    eprintln!("short requests: {to_idle} to the idle worker, {to_busy} to the busy one");
    assert!(
        to_idle * 100 >= (to_idle + to_busy) * 80,
        "at least 80 % must go to the idle worker: idle {to_idle}, busy {to_busy}"
    );
    assert_eq!(spinner.join().expect("spinner thread"), 504);
}

#[test]
fn a_stopped_worker_gets_no_new_requests_and_is_used_again_after_sigcont() {
    let s = WorkerServer::start(
        &[(
            "GET:/hello",
            &wasm_route("hello.wat", serde_json::json!({"timeout_ms": 2000})),
        )],
        &examples_dir(),
        &[],
    );
    let pids = wait_for_workers(s.pid(), 2, Duration::from_secs(5));
    let json = workers_json(&s);
    let stopped_id = 0;
    let stopped_pid = worker_field(&json, stopped_id, "pid")
        .as_u64()
        .expect("pid") as u32;
    assert!(pids.contains(&stopped_pid), "{pids:?} {json}");
    // SAFETY: plain kill(2) on a child process of the server under test.
    unsafe { libc::kill(stopped_pid as i32, libc::SIGSTOP) };

    // Within about two seconds it is marked stale and skipped.
    let t0 = Instant::now();
    let stale = wait_until(Duration::from_secs(4), || {
        worker_field(&workers_json(&s), stopped_id, "state") == "stale"
    });
    assert!(
        stale.is_some(),
        "stopped worker never stale: {}",
        workers_json(&s)
    );
    eprintln!(
        "stopped worker skipped after {} ms",
        t0.elapsed().as_millis()
    );
    // Staleness is a matter of time on each core: the core that answered
    // may see it a few milliseconds before the other does. A request sent
    // to the stopped worker before that would wait for its timeout.
    thread::sleep(Duration::from_millis(100));
    for i in 0..40 {
        let r = get(s.addr(), "/hello");
        assert_eq!(r.status, 200, "request {i} while a worker is stopped");
    }

    // SAFETY: as above.
    unsafe { libc::kill(stopped_pid as i32, libc::SIGCONT) };
    let fresh = wait_until(Duration::from_secs(4), || {
        worker_field(&workers_json(&s), stopped_id, "state") == "running"
    });
    assert!(
        fresh.is_some(),
        "worker not running after SIGCONT: {}",
        workers_json(&s)
    );
    let before = served(&workers_json(&s), stopped_id);
    let used_again = wait_until(Duration::from_secs(5), || {
        for _ in 0..10 {
            assert_eq!(get(s.addr(), "/hello").status, 200);
        }
        served(&workers_json(&s), stopped_id) > before
    });
    assert!(
        used_again.is_some(),
        "resumed worker got no traffic: {}",
        workers_json(&s)
    );
}

#[test]
fn malformed_and_foreign_datagrams_are_counted_and_ignored() {
    let s = WorkerServer::start(
        &[(
            "GET:/hello",
            &wasm_route("hello.wat", serde_json::json!({})),
        )],
        &examples_dir(),
        &["--metrics-interval-ms", "100"],
    );
    let socket = UnixDatagram::unbound().expect("datagram socket");
    let path = metrics_socket(&s);
    let before = workers_json(&s)["datagrams_rejected"].as_u64().unwrap_or(0);
    socket.send_to(b"garbage", &path).expect("send garbage");
    socket.send_to(&[0u8; 64], &path).expect("send zeros");
    // Right magic and version, but a worker id that does not exist.
    let mut foreign = [0u8; 64];
    foreign[0..4].copy_from_slice(b"CFM1");
    foreign[4..6].copy_from_slice(&1u16.to_le_bytes());
    foreign[8..12].copy_from_slice(&99u32.to_le_bytes());
    socket.send_to(&foreign, &path).expect("send foreign");
    socket
        .send_to(&[0xffu8; 4096], &path)
        .expect("send oversized");
    let counted = wait_until(Duration::from_secs(3), || {
        workers_json(&s)["datagrams_rejected"].as_u64().unwrap_or(0) >= before + 4
    });
    assert!(
        counted.is_some(),
        "rejections not counted: {}",
        workers_json(&s)
    );
    for _ in 0..10 {
        assert_eq!(get(s.addr(), "/hello").status, 200);
    }
    let json = workers_json(&s);
    for id in 0..2 {
        assert_eq!(worker_field(&json, id, "state"), "running", "{json}");
    }
}

#[test]
fn a_busy_language_host_counts_as_its_workers_load() {
    let _cpu = cpu_heavy_test();
    // The worker itself only waits on the host's pipe; the CPU is the
    // python host's, and it must show in the worker's figures.
    let python_examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python");
    let s = WorkerServer::start(
        &[(
            "GET:/spin",
            r#"{"runtime":"python","module":"spin.py","timeout_ms":8000}"#,
        )],
        &python_examples,
        &["--metrics-interval-ms", "100"],
    );
    let spinner = spin_in_background(s.addr());
    let busy = wait_until(Duration::from_secs(6), || {
        let json = workers_json(&s);
        (0..2).any(|id| {
            let raw = worker_field(&json, id, "raw");
            raw["in_flight"].as_u64().unwrap_or(0) >= 1 && raw["cpu"].as_f64().unwrap_or(0.0) > 0.5
        })
    });
    assert!(
        busy.is_some(),
        "the worker running the spinning host reports its CPU: {}",
        workers_json(&s)
    );
    assert_eq!(spinner.join().expect("spinner"), 504);
}
