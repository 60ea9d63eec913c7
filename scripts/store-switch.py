#!/usr/bin/env python3
"""Time from a route store replaced on disk to its routes served.

Starts a release `corefn serve` on a store with a static route, then,
--switches times: builds a new store (corefn's own migrations, one static
route whose body names the round) beside it, `mv`s it over the store's
path while client threads keep requesting a route both stores have, and
times until the new body is answered on every one of 8 fresh connections
in a row (they spread over the cores, each of which takes the new table up
on its own). Also counts what the clients got meanwhile: every answer must
be a 200.

Only 127.0.0.1 is used; each switch waits at most SWITCH_WAIT_S and the
whole run is bounded by --switches.
"""

import http.client
import os
import statistics
import threading
import time

import bench_common as common
from bench_common import Failure

PORT = 18194
CLIENTS = 2
SWITCH_WAIT_S = 10.0
FRESH_IN_A_ROW = 8


def steady_client(port, stop, counts, lock):
    mine = {}
    while not stop.is_set():
        try:
            conn = http.client.HTTPConnection(common.HOST, port, timeout=5)
            conn.request("GET", "/steady")
            response = conn.getresponse()
            body = response.read()
            key = response.status if body == b"steady" else f"{response.status} wrong body"
            mine[key] = mine.get(key, 0) + 1
            conn.close()
        except (OSError, http.client.HTTPException):
            mine["closed"] = mine.get("closed", 0) + 1
    with lock:
        for key, n in mine.items():
            counts[key] = counts.get(key, 0) + n


def served_everywhere(port, want):
    for _ in range(FRESH_IN_A_ROW):
        status, body = common.http_request(port, "GET", "/round")
        if status != 200 or body != want.encode():
            return False
    return True


def routes(round_label):
    return [("GET:/steady", '{"runtime":"static","body":"steady"}'),
            ("GET:/round", '{"runtime":"static","body":"%s"}' % round_label)]


def main():
    p = common.parser(__doc__)
    common.add_binary(p)
    common.add_option(p, "--switches", default=20, type=common.positive_int)
    args = p.parse_args()
    common.require_binary(args.binary)
    with common.Run(prefix="corefn-store-switch.") as run:
        db = run.path("corefn.db")
        common.make_route_db(db, routes("start"), corefn=args.binary)
        server = run.start_corefn(
            args.binary, PORT, run.path("corefn.log"), "--db", db,
            "--logs-dir", run.path("logs"), "--cache-dir", run.path("cache"))
        try:
            if not served_everywhere(PORT, "start"):
                raise Failure("the first store's route does not answer")
            stop, counts, lock = threading.Event(), {}, threading.Lock()
            threads = [threading.Thread(target=steady_client, args=(PORT, stop, counts, lock))
                       for _ in range(CLIENTS)]
            for t in threads:
                t.start()
            times_ms = []
            try:
                for i in range(args.switches):
                    label = f"round-{i}"
                    new = run.path(f"new-{i}.db")
                    common.make_route_db(new, routes(label), corefn=args.binary)
                    replaced = time.monotonic()
                    os.rename(new, db)
                    while not served_everywhere(PORT, label):
                        if time.monotonic() - replaced > SWITCH_WAIT_S:
                            raise Failure(f"{label}: not served {SWITCH_WAIT_S} s after the mv")
                        time.sleep(0.001)
                    times_ms.append((time.monotonic() - replaced) * 1000)
            finally:
                stop.set()
                for t in threads:
                    t.join(timeout=10)
        finally:
            server.stop()
    times_ms.sort()
    p90 = times_ms[min(len(times_ms) - 1, int(len(times_ms) * 0.9))]
    others = {k: n for k, n in counts.items() if k != 200}
    print(f"store switch: mv new.db corefn.db, {args.switches} times, {CLIENTS} clients on a "
          f"route of both stores meanwhile (watch interval 5 ms, settle 20 ms)\n")
    print("| switches | mv → served on every core, median | p90 | max | client answers | not 200 |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    line = (f"| {len(times_ms)} | {statistics.median(times_ms):.1f} ms | {p90:.1f} ms | "
            f"{times_ms[-1]:.1f} ms | {sum(counts.values())} | {others or 0} |")
    common.log(line)
    print(line)


if __name__ == "__main__":
    common.main(main)
