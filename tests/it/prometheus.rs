//! `GET /metrics` as a real Prometheus sees it: a `prometheus` process
//! scrapes corefn every second while the test sends known traffic over
//! loopback (paced calls of a wasm hello and of a wasm function that
//! traps), then PromQL over Prometheus' HTTP API must give back what was
//! sent: counters equal to corefn's own stats, `increase()` and `rate()`
//! that match the pace, a p99 from the duration histogram within what the
//! client measured, failures by kind. `promtool check metrics` lints one
//! scrape.
//!
//! Needs `prometheus` and `promtool` on PATH (the `prometheus` package):
//! without them the tests fail, they never skip. Prometheus listens on
//! 127.0.0.1 only, keeps its TSDB in a tempdir, and is killed when the
//! test ends, also when it panics (its log is printed then).

use crate::common::*;
use serde_json::{json, Value};
use std::fs::File;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The route keys: hand-written routes carry their key as function name.
const HELLO: &str = "GET:/wasm/hello";
const TRAP: &str = "GET:/wasm/trap";
/// Runs hello.wat too: the workers load the module through it before
/// Prometheus starts, while the series of `HELLO` stay at zero until its
/// first scrape. (Calls of `HELLO` itself before that scrape would put
/// different first values into the buckets, which `rate()` extrapolates
/// by different factors: enough, with a slow first call, to move the p99
/// into a bucket above every call made.)
const WARM_UP: &str = "GET:/wasm/warm-up";
const WARM_UP_REQUESTS: usize = 10;
const HELLO_REQUESTS: usize = 300;
const TRAP_REQUESTS: usize = 20;
/// The hello calls are spread evenly over this span.
const TRAFFIC_SPAN: Duration = Duration::from_secs(6);
const JOB: &str = "corefn";
/// Prometheus' scrape and rule interval.
const SCRAPE_INTERVAL: &str = "1s";
/// Bound on Prometheus becoming ready and its target `up`.
const TARGET_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on a scrape showing the counts corefn's stats show.
const SCRAPE_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound on `promtool check metrics` reading one scrape.
const PROMTOOL_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts at starting Prometheus on a port that turns out taken.
const START_ATTEMPTS_MAX: usize = 3;
/// `increase()` extrapolates to the window's edges: how far it may land
/// from the calls made.
const INCREASE_TOLERANCE: f64 = 0.35;
/// corefn's own latency histogram has buckets at most 1/16 of their value
/// wide (src/telemetry/stats.rs).
const STATS_BUCKET_SLACK: f64 = 1.0 + 1.0 / 16.0;
/// Upper bounds of `corefn_function_duration_seconds` (as in
/// src/telemetry/metrics.rs).
const DURATION_BUCKETS_SECONDS: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

fn server() -> WorkerServer {
    let hello = wasm_route("hello.wat", json!(null));
    let trap = wasm_route("trap.wat", json!(null));
    WorkerServer::start(
        &[(HELLO, &hello), (WARM_UP, &hello), (TRAP, &trap)],
        &examples_dir(),
        &[],
    )
}

/// `program` from PATH; fails the test (never skips it) when missing.
pub(crate) fn required_program(program: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|candidate| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::metadata(candidate)
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
    });
    found.unwrap_or_else(|| {
        panic!(
            "`{program}` is not on PATH: install the `prometheus` package \
             (e.g. `apt-get install prometheus`; CI installs it). This test runs a \
             real Prometheus and does not skip without one."
        )
    })
}

fn unix_now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Percent-encodes `text` for a URL query value.
fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// A sample value as Prometheus' API writes it.
fn parse_sample_value(text: &str) -> f64 {
    match text {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => text
            .parse()
            .unwrap_or_else(|e| panic!("sample value {text:?} is not a number: {e}")),
    }
}

/// A running `prometheus`, killed (and its log printed on a panic) when
/// dropped.
struct Prometheus {
    // Declared first: killed before its directory is removed.
    child: Child,
    addr: SocketAddr,
    /// prometheus.yml, the TSDB and the log files.
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `target`'s `/metrics` and waits until it
    /// answers `/-/ready`.
    fn start(target: SocketAddr) -> Prometheus {
        let binary = required_program("prometheus");
        let mut failures = Vec::new();
        for _attempt in 0..START_ATTEMPTS_MAX {
            let mut prometheus = Prometheus::spawn(&binary, target);
            match prometheus.wait_ready() {
                Ok(()) => return prometheus,
                Err(failure) => failures.push(failure),
            }
        }
        panic!(
            "prometheus did not become ready in {START_ATTEMPTS_MAX} attempts:\n{}",
            failures.join("\n---\n")
        );
    }

    fn spawn(binary: &Path, target: SocketAddr) -> Prometheus {
        let dir = crate::common::tempdir().expect("tempdir for prometheus");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  \
                   scrape_interval: {SCRAPE_INTERVAL}\n  \
                   scrape_timeout: {SCRAPE_INTERVAL}\n  \
                   evaluation_interval: {SCRAPE_INTERVAL}\n\
                 scrape_configs:\n  \
                   - job_name: {JOB}\n    \
                     metrics_path: /metrics\n    \
                     static_configs:\n      \
                       - targets: ['{target}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("prometheus listen address");
        let log = |name: &str| File::create(dir.path().join(name)).expect("prometheus log file");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log("stdout.log"))
            .stderr(log("stderr.log"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
        Prometheus { child, addr, dir }
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + TARGET_UP_TIMEOUT;
        loop {
            if let Ok(r) = self.try_get("/-/ready") {
                if r.status == 200 {
                    return Ok(());
                }
            }
            if let Some(status) = self.child.try_wait().expect("try_wait on prometheus") {
                return Err(format!("prometheus exited with {status}\n{}", self.logs()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "prometheus not ready within {TARGET_UP_TIMEOUT:?}\n{}",
                    self.logs()
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn logs(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!(
            "==== prometheus stdout ====\n{}==== prometheus stderr ====\n{}==== end prometheus output ====",
            read("stdout.log"),
            read("stderr.log")
        )
    }

    /// An HTTP/1.0 GET (so Go answers without chunked encoding).
    fn try_get(&self, target: &str) -> Result<Response, String> {
        let mut c = Conn::try_connect(self.addr).map_err(|e| format!("connect: {e}"))?;
        c.try_write(format!("GET {target} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr).as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        c.try_read_response(false)
    }

    fn get_json(&self, target: &str) -> Value {
        let r = self
            .try_get(target)
            .unwrap_or_else(|e| panic!("prometheus GET {target}: {e}"));
        assert_eq!(
            r.status,
            200,
            "prometheus GET {target}: body {:?}",
            r.text()
        );
        let value = r.json();
        assert_eq!(
            value["status"], "success",
            "prometheus GET {target}: {value}"
        );
        value["data"].clone()
    }

    /// Evaluates `promql` at Unix time `at`: the value of every series.
    fn query(&self, promql: &str, at: f64) -> Vec<(Value, f64)> {
        let target = format!("/api/v1/query?query={}&time={at:.3}", url_encode(promql));
        let data = self.get_json(&target);
        match data["resultType"].as_str() {
            Some("vector") => data["result"]
                .as_array()
                .unwrap_or_else(|| panic!("{promql}: result is no array: {data}"))
                .iter()
                .map(|series| {
                    let value = series["value"][1]
                        .as_str()
                        .unwrap_or_else(|| panic!("{promql}: no value in {series}"));
                    (series["metric"].clone(), parse_sample_value(value))
                })
                .collect(),
            Some("scalar") => {
                let value = data["result"][1]
                    .as_str()
                    .unwrap_or_else(|| panic!("{promql}: no scalar in {data}"));
                vec![(json!({}), parse_sample_value(value))]
            }
            other => panic!("{promql}: unexpected result type {other:?}: {data}"),
        }
    }

    /// The value of the one series `promql` gives at `at`.
    fn query_one(&self, promql: &str, at: f64) -> f64 {
        let result = self.query(promql, at);
        assert_eq!(result.len(), 1, "{promql}: one series expected: {result:?}");
        result[0].1
    }

    /// The value of `promql` now, or None while it has no series.
    fn query_now(&self, promql: &str) -> Option<f64> {
        let result = self.query(promql, unix_now_seconds());
        assert!(
            result.len() <= 1,
            "{promql}: at most one series: {result:?}"
        );
        result.first().map(|(_, value)| *value)
    }

    /// Waits until the one scrape target is `up`.
    fn wait_target_up(&self) -> Value {
        let mut last = Value::Null;
        let up = wait_until(TARGET_UP_TIMEOUT, || {
            let data = self.get_json("/api/v1/targets?state=active");
            last = data["activeTargets"].clone();
            thread::sleep(Duration::from_millis(50));
            last.as_array()
                .is_some_and(|targets| targets.len() == 1 && targets[0]["health"] == "up")
        });
        assert!(
            up.is_some(),
            "the scrape target is up within {TARGET_UP_TIMEOUT:?}: {last:#}"
        );
        last[0].clone()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// What the client saw of the traffic it sent.
struct Sent {
    hello_ok: usize,
    trap_5xx: usize,
    /// The slowest hello, measured from writing the request to having
    /// read the whole response.
    hello_latency_max: Duration,
}

/// `HELLO_REQUESTS` hellos paced evenly over `TRAFFIC_SPAN` on one
/// keep-alive connection, with a trap call (own connection) after every
/// `HELLO_REQUESTS / TRAP_REQUESTS`-th.
fn send_traffic(addr: SocketAddr) -> Sent {
    let period = TRAFFIC_SPAN / HELLO_REQUESTS as u32;
    let trap_every = HELLO_REQUESTS / TRAP_REQUESTS;
    let mut sent = Sent {
        hello_ok: 0,
        trap_5xx: 0,
        hello_latency_max: Duration::ZERO,
    };
    let mut conn = Conn::connect(addr);
    let started = Instant::now();
    for i in 0..HELLO_REQUESTS {
        let due = started + period * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let t0 = Instant::now();
        conn.write(get_req("/wasm/hello").as_bytes());
        let r = conn.read_response();
        sent.hello_latency_max = sent.hello_latency_max.max(t0.elapsed());
        assert_eq!(r.status, 200, "hello #{i}: body {:?}", r.text());
        assert_eq!(r.text(), "Hello from wasm!\n", "hello #{i}");
        sent.hello_ok += 1;
        if r.is_connection_close() {
            conn = Conn::connect(addr);
        }
        if i % trap_every == trap_every - 1 {
            let r = get(addr, "/wasm/trap");
            assert_eq!(r.status, 502, "trap after hello #{i}: body {:?}", r.text());
            sent.trap_5xx += 1;
        }
    }
    eprintln!(
        "sent {} hellos and {} traps in {:?}; slowest hello {:?}",
        sent.hello_ok,
        sent.trap_5xx,
        started.elapsed(),
        sent.hello_latency_max
    );
    sent
}

/// corefn's own stats over the last hour for `function` (a route key).
fn own_stats(addr: SocketAddr, function: &str) -> Value {
    let r = get(addr, "/_/api/v1/stats?window=1h");
    assert_eq!(r.status, 200, "stats: body {:?}", r.text());
    let all = r.json();
    all["functions"]
        .as_array()
        .and_then(|functions| functions.iter().find(|f| f["function"] == function))
        .cloned()
        .unwrap_or_else(|| panic!("no stats for {function:?}: {all:#}"))
}

fn count(stats: &Value, pointer: &str) -> u64 {
    stats
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no count at {pointer} in {stats:#}"))
}

/// The smallest bucket bound of the duration histogram at or above
/// `seconds`: `histogram_quantile` never answers above the bound of the
/// bucket that holds the slowest call.
fn bucket_bound_at_or_above(seconds: f64) -> f64 {
    DURATION_BUCKETS_SECONDS
        .into_iter()
        .find(|&bound| bound >= seconds)
        .unwrap_or(f64::INFINITY)
}

#[test]
fn prometheus_scrapes_counters_histograms_and_failures_that_match_the_traffic() {
    let _cpu = cpu_heavy_test();
    // Before anything starts: a missing Prometheus fails the test at once.
    required_program("prometheus");
    let s = server();
    for i in 0..WARM_UP_REQUESTS {
        let r = get(s.addr(), "/wasm/warm-up");
        assert_eq!(r.status, 200, "warm-up #{i}: body {:?}", r.text());
    }
    let started = Instant::now();
    let prometheus = Prometheus::start(s.addr());
    let target = prometheus.wait_target_up();
    assert_eq!(target["labels"]["job"], JOB, "{target:#}");
    assert_eq!(target["lastError"], "", "{target:#}");
    eprintln!(
        "prometheus on {} scrapes {} (up after {:?})",
        prometheus.addr,
        s.addr(),
        started.elapsed()
    );

    // A first scrape after the warm-up, with the series of HELLO at zero:
    // every paced call then falls between two scrapes Prometheus has.
    let hello_2xx =
        format!("corefn_function_invocations_total{{function=\"{HELLO}\",code=\"2xx\"}}");
    let warm_up_2xx =
        format!("corefn_function_invocations_total{{function=\"{WARM_UP}\",code=\"2xx\"}}");
    let mut seen = (None, None);
    let scraped = wait_until(SCRAPE_CATCH_UP_TIMEOUT, || {
        thread::sleep(Duration::from_millis(100));
        seen = (
            prometheus.query_now(&hello_2xx),
            prometheus.query_now(&warm_up_2xx),
        );
        seen == (Some(0.0), Some(WARM_UP_REQUESTS as f64))
    });
    assert!(
        scraped.is_some(),
        "a scrape shows {HELLO} at 0 and the {WARM_UP_REQUESTS} warm-up calls \
         (hello, warm-up): {seen:?}"
    );

    let sent = send_traffic(s.addr());
    assert_eq!(sent.hello_ok, HELLO_REQUESTS);
    assert_eq!(sent.trap_5xx, TRAP_REQUESTS);

    // corefn's own view, which no further call changes.
    let hello = own_stats(s.addr(), HELLO);
    let trap = own_stats(s.addr(), TRAP);
    let hello_2xx_own = count(&hello, "/status/2xx");
    let hello_p50_seconds = count(&hello, "/latency_us/p50") as f64 / 1e6;
    let trap_5xx_own = count(&trap, "/status/5xx");
    let trap_failures_own = count(&trap, "/failures/trap");
    assert_eq!(
        hello_2xx_own, HELLO_REQUESTS as u64,
        "corefn's count of 2xx of {HELLO}: {hello:#}"
    );
    assert_eq!(trap_5xx_own, TRAP_REQUESTS as u64, "{trap:#}");
    assert_eq!(trap_failures_own, TRAP_REQUESTS as u64, "{trap:#}");

    // Wait for a scrape after the last call.
    let trap_5xx = format!("corefn_function_invocations_total{{function=\"{TRAP}\",code=\"5xx\"}}");
    let mut seen = (None, None);
    let caught_up = wait_until(SCRAPE_CATCH_UP_TIMEOUT, || {
        thread::sleep(Duration::from_millis(100));
        seen = (
            prometheus.query_now(&hello_2xx),
            prometheus.query_now(&trap_5xx),
        );
        seen == (Some(hello_2xx_own as f64), Some(trap_5xx_own as f64))
    });
    assert!(
        caught_up.is_some(),
        "a scrape shows corefn's counts (hello 2xx {hello_2xx_own}, trap 5xx \
         {trap_5xx_own}) within {SCRAPE_CATCH_UP_TIMEOUT:?}: Prometheus has {seen:?}"
    );
    let at = unix_now_seconds();

    assert_eq!(
        prometheus.query_one(&hello_2xx, at),
        hello_2xx_own as f64,
        "the instant counter is corefn's own count"
    );

    let increase = prometheus.query_one(&format!("sum(increase({hello_2xx}[1m]))"), at);
    let expected = HELLO_REQUESTS as f64;
    assert!(
        (increase - expected).abs() <= expected * INCREASE_TOLERANCE,
        "increase over 1m is {increase}, sent {HELLO_REQUESTS} (±{INCREASE_TOLERANCE})"
    );

    let rate = prometheus.query_one(
        &format!("sum(rate(corefn_function_invocations_total{{function=\"{HELLO}\"}}[30s]))"),
        at,
    );
    assert!(rate > 0.0, "rate over 30s is {rate}");

    // Every call Prometheus counts in the window took no longer on the
    // server than on the client, and corefn files a call into the first
    // `le` bucket that holds all of its own histogram bucket (at most
    // 1/16 wider than the call): so the p99 lies at most at the bound of
    // the bucket holding the client's slowest call plus 1/16. (The
    // client's maximum itself is no bound: histogram_quantile interpolates
    // inside a bucket, and did answer 19.7 ms for a slowest call of 10.1
    // ms.)
    let p99 = prometheus.query_one(
        &format!(
            "histogram_quantile(0.99, sum by (le) (rate(\
             corefn_function_duration_seconds_bucket{{function=\"{HELLO}\"}}[1m])))"
        ),
        at,
    );
    let client_max_seconds = sent.hello_latency_max.as_secs_f64();
    let p99_max = bucket_bound_at_or_above(client_max_seconds * STATS_BUCKET_SLACK);
    eprintln!(
        "p99 {p99:.6} s; corefn's p50 {hello_p50_seconds:.6} s; client max \
         {client_max_seconds:.6} s (bucket bound {p99_max} s); increase {increase:.1}; rate {rate:.1}/s"
    );
    assert!(
        p99.is_finite() && p99 > 0.0,
        "p99 is a positive number: {p99}"
    );
    assert!(
        p99 <= p99_max,
        "p99 {p99} s is at most the bucket bound {p99_max} s above the client's \
         slowest call ({client_max_seconds} s)"
    );
    assert!(
        p99 >= hello_p50_seconds * 0.5,
        "p99 {p99} s is at least half of corefn's own p50 ({hello_p50_seconds} s)"
    );

    assert_eq!(
        prometheus.query_one(
            &format!("corefn_function_failures_total{{function=\"{TRAP}\",kind=\"trap\"}}"),
            at
        ),
        TRAP_REQUESTS as f64,
        "trap failures"
    );
    assert_eq!(
        prometheus.query_one(&format!("sum({trap_5xx})"), at),
        TRAP_REQUESTS as f64,
        "trap 5xx"
    );
    assert_eq!(
        prometheus.query_one(
            &format!("sum(corefn_function_failures_total{{function=\"{HELLO}\"}})"),
            at
        ),
        0.0,
        "the hello never failed"
    );

    let gateway_2xx = prometheus.query_one("corefn_gateway_requests_total{code=\"2xx\"}", at);
    assert!(
        gateway_2xx >= (WARM_UP_REQUESTS + HELLO_REQUESTS) as f64,
        "the gateway counted {gateway_2xx} 2xx responses"
    );
    assert!(
        prometheus.query_one("corefn_route_table_version", at) >= 1.0,
        "route table version"
    );
    assert_eq!(
        prometheus.query_one(&format!("up{{job=\"{JOB}\"}}"), at),
        1.0,
        "up"
    );
    eprintln!("prometheus checks done after {:?}", started.elapsed());
}

#[test]
fn promtool_check_metrics_finds_no_problems_in_a_scrape() {
    let promtool = required_program("promtool");
    let s = server();
    // Samples in every function family: a success and a trap.
    assert_eq!(get(s.addr(), "/wasm/hello").status, 200);
    assert_eq!(get(s.addr(), "/wasm/trap").status, 502);
    let r = get(s.addr(), "/metrics");
    assert_eq!(r.status, 200, "/metrics: body {:?}", r.text());
    let content_type = r.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type:?}"
    );
    let body = r.text();
    assert!(
        body.contains("corefn_function_duration_seconds_bucket{function=\"GET:/wasm/hello\""),
        "{body}"
    );

    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", promtool.display()));
    {
        let mut stdin = child.stdin.take().expect("promtool stdin is piped");
        stdin
            .write_all(body.as_bytes())
            .expect("write the scrape to promtool");
    } // closed: promtool reads to the end
      // Bounded: a promtool that hangs is killed by its pid (ours, not yet
      // reaped while the waiting thread has not returned).
    let pid = child.id() as libc::pid_t;
    let (done, finished) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let result = match finished.recv_timeout(PROMTOOL_TIMEOUT) {
        Ok(result) => result.expect("promtool output"),
        Err(_) => {
            // SAFETY: kill(2) on our own child, which the thread still waits for.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("promtool check metrics did not finish within {PROMTOOL_TIMEOUT:?}");
        }
    };
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(
        result.status.success(),
        "promtool check metrics: {}\n{printed}\nscrape:\n{body}",
        result.status
    );
    assert_eq!(
        printed.trim(),
        "",
        "promtool reports problems; scrape:\n{body}"
    );
}
