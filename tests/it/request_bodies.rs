//! Request bodies: Content-Length, chunked (extensions, trailers), Expect: 100-continue.

use crate::common::*;
use std::time::Duration;

fn server() -> Server {
    Server::start(
        &[
            (
                "POST:/upload",
                &static_route_full(201, &[("content-type", "text/plain")], "uploaded"),
            ),
            ("GET:/after", &static_route("after body")),
        ],
        &["--max-body", "1024"],
    )
}

#[test]
fn content_length_body_to_post_route() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    let body = vec![b'x'; 1000];
    let mut req = format!(
        "POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    c.write(&req);
    let r = c.read_response();
    assert_eq!((r.status, r.text().as_str()), (201, "uploaded"));
    // Framing kept: the next request on the same connection works.
    c.write(get_req("/after").as_bytes());
    let r = c.read_response();
    assert_eq!((r.status, r.text().as_str()), (200, "after body"));
}

#[test]
fn body_exactly_at_max_body_is_accepted() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    let mut req = b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 1024\r\n\r\n".to_vec();
    req.extend_from_slice(&[b'y'; 1024]);
    c.write(&req);
    let r = c.read_response();
    assert_eq!(
        r.status,
        201,
        "1024-byte body with --max-body 1024: {:?}",
        r.text()
    );
}

#[test]
fn content_length_body_sent_in_pieces() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    c.write(b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 12\r\n\r\nhel");
    std::thread::sleep(Duration::from_millis(50));
    c.write(b"lo ");
    std::thread::sleep(Duration::from_millis(50));
    c.write(b"world!");
    let r = c.read_response();
    assert_eq!(r.status, 201);
    c.write(get_req("/after").as_bytes());
    assert_eq!(c.read_response().text(), "after body");
}

#[test]
fn chunked_body_with_extension_and_trailers_keeps_framing() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    c.write(
        b"POST /upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n\
          6;name=value\r\n world\r\n\
          A\r\n0123456789\r\n\
          0\r\n\
          X-Checksum: abc\r\n\
          X-Other: 1\r\n\
          \r\n",
    );
    let r = c.read_response();
    assert_eq!((r.status, r.text().as_str()), (201, "uploaded"));
    c.write(get_req("/after").as_bytes());
    let r = c.read_response();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "after body"),
        "second request after chunked body with trailers"
    );
}

#[test]
fn a_bare_lf_in_a_chunk_extension_is_400_and_closes_without_a_second_answer() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    // An LF-splitting proxy would see the size line end after `x` and
    // read `GET /after` as a request of its own.
    c.write(
        b"POST /upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;x\nGET /after HTTP/1.1\r\nhello\r\n0\r\n\r\n",
    );
    let r = c.read_response();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("bare CR or LF"), "{}", r.text());
    assert!(
        c.is_closed_by_peer(Duration::from_secs(2)),
        "the connection is closed after the 400, with no second answer"
    );
}

#[test]
fn chunked_body_followed_by_pipelined_request_in_same_write() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    // The second chunk looks like a request: if the server lost the framing
    // it would answer 404 for /nothere.
    let sneaky = "GET /nothere HTTP/1.1\r\nHost: x\r\n\r\n";
    let req = format!(
        "POST /upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n\
         3\r\nabc\r\n{:x}\r\n{sneaky}\r\n0\r\n\r\n{}",
        sneaky.len(),
        get_req("/after")
    );
    let req = req.into_bytes();
    c.write(&req);
    let r = c.read_response();
    assert_eq!((r.status, r.text().as_str()), (201, "uploaded"));
    let r = c.read_response();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "after body"),
        "pipelined request after chunked body"
    );
}

#[test]
fn chunked_body_sent_byte_by_byte_in_pieces() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    c.write(b"POST /upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n");
    for piece in [&b"4\r"[..], b"\nwi", b"ki\r\n", b"0", b"\r\n", b"\r", b"\n"] {
        std::thread::sleep(Duration::from_millis(20));
        c.write(piece);
    }
    let r = c.read_response();
    assert_eq!(r.status, 201);
    c.write(get_req("/after").as_bytes());
    assert_eq!(c.read_response().text(), "after body");
}

#[test]
fn expect_100_continue_gets_interim_response_before_body() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    c.write(
        b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n",
    );
    // Nothing of the body has been sent: the server must answer 100 first.
    let interim = c
        .try_read_response(false)
        .unwrap_or_else(|e| panic!("no interim response before the body was sent: {e}"));
    assert_eq!(
        interim.status, 100,
        "expected HTTP/1.1 100 Continue, got {} {:?}",
        interim.status, interim.reason
    );
    assert_eq!(interim.version, 1, "interim response version");
    assert!(
        interim.headers.is_empty(),
        "100 Continue should be exactly `HTTP/1.1 100 Continue\\r\\n\\r\\n`, had headers {:?}",
        interim.headers
    );
    assert!(
        c.buffered().is_empty(),
        "nothing but the interim response yet"
    );
    c.write(b"hello world");
    let r = c.read_response();
    assert_eq!((r.status, r.text().as_str()), (201, "uploaded"));
    c.write(get_req("/after").as_bytes());
    assert_eq!(c.read_response().text(), "after body");
}

#[test]
fn expect_100_continue_over_max_body_gets_413_without_interim() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    c.write(
        b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 4096\r\nExpect: 100-continue\r\n\r\n",
    );
    let r = c
        .try_read_response(false)
        .unwrap_or_else(|e| panic!("no response to oversized Expect request: {e}"));
    assert_ne!(
        r.status, 100,
        "server sent 100 Continue for a request it must refuse"
    );
    assert_eq!(r.status, 413, "body {:?}", r.text());
    assert!(!r.body.is_empty(), "413 body should explain the error");
    assert!(
        c.is_closed_by_peer(Duration::from_secs(3)),
        "connection should be closed after 413"
    );
}
