#!/usr/bin/env python3
"""All-routes benchmark: the static route, the wasm hello and the wasm echo
(1 KiB body) of one `corefn serve`, measured in the same run with corefn-bench
(closed loop, with the server's CPU per request) and wrk (and oha when it is
installed), each route also as a ratio to the static route.

Output: bench/results/YYYY-MM-DD-HHMM-all/ with summary.md, one corefn-bench
report per route (<route>.json, .hgrm, .svg), all-routes.svg (the routes'
latency curves overlaid) and raw/ (wrk/oha outputs, server log, progress).

Total time = 3 routes x (1 s warm-up + corefn-bench 1 + DURATION s + wrk
DURATION s [+ oha DURATION s]) plus start-up: about 1 min at --duration 5.
Needs wrk (installed with apt-get when missing and run as root).
"""

import json
import os
import shutil

import bench_common as common
from bench_common import Failure

PORT = 18500
# name (labels the files and the plot curves), method, path
ROUTES = [
    ("static-hello", "GET", "/hello"),
    ("wasm-hello", "GET", "/wasm/hello"),
    ("wasm-echo-1k", "POST", "/wasm/echo"),
]
ECHO_BODY_BYTES = 1024


def measure(run, server, bench_bin, raw, out, args, have_oha):
    """Per route: wrk warm-up, corefn-bench, wrk, oha."""
    body = common.body_file(run.work, ECHO_BODY_BYTES)
    script = common.wrk_post_script(run.work, ECHO_BODY_BYTES)
    limit = args.duration + 30  # seconds one tool may take for one run
    for name, method, path in ROUTES:
        url = server.url(path)
        post = method == "POST"
        # Warm-up: compiles the module, starts the workers' instances.
        common.run_wrk("-t1 -c8", url, 1, latency=False, script=script if post else None,
                       output=os.path.join(raw, f"{name}-warmup.txt"), timeout_s=20)

        common.log(f"{method} {path}: corefn-bench -c {args.connections} -d {args.duration}")
        common.run_tool(
            [bench_bin, url, "-X", method, *(["--body-file", body] if post else []),
             "-c", str(args.connections), "--warmup", "1", "-d", str(args.duration),
             "--server-pid", str(server.pid), "--json", os.path.join(out, f"{name}.json"),
             "--hgrm", os.path.join(out, f"{name}.hgrm"), "--svg", os.path.join(out, f"{name}.svg")],
            f"corefn-bench for {path}", output=os.path.join(raw, f"{name}-corefn-bench.txt"),
            progress=os.path.join(raw, f"{name}-corefn-bench.progress"), timeout_s=limit)
        server.check_alive()

        common.log(f"{method} {path}: wrk -t2 -c{args.connections} -d{args.duration}s")
        common.run_wrk(f"-t2 -c{args.connections}", url, args.duration,
                       script=script if post else None,
                       output=os.path.join(raw, f"{name}-wrk.txt"), timeout_s=limit)

        if have_oha:
            common.log(f"{method} {path}: oha -c {args.connections} -z {args.duration}s")
            try:
                common.run_tool(["oha", "--no-tui", "-c", str(args.connections), "-z",
                                 f"{args.duration}s", *(["-m", "POST", "-D", body] if post else []), url],
                                f"oha for {path}", output=os.path.join(raw, f"{name}-oha.txt"),
                                timeout_s=limit)
            except Failure:
                common.log(f"oha failed for {path} (see raw/{name}-oha.txt); continuing")
        server.check_alive()

    common.run_tool([bench_bin, "plot", "--svg", os.path.join(out, "all-routes.svg"),
                     *(os.path.join(out, f"{name}.json") for name, _, _ in ROUTES)],
                    "corefn-bench plot", output=os.path.join(raw, "plot.txt"), timeout_s=60)


def route_row(out, raw, name, method, path, have_oha):
    with open(os.path.join(out, f"{name}.json")) as f:
        report = json.load(f)
    with open(os.path.join(raw, f"{name}-wrk.txt")) as f:
        wrk = common.parse_wrk(f.read())
    row = {
        "route": f"{method} {path}",
        "cb_rps": report["throughput_rps"],
        "cb_p50": report["latency_us"]["p50_us"], "cb_p99": report["latency_us"]["p99_us"],
        "cpu": (report.get("server_cpu") or {}).get("cpu_us_per_request"),
        "cb_bad": report["status"]["4xx"] + report["status"]["5xx"] + report["errors"]["total"],
        "wrk_rps": wrk["rps"], "wrk_p50": wrk["p50_us"], "wrk_p99": wrk["p99_us"],
        "wrk_bad": wrk["non_2xx"] + wrk["socket_errors"],
    }
    if have_oha:
        try:
            with open(os.path.join(raw, f"{name}-oha.txt")) as f:
                row["oha_rps"] = common.parse_wrk(f.read())["rps"]  # the same "Requests/sec:" line
        except OSError:
            row["oha_rps"] = None
    return row


def tables(rows, have_oha):
    def num(value, fmt):
        return "n/a" if value is None else fmt % value

    oha_head, oha_rule = (" oha req/s |", " ---: |") if have_oha else ("", "")
    lines = [
        "| route | corefn-bench req/s | p50 ms | p99 ms | server CPU µs/req | errors + 4xx/5xx "
        "| wrk req/s | wrk p50 ms | wrk p99 ms | wrk non-2xx + socket errors |" + oha_head,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |" + oha_rule,
    ]
    for x in rows:
        lines.append(
            f"| `{x['route']}` | {num(x['cb_rps'], '%.0f')} | {common.ms(x['cb_p50'])} "
            f"| {common.ms(x['cb_p99'])} | {num(x['cpu'], '%.2f')} | {x['cb_bad']} "
            f"| {num(x['wrk_rps'], '%.0f')} | {common.ms(x['wrk_p50'])} | {common.ms(x['wrk_p99'])} "
            f"| {x['wrk_bad']} |" + (f" {num(x.get('oha_rps'), '%.0f')} |" if have_oha else ""))
    base = rows[0]
    lines += [
        "",
        f"Ratios to `{base['route']}` in this run (throughput below 1 = slower; CPU and latency "
        "above 1 = costlier):",
        "",
        "| route | req/s (corefn-bench) | server CPU µs/req | p99 (corefn-bench) | req/s (wrk) | p99 (wrk) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for x in rows:
        lines.append(
            f"| `{x['route']}` | " + " | ".join(
                common.ratio(x[key], base[key]) for key in ("cb_rps", "cpu", "cb_p99", "wrk_rps", "wrk_p99"))
            + " |")
    return lines


def main():
    p = common.parser(__doc__)
    common.add_duration(p)
    common.add_connections(p, help="connections for corefn-bench, wrk and oha")
    common.add_skip_build(p)
    args = p.parse_args()

    common.require_tool("wrk")
    have_oha = shutil.which("oha") is not None
    corefn_bin, bench_bin = common.release_binaries("corefn", "corefn-bench", skip_build=args.skip_build)
    load_before = common.load_average()

    out = common.new_result_dir("all")
    raw = os.path.join(out, "raw")
    with common.Run(out=out) as run:
        db = run.path("functions.db")
        common.make_route_db(db, common.BENCH_ROUTES)
        server = run.start_corefn(
            corefn_bin, PORT, os.path.join(raw, "server.log"), "--db", db,
            "--functions-dir", os.path.join(common.ROOT, "examples/wasm"), "--cache-dir", run.path("cache"))
        measure(run, server, bench_bin, raw, out, args, have_oha)
        rows = [route_row(out, raw, *route, have_oha) for route in ROUTES]

        ncpu = common.cpu_count()
        oha_load = f", then oha `-c {args.connections} -z {args.duration}s`" if have_oha else ""
        summary = [
            "# All routes: static, wasm hello, wasm echo",
            "",
            *common.machine_lines(load_before),
            "- server: `corefn serve` (default cores and workers), routes `GET /hello` (static, "
            "14-byte body), `GET /wasm/hello` (hello.wat), `POST /wasm/echo` "
            f"(echo.wat, {ECHO_BODY_BYTES}-byte body)",
            f"- load: per route, a 1 s wrk warm-up, then corefn-bench (closed loop, {args.connections} "
            f"connections, 1 s warm-up + {args.duration} s), then {common.wrk_version()} "
            f"`-t2 -c{args.connections} -d{args.duration}s --latency`{oha_load}; one run each, on loopback",
            "",
            f"The load generator shares the machine's {ncpu} cores with the server, so req/s and",
            "latency measure the machine as a whole; server CPU µs per request (gateway and",
            "worker processes, from /proc) is the figure that compares the routes' own cost.",
            "",
            *tables(rows, have_oha),
            "",
            "Per route: `<route>.json` (corefn-bench report), `<route>.hgrm` (HdrHistogram),",
            "`<route>.svg` (latency by percentile); `all-routes.svg` overlays the three.",
            f"Raw wrk{'/oha' if have_oha else ''} and corefn-bench outputs and the server log: `raw/`.",
        ]
        common.write_summary(out, "\n".join(summary))


if __name__ == "__main__":
    common.main(main)
