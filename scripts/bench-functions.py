#!/usr/bin/env python3
"""Function routes against the static route, in the same run.

Starts a release `corefn serve` on a fresh database holding a static hello, the
wasm hello and a wasm echo (1 KiB body) (with --all-runtimes also the hello of
every other runtime: native, exec, python, node, php, and php's bench.php),
then runs wrk against each route,
REPEATS rounds with the route order rotating, and reports per route the median
req/s, p50/p99 and server CPU per request, with ratios to the static route.

Server CPU counts the gateway and every process below it (utime + stime of
each, plus cutime + cstime for the children they reaped, such as exec
functions), because a function call spends most of its CPU in a worker or a
language host. wrk shares the machine's cores with
all of them: compare ratios within one run, not absolute figures across runs.

usage: scripts/bench-functions.py [--duration 5] [--repeats 3] [--wrk "-t2 -c64"]
       [--workers N] [--worker-threads T] [--all-runtimes] [--out DIR]
Needs wrk (apt-get install wrk) and a release build (cargo build --release);
--all-runtimes also a C compiler, python3, node and php-cgi.
"""

import argparse
import datetime
import os
import shlex
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

import bench_common

PORT = 18280
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")

ROUTES = [
    ("static hello", "GET:/hello", '{"runtime":"static","body":"Hello, world!\\n"}', "/hello", None),
    ("wasm hello", "GET:/wasm/hello", '{"runtime":"wasm","module":"hello.wat"}', "/wasm/hello", None),
    ("wasm echo 1 KiB", "POST:/wasm/echo", '{"runtime":"wasm","module":"echo.wat"}', "/wasm/echo", 1024),
]
# (name, key, descriptor, path, body bytes, example file under examples/)
RUNTIME_ROUTES = [
    ("native hello", "GET:/native/hello", '{"runtime":"native","module":"hello.so"}', "/native/hello", None, "native/hello.c"),
    ("exec hello", "GET:/exec/hello", '{"runtime":"exec","module":"hello.sh"}', "/exec/hello", None, "exec/hello.sh"),
    ("python hello", "GET:/python/hello", '{"runtime":"python","module":"hello.py"}', "/python/hello", None, "python/hello.py"),
    ("node hello", "GET:/node/hello", '{"runtime":"node","module":"hello.js"}', "/node/hello", None, "node/hello.js"),
    ("php hello", "GET:/php/hello", '{"runtime":"php","module":"hello.php"}', "/php/hello", None, "php/hello.php"),
    ("php bench.php", "GET:/php/bench", '{"runtime":"php","module":"bench.php"}', "/php/bench", None, "php/bench.php"),
]


def process_cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is state (field 3); utime and stime are fields 14 and 15.
    return int(fields[11]) + int(fields[12])


def tree_cpu_seconds(root_pid):
    """CPU of root_pid and every live descendant (workers, language hosts),
    with what each has reaped of its own children (exec functions)."""
    parents, ticks = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            parents[int(entry)] = int(fields[1])
            ticks[int(entry)] = sum(int(fields[i]) for i in (11, 12, 13, 14))
        except (OSError, ValueError, IndexError):
            continue
    total = 0
    for pid, tick in ticks.items():
        ancestor, hops = pid, 0
        while ancestor not in (root_pid, 0, 1) and hops < 16:
            ancestor, hops = parents.get(ancestor, 0), hops + 1
        if ancestor == root_pid:
            total += tick
    return total / CLK_TCK


def run_wrk(args, path, body_bytes, duration, lua_dir):
    command = ["wrk", "-d", f"{duration}s", "--latency", *shlex.split(args)]
    if body_bytes:
        script = os.path.join(lua_dir, "post.lua")
        with open(script, "w") as f:
            f.write('wrk.method = "POST"\nwrk.body = string.rep("x", %d)\n' % body_bytes)
        command += ["-s", script]
    command.append(f"http://127.0.0.1:{PORT}{path}")
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def worker_distribution():
    """requests_served per worker from /_/workers (None when unavailable)."""
    import http.client
    import json
    time.sleep(1.2)  # let every worker send a fresh datagram
    try:
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=2)
        conn.request("GET", "/_/workers")
        workers = json.loads(conn.getresponse().read())["workers"]
        return {w["id"]: w.get("requests_served") for w in workers}
    except (OSError, ValueError, KeyError):
        return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--wrk", default="-t2 -c64")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-threads", type=int, default=4)
    parser.add_argument("--all-runtimes", action="store_true")
    parser.add_argument("--out", default=None)
    parser.add_argument("--binary", default=os.path.join(ROOT, "target/release/corefn"))
    args = parser.parse_args()

    binary = args.binary
    if not os.path.exists(binary):
        sys.exit("build first: cargo build --release")
    tmp = tempfile.mkdtemp(prefix="corefn-bench-")
    functions = os.path.join(tmp, "functions")
    os.makedirs(functions)
    for name in ("hello.wat", "echo.wat"):
        os.symlink(os.path.join(ROOT, "examples/wasm", name), os.path.join(functions, name))
    if args.all_runtimes:
        for name, key, value, path, body, example in RUNTIME_ROUTES:
            source = os.path.join(ROOT, "examples", example)
            target = os.path.join(functions, os.path.basename(example))
            if example.endswith(".c"):
                subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", target[:-2] + ".so", source],
                               check=True)
            elif not os.path.exists(target):
                os.symlink(source, target)
            ROUTES.append((name, key, value, path, body))
    db = os.path.join(tmp, "bench.db")
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE functions(k TEXT PRIMARY KEY, v TEXT NOT NULL, updated INTEGER NOT NULL)")
        for _, key, value, _, _ in ROUTES:
            conn.execute("INSERT INTO functions VALUES (?, ?, ?)", (key, value, int(time.time())))
    server = subprocess.Popen(
        [binary, "serve", "--listen", f"127.0.0.1:{PORT}", "--db", db,
         "--workers", str(args.workers), "--worker-threads", str(args.worker_threads),
         "--functions-dir", functions, "--logs-dir", os.path.join(tmp, "logs"),
         "--cache-dir", os.path.join(tmp, "cache")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    results = {name: [] for name, *_ in ROUTES}
    raw = []
    try:
        ready = server.stdout.readline()
        if "listening" not in ready:
            sys.exit(f"server did not start: {ready!r}")
        # Warm-up: compile modules, fill pools.
        for _, _, _, path, body in ROUTES:
            run_wrk("-t1 -c8", path, body, 1, tmp)
        for round_index in range(args.repeats):
            order = ROUTES[round_index % len(ROUTES):] + ROUTES[:round_index % len(ROUTES)]
            for name, _, _, path, body in order:
                cpu_before = tree_cpu_seconds(server.pid)
                out = run_wrk(args.wrk, path, body, args.duration, tmp)
                cpu_after = tree_cpu_seconds(server.pid)
                raw.append(f"## round {round_index} {name}\n{out}")
                result = bench_common.summary(out)
                result["cpu_us"] = (cpu_after - cpu_before) * 1e6 / max(result["requests"], 1)
                results[name].append(result)
        distribution = worker_distribution()
    finally:
        bench_common.stop_server(server)

    def med(name, key):
        return statistics.median(r[key] for r in results[name])

    base = ROUTES[0][0]
    lines = [
        f"wrk `{args.wrk} -d {args.duration}s`, median of {args.repeats} rounds, "
        f"{args.workers} workers x {args.worker_threads} threads, "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. "
        "wrk shares the cores with the gateway and the workers.",
        "",
        "| route | req/s | p50 ms | p99 ms | server CPU µs/req | req/s vs static | CPU/req vs static | non-2xx |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, *_ in ROUTES:
        lines.append(
            f"| {name} | {med(name, 'rps'):.0f} | {med(name, 'p50'):.3f} | {med(name, 'p99'):.3f} "
            f"| {med(name, 'cpu_us'):.1f} | {med(name, 'rps') / med(base, 'rps'):.2f} "
            f"| {med(name, 'cpu_us') / med(base, 'cpu_us'):.2f} "
            f"| {sum(r['errors'] for r in results[name])} |")
    if distribution:
        lines += ["", f"requests served per worker over the whole run: {distribution}"]
    bench_common.write_report(args.out, "\n".join(lines), raw)


if __name__ == "__main__":
    main()
