//! Every error status the gateway produces itself, and that it keeps serving
//! other clients afterwards.

use crate::common::*;
use std::time::Duration;

fn server() -> Server {
    Server::start(
        &[
            ("GET:/ok", &static_route("ok\n")),
            (
                "POST:/upload",
                &static_route_full(201, &[("content-type", "text/plain")], "uploaded"),
            ),
            ("PUT:/thing", &static_route("put thing")),
            ("POST:/thing", &static_route("post thing")),
        ],
        &["--max-body", "1024"],
    )
}

/// A fresh good request on a new connection must still get 200.
fn assert_still_serving(s: &Server, after: &str) {
    let r = get(s.addr(), "/ok");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "ok\n"),
        "server stopped serving after {after}"
    );
}

/// Sends `raw` on a new connection and expects `status` with a non-empty
/// text body; if `closes`, the connection must then be closed by the server.
fn expect_error(s: &Server, what: &str, raw: &[u8], status: u16, closes: bool) -> Response {
    let mut c = Conn::connect(s.addr());
    // The server may stop reading early (e.g. 431), so a failed write is not
    // an error by itself: the response is what counts.
    if let Err(e) = c.try_write(raw) {
        eprintln!("{what}: write failed ({e}); reading the response anyway");
    }
    let r = c
        .try_read_response(false)
        .unwrap_or_else(|e| panic!("{what}: expected {status} response: {e}"));
    assert_eq!(
        r.status,
        status,
        "{what}: wrong status; body {:?}",
        r.text()
    );
    assert!(
        !r.body.is_empty(),
        "{what}: error body must say what went wrong"
    );
    assert!(
        std::str::from_utf8(&r.body).is_ok(),
        "{what}: error body should be text"
    );
    if closes {
        assert!(
            c.is_closed_by_peer(Duration::from_secs(3)),
            "{what}: connection should be closed after {status}"
        );
    }
    assert_still_serving(s, what);
    r
}

#[test]
fn garbage_request_line_is_400() {
    let s = server();
    expect_error(
        &s,
        "garbage request line",
        b"THIS IS NOT HTTP\r\n\r\n",
        400,
        true,
    );
    expect_error(
        &s,
        "binary garbage",
        b"\x00\x01\x02\xff garbage \x7f\r\n\r\n",
        400,
        true,
    );
    expect_error(
        &s,
        "unsupported HTTP version",
        b"GET /ok HTTP/7.3\r\nHost: test\r\n\r\n",
        400,
        true,
    );
}

#[test]
fn bad_header_line_is_400() {
    let s = server();
    expect_error(
        &s,
        "header line without colon",
        b"GET /ok HTTP/1.1\r\nHost: test\r\nThis header has no colon\r\n\r\n",
        400,
        true,
    );
}

#[test]
fn non_numeric_content_length_is_400() {
    let s = server();
    expect_error(
        &s,
        "Content-Length: abc",
        b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: abc\r\n\r\n",
        400,
        true,
    );
}

#[test]
fn conflicting_content_lengths_are_400() {
    let s = server();
    expect_error(
        &s,
        "two different Content-Length values",
        b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
        400,
        true,
    );
}

#[test]
fn content_length_with_transfer_encoding_is_400() {
    let s = server();
    expect_error(
        &s,
        "both Content-Length and Transfer-Encoding",
        b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        400,
        true,
    );
}

#[test]
fn http11_without_host_is_400() {
    let s = server();
    expect_error(
        &s,
        "HTTP/1.1 without Host",
        b"GET /ok HTTP/1.1\r\n\r\n",
        400,
        true,
    );
    // HTTP/1.0 does not need Host.
    let r = send(s.addr(), b"GET /ok HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200, "HTTP/1.0 without Host is fine");
}

#[test]
fn bad_chunk_size_is_400() {
    let s = server();
    expect_error(
        &s,
        "chunk size zz",
        b"POST /upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        400,
        true,
    );
}

#[test]
fn header_section_over_limit_is_431() {
    let s = server();
    let mut raw = b"GET /ok HTTP/1.1\r\nHost: test\r\nX-Big: ".to_vec();
    raw.extend(std::iter::repeat_n(b'a', 20 * 1024));
    raw.extend_from_slice(b"\r\n\r\n");
    expect_error(&s, "20 KiB header", &raw, 431, true);
}

#[test]
fn too_many_headers_is_431() {
    let s = server();
    let mut raw = String::from("GET /ok HTTP/1.1\r\nHost: test\r\n");
    for i in 0..150 {
        raw.push_str(&format!("X-H{i}: v\r\n"));
    }
    raw.push_str("\r\n");
    expect_error(&s, "150 headers", raw.as_bytes(), 431, true);
}

#[test]
fn declared_content_length_over_max_body_is_413_immediately() {
    let s = server();
    // Only the head is sent: the server must refuse without waiting for the body.
    expect_error(
        &s,
        "Content-Length 2048 > --max-body 1024",
        b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 2048\r\n\r\n",
        413,
        true,
    );
}

#[test]
fn chunked_body_growing_over_max_body_is_413() {
    let s = server();
    let mut raw =
        b"POST /upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        raw.extend_from_slice(b"200\r\n");
        raw.extend(std::iter::repeat_n(b'z', 512));
        raw.extend_from_slice(b"\r\n");
    }
    // No terminating chunk: the server must refuse as soon as the body exceeds 1024.
    expect_error(&s, "chunked body of 1536 bytes", &raw, 413, true);
}

#[test]
fn unknown_path_is_404_and_keeps_connection() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    c.write(get_req("/nope").as_bytes());
    let r = c.read_response();
    assert_eq!(r.status, 404);
    assert!(!r.body.is_empty(), "404 body should say what went wrong");
    assert!(
        !r.is_connection_close(),
        "404 must keep the connection alive"
    );
    c.write(get_req("/ok").as_bytes());
    let r = c.read_response();
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
}

#[test]
fn wrong_method_is_405_with_allow_and_keeps_connection() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    for method in ["DELETE", "GET", "PATCH"] {
        c.write(format!("{method} /thing HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
        let r = c.read_response();
        assert_eq!(r.status, 405, "{method} /thing; body {:?}", r.text());
        assert_eq!(
            r.header("allow"),
            Some("POST, PUT"),
            "{method} /thing: Allow header (sorted, comma+space)"
        );
        assert!(!r.body.is_empty(), "405 body should say what went wrong");
        assert!(
            !r.is_connection_close(),
            "405 must keep the connection alive"
        );
    }
    c.write(b"PUT /thing HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n");
    let r = c.read_response();
    assert_eq!((r.status, r.text().as_str()), (200, "put thing"));
    assert_still_serving(&s, "405");
}

#[test]
fn transfer_encoding_gzip_is_501() {
    let s = server();
    expect_error(
        &s,
        "Transfer-Encoding: gzip",
        b"POST /upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: gzip\r\n\r\n",
        501,
        true,
    );
}

#[test]
fn runtime_without_workers_is_501() {
    let s = Server::start(
        &[
            ("GET:/ok", &static_route("ok\n")),
            (
                "GET:/python-fn",
                r#"{"runtime":"python","module":"app.py","handler":"handle"}"#,
            ),
        ],
        &["--workers", "0"],
    );
    let r = expect_error(
        &s,
        "python route on a gateway without workers",
        get_req("/python-fn").as_bytes(),
        501,
        false,
    );
    assert!(r.text().contains("--workers 0"), "says why: {:?}", r.text());
}

#[test]
fn over_max_connections_is_503() {
    let s = Server::start(
        &[("GET:/ok", &static_route("ok\n"))],
        &["--cores", "1", "--max-connections", "2"],
    );
    let mut held = Vec::new();
    for i in 0..2 {
        let mut c = Conn::connect(s.addr());
        c.write(get_req("/ok").as_bytes());
        assert_eq!(
            c.read_response().status,
            200,
            "connection #{i} within the limit"
        );
        held.push(c);
    }
    let mut c = Conn::connect(s.addr());
    c.write(get_req("/ok").as_bytes());
    let r = c
        .try_read_response(false)
        .unwrap_or_else(|e| panic!("third connection over --max-connections 2: {e}"));
    assert_eq!(r.status, 503, "body {:?}", r.text());
    assert!(!r.body.is_empty(), "503 body should say what went wrong");
    assert!(
        c.is_closed_by_peer(Duration::from_secs(3)),
        "connection over the limit should be closed"
    );
    // Freeing a slot lets new connections in again.
    drop(held.pop());
    let ok = wait_until(
        Duration::from_secs(5),
        || matches!(try_get(s.addr(), "/ok"), Ok(r) if r.status == 200),
    );
    assert!(ok.is_some(), "no 200 after a connection slot was freed");
    for c in held.iter_mut() {
        c.write(get_req("/ok").as_bytes());
        assert_eq!(
            c.read_response().status,
            200,
            "held connection still served"
        );
    }
}
