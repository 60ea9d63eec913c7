//! Request ids: every response carries `x-request-id`, the client's when
//! it is 1..=128 bytes of `[A-Za-z0-9-_.:/+=@]`, else one the gateway
//! made (32 hex digits); the function sees the same id as a request header
//! (python's request headers, CGI's `HTTP_X_REQUEST_ID`), and its log
//! lines carry it, so `…/logs?request_id=ID` finds one call's START, what
//! it printed and its END.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::control::ControlServer;
use crate::common::*;

fn is_generated_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn request_id(r: &Response) -> String {
    assert_eq!(
        r.header_count("x-request-id"),
        1,
        "one x-request-id on every response: {:?}",
        r.headers
    );
    r.header("x-request-id").unwrap_or_default().to_string()
}

/// GET on a fresh connection with `x-request-id: ID`.
fn get_with_id(addr: std::net::SocketAddr, path: &str, id: &str) -> Response {
    send(
        addr,
        format!(
            "GET {path} HTTP/1.1\r\nHost: test\r\nX-Request-Id: {id}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
}

/// The NDJSON lines of a logs query, once one of them is an END line
/// (the log thread writes them a moment after the call).
fn log_lines(addr: std::net::SocketAddr, path: &str) -> Vec<Value> {
    let mut lines = Vec::new();
    let ended = wait_until(Duration::from_secs(5), || {
        let r = get(addr, path);
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        lines = r
            .text()
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("NDJSON line {line:?}: {e}"))
            })
            .collect();
        lines.iter().any(|l: &Value| {
            l["stream"] == "system" && l["text"].as_str().is_some_and(|t| t.starts_with("END "))
        })
    });
    assert!(ended.is_some(), "no END line from {path}: {lines:?}");
    lines
}

/// One call's log: START first, END (with `status`) last, every line of
/// it carrying `id`, and a line of `stream` that contains `printed`.
fn assert_call_log(lines: &[Value], function: &str, id: &str, stream: &str, printed: &str) {
    assert!(lines.len() >= 3, "START, output, END: {lines:?}");
    for line in lines {
        assert_eq!(line["request_id"], id, "every line has the id: {line}");
        assert_eq!(line["function"], function, "{line}");
        assert!(
            line["ts"].as_str().is_some_and(|ts| ts.ends_with('Z')),
            "{line}"
        );
    }
    let first = &lines[0];
    assert_eq!(first["stream"], "system", "{first}");
    assert!(
        first["text"]
            .as_str()
            .is_some_and(|t| t.starts_with(&format!("START RequestId: {id}"))),
        "{first}"
    );
    let last = &lines[lines.len() - 1];
    assert_eq!(last["stream"], "system", "{last}");
    let end = last["text"].as_str().unwrap_or_default();
    assert!(
        end.starts_with(&format!("END RequestId: {id}")) && end.contains("Status: 200"),
        "{last}"
    );
    assert!(!end.contains("Failure:"), "a call that succeeded: {last}");
    assert!(
        lines
            .iter()
            .any(|l| l["stream"] == stream
                && l["text"].as_str().is_some_and(|t| t.contains(printed))),
        "a {stream} line with {printed:?}: {lines:?}"
    );
}

#[test]
fn a_client_request_id_is_kept_and_reaches_the_function_and_its_log() {
    let s = ControlServer::start();
    let addr = s.server.addr();
    let code = "def handle(request):\n    \
                    rid = request.headers.get('x-request-id', '')\n    \
                    print(f'handling request {rid}')\n    \
                    return (200, {'content-type': 'text/plain'}, f'request id: {rid}\\n')\n";
    let r = s.deploy_json(&json!({"name": "rid", "runtime": "python", "code": code}));
    assert_eq!(r.status, 201, "{}", r.text());
    let mut warm = get(addr, "/fn/rid");
    wait_until(Duration::from_secs(5), || {
        warm = get(addr, "/fn/rid");
        warm.status != 404
    });
    assert_eq!(warm.status, 200, "{}", warm.text());
    // Without one of its own, the function sees the gateway's.
    let made = request_id(&warm);
    assert!(is_generated_id(&made), "{made:?}");
    assert_eq!(warm.text(), format!("request id: {made}\n"));

    let id = "test-abc-123";
    let r = get_with_id(addr, "/fn/rid", id);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(request_id(&r), id, "the client's id comes back");
    assert_eq!(
        r.text(),
        format!("request id: {id}\n"),
        "the function saw it"
    );

    let lines = log_lines(
        addr,
        &format!("/_/api/v1/functions/rid/logs?request_id={id}"),
    );
    assert_call_log(
        &lines,
        "rid",
        id,
        "stdout",
        &format!("handling request {id}"),
    );
    assert!(
        lines.iter().all(|l| l["version"] == 1),
        "the deployed version: {lines:?}"
    );
    // The other calls are in the log, not in this answer.
    let everything = log_lines(addr, "/_/api/v1/functions/rid/logs?tail=1000");
    assert!(
        everything.iter().any(|l| l["request_id"] == made.as_str()),
        "{everything:?}"
    );
    let none = get(addr, "/_/api/v1/functions/rid/logs?request_id=no-such-call");
    assert_eq!(none.status, 200, "{}", none.text());
    assert_eq!(none.text(), "", "no line of another call");
}

fn write_script(dir: &Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[test]
fn an_invalid_or_missing_request_id_is_replaced() {
    let functions = crate::common::tempdir().expect("functions tempdir");
    write_script(
        functions.path(),
        "rid.sh",
        "echo \"rid.sh saw $HTTP_X_REQUEST_ID\" >&2\n\
         printf 'Content-Type: text/plain\\n\\n%s\\n' \"$HTTP_X_REQUEST_ID\"",
    );
    let exec = json!({"runtime": "exec", "module": "rid.sh"}).to_string();
    let s = WorkerServer::start(
        &[
            ("GET:/rid", &exec),
            ("GET:/static", &static_route("static\n")),
        ],
        functions.path(),
        &[],
    );
    let addr = s.addr();

    // None: a new id, the one the CGI script sees; never the same twice.
    let mut ids = std::collections::BTreeSet::new();
    for round in 0..5 {
        let r = get(addr, "/rid");
        assert_eq!(r.status, 200, "round {round}: {}", r.text());
        let id = request_id(&r);
        assert!(is_generated_id(&id), "round {round}: {id:?}");
        assert_eq!(r.text(), format!("{id}\n"), "HTTP_X_REQUEST_ID is the id");
        assert!(ids.insert(id), "round {round}: a fresh id");
    }
    // On one kept-alive connection, too: an id per request.
    let mut c = Conn::connect(addr);
    for round in 0..3 {
        c.write(get_req("/rid").as_bytes());
        let r = c.read_response();
        let id = request_id(&r);
        assert!(is_generated_id(&id), "{id:?}");
        assert_eq!(r.text(), format!("{id}\n"));
        assert!(ids.insert(id), "keep-alive round {round}: a fresh id");
    }

    // Invalid: replaced, and the function sees the replacement.
    let too_long = "a".repeat(129);
    let far_too_long = "b".repeat(200);
    for bad in [
        "has space",
        "angle<brackets>",
        "semi;colon",
        "quote\"d",
        too_long.as_str(),
        far_too_long.as_str(),
    ] {
        let r = get_with_id(addr, "/rid", bad);
        assert_eq!(r.status, 200, "{bad:?}: {}", r.text());
        let id = request_id(&r);
        assert!(is_generated_id(&id), "{bad:?} is replaced: {id:?}");
        assert_eq!(r.text(), format!("{id}\n"), "{bad:?}");
        assert!(ids.insert(id), "{bad:?}: a fresh id");
    }
    // Valid: kept, up to 128 bytes and with every punctuation allowed.
    let longest = "c".repeat(128);
    for good in ["x", "A-b_c.d:e/f+g=h@9", longest.as_str()] {
        let r = get_with_id(addr, "/rid", good);
        assert_eq!(request_id(&r), good, "kept");
        assert_eq!(r.text(), format!("{good}\n"), "the function sees it");
    }

    // Responses the gateway writes itself carry one too.
    let r = get(addr, "/static");
    assert_eq!((r.status, r.text().as_str()), (200, "static\n"));
    assert!(is_generated_id(&request_id(&r)), "{:?}", r.headers);
    assert_eq!(
        request_id(&get_with_id(addr, "/static", "static-1")),
        "static-1"
    );
    let r = get(addr, "/no/such/route");
    assert_eq!(r.status, 404);
    assert!(is_generated_id(&request_id(&r)), "{:?}", r.headers);
    let r = get_with_id(addr, "/no/such/route", "missing-1");
    assert_eq!((r.status, request_id(&r).as_str()), (404, "missing-1"));
    let r = get_with_id(addr, "/no/such/route", "bad id");
    assert!(is_generated_id(&request_id(&r)), "{:?}", r.headers);

    // The hand-written route's log finds the call by its id.
    let id = "exec-call-7";
    let r = get_with_id(addr, "/rid", id);
    assert_eq!(r.text(), format!("{id}\n"));
    let lines = log_lines(
        addr,
        &format!("/_/api/v1/logs?route=GET:/rid&request_id={id}"),
    );
    assert_call_log(
        &lines,
        "GET:/rid",
        id,
        "stderr",
        &format!("rid.sh saw {id}"),
    );
}
