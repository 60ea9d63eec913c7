//! corefn-ceiling over loopback: one request, pipelined requests, a head
//! split across writes. Every wait is bounded.
//!
//! Being an integration test of this package, it also makes
//! `cargo test --workspace` build this package's binaries (corefn-bench
//! among them) before any test runs, as the server's bench smoke test needs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);
const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 14\r\n\r\nHello, world!\n";
const REQUEST: &[u8] = b"GET /hello HTTP/1.1\r\nHost: ceiling\r\n\r\n";

/// A running corefn-ceiling, killed on drop.
struct Ceiling {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Ceiling {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts it on one core and a port the kernel picks, and reads the port
/// from its readiness line.
fn start() -> Ceiling {
    let mut child = Command::new(env!("CARGO_BIN_EXE_corefn-ceiling"))
        .args(["--listen", "127.0.0.1:0", "--cores", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn corefn-ceiling");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = match rx.recv_timeout(TIMEOUT) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("corefn-ceiling printed no readiness line within {TIMEOUT:?}");
        }
    };
    let addr = line
        .trim()
        .strip_prefix("corefn-ceiling listening on http://")
        .and_then(|a| a.parse().ok());
    match addr {
        Some(addr) => Ceiling { child, addr },
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("unexpected readiness line {line:?}");
        }
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream
}

fn read_exactly(stream: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    stream.read_exact(&mut buf).expect("read the responses");
    buf
}

#[test]
fn answers_every_request_head_with_the_fixed_response() {
    let ceiling = start();
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
