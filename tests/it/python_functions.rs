//! Python functions: `def handle(request)` in a warm host per function,
//! answered with real python3 processes behind a real gateway.

use crate::common::functions::*;

contract_tests! {
    Lang::Python => {
        hello,
        json_echo,
        status_and_headers,
        handler_error(
            "ZeroDivisionError: division by zero",
            &["Traceback", "ZeroDivisionError", "boom.py"],
        ),
        timeout_replaces_host,
        concurrent_requests,
        file_change,
        broken_module_then_fixed("def handle(request:\n", "SyntaxError"),
        large_body_echo,
        host_death_is_502_and_replaced(
            "import os\n\ndef handle(request):\n    if request.query_params.get(\"die\"):\n        os._exit(3)\n    return (200, {\"content-type\": \"text/plain\"}, \"alive\\n\")\n",
        ),
        forged_reply_never_reaches_another_client(
            "import inspect\nimport json\nimport os\nimport struct\n\n\ndef forge(stolen):\n    meta = {\"status\": 200, \"headers\": [[\"content-type\", \"text/plain\"]]}\n    if stolen:\n        frame = inspect.currentframe()\n        while frame is not None and \"call_id\" not in frame.f_locals:\n            frame = frame.f_back\n        meta[\"id\"] = frame.f_locals[\"call_id\"] if frame else None\n    m = json.dumps(meta).encode()\n    os.write(4, struct.pack(\">II\", len(m), 6) + m + b\"forged\")\n\n\ndef handle(request):\n    mode = request.query_params.get(\"forge\", \"\")\n    if mode:\n        forge(mode == \"stolen\")\n    return (200, {\"content-type\": \"text/plain\"}, \"secret-\" + request.query_params.get(\"who\", \"\"))\n",
        ),
        memory_mb_is_enforced(
            "def handle(request):\n    if request.query_params.get(\"big\"):\n        data = bytearray(2 * 1024 ** 3)\n        return \"allocated %d\" % len(data)\n    return \"small\"\n",
        ),
        bad_response_headers_are_502(
            "def handle(request):\n    bad = request.query_params.get(\"bad\", \"\")\n    if bad == \"crlf\":\n        return (200, {\"x-a\": \"a\\r\\nx-injected: 1\"}, \"body\")\n    if bad == \"name\":\n        return (200, {\"bad name\": \"v\"}, \"body\")\n    if bad == \"status\":\n        return (600, {}, \"body\")\n    if bad == \"length\":\n        return (200, {\"content-length\": \"999\"}, \"body\")\n    return (200, {\"content-type\": \"text/plain\"}, \"fine\")\n",
        ),
        confined,
        fork_bomb_is_stopped,
        background_children_end_with_their_process,
        network_is_off_unless_asked_for(
            "import socket\n\n\ndef handle(request):\n    try:\n        socket.create_connection((\"127.0.0.1\", int(request.query_params[\"port\"])), timeout=2).close()\n        return \"connected\"\n    except OSError as exc:\n        return \"refused: %s\" % exc\n",
        ),
        escapes_are_denied(
            "import ctypes\nimport os\nimport platform\nimport subprocess\nimport tempfile\n\nlibc = ctypes.CDLL(None, use_errno=True)\n\n\ndef attempt(result):\n    return \"ok\" if result != -1 else os.strerror(ctypes.get_errno())\n\n\ndef mount_tmpfs():\n    # Somewhere of its own: should the filter ever let it through, nothing\n    # else of the machine is covered, and it is undone at once.\n    target = tempfile.mkdtemp().encode()\n    result = libc.mount(b\"none\", target, b\"tmpfs\", 0, None)\n    if result == 0:\n        libc.umount2(target, 0)\n    return attempt(result)\n\n\ndef handle(request):\n    attempts = {\n        \"ptrace\": attempt(libc.ptrace(0, 0, None, None)),\n        \"unshare\": attempt(libc.unshare(0x10000000)),\n        \"mount\": mount_tmpfs(),\n        \"fork\": \"ok\" if subprocess.run([\"true\"]).returncode == 0 else \"failed\",\n    }\n    if platform.machine() == \"x86_64\":\n        attempts[\"keyctl\"] = attempt(libc.syscall(250, 0, -1, 0, 0, 0))\n        attempts[\"bpf\"] = attempt(libc.syscall(321, 0, None, 0))\n        attempts[\"io_uring_setup\"] = attempt(libc.syscall(425, 8, None))\n    return attempts\n",
        ),
        no_host_outlives_the_gateway,
        runs_unprivileged(
            "import os\n\n\ndef attempt(action):\n    try:\n        action()\n        return \"ok\"\n    except OSError:\n        return \"denied\"\n\n\ndef plant():\n    with open(os.path.join(os.environ[\"DIR\"], \"planted\"), \"w\") as f:\n        f.write(\"x\")\n\n\ndef handle(request):\n    e = os.environ\n    return \"\\n\".join([\n        \"uid=%d\" % os.getuid(),\n        \"db=\" + attempt(lambda: open(e[\"DB\"], \"rb\").read(1)),\n        \"key=\" + attempt(lambda: open(e[\"KEY\"]).read()),\n        \"kill=\" + attempt(lambda: os.kill(int(e[\"PID\"]), 0)),\n        \"write=\" + attempt(plant),\n    ]) + \"\\n\"\n",
        ),
    }
}

#[test]
fn hosts_started_for_a_burst_are_stopped_when_idle() {
    use crate::common::*;
    use std::time::Duration;
    let s = FunctionServer::start_with(
        Lang::Python,
        &["--host-idle-ms", "1000", "--metrics-interval-ms", "100"],
    );
    // 8 slow requests at once: up to 4 hosts in each of the 2 workers.
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let addr = s.addr();
            std::thread::spawn(move || get(addr, "/slow?ms=800").status)
        })
        .collect();
    // The most hosts seen while the burst runs.
    let marker = s.marker("slow");
    let mut burst = 0;
    wait_until(Duration::from_millis(700), || {
        burst = burst.max(processes_with_marker(&marker).len());
        false
    });
    for client in clients {
        assert_eq!(client.join().expect("client"), 200);
    }
    assert!(
        burst > 2,
        "the burst started more hosts than the warm minimum: {burst}"
    );
    let mut now = burst;
    let shrunk = wait_until(Duration::from_secs(10), || {
        now = processes_with_marker(&marker).len();
        now <= 2
    });
    assert!(
        shrunk.is_some(),
        "idle hosts stopped down to one per worker: {burst} → {now}"
    );
    assert!(now >= 1, "the warm minimum stays: {now}");
    assert_eq!(get(s.addr(), "/slow?ms=0").text(), "slept\n");
}

/// A confined host's two waiting processes (the one its worker holds, and
/// the first of its pid namespace) are the small `corefn-relay`, not copies
/// of the worker's memory.
#[test]
fn a_host_waits_in_two_small_relays_not_in_copies_of_its_worker() {
    use crate::common::*;
    let s = FunctionServer::start(Lang::Python);
    assert_eq!(get(s.addr(), "/hello").text(), Lang::Python.hello_body());
    let hosts = processes_with_marker(&s.marker("hello"));
    assert_eq!(hosts.len(), 1, "one warm host: {hosts:?}");
    let host = hosts[0].0;
    let parent = |pid: u32| proc_state(pid).map(|(_, parent)| parent).expect("alive");
    let exe = |pid: u32| std::fs::read_link(format!("/proc/{pid}/exe")).expect("exe");
    let first = parent(host);
    let outer = parent(first);
    for relay in [first, outer] {
        assert!(
            exe(relay).ends_with("corefn-relay"),
            "{relay} runs {:?}",
            exe(relay)
        );
    }
    assert!(
        worker_pids(s.pid()).contains(&parent(outer)),
        "the outer relay is a worker's child"
    );
}

/// An interpreter outside the system's directories (a version manager's
/// shim, a `PREFIX/bin/python3`) runs in the host's view with the
/// installation it comes from: this one refuses to start without the
/// `../lib` next to its `bin`.
#[test]
fn an_interpreter_outside_the_system_s_directories_runs_with_its_installation() {
    use crate::common::*;
    use std::os::unix::fs::PermissionsExt;
    let installation = tempdir().expect("tempdir");
    let bin = installation.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    std::fs::create_dir_all(installation.path().join("lib")).expect("lib");
    std::fs::write(installation.path().join("lib/needed"), "x").expect("lib file");
    let python = bin.join("python3");
    std::fs::write(
        &python,
        "#!/bin/sh\nhere=$(dirname \"$0\")\ntest -f \"$here/../lib/needed\" || exit 9\nexec /usr/bin/python3 \"$@\"\n",
    )
    .expect("write the interpreter");
    std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let s = FunctionServer::start_with(
        Lang::Python,
        &["--python", python.to_str().expect("UTF-8 path")],
    );
    let r = get(s.addr(), "/hello");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), Lang::Python.hello_body());
}
