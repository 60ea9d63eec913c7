//! The wasm runtime against the example modules in `examples/wasm`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::runtimes::cgi::{self, CgiRequest};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/wasm")
}

fn config(functions_dir: PathBuf) -> WasmConfig {
    WasmConfig {
        instances_max: 4,
        memory_mb_max: 64,
        ..WasmConfig::new(functions_dir)
    }
}

fn runtime() -> WasmRuntime {
    WasmRuntime::new(config(examples_dir())).expect("runtime starts")
}

fn call<'a>(module: &'a str, env: &'a [(String, String)], stdin: &'a [u8]) -> WasmCall<'a> {
    WasmCall {
        module,
        timeout_ms: 10_000,
        memory_mb: 16,
        env,
        stdin,
    }
}

fn stdout_of(runtime: &WasmRuntime, module: &str) -> String {
    let output = runtime
        .call(&call(module, &[], b""))
        .expect("call succeeds");
    String::from_utf8(output.stdout).expect("utf-8")
}

#[test]
fn runtime_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<WasmRuntime>();
}

#[test]
fn hello_prints_a_cgi_response() {
    let runtime = runtime();
    assert_eq!(
        stdout_of(&runtime, "hello.wat"),
        "Content-Type: text/plain\n\nHello from wasm!\n"
    );
    // Second call: from the memory cache, fresh instance, same output.
    assert_eq!(
        stdout_of(&runtime, "hello.wat"),
        "Content-Type: text/plain\n\nHello from wasm!\n"
    );
    assert_eq!(runtime.stats().modules_compiled, 1);
}

#[test]
fn echo_returns_a_5_mb_body_byte_for_byte() {
    let runtime = runtime();
    let body: Vec<u8> = (0..5 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let output = runtime
        .call(&call("echo.wat", &[], &body))
        .expect("call succeeds");
    let response = cgi::parse_response(&output.stdout).expect("valid CGI");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.headers,
        vec![(
            "Content-Type".to_string(),
            "application/octet-stream".to_string()
        )]
    );
    assert!(output.stdout[response.body] == body[..], "body differs");
}

#[test]
fn status_and_headers_pass_through_cgi() {
    let runtime = runtime();
    let output = runtime
        .call(&call("status.wat", &[], b""))
        .expect("call succeeds");
    let response = cgi::parse_response(&output.stdout).expect("valid CGI");
    assert_eq!(response.status, 201);
    assert_eq!(
        response.headers,
        vec![
            ("X-Custom".to_string(), "yes".to_string()),
            ("Content-Type".to_string(), "text/plain".to_string()),
        ]
    );
    assert_eq!(&output.stdout[response.body], b"created\n");
}

#[test]
fn bad_cgi_output_is_a_cgi_error() {
    let runtime = runtime();
    let output = runtime
        .call(&call("bad_cgi.wat", &[], b""))
        .expect("the function itself succeeds");
    assert_eq!(
        cgi::parse_response(&output.stdout),
        Err(cgi::CgiError::NoHeaderEnd)
    );
}

#[test]
fn env_shows_cgi_variables_and_descriptor_env() {
    let runtime = runtime();
    let headers: &[(&str, &[u8])] = &[("Host", b"example.com"), ("X-Trace", b"t-1")];
    let request = CgiRequest {
        method: "GET",
        path: "/env",
        query: "x=1",
        protocol: "HTTP/1.1",
        headers,
        body_len: 0,
        remote_addr: Some("10.0.0.7".parse().expect("ip")),
        server_port: Some(8080),
    };
    let descriptor_env = BTreeMap::from([("GREETING".to_string(), "hello there".to_string())]);
    let env = cgi::environment(&request, &descriptor_env);
    let output = runtime
        .call(&call("env.wat", &env, b""))
        .expect("call succeeds");
    let text = String::from_utf8(output.stdout).expect("utf-8");
    let body = text
        .strip_prefix("Content-Type: text/plain\n\n")
        .expect("header first");
    let lines: Vec<&str> = body.lines().collect();
    for expected in [
        "GREETING=hello there",
        "REQUEST_METHOD=GET",
        "PATH_INFO=/env",
        "QUERY_STRING=x=1",
        "REQUEST_URI=/env?x=1",
        "GATEWAY_INTERFACE=CGI/1.1",
        "SERVER_NAME=example.com",
        "SERVER_PORT=8080",
        "REMOTE_ADDR=10.0.0.7",
        "HTTP_X_TRACE=t-1",
    ] {
        assert!(lines.contains(&expected), "{expected} missing in {body}");
    }
    assert_eq!(
        lines.len(),
        env.len(),
        "exactly the given environment: {body}"
    );
}

#[test]
fn trap_is_reported_as_trap() {
    let runtime = runtime();
    let error = runtime
        .call(&call("trap.wat", &[], b""))
        .expect_err("traps");
    match &error {
        WasmError::Trap { message } => assert!(message.contains("unreachable"), "{message}"),
        other => panic!("expected Trap, got {other:?}"),
    }
    assert!(!error.is_timeout());
    assert_eq!(stdout_of(&runtime, "hello.wat").len(), 43);
}

#[test]
fn endless_loop_times_out() {
    let runtime = runtime();
    let started = Instant::now();
    let error = runtime
        .call(&WasmCall {
            timeout_ms: 200,
            ..call("loop.wat", &[], b"")
        })
        .expect_err("times out");
    let elapsed = started.elapsed();
    // Includes compiling loop.wat on the first call.
    println!("loop.wat with timeout_ms 200 returned after {elapsed:?}");
    assert!(error.is_timeout(), "{error:?}");
    assert!(matches!(error, WasmError::Timeout { timeout_ms: 200 }));
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");

    // Warm: only the deadline itself.
    let started = Instant::now();
    let error = runtime
        .call(&WasmCall {
            timeout_ms: 50,
            ..call("loop.wat", &[], b"")
        })
        .expect_err("times out");
    println!(
        "warm loop.wat with timeout_ms 50 returned after {:?}",
        started.elapsed()
    );
    assert!(error.is_timeout());
    assert_eq!(stdout_of(&runtime, "hello.wat").len(), 43);
}

/// A command that sleeps with one `poll_oneoff` clock subscription on the
/// monotonic clock, then prints a CGI response.
fn sleeper(timeout_ns: u64, abstime: bool) -> String {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 256) "Content-Type: text/plain\n\nslept\n")
  (func (export "_start")
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const {timeout_ns}))
    (i32.store16 (i32.const 40) (i32.const {flags}))
    (if (call $poll_oneoff (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128))
      (then unreachable))
    ;; One clock event (type 0, no error) came back.
    (if (i32.ne (i32.load (i32.const 128)) (i32.const 1)) (then unreachable))
    (if (i32.load16_u (i32.const 72)) (then unreachable))
    (if (i32.load8_u (i32.const 74)) (then unreachable))
    (i32.store (i32.const 200) (i32.const 256))
    (i32.store (i32.const 204) (i32.const 32))
    (drop (call $fd_write (i32.const 1) (i32.const 200) (i32.const 1) (i32.const 208)))))"#,
        flags = u16::from(abstime)
    )
}

#[test]
fn sleeping_past_the_deadline_times_out_at_the_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("short.wat"), sleeper(20_000_000, false)).expect("write");
    fs::write(
        dir.path().join("long.wat"),
        sleeper(3_600_000_000_000, false),
    )
    .expect("write");
    fs::write(dir.path().join("far.wat"), sleeper(1 << 62, true)).expect("write");
    let runtime = WasmRuntime::new(config(dir.path().to_path_buf())).expect("runtime starts");
    for module in ["short.wat", "long.wat", "far.wat"] {
        runtime.prepare(module).expect("prepares");
    }

    let started = Instant::now();
    let output = runtime
        .call(&call("short.wat", &[], b""))
        .expect("a short sleep is fine");
    assert!(started.elapsed() >= Duration::from_millis(20));
    assert!(String::from_utf8_lossy(&output.stdout).ends_with("slept\n"));

    for module in ["long.wat", "far.wat"] {
        let started = Instant::now();
        let error = runtime
            .call(&WasmCall {
                timeout_ms: 200,
                ..call(module, &[], b"")
            })
            .expect_err("times out");
        let elapsed = started.elapsed();
        println!("{module} with timeout_ms 200 returned after {elapsed:?}");
        assert!(error.is_timeout(), "{error:?}");
        assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    }
}

#[test]
fn memory_bomb_hits_the_memory_limit_and_the_runtime_survives() {
    let runtime = runtime();
    let error = runtime
        .call(&WasmCall {
            memory_mb: 16,
            ..call("membomb.wat", &[], b"")
        })
        .expect_err("hits the limit");
    assert!(
        matches!(error, WasmError::MemoryLimit { memory_mb: 16 }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "wasm function exceeded its memory limit of 16 MiB"
    );
    // A request above the pool slot size is refused, not quietly capped
    // (the descriptor check keeps such rows from reaching a worker).
    let error = runtime
        .call(&WasmCall {
            memory_mb: 100_000,
            ..call("membomb.wat", &[], b"")
        })
        .expect_err("over the slot size");
    assert!(
        matches!(
            error,
            WasmError::MemoryOverSlot {
                memory_mb: 100_000,
                memory_mb_max: 64
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        stdout_of(&runtime, "hello.wat"),
        "Content-Type: text/plain\n\nHello from wasm!\n"
    );
}

#[test]
fn stdout_over_the_cap_is_an_error() {
    let runtime = WasmRuntime::new(WasmConfig {
        stdout_bytes_max: 1000,
        ..config(examples_dir())
    })
    .expect("runtime starts");
    let body = vec![b'x'; 2000];
    let error = runtime
        .call(&call("echo.wat", &[], &body))
        .expect_err("too large");
    assert!(
        matches!(error, WasmError::StdoutTooLarge { limit: 1000 }),
        "{error:?}"
    );
    // Exactly at the cap is fine: 40 header bytes + 960 body bytes.
    let output = runtime
        .call(&call("echo.wat", &[], &body[..960]))
        .expect("at the cap");
    assert_eq!(output.stdout.len(), 1000);
}

#[test]
fn missing_and_broken_modules_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("broken.wat"), "(module (func").expect("write");
    fs::write(
        dir.path().join("reactor.wat"),
        "(module (func (export \"run\")))",
    )
    .expect("write");
    fs::write(
        dir.path().join("no_memory.wat"),
        "(module (import \"wasi_snapshot_preview1\" \"proc_exit\" (func $exit (param i32)))
           (func (export \"_start\") (call $exit (i32.const 0))))",
    )
    .expect("write");
    fs::write(
        dir.path().join("imports.wat"),
        "(module (import \"env\" \"host_thing\" (func)) (func (export \"_start\")))",
    )
    .expect("write");
    fs::write(
        dir.path().join("exits.wat"),
        "(module (import \"wasi_snapshot_preview1\" \"proc_exit\" (func $exit (param i32)))
           (memory (export \"memory\") 1)
           (func (export \"_start\") (call $exit (i32.const 3))))",
    )
    .expect("write");
    let runtime = WasmRuntime::new(config(dir.path().to_path_buf())).expect("runtime starts");
    let run = |module| runtime.call(&call(module, &[], b"")).expect_err("fails");
    assert!(matches!(run("nope.wasm"), WasmError::ModuleNotFound { .. }));
    assert!(matches!(run("broken.wat"), WasmError::Compile { .. }));
    assert!(matches!(run("reactor.wat"), WasmError::NotACommand { .. }));
    assert!(matches!(run("imports.wat"), WasmError::Link { .. }));
    let exit = run("exits.wat");
    assert!(matches!(exit, WasmError::Exit { code: 3 }), "{exit:?}");
    // A broken module is compiled once, not once per call.
    assert!(matches!(run("broken.wat"), WasmError::Compile { .. }));
    assert_eq!(runtime.stats().modules_failed, 3, "{:?}", runtime.stats());
    let trap = run("no_memory.wat");
    assert_eq!(
        trap.to_string(),
        "wasm function trapped: missing required memory export"
    );
    let message = run("nope.wasm").to_string();
    assert!(
        !message.contains(&dir.path().display().to_string()),
        "{message}"
    );
}

#[test]
fn binary_wasm_modules_run_too() {
    // (module (func (export "_start"))), encoded by hand.
    const EMPTY_COMMAND: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
        0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type section: () -> ()
        0x03, 0x02, 0x01, 0x00, // function section: one function of type 0
        0x07, 0x0a, 0x01, 0x06, b'_', b's', b't', b'a', b'r', b't', 0x00, 0x00, // export
        0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b, // code section: empty body
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("empty.wasm"), EMPTY_COMMAND).expect("write");
    let runtime = WasmRuntime::new(config(dir.path().to_path_buf())).expect("runtime starts");
    let mut loaded_now = false;
    let output = runtime
        .call_noting_load(&call("empty.wasm", &[], b""), &mut loaded_now)
        .expect("call succeeds");
    assert!(output.stdout.is_empty() && output.stderr.is_empty());
    assert!(loaded_now, "the first call compiles the module");
    let mut loaded_now = false;
    runtime
        .call_noting_load(&call("empty.wasm", &[], b""), &mut loaded_now)
        .expect("call succeeds");
    assert!(!loaded_now, "the second finds it in memory");
}

#[test]
fn module_changed_on_disk_is_picked_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hello = fs::read_to_string(examples_dir().join("hello.wat")).expect("read");
    let path = dir.path().join("hello.wat");
    fs::write(&path, &hello).expect("write");
    let runtime = WasmRuntime::new(config(dir.path().to_path_buf())).expect("runtime starts");
    assert!(stdout_of(&runtime, "hello.wat").ends_with("Hello from wasm!\n"));
    // The file is looked at once per FILE_CHECK_INTERVAL_MS at most.
    let noticed = || std::thread::sleep(Duration::from_millis(FILE_CHECK_INTERVAL_MS + 5));

    // Rewritten in place, other length: a new size (and mtime) is noticed.
    let changed = hello
        .replace("Hello from wasm!\\n", "Hello again, changed!\\n")
        .replace("(i32.const 43)", "(i32.const 48)");
    fs::write(&path, &changed).expect("write");
    noticed();
    assert!(stdout_of(&runtime, "hello.wat").ends_with("Hello again, changed!\n"));

    // Replaced by rename (how deploys should do it): a new inode, even
    // with the size of the first version.
    let renamed = hello.replace("Hello from wasm!\\n", "Hello by rename!\\n");
    assert_eq!(renamed.len(), hello.len());
    let temp = dir.path().join("hello.wat.new");
    fs::write(&temp, &renamed).expect("write");
    fs::rename(&temp, &path).expect("rename");
    noticed();
    assert!(stdout_of(&runtime, "hello.wat").ends_with("Hello by rename!\n"));
    assert_eq!(runtime.stats().modules_compiled, 3);

    // Removed: new calls fail instead of running the old copy.
    fs::remove_file(&path).expect("remove");
    noticed();
    assert!(matches!(
        runtime.call(&call("hello.wat", &[], b"")),
        Err(WasmError::ModuleNotFound { .. })
    ));
}

#[test]
fn disk_cache_is_used_by_the_next_runtime_and_survives_corruption() {
    let cache = tempfile::tempdir().expect("tempdir");
    let with_cache = || {
        WasmRuntime::new(WasmConfig {
            cache_dir: Some(cache.path().to_path_buf()),
            ..config(examples_dir())
        })
        .expect("runtime starts")
    };

    let first = with_cache();
    assert_eq!(
        first.prepare_outcome("hello.wat").expect("prepares"),
        CacheOutcome::Compiled
    );
    assert_eq!(
        first.prepare_outcome("hello.wat").expect("prepares"),
        CacheOutcome::Memory
    );
    assert_eq!(first.stats().cache_files_written, 1);
    drop(first);

    let second = with_cache();
    assert_eq!(
        second.prepare_outcome("hello.wat").expect("prepares"),
        CacheOutcome::Disk
    );
    assert!(stdout_of(&second, "hello.wat").ends_with("Hello from wasm!\n"));
    assert_eq!(second.stats().modules_compiled, 0);
    assert_eq!(second.stats().modules_loaded_from_disk, 1);
    drop(second);

    // Corrupt every cache file: flipped bytes, then a truncated file.
    let cache_files: Vec<PathBuf> = fs::read_dir(cache.path())
        .expect("read_dir")
        .map(|entry| entry.expect("entry").path())
        .collect();
    assert_eq!(cache_files.len(), 1, "{cache_files:?}");
    let mut bytes = fs::read(&cache_files[0]).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&cache_files[0], &bytes).expect("write");

    let third = with_cache();
    assert_eq!(
        third.prepare_outcome("hello.wat").expect("prepares"),
        CacheOutcome::Compiled
    );
    assert_eq!(third.stats().cache_files_rejected, 1);
    assert!(stdout_of(&third, "hello.wat").ends_with("Hello from wasm!\n"));
    drop(third);

    fs::write(&cache_files[0], b"corefn-cwasm-v1\nshort").expect("write");
    let fourth = with_cache();
    assert_eq!(
        fourth.prepare_outcome("hello.wat").expect("prepares"),
        CacheOutcome::Compiled
    );
    assert!(stdout_of(&fourth, "hello.wat").ends_with("Hello from wasm!\n"));
    drop(fourth);

    // The file rewritten by the last compile is good again.
    let fifth = with_cache();
    assert_eq!(
        fifth.prepare_outcome("hello.wat").expect("prepares"),
        CacheOutcome::Disk
    );
}

#[test]
fn calls_from_many_threads_at_once() {
    let runtime = Arc::new(runtime());
    runtime.prepare("hello.wat").expect("prepares");
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let runtime = Arc::clone(&runtime);
            std::thread::spawn(move || {
                for _ in 0..50 {
                    assert!(stdout_of(&runtime, "hello.wat").ends_with("Hello from wasm!\n"));
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("thread");
    }
}

#[test]
fn pool_exhaustion_is_busy_not_a_crash() {
    let runtime = Arc::new(
        WasmRuntime::new(WasmConfig {
            instances_max: 1,
            ..config(examples_dir())
        })
        .expect("runtime starts"),
    );
    runtime.prepare("loop.wat").expect("prepares");
    let looping = {
        let runtime = Arc::clone(&runtime);
        std::thread::spawn(move || {
            runtime.call(&WasmCall {
                timeout_ms: 1000,
                ..call("loop.wat", &[], b"")
            })
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let error = runtime
        .call(&call("hello.wat", &[], b""))
        .expect_err("no free slot");
    assert!(
        matches!(error, WasmError::Busy { instances_max: 1 }),
        "{error:?}"
    );
    let looped = looping.join().expect("thread");
    assert!(
        matches!(looped, Err(WasmError::Timeout { .. })),
        "{looped:?}"
    );
    assert!(stdout_of(&runtime, "hello.wat").ends_with("Hello from wasm!\n"));
}

#[test]
fn invalid_config_is_rejected() {
    for bad in [
        WasmConfig {
            instances_max: 0,
            ..config(examples_dir())
        },
        WasmConfig {
            memory_mb_max: 0,
            ..config(examples_dir())
        },
        WasmConfig {
            memory_mb_max: MEMORY_MB_MAX_LIMIT + 1,
            ..config(examples_dir())
        },
    ] {
        assert!(matches!(
            WasmRuntime::new(bad),
            Err(WasmError::Config { .. })
        ));
    }
}

/// Run with `cargo test --release --lib bench_fresh_instance_cost --
/// --ignored --nocapture`.
#[test]
#[ignore]
fn bench_fresh_instance_cost() {
    const CALLS: usize = 2000;
    let runtime = WasmRuntime::new(WasmConfig::new(examples_dir())).expect("runtime starts");
    for _ in 0..200 {
        runtime.call(&call("hello.wat", &[], b"")).expect("warm-up");
    }
    let mut samples_ns: Vec<u128> = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let started = Instant::now();
        let output = runtime.call(&call("hello.wat", &[], b"")).expect("call");
        samples_ns.push(started.elapsed().as_nanos());
        assert_eq!(output.stdout.len(), 43);
    }
    samples_ns.sort_unstable();
    let percentile = |p: usize| samples_ns[(samples_ns.len() - 1) * p / 100] as f64 / 1000.0;
    println!(
        "hello.wat, fresh instance per call, {CALLS} calls: median {:.1} µs, p90 {:.1} µs, p99 {:.1} µs",
        percentile(50),
        percentile(90),
        percentile(99)
    );

    // First call of a never-seen module: compile (empty cache dir) vs.
    // deserialize (warm cache dir). A fresh runtime each time, as in a newly
    // started worker process.
    let cache = tempfile::tempdir().expect("tempdir");
    for module in ["hello.wat", "echo.wat", "env.wat"] {
        let first_call = || {
            let runtime = WasmRuntime::new(WasmConfig {
                cache_dir: Some(cache.path().to_path_buf()),
                ..WasmConfig::new(examples_dir())
            })
            .expect("runtime starts");
            let started = Instant::now();
            runtime.call(&call(module, &[], b"")).expect("call");
            let elapsed = started.elapsed();
            (elapsed, runtime.stats())
        };
        let (cold, cold_stats) = first_call();
        let (warm, warm_stats) = first_call();
        assert_eq!(cold_stats.modules_compiled, 1);
        assert_eq!(warm_stats.modules_loaded_from_disk, 1);
        println!(
            "{module}: first call after WasmRuntime::new: compile {:.0} µs, from disk cache {:.0} µs",
            cold.as_secs_f64() * 1e6,
            warm.as_secs_f64() * 1e6
        );
    }
    let started = Instant::now();
    let runtime = WasmRuntime::new(WasmConfig::new(examples_dir())).expect("runtime starts");
    println!(
        "WasmRuntime::new (default config: 16 slots x 512 MiB): {:.0} µs",
        started.elapsed().as_secs_f64() * 1e6
    );
    drop(runtime);
}
