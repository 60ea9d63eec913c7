//! corefn-bench against the real corefn binary: closed loop, open loop, a
//! route that 404s, and a closed port. Loopback only; every wait is bounded.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::free_port;

/// How long corefn gets to print its readiness line.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one corefn-bench run may take before the test fails.
const BENCH_TIMEOUT: Duration = Duration::from_secs(30);
const READY_PREFIX: &str = "corefn listening on";

/// A running `corefn serve`, killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts corefn on a fresh database (which gets the demo routes, GET /hello
/// among them) and waits for its readiness line; retries when the port was
/// taken in between.
fn start_server(dir: &Path) -> Server {
    for attempt in 0..3 {
        let port = free_port();
        let db = dir.join(format!("x{attempt}.db"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_corefn"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--workers",
                "0",
                "--cores",
                "1",
            ])
            .arg("--db")
            .arg(&db)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn corefn");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + READY_TIMEOUT;
        let server = Server { child, port };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with(READY_PREFIX) => return server,
                Ok(_) => continue,
                // Exited (port taken?) or never ready: drop kills it, retry.
                Err(_) => break,
            }
        }
    }
    panic!("corefn did not become ready in 3 attempts");
}

/// corefn-bench, from the bench package of the workspace: cargo names only
/// this package's binaries, so it is looked up next to corefn (target/<profile>/).
fn bench_binary() -> std::path::PathBuf {
    let corefn = Path::new(env!("CARGO_BIN_EXE_corefn"));
    let path = corefn.with_file_name("corefn-bench");
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build -p corefn-bench` (add --release \
         for a release test run), or run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

/// Runs corefn-bench with `args`, killing it if it overruns.
fn bench(args: &[&str]) -> Output {
    let mut child = Command::new(bench_binary())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn corefn-bench");
    let deadline = Instant::now() + BENCH_TIMEOUT;
    while child.try_wait().expect("poll corefn-bench").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("corefn-bench {args:?} ran past {BENCH_TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
    let out = child
        .wait_with_output()
        .expect("collect corefn-bench output");
    println!(
        "corefn-bench {args:?}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("read the JSON report");
    serde_json::from_str(&text).expect("the JSON report parses")
}

fn n(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// requests = 2xx + 3xx + 4xx + 5xx + errors, and errors add up by kind.
fn assert_counts_add_up(r: &serde_json::Value) {
    let s = &r["status"];
    let e = &r["errors"];
    let responses = n(&s["2xx"]) + n(&s["3xx"]) + n(&s["4xx"]) + n(&s["5xx"]);
    let errors = n(&e["connect"]) + n(&e["write"]) + n(&e["read"]) + n(&e["timeout"]);
    assert_eq!(n(&e["total"]), errors);
    assert_eq!(n(&r["responses"]), responses);
    assert_eq!(n(&r["requests"]), responses + errors, "{r}");
}

#[test]
fn closed_and_open_loop_runs_count_every_request_and_classify_404s() {
    let _cpu = crate::common::cpu_heavy_test();
    let dir = crate::common::tempdir().expect("tempdir");
    let server = start_server(dir.path());
    let url = format!("http://127.0.0.1:{}/", server.port);
    let pid = server.child.id().to_string();
    let (json, hgrm, svg) = (
        dir.path().join("closed.json"),
        dir.path().join("closed.hgrm"),
        dir.path().join("closed.svg"),
    );
    let mix = ["--route", "GET /hello 3", "--route", "GET /no-such-route 1"];

    let mut args = vec![
        url.as_str(),
        "-c",
        "4",
        "--warmup",
        "0.3",
        "-d",
        "1",
        "--server-pid",
        &pid,
    ];
    args.extend(mix);
    let json_s = json.to_str().unwrap();
    let (hgrm_s, svg_s) = (hgrm.to_str().unwrap(), svg.to_str().unwrap());
    args.extend(["--json", json_s, "--hgrm", hgrm_s, "--svg", svg_s]);
    let out = bench(&args);
    assert!(out.status.success(), "closed-loop run failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("latency p99.99 ms"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("requests"), "no progress line: {stderr}");

    let r = read_json(&json);
    assert_eq!(r["mode"], "closed");
    assert_counts_add_up(&r);
    let (ok, missing) = (n(&r["status"]["2xx"]), n(&r["status"]["4xx"]));
    assert!(ok > 0 && missing > 0, "{r}");
    assert_eq!(n(&r["errors"]["total"]), 0, "{r}");
    assert_eq!(n(&r["status"]["5xx"]), 0);
    // Weights 3:1, cycled in order on every connection.
    let share = missing as f64 / (ok + missing) as f64;
    assert!((0.2..0.3).contains(&share), "404 share {share}");
    assert!(r["server_cpu"]["cpu_us"].is_u64(), "{r}");
    let hgrm_text = std::fs::read_to_string(&hgrm).unwrap();
    assert!(hgrm_text.trim_start().starts_with("Value"));
    assert!(hgrm_text.contains("#[Max"));
    let svg_text = std::fs::read_to_string(&svg).unwrap();
    assert_eq!(svg_text.matches("<polyline").count(), 1);

    let open_json = dir.path().join("open.json");
    let mut args = vec![
        url.as_str(),
        "-c",
        "4",
        "--warmup",
        "0.3",
        "-d",
        "1",
        "--rate",
        "2000",
    ];
    args.extend(mix);
    args.extend(["--json", open_json.to_str().unwrap()]);
    let out = bench(&args);
    assert!(out.status.success(), "open-loop run failed");
    let r = read_json(&open_json);
    assert_eq!(r["mode"], "open");
    assert_eq!(r["rate_rps"], 2000.0);
    assert_counts_add_up(&r);
    assert!(n(&r["status"]["4xx"]) > 0);
    // The schedule holds 2000 requests in the window: each was either sent
    // (and counted) or still unsent when the window ended, give or take one
    // per connection at the window's edges. A request due just before the
    // window but sent late inside it counts as sent in the window (the
    // window measures what the server did), so the sum may exceed the
    // schedule by the connections' backlog at the window's start; a shared
    // machine makes that a few requests, never hundreds.
    let requests = n(&r["requests"]);
    let unsent = n(&r["unsent"]);
    assert!(
        requests >= 1000,
        "{requests} requests at 2000 req/s for 1 s"
    );
    assert!(
        (1996..=2040).contains(&(requests + unsent)),
        "{requests} + {unsent} unsent"
    );

    let plot = dir.path().join("both.svg");
    let out = bench(&[
        "plot",
        "--svg",
        plot.to_str().unwrap(),
        json_s,
        open_json.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let plot_text = std::fs::read_to_string(&plot).unwrap();
    assert_eq!(plot_text.matches("<polyline").count(), 2);
    assert!(plot_text.contains(">closed<") && plot_text.contains(">open<"));
}

#[test]
fn a_closed_port_gives_connect_errors_not_a_hang() {
    let dir = crate::common::tempdir().expect("tempdir");
    let json = dir.path().join("refused.json");
    let url = format!("http://127.0.0.1:{}/hello", free_port());
    let out = bench(&[
        &url,
        "-c",
        "2",
        "--warmup",
        "0",
        "-d",
        "0.5",
        "--timeout-ms",
        "500",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let r = read_json(&json);
    assert_counts_add_up(&r);
    assert!(n(&r["errors"]["connect"]) > 0, "{r}");
    assert_eq!(n(&r["responses"]), 0);
    assert_eq!(n(&r["requests"]), n(&r["errors"]["connect"]));
}

#[test]
fn targets_off_this_machine_are_refused() {
    let out = bench(&["http://192.0.2.1:80/", "-d", "1"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("loopback"), "{stderr}");
}
