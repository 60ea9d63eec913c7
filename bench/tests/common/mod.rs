//! What the bench package's tests share: starting one of its servers on a
//! port the kernel picks, and bounded reads.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The fixed answer of corefn-ceiling and corefn-hop.
pub const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 14\r\n\r\nHello, world!\n";

/// A running server of this package, killed on drop.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `binary` (named `name`) on one core and a port the kernel
/// picks, with `extra` arguments, and reads the port from its readiness
/// line.
pub fn start(binary: &str, name: &str, extra: &[&str]) -> Server {
    let mut child = Command::new(binary)
        .args(["--listen", "127.0.0.1:0", "--cores", "1"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(TIMEOUT).unwrap_or_default();
    let addr = line
        .trim()
        .strip_prefix(&format!("{name} listening on http://"))
        .and_then(|a| a.parse().ok());
    match addr {
        Some(addr) => Server { child, addr },
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name}: no readiness line within {TIMEOUT:?}: {line:?}");
        }
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
    stream
        .set_read_timeout(Some(TIMEOUT))
        .expect("read timeout");
    stream
}

pub fn read_exactly(stream: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    stream.read_exact(&mut buf).expect("read the responses");
    buf
}
