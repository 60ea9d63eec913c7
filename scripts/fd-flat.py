#!/usr/bin/env python3
"""Descriptors stay flat over 100,000 function calls, with keep-alive and
without.

Starts a release `corefn serve` with the wasm hello, the native hello and a
static hello; after a warm-up, counts the open descriptors of the gateway
and of each worker (/proc/PID/fd), then per route drives wrk until at least
--requests requests have been answered on kept-alive connections and as many
again with `Connection: close` (a new connection, so a new descriptor passed
to a worker, per request), and counts again. Every process must hold as
many descriptors after as before; the report gives the counts, the request
totals and any difference, and the run fails on one.

Needs wrk (installed with apt-get when missing and run as root), a C
compiler and a release build. Only 127.0.0.1 is used; every wrk run is
bounded in time.
"""

import os
import time

import bench_common as common

PORT = 18390
ROUTES = [
    ("GET:/hello", '{"runtime":"static","body":"Hello, world!\\n"}'),
    ("GET:/wasm/hello", '{"runtime":"wasm","module":"hello.wat"}'),
    ("GET:/native/hello", '{"runtime":"native","module":"hello.so"}'),
]
PATHS = ["/wasm/hello", "/native/hello", "/hello"]
# wrk runs of this length until the count is reached (bounded by MAX_RUNS).
RUN_S = 5
MAX_RUNS = 12


def descriptor_counts(gateway_pid):
    """{pid: open descriptors} of the gateway and its live children."""
    counts = {}
    for pid in [gateway_pid, *common.children(gateway_pid)]:
        try:
            counts[pid] = len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return counts


def drive(url, requests, close):
    """wrk against url until `requests` are answered; the total answered."""
    done = 0
    options = "-t2 -c16" + (" -H 'Connection: close'" if close else "")
    for _ in range(MAX_RUNS):
        result = common.measured_wrk(options, url, RUN_S)
        if result["non_2xx"] or result["socket_errors"]:
            raise common.Failure(f"{url}: {result['non_2xx']} non-2xx, "
                                 f"{result['socket_errors']} socket errors")
        done += result["requests"]
        if done >= requests:
            return done
    raise common.Failure(f"{url}: only {done} of {requests} requests in {MAX_RUNS} runs")


def main():
    p = common.parser(__doc__)
    common.add_option(p, "--requests", type=common.positive_int, default=100_000,
                      help="requests per route and connection mode")
    common.add_option(p, "--out", help="also write summary.md to this folder")
    common.add_binary(p)
    args = p.parse_args()
    common.require_tool("wrk")
    common.require_binary(args.binary)
    with common.Run(prefix="corefn-fd-flat.") as run:
        functions = common.hello_functions(run)
        db = run.path("fd.db")
        common.make_route_db(db, ROUTES)
        server = run.start_corefn(args.binary, PORT, run.path("corefn.log"), "--db", db,
                                  "--functions-dir", functions, "--cache-dir", run.path("cache"),
                                  "--logs-dir", run.path("logs"))
        for path in PATHS:
            common.run_wrk("-t2 -c16", server.url(path), 1, latency=False)
        time.sleep(1)
        before = descriptor_counts(server.pid)
        totals = []
        for path in PATHS:
            for close in (False, True):
                done = drive(server.url(path), args.requests, close)
                totals.append((path, "close" if close else "keep-alive", done))
                common.log(f"{path} {'close' if close else 'keep-alive'}: {done} requests")
        time.sleep(1)
        after = descriptor_counts(server.pid)
        server.check_alive()

    lines = [f"Descriptors before and after, {common.utc_now()} (wrk -t2 -c16, "
             f"at least {args.requests} requests per route and mode):", "",
             "| process | before | after |", "| --- | ---: | ---: |"]
    for pid in sorted(set(before) | set(after)):
        role = "gateway" if pid == server.pid else f"worker {pid}"
        lines.append(f"| {role} | {before.get(pid, '-')} | {after.get(pid, '-')} |")
    lines += ["", "| route | connections | requests |", "| --- | --- | ---: |"]
    lines += [f"| {path} | {mode} | {done} |" for path, mode, done in totals]
    common.write_report(args.out, "\n".join(lines), [])
    if before != after:
        raise common.Failure("descriptor counts changed")


if __name__ == "__main__":
    common.main(main)
