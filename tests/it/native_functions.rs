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
