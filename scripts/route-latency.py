#!/usr/bin/env python3
"""Measures route change -> served latency.

Starts `corefn serve` on a fresh database, then repeatedly changes a route's
body through a second SQLite connection (as any writer would) and polls the
route over new TCP connections (so the kernel's SO_REUSEPORT hash spreads the
polls over the cores) until the new body is served. Prints the median, p90,
max over the iterations.

usage: scripts/route-latency.py [--binary target/release/corefn] [--iterations 50]
"""

import argparse
import http.client
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

PORT = 18190
POLL_DEADLINE_S = 5.0


def get(path):
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=2)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default="target/release/corefn")
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--watch-interval-ms", type=int, default=20)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "routes.db")
        server = subprocess.Popen(
            [args.binary, "serve", "--listen", f"127.0.0.1:{PORT}", "--db", db,
             "--watch-interval-ms", str(args.watch_interval_ms)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            line = server.stdout.readline()
            if not line.startswith("corefn listening on"):
                sys.exit(f"server did not start: {line!r}")
            writer = sqlite3.connect(db, timeout=5)
            latencies_ms = []
            for i in range(args.iterations):
                body = f"version {i}"
                value = '{"runtime":"static","body":"%s"}' % body
                started = time.perf_counter()
                with writer:
                    writer.execute(
                        "INSERT OR REPLACE INTO functions VALUES ('GET:/probe', ?, ?)",
                        (value, int(time.time())))
                while True:
                    status, payload = get("/probe")
                    if status == 200 and payload == body.encode():
                        break
                    if time.perf_counter() - started > POLL_DEADLINE_S:
                        sys.exit(f"change {i} not served after {POLL_DEADLINE_S} s")
                latencies_ms.append((time.perf_counter() - started) * 1000)
                time.sleep(0.01)
            latencies_ms.sort()
            p90 = latencies_ms[int(len(latencies_ms) * 0.9) - 1]
            print(f"route change -> served, {args.iterations} changes, "
                  f"watch interval {args.watch_interval_ms} ms: "
                  f"median {statistics.median(latencies_ms):.1f} ms, "
                  f"p90 {p90:.1f} ms, max {latencies_ms[-1]:.1f} ms")
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=15)


if __name__ == "__main__":
    main()
