//! Settings are checked once at start: a value out of range stops corefn
//! with a message naming the flag (nothing is clamped quietly), and a row
//! asking what its runtime cannot give is skipped and reported.

use std::process::Command;

use serde_json::json;

use crate::common::*;

fn serve_fails_with(args: &[&str], message: &str) {
    let dir = crate::common::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_corefn"))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--db"])
        .arg(dir.path().join("c.db"))
        .args(args)
        .current_dir(dir.path())
        .output()
        .expect("run corefn serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} started: {stderr}");
    assert!(stderr.contains(message), "{args:?}: {stderr}");
}

#[test]
fn out_of_range_flags_stop_serve_with_a_message_naming_the_flag() {
    serve_fails_with(
        &["--worker-threads", "0"],
        "--worker-threads 0 is outside 1..=256",
    );
    serve_fails_with(
        &["--max-header-bytes", "10"],
        "--max-header-bytes 10 is outside",
    );
    serve_fails_with(
        &["--metrics-interval-ms", "1"],
        "--metrics-interval-ms 1 is outside",
    );
    serve_fails_with(
        &["--header-timeout-ms", "0"],
        "--header-timeout-ms 0 is outside",
    );
    serve_fails_with(&["--ewma-alpha", "2"], "--ewma-alpha 2 is outside 0..=1");
    serve_fails_with(&["--score-weights", "1,2"], "--score-weights");
    serve_fails_with(
        &["--worker-threads", "2", "--host-min-instances", "3"],
        "--host-min-instances 3",
    );
    serve_fails_with(&["--compile-timeout-ms", "0"], "--compile-timeout-ms 0");
    serve_fails_with(
        &["--watch-recheck-ms", "0"],
        "--watch-recheck-ms 0 is outside 1..=60000",
    );
    serve_fails_with(
        &["--run-as", "no-such-user-here"],
        "--run-as no-such-user-here: no such user",
    );
}

#[test]
fn a_wasm_row_asking_more_memory_than_a_slot_holds_is_skipped_and_reported() {
    let s = WorkerServer::start(
        &[
            (
                "GET:/big",
                &wasm_route("hello.wat", json!({"memory_mb": 1024})),
            ),
            (
                "GET:/fits",
                &wasm_route("hello.wat", json!({"memory_mb": 512})),
            ),
        ],
        &examples_dir(),
        &[],
    );
    let routes = routes_json(s.addr());
    let skipped = routes["skipped"].to_string();
    assert!(skipped.contains("GET:/big"), "{skipped}");
    assert!(skipped.contains("memory_mb 1024"), "{skipped}");
    assert_eq!(get(s.addr(), "/big").status, 404);
    assert_eq!(get(s.addr(), "/fits").text(), "Hello from wasm!\n");
}

#[test]
fn a_function_descriptor_too_long_for_a_dispatch_is_skipped_and_reported() {
    let env_value = "x".repeat(20 * 1024);
    let s = WorkerServer::start(
        &[(
            "GET:/long",
            &wasm_route("hello.wat", json!({"env": {"BIG": env_value}})),
        )],
        &examples_dir(),
        &[],
    );
    let skipped = routes_json(s.addr())["skipped"].to_string();
    assert!(
        skipped.contains("GET:/long") && skipped.contains("byte limit"),
        "{skipped}"
    );
}

/// Under a low open-files limit, the workers still start (their
/// channels are placed with the descriptors the limit allows), the
/// connection cap is sized from what corefn needs and printed, and a
/// limit too low for corefn itself stops it with a message.
#[test]
fn under_a_low_open_files_limit_workers_start_and_the_connection_cap_is_stated() {
    let hello = wasm_route("hello.wat", json!(null));
    let functions = examples_dir();
    let cache = crate::common::tempdir().expect("cache dir");
    let args = [
        "--workers",
        "2",
        "--cores",
        "2",
        "--functions-dir",
        functions.to_str().expect("UTF-8 path"),
        "--cache-dir",
        cache.path().to_str().expect("UTF-8 path"),
    ];
    let s = Server::start_with_nofile(&[("GET:/hello", &hello)], &args, 256);
    wait_for_workers(s.pid(), 2, std::time::Duration::from_secs(10));
    let r = get(s.addr(), "/hello");
    assert_eq!((r.status, r.text().as_str()), (200, "Hello from wasm!\n"));
    let connections = s
        .readiness()
        .field("connections")
        .expect("connections: in the readiness line");
    // What corefn keeps for 2 cores, 2 workers and 16 async runners is
    // under 128: the rest of 256 is for clients.
    assert!(
        (128..256).contains(&connections),
        "connections: {connections}"
    );
    assert!(
        s.stderr_lines().iter().any(|l| l.contains(&format!(
            "only {connections} client connections fit under the open-files limit (256"
        ))),
        "a small cap is warned about: {:?}",
        s.stderr_lines()
    );
    // As many connections as the cap, held open at once, are all served.
    let mut held: Vec<Conn> = (0..connections.min(100))
        .map(|_| Conn::connect(s.addr()))
        .collect();
    for c in &mut held {
        c.write(get_req("/hello").as_bytes());
        assert_eq!(c.read_response().status, 200);
    }
    drop(held);
    assert!(
        !s.stderr_lines()
            .iter()
            .any(|l| l.contains("cannot start worker")),
        "{:?}",
        s.stderr_lines()
    );
}

#[test]
fn an_open_files_limit_too_low_for_corefn_itself_stops_it_with_a_message() {
    let dir = crate::common::tempdir().expect("tempdir");
    let mut command = Command::new(env!("CARGO_BIN_EXE_corefn"));
    limit_open_files(&mut command, 64);
    let out = command
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--workers", "2", "--db"])
        .arg(dir.path().join("c.db"))
        .current_dir(dir.path())
        .output()
        .expect("run corefn serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started under 64 open files: {stderr}"
    );
    assert!(
        stderr.contains("the open-files limit (64) is too low") && stderr.contains("ulimit -n"),
        "{stderr}"
    );
}

#[test]
fn an_empty_route_store_at_start_is_an_error_naming_it_never_a_new_demo_store() {
    let dir = crate::common::tempdir().expect("tempdir");
    let db = dir.path().join("corefn.db");
    std::fs::write(&db, b"").expect("a 0-byte store");
    let out = Command::new(env!("CARGO_BIN_EXE_corefn"))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--workers", "0", "--db"])
        .arg(&db)
        .current_dir(dir.path())
        .output()
        .expect("run corefn serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started on a 0-byte store: {stderr}");
    assert!(
        stderr.contains(&format!("route store {} is empty (0 bytes)", db.display())),
        "{stderr}"
    );
    let len = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(u64::MAX);
    assert_eq!(len, 0, "the store was left as it was, not seeded");
}

/// Started by root with its functions under a directory the workers' user
/// cannot enter (like root's home), corefn says so at start, naming the
/// directory and the way out, instead of leaving every call to find out.
#[test]
fn functions_out_of_the_workers_users_reach_are_reported_at_start() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the privilege drop happens only when corefn is started by root");
        return;
    }
    // A directory only root may enter, as root's home is.
    let closed = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(
        closed.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .expect("chmod 700");
    let functions = closed.path().join("functions");
    std::fs::create_dir(&functions).expect("functions dir");
    let s = Server::start(&[], &["--functions-dir", &functions.to_string_lossy()]);
    let said = wait_until(std::time::Duration::from_secs(5), || {
        s.stderr_lines().iter().any(|line| {
            line.contains("nobody cannot reach the functions directory")
                && line.contains(&*functions.to_string_lossy())
                && line.contains("--run-as root")
        })
    });
    assert!(said.is_some(), "{:?}", s.stderr_lines());
}
