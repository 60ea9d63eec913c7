#!/usr/bin/env python3
"""What stats, metrics, request ids and function logs cost, and how long
/metrics takes to render with many functions.

Part 1: two corefn binaries (--before: a build without the observability
work; --binary: this one, also with --log-call-lines false) serve the same
database (a static hello and the wasm hello) in turn on the same port; each
round starts each, warms it up and runs wrk against both routes; the order
reverses every round. Reported: median req/s per variant and route, and the
ratio to before.

Part 2: --binary with FUNCTIONS hand-written wasm routes (each its own stats
entry), each called once, then GET /metrics timed (median and max of
METRICS_CALLS renders, measured by the client on a kept connection) and its
size.

wrk shares the machine's cores with the gateway and the workers: compare
the ratios of one run, not absolute figures across runs. Needs wrk and two
release builds.
"""

import http.client
import os
import statistics
import time

import bench_common as common

PORT = 18290
ROUTES = [
    ("static hello", "GET:/hello", '{"runtime":"static","body":"Hello, world!\\n"}', "/hello"),
    ("wasm hello", "GET:/wasm/hello", '{"runtime":"wasm","module":"hello.wat"}', "/wasm/hello"),
]


def serve(run, binary, db, functions, name, extra=()):
    return run.start_corefn(
        binary, PORT, run.path(f"{name}.log"), "--db", db, "--workers", "2",
        "--functions-dir", functions, "--logs-dir", run.path(f"logs-{name}"),
        "--cache-dir", run.path(f"cache-{name}"), *extra)


def render_times(server, functions_count, calls):
    """Calls each of the routes once, then times /metrics renders."""
    connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
    for n in range(functions_count):
        connection.request("GET", f"/f/{n}")
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise common.Failure(f"/f/{n} answered {response.status}")
    times_ms, size = [], 0
    for _ in range(calls):
        started = time.perf_counter()
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        body = response.read()
        times_ms.append((time.perf_counter() - started) * 1000)
        if response.status != 200:
            raise common.Failure(f"/metrics answered {response.status}")
        size = len(body)
    connection.close()
    return statistics.median(times_ms), max(times_ms), size


def main():
    p = common.parser(__doc__)
    common.add_wrk_rounds(p)
    common.add_option(p, "--before", help="the corefn binary to compare with", required=True)
    common.add_option(p, "--functions", default="1000", type=common.positive_int,
                      help="routes with stats for the /metrics render")
    common.add_option(p, "--metrics-calls", default="20", type=common.positive_int)
    args = p.parse_args()
    common.require_binary(args.binary)
    common.require_binary(args.before)
    common.require_tool("wrk")
    binaries = [("before", args.before, ()), ("after", args.binary, ()),
                ("after, --log-call-lines false", args.binary, ("--log-call-lines", "false"))]

    raw, results = [], {(b, r[0]): [] for b, _, _ in binaries for r in ROUTES}
    with common.Run() as run:
        functions = run.path("functions")
        os.makedirs(functions)
        os.symlink(os.path.join(common.ROOT, "examples/wasm/hello.wat"),
                   os.path.join(functions, "hello.wat"))
        db = run.path("bench.db")
        common.make_route_db(db, [(key, value) for _, key, value, _ in ROUTES], corefn=args.binary)
        for round_index in range(args.repeats):
            order = binaries if round_index % 2 == 0 else binaries[::-1]
            for index, (name, binary, extra) in enumerate(order):
                server = serve(run, binary, db, functions, f"{round_index}-{index}", extra)
                for route in ROUTES:
                    common.measured_wrk("-t1 -c8", server.url(route[3]), 1)
                for route in ROUTES:
                    result = common.measured_wrk(args.wrk, server.url(route[3]), args.duration)
                    raw.append(f"## round {round_index} {name} {route[0]}\n{result['raw']}")
                    results[(name, route[0])].append(result)
                server.stop()

        many_db = run.path("many.db")
        common.make_route_db(
            many_db,
            [(f"GET:/f/{n}", '{"runtime":"wasm","module":"hello.wat"}') for n in range(args.functions)],
            corefn=args.binary)
        server = serve(run, args.binary, many_db, functions, "many")
        median_ms, max_ms, size = render_times(server, args.functions, args.metrics_calls)
        server.stop()

    lines = [
        f"wrk `{args.wrk} -d {args.duration}s`, median of {args.repeats} rounds per variant "
        f"(order reversing), 2 workers, {common.utc_now()}.",
        "",
        "| route | variant | req/s | vs before | p99 ms |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for route in ROUTES:
        before = common.median(results[("before", route[0])], "rps")
        for name, _, _ in binaries:
            runs = results[(name, route[0])]
            rps = common.median(runs, "rps")
            lines.append(
                f"| {route[0]} | {name} | {rps:.0f} | {common.ratio(rps, before)} "
                f"| {common.ms(common.median(runs, 'p99_us'))} |")
    lines += [
        "",
        f"/metrics with {args.functions} functions: median {median_ms:.1f} ms, "
        f"max {max_ms:.1f} ms over {args.metrics_calls} renders, {size / 1024:.0f} KiB.",
    ]
    common.write_report(args.out, "\n".join(lines), raw)


if __name__ == "__main__":
    common.main(main)
