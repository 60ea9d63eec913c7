//! corefn-hop over loopback: every request is answered by its second
//! process, on the connection it came on, in order. Every wait is bounded.

mod common;

use std::io::Write;

use common::{connect, read_exactly, start, RESPONSE};

const REQUEST: &[u8] = b"GET /hello HTTP/1.1\r\nHost: hop\r\n\r\n";

#[test]
fn each_request_is_answered_by_the_second_process_on_its_own_connection() {
    let hop = start(env!("CARGO_BIN_EXE_corefn-hop"), "corefn-hop");
    // The answers come from a real second process, a child of the first.
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", hop.child.id()))
        .expect("children of corefn-hop");
    assert_eq!(children.split_whitespace().count(), 1, "{children:?}");

    let mut a = connect(hop.addr);
    let mut b = connect(hop.addr);
    for _ in 0..50 {
        for stream in [&mut a, &mut b] {
            stream.write_all(REQUEST).expect("write");
        }
        for stream in [&mut a, &mut b] {
            assert_eq!(read_exactly(stream, RESPONSE.len()), RESPONSE);
        }
    }
    // Two heads in one write: answered one after the other.
    a.write_all(&REQUEST.repeat(2)).expect("write");
    assert_eq!(read_exactly(&mut a, 2 * RESPONSE.len()), RESPONSE.repeat(2));
}
