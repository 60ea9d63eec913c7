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

Needs wrk (installed with apt-get when missing and run as root) and a release
build (cargo build --release);
--all-runtimes also a C compiler, python3, node and php-cgi.
"""

import http.client
import json
import os
import subprocess
import time

import bench_common as common

PORT = 18280

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


def worker_distribution(server):
    """requests_served per worker from /_/workers (None when unavailable)."""
    time.sleep(1.2)  # let every worker send a fresh datagram
    try:
        conn = http.client.HTTPConnection(common.HOST, server.port, timeout=2)
        conn.request("GET", "/_/workers")
        workers = json.loads(conn.getresponse().read())["workers"]
        return {w["id"]: w.get("requests_served") for w in workers}
    except (OSError, ValueError, KeyError):
        return None


def function_dir(run, all_runtimes):
    """The functions directory: the wasm examples, with all_runtimes also the
    other runtimes' hellos (the C one compiled); adds their routes."""
    functions = run.path("functions")
    os.makedirs(functions)
    for name in ("hello.wat", "echo.wat"):
        os.symlink(os.path.join(common.ROOT, "examples/wasm", name), os.path.join(functions, name))
    if all_runtimes:
        for name, key, value, path, body, example in RUNTIME_ROUTES:
            source = os.path.join(common.ROOT, "examples", example)
            target = os.path.join(functions, os.path.basename(example))
            if example.endswith(".c"):
                subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", target[:-2] + ".so", source],
                               check=True)
            elif not os.path.exists(target):
                os.symlink(source, target)
            ROUTES.append((name, key, value, path, body))
    return functions


def main():
    p = common.parser(__doc__)
    common.add_wrk_rounds(p)
    common.add_option(p, "--workers", default="2", type=common.positive_int)
    common.add_option(p, "--worker-threads", default="4", type=common.positive_int)
    p.add_argument("--all-runtimes", action="store_true")
    args = p.parse_args()
    common.require_binary(args.binary)
    common.require_tool("wrk")

    raw = []
    with common.Run() as run:
        functions = function_dir(run, args.all_runtimes)
        db = run.path("bench.db")
        common.make_route_db(db, [(key, value) for _, key, value, _, _ in ROUTES])
        server = run.start_corefn(
            args.binary, PORT, run.path("server.log"), "--db", db,
            "--workers", str(args.workers), "--worker-threads", str(args.worker_threads),
            "--functions-dir", functions, "--logs-dir", run.path("logs"), "--cache-dir", run.path("cache"))
        scripts = {body: common.wrk_post_script(run.work, body) for *_, body in ROUTES if body}

        def wrk(options, route, duration):
            _, _, _, path, body = route
            return common.measured_wrk(options, server.url(path), duration, script=scripts.get(body))

        # Warm-up: compile modules, fill pools.
        for route in ROUTES:
            wrk("-t1 -c8", route, 1)

        def measure(route, round_index):
            cpu_before = common.tree_cpu_seconds(server.pid)
            result = wrk(args.wrk, route, args.duration)
            cpu_after = common.tree_cpu_seconds(server.pid)
            raw.append(f"## round {round_index} {route[0]}\n{result['raw']}")
            return {**result, "cpu_us": (cpu_after - cpu_before) * 1e6 / max(result["requests"], 1)}

        results = common.rounds(ROUTES, args.repeats, measure)
        distribution = worker_distribution(server)

    base = results[ROUTES[0]]
    lines = [
        f"wrk `{args.wrk} -d {args.duration}s`, median of {args.repeats} rounds, "
        f"{args.workers} workers x {args.worker_threads} threads, {common.utc_now()}. "
        "wrk shares the cores with the gateway and the workers.",
        "",
        "| route | req/s | p50 ms | p99 ms | server CPU µs/req | req/s vs static | CPU/req vs static | non-2xx |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for route, runs in results.items():
        rps, cpu = common.median(runs, "rps"), common.median(runs, "cpu_us")
        lines.append(
            f"| {route[0]} | {rps:.0f} | {common.ms(common.median(runs, 'p50_us'))} "
            f"| {common.ms(common.median(runs, 'p99_us'))} | {cpu:.1f} "
            f"| {common.ratio(rps, common.median(base, 'rps'))} "
            f"| {common.ratio(cpu, common.median(base, 'cpu_us'))} "
            f"| {sum(r['non_2xx'] for r in runs)} |")
    if distribution:
        lines += ["", f"requests served per worker over the whole run: {distribution}"]
    common.write_report(args.out, "\n".join(lines), raw)


if __name__ == "__main__":
    common.main(main)
