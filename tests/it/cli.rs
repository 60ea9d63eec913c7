//! The client subcommands of the `corefn` binary (`deploy`, `invoke`,
//! `logs`, `keys`, …) against a real server: what they print, that
//! `--json` is the server's JSON, their exit codes (0 ok, 1 refused, 2
//! usage, 3 unreachable), deploy progress on a terminal and on a pipe.
//! Every child runs with a bound and talks only to 127.0.0.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::control::ControlServer;
use crate::common::*;

/// How long one CLI run may take before the test fails: a deploy checks
/// code with python3, which a machine busy with a build can slow down.
const RUN_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a change (a rollback, a revoked key) may take to be served.
const SERVED_TIMEOUT: Duration = Duration::from_secs(10);

/// One finished CLI run.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> Run {
        assert_eq!(self.code, 0, "expected success: {self:?}");
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self:?}"))
    }
}

/// How a CLI run is set up: where it runs (its current directory decides
/// which admin key file it finds) and what it is given.
struct Cli {
    url: String,
    cwd: PathBuf,
    envs: Vec<(String, String)>,
}

impl Cli {
    /// For `s`, run from the server's directory: the admin key file that
    /// `serve` wrote there (`corefn.admin-key`) is the CLI's default key.
    fn of(s: &ControlServer) -> Cli {
        Cli {
            url: format!("http://{}", s.server.addr()),
            cwd: s.server.dir().to_path_buf(),
            envs: Vec::new(),
        }
    }

    /// `corefn ARGS… --url URL`.
    fn run(&self, args: &[&str]) -> Run {
        self.run_with_stdin(args, None)
    }

    fn run_with_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Run {
        let mut command = self.command(args);
        command.arg("--url").arg(&self.url);
        command.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        finish(spawn(command), stdin, args)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_corefn"));
        command
            .args(args)
            .current_dir(&self.cwd)
            .env_remove("COREFN_URL")
            .env_remove("COREFN_KEY")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env_remove("ALL_PROXY")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.envs {
            command.env(k, v);
        }
        command
    }
}

fn spawn(mut command: Command) -> Child {
    command.spawn().expect("spawn corefn")
}

/// Waits for `child` (killing it past [`RUN_TIMEOUT`]) and collects its
/// output.
fn finish(mut child: Child, stdin: Option<&[u8]>, args: &[&str]) -> Run {
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(bytes).expect("write the child's stdin");
    }
    // A child whose stdout is a terminal has no pipe to read here.
    let stdout = child.stdout.take().map(reader_thread);
    let stderr = child.stderr.take().map(reader_thread);
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll the child") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("corefn {args:?} ran past {RUN_TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: stdout
            .map(|t| t.join().expect("stdout reader"))
            .unwrap_or_default(),
        stderr: stderr
            .map(|t| t.join().expect("stderr reader"))
            .unwrap_or_default(),
    }
}

fn reader_thread(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// A python function that says `text`.
fn python_says(text: &str) -> String {
    format!("def handle(request):\n    return (200, {{'content-type': 'text/plain'}}, {text:?})\n")
}

/// Writes `files` under a new directory `name` in `parent`.
fn write_dir(parent: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = parent.join(name);
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(&path, text).expect("write a file");
    }
    dir
}

fn write_file(parent: &Path, name: &str, text: &str) -> String {
    let path = parent.join(name);
    std::fs::write(&path, text).expect("write a file");
    path.to_str().expect("UTF-8 path").to_string()
}

/// Invokes `name` until it answers `want` (a change is served within
/// milliseconds of its commit, but not at the same instant).
fn invoke_until(cli: &Cli, args: &[&str], want: &str) -> Run {
    let mut last = None;
    let found = wait_until(SERVED_TIMEOUT, || {
        let run = cli.run(args);
        let done = run.code == 0 && run.stdout == want;
        last = Some(run);
        done
    });
    let last = last.expect("at least one run");
    assert!(
        found.is_some(),
        "{args:?} never answered {want:?}: {last:?}"
    );
    last
}

#[test]
fn cli_deploys_a_directory_with_a_helper_module_and_corefn_json() {
    let s = ControlServer::start();
    let cli = Cli::of(&s);
    let src = crate::common::tempdir().expect("tempdir");
    let dir = write_dir(
        src.path(),
        "greeter",
        &[
            (
                "main.py",
                "import os\nimport helper\n\ndef handle(request):\n    \
                 return (200, {'content-type': 'text/plain'}, helper.greet(os.environ.get('WHO', '?')))\n",
            ),
            ("helper.py", "def greet(who):\n    return f'hello {who} from a helper\\n'\n"),
            ("corefn.json", r#"{"name": "dir-fn", "config": {"env": {"WHO": "json"}}}"#),
            ("__pycache__/junk.pyc", "not packed"),
        ],
    );
    let path = dir.to_str().expect("UTF-8");
    let run = cli
        .run(&[
            "deploy",
            path,
            "--route",
            "GET:/dir-fn-route",
            "--env",
            "WHO=flags",
        ])
        .ok();
    // stdout is a pipe here: plain step lines, nothing drawn.
    let port = s.server.addr().port();
    for line in [
        "[1/3] Packaging",
        "[2/3] Uploading",
        "[3/3] Compiling",
        &format!("Live at http://dir-fn.localhost:{port}/ (version 1)"),
    ] {
        assert!(run.stdout.contains(line), "{line:?} missing: {run:?}");
    }
    assert!(
        !run.stdout.contains('\x1b'),
        "escape codes on a pipe: {run:?}"
    );
    // The --env flag overrode corefn.json's value of the same key.
    let invoked = cli.run(&["invoke", "dir-fn"]).ok();
    assert_eq!(invoked.stdout, "hello flags from a helper\n");
    s.served("/dir-fn-route", "hello flags from a helper\n");

    let listed = cli.run(&["list"]).ok();
    assert!(listed.stdout.starts_with("NAME"), "{listed:?}");
    assert!(listed.stdout.contains("dir-fn"), "{listed:?}");
    assert!(listed.stdout.contains("GET:/dir-fn-route"), "{listed:?}");
    let listed = cli.run(&["list", "--json"]).ok().json();
    assert_eq!(listed["functions"][0]["name"], "dir-fn", "{listed}");

    let got = cli.run(&["get", "dir-fn"]).ok();
    assert!(got.stdout.contains("python"), "{got:?}");
    let got = cli.run(&["get", "dir-fn", "--json"]).ok().json();
    assert_eq!(got["live_version"], 1, "{got}");
    assert_eq!(got["runtime"], "python", "{got}");

    // The same directory again is a new version.
    let run = cli.run(&["deploy", path, "--json"]).ok().json();
    assert_eq!(run["version"], 2, "{run}");
    assert_eq!(run["name"], "dir-fn", "{run}");
}

#[test]
fn cli_deploy_refuses_links_and_shows_compile_errors() {
    let s = ControlServer::start();
    let cli = Cli::of(&s);
    let src = crate::common::tempdir().expect("tempdir");
    let dir = write_dir(src.path(), "linked", &[("main.py", &python_says("x"))]);
    std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd")).expect("symlink");
    let run = cli.run(&["deploy", dir.to_str().expect("UTF-8")]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("symbolic link"), "{run:?}");

    let broken = write_file(src.path(), "broken.py", "def handle(request:\n");
    let run = cli.run(&["deploy", &broken]);
    assert_eq!(run.code, 1, "{run:?}");
    let first = run.stderr.lines().next().unwrap_or("");
    assert!(first.contains("422"), "{run:?}");
    assert!(
        run.stderr.contains("function.py"),
        "no diagnostics: {run:?}"
    );

    let unknown = write_file(src.path(), "notes.txt", "hello");
    let run = cli.run(&["deploy", &unknown]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("--runtime"), "{run:?}");
}

#[test]
fn cli_invoke_sends_data_headers_methods_and_versions() {
    let s = ControlServer::start();
    let cli = Cli::of(&s);
    let src = crate::common::tempdir().expect("tempdir");
    let echo = write_file(
        src.path(),
        "echo_fn.py",
        "def handle(request):\n    \
         body = request.body.decode() if isinstance(request.body, bytes) else (request.body or '')\n    \
         text = ' '.join([request.method, request.path, request.query or '-', \
         request.get_header('x-test', '-'), request.get_header('content-type', '-'), body])\n    \
         return (200, {'content-type': 'text/plain'}, text)\n",
    );
    // A file's name becomes the function's (`_` → `-`), its extension the runtime.
    let run = cli.run(&["deploy", &echo]).ok();
    assert!(run.stdout.contains("(version 1)"), "{run:?}");

    let run = cli.run(&["invoke", "echo-fn"]).ok();
    assert!(run.stdout.starts_with("GET "), "{run:?}");
    let run = cli
        .run(&[
            "invoke",
            "echo-fn",
            "--data",
            r#"{"a":1}"#,
            "-H",
            "X-Test: yes",
        ])
        .ok();
    assert!(run.stdout.starts_with("POST "), "{run:?}");
    assert!(
        run.stdout.ends_with(r#" yes application/json {"a":1}"#),
        "{run:?}"
    );
    let data = write_file(src.path(), "data.txt", "from a file");
    let run = cli
        .run(&[
            "invoke",
            "echo-fn",
            "--data",
            &format!("@{data}"),
            "-X",
            "PUT",
            "--path",
            "/sub?q=1",
        ])
        .ok();
    assert!(run.stdout.starts_with("PUT "), "{run:?}");
    assert!(run.stdout.contains("/sub q=1 "), "{run:?}");
    assert!(run.stdout.ends_with("from a file"), "{run:?}");
    let run = cli
        .run_with_stdin(&["invoke", "echo-fn", "--data", "-"], Some(b"from stdin"))
        .ok();
    assert!(run.stdout.ends_with("from stdin"), "{run:?}");
    let run = cli.run(&["invoke", "echo-fn", "-i"]).ok();
    assert!(run.stderr.contains("HTTP/1.1 200"), "{run:?}");
    assert!(run.stderr.contains("x-request-id"), "{run:?}");

    let run = cli.run(&["invoke", "echo-fn", "--data", "@/no/such/file"]);
    assert_eq!(run.code, 2, "{run:?}");
    // A function's error status is the command's failure.
    let run = cli.run(&["invoke", "nobody-here"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("404"), "{run:?}");
}

#[test]
fn cli_versions_rollback_and_canary() {
    let s = ControlServer::start();
    let cli = Cli::of(&s);
    let src = crate::common::tempdir().expect("tempdir");
    let v1 = write_file(src.path(), "v1.py", &python_says("one\n"));
    let v2 = write_file(src.path(), "v2.py", &python_says("two\n"));
    cli.run(&["deploy", &v1, "--name", "flip"]).ok();
    cli.run(&["deploy", &v2, "--name", "flip"]).ok();
    invoke_until(&cli, &["invoke", "flip"], "two\n");

    let versions = cli.run(&["versions", "flip"]).ok();
    let lines: Vec<&str> = versions.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{versions:?}");
    assert!(lines[0].starts_with("VERSION"), "{versions:?}");
    assert!(
        lines[2].starts_with("2") && lines[2].contains("live"),
        "{versions:?}"
    );
    let versions = cli.run(&["versions", "flip", "--json"]).ok().json();
    assert_eq!(
        versions["versions"].as_array().map(Vec::len),
        Some(2),
        "{versions}"
    );

    let run = cli.run(&["rollback", "flip"]).ok();
    assert_eq!(run.stdout, "flip: live is version 1\n");
    invoke_until(&cli, &["invoke", "flip"], "one\n");
    // Any version answers when asked for by number.
    invoke_until(&cli, &["invoke", "flip", "--version", "2"], "two\n");
    let run = cli
        .run(&["rollback", "flip", "--to", "2", "--json"])
        .ok()
        .json();
    assert_eq!(run["live_version"], 2, "{run}");
    invoke_until(&cli, &["invoke", "flip"], "two\n");

    // All of the requests to the canary: every call shows it.
    let run = cli
        .run(&["canary", "flip", "--version", "1", "--weight", "1"])
        .ok();
    assert!(run.stdout.contains("100%"), "{run:?}");
    invoke_until(&cli, &["invoke", "flip"], "one\n");
    let got = cli.run(&["get", "flip", "--json"]).ok().json();
    assert_eq!(got["canary"]["version"], 1, "{got}");
    assert_eq!(got["live_version"], 2, "{got}");
    let run = cli.run(&["canary", "flip", "--off"]).ok();
    assert!(run.stdout.contains("no canary"), "{run:?}");
    invoke_until(&cli, &["invoke", "flip"], "two\n");
    let got = cli.run(&["get", "flip", "--json"]).ok().json();
    assert!(got["canary"].is_null(), "{got}");
    let run = cli.run(&["canary", "flip", "--weight", "0.5"]);
    assert_eq!(run.code, 2, "--version is required: {run:?}");

    let run = cli.run(&["delete", "flip"]).ok();
    assert_eq!(run.stdout, "deleted flip\n");
    let run = cli.run(&["get", "flip"]);
    assert_eq!(run.code, 1, "{run:?}");
}

#[test]
fn cli_exit_codes_say_who_said_no() {
    let s = ControlServer::start();
    let cli = Cli::of(&s);
    // 1: the server refused; its message in one line.
    let run = cli.run(&["get", "no-such-fn"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    assert!(run.stderr.contains("no-such-fn"), "{run:?}");
    assert!(run.stderr.contains("404"), "{run:?}");
    // 2: usage, as clap says it.
    for args in [
        &["invoke"][..],
        &["deploy", "x", "--rate-limit", "fast"],
        &["nonsense"],
    ] {
        let run = cli.run(args);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
    }
    // 3: nothing listens there; the line names the URL and what to do.
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let run = Cli {
        url: nobody.clone(),
        cwd: s.server.dir().to_path_buf(),
        envs: Vec::new(),
    }
    .run(&["list"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains(&nobody), "{run:?}");
    assert!(run.stderr.contains("corefn serve"), "{run:?}");
    assert!(run.stderr.contains("--url"), "{run:?}");
    // COREFN_URL says the same as --url.
    let mut by_env = cli.command(&["list", "--json"]);
    by_env.env("COREFN_URL", format!("http://{}", s.server.addr()));
    let run = finish(spawn(by_env), None, &["list"]);
    assert_eq!(run.code, 0, "{run:?}");

    // A wrong key: refused, and the message says it is about the key.
    let run = cli.run(&["delete", "anything", "--key", "cfk_not_a_key"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("key"), "{run:?}");
    // No key at all (run elsewhere, no key file): writes are refused.
    let elsewhere = crate::common::tempdir().expect("tempdir");
    let keyless = Cli {
        url: cli.url.clone(),
        cwd: elsewhere.path().to_path_buf(),
        envs: Vec::new(),
    };
    let run = keyless.run(&["unschedule", "1"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("key"), "{run:?}");
    // ... but reads are open to loopback.
    keyless.run(&["list"]).ok();
    // COREFN_KEY is a key as --key is; --db names another key file.
    let mut by_env = keyless.command(&["keys", "list", "--url", &cli.url]);
    by_env.env("COREFN_KEY", &s.admin_key);
    finish(spawn(by_env), None, &["keys", "list"]).ok();
    let db = s.server.db_path().to_str().expect("UTF-8").to_string();
    keyless.run(&["keys", "list", "--db", &db]).ok();
}

#[test]
fn cli_stats_and_logs_with_tail_and_follow() {
    let s = ControlServer::start();
    let cli = Cli::of(&s);
    let src = crate::common::tempdir().expect("tempdir");
    let talker = write_file(
        src.path(),
        "talker.py",
        "def handle(request):\n    print('said', request.query)\n    return (200, {}, 'ok')\n",
    );
    cli.run(&["deploy", &talker]).ok();
    for i in 0..3 {
        cli.run(&["invoke", "talker", "--path", &format!("?n={i}")])
            .ok();
    }
    let mut stats = Value::Null;
    let counted = wait_until(SERVED_TIMEOUT, || {
        stats = cli.run(&["stats", "talker", "--json"]).ok().json();
        stats["count"].as_u64() == Some(3)
    });
    assert!(counted.is_some(), "{stats}");
    let run = cli.run(&["stats", "talker", "--window", "1h"]).ok();
    assert!(run.stdout.starts_with("talker over 1h: 3 calls"), "{run:?}");
    assert!(run.stdout.contains("2xx 3"), "{run:?}");
    let run = cli.run(&["stats", "talker", "--window", "forever"]);
    assert_eq!(run.code, 1, "{run:?}");

    let logs = cli.run(&["logs", "talker"]).ok();
    for i in 0..3 {
        assert!(
            logs.stdout.contains(&format!("stdout said n={i}")),
            "{logs:?}"
        );
    }
    let tail = cli.run(&["logs", "talker", "--tail", "1"]).ok();
    assert_eq!(tail.stdout.lines().count(), 1, "{tail:?}");
    let raw = cli.run(&["logs", "talker", "--json"]).ok();
    for line in raw.stdout.lines() {
        let value: Value = serde_json::from_str(line).expect("an NDJSON line");
        assert_eq!(value["function"], "talker", "{line}");
    }

    // -f: the backlog first (so the follower is registered), then a line
    // written after it started.
    let mut command = cli.command(&["logs", "talker", "-f", "--tail", "2"]);
    command.arg("--url").arg(&cli.url).stdin(Stdio::null());
    let mut child = spawn(command);
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped stdout");
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx.recv_timeout(RUN_TIMEOUT);
    assert!(first.is_ok(), "no backlog line from logs -f");
    cli.run(&["invoke", "talker", "--path", "?n=followed"]).ok();
    let deadline = Instant::now() + RUN_TIMEOUT;
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("said n=followed")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.iter().any(|l| l.contains("stdout said n=followed")),
        "{seen:?}"
    );
}

#[test]
fn cli_schedule_schedules_and_unschedule() {
    let s = ControlServer::start();
    let cli = Cli::of(&s);
    let src = crate::common::tempdir().expect("tempdir");
    let tick = write_file(src.path(), "tick.py", &python_says("tick"));
    cli.run(&["deploy", &tick]).ok();
    let run = cli.run(&["schedule", "tick", "--cron", "@every 1s"]).ok();
    assert!(run.stdout.starts_with("schedule "), "{run:?}");
    assert!(
        run.stdout.contains("tick @every 1s (overlap skip)"),
        "{run:?}"
    );
    let id = run.stdout["schedule ".len()..]
        .split(':')
        .next()
        .expect("an id")
        .to_string();
    let listed = cli.run(&["schedules"]).ok();
    assert!(listed.stdout.starts_with("ID"), "{listed:?}");
    assert!(listed.stdout.contains("@every 1s"), "{listed:?}");

    let mut seen = Value::Null;
    let ran = wait_until(Duration::from_secs(40), || {
        seen = cli
            .run(&["schedules", "--function", "tick", "--json"])
            .ok()
            .json();
        seen["schedules"][0]["runs"].as_u64().unwrap_or(0) >= 1
    });
    assert!(ran.is_some(), "{seen}");
    assert_eq!(seen["schedules"][0]["last_status"], 200, "{seen}");

    let run = cli.run(&["schedule", "tick", "--cron", "61 * * * *"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("not valid"), "{run:?}");

    let run = cli.run(&["unschedule", &id]).ok();
    assert!(run.stdout.contains("stopped"), "{run:?}");
    let listed = cli.run(&["schedules", "--json"]).ok().json();
    assert_eq!(listed["schedules"], serde_json::json!([]), "{listed}");
    let run = cli.run(&["unschedule", &id]);
    assert_eq!(run.code, 1, "{run:?}");
}

#[test]
fn cli_keys_create_list_and_revoke() {
    let s = ControlServer::start();
    let cli = Cli::of(&s);
    let src = crate::common::tempdir().expect("tempdir");
    let locked = write_file(src.path(), "locked.py", &python_says("secret\n"));
    cli.run(&["deploy", &locked, "--auth", "key"]).ok();
    // Without a key given on purpose, a call carries none (the admin key
    // file's key never goes to a function).
    let mut last = None;
    let refused = wait_until(SERVED_TIMEOUT, || {
        let run = cli.run(&["invoke", "locked"]);
        let done = run.code == 1;
        last = Some(run);
        done
    });
    assert!(refused.is_some(), "{last:?}");
    assert!(last.is_some_and(|r| r.stderr.contains("401")));

    let created = cli
        .run(&[
            "keys",
            "create",
            "--scope",
            "invoke",
            "--function",
            "locked",
            "--json",
        ])
        .ok()
        .json();
    let key = created["key"].as_str().expect("the secret").to_string();
    let id = created["id"].as_str().expect("an id").to_string();
    let run = cli.run(&["keys", "create", "--scope", "deploy"]).ok();
    assert!(run.stdout.trim().starts_with("cfk_"), "{run:?}");
    assert_eq!(run.stdout.lines().count(), 1, "{run:?}");
    assert!(run.stderr.contains("shown once"), "{run:?}");

    let listed = cli.run(&["keys", "list"]).ok();
    assert!(listed.stdout.contains(&id), "{listed:?}");
    let listed = cli.run(&["keys", "list", "--json"]).ok().json();
    assert!(
        listed["keys"].as_array().is_some_and(|k| k.len() == 3),
        "{listed}"
    );

    invoke_until(&cli, &["invoke", "locked", "--key", &key], "secret\n");
    let run = cli.run(&["keys", "revoke", &id]).ok();
    assert!(run.stdout.contains("revoked"), "{run:?}");
    let mut last = None;
    let refused = wait_until(SERVED_TIMEOUT, || {
        let run = cli.run(&["invoke", "locked", "--key", &key]);
        let done = run.code == 1 && run.stderr.contains("401");
        last = Some(run);
        done
    });
    assert!(refused.is_some(), "{last:?}");
    let listed = cli.run(&["keys", "list", "--json"]).ok().json();
    let revoked = listed["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["id"] == id.as_str()))
        .map(|k| k["revoked"].clone());
    assert!(revoked.is_some_and(|r| r.is_i64()), "{listed}");
    let run = cli.run(&["keys", "create"]);
    assert_eq!(run.code, 2, "--scope is required: {run:?}");
}

#[test]
fn cli_completions_print_scripts() {
    let cli = Cli {
        url: format!("http://127.0.0.1:{}", free_port()),
        cwd: std::env::temp_dir(),
        envs: Vec::new(),
    };
    for shell in ["bash", "zsh", "fish"] {
        let mut command = cli.command(&["completions", shell]);
        command.stdin(Stdio::null());
        let run = finish(spawn(command), None, &["completions", shell]).ok();
        assert!(run.stdout.contains("corefn"), "{shell}: {run:?}");
        assert!(run.stdout.contains("deploy"), "{shell}: {run:?}");
    }
}

#[test]
fn cli_deploy_draws_progress_on_a_terminal() {
    let s = ControlServer::start();
    let cli = Cli::of(&s);
    let src = crate::common::tempdir().expect("tempdir");
    let dir = write_dir(src.path(), "tty-fn", &[("main.py", &python_says("tty\n"))]);
    let size = nix::pty::Winsize {
        ws_row: 24,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(&size, None).expect("openpty");
    let child = {
        let mut command = cli.command(&["deploy", dir.to_str().expect("UTF-8")]);
        command
            .arg("--url")
            .arg(&cli.url)
            .env("TERM", "xterm")
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::from(pty.slave)));
        // The command holds the parent's copy of the terminal's slave end;
        // it goes with the command, so the master reads EOF when the child
        // exits.
        spawn(command)
    };
    let mut master = std::fs::File::from(pty.master);
    let reader = thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once the child's end is closed: that is the end of the output.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&seen).into_owned()
    });
    let run = finish(child, None, &["deploy"]);
    assert_eq!(run.code, 0, "{run:?}");
    let drawn = reader.join().expect("pty reader");
    for text in [
        "[1/3] Packaging",
        "[2/3] Uploading",
        "[3/3] Compiling",
        "Live at http://tty-fn.localhost:",
    ] {
        assert!(drawn.contains(text), "{text:?} not drawn: {drawn:?}");
    }
    // Drawn, not printed: the spinner's finished mark and cursor control.
    assert!(drawn.contains('✔'), "{drawn:?}");
    assert!(drawn.contains('\x1b'), "{drawn:?}");
    // The same deploy on a pipe prints plain lines without them.
    let run = cli.run(&["deploy", dir.to_str().expect("UTF-8")]).ok();
    assert!(run.stdout.contains("[1/3] Packaging"), "{run:?}");
    assert!(
        !run.stdout.contains('✔') && !run.stdout.contains('\x1b'),
        "{run:?}"
    );
}

#[test]
fn cli_bench_without_the_load_generator_says_how_to_build_it() {
    // A corefn alone in a directory, with an empty PATH: no corefn-bench
    // next to it or anywhere. A hard link (the same file, no copy) where
    // the filesystem allows one.
    let bin = Path::new(env!("CARGO_BIN_EXE_corefn"));
    let lonely = tempfile::tempdir_in(bin.parent().expect("target dir")).expect("tempdir");
    let alone = lonely.path().join("corefn");
    if std::fs::hard_link(bin, &alone).is_err() {
        std::fs::copy(bin, &alone).expect("copy corefn");
    }
    let empty = crate::common::tempdir().expect("tempdir");
    let mut command = Command::new(&alone);
    command
        .args(["bench", "--url", "http://127.0.0.1:9", "/hello", "-d", "1"])
        .env("PATH", empty.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let run = finish(spawn(command), None, &["bench"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("corefn-bench"), "{run:?}");
    assert!(run.stderr.contains("cargo build"), "{run:?}");
}

#[test]
fn cli_bench_runs_the_load_generator_against_a_route() {
    let bench = Path::new(env!("CARGO_BIN_EXE_corefn")).with_file_name("corefn-bench");
    if !bench.is_file() {
        eprintln!(
            "{} is not built (cargo test --workspace builds it): nothing to run",
            bench.display()
        );
        return;
    }
    let _cpu = cpu_heavy_test();
    let s = Server::start_with_demo(&["--workers", "0", "--cores", "1"]);
    let cli = Cli {
        url: format!("http://{}", s.addr()),
        cwd: s.dir().to_path_buf(),
        envs: Vec::new(),
    };
    // A short, bounded run: one connection, half a second, no warm-up.
    let mut command = cli.command(&[
        "bench", "--url", &cli.url, "/hello", "-c", "1", "-d", "0.5", "--warmup", "0",
    ]);
    command.stdin(Stdio::null());
    let run = finish(spawn(command), None, &["bench"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("latency"), "{run:?}");
}

/// Async invocations: `invoke --async`, `invocation ID`, `invocations`.
fn deploy_async_echo(cli: &Cli, dir: &Path) {
    let echo = write_file(
        dir,
        "later.py",
        "def handle(request):\n    return (200, {'content-type': 'text/plain'}, b'later:' + (request.body or b''))\n",
    );
    // Queued at once: the first attempt waits for the watcher to publish.
    cli.run(&["deploy", &echo]).ok();
}

#[test]
fn cli_invoke_async_prints_an_id_and_invocation_shows_the_answer() {
    let s = ControlServer::start();
    let cli = Cli::of(&s);
    let src = crate::common::tempdir().expect("tempdir");
    deploy_async_echo(&cli, src.path());
    let run = cli
        .run(&["invoke", "later", "--async", "--data", "queued"])
        .ok();
    let id = run.stdout.trim().to_string();
    assert!(!id.is_empty() && !id.contains(' '), "{run:?}");
    let accepted = cli
        .run(&["invoke", "later", "--async", "--data", "x", "--json"])
        .ok()
        .json();
    assert_eq!(accepted["state"], "queued", "{accepted}");
    assert_eq!(accepted["function"], "later", "{accepted}");

    let mut seen = Value::Null;
    let done = wait_until(Duration::from_secs(30), || {
        seen = cli.run(&["invocation", &id, "--json"]).ok().json();
        seen["state"] == "succeeded"
    });
    assert!(done.is_some(), "{seen}");
    assert_eq!(seen["status"], 200, "{seen}");
    assert_eq!(seen["body"], "later:queued", "{seen}");
    let human = cli.run(&["invocation", &id]).ok();
    assert!(human.stdout.contains("succeeded"), "{human:?}");
    assert!(human.stdout.contains("later:queued"), "{human:?}");

    let run = cli.run(&["invoke", "nobody", "--async"]);
    assert_eq!(run.code, 1, "{run:?}");
    let run = cli.run(&["invocation", "no-such-id"]);
    assert_eq!(run.code, 1, "{run:?}");
}

#[test]
fn cli_invocations_lists_by_function_and_state() {
    let s = ControlServer::start();
    let cli = Cli::of(&s);
    let src = crate::common::tempdir().expect("tempdir");
    deploy_async_echo(&cli, src.path());
    let id = cli
        .run(&["invoke", "later", "--async", "--data", "a"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let mut listed = Value::Null;
    let found = wait_until(Duration::from_secs(30), || {
        listed = cli
            .run(&[
                "invocations",
                "--function",
                "later",
                "--state",
                "succeeded",
                "--json",
            ])
            .ok()
            .json();
        listed["invocations"]
            .as_array()
            .is_some_and(|l| l.iter().any(|i| i["id"] == id.as_str()))
    });
    assert!(found.is_some(), "{listed}");
    let human = cli.run(&["invocations", "--function", "later"]).ok();
    assert!(human.stdout.starts_with("ID"), "{human:?}");
    assert!(human.stdout.contains(&id), "{human:?}");
    let run = cli.run(&["invocations", "--state", "sleeping"]);
    assert_eq!(run.code, 2, "{run:?}");
}
