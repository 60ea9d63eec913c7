//! The control API under `/_/api/v1/`: deploys by JSON (with syntax checks
//! and compiles by real python3, node, php-cgi, clang and cc), versions,
//! rollback, delete, keys and scopes, and the schema of the database,
//! against the real binary over loopback.

use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::control::ControlServer;
use crate::common::*;

fn python_hello(text: &str) -> String {
    format!("def handle(request):\n    return (200, {{'content-type': 'text/plain'}}, {text:?})\n")
}

fn error_code(r: &Response) -> String {
    r.json()["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_python_function_deployed_by_json_answers_on_fn_name_and_its_routes() {
    let s = ControlServer::start();
    let r = s.admin(
        "POST",
        "functions",
        Some(
            &json!({"name": "greet", "runtime": "python", "code": python_hello("hi\n"),
                      "routes": ["GET:/greet"]}),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["version"], 1);
    assert_eq!(r.json()["built_with"], "python");
    s.served("/fn/greet", "hi\n");
    s.served("/fn/greet/any/path", "hi\n");
    s.served("/greet", "hi\n");
    let listed = s.call("GET", "functions", None, None);
    assert_eq!(listed.status, 200, "reads are open to loopback");
    assert_eq!(listed.json()["functions"][0]["name"], "greet");
    assert_eq!(listed.json()["functions"][0]["live_version"], 1);
}

#[test]
fn every_runtime_deploys_from_source() {
    let s = ControlServer::start();
    let deploys = [
        (
            "py",
            json!({"runtime": "python", "code": python_hello("py\n")}),
            "py\n",
        ),
        (
            "js",
            json!({"runtime": "node",
                   "code": "exports.handler = async () => ({statusCode: 200, headers: {'content-type': 'text/plain'}, body: 'js\\n'});\n"}),
            "js\n",
        ),
        (
            "php",
            json!({"runtime": "php", "code": "<?php header('Content-Type: text/plain'); echo \"php\\n\";"}),
            "php\n",
        ),
        (
            "c-wasm",
            json!({"runtime": "wasm",
                   "code": "#include <stdio.h>\nint main(void) { printf(\"Content-Type: text/plain\\n\\nc-wasm\\n\"); return 0; }\n"}),
            "c-wasm\n",
        ),
        (
            "wat",
            json!({"runtime": "wasm", "code": std::fs::read_to_string(examples_dir().join("hello.wat")).expect("hello.wat")}),
            "Hello from wasm!\n",
        ),
        (
            "c-native",
            json!({"runtime": "native",
                   "code": "#include \"corefn.h\"\nint corefn_handle(const corefn_request *req, corefn_response *res) {\n  (void)req;\n  res->write(res, \"c-native\\n\", 9);\n  return 0;\n}\n"}),
            "c-native\n",
        ),
        (
            "sh",
            json!({"runtime": "exec", "code": "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nsh\\n'\n"}),
            "sh\n",
        ),
    ];
    for (name, mut body, want) in deploys {
        body["name"] = json!(name);
        let r = s.admin("POST", "functions", Some(&body));
        assert_eq!(r.status, 201, "{name}: {}", r.text());
        s.served(&format!("/fn/{name}"), want);
    }
}

#[test]
fn code_that_does_not_compile_is_422_with_diagnostics_and_nothing_is_deployed() {
    let s = ControlServer::start();
    let cases = [
        ("python", "def handle(request:\n", "function.py:1"),
        (
            "node",
            "exports.handler = async (req => 1;\n",
            "SyntaxError",
        ),
        ("php", "<?php echo 'x' \n", "syntax error"),
        ("wasm", "int main(void) { return nope; }\n", "function.c:1"),
        (
            "wasm",
            "(module (func (export \"_start\") (result i32)))",
            "module.wat",
        ),
    ];
    for (runtime, code, diagnostic) in cases {
        let r = s.admin(
            "POST",
            "functions",
            Some(&json!({"name": "broken", "runtime": runtime, "code": code})),
        );
        assert_eq!(r.status, 422, "{runtime}: {}", r.text());
        assert_eq!(error_code(&r), "compile_failed");
        let diagnostics = r.json()["error"]["diagnostics"].to_string();
        assert!(diagnostics.contains(diagnostic), "{runtime}: {diagnostics}");
    }
    let r = s.call("GET", "functions/broken", None, None);
    assert_eq!(r.status, 404, "nothing deployed: {}", r.text());
    assert_eq!(get(s.server.addr(), "/fn/broken").status, 404);
}

#[test]
fn versions_are_kept_and_a_rollback_serves_the_previous_one() {
    let s = ControlServer::start();
    let first = json!({"name": "v", "runtime": "python", "code": python_hello("one\n")});
    assert_eq!(s.admin("POST", "functions", Some(&first)).status, 201);
    s.served("/fn/v", "one\n");
    let second = json!({"code": python_hello("two\n")});
    let r = s.admin("PUT", "functions/v", Some(&second));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["version"], 2);
    s.served("/fn/v", "two\n");

    let versions = s.call("GET", "functions/v/versions", None, None).json();
    let numbers: Vec<u64> = versions["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .filter_map(|v| v["version"].as_u64())
        .collect();
    assert_eq!(numbers, [1, 2]);

    let r = s.admin("POST", "functions/v/rollback", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["live_version"], 1);
    s.served("/fn/v", "one\n");
    let r = s.admin("POST", "functions/v/rollback", Some(&json!({"version": 2})));
    assert_eq!(r.json()["live_version"], 2, "{}", r.text());
    s.served("/fn/v", "two\n");
    let r = s.admin("POST", "functions/v/rollback", Some(&json!({"version": 9})));
    assert_eq!(r.status, 404, "{}", r.text());
}

#[test]
fn a_rollback_under_load_serves_only_the_old_or_the_new_body() {
    let s = ControlServer::start();
    let code =
        |text: &str| json!({"name": "flip", "runtime": "python", "code": python_hello(text)});
    assert_eq!(
        s.admin("POST", "functions", Some(&code("old\n"))).status,
        201
    );
    assert_eq!(
        s.admin("POST", "functions", Some(&code("new\n"))).status,
        200
    );
    s.served("/fn/flip", "new\n");
    let addr = s.server.addr();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut seen = Vec::new();
                for _ in 0..2_000 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let r = get(addr, "/fn/flip");
                    seen.push((r.status, r.text()));
                }
                seen
            })
        })
        .collect();
    for _ in 0..5 {
        assert_eq!(s.admin("POST", "functions/flip/rollback", None).status, 200);
        thread::sleep(Duration::from_millis(50));
        assert_eq!(
            s.admin(
                "POST",
                "functions/flip/rollback",
                Some(&json!({"version": 2}))
            )
            .status,
            200
        );
        thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for client in clients {
        for (status, body) in client.join().expect("client") {
            total += 1;
            assert!(
                status == 200 && (body == "old\n" || body == "new\n"),
                "during rollbacks: {status} {body:?}"
            );
        }
    }
    assert!(total > 0);
}

#[test]
fn delete_removes_the_routes_at_once_and_unused_artifacts() {
    let s = ControlServer::start();
    let body = json!({"name": "gone", "runtime": "python", "code": python_hello("here\n"),
                      "routes": ["GET:/gone"]});
    assert_eq!(s.admin("POST", "functions", Some(&body)).status, 201);
    s.served("/gone", "here\n");
    let artifacts = || {
        let store = s.store_dir();
        walk_files(&store)
            .into_iter()
            .filter(|p| {
                // Scratch directories and temporary files start with a dot.
                p.strip_prefix(&store)
                    .map(|rel| {
                        !rel.to_string_lossy().starts_with('.')
                            && !rel.to_string_lossy().contains("/.")
                    })
                    .unwrap_or(false)
            })
            .count()
    };
    assert_eq!(artifacts(), 1);
    let r = s.admin("DELETE", "functions/gone", None);
    assert_eq!(r.status, 200, "{}", r.text());
    let gone = wait_until(Duration::from_secs(5), || {
        get(s.server.addr(), "/gone").status == 404
            && get(s.server.addr(), "/fn/gone").status == 404
    });
    assert!(gone.is_some(), "routes gone");
    assert_eq!(artifacts(), 0, "its artifact was collected");
    assert_eq!(s.admin("DELETE", "functions/gone", None).status, 404);
}

fn walk_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                files.extend(walk_files(&path));
            } else {
                files.push(path);
            }
        }
    }
    files
}

#[test]
fn writes_need_a_key_with_the_scope_and_reads_are_open_to_loopback() {
    let s = ControlServer::start();
    let deploy = json!({"name": "k", "runtime": "python", "code": python_hello("k\n")});
    let r = s.call("POST", "functions", None, Some(&deploy));
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(error_code(&r), "unauthorized");
    let r = s.call("POST", "functions", Some("cfk_not_a_key"), Some(&deploy));
    assert_eq!(r.status, 401, "{}", r.text());

    let invoke = s.admin("POST", "keys", Some(&json!({"scopes": ["invoke"]})));
    assert_eq!(invoke.status, 201, "{}", invoke.text());
    let invoke_key = invoke.json()["key"].as_str().expect("key").to_string();
    let r = s.call("POST", "functions", Some(&invoke_key), Some(&deploy));
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(error_code(&r), "forbidden");
    assert_eq!(s.call("GET", "keys", Some(&invoke_key), None).status, 403);

    let deployer = s.admin("POST", "keys", Some(&json!({"scopes": ["deploy"]})));
    let deploy_key = deployer.json()["key"].as_str().expect("key").to_string();
    let r = s.call("POST", "functions", Some(&deploy_key), Some(&deploy));
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        s.call(
            "POST",
            "keys",
            Some(&deploy_key),
            Some(&json!({"scopes": ["admin"]}))
        )
        .status,
        403
    );

    // Native code is trusted code: a deploy key may not bring it.
    let native = json!({"name": "nat", "runtime": "native", "code_base64": "AA=="});
    let r = s.call("POST", "functions", Some(&deploy_key), Some(&native));
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("admin key"), "{}", r.text());

    let keys = s.admin("GET", "keys", None).json();
    assert!(
        !keys.to_string().contains(&deploy_key),
        "secrets are never listed"
    );
    let id = deployer.json()["id"].as_str().expect("id").to_string();
    assert_eq!(s.admin("DELETE", &format!("keys/{id}"), None).status, 200);
    let r = s.call("DELETE", "functions/k", Some(&deploy_key), None);
    assert_eq!(r.status, 401, "a revoked key: {}", r.text());
    assert_eq!(s.call("GET", "functions/k", None, None).status, 200);
}

#[test]
fn the_admin_key_file_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let s = ControlServer::start();
    let key_file = s.server.db_path().with_extension("admin-key");
    let mode = std::fs::metadata(&key_file)
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{key_file:?}");
    assert!(s.admin_key.starts_with("cfk_") && s.admin_key.len() == 68);
    assert!(
        s.server
            .stderr_lines()
            .iter()
            .any(|l| l.contains("admin-key")),
        "the path is printed"
    );
}

#[test]
fn bad_deploys_are_clear_4xx_and_change_nothing() {
    let s = ControlServer::start();
    let cases = [
        (
            json!({"name": "Bad_Name", "runtime": "python", "code": "x"}),
            400,
            "invalid function name",
        ),
        (json!({"name": "x", "runtime": "python"}), 400, "\"code\""),
        (
            json!({"name": "x", "runtime": "cobol", "code": "x"}),
            400,
            "cobol",
        ),
        (
            json!({"name": "x", "runtime": "python", "code": "x", "surprise": 1}),
            400,
            "surprise",
        ),
        (
            json!({"name": "x", "runtime": "python", "code_base64": "***"}),
            400,
            "code_base64",
        ),
        (
            json!({"name": "x", "runtime": "static", "code": "x"}),
            400,
            "static",
        ),
        (
            json!({"name": "x", "runtime": "python", "code": python_hello("x"), "routes": ["GET:/_/mine"]}),
            400,
            "reserved",
        ),
    ];
    for (body, status, text) in cases {
        let r = s.admin("POST", "functions", Some(&body));
        assert_eq!(r.status, status, "{body}: {}", r.text());
        assert!(r.text().contains(text), "{body}: {}", r.text());
    }
    let r = send(
        s.server.addr(),
        format!(
            "POST /_/api/v1/functions HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Bearer {}\r\n\
             Content-Length: 9\r\n\r\n{{not json",
            s.admin_key
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        s.call("GET", "functions", None, None).json()["functions"],
        json!([])
    );
    assert_eq!(s.admin("GET", "nothing-here", None).status, 404);
    assert_eq!(s.admin("PATCH", "functions", None).status, 405);
}

#[test]
fn a_route_owned_by_a_hand_written_row_is_a_conflict() {
    let s = ControlServer::start();
    insert_route(s.server.db_path(), "GET:/taken", &static_route("mine\n"));
    s.served("/taken", "mine\n");
    let r = s.admin(
        "POST",
        "functions",
        Some(&json!({"name": "thief", "runtime": "python", "code": python_hello("x"), "routes": ["GET:/taken"]})),
    );
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(get(s.server.addr(), "/taken").text(), "mine\n");
    assert_eq!(s.call("GET", "functions/thief", None, None).status, 404);
}

#[test]
fn a_database_of_the_previous_release_is_migrated_in_place_and_a_restart_keeps_everything() {
    // Database, key and store outlive both servers; each server runs in a
    // working directory of its own.
    let keep = crate::common::tempdir().expect("tempdir");
    let db = keep.path().join("old.db");
    let store = keep.path().join("store");
    let store_arg = store.to_str().expect("utf-8").to_string();
    {
        // The schema as the release before migrations wrote it.
        let conn = rusqlite::Connection::open(&db).expect("open");
        conn.execute_batch(
            "CREATE TABLE functions(k TEXT PRIMARY KEY, v TEXT NOT NULL, updated INTEGER NOT NULL);
             INSERT INTO functions VALUES ('GET:/old', '{\"runtime\":\"static\",\"body\":\"still here\\n\"}', 1);",
        )
        .expect("old schema");
    }
    let cwd = crate::common::tempdir().expect("tempdir");
    let mut server = Server::start_with_db(cwd, db.clone(), &["--store-dir", &store_arg]);
    assert_eq!(get(server.addr(), "/old").text(), "still here\n");
    let version: i64 = rusqlite::Connection::open(&db)
        .expect("open")
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .expect("user_version");
    assert_eq!(version, i64::from(corefn::schema::SCHEMA_VERSION));
    assert_eq!(
        get(server.addr(), "/hello").status,
        404,
        "no demo rows in an old database"
    );

    let key = std::fs::read_to_string(db.with_extension("admin-key")).expect("key");
    let body = json!({"name": "kept", "runtime": "exec",
                      "code": "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nkept\\n'\n"})
    .to_string();
    let raw = format!(
        "POST /_/api/v1/functions HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Bearer {}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        key.trim(),
        body.len()
    );
    let r = send(server.addr(), raw.as_bytes());
    assert_eq!(r.status, 201, "{}", r.text());
    server.signal(libc::SIGTERM);
    assert!(
        server.wait_exit(Duration::from_secs(15)).is_some(),
        "stopped"
    );
    drop(server);

    // The same files, a new process: the function and the key are still there.
    let cwd = crate::common::tempdir().expect("tempdir");
    let server = Server::start_with_db(cwd, db.clone(), &["--store-dir", &store_arg]);
    let served = wait_until(Duration::from_secs(5), || {
        get(server.addr(), "/fn/kept").text() == "kept\n"
    });
    assert!(
        served.is_some(),
        "{:?}",
        get(server.addr(), "/fn/kept").text()
    );
    assert_eq!(get(server.addr(), "/old").text(), "still here\n");
    assert!(
        !server
            .stderr_lines()
            .iter()
            .any(|l| l.contains("created an admin")),
        "no second admin key"
    );
}

#[test]
fn corefn_migrate_creates_the_schema_and_says_its_version() {
    let dir = crate::common::tempdir().expect("tempdir");
    let db = dir.path().join("new.db");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_corefn"))
        .args(["migrate", "--db"])
        .arg(&db)
        .output()
        .expect("run corefn migrate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "schema version {}",
            corefn::schema::SCHEMA_VERSION
        )),
        "{text}"
    );
    let conn = rusqlite::Connection::open(&db).expect("open");
    let routes: i64 = conn
        .query_row("SELECT count(*) FROM functions", [], |row| row.get(0))
        .expect("route table");
    assert_eq!(routes, 0, "no demo rows");
}

#[test]
fn a_function_answers_on_its_host_name_under_localhost_and_the_host_suffix() {
    let s = ControlServer::start_with(&["--host-suffix", "fn.example.test"]);
    let body = json!({"name": "greet", "runtime": "python", "code": python_hello("by host\n")});
    assert_eq!(s.admin("POST", "functions", Some(&body)).status, 201);
    s.served("/fn/greet", "by host\n");
    let with_host = |host: &str, path: &str| {
        send(
            s.server.addr(),
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
    };
    for host in [
        "greet.localhost",
        "greet.localhost:8080",
        "greet.fn.example.test",
    ] {
        for path in ["/", "/any/path?x=1"] {
            let r = with_host(host, path);
            assert_eq!(
                (r.status, r.text().as_str()),
                (200, "by host\n"),
                "{host} {path}"
            );
        }
    }
    // Another host is routed by path as always; a function that does not
    // exist is a 404; the admin endpoints stay the gateway's.
    assert_eq!(with_host("example.org", "/").status, 404);
    assert_eq!(with_host("nobody.localhost", "/").status, 404);
    assert_eq!(with_host("greet.localhost", "/_/health").status, 200);
}

#[test]
fn a_rate_limit_answers_429_with_retry_after_and_changes_live_without_a_new_version() {
    let s = ControlServer::start();
    let body = json!({"name": "rl", "runtime": "python", "code": python_hello("ok\n")});
    assert_eq!(s.admin("POST", "functions", Some(&body)).status, 201);
    s.served("/fn/rl", "ok\n");
    let statuses =
        |n: usize| -> Vec<Response> { (0..n).map(|_| get(s.server.addr(), "/fn/rl")).collect() };
    assert!(statuses(10).iter().all(|r| r.status == 200), "no limit yet");

    // 0.1 request per second, split over the cores: a burst of one per core.
    let r = s.admin(
        "PUT",
        "functions/rl/settings",
        Some(&json!({"rate_limit": {"rps": 0.1}})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // Each core adopts the table on its own: until every core has, one of
    // them still answers without a limit. Most of a batch refused means
    // both have (a core gives at most one token).
    let limited = wait_until(Duration::from_secs(5), || {
        statuses(6).iter().filter(|r| r.status == 429).count() >= 4
    });
    assert!(limited.is_some(), "the limit reached the cores");
    let answers = statuses(10);
    let refused: Vec<&Response> = answers.iter().filter(|r| r.status == 429).collect();
    assert!(
        refused.len() >= 8,
        "at most a token per core: {:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in &refused {
        let retry: u64 = r
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("Retry-After on a 429: {:?}", r.headers));
        assert!(retry >= 1, "{retry}");
        assert!(r.text().contains("rate limit"), "{:?}", r.text());
    }
    let versions = s.call("GET", "functions/rl/versions", None, None).json();
    assert_eq!(
        versions["versions"].as_array().map(Vec::len),
        Some(1),
        "no new version"
    );

    // Cleared live: served again.
    let r = s.admin(
        "PUT",
        "functions/rl/settings",
        Some(&json!({"rate_limit": null})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let open = wait_until(Duration::from_secs(5), || {
        statuses(6).iter().all(|r| r.status == 200)
    });
    assert!(open.is_some(), "the limit was lifted");
    let r = s.admin(
        "PUT",
        "functions/rl/settings",
        Some(&json!({"rate_limit": {"rps": -1}})),
    );
    assert_eq!(r.status, 400, "{}", r.text());
}

#[test]
fn a_canary_gets_its_weight_and_the_version_header_reaches_any_version() {
    let s = ControlServer::start();
    let code = |text: &str| json!({"name": "can", "runtime": "python", "code": python_hello(text)});
    assert_eq!(
        s.admin("POST", "functions", Some(&code("v1\n"))).status,
        201
    );
    assert_eq!(
        s.admin("POST", "functions", Some(&code("v2\n"))).status,
        200
    );
    s.served("/fn/can", "v2\n");

    let pinned = |version: &str| {
        send(
            s.server.addr(),
            format!("GET /fn/can HTTP/1.1\r\nHost: t\r\nx-corefn-version: {version}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
    };
    assert_eq!(pinned("1").text(), "v1\n", "a version at 0 % is reachable");
    assert_eq!(pinned("2").text(), "v2\n");
    assert_eq!(pinned("9").status, 404);
    assert_eq!(pinned("one").status, 400);

    let r = s.admin(
        "PUT",
        "functions/can/aliases/live",
        Some(&json!({"version": 1, "canary": {"version": 2, "weight": 0.1}})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    s.served("/fn/can/ready-check", "v1\n");
    let addr = s.server.addr();
    let per_client = 2_500;
    let clients: Vec<_> = (0..4)
        .map(|_| {
            thread::spawn(move || {
                let mut conn = Conn::connect(addr);
                let mut canary = 0usize;
                for _ in 0..per_client {
                    conn.write(get_req("/fn/can").as_bytes());
                    let r = conn.read_response();
                    assert_eq!(r.status, 200, "{:?}", r.text());
                    match r.text().as_str() {
                        "v2\n" => canary += 1,
                        "v1\n" => {}
                        other => panic!("neither version: {other:?}"),
                    }
                }
                canary
            })
        })
        .collect();
    let canary: usize = clients.into_iter().map(|c| c.join().expect("client")).sum();
    let share = canary as f64 / (4 * per_client) as f64;
    assert!(
        (0.08..=0.12).contains(&share),
        "canary share {share} of 10,000 (weight 0.1)"
    );
    let info = s.call("GET", "functions/can", None, None).json();
    assert_eq!(info["canary"]["version"], 2, "{info}");

    // A rollback ends the canary.
    assert_eq!(
        s.admin(
            "POST",
            "functions/can/rollback",
            Some(&json!({"version": 2}))
        )
        .status,
        200
    );
    assert_eq!(
        s.call("GET", "functions/can", None, None).json()["canary"],
        Value::Null
    );
    let r = s.admin(
        "PUT",
        "functions/can/aliases/live",
        Some(&json!({"version": 1, "canary": {"version": 7, "weight": 0.5}})),
    );
    assert_eq!(r.status, 404, "{}", r.text());
}

#[test]
fn a_function_with_auth_key_needs_an_invoke_key_checked_on_the_cores() {
    let s = ControlServer::start();
    let body = json!({"name": "private", "runtime": "python", "code": python_hello("secret\n"),
                      "config": {"auth": "key"}});
    assert_eq!(s.admin("POST", "functions", Some(&body)).status, 201);
    let other = json!({"name": "other", "runtime": "python", "code": python_hello("other\n")});
    assert_eq!(s.admin("POST", "functions", Some(&other)).status, 201);
    s.served("/fn/other", "other\n");
    let new_key = |body: Value| -> (String, String) {
        let r = s.admin("POST", "keys", Some(&body));
        assert_eq!(r.status, 201, "{}", r.text());
        let json = r.json();
        (
            json["key"].as_str().expect("key").into(),
            json["id"].as_str().expect("id").into(),
        )
    };
    let (invoke, invoke_id) = new_key(json!({"scopes": ["invoke"]}));
    let (only_other, _) = new_key(json!({"scopes": ["invoke"], "functions": ["other"]}));
    let (deployer, _) = new_key(json!({"scopes": ["deploy"]}));
    let call = |path: &str, key: Option<&str>| {
        let auth = key
            .map(|k| format!("Authorization: Bearer {k}\r\n"))
            .unwrap_or_default();
        send(
            s.server.addr(),
            format!("GET {path} HTTP/1.1\r\nHost: t\r\n{auth}Connection: close\r\n\r\n").as_bytes(),
        )
    };
    // The key snapshot reaches the cores with the watcher's next table.
    let published = wait_until(Duration::from_secs(5), || {
        call("/fn/private", Some(&invoke)).text() == "secret\n"
    });
    assert!(published.is_some(), "an invoke key opens it");
    let r = call("/fn/private", None);
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(call("/fn/private", Some("cfk_guess")).status, 401);
    assert_eq!(
        call("/fn/private", Some(&only_other)).status,
        401,
        "a key for another function"
    );
    assert_eq!(call("/fn/other", Some(&only_other)).text(), "other\n");
    assert_eq!(
        call("/fn/private", Some(&deployer)).status,
        401,
        "deploy is not invoke"
    );
    assert_eq!(
        call("/fn/private", Some(&s.admin_key)).text(),
        "secret\n",
        "admin holds every scope"
    );
    assert_eq!(
        call("/fn/private@1", None).status,
        401,
        "its version route is closed too"
    );
    assert_eq!(
        call("/fn/other", None).text(),
        "other\n",
        "public functions stay public"
    );

    assert_eq!(
        s.admin("DELETE", &format!("keys/{invoke_id}"), None).status,
        200
    );
    let revoked = wait_until(Duration::from_secs(5), || {
        call("/fn/private", Some(&invoke)).status == 401
    });
    assert!(revoked.is_some(), "a revoked key stops working");
}

#[test]
fn a_multipart_upload_of_a_c_file_and_a_descriptor_deploys_like_json() {
    let s = ControlServer::start();
    let boundary = "corefnTestBoundary7MA4YWxk";
    let c_source = "#include <stdio.h>\nint main(void) { printf(\"Content-Type: text/plain\\n\\nuploaded\\n\"); return 0; }\n";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"descriptor\"\r\n\r\n\
         {{\"name\": \"upc\", \"runtime\": \"wasm\", \"routes\": [\"GET:/upc\"]}}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"code\"; filename=\"hello.c\"\r\n\
         Content-Type: text/x-csrc\r\n\r\n{c_source}\r\n--{boundary}--\r\n"
    );
    let r = s.deploy_raw(
        &format!("multipart/form-data; boundary={boundary}"),
        body.as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["built_with"], "clang");
    s.served("/upc", "uploaded\n");

    // Without a code part: a clear 400, nothing deployed.
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"descriptor\"\r\n\r\n{{\"name\": \"nocode\", \"runtime\": \"wasm\"}}\r\n--{boundary}--\r\n"
    );
    let r = s.deploy_raw(
        &format!("multipart/form-data; boundary={boundary}"),
        body.as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("code"), "{}", r.text());
    assert_eq!(s.call("GET", "functions/nocode", None, None).status, 404);
}

fn zip_of(files: &[(&str, &str)]) -> Vec<u8> {
    use std::io::Write;
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, text) in files {
        writer.start_file(*name, options).expect("start_file");
        writer.write_all(text.as_bytes()).expect("write");
    }
    writer.finish().expect("finish").into_inner()
}

#[test]
fn an_archive_deploys_its_files_together_and_a_zip_slip_is_refused() {
    let s = ControlServer::start();
    let post_archive = |bytes: &[u8]| s.deploy_raw("application/zip", bytes);
    let archive = zip_of(&[
        ("app/corefn.json", r#"{"name": "arch", "routes": ["GET:/arch"]}"#),
        (
            "app/index.js",
            "const { greeting } = require('./lib/greeting');\n\
             exports.handler = async () => ({statusCode: 200, headers: {'content-type': 'text/plain'}, body: greeting});\n",
        ),
        ("app/lib/greeting.js", "exports.greeting = 'hello from lib\\n';\n"),
    ]);
    let r = post_archive(&archive);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["runtime"], "node");
    s.served("/arch", "hello from lib\n");
    s.served("/fn/arch", "hello from lib\n");
    let versions = s.call("GET", "functions/arch/versions", None, None).json();
    assert_eq!(versions["versions"][0]["entry"], "index.js", "{versions}");

    let slip = zip_of(&[
        ("index.js", "exports.handler = async () => 'x';\n"),
        ("../evil.js", "x"),
    ]);
    let r = post_archive(&slip);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("evil"), "{}", r.text());
    let none = zip_of(&[("README.md", "no code here")]);
    let r = post_archive(&none);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("entry point"), "{}", r.text());
    assert_eq!(
        s.call("GET", "functions", None, None).json()["functions"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

#[test]
fn deploys_have_their_own_body_limit_and_a_larger_one_is_413() {
    let s = ControlServer::start_with(&["--max-deploy-bytes", "16777216"]);
    // 9 MiB: over --max-body (8 MiB) for a route, within the deploy limit.
    let json =
        json!({"name": "big", "runtime": "python", "code": python_hello("big\n")}).to_string();
    let body = format!("{}{json}", " ".repeat(9 * 1024 * 1024));
    let r = s.deploy_raw("application/json", body.as_bytes());
    assert_eq!(r.status, 201, "{}", r.text());
    s.served("/fn/big", "big\n");

    let over = format!(
        "POST /_/api/v1/functions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        s.admin_key,
        16 * 1024 * 1024 + 1
    );
    let r = send(s.server.addr(), over.as_bytes());
    assert_eq!(r.status, 413, "{}", r.text());
    let route = "POST /fn/big HTTP/1.1\r\nHost: t\r\nContent-Length: 9437184\r\n\r\n";
    assert_eq!(
        send(s.server.addr(), route.as_bytes()).status,
        413,
        "routes keep --max-body"
    );
}

#[test]
fn the_admin_listener_serves_the_api_and_admin_endpoints_but_no_routes() {
    let admin_port = free_port();
    let admin_addr = format!("127.0.0.1:{admin_port}");
    let s = ControlServer::start_with(&["--admin-listen", &admin_addr]);
    let admin: std::net::SocketAddr = admin_addr.parse().expect("addr");
    let body =
        json!({"name": "adm", "runtime": "python", "code": python_hello("adm\n")}).to_string();
    let raw = format!(
        "POST /_/api/v1/functions HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Bearer {}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        s.admin_key,
        body.len()
    );
    let r = send(admin, raw.as_bytes());
    assert_eq!(r.status, 201, "deploy on the admin listener: {}", r.text());
    s.served("/fn/adm", "adm\n");
    assert_eq!(get(admin, "/_/health").status, 200);
    assert_eq!(
        get(admin, "/_/api/v1/functions").json()["functions"][0]["name"],
        "adm"
    );
    assert_eq!(
        get(admin, "/fn/adm").status,
        404,
        "no routes on the admin listener"
    );
}

#[test]
fn archives_and_multipart_deploy_every_kind_of_runtime() {
    let s = ControlServer::start();
    let post = |content_type: &str, bytes: &[u8]| s.deploy_raw(content_type, bytes);
    let hello_wat = std::fs::read_to_string(examples_dir().join("hello.wat")).expect("hello.wat");
    // (function name, files, expected body)
    type ArchiveCase<'a> = (&'a str, Vec<(&'a str, String)>, &'a str);
    let archives: Vec<ArchiveCase> = vec![
        (
            "zpy",
            vec![
                ("main.py", "from helper import text\ndef handle(request):\n    return (200, {'content-type': 'text/plain'}, text)\n".into()),
                ("helper.py", "text = 'zpy\\n'\n".into()),
            ],
            "zpy\n",
        ),
        ("zphp", vec![("index.php", "<?php header('Content-Type: text/plain'); echo \"zphp\\n\";".into())], "zphp\n"),
        ("zwat", vec![("main.wat", hello_wat.clone())], "Hello from wasm!\n"),
    ];
    for (name, files, want) in archives {
        let mut files: Vec<(&str, String)> = files;
        files.push(("corefn.json", format!(r#"{{"name": "{name}"}}"#)));
        let refs: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
        let r = post("application/zip", &zip_of(&refs));
        assert_eq!(r.status, 201, "{name}: {}", r.text());
        s.served(&format!("/fn/{name}"), want);
    }
    let boundary = "b0undary";
    for (name, runtime, filename, code, want) in [
        ("mpy", "python", "app.py", "def handle(request):\n    return 'mpy'\n", "mpy"),
        ("mjs", "node", "app.js", "exports.handler = async () => ({statusCode: 200, headers: {'content-type': 'text/plain'}, body: 'mjs'});\n", "mjs"),
    ] {
        let body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n{name}\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"runtime\"\r\n\r\n{runtime}\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"code\"; filename=\"{filename}\"\r\n\r\n{code}\r\n\
             --{boundary}--\r\n"
        );
        let r = post(&format!("multipart/form-data; boundary={boundary}"), body.as_bytes());
        assert_eq!(r.status, 201, "{name}: {}", r.text());
        let served = wait_until(Duration::from_secs(5), || get(s.server.addr(), &format!("/fn/{name}")).text().contains(want));
        assert!(served.is_some(), "{name}");
    }
}

#[test]
fn min_and_max_instances_keep_hosts_warm_and_bound_them() {
    let s = ControlServer::start();
    let slow = "import time\ndef handle(request):\n    time.sleep(0.5)\n    return 'slow'\n";
    let body = json!({"name": "inst", "runtime": "python", "code": slow,
                      "config": {"min_instances": 1, "max_instances": 1}});
    assert_eq!(s.admin("POST", "functions", Some(&body)).status, 201);
    let ready = wait_until(Duration::from_secs(10), || {
        get(s.server.addr(), "/fn/inst").status == 200
    });
    assert!(ready.is_some());
    // Eight at once over two workers with one host each: some wait for no
    // one and are told so (503), the others are served.
    let addr = s.server.addr();
    let statuses: Vec<u16> = (0..8)
        .map(|_| thread::spawn(move || get(addr, "/fn/inst").status))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().expect("client"))
        .collect();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&503),
        "more calls than hosts: {statuses:?}"
    );
    assert!(statuses.contains(&200), "{statuses:?}");
    let bad = json!({"name": "bad-inst", "runtime": "wasm", "code": "(module)", "config": {"min_instances": 1}});
    let r = s.admin("POST", "functions", Some(&bad));
    assert_eq!(
        r.status,
        400,
        "instances are for hosted runtimes: {}",
        r.text()
    );
}

#[test]
fn calls_that_find_no_host_at_once_do_not_start_more_than_max_instances() {
    use crate::common::functions::processes_with_marker;
    // Two workers, one host each at most.
    let s = ControlServer::start();
    let marker = format!("race@{}", s.server.dir().display());
    let slow = "import time\ndef handle(request):\n    time.sleep(0.5)\n    return 'slow'\n";
    let body = json!({"name": "race", "runtime": "python", "code": slow,
                      "config": {"max_instances": 1, "min_instances": 1,
                                 "env": {"COREFN_TEST_FUNCTION": marker}}});
    assert_eq!(s.deploy_json(&body).status, 201);
    // A cold pool (never called): six calls at once each find no host.
    let addr = s.server.addr();
    let published = wait_until(Duration::from_secs(5), || {
        get(addr, "/_/routes").text().contains("ANY:/fn/race/*")
    });
    assert!(published.is_some(), "the route is published");
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(6));
    let statuses: Vec<u16> = (0..6)
        .map(|_| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                get(addr, "/fn/race").status
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().expect("client"))
        .collect();
    assert!(statuses.contains(&200), "{statuses:?}");
    assert!(
        statuses.contains(&503),
        "two hosts for six calls: {statuses:?}"
    );
    let hosts = processes_with_marker(&marker);
    assert!(
        (1..=2).contains(&hosts.len()),
        "max_instances 1 in each of two workers: {hosts:?}"
    );
}
