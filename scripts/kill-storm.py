#!/usr/bin/env python3
"""A kill storm: SIGKILL of a worker every 500 ms under load, then the
time until the pool is whole again.

Starts a release `corefn serve` (2 workers) with the wasm hello, runs
CLIENTS keep-alive client threads against it for the storm, and kills a
running worker (pid from /_/workers) every --kill-every-ms for --storm
seconds. Counts every status the clients got (and connections the server
closed), the requests lost per kill (everything but a 200), and the time
from the storm's end until every worker slot is `running` again.

--binary may name two binaries (comma-separated) to compare in one run,
e.g. a build of the previous restart policy and the current one.

Only 127.0.0.1 is used; the storm, the clients and the wait for the pool
are bounded in time.
"""

import http.client
import json
import os
import signal
import threading
import time

import bench_common as common
from bench_common import Failure

PORT = 18193
CLIENTS = 4
POOL_WAIT_S = 15.0


def workers(port):
    status, body = common.http_request(port, "GET", "/_/workers")
    if status != 200:
        raise Failure(f"/_/workers answered {status}")
    return json.loads(body)["workers"]


def client(port, deadline, counts, lock):
    mine = {}
    conn = None
    while time.monotonic() < deadline:
        try:
            if conn is None:
                conn = http.client.HTTPConnection(common.HOST, port, timeout=5)
            conn.request("GET", "/wasm/hello")
            response = conn.getresponse()
            response.read()
            mine[response.status] = mine.get(response.status, 0) + 1
            if response.getheader("connection", "").lower() == "close":
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException):
            mine["closed"] = mine.get("closed", 0) + 1
            if conn is not None:
                conn.close()
            conn = None
    if conn is not None:
        conn.close()
    with lock:
        for key, n in mine.items():
            counts[key] = counts.get(key, 0) + n


def storm(run, binary, label, args):
    db = run.path(f"{label}.db")
    common.make_route_db(db, [("GET:/wasm/hello", '{"runtime":"wasm","module":"hello.wat"}')],
                         corefn=binary)
    server = run.start_corefn(
        binary, PORT, run.path(f"{label}.log"), "--db", db, "--workers", "2",
        "--functions-dir", os.path.join(common.ROOT, "examples", "wasm"),
        "--logs-dir", run.path(f"{label}-logs"), "--cache-dir", run.path(f"{label}-cache"))
    try:
        if common.http_request(PORT, "GET", "/wasm/hello")[0] != 200:
            raise Failure(f"{label}: the wasm hello does not answer")
        counts, lock = {}, threading.Lock()
        storm_s = args.storm
        deadline = time.monotonic() + storm_s + 0.5
        threads = [threading.Thread(target=client, args=(PORT, deadline, counts, lock))
                   for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        kills, pick = 0, 0
        storm_end = time.monotonic() + storm_s
        while time.monotonic() < storm_end:
            time.sleep(args.kill_every_ms / 1000)
            running = [w["pid"] for w in workers(PORT) if w["state"] == "running" and w["pid"]]
            if not running:
                continue
            pick += 0 if kills % 3 == 2 else 1
            try:
                os.kill(running[pick % len(running)], signal.SIGKILL)
                kills += 1
            except ProcessLookupError:
                pass
        ended = time.monotonic()
        whole_s = None
        while time.monotonic() - ended < POOL_WAIT_S:
            if all(w["state"] == "running" for w in workers(PORT)):
                whole_s = time.monotonic() - ended
                break
            time.sleep(0.005)
        for t in threads:
            t.join(timeout=10)
        lost = sum(n for key, n in counts.items() if key != 200)
        return {"kills": kills, "counts": counts, "lost_per_kill": lost / max(kills, 1),
                "whole_s": whole_s}
    finally:
        server.stop()


def main():
    p = common.parser(__doc__)
    common.add_binary(p)
    common.add_option(p, "--storm", default=8.0, type=float, help="seconds of the storm")
    common.add_option(p, "--kill-every-ms", default=500, type=common.positive_int)
    args = p.parse_args()
    binaries = [b for b in args.binary.split(",") if b]
    for binary in binaries:
        common.require_binary(binary)
    with common.Run(prefix="corefn-kill-storm.") as run:
        print(f"kill storm: a worker SIGKILLed every {args.kill_every_ms} ms for {args.storm} s, "
              f"{CLIENTS} keep-alive clients on the wasm hello, 2 workers\n")
        print("| binary | kills | 200 | 502 | 503 | closed | other | lost per kill | pool whole after |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for i, binary in enumerate(binaries):
            result = storm(run, binary, f"run{i}", args)
            c = result["counts"]
            other = sum(n for k, n in c.items() if k not in (200, 502, 503, "closed"))
            whole = "never" if result["whole_s"] is None else f"{result['whole_s'] * 1000:.0f} ms"
            line = (f"| {binary} | {result['kills']} | {c.get(200, 0)} | {c.get(502, 0)} | "
                    f"{c.get(503, 0)} | {c.get('closed', 0)} | {other} | "
                    f"{result['lost_per_kill']:.2f} | {whole} |")
            common.log(line)
            print(line)


if __name__ == "__main__":
    common.main(main)
