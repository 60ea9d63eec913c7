//! Python functions: `def handle(request)` in a warm host per function,
//! answered with real python3 processes behind a real gateway.
mod common;

use common::functions::*;

fn server() -> FunctionServer {
    FunctionServer::start(Lang::Python)
}

#[test]
fn hello_is_served_by_a_warm_host() {
    check_hello(&server());
}

#[test]
fn json_body_is_echoed_through_get_json() {
    check_json_echo(&server());
}

#[test]
fn returned_status_and_headers_reach_the_client() {
    check_status_and_headers(&server());
}

#[test]
fn an_exception_is_502_with_the_traceback_in_the_function_log() {
    check_handler_error(
        &server(),
        "ZeroDivisionError: division by zero",
        &["Traceback", "ZeroDivisionError", "boom.py"],
    );
}

#[test]
fn an_endless_handler_is_504_and_its_host_is_replaced() {
    check_timeout_replaces_host(&server());
}

#[test]
fn thirty_two_concurrent_requests_each_get_their_own_answer() {
    check_concurrent_requests(&server(), 32);
}

#[test]
fn a_changed_handler_file_is_served_at_once() {
    check_file_change(&server());
}

#[test]
fn a_module_with_a_syntax_error_is_502_until_it_is_fixed() {
    check_broken_module_then_fixed(&server(), "def handle(request:\n", "SyntaxError");
}

#[test]
fn a_one_mib_body_round_trips() {
    check_large_body_echo(&server());
}

#[test]
fn hosts_started_for_a_burst_are_stopped_when_idle() {
    use common::*;
    use std::time::Duration;
    let s = FunctionServer::start_with(
        Lang::Python,
        &["--host-idle-ms", "1000", "--metrics-interval-ms", "100"],
    );
    // 8 slow requests at once: up to 4 hosts in each of the 2 workers.
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let addr = s.addr();
            std::thread::spawn(move || get(addr, "/slow?ms=800").status)
        })
        .collect();
    // The most hosts seen while the burst runs.
    let marker = s.marker("slow");
    let mut burst = 0;
    wait_until(Duration::from_millis(700), || {
        burst = burst.max(processes_with_marker(&marker).len());
        false
    });
    for client in clients {
        assert_eq!(client.join().expect("client"), 200);
    }
    assert!(
        burst > 2,
        "the burst started more hosts than the warm minimum: {burst}"
    );
    let mut now = burst;
    let shrunk = wait_until(Duration::from_secs(10), || {
        now = processes_with_marker(&marker).len();
        now <= 2
    });
    assert!(
        shrunk.is_some(),
        "idle hosts stopped down to one per worker: {burst} → {now}"
    );
    assert!(now >= 1, "the warm minimum stays: {now}");
    assert_eq!(get(s.addr(), "/slow?ms=0").text(), "slept\n");
}

#[test]
fn a_host_that_dies_mid_request_is_502_and_replaced() {
    check_host_death_is_502_and_replaced(
        &server(),
        "import os\n\ndef handle(request):\n    if request.query_params.get(\"die\"):\n        os._exit(3)\n    return (200, {\"content-type\": \"text/plain\"}, \"alive\\n\")\n",
    );
}

#[test]
fn no_host_outlives_a_stopped_or_killed_gateway() {
    check_no_host_outlives_the_gateway(server(), libc::SIGTERM);
    check_no_host_outlives_the_gateway(server(), libc::SIGKILL);
}
