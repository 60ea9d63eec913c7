#!/usr/bin/env python3
"""Measures route change -> served latency, and wasm deploy -> first response.

Starts `corefn serve` on a fresh database, then repeatedly changes a route
through a second SQLite connection (as any writer would) and polls it over
new TCP connections (so the kernel's SO_REUSEPORT hash spreads the polls over
the cores) until the new answer is served. Prints median, p90 and max.

Modes:
  static      change a static route's body (the route table path alone)
  wasm-cold   deploy a wasm route whose module nobody has compiled yet
              (a new file with new content: compile included)
  wasm-cached deploy a wasm route under a new name whose content is already
              in the disk cache (the cold-compile cost excluded)
  native, exec, python, node, php
              deploy a route to a new copy of that runtime's hello example
              (a library loaded, or a language host started, for the first
              response: the cold start of a new function)

"""

import os
import shutil
import sqlite3
import statistics
import subprocess
import time

import bench_common as common
from bench_common import Failure

PORT = 18190
POLL_DEADLINE_S = 5.0
# mode -> (example, extension, expected body)
RUNTIME_HELLOS = {
    "native": ("native/hello.c", "so", "Hello from C!\n"),
    "exec": ("exec/hello.sh", "sh", "Hello from exec!\n"),
    "python": ("python/hello.py", "py", "Hello from Python!\n"),
    "node": ("node/hello.js", "js", "Hello from Node!\n"),
    "php": ("php/hello.php", "php", "Hello from PHP!\n"),
}


def get(path):
    return common.http_request(PORT, "GET", path)


def main():
    p = common.parser(__doc__)
    common.add_binary(p)
    common.add_option(p, "--iterations", default="50", type=common.positive_int)
    common.add_option(p, "--watch-interval-ms", default="5", type=common.positive_int)
    common.add_option(p, "--mode", default="static",
                      choices=["static", "wasm-cold", "wasm-cached", *RUNTIME_HELLOS])
    args = p.parse_args()
    common.require_binary(args.binary)
    root = common.ROOT
    with open(os.path.join(root, "examples/wasm/hello.wat")) as f:
        hello_wat = f.read()

    with common.Run(prefix="corefn-route-latency.") as run:
        tmp = run.work
        db = os.path.join(tmp, "routes.db")
        functions = os.path.join(tmp, "functions")
        os.makedirs(functions)
        run.start_corefn(args.binary, PORT, run.path("server.log"), "--db", db,
                         "--watch-interval-ms", str(args.watch_interval_ms),
                         "--functions-dir", functions, "--cache-dir", os.path.join(tmp, "cache"),
                         "--logs-dir", os.path.join(tmp, "logs"))
        writer = sqlite3.connect(db, timeout=5)
        latencies_ms = []
        template = None
        if args.mode in RUNTIME_HELLOS:
            example, extension, _ = RUNTIME_HELLOS[args.mode]
            source = os.path.join(root, "examples", example)
            template = os.path.join(tmp, "template." + extension)
            if extension == "so":
                subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", template, source], check=True)
            else:
                shutil.copy(source, template)
        if args.mode == "wasm-cached":
            # Compile the module once (fills the disk cache), then deploy
            # the same content under new names.
            shutil.copy(os.path.join(root, "examples/wasm/hello.wat"),
                        os.path.join(functions, "warm.wat"))
            with writer:
                writer.execute("INSERT INTO functions VALUES ('GET:/warm', ?, 0)",
                               ('{"runtime":"wasm","module":"warm.wat"}',))
            deadline = time.perf_counter() + POLL_DEADLINE_S
            while get("/warm")[0] != 200:
                if time.perf_counter() > deadline:
                    raise Failure("warm-up module never served")
        for i in range(args.iterations):
            path = f"/probe{i}"
            if args.mode == "static":
                path = "/probe"
                body = f"version {i}"
                value = '{"runtime":"static","body":"%s"}' % body
            elif template:
                _, extension, body = RUNTIME_HELLOS[args.mode]
                module = f"m{i}.{extension}"
                shutil.copy(template, os.path.join(functions, module))
                value = '{"runtime":"%s","module":"%s"}' % (args.mode, module)
            else:
                module = f"m{i}.wat"
                content = hello_wat
                if args.mode == "wasm-cold":
                    content += f"\n;; deploy {i}\n"
                with open(os.path.join(functions, module), "w") as f:
                    f.write(content)
                body = "Hello from wasm!\n"
                value = '{"runtime":"wasm","module":"%s"}' % module
            started = time.perf_counter()
            with writer:
                writer.execute(
                    "INSERT OR REPLACE INTO functions VALUES (?, ?, ?)",
                    (f"GET:{path}", value, int(time.time())))
            while True:
                status, payload = get(path)
                if status == 200 and payload == body.encode():
                    break
                if time.perf_counter() - started > POLL_DEADLINE_S:
                    raise Failure(f"change {i} not served after {POLL_DEADLINE_S} s")
            latencies_ms.append((time.perf_counter() - started) * 1000)
            time.sleep(0.01)
        latencies_ms.sort()
        p90 = latencies_ms[int(len(latencies_ms) * 0.9) - 1]
        print(f"{args.mode}: route change -> served, {args.iterations} changes, "
              f"watch interval {args.watch_interval_ms} ms: "
              f"median {statistics.median(latencies_ms):.1f} ms, "
              f"p90 {p90:.1f} ms, max {latencies_ms[-1]:.1f} ms")


if __name__ == "__main__":
    common.main(main)
