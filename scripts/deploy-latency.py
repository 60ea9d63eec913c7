#!/usr/bin/env python3
"""Measures deploy through the API -> first response, per runtime.

Starts a release `corefn serve` on a fresh database, then deploys a hello
function ITERATIONS times per mode with `POST /_/api/v1/functions` (a new
name each time, and a comment that makes the code new, so nothing is
cached) and polls /fn/NAME until the hello answers. Reports, per mode, the
median and p90 of the API call alone and of deploy -> first response.

Modes: wat (WebAssembly text, no compile step in the control plane),
c-wasm (C compiled to wasm32-wasi with clang on upload), python, node, php
(syntax check on upload), exec (a shell script, taken as it is).

With --via cli, each deploy is instead the wall time of one `corefn
deploy FILE --name NAME` process (the CLI: read the file, one upload,
wait for the compile, print "Live at"), the way a person deploys from a
terminal; the first response is then measured from that process's start.

Only 127.0.0.1 is used; each poll is bounded (5 s per deploy) and each CLI
run is bounded by its own timeout.
"""

import json
import os
import statistics
import subprocess
import time

import bench_common as common
from bench_common import Failure

PORT = 18191
POLL_DEADLINE_S = 5.0

HELLO_C = ('#include <stdio.h>\nint main(void) { printf("Content-Type: text/plain\\n\\n'
           'Hello from C!\\n"); return 0; }\n')
MODES = {
    # mode -> (runtime, code, expected body)
    "wat": ("wasm", None, "Hello from wasm!\n"),
    "c-wasm": ("wasm", HELLO_C, "Hello from C!\n"),
    "python": ("python", "def handle(request):\n    return (200, {'content-type': 'text/plain'}, 'Hello!\\n')\n",
               "Hello!\n"),
    "node": ("node", "exports.handler = async () => ({statusCode: 200, headers: {'content-type': 'text/plain'}, "
             "body: 'Hello!\\n'});\n", "Hello!\n"),
    "php": ("php", "<?php header('Content-Type: text/plain'); echo \"Hello!\\n\";\n", "Hello!\n"),
    "exec": ("exec", "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nHello!\\n'\n", "Hello!\n"),
}
# The file a person would deploy with the CLI, per mode (its extension is
# how the CLI and the server tell the runtime).
FILENAME = {"wat": "hello.wat", "c-wasm": "hello.c", "python": "main.py", "node": "index.js",
            "php": "index.php", "exec": "hello.sh"}
CLI_TIMEOUT_S = 70
COMMENT = {"wat": ";; {}\n", "c-wasm": "// {}\n", "python": "# {}\n", "node": "// {}\n",
           "php": "// {}\n", "exec": "# {}\n"}


def request(method, path, body=None, key=None):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    # A deploy may compile: up to the server's compile timeout.
    return common.http_request(PORT, method, path, body=body, headers=headers, timeout_s=70)


def deploy_api(mode, name, runtime, code, key):
    body = json.dumps({"name": name, "runtime": runtime, "code": code})
    status, answer = request("POST", "/_/api/v1/functions", body, key)
    if status != 201:
        raise Failure(f"{mode}: deploy of {name} answered {status}: {answer[:300]!r}")


def deploy_cli(run, binary, mode, name, runtime, code, key):
    directory = run.path(name)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, FILENAME[mode])
    with open(path, "w") as f:
        f.write(code)
    command = [binary, "deploy", path, "--name", name, "--runtime", runtime,
               "--url", f"http://{common.HOST}:{PORT}", "--key", key]
    try:
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=CLI_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise Failure(f"{mode}: corefn deploy {name} ran past {CLI_TIMEOUT_S} s")
    if done.returncode != 0 or b"Live at" not in done.stdout:
        raise Failure(f"{mode}: corefn deploy {name} exited {done.returncode}: "
                      f"{(done.stdout + done.stderr)[-300:]!r}")


def main():
    p = common.parser(__doc__)
    common.add_binary(p)
    common.add_option(p, "--iterations", default="20", type=common.positive_int)
    common.add_option(p, "--modes", default=",".join(MODES),
                      help="comma-separated modes to measure")
    common.add_option(p, "--via", default="api", choices=["api", "cli"],
                      help="deploy with one API call, or by running `corefn deploy FILE`")
    args = p.parse_args()
    common.require_binary(args.binary)
    modes = [m for m in args.modes.split(",") if m]
    for mode in modes:
        if mode not in MODES:
            raise Failure(f"unknown mode {mode!r} (modes: {', '.join(MODES)})")
    with open(os.path.join(common.ROOT, "examples/wasm/hello.wat")) as f:
        hello_wat = f.read()

    with common.Run(prefix="corefn-deploy-latency.") as run:
        _db, key = run.start_control_plane(args.binary, PORT)
        lines = []
        for mode in modes:
            runtime, code, want = MODES[mode]
            code = code or hello_wat
            api_ms, first_ms = [], []
            for i in range(args.iterations):
                name = f"{mode}-{i}"
                code_i = code + COMMENT[mode].format(f"deploy {i} {time.time_ns()}")
                started = time.perf_counter()
                if args.via == "cli":
                    deploy_cli(run, args.binary, mode, name, runtime, code_i, key)
                else:
                    deploy_api(mode, name, runtime, code_i, key)
                api_done = time.perf_counter()
                while True:
                    status, payload = request("GET", f"/fn/{name}")
                    if status == 200 and payload == want.encode():
                        break
                    if time.perf_counter() - started > POLL_DEADLINE_S:
                        raise Failure(f"{mode}: deploy {i} not served after {POLL_DEADLINE_S} s: "
                                      f"{status} {payload[:200]!r}")
                done = time.perf_counter()
                api_ms.append((api_done - started) * 1000)
                first_ms.append((done - started) * 1000)
            api_ms.sort()
            first_ms.sort()
            p90 = lambda xs: xs[max(int(len(xs) * 0.9) - 1, 0)]
            line = (f"| {mode} | {statistics.median(api_ms):.1f} | {p90(api_ms):.1f} | "
                    f"{statistics.median(first_ms):.1f} | {p90(first_ms):.1f} |")
            common.log(line)
            lines.append(line)
        call = "API call" if args.via == "api" else "corefn deploy"
        print(f"deploy ({args.via}) -> first response, {args.iterations} deploys per mode (ms)\n")
        print(f"| mode | {call} median | {call} p90 | first response median | first response p90 |")
        print("| --- | ---: | ---: | ---: | ---: |")
        print("\n".join(lines))


if __name__ == "__main__":
    common.main(main)
