#!/usr/bin/env python3
"""The static route's throughput with a small and a large route table.

Starts two release `corefn serve` processes at once (one core each would
skew nothing: both use every core, and they are measured one after the
other): one whose table holds the static hello and 9 more routes, one whose
table also holds ROUTES functions' rows (`ANY:/fn/NAME/*`, as deployed
functions have, plus an exact route each). Then runs wrk against
`GET /hello` of each, REPEATS rounds alternating, and once more against
the large table with `Host: NAME.localhost` requests to a static function
row (the host-route path). Reports median req/s and server CPU µs/request.

Only 127.0.0.1 is used; every wrk run is bounded by DURATION.
"""

import os
import statistics

import bench_common as common

PORTS = {"small": 18292, "large": 18293}
HELLO = common.STATIC_HELLO


def static_fn_row(name):
    return (f"ANY:/fn/{name}/*", '{"runtime":"static","body":"fn %s\\n"}' % name)


def main():
    p = common.parser(__doc__)
    common.add_binary(p)
    common.add_duration(p)
    common.add_repeats(p)
    common.add_option(p, "--routes", default="10000", type=common.positive_int,
                      help="function rows in the large table")
    common.add_option(p, "--wrk", default="-t2 -c64", help="wrk threads and connections")
    args = p.parse_args()
    common.require_binary(args.binary)
    common.require_tool("wrk")

    with common.Run(prefix="corefn-route-scale.") as run:
        servers = {}
        for name in ("small", "large"):
            db = run.path(f"{name}.db")
            rows = [HELLO] + [(f"GET:/small/{i}", '{"runtime":"static","body":"s"}') for i in range(9)]
            if name == "large":
                for i in range(args.routes):
                    rows.append(static_fn_row(f"f{i}"))
                    rows.append((f"GET:/route/{i}", '{"runtime":"static","body":"r"}'))
            common.make_route_db(db, rows, corefn=args.binary)
            servers[name] = run.start_corefn(
                args.binary, PORTS[name], run.path(f"{name}.log"), "--db", db, "--workers", "0",
                "--store-dir", run.path(f"{name}-store"))
        results = {"small": [], "large": [], "large, host route": []}

        def measure(label, round_index):
            server = servers["small" if label == "small" else "large"]
            url = server.url(HELLO[0].split(":", 1)[1])
            script = None
            if label == "large, host route":
                script = run.path("host.lua")
                with open(script, "w") as f:
                    f.write('wrk.headers["Host"] = "f4242.localhost"\n')
            common.run_wrk(args.wrk, url, 1, latency=False, script=script,
                           output=run.path("warmup.txt"))
            before = common.process_cpu_ticks(server.pid)
            result = common.measured_wrk(args.wrk, url, args.duration, script=script,
                                         output=run.path(f"{label}-{round_index}.txt"))
            after = common.process_cpu_ticks(server.pid)
            if result["non_2xx"]:
                raise common.Failure(f"{label}: {result['non_2xx']} non-2xx answers")
            cpu_us = (after - before) / common.CLK_TCK * 1e6 / result["requests"]
            common.log(f"{label:<18} round {round_index + 1}: {result['rps']} req/s, {cpu_us:.1f} µs/req")
            results[label].append((result["rps"], cpu_us))

        common.rounds(list(results), args.repeats, measure)
        base = statistics.median(r for r, _ in results["small"])
        print(f"static GET /hello, wrk {args.wrk} -d {args.duration}s, median of {args.repeats} rounds, "
              f"large table: 10 + {2 * args.routes} rows\n")
        print("| table | req/s | vs 10 routes | server CPU µs/req |")
        print("| --- | ---: | ---: | ---: |")
        for label, rows in results.items():
            rps = statistics.median(r for r, _ in rows)
            cpu = statistics.median(c for _, c in rows)
            print(f"| {label} | {rps:,.0f} | {rps / base:.2f} | {cpu:.1f} |")


if __name__ == "__main__":
    common.main(main)
