//! Pipelined requests: responses come back in request order.

use crate::common::*;
use std::time::Duration;

fn server() -> Server {
    Server::start(
        &[
            ("GET:/one", &static_route("first response")),
            ("GET:/two", &static_route("second response")),
            ("GET:/three", &static_route("third response")),
            (
                "POST:/submit",
                &static_route_full(201, &[("content-type", "text/plain")], "submitted"),
            ),
        ],
        &[],
    )
}

#[test]
fn three_pipelined_requests_answered_in_order() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    let batch = format!(
        "{}{}{}",
        get_req("/one"),
        get_req("/two"),
        get_req("/three")
    );
    c.write(batch.as_bytes());
    for (i, want) in ["first response", "second response", "third response"]
        .iter()
        .enumerate()
    {
        let r = c.read_response();
        assert_eq!(r.status, 200, "response #{i}");
        assert_eq!(r.text(), *want, "response #{i} out of order or wrong");
    }
    // The connection is still usable afterwards.
    c.write(get_req("/two").as_bytes());
    assert_eq!(c.read_response().text(), "second response");
}

#[test]
fn pipelined_batch_with_404_in_the_middle_stays_in_order() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    let batch = format!(
        "{}{}{}",
        get_req("/one"),
        get_req("/does-not-exist"),
        get_req("/three")
    );
    c.write(batch.as_bytes());
    let r1 = c.read_response();
    assert_eq!((r1.status, r1.text().as_str()), (200, "first response"));
    let r2 = c.read_response();
    assert_eq!(r2.status, 404, "middle response; body {:?}", r2.text());
    let r3 = c.read_response();
    assert_eq!((r3.status, r3.text().as_str()), (200, "third response"));
}

#[test]
fn pipelined_post_with_body_between_two_gets() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    // The body looks like a request line: if the server lost the framing it
    // would answer /two instead of /three.
    let body = "GET /two HTTP/1.1\r\nHost: test\r\n\r\n";
    let batch = format!(
        "{}POST /submit HTTP/1.1\r\nHost: test\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}{}",
        get_req("/one"),
        body.len(),
        get_req("/three")
    );
    c.write(batch.as_bytes());
    let r1 = c.read_response();
    assert_eq!((r1.status, r1.text().as_str()), (200, "first response"));
    let r2 = c.read_response();
    assert_eq!((r2.status, r2.text().as_str()), (201, "submitted"));
    let r3 = c.read_response();
    assert_eq!(
        (r3.status, r3.text().as_str()),
        (200, "third response"),
        "POST body was not consumed as body (framing lost)"
    );
    assert!(
        !c.is_closed_by_peer(Duration::from_millis(100)),
        "connection should stay open"
    );
    assert!(c.buffered().is_empty(), "only three responses expected");
}

#[test]
fn pipelined_batch_ending_with_connection_close() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    let batch = format!(
        "{}{}GET /three HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
        get_req("/one"),
        get_req("/two")
    );
    c.write(batch.as_bytes());
    let bodies: Vec<String> = (0..3).map(|_| c.read_response().text()).collect();
    assert_eq!(
        bodies,
        ["first response", "second response", "third response"]
    );
    assert!(
        c.is_closed_by_peer(Duration::from_secs(3)),
        "connection not closed after the Connection: close request"
    );
}

#[test]
fn many_pipelined_requests_in_one_write() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    let paths = ["/one", "/two", "/three"];
    let mut batch = String::new();
    for i in 0..300 {
        batch.push_str(&get_req(paths[i % 3]));
    }
    c.write(batch.as_bytes());
    for i in 0..300 {
        let r = c.read_response();
        let want = ["first response", "second response", "third response"][i % 3];
        assert_eq!((r.status, r.text().as_str()), (200, want), "response #{i}");
    }
}
