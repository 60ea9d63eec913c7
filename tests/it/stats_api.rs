//! The stats API, `GET /_/api/v1/functions/NAME/stats?window=…` and
//! `GET /_/api/v1/stats?window=…`: after a known mix of calls over many
//! fresh connections (spread over both cores by SO_REUSEPORT, and checked
//! to be), every count is exactly what the client saw, summed over the
//! cores' shards; and every failure kind a function can cause is counted
//! under its own name, with the status README's error table gives it.
//!
//! The core reads a call's outcome from the worker's completion, which
//! comes after the worker wrote the response to the client: a client that
//! has its answer may read the stats a moment before they count it. So the
//! tests wait (bounded) until the count reaches what the client saw, and
//! then compare every field exactly.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::control::ControlServer;
use crate::common::*;

/// Every failure kind the stats name (src/failure.rs, `FailureKind::ALL`).
const FAILURE_KINDS: [&str; 12] = [
    "load",
    "trap",
    "exit",
    "timeout",
    "memory",
    "crash",
    "protocol",
    "output",
    "handler_error",
    "unavailable",
    "busy",
    "internal",
];

/// Every reason a call is turned away (src/telemetry/stats.rs, `Throttle::ALL`).
const THROTTLES: [&str; 4] = ["rate_limit", "concurrency", "busy", "no_worker"];

/// The timeout of the endless functions: short, so that the tests are.
const SPIN_TIMEOUT_MS: u64 = 200;

/// How long the stats get to count what the client has already seen.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Gateway cores the tests run (`--cores`), so that they check the sum
/// over more than one shard on any machine.
const CORES: u64 = 2;

/// The core that answered, from the `x-request-id` the gateway made for
/// a request without one: 32 hex digits, a random word and then the
/// core's sequence, whose top byte is the core's index
/// (src/gateway/context.rs, `new_request_id`).
fn core_of(r: &Response) -> u8 {
    let id = r
        .header("x-request-id")
        .unwrap_or_else(|| panic!("no x-request-id on a response: {:?}", r.headers));
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "a gateway-made request id is 32 hex digits: {id:?}"
    );
    u8::from_str_radix(&id[16..18], 16).expect("hex digits")
}

/// What the client saw of one function: every status, and the cores that
/// answered.
#[derive(Debug, Default)]
struct Seen {
    statuses: Vec<u16>,
    cores: BTreeSet<u8>,
}

impl Seen {
    /// One GET on a fresh connection (so SO_REUSEPORT picks a core for
    /// each call), counted.
    fn call(&mut self, addr: std::net::SocketAddr, path: &str) -> Response {
        let r = get(addr, path);
        self.count(&r);
        r
    }

    fn count(&mut self, r: &Response) {
        self.statuses.push(r.status);
        self.cores.insert(core_of(r));
    }

    /// The first call of a route just written: 404 until the watcher has
    /// published it (those 404s reach no function and are not counted).
    fn first_call(&mut self, addr: std::net::SocketAddr, path: &str) -> Response {
        let mut last = None;
        let published = wait_until(Duration::from_secs(5), || {
            let r = get(addr, path);
            let found = r.status != 404;
            last = Some(r);
            found
        });
        let r = last.expect("at least one try");
        assert!(published.is_some(), "{path} was never published: {r:?}");
        self.count(&r);
        r
    }

    fn total(&self) -> u64 {
        self.statuses.len() as u64
    }

    fn of(&self, status: u16) -> u64 {
        self.statuses.iter().filter(|&&s| s == status).count() as u64
    }

    fn class(&self, class: u16) -> u64 {
        self.statuses.iter().filter(|&&s| s / 100 == class).count() as u64
    }
}

fn stats_get(addr: std::net::SocketAddr, path: &str) -> Value {
    let r = get(addr, path);
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    r.json()
}

/// `functions/NAME/stats` of a deployed function.
fn function_stats(addr: std::net::SocketAddr, name: &str, window: &str) -> Value {
    stats_get(
        addr,
        &format!("/_/api/v1/functions/{name}/stats?window={window}"),
    )
}

/// The entry of `name` (a function, or a hand-written route's key) in
/// `/_/api/v1/stats`, or Null.
fn listed_stats(addr: std::net::SocketAddr, name: &str, window: &str) -> Value {
    let all = stats_get(addr, &format!("/_/api/v1/stats?window={window}"));
    assert_eq!(all["window"], window, "{all}");
    all["functions"]
        .as_array()
        .unwrap_or_else(|| panic!("`functions` is a list: {all}"))
        .iter()
        .find(|f| f["function"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Reads `read` until it counts `count` calls with none in flight, then
/// gives it a moment more and reads it again: a count that goes on
/// growing past what the client sent is wrong too.
fn settled(what: &str, count: u64, mut read: impl FnMut() -> Value) -> Value {
    let mut last = Value::Null;
    let reached = wait_until(SETTLE_TIMEOUT, || {
        last = read();
        last["count"].as_u64() == Some(count) && last["in_flight"].as_u64() == Some(0)
    });
    assert!(
        reached.is_some(),
        "{what}: the stats never counted the {count} calls the client saw: {last}"
    );
    thread::sleep(Duration::from_millis(50));
    read()
}

/// Every count of `stats` is what `seen` saw, with exactly the failures
/// and throttles given (every other kind 0), nothing in flight, and
/// latencies and rates that make sense.
fn assert_exact(
    what: &str,
    stats: &Value,
    seen: &Seen,
    failures: &[(&str, u64)],
    throttled: &[(&str, u64)],
) {
    let count = seen.total();
    assert_eq!(stats["count"], count, "{what}: count; {stats}");
    for class in 1..=5u16 {
        assert_eq!(
            stats["status"][format!("{class}xx")],
            seen.class(class),
            "{what}: {class}xx; client saw {:?}; {stats}",
            seen.statuses
        );
    }
    let named = |list: &Value, names: &[&str], expected: &[(&str, u64)], label: &str| {
        let keys: BTreeSet<&str> = list
            .as_object()
            .unwrap_or_else(|| panic!("{what}: {label} is an object: {stats}"))
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            names.iter().copied().collect::<BTreeSet<_>>(),
            "{what}: the {label} names"
        );
        for name in names {
            let want = expected
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |&(_, n)| n);
            assert_eq!(list[name], want, "{what}: {label}.{name}; {stats}");
        }
    };
    named(&stats["failures"], &FAILURE_KINDS, failures, "failures");
    named(&stats["throttled"], &THROTTLES, throttled, "throttled");
    assert_eq!(stats["in_flight"], 0, "{what}: in_flight; {stats}");

    let window_seconds = stats["window_seconds"].as_f64().expect("window_seconds");
    assert!(window_seconds > 0.0, "{what}: window_seconds; {stats}");
    let rps = stats["rps"].as_f64().expect("rps");
    assert!(
        (rps * window_seconds - count as f64).abs() <= 0.01 * count as f64 + 0.01,
        "{what}: rps {rps} over {window_seconds} s is not {count} calls; {stats}"
    );
    let error_rate = stats["error_rate"].as_f64().expect("error_rate");
    let want_rate = if count > 0 {
        seen.class(5) as f64 / count as f64
    } else {
        0.0
    };
    assert!(
        (error_rate - want_rate).abs() < 1e-9,
        "{what}: error_rate {error_rate}, want {want_rate}; {stats}"
    );

    let latency = &stats["latency_us"];
    let at = |q: &str| {
        latency[q]
            .as_u64()
            .unwrap_or_else(|| panic!("{what}: latency_us.{q}; {stats}"))
    };
    let (p50, p90, p99, p999, max, mean) = (
        at("p50"),
        at("p90"),
        at("p99"),
        at("p999"),
        at("max"),
        at("mean"),
    );
    assert!(
        p50 <= p90 && p90 <= p99 && p99 <= p999 && p999 <= max,
        "{what}: quantiles in order; {latency}"
    );
    assert!(
        p50 > 0 && mean > 0 && mean <= max,
        "{what}: every call takes some time; {latency}"
    );
}

fn deploy(s: &ControlServer, body: Value) {
    let r = s.deploy_json(&body);
    assert_eq!(r.status, 201, "deploy {body}: {}", r.text());
}

fn wat(name: &str) -> String {
    std::fs::read_to_string(examples_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn stats_are_exact_after_a_known_mix_summed_over_both_cores() {
    let s = ControlServer::start_with(&["--cores", "2"]);
    let addr = s.server.addr();
    assert_eq!(
        s.server.readiness().field("cores"),
        Some(CORES),
        "the gateway runs two cores"
    );
    let workers = wait_for_workers(s.server.pid(), 2, Duration::from_secs(10)).len() as u64;
    deploy(
        &s,
        json!({"name": "hello", "runtime": "wasm", "code": wat("hello.wat")}),
    );
    deploy(
        &s,
        json!({"name": "trap", "runtime": "wasm", "code": wat("trap.wat")}),
    );
    deploy(
        &s,
        json!({"name": "spin", "runtime": "wasm", "code": wat("loop.wat"),
               "config": {"timeout_ms": SPIN_TIMEOUT_MS}}),
    );
    deploy(
        &s,
        // Its own module (a comment more): hello's, already in the
        // workers' memory, would be no cold start.
        json!({"name": "limited", "runtime": "wasm",
               "code": format!("{}\n;; limited\n", wat("hello.wat")),
               "config": {"rate_limit": {"rps": 1, "burst": 1}}}),
    );
    deploy(
        &s,
        json!({"name": "idle", "runtime": "wasm", "code": wat("hello.wat")}),
    );
    // A hand-written route: its stats go by its route key. Its module is
    // a file of --functions-dir, as hand-written rows' are.
    std::fs::copy(
        examples_dir().join("hello.wat"),
        s.functions_dir().join("hello.wat"),
    )
    .expect("copy hello.wat into the functions dir");
    insert_route(
        s.server.db_path(),
        "GET:/wasm/hello",
        &wasm_route("hello.wat", json!(null)),
    );

    // The mix, one fresh connection per call, one call at a time (two
    // threads of one worker that both compile a module first would both
    // count a cold start).
    let mut hello = Seen::default();
    hello.first_call(addr, "/fn/hello");
    for _ in 1..40 {
        hello.call(addr, "/fn/hello");
    }
    let mut trap = Seen::default();
    trap.first_call(addr, "/fn/trap");
    for _ in 1..7 {
        trap.call(addr, "/fn/trap");
    }
    let mut spin = Seen::default();
    spin.first_call(addr, "/fn/spin");
    for _ in 1..3 {
        spin.call(addr, "/fn/spin");
    }
    // Each core has a bucket of its own; keep calling until five 429s.
    let mut limited = Seen::default();
    limited.first_call(addr, "/fn/limited");
    for _ in 0..200 {
        if limited.of(429) >= 5 {
            break;
        }
        limited.call(addr, "/fn/limited");
    }
    let mut route = Seen::default();
    route.first_call(addr, "/wasm/hello");
    for _ in 1..10 {
        route.call(addr, "/wasm/hello");
    }

    assert_eq!(hello.of(200), 40, "hello: {:?}", hello.statuses);
    assert_eq!(trap.of(502), 7, "trap: {:?}", trap.statuses);
    assert_eq!(spin.of(504), 3, "spin: {:?}", spin.statuses);
    assert_eq!(limited.of(429), 5, "limited: {:?}", limited.statuses);
    assert_eq!(
        limited.of(200) + limited.of(429),
        limited.total(),
        "limited: {:?}",
        limited.statuses
    );
    assert_eq!(route.of(200), 10, "hand-written: {:?}", route.statuses);
    let all_cores: BTreeSet<u8> = [&hello, &trap, &spin, &limited, &route]
        .iter()
        .flat_map(|seen| seen.cores.iter().copied())
        .collect();
    assert_eq!(
        all_cores,
        BTreeSet::from([0, 1]),
        "fresh connections reach both cores"
    );
    assert_eq!(
        hello.cores,
        BTreeSet::from([0, 1]),
        "hello ran on both cores"
    );

    // Per function, by name: exact.
    let window = "5m";
    let hello_stats = settled("hello", hello.total(), || {
        function_stats(addr, "hello", window)
    });
    assert_exact("hello", &hello_stats, &hello, &[], &[]);
    let cold = hello_stats["cold_starts"].as_u64().expect("cold_starts");
    assert!(
        (1..=workers).contains(&cold),
        "hello: one cold start per worker process that loaded it first, {cold} for {workers} workers"
    );
    assert_eq!(hello_stats["function"], "hello");
    assert_eq!(hello_stats["runtime"], "wasm");
    assert_eq!(hello_stats["window"], window);
    assert_eq!(
        hello_stats["versions"],
        json!([{"version": 1, "count": 40, "errors": 0}])
    );

    let trap_stats = settled("trap", trap.total(), || {
        function_stats(addr, "trap", window)
    });
    assert_exact("trap", &trap_stats, &trap, &[("trap", 7)], &[]);
    // A call that fails still counts the module load it paid for.
    let cold = trap_stats["cold_starts"].as_u64().expect("cold_starts");
    assert!((1..=workers).contains(&cold), "trap: {trap_stats}");
    assert_eq!(
        trap_stats["versions"],
        json!([{"version": 1, "count": 7, "errors": 7}])
    );

    let spin_stats = settled("spin", spin.total(), || {
        function_stats(addr, "spin", window)
    });
    assert_exact("spin", &spin_stats, &spin, &[("timeout", 3)], &[]);
    let cold = spin_stats["cold_starts"].as_u64().expect("cold_starts");
    assert!((1..=workers).contains(&cold), "spin: {spin_stats}");
    let spin_p50 = spin_stats["latency_us"]["p50"].as_u64().unwrap_or(0);
    assert!(
        spin_p50 >= SPIN_TIMEOUT_MS * 1000,
        "a call cut at its timeout took at least the timeout: {spin_stats}"
    );

    let limited_stats = settled("limited", limited.total(), || {
        function_stats(addr, "limited", window)
    });
    assert_exact(
        "limited",
        &limited_stats,
        &limited,
        &[],
        &[("rate_limit", limited.of(429))],
    );
    let cold = limited_stats["cold_starts"].as_u64().expect("cold_starts");
    assert!((1..=workers).contains(&cold), "limited: {limited_stats}");

    // Every window holds all of it (the functions are younger than 1m).
    for other in ["1m", "1h", "30s"] {
        let stats = function_stats(addr, "hello", other);
        assert_eq!(stats["window"], other);
        assert_exact(&format!("hello over {other}"), &stats, &hello, &[], &[]);
    }

    // The list of everything: the same numbers, and the hand-written
    // route under its key.
    for (name, seen, stats) in [
        ("hello", &hello, &hello_stats),
        ("trap", &trap, &trap_stats),
        ("spin", &spin, &spin_stats),
        ("limited", &limited, &limited_stats),
    ] {
        let listed = listed_stats(addr, name, window);
        assert_eq!(
            listed["count"],
            seen.total(),
            "{name} in the list: {listed}"
        );
        assert_eq!(listed["status"], stats["status"], "{name}: {listed}");
        assert_eq!(listed["failures"], stats["failures"], "{name}: {listed}");
        assert_eq!(listed["throttled"], stats["throttled"], "{name}: {listed}");
    }
    let route_stats = settled("GET:/wasm/hello", route.total(), || {
        listed_stats(addr, "GET:/wasm/hello", window)
    });
    assert_exact("GET:/wasm/hello", &route_stats, &route, &[], &[]);
    assert_eq!(route_stats["runtime"], "wasm");
    assert_eq!(route_stats["versions"][0]["version"], 0, "{route_stats}");

    // Deployed and never called: zeros, not 404; unknown: 404.
    let idle = function_stats(addr, "idle", window);
    assert_eq!(idle["count"], 0, "{idle}");
    let r = get(addr, "/_/api/v1/functions/no-such-function/stats");
    assert_eq!(r.status, 404, "{}", r.text());

    // A window that is not one is a 400 that says why.
    for bad in ["2h", "abc", "0m", "5x", ""] {
        for path in [
            format!("/_/api/v1/functions/hello/stats?window={bad}"),
            format!("/_/api/v1/stats?window={bad}"),
        ] {
            let r = get(addr, &path);
            assert_eq!(r.status, 400, "{path}: {}", r.text());
            assert!(
                r.text().contains("window") && r.text().contains("at most 1h"),
                "{path}: the 400 says what a window is: {}",
                r.text()
            );
        }
    }
}

/// Writes an executable exec (CGI) script.
fn write_script(dir: &Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// One route per failure kind, the status README's error table gives it,
/// and how many calls make it.
struct Case {
    path: &'static str,
    kind: &'static str,
    status: u16,
}

const CASES: [Case; 11] = [
    // A module that is not there.
    Case {
        path: "/load",
        kind: "load",
        status: 502,
    },
    // wasm `unreachable`.
    Case {
        path: "/trap",
        kind: "trap",
        status: 502,
    },
    // An exec script that exits 3.
    Case {
        path: "/exit",
        kind: "exit",
        status: 502,
    },
    // wasm that never returns, cut at its timeout_ms.
    Case {
        path: "/timeout",
        kind: "timeout",
        status: 504,
    },
    // wasm growing its memory past memory_mb 16.
    Case {
        path: "/memory",
        kind: "memory",
        status: 502,
    },
    // An exec script killed by a signal (SIGSEGV, sent to itself).
    Case {
        path: "/crash-exec",
        kind: "crash",
        status: 502,
    },
    // A python host that exits in the middle of a request.
    Case {
        path: "/crash-host",
        kind: "crash",
        status: 502,
    },
    // A python handler that writes a frame of garbage to the host's
    // response pipe (fd 4) before its host answers.
    Case {
        path: "/protocol",
        kind: "protocol",
        status: 502,
    },
    // An exec script whose output has no CGI header section.
    Case {
        path: "/output",
        kind: "output",
        status: 502,
    },
    // A python handler that raises.
    Case {
        path: "/handler-error",
        kind: "handler_error",
        status: 502,
    },
    // A node function while `--node` names no program.
    Case {
        path: "/unavailable",
        kind: "unavailable",
        status: 501,
    },
];

/// Calls of each failing route.
const CALLS_PER_CASE: usize = 3;

/// The python function of the busy case sleeps this long per call.
const BUSY_SLEEP_MS: u64 = 2500;
/// ... and its calls start this far apart, so that the first two have
/// each taken a worker's one host before the others arrive.
const BUSY_STAGGER: Duration = Duration::from_millis(400);
const BUSY_CALLS: usize = 4;

// `internal` (corefn itself failing around a call: a request it cannot
// pass on, a descriptor the worker cannot parse) is not something a
// function can cause, so it has no case here; it stays 0 everywhere.
#[test]
fn every_failure_kind_is_counted_under_its_kind() {
    let functions = crate::common::tempdir().expect("functions tempdir");
    let dir = functions.path();
    for name in ["trap.wat", "loop.wat", "membomb.wat"] {
        std::fs::copy(examples_dir().join(name), dir.join(name)).expect("copy wasm example");
    }
    std::fs::copy(
        functions::example_dir("python").join("slow.py"),
        dir.join("slow.py"),
    )
    .expect("copy slow.py");
    std::fs::copy(
        functions::example_dir("node").join("hello.js"),
        dir.join("hello.js"),
    )
    .expect("copy hello.js");
    write_script(dir, "exit.sh", "echo 'exit.sh: giving up' >&2\nexit 3");
    write_script(dir, "segv.sh", "kill -SEGV $$\nsleep 5");
    write_script(dir, "output.sh", "printf 'this is not a CGI response\\n'");
    std::fs::write(
        dir.join("raises.py"),
        "def handle(request):\n    raise ValueError('no good')\n",
    )
    .expect("write raises.py");
    std::fs::write(
        dir.join("dies.py"),
        "import os\ndef handle(request):\n    os._exit(1)\n",
    )
    .expect("write dies.py");
    std::fs::write(
        dir.join("protocol.py"),
        "import os, struct\n\
         def handle(request):\n    \
             garbage = b'garbage'\n    \
             os.write(4, struct.pack('>II', len(garbage), 0) + garbage)\n    \
             return 'too late'\n",
    )
    .expect("write protocol.py");

    let rows: Vec<(String, String)> = [
        (
            "/load",
            json!({"runtime": "wasm", "module": "no_such_module.wat"}),
        ),
        ("/trap", json!({"runtime": "wasm", "module": "trap.wat"})),
        ("/exit", json!({"runtime": "exec", "module": "exit.sh"})),
        (
            "/timeout",
            json!({"runtime": "wasm", "module": "loop.wat", "timeout_ms": SPIN_TIMEOUT_MS}),
        ),
        (
            "/memory",
            json!({"runtime": "wasm", "module": "membomb.wat", "memory_mb": 16}),
        ),
        (
            "/crash-exec",
            json!({"runtime": "exec", "module": "segv.sh"}),
        ),
        (
            "/crash-host",
            json!({"runtime": "python", "module": "dies.py"}),
        ),
        (
            "/protocol",
            json!({"runtime": "python", "module": "protocol.py"}),
        ),
        ("/output", json!({"runtime": "exec", "module": "output.sh"})),
        (
            "/handler-error",
            json!({"runtime": "python", "module": "raises.py"}),
        ),
        (
            "/unavailable",
            json!({"runtime": "node", "module": "hello.js"}),
        ),
        (
            "/busy",
            json!({"runtime": "python", "module": "slow.py", "max_instances": 1,
                   "timeout_ms": BUSY_SLEEP_MS * 4}),
        ),
    ]
    .into_iter()
    .map(|(path, descriptor)| (format!("GET:{path}"), descriptor.to_string()))
    .collect();
    let rows: Vec<(&str, &str)> = rows.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let s = WorkerServer::start(
        &rows,
        dir,
        &["--cores", "2", "--node", "/nonexistent/corefn-test/node"],
    );
    let addr = s.addr();

    let mut seen_by_path = Vec::new();
    for case in &CASES {
        let mut seen = Seen::default();
        for call in 0..CALLS_PER_CASE {
            let r = if call == 0 {
                seen.first_call(addr, case.path)
            } else {
                seen.call(addr, case.path)
            };
            assert_eq!(
                r.status,
                case.status,
                "{} ({}) call {call}: {}",
                case.path,
                case.kind,
                r.text()
            );
        }
        seen_by_path.push(seen);
    }

    // Busy: one host per worker at most, each call holding it for
    // BUSY_SLEEP_MS; of calls that start BUSY_STAGGER apart, those that
    // meet both workers' hosts taken are 503 Busy.
    let mut busy = Seen::default();
    let warm = busy.first_call(addr, "/busy?ms=1");
    assert_eq!(warm.status, 200, "busy warm-up: {}", warm.text());
    let barrier = Arc::new(Barrier::new(BUSY_CALLS));
    let clients: Vec<_> = (0..BUSY_CALLS)
        .map(|n| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                thread::sleep(BUSY_STAGGER * n as u32);
                get(addr, &format!("/busy?ms={BUSY_SLEEP_MS}"))
            })
        })
        .collect();
    let mut busy_count = 0;
    for client in clients {
        let r = client.join().expect("busy client");
        match r.status {
            200 => {}
            503 => {
                assert!(
                    r.text().contains("max_instances"),
                    "the 503 says every host is busy: {:?}",
                    r.text()
                );
                busy_count += 1;
            }
            other => panic!("busy call: {other} {:?}", r.text()),
        }
        busy.count(&r);
    }
    eprintln!("busy: {busy_count} of {BUSY_CALLS} calls were 503 Busy");
    assert!(
        busy_count >= 1,
        "{BUSY_CALLS} long calls over two workers of one host each: some are busy"
    );

    // Each route counts its calls under its kind, and nothing else.
    let window = "5m";
    for (case, seen) in CASES.iter().zip(&seen_by_path) {
        let key = format!("GET:{}", case.path);
        let stats = settled(&key, seen.total(), || listed_stats(addr, &key, window));
        assert_exact(&key, &stats, seen, &[(case.kind, seen.total())], &[]);
    }
    let stats = settled("GET:/busy", busy.total(), || {
        listed_stats(addr, "GET:/busy", window)
    });
    assert_exact(
        "GET:/busy",
        &stats,
        &busy,
        &[("busy", busy_count)],
        &[("busy", busy_count)],
    );
    assert_eq!(busy.of(503), busy_count);

    // Summed over the list, every kind a function can cause was seen, and
    // `internal` never.
    let all = stats_get(addr, &format!("/_/api/v1/stats?window={window}"));
    for kind in FAILURE_KINDS {
        let total: u64 = all["functions"]
            .as_array()
            .expect("functions")
            .iter()
            .map(|f| f["failures"][kind].as_u64().unwrap_or(0))
            .sum();
        if kind == "internal" {
            assert_eq!(total, 0, "internal: {all}");
        } else {
            assert!(total > 0, "no call counted as {kind}: {all}");
        }
    }
}

#[test]
fn series_one_adds_the_steps_and_the_latency_curve_of_the_window() {
    let s = ControlServer::start();
    deploy(
        &s,
        json!({"name": "charted", "runtime": "wasm", "code": wat("hello.wat")}),
    );
    s.served("/fn/charted", "Hello from wasm!\n");
    let calls = 7;
    for _ in 0..calls {
        assert_eq!(get(s.server.addr(), "/fn/charted").status, 200);
    }
    let path = "/_/api/v1/functions/charted/stats?window=5m&series=1";
    let stats = settled("series", calls + 1, || stats_get(s.server.addr(), path));
    let series = stats["series"].as_array().expect("series is a list");
    let stepped: u64 = series
        .iter()
        .map(|step| step["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        stepped,
        calls + 1,
        "the steps add up to the window: {stats}"
    );
    let now_ms = now_secs() as u64 * 1000;
    for step in series {
        let t_ms = step["t_ms"].as_u64().expect("t_ms");
        assert!(t_ms <= now_ms + 1000 && t_ms + 300_000 >= now_ms, "{step}");
        assert!(step["p50_us"].as_u64() <= step["p99_us"].as_u64(), "{step}");
    }
    let curve = stats["percentiles"]
        .as_array()
        .expect("percentiles is a list");
    assert_eq!(curve.len(), 11, "{stats}");
    let us: Vec<u64> = curve
        .iter()
        .map(|p| p["us"].as_u64().unwrap_or(0))
        .collect();
    assert!(
        us.windows(2).all(|w| w[0] <= w[1]),
        "the curve rises: {us:?}"
    );
    assert_eq!(curve[10]["q"], 1.0);
    assert_eq!(
        us[10],
        stats["latency_us"]["max"].as_u64().unwrap_or(0),
        "{stats}"
    );
    // Without series=1 the answer stays as it was.
    let plain = function_stats(s.server.addr(), "charted", "5m");
    assert!(
        plain.get("series").is_none() && plain.get("percentiles").is_none(),
        "{plain}"
    );
}
