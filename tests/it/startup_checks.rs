//! Settings are checked once at start: a value out of range stops corefn
//! with a message naming the flag (nothing is clamped quietly), and a row
//! asking what its runtime cannot give is skipped and reported.

use std::process::Command;

use serde_json::json;

use crate::common::*;

fn serve_fails_with(args: &[&str], message: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
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
