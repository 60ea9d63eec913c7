//! Descriptors stay flat: a function call passes the client's socket (and
//! a large body's memfd) to a worker on every request, so a descriptor kept
//! by mistake on either side would grow with the request count. After a
//! few thousand calls, with keep-alive and without, on the wasm and native
//! runtimes and the static route, the gateway and every worker hold as
//! many descriptors as before them. (`scripts/fd-flat.py` does the same
//! over 100,000 requests against the release build.)

use std::thread;
use std::time::Duration;

use crate::common::functions::{compile_native, example_dir};
use crate::common::*;

const CONNECTIONS: usize = 4;
const CALLS_PER_CONNECTION: usize = 300;
const CLOSED_CALLS: usize = 200;
const LARGE_BODY_CALLS: usize = 50;

/// Open descriptors of each process: the gateway's, then its workers'.
fn descriptor_counts(gateway: u32) -> Vec<(u32, usize)> {
    std::iter::once(gateway)
        .chain(worker_pids(gateway))
        .map(|pid| {
            let count = std::fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|entries| entries.count())
                .unwrap_or(0);
            (pid, count)
        })
        .collect()
}

#[test]
fn descriptors_stay_flat_over_thousands_of_calls() {
    let functions = tempdir().expect("functions tempdir");
    compile_native(
        &example_dir("native").join("hello.c"),
        &functions.path().join("hello.so"),
        &[],
    );
    for module in ["hello.wat", "echo.wat"] {
        std::fs::copy(examples_dir().join(module), functions.path().join(module))
            .expect("copy module");
    }
    let hello = static_route("static hello\n");
    let s = WorkerServer::start(
        &[
            ("GET:/static", &hello),
            (
                "GET:/wasm",
                &wasm_route("hello.wat", serde_json::json!(null)),
            ),
            (
                "POST:/echo",
                &wasm_route("echo.wat", serde_json::json!(null)),
            ),
            ("GET:/native", r#"{"runtime":"native","module":"hello.so"}"#),
        ],
        functions.path(),
        &[],
    );
    wait_for_workers(s.pid(), 2, Duration::from_secs(10));
    let large = vec![b'x'; 100 * 1024];
    let post_large = |conn: &mut Conn| {
        let mut request = format!(
            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            large.len()
        )
        .into_bytes();
        request.extend_from_slice(&large);
        conn.write(&request);
        conn.read_response()
    };
    // Warm-up: every route once on each worker (modules compiled,
    // libraries loaded, log files opened).
    for _ in 0..8 {
        for path in ["/static", "/wasm", "/native"] {
            assert_eq!(get(s.addr(), path).status, 200, "warm-up {path}");
        }
        assert_eq!(post_large(&mut Conn::connect(s.addr())).status, 200);
    }
    thread::sleep(Duration::from_millis(300));
    let before = descriptor_counts(s.pid());

    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|client| {
            let addr = s.addr();
            thread::spawn(move || {
                let mut conn = Conn::connect(addr);
                for call in 0..CALLS_PER_CONNECTION {
                    let path = ["/static", "/wasm", "/native"][(client + call) % 3];
                    conn.write(get_req(path).as_bytes());
                    let r = conn.read_response();
                    assert_eq!(r.status, 200, "kept-alive call {call} of {path}");
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("keep-alive client");
    }
    for call in 0..CLOSED_CALLS {
        let path = ["/wasm", "/native"][call % 2];
        assert_eq!(get(s.addr(), path).status, 200, "call {call} of {path}");
    }
    let mut conn = Conn::connect(s.addr());
    for call in 0..LARGE_BODY_CALLS {
        let r = post_large(&mut conn);
        assert_eq!(
            (r.status, r.body.len()),
            (200, large.len()),
            "large body {call}"
        );
    }
    drop(conn);

    let mut after = Vec::new();
    let flat = wait_until(Duration::from_secs(5), || {
        after = descriptor_counts(s.pid());
        after == before
    });
    assert!(
        flat.is_some(),
        "descriptors per process (pid, count) before {before:?}, after {after:?}"
    );
}
