//! Functions that fail: a trap, an endless loop, a memory bomb and invalid
//! CGI output each get their own status (502 / 504) with a body that says
//! what went wrong, and the workers and every other route carry on.

use crate::common::*;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const LOOP_TIMEOUT_MS: u64 = 300;

fn server() -> WorkerServer {
    let hello = wasm_route("hello.wat", json!(null));
    let trap = wasm_route("trap.wat", json!(null));
    let spin = wasm_route("loop.wat", json!({"timeout_ms": LOOP_TIMEOUT_MS}));
    let bomb = wasm_route("membomb.wat", json!({"memory_mb": 16}));
    let bad = wasm_route("bad_cgi.wat", json!(null));
    let missing = wasm_route("no_such_module.wat", json!(null));
    WorkerServer::start(
        &[
            ("GET:/hello", &hello),
            ("GET:/trap", &trap),
            ("GET:/loop", &spin),
            ("GET:/membomb", &bomb),
            ("GET:/bad-cgi", &bad),
            ("GET:/missing", &missing),
        ],
        &examples_dir(),
        &[],
    )
}

fn assert_hello(r: &Response, what: &str) {
    assert_eq!(r.status, 200, "{what}: status; body {:?}", r.text());
    assert_eq!(r.text(), "Hello from wasm!\n", "{what}: body");
}

#[test]
fn trap_gets_502_naming_the_trap_and_the_next_request_succeeds() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    c.write(get_req("/trap").as_bytes());
    let r = c.read_response();
    assert_eq!(r.status, 502, "trap.wat; body {:?}", r.text());
    assert!(
        !r.body.is_empty(),
        "502 has a body that says what went wrong"
    );
    assert!(
        r.text().to_ascii_lowercase().contains("trap"),
        "502 body names the trap: {:?}",
        r.text()
    );
    eprintln!("trap response: {:?}", r.text().trim_end());
    // Same connection if the server kept it, then a new connection anyway.
    if !r.is_connection_close() {
        c.write(get_req("/hello").as_bytes());
        assert_hello(
            &c.read_response(),
            "hello on the connection that got the 502",
        );
    }
    assert_hello(&get(s.addr(), "/hello"), "hello on a new connection");
    // Traps again and again do not wear the workers out.
    let workers = worker_pids(s.pid());
    for i in 0..20 {
        let r = get(s.addr(), "/trap");
        assert_eq!(r.status, 502, "trap #{i}");
    }
    assert_hello(&get(s.addr(), "/hello"), "hello after 20 traps");
    assert_eq!(worker_pids(s.pid()), workers, "traps kill no worker");
}

#[test]
fn endless_loop_gets_504_after_its_timeout_while_others_are_served() {
    // It spins a worker thread on purpose and counts what others get
    // served meanwhile: not beside another test that loads the CPUs.
    let _cpu = cpu_heavy_test();
    let s = server();
    // Compile and warm the loop module, so the timed request measures the
    // timeout and not the first compilation.
    let warm = get(s.addr(), "/loop");
    assert_eq!(warm.status, 504, "warm-up loop; body {:?}", warm.text());

    let spinning = Arc::new(AtomicBool::new(true));
    let addr = s.addr();
    let others = {
        let spinning = spinning.clone();
        thread::spawn(move || {
            let mut served = 0u32;
            let mut c = Conn::connect(addr);
            while spinning.load(Ordering::Acquire) && served < 10_000 {
                c.write(get_req("/hello").as_bytes());
                let r = c.read_response();
                assert_hello(&r, &format!("hello #{served} while the loop spins"));
                served += 1;
                thread::sleep(Duration::from_millis(5));
            }
            served
        })
    };

    let mut c = Conn::connect(s.addr());
    let t0 = Instant::now();
    c.write(get_req("/loop").as_bytes());
    let r = c.read_response();
    let elapsed = t0.elapsed();
    spinning.store(false, Ordering::Release);
    let served = others.join().expect("hello client thread");
    eprintln!(
        "504 arrived {} ms after the request (timeout_ms {LOOP_TIMEOUT_MS}, +{} ms); \
         {served} hello requests served meanwhile",
        elapsed.as_millis(),
        elapsed.as_millis() as i128 - LOOP_TIMEOUT_MS as i128
    );
    assert_eq!(r.status, 504, "loop.wat; body {:?}", r.text());
    assert!(
        r.text().contains(&LOOP_TIMEOUT_MS.to_string()),
        "504 body names the timeout: {:?}",
        r.text()
    );
    assert!(
        elapsed >= Duration::from_millis(LOOP_TIMEOUT_MS),
        "504 came before the timeout: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(LOOP_TIMEOUT_MS + 1000),
        "504 should arrive before timeout + 1000 ms (target +200 ms): {elapsed:?}"
    );
    assert!(
        served >= 5,
        "other clients were served while the loop spun: {served}"
    );
    // The connection and the worker thread are free again.
    if !r.is_connection_close() {
        c.write(get_req("/hello").as_bytes());
        assert_hello(
            &c.read_response(),
            "hello on the connection that got the 504",
        );
    }
    assert_hello(&get(s.addr(), "/hello"), "hello after the 504");
}

#[test]
fn memory_bomb_gets_502_about_memory_and_the_worker_survives() {
    let s = server();
    let before = wait_for_workers(s.pid(), 2, Duration::from_secs(5));
    assert_hello(&get(s.addr(), "/hello"), "hello before the bomb");
    for i in 0..3 {
        let r = get(s.addr(), "/membomb");
        assert_eq!(r.status, 502, "membomb.wat #{i}; body {:?}", r.text());
        assert!(
            r.text().to_ascii_lowercase().contains("memory"),
            "502 body mentions memory: {:?}",
            r.text()
        );
        if i == 0 {
            eprintln!("memory bomb response: {:?}", r.text().trim_end());
        }
    }
    assert_hello(&get(s.addr(), "/hello"), "hello after the bombs");
    assert_eq!(
        worker_pids(s.pid()),
        before,
        "the same worker processes run after the memory bombs"
    );
    let exits: Vec<String> = s
        .stderr_lines()
        .into_iter()
        .filter(|l| l.contains("exited"))
        .collect();
    assert!(exits.is_empty(), "no worker exited: {exits:?}");
}

#[test]
fn invalid_cgi_output_gets_502() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    c.write(get_req("/bad-cgi").as_bytes());
    let r = c.read_response();
    assert_eq!(r.status, 502, "bad_cgi.wat; body {:?}", r.text());
    assert!(
        r.text().to_ascii_lowercase().contains("cgi"),
        "502 body says the CGI output is invalid: {:?}",
        r.text()
    );
    eprintln!("bad CGI response: {:?}", r.text().trim_end());
    if !r.is_connection_close() {
        c.write(get_req("/hello").as_bytes());
        assert_hello(
            &c.read_response(),
            "hello on the connection that got the 502",
        );
    }
    assert_hello(&get(s.addr(), "/hello"), "hello on a new connection");
}

#[test]
fn route_to_a_missing_module_gets_502_naming_it() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    c.write(get_req("/missing").as_bytes());
    let r = c.read_response();
    assert_eq!(r.status, 502, "missing module; body {:?}", r.text());
    assert!(
        r.text().contains("no_such_module.wat"),
        "502 body names the module: {:?}",
        r.text()
    );
    if !r.is_connection_close() {
        c.write(get_req("/hello").as_bytes());
        assert_hello(
            &c.read_response(),
            "hello on the connection that got the 502",
        );
    }
    assert_hello(&get(s.addr(), "/hello"), "hello on a new connection");
}

#[test]
fn module_that_does_not_compile_gets_502_and_others_carry_on() {
    let functions = crate::common::tempdir().expect("tempdir for --functions-dir");
    std::fs::write(
        functions.path().join("broken.wat"),
        "(module (func $f (i32.add)))",
    )
    .expect("write broken.wat");
    std::fs::copy(
        examples_dir().join("hello.wat"),
        functions.path().join("hello.wat"),
    )
    .expect("copy hello.wat");
    let broken = wasm_route("broken.wat", json!(null));
    let hello = wasm_route("hello.wat", json!(null));
    let s = WorkerServer::start(
        &[("GET:/broken", &broken), ("GET:/hello", &hello)],
        functions.path(),
        &[],
    );
    for i in 0..3 {
        let r = get(s.addr(), "/broken");
        assert_eq!(r.status, 502, "broken module #{i}; body {:?}", r.text());
        assert!(
            r.text().contains("broken.wat"),
            "502 body names the module: {:?}",
            r.text()
        );
        if i == 0 {
            eprintln!("broken module response: {:?}", r.text().trim_end());
        }
    }
    assert_hello(&get(s.addr(), "/hello"), "hello next to a broken module");
}

#[test]
fn pipelined_trap_between_two_hellos_keeps_the_order() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    let batch = format!(
        "{}{}{}",
        get_req("/hello"),
        get_req("/trap"),
        get_req("/hello")
    );
    c.write(batch.as_bytes());
    assert_hello(&c.read_response(), "pipelined #0");
    let r = c.read_response();
    assert_eq!(r.status, 502, "pipelined #1 (trap); body {:?}", r.text());
    if r.is_connection_close() {
        assert!(
            c.is_closed_by_peer(std::time::Duration::from_secs(3)),
            "connection: close is followed by a close"
        );
    } else {
        assert_hello(&c.read_response(), "pipelined #2 after the trap");
    }
}

#[test]
fn client_gone_while_its_function_runs_harms_nothing() {
    let s = server();
    let workers = wait_for_workers(s.pid(), 2, Duration::from_secs(5));
    for _ in 0..4 {
        let mut c = Conn::connect(s.addr());
        c.write(get_req("/loop").as_bytes());
        drop(c);
    }
    let hello = get(s.addr(), "/hello");
    assert_hello(&hello, "hello while the abandoned loops spin");
    thread::sleep(Duration::from_millis(LOOP_TIMEOUT_MS + 300));
    for i in 0..10 {
        assert_hello(&get(s.addr(), "/hello"), &format!("hello #{i} afterwards"));
    }
    assert_eq!(
        worker_pids(s.pid()),
        workers,
        "writing to a closed client kills no worker"
    );
}
