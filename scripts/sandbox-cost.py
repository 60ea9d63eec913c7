#!/usr/bin/env python3
"""What the sandbox costs: throughput and first-request latency of the
python, node, php and exec hello, for two binaries in one run (an exec
function starts a process, and with it a network namespace, per request).

--binary BEFORE,AFTER names a build without the sandbox (its commit built
into a binary of its own) and the current one. For each binary, in
alternating rounds: start `corefn serve` with the hello of each runtime,
time the first request of COLD_STARTS fresh functions per runtime (a new
module file each, so each first request starts a host: the network
namespace and seccomp filter are set up then), then run wrk on each hello
route. Reports medians per binary and runtime, and the ratio after/before.

Needs wrk (installed with apt-get when missing and run as root), python3,
node and php-cgi. Only 127.0.0.1 is used; wrk runs are bounded by
--duration and each first request by a 10 s timeout.
"""

import os
import shutil
import sqlite3
import statistics
import time

import bench_common as common
from bench_common import Failure

PORT = 18195
COLD_STARTS = 8
RUNTIMES = [("python", "py"), ("node", "js"), ("php", "php"), ("exec", "sh")]


def hello_routes(functions):
    routes = []
    for runtime, ext in RUNTIMES:
        shutil.copy(os.path.join(common.ROOT, "examples", runtime, f"hello.{ext}"),
                    os.path.join(functions, f"hello.{ext}"))
        routes.append((f"GET:/{runtime}/hello",
                       '{"runtime":"%s","module":"hello.%s"}' % (runtime, ext)))
    return routes


def insert_route(db, key, value):
    with sqlite3.connect(db) as connection:
        connection.execute("INSERT INTO functions(k, v, updated) VALUES (?, ?, ?)",
                           (key, value, int(time.time())))
    connection.close()


def cold_start_ms(db, functions, runtime, ext, label):
    module = f"cold-{label}.{ext}"
    shutil.copy(os.path.join(functions, f"hello.{ext}"), os.path.join(functions, module))
    path = f"/{runtime}/cold-{label}"
    insert_route(db, f"GET:{path}", '{"runtime":"%s","module":"%s"}' % (runtime, module))
    # Wait for the route without calling it: /_/routes lists it.
    deadline = time.monotonic() + 10
    while path not in common.http_request(PORT, "GET", "/_/routes")[1].decode():
        if time.monotonic() > deadline:
            raise Failure(f"{path} never routed")
        time.sleep(0.002)
    time.sleep(0.02)  # every core has taken the table up (5 ms ticks)
    started = time.monotonic()
    status, _ = common.http_request(PORT, "GET", path, timeout_s=10)
    elapsed = (time.monotonic() - started) * 1000
    if status != 200:
        raise Failure(f"{path}: first request answered {status}")
    return elapsed


def round_of(run, binary, label, args):
    db = run.path(f"{label}.db")
    functions = run.path(f"{label}-functions")
    os.makedirs(functions)
    common.make_route_db(db, hello_routes(functions), corefn=binary)
    server = run.start_corefn(
        binary, PORT, run.path(f"{label}.log"), "--db", db, "--functions-dir", functions,
        "--logs-dir", run.path(f"{label}-logs"), "--cache-dir", run.path(f"{label}-cache"))
    try:
        result = {}
        for runtime, ext in RUNTIMES:
            colds = [cold_start_ms(db, functions, runtime, ext, f"{label}-{i}")
                     for i in range(COLD_STARTS)]
            url = server.url(f"/{runtime}/hello")
            common.measured_wrk("-t1 -c4", url, 1)  # warm the hosts
            wrk = common.measured_wrk(args.wrk, url, args.duration)
            result[runtime] = {"cold_ms": statistics.median(colds), "rps": wrk["rps"],
                               "p99_us": wrk["p99_us"], "non_2xx": wrk["non_2xx"]}
        return result
    finally:
        server.stop()


def main():
    p = common.parser(__doc__)
    common.add_wrk_rounds(p)
    args = p.parse_args()
    binaries = [b for b in args.binary.split(",") if b]
    if len(binaries) != 2:
        raise Failure("--binary wants BEFORE,AFTER")
    for binary in binaries:
        common.require_binary(binary)
    common.require_tool("wrk")
    results = {0: [], 1: []}
    with common.Run(prefix="corefn-sandbox-cost.") as run:
        for r in range(args.repeats):
            order = [0, 1] if r % 2 == 0 else [1, 0]
            for which in order:
                results[which].append(round_of(run, binaries[which], f"r{r}b{which}", args))
    print(f"sandbox cost: wrk `{args.wrk} -d {args.duration}s` on each hello, and the first "
          f"request of {COLD_STARTS} new functions per runtime; median of {args.repeats} "
          f"alternating rounds, {common.utc_now()}\n")
    print("| runtime | req/s before | req/s after | after/before | p99 ms before | p99 ms after "
          "| first request ms before | after | non-2xx |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for runtime, _ in RUNTIMES:
        def med(which, key):
            return statistics.median(r[runtime][key] for r in results[which])
        non_2xx = sum(r[runtime]["non_2xx"] for which in (0, 1) for r in results[which])
        line = (f"| {runtime} | {med(0, 'rps'):.0f} | {med(1, 'rps'):.0f} | "
                f"{common.ratio(med(1, 'rps'), med(0, 'rps'))} | {common.ms(med(0, 'p99_us'))} | "
                f"{common.ms(med(1, 'p99_us'))} | {med(0, 'cold_ms'):.1f} | "
                f"{med(1, 'cold_ms'):.1f} | {non_2xx} |")
        common.log(line)
        print(line)


if __name__ == "__main__":
    common.main(main)
