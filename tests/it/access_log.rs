//! --access-log: Common Log Format lines with ttfb_us / ttlb_us and the
//! request id, or JSON lines (`--access-log-format json`).

use crate::common::*;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct LogLine {
    host: String,
    time: String,
    method: String,
    target: String,
    version: String,
    status: u16,
    bytes: u64,
    ttfb_us: u64,
    ttlb_us: u64,
    request_id: String,
}

/// Parses `127.0.0.1 - - [23/Nov/2026:17:56:43 +0000] "GET /hello HTTP/1.1" 200 14 ttfb_us=12 ttlb_us=15 request_id=ID`.
fn parse_line(line: &str) -> Result<LogLine, String> {
    let err = |what: &str| format!("{what} in access log line {line:?}");
    let (host, rest) = line
        .split_once(" - - [")
        .ok_or_else(|| err("no ` - - [`"))?;
    let (time, rest) = rest.split_once("] \"").ok_or_else(|| err("no `] \"`"))?;
    let (request, rest) = rest
        .split_once("\" ")
        .ok_or_else(|| err("no closing quote"))?;
    let mut req = request.split(' ');
    let (method, target, version) = match (req.next(), req.next(), req.next(), req.next()) {
        (Some(m), Some(t), Some(v), None) => (m, t, v),
        _ => return Err(err("request is not `METHOD TARGET VERSION`")),
    };
    let fields: Vec<&str> = rest.split(' ').collect();
    if fields.len() != 5 {
        return Err(err(
            "expected `STATUS BYTES ttfb_us=N ttlb_us=N request_id=ID` after the request",
        ));
    }
    let request_id = fields[4]
        .strip_prefix("request_id=")
        .filter(|id| !id.is_empty())
        .ok_or_else(|| err("bad request_id field"))?;
    let status = fields[0].parse().map_err(|_| err("bad status"))?;
    let bytes = fields[1].parse().map_err(|_| err("bad byte count"))?;
    let ttfb_us = fields[2]
        .strip_prefix("ttfb_us=")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| err("bad ttfb_us field"))?;
    let ttlb_us = fields[3]
        .strip_prefix("ttlb_us=")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| err("bad ttlb_us field"))?;
    // Time: dd/Mon/yyyy:HH:MM:SS +0000
    let tb = time.as_bytes();
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let time_ok = time.len() == 26
        && tb[2] == b'/'
        && months.contains(&&time[3..6])
        && tb[6] == b'/'
        && tb[11] == b':'
        && tb[14] == b':'
        && tb[17] == b':'
        && &time[20..] == " +0000"
        && [0, 1, 7, 8, 9, 10, 12, 13, 15, 16, 18, 19]
            .iter()
            .all(|&i| tb[i].is_ascii_digit());
    if !time_ok {
        return Err(err("timestamp is not `dd/Mon/yyyy:HH:MM:SS +0000`"));
    }
    Ok(LogLine {
        host: host.to_string(),
        time: time.to_string(),
        method: method.to_string(),
        target: target.to_string(),
        version: version.to_string(),
        status,
        bytes,
        ttfb_us,
        ttlb_us,
        request_id: request_id.to_string(),
    })
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

fn server(log: &str) -> Server {
    Server::start(
        &[("GET:/hello", &static_route("Hello, world!\n"))],
        &["--access-log", log],
    )
}

fn check(lines: &[String], method: &str, target: &str, status: u16, bytes: usize) {
    let parsed: Vec<LogLine> = lines
        .iter()
        .map(|l| parse_line(l).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let l = parsed
        .iter()
        .find(|l| l.method == method && l.target == target)
        .unwrap_or_else(|| panic!("no log line for {method} {target}: {lines:?}"));
    assert_eq!(l.host, "127.0.0.1");
    assert_eq!(l.version, "HTTP/1.1");
    assert_eq!(l.status, status, "{l:?}");
    assert_eq!(l.bytes, bytes as u64, "byte count = body bytes: {l:?}");
    assert!(l.ttfb_us <= l.ttlb_us, "ttfb after ttlb: {l:?}");
    assert!(!l.time.is_empty());
}

#[test]
fn access_log_file_has_common_log_format_lines() {
    let log_dir = crate::common::tempdir().expect("tempdir for access log");
    let log = log_dir.path().join("access.log");
    let s = server(log.to_str().expect("utf-8 path"));
    let mut c = Conn::connect(s.addr());
    c.write(get_req("/hello").as_bytes());
    let ok = c.read_response();
    assert_eq!(ok.status, 200);
    c.write(get_req("/missing?x=1").as_bytes());
    let missing = c.read_response();
    assert_eq!(missing.status, 404);

    let t =
        wait_until(Duration::from_secs(2), || read_lines(&log).len() >= 2).unwrap_or_else(|| {
            panic!(
                "access log has {:?} after 2 s, want 2 lines",
                read_lines(&log)
            )
        });
    eprintln!("access log lines visible after {} ms", t.as_millis());
    let lines = read_lines(&log);
    assert_eq!(lines.len(), 2, "one line per request: {lines:?}");
    check(&lines, "GET", "/hello", 200, ok.body.len());
    check(&lines, "GET", "/missing?x=1", 404, missing.body.len());
    let first = parse_line(&lines[0]).expect("parse first line");
    assert_eq!(
        first.target, "/hello",
        "lines in request order on one connection"
    );
    assert_eq!(
        Some(first.request_id.as_str()),
        ok.header("x-request-id"),
        "the line carries the id the client saw"
    );
}

#[test]
fn json_access_log_names_the_function_its_worker_and_the_request_id() {
    let log_dir = crate::common::tempdir().expect("tempdir for access log");
    let log = log_dir.path().join("access.json");
    let functions = concat!(env!("CARGO_MANIFEST_DIR"), "/functions");
    let s = Server::start_with_demo(&[
        "--access-log",
        log.to_str().expect("utf-8 path"),
        "--access-log-format",
        "json",
        "--functions-dir",
        functions,
    ]);
    let mut c = Conn::connect(s.addr());
    c.write(b"GET /wasm/hello HTTP/1.1\r\nHost: t\r\nx-request-id: trace-42\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-request-id"), Some("trace-42"));
    c.write(get_req("/missing").as_bytes());
    assert_eq!(c.read_response().status, 404);
    wait_until(Duration::from_secs(3), || read_lines(&log).len() >= 2)
        .unwrap_or_else(|| panic!("access log has {:?}", read_lines(&log)));
    let lines: Vec<serde_json::Value> = read_lines(&log)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let call = &lines[0];
    assert_eq!(call["request"], "GET /wasm/hello HTTP/1.1");
    assert_eq!(call["request_id"], "trace-42");
    assert_eq!(call["status"], 200);
    assert_eq!(call["function"], "GET:/wasm/hello");
    assert_eq!(call["version"], 0);
    assert!(call["worker"].is_u64(), "{call}");
    assert_eq!(call["bytes"].as_u64(), Some(r.body.len() as u64));
    assert!(call["ttfb_us"].as_u64() <= call["ttlb_us"].as_u64());
    assert!(
        call["ts"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{call}"
    );
    let missing = &lines[1];
    assert_eq!(missing["status"], 404);
    assert!(missing["function"].is_null() && missing["worker"].is_null());
    assert_eq!(missing["request_id"].as_str().map(str::len), Some(32));
}

#[test]
fn access_log_flushed_at_exit() {
    let log_dir = crate::common::tempdir().expect("tempdir for access log");
    let log = log_dir.path().join("access.log");
    let mut s = server(log.to_str().expect("utf-8 path"));
    let r = get(s.addr(), "/hello");
    assert_eq!(r.status, 200);
    let t0 = Instant::now();
    s.signal(libc::SIGTERM);
    let status = s
        .wait_exit(Duration::from_secs(5))
        .expect("exit within 5 s");
    eprintln!("exited after {:?} with {status}", t0.elapsed());
    assert_eq!(status.code(), Some(0));
    let lines = read_lines(&log);
    assert_eq!(lines.len(), 1, "the request is logged by exit: {lines:?}");
    check(&lines, "GET", "/hello", 200, 14);
}

#[test]
fn access_log_dash_writes_to_stdout() {
    let s = server("-");
    let r = get(s.addr(), "/hello");
    assert_eq!(r.status, 200);
    let t = wait_until(Duration::from_secs(2), || {
        s.stdout_lines()
            .iter()
            .any(|l| l.contains("\"GET /hello HTTP/1.1\""))
    })
    .unwrap_or_else(|| panic!("no access log line on stdout: {:?}", s.stdout_lines()));
    eprintln!("stdout access log line after {} ms", t.as_millis());
    let lines: Vec<String> = s
        .stdout_lines()
        .into_iter()
        .filter(|l| !l.starts_with("corefn listening on"))
        .collect();
    check(&lines, "GET", "/hello", 200, 14);
}

#[test]
fn head_request_logs_zero_body_bytes() {
    let log_dir = crate::common::tempdir().expect("tempdir for access log");
    let log = log_dir.path().join("access.log");
    let s = server(log.to_str().expect("utf-8 path"));
    let mut c = Conn::connect(s.addr());
    c.write(b"HEAD /hello HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(c.read_response_to_head_request().status, 200);
    wait_until(Duration::from_secs(2), || !read_lines(&log).is_empty())
        .expect("HEAD request not logged within 2 s");
    check(&read_lines(&log), "HEAD", "/hello", 200, 0);
}
