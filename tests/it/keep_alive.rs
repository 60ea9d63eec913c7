//! HTTP/1.1 keep-alive and HTTP/1.0 connection handling.

use crate::common::*;
use std::time::{Duration, Instant};

const BODY: &str = "keep-alive body\n";

fn server() -> Server {
    Server::start(&[("GET:/ka", &static_route(BODY))], &[])
}

#[test]
fn thousand_requests_on_one_connection_all_succeed() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    let req = get_req("/ka");
    let t0 = Instant::now();
    for i in 0..1000 {
        c.write(req.as_bytes());
        let r = c.read_response();
        assert_eq!(r.status, 200, "request #{i} status");
        assert_eq!(r.text(), BODY, "request #{i} body");
        assert!(
            !r.is_connection_close(),
            "request #{i}: server asked to close a keep-alive connection"
        );
    }
    eprintln!(
        "1000 sequential keep-alive requests took {:?}",
        t0.elapsed()
    );
    assert!(
        c.buffered().is_empty(),
        "unexpected extra bytes after responses"
    );
}

#[test]
fn every_response_has_content_length_and_date() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    for path in ["/ka", "/missing", "/_/health"] {
        c.write(get_req(path).as_bytes());
        let r = c.read_response();
        let cl = r
            .header("content-length")
            .unwrap_or_else(|| panic!("{path}: no content-length header: {:?}", r.headers));
        assert_eq!(
            cl.trim().parse::<usize>().expect("numeric content-length"),
            r.body.len(),
            "{path}: content-length matches body"
        );
        assert_eq!(
            r.header_count("content-length"),
            1,
            "{path}: one content-length"
        );
        let date = r
            .header("date")
            .unwrap_or_else(|| panic!("{path}: no date header: {:?}", r.headers));
        assert!(
            date.ends_with(" GMT") && date.len() == 29,
            "{path}: date header {date:?} is not an IMF-fixdate"
        );
    }
}

#[test]
fn http10_without_keep_alive_closes_after_response() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    c.write(b"GET /ka HTTP/1.0\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), BODY);
    assert!(
        r.is_connection_close(),
        "response to a closing HTTP/1.0 request should carry connection: close, got {:?}",
        r.headers
    );
    assert!(
        c.is_closed_by_peer(Duration::from_secs(3)),
        "HTTP/1.0 connection without keep-alive was not closed by the server"
    );
}

#[test]
fn http10_with_keep_alive_stays_open_for_second_request() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    for i in 0..2 {
        c.write(b"GET /ka HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let r = c.read_response();
        assert_eq!(r.status, 200, "request #{i}");
        assert_eq!(r.text(), BODY, "request #{i}");
        assert!(
            r.connection_has("keep-alive"),
            "request #{i}: HTTP/1.0 keep-alive response must carry connection: keep-alive, got {:?}",
            r.headers
        );
    }
    assert!(
        !c.is_closed_by_peer(Duration::from_millis(200)),
        "HTTP/1.0 keep-alive connection was closed"
    );
}

#[test]
fn http11_connection_close_closes_after_response() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    c.write(b"GET /ka HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), BODY);
    assert!(
        r.is_connection_close(),
        "response should carry connection: close, got {:?}",
        r.headers
    );
    assert!(
        c.is_closed_by_peer(Duration::from_secs(3)),
        "connection not closed after Connection: close"
    );
    assert!(
        c.buffered().is_empty(),
        "no bytes expected after the response"
    );
}

#[test]
fn http11_default_keeps_connection_open() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    c.write(get_req("/ka").as_bytes());
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert!(!r.is_connection_close(), "headers {:?}", r.headers);
    assert!(
        !c.is_closed_by_peer(Duration::from_millis(300)),
        "HTTP/1.1 connection closed without Connection: close"
    );
    c.write(get_req("/ka").as_bytes());
    assert_eq!(c.read_response().status, 200);
}
