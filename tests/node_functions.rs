//! Node functions: `exports.handler = async (req) => ...` in a warm host per
//! function, answered by real node processes behind a real gateway.
mod common;

use common::functions::*;

fn server() -> FunctionServer {
    FunctionServer::start(Lang::Node)
}

#[test]
fn hello_is_served_by_a_warm_host() {
    check_hello(&server());
}

#[test]
fn json_body_is_echoed_through_req_json() {
    check_json_echo(&server());
}

#[test]
fn returned_status_and_headers_reach_the_client() {
    check_status_and_headers(&server());
}

#[test]
fn a_thrown_error_is_502_with_the_stack_in_the_function_log() {
    check_handler_error(
        &server(),
        "TypeError: boom from node",
        &["TypeError: boom from node", "boom.js"],
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
    check_broken_module_then_fixed(
        &server(),
        "exports.handler = async (req => {\n",
        "SyntaxError",
    );
}

#[test]
fn a_one_mib_body_round_trips() {
    check_large_body_echo(&server());
}

#[test]
fn a_host_that_dies_mid_request_is_502_and_replaced() {
    check_host_death_is_502_and_replaced(
        &server(),
        "exports.handler = async (req) => {\n  if (req.queryStringParameters.die) process.exit(3);\n  return {statusCode: 200, headers: {\"content-type\": \"text/plain\"}, body: \"alive\\n\"};\n};\n",
    );
}

#[test]
fn no_host_outlives_a_stopped_or_killed_gateway() {
    check_no_host_outlives_the_gateway(server(), libc::SIGTERM);
    check_no_host_outlives_the_gateway(server(), libc::SIGKILL);
}
