//! corefn-hop over loopback, in each of its modes: every request is
//! answered by its second process, on the connection it came on, in order,
//! and a mode that keeps a connection's socket lets go of it when the
//! connection ends. Every wait is bounded.

mod common;

use std::io::Write;
use std::time::Instant;

use common::{connect, read_exactly, start, Server, RESPONSE, TIMEOUT};

const REQUEST: &[u8] = b"GET /hello HTTP/1.1\r\nHost: hop\r\n\r\n";
const MODES: [&str; 5] = ["socket", "fd-once", "ring", "rings", "completion-ring"];

fn start_mode(mode: &str) -> Server {
    start(
        env!("CARGO_BIN_EXE_corefn-hop"),
        "corefn-hop",
        &["--mode", mode],
    )
}

/// The second process's pid: the one child of the first.
fn second_process(hop: &Server) -> u32 {
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", hop.child.id()))
        .expect("children of corefn-hop");
    let pids: Vec<u32> = children
        .split_whitespace()
        .map(|pid| pid.parse().expect("a pid"))
        .collect();
    assert_eq!(pids.len(), 1, "{children:?}");
    pids[0]
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the second process's descriptors")
        .count()
}

#[test]
fn each_request_is_answered_by_the_second_process_on_its_own_connection() {
    for mode in MODES {
        let hop = start_mode(mode);
        // The answers come from a real second process, a child of the first.
        second_process(&hop);
        let mut a = connect(hop.addr);
        let mut b = connect(hop.addr);
        for _ in 0..50 {
            for stream in [&mut a, &mut b] {
                stream.write_all(REQUEST).expect("write");
            }
            for stream in [&mut a, &mut b] {
                assert_eq!(read_exactly(stream, RESPONSE.len()), RESPONSE, "{mode}");
            }
        }
        // Two heads in one write: answered one after the other.
        a.write_all(&REQUEST.repeat(2)).expect("write");
        assert_eq!(
            read_exactly(&mut a, 2 * RESPONSE.len()),
            RESPONSE.repeat(2),
            "{mode}"
        );
    }
}

#[test]
fn the_second_process_lets_go_of_ended_connections() {
    for mode in MODES {
        let hop = start_mode(mode);
        let worker = second_process(&hop);
        let before = open_descriptors(worker);
        for _ in 0..20 {
            let mut stream = connect(hop.addr);
            for _ in 0..3 {
                stream.write_all(REQUEST).expect("write");
                assert_eq!(
                    read_exactly(&mut stream, RESPONSE.len()),
                    RESPONSE,
                    "{mode}"
                );
            }
        }
        let deadline = Instant::now() + TIMEOUT;
        while open_descriptors(worker) != before {
            assert!(
                Instant::now() < deadline,
                "{mode}: the second process holds {} descriptors, {before} before 20 ended \
                 connections",
                open_descriptors(worker)
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
