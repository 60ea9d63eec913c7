//! Header, body and idle timeouts: slow or silent clients are dropped while
//! other clients keep being served.

use crate::common::*;
use std::time::{Duration, Instant};

fn server() -> Server {
    Server::start(
        &[
            ("GET:/ok", &static_route("ok\n")),
            ("POST:/upload", &static_route("uploaded")),
        ],
        &[
            "--header-timeout-ms",
            "500",
            "--idle-timeout-ms",
            "500",
            "--body-timeout-ms",
            "500",
        ],
    )
}

#[test]
fn silent_connection_closed_after_header_timeout_while_others_are_served() {
    let s = server();
    let mut silent = Conn::connect(s.addr());
    let t0 = Instant::now();
    let mut busy = Conn::connect(s.addr());
    let mut served = 0;
    let closed_after = loop {
        // Another client keeps getting 200s in the meantime.
        busy.write(get_req("/ok").as_bytes());
        let r = busy.read_response();
        assert_eq!(r.status, 200, "busy client request #{served}");
        served += 1;
        if silent.is_closed_by_peer(Duration::from_millis(50)) {
            break t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "silent connection still open after 5 s (--header-timeout-ms 500)"
        );
    };
    eprintln!(
        "silent connection closed after {closed_after:?}; busy client got {served} responses meanwhile"
    );
    assert!(
        closed_after >= Duration::from_millis(350),
        "silent connection closed after only {closed_after:?}, before the 500 ms header timeout"
    );
    assert!(
        silent.buffered().is_empty(),
        "a silent connection is closed silently, but got {:?}",
        String::from_utf8_lossy(silent.buffered())
    );
    // The busy client was never idle long enough to be closed.
    busy.write(get_req("/ok").as_bytes());
    assert_eq!(busy.read_response().status, 200);
}

#[test]
fn half_sent_head_gets_408_and_is_closed() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    let t0 = Instant::now();
    c.write(b"GET /ok HTTP/1.1\r\nHost: te");
    let r = c
        .try_read_response(false)
        .unwrap_or_else(|e| panic!("expected 408 for an incomplete head: {e}"));
    let elapsed = t0.elapsed();
    eprintln!("408 for half head after {elapsed:?}");
    assert_eq!(r.status, 408, "body {:?}", r.text());
    assert!(!r.body.is_empty(), "408 body should say what went wrong");
    assert!(
        elapsed >= Duration::from_millis(350),
        "408 after only {elapsed:?}"
    );
    assert!(
        c.is_closed_by_peer(Duration::from_secs(3)),
        "connection should be closed after 408"
    );
    assert_eq!(get(s.addr(), "/ok").status, 200, "server still serving");
}

#[test]
fn head_trickled_slower_than_timeout_is_cut_off() {
    // A slowloris client sends one byte every 100 ms: the header timeout runs
    // from the first byte, so trickling does not extend it.
    let s = server();
    let mut c = Conn::connect(s.addr());
    let t0 = Instant::now();
    let head = b"GET /ok HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    for b in head.iter() {
        if c.try_write(&[*b]).is_err() || c.is_closed_by_peer(Duration::from_millis(100)) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "trickling client still connected after 5 s"
        );
    }
    let elapsed = t0.elapsed();
    eprintln!("trickling client cut off after {elapsed:?}");
    assert!(
        c.is_closed_by_peer(Duration::from_secs(3)),
        "trickling client not disconnected"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "trickling client kept alive for {elapsed:?} despite --header-timeout-ms 500"
    );
    let got = String::from_utf8_lossy(c.buffered()).into_owned();
    if !got.is_empty() {
        assert!(got.starts_with("HTTP/1.1 408"), "unexpected reply {got:?}");
    }
}

#[test]
fn body_not_completed_in_time_gets_408() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    let t0 = Instant::now();
    c.write(b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\n12345");
    let r = c
        .try_read_response(false)
        .unwrap_or_else(|e| panic!("expected 408 for an incomplete body: {e}"));
    eprintln!("408 for incomplete body after {:?}", t0.elapsed());
    assert_eq!(r.status, 408, "body {:?}", r.text());
    assert!(
        c.is_closed_by_peer(Duration::from_secs(3)),
        "connection should be closed after 408"
    );
    assert_eq!(get(s.addr(), "/ok").status, 200, "server still serving");
}

#[test]
fn idle_keep_alive_connection_closed_after_idle_timeout() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    c.write(get_req("/ok").as_bytes());
    assert_eq!(c.read_response().status, 200);
    let t0 = Instant::now();
    assert!(
        c.is_closed_by_peer(Duration::from_secs(5)),
        "idle keep-alive connection still open after 5 s (--idle-timeout-ms 500)"
    );
    let elapsed = t0.elapsed();
    eprintln!("idle keep-alive connection closed after {elapsed:?}");
    assert!(
        elapsed >= Duration::from_millis(350),
        "idle connection closed after only {elapsed:?}"
    );
}

#[test]
fn active_keep_alive_connection_outlives_idle_timeout() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    let t0 = Instant::now();
    let mut n = 0;
    // Requests every 200 ms for 1.2 s: never idle for 500 ms.
    while t0.elapsed() < Duration::from_millis(1200) {
        c.write(get_req("/ok").as_bytes());
        assert_eq!(
            c.read_response().status,
            200,
            "request #{n} at {:?}",
            t0.elapsed()
        );
        n += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("{n} requests over {:?} on one connection", t0.elapsed());
}
