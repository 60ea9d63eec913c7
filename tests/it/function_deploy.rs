//! Deploying functions while serving: a new wasm route inserted in SQLite
//! answers within moments, and a module changed on disk is used by the
//! following requests (in place, or renamed over the old file).

use crate::common::*;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

const OLD_BODY: &str = "Hello from wasm!\n";
/// Same length as "Hello from wasm!", so the data segment length holds.
const NEW_TEXT: &str = "Hello again wasm";

fn hello_wat() -> String {
    std::fs::read_to_string(examples_dir().join("hello.wat")).expect("read examples/wasm/hello.wat")
}

fn modified_hello_wat() -> String {
    let wat = hello_wat();
    assert!(
        wat.contains("Hello from wasm!"),
        "hello.wat holds the greeting"
    );
    wat.replace("Hello from wasm!", NEW_TEXT)
}

/// A functions dir holding a copy of hello.wat, and a server on it.
fn server_on_copy() -> (WorkerServer, tempfile::TempDir) {
    let functions = crate::common::tempdir().expect("tempdir for --functions-dir");
    std::fs::write(functions.path().join("hello.wat"), hello_wat())
        .expect("copy hello.wat into the functions dir");
    let hello = wasm_route("hello.wat", json!(null));
    let s = WorkerServer::start(&[("GET:/hello", &hello)], functions.path(), &[]);
    (s, functions)
}

/// Polls GET /hello until it answers the new greeting; every answer before
/// must be the old greeting, or (when `tolerate_errors`) an error status.
/// Returns the time from `t0`, and the numbers of errors and of old bodies
/// seen before the new one.
fn wait_for_new_body(
    addr: std::net::SocketAddr,
    t0: Instant,
    tolerate_errors: bool,
) -> (Duration, u32, u32) {
    let new_body = format!("{NEW_TEXT}\n");
    let mut errors = 0;
    let mut olds = 0;
    let mut last = String::new();
    let seen = wait_until(Duration::from_secs(5), || {
        let r = get(addr, "/hello");
        last = format!("{} {:?}", r.status, r.text());
        if r.status == 200 && r.text() == new_body {
            return true;
        }
        if r.status == 200 {
            assert_eq!(r.text(), OLD_BODY, "before the change is served");
            olds += 1;
        } else {
            assert!(
                tolerate_errors,
                "while the new module is picked up: status {} body {:?}",
                r.status,
                r.text()
            );
            errors += 1;
        }
        false
    });
    assert!(
        seen.is_some(),
        "the changed module should be served within 5 s; last answer {last}"
    );
    (t0.elapsed(), errors, olds)
}

/// GET `path` from `threads` keep-alive connections at once, `rounds` times
/// each: concurrent requests are spread over both workers (an idle core
/// sends everything to its first worker), so both run the module.
fn burst(addr: std::net::SocketAddr, path: &str, threads: usize, rounds: usize) -> Vec<Response> {
    let start = std::sync::Arc::new(std::sync::Barrier::new(threads));
    let clients: Vec<_> = (0..threads)
        .map(|_| {
            let start = start.clone();
            let path = path.to_string();
            std::thread::spawn(move || {
                let mut c = Conn::connect(addr);
                start.wait();
                (0..rounds)
                    .map(|_| {
                        c.write(get_req(&path).as_bytes());
                        c.read_response()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    clients
        .into_iter()
        .flat_map(|c| c.join().expect("burst client thread (see its panic above)"))
        .collect()
}

fn assert_old(addr: std::net::SocketAddr) {
    let r = get(addr, "/hello");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, OLD_BODY),
        "the original module is served first"
    );
}

#[test]
fn module_overwritten_in_place_is_picked_up() {
    let (s, functions) = server_on_copy();
    assert_old(s.addr());
    // Serve the old module on both workers before the change.
    for r in burst(s.addr(), "/hello", 8, 10) {
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, OLD_BODY),
            "before the change"
        );
    }
    let path = functions.path().join("hello.wat");
    let t0 = Instant::now();
    std::fs::write(&path, modified_hello_wat()).expect("overwrite hello.wat in place");
    // An in-place write is not atomic: a request that reads the file midway
    // may fail; the new module must win in the end.
    let (took, errors, olds) = wait_for_new_body(s.addr(), t0, true);
    eprintln!(
        "module overwritten in place: new body served {} ms after the write \
         ({errors} errors, {olds} old bodies before it)",
        took.as_millis()
    );
    // And it stays, on both workers.
    for r in burst(s.addr(), "/hello", 8, 10) {
        assert_eq!(
            (r.status, r.text()),
            (200, format!("{NEW_TEXT}\n")),
            "after the change"
        );
    }
}

fn rename_over(dir: &Path, name: &str, content: &str) {
    let tmp = dir.join(format!(".{name}.new"));
    std::fs::write(&tmp, content).expect("write the new module under a temporary name");
    std::fs::rename(&tmp, dir.join(name)).expect("rename the new module over the old one");
}

#[test]
fn module_renamed_over_the_old_file_is_picked_up_without_errors() {
    let (s, functions) = server_on_copy();
    assert_old(s.addr());
    for r in burst(s.addr(), "/hello", 8, 10) {
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, OLD_BODY),
            "before the change"
        );
    }
    let t0 = Instant::now();
    rename_over(functions.path(), "hello.wat", &modified_hello_wat());
    let (took, _, olds) = wait_for_new_body(s.addr(), t0, false);
    eprintln!(
        "module renamed over the old file: new body served {} ms after the rename \
         ({olds} old bodies before it)",
        took.as_millis()
    );
    // A worker looks at a module file at most every 10 ms, so requests in
    // that window may still get the old code; never an error.
    for r in burst(s.addr(), "/hello", 8, 10) {
        assert_eq!(
            (r.status, r.text()),
            (200, format!("{NEW_TEXT}\n")),
            "after the rename"
        );
    }
    // Back to the original text (same size as the changed one).
    let t1 = Instant::now();
    rename_over(functions.path(), "hello.wat", &hello_wat());
    let back = wait_until(Duration::from_secs(5), || {
        let r = get(s.addr(), "/hello");
        assert_eq!(r.status, 200, "while changing back; body {:?}", r.text());
        r.text() == OLD_BODY
    });
    assert!(
        back.is_some(),
        "the original module should be served again within 5 s"
    );
    eprintln!(
        "module renamed back: old body served {} ms after the rename",
        t1.elapsed().as_millis()
    );
}

#[test]
fn new_wasm_route_inserted_in_sqlite_answers_within_seconds() {
    let fixed = static_route("static ok\n");
    let s = WorkerServer::start(&[("GET:/static", &fixed)], &examples_dir(), &[]);
    assert_eq!(get(s.addr(), "/static").status, 200, "static route serves");
    assert_eq!(get(s.addr(), "/fresh").status, 404, "no route yet");

    // Cold: a module no request has compiled yet (empty cache dir).
    let t0 = Instant::now();
    insert_route(
        s.db_path(),
        "GET:/fresh",
        &wasm_route("hello.wat", json!(null)),
    );
    let mut last = String::new();
    let cold = wait_until(Duration::from_secs(5), || {
        let r = get(s.addr(), "/fresh");
        last = format!("{} {:?}", r.status, r.text());
        match r.status {
            404 => false,
            200 => {
                assert_eq!(r.text(), OLD_BODY, "body of the new route");
                true
            }
            other => panic!(
                "new wasm route: expected 404 then 200, got {other}: {:?}",
                r.text()
            ),
        }
    });
    assert!(
        cold.is_some(),
        "the new wasm route should answer 200 within 5 s; last answer {last}"
    );
    eprintln!(
        "deploy -> first response (module not compiled yet): {} ms",
        t0.elapsed().as_millis()
    );

    // Warm: another route on the same module, now compiled and cached.
    let t1 = Instant::now();
    insert_route(
        s.db_path(),
        "GET:/fresh-too",
        &wasm_route("hello.wat", json!({"env": {"ROUTE": "second"}})),
    );
    let warm = wait_until(Duration::from_secs(5), || {
        let r = get(s.addr(), "/fresh-too");
        assert!(
            r.status == 404 || r.status == 200,
            "second new route: status {} body {:?}",
            r.status,
            r.text()
        );
        r.status == 200 && r.text() == OLD_BODY
    });
    assert!(
        warm.is_some(),
        "the second new wasm route should answer within 5 s"
    );
    eprintln!(
        "deploy -> first response (module already compiled): {} ms",
        t1.elapsed().as_millis()
    );
}
