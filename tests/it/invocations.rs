//! Async invocations: a call is accepted once it is on disk (202 and an
//! id), runs through the data path, is retried on 5xx with backoff until
//! it succeeds or is dead-lettered, reaches a callback URL, and survives a
//! SIGKILL of the gateway. Real server, real workers, real exec functions.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::control::ControlServer;
use crate::common::*;

/// Deploys and returns at once: a call queued right after a deploy waits
/// for the watcher to publish the function (each test here queues its
/// first call straight away, so each checks that too).
fn deploy_exec(s: &ControlServer, name: &str, script: &str) {
    let r = s.deploy_json(&json!({"name": name, "runtime": "exec", "code": script}));
    assert_eq!(r.status, 201, "{}", r.text());
}

/// Echoes the method, the attempt and the body.
const ECHO: &str = "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n%s attempt %s: ' \"$REQUEST_METHOD\" \"$HTTP_X_COREFN_ATTEMPT\"\ncat\n";

/// `POST /_/api/v1/functions/NAME/invocations` with the admin key.
fn queue(s: &ControlServer, name: &str, body: &str, extra_headers: &str) -> Response {
    let raw = format!(
        "POST /_/api/v1/functions/{name}/invocations HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
         Authorization: Bearer {}\r\n{extra_headers}Content-Length: {}\r\n\r\n{body}",
        s.admin_key,
        body.len()
    );
    send(s.server.addr(), raw.as_bytes())
}

fn queued_id(r: &Response) -> String {
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().expect("id").to_string();
    assert_eq!(
        r.header("location"),
        Some(format!("/_/api/v1/invocations/{id}").as_str())
    );
    id
}

fn invocation(s: &ControlServer, id: &str) -> Value {
    let r = get(s.server.addr(), &format!("/_/api/v1/invocations/{id}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// Waits (bounded) until the invocation is in a final state.
fn finished(s: &ControlServer, id: &str) -> Value {
    let mut last = Value::Null;
    let done = wait_until(Duration::from_secs(60), || {
        last = invocation(s, id);
        matches!(
            last["state"].as_str(),
            Some("succeeded" | "failed" | "dead")
        )
    });
    assert!(done.is_some(), "{id} did not finish: {last}");
    last
}

#[test]
fn an_async_call_is_accepted_on_disk_then_runs_through_the_data_path() {
    let s = ControlServer::start();
    deploy_exec(&s, "echo", ECHO);

    let r = queue(&s, "echo", "hello later", "Content-Type: text/plain\r\n");
    let id = queued_id(&r);
    assert_eq!(r.json()["state"], "queued");
    assert_eq!(r.json()["function"], "echo");
    let done = finished(&s, &id);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 1, "{done}");
    assert_eq!(done["status"], 200, "{done}");
    assert_eq!(done["body"], "POST attempt 1: hello later", "{done}");
    assert_eq!(done["headers"]["content-type"], "text/plain", "{done}");

    // Any route of the function, with the header: the same request later.
    let raw = "PUT /fn/echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
               x-corefn-invocation-type: async\r\nContent-Length: 6\r\n\r\nrouted";
    let r = send(s.server.addr(), raw.as_bytes());
    let routed = queued_id(&r);
    let done = finished(&s, &routed);
    assert_eq!(done["body"], "PUT attempt 1: routed", "{done}");

    // Lists, by function and state.
    let listed = get(
        s.server.addr(),
        "/_/api/v1/invocations?function=echo&state=succeeded",
    )
    .json();
    let ids: Vec<&str> = listed["invocations"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 2, "{listed}");
    assert!(ids.contains(&id.as_str()) && ids.contains(&routed.as_str()));
    assert!(listed["invocations"][0].get("body").is_none(), "{listed}");

    // Each attempt is a call like any other: in the function's logs under
    // the invocation's id and attempt.
    let logs = get(
        s.server.addr(),
        &format!("/_/api/v1/functions/echo/logs?request_id={id}-1"),
    )
    .text();
    assert!(!logs.trim().is_empty(), "no log lines for {id}-1");
}

#[test]
fn failed_attempts_are_retried_until_one_succeeds() {
    let s = ControlServer::start();
    deploy_exec(
        &s,
        "flaky",
        "#!/bin/sh\nif [ \"$HTTP_X_COREFN_ATTEMPT\" -lt 3 ]; then\n  printf 'Status: 503\\nContent-Type: text/plain\\n\\nnot yet\\n'\n  exit 0\nfi\nprintf 'Content-Type: text/plain\\n\\nfinally\\n'\n",
    );
    let id = queued_id(&queue(&s, "flaky", "", ""));
    // Between attempts the invocation is queued again, with a due time.
    let mut saw_retry = Value::Null;
    wait_until(Duration::from_secs(30), || {
        saw_retry = invocation(&s, &id);
        saw_retry["state"] == "queued" && saw_retry["attempts"] == 1
    })
    .unwrap_or_else(|| panic!("no retry seen: {saw_retry}"));
    assert_eq!(saw_retry["status"], 503, "{saw_retry}");
    assert!(saw_retry["next_attempt"].is_string(), "{saw_retry}");
    let done = finished(&s, &id);
    assert_eq!(
        (&done["state"], &done["attempts"], &done["body"]),
        (&json!("succeeded"), &json!(3), &json!("finally\n")),
        "{done}"
    );
}

#[test]
fn the_last_failure_is_dead_lettered_and_client_errors_are_final() {
    let s = ControlServer::start();
    deploy_exec(
        &s,
        "broken",
        "#!/bin/sh\nprintf 'Status: 500\\nContent-Type: text/plain\\n\\nbroken %s\\n' \"$HTTP_X_COREFN_ATTEMPT\"\n",
    );
    deploy_exec(
        &s,
        "picky",
        "#!/bin/sh\nprintf 'Status: 422\\nContent-Type: text/plain\\n\\nno\\n'\n",
    );
    let r = s.admin(
        "PUT",
        "functions/broken/settings",
        Some(&json!({"async": {"max_attempts": 2}})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["async"]["max_attempts"], 2, "{}", r.text());

    let dead = queued_id(&queue(&s, "broken", "", ""));
    let picky = queued_id(&queue(&s, "picky", "", ""));
    let done = finished(&s, &dead);
    assert_eq!(done["state"], "dead", "{done}");
    assert_eq!(done["attempts"], 2, "{done}");
    assert_eq!(done["max_attempts"], 2, "{done}");
    assert_eq!(done["status"], 500, "{done}");
    assert_eq!(done["body"], "broken 2\n", "{done}");
    let done = finished(&s, &picky);
    assert_eq!(
        (&done["state"], &done["attempts"]),
        (&json!("failed"), &json!(1)),
        "{done}"
    );
    let dead_letters = get(s.server.addr(), "/_/api/v1/invocations?state=dead").json();
    assert_eq!(dead_letters["invocations"][0]["id"], dead, "{dead_letters}");
}

#[test]
fn bad_async_requests_get_clear_errors() {
    let s = ControlServer::start_with(&["--async-queue-max", "2"]);
    deploy_exec(
        &s,
        "slow",
        "#!/bin/sh\nsleep 3\nprintf 'Content-Type: text/plain\\n\\nslow\\n'\n",
    );
    let error_of = |r: &Response| {
        r.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };

    let r = queue(&s, "nobody", "", "");
    assert_eq!(r.status, 404, "{}", r.text());
    let r = s.call("POST", "functions/slow/invocations", None, None);
    assert_eq!(r.status, 401, "{}", r.text());
    let r = queue(
        &s,
        "slow",
        "",
        "x-callback-url: http://example.com/hook\r\n",
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(error_of(&r).contains("not loopback"), "{}", r.text());
    let r = queue(&s, "slow", "", "x-callback-url: https://127.0.0.1/hook\r\n");
    assert_eq!(r.status, 400, "{}", r.text());
    let r = s.admin("POST", "functions/slow/invocations?version=9", None);
    assert_eq!(r.status, 404, "{}", r.text());
    let r = get(s.server.addr(), "/_/api/v1/invocations/nope");
    assert_eq!(r.status, 404, "{}", r.text());
    let r = get(s.server.addr(), "/_/api/v1/invocations?state=lost");
    assert_eq!(r.status, 400, "{}", r.text());
    let r = s.admin(
        "PUT",
        "functions/slow/settings",
        Some(&json!({"async": {"max_attempts": 0}})),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let r = s.admin(
        "PUT",
        "functions/slow/settings",
        Some(&json!({"retries": 1})),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let raw = "GET /fn/slow HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
               x-corefn-invocation-type: later\r\n\r\n";
    assert_eq!(send(s.server.addr(), raw.as_bytes()).status, 400);

    // The bound: two pending fill the queue, the third is refused and not
    // stored.
    queued_id(&queue(&s, "slow", "", ""));
    queued_id(&queue(&s, "slow", "", ""));
    let r = queue(&s, "slow", "", "");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(error_of(&r).contains("queue is full"), "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    let all = get(s.server.addr(), "/_/api/v1/invocations").json();
    assert_eq!(
        all["invocations"].as_array().map(Vec::len),
        Some(2),
        "{all}"
    );
    // The gateway went on serving meanwhile.
    assert_eq!(get(s.server.addr(), "/_/health").status, 200);
}

#[test]
fn the_result_is_posted_to_the_callback_url() {
    let s = ControlServer::start();
    deploy_exec(&s, "echo", ECHO);
    let hook = TcpListener::bind("127.0.0.1:0").expect("bind the callback receiver");
    let port = hook.local_addr().expect("addr").port();
    let receiver = std::thread::spawn(move || {
        let (stream, _) = hook.accept().expect("the callback connects");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut reader = BufReader::new(stream);
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("head line");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push(line.trim_end().to_string());
        }
        let length: usize = head
            .iter()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).expect("body");
        let _ = std::io::Write::write_all(
            reader.get_mut(),
            b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
        );
        (head, String::from_utf8_lossy(&body).into_owned())
    });
    let id = queued_id(&queue(
        &s,
        "echo",
        "call me back",
        &format!("x-callback-url: http://127.0.0.1:{port}/hook?from=corefn\r\n"),
    ));
    let (head, body) = receiver.join().expect("receiver");
    assert_eq!(head[0], "POST /hook?from=corefn HTTP/1.1", "{head:?}");
    assert!(
        head.contains(&format!("x-corefn-invocation-id: {id}")),
        "{head:?}"
    );
    assert!(
        head.contains(&"x-corefn-function-status: 200".to_string()),
        "{head:?}"
    );
    assert!(
        head.contains(&"x-corefn-invocation-state: succeeded".to_string()),
        "{head:?}"
    );
    assert_eq!(body, "POST attempt 1: call me back");
    assert_eq!(finished(&s, &id)["state"], "succeeded");
}

#[test]
fn accepted_invocations_survive_a_sigkill_and_restart() {
    let _cpu = cpu_heavy_test();
    let keep = crate::common::tempdir().expect("tempdir");
    let db = keep.path().join("corefn.db");
    let store = keep.path().join("store");
    let cache = keep.path().join("cache");
    let args = [
        "--store-dir",
        store.to_str().expect("utf-8"),
        "--cache-dir",
        cache.to_str().expect("utf-8"),
        "--async-runners",
        "2",
    ];
    let mut server =
        Server::start_with_db(crate::common::tempdir().expect("cwd"), db.clone(), &args);
    let key = std::fs::read_to_string(db.with_extension("admin-key")).expect("key");
    let key = key.trim();
    let deploy = json!({"name": "steady", "runtime": "exec",
        "code": "#!/bin/sh\nsleep 0.2\nprintf 'Content-Type: text/plain\\n\\ndone %s\\n' \"$HTTP_X_COREFN_ATTEMPT\"\n"})
    .to_string();
    let raw = format!(
        "POST /_/api/v1/functions HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
         Authorization: Bearer {key}\r\nContent-Length: {}\r\n\r\n{deploy}",
        deploy.len()
    );
    assert_eq!(send(server.addr(), raw.as_bytes()).status, 201);
    // Served once the watcher has published the deploy.
    let live = wait_until(Duration::from_secs(10), || {
        get(server.addr(), "/fn/steady").status == 200
    });
    assert!(live.is_some(), "steady is not served");

    let mut accepted = Vec::new();
    for n in 0..30 {
        let body = format!("job {n}");
        let raw = format!(
            "POST /_/api/v1/functions/steady/invocations HTTP/1.1\r\nHost: t\r\n\
             Connection: close\r\nAuthorization: Bearer {key}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let r = send(server.addr(), raw.as_bytes());
        assert_eq!(r.status, 202, "{}", r.text());
        accepted.push(r.json()["id"].as_str().expect("id").to_string());
    }
    // Some are running, most are queued: no grace, no flush.
    server.signal(libc::SIGKILL);
    assert!(server.wait_exit(Duration::from_secs(10)).is_some());
    drop(server);

    let server = Server::start_with_db(crate::common::tempdir().expect("cwd"), db.clone(), &args);
    let states = || -> Vec<(String, String)> {
        let conn = rusqlite::Connection::open(&db).expect("open");
        let mut select = conn
            .prepare("SELECT id, state FROM invocations")
            .expect("select");
        let rows = select
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .expect("rows");
        rows.collect::<Result<_, _>>().expect("rows")
    };
    let all_final = wait_until(Duration::from_secs(90), || {
        states()
            .iter()
            .all(|(_, state)| matches!(state.as_str(), "succeeded" | "failed" | "dead"))
    });
    let seen = states();
    assert!(all_final.is_some(), "not all finished: {seen:?}");
    // Every accepted id is there and ended; nothing else was made.
    let mut stored: Vec<String> = seen.into_iter().map(|(id, _)| id).collect();
    stored.sort();
    accepted.sort();
    assert_eq!(stored, accepted);
    let succeeded = get(
        server.addr(),
        "/_/api/v1/invocations?function=steady&state=succeeded&limit=1000",
    )
    .json();
    assert_eq!(
        succeeded["invocations"].as_array().map(Vec::len),
        Some(30),
        "{succeeded}"
    );
}
