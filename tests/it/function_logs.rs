//! Function logs through the API: START/END lines per call with the
//! function's own output, a live follow (chunked NDJSON), rotation at
//! `--log-file-bytes-max`, a follower that never reads, and a deleted
//! function's logs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::control::ControlServer;
use crate::common::*;

/// A python function that prints `lines` lines of `width` characters.
fn chatty(lines: usize, width: usize) -> String {
    format!(
        "def handle(request):\n    for i in range({lines}):\n        print(str(i).rjust({width}, '.'))\n    return (200, {{}}, 'ok')\n"
    )
}

fn deploy_python(s: &ControlServer, name: &str, code: &str) {
    let r = s.deploy_json(&json!({"name": name, "runtime": "python", "code": code}));
    assert_eq!(r.status, 201, "{}", r.text());
}

/// Calls `/fn/NAME` with a request id; returns the status.
fn call(s: &ControlServer, name: &str, request_id: &str) -> u16 {
    let raw = format!(
        "GET /fn/{name} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nx-request-id: {request_id}\r\n\r\n"
    );
    let r = send(s.server.addr(), raw.as_bytes());
    if r.status != 200 {
        eprintln!("/fn/{name} ({request_id}): {} {}", r.status, r.text());
    }
    r.status
}

fn log_lines(s: &ControlServer, name: &str, query: &str) -> Vec<Value> {
    let r = get(
        s.server.addr(),
        &format!("/_/api/v1/functions/{name}/logs?{query}"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

/// A follow connection: reads the chunked NDJSON stream line by line.
struct Follow {
    stream: TcpStream,
    /// Decoded body bytes not yet split into lines.
    pending: Vec<u8>,
    /// Raw bytes not yet decoded.
    raw: Vec<u8>,
}

impl Follow {
    /// `receive_buffer`: the client's SO_RCVBUF (small: a slow reader).
    fn open(s: &ControlServer, name: &str, receive_buffer: Option<usize>) -> Follow {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        if let Some(bytes) = receive_buffer {
            socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        }
        socket
            .connect(&s.server.addr().into())
            .expect("connect to follow");
        let mut stream: TcpStream = socket.into();
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let raw = format!(
            "GET /_/api/v1/functions/{name}/logs?follow=1&tail=0 HTTP/1.1\r\nHost: t\r\n\r\n"
        );
        stream.write_all(raw.as_bytes()).expect("send follow");
        let mut follow = Follow {
            stream,
            pending: Vec::new(),
            raw: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let head_end = loop {
            if let Some(at) = follow.raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            assert!(Instant::now() < deadline, "no follow response head");
            follow.read_some();
        };
        let head = String::from_utf8_lossy(&follow.raw[..head_end]).to_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        assert!(head.contains("application/x-ndjson"), "{head}");
        follow.raw.drain(..head_end);
        follow
    }

    fn read_some(&mut self) -> bool {
        let mut buffer = [0u8; 16 * 1024];
        match self.stream.read(&mut buffer) {
            Ok(0) => false,
            Ok(n) => {
                self.raw.extend_from_slice(&buffer[..n]);
                true
            }
            Err(_) => false,
        }
    }

    /// Moves complete chunks from `raw` into `pending`.
    fn decode(&mut self) {
        while let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") {
            let size_text = String::from_utf8_lossy(&self.raw[..line_end]).to_string();
            let size = usize::from_str_radix(size_text.trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
            assert!(size > 0, "the stream ended");
            if self.raw.len() < line_end + 2 + size + 2 {
                return;
            }
            let data = self.raw[line_end + 2..line_end + 2 + size].to_vec();
            self.pending.extend_from_slice(&data);
            self.raw.drain(..line_end + 2 + size + 2);
        }
    }

    /// Lines until `done` says enough, or `timeout`.
    fn lines_until(&mut self, timeout: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut lines = Vec::new();
        while !done(&lines) && Instant::now() < deadline {
            self.read_some();
            self.decode();
            while let Some(at) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=at).collect();
                let text = String::from_utf8_lossy(&line);
                lines.push(
                    serde_json::from_str(text.trim_end())
                        .unwrap_or_else(|e| panic!("{e}: {text:?}")),
                );
            }
        }
        lines
    }
}

fn text(line: &Value) -> &str {
    line["text"].as_str().unwrap_or("")
}

fn ends(lines: &[Value]) -> usize {
    lines.iter().filter(|l| text(l).starts_with("END ")).count()
}

#[test]
fn a_follower_reads_start_output_and_end_of_fifty_calls_in_order() {
    let s = ControlServer::start();
    deploy_python(&s, "chatty", &chatty(1, 8));
    s.served("/fn/chatty", "ok");
    // The warm-up call's lines reach the log after its answer: a follower
    // opened before its END is written would read them as new.
    assert!(
        wait_until(Duration::from_secs(10), || ends(&log_lines(
            &s, "chatty", "tail=10"
        )) >= 1)
        .is_some(),
        "the warm-up call's END never reached the log"
    );
    let mut follow = Follow::open(&s, "chatty", None);
    for i in 0..50 {
        assert_eq!(call(&s, "chatty", &format!("call-{i}")), 200);
    }
    let lines = follow.lines_until(Duration::from_secs(20), |l| ends(l) >= 50);
    assert_eq!(ends(&lines), 50, "{lines:#?}");
    // Per call, in call order: START, its printed line, END.
    let mut expected = 0;
    let mut seen_start = false;
    for line in &lines {
        let id = format!("call-{expected}");
        assert_eq!(line["function"], "chatty");
        assert_eq!(line["version"], 1);
        assert_eq!(line["request_id"], id.as_str(), "{line}");
        match (text(line).split(' ').next(), line["stream"].as_str()) {
            (Some("START"), Some("system")) => {
                assert!(!seen_start, "two STARTs for {id}");
                seen_start = true;
            }
            (Some("END"), Some("system")) => {
                assert!(seen_start, "END before START for {id}");
                assert!(text(line).contains("Status: 200"), "{line}");
                seen_start = false;
                expected += 1;
            }
            (_, Some("stdout")) => assert_eq!(text(line), ".......0"),
            _ => panic!("unexpected line {line}"),
        }
    }
    assert_eq!(expected, 50);
}

#[test]
fn a_log_file_is_rotated_at_its_cap_and_reads_stay_in_order() {
    let s = ControlServer::start_with(&["--log-file-bytes-max", "8192", "--log-files-kept", "2"]);
    deploy_python(&s, "rotating", &chatty(4, 100));
    s.served("/fn/rotating", "ok");
    let calls = 120;
    for i in 0..calls {
        assert_eq!(call(&s, "rotating", &format!("r-{i}")), 200);
    }
    let dir = s.server.dir().join("corefn-logs").join("rotating");
    let last = format!("r-{}", calls - 1);
    wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(dir.join("current.log")).is_ok_and(|t| t.contains(&last))
    })
    .expect("the last call's lines reach the file");
    let size = |name: &str| std::fs::metadata(dir.join(name)).map(|m| m.len());
    let current = size("current.log").expect("current.log");
    assert!(current <= 8192, "current.log has {current} bytes");
    for kept in ["1.log", "2.log"] {
        let bytes = size(kept).unwrap_or_else(|e| panic!("{kept}: {e}"));
        assert!(bytes > 4096 && bytes <= 8192, "{kept} has {bytes} bytes");
    }
    assert!(size("3.log").is_err(), "only two rotated files are kept");
    // What the files still hold, oldest first, without the oldest calls.
    let lines = log_lines(&s, "rotating", "tail=10000");
    assert!(!lines.is_empty());
    let stamps: Vec<&str> = lines.iter().filter_map(|l| l["ts"].as_str()).collect();
    assert!(
        stamps.windows(2).all(|w| w[0] <= w[1]),
        "lines in time order"
    );
    assert_eq!(
        lines.last().map(text).map(|t| t.starts_with("END")),
        Some(true)
    );
    assert!(
        lines.iter().all(|l| l["request_id"] != "r-0"),
        "the first call's lines were rotated away"
    );
    for bad in ["tail=many", "since=yesterday"] {
        let r = get(
            s.server.addr(),
            &format!("/_/api/v1/functions/rotating/logs?{bad}"),
        );
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
    let tail = log_lines(&s, "rotating", "tail=3");
    assert_eq!(tail.len(), 3);
    assert_eq!(tail[2], *lines.last().expect("lines"));
}

#[test]
fn a_follower_that_never_reads_does_not_hold_calls_and_learns_of_its_drops() {
    let s = ControlServer::start();
    deploy_python(&s, "loud", &chatty(20, 200));
    s.served("/fn/loud", "ok");
    // A tiny receive window and no reads: the stream backs up at once.
    let mut follow = Follow::open(&s, "loud", Some(4096));
    let calls = 300;
    for i in 0..calls {
        assert_eq!(call(&s, "loud", &format!("l-{i}")), 200, "call {i}");
    }
    // Every call was logged to the file whatever the follower did.
    let last = format!("l-{}", calls - 1);
    wait_until(Duration::from_secs(5), || {
        log_lines(&s, "loud", &format!("request_id={last}"))
            .iter()
            .any(|l| text(l).starts_with("END"))
    })
    .expect("the last call's END is in the log");
    let dropped = |lines: &[Value]| {
        lines
            .iter()
            .any(|l| l["stream"] == "system" && text(l).contains("dropped"))
    };
    let lines = follow.lines_until(Duration::from_secs(20), dropped);
    assert!(
        dropped(&lines),
        "no drop marker in {} lines read",
        lines.len()
    );
    let metrics = get(s.server.addr(), "/metrics").text();
    let dropped_total = metrics
        .lines()
        .find_map(|l| l.strip_prefix("corefn_log_lines_dropped_total "))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("corefn_log_lines_dropped_total");
    assert!(dropped_total > 0.0, "drops are counted: {dropped_total}");
}

#[test]
fn logs_of_a_deleted_function_are_gone() {
    let s = ControlServer::start();
    deploy_python(&s, "brief", &chatty(1, 4));
    s.served("/fn/brief", "ok");
    assert_eq!(call(&s, "brief", "b-1"), 200);
    let dir = s.server.dir().join("corefn-logs").join("brief");
    wait_until(Duration::from_secs(5), || {
        log_lines(&s, "brief", "request_id=b-1").len() >= 3
    })
    .expect("START, output and END of b-1");
    assert!(dir.is_dir());
    // The list shows each function's last five minutes.
    let list = get(s.server.addr(), "/_/api/v1/functions").json();
    let brief = &list["functions"][0];
    assert_eq!(brief["name"], "brief");
    let stats = get(s.server.addr(), "/_/api/v1/functions/brief/stats?window=5m").json();
    assert!(
        stats["count"].as_u64() >= Some(2),
        "served() and b-1: {stats}"
    );
    assert_eq!(brief["last_5m"]["count"], stats["count"], "{list}");
    assert_eq!(brief["last_5m"]["p99_us"], stats["latency_us"]["p99"]);
    let r = s.admin("DELETE", "functions/brief", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!dir.exists(), "{} still exists", dir.display());
    let r = get(s.server.addr(), "/_/api/v1/functions/brief/logs");
    assert_eq!(r.status, 404, "{}", r.text());
}

#[test]
fn without_call_lines_only_what_a_function_prints_is_logged() {
    let s = ControlServer::start_with(&["--log-call-lines", "false"]);
    deploy_python(&s, "quiet", &chatty(1, 3));
    s.served("/fn/quiet", "ok");
    assert_eq!(call(&s, "quiet", "q-1"), 200);
    let mut lines = Vec::new();
    wait_until(Duration::from_secs(5), || {
        lines = log_lines(&s, "quiet", "request_id=q-1");
        !lines.is_empty()
    })
    .expect("the printed line is logged");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["stream"], "stdout");
    assert_eq!(text(&lines[0]), "..0");
}
