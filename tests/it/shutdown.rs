//! Graceful shutdown on SIGTERM / SIGINT.

use crate::common::*;
use std::net::TcpStream;
use std::thread::sleep;
use std::time::{Duration, Instant};

fn routes() -> Vec<(&'static str, String)> {
    vec![
        ("GET:/ok", static_route("ok\n")),
        ("POST:/submit", static_route("submitted")),
    ]
}

fn start(extra: &[&str]) -> Server {
    let r = routes();
    let rows: Vec<(&str, &str)> = r.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Server::start(&rows, extra)
}

/// Polls until a new connection to `s` is refused (max 3 s).
fn wait_refused(s: &Server) -> Option<Duration> {
    wait_until(Duration::from_secs(3), || {
        TcpStream::connect_timeout(&s.addr(), Duration::from_millis(500)).is_err()
    })
}

#[test]
fn sigterm_completes_in_flight_request_closes_idle_and_exits_zero() {
    let mut s = start(&[]);

    // An idle keep-alive connection that completed a request before the signal.
    let mut idle = Conn::connect(s.addr());
    idle.write(get_req("/ok").as_bytes());
    assert_eq!(idle.read_response().status, 200);

    // A request in flight: head + half of the body.
    let mut inflight = Conn::connect(s.addr());
    inflight.write(b"POST /submit HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\n12345");
    sleep(Duration::from_millis(200));

    let t_signal = Instant::now();
    s.signal(libc::SIGTERM);
    sleep(Duration::from_millis(300));

    let refused = wait_refused(&s);
    assert!(
        refused.is_some(),
        "new connections still accepted 3 s after SIGTERM"
    );
    eprintln!(
        "new connections refused {:?} after SIGTERM",
        t_signal.elapsed()
    );

    assert!(
        idle.is_closed_by_peer(Duration::from_secs(3)),
        "idle keep-alive connection not closed on shutdown"
    );
    assert!(
        s.wait_exit(Duration::from_millis(1)).is_none(),
        "server exited before the in-flight request completed"
    );

    inflight.write(b"67890");
    let r = inflight.read_response();
    assert_eq!(
        r.status,
        200,
        "in-flight request completes; body {:?}",
        r.text()
    );
    assert_eq!(r.text(), "submitted");
    assert!(
        r.is_connection_close(),
        "response during shutdown must carry connection: close: {:?}",
        r.headers
    );
    assert!(
        inflight.is_closed_by_peer(Duration::from_secs(3)),
        "in-flight connection not closed after its response"
    );

    let status = s
        .wait_exit(Duration::from_secs(5))
        .expect("server did not exit within 5 s after the last request completed");
    eprintln!(
        "exited {:?} after SIGTERM with {status}",
        t_signal.elapsed()
    );
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

#[test]
fn sigint_without_traffic_exits_zero_quickly() {
    let mut s = start(&[]);
    assert_eq!(get(s.addr(), "/ok").status, 200);
    let t0 = Instant::now();
    s.signal(libc::SIGINT);
    let status = s
        .wait_exit(Duration::from_secs(5))
        .expect("server did not exit within 5 s of SIGINT");
    eprintln!("exited {:?} after SIGINT with {status}", t0.elapsed());
    assert_eq!(status.code(), Some(0), "exit status {status}");
    // Once the process is gone nothing may accept on its port any more
    // (a listener kept alive past exit, e.g. by a pending io_uring accept,
    // would queue connections nobody serves).
    let accepted = (0..20)
        .filter(|_| {
            let ok = TcpStream::connect_timeout(&s.addr(), Duration::from_millis(200)).is_ok();
            sleep(Duration::from_millis(5));
            ok
        })
        .count();
    assert_eq!(
        accepted, 0,
        "{accepted} of 20 connections accepted on the port after the process exited"
    );
}

#[test]
fn sigterm_exits_zero_after_grace_even_with_stuck_request() {
    let mut s = start(&["--shutdown-grace-ms", "500"]);
    let mut stuck = Conn::connect(s.addr());
    stuck.write(b"POST /submit HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\n123");
    sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    s.signal(libc::SIGTERM);
    let status = s
        .wait_exit(Duration::from_secs(5))
        .expect("server did not exit within 5 s with --shutdown-grace-ms 500");
    let took = t0.elapsed();
    eprintln!("exited {took:?} after SIGTERM (grace 500 ms) with {status}");
    assert_eq!(status.code(), Some(0), "exit status after grace {status}");
    assert!(
        took >= Duration::from_millis(400),
        "exited after {took:?}: the in-flight request should get its grace period"
    );
    assert!(
        stuck.is_closed_by_peer(Duration::from_secs(2)),
        "stuck connection not closed at exit"
    );
}

#[test]
fn sigterm_with_idle_keep_alive_connections_exits_promptly() {
    let mut s = start(&[]);
    let mut conns: Vec<Conn> = (0..5).map(|_| Conn::connect(s.addr())).collect();
    for c in conns.iter_mut() {
        c.write(get_req("/ok").as_bytes());
        assert_eq!(c.read_response().status, 200);
    }
    let t0 = Instant::now();
    s.signal(libc::SIGTERM);
    let status = s
        .wait_exit(Duration::from_secs(5))
        .expect("server with only idle connections did not exit within 5 s");
    eprintln!(
        "exited {:?} after SIGTERM with 5 idle connections",
        t0.elapsed()
    );
    assert_eq!(status.code(), Some(0));
    for (i, c) in conns.iter_mut().enumerate() {
        assert!(
            c.is_closed_by_peer(Duration::from_secs(1)),
            "idle connection #{i} not closed"
        );
    }
}
