//! WebAssembly functions served through the worker pool: the CGI contract
//! (stdin body, environment, stdout response), request bodies inline and in
//! a memfd, keep-alive and pipelining across worker dispatches.

use crate::common::*;
use serde_json::json;
use std::collections::HashMap;

fn server() -> WorkerServer {
    let hello = wasm_route("hello.wat", json!(null));
    let echo = wasm_route("echo.wat", json!(null));
    let status = wasm_route("status.wat", json!(null));
    let env = wasm_route("env.wat", json!({"env": {"GREETING": "hi"}}));
    let fixed = static_route("static says hi\n");
    WorkerServer::start(
        &[
            ("GET:/hello", &hello),
            ("POST:/echo", &echo),
            ("GET:/status", &status),
            ("ANY:/env/*", &env),
            ("GET:/static", &fixed),
        ],
        &examples_dir(),
        &[],
    )
}

fn assert_hello(r: &Response, what: &str) {
    assert_eq!(r.status, 200, "{what}: status; body {:?}", r.text());
    assert_eq!(r.text(), "Hello from wasm!\n", "{what}: body");
}

fn assert_echo(r: &Response, sent: &[u8], what: &str) {
    assert_eq!(
        r.status,
        200,
        "{what}: status; body {:?}",
        String::from_utf8_lossy(&r.body[..r.body.len().min(200)])
    );
    assert_eq!(
        r.header("content-type"),
        Some("application/octet-stream"),
        "{what}: content-type from echo.wat"
    );
    assert_eq!(
        r.body.len(),
        sent.len(),
        "{what}: echoed body length differs from the sent one"
    );
    if let Some(at) = r.body.iter().zip(sent).position(|(a, b)| a != b) {
        panic!("{what}: echoed body differs from the sent one at byte {at}");
    }
}

#[test]
fn hello_module_answers_through_a_worker() {
    let s = server();
    assert_eq!(
        worker_pids(s.pid()).len(),
        2,
        "--workers 2 starts two worker processes"
    );
    let r = get(s.addr(), "/hello");
    assert_hello(&r, "GET /hello");
    assert_eq!(
        r.header("content-type"),
        Some("text/plain"),
        "content-type comes from the module's CGI header"
    );
    assert_eq!(r.header("content-length"), Some("17"), "content-length");
    assert_eq!(r.header_count("content-length"), 1, "one content-length");
    let date = r.header("date").expect("a date header");
    assert!(date.ends_with(" GMT"), "date is an HTTP date: {date:?}");
    assert!(
        r.is_connection_close(),
        "Connection: close was asked for: {:?}",
        r.headers
    );
}

#[test]
fn head_request_to_a_wasm_route_gets_headers_only() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    c.write(b"HEAD /hello HTTP/1.1\r\nHost: test\r\n\r\n");
    let r = c.read_response_to_head_request();
    assert_eq!(r.status, 200, "HEAD /hello");
    assert_eq!(
        r.header("content-length"),
        Some("17"),
        "length of the GET body"
    );
    // No body bytes follow: the next response on the connection parses.
    c.write(get_req("/hello").as_bytes());
    assert_hello(&c.read_response(), "GET after HEAD");
}

#[test]
fn echo_returns_a_5_mb_body_byte_exact_through_a_memfd() {
    let s = server();
    let body = random_bytes(5 * 1000 * 1000);
    let mut c = Conn::connect(s.addr());
    c.write(format!(
        "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    ).as_bytes());
    c.write(&body);
    let r = c.read_response();
    assert_echo(&r, &body, "5 MB echo");
    assert_eq!(
        r.header("content-length"),
        Some("5000000"),
        "content-length of the 5 MB echo"
    );
    // The keep-alive connection carries on with a small body.
    c.write(&post_req("/echo", b"after the big one"));
    assert_echo(&c.read_response(), b"after the big one", "echo after 5 MB");
}

#[test]
fn echo_returns_a_100_byte_body_byte_exact_inline() {
    let s = server();
    let body = random_bytes(100);
    let mut c = Conn::connect(s.addr());
    c.write(&post_req("/echo", &body));
    assert_echo(&c.read_response(), &body, "100-byte echo");
    // Right at and just over the inline limit (32 KiB) as well.
    for len in [32 * 1024, 32 * 1024 + 1] {
        let body = random_bytes(len);
        c.write(&post_req("/echo", &body));
        assert_echo(&c.read_response(), &body, &format!("{len}-byte echo"));
    }
    // An empty body.
    c.write(&post_req("/echo", b""));
    assert_echo(&c.read_response(), b"", "empty echo");
}

fn chunked(body: &[u8], chunk: usize) -> Vec<u8> {
    let mut raw =
        b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for part in body.chunks(chunk) {
        raw.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        raw.extend_from_slice(part);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    raw
}

#[test]
fn chunked_request_body_is_echoed_exactly() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    let small = b"first chunk|second chunk|third".to_vec();
    c.write(&chunked(&small, 12));
    assert_echo(&c.read_response(), &small, "small chunked body");

    // Over the inline limit: the de-chunked body travels in a memfd.
    let big = random_bytes(100 * 1024 + 7);
    c.write(&chunked(&big, 7000));
    assert_echo(&c.read_response(), &big, "100 KiB chunked body");

    // With a trailer, which is read and dropped.
    let mut raw =
        b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    raw.extend_from_slice(b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n");
    c.write(&raw);
    assert_echo(
        &c.read_response(),
        b"hello world",
        "chunked body with trailer",
    );
}

#[test]
fn cgi_status_and_custom_headers_reach_the_client() {
    let s = server();
    let r = get(s.addr(), "/status");
    assert_eq!(r.status, 201, "Status: 201 Created; body {:?}", r.text());
    assert_eq!(r.reason, "Created", "reason phrase");
    assert_eq!(r.header("x-custom"), Some("yes"), "X-Custom header");
    assert_eq!(r.header("content-type"), Some("text/plain"), "content-type");
    assert_eq!(r.text(), "created\n", "body");
    assert_eq!(r.header("status"), None, "the Status line is not a header");
}

fn env_lines(r: &Response) -> HashMap<String, String> {
    r.text()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn cgi_environment_describes_the_request_and_has_descriptor_env() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    c.write(
        b"POST /env/sub/path?a=1&b=two HTTP/1.1\r\nHost: test\r\nX-Test: value-42\r\n\
          Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
    );
    let r = c.read_response();
    assert_eq!(r.status, 200, "env.wat; body {:?}", r.text());
    let env = env_lines(&r);
    let expect = [
        ("REQUEST_METHOD", "POST"),
        ("PATH_INFO", "/env/sub/path"),
        ("QUERY_STRING", "a=1&b=two"),
        ("CONTENT_LENGTH", "5"),
        ("CONTENT_TYPE", "text/plain"),
        ("HTTP_X_TEST", "value-42"),
        ("GREETING", "hi"),
    ];
    for (k, v) in expect {
        assert_eq!(
            env.get(k).map(String::as_str),
            Some(v),
            "{k} in the function's environment:\n{}",
            r.text()
        );
    }

    // A GET without a body and without a query.
    c.write(get_req("/env/other").as_bytes());
    let r = c.read_response();
    assert_eq!(r.status, 200, "env.wat GET; body {:?}", r.text());
    let env = env_lines(&r);
    assert_eq!(env.get("REQUEST_METHOD").map(String::as_str), Some("GET"));
    assert_eq!(env.get("PATH_INFO").map(String::as_str), Some("/env/other"));
    assert_eq!(env.get("QUERY_STRING").map(String::as_str), Some(""));
    assert_eq!(env.get("GREETING").map(String::as_str), Some("hi"));
    assert_eq!(
        env.get("HTTP_X_TEST"),
        None,
        "no X-Test header this time:\n{}",
        r.text()
    );
}

#[test]
fn hundred_keep_alive_requests_on_one_connection_through_workers() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    for i in 0..100 {
        if i % 2 == 0 {
            c.write(get_req("/hello").as_bytes());
            let r = c.read_response();
            assert_hello(&r, &format!("keep-alive request #{i}"));
            assert!(!r.is_connection_close(), "request #{i}: connection kept");
        } else {
            let body = format!("request number {i}");
            c.write(&post_req("/echo", body.as_bytes()));
            let r = c.read_response();
            assert_echo(&r, body.as_bytes(), &format!("keep-alive request #{i}"));
            assert!(!r.is_connection_close(), "request #{i}: connection kept");
        }
    }
    assert!(
        c.buffered().is_empty(),
        "no stray bytes after 100 responses"
    );
}

#[test]
fn pipelined_wasm_and_static_requests_are_answered_in_order() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    let mut batch = get_req("/hello").into_bytes();
    batch.extend_from_slice(get_req("/static").as_bytes());
    batch.extend_from_slice(&post_req("/echo", b"pipelined body"));
    batch.extend_from_slice(get_req("/hello").as_bytes());
    c.write(&batch);
    assert_hello(&c.read_response(), "pipelined #0 (wasm hello)");
    let r = c.read_response();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "static says hi\n"),
        "pipelined #1 (static)"
    );
    assert_echo(&c.read_response(), b"pipelined body", "pipelined #2 (echo)");
    assert_hello(&c.read_response(), "pipelined #3 (wasm hello)");
    // Nothing more, and the connection is still usable.
    c.write(get_req("/static").as_bytes());
    assert_eq!(c.read_response().text(), "static says hi\n");
}

#[test]
fn http_1_0_requests_to_a_wasm_route_close_unless_keep_alive() {
    let s = server();
    // Plain HTTP/1.0: one response, then the server closes.
    let mut c = Conn::connect(s.addr());
    c.write(b"GET /hello HTTP/1.0\r\n\r\n");
    let r = c.read_response();
    assert_hello(&r, "HTTP/1.0 GET /hello");
    assert!(
        !r.connection_has("keep-alive"),
        "no keep-alive for plain HTTP/1.0: {:?}",
        r.headers
    );
    assert!(
        c.is_closed_by_peer(std::time::Duration::from_secs(3)),
        "HTTP/1.0 without keep-alive: the server closes after the response"
    );

    // HTTP/1.0 with Connection: keep-alive: the connection stays.
    let mut c = Conn::connect(s.addr());
    for i in 0..3 {
        c.write(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let r = c.read_response();
        assert_hello(&r, &format!("HTTP/1.0 keep-alive #{i}"));
        assert!(
            r.connection_has("keep-alive"),
            "HTTP/1.0 keep-alive is confirmed: {:?}",
            r.headers
        );
    }
}

#[test]
fn expect_100_continue_body_reaches_the_function() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    c.write(
        b"POST /echo HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n",
    );
    let interim = c.read_response();
    assert_eq!(interim.status, 100, "interim 100 Continue before the body");
    c.write(b"hello there");
    assert_echo(
        &c.read_response(),
        b"hello there",
        "echo after 100 Continue",
    );
}
