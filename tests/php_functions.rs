//! PHP functions: scripts with $_SERVER, php://input, header() and echo, run
//! by warm php-cgi hosts (FastCGI) behind a real gateway.
mod common;

use common::functions::*;

fn server() -> FunctionServer {
    FunctionServer::start(Lang::Php)
}

#[test]
fn hello_is_served_by_a_warm_host() {
    check_hello(&server());
}

#[test]
fn json_body_is_echoed_from_php_input() {
    check_json_echo(&server());
}

#[test]
fn http_response_code_and_header_reach_the_client() {
    check_status_and_headers(&server());
}

#[test]
fn an_uncaught_exception_is_502_with_the_trace_in_the_function_log() {
    check_handler_error(
        &server(),
        "RuntimeException: boom from php",
        &["RuntimeException", "boom from php", "boom.php"],
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
fn a_changed_script_is_served_at_once() {
    check_file_change(&server());
}

#[test]
fn a_script_with_a_parse_error_is_502_until_it_is_fixed() {
    check_broken_module_then_fixed(&server(), "<?php\necho 'unterminated\n", "Parse error");
}

#[test]
fn a_one_mib_body_round_trips() {
    check_large_body_echo(&server());
}

#[test]
fn no_host_outlives_a_stopped_or_killed_gateway() {
    check_no_host_outlives_the_gateway(server(), libc::SIGTERM);
    check_no_host_outlives_the_gateway(server(), libc::SIGKILL);
}
