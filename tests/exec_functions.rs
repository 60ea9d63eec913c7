//! Exec functions: any executable under the CGI contract, one process per
//! request, killed with everything it started at its timeout.
mod common;

use common::functions::*;
use common::*;

fn server() -> FunctionServer {
    FunctionServer::start(Lang::Exec)
}

#[test]
fn hello_is_answered_from_the_programs_stdout() {
    check_hello(&server());
}

#[test]
fn json_body_is_echoed_from_stdin() {
    check_json_echo(&server());
}

#[test]
fn cgi_status_and_headers_reach_the_client() {
    check_status_and_headers(&server());
}

#[test]
fn a_non_zero_exit_is_502_with_stderr_in_the_function_log() {
    check_handler_error(
        &server(),
        "exec function exited with status 3",
        &["fail.sh: something went wrong"],
    );
}

#[test]
fn an_endless_program_is_504_and_killed() {
    check_timeout_replaces_host(&server());
}

#[test]
fn thirty_two_concurrent_requests_each_get_their_own_answer() {
    check_concurrent_requests(&server(), 32);
}

#[test]
fn a_changed_program_is_served_at_once() {
    check_file_change(&server());
}

#[test]
fn every_process_is_reaped() {
    let s = server();
    for _ in 0..20 {
        assert_eq!(get(s.addr(), "/hello").status, 200);
    }
    for worker in worker_pids(s.pid()) {
        let zombies: Vec<(u32, char)> = child_processes(worker)
            .into_iter()
            .filter(|&(_, state)| state == 'Z')
            .collect();
        assert!(
            zombies.is_empty(),
            "worker {worker} left zombies: {zombies:?}"
        );
    }
}

#[test]
fn a_missing_program_is_502_naming_it() {
    let s = server();
    common::insert_route(
        s.db_path(),
        "GET:/missing",
        r#"{"runtime":"exec","module":"no-such-program.sh"}"#,
    );
    let mut r = get(s.addr(), "/missing");
    wait_until(std::time::Duration::from_secs(5), || {
        r = get(s.addr(), "/missing");
        r.status != 404
    });
    assert_eq!(r.status, 502, "body {:?}", r.text());
    assert!(r.text().contains("no-such-program.sh"), "{:?}", r.text());
}

#[test]
fn a_one_mib_body_round_trips() {
    check_large_body_echo(&server());
}
