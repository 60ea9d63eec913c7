//! One harness for the function runtimes beyond wasm (native, exec,
//! python, node, php): a server whose functions directory is a private copy
//! of `examples/<runtime>/` (native examples compiled with `cc`), the same
//! routes for every runtime, and the checks every runtime must pass. Each
//! runtime's module turns the checks it passes into tests with one
//! [`contract_tests!`] and keeps its own tests beside them.

use super::*;
use serde_json::json;
use std::collections::BTreeSet;

/// Timeout of the `/spin` route.
pub const SPIN_TIMEOUT_MS: u64 = 500;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Native,
    Exec,
    Python,
    Node,
    Php,
}

impl Lang {
    pub fn runtime(self) -> &'static str {
        match self {
            Lang::Native => "native",
            Lang::Exec => "exec",
            Lang::Python => "python",
            Lang::Node => "node",
            Lang::Php => "php",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Lang::Native => "so",
            Lang::Exec => "sh",
            Lang::Python => "py",
            Lang::Node => "js",
            Lang::Php => "php",
        }
    }

    pub fn hello_body(self) -> &'static str {
        match self {
            Lang::Native => "Hello from C!\n",
            Lang::Exec => "Hello from exec!\n",
            Lang::Python => "Hello from Python!\n",
            Lang::Node => "Hello from Node!\n",
            Lang::Php => "Hello from PHP!\n",
        }
    }

    /// The example that fails: raises, throws, returns non-zero, exits 3.
    fn failing_example(self) -> &'static str {
        match self {
            Lang::Native | Lang::Exec => "fail",
            _ => "boom",
        }
    }

    /// Source of `changing.<ext>`, answering `version`.
    pub fn changing_source(self, version: &str) -> String {
        match self {
            Lang::Native => String::new(), // compiled from slow.c instead
            Lang::Exec => format!("#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n{version}\\n'\n"),
            Lang::Python => format!(
                "def handle(request):\n    return (200, {{\"content-type\": \"text/plain\"}}, \"{version}\\n\")\n"
            ),
            Lang::Node => format!(
                "exports.handler = async () => ({{statusCode: 200, headers: {{\"content-type\": \"text/plain\"}}, body: \"{version}\\n\"}});\n"
            ),
            Lang::Php => format!("<?php\nheader('Content-Type: text/plain');\necho \"{version}\\n\";\n"),
        }
    }
}

/// `examples/<dir>` of this repository.
pub fn example_dir(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(dir)
}

/// Compiles one C file into a shared library at `out` (written aside and
/// renamed, as a deploy should), with `-D` definitions.
pub fn compile_native(source: &Path, out: &Path, defines: &[&str]) {
    let temporary = out.with_extension("so.tmp");
    let status = Command::new("cc")
        .args(["-O2", "-shared", "-fPIC", "-o"])
        .arg(&temporary)
        .arg(source)
        .args(defines.iter().map(|d| format!("-D{d}")))
        .status()
        .expect("run cc (a C compiler is needed for the native tests)");
    assert!(status.success(), "cc {} failed: {status}", source.display());
    std::fs::rename(&temporary, out).expect("rename the compiled library into place");
}

/// A corefn with two workers serving every example of one runtime.
pub struct FunctionServer {
    pub server: WorkerServer,
    pub lang: Lang,
    functions: tempfile::TempDir,
}

impl std::ops::Deref for FunctionServer {
    type Target = WorkerServer;
    fn deref(&self) -> &WorkerServer {
        &self.server
    }
}

impl std::ops::DerefMut for FunctionServer {
    fn deref_mut(&mut self) -> &mut WorkerServer {
        &mut self.server
    }
}

impl FunctionServer {
    pub fn start(lang: Lang) -> FunctionServer {
        FunctionServer::start_with(lang, &[])
    }

    /// [`FunctionServer::start`] with more `corefn serve` arguments.
    pub fn start_with(lang: Lang, extra_args: &[&str]) -> FunctionServer {
        let functions = crate::common::tempdir().expect("functions tempdir");
        let examples = example_dir(lang.runtime());
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&examples)
            .expect("examples directory")
            .flatten()
        {
            let path = entry.path();
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            match (lang, path.extension().and_then(|e| e.to_str())) {
                (Lang::Native, Some("c")) => {
                    compile_native(&path, &functions.path().join(format!("{stem}.so")), &[]);
                    names.push(stem.to_string());
                }
                (Lang::Native, _) => {}
                (_, Some(ext)) if ext == lang.extension() => {
                    let target = functions.path().join(entry.file_name());
                    std::fs::copy(&path, &target).expect("copy example");
                    names.push(stem.to_string());
                }
                _ => {}
            }
        }
        names.push("changing".to_string());
        write_changing(lang, functions.path(), "v1");
        let rows: Vec<(String, String)> = names
            .iter()
            .map(|name| {
                let method = if name == "echo" { "POST" } else { "GET" };
                let mut extra = json!({});
                if name == "spin" {
                    extra["timeout_ms"] = json!(SPIN_TIMEOUT_MS);
                }
                (
                    format!("{method}:/{name}"),
                    Self::descriptor(lang, functions.path(), name, extra),
                )
            })
            .collect();
        let routes: Vec<(&str, &str)> =
            rows.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        FunctionServer {
            server: WorkerServer::start(&routes, functions.path(), extra_args),
            lang,
            functions,
        }
    }

    fn descriptor(
        lang: Lang,
        functions: &Path,
        name: &str,
        mut extra: serde_json::Value,
    ) -> String {
        extra["runtime"] = json!(lang.runtime());
        extra["module"] = json!(format!("{name}.{}", lang.extension()));
        extra["env"] = json!({"COREFN_TEST_FUNCTION": marker(functions, name)});
        extra.to_string()
    }

    /// The value of `COREFN_TEST_FUNCTION` in the processes of `name`.
    pub fn marker(&self, name: &str) -> String {
        marker(self.functions.path(), name)
    }

    pub fn functions_dir(&self) -> &Path {
        self.functions.path()
    }

    /// Replaces `changing.<ext>` with a version answering `version`.
    pub fn write_changing(&self, version: &str) {
        write_changing(self.lang, self.functions.path(), version);
    }

    /// The log lines' texts of example `name` (its route `GET:/name`),
    /// read through the logs API; empty when there are none yet.
    pub fn log_text(&self, name: &str) -> String {
        let path = format!("/_/api/v1/logs?route=GET:/{name}&tail=1000");
        let response = get(self.addr(), &path);
        assert_eq!(response.status, 200, "{}", response.text());
        response
            .text()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter_map(|line| line["text"].as_str().map(str::to_string))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn write_changing(lang: Lang, functions: &Path, version: &str) {
    let out = functions.join(format!("changing.{}", lang.extension()));
    if lang == Lang::Native {
        let define = format!("VERSION=\"{version}\"");
        compile_native(&example_dir("native").join("slow.c"), &out, &[&define]);
        return;
    }
    let temporary = out.with_extension("tmp");
    std::fs::write(&temporary, lang.changing_source(version)).expect("write changing");
    if lang == Lang::Exec {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
    std::fs::rename(&temporary, &out).expect("rename changing into place");
}

fn marker(functions: &Path, name: &str) -> String {
    format!("{name}@{}", functions.display())
}

/// Processes whose environment has `COREFN_TEST_FUNCTION=<marker>`, with
/// their state letter (zombies left out).
pub fn processes_with_marker(marker: &str) -> Vec<(u32, char)> {
    let needle = format!("COREFN_TEST_FUNCTION={marker}");
    all_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
                environ
                    .split(|&b| b == 0)
                    .any(|var| var == needle.as_bytes())
            })
        })
        .filter_map(|pid| {
            let (state, _) = proc_state(pid)?;
            (state != 'Z').then_some((pid, state))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The checks every runtime passes
// ---------------------------------------------------------------------------

pub fn check_hello(s: &FunctionServer) {
    let mut c = Conn::connect(s.addr());
    for round in 0..3 {
        c.write(get_req("/hello").as_bytes());
        let r = c.read_response();
        assert_eq!(r.status, 200, "round {round}: body {:?}", r.text());
        assert_eq!(r.text(), s.lang.hello_body(), "round {round}");
        assert!(
            !r.is_connection_close(),
            "keep-alive survives a function call"
        );
    }
}

pub fn check_json_echo(s: &FunctionServer) {
    let input = json!({"n": 42, "text": "héllo", "list": [1, 2, 3]});
    let body = input.to_string();
    let r = send(s.addr(), &post_req("/echo?x=1", body.as_bytes()));
    assert_eq!(r.status, 200, "body {:?}", r.text());
    let answer = r.json();
    assert_eq!(answer["echo"], input, "the body comes back: {answer}");
    assert_eq!(answer["method"], "POST", "{answer}");
    let content_type = r.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type:?}"
    );
}

pub fn check_status_and_headers(s: &FunctionServer) {
    let r = get(s.addr(), "/status");
    assert_eq!(r.status, 201, "body {:?}", r.text());
    assert_eq!(r.header("x-corefn-example"), Some("status"));
    // PHP adds its default_charset, as it does under php-fpm.
    let content_type = r.header("content-type").unwrap_or_default();
    assert!(content_type.starts_with("text/plain"), "{content_type:?}");
    assert_eq!(r.text(), "created\n");
}

/// The failing example gets 502 naming `in_body`; the function log holds
/// every string of `in_log`; the gateway and the other functions go on.
pub fn check_handler_error(s: &FunctionServer, in_body: &str, in_log: &[&str]) {
    let name = s.lang.failing_example();
    let mut c = Conn::connect(s.addr());
    c.write(get_req(&format!("/{name}")).as_bytes());
    let r = c.read_response();
    assert_eq!(r.status, 502, "body {:?}", r.text());
    assert!(
        r.text().contains(in_body),
        "502 body names the error: {:?}",
        r.text()
    );
    eprintln!(
        "{} error response: {:?}",
        s.lang.runtime(),
        r.text().trim_end()
    );
    if !r.is_connection_close() {
        c.write(get_req("/hello").as_bytes());
        assert_eq!(
            c.read_response().text(),
            s.lang.hello_body(),
            "same connection goes on"
        );
    }
    assert_eq!(get(s.addr(), "/hello").text(), s.lang.hello_body());
    let mut log = String::new();
    let complete = wait_until(Duration::from_secs(5), || {
        log = s.log_text(name);
        in_log.iter().all(|needle| log.contains(needle))
    });
    assert!(
        complete.is_some(),
        "the function log has {in_log:?}:\n{log}"
    );
}

/// `/spin` runs forever: 504 at its timeout, then the host (or worker)
/// that ran it is gone and a fresh one serves.
pub fn check_timeout_replaces_host(s: &FunctionServer) {
    let workers_before = wait_for_workers(s.pid(), 2, Duration::from_secs(10));
    let marker = s.marker("spin");
    let client = {
        let addr = s.addr();
        thread::spawn(move || {
            let started = Instant::now();
            let r = get(addr, "/spin");
            (r, started.elapsed())
        })
    };
    // While it spins: the processes running it.
    let mut spinning = Vec::new();
    if matches!(s.lang, Lang::Python | Lang::Node | Lang::Php | Lang::Exec) {
        wait_until(Duration::from_millis(SPIN_TIMEOUT_MS - 100), || {
            spinning = processes_with_marker(&marker);
            spinning.iter().any(|&(_, state)| state == 'R')
        });
    }
    let (r, elapsed) = client.join().expect("client thread");
    assert_eq!(r.status, 504, "body {:?}", r.text());
    assert!(
        r.text().contains(&format!("{SPIN_TIMEOUT_MS} ms")),
        "{:?}",
        r.text()
    );
    eprintln!("{}: 504 after {elapsed:?}", s.lang.runtime());
    match s.lang {
        Lang::Native => {
            // Native code cannot be stopped: its worker is replaced.
            let mut workers_after = Vec::new();
            let replaced = wait_until(Duration::from_secs(10), || {
                workers_after = worker_pids(s.pid());
                workers_after.len() == 2 && workers_after != workers_before
            });
            assert!(
                replaced.is_some(),
                "a worker was replaced: {workers_before:?} → {workers_after:?}"
            );
        }
        _ => {
            let spinning_pids: BTreeSet<u32> = spinning.iter().map(|&(pid, _)| pid).collect();
            assert!(!spinning_pids.is_empty(), "saw the process running /spin");
            let mut now = Vec::new();
            let gone = wait_until(Duration::from_secs(5), || {
                now = processes_with_marker(&marker);
                now.iter().all(|(pid, _)| !spinning_pids.contains(pid))
            });
            assert!(
                gone.is_some(),
                "the spinning process {spinning_pids:?} was killed; now {now:?}"
            );
            assert_eq!(
                worker_pids(s.pid()),
                workers_before,
                "the workers themselves survive"
            );
            if s.lang != Lang::Exec {
                // The pool is filled back: an idle host, not spinning.
                let refilled = wait_until(Duration::from_secs(10), || {
                    now = processes_with_marker(&marker);
                    !now.is_empty() && now.iter().all(|&(_, state)| state != 'R')
                });
                assert!(refilled.is_some(), "a fresh idle host replaced it: {now:?}");
            }
        }
    }
    // Spinning again is again a 504, and everything else still works.
    assert_eq!(get(s.addr(), "/spin").status, 504);
    assert_eq!(get(s.addr(), "/hello").text(), s.lang.hello_body());
}

pub fn check_concurrent_requests(s: &FunctionServer, count: usize) {
    let barrier = Arc::new(std::sync::Barrier::new(count));
    let handles: Vec<_> = (0..count)
        .map(|n| {
            let addr = s.addr();
            let barrier = barrier.clone();
            thread::spawn(move || {
                let body = json!({"n": n}).to_string();
                let mut c = Conn::connect(addr);
                barrier.wait();
                c.write(&post_req("/echo", body.as_bytes()));
                let r = c.read_response();
                (n, r.status, r.body.clone())
            })
        })
        .collect();
    for handle in handles {
        let (n, status, body) = handle.join().expect("client thread");
        assert_eq!(
            status,
            200,
            "request {n}: {:?}",
            String::from_utf8_lossy(&body)
        );
        let answer: serde_json::Value = serde_json::from_slice(&body).expect("JSON answer");
        assert_eq!(
            answer["echo"]["n"], n,
            "request {n} got its own answer: {answer}"
        );
    }
}

pub fn check_file_change(s: &FunctionServer) {
    assert_eq!(get(s.addr(), "/changing").text(), "v1\n");
    s.write_changing("v2");
    let mut last = String::new();
    let served = wait_until(Duration::from_secs(5), || {
        last = get(s.addr(), "/changing").text();
        last == "v2\n"
    });
    assert!(
        served.is_some(),
        "the new code is served; last answer {last:?}"
    );
    eprintln!("{}: new code served after {:?}", s.lang.runtime(), served);
    for round in 0..10 {
        assert_eq!(
            get(s.addr(), "/changing").text(),
            "v2\n",
            "round {round}: never the old code again"
        );
    }
}

/// A module that does not load (syntax error) is a 502 naming the error,
/// for as long as the file stays broken; the fixed file is served next.
pub fn check_broken_module_then_fixed(s: &FunctionServer, broken_source: &str, in_body: &str) {
    let file = s
        .functions_dir()
        .join(format!("broken.{}", s.lang.extension()));
    std::fs::write(&file, broken_source).expect("write the broken module");
    insert_route(
        s.db_path(),
        "GET:/broken",
        &json!({"runtime": s.lang.runtime(), "module": format!("broken.{}", s.lang.extension())})
            .to_string(),
    );
    let mut r = get(s.addr(), "/broken");
    wait_until(Duration::from_secs(5), || {
        r = get(s.addr(), "/broken");
        r.status != 404
    });
    for round in 0..3 {
        assert_eq!(r.status, 502, "round {round}: body {:?}", r.text());
        assert!(
            r.text().contains(in_body),
            "round {round}: names the error: {:?}",
            r.text()
        );
        r = get(s.addr(), "/broken");
    }
    eprintln!(
        "{} broken module: {:?}",
        s.lang.runtime(),
        r.text().trim_end()
    );
    let temporary = file.with_extension("tmp");
    std::fs::write(&temporary, s.lang.changing_source("fixed")).expect("write the fix");
    std::fs::rename(&temporary, &file).expect("rename the fix into place");
    let fixed = wait_until(Duration::from_secs(5), || {
        get(s.addr(), "/broken").text() == "fixed\n"
    });
    assert!(fixed.is_some(), "the fixed module is served");
}

/// A body far over the inline limit (it travels in a memfd, then through
/// the runtime's own channel) comes back whole.
pub fn check_large_body_echo(s: &FunctionServer) {
    let text = "x".repeat(1024 * 1024);
    let body = json!({"n": 7, "text": text}).to_string();
    let r = send(s.addr(), &post_req("/echo", body.as_bytes()));
    assert_eq!(
        r.status,
        200,
        "body {:?}",
        String::from_utf8_lossy(&r.body[..r.body.len().min(200)])
    );
    let answer = r.json();
    assert_eq!(answer["echo"]["n"], 7);
    assert_eq!(
        answer["echo"]["text"].as_str().map(str::len),
        Some(text.len())
    );
}

/// A host that dies in the middle of a request: that request gets 502
/// saying how the host ended, and the next one a fresh host.
pub fn check_host_death_is_502_and_replaced(s: &FunctionServer, source: &str) {
    let file = s
        .functions_dir()
        .join(format!("dies.{}", s.lang.extension()));
    std::fs::write(&file, source).expect("write the module");
    insert_route(
        s.db_path(),
        "GET:/dies",
        &json!({"runtime": s.lang.runtime(), "module": format!("dies.{}", s.lang.extension())})
            .to_string(),
    );
    let served = wait_until(Duration::from_secs(5), || {
        get(s.addr(), "/dies").status != 404
    });
    assert!(served.is_some(), "the route is served");
    for round in 0..3 {
        let r = get(s.addr(), "/dies?die=1");
        assert_eq!(r.status, 502, "round {round}: body {:?}", r.text());
        assert!(
            r.text().contains("exited with status 3"),
            "round {round}: says how the host ended: {:?}",
            r.text()
        );
        let r = get(s.addr(), "/dies");
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "alive\n"),
            "round {round}: a fresh host"
        );
    }
}

/// A handler that writes a reply frame to its host's reply pipe itself
/// (`?forge=plain`; `?forge=stolen` also copies the request's id out of
/// the host where it can) gets its own client that frame or a 502; the
/// host's real reply, `secret-WHO`, never goes to the next client.
pub fn check_forged_reply_never_reaches_another_client(s: &FunctionServer, source: &str) {
    add_function(s, "forge", source, &[("GET:/forge", json!({}))]);
    answered(s, "/forge?who=first");
    let mut outcomes = BTreeSet::new();
    for round in 0..24 {
        let mode = ["", "plain", "stolen"][round % 3];
        let r = get(s.addr(), &format!("/forge?who={round}&forge={mode}"));
        let body = r.text();
        let own = format!("secret-{round}");
        match r.status {
            200 => assert!(
                body == own || (!mode.is_empty() && body == "forged"),
                "round {round} ({mode:?}) got another client's answer: {body:?}"
            ),
            502 => assert!(
                body.contains("out of step"),
                "round {round}: a 502 says why: {body:?}"
            ),
            other => panic!("round {round}: status {other}: {body:?}"),
        }
        outcomes.insert((r.status, body == own));
    }
    eprintln!("forged replies: outcomes {outcomes:?}");
    // A host out of step is replaced: a plain call is answered again (the
    // first may still meet the last forger's late reply and be a 502).
    let answers: Vec<String> = (0..3)
        .map(|_| get(s.addr(), "/forge?who=last").text())
        .collect();
    assert!(
        answers.iter().any(|a| a == "secret-last")
            && answers
                .iter()
                .all(|a| a == "secret-last" || a.contains("out of step")),
        "{answers:?}"
    );
}

/// A function with `memory_mb: 64` that allocates 2 GiB (`?big=1`) fails
/// inside its host (a 5xx, never the allocation), and then it and the other
/// functions keep serving.
pub fn check_memory_mb_is_enforced(s: &FunctionServer, source: &str) {
    add_function(s, "mem", source, &[("GET:/mem", json!({"memory_mb": 64}))]);
    let served = wait_until(Duration::from_secs(5), || {
        get(s.addr(), "/mem").text() == "small"
    });
    assert!(served.is_some(), "the route is served");
    let big = get(s.addr(), "/mem?big=1");
    assert!(
        (500..=502).contains(&big.status) && !big.text().contains("allocated"),
        "2 GiB against memory_mb 64: {} {:?}",
        big.status,
        big.text()
    );
    assert_eq!(get(s.addr(), "/mem").text(), "small");
    assert_eq!(get(s.addr(), "/hello").text(), s.lang.hello_body());
}

/// SIGTERM or SIGKILL to the gateway: no host of `name` outlives it.
pub fn check_no_host_outlives_the_gateway(mut s: FunctionServer, signal: i32) {
    assert_eq!(get(s.addr(), "/hello").text(), s.lang.hello_body());
    let marker = s.marker("hello");
    assert!(
        !processes_with_marker(&marker).is_empty(),
        "a warm host runs"
    );
    s.signal(signal);
    assert!(
        s.wait_exit(Duration::from_secs(20)).is_some(),
        "the gateway exits"
    );
    let mut left = Vec::new();
    let gone = wait_until(Duration::from_secs(5), || {
        left = processes_with_marker(&marker);
        left.is_empty()
    });
    assert!(
        gone.is_some(),
        "hosts left behind after signal {signal}: {left:?}"
    );
}

// ---------------------------------------------------------------------------
// The checks as tests
// ---------------------------------------------------------------------------

/// The contract suite as `#[test]`s of one runtime's module:
///
/// ```ignore
/// contract_tests! {
///     Lang::Python => {
///         hello,
///         handler_error("ZeroDivisionError: division by zero", &["Traceback"]),
///         ...
///     }
/// }
/// ```
///
/// lists the checks the runtime passes, by the name of their `check_*`
/// function, with the runtime's own arguments where the check takes some; a
/// check a runtime cannot pass is left out. Each becomes one test on a fresh
/// [`FunctionServer`], named for what it checks:
///
/// | check | test |
/// | --- | --- |
/// | `hello` | `hello_is_answered_on_a_kept_alive_connection` |
/// | `json_echo` | `json_body_is_echoed_as_json` |
/// | `status_and_headers` | `status_and_header_set_by_the_function_reach_the_client` |
/// | `handler_error(in_body, in_log)` | `a_failing_function_is_502_naming_the_error_and_its_log_has_the_details` |
/// | `timeout_replaces_host` | `an_endless_function_is_504_and_the_process_running_it_is_killed` |
/// | `concurrent_requests` | `thirty_two_concurrent_requests_each_get_their_own_answer` |
/// | `file_change` | `a_changed_function_file_is_served_at_once` |
/// | `broken_module_then_fixed(source, in_body)` | `a_module_with_a_syntax_error_is_502_until_it_is_fixed` |
/// | `large_body_echo` | `a_one_mib_body_round_trips` |
/// | `host_death_is_502_and_replaced(source)` | `a_host_that_dies_mid_request_is_502_and_replaced` |
/// | `no_host_outlives_the_gateway` | `no_host_outlives_a_stopped_or_killed_gateway` (SIGTERM, then SIGKILL) |
///
/// An unknown check name does not compile.
macro_rules! contract_tests {
    // One arm per check. These come first: `@` starts no expression, so a
    // list never gets here, and these never reach the list arm.
    (@test $lang:expr, hello) => {
        #[test]
        fn hello_is_answered_on_a_kept_alive_connection() {
            use $crate::common::functions::*;
            check_hello(&FunctionServer::start($lang));
        }
    };
    (@test $lang:expr, json_echo) => {
        #[test]
        fn json_body_is_echoed_as_json() {
            use $crate::common::functions::*;
            check_json_echo(&FunctionServer::start($lang));
        }
    };
    (@test $lang:expr, status_and_headers) => {
        #[test]
        fn status_and_header_set_by_the_function_reach_the_client() {
            use $crate::common::functions::*;
            check_status_and_headers(&FunctionServer::start($lang));
        }
    };
    (@test $lang:expr, handler_error($in_body:expr, $in_log:expr)) => {
        #[test]
        fn a_failing_function_is_502_naming_the_error_and_its_log_has_the_details() {
            use $crate::common::functions::*;
            check_handler_error(&FunctionServer::start($lang), $in_body, $in_log);
        }
    };
    (@test $lang:expr, timeout_replaces_host) => {
        #[test]
        fn an_endless_function_is_504_and_the_process_running_it_is_killed() {
            use $crate::common::functions::*;
            check_timeout_replaces_host(&FunctionServer::start($lang));
        }
    };
    (@test $lang:expr, concurrent_requests) => {
        #[test]
        fn thirty_two_concurrent_requests_each_get_their_own_answer() {
            use $crate::common::functions::*;
            check_concurrent_requests(&FunctionServer::start($lang), 32);
        }
    };
    (@test $lang:expr, file_change) => {
        #[test]
        fn a_changed_function_file_is_served_at_once() {
            use $crate::common::functions::*;
            check_file_change(&FunctionServer::start($lang));
        }
    };
    (@test $lang:expr, broken_module_then_fixed($source:expr, $in_body:expr)) => {
        #[test]
        fn a_module_with_a_syntax_error_is_502_until_it_is_fixed() {
            use $crate::common::functions::*;
            check_broken_module_then_fixed(&FunctionServer::start($lang), $source, $in_body);
        }
    };
    (@test $lang:expr, large_body_echo) => {
        #[test]
        fn a_one_mib_body_round_trips() {
            use $crate::common::functions::*;
            check_large_body_echo(&FunctionServer::start($lang));
        }
    };
    (@test $lang:expr, host_death_is_502_and_replaced($source:expr)) => {
        #[test]
        fn a_host_that_dies_mid_request_is_502_and_replaced() {
            use $crate::common::functions::*;
            check_host_death_is_502_and_replaced(&FunctionServer::start($lang), $source);
        }
    };
    (@test $lang:expr, forged_reply_never_reaches_another_client($source:expr)) => {
        #[test]
        fn a_reply_frame_forged_by_the_handler_never_reaches_another_client() {
            use $crate::common::functions::*;
            check_forged_reply_never_reaches_another_client(&FunctionServer::start($lang), $source);
        }
    };
    (@test $lang:expr, memory_mb_is_enforced($source:expr)) => {
        #[test]
        fn an_allocation_past_memory_mb_fails_inside_the_function_and_others_keep_serving() {
            use $crate::common::functions::*;
            check_memory_mb_is_enforced(&FunctionServer::start($lang), $source);
        }
    };
    (@test $lang:expr, network_is_off_unless_asked_for($source:expr)) => {
        #[test]
        fn a_host_has_no_network_unless_its_config_asks_for_it() {
            use $crate::common::functions::*;
            check_network_is_off_unless_asked_for(&FunctionServer::start($lang), $source);
        }
    };
    (@test $lang:expr, escapes_are_denied($source:expr)) => {
        #[test]
        fn ptrace_mount_namespaces_and_the_keyring_are_denied_to_a_host() {
            use $crate::common::functions::*;
            check_escapes_are_denied(&FunctionServer::start($lang), $source);
        }
    };
    (@test $lang:expr, confined) => {
        #[test]
        fn a_function_sees_only_its_own_files_and_writes_only_its_tmp() {
            use $crate::common::functions::*;
            check_confined(&FunctionServer::start($lang));
        }
    };
    (@test $lang:expr, bad_response_headers_are_502($source:expr)) => {
        #[test]
        fn bad_response_headers_are_502_and_the_stream_stays_well_formed() {
            use $crate::common::functions::*;
            check_bad_response_headers_are_502(&FunctionServer::start($lang), $source);
        }
    };
    (@test $lang:expr, fork_bomb_is_stopped) => {
        #[test]
        fn a_fork_bomb_is_stopped_and_the_gateway_keeps_serving() {
            use $crate::common::functions::*;
            check_fork_bomb_is_stopped(&FunctionServer::start($lang));
        }
    };
    (@test $lang:expr, background_children_end_with_their_process) => {
        #[test]
        fn a_setsid_child_ends_with_its_function_s_process() {
            use $crate::common::functions::*;
            check_background_children_end_with_their_process(&FunctionServer::start($lang));
        }
    };
    (@test $lang:expr, runs_unprivileged($source:expr)) => {
        #[test]
        fn a_function_runs_unprivileged_and_cannot_reach_the_gateway_s_secrets() {
            use $crate::common::functions::*;
            check_runs_unprivileged(&FunctionServer::start($lang), $source);
        }
    };
    (@test $lang:expr, no_host_outlives_the_gateway) => {
        #[test]
        fn no_host_outlives_a_stopped_or_killed_gateway() {
            use $crate::common::functions::*;
            check_no_host_outlives_the_gateway(FunctionServer::start($lang), ::libc::SIGTERM);
            check_no_host_outlives_the_gateway(FunctionServer::start($lang), ::libc::SIGKILL);
        }
    };
    ($lang:expr => { $($check:ident $(($($arg:expr),+ $(,)?))?),+ $(,)? }) => {
        $($crate::common::functions::contract_tests!(@test $lang, $check $(($($arg),+))?);)+
    };
}
pub(crate) use contract_tests;

/// A function's host cannot reach the gateway's port (it has a network
/// namespace with nothing in it) unless its config says `"network": true`.
/// `source` answers `?port=N` with "connected" or the error it got.
pub fn check_network_is_off_unless_asked_for(s: &FunctionServer, source: &str) {
    add_function(
        s,
        "net",
        source,
        &[
            ("GET:/net", json!({"network": false})),
            ("GET:/net-on", json!({"network": true})),
        ],
    );
    let port = s.addr().port();
    let answer = |path: &str| answered(s, &format!("{path}?port={port}")).text();
    let off = answer("/net");
    assert!(!off.contains("connected"), "without network: {off:?}");
    assert_eq!(answer("/net-on"), "connected", "with \"network\": true");
}

/// What a host may not do: `source` answers a JSON object of each attempt
/// (ptrace, unshare, mount, ...) and the error it got, and `"fork"` of
/// starting a child process, which still works.
pub fn check_escapes_are_denied(s: &FunctionServer, source: &str) {
    add_function(s, "escape", source, &[("GET:/escape", json!({}))]);
    let attempts = answered(s, "/escape").json();
    let attempts = attempts.as_object().expect("a JSON object");
    assert!(attempts.len() > 2, "{attempts:?}");
    for (call, outcome) in attempts {
        let want = if call == "fork" {
            "ok"
        } else {
            "Operation not permitted"
        };
        assert_eq!(outcome, want, "{call}: {attempts:?}");
    }
}

/// Started by root, a function runs as `nobody`: it cannot read the route
/// database or the admin key file, signal the gateway, or write into the
/// functions directory. `source` answers the lines `uid=N`, `db=…`,
/// `key=…`, `kill=…` and `write=…` (`ok` or `denied`), from the paths and
/// pid in its environment (`DB`, `KEY`, `PID`, `DIR`).
pub fn check_runs_unprivileged(s: &FunctionServer, source: &str) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the privilege drop happens only when corefn is started by root");
        return;
    }
    let env = json!({
        "DB": s.db_path(),
        "KEY": s.db_path().with_extension("admin-key"),
        "PID": s.pid().to_string(),
        "DIR": s.functions_dir(),
    });
    add_function(s, "whoami", source, &[("GET:/whoami", json!({"env": env}))]);
    let text = answered(s, "/whoami").text();
    let lines: BTreeSet<&str> = text.lines().map(str::trim).collect();
    let nobody = nix_uid_of("nobody");
    let want: BTreeSet<String> = [
        format!("uid={nobody}"),
        "db=denied".into(),
        "key=denied".into(),
        "kill=denied".into(),
        "write=denied".into(),
    ]
    .into();
    let got: BTreeSet<String> = lines.iter().map(|l| l.to_string()).collect();
    assert_eq!(got, want, "{text:?}");
    assert!(
        !s.functions_dir().join("planted").exists(),
        "nothing was written into the functions directory"
    );
}

fn nix_uid_of(name: &str) -> u32 {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&name)).then(|| fields[2].parse().expect("uid"))
        })
        .unwrap_or_else(|| panic!("no user {name}"))
}

/// Writes `source` as `NAME.<ext>` (executable, as exec needs) into the
/// server's functions directory and routes each key to it, with the
/// descriptor fields given beside it.
fn add_function(
    s: &FunctionServer,
    name: &str,
    source: &str,
    routes: &[(&str, serde_json::Value)],
) {
    let module = format!("{name}.{}", s.lang.extension());
    let path = s.functions_dir().join(&module);
    std::fs::write(&path, source).expect("write the module");
    make_executable(&path);
    for (key, fields) in routes {
        let mut descriptor = fields.clone();
        descriptor["runtime"] = json!(s.lang.runtime());
        descriptor["module"] = json!(module);
        insert_route(s.db_path(), key, &descriptor.to_string());
    }
}

/// GET `path` until it answers 200 (the watcher publishes within
/// milliseconds); that answer.
fn answered(s: &FunctionServer, path: &str) -> Response {
    let mut last = None;
    let served = wait_until(Duration::from_secs(5), || {
        let r = get(s.addr(), path);
        let ok = r.status == 200;
        last = Some(r);
        ok
    });
    let last = last.expect("asked at least once");
    assert!(
        served.is_some(),
        "{path} is not served: {} {:?}",
        last.status,
        last.text()
    );
    last
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// The shell script a confined function runs (as a child of its own
/// process: namespaces, the view, limits and the filter are inherited, so
/// what the script can reach the function can too, and the reverse). It
/// prints `name=ok|denied` per attempt, from the paths in its environment.
const CONFINEMENT_PROBE: &str = r#"
attempt() { name=$1; shift; if "$@" >/dev/null 2>&1; then echo "$name=ok"; else echo "$name=denied"; fi; }
attempt db cat "$DB"
attempt key cat "$KEY"
attempt cache cat "$CACHE/secret"
echo x 2>/dev/null > "$CACHE/planted"
attempt neighbor cat "$NEIGHBOR"
attempt symlink cat "$OWN_DIR/escape"
attempt own cat "$OWN_DIR/own.txt"
attempt write_own sh -c 'echo x > "$OWN_DIR/planted"'
attempt write_root sh -c 'echo x > /planted'
attempt write_tmp sh -c 'echo x > /tmp/t && test "$(cat /tmp/t)" = x'
attempt kill_gateway kill -0 "$PID"
for worker in $WORKERS; do attempt kill_worker kill -0 "$worker"; done
attempt few_processes test "$(ls -d /proc/[0-9]* | wc -l)" -le 8
"#;

/// The handler of each runtime that runs `$SCRIPT` with `/bin/sh` and
/// answers its output as text (exec functions are the script).
fn script_runner(lang: Lang) -> &'static str {
    match lang {
        Lang::Python => {
            "import os\nimport subprocess\n\n\ndef handle(request):\n    run = subprocess.run([\"/bin/sh\", os.environ[\"SCRIPT\"]], capture_output=True, text=True)\n    return run.stdout + run.stderr\n"
        }
        Lang::Node => {
            "'use strict';\nconst { spawnSync } = require('child_process');\nexports.handler = async () => {\n  const run = spawnSync('/bin/sh', [process.env.SCRIPT]);\n  return { statusCode: 200, headers: { 'content-type': 'text/plain' }, body: String(run.stdout) + String(run.stderr) + String(run.error || '') };\n};\n"
        }
        Lang::Php => {
            "<?php\nheader('Content-Type: text/plain');\necho shell_exec('/bin/sh ' . escapeshellarg($_SERVER['SCRIPT']) . ' 2>&1');\n"
        }
        other => panic!("no script runner for {other:?}"),
    }
}

/// Writes `script` and routes `GET:/NAME` to a function of its own
/// directory (`NAME/`) that runs it; returns that directory.
fn add_script_function(
    s: &FunctionServer,
    name: &str,
    script: &str,
    fields: serde_json::Value,
) -> PathBuf {
    let dir = s.functions_dir().join(name);
    std::fs::create_dir_all(&dir).expect("function dir");
    let script_path = dir.join("script.sh");
    let mut fields = fields;
    fields["env"]["SCRIPT"] = json!(script_path);
    if s.lang == Lang::Exec {
        let cgi = format!("#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\n{script}");
        add_function(
            s,
            &format!("{name}/{name}"),
            &cgi,
            &[(&format!("GET:/{name}"), fields)],
        );
    } else {
        std::fs::write(&script_path, script).expect("write the script");
        let runner = script_runner(s.lang);
        add_function(
            s,
            &format!("{name}/{name}"),
            runner,
            &[(&format!("GET:/{name}"), fields)],
        );
    }
    dir
}

/// A function sees only the system's directories, its own (read-only)
/// and a private `/tmp`: not the route database, the key file, the module
/// cache or another function's files, even through a symbolic link in its
/// own directory; it cannot write anywhere but `/tmp`, and cannot signal
/// the gateway or a worker (it sees only its own processes).
pub fn check_confined(s: &FunctionServer) {
    let neighbor = s.functions_dir().join("neighbor");
    std::fs::create_dir_all(&neighbor).expect("neighbor dir");
    std::fs::write(neighbor.join("secret.txt"), "secret").expect("neighbor file");
    let own = s.functions_dir().join("confined");
    std::fs::create_dir_all(&own).expect("own dir");
    std::fs::write(own.join("own.txt"), "own").expect("own file");
    std::os::unix::fs::symlink(s.db_path(), own.join("escape")).expect("symlink");
    std::fs::write(s.cache_dir().join("secret"), "secret").expect("cache file");
    let workers: Vec<String> = worker_pids(s.pid()).iter().map(u32::to_string).collect();
    assert!(!workers.is_empty(), "workers run");
    let env = json!({
        "DB": s.db_path(),
        "KEY": s.db_path().with_extension("admin-key"),
        "CACHE": s.cache_dir(),
        "NEIGHBOR": neighbor.join("secret.txt"),
        "OWN_DIR": own,
        "PID": s.pid().to_string(),
        "WORKERS": workers.join(" "),
    });
    add_script_function(s, "confined", CONFINEMENT_PROBE, json!({"env": env}));
    let text = answered(s, "/confined").text();
    let got: BTreeSet<String> = text.lines().map(|l| l.trim().to_string()).collect();
    let want: BTreeSet<String> = [
        "db=denied",
        "key=denied",
        "cache=denied",
        "neighbor=denied",
        "symlink=denied",
        "own=ok",
        "write_own=denied",
        "write_root=denied",
        "write_tmp=ok",
        "kill_gateway=denied",
        "kill_worker=denied",
        "few_processes=ok",
    ]
    .iter()
    .map(|l| l.to_string())
    .collect();
    assert_eq!(got, want, "{text}");
    // Below a writable /tmp of its own, the cache's path may be written
    // to: the real cache must not change.
    assert!(!own.join("planted").exists(), "nothing written in its dir");
    assert!(
        !s.cache_dir().join("planted").exists(),
        "nothing written in the module cache"
    );
}

/// 200 background children at once: `RLIMIT_NPROC` (counted in the
/// function's own user namespace) stops the shell before it has them all,
/// and the gateway and the function's runtime go on serving.
pub fn check_fork_bomb_is_stopped(s: &FunctionServer) {
    let marker = format!("29.{}", s.addr().port());
    let script = format!(
        "i=0\nwhile [ $i -lt 200 ]; do sleep {marker} </dev/null >/dev/null 2>&1 & i=$((i+1)); done\necho started-all-200\n"
    );
    add_script_function(s, "bomb", &script, json!({}));
    let r = routed(s, "/bomb");
    let body = r.text();
    assert!(
        !body.contains("started-all-200"),
        "200 children were started: {} {body:?}",
        r.status
    );
    eprintln!("fork bomb: {} {:?}", r.status, body.trim());
    assert_eq!(get(s.addr(), "/hello").text(), s.lang.hello_body());
    let sleepers = processes_named_with_arg("sleep", &marker);
    assert!(
        sleepers.len() < 200,
        "{} of the bomb's children run",
        sleepers.len()
    );
    if s.lang == Lang::Exec {
        // Its pid namespace ended with the call: so did every child.
        let gone = wait_until(Duration::from_secs(5), || {
            processes_named_with_arg("sleep", &marker).is_empty()
        });
        assert!(gone.is_some(), "the bomb's children outlived the call");
    }
}

/// A child that leaves its process group and session (`setsid`) in the
/// background ends with the call (exec) or with the host it was started by
/// when that host is killed at its timeout (python, node, php).
pub fn check_background_children_end_with_their_process(s: &FunctionServer) {
    for (route, hang, timeout_ms) in [("bg", "0", 5_000), ("bg-hang", "1", 1_000)] {
        let marker = format!("28.{}{hang}", s.addr().port());
        let script = format!(
            "setsid sleep {marker} </dev/null >/dev/null 2>&1 &\nsleep 0.2\necho started\n\
             case \"$HANG\" in 1) sleep 30 ;; esac\n"
        );
        add_script_function(
            s,
            route,
            &script,
            json!({"env": {"HANG": hang}, "timeout_ms": timeout_ms}),
        );
        let r = routed(s, &format!("/{route}"));
        match hang {
            "0" if s.lang == Lang::Exec => assert_eq!(r.status, 200, "{}", r.text()),
            "0" => {
                // A host outlives its call: the child lives with it.
                assert_eq!(r.status, 200, "{}", r.text());
                continue;
            }
            _ => assert_eq!(r.status, 504, "{}", r.text()),
        }
        let gone = wait_until(Duration::from_secs(5), || {
            processes_named_with_arg("sleep", &marker).is_empty()
        });
        assert!(
            gone.is_some(),
            "{route}: the setsid child outlived its function's process: {:?}",
            processes_named_with_arg("sleep", &marker)
        );
    }
}

/// GET `path` until it is routed (not 404); that answer.
fn routed(s: &FunctionServer, path: &str) -> Response {
    let mut last = None;
    wait_until(Duration::from_secs(5), || {
        let r = get(s.addr(), path);
        let routed = r.status != 404;
        last = Some(r);
        routed
    });
    last.expect("asked at least once")
}

/// Live processes whose command is `name` with an argument `arg`.
fn processes_named_with_arg(name: &str, arg: &str) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                let parts: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
                parts.first().is_some_and(|p| p.ends_with(name.as_bytes()))
                    && parts.contains(&arg.as_bytes())
            })
        })
        .filter(|&pid| proc_state(pid).is_some_and(|(state, _)| state != 'Z'))
        .collect()
}

/// A function's answer that would put something other than one response on
/// the wire (`source` answers `?bad=crlf`: a header value with CR/LF,
/// `name`: a header name that is not a token, `status`: 600, `length`: a
/// Content-Length that disagrees with its body) is a 502 naming the
/// problem, or, where the runtime itself refuses to send it (PHP's
/// `header()` drops a value with a line break), an answer without it. On
/// the same kept-alive connection the next request then gets its own answer:
/// nothing the function wrote is read as a response of its own.
pub fn check_bad_response_headers_are_502(s: &FunctionServer, source: &str) {
    add_function(s, "badheaders", source, &[("GET:/badheaders", json!({}))]);
    assert_eq!(answered(s, "/badheaders").text(), "fine");
    let mut conn = Conn::connect(s.addr());
    for (bad, says) in [
        ("crlf", "control characters"),
        ("name", "not a"),
        ("status", "600"),
        ("length", "Content-Length"),
    ] {
        conn.write(get_req(&format!("/badheaders?bad={bad}")).as_bytes());
        let r = conn.read_response();
        let text = r.text();
        let refused_by_runtime = s.lang == Lang::Php && bad == "crlf" && r.status == 200;
        if refused_by_runtime {
            assert!(r.header("x-injected").is_none(), "{bad}: {:?}", r.headers);
        } else {
            assert_eq!(r.status, 502, "{bad}: {text}");
            assert!(
                text.contains(says),
                "{bad}: the 502 names the problem: {text}"
            );
        }
        assert!(r.header("x-injected").is_none(), "{bad}: {:?}", r.headers);
        if r.is_connection_close() {
            conn = Conn::connect(s.addr());
        }
        conn.write(get_req("/badheaders").as_bytes());
        let next = conn.read_response();
        assert_eq!(
            (next.status, next.text().as_str()),
            (200, "fine"),
            "after {bad}"
        );
    }
}
