//! Native functions: shared libraries with the C ABI of
//! `runtimes/native/corefn.h`, loaded once per worker, reloaded when the
//! file changes without disturbing calls running on the old copy; a crash
//! costs one worker, never the gateway.

use crate::common::functions::*;
use crate::common::*;
use std::thread;
use std::time::Duration;

fn server() -> FunctionServer {
    FunctionServer::start(Lang::Native)
}

contract_tests! {
    Lang::Native => {
        hello,
        json_echo,
        status_and_headers,
        handler_error("native function returned 7", &[]),
        timeout_replaces_host,
        concurrent_requests,
        file_change,
        large_body_echo,
    }
}

#[test]
fn a_reload_lets_the_call_running_on_the_old_copy_finish_on_it() {
    let s = server();
    assert_eq!(get(s.addr(), "/changing?ms=0").text(), "v1\n");
    let slow = {
        let addr = s.addr();
        thread::spawn(move || get(addr, "/changing?ms=1500"))
    };
    thread::sleep(Duration::from_millis(300));
    s.write_changing("v2");
    let mut last = String::new();
    let reloaded = wait_until(Duration::from_secs(5), || {
        last = get(s.addr(), "/changing?ms=0").text();
        last == "v2\n"
    });
    assert!(
        reloaded.is_some(),
        "new calls run the new copy; last {last:?}"
    );
    let r = slow.join().expect("slow client");
    assert_eq!(
        r.status,
        200,
        "the slow call survived the reload: {:?}",
        r.text()
    );
    assert_eq!(r.text(), "v1\n", "and finished on the copy it started on");
    assert_eq!(get(s.addr(), "/changing?ms=0").text(), "v2\n");
}

#[test]
fn a_segfault_is_502_and_the_worker_is_replaced() {
    let s = server();
    let before = wait_for_workers(s.pid(), 2, Duration::from_secs(10));
    let r = get(s.addr(), "/segv");
    assert_eq!(r.status, 502, "body {:?}", r.text());
    let mut after = Vec::new();
    let replaced = wait_until(Duration::from_secs(10), || {
        after = worker_pids(s.pid());
        after.len() == 2 && after != before
    });
    assert!(
        replaced.is_some(),
        "the crashed worker was replaced: {before:?} → {after:?}"
    );
    for _ in 0..10 {
        assert_eq!(get(s.addr(), "/hello").text(), "Hello from C!\n");
    }
}

#[test]
fn a_missing_symbol_is_502_naming_it() {
    let s = server();
    insert_route(
        s.db_path(),
        "GET:/nosym",
        r#"{"runtime":"native","module":"hello.so","handler":"no_such_symbol"}"#,
    );
    let mut r = get(s.addr(), "/nosym");
    wait_until(Duration::from_secs(5), || {
        r = get(s.addr(), "/nosym");
        r.status != 404
    });
    assert_eq!(r.status, 502, "body {:?}", r.text());
    assert!(r.text().contains("no_such_symbol"), "{:?}", r.text());
}

/// A worker's thread that owns a core's channel runs what comes on it; a
/// slow call there must not hold the calls queued behind it. One core, one
/// worker, two threads: the owner and one spare. Both ways a native call
/// gets the spare are taken: one that runs long after its function's last
/// call was brief (the watcher arms the spare once it has run a while),
/// and the next call of that function (armed at once). Each time a
/// `/hello` sent while the slow call sleeps is answered before it.
#[test]
fn a_slow_call_does_not_hold_the_calls_behind_it_on_its_channel() {
    let functions = tempdir().expect("functions tempdir");
    for name in ["slow", "hello"] {
        compile_native(
            &example_dir("native").join(format!("{name}.c")),
            &functions.path().join(format!("{name}.so")),
            &[],
        );
    }
    let dir = functions.path().to_str().expect("UTF-8 path").to_string();
    let s = Server::start(
        &[
            (
                "GET:/slow",
                r#"{"runtime":"native","module":"slow.so","timeout_ms":20000}"#,
            ),
            ("GET:/hello", r#"{"runtime":"native","module":"hello.so"}"#),
        ],
        &[
            "--cores",
            "1",
            "--workers",
            "1",
            "--worker-threads",
            "2",
            "--functions-dir",
            &dir,
        ],
    );
    assert_eq!(get(s.addr(), "/hello").status, 200);
    assert_eq!(
        get(s.addr(), "/slow?ms=0").status,
        200,
        "a brief call first"
    );
    for case in ["after a brief call", "after a long call"] {
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let slow = {
            let (addr, order) = (s.addr(), order.clone());
            thread::spawn(move || {
                let r = get(addr, "/slow?ms=2500");
                order.lock().expect("order").push("slow");
                r.status
            })
        };
        // The slow call is running (sleeping) on the owner by then.
        thread::sleep(Duration::from_millis(400));
        let hello = get(s.addr(), "/hello");
        order.lock().expect("order").push("hello");
        assert_eq!(hello.status, 200, "{case}: /hello {:?}", hello.text());
        assert_eq!(slow.join().expect("slow client"), 200, "{case}");
        assert_eq!(
            *order.lock().expect("order"),
            ["hello", "slow"],
            "{case}: /hello was answered while the slow call held the channel's owner"
        );
    }
}
