//! corefn-ceiling over loopback: one request, pipelined requests, a head
//! split across writes. Every wait is bounded.
//!
//! Being an integration test of this package, it also makes
//! `cargo test --workspace` build this package's binaries (corefn-bench
//! among them) before any test runs, as the server's bench smoke test needs.

mod common;

use std::io::Write;
use std::thread;
use std::time::Duration;

use common::{connect, read_exactly, start, RESPONSE};

const REQUEST: &[u8] = b"GET /hello HTTP/1.1\r\nHost: ceiling\r\n\r\n";

#[test]
fn answers_every_request_head_with_the_fixed_response() {
    let ceiling = start(env!("CARGO_BIN_EXE_corefn-ceiling"), "corefn-ceiling", &[]);
    let mut stream = connect(ceiling.addr);

    stream.write_all(REQUEST).unwrap();
    assert_eq!(read_exactly(&mut stream, RESPONSE.len()), RESPONSE);

    // Three pipelined heads in one write: three responses.
    stream.write_all(&REQUEST.repeat(3)).unwrap();
    assert_eq!(
        read_exactly(&mut stream, 3 * RESPONSE.len()),
        RESPONSE.repeat(3)
    );

    // A head whose end straddles two writes is answered once it is complete.
    let (first, second) = REQUEST.split_at(REQUEST.len() - 2);
    stream.write_all(first).unwrap();
    thread::sleep(Duration::from_millis(50));
    stream.write_all(second).unwrap();
    assert_eq!(read_exactly(&mut stream, RESPONSE.len()), RESPONSE);
}
