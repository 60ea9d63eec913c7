#!/usr/bin/env python3
"""Gateway benchmark: corefn's static route against the ceiling reference
(bench/ceiling.rs, a minimal glommio server with a fixed response), both
measured in the same run with wrk on loopback.

For each wrk config and each round (server order alternating), it runs a 1 s
warm-up and then `wrk -d DURATION --latency`, and reads the server process's
CPU time from /proc/PID/stat around the measured run. It reports medians of
req/s, p50/p99 latency and server CPU µs per request, and the corefn/ceiling
ratios.

Output: a Markdown table on stdout, and bench/results/YYYY-MM-DD-HHMM-gateway/
with summary.md and raw/ (every wrk output, server logs, runs.tsv).

Total time = 2 configs x 2 servers x REPEATS x (DURATION + 1) s, plus the build.
Needs wrk (installed with apt-get when missing and run as root).
"""

import os

import bench_common as common

PORTS = {"corefn": 18080, "ceiling": 18081}
CONFIGS = ["-t1 -c64", "-t2 -c256"]
ROUTE = "/hello"
RUNS_COLUMNS = ["config", "server", "round", "req_per_s", "p50_us", "p99_us", "requests",
                "cpu_us_per_req", "non_2xx", "socket_errors"]


def measure(run, servers, raw, args):
    """Every config x round x server, one line each in raw/runs.tsv."""
    runs = []

    def run_one(ci, name, round_index):
        server = servers[name]
        url = server.url(ROUTE)
        tag = f"{CONFIGS[ci].replace(' ', '').replace('-', '')}-{name}-r{round_index + 1}"
        common.run_wrk(CONFIGS[ci], url, 1, latency=False, output=run.path("warmup.txt"))
        before = common.process_cpu_ticks(server.pid)
        result = common.measured_wrk(CONFIGS[ci], url, args.duration,
                                     output=os.path.join(raw, f"{tag}.txt"))
        after = common.process_cpu_ticks(server.pid)
        server.check_alive()
        cpu_us = round((after - before) / common.CLK_TCK * 1e6 / result["requests"], 3)
        row = {"config": ci, "server": name, "round": round_index + 1, "req_per_s": result["rps"],
               "p50_us": round(result["p50_us"], 1), "p99_us": round(result["p99_us"], 1),
               "requests": result["requests"], "cpu_us_per_req": cpu_us,
               "non_2xx": result["non_2xx"], "socket_errors": result["socket_errors"]}
        runs.append(row)
        common.log(f"{CONFIGS[ci]:<10} {name:<8} round {round_index + 1}: {result['rps']:10} req/s  "
                   f"p50 {common.ms(result['p50_us'], 2) + 'ms':<9} p99 {common.ms(result['p99_us'], 2) + 'ms':<9} "
                   f"cpu {cpu_us} µs/req")
        return row

    for ci in range(len(CONFIGS)):
        common.rounds(["corefn", "ceiling"], args.repeats,
                      lambda name, r, ci=ci: run_one(ci, name, r), rotate=False)
    with open(os.path.join(raw, "runs.tsv"), "w") as f:
        f.write("\t".join(RUNS_COLUMNS) + "\n")
        for row in runs:
            f.write("\t".join(str(row[c]) for c in RUNS_COLUMNS) + "\n")
    return runs


def tables(runs):
    def cell(ci, name, key):
        return common.median([r for r in runs if r["config"] == ci and r["server"] == name], key)

    def total(ci, name, key):
        return sum(r[key] for r in runs if r["config"] == ci and r["server"] == name)

    lines = [
        "| wrk | server | req/s | p50 ms | p99 ms | CPU µs/req | non-2xx | socket errors |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for ci, config in enumerate(CONFIGS):
        for name in PORTS:
            lines.append(
                f"| `{config}` | {name} | {cell(ci, name, 'req_per_s'):.0f} "
                f"| {common.ms(cell(ci, name, 'p50_us'))} | {common.ms(cell(ci, name, 'p99_us'))} "
                f"| {cell(ci, name, 'cpu_us_per_req'):.2f} | {total(ci, name, 'non_2xx')} "
                f"| {total(ci, name, 'socket_errors')} |")
    lines += [
        "",
        "| wrk | throughput corefn/ceiling | CPU per request corefn/ceiling |",
        "| --- | ---: | ---: |",
    ]
    for ci, config in enumerate(CONFIGS):
        lines.append(
            f"| `{config}` "
            f"| {common.ratio(cell(ci, 'corefn', 'req_per_s'), cell(ci, 'ceiling', 'req_per_s'))} "
            f"| {common.ratio(cell(ci, 'corefn', 'cpu_us_per_req'), cell(ci, 'ceiling', 'cpu_us_per_req'))} |")
    return lines


def main():
    p = common.parser(__doc__)
    common.add_duration(p, help="seconds per measured wrk run")
    common.add_repeats(p)
    common.add_option(p, "--cores", "CORES", "", type=lambda v: v and common.positive_int(v),
                      help="--cores for both servers; unset: all cores")
    common.add_skip_build(p)
    args = p.parse_args()

    common.require_tool("wrk")
    corefn_bin, ceiling_bin = common.release_binaries("corefn", "corefn-ceiling",
                                                      skip_build=args.skip_build)
    # Other work on the machine skews everything: note how busy it was.
    load_before = common.load_average()

    out = common.new_result_dir("gateway")
    raw = os.path.join(out, "raw")
    cores = ["--cores", str(args.cores)] if args.cores else []
    with common.Run(out=out) as run:
        db = run.path("functions.db")
        common.make_route_db(db, [common.STATIC_HELLO])
        servers = {
            "corefn": run.start_corefn(corefn_bin, PORTS["corefn"],
                                       os.path.join(raw, "server-corefn.log"), "--db", db, *cores),
            "ceiling": run.start_server(
                "ceiling", [ceiling_bin, "--listen", f"{common.HOST}:{PORTS['ceiling']}", *cores],
                PORTS["ceiling"], os.path.join(raw, "server-ceiling.log")),
        }
        runs = measure(run, servers, raw, args)

        ncpu = common.cpu_count()
        summary = [
            "# Gateway benchmark: corefn static route vs ceiling",
            "",
            *common.machine_lines(load_before, "the servers started"),
            f"- load generator: {common.wrk_version()}, on loopback; route `GET {ROUTE}` (static, 14-byte body)",
            f"- servers: `corefn serve` and `corefn-ceiling`, cores: {args.cores or f'all ({ncpu})'}",
            f"- each cell: median of {args.repeats} runs of {args.duration} s (after a 1 s warm-up), "
            "server order alternating",
            "",
            f"wrk shares the {ncpu} cores with the server under test, so req/s and latency are",
            "capped by the machine as a whole; server CPU µs per request (from /proc/PID/stat,",
            "all threads) is the figure that compares the servers' own cost.",
            "",
            *tables(runs),
            "",
            "Raw wrk outputs, server logs and per-run numbers (`runs.tsv`, config index 0..): `raw/`.",
        ]
        common.write_summary(out, "\n".join(summary))


if __name__ == "__main__":
    common.main(main)
