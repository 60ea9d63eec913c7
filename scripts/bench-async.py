#!/usr/bin/env python3
"""Measures async invocations: enqueue throughput and end-to-end latency.

Starts `corefn serve` on a fresh database, deploys the wasm hello function
and then:

1. enqueue throughput: --clients threads, each on one keep-alive
   connection, POST /_/api/v1/functions/hello/invocations for --duration
   seconds; every 202 is a request committed (fsync'd) to SQLite. Reported:
   accepted per second, and the median and p99 of the 202's latency.
2. end to end at --rate per second for --duration seconds (paced, open
   loop): the time from the row's creation to its success, read from the
   invocations table (created_us -> updated_us), median/p90/p99, and
   whether the queue kept up (all succeeded within the drain bound).

Only 127.0.0.1 is used; every phase is bounded in time and count.
"""

import http.client
import json
import os
import sqlite3
import statistics
import threading
import time

import bench_common as common
from bench_common import Failure

PORT = 18193
DRAIN_DEADLINE_S = 60.0


def post_loop(key, deadline, latencies, errors):
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "text/plain"}
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        try:
            conn.request("POST", "/_/api/v1/functions/hello/invocations", body=b"x", headers=headers)
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as error:
            errors.append(str(error))
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
            continue
        if response.status == 202:
            latencies.append((time.perf_counter() - started) * 1e6)
        else:
            errors.append(str(response.status))
    conn.close()


def paced(key, rate, duration_s, threads=8):
    """Open loop: each thread sends at rate/threads per second."""
    sent = []
    per_thread = rate / threads
    start = time.perf_counter() + 0.2

    def run(offset):
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
        headers = {"Authorization": f"Bearer {key}"}
        n = 0
        while True:
            due = start + offset / rate + n / per_thread
            if due > start + duration_s:
                break
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            conn.request("POST", "/_/api/v1/functions/hello/invocations", body=b"", headers=headers)
            response = conn.getresponse()
            response.read()
            sent.append(response.status)
            n += 1
        conn.close()

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sent


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(int(len(xs) * p), len(xs) - 1)]


def main():
    p = common.parser(__doc__)
    common.add_binary(p)
    common.add_duration(p, default=10)
    common.add_option(p, "--clients", default="16", type=common.positive_int)
    common.add_option(p, "--rate", default="1000", type=common.positive_int)
    args = p.parse_args()
    common.require_binary(args.binary)
    with open(os.path.join(common.ROOT, "examples/wasm/hello.wat")) as f:
        hello_wat = f.read()

    with common.Run(prefix="corefn-bench-async.") as run:
        db, key = run.start_control_plane(args.binary, PORT)
        body = json.dumps({"name": "hello", "runtime": "wasm", "code": hello_wat})
        status, answer = common.http_request(
            PORT, "POST", "/_/api/v1/functions", body=body,
            headers={"Authorization": f"Bearer {key}"}, timeout_s=70)
        if status != 201:
            raise Failure(f"deploy answered {status}: {answer[:300]!r}")
        time.sleep(0.5)

        latencies, errors = [], []
        deadline = time.perf_counter() + args.duration
        threads = [threading.Thread(target=post_loop, args=(key, deadline, latencies, errors))
                   for _ in range(args.clients)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
        if not latencies:
            raise Failure(f"nothing was accepted: {errors[:5]}")
        common.log(f"enqueue: {len(latencies)} accepted in {elapsed:.1f} s, {len(errors)} errors")
        enqueue_line = (f"| enqueue, {args.clients} clients | {len(latencies) / elapsed:.0f} /s | "
                        f"{statistics.median(latencies) / 1000:.2f} | "
                        f"{percentile(latencies, 0.99) / 1000:.2f} | {len(errors)} |")

        # Let the first phase drain before the paced one.
        conn = sqlite3.connect(db, timeout=10)
        drain_until = time.perf_counter() + DRAIN_DEADLINE_S * 5
        while conn.execute("SELECT count(*) FROM invocations WHERE state IN ('queued','running')"
                           ).fetchone()[0] and time.perf_counter() < drain_until:
            time.sleep(0.5)
        mark_us = conn.execute("SELECT coalesce(max(created_us), 0) FROM invocations").fetchone()[0]

        sent = paced(key, args.rate, args.duration)
        accepted = sum(1 for s in sent if s == 202)
        drain_until = time.perf_counter() + DRAIN_DEADLINE_S
        while time.perf_counter() < drain_until:
            left = conn.execute("SELECT count(*) FROM invocations WHERE created_us > ? AND "
                                "state IN ('queued','running')", (mark_us,)).fetchone()[0]
            if left == 0:
                break
            time.sleep(0.2)
        rows = conn.execute("SELECT state, updated_us - created_us FROM invocations WHERE created_us > ?",
                            (mark_us,)).fetchall()
        ok = [us for state, us in rows if state == "succeeded"]
        if not ok:
            raise Failure("no paced invocation succeeded")
        e2e_line = (f"| end to end at {args.rate}/s | {accepted} accepted, {len(ok)} succeeded | "
                    f"{statistics.median(ok) / 1000:.2f} | {percentile(ok, 0.9) / 1000:.2f} | "
                    f"{percentile(ok, 0.99) / 1000:.2f} |")
        print(f"async invocations, wasm hello, {args.duration} s per phase\n")
        print("| phase | rate | 202 median ms | 202 p99 ms | errors |")
        print("| --- | ---: | ---: | ---: | ---: |")
        print(enqueue_line)
        print()
        print("| phase | count | created→succeeded median ms | p90 ms | p99 ms |")
        print("| --- | ---: | ---: | ---: | ---: |")
        print(e2e_line)


if __name__ == "__main__":
    common.main(main)
